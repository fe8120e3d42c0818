//! Replication between lunards (issue 18, [decision 0019](../../../docs/decisions/0019-replication-link.md),
//! [docs/replication.md](../../../docs/replication.md)): the product around storage-core's
//! snapshot deltas and replication stream.
//!
//! One concern per file: `identity.rs` (this lunard's certificate and the fingerprint peers
//! pin), `tls.rs` (mutual TLS 1.3 with pinned certificates), `listener.rs` (the replication
//! listener: connection cap, handshake timeout, peers identified by certificate),
//! `schedule.rs` (when a relationship's next cycle is due and what its state and lag are:
//! a sans-I/O machine under a simulated clock), `retention.rs` (which replication snapshots
//! to delete on each side, never the newest common one), `bandwidth.rs` (the token bucket
//! on a sending stream), `authz.rs` (what each peer may do here: its volumes and its space
//! limit, decision 0024), `base.rs` (what a cycle sends from besides the newest common
//! snapshot: a clone's origin the peer holds, a resumed transfer's base), `progress.rs` (a
//! transfer in flight: bytes, total, rate, time left).

pub mod authz;
pub mod bandwidth;
pub mod base;
pub mod identity;
pub mod link;
pub mod listener;
pub mod progress;
pub mod retention;
pub mod schedule;
pub mod service;
pub mod tls;
