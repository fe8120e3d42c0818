//! The end-to-end tests, as one test binary: each file in this directory is a module here,
//! named as the file (`cargo test -p lunar-e2e --test e2e replication_trust::` runs one).
//! One binary, not one per file, because each was a release compile and link of lunard's
//! library and the kit, which took minutes of the CI's e2e step. The tests share nothing
//! but the kit's once-built artifacts (lunard's path, the guest image); each picks free
//! loopback ports, so files no longer running one after another is safe; `--test-threads`
//! still bounds how many run at once. `hostile/` stays a binary of its own (see Cargo.toml).

mod access;
mod clones;
mod conformance;
mod data_path;
mod discovery;
mod getting_started;
mod ha;
mod kernel_initiator;
mod kernel_initiator_ha;
mod lio_tcmu;
mod null_target;
mod prometheus;
mod replication;
mod replication_group;
mod replication_link;
mod replication_trust;
mod systemd_unit;
mod tgtd_baseline;
