//! Vital product data pages (SPC-4 7.8, SBC-3 6.5): what INQUIRY with EVPD=1 returns.
//!
//! The identity pages are derived from the volume UUID so that a LUN keeps its identity
//! across daemon restarts and moves between targets, while every clone (a new volume with a
//! new UUID) is a distinct device to multipathing and to VMFS' snapshot detection.

use super::sense::Sense;

/// Supported VPD pages, in ascending order (the order page 00h reports them).
pub const SUPPORTED_PAGES: [u8; 6] = [0x00, 0x80, 0x83, 0xB0, 0xB1, 0xB2];

/// IEEE company identifier used in NAA designators. Lunar has no registered OUI, so this is
/// a CID (the "local" bit of the first octet set, second nibble Ah), which the IEEE reserves
/// for exactly this kind of self-assigned use; deployments with an OUI can substitute theirs.
pub const COMPANY_ID: u32 = 0x0A_4C_55;

/// T10 vendor identification, 8 ASCII bytes.
pub const T10_VENDOR: &[u8; 8] = b"LUNAR   ";

/// Protocol identifier for iSCSI (SPC-4 table 362), used with PIV=1 port designators.
const PROTOCOL_ISCSI: u8 = 0x5;

/// Everything the identification pages need to know about one LUN as seen through one port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceIdentity {
    /// Volume UUID (16 bytes, big-endian as in RFC 4122).
    pub uuid: [u8; 16],
    /// Relative target port identifier (1-based).
    pub relative_port: u16,
    /// Target port group.
    pub target_port_group: u16,
    /// SCSI target device name (the iSCSI target IQN), if known.
    pub target_name: Option<String>,
}

impl DeviceIdentity {
    /// Unit serial number: the volume UUID as 32 lowercase hex digits.
    pub fn serial(&self) -> String {
        let mut s = String::with_capacity(32);
        for b in self.uuid {
            s.push_str(&format!("{b:02x}"));
        }
        s
    }

    /// NAA IEEE Registered Extended designator (NAA 6, 16 bytes): company id plus 100 bits
    /// taken from the UUID with its fixed version nibble removed.
    pub fn naa(&self) -> [u8; 16] {
        let u = u128::from_be_bytes(self.uuid);
        // Drop the UUID version nibble (bits 76..80): it is the same for every volume.
        let packed = ((u >> 80) << 76) | (u & ((1u128 << 76) - 1));
        let vendor = packed & ((1u128 << 100) - 1);
        let v = (6u128 << 124) | (u128::from(COMPANY_ID & 0xFF_FFFF) << 100) | vendor;
        v.to_be_bytes()
    }
}

/// Logical block provisioning type (VPD B2h PROVISIONING TYPE).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Provisioning {
    /// Fully provisioned: every block has backing reserved.
    Full,
    /// Resource provisioned: space is guaranteed, allocation is lazy.
    Resource,
    /// Thin provisioned.
    Thin,
}

/// Limits reported in the Block Limits page, in logical blocks unless noted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockLimits {
    /// Largest READ/WRITE transfer accepted.
    pub max_transfer: u32,
    /// Preferred transfer size.
    pub optimal_transfer: u32,
    /// Preferred alignment granularity of transfers (usually the allocation chunk).
    pub optimal_transfer_granularity: u16,
    /// Largest number of blocks in one UNMAP descriptor / command.
    pub max_unmap_lba_count: u32,
    /// Largest number of UNMAP block descriptors.
    pub max_unmap_descriptors: u32,
    /// Optimal UNMAP granularity.
    pub unmap_granularity: u32,
    /// Largest WRITE SAME.
    pub max_write_same: u64,
    /// Largest COMPARE AND WRITE (0: not supported).
    pub max_compare_and_write: u8,
}

