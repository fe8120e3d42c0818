//! Arbitrary bytes as a PERSISTENT RESERVE OUT parameter list, decoded the ways the device
//! server decodes one: the basic list, the SPEC_I_PT TransportID list after it, and the
//! REGISTER AND MOVE list; and as a lone TransportID. Nothing may panic; errors are
//! ILLEGAL REQUEST pointing inside the list; a decoded TransportID re-encodes to one that
//! decodes to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use scsi_proto::scsi::pr::{self, ProutParams, RegisterMoveParams, TransportId};

#[path = "common.rs"]
mod common;

/// Longest iSCSI name (RFC 7143 4.2.7.1) plus generous room: longer names are not
/// expected to round-trip through the 16-bit TransportID length.
const NAME_ROOM: usize = 4096;

fn check_transport_id(id: &TransportId) {
    assert!(!id.name.is_empty());
    assert!(!id.name.contains('\0'));
    assert!(id.isid.is_none_or(|i| i >> 48 == 0));
    if id.name.len() < NAME_ROOM {
        let enc = id.encode();
        assert_eq!(enc.len() % 4, 0);
        assert_eq!(TransportId::parse(&enc).as_ref(), Ok(id));
    }
}

fuzz_target!(|data: &[u8]| {
    match ProutParams::parse(data) {
        Ok(p) => {
            assert!(data.len() >= pr::BASIC_PARAM_LEN);
            if p.spec_i_pt {
                match pr::spec_i_pt_ids(data) {
                    Ok(ids) => {
                        // Every TransportID takes at least its 4-byte header.
                        assert!(ids.len() * 4 <= data.len() - 28);
                        ids.iter().for_each(check_transport_id);
                    }
                    Err(s) => common::check_sense(&s, false, data.len()),
                }
            } else {
                assert_eq!(data.len(), pr::BASIC_PARAM_LEN);
            }
        }
        Err(s) => common::check_sense(&s, false, data.len()),
    }
    match RegisterMoveParams::parse(data) {
        Ok(m) => check_transport_id(&m.transport_id),
        Err(s) => common::check_sense(&s, false, data.len()),
    }
    match TransportId::parse(data) {
        Ok(id) => check_transport_id(&id),
        Err(off) => assert!(usize::from(off) < data.len().max(1)),
    }
});
