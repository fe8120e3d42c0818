//! Operation codes and service actions, and the table of commands Lunar's block device
//! server implements.
//!
//! The table is the single source of truth for three things that must agree: which opcodes
//! are accepted, the CDB length of each, and the *CDB usage data* reported by REPORT SUPPORTED
//! OPERATION CODES. The CDB decoder rejects any bit set outside a command's usage mask with
//! INVALID FIELD IN CDB, so what we advertise is exactly what we honour.

/// TEST UNIT READY, SPC-4: asks whether the logical unit is ready; also how initiators collect a
/// pending unit attention.
pub const TEST_UNIT_READY: u8 = 0x00;
/// REQUEST SENSE, SPC-4: returns sense data for the nexus in the Data-In buffer (pending unit
/// attentions, or NO SENSE).
pub const REQUEST_SENSE: u8 = 0x03;
/// READ (6), SBC-4: 21-bit LBA and 8-bit TRANSFER LENGTH (0 means 256 blocks); kept for old
/// initiators.
pub const READ_6: u8 = 0x08;
/// WRITE (6), SBC-4: 21-bit LBA and 8-bit TRANSFER LENGTH (0 means 256 blocks); kept for old
/// initiators.
pub const WRITE_6: u8 = 0x0A;
/// INQUIRY, SPC-4 6.6: standard inquiry data, or a vital product data page when EVPD is set.
pub const INQUIRY: u8 = 0x12;
/// MODE SELECT (6), SPC-4: sets mode page values from a parameter list with a 4-byte header.
pub const MODE_SELECT_6: u8 = 0x15;
/// RESERVE (6), SPC-2 (obsolete in SPC-4): takes a whole-unit reservation for the issuing nexus.
pub const RESERVE_6: u8 = 0x16;
/// RELEASE (6), SPC-2 (obsolete in SPC-4): drops the issuing nexus's reservation.
pub const RELEASE_6: u8 = 0x17;
/// MODE SENSE (6), SPC-4: returns mode pages behind a 4-byte header.
pub const MODE_SENSE_6: u8 = 0x1A;
/// START STOP UNIT, SBC-4: the START, LOEJ and POWER CONDITION of the logical unit.
pub const START_STOP_UNIT: u8 = 0x1B;
/// PREVENT ALLOW MEDIUM REMOVAL, SBC-4: locks a removable medium in; a virtual disk has none, so
/// GOOD.
pub const PREVENT_ALLOW_MEDIUM_REMOVAL: u8 = 0x1E;
/// READ CAPACITY (10), SBC-4: last LBA as 32 bits (FFFFFFFFh tells the initiator to use READ
/// CAPACITY (16)) and block length.
pub const READ_CAPACITY_10: u8 = 0x25;
/// READ (10), SBC-4: 32-bit LBA, 16-bit TRANSFER LENGTH.
pub const READ_10: u8 = 0x28;
/// WRITE (10), SBC-4: 32-bit LBA, 16-bit TRANSFER LENGTH.
pub const WRITE_10: u8 = 0x2A;
/// WRITE AND VERIFY (10), SBC-4: a write followed by a verify of what was written (BYTCHK selects
/// how).
pub const WRITE_AND_VERIFY_10: u8 = 0x2E;
/// VERIFY (10), SBC-4: checks blocks are readable, or with BYTCHK compares them to Data-Out.
pub const VERIFY_10: u8 = 0x2F;
/// PRE-FETCH (10), SBC-4: a hint to bring blocks into cache; CONDITION MET or GOOD, nothing
/// transferred.
pub const PRE_FETCH_10: u8 = 0x34;
/// READ DEFECT DATA (10), SBC-4: the grown/primary defect lists; a virtual disk reports empty ones.
pub const READ_DEFECT_DATA_10: u8 = 0x37;
/// SYNCHRONIZE CACHE (10), SBC-4: makes written blocks in the range durable before GOOD.
pub const SYNCHRONIZE_CACHE_10: u8 = 0x35;
/// WRITE SAME (10), SBC-4: writes one block's data to a range, or unmaps it when UNMAP is set.
pub const WRITE_SAME_10: u8 = 0x41;
/// UNMAP, SBC-4: frees the block ranges listed in the parameter list (thin provisioning).
pub const UNMAP: u8 = 0x42;
/// MODE SELECT (10), SPC-4: as MODE SELECT (6) with an 8-byte parameter list header.
pub const MODE_SELECT_10: u8 = 0x55;
/// RESERVE (10), SPC-2 (obsolete in SPC-4): the 10-byte form of RESERVE (6).
pub const RESERVE_10: u8 = 0x56;
/// RELEASE (10), SPC-2 (obsolete in SPC-4): the 10-byte form of RELEASE (6).
pub const RELEASE_10: u8 = 0x57;
/// MODE SENSE (10), SPC-4: as MODE SENSE (6) with an 8-byte header (and LLBAA).
pub const MODE_SENSE_10: u8 = 0x5A;
/// PERSISTENT RESERVE IN, SPC-4: reads registrations and reservations; the service action is
/// in [`pri`].
pub const PERSISTENT_RESERVE_IN: u8 = 0x5E;
/// PERSISTENT RESERVE OUT, SPC-4: changes registrations and reservations; the service action
/// is in [`pro`].
pub const PERSISTENT_RESERVE_OUT: u8 = 0x5F;
/// EXTENDED COPY (THIRD-PARTY COPY OUT), SPC-4: copies between logical units without the data
/// crossing the initiator; service actions in [`tpc`].
pub const EXTENDED_COPY: u8 = 0x83;
/// RECEIVE COPY RESULTS (THIRD-PARTY COPY IN), SPC-4: status and parameters of EXTENDED COPY;
/// service actions in [`rcr`].
pub const RECEIVE_COPY_RESULTS: u8 = 0x84;
/// READ (16), SBC-4: 64-bit LBA, 32-bit TRANSFER LENGTH.
pub const READ_16: u8 = 0x88;
/// COMPARE AND WRITE, SBC-4: atomically compares blocks to the first half of Data-Out and, if
/// equal, writes the second half (VMware ATS locking).
pub const COMPARE_AND_WRITE: u8 = 0x89;
/// WRITE (16), SBC-4: 64-bit LBA, 32-bit TRANSFER LENGTH.
pub const WRITE_16: u8 = 0x8A;
/// ORWRITE (16), SBC-4: writes the bitwise OR of the stored blocks and Data-Out.
pub const ORWRITE_16: u8 = 0x8B;
/// WRITE AND VERIFY (16), SBC-4: the 64-bit LBA form of WRITE AND VERIFY (10).
pub const WRITE_AND_VERIFY_16: u8 = 0x8E;
/// VERIFY (16), SBC-4: the 64-bit LBA form of VERIFY (10).
pub const VERIFY_16: u8 = 0x8F;
/// PRE-FETCH (16), SBC-4: the 64-bit LBA form of PRE-FETCH (10).
pub const PRE_FETCH_16: u8 = 0x90;
/// SYNCHRONIZE CACHE (16), SBC-4: the 64-bit LBA form of SYNCHRONIZE CACHE (10).
pub const SYNCHRONIZE_CACHE_16: u8 = 0x91;
/// WRITE SAME (16), SBC-4: the 64-bit LBA form of WRITE SAME (10), with NDOB.
pub const WRITE_SAME_16: u8 = 0x93;
/// SERVICE ACTION IN (16), SBC-4: a family of commands told apart by the service action in [`sai`].
pub const SERVICE_ACTION_IN_16: u8 = 0x9E;
/// REPORT LUNS, SPC-4 6.33: the list of logical unit numbers the initiator can address.
pub const REPORT_LUNS: u8 = 0xA0;
/// MAINTENANCE IN, SPC-4: a family of reporting commands told apart by the service action in
/// [`mi`].
pub const MAINTENANCE_IN: u8 = 0xA3;
/// READ (12), SBC-4: 32-bit LBA, 32-bit TRANSFER LENGTH.
pub const READ_12: u8 = 0xA8;
/// WRITE (12), SBC-4: 32-bit LBA, 32-bit TRANSFER LENGTH.
pub const WRITE_12: u8 = 0xAA;
/// WRITE AND VERIFY (12), SBC-4: the 32-bit length form of WRITE AND VERIFY (10).
pub const WRITE_AND_VERIFY_12: u8 = 0xAE;
/// VERIFY (12), SBC-4: the 32-bit length form of VERIFY (10).
pub const VERIFY_12: u8 = 0xAF;
/// READ DEFECT DATA (12), SBC-4: the 32-bit allocation length form of READ DEFECT DATA (10).
pub const READ_DEFECT_DATA_12: u8 = 0xB7;

