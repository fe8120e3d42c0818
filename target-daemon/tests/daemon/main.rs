//! lunard's daemon tests, one test binary: every file here is a module, so a test is named
//! `MODULE::TEST` (`cargo test -p target-daemon --test daemon admin_clone::` runs one file's
//! tests) and the daemon and its dependencies are linked once instead of once per file.
//!
//! `file_modes.rs` stays a binary of its own: it sets the process umask and must be the
//! first lunard of its process (the persistent-reservation state directory is per process).
//!
//! Shared helpers: `lunar-test-kit` (initiator, CDBs, data pattern, lunard process), and here
//! `support` (an in-process lunard) and `admin_support` (lunarctl against it).

mod admin_support;
mod support;

mod abort_under_load;
mod admin_clone;
mod admin_docs;
mod admin_lun;
mod admin_restart;
mod ats_heartbeat;
mod binary;
mod config_docs;
mod daemon_io;
mod dashboard_metrics;
mod frontend;
mod ha_failover;
mod install_script;
mod limits;
mod multipool;
mod pr_cluster;
mod soft_threshold;
mod troubleshooting_docs;
mod xcopy_gib;
