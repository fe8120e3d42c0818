//! State the gateways of an HA group share, kept in RADOS objects of the group's pool:
//!
//! - [`pr::SharedPrStore`]: each LUN's persistent reservations (all of them, not only APTPL:
//!   registrations must survive a failover), `lunar.<group>.pr.<LUN identity>`, changed by
//!   read-decide-compare-and-swap and published with a notify every gateway acknowledges
//!   after it installed the change;
//! - [`state::SharedStateStore`]: the LUN manager's state (what `state.json` holds for a
//!   single lunard), `lunar.<group>.state`, every change a compare-and-swap, the other
//!   gateways told to reload;
//! - [`gateways::GatewayRegistry`]: who serves the group (`lunar.<group>.gateways`): name,
//!   ALUA port group, portals, last seen.
//!
//! All of it is written against [`objects::VersionedObjects`] (RADOS behind the `ceph`
//! feature, [`objects::MemCluster`] in tests). Blocking: call it on blocking threads.

pub mod gateways;
pub mod objects;
pub mod pr;
#[cfg(feature = "ceph")]
pub mod rados;
pub mod state;
pub mod threads;

pub use gateways::{GatewayRecord, GatewayRegistry};
pub use objects::{MemCluster, VersionedObjects};
pub use pr::SharedPrStore;
pub use state::SharedStateStore;

/// Names of a group's RADOS objects.
pub mod names {
    /// The LUN manager's state.
    pub fn state(group: &str) -> String {
        format!("lunar.{group}.state")
    }

    /// The persistent reservations of the LUN presented under `identity`.
    pub fn pr(group: &str, identity: uuid::Uuid) -> String {
        format!("lunar.{group}.pr.{identity}")
    }

    /// The gateway registry.
    pub fn gateways(group: &str) -> String {
        format!("lunar.{group}.gateways")
    }
}

/// How long a publisher waits for the other gateways to acknowledge a notify. A gateway
/// that does not answer by then is dead or frozen: the lease has it fenced (or will before
/// it serves I/O again), and it reloads everything when it comes back.
pub const NOTIFY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
