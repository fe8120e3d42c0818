//! CDB decoding: raw command bytes into a typed [`Command`], with validation.
//!
//! Decoding is two-step. The opcode (and service action) selects a [`CommandInfo`] from the
//! command table in [`opcode`](super::opcode); every CDB bit outside that command's usage mask
//! is rejected with ILLEGAL REQUEST, INVALID FIELD IN CDB pointing at the offending byte and
//! bit. Then the command's own fields are decoded and checked for values we do not support
//! (protection information, anchored blocks, saved pages...). Range checks against the
//! medium's capacity need the logical unit and happen in the device server
//! (see [`check_lba_range`]).

use super::opcode::{self as op, CommandInfo};
use super::sense::Sense;

/// Location and size of a block transfer, plus its caching hints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockRange {
    /// First logical block.
    pub lba: u64,
    /// Number of logical blocks.
    pub blocks: u32,
}

/// BYTCHK field of VERIFY and WRITE AND VERIFY (SBC-4 5.33).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ByteCheck {
    /// 00b: verify the medium only, no Data-Out.
    None,
    /// 01b: compare `blocks` blocks of Data-Out with the medium.
    Full,
    /// 11b: compare one block of Data-Out with each block in the range.
    SingleBlock,
}

/// A decoded, validated command.
///
/// Field names follow the CDB fields they come from (SPC-4, SBC-4). An allocation length
/// (`alloc_len`) is the most Data-In the initiator will accept, so responses are truncated to
/// it; a parameter list length (`param_len`) is how many bytes of Data-Out follow the command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// TEST UNIT READY.
    TestUnitReady,
    /// REQUEST SENSE.
    RequestSense {
        /// DESC: return descriptor-format (rather than fixed-format) sense data.
        desc: bool,
        /// ALLOCATION LENGTH.
        alloc_len: u32,
    },
    /// INQUIRY (standard data or a VPD page).
    Inquiry {
        /// EVPD: return the vital product data page `page` instead of standard data.
        evpd: bool,
        /// PAGE CODE of the VPD page (zero when `evpd` is clear).
        page: u8,
        /// ALLOCATION LENGTH.
        alloc_len: u32,
    },
    /// MODE SENSE(6) or (10).
    ModeSense(ModeSenseCdb),
    /// MODE SELECT(6) or (10).
    ModeSelect {
        /// MODE SELECT(10), whose parameter list has an 8-byte header (4 bytes for (6)).
        ten: bool,
        /// PF: the pages follow the SPC page format (rather than vendor-specific).
        pf: bool,
        /// PARAMETER LIST LENGTH.
        param_len: u32,
    },
    /// RESERVE(6)/(10) (SCSI-2 logical unit reservation).
    Reserve,
    /// RELEASE(6)/(10).
    Release,
    /// START STOP UNIT.
    StartStopUnit {
        /// IMMED: GOOD may be returned before the operation completes.
        immed: bool,
        /// POWER CONDITION (SBC-4): 0 means "use START and LOEJ"; others change power state.
        power_condition: u8,
        /// NO_FLUSH: do not write cached data to the medium before stopping.
        no_flush: bool,
        /// LOEJ: load (with `start`) or eject (without) the medium.
        loej: bool,
        /// START: make the logical unit ready for medium access (clear: stop it).
        start: bool,
    },
    /// PREVENT ALLOW MEDIUM REMOVAL.
    PreventAllowMediumRemoval {
        /// PREVENT field: 0 allows removal, non-zero prevents it.
        prevent: u8,
    },
    /// READ CAPACITY(10).
    ReadCapacity10,
    /// READ CAPACITY(16).
    ReadCapacity16 {
        /// ALLOCATION LENGTH.
        alloc_len: u32,
    },
    /// READ(6/10/12/16).
    Read {
        /// LOGICAL BLOCK ADDRESS and TRANSFER LENGTH.
        range: BlockRange,
        /// FUA: read from the medium, not from a volatile cache.
        fua: bool,
        /// DPO: a hint that the blocks need not stay in cache.
        dpo: bool,
    },
    /// WRITE(6/10/12/16).
    Write {
        /// LOGICAL BLOCK ADDRESS and TRANSFER LENGTH.
        range: BlockRange,
        /// FUA: the blocks are on stable storage before GOOD is returned.
        fua: bool,
        /// DPO: a hint that the blocks need not stay in cache.
        dpo: bool,
    },
    /// ORWRITE(16): the medium becomes medium OR Data-Out.
    OrWrite {
        /// LOGICAL BLOCK ADDRESS and TRANSFER LENGTH.
        range: BlockRange,
        /// FUA: the result is on stable storage before GOOD is returned.
        fua: bool,
    },
    /// WRITE AND VERIFY(10/12/16).
    WriteAndVerify {
        /// LOGICAL BLOCK ADDRESS and TRANSFER LENGTH.
        range: BlockRange,
        /// BYTCHK: how the written data is checked ([`ByteCheck::SingleBlock`] is rejected).
        bytchk: ByteCheck,
        /// DPO: a hint that the blocks need not stay in cache.
        dpo: bool,
    },
    /// VERIFY(10/12/16).
    Verify {
        /// LOGICAL BLOCK ADDRESS and VERIFICATION LENGTH.
        range: BlockRange,
        /// BYTCHK: whether and how Data-Out is compared with the medium.
        bytchk: ByteCheck,
        /// DPO: a hint that the blocks need not stay in cache.
        dpo: bool,
    },
    /// READ DEFECT DATA(10/12): `flags` is the REQ_PLIST/REQ_GLIST/DEFECT LIST FORMAT byte.
    ReadDefectData {
        /// READ DEFECT DATA(12), whose header is 8 bytes (4 for (10)).
        twelve: bool,
        /// Byte 2 (10) or 1 (12): REQ_PLIST, REQ_GLIST and DEFECT LIST FORMAT, echoed back.
        flags: u8,
        /// ALLOCATION LENGTH.
        alloc_len: u32,
    },
    /// PRE-FETCH(10/16).
    PreFetch {
        /// LOGICAL BLOCK ADDRESS and PREFETCH LENGTH.
        range: BlockRange,
        /// IMMED: return status before the blocks are fetched.
        immed: bool,
    },
    /// SYNCHRONIZE CACHE(10/16); `blocks == 0` means to the end of the medium.
    SynchronizeCache {
        /// LOGICAL BLOCK ADDRESS and NUMBER OF LOGICAL BLOCKS.
        range: BlockRange,
        /// IMMED: return status before the blocks are synchronized.
        immed: bool,
    },
    /// COMPARE AND WRITE: atomically compare `blocks` blocks with the first half of the
    /// Data-Out and, if equal, write the second half.
    CompareAndWrite {
        /// LOGICAL BLOCK ADDRESS.
        lba: u64,
        /// NUMBER OF LOGICAL BLOCKS (the Data-Out is twice this many blocks).
        blocks: u8,
        /// FUA: the written blocks are on stable storage before GOOD is returned.
        fua: bool,
    },
    /// WRITE SAME(10/16).
    WriteSame {
        /// LOGICAL BLOCK ADDRESS and NUMBER OF LOGICAL BLOCKS.
        range: BlockRange,
        /// UNMAP: the blocks may be deallocated instead of written (thin provisioning).
        unmap: bool,
        /// NDOB: no Data-Out buffer; the blocks are written as if with a block of zeros.
        ndob: bool,
    },
    /// UNMAP (parameter list follows in Data-Out).
    Unmap {
        /// PARAMETER LIST LENGTH.
        param_len: u32,
    },
    /// GET LBA STATUS.
    GetLbaStatus {
        /// STARTING LOGICAL BLOCK ADDRESS.
        lba: u64,
        /// ALLOCATION LENGTH.
        alloc_len: u32,
    },
    /// PERSISTENT RESERVE IN with its service action.
    PersistentReserveIn {
        /// SERVICE ACTION (see [`opcode::pri`](super::opcode::pri)).
        service_action: u16,
        /// ALLOCATION LENGTH.
        alloc_len: u32,
    },
    /// PERSISTENT RESERVE OUT: service action, SCOPE, TYPE, parameter list length.
    PersistentReserveOut {
        /// SERVICE ACTION (see [`opcode::pro`](super::opcode::pro)).
        service_action: u16,
        /// SCOPE (only 0, logical unit scope, is defined).
        scope: u8,
        /// TYPE of reservation, checked by the service actions that use it.
        pr_type: u8,
        /// PARAMETER LIST LENGTH.
        param_len: u32,
    },
    /// EXTENDED COPY(LID1): the parameter list follows in Data-Out.
    ExtendedCopy {
        /// PARAMETER LIST LENGTH.
        param_len: u32,
    },
    /// RECEIVE COPY RESULTS (LID1) with its service action and LIST IDENTIFIER.
    ReceiveCopyResults {
        /// SERVICE ACTION (see [`opcode::rcr`](super::opcode::rcr)).
        service_action: u16,
        /// LIST IDENTIFIER of the EXTENDED COPY asked about.
        list_id: u8,
        /// ALLOCATION LENGTH.
        alloc_len: u32,
    },
    /// REPORT LUNS.
    ReportLuns {
        /// SELECT REPORT: 0 all but well-known LUNs, 1 well-known LUNs only, 2 all LUNs.
        select_report: u8,
        /// ALLOCATION LENGTH.
        alloc_len: u32,
    },
    /// REPORT SUPPORTED OPERATION CODES.
    ReportSupportedOpcodes(RsocCdb),
    /// REPORT SUPPORTED TASK MANAGEMENT FUNCTIONS.
    ReportSupportedTmfs {
        /// REPD: return the 16-byte extended parameter data (with timeouts).
        repd: bool,
        /// ALLOCATION LENGTH.
        alloc_len: u32,
    },
    /// REPORT TARGET PORT GROUPS (ALUA); `extended` = PARAMETER DATA FORMAT 001b.
    ReportTargetPortGroups {
        /// PARAMETER DATA FORMAT 001b: the extended header with IMPLICIT TRANSITION TIME.
        extended: bool,
        /// ALLOCATION LENGTH.
        alloc_len: u32,
    },
}

