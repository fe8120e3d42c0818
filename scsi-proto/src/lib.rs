//! Wire formats and protocol logic for Lunar, with no I/O.
//!
//! Everything here is deterministic and driven by the caller (in the spirit of
//! `quinn-proto` and `rustls`): the daemon feeds bytes in and gets typed values and
//! bytes out. That keeps the protocol testable and fuzzable without sockets or disks.

pub mod iscsi;
pub mod scsi;
