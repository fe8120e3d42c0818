//! GET LBA STATUS parameter data (SBC-3 5.7).

/// Provisioning status of an extent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProvisioningStatus {
    /// Mapped (or unknown).
    Mapped = 0,
    /// Deallocated: reads return zeros, no space is used.
    Deallocated = 1,
    /// Anchored (not used by Lunar).
    Anchored = 2,
}

/// One LBA status descriptor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LbaStatus {
    /// First LBA of the extent.
    pub lba: u64,
    /// Number of blocks in the extent.
    pub blocks: u32,
    /// Its provisioning status.
    pub status: ProvisioningStatus,
}

/// Bytes of a descriptor.
pub const DESCRIPTOR_LEN: usize = 16;

/// Parameter data for the descriptors (PARAMETER DATA LENGTH counts from byte 4).
pub fn encode(descriptors: &[LbaStatus]) -> Vec<u8> {
    let mut b = Vec::with_capacity(8 + DESCRIPTOR_LEN * descriptors.len());
    b.extend_from_slice(&((4 + DESCRIPTOR_LEN * descriptors.len()) as u32).to_be_bytes());
    b.extend_from_slice(&[0; 4]);
    for d in descriptors {
        b.extend_from_slice(&d.lba.to_be_bytes());
        b.extend_from_slice(&d.blocks.to_be_bytes());
        b.push(d.status as u8);
        b.extend_from_slice(&[0; 3]);
    }
    b
}

/// How many descriptors fit in an allocation length (at least one is always produced, the
/// header tells the initiator the full size).
pub fn descriptors_for_alloc(alloc_len: u32) -> usize {
    let n = (alloc_len as usize).saturating_sub(8) / DESCRIPTOR_LEN;
    n.clamp(1, 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden() {
        let b = encode(&[
            LbaStatus {
                lba: 0,
                blocks: 128,
                status: ProvisioningStatus::Mapped,
            },
            LbaStatus {
                lba: 128,
                blocks: 0x10000,
                status: ProvisioningStatus::Deallocated,
            },
        ]);
        assert_eq!(&b[..8], &[0, 0, 0, 36, 0, 0, 0, 0]);
        assert_eq!(
            &b[8..24],
            &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 128, 0, 0, 0, 0]
        );
        assert_eq!(
            &b[24..40],
            &[0, 0, 0, 0, 0, 0, 0, 128, 0, 1, 0, 0, 1, 0, 0, 0]
        );
        assert_eq!(descriptors_for_alloc(24), 1);
        assert_eq!(descriptors_for_alloc(0), 1);
        assert_eq!(descriptors_for_alloc(8 + 16 * 5), 5);
    }
}
