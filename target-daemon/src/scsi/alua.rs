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
//!
//! # Gateways of an HA group
//!
//! With an [`AluaView`] (set by the HA coordinator through
//! [`ScsiTarget::set_alua`](super::ScsiTarget::set_alua)) the groups are the gateways
//! instead: each gateway is one target port group whose number and single relative target
//! port are the gateway's `port_group`, whatever portal a nexus came through, so every
//! gateway reports the same list (VPD 83h says the same numbers). The owner of the pool is
//! active/optimized, the others standby, a gateway taking over or giving up transitioning.
//! A group not active answers only what SPC-4 5.16.2.4 allows in its state
//! ([`refusal`], [decision 0012](../../../docs/decisions/0012-alua-standby-commands.md));
//! every change of the list raises ASYMMETRIC ACCESS STATE CHANGED on every I_T nexus
//! (SPC-4 5.16.2.5), so hosts re-read the states at once.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use bytes::Bytes;
use parking_lot::Mutex;
use scsi_proto::scsi::cdb::Command;
use scsi_proto::scsi::rtpg::{supports, GroupReport, StatusCode};
pub use scsi_proto::scsi::rtpg::{AccessState, PortGroup};
use scsi_proto::scsi::sense::{asc, AdditionalSense};

use super::{Nexus, ScsiResponse};

/// IMPLICIT TRANSITION TIME reported by gateways (extended RTPG header): how long a host
/// should keep retrying a transitioning group before giving up on it. Linux's
/// `scsi_dh_alua` uses it as its transition timeout (60 s when 0). A takeover takes the
/// lease time plus fencing, a few seconds; 30 s leaves room for a slow Ceph cluster.
pub const IMPLICIT_TRANSITION_SECS: u8 = 30;

/// One gateway's target port group as the HA coordinator sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupState {
    /// TARGET PORT GROUP number = relative target port identifier = the gateway's
    /// `port_group`.
    pub id: u16,
    /// The gateway's name (named in errors: "the owner is gw1").
    pub gateway: String,
    /// Its asymmetric access state.
    pub state: AccessState,
}

/// The ALUA state of an HA group as one gateway reports it: every gateway's group and
/// state, and which group is this gateway's. Shared (`Arc`) by every target of the daemon;
/// the HA coordinator changes it, the device server reads it on every command (one atomic
/// load for the local state).
pub struct AluaView {
    local: u16,
    groups: Mutex<Vec<GroupState>>,
    /// [`AccessState`] of the local group, as its code, for the per-command check.
    local_state: AtomicU8,
    /// Bumped on every change of the list; targets compare it with the one they raised
    /// unit attentions for. Shared by the views of one gateway's pools
    /// ([`AluaView::sibling`]), so a target checks one counter whatever pool its LUNs are in.
    generation: Arc<AtomicU64>,
    /// Until when an active local group may serve media commands, as nanoseconds after
    /// [`epoch`] (0: no deadline). The HA coordinator publishes its lease's local deadline
    /// here at every renew; the per-command check compares it with the clock, so a gateway
    /// whose coordinator did not run in time (a process frozen and resumed, a starved
    /// runtime) refuses media access by itself instead of waiting for its own step-down.
    serve_until: AtomicU64,
}

/// The instant deadlines count from (process-wide, monotonic: it keeps counting while the
/// process is stopped, which is the point).
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn state_of_code(c: u8) -> AccessState {
    match c {
        0x0 => AccessState::ActiveOptimized,
        0x1 => AccessState::ActiveNonOptimized,
        0x2 => AccessState::Standby,
        0xF => AccessState::Transitioning,
        _ => AccessState::Unavailable,
    }
}

impl AluaView {
    /// The view of the gateway whose group is `local`, with `groups` (see
    /// [`AluaView::set_groups`]).
    pub fn new(local: u16, groups: Vec<GroupState>) -> Arc<Self> {
        Self::with_generation(local, groups, Arc::new(AtomicU64::new(0)))
    }

    fn with_generation(
        local: u16,
        groups: Vec<GroupState>,
        generation: Arc<AtomicU64>,
    ) -> Arc<Self> {
        let view = Arc::new(Self {
            local,
            groups: Mutex::new(Vec::new()),
            local_state: AtomicU8::new(AccessState::Unavailable.code()),
            generation,
            serve_until: AtomicU64::new(0),
        });
        view.set_groups(groups);
        view
    }

