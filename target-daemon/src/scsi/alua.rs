//! Asymmetric logical unit access (SPC-4 5.16): which target port groups REPORT TARGET PORT
//! GROUPS lists (the encoding is scsi-proto's `scsi::rtpg`).
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
pub use scsi_proto::scsi::rtpg::PortGroup;

use super::{Nexus, ScsiResponse};

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

/// REPORT TARGET PORT GROUPS for `nexus` on a target exported through the portal groups
/// `exported` (see [`groups_for`]), limited to the allocation length.
pub(super) fn report_target_port_groups(
    nexus: &Nexus,
    exported: &[u16],
    extended: bool,
    alloc_len: u32,
) -> ScsiResponse {
    let data = scsi_proto::scsi::rtpg::encode(&groups_for(nexus, exported), extended);
    ScsiResponse::good(Bytes::from(scsi_proto::scsi::truncate_to_alloc(
        data, alloc_len,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nexus(tpgt: u16) -> Nexus {
        Nexus {
            initiator: "iqn.a".into(),
            isid: 1,
            tpgt,
        }
    }

    #[test]
    fn the_nexus_group_alone_when_nothing_is_known() {
        let n = nexus(3);
        assert_eq!(
            groups_for(&n, &[]),
            vec![PortGroup {
                id: 3,
                ports: vec![3]
            }]
        );
        // A known set: the nexus's own group is in it.
        assert_eq!(groups_for(&n, &[3]), groups_for(&n, &[]));
        let ids: Vec<u16> = groups_for(&nexus(0), &[]).iter().map(|g| g.id).collect();
        assert_eq!(ids, vec![1], "TPGT 0 reported as group 1");
    }

    #[test]
    fn every_exported_group_is_reported() {
        let n = nexus(2);
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
        // The nexus's own group is reported even if the set somehow lacks it.
        let ids: Vec<u16> = groups_for(&n, &[5]).iter().map(|g| g.id).collect();
        assert_eq!(ids, vec![2, 5]);
    }

    #[test]
    fn response_is_truncated_to_the_allocation_length() {
        let r = report_target_port_groups(&nexus(1), &[1, 2], false, 8);
        assert_eq!(r.data_in.len(), 8);
        assert_eq!(
            &r.data_in[0..4],
            &24u32.to_be_bytes(),
            "full length reported"
        );
    }
}
