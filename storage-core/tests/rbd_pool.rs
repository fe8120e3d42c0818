//! A pool on an RBD image (feature `ceph`), against a real cluster: volumes, snapshots and
//! clones, reopen, fsck, and what the image reports. Skips without `LUNAR_CEPH_CONF`.
#![cfg(feature = "ceph")]

mod rbd_common;

use std::time::Instant;

use bytes::Bytes;
use rbd_common::{cluster, create_image, gateway, remove_image, unique};
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
    create_image(&cfg, &name, 256 * MIB);
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
    pool.close().await.expect("close");
    drop(pool);
    gw.image.lock_release().expect("release lock");
    drop(gw);
    remove_image(&cfg, &name);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_without_a_pool_is_not_a_pool_and_capacity_is_checked() {
    let Some(cfg) = cluster("an_image_without_a_pool_is_not_a_pool_and_capacity_is_checked") else {
        return;
    };
    let name = unique("empty");
    create_image(&cfg, &name, 64 * MIB);
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
