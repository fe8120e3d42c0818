//! UNMAP parameter list (SBC-3 5.28.2) parsing and validation.

use super::cdb::check_lba_range;
use super::sense::Sense;

/// One extent to deallocate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnmapDescriptor {
    /// First LBA.
    pub lba: u64,
    /// Number of blocks (may be zero: a no-op).
    pub blocks: u32,
}

/// Limits the parameter list is validated against (from the Block Limits VPD page).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnmapLimits {
    /// MAXIMUM UNMAP BLOCK DESCRIPTOR COUNT.
    pub max_descriptors: u32,
    /// MAXIMUM UNMAP LBA COUNT (per descriptor and per command).
    pub max_lba_count: u32,
    /// Capacity of the medium in blocks.
    pub capacity_blocks: u64,
}

const HEADER: usize = 8;
const DESC: usize = 16;

/// Parse and validate an UNMAP parameter list. `data` is the Data-Out (already limited to
/// PARAMETER LIST LENGTH). An empty list is valid and means "nothing to do".
pub fn parse(data: &[u8], limits: &UnmapLimits) -> Result<Vec<UnmapDescriptor>, Sense> {
    if data.is_empty() {
        return Ok(Vec::new());
    }
    if data.len() < HEADER {
        return Err(Sense::parameter_list_length_error());
    }
    let data_len = usize::from(u16::from_be_bytes([data[0], data[1]]));
    let bd_len = usize::from(u16::from_be_bytes([data[2], data[3]]));
    // The lengths in the header must not claim more than was transferred.
    if data_len > data.len() - 2 {
        return Err(Sense::parameter_list_length_error());
    }
    if HEADER + bd_len > data.len() {
        return Err(Sense::parameter_list_length_error());
    }
    // A trailing partial descriptor is ignored (SBC-3: the length should be a multiple of 16).
    let count = bd_len / DESC;
    if count > limits.max_descriptors as usize {
        return Err(Sense::invalid_field_in_param(2, Some(7)));
    }
    let mut out = Vec::with_capacity(count);
    let mut total: u64 = 0;
    for i in 0..count {
        let off = HEADER + i * DESC;
        let d = &data[off..off + DESC];
        let mut lba = [0u8; 8];
        lba.copy_from_slice(&d[..8]);
        let lba = u64::from_be_bytes(lba);
        let blocks = u32::from_be_bytes([d[8], d[9], d[10], d[11]]);
        if blocks > limits.max_lba_count {
            return Err(Sense::invalid_field_in_param((off + 8) as u16, Some(7)));
        }
        total += u64::from(blocks);
        if total > u64::from(limits.max_lba_count) {
            return Err(Sense::invalid_field_in_param((off + 8) as u16, Some(7)));
        }
        check_lba_range(lba, u64::from(blocks), limits.capacity_blocks)?;
        out.push(UnmapDescriptor { lba, blocks });
    }
    Ok(out)
}

/// Build an UNMAP parameter list (for tests and tools).
pub fn encode(descriptors: &[UnmapDescriptor]) -> Vec<u8> {
    let bd_len = descriptors.len() * DESC;
    let mut b = Vec::with_capacity(HEADER + bd_len);
    b.extend_from_slice(&((bd_len + 6) as u16).to_be_bytes());
    b.extend_from_slice(&(bd_len as u16).to_be_bytes());
    b.extend_from_slice(&[0; 4]);
    for d in descriptors {
        b.extend_from_slice(&d.lba.to_be_bytes());
        b.extend_from_slice(&d.blocks.to_be_bytes());
        b.extend_from_slice(&[0; 4]);
    }
    b
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scsi::sense::{asc, FieldPointer};

    const L: UnmapLimits = UnmapLimits {
        max_descriptors: 4,
        max_lba_count: 1000,
        capacity_blocks: 10_000,
    };

    #[test]
    fn roundtrip() {
        let d = vec![
            UnmapDescriptor { lba: 1, blocks: 2 },
            UnmapDescriptor {
                lba: 9_000,
                blocks: 0,
            },
        ];
        let b = encode(&d);
        assert_eq!(&b[..8], &[0, 38, 0, 32, 0, 0, 0, 0]);
        assert_eq!(parse(&b, &L).unwrap(), d);
        assert_eq!(parse(&[], &L).unwrap(), vec![]);
        // Header only, no descriptors.
        assert_eq!(parse(&encode(&[]), &L).unwrap(), vec![]);
    }

    #[test]
    fn errors() {
        assert_eq!(
            parse(&[0, 6, 0], &L).unwrap_err().code,
            asc::PARAMETER_LIST_LENGTH_ERROR
        );
        let mut b = encode(&[UnmapDescriptor { lba: 1, blocks: 2 }]);
        b[3] = 48; // claims three descriptors, one sent
        assert_eq!(
            parse(&b, &L).unwrap_err().code,
            asc::PARAMETER_LIST_LENGTH_ERROR
        );
        let many = vec![UnmapDescriptor { lba: 0, blocks: 1 }; 5];
        let e = parse(&encode(&many), &L).unwrap_err();
        assert_eq!(e.code, asc::INVALID_FIELD_IN_PARAMETER_LIST);
        let e = parse(
            &encode(&[UnmapDescriptor {
                lba: 0,
                blocks: 1001,
            }]),
            &L,
        )
        .unwrap_err();
        assert_eq!(e.field, Some(FieldPointer::param(16, Some(7))));
        let two = [
            UnmapDescriptor {
                lba: 0,
                blocks: 600,
            },
            UnmapDescriptor {
                lba: 700,
                blocks: 600,
            },
        ];
        let e = parse(&encode(&two), &L).unwrap_err();
        assert_eq!(e.field, Some(FieldPointer::param(32, Some(7))));
        let e = parse(
            &encode(&[UnmapDescriptor {
                lba: 9_999,
                blocks: 2,
            }]),
            &L,
        )
        .unwrap_err();
        assert_eq!(e.code, asc::LBA_OUT_OF_RANGE);
    }
}
