//! Errors of LUN manager operations, each with a stable machine-readable kind that the admin
//! API reports next to the human message.

use storage_core::StorageError;

/// Why an administrative operation failed. Nothing was changed unless the message says so.
#[derive(Debug, thiserror::Error)]
pub enum MgrError {
    /// An object named in the request does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The name is already taken.
    #[error("{0}")]
    AlreadyExists(String),
    /// The request is malformed or contradicts the current state.
    #[error("{0}")]
    Invalid(String),
    /// The object is in use (sessions, running job); `--force` may override.
    #[error("{0}")]
    Busy(String),
    /// Not enough pool space (including space guarantees).
    #[error("{0}")]
    NoSpace(String),
    /// The operation is valid but this daemon cannot apply it while running.
    #[error("{0}")]
    Unsupported(String),
    /// Storage or state-file failure.
    #[error("{0}")]
    Internal(String),
}

impl MgrError {
    /// Stable kind string: `not_found`, `already_exists`, `invalid`, `busy`, `no_space`,
    /// `unsupported`, `internal`.
    pub fn kind(&self) -> &'static str {
        match self {
            MgrError::NotFound(_) => "not_found",
            MgrError::AlreadyExists(_) => "already_exists",
            MgrError::Invalid(_) => "invalid",
            MgrError::Busy(_) => "busy",
            MgrError::NoSpace(_) => "no_space",
            MgrError::Unsupported(_) => "unsupported",
            MgrError::Internal(_) => "internal",
        }
    }
}

impl From<StorageError> for MgrError {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::NotFound(m) => MgrError::NotFound(format!("{m} not found")),
            StorageError::AlreadyExists(m) => {
                MgrError::AlreadyExists(format!("{m} already exists"))
            }
            StorageError::InvalidArgument(m) => MgrError::Invalid(m),
            StorageError::NoSpace => MgrError::NoSpace("the pool is out of space".into()),
            StorageError::GuaranteeUnavailable {
                needed_bytes,
                available_bytes,
            } => MgrError::NoSpace(format!(
                "space guarantee cannot be met: needs {} but only {} is available in the pool",
                human_bytes(needed_bytes),
                human_bytes(available_bytes)
            )),
            StorageError::Busy(m) => MgrError::Busy(m),
            StorageError::ReadOnly(m) => MgrError::Invalid(format!("{m} is read-only")),
            other => MgrError::Internal(other.to_string()),
        }
    }
}

impl From<super::state::StateError> for MgrError {
    fn from(e: super::state::StateError) -> Self {
        MgrError::Internal(e.to_string())
    }
}

/// Result of a LUN manager operation.
pub type MgrResult<T> = Result<T, MgrError>;

/// `10 GiB`, `512 MiB`, `123 B`: exact binary units when the value is a whole multiple,
/// otherwise one decimal.
pub fn human_bytes(b: u64) -> String {
    const UNITS: [(&str, u64); 5] = [
        ("PiB", 1 << 50),
        ("TiB", 1 << 40),
        ("GiB", 1 << 30),
        ("MiB", 1 << 20),
        ("KiB", 1 << 10),
    ];
    for (name, m) in UNITS {
        if b >= m {
            if b.is_multiple_of(m) {
                return format!("{} {name}", b / m);
            }
            return format!("{:.1} {name}", b as f64 / m as f64);
        }
    }
    format!("{b} B")
}
