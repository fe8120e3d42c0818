//! Headers of PDUs sent by the initiator (RFC 7143 sections 11.2 - 11.16).
//!
//! Each `parse` reads only opcode-specific fields; the opcode, immediate bit, TotalAHSLength
//! and DataSegmentLength are handled by the codec. Reserved fields are ignored on receipt and
//! written as zero.

use bytes::Bytes;

use super::codes::{LoginStage, LogoutReason, SnackType, TaskAttribute, TmFunction};
use super::wire::*;

/// NOP-Out (RFC 7143 section 11.18).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NopOut {
    /// Immediate delivery bit.
    pub immediate: bool,
    /// LUN (echoed from a NOP-In ping, otherwise zero).
    pub lun: u64,
    /// Initiator Task Tag; 0xffffffff when no NOP-In answer is wanted.
    pub itt: u32,
    /// Target Transfer Tag; the NOP-In's TTT when answering a target ping, else 0xffffffff.
    pub ttt: u32,
    /// CmdSN.
    pub cmd_sn: u32,
    /// ExpStatSN.
    pub exp_stat_sn: u32,
}

impl NopOut {
    pub(crate) fn parse(b: &Raw) -> Self {
        NopOut {
            immediate: bit(b[0], 0x40),
            lun: u64_at(b, 8),
            itt: u32_at(b, 16),
            ttt: u32_at(b, 20),
            cmd_sn: u32_at(b, 24),
            exp_stat_sn: u32_at(b, 28),
        }
    }

    pub(crate) fn write(&self, b: &mut Raw) {
        b[1] = 0x80;
        put_u64(b, 8, self.lun);
        put_u32(b, 16, self.itt);
        put_u32(b, 20, self.ttt);
        put_u32(b, 24, self.cmd_sn);
        put_u32(b, 28, self.exp_stat_sn);
    }
}

/// SCSI Command (RFC 7143 section 11.3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScsiCommand {
    /// Immediate delivery bit.
    pub immediate: bool,
    /// F: no unsolicited Data-Out PDUs follow this command.
    pub final_bit: bool,
    /// R: the command expects data from the target.
    pub read: bool,
    /// W: the command carries data to the target.
    pub write: bool,
    /// Task attribute.
    pub attr: TaskAttribute,
    /// Raw 8-byte LUN field.
    pub lun: u64,
    /// Initiator Task Tag.
    pub itt: u32,
    /// Expected Data Transfer Length (for bidirectional commands, the write length).
    pub expected_data_transfer_length: u32,
    /// CmdSN.
    pub cmd_sn: u32,
    /// ExpStatSN.
    pub exp_stat_sn: u32,
    /// The first 16 bytes of the CDB (shorter CDBs are zero padded).
    pub cdb: [u8; 16],
    /// CDB bytes beyond 16, from an Extended CDB AHS (type 1).
    pub extended_cdb: Option<Bytes>,
    /// Bidirectional Expected Read-Data Length AHS (type 2).
    pub bidi_read_length: Option<u32>,
}

impl ScsiCommand {
    pub(crate) fn parse(b: &Raw) -> Self {
        let mut cdb = [0u8; 16];
        cdb.copy_from_slice(&b[32..48]);
        ScsiCommand {
            immediate: bit(b[0], 0x40),
            final_bit: bit(b[1], 0x80),
            read: bit(b[1], 0x40),
            write: bit(b[1], 0x20),
            attr: TaskAttribute::from_bits(b[1]),
            lun: u64_at(b, 8),
            itt: u32_at(b, 16),
            expected_data_transfer_length: u32_at(b, 20),
            cmd_sn: u32_at(b, 24),
            exp_stat_sn: u32_at(b, 28),
            cdb,
            extended_cdb: None,
            bidi_read_length: None,
        }
    }

    pub(crate) fn write(&self, b: &mut Raw) {
        b[1] = flag(self.final_bit, 0x80)
            | flag(self.read, 0x40)
            | flag(self.write, 0x20)
            | self.attr.bits();
        put_u64(b, 8, self.lun);
        put_u32(b, 16, self.itt);
        put_u32(b, 20, self.expected_data_transfer_length);
        put_u32(b, 24, self.cmd_sn);
        put_u32(b, 28, self.exp_stat_sn);
        b[32..48].copy_from_slice(&self.cdb);
    }

    /// The whole CDB: the 16 header bytes followed by any extended CDB bytes.
    ///
    /// CDBs of 16 bytes or less are returned as all 16 bytes (with trailing zero padding);
    /// the SCSI layer knows each opcode's real length.
    pub fn full_cdb(&self) -> Bytes {
        match &self.extended_cdb {
            None => Bytes::copy_from_slice(&self.cdb),
            Some(ext) => {
                let mut v = Vec::with_capacity(16 + ext.len());
                v.extend_from_slice(&self.cdb);
                v.extend_from_slice(ext);
                Bytes::from(v)
            }
        }
    }
}