/// SERVICE ACTION IN(16) service actions.
pub mod sai {
    /// READ CAPACITY (16), SBC-4: 64-bit last LBA, block length, and the thin provisioning
    /// (LBPME/LBPRZ) bits.
    pub const READ_CAPACITY_16: u16 = 0x10;
    /// GET LBA STATUS, SBC-4: which ranges from an LBA on are mapped or deallocated.
    pub const GET_LBA_STATUS: u16 = 0x12;
}

/// PERSISTENT RESERVE IN service actions.
pub mod pri {
    /// READ KEYS: the generation and every registered reservation key.
    pub const READ_KEYS: u16 = 0x00;
    /// READ RESERVATION: the generation and the current reservation, if any (key, scope, type).
    pub const READ_RESERVATION: u16 = 0x01;
    /// REPORT CAPABILITIES: which reservation types and options the server supports.
    pub const REPORT_CAPABILITIES: u16 = 0x02;
    /// READ FULL STATUS: every registration with its I_T nexus (TransportID) and holder flag.
    pub const READ_FULL_STATUS: u16 = 0x03;
}

/// PERSISTENT RESERVE OUT service actions.
pub mod pro {
    /// REGISTER: adds, changes or (with a zero new key) removes the nexus's registration.
    pub const REGISTER: u16 = 0x00;
    /// RESERVE: takes a persistent reservation of the given type for the registered nexus.
    pub const RESERVE: u16 = 0x01;
    /// RELEASE: drops the reservation the nexus holds.
    pub const RELEASE: u16 = 0x02;
    /// CLEAR: removes every registration and the reservation.
    pub const CLEAR: u16 = 0x03;
    /// PREEMPT: removes other registrations (and takes over their reservation).
    pub const PREEMPT: u16 = 0x04;
    /// PREEMPT AND ABORT: PREEMPT, also aborting the preempted nexuses' tasks.
    pub const PREEMPT_AND_ABORT: u16 = 0x05;
    /// REGISTER AND IGNORE EXISTING KEY: REGISTER without checking the current key.
    pub const REGISTER_AND_IGNORE: u16 = 0x06;
}

