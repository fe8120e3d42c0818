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

/// Create an image of `size` bytes; it is removed when the returned guard drops (keep it
/// in a variable declared before the test's handles on the image, so they go first).
#[must_use = "the image is removed when the guard drops"]
pub(crate) fn create_image(cfg: &CephConfig, name: &str, size: u64) -> Cleanup {
    let rados = Rados::connect(cfg).expect("connect");
    let io = rados.ioctx("rbd").expect("pool rbd");
    RbdImage::create(&io, name, size).expect("create image");
    Cleanup::image(cfg, name)
}

/// What a test created in the cluster (images, objects), removed when dropped: at the end
/// of a test that passed, and also when it fails (unwinding), so a long CI run does not
/// fill the throwaway cluster. Best effort: what cannot be removed is printed.
pub(crate) struct Cleanup {
    cfg: CephConfig,
    images: Vec<String>,
    objects: Vec<String>,
}

impl Cleanup {
    /// Removes the RBD image `name` of pool `rbd` on drop.
    pub(crate) fn image(cfg: &CephConfig, name: &str) -> Cleanup {
        Cleanup {
            cfg: cfg.clone(),
            images: vec![name.to_string()],
            objects: Vec::new(),
        }
    }

    /// Removes the RADOS object `oid` of pool `rbd` on drop.
    pub(crate) fn object(cfg: &CephConfig, oid: &str) -> Cleanup {
        Cleanup {
            cfg: cfg.clone(),
            images: Vec::new(),
            objects: vec![oid.to_string()],
        }
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let io = match Rados::connect(&self.cfg).and_then(|r| r.ioctx("rbd")) {
            Ok(io) => io,
            Err(e) => {
                eprintln!("test cleanup: cannot connect: {e}");
                return;
            }
        };
        for o in &self.objects {
            if let Err(e) = io.remove(o) {
                eprintln!("test cleanup: removing object {o}: {e}");
            }
        }
        for name in &self.images {
            // A handle the failing test still had open (dropped just before, its watch
            // going away) makes rbd refuse for a moment: retry briefly.
            let mut last = None;
            for _ in 0..20 {
                match RbdImage::remove(&io, name) {
                    Ok(()) => {
                        last = None;
                        break;
                    }
                    Err(e) if e.errno() == Some(libc::ENOENT) => {
                        last = None;
                        break;
                    }
                    Err(e) => last = Some(e),
                }
                std::thread::sleep(std::time::Duration::from_millis(500));
            }
            if let Some(e) = last {
                eprintln!("test cleanup: removing image {name}: {e}");
            }
        }
    }
}

/// Remove an image at the end of a test that passed. It fails (EBUSY) while a handle on
/// the image is still open somewhere, so this also checks that the test let go of it (a
/// failed test's image goes with its [`Cleanup`] guard).
pub(crate) fn remove_image(cfg: &CephConfig, name: &str) {
    let rados = Rados::connect(cfg).expect("connect");
    let io = rados.ioctx("rbd").expect("pool rbd");
    RbdImage::remove(&io, name).expect("remove the test image (every handle closed)");
}
