//! High availability: this lunard as one gateway of an HA group over Ceph RBD.
//!
//! One group is one pool in one RBD image, served by several gateways; one of them at a
//! time owns it (holds the lease in RADOS, has fenced the previous owner, has the pool
//! open) and is active/optimized, the others are standby. See docs/ha.md and
//! docs/decisions/0014-ha-lease.md.
//!
//! - `lease.rs`: what the lease object holds (epoch, owner, preferred) and its name;
//! - `machine/`: the ownership state machine, sans I/O (time in, actions out);
//! - `liveness.rs`: which gateways are alive, from their registry heartbeats;
//! - `groups.rs`: the target port groups a gateway reports, from the lease and liveness;
//! - `status.rs`: what `lunarctl ha status` shows, and the admin API's [`status::HaControl`];
//! - `gateway.rs` (feature `ceph`): what the daemon wires for a gateway (shared state,
//!   ALUA view, LUN manager without a pool, registry heartbeat, the coordinator);
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
