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

    /// READ CAPACITY(16) data: 32 bytes. The physical block exponent is 0 (physical =
    /// logical): the store's allocation unit is reported as the UNMAP granularity instead,
    /// and initiators (and libiscsi's tests) treat a larger physical block as the smallest
    /// unit that can change provisioning state, which is not what it means here.
    pub fn encode16(&self) -> [u8; 32] {
        let mut b = [0u8; 32];
        b[..8].copy_from_slice(&self.last_lba().to_be_bytes());
        b[8..12].copy_from_slice(&self.block_size.to_be_bytes());
        if self.lbpme {
            b[14] |= 0x80;
        }
        if self.lbprz {
            b[14] |= 0x40;
        }
        b
    }
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
        assert_eq!(b[13], 0);
        assert_eq!(b[14], 0xC0);
        let c4k = Capacity {
            blocks: 10,
            block_size: 4096,
            lbpme: false,
            lbprz: false,
        };
        let b = c4k.encode16();
        assert_eq!((b[13], b[14]), (0, 0));
    }
}