/// RECEIVE COPY RESULTS (THIRD-PARTY COPY IN, LID1) service actions.
pub mod rcr {
    pub use crate::scsi::xcopy::rcr::*;
}

/// EXTENDED COPY (THIRD-PARTY COPY OUT) service actions.
pub mod tpc {
    /// EXTENDED COPY(LID1).
    pub const EXTENDED_COPY_LID1: u16 = 0x00;
}

/// MAINTENANCE IN service actions.
pub mod mi {
    /// REPORT TARGET PORT GROUPS: the ALUA target port groups and their access states.
    pub const REPORT_TARGET_PORT_GROUPS: u16 = 0x0A;
    /// REPORT SUPPORTED OPERATION CODES, SPC-4 6.35: built from [`COMMANDS`](super::COMMANDS).
    pub const REPORT_SUPPORTED_OPERATION_CODES: u16 = 0x0C;
    /// REPORT SUPPORTED TASK MANAGEMENT FUNCTIONS, SPC-4: which TMFs the transport implements.
    pub const REPORT_SUPPORTED_TMFS: u16 = 0x0D;
}

/// CDB length implied by the opcode's group code (SAM-5 5.2), `None` for variable-length
/// (7Fh) and reserved/vendor groups.
pub fn cdb_len(opcode: u8) -> Option<usize> {
    match opcode >> 5 {
        0 => Some(6),
        1 | 2 => Some(10),
        4 => Some(16),
        5 => Some(12),
        _ => None,
    }
}

