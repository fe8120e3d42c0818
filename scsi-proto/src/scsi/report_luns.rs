//! REPORT LUNS parameter data (SPC-4 6.33) and the 8-byte LUN format (SAM-5 4.7).

/// Encode a LUN number in SAM single-level format: peripheral device addressing for
/// LUNs below 256 (what most initiators expect to see for LUN 0..255), flat space addressing
/// up to 16383. `None` for larger numbers.
pub fn encode_lun(lun: u64) -> Option<[u8; 8]> {
    let mut b = [0u8; 8];
    match lun {
        0..=255 => b[1] = lun as u8,
        256..=0x3FFF => {
            b[0] = 0x40 | (lun >> 8) as u8;
            b[1] = lun as u8;
        }
        _ => return None,
    }
    Some(b)
}

/// Decode a single-level LUN in peripheral (00b) or flat space (01b) addressing.
/// `None` for other addressing methods or multi-level LUNs.
pub fn decode_lun(b: [u8; 8]) -> Option<u64> {
    if b[2..].iter().any(|&x| x != 0) {
        return None;
    }
    match b[0] >> 6 {
        0b00 if b[0] == 0 => Some(u64::from(b[1])),
        0b01 => Some((u64::from(b[0] & 0x3F) << 8) | u64::from(b[1])),
        _ => None,
    }
}

/// REPORT LUNS data for `luns` (unrepresentable numbers are skipped). SELECT REPORT 01h
/// (well-known LUNs only) yields an empty list: Lunar has no well-known LUNs.
pub fn encode(luns: &[u64], select_report: u8) -> Vec<u8> {
    let list: Vec<[u8; 8]> = if select_report == 0x01 {
        Vec::new()
    } else {
        let mut sorted = luns.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        sorted.into_iter().filter_map(encode_lun).collect()
    };
    let mut b = Vec::with_capacity(8 + 8 * list.len());
    b.extend_from_slice(&((list.len() * 8) as u32).to_be_bytes());
    b.extend_from_slice(&[0; 4]);
    for l in list {
        b.extend_from_slice(&l);
    }
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lun_formats() {
        assert_eq!(encode_lun(0), Some([0; 8]));
        assert_eq!(encode_lun(5), Some([0, 5, 0, 0, 0, 0, 0, 0]));
        assert_eq!(encode_lun(300), Some([0x41, 0x2C, 0, 0, 0, 0, 0, 0]));
        assert_eq!(encode_lun(0x4000), None);
        for l in [0, 1, 255, 256, 0x3FFF] {
            assert_eq!(decode_lun(encode_lun(l).unwrap()), Some(l));
        }
        assert_eq!(decode_lun([0x80, 0, 0, 0, 0, 0, 0, 0]), None);
        assert_eq!(decode_lun([0, 1, 0, 2, 0, 0, 0, 0]), None);
    }

    #[test]
    fn report_golden() {
        let b = encode(&[3, 0, 3], 0);
        assert_eq!(
            b,
            vec![0, 0, 0, 16, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0]
        );
        assert_eq!(encode(&[0, 1], 1), vec![0; 8]);
    }
}
