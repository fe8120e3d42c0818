//! Headers of PDUs sent by the target (RFC 7143 sections 11.4 - 11.19).
//!
//! As for initiator headers, the codec handles the opcode, TotalAHSLength and
//! DataSegmentLength; reserved fields are written as zero and ignored on receipt.

use super::codes::{AsyncEvent, LoginStage, LogoutResponseCode, RejectReason, TmResponse};
use super::wire::*;

/// NOP-In (RFC 7143 section 11.19).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NopIn {
    /// LUN (for target pings that want it echoed), else zero.
    pub lun: u64,
    /// ITT of the NOP-Out being answered, or 0xffffffff for a target ping.
    pub itt: u32,
    /// TTT: the target's tag for a ping that wants an answer, else 0xffffffff.
    pub ttt: u32,
    /// StatSN.
    pub stat_sn: u32,
    /// ExpCmdSN.
    pub exp_cmd_sn: u32,
    /// MaxCmdSN.
    pub max_cmd_sn: u32,
}

impl NopIn {
    pub(crate) fn parse(b: &Raw) -> Self {
        NopIn {
            lun: u64_at(b, 8),
            itt: u32_at(b, 16),
            ttt: u32_at(b, 20),
            stat_sn: u32_at(b, 24),
            exp_cmd_sn: u32_at(b, 28),
            max_cmd_sn: u32_at(b, 32),
        }
    }

    pub(crate) fn write(&self, b: &mut Raw) {
        b[1] = 0x80;
        put_u64(b, 8, self.lun);
        put_u32(b, 16, self.itt);
        put_u32(b, 20, self.ttt);
        put_u32(b, 24, self.stat_sn);
        put_u32(b, 28, self.exp_cmd_sn);
        put_u32(b, 32, self.max_cmd_sn);
    }
}

/// SCSI Response (RFC 7143 section 11.4). The data segment holds SenseLength (2 bytes) +
/// sense data, see [`super::sense_segment`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScsiResponse {
    /// o: bidirectional read residual overflow.
    pub bidi_overflow: bool,
    /// u: bidirectional read residual underflow.
    pub bidi_underflow: bool,
    /// O: residual overflow.
    pub overflow: bool,
    /// U: residual underflow.
    pub underflow: bool,
    /// iSCSI service response.
    pub response: u8,
    /// SCSI status (valid when `response` is 0).
    pub status: u8,
    /// Initiator Task Tag.
    pub itt: u32,
    /// SNACK Tag (0 unless answering an R-Data SNACK).
    pub snack_tag: u32,
    /// StatSN.
    pub stat_sn: u32,
    /// ExpCmdSN.
    pub exp_cmd_sn: u32,
    /// MaxCmdSN.
    pub max_cmd_sn: u32,
    /// ExpDataSN: number of Data-In (and R2T) PDUs sent for this command.
    pub exp_data_sn: u32,
    /// Bidirectional read residual count.
    pub bidi_read_residual_count: u32,
    /// Residual count.
    pub residual_count: u32,
}

impl ScsiResponse {
    pub(crate) fn parse(b: &Raw) -> Self {
        ScsiResponse {
            bidi_overflow: bit(b[1], 0x10),
            bidi_underflow: bit(b[1], 0x08),
            overflow: bit(b[1], 0x04),
            underflow: bit(b[1], 0x02),
            response: b[2],
            status: b[3],
            itt: u32_at(b, 16),
            snack_tag: u32_at(b, 20),
            stat_sn: u32_at(b, 24),
            exp_cmd_sn: u32_at(b, 28),
            max_cmd_sn: u32_at(b, 32),
            exp_data_sn: u32_at(b, 36),
            bidi_read_residual_count: u32_at(b, 40),
            residual_count: u32_at(b, 44),
        }
    }

    pub(crate) fn write(&self, b: &mut Raw) {
        b[1] = 0x80
            | flag(self.bidi_overflow, 0x10)
            | flag(self.bidi_underflow, 0x08)
            | flag(self.overflow, 0x04)
            | flag(self.underflow, 0x02);
        b[2] = self.response;
        b[3] = self.status;
        put_u32(b, 16, self.itt);
        put_u32(b, 20, self.snack_tag);
        put_u32(b, 24, self.stat_sn);
        put_u32(b, 28, self.exp_cmd_sn);
        put_u32(b, 32, self.max_cmd_sn);
        put_u32(b, 36, self.exp_data_sn);
        put_u32(b, 40, self.bidi_read_residual_count);
        put_u32(b, 44, self.residual_count);
    }
}

