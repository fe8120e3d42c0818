//! storage-core's integration tests, as one test binary: each file under tests/ is a module
//! here (named as the file, so `cargo test --test integration crash::` runs one of them).
//! One binary instead of one per file because each binary is a separate release compile and
//! link of the whole crate graph, which dominated the CI's unit-test step. Two files stay
//! binaries of their own because they set process-wide environment (`threads_backend`: the
//! I/O backend; `rbd_failover`: the boot id) that would leak into every other test here.
//! The crash harnesses re-run this binary filtered to their child test by its full name
//! (`module::test`).

mod bad_input;
mod block_atomicity;
mod block_device;
#[cfg(feature = "ceph")]
mod ceph;
mod checkpoint_crash;
mod concurrency;
mod crash;
mod crash_common;
mod deep_chain;
mod delta_model;
mod group_commit;
mod group_crash;
mod many_clones;
mod model;
#[cfg(feature = "ceph")]
mod rbd_common;
#[cfg(feature = "ceph")]
mod rbd_pool;
mod receive_crash;
mod replication;
mod shared_first_writes;
mod space;
mod stats;
mod stream;
mod torture;
mod whole_chunks;