impl BlockLimits {
    /// Limits for a volume with `block_size`-byte blocks on a pool of `chunk_size` bytes.
    ///
    /// The unmap granularity is the chunk (the unit the store can actually free), capped at
    /// 1 MiB: VMFS6 automatic space reclamation only works when the reported granularity is
    /// at most 1 MiB.
    pub fn for_volume(block_size: u32, chunk_size: u32) -> Self {
        let bs = block_size.max(1);
        let blocks = |bytes: u64| {
            u32::try_from(bytes / u64::from(bs))
                .unwrap_or(u32::MAX)
                .max(1)
        };
        // Granularities are whole physical blocks (READ CAPACITY(16) reports 4 KiB ones):
        // chunks are at least 4 KiB, the rounding only guards odd chunk sizes.
        let lbppb = super::capacity::logical_blocks_per_physical(bs);
        let chunk_blocks = blocks(u64::from(chunk_size.clamp(bs, 1 << 20)))
            .div_ceil(lbppb)
            .saturating_mul(lbppb);
        Self {
            max_transfer: blocks(8 << 20),
            optimal_transfer: blocks(1 << 20),
            optimal_transfer_granularity: u16::try_from(chunk_blocks).unwrap_or(u16::MAX),
            // At most 2^20 blocks per UNMAP: bounded work per command (and what
            // conformance suites consider sane).
            max_unmap_lba_count: blocks(1 << 30).min(1 << 20),
            max_unmap_descriptors: 256,
            unmap_granularity: chunk_blocks,
            // The WRITE SAME(10) range: big enough for initiators' zeroing (ESXi block
            // zero, Linux blkdev zeroout) while keeping a non-zero pattern write bounded.
            max_write_same: u64::from(blocks(1 << 30).min(0xFFFF)),
            // VMware's ATS uses single-block COMPARE AND WRITE; a few more blocks cost
            // nothing and serve other cluster filesystems.
            max_compare_and_write: 64,
        }
    }
}

fn page(code: u8, body: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(4 + body.len());
    v.extend_from_slice(&[0x00, code]);
    v.extend_from_slice(&(body.len() as u16).to_be_bytes());
    v.extend_from_slice(body);
    v
}

/// Page 00h: supported VPD pages.
pub fn supported_pages() -> Vec<u8> {
    page(0x00, &SUPPORTED_PAGES)
}

/// Page 80h: unit serial number.
pub fn unit_serial(id: &DeviceIdentity) -> Vec<u8> {
    page(0x80, id.serial().as_bytes())
}

fn designator(out: &mut Vec<u8>, code_set: u8, piv_assoc_type: u8, protocol: u8, value: &[u8]) {
    out.push((protocol << 4) | code_set);
    out.push(piv_assoc_type);
    out.push(0);
    out.push(value.len() as u8);
    out.extend_from_slice(value);
}

/// Page 83h: device identification.
pub fn device_identification(id: &DeviceIdentity) -> Vec<u8> {
    let mut d = Vec::with_capacity(128);
    // Logical unit: NAA 6 (binary, association 00b, type 3).
    designator(&mut d, 0x1, 0x03, 0, &id.naa());
    // Logical unit: T10 vendor ID (ASCII, type 1): vendor + serial.
    let mut t10 = T10_VENDOR.to_vec();
    t10.extend_from_slice(id.serial().as_bytes());
    designator(&mut d, 0x2, 0x01, 0, &t10);
    // Target port: relative target port (PIV=1, association 01b, type 4).
    let [hi, lo] = id.relative_port.to_be_bytes();
    designator(
        &mut d,
        0x1,
        0x80 | 0x10 | 0x04,
        PROTOCOL_ISCSI,
        &[0, 0, hi, lo],
    );
    // Target port: target port group (type 5).
    let [hi, lo] = id.target_port_group.to_be_bytes();
    designator(
        &mut d,
        0x1,
        0x80 | 0x10 | 0x05,
        PROTOCOL_ISCSI,
        &[0, 0, hi, lo],
    );
    // Target device: SCSI name string (UTF-8, association 10b, type 8), NUL-terminated and
    // padded to a multiple of four bytes.
    if let Some(name) = &id.target_name {
        let mut v = name.as_bytes().to_vec();
        v.truncate(250);
        v.push(0);
        while v.len() % 4 != 0 {
            v.push(0);
        }
        designator(&mut d, 0x3, 0x80 | 0x20 | 0x08, PROTOCOL_ISCSI, &v);
    }
    page(0x83, &d)
}

