//! storage_core::ceph against a real cluster (tests/scripts/ceph.sh start DIR prints the
//! LUNAR_CEPH_CONF to export). Without LUNAR_CEPH_CONF the tests skip loudly, unless
//! LUNAR_REQUIRE_CEPH=1 (CI), where they fail.
#![cfg(feature = "ceph")]

use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::rbd_common::{cluster, unique, Cleanup};
use bytes::Bytes;
use storage_core::ceph::{CephConfig, CephError, Expect, IoCtx, Rados, RbdImage, EBLOCKLISTED};

fn connect(cfg: &CephConfig) -> (Rados, IoCtx) {
    let r = Rados::connect(cfg).expect("connect");
    let io = r.ioctx("rbd").expect("pool rbd");
    (r, io)
}

/// Retry `f` until it returns `Some`, at most `limit` (a bound against hangs, not a timing
/// assertion).
fn eventually<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            start.elapsed() < limit,
            "condition not reached within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn versioned_writes_detect_conflicts() {
    let Some(cfg) = cluster("versioned_writes_detect_conflicts") else {
        return;
    };
    let (_r, io) = connect(&cfg);
    let oid = unique("cas");
    let _cleanup = Cleanup::object(&cfg, &oid);
    assert_eq!(io.read(&oid).unwrap(), None);
    let v1 = io.write_full(&oid, b"one", Expect::Absent).unwrap();
    assert!(matches!(
        io.write_full(&oid, b"x", Expect::Absent),
        Err(CephError::Conflict { .. })
    ));
    let got = io.read(&oid).unwrap().unwrap();
    assert_eq!((got.data.as_slice(), got.version), (&b"one"[..], v1));

    let v2 = io.write_full(&oid, b"two", Expect::Version(v1)).unwrap();
    assert!(v2 > v1);
    // A writer that read version v1 loses against the one that already replaced it.
    assert!(matches!(
        io.write_full(&oid, b"stale", Expect::Version(v1)),
        Err(CephError::Conflict { .. })
    ));
    assert!(matches!(
        io.write_full(&oid, b"future", Expect::Version(v2 + 5)),
        Err(CephError::Conflict { .. })
    ));
    let got = io.read(&oid).unwrap().unwrap();
    assert_eq!((got.data.as_slice(), got.version), (&b"two"[..], v2));

    let v3 = io.write_full(&oid, b"three", Expect::Any).unwrap();
    assert!(v3 > v2);
    // Larger than the first read buffer (64 KiB): the read grows and still gets all of it.
    let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let v4 = io.write_full(&oid, &big, Expect::Version(v3)).unwrap();
    let got = io.read(&oid).unwrap().unwrap();
    assert_eq!(got.version, v4);
    assert!(got.data == big);

    assert!(io.remove(&oid).unwrap());
    assert!(!io.remove(&oid).unwrap());
    assert!(matches!(
        io.write_full(&oid, b"gone", Expect::Version(v4)),
        Err(CephError::Conflict { .. })
    ));
    assert_eq!(io.read(&oid).unwrap(), None);
}