/// One supported command: opcode, optional service action, and its CDB usage data.
#[derive(Debug)]
pub struct CommandInfo {
    /// Operation code.
    pub opcode: u8,
    /// Service action, for opcodes that have them.
    pub service_action: Option<u16>,
    /// Human-readable name, for logs.
    pub name: &'static str,
    /// CDB usage data (SPC-4 6.35.3): one mask byte per CDB byte; byte 0 is the opcode itself
    /// and, for service-action commands, the service action bits carry its value. The last
    /// byte is the CONTROL byte.
    pub usage: &'static [u8],
}

impl CommandInfo {
    /// CDB length in bytes.
    pub fn cdb_len(&self) -> usize {
        self.usage.len()
    }
}

const fn c(opcode: u8, name: &'static str, usage: &'static [u8]) -> CommandInfo {
    CommandInfo {
        opcode,
        service_action: None,
        name,
        usage,
    }
}

const fn sa(opcode: u8, sa: u16, name: &'static str, usage: &'static [u8]) -> CommandInfo {
    CommandInfo {
        opcode,
        service_action: Some(sa),
        name,
        usage,
    }
}

/// CONTROL byte usage: we evaluate NACA only to reject it (no ACA support), so nothing is
/// advertised as supported; vendor-specific bits are ignored by the decoder.
const CTL: u8 = 0x00;

