//! Big-endian field access on a 48-byte Basic Header Segment.

use super::BHS_LEN;

pub(crate) type Raw = [u8; BHS_LEN];

pub(crate) fn u16_at(b: &Raw, off: usize) -> u16 {
    u16::from_be_bytes([b[off], b[off + 1]])
}

pub(crate) fn u32_at(b: &Raw, off: usize) -> u32 {
    u32::from_be_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

pub(crate) fn u64_at(b: &Raw, off: usize) -> u64 {
    let mut v = [0u8; 8];
    v.copy_from_slice(&b[off..off + 8]);
    u64::from_be_bytes(v)
}

/// The 48-bit ISID at bytes 8..14 of login PDUs.
pub(crate) fn isid_at(b: &Raw) -> u64 {
    let mut v = [0u8; 8];
    v[2..].copy_from_slice(&b[8..14]);
    u64::from_be_bytes(v)
}

pub(crate) fn put_u16(b: &mut Raw, off: usize, v: u16) {
    b[off..off + 2].copy_from_slice(&v.to_be_bytes());
}

pub(crate) fn put_u32(b: &mut Raw, off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_be_bytes());
}

pub(crate) fn put_u64(b: &mut Raw, off: usize, v: u64) {
    b[off..off + 8].copy_from_slice(&v.to_be_bytes());
}

pub(crate) fn put_isid(b: &mut Raw, v: u64) {
    b[8..14].copy_from_slice(&v.to_be_bytes()[2..]);
}

pub(crate) fn bit(b: u8, mask: u8) -> bool {
    b & mask != 0
}

pub(crate) fn flag(set: bool, mask: u8) -> u8 {
    if set {
        mask
    } else {
        0
    }
}