/// Page B0h: block limits (SBC-3 6.5.3), 64 bytes.
pub fn block_limits(l: &BlockLimits) -> Vec<u8> {
    let mut b = vec![0u8; 0x3C];
    // b[0] (byte 4): WSNZ = 0: NUMBER OF LOGICAL BLOCKS 0 in WRITE SAME means "from the LBA
    // to the end of the medium" (SBC-4 5.49/5.50). It stays cheap and bounded: a range longer
    // than MAXIMUM WRITE SAME LENGTH is refused (INVALID FIELD IN CDB) rather than run, so an
    // initiator bug cannot rewrite a whole LUN; tgtd and LIO also accept it.
    b[0] = 0x00;
    b[1] = l.max_compare_and_write;
    b[2..4].copy_from_slice(&l.optimal_transfer_granularity.to_be_bytes());
    b[4..8].copy_from_slice(&l.max_transfer.to_be_bytes());
    b[8..12].copy_from_slice(&l.optimal_transfer.to_be_bytes());
    b[12..16].copy_from_slice(&l.max_transfer.to_be_bytes()); // MAXIMUM PREFETCH LENGTH
    b[16..20].copy_from_slice(&l.max_unmap_lba_count.to_be_bytes());
    b[20..24].copy_from_slice(&l.max_unmap_descriptors.to_be_bytes());
    b[24..28].copy_from_slice(&l.unmap_granularity.to_be_bytes());
    // UGAVALID=1, UNMAP GRANULARITY ALIGNMENT 0: granules start at LBA 0.
    b[28..32].copy_from_slice(&0x8000_0000u32.to_be_bytes());
    b[32..40].copy_from_slice(&l.max_write_same.to_be_bytes());
    page(0xB0, &b)
}

/// Page B1h: block device characteristics: a non-rotating medium.
pub fn block_device_characteristics() -> Vec<u8> {
    let mut b = vec![0u8; 0x3C];
    b[0..2].copy_from_slice(&1u16.to_be_bytes()); // MEDIUM ROTATION RATE: non-rotating
    page(0xB1, &b)
}

/// Page B2h: logical block provisioning. UNMAP, WRITE SAME(16) and WRITE SAME(10) with UNMAP
/// are supported and unmapped blocks read as zeros (LBPRZ). No anchored state.
pub fn logical_block_provisioning(p: Provisioning) -> Vec<u8> {
    let ptype = match p {
        Provisioning::Full => 0,
        Provisioning::Resource => 1,
        Provisioning::Thin => 2,
    };
    page(0xB2, &[0, 0x80 | 0x40 | 0x20 | 0x04, ptype, 0])
}

/// Everything needed to render any supported page.
#[derive(Clone, Debug)]
pub struct VpdContext<'a> {
    /// Identity of the logical unit and port.
    pub identity: &'a DeviceIdentity,
    /// Block limits.
    pub limits: BlockLimits,
    /// Provisioning type.
    pub provisioning: Provisioning,
}

