//! What `lunarctl ha status` shows and what the admin API may ask of the HA coordinator.
//!
//! These types exist with or without the `ceph` feature: the admin protocol and lunarctl
//! know them whatever lunard was built with; a lunard without an HA group answers that it
//! has none.

use serde::{Deserialize, Serialize};

/// One gateway of the group, as the gateway registry in RADOS lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewayStatus {
    /// Gateway name.
    pub name: String,
    /// Its ALUA target port group.
    pub port_group: u16,
    /// Its iSCSI portals.
    pub portals: Vec<String>,
    /// Seconds since it last wrote its record (its heartbeat).
    pub last_seen_secs_ago: u64,
    /// Whether it is the lease owner.
    pub owner: bool,
    /// The ALUA state this gateway reports for it in REPORT TARGET PORT GROUPS
    /// (`active/optimized`, `standby`, `transitioning`, `unavailable`: its heartbeat
    /// stopped); absent from gateways that do not say.
    #[serde(default)]
    pub alua: Option<String>,
}

/// The name `lunarctl ha status` shows for an ALUA state.
pub fn alua_state_name(s: crate::scsi::alua::AccessState) -> &'static str {
    use crate::scsi::alua::AccessState;
    match s {
        AccessState::ActiveOptimized => "active/optimized",
        AccessState::ActiveNonOptimized => "active/non-optimized",
        AccessState::Standby => "standby",
        AccessState::Unavailable => "unavailable",
        AccessState::Transitioning => "transitioning",
    }
}

/// The group as this gateway sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HaStatus {
    /// Group name.
    pub group: String,
    /// The pool these fields describe (each pool of a group is its own HA unit: lease,
    /// owner, epoch); the first pool at the top level.
    #[serde(default)]
    pub pool: String,
    /// Every pool of the gateway, in configuration order (the first is the top level
    /// again); empty in the entries themselves.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pools: Vec<HaStatus>,
    /// This gateway's name.
    pub gateway: String,
    /// This gateway's ALUA target port group.
    pub port_group: u16,
    /// This gateway's role (`standby`, `acquiring`, `fencing`, `opening`, `active`,
    /// `releasing`, `reconnecting`, `stopped`).
    pub role: String,
    /// Epoch of the current ownership as last seen.
    pub epoch: u64,
    /// Owner as last seen in the lease object.
    pub owner: Option<String>,
    /// Gateway a planned move is handing over to, if one is pending.
    pub preferred: Option<String>,
    /// Lease state: `held` (by the owner), `free`, or `held by this gateway`.
    pub lease: String,
    /// Lease duration in milliseconds.
    pub lease_ms: u64,
    /// Milliseconds since this gateway sent its last successful renew (owner only).
    pub since_renew_ms: Option<u64>,
    /// Milliseconds of service left before the local deadline (owner only).
    pub serving_left_ms: Option<u64>,
    /// Gateways of the group (from the registry); empty when it could not be read.
    pub gateways: Vec<GatewayStatus>,
    /// Why this gateway's last attempt to take the pool over failed, if it did.
    #[serde(default)]
    pub last_error: Option<String>,
}

/// A planned move accepted: the owner releases at its next renew, `to` takes over.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MoveAccepted {
    /// The pool that moves.
    #[serde(default)]
    pub pool: String,
    /// The gateway asked to take over.
    pub to: String,
    /// The owner that will hand over.
    pub from: Option<String>,
    /// The epoch being moved away from.
    pub epoch: u64,
}

/// Why an HA request failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HaError {
    /// The gateway named is not in the group's registry.
    #[error("no gateway named {0:?} in this HA group (see lunarctl ha status)")]
    UnknownGateway(String),
    /// The move is pointless (the gateway already owns the pool).
    #[error("{0} already owns the pool")]
    AlreadyOwner(String),
    /// No pool of this name in the gateway's configuration.
    #[error("no pool named {0:?} on this gateway (see lunarctl ha status)")]
    UnknownPool(String),
    /// The gateway has several pools and the request named none.
    #[error("this gateway has several pools ({}): name one with --pool", .0.join(", "))]
    PoolRequired(Vec<String>),
    /// Talking to Ceph failed.
    #[error("{0}")]
    Cluster(String),
}

impl HaError {
    /// The stable error kind on the admin wire.
    pub fn kind(&self) -> &'static str {
        match self {
            HaError::UnknownGateway(_) | HaError::UnknownPool(_) => "not_found",
            HaError::PoolRequired(_) => "invalid",
            HaError::AlreadyOwner(_) => "conflict",
            HaError::Cluster(_) => "ha_cluster",
        }
    }
}

/// What the admin API may ask of the HA coordinator. The calls block (they read and write
/// RADOS objects): the admin server runs them off the async workers.
pub trait HaControl: Send + Sync {
    /// The group as this gateway sees it.
    fn status(&self) -> HaStatus;
    /// Asks the owner of `pool` (`None`: the only pool) to hand it to `to` (a planned
    /// move).
    fn move_to(&self, pool: Option<&str>, to: &str) -> Result<MoveAccepted, HaError>;
}

