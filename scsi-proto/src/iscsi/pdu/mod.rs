//! iSCSI PDUs: typed headers for every opcode and the wire codec (RFC 7143 section 11).
//!
//! A PDU is a 48-byte Basic Header Segment (BHS), optional Additional Header Segments (AHS),
//! an optional header digest, an optional data segment padded to 4 bytes, and an optional
//! data digest. [`decode`] turns bytes from a `BytesMut` into a [`Pdu`] whose data segment is
//! a zero-copy slice of the received buffer; [`Pdu::encode_parts`] produces the header bytes
//! and hands the data segment back untouched so the caller can use vectored writes.

mod codec;
pub mod codes;
mod error;
pub mod initiator;
pub mod target;
mod wire;

use bytes::{BufMut, Bytes, BytesMut};

pub use codec::{decode, frame_len, CodecConfig, EncodedPdu, HARD_MAX_DATA_SEGMENT_LENGTH};
pub use codes::*;
pub use error::PduError;
pub use initiator::*;
pub use target::*;

/// Length of the Basic Header Segment.
pub const BHS_LEN: usize = 48;

/// The typed Basic Header Segment of one PDU.
#[derive(Clone, Debug, PartialEq, Eq)]
#[allow(clippy::large_enum_variant)]
pub enum Bhs {
    /// NOP-Out.
    NopOut(NopOut),
    /// SCSI Command.
    ScsiCommand(ScsiCommand),
    /// Task Management Function Request.
    TaskMgmtRequest(TaskMgmtRequest),
    /// Login Request.
    LoginRequest(LoginRequest),
    /// Text Request.
    TextRequest(TextRequest),
    /// SCSI Data-Out.
    DataOut(DataOut),
    /// Logout Request.
    LogoutRequest(LogoutRequest),
    /// SNACK Request.
    Snack(Snack),
    /// NOP-In.
    NopIn(NopIn),
    /// SCSI Response.
    ScsiResponse(ScsiResponse),
    /// Task Management Function Response.
    TaskMgmtResponse(TaskMgmtResponse),
    /// Login Response.
    LoginResponse(LoginResponse),
    /// Text Response.
    TextResponse(TextResponse),
    /// SCSI Data-In.
    DataIn(DataIn),
    /// Logout Response.
    LogoutResponse(LogoutResponse),
    /// Ready To Transfer.
    R2t(R2t),
    /// Asynchronous Message.
    AsyncMessage(AsyncMessage),
    /// Reject.
    Reject(Reject),
}

impl Bhs {
    /// The opcode of this header.
    pub fn opcode(&self) -> Opcode {
        match self {
            Bhs::NopOut(_) => Opcode::NopOut,
            Bhs::ScsiCommand(_) => Opcode::ScsiCommand,
            Bhs::TaskMgmtRequest(_) => Opcode::TaskMgmtRequest,
            Bhs::LoginRequest(_) => Opcode::LoginRequest,
            Bhs::TextRequest(_) => Opcode::TextRequest,
            Bhs::DataOut(_) => Opcode::DataOut,
            Bhs::LogoutRequest(_) => Opcode::LogoutRequest,
            Bhs::Snack(_) => Opcode::Snack,
            Bhs::NopIn(_) => Opcode::NopIn,
            Bhs::ScsiResponse(_) => Opcode::ScsiResponse,
            Bhs::TaskMgmtResponse(_) => Opcode::TaskMgmtResponse,
            Bhs::LoginResponse(_) => Opcode::LoginResponse,
            Bhs::TextResponse(_) => Opcode::TextResponse,
            Bhs::DataIn(_) => Opcode::DataIn,
            Bhs::LogoutResponse(_) => Opcode::LogoutResponse,
            Bhs::R2t(_) => Opcode::R2t,
            Bhs::AsyncMessage(_) => Opcode::AsyncMessage,
            Bhs::Reject(_) => Opcode::Reject,
        }
    }

    /// Initiator Task Tag (0xffffffff for Reject and Async Message).
    pub fn itt(&self) -> u32 {
        match self {
            Bhs::NopOut(h) => h.itt,
            Bhs::ScsiCommand(h) => h.itt,
            Bhs::TaskMgmtRequest(h) => h.itt,
            Bhs::LoginRequest(h) => h.itt,
            Bhs::TextRequest(h) => h.itt,
            Bhs::DataOut(h) => h.itt,
            Bhs::LogoutRequest(h) => h.itt,
            Bhs::Snack(h) => h.itt,
            Bhs::NopIn(h) => h.itt,
            Bhs::ScsiResponse(h) => h.itt,
            Bhs::TaskMgmtResponse(h) => h.itt,
            Bhs::LoginResponse(h) => h.itt,
            Bhs::TextResponse(h) => h.itt,
            Bhs::DataIn(h) => h.itt,
            Bhs::LogoutResponse(h) => h.itt,
            Bhs::R2t(h) => h.itt,
            Bhs::AsyncMessage(_) | Bhs::Reject(_) => RESERVED_TAG,
        }
    }

