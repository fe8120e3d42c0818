//! Errors of the Ceph wrapper: the errno librados/librbd returned, with what was being done.

use std::ffi::c_int;

/// What went wrong in a Ceph call. Every variant says what was being done (`context`: the
/// operation and the object, image or pool); `Os` keeps librados'/librbd's errno.
#[derive(Debug, thiserror::Error)]
pub enum CephError {
    /// A librados/librbd call returned `-errno`.
    #[error("{context}: {}", std::io::Error::from_raw_os_error(*.errno))]
    Os {
        /// The operation and its target.
        context: String,
        /// The positive errno.
        errno: i32,
    },
    /// A versioned write found the object not in the expected state (it exists when it was
    /// expected absent, is absent, or has another version).
    #[error("{context}: version conflict (the object changed)")]
    Conflict {
        /// The operation and its target.
        context: String,
    },
    /// An exclusive lock is held by another (client, cookie).
    #[error("{context}: lock held by another client")]
    Busy {
        /// The operation and its target.
        context: String,
    },
    /// A renew, unlock or break named a lock holder that does not hold the lock (any more):
    /// for a lease, it expired.
    #[error("{context}: not held")]
    NotHeld {
        /// The operation and its target.
        context: String,
    },
    /// `compare_and_write` found different data `offset` bytes into the compared range (what
    /// SCSI COMPARE AND WRITE reports as the miscompare offset).
    #[error("{context}: data mismatch at byte {offset}")]
    Mismatch {
        /// The operation and its target.
        context: String,
        /// Offset of the first differing byte from the start of the compared range.
        offset: u64,
    },
    /// The caller passed something the C API cannot take (a NUL in a name, a too large
    /// buffer) or the cluster answered something malformed.
    #[error("{0}")]
    Invalid(String),
}

impl CephError {
    /// The errno behind the error, where there is one.
    pub fn errno(&self) -> Option<i32> {
        match self {
            CephError::Os { errno, .. } => Some(*errno),
            CephError::Busy { .. } => Some(libc::EBUSY),
            CephError::NotHeld { .. } => Some(libc::ENOENT),
            CephError::Mismatch { .. } => Some(libc::EILSEQ),
            CephError::Conflict { .. } | CephError::Invalid(_) => None,
        }
    }

    /// Whether this client has been blocklisted (fenced): it must stop and reconnect with a
    /// fresh [`super::Rados`].
    pub fn is_blocklisted(&self) -> bool {
        self.errno() == Some(super::EBLOCKLISTED)
    }

    pub(super) fn os(context: impl Into<String>, ret: impl Into<i64>) -> CephError {
        let ret: i64 = ret.into();
        CephError::Os {
            context: context.into(),
            errno: i32::try_from(ret.unsigned_abs()).unwrap_or(libc::EIO),
        }
    }
}

/// Results of the Ceph wrapper.
pub type Result<T> = std::result::Result<T, CephError>;

/// `Ok(ret)` for a non-negative return, else `CephError::Os` with the context built lazily.
pub(super) fn check(ret: c_int, context: impl FnOnce() -> String) -> Result<c_int> {
    if ret < 0 {
        Err(CephError::os(context(), ret))
    } else {
        Ok(ret)
    }
}

/// A C string for the C API; a NUL inside is the caller's error, not a panic.
pub(super) fn cstring(what: &str, s: &str) -> Result<std::ffi::CString> {
    std::ffi::CString::new(s)
        .map_err(|_| CephError::Invalid(format!("{what} {s:?} contains a NUL byte")))
}