#[test]
fn exclusive_lock_busy_renew_break_and_expiry() {
    let Some(cfg) = cluster("exclusive_lock_busy_renew_break_and_expiry") else {
        return;
    };
    let (ra, a) = connect(&cfg);
    let (rb, b) = connect(&cfg);
    let oid = unique("lease");
    let _cleanup = Cleanup::object(&cfg, &oid);
    let long = Some(Duration::from_secs(60));

    a.lock_exclusive(&oid, "lease", "gw-a", "test", long, false)
        .unwrap();
    let e = b
        .lock_exclusive(&oid, "lease", "gw-b", "test", long, false)
        .unwrap_err();
    assert!(matches!(e, CephError::Busy { .. }), "{e}");
    // Renewing our own lock works; renewing one we do not hold does not.
    a.lock_exclusive(&oid, "lease", "gw-a", "test", long, true)
        .unwrap();
    let e = b
        .lock_exclusive(&oid, "lease", "gw-b", "test", long, true)
        .unwrap_err();
    assert!(matches!(e, CephError::NotHeld { .. }), "{e}");

    let info = b.list_lockers(&oid, "lease").unwrap();
    assert!(info.exclusive);
    assert_eq!(info.lockers.len(), 1);
    assert_eq!(info.lockers[0].client, ra.instance_name());
    assert_eq!(info.lockers[0].cookie, "gw-a");
    assert!(!info.lockers[0].addr.is_empty());

    // B breaks A's lock and takes it; A's renew then fails and A's unlock finds nothing.
    b.break_lock(&oid, "lease", &info.lockers[0].client, "gw-a")
        .unwrap();
    b.lock_exclusive(&oid, "lease", "gw-b", "test", long, false)
        .unwrap();
    let e = a
        .lock_exclusive(&oid, "lease", "gw-a", "test", long, true)
        .unwrap_err();
    assert!(matches!(e, CephError::NotHeld { .. }), "{e}");
    assert!(matches!(
        a.unlock(&oid, "lease", "gw-a"),
        Err(CephError::NotHeld { .. })
    ));
    assert_eq!(
        a.list_lockers(&oid, "lease").unwrap().lockers[0].client,
        rb.instance_name()
    );
    b.unlock(&oid, "lease", "gw-b").unwrap();
    assert!(b.list_lockers(&oid, "lease").unwrap().lockers.is_empty());
    // A renew never takes a free lock (MUST_RENEW): the lease is lost, not silently regained.
    let e = a
        .lock_exclusive(&oid, "lease", "gw-a", "test", long, true)
        .unwrap_err();
    assert!(matches!(e, CephError::NotHeld { .. }), "{e}");
    // Taking a lock we already hold without `renew` is EEXIST, not success.
    a.lock_exclusive(&oid, "lease", "gw-a", "test", long, false)
        .unwrap();
    let e = a
        .lock_exclusive(&oid, "lease", "gw-a", "test", long, false)
        .unwrap_err();
    assert_eq!(e.errno(), Some(libc_eexist()), "{e}");
    a.unlock(&oid, "lease", "gw-a").unwrap();

    // Expiry: a lock with a short duration that is not renewed is dropped by the OSD (it no
    // longer lists it), after which the other client gets it and the old holder's renew fails.
    a.lock_exclusive(
        &oid,
        "lease",
        "gw-a",
        "test",
        Some(Duration::from_secs(1)),
        false,
    )
    .unwrap();
    eventually(Duration::from_secs(60), || {
        match b.lock_exclusive(&oid, "lease", "gw-b", "test", long, false) {
            Ok(()) => Some(()),
            Err(CephError::Busy { .. }) => None,
            Err(e) => panic!("unexpected error while waiting for expiry: {e}"),
        }
    });
    let info = a.list_lockers(&oid, "lease").unwrap();
    assert_eq!(info.lockers.len(), 1);
    assert_eq!(info.lockers[0].client, rb.instance_name());
    let e = a
        .lock_exclusive(&oid, "lease", "gw-a", "test", long, true)
        .unwrap_err();
    assert!(matches!(e, CephError::NotHeld { .. }), "{e}");
    b.unlock(&oid, "lease", "gw-b").unwrap();
    a.remove(&oid).unwrap();
}

#[test]
fn every_lock_and_renew_changes_the_objects_version() {
    // The HA standby learns when the owner last renewed its lease from the lease object's
    // version (target-daemon/src/ha/machine: probing fast near the expiry): cls_lock must
    // rewrite its record, and so bump the version, at every lock and renew.
    let Some(cfg) = cluster("every_lock_and_renew_changes_the_objects_version") else {
        return;
    };
    let (_ra, a) = connect(&cfg);
    let (_rb, b) = connect(&cfg);
    let oid = unique("takeover-lease-version");
    let _cleanup = Cleanup::object(&cfg, &oid);
    let long = Some(Duration::from_secs(60));
    let version = || b.read(&oid).unwrap().map(|d| d.version);
    assert_eq!(version(), None);
    a.lock_exclusive(&oid, "lease", "gw-a", "test", long, false)
        .unwrap();
    let mut last = version().expect("the lock created the object");
    for _ in 0..3 {
        a.lock_exclusive(&oid, "lease", "gw-a", "test", long, true)
            .unwrap();
        let v = version().expect("object");
        assert!(v > last, "renew left the version at {v}");
        last = v;
    }
    // A refused lock attempt changes nothing.
    assert!(b
        .lock_exclusive(&oid, "lease", "gw-b", "test", long, false)
        .is_err());
    assert_eq!(version(), Some(last));
    a.unlock(&oid, "lease", "gw-a").unwrap();
    a.remove(&oid).unwrap();
}

