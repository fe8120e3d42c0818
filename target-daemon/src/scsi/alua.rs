//! Asymmetric logical unit access (SPC-4 5.16): REPORT TARGET PORT GROUPS.
//!
//! Every portal group (TPGT) of a target is one target port group with one target port,
//! whose relative target port identifier and target port group number both equal the TPGT
//! (the same numbers VPD page 83h reports). All groups are active/optimized: any path is as
//! good as any other, and the standard INQUIRY says TPGS=01b (implicit ALUA) so multipath
//! stacks (dm-multipath `alua` handler, VMware `VMW_SATP_ALUA`, Windows MPIO) read the
//! states instead of guessing. A LUN reached through two portals is one device: the NAA
//! designator comes from the LUN identity, not the port.
//!
//! REPORT TARGET PORT GROUPS lists every target port group through which the logical unit
//! is accessible (SPC-4 6.36), not just the one the command came through: the iSCSI server
//! tells each [`ScsiTarget`](super::ScsiTarget) the TPGTs of its portals
//! ([`ScsiTarget::set_port_groups`](super::ScsiTarget::set_port_groups)). A target that was
//! never told (unit tests, a device server without a transport) reports the nexus's group.

use bytes::Bytes;

use super::{Nexus, ScsiResponse};

/// Asymmetric access state: active/optimized.
const ACTIVE_OPTIMIZED: u8 = 0x0;
/// Supported states: AO_SUP only.
const SUPPORTED_STATES: u8 = 0x01;
/// Status code: no status available.
const STATUS_NONE: u8 = 0x00;

/// One target port group: its number and the relative target ports in it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortGroup {
    /// TARGET PORT GROUP number.
    pub id: u16,
    /// Relative target port identifiers.
    pub ports: Vec<u16>,
}

/// The groups a nexus is told about: one per TPGT in `exported` (the portal groups the
/// target is reachable through), in ascending order, always including the group of the
/// portal the nexus came through; with `exported` empty (unknown), only that group. TPGT 0
/// is reported as 1, as in VPD 83h, because relative port 0 is reserved.
pub fn groups_for(nexus: &Nexus, exported: &[u16]) -> Vec<PortGroup> {
    let mut ids: Vec<u16> = exported.iter().map(|&t| t.max(1)).collect();
    ids.push(nexus.tpgt.max(1));
    ids.sort_unstable();
    ids.dedup();
    ids.into_iter()
        .map(|id| PortGroup {
            id,
            ports: vec![id],
        })
        .collect()
}

/// Encode REPORT TARGET PORT GROUPS parameter data (SPC-4 6.36); `extended` selects the
/// extended header (format 001b) with the implicit transition time.
pub fn encode(groups: &[PortGroup], extended: bool) -> Vec<u8> {
    let mut body = Vec::new();
    if extended {
        // Format type 001b, implicit transition time 0 s.
        body.extend_from_slice(&[0x10, 0, 0, 0]);
    }
    for g in groups {
        body.push(0x80 | ACTIVE_OPTIMIZED); // PREF=1
        body.push(SUPPORTED_STATES);
        body.extend_from_slice(&g.id.to_be_bytes());
        body.push(0);
        body.push(STATUS_NONE);
        body.push(0);
        body.push(u8::try_from(g.ports.len()).unwrap_or(u8::MAX));
        for p in g.ports.iter().take(usize::from(u8::MAX)) {
            body.extend_from_slice(&[0, 0]);
            body.extend_from_slice(&p.to_be_bytes());
        }
    }
    let mut out = Vec::with_capacity(4 + body.len());
    out.extend_from_slice(&(u32::try_from(body.len()).unwrap_or(u32::MAX)).to_be_bytes());
    out.extend_from_slice(&body);
    out
}

/// REPORT TARGET PORT GROUPS for `nexus` on a target exported through the portal groups
/// `exported` (see [`groups_for`]), limited to the allocation length.
pub(super) fn report_target_port_groups(
    nexus: &Nexus,
    exported: &[u16],
    extended: bool,
    alloc_len: u32,
) -> ScsiResponse {
    let data = encode(&groups_for(nexus, exported), extended);
    ScsiResponse::good(Bytes::from(scsi_proto::scsi::truncate_to_alloc(
        data, alloc_len,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_active_optimized_group_per_portal() {
        let n = Nexus {
            initiator: "iqn.a".into(),
            isid: 1,
            tpgt: 3,
        };
        let d = encode(&groups_for(&n, &[]), false);
        assert_eq!(&d[0..4], &12u32.to_be_bytes());
        assert_eq!(d[4], 0x80, "PREF, active/optimized");
        assert_eq!(d[5], 0x01);
        assert_eq!(&d[6..8], &3u16.to_be_bytes());
        assert_eq!(d[11], 1, "one port");
        assert_eq!(&d[14..16], &3u16.to_be_bytes());
        let zero = Nexus {
            tpgt: 0,
            ..n.clone()
        };
        let x = encode(&groups_for(&zero, &[]), true);
        assert_eq!(&x[0..4], &16u32.to_be_bytes());
        assert_eq!(x[4], 0x10);
        assert_eq!(
            &x[10..12],
            &1u16.to_be_bytes(),
            "TPGT 0 reported as group 1"
        );
        // A known set: the nexus's own group is in it.
        assert_eq!(groups_for(&n, &[3]), groups_for(&n, &[]));
    }

    #[test]
    fn every_exported_group_is_reported() {
        let n = Nexus {
            initiator: "iqn.a".into(),
            isid: 1,
            tpgt: 2,
        };
        let g = groups_for(&n, &[2, 1, 2]);
        assert_eq!(
            g,
            vec![
                PortGroup {
                    id: 1,
                    ports: vec![1]
                },
                PortGroup {
                    id: 2,
                    ports: vec![2]
                },
            ]
        );
        let d = encode(&g, false);
        assert_eq!(&d[0..4], &24u32.to_be_bytes(), "two 12-byte descriptors");
        for (i, id) in [1u16, 2].into_iter().enumerate() {
            let desc = &d[4 + 12 * i..16 + 12 * i];
            assert_eq!(desc[0], 0x80, "PREF, active/optimized");
            assert_eq!(&desc[2..4], &id.to_be_bytes());
            assert_eq!(desc[7], 1, "one relative target port");
            assert_eq!(&desc[10..12], &id.to_be_bytes());
        }
        // The nexus's own group is reported even if the set somehow lacks it.
        let ids: Vec<u16> = groups_for(&n, &[5]).iter().map(|g| g.id).collect();
        assert_eq!(ids, vec![2, 5]);
    }
}
