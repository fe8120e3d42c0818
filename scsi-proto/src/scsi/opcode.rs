//! Operation codes and service actions, and the table of commands Lunar's block device
//! server implements.
//!
//! The table is the single source of truth for three things that must agree: which opcodes
//! are accepted, the CDB length of each, and the *CDB usage data* reported by REPORT SUPPORTED
//! OPERATION CODES. The CDB decoder rejects any bit set outside a command's usage mask with
//! INVALID FIELD IN CDB, so what we advertise is exactly what we honour.

pub const TEST_UNIT_READY: u8 = 0x00;
pub const REQUEST_SENSE: u8 = 0x03;
pub const READ_6: u8 = 0x08;
pub const WRITE_6: u8 = 0x0A;
pub const INQUIRY: u8 = 0x12;
pub const MODE_SELECT_6: u8 = 0x15;
pub const RESERVE_6: u8 = 0x16;
pub const RELEASE_6: u8 = 0x17;
pub const MODE_SENSE_6: u8 = 0x1A;
pub const START_STOP_UNIT: u8 = 0x1B;
pub const PREVENT_ALLOW_MEDIUM_REMOVAL: u8 = 0x1E;
pub const READ_CAPACITY_10: u8 = 0x25;
pub const READ_10: u8 = 0x28;
pub const WRITE_10: u8 = 0x2A;
pub const WRITE_AND_VERIFY_10: u8 = 0x2E;
pub const VERIFY_10: u8 = 0x2F;
pub const PRE_FETCH_10: u8 = 0x34;
pub const READ_DEFECT_DATA_10: u8 = 0x37;
pub const SYNCHRONIZE_CACHE_10: u8 = 0x35;
pub const WRITE_SAME_10: u8 = 0x41;
pub const UNMAP: u8 = 0x42;
pub const MODE_SELECT_10: u8 = 0x55;
pub const RESERVE_10: u8 = 0x56;
pub const RELEASE_10: u8 = 0x57;
pub const MODE_SENSE_10: u8 = 0x5A;
pub const PERSISTENT_RESERVE_IN: u8 = 0x5E;
pub const PERSISTENT_RESERVE_OUT: u8 = 0x5F;
pub const EXTENDED_COPY: u8 = 0x83;
pub const RECEIVE_COPY_RESULTS: u8 = 0x84;
pub const READ_16: u8 = 0x88;
pub const COMPARE_AND_WRITE: u8 = 0x89;
pub const WRITE_16: u8 = 0x8A;
pub const ORWRITE_16: u8 = 0x8B;
pub const WRITE_AND_VERIFY_16: u8 = 0x8E;
pub const VERIFY_16: u8 = 0x8F;
pub const PRE_FETCH_16: u8 = 0x90;
pub const SYNCHRONIZE_CACHE_16: u8 = 0x91;
pub const WRITE_SAME_16: u8 = 0x93;
pub const SERVICE_ACTION_IN_16: u8 = 0x9E;
pub const REPORT_LUNS: u8 = 0xA0;
pub const MAINTENANCE_IN: u8 = 0xA3;
pub const READ_12: u8 = 0xA8;
pub const WRITE_12: u8 = 0xAA;
pub const WRITE_AND_VERIFY_12: u8 = 0xAE;
pub const VERIFY_12: u8 = 0xAF;
pub const READ_DEFECT_DATA_12: u8 = 0xB7;

/// SERVICE ACTION IN(16) service actions.
pub mod sai {
    pub const READ_CAPACITY_16: u16 = 0x10;
    pub const GET_LBA_STATUS: u16 = 0x12;
}

/// PERSISTENT RESERVE IN service actions.
pub mod pri {
    pub const READ_KEYS: u16 = 0x00;
    pub const READ_RESERVATION: u16 = 0x01;
    pub const REPORT_CAPABILITIES: u16 = 0x02;
    pub const READ_FULL_STATUS: u16 = 0x03;
}

/// PERSISTENT RESERVE OUT service actions.
pub mod pro {
    pub const REGISTER: u16 = 0x00;
    pub const RESERVE: u16 = 0x01;
    pub const RELEASE: u16 = 0x02;
    pub const CLEAR: u16 = 0x03;
    pub const PREEMPT: u16 = 0x04;
    pub const PREEMPT_AND_ABORT: u16 = 0x05;
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
    pub const REPORT_TARGET_PORT_GROUPS: u16 = 0x0A;
    pub const REPORT_SUPPORTED_OPERATION_CODES: u16 = 0x0C;
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