#[test]
fn watch_delivers_notifies_and_notify_collects_acks() {
    let Some(cfg) = cluster("watch_delivers_notifies_and_notify_collects_acks") else {
        return;
    };
    let (ra, a) = connect(&cfg);
    let (_rb, b) = connect(&cfg);
    let oid = unique("watch");
    let _cleanup = Cleanup::object(&cfg, &oid);
    a.write_full(&oid, b"", Expect::Absent).unwrap();
    let (tx, rx) = mpsc::channel();
    let tx = std::sync::Mutex::new(tx);
    let watch = a
        .watch(
            &oid,
            move |n| {
                let _ = tx.lock().map(|t| t.send(n.payload.clone()));
                b"ack-from-a".to_vec()
            },
            |e| panic!("watch error: {e}"),
        )
        .unwrap();
    watch.check().unwrap();

    let res = b.notify(&oid, b"reload", Duration::from_secs(10)).unwrap();
    assert!(res.all_acked(), "{res:?}");
    assert_eq!(res.acks.len(), 1);
    assert_eq!(res.acks[0].notifier_id, ra.instance_id());
    assert_eq!(res.acks[0].cookie, watch.cookie());
    assert_eq!(res.acks[0].payload, b"ack-from-a");
    // The callback ran before the notify returned (the ack follows it).
    assert_eq!(rx.try_recv().unwrap(), b"reload");

    // A second watch, with its own liveness timeout, gets the next notify too.
    let second = a
        .watch_with_timeout(
            &oid,
            Duration::from_secs(5),
            |_| b"second".to_vec(),
            |e| panic!("watch error: {e}"),
        )
        .unwrap();
    let res = b.notify(&oid, b"again", Duration::from_secs(10)).unwrap();
    assert!(res.all_acked(), "{res:?}");
    let mut replies: Vec<&[u8]> = res.acks.iter().map(|a| a.payload.as_slice()).collect();
    replies.sort();
    assert_eq!(replies, vec![&b"ack-from-a"[..], &b"second"[..]]);
    assert_eq!(rx.try_recv().unwrap(), b"again");
    drop(second);

    drop(watch);
    let res = b.notify(&oid, b"nobody", Duration::from_secs(10)).unwrap();
    assert!(res.acks.is_empty() && res.timeouts.is_empty(), "{res:?}");
    assert!(rx.try_recv().is_err());
    a.remove(&oid).unwrap();
}

#[test]
fn blocklisted_client_gets_eshutdown() {
    let Some(cfg) = cluster("blocklisted_client_gets_eshutdown") else {
        return;
    };
    let (rv, victim) = connect(&cfg);
    let (_rf, fencer) = connect(&cfg);
    let oid = unique("fence");
    let _cleanup = Cleanup::object(&cfg, &oid);
    victim.write_full(&oid, b"before", Expect::Absent).unwrap();
    let addr = rv.addrs().unwrap();
    fencer
        .rados()
        .blocklist_add(&addr, Duration::from_secs(600))
        .unwrap();
    // The fencer's next operation carries the OSD map with the blocklist entry, so the OSD
    // has it from then on (an operation of the victim's racing ahead of it could still land:
    // the fence orders everything after the fencer's first write, as with a takeover).
    fencer.write_full(&oid, b"fenced", Expect::Any).unwrap();
    let e = victim.write_full(&oid, b"after", Expect::Any).unwrap_err();
    assert_eq!(e.errno(), Some(EBLOCKLISTED), "{e}");
    assert!(e.is_blocklisted());
    assert_eq!(fencer.read(&oid).unwrap().unwrap().data, b"fenced");
    fencer.remove(&oid).unwrap();
}