/// Every command the block device server implements, sorted by opcode then service action.
#[rustfmt::skip]
pub static COMMANDS: &[CommandInfo] = &[
    c(
        TEST_UNIT_READY,
        "TEST UNIT READY",
        &[TEST_UNIT_READY, 0, 0, 0, 0, CTL],
    ),
    c(
        REQUEST_SENSE,
        "REQUEST SENSE",
        &[REQUEST_SENSE, 0x01, 0, 0, 0xFF, CTL],
    ),
    c(READ_6, "READ(6)", &[READ_6, 0x1F, 0xFF, 0xFF, 0xFF, CTL]),
    c(WRITE_6, "WRITE(6)", &[WRITE_6, 0x1F, 0xFF, 0xFF, 0xFF, CTL]),
    c(INQUIRY, "INQUIRY", &[INQUIRY, 0x01, 0xFF, 0xFF, 0xFF, CTL]),
    c(
        MODE_SELECT_6,
        "MODE SELECT(6)",
        &[MODE_SELECT_6, 0x11, 0, 0, 0xFF, CTL],
    ),
    c(RESERVE_6, "RESERVE(6)", &[RESERVE_6, 0, 0, 0, 0, CTL]),
    c(RELEASE_6, "RELEASE(6)", &[RELEASE_6, 0, 0, 0, 0, CTL]),
    c(
        MODE_SENSE_6,
        "MODE SENSE(6)",
        &[MODE_SENSE_6, 0x08, 0xFF, 0xFF, 0xFF, CTL],
    ),
    c(
        START_STOP_UNIT,
        "START STOP UNIT",
        &[START_STOP_UNIT, 0x01, 0, 0x0F, 0xF7, CTL],
    ),
    c(
        PREVENT_ALLOW_MEDIUM_REMOVAL,
        "PREVENT ALLOW MEDIUM REMOVAL",
        &[PREVENT_ALLOW_MEDIUM_REMOVAL, 0, 0, 0, 0x03, CTL],
    ),
    c(
        READ_CAPACITY_10,
        "READ CAPACITY(10)",
        &[READ_CAPACITY_10, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0x01, CTL],
    ),
    c(
        READ_10,
        "READ(10)",
        &[READ_10, 0xFE, 0xFF, 0xFF, 0xFF, 0xFF, 0x1F, 0xFF, 0xFF, CTL],
    ),
    c(
        WRITE_10,
        "WRITE(10)",
        &[
            WRITE_10, 0xFA, 0xFF, 0xFF, 0xFF, 0xFF, 0x1F, 0xFF, 0xFF, CTL,
        ],
    ),
    c(
        WRITE_AND_VERIFY_10,
        "WRITE AND VERIFY(10)",
        &[
            WRITE_AND_VERIFY_10,
            0xF6,
            0xFF,
            0xFF,
            0xFF,
            0xFF,
            0x1F,
            0xFF,
            0xFF,
            CTL,
        ],
    ),
    c(
        VERIFY_10,
        "VERIFY(10)",
        &[
            VERIFY_10, 0xF6, 0xFF, 0xFF, 0xFF, 0xFF, 0x1F, 0xFF, 0xFF, CTL,
        ],
    ),
    c(
        PRE_FETCH_10,
        "PRE-FETCH(10)",
        &[
            PRE_FETCH_10,
            0x02,
            0xFF,
            0xFF,
            0xFF,
            0xFF,
            0x1F,
            0xFF,
            0xFF,
            CTL,
        ],
    ),
    c(
        SYNCHRONIZE_CACHE_10,
        "SYNCHRONIZE CACHE(10)",
        &[
            SYNCHRONIZE_CACHE_10,
            0x06,
            0xFF,
            0xFF,
            0xFF,
            0xFF,
            0x1F,
            0xFF,
            0xFF,
            CTL,
        ],
    ),
    c(
        READ_DEFECT_DATA_10,
        "READ DEFECT DATA(10)",
        &[READ_DEFECT_DATA_10, 0, 0x1F, 0, 0, 0, 0, 0xFF, 0xFF, CTL],
    ),
    c(
        WRITE_SAME_10,
        "WRITE SAME(10)",
        &[
            WRITE_SAME_10,
            0xF8,
            0xFF,
            0xFF,
            0xFF,
            0xFF,
            0x1F,
            0xFF,
            0xFF,
            CTL,
        ],
    ),
    c(
        UNMAP,
        "UNMAP",
        &[UNMAP, 0x01, 0, 0, 0, 0, 0x1F, 0xFF, 0xFF, CTL],
    ),
    c(
        MODE_SELECT_10,
        "MODE SELECT(10)",
        &[MODE_SELECT_10, 0x11, 0, 0, 0, 0, 0, 0xFF, 0xFF, CTL],
    ),
    c(
        RESERVE_10,
        "RESERVE(10)",
        &[RESERVE_10, 0, 0, 0, 0, 0, 0, 0, 0, CTL],
    ),
    c(
        RELEASE_10,
        "RELEASE(10)",
        &[RELEASE_10, 0, 0, 0, 0, 0, 0, 0, 0, CTL],
    ),
    c(
        MODE_SENSE_10,
        "MODE SENSE(10)",
        &[MODE_SENSE_10, 0x18, 0xFF, 0xFF, 0, 0, 0, 0xFF, 0xFF, CTL],
    ),
    sa(PERSISTENT_RESERVE_IN, pri::READ_KEYS, "PERSISTENT RESERVE IN (READ KEYS)", &[PERSISTENT_RESERVE_IN, 0x00, 0, 0, 0, 0, 0, 0xFF, 0xFF, CTL]),
    sa(PERSISTENT_RESERVE_IN, pri::READ_RESERVATION, "PERSISTENT RESERVE IN (READ RESERVATION)", &[PERSISTENT_RESERVE_IN, 0x01, 0, 0, 0, 0, 0, 0xFF, 0xFF, CTL]),
    sa(PERSISTENT_RESERVE_IN, pri::REPORT_CAPABILITIES, "PERSISTENT RESERVE IN (REPORT CAPABILITIES)", &[PERSISTENT_RESERVE_IN, 0x02, 0, 0, 0, 0, 0, 0xFF, 0xFF, CTL]),
    sa(PERSISTENT_RESERVE_IN, pri::READ_FULL_STATUS, "PERSISTENT RESERVE IN (READ FULL STATUS)", &[PERSISTENT_RESERVE_IN, 0x03, 0, 0, 0, 0, 0, 0xFF, 0xFF, CTL]),
    sa(PERSISTENT_RESERVE_OUT, pro::REGISTER, "PERSISTENT RESERVE OUT (REGISTER)", &[PERSISTENT_RESERVE_OUT, 0x00, 0xFF, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, CTL]),
    sa(PERSISTENT_RESERVE_OUT, pro::RESERVE, "PERSISTENT RESERVE OUT (RESERVE)", &[PERSISTENT_RESERVE_OUT, 0x01, 0xFF, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, CTL]),
    sa(PERSISTENT_RESERVE_OUT, pro::RELEASE, "PERSISTENT RESERVE OUT (RELEASE)", &[PERSISTENT_RESERVE_OUT, 0x02, 0xFF, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, CTL]),
    sa(PERSISTENT_RESERVE_OUT, pro::CLEAR, "PERSISTENT RESERVE OUT (CLEAR)", &[PERSISTENT_RESERVE_OUT, 0x03, 0xFF, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, CTL]),
    sa(PERSISTENT_RESERVE_OUT, pro::PREEMPT, "PERSISTENT RESERVE OUT (PREEMPT)", &[PERSISTENT_RESERVE_OUT, 0x04, 0xFF, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, CTL]),
    sa(PERSISTENT_RESERVE_OUT, pro::PREEMPT_AND_ABORT, "PERSISTENT RESERVE OUT (PREEMPT AND ABORT)", &[PERSISTENT_RESERVE_OUT, 0x05, 0xFF, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, CTL]),
    sa(PERSISTENT_RESERVE_OUT, pro::REGISTER_AND_IGNORE, "PERSISTENT RESERVE OUT (REGISTER AND IGNORE EXISTING KEY)", &[PERSISTENT_RESERVE_OUT, 0x06, 0xFF, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, CTL]),
    sa(EXTENDED_COPY, tpc::EXTENDED_COPY_LID1, "EXTENDED COPY(LID1)", &[EXTENDED_COPY, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0, CTL]),
    sa(RECEIVE_COPY_RESULTS, rcr::COPY_STATUS, "RECEIVE COPY RESULTS (COPY STATUS)", &[RECEIVE_COPY_RESULTS, 0x00, 0xFF, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0, CTL]),
    sa(RECEIVE_COPY_RESULTS, rcr::RECEIVE_DATA, "RECEIVE COPY RESULTS (RECEIVE DATA)", &[RECEIVE_COPY_RESULTS, 0x01, 0xFF, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0, CTL]),
    sa(RECEIVE_COPY_RESULTS, rcr::OPERATING_PARAMETERS, "RECEIVE COPY RESULTS (OPERATING PARAMETERS)", &[RECEIVE_COPY_RESULTS, 0x03, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0, CTL]),
    sa(RECEIVE_COPY_RESULTS, rcr::FAILED_SEGMENT_DETAILS, "RECEIVE COPY RESULTS (FAILED SEGMENT DETAILS)", &[RECEIVE_COPY_RESULTS, 0x04, 0xFF, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0, CTL]),
    c(
        READ_16,
        "READ(16)",
        &[
            READ_16, 0xFE, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
            0x1F, CTL,
        ],
    ),
    c(
        COMPARE_AND_WRITE,
        "COMPARE AND WRITE",
        &[COMPARE_AND_WRITE, 0xFA, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0, 0xFF, 0x1F, CTL],
    ),
    c(
        WRITE_16,
        "WRITE(16)",
        &[
            WRITE_16, 0xFA, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
            0x1F, CTL,
        ],
    ),
    c(
        ORWRITE_16,
        "ORWRITE(16)",
        &[ORWRITE_16, 0xFA, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x1F, CTL],
    ),
    c(
        WRITE_AND_VERIFY_16,
        "WRITE AND VERIFY(16)",
        &[
            WRITE_AND_VERIFY_16,
            0xF6,
            0xFF,
            0xFF,
            0xFF,
            0xFF,
            0xFF,
            0xFF,
            0xFF,
            0xFF,
            0xFF,
            0xFF,
            0xFF,
            0xFF,
            0x1F,
            CTL,
        ],
    ),
    c(
        VERIFY_16,
        "VERIFY(16)",
        &[
            VERIFY_16, 0xF6, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
            0xFF, 0x1F, CTL,
        ],
    ),
    c(
        PRE_FETCH_16,
        "PRE-FETCH(16)",
        &[
            PRE_FETCH_16,
            0x02,
            0xFF,
            0xFF,
            0xFF,
            0xFF,
            0xFF,
            0xFF,
            0xFF,
            0xFF,
            0xFF,
            0xFF,
            0xFF,
            0xFF,
            0x1F,
            CTL,
        ],
    ),
    c(
        SYNCHRONIZE_CACHE_16,
        "SYNCHRONIZE CACHE(16)",
        &[
            SYNCHRONIZE_CACHE_16,
            0x06,
            0xFF,
            0xFF,
            0xFF,
            0xFF,
            0xFF,
            0xFF,
            0xFF,
            0xFF,
            0xFF,
            0xFF,
            0xFF,
            0xFF,
            0x1F,
            CTL,
        ],
    ),
    c(
        WRITE_SAME_16,
        "WRITE SAME(16)",
        &[
            WRITE_SAME_16,
            0xF9,
            0xFF,
            0xFF,
            0xFF,
            0xFF,
            0xFF,
            0xFF,
            0xFF,
            0xFF,
            0xFF,
            0xFF,
            0xFF,
            0xFF,
            0x1F,
            CTL,
        ],
    ),
    sa(
        SERVICE_ACTION_IN_16,
        sai::READ_CAPACITY_16,
        "READ CAPACITY(16)",
        &[
            SERVICE_ACTION_IN_16,
            0x10,
            0xFF,
            0xFF,
            0xFF,
            0xFF,
            0xFF,
            0xFF,
            0xFF,
            0xFF,
            0xFF,
            0xFF,
            0xFF,
            0xFF,
            0x01,
            CTL,
        ],
    ),
    sa(
        SERVICE_ACTION_IN_16,
        sai::GET_LBA_STATUS,
        "GET LBA STATUS",
        &[
            SERVICE_ACTION_IN_16,
            0x12,
            0xFF,
            0xFF,
            0xFF,
            0xFF,
            0xFF,
            0xFF,
            0xFF,
            0xFF,
            0xFF,
            0xFF,
            0xFF,
            0xFF,
            0,
            CTL,
        ],
    ),
    c(
        REPORT_LUNS,
        "REPORT LUNS",
        &[
            REPORT_LUNS,
            0,
            0xFF,
            0,
            0,
            0,
            0xFF,
            0xFF,
            0xFF,
            0xFF,
            0,
            CTL,
        ],
    ),
    sa(
        MAINTENANCE_IN,
        mi::REPORT_TARGET_PORT_GROUPS,
        "REPORT TARGET PORT GROUPS",
        &[
            MAINTENANCE_IN,
            0x0A | 0xE0,
            0,
            0,
            0,
            0,
            0xFF,
            0xFF,
            0xFF,
            0xFF,
            0,
            CTL,
        ],
    ),
    sa(
        MAINTENANCE_IN,
        mi::REPORT_SUPPORTED_OPERATION_CODES,
        "REPORT SUPPORTED OPERATION CODES",
        &[
            MAINTENANCE_IN,
            0x0C,
            0x87,
            0xFF,
            0xFF,
            0xFF,
            0xFF,
            0xFF,
            0xFF,
            0xFF,
            0,
            CTL,
        ],
    ),
    sa(
        MAINTENANCE_IN,
        mi::REPORT_SUPPORTED_TMFS,
        "REPORT SUPPORTED TASK MANAGEMENT FUNCTIONS",
        &[
            MAINTENANCE_IN,
            0x0D,
            0x80,
            0,
            0,
            0,
            0xFF,
            0xFF,
            0xFF,
            0xFF,
            0,
            CTL,
        ],
    ),
    c(
        READ_12,
        "READ(12)",
        &[
            READ_12, 0xFE, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x1F, CTL,
        ],
    ),
    c(
        WRITE_12,
        "WRITE(12)",
        &[
            WRITE_12, 0xFA, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x1F, CTL,
        ],
    ),
    c(
        WRITE_AND_VERIFY_12,
        "WRITE AND VERIFY(12)",
        &[
            WRITE_AND_VERIFY_12,
            0xF6,
            0xFF,
            0xFF,
            0xFF,
            0xFF,
            0xFF,
            0xFF,
            0xFF,
            0xFF,
            0x1F,
            CTL,
        ],
    ),
    c(
        VERIFY_12,
        "VERIFY(12)",
        &[
            VERIFY_12, 0xF6, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x1F, CTL,
        ],
    ),
    c(
        READ_DEFECT_DATA_12,
        "READ DEFECT DATA(12)",
        &[READ_DEFECT_DATA_12, 0x1F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0, CTL],
    ),
];