/// SCSI Task Management Function Request (RFC 7143 section 11.5).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskMgmtRequest {
    /// Immediate delivery bit.
    pub immediate: bool,
    /// Function code.
    pub function: TmFunction,
    /// Raw 8-byte LUN field.
    pub lun: u64,
    /// Initiator Task Tag of this request.
    pub itt: u32,
    /// ITT of the task to abort (ABORT TASK), else 0xffffffff.
    pub referenced_task_tag: u32,
    /// CmdSN.
    pub cmd_sn: u32,
    /// ExpStatSN.
    pub exp_stat_sn: u32,
    /// RefCmdSN: CmdSN of the referenced task (ABORT TASK).
    pub ref_cmd_sn: u32,
    /// ExpDataSN (TASK REASSIGN).
    pub exp_data_sn: u32,
}

impl TaskMgmtRequest {
    pub(crate) fn parse(b: &Raw) -> Self {
        TaskMgmtRequest {
            immediate: bit(b[0], 0x40),
            function: TmFunction::from(b[1] & 0x7f),
            lun: u64_at(b, 8),
            itt: u32_at(b, 16),
            referenced_task_tag: u32_at(b, 20),
            cmd_sn: u32_at(b, 24),
            exp_stat_sn: u32_at(b, 28),
            ref_cmd_sn: u32_at(b, 32),
            exp_data_sn: u32_at(b, 36),
        }
    }

    pub(crate) fn write(&self, b: &mut Raw) {
        b[1] = 0x80 | (u8::from(self.function) & 0x7f);
        put_u64(b, 8, self.lun);
        put_u32(b, 16, self.itt);
        put_u32(b, 20, self.referenced_task_tag);
        put_u32(b, 24, self.cmd_sn);
        put_u32(b, 28, self.exp_stat_sn);
        put_u32(b, 32, self.ref_cmd_sn);
        put_u32(b, 36, self.exp_data_sn);
    }
}

/// Login Request (RFC 7143 section 11.12). Always immediate on the wire.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoginRequest {
    /// T: the initiator is ready to move to `nsg`.
    pub transit: bool,
    /// C: the text in this PDU continues in the next one.
    pub continue_bit: bool,
    /// Current stage.
    pub csg: LoginStage,
    /// Next stage (meaningful only with `transit`).
    pub nsg: LoginStage,
    /// Highest version supported (0x00 for RFC 7143).
    pub version_max: u8,
    /// Lowest version supported.
    pub version_min: u8,
    /// 48-bit Initiator Session ID.
    pub isid: u64,
    /// Target Session Identifying Handle; 0 to create a new session.
    pub tsih: u16,
    /// Initiator Task Tag.
    pub itt: u32,
    /// Connection ID.
    pub cid: u16,
    /// CmdSN (the session's initial CmdSN on a leading login).
    pub cmd_sn: u32,
    /// ExpStatSN.
    pub exp_stat_sn: u32,
}

impl LoginRequest {
    pub(crate) fn parse(b: &Raw) -> Self {
        LoginRequest {
            transit: bit(b[1], 0x80),
            continue_bit: bit(b[1], 0x40),
            csg: LoginStage::from_bits(b[1] >> 2),
            nsg: LoginStage::from_bits(b[1]),
            version_max: b[2],
            version_min: b[3],
            isid: isid_at(b),
            tsih: u16_at(b, 14),
            itt: u32_at(b, 16),
            cid: u16_at(b, 20),
            cmd_sn: u32_at(b, 24),
            exp_stat_sn: u32_at(b, 28),
        }
    }

    pub(crate) fn write(&self, b: &mut Raw) {
        b[1] = flag(self.transit, 0x80)
            | flag(self.continue_bit, 0x40)
            | (self.csg.bits() << 2)
            | self.nsg.bits();
        b[2] = self.version_max;
        b[3] = self.version_min;
        put_isid(b, self.isid);
        put_u16(b, 14, self.tsih);
        put_u32(b, 16, self.itt);
        put_u16(b, 20, self.cid);
        put_u32(b, 24, self.cmd_sn);
        put_u32(b, 28, self.exp_stat_sn);
    }
}

/// Text Request (RFC 7143 section 11.10).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TextRequest {
    /// Immediate delivery bit.
    pub immediate: bool,
    /// F: last PDU of the text request sequence.
    pub final_bit: bool,
    /// C: the text continues in the next PDU.
    pub continue_bit: bool,
    /// Raw 8-byte LUN field.
    pub lun: u64,
    /// Initiator Task Tag.
    pub itt: u32,
    /// Target Transfer Tag: 0xffffffff to start, or the target's TTT to continue.
    pub ttt: u32,
    /// CmdSN.
    pub cmd_sn: u32,
    /// ExpStatSN.
    pub exp_stat_sn: u32,
}

