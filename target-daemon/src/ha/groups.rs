//! The target port groups a gateway reports (REPORT TARGET PORT GROUPS), from what the
//! lease says ([`Access`], the machine's) and which gateways the registry's heartbeats say
//! are alive ([`super::liveness`]). See decision 0012 for the states.
//!
//! - this gateway's group: active/optimized while serving, transitioning while giving the
//!   pool up, standby otherwise (also while taking the pool over, see [`group_states`]);
//! - the owner's group, seen from a standby: active/optimized while its lease lock is held,
//!   transitioning once the lock is gone (expired or released) until a new owner serves;
//!   while this gateway takes over, the previous owner's group is transitioning too;
//! - any other gateway: standby when alive, unavailable when its heartbeat stopped (a
//!   dead gateway's port cannot be reached: hosts must not count it as a standby path).

use crate::scsi::alua::{AccessState, GroupState};

use super::machine::Access;

/// One gateway of the group as the registry lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    /// Gateway name.
    pub name: String,
    /// Its target port group.
    pub port_group: u16,
    /// Whether its heartbeat is recent ([`super::liveness::Liveness::alive`]).
    pub alive: bool,
}

/// The groups gateway `me` (group `local`) reports, given its access and the registry's
/// `peers` (`me` is added if missing; its own liveness is not asked).
pub fn group_states(me: &str, local: u16, access: &Access, peers: &[Peer]) -> Vec<GroupState> {
    let mut out: Vec<GroupState> = peers
        .iter()
        .filter(|p| p.name != me)
        .map(|p| GroupState {
            id: p.port_group,
            gateway: p.name.clone(),
            state: other_state(access, p),
        })
        .collect();
    let own = match access {
        Access::Active { .. } => AccessState::ActiveOptimized,
        Access::Transitioning => AccessState::Transitioning,
        // Standby until the pool is open, not transitioning: Linux `scsi_dh_alua` polls a
        // path whose own group is transitioning only every 2 s (ALUA_RTPG_RETRY_DELAY),
        // which measured 1.5-2.5 s slower takeovers under dm-multipath than standby, whose
        // 2A/06 at the switch to active/optimized is seen at the next path check.
        Access::TakingOver { .. } | Access::Standby { .. } => AccessState::Standby,
    };
    out.push(GroupState {
        id: local,
        gateway: me.to_string(),
        state: own,
    });
    out.sort_by_key(|g| g.id);
    out
}

/// The state of another gateway's group.
fn other_state(access: &Access, p: &Peer) -> AccessState {
    let is = |o: &Option<String>| o.as_deref() == Some(p.name.as_str());
    match access {
        // The lease is the authority on the owner: held means it renews, so it is alive
        // whatever its registry record says.
        Access::Standby {
            owner,
            lease_held: true,
        } if is(owner) => AccessState::ActiveOptimized,
        Access::Standby {
            owner,
            lease_held: false,
        } if is(owner) => AccessState::Transitioning,
        Access::TakingOver { from } if is(from) => AccessState::Transitioning,
        _ if !p.alive => AccessState::Unavailable,
        _ => AccessState::Standby,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peers(alive2: bool) -> Vec<Peer> {
        vec![
            Peer {
                name: "gw1".into(),
                port_group: 1,
                alive: true,
            },
            Peer {
                name: "gw2".into(),
                port_group: 2,
                alive: alive2,
            },
            Peer {
                name: "gw3".into(),
                port_group: 3,
                alive: true,
            },
        ]
    }

    fn states(access: Access, alive2: bool) -> Vec<(u16, AccessState)> {
        group_states("gw1", 1, &access, &peers(alive2))
            .into_iter()
            .map(|g| (g.id, g.state))
            .collect()
    }

    use AccessState::{
        ActiveOptimized as Ao, Standby as Sb, Transitioning as Tr, Unavailable as Un,
    };

    fn standby(owner: &str, lease_held: bool) -> Access {
        Access::Standby {
            owner: Some(owner.into()),
            lease_held,
        }
    }

    #[test]
    fn a_standby_reports_the_owner_active_only_while_its_lease_is_held() {
        assert_eq!(
            states(standby("gw2", true), true),
            [(1, Sb), (2, Ao), (3, Sb)]
        );
        assert_eq!(
            states(standby("gw2", false), true),
            [(1, Sb), (2, Tr), (3, Sb)]
        );
        // The lease outranks the registry: a renewing owner is not dead.
        assert_eq!(
            states(standby("gw2", true), false),
            [(1, Sb), (2, Ao), (3, Sb)]
        );
    }

    #[test]
    fn a_dead_gateway_is_unavailable_and_a_live_one_standby() {
        assert_eq!(
            states(standby("gw3", true), false),
            [(1, Sb), (2, Un), (3, Ao)]
        );
        assert_eq!(
            states(standby("gw3", true), true),
            [(1, Sb), (2, Sb), (3, Ao)]
        );
        let owner = Access::Active { epoch: 4 };
        assert_eq!(states(owner.clone(), false), [(1, Ao), (2, Un), (3, Sb)]);
        assert_eq!(states(owner, true), [(1, Ao), (2, Sb), (3, Sb)]);
    }

    #[test]
    fn taking_over_the_previous_owner_is_transitioning_and_this_gateway_standby() {
        let t = Access::TakingOver {
            from: Some("gw2".into()),
        };
        assert_eq!(states(t, false), [(1, Sb), (2, Tr), (3, Sb)]);
        assert_eq!(
            states(Access::TakingOver { from: None }, false),
            [(1, Sb), (2, Un), (3, Sb)]
        );
        assert_eq!(
            states(Access::Transitioning, true),
            [(1, Tr), (2, Sb), (3, Sb)]
        );
    }

    #[test]
    fn this_gateway_is_listed_even_before_the_registry_knows_it() {
        let g = group_states("gw9", 9, &Access::Active { epoch: 1 }, &[]);
        assert_eq!(
            g,
            vec![GroupState {
                id: 9,
                gateway: "gw9".into(),
                state: Ao
            }]
        );
    }
}