fn libc_eexist() -> i32 {
    17 // EEXIST on Linux
}

#[test]
fn connect_reports_a_missing_conf_with_context() {
    // Needs no cluster: reading the configuration fails first.
    let cfg = CephConfig {
        conf: "/nonexistent/lunar/ceph.conf".into(),
        client: "admin".into(),
    };
    let e = Rados::connect(&cfg).unwrap_err();
    assert_eq!(e.errno(), Some(2), "{e}");
    assert!(
        e.to_string().contains("/nonexistent/lunar/ceph.conf"),
        "{e}"
    );
    let bad = CephConfig {
        conf: "/etc/ceph/ceph.conf".into(),
        client: "ad\0min".into(),
    };
    assert!(matches!(Rados::connect(&bad), Err(CephError::Invalid(_))));
}

#[test]
fn a_blocklisted_watcher_hears_about_it() {
    let Some(cfg) = cluster("a_blocklisted_watcher_hears_about_it") else {
        return;
    };
    let (rv, victim) = connect(&cfg);
    let (_rf, fencer) = connect(&cfg);
    let oid = unique("watchfence");
    let _cleanup = Cleanup::object(&cfg, &oid);
    victim.write_full(&oid, b"", Expect::Absent).unwrap();
    let (tx, rx) = mpsc::channel();
    let tx = std::sync::Mutex::new(tx);
    let watch = victim
        .watch(
            &oid,
            |_| Vec::new(),
            move |e| {
                let _ = tx.lock().map(|t| t.send(e.errno()));
            },
        )
        .unwrap();
    fencer
        .rados()
        .blocklist_add(&rv.addrs().unwrap(), Duration::from_secs(600))
        .unwrap();
    // The fenced watcher's watch is dropped by the OSD; a notify no longer reaches it.
    fencer.write_full(&oid, b"x", Expect::Any).unwrap();
    let errno = rx
        .recv_timeout(Duration::from_secs(120))
        .expect("the watch error callback must run after a blocklist");
    assert!(
        errno == Some(EBLOCKLISTED) || errno == Some(107 /* ENOTCONN */),
        "{errno:?}"
    );
    assert!(watch.check().is_err());
    drop(watch);
    fencer.remove(&oid).unwrap();
}

#[test]
fn rbd_cache_is_forced_off() {
    let Some(cfg) = cluster("rbd_cache_is_forced_off") else {
        return;
    };
    // Even with a ceph.conf that turns the cache on, the connection has it off...
    let text = std::fs::read_to_string(&cfg.conf).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("ceph.conf");
    std::fs::write(&conf, format!("{text}\n[client]\nrbd cache = true\n")).unwrap();
    let on = CephConfig {
        conf: conf.clone(),
        client: "admin".into(),
    };
    let r = Rados::connect(&on).unwrap();
    assert_eq!(r.conf_get("rbd_cache").unwrap(), "false");
    // ... it cannot be asked for ...
    assert!(matches!(
        Rados::connect_with(&on, &[("rbd_cache", "true")]),
        Err(CephError::Invalid(_))
    ));
    // ... and an image whose own configuration turns it back on is refused.
    let io = r.ioctx("rbd").unwrap();
    let name = unique("cacheoverride");
    let _cleanup = Cleanup::image(&cfg, &name);
    RbdImage::create(&io, &name, 8 << 20).unwrap();
    drop(RbdImage::open(&io, &name).unwrap());
    let rbd = |args: &[&str]| {
        let st = std::process::Command::new("rbd")
            .arg("-c")
            .arg(&cfg.conf)
            .args(args)
            .status()
            .expect("the rbd CLI (ceph-common) runs");
        assert!(st.success(), "rbd {args:?}: {st}");
    };
    let spec = format!("rbd/{name}");
    rbd(&["config", "image", "set", &spec, "rbd_cache", "true"]);
    let e = RbdImage::open(&io, &name).unwrap_err();
    assert!(matches!(e, CephError::Invalid(_)), "{e}");
    assert!(e.to_string().contains("rbd_cache"), "{e}");
    rbd(&["config", "image", "rm", &spec, "rbd_cache"]);
    drop(RbdImage::open(&io, &name).unwrap());
    RbdImage::remove(&io, &name).unwrap();
}

fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| seed.wrapping_add((i % 253) as u8))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rbd_aio_round_trip_discard_flush() {
    let Some(cfg) = cluster("rbd_aio_round_trip_discard_flush") else {
        return;
    };
    let (_r, io) = connect(&cfg);
    let name = unique("img");
    let _cleanup = Cleanup::image(&cfg, &name);
    RbdImage::create(&io, &name, 64 << 20).unwrap();
    let img = RbdImage::open(&io, &name).unwrap();
    assert_eq!(img.size().unwrap(), 64 << 20);

    // writev of three pieces, one of them crossing a 4 MiB object boundary.
    let off = (4 << 20) - 8192;
    let pieces = vec![
        Bytes::from(pattern(1, 4096)),
        Bytes::from(pattern(2, 12288)),
        Bytes::from(pattern(3, 512)),
    ];
    let whole: Vec<u8> = pieces.iter().flat_map(|b| b.iter().copied()).collect();
    img.writev(off, pieces).await.unwrap();
    assert!(img.read(off, whole.len()).await.unwrap() == whole);
    let mut into = vec![std::mem::MaybeUninit::<u8>::uninit(); 4096];
    img.read_into(off + 4096, &mut into).await.unwrap();
    // SAFETY: read_into returned Ok, so every byte is initialised.
    let into: Vec<u8> = into.iter().map(|b| unsafe { b.assume_init() }).collect();
    assert_eq!(into, whole[4096..8192]);
    img.flush().await.unwrap();

    // Never-written space reads as zeroes; discarded space too, even a small unaligned piece.
    assert!(img.read(32 << 20, 4096).await.unwrap() == vec![0; 4096]);
    img.discard(off + 512, 4096).await.unwrap();
    let after = img.read(off, whole.len()).await.unwrap();
    assert!(after[..512] == whole[..512]);
    assert!(
        after[512..4608].iter().all(|b| *b == 0),
        "discarded bytes read back non-zero"
    );
    assert!(after[4608..] == whole[4608..]);
    // A whole object discarded.
    img.writev(12 << 20, vec![Bytes::from(pattern(5, 4 << 20))])
        .await
        .unwrap();
    img.discard(12 << 20, 4 << 20).await.unwrap();
    assert!(img
        .read(12 << 20, 4 << 20)
        .await
        .unwrap()
        .iter()
        .all(|b| *b == 0));

    // The synchronous calls of the metadata path see the same image.
    let meta = pattern(9, 8192);
    let img2 = img.clone();
    let meta2 = meta.clone();
    tokio::task::spawn_blocking(move || {
        img2.write_at(1 << 20, &meta2).unwrap();
        img2.flush_sync().unwrap();
        let mut back = vec![0; 8192];
        img2.read_at(1 << 20, &mut back).unwrap();
        assert_eq!(back, meta2);
    })
    .await
    .unwrap();
    assert_eq!(img.read(1 << 20, 8192).await.unwrap(), meta);

    // compare-and-write: writes when the data matches, reports where it does not.
    let sector = pattern(9, 512);
    img.compare_and_write(
        1 << 20,
        Bytes::from(sector.clone()),
        Bytes::from(vec![7u8; 512]),
    )
    .await
    .unwrap();
    assert_eq!(img.read(1 << 20, 512).await.unwrap(), vec![7u8; 512]);
    let mut cmp = vec![7u8; 512];
    cmp[100] = 8;
    let e = img
        .compare_and_write(1 << 20, Bytes::from(cmp), Bytes::from(vec![5u8; 512]))
        .await
        .unwrap_err();
    assert!(matches!(e, CephError::Mismatch { offset: 100, .. }), "{e}");
    assert_eq!(img.read(1 << 20, 512).await.unwrap(), vec![7u8; 512]);

    // An absurd length is refused before any buffer is allocated.
    assert!(matches!(
        img.read(0, usize::MAX).await,
        Err(CephError::Invalid(_))
    ));

    img.resize(128 << 20).unwrap();
    assert_eq!(img.size().unwrap(), 128 << 20);
    drop(img);
    RbdImage::remove(&io, &name).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_aio_futures_still_complete_before_close() {
    let Some(cfg) = cluster("dropped_aio_futures_still_complete_before_close") else {
        return;
    };
    let (_r, io) = connect(&cfg);
    let name = unique("cancel");
    let _cleanup = Cleanup::image(&cfg, &name);
    RbdImage::create(&io, &name, 16 << 20).unwrap();
    let img = RbdImage::open(&io, &name).unwrap();
    img.writev(0, vec![Bytes::from(pattern(4, 1 << 20))])
        .await
        .unwrap();
    // Start reads and writes and drop their futures after the first poll (which submits
    // them: tokio's timeout polls the inner future before its deadline): librbd keeps using
    // buffers the completions own, and the writes still happen.
    const N: u64 = 32;
    for i in 0..N {
        let r = img.read(i * 4096, 1 << 20);
        let w = img.writev(
            (8 << 20) + i * (64 << 10),
            vec![Bytes::from(pattern(i as u8, 64 << 10))],
        );
        // Either outcome is fine (a fast completion may already be there); what matters is
        // that the first poll submitted them and the futures are gone afterwards.
        let _ = tokio::time::timeout(Duration::ZERO, r).await;
        let _ = tokio::time::timeout(Duration::ZERO, w).await;
    }
    assert!(img.read(0, 4096).await.unwrap() == pattern(4, 1 << 20)[..4096]);
    // Closing waits for the abandoned operations; reopened, every abandoned write is there.
    tokio::task::spawn_blocking(move || drop(img))
        .await
        .unwrap();
    let img = RbdImage::open(&io, &name).unwrap();
    for i in 0..N {
        let got = img
            .read((8 << 20) + i * (64 << 10), 64 << 10)
            .await
            .unwrap();
        assert!(
            got == pattern(i as u8, 64 << 10),
            "abandoned write {i} missing"
        );
    }
    tokio::task::spawn_blocking(move || drop(img))
        .await
        .unwrap();
    RbdImage::remove(&io, &name).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_aio_from_many_tasks() {
    let Some(cfg) = cluster("concurrent_aio_from_many_tasks") else {
        return;
    };
    let (_r, io) = connect(&cfg);
    let name = unique("concurrent");
    let _cleanup = Cleanup::image(&cfg, &name);
    RbdImage::create(&io, &name, 16 << 20).unwrap();
    let img = RbdImage::open(&io, &name).unwrap();
    let mut tasks = Vec::new();
    for i in 0..64u64 {
        let img = img.clone();
        tasks.push(tokio::spawn(async move {
            let data = pattern(i as u8, 8192);
            img.writev(i * 8192 * 3, vec![Bytes::from(data.clone())])
                .await
                .unwrap();
            assert!(img.read(i * 8192 * 3, 8192).await.unwrap() == data);
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    img.flush().await.unwrap();
    tokio::task::spawn_blocking(move || drop(img))
        .await
        .unwrap();
    RbdImage::remove(&io, &name).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn breaking_the_image_lock_fences_the_old_owner() {
    let Some(cfg) = cluster("breaking_the_image_lock_fences_the_old_owner") else {
        return;
    };
    let (_ra, io_a) = connect(&cfg);
    let (_rb, io_b) = connect(&cfg);
    let name = unique("fencing");
    let _cleanup = Cleanup::image(&cfg, &name);
    RbdImage::create(&io_a, &name, 16 << 20).unwrap();
    let a = RbdImage::open(&io_a, &name).unwrap();
    a.lock_acquire_exclusive().unwrap();
    assert!(a.is_lock_owner().unwrap());
    a.writev(0, vec![Bytes::from(vec![1u8; 4096])])
        .await
        .unwrap();

    let b = RbdImage::open(&io_b, &name).unwrap();
    let owners = b.lock_get_owners().unwrap();
    assert_eq!(owners.len(), 1, "{owners:?}");
    b.lock_break(&owners[0]).unwrap();
    b.lock_acquire_exclusive().unwrap();
    assert!(b.is_lock_owner().unwrap());
    b.writev(0, vec![Bytes::from(vec![2u8; 4096])])
        .await
        .unwrap();

    // The old owner is blocklisted: its writes fail with ESHUTDOWN and change nothing.
    let e = tokio::time::timeout(
        Duration::from_secs(120),
        a.writev(0, vec![Bytes::from(vec![3u8; 4096])]),
    )
    .await
    .expect("a fenced write must fail, not hang")
    .unwrap_err();
    assert_eq!(e.errno(), Some(EBLOCKLISTED), "{e}");
    assert_eq!(b.read(0, 4096).await.unwrap(), vec![2u8; 4096]);

    tokio::task::spawn_blocking(move || {
        drop(a);
        b.lock_release().unwrap();
        drop(b);
    })
    .await
    .unwrap();
    // Best effort: the fenced client's image watch may linger until the OSD times it out.
    let _ = RbdImage::remove(&io_b, &name);
}

/// A task polled by whoever wakes it when that is a storage completion thread, as lunard's
/// command tasks are (`target-daemon/src/iscsi/inline_task.rs`), reduced to what this test
/// needs: the first poll is the caller's, the wake-up from librbd's completion polls it there.
struct RunOnCompletion {
    fut: std::sync::Mutex<Option<std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>>>,
}

impl RunOnCompletion {
    fn poll_once(self: &std::sync::Arc<Self>) {
        let waker = std::task::Waker::from(self.clone());
        let mut cx = std::task::Context::from_waker(&waker);
        let mut slot = self.fut.lock().unwrap();
        if let Some(f) = slot.as_mut() {
            if f.as_mut().poll(&mut cx).is_ready() {
                *slot = None;
            }
        }
    }
}

impl std::task::Wake for RunOnCompletion {
    fn wake(self: std::sync::Arc<Self>) {
        assert!(
            storage_core::completion::on_completion_thread(),
            "only librbd's completion wakes this task"
        );
        self.poll_once();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_clone_dropped_inside_its_own_completion_closes_the_image_elsewhere() {
    let Some(cfg) = cluster("last_clone_dropped_inside_its_own_completion") else {
        return;
    };
    let (_r, io) = connect(&cfg);
    let name = unique("inline-close");
    let _cleanup = Cleanup::image(&cfg, &name);
    RbdImage::create(&io, &name, 16 << 20).unwrap();
    let img = RbdImage::open(&io, &name).unwrap();
    img.writev(0, vec![Bytes::from(pattern(9, 4096))])
        .await
        .unwrap();
    // The read's waiter runs on librbd's completion thread and drops the image's last clone
    // there: the image is still in the middle of calling back (its completion counted in
    // flight), so closing right there would wait for itself.
    let (tx, rx) = mpsc::channel();
    let test_thread = std::thread::current().id();
    let task = std::sync::Arc::new(RunOnCompletion {
        fut: std::sync::Mutex::new(Some(Box::pin(async move {
            let read = img.read(0, 4096);
            let got = read.await;
            let on = std::thread::current().id();
            drop(img);
            let _ = tx.send((got.map(|b| b == pattern(9, 4096)[..]), on));
        }))),
    });
    task.poll_once();
    let (got, ran_on) =
        tokio::task::spawn_blocking(move || rx.recv_timeout(Duration::from_secs(60)))
            .await
            .unwrap()
            .expect("the waiter never ran: the completion thread hangs");
    assert!(got.unwrap(), "read back what was written");
    assert_ne!(
        ran_on, test_thread,
        "the waiter ran on librbd's completion thread"
    );
    // The image closes (on a thread of its own): then it can be removed.
    eventually(Duration::from_secs(60), || {
        RbdImage::remove(&io, &name).ok()
    });
}
