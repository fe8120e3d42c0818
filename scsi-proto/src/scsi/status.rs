//! SCSI status codes (SAM-5 5.3): the one byte every command ends with.
//!
//! The device server, the iSCSI SCSI Response / Data-In status and the TCMU ring all carry
//! the status as this byte, so these are plain `u8` constants rather than an enum: every
//! user compares or stores the wire value.

/// The command completed.
pub const GOOD: u8 = 0x00;
/// Sense data describes why the command failed.
pub const CHECK_CONDITION: u8 = 0x02;
/// A search condition was met (PRE-FETCH).
pub const CONDITION_MET: u8 = 0x04;
/// The logical unit is busy; try again later.
pub const BUSY: u8 = 0x08;
/// The command conflicts with a reservation held by another I_T nexus.
pub const RESERVATION_CONFLICT: u8 = 0x18;
/// The task set is full; try again when a task has completed.
pub const TASK_SET_FULL: u8 = 0x28;
/// An ACA condition is active.
pub const ACA_ACTIVE: u8 = 0x30;
/// The task was aborted by another I_T nexus (TAS=1).
pub const TASK_ABORTED: u8 = 0x40;

/// The SAM-5 name of a status, for logs (`None` for reserved or obsolete values).
pub fn name(status: u8) -> Option<&'static str> {
    Some(match status {
        GOOD => "GOOD",
        CHECK_CONDITION => "CHECK CONDITION",
        CONDITION_MET => "CONDITION MET",
        BUSY => "BUSY",
        RESERVATION_CONFLICT => "RESERVATION CONFLICT",
        TASK_SET_FULL => "TASK SET FULL",
        ACA_ACTIVE => "ACA ACTIVE",
        TASK_ABORTED => "TASK ABORTED",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_match_sam5_table() {
        // SAM-5 table 32: the codes initiators act on.
        assert_eq!(
            [
                GOOD,
                CHECK_CONDITION,
                CONDITION_MET,
                BUSY,
                RESERVATION_CONFLICT
            ],
            [0x00, 0x02, 0x04, 0x08, 0x18]
        );
        assert_eq!(
            [TASK_SET_FULL, ACA_ACTIVE, TASK_ABORTED],
            [0x28, 0x30, 0x40]
        );
        assert_eq!(name(RESERVATION_CONFLICT), Some("RESERVATION CONFLICT"));
        assert_eq!(name(0x10), None, "INTERMEDIATE is obsolete");
    }
}