    /// The I (immediate delivery) bit. Login Requests are always immediate; target PDUs and
    /// Data-Out/SNACK never are.
    pub fn is_immediate(&self) -> bool {
        match self {
            Bhs::NopOut(h) => h.immediate,
            Bhs::ScsiCommand(h) => h.immediate,
            Bhs::TaskMgmtRequest(h) => h.immediate,
            Bhs::LoginRequest(_) => true,
            Bhs::TextRequest(h) => h.immediate,
            Bhs::LogoutRequest(h) => h.immediate,
            _ => false,
        }
    }

    /// CmdSN for initiator PDUs that carry one (not Data-Out or SNACK).
    pub fn cmd_sn(&self) -> Option<u32> {
        match self {
            Bhs::NopOut(h) => Some(h.cmd_sn),
            Bhs::ScsiCommand(h) => Some(h.cmd_sn),
            Bhs::TaskMgmtRequest(h) => Some(h.cmd_sn),
            Bhs::LoginRequest(h) => Some(h.cmd_sn),
            Bhs::TextRequest(h) => Some(h.cmd_sn),
            Bhs::LogoutRequest(h) => Some(h.cmd_sn),
            _ => None,
        }
    }

    /// ExpStatSN for initiator PDUs (all of them carry one).
    pub fn exp_stat_sn(&self) -> Option<u32> {
        match self {
            Bhs::NopOut(h) => Some(h.exp_stat_sn),
            Bhs::ScsiCommand(h) => Some(h.exp_stat_sn),
            Bhs::TaskMgmtRequest(h) => Some(h.exp_stat_sn),
            Bhs::LoginRequest(h) => Some(h.exp_stat_sn),
            Bhs::TextRequest(h) => Some(h.exp_stat_sn),
            Bhs::DataOut(h) => Some(h.exp_stat_sn),
            Bhs::LogoutRequest(h) => Some(h.exp_stat_sn),
            Bhs::Snack(h) => Some(h.exp_stat_sn),
            _ => None,
        }
    }

    fn parse(op: Opcode, b: &wire::Raw) -> Self {
        match op {
            Opcode::NopOut => Bhs::NopOut(NopOut::parse(b)),
            Opcode::ScsiCommand => Bhs::ScsiCommand(ScsiCommand::parse(b)),
            Opcode::TaskMgmtRequest => Bhs::TaskMgmtRequest(TaskMgmtRequest::parse(b)),
            Opcode::LoginRequest => Bhs::LoginRequest(LoginRequest::parse(b)),
            Opcode::TextRequest => Bhs::TextRequest(TextRequest::parse(b)),
            Opcode::DataOut => Bhs::DataOut(DataOut::parse(b)),
            Opcode::LogoutRequest => Bhs::LogoutRequest(LogoutRequest::parse(b)),
            Opcode::Snack => Bhs::Snack(Snack::parse(b)),
            Opcode::NopIn => Bhs::NopIn(NopIn::parse(b)),
            Opcode::ScsiResponse => Bhs::ScsiResponse(ScsiResponse::parse(b)),
            Opcode::TaskMgmtResponse => Bhs::TaskMgmtResponse(TaskMgmtResponse::parse(b)),
            Opcode::LoginResponse => Bhs::LoginResponse(LoginResponse::parse(b)),
            Opcode::TextResponse => Bhs::TextResponse(TextResponse::parse(b)),
            Opcode::DataIn => Bhs::DataIn(DataIn::parse(b)),
            Opcode::LogoutResponse => Bhs::LogoutResponse(LogoutResponse::parse(b)),
            Opcode::R2t => Bhs::R2t(R2t::parse(b)),
            Opcode::AsyncMessage => Bhs::AsyncMessage(AsyncMessage::parse(b)),
            Opcode::Reject => Bhs::Reject(Reject::parse(b)),
        }
    }

