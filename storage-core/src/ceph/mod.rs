//! A safe wrapper over librados and librbd (crate `lunar-ceph-sys`), for pools on RBD images
//! and the HA gateways' shared state in RADOS (issue 16). Built only with the `ceph` feature.
//!
//! - [`Rados`]: one cluster connection (one RADOS client instance, which is what a blocklist
//!   entry fences). Connecting always sets `rbd_cache = false`: a completed librbd write is
//!   on the OSDs, so WCE=0 is the truth for RBD pools.
//! - [`IoCtx`]: a RADOS pool. Versioned whole-object reads and writes (compare-and-swap on the
//!   object version), cls_lock exclusive locks with a duration (the HA lease), watch/notify.
//! - [`RbdImage`]: an RBD image. Asynchronous reads, writes, discards and flushes whose
//!   completions wake tokio (never blocking a worker thread), synchronous variants for the
//!   metadata commit thread, and librbd's exclusive lock for fencing.
//!
//! Blocking: every method that is not `async` blocks the calling thread on the cluster (a
//! round trip, or up to a timeout for `notify`). Call them from a blocking context
//! (`spawn_blocking`, a dedicated thread), not from an async task on a tokio worker. All
//! handles are `Clone` (reference counted), `Send` and `Sync`.

// Every unsafe block says why it is sound (CI runs clippy with -D warnings).
#![warn(clippy::undocumented_unsafe_blocks)]

mod error;
mod ioctx;
mod rados;
mod rbd;
mod watch;

pub use error::{CephError, Result};
pub use ioctx::{Expect, IoCtx, LockInfo, Locker, NotifyAck, NotifyResult, ObjectData};
pub use rados::{CephConfig, Rados};
pub use rbd::RbdImage;
pub use watch::{Notification, PendingAck, Watch};

/// Ceph's errno for a blocklisted (fenced) client: `ESHUTDOWN` (108).
pub const EBLOCKLISTED: i32 = lunar_ceph_sys::EBLOCKLISTED;