/// Whether `opcode` is one whose commands are distinguished by a service action field
/// (byte 1 bits 4-0) among those we implement.
pub fn has_service_action(opcode: u8) -> bool {
    matches!(
        opcode,
        SERVICE_ACTION_IN_16
            | MAINTENANCE_IN
            | PERSISTENT_RESERVE_IN
            | PERSISTENT_RESERVE_OUT
            | EXTENDED_COPY
            | RECEIVE_COPY_RESULTS
    )
}

/// Look up a supported command by opcode and (for service-action opcodes) service action.
pub fn lookup(opcode: u8, service_action: Option<u16>) -> Option<&'static CommandInfo> {
    COMMANDS
        .iter()
        .find(|c| c.opcode == opcode && c.service_action == service_action)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_consistent() {
        let mut prev: Option<(u8, Option<u16>)> = None;
        for cmd in COMMANDS {
            assert_eq!(Some(cmd.cdb_len()), cdb_len(cmd.opcode), "{}", cmd.name);
            assert_eq!(cmd.usage[0], cmd.opcode, "{}", cmd.name);
            assert_eq!(
                cmd.service_action.is_some(),
                has_service_action(cmd.opcode),
                "{}",
                cmd.name
            );
            if let Some(sa) = cmd.service_action {
                assert_eq!(u16::from(cmd.usage[1] & 0x1F), sa, "{}", cmd.name);
            }
            let key = (cmd.opcode, cmd.service_action);
            if let Some(p) = prev {
                assert!(p < key, "table not sorted at {}", cmd.name);
            }
            prev = Some(key);
        }
    }

    #[test]
    fn group_lengths() {
        assert_eq!(cdb_len(0x12), Some(6));
        assert_eq!(cdb_len(0x28), Some(10));
        assert_eq!(cdb_len(0x5A), Some(10));
        assert_eq!(cdb_len(0x88), Some(16));
        assert_eq!(cdb_len(0xA0), Some(12));
        assert_eq!(cdb_len(0x7F), None);
        assert_eq!(cdb_len(0xC0), None);
    }
}