impl TextRequest {
    pub(crate) fn parse(b: &Raw) -> Self {
        TextRequest {
            immediate: bit(b[0], 0x40),
            final_bit: bit(b[1], 0x80),
            continue_bit: bit(b[1], 0x40),
            lun: u64_at(b, 8),
            itt: u32_at(b, 16),
            ttt: u32_at(b, 20),
            cmd_sn: u32_at(b, 24),
            exp_stat_sn: u32_at(b, 28),
        }
    }

    pub(crate) fn write(&self, b: &mut Raw) {
        b[1] = flag(self.final_bit, 0x80) | flag(self.continue_bit, 0x40);
        put_u64(b, 8, self.lun);
        put_u32(b, 16, self.itt);
        put_u32(b, 20, self.ttt);
        put_u32(b, 24, self.cmd_sn);
        put_u32(b, 28, self.exp_stat_sn);
    }
}

/// SCSI Data-Out (RFC 7143 section 11.7).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DataOut {
    /// F: last PDU of this sequence (unsolicited burst or R2T).
    pub final_bit: bool,
    /// Raw 8-byte LUN field (valid when answering an R2T).
    pub lun: u64,
    /// ITT of the command.
    pub itt: u32,
    /// TTT from the R2T, or 0xffffffff for unsolicited data.
    pub ttt: u32,
    /// ExpStatSN.
    pub exp_stat_sn: u32,
    /// DataSN within the sequence.
    pub data_sn: u32,
    /// Offset of this PDU's data in the command's buffer.
    pub buffer_offset: u32,
}

impl DataOut {
    pub(crate) fn parse(b: &Raw) -> Self {
        DataOut {
            final_bit: bit(b[1], 0x80),
            lun: u64_at(b, 8),
            itt: u32_at(b, 16),
            ttt: u32_at(b, 20),
            exp_stat_sn: u32_at(b, 28),
            data_sn: u32_at(b, 36),
            buffer_offset: u32_at(b, 40),
        }
    }

    pub(crate) fn write(&self, b: &mut Raw) {
        b[1] = flag(self.final_bit, 0x80);
        put_u64(b, 8, self.lun);
        put_u32(b, 16, self.itt);
        put_u32(b, 20, self.ttt);
        put_u32(b, 28, self.exp_stat_sn);
        put_u32(b, 36, self.data_sn);
        put_u32(b, 40, self.buffer_offset);
    }
}

/// Logout Request (RFC 7143 section 11.14).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogoutRequest {
    /// Immediate delivery bit.
    pub immediate: bool,
    /// Reason code.
    pub reason: LogoutReason,
    /// Initiator Task Tag.
    pub itt: u32,
    /// CID of the connection to close (reasons 1 and 2).
    pub cid: u16,
    /// CmdSN.
    pub cmd_sn: u32,
    /// ExpStatSN.
    pub exp_stat_sn: u32,
}

impl LogoutRequest {
    pub(crate) fn parse(b: &Raw) -> Self {
        LogoutRequest {
            immediate: bit(b[0], 0x40),
            reason: LogoutReason::from(b[1] & 0x7f),
            itt: u32_at(b, 16),
            cid: u16_at(b, 20),
            cmd_sn: u32_at(b, 24),
            exp_stat_sn: u32_at(b, 28),
        }
    }

    pub(crate) fn write(&self, b: &mut Raw) {
        b[1] = 0x80 | (u8::from(self.reason) & 0x7f);
        put_u32(b, 16, self.itt);
        put_u16(b, 20, self.cid);
        put_u32(b, 24, self.cmd_sn);
        put_u32(b, 28, self.exp_stat_sn);
    }
}

/// SNACK Request (RFC 7143 section 11.16).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snack {
    /// SNACK type.
    pub kind: SnackType,
    /// Raw 8-byte LUN field.
    pub lun: u64,
    /// ITT of the task, or 0xffffffff for Status SNACK.
    pub itt: u32,
    /// Target Transfer Tag (R-Data SNACK / DataACK).
    pub ttt: u32,
    /// ExpStatSN.
    pub exp_stat_sn: u32,
    /// First missing DataSN/R2TSN/StatSN.
    pub beg_run: u32,
    /// Number of PDUs to resend (0 = all from `beg_run`).
    pub run_length: u32,
}

impl Snack {
    pub(crate) fn parse(b: &Raw) -> Self {
        Snack {
            kind: SnackType::from(b[1] & 0x0f),
            lun: u64_at(b, 8),
            itt: u32_at(b, 16),
            ttt: u32_at(b, 20),
            exp_stat_sn: u32_at(b, 28),
            beg_run: u32_at(b, 40),
            run_length: u32_at(b, 44),
        }
    }

    pub(crate) fn write(&self, b: &mut Raw) {
        b[1] = 0x80 | (u8::from(self.kind) & 0x0f);
        put_u64(b, 8, self.lun);
        put_u32(b, 16, self.itt);
        put_u32(b, 20, self.ttt);
        put_u32(b, 28, self.exp_stat_sn);
        put_u32(b, 40, self.beg_run);
        put_u32(b, 44, self.run_length);
    }
}
