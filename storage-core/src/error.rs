//! Error type shared by every storage-core operation.

/// Result alias used throughout storage-core.
pub type Result<T> = std::result::Result<T, StorageError>;

/// Everything that can go wrong in the block store. The daemon maps these onto SCSI sense
/// data, so each variant names one cause a user can act on.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// A volume, snapshot or job that was named does not exist.
    #[error("{0}")]
    NotFound(String),
    /// A volume or snapshot with that name exists already.
    #[error("{0} already exists")]
    AlreadyExists(String),
    /// A bad size, block size, name or other argument.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// An I/O reaches past the end of the volume.
    #[error("LBA {lba} + {blocks} blocks is out of range (capacity {capacity_blocks} blocks)")]
    OutOfRange {
        /// First block of the request.
        lba: u64,
        /// Number of blocks requested.
        blocks: u64,
        /// Current number of blocks of the volume.
        capacity_blocks: u64,
    },
    /// A thin allocation failed: the pool has no unreserved free space (SCSI 27/07).
    #[error("no space left in the pool")]
    NoSpace,
    /// An operation would raise a full-volume reservation beyond the free space.
    #[error(
        "space guarantee unavailable: {needed_bytes} bytes needed, {available_bytes} available"
    )]
    GuaranteeUnavailable {
        /// Bytes the operation would have to reserve.
        needed_bytes: u64,
        /// Free bytes not yet reserved by anyone.
        available_bytes: u64,
    },
    /// A write to something read-only.
    #[error("read-only: {0}")]
    ReadOnly(String),
    /// The object is busy with another operation.
    #[error("busy: {0}")]
    Busy(String),
    /// A delta was asked from a snapshot that is not an ancestor of the other in the layer
    /// tree (a different volume, a later snapshot, or one separated by a rollback or a
    /// split): send the later snapshot in full instead.
    #[error("not an ancestor: {0}")]
    NotAncestor(String),
    /// A background job was cancelled.
    #[error("cancelled")]
    Cancelled,
    /// The path does not hold a Lunar pool.
    #[error("not a Lunar pool: {0}")]
    NotAPool(String),
    /// The pool was written by a format version this build does not understand.
    #[error("unsupported pool format version {0}")]
    UnsupportedVersion(u32),
    /// The pool's metadata is damaged or truncated.
    #[error("corrupt pool: {0}")]
    Corrupt(String),
    /// An operating-system I/O error.
    #[error("I/O error while {context}: {source}")]
    Io {
        /// What storage-core was doing.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

impl StorageError {
    /// Wrap an I/O error with a short description of what was being done.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        StorageError::Io {
            context: context.into(),
            source,
        }
    }
}
