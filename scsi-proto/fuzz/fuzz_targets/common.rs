//! Checks shared by the SCSI targets: every error a parser returns is sense data that an
//! initiator can be sent, so it must survive both sense encodings and point inside what it
//! blames.

use scsi_proto::scsi::sense::{Sense, SenseKey};

/// `s` is ILLEGAL REQUEST (or, with `any_key`, whatever key), encodes and decodes to itself
/// in descriptor format and (up to the 32-bit INFORMATION limit) in fixed format, and its
/// field pointer, if any, names a byte below `limit` of the CDB (`in_cdb`) or parameter list.
pub fn check_sense(s: &Sense, in_cdb: bool, limit: usize) {
    assert_eq!(s.key, SenseKey::IllegalRequest, "{s}");
    assert_eq!(Sense::decode(&s.encode_descriptor()).as_ref(), Some(s));
    let mut fixed = s.clone();
    fixed.information = s.information.filter(|&i| u32::try_from(i).is_ok());
    assert_eq!(Sense::decode(&s.encode_fixed()), Some(fixed));
    if let Some(f) = s.field {
        assert_eq!(f.in_cdb, in_cdb, "{s}");
        assert!(
            usize::from(f.byte) < limit,
            "{s}: pointer past {limit} bytes"
        );
        assert!(f.bit.is_none_or(|b| b < 8), "{s}");
    }
}
