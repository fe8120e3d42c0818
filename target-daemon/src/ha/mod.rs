//! High availability: this lunard as one gateway of an HA group over Ceph RBD.
//!
//! A group's pools, each in one RBD image, are served by several gateways; for each pool
//! one of them at a time owns it (holds the pool's lease in RADOS, has fenced the previous
//! owner, has the pool open) and is active/optimized for its LUNs, the others are standby.
//! Every pool is its own HA unit with its own coordinator. See docs/ha.md,
//! docs/decisions/0014-ha-lease.md and 0016-many-pools.md.
//!
//! - `lease.rs`: what the lease object holds (epoch, owner, preferred) and its name;
//! - `machine/`: the ownership state machine, sans I/O (time in, actions out);
//! - `liveness.rs`: which gateways are alive, from their registry heartbeats;
//! - `groups.rs`: the target port groups a gateway reports, from the lease and liveness;
//! - `status.rs`: what `lunarctl ha status` shows, and the admin API's [`status::HaControl`];
//! - `gateway.rs` (feature `ceph`): what the daemon wires for a gateway (shared state,
//!   ALUA views, LUN manager without pools, registry heartbeat, a coordinator per pool);
//! - `cluster.rs` (feature `ceph`): the lease lane's RADOS calls;
//! - `shell.rs` (feature `ceph`): drives the machine with RADOS and RBD calls, opens the
//!   pool, attaches it to the LUN manager and sets the ALUA state.

#[cfg(feature = "ceph")]
pub mod cluster;
#[cfg(feature = "ceph")]
pub mod gateway;
pub mod groups;
pub mod lease;
pub mod liveness;
pub mod machine;
#[cfg(feature = "ceph")]
pub mod shell;
pub mod status;