    /// The view of another pool of the same gateway (same local group), with `groups`: a
    /// gateway with several pools has one view per pool, since each pool has its own owner
    /// (SPC-4 reports target port group states per logical unit, and a LUN's states are
    /// its pool's). The views share their change counter, so a change of any of them
    /// raises ASYMMETRIC ACCESS STATE CHANGED on every LUN of the targets (hosts re-read
    /// the states; the LUNs of the pool that did not change report what they did).
    pub fn sibling(&self, groups: Vec<GroupState>) -> Arc<Self> {
        Self::with_generation(self.local, groups, self.generation.clone())
    }

    /// Replaces the list of groups (sorted by id; one entry per id, the last given wins;
    /// the local group is added as unavailable if missing). A change raises ASYMMETRIC
    /// ACCESS STATE CHANGED on every nexus; setting the same list again raises nothing.
    pub fn set_groups(&self, mut groups: Vec<GroupState>) {
        groups.reverse();
        groups.sort_by_key(|g| g.id);
        groups.dedup_by_key(|g| g.id);
        if !groups.iter().any(|g| g.id == self.local) {
            groups.push(GroupState {
                id: self.local,
                gateway: String::new(),
                state: AccessState::Unavailable,
            });
            groups.sort_by_key(|g| g.id);
        }
        let mut cur = self.groups.lock();
        if *cur == groups {
            return;
        }
        let local = groups
            .iter()
            .find(|g| g.id == self.local)
            .map_or(AccessState::Unavailable, |g| g.state);
        tracing::info!(
            local = self.local,
            state = ?local,
            groups = ?groups.iter().map(|g| (g.id, g.state)).collect::<Vec<_>>(),
            "ALUA state changed"
        );
        *cur = groups;
        self.local_state.store(local.code(), Ordering::Release);
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// Sets the state of group `id` (added with an empty gateway name if unknown).
    pub fn set_state(&self, id: u16, state: AccessState) {
        let mut groups = self.groups();
        match groups.iter_mut().find(|g| g.id == id) {
            Some(g) => g.state = state,
            None => groups.push(GroupState {
                id,
                gateway: String::new(),
                state,
            }),
        }
        self.set_groups(groups);
    }

    /// Sets the state of this gateway's group.
    pub fn set_local(&self, state: AccessState) {
        self.set_state(self.local, state);
    }

    /// Publishes until when the local group may serve media commands while it is active
    /// (`None`: no deadline, as without HA). See [`AluaView::serving_state`].
    pub fn set_serving_until(&self, until: Option<Instant>) {
        let nanos = until.map_or(0, |t| {
            let n = t.saturating_duration_since(epoch()).as_nanos();
            // 1 ns at least: 0 means "no deadline".
            u64::try_from(n).unwrap_or(u64::MAX).max(1)
        });
        self.serve_until.store(nanos, Ordering::Release);
    }

    /// The local state as a command sees it now: the published state, except that an
    /// active group past its serving deadline counts as transitioning (hosts retry 04/0A),
    /// since its lease may already be someone else's.
    pub fn serving_state(&self) -> AccessState {
        let state = self.local_state();
        let until = self.serve_until.load(Ordering::Acquire);
        if until == 0 || !matches!(state, AccessState::ActiveOptimized) {
            return state;
        }
        let now = Instant::now().saturating_duration_since(epoch()).as_nanos();
        if u64::try_from(now).unwrap_or(u64::MAX) >= until {
            AccessState::Transitioning
        } else {
            state
        }
    }

    /// This gateway's group number.
    pub fn local(&self) -> u16 {
        self.local
    }

    /// The state of this gateway's group.
    pub fn local_state(&self) -> AccessState {
        state_of_code(self.local_state.load(Ordering::Acquire))
    }

    /// Every group, ascending by id.
    pub fn groups(&self) -> Vec<GroupState> {
        self.groups.lock().clone()
    }

    /// The gateway whose group is active/optimized (the pool's owner), if any.
    pub fn owner(&self) -> Option<String> {
        self.groups
            .lock()
            .iter()
            .find(|g| g.state == AccessState::ActiveOptimized && !g.gateway.is_empty())
            .map(|g| g.gateway.clone())
    }

    /// Changes so far (see [`AluaView::set_groups`]).
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The REPORT TARGET PORT GROUPS descriptors: one group per gateway with one port of
    /// the same number, supporting active/optimized, standby, unavailable and
    /// transitioning; none preferred (a failback preference would bring back the
    /// ping-pong of ownership that an arbiter is there to avoid).
    fn reports(&self) -> Vec<GroupReport> {
        self.groups
            .lock()
            .iter()
            .map(|g| GroupReport {
                group: PortGroup {
                    id: g.id,
                    ports: vec![g.id],
                },
                state: g.state,
                pref: false,
                supported: supports::TRANSITIONING
                    | supports::UNAVAILABLE
                    | supports::STANDBY
                    | supports::ACTIVE_OPTIMIZED,
                status: StatusCode::None,
            })
            .collect()
    }
}

/// Whether `command` is refused in the local group's access state `state`, and with which
/// NOT READY additional sense (SPC-4 5.16.2.4; the table is [decision
/// 0012](../../../docs/decisions/0012-alua-standby-commands.md)):
/// - active: nothing is refused;
/// - standby: INQUIRY, REPORT LUNS, REPORT TARGET PORT GROUPS, REQUEST SENSE, REPORT
///   SUPPORTED OPERATION CODES / TMFS, MODE SENSE/SELECT, PERSISTENT RESERVE IN/OUT and
///   READ CAPACITY run; the rest (TEST UNIT READY included) gets 04/0B;
/// - transitioning: only the inventory and state commands (INQUIRY, REPORT LUNS, REPORT
///   TARGET PORT GROUPS, REQUEST SENSE, REPORT SUPPORTED ...) run; the rest gets 04/0A,
///   which hosts retry;
/// - unavailable: the same few run; the rest gets 04/0C.
pub fn refusal(state: AccessState, command: &Command) -> Option<AdditionalSense> {
    let always = matches!(
        command,
        Command::Inquiry { .. }
            | Command::ReportLuns { .. }
            | Command::ReportTargetPortGroups { .. }
            | Command::RequestSense { .. }
            | Command::ReportSupportedOpcodes(_)
            | Command::ReportSupportedTmfs { .. }
    );
    match state {
        AccessState::ActiveOptimized | AccessState::ActiveNonOptimized => None,
        _ if always => None,
        AccessState::Standby => match command {
            Command::ModeSense(_)
            | Command::ModeSelect { .. }
            | Command::PersistentReserveIn { .. }
            | Command::PersistentReserveOut { .. }
            | Command::ReadCapacity10
            | Command::ReadCapacity16 { .. } => None,
            _ => Some(asc::LOGICAL_UNIT_NOT_ACCESSIBLE_TARGET_PORT_IN_STANDBY_STATE),
        },
        AccessState::Transitioning => {
            Some(asc::LOGICAL_UNIT_NOT_ACCESSIBLE_ASYMMETRIC_ACCESS_STATE_TRANSITION)
        }
        AccessState::Unavailable => {
            Some(asc::LOGICAL_UNIT_NOT_ACCESSIBLE_TARGET_PORT_IN_UNAVAILABLE_STATE)
        }
    }
}

/// The sense for a media command on a LUN that has no volume although the group is
/// active (the pool is being attached): the transition is not over yet.
pub(super) fn no_volume_sense(state: AccessState) -> AdditionalSense {
    refusal(state, &Command::TestUnitReady)
        .unwrap_or(asc::LOGICAL_UNIT_NOT_ACCESSIBLE_ASYMMETRIC_ACCESS_STATE_TRANSITION)
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

/// REPORT TARGET PORT GROUPS for `nexus` on a target exported through the portal groups
/// `exported` (see [`groups_for`]), or the gateways of `view` in an HA group, limited to the
/// allocation length.
pub(super) fn report_target_port_groups(
    nexus: &Nexus,
    exported: &[u16],
    view: Option<&AluaView>,
    extended: bool,
    alloc_len: u32,
) -> ScsiResponse {
    let data = match view {
        Some(v) => scsi_proto::scsi::rtpg::encode_reports(
            &v.reports(),
            extended.then_some(IMPLICIT_TRANSITION_SECS),
        ),
        None => scsi_proto::scsi::rtpg::encode(&groups_for(nexus, exported), extended),
    };
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
        let r = report_target_port_groups(&nexus(1), &[1, 2], None, false, 8);
        assert_eq!(r.data_in.len(), 8);
        assert_eq!(
            &r.data_in[0..4],
            &24u32.to_be_bytes(),
            "full length reported"
        );
    }

    fn gw(id: u16, state: AccessState) -> GroupState {
        GroupState {
            id,
            gateway: format!("gw{id}"),
            state,
        }
    }

    #[test]
    fn the_view_tracks_states_owner_and_changes() {
        let v = AluaView::new(
            2,
            vec![
                gw(2, AccessState::Standby),
                gw(1, AccessState::ActiveOptimized),
            ],
        );
        assert_eq!(v.local_state(), AccessState::Standby);
        assert_eq!(v.owner().as_deref(), Some("gw1"));
        let ids: Vec<u16> = v.groups().iter().map(|g| g.id).collect();
        assert_eq!(ids, vec![1, 2], "sorted");
        let g0 = v.generation();
        v.set_groups(v.groups());
        assert_eq!(v.generation(), g0, "the same list is no change");
        v.set_local(AccessState::Transitioning);
        assert_eq!(v.local_state(), AccessState::Transitioning);
        assert_eq!(v.generation(), g0 + 1);
        v.set_groups(vec![
            gw(1, AccessState::Standby),
            gw(2, AccessState::ActiveOptimized),
        ]);
        assert_eq!(v.local_state(), AccessState::ActiveOptimized);
        assert_eq!(v.owner().as_deref(), Some("gw2"));
        assert_eq!(v.generation(), g0 + 2);
    }

    #[test]
    fn an_active_group_past_its_serving_deadline_transitions() {
        let v = AluaView::new(1, vec![gw(1, AccessState::ActiveOptimized)]);
        assert_eq!(
            v.serving_state(),
            AccessState::ActiveOptimized,
            "no deadline"
        );
        let now = Instant::now();
        v.set_serving_until(Some(now + std::time::Duration::from_secs(3600)));
        assert_eq!(v.serving_state(), AccessState::ActiveOptimized);
        v.set_serving_until(Some(now));
        assert_eq!(
            v.serving_state(),
            AccessState::Transitioning,
            "a deadline that has passed refuses media access by itself"
        );
        assert_eq!(
            v.local_state(),
            AccessState::ActiveOptimized,
            "what RTPG reports is the coordinator's to change"
        );
        // A deadline older than the first use of the clock base still counts as passed.
        v.set_serving_until(Some(now - std::time::Duration::from_secs(1)));
        assert_eq!(v.serving_state(), AccessState::Transitioning);
        v.set_serving_until(None);
        assert_eq!(v.serving_state(), AccessState::ActiveOptimized);
        // Only an active group is affected: standby stays standby.
        v.set_local(AccessState::Standby);
        v.set_serving_until(Some(now));
        assert_eq!(v.serving_state(), AccessState::Standby);
    }

    #[test]
    fn a_missing_local_group_is_unavailable() {
        let v = AluaView::new(3, vec![gw(1, AccessState::ActiveOptimized)]);
        assert_eq!(v.local_state(), AccessState::Unavailable);
        assert_eq!(v.groups().len(), 2);
    }

    #[test]
    fn standby_refuses_media_and_allows_the_spc4_list() {
        use scsi_proto::scsi::cdb::parse;
        let cmd = |cdb: &[u8]| match parse(cdb) {
            Ok(c) => c.command,
            Err(e) => panic!("test CDB {cdb:02x?} does not parse: {e}"),
        };
        let read10 = cmd(&[0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0]);
        let tur = cmd(&[0; 6]);
        let inquiry = cmd(&[0x12, 0, 0, 0, 36, 0]);
        let rc10 = cmd(&[0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        let standby = asc::LOGICAL_UNIT_NOT_ACCESSIBLE_TARGET_PORT_IN_STANDBY_STATE;
        assert_eq!(refusal(AccessState::Standby, &read10), Some(standby));
        assert_eq!(refusal(AccessState::Standby, &tur), Some(standby));
        assert_eq!(refusal(AccessState::Standby, &inquiry), None);
        assert_eq!(refusal(AccessState::Standby, &rc10), None);
        assert_eq!(
            refusal(AccessState::Transitioning, &rc10),
            Some(asc::LOGICAL_UNIT_NOT_ACCESSIBLE_ASYMMETRIC_ACCESS_STATE_TRANSITION)
        );
        assert_eq!(
            refusal(AccessState::Unavailable, &read10),
            Some(asc::LOGICAL_UNIT_NOT_ACCESSIBLE_TARGET_PORT_IN_UNAVAILABLE_STATE)
        );
        assert_eq!(refusal(AccessState::Unavailable, &inquiry), None);
        assert_eq!(refusal(AccessState::ActiveOptimized, &read10), None);
    }
}
