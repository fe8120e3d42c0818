//! What can be wrong with a replication stream or with applying it.

use crate::StorageError;

/// Every way sending, parsing or receiving a stream fails. Each variant names one cause.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// The input does not start with the stream magic: not a Lunar replication stream.
    #[error("not a Lunar replication stream (bad magic)")]
    BadMagic,
    /// A format version this build does not read.
    #[error("unsupported replication stream version {0} (this build reads version 1)")]
    UnsupportedVersion(u16),
    /// Header flags this build does not know.
    #[error("unknown replication stream flags {0:#06x}")]
    UnknownFlags(u16),
    /// The header's CRC does not match: corrupted header.
    #[error("the stream header is corrupt (CRC mismatch)")]
    HeaderCrc,
    /// A header field breaks a rule.
    #[error("invalid stream header: {0}")]
    BadHeader(String),
    /// A record's CRC does not match: corrupted bytes, or a record of another stream.
    #[error("record at stream offset {offset} is corrupt (CRC mismatch)")]
    RecordCrc {
        /// Byte offset of the record in the stream.
        offset: u64,
    },
    /// A record of a kind this version does not have.
    #[error("unknown record tag {tag:#04x} at stream offset {offset}")]
    UnknownRecord {
        /// The tag byte.
        tag: u8,
        /// Byte offset of the record in the stream.
        offset: u64,
    },
    /// A record's framing breaks a rule (reserved bytes, length of a chunk).
    #[error("bad record at stream offset {offset}: {reason}")]
    BadRecord {
        /// Byte offset of the record in the stream.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// A record's index is not above the previous record's: reordered or duplicated.
    #[error("record for chunk {index} is out of order (expected chunk {expected} or later)")]
    OutOfOrder {
        /// The record's chunk index.
        index: u64,
        /// The lowest index allowed there.
        expected: u64,
    },
    /// A record reaches past the end of the volume.
    #[error("record for chunks {index}..{end} is past the volume's {chunks} chunks")]
    PastEnd {
        /// First chunk of the record.
        index: u64,
        /// One past its last chunk.
        end: u64,
        /// Chunks of the volume.
        chunks: u64,
    },
    /// More changes than the header announced.
    #[error("the stream carries more than the {0} changes its header announces")]
    TooManyChanges(u64),
    /// The stream ended before its END trailer.
    #[error("the stream is truncated (ended at offset {offset} before its END trailer)")]
    Truncated {
        /// Bytes received.
        offset: u64,
    },
    /// Bytes after the END trailer.
    #[error("unexpected bytes after the END trailer")]
    TrailingData,
    /// END does not match what was received: records missing, added or moved.
    #[error("the END trailer does not match the stream: {0}")]
    EndMismatch(String),
    /// The stream's snapshot is already on the receiver: a replayed stream.
    #[error("replayed stream: {volume}@{snapshot} (uuid {uuid}) is already on this pool")]
    Replayed {
        /// Volume on the receiver.
        volume: String,
        /// Snapshot name.
        snapshot: String,
        /// The snapshot uuid.
        uuid: uuid::Uuid,
    },
    /// The base snapshot the increment applies to is not on the receiver (an increment sent
    /// out of order, or a clone whose origin was never replicated).
    #[error("the base snapshot {base} is not on this pool: send the earlier streams first")]
    BaseMissing {
        /// The base as the stream names it.
        base: String,
    },
    /// A full stream for a volume that exists on the receiver.
    #[error("volume {0} already exists on this pool (a full stream creates its volume)")]
    TargetExists(String),
    /// An increment for a volume that does not exist on the receiver.
    #[error("volume {0} does not exist on this pool (send a full stream first)")]
    TargetMissing(String),
    /// The stream cannot be applied to this pool (different chunk size).
    #[error("incompatible stream: {0}")]
    Incompatible(String),
    /// A resumed stream does not continue the interrupted receive.
    #[error("resume mismatch: {0}")]
    ResumeMismatch(String),
    /// A resume token that does not parse or fails its checksum.
    #[error("invalid resume token: {0}")]
    BadToken(String),
    /// The storage engine refused or failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// Reading or writing the stream failed.
    #[error("I/O error while {context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

impl StreamError {
    /// Whether the bytes of the stream are at fault (as opposed to the transport, the
    /// receiver's state or its storage): such a stream is refused as a whole.
    pub fn is_corrupt_stream(&self) -> bool {
        matches!(
            self,
            StreamError::BadMagic
                | StreamError::UnsupportedVersion(_)
                | StreamError::UnknownFlags(_)
                | StreamError::HeaderCrc
                | StreamError::BadHeader(_)
                | StreamError::RecordCrc { .. }
                | StreamError::UnknownRecord { .. }
                | StreamError::BadRecord { .. }
                | StreamError::OutOfOrder { .. }
                | StreamError::PastEnd { .. }
                | StreamError::TooManyChanges(_)
                | StreamError::TrailingData
                | StreamError::EndMismatch(_)
        )
    }

    /// Short machine-readable name (admin API error kind, metrics label).
    pub fn kind(&self) -> &'static str {
        match self {
            StreamError::Replayed { .. } => "replayed",
            StreamError::BaseMissing { .. } => "base_missing",
            StreamError::TargetExists(_) => "already_exists",
            StreamError::TargetMissing(_) => "not_found",
            StreamError::ResumeMismatch(_) => "resume_mismatch",
            StreamError::BadToken(_) => "bad_token",
            StreamError::Incompatible(_) => "incompatible",
            StreamError::Truncated { .. } => "truncated",
            StreamError::Storage(_) => "storage",
            StreamError::Io { .. } => "io",
            e if e.is_corrupt_stream() => "corrupt_stream",
            _ => "stream",
        }
    }

    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        StreamError::Io {
            context: context.into(),
            source,
        }
    }
}
