//! Arbitrary bytes as a CDB: decoding must not panic; a decoded command must come from the
//! table entry of its opcode and need no more bytes than were given; a rejected CDB must
//! produce ILLEGAL REQUEST sense whose field pointer stays inside the CDB. The same bytes
//! are also decoded as sense data (relayed sense), which must re-encode to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use scsi_proto::scsi::cdb::{self, Command};
use scsi_proto::scsi::sense::Sense;

#[path = "common.rs"]
mod common;

/// Longest CDB any transport carries here (iSCSI without AHS).
const MAX_CDB: usize = 16;

fuzz_target!(|data: &[u8]| {
    match cdb::parse(data) {
        Ok(c) => {
            let len = c.info.cdb_len();
            assert!(len <= data.len(), "{} needs {len} bytes", c.info.name);
            assert_eq!(c.info.opcode, data[0]);
            // Only the command's own bytes count: padding after it changes nothing.
            let again = cdb::parse(&data[..len]).expect("own bytes decode");
            assert_eq!(again.command, c.command);
            // Transfer sizes are computed in u64 without overflow for any block size.
            let out = c.command.data_out_len(u32::MAX);
            if !matches!(
                c.command,
                Command::Write { .. }
                    | Command::WriteAndVerify { .. }
                    | Command::OrWrite { .. }
                    | Command::Verify { .. }
                    | Command::CompareAndWrite { .. }
                    | Command::WriteSame { .. }
                    | Command::ModeSelect { .. }
                    | Command::Unmap { .. }
                    | Command::ExtendedCopy { .. }
                    | Command::PersistentReserveOut { .. }
            ) {
                assert_eq!(out, 0, "{:?} has no Data-Out", c.command);
            }
        }
        Err(s) => common::check_sense(&s, true, data.len().clamp(2, MAX_CDB)),
    }
    if let Some(s) = Sense::decode(data) {
        assert_eq!(Sense::decode(&s.encode_descriptor()), Some(s));
    }
});