/// SCSI Task Management Function Response (RFC 7143 section 11.6).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskMgmtResponse {
    /// Response code.
    pub response: TmResponse,
    /// ITT of the task management request.
    pub itt: u32,
    /// StatSN.
    pub stat_sn: u32,
    /// ExpCmdSN.
    pub exp_cmd_sn: u32,
    /// MaxCmdSN.
    pub max_cmd_sn: u32,
}

impl TaskMgmtResponse {
    pub(crate) fn parse(b: &Raw) -> Self {
        TaskMgmtResponse {
            response: TmResponse::from(b[2]),
            itt: u32_at(b, 16),
            stat_sn: u32_at(b, 24),
            exp_cmd_sn: u32_at(b, 28),
            max_cmd_sn: u32_at(b, 32),
        }
    }

    pub(crate) fn write(&self, b: &mut Raw) {
        b[1] = 0x80;
        b[2] = self.response.into();
        put_u32(b, 16, self.itt);
        put_u32(b, 24, self.stat_sn);
        put_u32(b, 28, self.exp_cmd_sn);
        put_u32(b, 32, self.max_cmd_sn);
    }
}

/// Login Response (RFC 7143 section 11.13).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoginResponse {
    /// T: the target agrees to move to `nsg`.
    pub transit: bool,
    /// C: the text continues in the next Login Response.
    pub continue_bit: bool,
    /// Current stage.
    pub csg: LoginStage,
    /// Next stage.
    pub nsg: LoginStage,
    /// Highest version supported.
    pub version_max: u8,
    /// Version in use.
    pub version_active: u8,
    /// 48-bit ISID (echoed).
    pub isid: u64,
    /// TSIH (assigned by the target on the final response of a leading login).
    pub tsih: u16,
    /// Initiator Task Tag (echoed).
    pub itt: u32,
    /// StatSN.
    pub stat_sn: u32,
    /// ExpCmdSN.
    pub exp_cmd_sn: u32,
    /// MaxCmdSN.
    pub max_cmd_sn: u32,
    /// Status-Class (0 success, 1 redirection, 2 initiator error, 3 target error).
    pub status_class: u8,
    /// Status-Detail.
    pub status_detail: u8,
}

impl LoginResponse {
    pub(crate) fn parse(b: &Raw) -> Self {
        LoginResponse {
            transit: bit(b[1], 0x80),
            continue_bit: bit(b[1], 0x40),
            csg: LoginStage::from_bits(b[1] >> 2),
            nsg: LoginStage::from_bits(b[1]),
            version_max: b[2],
            version_active: b[3],
            isid: isid_at(b),
            tsih: u16_at(b, 14),
            itt: u32_at(b, 16),
            stat_sn: u32_at(b, 24),
            exp_cmd_sn: u32_at(b, 28),
            max_cmd_sn: u32_at(b, 32),
            status_class: b[36],
            status_detail: b[37],
        }
    }

    pub(crate) fn write(&self, b: &mut Raw) {
        b[1] = flag(self.transit, 0x80)
            | flag(self.continue_bit, 0x40)
            | (self.csg.bits() << 2)
            | self.nsg.bits();
        b[2] = self.version_max;
        b[3] = self.version_active;
        put_isid(b, self.isid);
        put_u16(b, 14, self.tsih);
        put_u32(b, 16, self.itt);
        put_u32(b, 24, self.stat_sn);
        put_u32(b, 28, self.exp_cmd_sn);
        put_u32(b, 32, self.max_cmd_sn);
        b[36] = self.status_class;
        b[37] = self.status_detail;
    }
}

/// Text Response (RFC 7143 section 11.11).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TextResponse {
    /// F: last PDU of the response.
    pub final_bit: bool,
    /// C: the text continues in the next PDU.
    pub continue_bit: bool,
    /// Raw 8-byte LUN field.
    pub lun: u64,
    /// Initiator Task Tag (echoed).
    pub itt: u32,
    /// TTT: 0xffffffff on the final response, else a tag the initiator echoes to continue.
    pub ttt: u32,
    /// StatSN.
    pub stat_sn: u32,
    /// ExpCmdSN.
    pub exp_cmd_sn: u32,
    /// MaxCmdSN.
    pub max_cmd_sn: u32,
}

impl TextResponse {
    pub(crate) fn parse(b: &Raw) -> Self {
        TextResponse {
            final_bit: bit(b[1], 0x80),
            continue_bit: bit(b[1], 0x40),
            lun: u64_at(b, 8),
            itt: u32_at(b, 16),
            ttt: u32_at(b, 20),
            stat_sn: u32_at(b, 24),
            exp_cmd_sn: u32_at(b, 28),
            max_cmd_sn: u32_at(b, 32),
        }
    }