/// MODE SENSE CDB fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ModeSenseCdb {
    /// MODE SENSE(10) (vs 6).
    pub ten: bool,
    /// Disable block descriptors.
    pub dbd: bool,
    /// Long LBA accepted (10 only).
    pub llbaa: bool,
    /// Page control: 0 current, 1 changeable, 2 default, 3 saved.
    pub pc: u8,
    /// Page code (3Fh = all).
    pub page: u8,
    /// Subpage code (FFh = all).
    pub subpage: u8,
    /// Allocation length.
    pub alloc_len: u32,
}

/// REPORT SUPPORTED OPERATION CODES CDB fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RsocCdb {
    /// Return command timeouts descriptors.
    pub rctd: bool,
    /// Reporting options (0 all commands, 1..=3 one command).
    pub options: u8,
    /// Requested operation code.
    pub opcode: u8,
    /// Requested service action.
    pub service_action: u16,
    /// Allocation length.
    pub alloc_len: u32,
}

/// A decoded CDB: the typed command plus its table entry.
#[derive(Clone, Debug)]
pub struct Cdb {
    /// The typed command.
    pub command: Command,
    /// Table entry (name, CDB length, usage data).
    pub info: &'static CommandInfo,
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn be64(b: &[u8], at: usize) -> u64 {
    let mut v = [0u8; 8];
    v.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(v)
}

/// Most significant set bit of `v` (v != 0).
fn top_bit(v: u8) -> u8 {
    7 - v.leading_zeros() as u8
}

/// Find the table entry for a CDB, or the sense for an unsupported opcode/service action.
pub fn lookup(cdb: &[u8]) -> Result<&'static CommandInfo, Sense> {
    let opcode = *cdb.first().ok_or_else(Sense::invalid_opcode)?;
    if op::has_service_action(opcode) {
        let b1 = *cdb
            .get(1)
            .ok_or_else(|| Sense::invalid_field_in_cdb(1, Some(4)))?;
        let sa = u16::from(b1 & 0x1F);
        op::lookup(opcode, Some(sa)).ok_or(Sense::invalid_field_in_cdb(1, Some(4)))
    } else {
        op::lookup(opcode, None).ok_or_else(Sense::invalid_opcode)
    }
}