/// Render VPD page `code`, or INVALID FIELD IN CDB (pointing at the PAGE CODE byte) when it
/// is not supported.
pub fn render(code: u8, ctx: &VpdContext<'_>) -> Result<Vec<u8>, Sense> {
    Ok(match code {
        0x00 => supported_pages(),
        0x80 => unit_serial(ctx.identity),
        0x83 => device_identification(ctx.identity),
        0xB0 => block_limits(&ctx.limits),
        0xB1 => block_device_characteristics(),
        0xB2 => logical_block_provisioning(ctx.provisioning),
        _ => return Err(Sense::invalid_field_in_cdb(2, Some(7))),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(uuid: [u8; 16]) -> DeviceIdentity {
        DeviceIdentity {
            uuid,
            relative_port: 1,
            target_port_group: 1,
            target_name: Some("iqn.2026-11.io.lunar:t".into()),
        }
    }

    const U: [u8; 16] = [
        0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0x4d, 0xef, 0x81, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd,
        0xef,
    ];

    #[test]
    fn serial_page_golden() {
        let p = unit_serial(&id(U));
        assert_eq!(&p[..4], &[0, 0x80, 0, 32]);
        assert_eq!(&p[4..], b"123456789abc4def8123456789abcdef");
    }

    #[test]
    fn naa_is_type6_and_derived_from_uuid() {
        let n = id(U).naa();
        assert_eq!(n[0] >> 4, 6);
        // Company id in the next 24 bits.
        let v = u128::from_be_bytes(n);
        assert_eq!(((v >> 100) & 0xFF_FFFF) as u32, COMPANY_ID);
        // Stable: same UUID, same NAA; a different UUID (a clone), a different NAA.
        assert_eq!(n, id(U).naa());
        let mut other = U;
        other[15] ^= 1;
        assert_ne!(n, id(other).naa());
        let mut other = U;
        other[5] ^= 0x10;
        assert_ne!(n, id(other).naa());
    }

    #[test]
    fn device_identification_layout() {
        let p = device_identification(&id(U));
        assert_eq!(p[1], 0x83);
        let len = u16::from_be_bytes([p[2], p[3]]) as usize;
        assert_eq!(len + 4, p.len());
        // Walk designators: expect types 3, 1, 4, 5, 8 in that order.
        let mut off = 4;
        let mut types = vec![];
        while off < p.len() {
            types.push((p[off + 1] & 0x0F, (p[off + 1] >> 4) & 3));
            off += 4 + p[off + 3] as usize;
        }
        assert_eq!(off, p.len());
        assert_eq!(types, vec![(3, 0), (1, 0), (4, 1), (5, 1), (8, 2)]);
        // NAA designator: binary code set, 16 bytes.
        assert_eq!(&p[4..8], &[0x01, 0x03, 0x00, 0x10]);
        // Relative target port designator carries the iSCSI protocol identifier with PIV.
        let rtp = 4 + 20 + 4 + 40;
        assert_eq!(&p[rtp..rtp + 8], &[0x51, 0x94, 0, 4, 0, 0, 0, 1]);
    }

    #[test]
    fn block_limits_golden() {
        let l = BlockLimits::for_volume(512, 64 * 1024);
        assert_eq!(l.unmap_granularity, 128);
        assert_eq!(l.max_transfer, 16384);
        let p = block_limits(&l);
        assert_eq!(p.len(), 64);
        assert_eq!(&p[..4], &[0, 0xB0, 0, 0x3C]);
        assert_eq!(
            p[4], 0x00,
            "WSNZ=0: zero blocks means to the end of the medium"
        );
        // Granularities are whole 4 KiB physical blocks (8 logical blocks).
        for c in [4096u32, 8192, 65536, 1 << 20] {
            let l = BlockLimits::for_volume(512, c);
            assert_eq!(l.unmap_granularity % 8, 0);
            assert_eq!(l.optimal_transfer_granularity % 8, 0);
            // MAXIMUM UNMAP LBA COUNT covers at least one physical block.
            assert!(l.max_unmap_lba_count >= 8);
        }
        assert_eq!(p[5], 64, "MAXIMUM COMPARE AND WRITE LENGTH");
        assert_eq!(&p[28..32], &128u32.to_be_bytes());
        assert_eq!(&p[32..36], &[0x80, 0, 0, 0]);
        assert_eq!(&p[24..28], &256u32.to_be_bytes());
        // A huge chunk is capped at 1 MiB so VMFS6 auto-reclaim stays usable.
        assert_eq!(
            BlockLimits::for_volume(4096, 4 << 20).unmap_granularity,
            256
        );
    }

    #[test]
    fn lbp_and_bdc_golden() {
        assert_eq!(
            logical_block_provisioning(Provisioning::Thin),
            vec![0, 0xB2, 0, 4, 0, 0xE4, 2, 0]
        );
        let b1 = block_device_characteristics();
        assert_eq!(&b1[..6], &[0, 0xB1, 0, 0x3C, 0, 1]);
        assert_eq!(
            supported_pages(),
            vec![0, 0, 0, 6, 0x00, 0x80, 0x83, 0xB0, 0xB1, 0xB2]
        );
    }

    #[test]
    fn unsupported_page_points_at_page_code() {
        let ident = id(U);
        let ctx = VpdContext {
            identity: &ident,
            limits: BlockLimits::for_volume(512, 65536),
            provisioning: Provisioning::Thin,
        };
        let e = render(0x86, &ctx).unwrap_err();
        assert_eq!(
            e.field,
            Some(super::super::sense::FieldPointer::cdb(2, Some(7)))
        );
        assert!(render(0xB2, &ctx).is_ok());
    }
}
