//! CRC32C header and data digests (RFC 7143 section 13.1 and Appendix B.4).
//!
//! The digest is the standard CRC32C (Castagnoli) value; on the wire it is sent least
//! significant byte first, which is what the RFC's test vectors show (32 zero bytes digest to
//! the bytes `aa 36 91 8a`).

/// Length of a digest on the wire.
pub const DIGEST_LEN: usize = 4;

/// CRC32C of `parts` taken as one contiguous byte string.
pub fn crc32c_of(parts: &[&[u8]]) -> u32 {
    parts
        .iter()
        .fold(0u32, |crc, part| crc32c::crc32c_append(crc, part))
}

/// Encode a digest value in wire byte order.
pub fn to_wire(crc: u32) -> [u8; DIGEST_LEN] {
    crc.to_le_bytes()
}

/// Decode a digest value from wire byte order.
pub fn from_wire(bytes: [u8; DIGEST_LEN]) -> u32 {
    u32::from_le_bytes(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7143 Appendix B.4 / RFC 3720 B.4 CRC32C examples.
    #[test]
    fn rfc_vectors() {
        assert_eq!(to_wire(crc32c_of(&[&[0u8; 32]])), [0xaa, 0x36, 0x91, 0x8a]);
        assert_eq!(
            to_wire(crc32c_of(&[&[0xffu8; 32]])),
            [0x43, 0xab, 0xa8, 0x62]
        );
        let inc: Vec<u8> = (0u8..32).collect();
        assert_eq!(to_wire(crc32c_of(&[&inc])), [0x4e, 0x79, 0xdd, 0x46]);
        let dec: Vec<u8> = (0u8..32).rev().collect();
        assert_eq!(to_wire(crc32c_of(&[&dec])), [0x5c, 0xdb, 0x3f, 0x11]);
    }

    #[test]
    fn split_equals_contiguous() {
        let data: Vec<u8> = (0u8..=200).collect();
        assert_eq!(
            crc32c_of(&[&data[..17], &data[17..99], &data[99..]]),
            crc32c_of(&[&data])
        );
        assert_eq!(from_wire(to_wire(0x1234_5678)), 0x1234_5678);
    }
}