/// Reject bits outside the usage mask, and NACA/LINK in the CONTROL byte.
fn check_usage(cdb: &[u8], info: &CommandInfo) -> Result<(), Sense> {
    let len = info.cdb_len();
    if cdb.len() < len {
        // The transport delivered fewer bytes than the opcode's group implies.
        return Err(Sense::invalid_field_in_cdb(0, None));
    }
    for (i, (&byte, &usage)) in cdb.iter().zip(info.usage).enumerate().take(len - 1).skip(1) {
        let mut mask = usage;
        if i == 1 && info.service_action.is_some() {
            mask |= 0x1F;
        }
        let bad = byte & !mask;
        if bad != 0 {
            return Err(Sense::invalid_field_in_cdb(i as u16, Some(top_bit(bad))));
        }
    }
    // CONTROL: bits 7-6 vendor specific (ignored); NACA, LINK and reserved bits unsupported.
    let bad = cdb[len - 1] & 0x3F;
    if bad != 0 {
        return Err(Sense::invalid_field_in_cdb(
            (len - 1) as u16,
            Some(top_bit(bad)),
        ));
    }
    Ok(())
}

/// RDPROTECT/WRPROTECT/VRPROTECT must be zero: Lunar's LUNs carry no protection information.
fn check_protect(cdb: &[u8]) -> Result<(), Sense> {
    if cdb[1] & 0xE0 != 0 {
        return Err(Sense::invalid_field_in_cdb(1, Some(7)));
    }
    Ok(())
}

fn bytchk(cdb: &[u8]) -> Result<ByteCheck, Sense> {
    match (cdb[1] >> 1) & 0x03 {
        0 => Ok(ByteCheck::None),
        1 => Ok(ByteCheck::Full),
        3 => Ok(ByteCheck::SingleBlock),
        _ => Err(Sense::invalid_field_in_cdb(1, Some(2))),
    }
}

/// LBA and transfer length of a 10/12/16-byte block command.
fn range(cdb: &[u8]) -> BlockRange {
    match cdb.len() {
        10 => BlockRange {
            lba: u64::from(be32(cdb, 2)),
            blocks: u32::from(be16(cdb, 7)),
        },
        12 => BlockRange {
            lba: u64::from(be32(cdb, 2)),
            blocks: be32(cdb, 6),
        },
        _ => BlockRange {
            lba: be64(cdb, 2),
            blocks: be32(cdb, 10),
        },
    }
}

