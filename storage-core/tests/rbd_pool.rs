//! A pool on an RBD image (feature `ceph`), against a real cluster: volumes, snapshots and
//! clones, reopen, fsck, and what the image reports. Skips without `LUNAR_CEPH_CONF`.
#![cfg(feature = "ceph")]

use std::time::Instant;

use crate::rbd_common::{cluster, create_image, gateway, remove_image, unique};
use bytes::Bytes;
use storage_core::{Guarantee, Pool, PoolOptions, StorageError};

const MIB: u64 = 1 << 20;

fn pattern(seed: u8, len: usize) -> Bytes {
    Bytes::from(
        (0..len)
            .map(|i| seed.wrapping_add((i / 4096) as u8))
            .collect::<Vec<u8>>(),
    )
}

async fn read(pool: &Pool, vol: &str, lba: u64, blocks: u32) -> Bytes {
    pool.volume(vol)
        .expect("volume")
        .read(lba, blocks)
        .await
        .expect("read")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_on_an_rbd_image_keeps_volumes_snapshots_and_clones_across_reopen() {
    let Some(cfg) =
        cluster("a_pool_on_an_rbd_image_keeps_volumes_snapshots_and_clones_across_reopen")
    else {
        return;
    };
    let name = unique("pool");
    let _image = create_image(&cfg, &name, 256 * MIB);
    let gw = gateway(&cfg, &name);
    let opts = PoolOptions {
        capacity_bytes: None,
        ..PoolOptions::default()
    };
    let pool = Pool::create_rbd(gw.image.clone(), &opts)
        .await
        .expect("create pool");
    assert!(!pool.volatile_write_cache(), "RBD pools report WCE=0");
    assert_eq!(pool.io_backend(), "librbd");
    assert!(pool.status().capacity_bytes > 200 * MIB);

    pool.create_volume("v", 64 * MIB, 4096, Guarantee::None)
        .await
        .expect("volume");
    let v = pool.volume("v").expect("v");
    // First writes (fresh chunks), an unaligned-to-chunk span, then an in-place overwrite.
    v.write(0, pattern(1, 256 * 1024), false).await.expect("w1");
    v.write(1000, pattern(2, 8192), false).await.expect("w2");
    v.write(16, pattern(3, 4096), true).await.expect("w3 fua");
    let before = read(&pool, "v", 0, 64).await;

    let t = Instant::now();
    pool.snapshot("v", "s1").await.expect("snapshot");
    let snap_ms = t.elapsed().as_secs_f64() * 1e3;
    let t = Instant::now();
    pool.clone_volume("v@s1", "c", None).await.expect("clone");
    let clone_ms = t.elapsed().as_secs_f64() * 1e3;
    println!("RBD pool: snapshot {snap_ms:.2} ms, clone of snapshot {clone_ms:.2} ms");

    // Writes after the snapshot go to v only; the clone diverges on its own.
    v.write(0, pattern(9, 4096), false)
        .await
        .expect("w after snap");
    let c = pool.volume("c").expect("c");
    c.write(1, pattern(7, 4096), false).await.expect("w clone");
    pool.flush().await.expect("flush");
    assert!(pool.check().await.expect("fsck").is_clean());

    // The image already holds a pool: creating over it is refused.
    let again = Pool::create_rbd(gw.image.clone(), &opts).await;
    assert!(
        matches!(again, Err(StorageError::AlreadyExists(_))),
        "create over a pool: {:?}",
        again.err()
    );

    pool.close().await.expect("close");
    drop((v, c, pool));

    let pool = Pool::open_rbd(gw.image.clone()).await.expect("reopen");
    assert!(pool.check().await.expect("fsck").is_clean());
    let mut want_v = before.to_vec();
    want_v[..4096].copy_from_slice(&pattern(9, 4096));
    assert_eq!(read(&pool, "v", 0, 64).await, Bytes::from(want_v));
    let mut want_c = before.to_vec();
    want_c[4096..8192].copy_from_slice(&pattern(7, 4096));
    assert_eq!(read(&pool, "c", 0, 64).await, Bytes::from(want_c));
    assert_eq!(read(&pool, "v", 1000, 2).await, pattern(2, 8192));
    assert_eq!(read(&pool, "c", 1000, 2).await, pattern(2, 8192));
    assert_eq!(pool.snapshots(Some("v")).len(), 1);
    // Large reads (merged into runs of physically adjacent chunks on RBD) across data,
    // holes and chunks the clone re-wrote elsewhere read what 4 KiB reads do. Volume "g"
    // gets its chunks out of order, with another volume's chunk between them: logical
    // chunks 0, 1, 2 land on physical p+1, p+3, p.
    pool.create_volume("g", 8 * MIB, 4096, Guarantee::None)
        .await
        .expect("volume g");
    let g = pool.volume("g").expect("g");
    let chunk_blocks = 16; // 64 KiB chunks
    g.write(2 * chunk_blocks, pattern(40, 65536), false)
        .await
        .expect("g2");
    g.write(0, pattern(50, 65536), false).await.expect("g0");
    pool.volume("v")
        .expect("v")
        .write(500, pattern(60, 4096), false)
        .await
        .expect("v elsewhere");
    g.write(chunk_blocks, pattern(70, 65536), false)
        .await
        .expect("g1");
    for vol in ["v", "c", "g"] {
        let big = read(&pool, vol, 0, 1100).await;
        for lba in 0..1100u64 {
            let small = read(&pool, vol, lba, 1).await;
            let at = lba as usize * 4096;
            assert_eq!(&big[at..at + 4096], &small[..], "{vol} block {lba}");
        }
    }
    // An overwrite across g's three chunks (merged into runs of physically consecutive
    // chunks on RBD) lands where each block belongs, and v's chunk between them is intact.
    let v500 = read(&pool, "v", 500, 1).await;
    let over = pattern(80, 40 * 4096);
    g.write(4, over.clone(), false).await.expect("g overwrite");
    for k in 0..48u64 {
        let want = if (4..44).contains(&k) {
            over.slice((k as usize - 4) * 4096..(k as usize - 3) * 4096)
        } else {
            let seed = [50u8, 70, 40][(k / chunk_blocks) as usize];
            pattern(seed, 65536)
                .slice((k % chunk_blocks) as usize * 4096..)
                .slice(..4096)
        };
        assert_eq!(read(&pool, "g", k, 1).await, want, "g block {k}");
    }
    assert_eq!(
        read(&pool, "v", 500, 1).await,
        v500,
        "v's chunk between g's"
    );
    pool.close().await.expect("close");
    drop((g, pool));
    gw.image.lock_release().expect("release lock");
    drop(gw);
    remove_image(&cfg, &name);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_without_a_pool_is_not_a_pool_and_capacity_and_lock_are_checked() {
    let Some(cfg) =
        cluster("an_image_without_a_pool_is_not_a_pool_and_capacity_and_lock_are_checked")
    else {
        return;
    };
    let name = unique("empty");
    let _image = create_image(&cfg, &name, 64 * MIB);
    // Without the image's exclusive lock, neither create nor open touches it.
    let unlocked = {
        let rados = storage_core::ceph::Rados::connect(&cfg).expect("connect");
        let io = rados.ioctx("rbd").expect("pool rbd");
        storage_core::ceph::RbdImage::open(&io, &name).expect("open image")
    };
    let r = Pool::create_rbd(unlocked.clone(), &PoolOptions::default()).await;
    assert!(matches!(r, Err(StorageError::Busy(_))), "{:?}", r.err());
    let r = Pool::open_rbd(unlocked.clone()).await;
    assert!(matches!(r, Err(StorageError::Busy(_))), "{:?}", r.err());
    tokio::task::spawn_blocking(move || drop(unlocked))
        .await
        .expect("close");
    let gw = gateway(&cfg, &name);
    let r = Pool::open_rbd(gw.image.clone()).await;
    assert!(matches!(r, Err(StorageError::NotAPool(_))), "{:?}", r.err());
    let too_big = PoolOptions {
        capacity_bytes: Some(128 * MIB),
        ..PoolOptions::default()
    };
    let r = Pool::create_rbd(gw.image.clone(), &too_big).await;
    assert!(
        matches!(r, Err(StorageError::InvalidArgument(_))),
        "{:?}",
        r.err()
    );
    // A smaller capacity than the image is fine.
    let small = PoolOptions {
        capacity_bytes: Some(32 * MIB),
        ..PoolOptions::default()
    };
    let pool = Pool::create_rbd(gw.image.clone(), &small)
        .await
        .expect("create");
    assert!(pool.status().capacity_bytes <= 32 * MIB);
    pool.close().await.expect("close");
    drop(pool);
    gw.image.lock_release().expect("release lock");
    drop(gw);
    remove_image(&cfg, &name);
}

/// Writers (first writes and in-place overwrites, each holding one stripe) and readers of
/// 1 MiB and more (holding every stripe they touch) at once: everything completes and every
/// read sees whole blocks, each either what it was or what a writer wrote there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_reads_and_writes_run_together() {
    let Some(cfg) = cluster("large_reads_and_writes_run_together") else {
        return;
    };
    let name = unique("mixed");
    let _image = create_image(&cfg, &name, 256 * MIB);
    let gw = gateway(&cfg, &name);
    let pool = Pool::create_rbd(gw.image.clone(), &PoolOptions::default())
        .await
        .expect("create pool");
    let span_blocks = 32 * MIB / 4096;
    pool.create_volume("v", 32 * MIB, 4096, Guarantee::None)
        .await
        .expect("volume");
    let mut tasks = Vec::new();
    for w in 0..4u64 {
        let v = pool.volume("v").expect("v");
        tasks.push(tokio::spawn(async move {
            for i in 0..150u64 {
                // Spread over the span: 64 KiB chunks, so over every stripe. Writer 0
                // writes 256 KiB to 1 MiB at a time (first writes, then overwrites).
                let blocks = if w == 0 { 64 * (1 + i % 4) } else { 1 };
                let lba = (i * 37 + w * 1013) * 7 % (span_blocks - blocks);
                v.write(
                    lba,
                    Bytes::from(vec![w as u8 + 1; blocks as usize * 4096]),
                    false,
                )
                .await
                .expect("write");
            }
        }));
    }
    for r in 0..2u64 {
        let v = pool.volume("v").expect("v");
        tasks.push(tokio::spawn(async move {
            for i in 0..40u64 {
                // 1 MiB to 5 MiB: up to 80 chunks, more than the 64 stripes.
                let blocks = 256 * (1 + (i + r) % 5);
                let lba = (i * 997 + r * 4099) % (span_blocks - blocks);
                let got = v.read(lba, blocks as u32).await.expect("read");
                for b in got.chunks(4096) {
                    assert!(
                        b.iter().all(|&x| x == b[0]) && b[0] <= 4,
                        "a block read whole: one writer's pattern or zeros"
                    );
                }
            }
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    // One write and one read of 80 MiB over chunks laid down in order: more than one
    // merged run (runs stop at 64 MiB), each block where it belongs.
    pool.create_volume("big", 96 * MIB, 4096, Guarantee::None)
        .await
        .expect("volume big");
    let big = pool.volume("big").expect("big");
    for i in 0..10u64 {
        big.write(i * 2048, pattern(i as u8, 8 << 20), false)
            .await
            .expect("first writes");
    }
    let whole = pattern(200, 80 << 20);
    big.write(0, whole.clone(), false)
        .await
        .expect("80 MiB overwrite");
    assert!(big.read(0, 20480).await.expect("80 MiB read") == whole);
    for lba in [0u64, 16383, 16384, 16385, 20479] {
        let at = lba as usize * 4096;
        assert_eq!(
            big.read(lba, 1).await.expect("read"),
            whole.slice(at..at + 4096),
            "block {lba}"
        );
    }
    drop(big);
    assert!(pool.check().await.expect("fsck").is_clean());
    pool.close().await.expect("close");
    drop(pool);
    gw.image.lock_release().expect("release lock");
    drop(gw);
    remove_image(&cfg, &name);
}

/// A test that fails (panics) with the image open leaves no image behind: the
/// `create_image` guard removes it while unwinding, after the test's handles closed.
#[test]
fn a_failing_test_leaves_no_image_behind() {
    let Some(cfg) = cluster("a_failing_test_leaves_no_image_behind") else {
        return;
    };
    let name = unique("panics");
    let failed = std::panic::catch_unwind(|| {
        let _image = create_image(&cfg, &name, 16 * MIB);
        let _gw = gateway(&cfg, &name);
        panic!("a failing test (expected)");
    });
    assert!(failed.is_err());
    let rados = storage_core::ceph::Rados::connect(&cfg).expect("connect");
    let io = rados.ioctx("rbd").expect("pool rbd");
    match storage_core::ceph::RbdImage::open(&io, &name) {
        Err(e) if e.errno() == Some(libc::ENOENT) => {}
        Ok(_) => panic!("image {name} left behind by the failed test"),
        Err(e) => panic!("opening {name}: {e}"),
    }
}