    fn write(&self, b: &mut wire::Raw) {
        match self {
            Bhs::NopOut(h) => h.write(b),
            Bhs::ScsiCommand(h) => h.write(b),
            Bhs::TaskMgmtRequest(h) => h.write(b),
            Bhs::LoginRequest(h) => h.write(b),
            Bhs::TextRequest(h) => h.write(b),
            Bhs::DataOut(h) => h.write(b),
            Bhs::LogoutRequest(h) => h.write(b),
            Bhs::Snack(h) => h.write(b),
            Bhs::NopIn(h) => h.write(b),
            Bhs::ScsiResponse(h) => h.write(b),
            Bhs::TaskMgmtResponse(h) => h.write(b),
            Bhs::LoginResponse(h) => h.write(b),
            Bhs::TextResponse(h) => h.write(b),
            Bhs::DataIn(h) => h.write(b),
            Bhs::LogoutResponse(h) => h.write(b),
            Bhs::R2t(h) => h.write(b),
            Bhs::AsyncMessage(h) => h.write(b),
            Bhs::Reject(h) => h.write(b),
        }
        b[0] = (self.opcode() as u8) | wire::flag(self.is_immediate(), 0x40);
    }
}

/// One PDU: typed header plus data segment (without padding or digest).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pdu {
    /// The Basic Header Segment (and, for SCSI Command, its AHS).
    pub bhs: Bhs,
    /// The data segment, unpadded.
    pub data: Bytes,
}

impl Pdu {
    /// A PDU with a data segment.
    pub fn new(bhs: impl Into<Bhs>, data: Bytes) -> Self {
        Pdu {
            bhs: bhs.into(),
            data,
        }
    }

    /// A PDU without a data segment.
    pub fn header_only(bhs: impl Into<Bhs>) -> Self {
        Pdu::new(bhs, Bytes::new())
    }

    /// A Reject PDU for `rejected_header` (the offending PDU's 48-byte BHS).
    pub fn reject(
        reason: RejectReason,
        rejected_header: Bytes,
        stat_sn: u32,
        exp_cmd_sn: u32,
        max_cmd_sn: u32,
    ) -> Self {
        Pdu::new(
            Reject {
                reason,
                stat_sn,
                exp_cmd_sn,
                max_cmd_sn,
                data_sn: 0,
            },
            rejected_header,
        )
    }
}

macro_rules! into_bhs {
    ($($t:ident),*) => {$(
        impl From<$t> for Bhs {
            fn from(h: $t) -> Bhs { Bhs::$t(h) }
        }
    )*};
}
into_bhs!(
    NopOut,
    ScsiCommand,
    TaskMgmtRequest,
    LoginRequest,
    TextRequest,
    DataOut,
    LogoutRequest,
    Snack,
    NopIn,
    ScsiResponse,
    TaskMgmtResponse,
    LoginResponse,
    TextResponse,
    DataIn,
    LogoutResponse,
    R2t,
    AsyncMessage,
    Reject
);

/// Build a SCSI Response data segment: SenseLength (2 bytes, big-endian) then the sense data
/// (RFC 7143 section 11.4.7). Empty sense gives an empty segment.
pub fn sense_segment(sense: &[u8]) -> Result<Bytes, PduError> {
    if sense.is_empty() {
        return Ok(Bytes::new());
    }
    let len =
        u16::try_from(sense.len()).map_err(|_| PduError::Unencodable("sense data too long"))?;
    let mut b = BytesMut::with_capacity(2 + sense.len());
    b.put_u16(len);
    b.put_slice(sense);
    Ok(b.freeze())
}

/// Extract the sense data from a SCSI Response data segment, `None` when malformed.
pub fn parse_sense_segment(data: &Bytes) -> Option<Bytes> {
    if data.is_empty() {
        return Some(Bytes::new());
    }
    let len = usize::from(u16::from_be_bytes([*data.first()?, *data.get(1)?]));
    (data.len() >= 2 + len).then(|| data.slice(2..2 + len))
}

/// Decode an 8-byte LUN field to a LUN number (SAM-5 peripheral and flat space addressing
/// of a single level); `None` for other address methods or multi-level LUNs.
pub fn lun_from_wire(raw: u64) -> Option<u64> {
    let b = raw.to_be_bytes();
    if b[2..].iter().any(|&x| x != 0) {
        return None;
    }
    match b[0] >> 6 {
        // Peripheral device addressing: bus identifier must be 0 for a target's own LUNs.
        0b00 if b[0] & 0x3f == 0 => Some(u64::from(b[1])),
        // Flat space addressing.
        0b01 => Some((u64::from(b[0] & 0x3f) << 8) | u64::from(b[1])),
        _ => None,
    }
}

/// Encode a LUN number in the 8-byte LUN field: peripheral addressing below 256, flat space
/// addressing up to 16383 (what REPORT LUNS reports, so initiators echo the same form).
pub fn lun_to_wire(lun: u64) -> Option<u64> {
    match lun {
        0..=255 => Some(lun << 48),
        256..=0x3fff => Some((0x4000 | lun) << 48),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
