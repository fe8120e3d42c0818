//! Harness shared by Lunar's end-to-end tests.
//!
//! The tests drive `lunard` with real, independent initiators (libiscsi's `iscsi-*` tools,
//! `qemu-img`/`qemu-io` with their iSCSI block driver) and compare it against `tgtd`, the
//! Linux SCSI target framework daemon, on the same machine. This crate owns:
//!
//! - [`daemon`]: start `lunard` on a private data dir and a loopback port, wait until it is
//!   ready, stop it (SIGTERM, then SIGKILL), and print its log when a test fails;
//! - [`tgtd`]: the same for a `tgtd` instance with a file-backed LUN (the baseline);
//! - [`config`]: YAML configuration files for `lunard` (ACLs, CHAP);
//! - [`conformance`]: run libiscsi's `iscsi-test-cu` and parse its per-test verdicts;
//! - [`ceph`]: the Ceph cluster of the HA tests (`LUNAR_CEPH_CONF`), unique names, cleanup;
//!   [`ha`]: several gateways of one HA group; [`mpio`]: a multipath initiator and writer;
//! - [`tools`]: locate external tools and decide whether a missing one skips or fails a test;
//! - [`raw`]: a minimal initiator that sends any PDU, well formed or not, and [`hostile`]: the
//!   harness of the hostile-initiator suite (honest READ latency, lunard's peak memory);
//! - [`replication`]: what the replication tests share (paired sites' configuration, the
//!   `lunarctl` queries they poll, a whole LUN read back over iSCSI).

pub mod admin;
pub mod ceph;
pub mod config;
pub mod conformance;
pub mod daemon;
pub mod guest;
pub mod ha;
pub mod hostile;
pub mod initiator;
pub mod mpio;
pub mod net;
pub mod process;
pub mod raw;
pub mod replication;
pub mod tgtd;
pub mod tools;

pub use daemon::{Lunard, LunardOptions};
pub use tgtd::Tgtd;

/// IQN of the target `lunard` embeds when started without `--config`.
pub const DEFAULT_TARGET_IQN: &str = "iqn.2026-11.io.lunar:demo";

/// Size of LUN 0 of the embedded default target (1 GiB, thin).
pub const DEFAULT_LUN_BYTES: u64 = 1 << 30;

/// Initiator name the tests use unless a test needs a specific one.
pub const TEST_INITIATOR_IQN: &str = "iqn.2026-11.io.lunar.test:initiator";
