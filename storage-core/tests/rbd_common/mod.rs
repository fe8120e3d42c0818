//! Shared set-up of the tests of pools on RBD images: the cluster from `LUNAR_CEPH_CONF`
//! (tests/scripts/ceph.sh start DIR prints it), a fresh image per test, removed afterwards.
//! Without the variable the tests skip loudly, unless `LUNAR_REQUIRE_CEPH=1` (CI).
// Each test binary uses part of this module.
#![allow(dead_code)]

use std::io::Write;

use storage_core::ceph::{CephConfig, IoCtx, Rados, RbdImage};

/// The test cluster's configuration, or `None` (after saying so) when there is none.
pub(crate) fn cluster(test: &str) -> Option<CephConfig> {
    match std::env::var("LUNAR_CEPH_CONF") {
        Ok(p) if !p.is_empty() => Some(CephConfig {
            conf: p.into(),
            client: "admin".into(),
        }),
        _ => {
            assert!(
                std::env::var("LUNAR_REQUIRE_CEPH").as_deref() != Ok("1"),
                "LUNAR_REQUIRE_CEPH=1 but LUNAR_CEPH_CONF is not set"
            );
            // Straight to the process's stderr, past the test harness's capture: a skip must
            // be seen in a normal `cargo test` run.
            let _ = writeln!(
                std::io::stderr(),
                "\n*** SKIPPED {test}: no Ceph cluster (run tests/scripts/ceph.sh start DIR and \
                 export LUNAR_CEPH_CONF) ***\n"
            );
            None
        }
    }
}

/// A RADOS object / image name no other test (or run) uses: the process, a per-process
/// count (two calls in one process never collide) and the clock (runs differ).
pub(crate) fn unique(what: &str) -> String {
    static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("lunar-test-{what}-{}-{seq}-{nanos:x}", std::process::id())
}

/// One gateway's view of the cluster: its own RADOS client (what a blocklist entry fences)
/// and its own handle on the image, holding the image's exclusive lock as the HA
/// coordinator would before opening the pool.
pub(crate) struct Gateway {
    pub(crate) rados: Rados,
    pub(crate) io: IoCtx,
    pub(crate) image: RbdImage,
}

/// Connect a new client to pool `rbd` and open `image` with its exclusive lock, breaking
/// (and so blocklisting) whoever holds it.
pub(crate) fn gateway(cfg: &CephConfig, image: &str) -> Gateway {
    let rados = Rados::connect(cfg).expect("connect");
    let io = rados.ioctx("rbd").expect("pool rbd");
    let img = RbdImage::open(&io, image).expect("open image");
    for owner in img.lock_get_owners().expect("lock owners") {
        img.lock_break(&owner).expect("break the old owner's lock");
    }
    img.lock_acquire_exclusive().expect("exclusive lock");
    Gateway {
        rados,
        io,
        image: img,
    }
}

/// Create an image of `size` bytes.
pub(crate) fn create_image(cfg: &CephConfig, name: &str, size: u64) {
    let rados = Rados::connect(cfg).expect("connect");
    let io = rados.ioctx("rbd").expect("pool rbd");
    RbdImage::create(&io, name, size).expect("create image");
}

/// Remove an image at the end of a test that passed. It fails (EBUSY) while a handle on
/// the image is still open somewhere, so this also checks that the test let go of it. A
/// failed test leaves its image to the cluster's teardown.
pub(crate) fn remove_image(cfg: &CephConfig, name: &str) {
    let rados = Rados::connect(cfg).expect("connect");
    let io = rados.ioctx("rbd").expect("pool rbd");
    RbdImage::remove(&io, name).expect("remove the test image (every handle closed)");
}