/// Decode and validate a CDB. `raw` may be longer than the command (iSCSI pads CDBs to 16
/// bytes); only the command's own length is examined.
pub fn parse(raw: &[u8]) -> Result<Cdb, Sense> {
    let info = lookup(raw)?;
    check_usage(raw, info)?;
    let cdb = &raw[..info.cdb_len()];
    let b1 = cdb[1];
    let command = match (info.opcode, info.service_action) {
        (op::TEST_UNIT_READY, _) => Command::TestUnitReady,
        (op::REQUEST_SENSE, _) => Command::RequestSense {
            desc: b1 & 0x01 != 0,
            alloc_len: u32::from(cdb[4]),
        },
        (op::INQUIRY, _) => {
            let evpd = b1 & 0x01 != 0;
            if !evpd && cdb[2] != 0 {
                return Err(Sense::invalid_field_in_cdb(2, Some(7)));
            }
            Command::Inquiry {
                evpd,
                page: cdb[2],
                alloc_len: u32::from(be16(cdb, 3)),
            }
        }
        (op::MODE_SENSE_6 | op::MODE_SENSE_10, _) => {
            let ten = info.opcode == op::MODE_SENSE_10;
            Command::ModeSense(ModeSenseCdb {
                ten,
                dbd: b1 & 0x08 != 0,
                llbaa: b1 & 0x10 != 0,
                pc: cdb[2] >> 6,
                page: cdb[2] & 0x3F,
                subpage: cdb[3],
                alloc_len: if ten {
                    u32::from(be16(cdb, 7))
                } else {
                    u32::from(cdb[4])
                },
            })
        }
        (op::MODE_SELECT_6 | op::MODE_SELECT_10, _) => {
            let ten = info.opcode == op::MODE_SELECT_10;
            if b1 & 0x01 != 0 {
                // SP: Lunar keeps no saved pages (parameters are configuration, not
                // initiator-writable persistent state).
                return Err(Sense::invalid_field_in_cdb(1, Some(0)));
            }
            Command::ModeSelect {
                ten,
                pf: b1 & 0x10 != 0,
                param_len: if ten {
                    u32::from(be16(cdb, 7))
                } else {
                    u32::from(cdb[4])
                },
            }
        }
        (op::RESERVE_6 | op::RESERVE_10, _) => Command::Reserve,
        (op::RELEASE_6 | op::RELEASE_10, _) => Command::Release,
        (op::START_STOP_UNIT, _) => {
            let power_condition = cdb[4] >> 4;
            if !matches!(power_condition, 0x0..=0x3 | 0x7 | 0xA | 0xB) {
                return Err(Sense::invalid_field_in_cdb(4, Some(7)));
            }
            Command::StartStopUnit {
                immed: b1 & 0x01 != 0,
                power_condition,
                no_flush: cdb[4] & 0x04 != 0,
                loej: cdb[4] & 0x02 != 0,
                start: cdb[4] & 0x01 != 0,
            }
        }
        (op::PREVENT_ALLOW_MEDIUM_REMOVAL, _) => Command::PreventAllowMediumRemoval {
            prevent: cdb[4] & 0x03,
        },
        (op::READ_CAPACITY_10, _) => {
            if cdb[8] & 0x01 == 0 && be32(cdb, 2) != 0 {
                return Err(Sense::invalid_field_in_cdb(2, Some(7)));
            }
            Command::ReadCapacity10
        }
        (op::READ_6 | op::WRITE_6, _) => {
            let lba = u64::from(u32::from_be_bytes([0, b1 & 0x1F, cdb[2], cdb[3]]));
            // A transfer length of zero means 256 blocks for the 6-byte commands.
            let blocks = if cdb[4] == 0 { 256 } else { u32::from(cdb[4]) };
            let range = BlockRange { lba, blocks };
            if info.opcode == op::READ_6 {
                Command::Read {
                    range,
                    fua: false,
                    dpo: false,
                }
            } else {
                Command::Write {
                    range,
                    fua: false,
                    dpo: false,
                }
            }
        }
        (op::READ_10 | op::READ_12 | op::READ_16, _) => {
            check_protect(cdb)?;
            Command::Read {
                range: range(cdb),
                fua: b1 & 0x08 != 0,
                dpo: b1 & 0x10 != 0,
            }
        }
        (op::WRITE_10 | op::WRITE_12 | op::WRITE_16, _) => {
            check_protect(cdb)?;
            Command::Write {
                range: range(cdb),
                fua: b1 & 0x08 != 0,
                dpo: b1 & 0x10 != 0,
            }
        }
        (op::WRITE_AND_VERIFY_10 | op::WRITE_AND_VERIFY_12 | op::WRITE_AND_VERIFY_16, _) => {
            check_protect(cdb)?;
            let bytchk = bytchk(cdb)?;
            if bytchk == ByteCheck::SingleBlock {
                // 11b is reserved for WRITE AND VERIFY.
                return Err(Sense::invalid_field_in_cdb(1, Some(2)));
            }
            Command::WriteAndVerify {
                range: range(cdb),
                bytchk,
                dpo: b1 & 0x10 != 0,
            }
        }
        (op::VERIFY_10 | op::VERIFY_12 | op::VERIFY_16, _) => {
            check_protect(cdb)?;
            Command::Verify {
                range: range(cdb),
                bytchk: bytchk(cdb)?,
                dpo: b1 & 0x10 != 0,
            }
        }
        (op::READ_DEFECT_DATA_10, _) => Command::ReadDefectData {
            twelve: false,
            flags: cdb[2] & 0x1F,
            alloc_len: u32::from(be16(cdb, 7)),
        },
        (op::READ_DEFECT_DATA_12, _) => Command::ReadDefectData {
            twelve: true,
            flags: b1 & 0x1F,
            alloc_len: be32(cdb, 6),
        },
        (op::PRE_FETCH_10 | op::PRE_FETCH_16, _) => Command::PreFetch {
            range: range(cdb),
            immed: b1 & 0x02 != 0,
        },
        (op::SYNCHRONIZE_CACHE_10 | op::SYNCHRONIZE_CACHE_16, _) => Command::SynchronizeCache {
            range: range(cdb),
            immed: b1 & 0x02 != 0,
        },
        (op::ORWRITE_16, _) => {
            check_protect(cdb)?;
            Command::OrWrite {
                range: range(cdb),
                fua: b1 & 0x08 != 0,
            }
        }
        (op::COMPARE_AND_WRITE, _) => {
            check_protect(cdb)?;
            Command::CompareAndWrite {
                lba: be64(cdb, 2),
                blocks: cdb[13],
                fua: b1 & 0x08 != 0,
            }
        }
        (op::WRITE_SAME_10 | op::WRITE_SAME_16, _) => {
            check_protect(cdb)?;
            if b1 & 0x10 != 0 {
                // ANCHOR: Lunar has no anchored state (ANC_SUP=0 in the LBP VPD page).
                return Err(Sense::invalid_field_in_cdb(1, Some(4)));
            }
            Command::WriteSame {
                range: range(cdb),
                unmap: b1 & 0x08 != 0,
                ndob: b1 & 0x01 != 0,
            }
        }
        (op::UNMAP, _) => {
            if b1 & 0x01 != 0 {
                return Err(Sense::invalid_field_in_cdb(1, Some(0)));
            }
            Command::Unmap {
                param_len: u32::from(be16(cdb, 7)),
            }
        }
        (op::SERVICE_ACTION_IN_16, Some(op::sai::READ_CAPACITY_16)) => Command::ReadCapacity16 {
            alloc_len: be32(cdb, 10),
        },
        (op::SERVICE_ACTION_IN_16, Some(op::sai::GET_LBA_STATUS)) => Command::GetLbaStatus {
            lba: be64(cdb, 2),
            alloc_len: be32(cdb, 10),
        },
        (op::PERSISTENT_RESERVE_IN, Some(sa)) => Command::PersistentReserveIn {
            service_action: sa,
            alloc_len: u32::from(be16(cdb, 7)),
        },
        (op::PERSISTENT_RESERVE_OUT, Some(sa)) => Command::PersistentReserveOut {
            service_action: sa,
            scope: cdb[2] >> 4,
            pr_type: cdb[2] & 0x0F,
            param_len: be32(cdb, 5),
        },
        (op::EXTENDED_COPY, Some(_)) => Command::ExtendedCopy {
            param_len: be32(cdb, 10),
        },
        (op::RECEIVE_COPY_RESULTS, Some(sa)) => Command::ReceiveCopyResults {
            service_action: sa,
            list_id: cdb[2],
            alloc_len: be32(cdb, 10),
        },
        (op::REPORT_LUNS, _) => {
            let select_report = cdb[2];
            if !matches!(select_report, 0x00..=0x02) {
                return Err(Sense::invalid_field_in_cdb(2, Some(7)));
            }
            Command::ReportLuns {
                select_report,
                alloc_len: be32(cdb, 6),
            }
        }
        (op::MAINTENANCE_IN, Some(op::mi::REPORT_SUPPORTED_OPERATION_CODES)) => {
            let options = cdb[2] & 0x07;
            if options > 3 {
                return Err(Sense::invalid_field_in_cdb(2, Some(2)));
            }
            Command::ReportSupportedOpcodes(RsocCdb {
                rctd: cdb[2] & 0x80 != 0,
                options,
                opcode: cdb[3],
                service_action: be16(cdb, 4),
                alloc_len: be32(cdb, 6),
            })
        }
        (op::MAINTENANCE_IN, Some(op::mi::REPORT_TARGET_PORT_GROUPS)) => {
            let format = cdb[1] >> 5;
            if format > 1 {
                return Err(Sense::invalid_field_in_cdb(1, Some(7)));
            }
            Command::ReportTargetPortGroups {
                extended: format == 1,
                alloc_len: be32(cdb, 6),
            }
        }
        (op::MAINTENANCE_IN, Some(op::mi::REPORT_SUPPORTED_TMFS)) => Command::ReportSupportedTmfs {
            repd: cdb[2] & 0x80 != 0,
            alloc_len: be32(cdb, 6),
        },
        // Every table entry is handled above; an entry without a decoder is a table bug,
        // reported as an unsupported opcode rather than a panic.
        _ => return Err(Sense::invalid_opcode()),
    };
    Ok(Cdb { command, info })
}