/// A gateway's HA units, one per pool (each with its own coordinator), as one
/// [`HaControl`]: the status of every pool, and a move of the pool named.
pub struct PerPool {
    /// The pools' controls, in configuration order; never empty.
    pub pools: Vec<(String, std::sync::Arc<dyn HaControl>)>,
}

impl HaControl for PerPool {
    fn status(&self) -> HaStatus {
        let all: Vec<HaStatus> = self.pools.iter().map(|(_, c)| c.status()).collect();
        let mut top = all.first().cloned().unwrap_or_else(|| HaStatus {
            group: String::new(),
            pool: String::new(),
            pools: Vec::new(),
            gateway: String::new(),
            port_group: 0,
            role: "stopped".into(),
            epoch: 0,
            owner: None,
            preferred: None,
            lease: "free".into(),
            lease_ms: 0,
            since_renew_ms: None,
            serving_left_ms: None,
            gateways: Vec::new(),
            last_error: None,
        });
        if all.len() > 1 {
            top.pools = all;
        }
        top
    }

    fn move_to(&self, pool: Option<&str>, to: &str) -> Result<MoveAccepted, HaError> {
        let names = || self.pools.iter().map(|(n, _)| n.clone()).collect();
        let control = match pool {
            Some(p) => self
                .pools
                .iter()
                .find(|(n, _)| n == p)
                .ok_or_else(|| HaError::UnknownPool(p.to_string()))?,
            None => match self.pools.as_slice() {
                [only] => only,
                _ => return Err(HaError::PoolRequired(names())),
            },
        };
        control.1.move_to(Some(&control.0), to)
    }
}

/// The registry as `lunarctl ha status` shows it.
#[cfg(feature = "ceph")]
pub(crate) fn gateway_statuses(
    registry: &crate::shared::GatewayRegistry,
    owner: Option<&str>,
    alua: Option<&crate::scsi::alua::AluaView>,
) -> Vec<GatewayStatus> {
    let groups = alua.map(|v| v.groups()).unwrap_or_default();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    registry
        .list()
        .map(|l| {
            l.into_iter()
                .map(|r| GatewayStatus {
                    owner: owner == Some(r.name.as_str()),
                    alua: groups
                        .iter()
                        .find(|g| g.id == r.port_group)
                        .map(|g| alua_state_name(g.state).to_string()),
                    last_seen_secs_ago: now.saturating_sub(r.last_seen_unix),
                    name: r.name,
                    port_group: r.port_group,
                    portals: r.portals,
                })
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// One pool's control: its status names it, a move is echoed.
    struct Fake(&'static str);

    impl HaControl for Fake {
        fn status(&self) -> HaStatus {
            HaStatus {
                group: "g".into(),
                pool: self.0.into(),
                pools: Vec::new(),
                gateway: "gw1".into(),
                port_group: 1,
                role: "standby".into(),
                epoch: 1,
                owner: Some(format!("owner-of-{}", self.0)),
                preferred: None,
                lease: "held".into(),
                lease_ms: 3000,
                since_renew_ms: None,
                serving_left_ms: None,
                gateways: Vec::new(),
                last_error: None,
            }
        }

        fn move_to(&self, pool: Option<&str>, to: &str) -> Result<MoveAccepted, HaError> {
            assert_eq!(pool, Some(self.0));
            Ok(MoveAccepted {
                pool: self.0.into(),
                to: to.into(),
                from: None,
                epoch: 1,
            })
        }
    }

    fn per_pool(names: &[&'static str]) -> PerPool {
        PerPool {
            pools: names
                .iter()
                .map(|n| (n.to_string(), Arc::new(Fake(n)) as Arc<dyn HaControl>))
                .collect(),
        }
    }

    #[test]
    fn status_lists_every_pool_and_a_move_goes_to_the_pool_named() {
        let two = per_pool(&["fast", "bulk"]);
        let s = two.status();
        assert_eq!(s.pool, "fast");
        let pools: Vec<_> = s
            .pools
            .iter()
            .map(|p| (p.pool.as_str(), p.owner.as_deref()))
            .collect();
        assert_eq!(
            pools,
            [
                ("fast", Some("owner-of-fast")),
                ("bulk", Some("owner-of-bulk"))
            ]
        );
        assert_eq!(two.move_to(Some("bulk"), "gw2").unwrap().pool, "bulk");
        assert_eq!(
            two.move_to(None, "gw2").unwrap_err(),
            HaError::PoolRequired(vec!["fast".into(), "bulk".into()])
        );
        let e = two.move_to(Some("nope"), "gw2").unwrap_err();
        assert_eq!(
            (e.kind(), e.to_string().contains("\"nope\"")),
            ("not_found", true)
        );
        // One pool: --pool is optional, and the status has no pools list.
        let one = per_pool(&["default"]);
        assert!(one.status().pools.is_empty());
        assert_eq!(one.move_to(None, "gw2").unwrap().pool, "default");
    }
}
