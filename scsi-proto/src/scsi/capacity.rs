//! READ CAPACITY(10) and READ CAPACITY(16) parameter data (SBC-3 5.16, 5.17).

/// What READ CAPACITY reports about a logical unit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capacity {
    /// Number of logical blocks.
    pub blocks: u64,
    /// Logical block length in bytes.
    pub block_size: u32,
    /// Logical block provisioning management enabled (UNMAP etc. supported).
    pub lbpme: bool,
    /// Unmapped blocks read as zeros.
    pub lbprz: bool,
}

impl Capacity {
    fn last_lba(&self) -> u64 {
        self.blocks.saturating_sub(1)
    }

    /// READ CAPACITY(10) data: 8 bytes. A last LBA that does not fit reports FFFFFFFFh,
    /// which tells the initiator to use READ CAPACITY(16).
    pub fn encode10(&self) -> [u8; 8] {
        let lba = u32::try_from(self.last_lba()).unwrap_or(u32::MAX);
        let mut b = [0u8; 8];
        b[..4].copy_from_slice(&lba.to_be_bytes());
        b[4..].copy_from_slice(&self.block_size.to_be_bytes());
        b
    }

    /// READ CAPACITY(16) data: 32 bytes, with the physical block exponent of
    /// [`physical_block_exponent`] and LOWEST ALIGNED LOGICAL BLOCK ADDRESS 0 (physical
    /// blocks start at LBA 0, as the store's chunks do).
    pub fn encode16(&self) -> [u8; 32] {
        let mut b = [0u8; 32];
        b[..8].copy_from_slice(&self.last_lba().to_be_bytes());
        b[8..12].copy_from_slice(&self.block_size.to_be_bytes());
        b[13] = physical_block_exponent(self.block_size) & 0x0F;
        if self.lbpme {
            b[14] |= 0x80;
        }
        if self.lbprz {
            b[14] |= 0x40;
        }
        b
    }
}

/// Size of the physical block lunard reports: 4 KiB, the granularity below which a write
/// costs a read-modify-write of the page underneath (the store's chunks and the host page
/// cache are multiples of it).
pub const PHYSICAL_BLOCK_BYTES: u32 = 4096;

/// LOGICAL BLOCKS PER PHYSICAL BLOCK EXPONENT for `block_size`-byte logical blocks: 3 for
/// 512-byte blocks (eight per 4 KiB physical block), 0 when the logical block is already
/// 4 KiB or larger, or does not divide 4 KiB.
///
/// Reporting the real 4 KiB physical block lets initiators align their I/O (Linux reports
/// it as `physical_block_size`, VMFS and Windows align partitions to it) and lets
/// conformance suites exercise unaligned UNMAP / WRITE SAME, which they skip when a physical
/// block holds only one logical block.
pub fn physical_block_exponent(block_size: u32) -> u8 {
    if block_size == 0 || block_size >= PHYSICAL_BLOCK_BYTES {
        return 0;
    }
    if !PHYSICAL_BLOCK_BYTES.is_multiple_of(block_size) {
        return 0;
    }
    let per = PHYSICAL_BLOCK_BYTES / block_size;
    if per.is_power_of_two() {
        per.trailing_zeros() as u8
    } else {
        0
    }
}

/// Logical blocks per physical block (2 to the [`physical_block_exponent`]).
pub fn logical_blocks_per_physical(block_size: u32) -> u32 {
    1 << physical_block_exponent(block_size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rc10_golden() {
        let c = Capacity {
            blocks: 2048,
            block_size: 512,
            lbpme: true,
            lbprz: true,
        };
        assert_eq!(c.encode10(), [0, 0, 0x07, 0xFF, 0, 0, 0x02, 0]);
        let big = Capacity {
            blocks: 1 << 33,
            ..c
        };
        assert_eq!(&big.encode10()[..4], &[0xFF; 4]);
    }

    #[test]
    fn rc16_golden() {
        let c = Capacity {
            blocks: 1 << 33,
            block_size: 512,
            lbpme: true,
            lbprz: true,
        };
        let b = c.encode16();
        assert_eq!(&b[..8], &((1u64 << 33) - 1).to_be_bytes());
        assert_eq!(&b[8..12], &[0, 0, 2, 0]);
        // 512-byte logical blocks: eight per 4 KiB physical block (exponent 3), lowest
        // aligned LBA 0.
        assert_eq!(b[13], 3);
        assert_eq!(b[14], 0xC0);
        assert_eq!(b[15], 0);
        let c4k = Capacity {
            blocks: 10,
            block_size: 4096,
            lbpme: false,
            lbprz: false,
        };
        let b = c4k.encode16();
        assert_eq!((b[13], b[14]), (0, 0));
    }

    #[test]
    fn physical_block_is_4k() {
        assert_eq!(physical_block_exponent(512), 3);
        assert_eq!(physical_block_exponent(1024), 2);
        assert_eq!(physical_block_exponent(2048), 1);
        assert_eq!(physical_block_exponent(4096), 0);
        assert_eq!(physical_block_exponent(8192), 0);
        assert_eq!(physical_block_exponent(520), 0);
        assert_eq!(physical_block_exponent(0), 0);
        assert_eq!(logical_blocks_per_physical(512), 8);
        assert_eq!(logical_blocks_per_physical(4096), 1);
    }
}