    pub(crate) fn write(&self, b: &mut Raw) {
        b[1] = flag(self.final_bit, 0x80) | flag(self.continue_bit, 0x40);
        put_u64(b, 8, self.lun);
        put_u32(b, 16, self.itt);
        put_u32(b, 20, self.ttt);
        put_u32(b, 24, self.stat_sn);
        put_u32(b, 28, self.exp_cmd_sn);
        put_u32(b, 32, self.max_cmd_sn);
    }
}

/// SCSI Data-In (RFC 7143 section 11.7).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DataIn {
    /// F: last PDU of the sequence.
    pub final_bit: bool,
    /// A: acknowledge requested (ErrorRecoveryLevel > 0 only).
    pub ack: bool,
    /// O: residual overflow (only with `status`).
    pub overflow: bool,
    /// U: residual underflow (only with `status`).
    pub underflow: bool,
    /// S bit and Status: phase-collapsed SCSI status carried in this PDU.
    pub status: Option<u8>,
    /// Raw 8-byte LUN field (when `ack`), else zero.
    pub lun: u64,
    /// Initiator Task Tag.
    pub itt: u32,
    /// TTT (when `ack`), else 0xffffffff.
    pub ttt: u32,
    /// StatSN (only meaningful with `status`).
    pub stat_sn: u32,
    /// ExpCmdSN.
    pub exp_cmd_sn: u32,
    /// MaxCmdSN.
    pub max_cmd_sn: u32,
    /// DataSN.
    pub data_sn: u32,
    /// Offset of this PDU's data in the command's buffer.
    pub buffer_offset: u32,
    /// Residual count (only with `status`).
    pub residual_count: u32,
}

impl DataIn {
    pub(crate) fn parse(b: &Raw) -> Self {
        DataIn {
            final_bit: bit(b[1], 0x80),
            ack: bit(b[1], 0x40),
            overflow: bit(b[1], 0x04),
            underflow: bit(b[1], 0x02),
            status: bit(b[1], 0x01).then_some(b[3]),
            lun: u64_at(b, 8),
            itt: u32_at(b, 16),
            ttt: u32_at(b, 20),
            stat_sn: u32_at(b, 24),
            exp_cmd_sn: u32_at(b, 28),
            max_cmd_sn: u32_at(b, 32),
            data_sn: u32_at(b, 36),
            buffer_offset: u32_at(b, 40),
            residual_count: u32_at(b, 44),
        }
    }

    pub(crate) fn write(&self, b: &mut Raw) {
        b[1] = flag(self.final_bit, 0x80)
            | flag(self.ack, 0x40)
            | flag(self.overflow, 0x04)
            | flag(self.underflow, 0x02)
            | flag(self.status.is_some(), 0x01);
        b[3] = self.status.unwrap_or(0);
        put_u64(b, 8, self.lun);
        put_u32(b, 16, self.itt);
        put_u32(b, 20, self.ttt);
        put_u32(b, 24, self.stat_sn);
        put_u32(b, 28, self.exp_cmd_sn);
        put_u32(b, 32, self.max_cmd_sn);
        put_u32(b, 36, self.data_sn);
        put_u32(b, 40, self.buffer_offset);
        put_u32(b, 44, self.residual_count);
    }
}

/// Logout Response (RFC 7143 section 11.15).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogoutResponse {
    /// Response code.
    pub response: LogoutResponseCode,
    /// Initiator Task Tag (echoed).
    pub itt: u32,
    /// StatSN.
    pub stat_sn: u32,
    /// ExpCmdSN.
    pub exp_cmd_sn: u32,
    /// MaxCmdSN.
    pub max_cmd_sn: u32,
    /// Time2Wait (seconds).
    pub time2wait: u16,
    /// Time2Retain (seconds).
    pub time2retain: u16,
}

impl LogoutResponse {
    pub(crate) fn parse(b: &Raw) -> Self {
        LogoutResponse {
            response: LogoutResponseCode::from(b[2]),
            itt: u32_at(b, 16),
            stat_sn: u32_at(b, 24),
            exp_cmd_sn: u32_at(b, 28),
            max_cmd_sn: u32_at(b, 32),
            time2wait: u16_at(b, 40),
            time2retain: u16_at(b, 42),
        }
    }

    pub(crate) fn write(&self, b: &mut Raw) {
        b[1] = 0x80;
        b[2] = self.response.into();
        put_u32(b, 16, self.itt);
        put_u32(b, 24, self.stat_sn);
        put_u32(b, 28, self.exp_cmd_sn);
        put_u32(b, 32, self.max_cmd_sn);
        put_u16(b, 40, self.time2wait);
        put_u16(b, 42, self.time2retain);
    }
}

