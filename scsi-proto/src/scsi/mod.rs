//! SCSI (SAM-5, SPC-4, SBC-3): CDB decoding, sense data, VPD and mode pages.
//!
//! Pure data: every function here turns bytes into typed values or typed values into bytes.
//! The device server in `target-daemon` executes commands on volumes using these.

pub mod capacity;
pub mod cdb;
mod descriptor;
pub mod inquiry;
pub mod lba_status;
pub mod mode;
pub mod opcode;
pub mod pr;
pub mod report_luns;
pub mod rsoc;
pub mod rtpg;
pub mod sense;
pub mod status;
pub mod unmap;
pub mod vpd;
pub mod xcopy;

/// Truncate `data` to the allocation length of the CDB (SPC-4 4.2.5.6): the device server
/// builds the full response and returns only what the initiator allowed.
pub fn truncate_to_alloc(mut data: Vec<u8>, alloc_len: u32) -> Vec<u8> {
    let limit = usize::try_from(alloc_len).unwrap_or(usize::MAX);
    data.truncate(limit);
    data
}
