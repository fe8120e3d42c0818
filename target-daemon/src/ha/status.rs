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
    /// Talking to Ceph failed.
    #[error("{0}")]
    Cluster(String),
}

impl HaError {
    /// The stable error kind on the admin wire.
    pub fn kind(&self) -> &'static str {
        match self {
            HaError::UnknownGateway(_) => "not_found",
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
    /// Asks the owner to hand the pool to `to` (a planned move).
    fn move_to(&self, to: &str) -> Result<MoveAccepted, HaError>;
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