/// Ready To Transfer (RFC 7143 section 11.8).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct R2t {
    /// Raw 8-byte LUN field.
    pub lun: u64,
    /// ITT of the command.
    pub itt: u32,
    /// Target Transfer Tag the Data-Out PDUs must carry.
    pub ttt: u32,
    /// StatSN (next StatSN, not advanced).
    pub stat_sn: u32,
    /// ExpCmdSN.
    pub exp_cmd_sn: u32,
    /// MaxCmdSN.
    pub max_cmd_sn: u32,
    /// R2TSN within the command.
    pub r2t_sn: u32,
    /// Buffer offset of the solicited data.
    pub buffer_offset: u32,
    /// Desired Data Transfer Length (≤ MaxBurstLength).
    pub desired_data_transfer_length: u32,
}

impl R2t {
    pub(crate) fn parse(b: &Raw) -> Self {
        R2t {
            lun: u64_at(b, 8),
            itt: u32_at(b, 16),
            ttt: u32_at(b, 20),
            stat_sn: u32_at(b, 24),
            exp_cmd_sn: u32_at(b, 28),
            max_cmd_sn: u32_at(b, 32),
            r2t_sn: u32_at(b, 36),
            buffer_offset: u32_at(b, 40),
            desired_data_transfer_length: u32_at(b, 44),
        }
    }

    pub(crate) fn write(&self, b: &mut Raw) {
        b[1] = 0x80;
        put_u64(b, 8, self.lun);
        put_u32(b, 16, self.itt);
        put_u32(b, 20, self.ttt);
        put_u32(b, 24, self.stat_sn);
        put_u32(b, 28, self.exp_cmd_sn);
        put_u32(b, 32, self.max_cmd_sn);
        put_u32(b, 36, self.r2t_sn);
        put_u32(b, 40, self.buffer_offset);
        put_u32(b, 44, self.desired_data_transfer_length);
    }
}

/// Asynchronous Message (RFC 7143 section 11.9). The ITT is always 0xffffffff.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AsyncMessage {
    /// Raw 8-byte LUN field (for SCSI events).
    pub lun: u64,
    /// StatSN.
    pub stat_sn: u32,
    /// ExpCmdSN.
    pub exp_cmd_sn: u32,
    /// MaxCmdSN.
    pub max_cmd_sn: u32,
    /// AsyncEvent.
    pub event: AsyncEvent,
    /// AsyncVCode (vendor code).
    pub vcode: u8,
    /// Parameter1.
    pub parameter1: u16,
    /// Parameter2.
    pub parameter2: u16,
    /// Parameter3.
    pub parameter3: u16,
}

impl AsyncMessage {
    pub(crate) fn parse(b: &Raw) -> Self {
        AsyncMessage {
            lun: u64_at(b, 8),
            stat_sn: u32_at(b, 24),
            exp_cmd_sn: u32_at(b, 28),
            max_cmd_sn: u32_at(b, 32),
            event: AsyncEvent::from(b[36]),
            vcode: b[37],
            parameter1: u16_at(b, 38),
            parameter2: u16_at(b, 40),
            parameter3: u16_at(b, 42),
        }
    }

    pub(crate) fn write(&self, b: &mut Raw) {
        b[1] = 0x80;
        put_u64(b, 8, self.lun);
        put_u32(b, 16, super::RESERVED_TAG);
        put_u32(b, 24, self.stat_sn);
        put_u32(b, 28, self.exp_cmd_sn);
        put_u32(b, 32, self.max_cmd_sn);
        b[36] = self.event.into();
        b[37] = self.vcode;
        put_u16(b, 38, self.parameter1);
        put_u16(b, 40, self.parameter2);
        put_u16(b, 42, self.parameter3);
    }
}

/// Reject (RFC 7143 section 11.17). The data segment carries the rejected PDU's 48-byte
/// header; the ITT field is always 0xffffffff.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reject {
    /// Reason.
    pub reason: RejectReason,
    /// StatSN.
    pub stat_sn: u32,
    /// ExpCmdSN.
    pub exp_cmd_sn: u32,
    /// MaxCmdSN.
    pub max_cmd_sn: u32,
    /// DataSN/R2TSN (for a rejected Data/R2T SNACK), else 0.
    pub data_sn: u32,
}

impl Reject {
    pub(crate) fn parse(b: &Raw) -> Self {
        Reject {
            reason: RejectReason::from(b[2]),
            stat_sn: u32_at(b, 24),
            exp_cmd_sn: u32_at(b, 28),
            max_cmd_sn: u32_at(b, 32),
            data_sn: u32_at(b, 36),
        }
    }

    pub(crate) fn write(&self, b: &mut Raw) {
        b[1] = 0x80;
        b[2] = self.reason.into();
        put_u32(b, 16, super::RESERVED_TAG);
        put_u32(b, 24, self.stat_sn);
        put_u32(b, 28, self.exp_cmd_sn);
        put_u32(b, 32, self.max_cmd_sn);
        put_u32(b, 36, self.data_sn);
    }
}
