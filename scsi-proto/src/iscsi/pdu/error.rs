//! PDU codec errors, classified the way RFC 7143 section 7 wants them handled.

use bytes::Bytes;

use super::codes::RejectReason;

/// Why a PDU could not be decoded or encoded.
///
/// Errors split into two classes, see [`PduError::is_fatal`]:
/// - fatal: the byte stream can no longer be trusted to be in sync (header digest error,
///   impossible lengths). RFC 7143 section 7.8 wants the connection dropped (connection
///   recovery is only possible at ErrorRecoveryLevel 2, which we do not offer).
/// - recoverable: the whole PDU was consumed from the buffer, so the next PDU starts
///   cleanly; the target answers with a Reject ([`PduError::reject_reason`]) carrying
///   [`PduError::rejected_header`] and otherwise discards the PDU.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PduError {
    /// The header digest did not match (RFC 7143 section 7.8: connection must be closed).
    #[error("header digest mismatch: computed {computed:#010x}, received {received:#010x}")]
    HeaderDigest {
        /// Digest computed over the received header.
        computed: u32,
        /// Digest carried in the PDU.
        received: u32,
    },
    /// DataSegmentLength is larger than we declared we can receive (or can send).
    #[error("data segment length {length} exceeds the negotiated limit {limit}")]
    DataSegmentTooLong {
        /// DataSegmentLength.
        length: u32,
        /// The applicable MaxRecvDataSegmentLength.
        limit: u32,
    },
    /// The data digest did not match; the PDU was consumed and must be rejected (reason 0x02).
    #[error("data digest mismatch: computed {computed:#010x}, received {received:#010x}")]
    DataDigest {
        /// The 48-byte BHS of the damaged PDU, for the Reject data segment.
        header: Bytes,
        /// Digest computed over the received data.
        computed: u32,
        /// Digest carried in the PDU.
        received: u32,
    },
    /// Reserved or vendor-specific opcode; the PDU was consumed.
    #[error("unsupported opcode {opcode:#04x}")]
    UnsupportedOpcode {
        /// The 6-bit opcode.
        opcode: u8,
        /// The 48-byte BHS, for the Reject data segment.
        header: Bytes,
    },
    /// A malformed or unexpected Additional Header Segment; the PDU was consumed.
    #[error("invalid additional header segment: {reason}")]
    InvalidAhs {
        /// What was wrong.
        reason: &'static str,
        /// The 48-byte BHS, for the Reject data segment.
        header: Bytes,
    },
    /// The PDU to encode cannot be represented on the wire.
    #[error("cannot encode PDU: {0}")]
    Unencodable(&'static str),
}

impl PduError {
    /// True when the connection must be closed because the stream is out of sync or corrupt.
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            PduError::HeaderDigest { .. } | PduError::DataSegmentTooLong { .. }
        )
    }

    /// The Reject reason to send for a recoverable error, `None` for fatal ones.
    pub fn reject_reason(&self) -> Option<RejectReason> {
        match self {
            PduError::DataDigest { .. } => Some(RejectReason::DataDigestError),
            PduError::UnsupportedOpcode { .. } => Some(RejectReason::CommandNotSupported),
            PduError::InvalidAhs { .. } => Some(RejectReason::InvalidPduField),
            _ => None,
        }
    }

    /// The offending PDU's 48-byte header, to be carried in the Reject data segment.
    pub fn rejected_header(&self) -> Option<&Bytes> {
        match self {
            PduError::DataDigest { header, .. }
            | PduError::UnsupportedOpcode { header, .. }
            | PduError::InvalidAhs { header, .. } => Some(header),
            _ => None,
        }
    }
}