impl Command {
    /// Bytes of Data-Out this command expects, given the logical block size.
    pub fn data_out_len(&self, block_size: u32) -> u64 {
        let bs = u64::from(block_size);
        match self {
            Command::Write { range, .. }
            | Command::WriteAndVerify { range, .. }
            | Command::OrWrite { range, .. } => u64::from(range.blocks) * bs,
            Command::Verify { range, bytchk, .. } => match bytchk {
                ByteCheck::None => 0,
                ByteCheck::Full => u64::from(range.blocks) * bs,
                ByteCheck::SingleBlock => bs,
            },
            Command::CompareAndWrite { blocks, .. } => 2 * u64::from(*blocks) * bs,
            Command::WriteSame { ndob, .. } => {
                if *ndob {
                    0
                } else {
                    bs
                }
            }
            Command::ModeSelect { param_len, .. }
            | Command::Unmap { param_len }
            | Command::ExtendedCopy { param_len }
            | Command::PersistentReserveOut { param_len, .. } => u64::from(*param_len),
            _ => 0,
        }
    }

    /// Whether this command modifies the medium (for read-only LUNs and write protection).
    pub fn writes_medium(&self) -> bool {
        matches!(
            self,
            Command::Write { .. }
                | Command::WriteAndVerify { .. }
                | Command::CompareAndWrite { .. }
                | Command::OrWrite { .. }
                | Command::WriteSame { .. }
                | Command::Unmap { .. }
                | Command::ExtendedCopy { .. }
        )
    }
}

/// Check `lba..lba+blocks` against a medium of `capacity_blocks`: LBA OUT OF RANGE (with the
/// LBA in the INFORMATION field) when the range ends past the medium. A zero-length range is
/// accepted at any LBA up to the capacity, which is what initiators probing with zero-length
/// transfers expect.
pub fn check_lba_range(lba: u64, blocks: u64, capacity_blocks: u64) -> Result<(), Sense> {
    match lba.checked_add(blocks) {
        Some(end) if end <= capacity_blocks => Ok(()),
        _ => Err(Sense::lba_out_of_range().with_information(lba)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scsi::sense::{asc, FieldPointer, SenseKey};

    fn fp(s: &Sense) -> Option<FieldPointer> {
        s.field
    }

    #[test]
    fn read10_golden() {
        let c = parse(&[0x28, 0x18, 0, 0, 0x12, 0x34, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0]).unwrap();
        assert_eq!(
            c.command,
            Command::Read {
                range: BlockRange {
                    lba: 0x1234,
                    blocks: 8
                },
                fua: true,
                dpo: true
            }
        );
        assert_eq!(c.info.name, "READ(10)");
    }

    #[test]
    fn read6_zero_means_256() {
        let c = parse(&[0x08, 0x01, 0x02, 0x03, 0, 0]).unwrap();
        assert_eq!(
            c.command,
            Command::Read {
                range: BlockRange {
                    lba: 0x010203,
                    blocks: 256
                },
                fua: false,
                dpo: false
            }
        );
    }

    #[test]
    fn read16_and_write12() {
        let mut cdb = [0u8; 16];
        cdb[0] = 0x88;
        cdb[2..10].copy_from_slice(&0x0102_0304_0506_0708u64.to_be_bytes());
        cdb[10..14].copy_from_slice(&7u32.to_be_bytes());
        let c = parse(&cdb).unwrap();
        assert_eq!(
            c.command,
            Command::Read {
                range: BlockRange {
                    lba: 0x0102_0304_0506_0708,
                    blocks: 7
                },
                fua: false,
                dpo: false
            }
        );
        let c = parse(&[0xAA, 0x08, 0, 0, 0, 9, 0, 0, 1, 0, 0, 0]).unwrap();
        assert_eq!(
            c.command,
            Command::Write {
                range: BlockRange {
                    lba: 9,
                    blocks: 0x100
                },
                fua: true,
                dpo: false
            }
        );
        assert_eq!(c.command.data_out_len(512), 0x100 * 512);
        assert!(c.command.writes_medium());
    }

    #[test]
    fn rdprotect_rejected_with_pointer() {
        let e = parse(&[0x28, 0x20, 0, 0, 0, 0, 0, 0, 1, 0]).unwrap_err();
        assert_eq!(e.key, SenseKey::IllegalRequest);
        assert_eq!(e.code, asc::INVALID_FIELD_IN_CDB);
        assert_eq!(fp(&e), Some(FieldPointer::cdb(1, Some(7))));
    }

    #[test]
    fn reserved_bit_rejected_with_pointer() {
        // READ(10) byte 6 bit 5 is reserved.
        let e = parse(&[0x28, 0, 0, 0, 0, 0, 0x20, 0, 1, 0]).unwrap_err();
        assert_eq!(fp(&e), Some(FieldPointer::cdb(6, Some(5))));
        // WRITE(10) byte 1 bit 2 (RARC is READ-only).
        let e = parse(&[0x2A, 0x04, 0, 0, 0, 0, 0, 0, 1, 0]).unwrap_err();
        assert_eq!(fp(&e), Some(FieldPointer::cdb(1, Some(2))));
    }

    #[test]
    fn naca_rejected() {
        let e = parse(&[0x00, 0, 0, 0, 0, 0x04]).unwrap_err();
        assert_eq!(e.code, asc::INVALID_FIELD_IN_CDB);
        assert_eq!(fp(&e), Some(FieldPointer::cdb(5, Some(2))));
        // Vendor-specific control bits are ignored.
        assert_eq!(
            parse(&[0x00, 0, 0, 0, 0, 0xC0]).unwrap().command,
            Command::TestUnitReady
        );
    }

    #[test]
    fn unknown_opcode_and_service_action() {
        let e = parse(&[0x02, 0, 0, 0, 0, 0]).unwrap_err();
        assert_eq!(e.code, asc::INVALID_COMMAND_OPERATION_CODE);
        assert_eq!(fp(&e), Some(FieldPointer::cdb(0, None)));
        let e = parse(&[0x9E, 0x1F, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]).unwrap_err();
        assert_eq!(e.code, asc::INVALID_FIELD_IN_CDB);
        assert_eq!(fp(&e), Some(FieldPointer::cdb(1, Some(4))));
        assert_eq!(
            parse(&[]).unwrap_err().code,
            asc::INVALID_COMMAND_OPERATION_CODE
        );
        // Truncated CDB.
        assert_eq!(
            parse(&[0x28, 0, 0]).unwrap_err().code,
            asc::INVALID_FIELD_IN_CDB
        );
    }

    #[test]
    fn inquiry_page_without_evpd() {
        let e = parse(&[0x12, 0, 0x80, 0, 0xFF, 0]).unwrap_err();
        assert_eq!(fp(&e), Some(FieldPointer::cdb(2, Some(7))));
        let c = parse(&[0x12, 1, 0x83, 0x01, 0x00, 0]).unwrap();
        assert_eq!(
            c.command,
            Command::Inquiry {
                evpd: true,
                page: 0x83,
                alloc_len: 256
            }
        );
    }

    #[test]
    fn write_same_flags() {
        let c = parse(&[0x41, 0x08, 0, 0, 0, 1, 0, 0, 4, 0]).unwrap();
        assert_eq!(
            c.command,
            Command::WriteSame {
                range: BlockRange { lba: 1, blocks: 4 },
                unmap: true,
                ndob: false
            }
        );
        assert_eq!(c.command.data_out_len(4096), 4096);
        let e = parse(&[0x41, 0x18, 0, 0, 0, 1, 0, 0, 4, 0]).unwrap_err();
        assert_eq!(fp(&e), Some(FieldPointer::cdb(1, Some(4))));
        // NDOB exists only in WRITE SAME(16).
        let e = parse(&[0x41, 0x01, 0, 0, 0, 1, 0, 0, 4, 0]).unwrap_err();
        assert_eq!(fp(&e), Some(FieldPointer::cdb(1, Some(0))));
        let mut ws16 = [0u8; 16];
        ws16[0] = 0x93;
        ws16[1] = 0x09;
        ws16[13] = 2;
        let c = parse(&ws16).unwrap();
        assert_eq!(
            c.command,
            Command::WriteSame {
                range: BlockRange { lba: 0, blocks: 2 },
                unmap: true,
                ndob: true
            }
        );
        assert_eq!(c.command.data_out_len(512), 0);
    }

    #[test]
    fn verify_bytchk() {
        let c = parse(&[0x2F, 0x02, 0, 0, 0, 0, 0, 0, 2, 0]).unwrap();
        assert!(matches!(
            c.command,
            Command::Verify {
                bytchk: ByteCheck::Full,
                ..
            }
        ));
        assert_eq!(c.command.data_out_len(512), 1024);
        let c = parse(&[0x2F, 0x06, 0, 0, 0, 0, 0, 0, 2, 0]).unwrap();
        assert_eq!(c.command.data_out_len(512), 512);
        let e = parse(&[0x2F, 0x04, 0, 0, 0, 0, 0, 0, 2, 0]).unwrap_err();
        assert_eq!(fp(&e), Some(FieldPointer::cdb(1, Some(2))));
        let e = parse(&[0x2E, 0x06, 0, 0, 0, 0, 0, 0, 2, 0]).unwrap_err();
        assert_eq!(fp(&e), Some(FieldPointer::cdb(1, Some(2))));
    }

    #[test]
    fn mode_commands() {
        let c = parse(&[0x5A, 0x18, 0x7F, 0xFF, 0, 0, 0, 0x10, 0, 0]).unwrap();
        assert_eq!(
            c.command,
            Command::ModeSense(ModeSenseCdb {
                ten: true,
                dbd: true,
                llbaa: true,
                pc: 1,
                page: 0x3F,
                subpage: 0xFF,
                alloc_len: 0x1000
            })
        );
        // LLBAA does not exist in MODE SENSE(6).
        let e = parse(&[0x1A, 0x10, 0x3F, 0, 0xFF, 0]).unwrap_err();
        assert_eq!(fp(&e), Some(FieldPointer::cdb(1, Some(4))));
        let e = parse(&[0x15, 0x11, 0, 0, 12, 0]).unwrap_err();
        assert_eq!(fp(&e), Some(FieldPointer::cdb(1, Some(0))));
        let c = parse(&[0x15, 0x10, 0, 0, 12, 0]).unwrap();
        assert_eq!(c.command.data_out_len(512), 12);
    }

    #[test]
    fn read_capacity() {
        let e = parse(&[0x25, 0, 0, 0, 0, 1, 0, 0, 0, 0]).unwrap_err();
        assert_eq!(fp(&e), Some(FieldPointer::cdb(2, Some(7))));
        assert_eq!(
            parse(&[0x25, 0, 0, 0, 0, 1, 0, 0, 1, 0]).unwrap().command,
            Command::ReadCapacity10
        );
        let mut rc16 = [0u8; 16];
        rc16[0] = 0x9E;
        rc16[1] = 0x10;
        rc16[13] = 32;
        assert_eq!(
            parse(&rc16).unwrap().command,
            Command::ReadCapacity16 { alloc_len: 32 }
        );
    }

    #[test]
    fn rsoc_and_report_luns() {
        let c = parse(&[0xA3, 0x0C, 0x82, 0x9E, 0, 0x10, 0, 0, 1, 0, 0, 0]).unwrap();
        assert_eq!(
            c.command,
            Command::ReportSupportedOpcodes(RsocCdb {
                rctd: true,
                options: 2,
                opcode: 0x9E,
                service_action: 0x10,
                alloc_len: 256
            })
        );
        let e = parse(&[0xA3, 0x0C, 0x04, 0, 0, 0, 0, 0, 1, 0, 0, 0]).unwrap_err();
        assert_eq!(fp(&e), Some(FieldPointer::cdb(2, Some(2))));
        let e = parse(&[0xA0, 0, 0x03, 0, 0, 0, 0, 0, 0, 16, 0, 0]).unwrap_err();
        assert_eq!(fp(&e), Some(FieldPointer::cdb(2, Some(7))));
    }

    #[test]
    fn start_stop_power_condition() {
        assert!(parse(&[0x1B, 0, 0, 0, 0x01, 0]).is_ok());
        let e = parse(&[0x1B, 0, 0, 0, 0x50, 0]).unwrap_err();
        assert_eq!(fp(&e), Some(FieldPointer::cdb(4, Some(7))));
    }

    #[test]
    fn unmap_anchor() {
        let e = parse(&[0x42, 1, 0, 0, 0, 0, 0, 0, 24, 0]).unwrap_err();
        assert_eq!(fp(&e), Some(FieldPointer::cdb(1, Some(0))));
        assert_eq!(
            parse(&[0x42, 0, 0, 0, 0, 0, 0, 0, 24, 0]).unwrap().command,
            Command::Unmap { param_len: 24 }
        );
    }

    #[test]
    fn compare_and_write() {
        let mut c = [0u8; 16];
        c[0] = 0x89;
        c[1] = 0x08;
        c[9] = 5;
        c[13] = 1;
        let p = parse(&c).unwrap();
        assert_eq!(
            p.command,
            Command::CompareAndWrite {
                lba: 5,
                blocks: 1,
                fua: true
            }
        );
        assert_eq!(p.command.data_out_len(512), 1024);
        c[11] = 1; // reserved
        assert_eq!(
            parse(&c).unwrap_err().field,
            Some(FieldPointer::cdb(11, Some(0)))
        );
    }

    #[test]
    fn orwrite16() {
        let c = parse(&[0x8B, 0x08, 0, 0, 0, 0, 0, 0, 0, 7, 0, 0, 0, 2, 0, 0]).unwrap();
        assert_eq!(
            c.command,
            Command::OrWrite {
                range: BlockRange { lba: 7, blocks: 2 },
                fua: true
            }
        );
        assert_eq!(c.command.data_out_len(4096), 8192);
        let e = parse(&[0x8B, 0x40, 0, 0, 0, 0, 0, 0, 0, 7, 0, 0, 0, 2, 0, 0]).unwrap_err();
        assert_eq!(e.field, Some(FieldPointer::cdb(1, Some(7))));
    }

    #[test]
    fn lba_range() {
        assert!(check_lba_range(0, 10, 10).is_ok());
        assert!(check_lba_range(10, 0, 10).is_ok());
        assert!(check_lba_range(9, 1, 10).is_ok());
        assert_eq!(
            check_lba_range(9, 2, 10).unwrap_err().code,
            asc::LBA_OUT_OF_RANGE
        );
        assert!(check_lba_range(11, 0, 10).is_err());
        assert!(check_lba_range(u64::MAX, 2, 10).is_err());
    }
}
