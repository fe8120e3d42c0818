//! Crash consistency of a pool on an RBD image (feature `ceph`), as a failover does it: one
//! gateway writes, a second gateway on another host breaks its lock (which blocklists the
//! first client) and opens the pool without any clean close. Every write the first gateway
//! acknowledged must be there. Alone in its binary because it sets `LUNAR_BOOT_ID` (the
//! second gateway runs on another host: another kernel boot). Skips without `LUNAR_CEPH_CONF`.
#![cfg(feature = "ceph")]

mod rbd_common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use rbd_common::{cluster, create_image, gateway, remove_image, unique};
use storage_core::{Guarantee, Pool, PoolOptions};

const MIB: u64 = 1 << 20;
const CHUNK: u64 = 64 * 1024;
/// Blocks of 4096 bytes per chunk.
const STRIDE: u64 = CHUNK / 4096;

fn block(i: u64) -> Bytes {
    let mut b = vec![(i % 251) as u8 + 1; 4096];
    b[..8].copy_from_slice(&i.to_le_bytes());
    Bytes::from(b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_a_takeover_without_close() {
    let Some(cfg) = cluster("acknowledged_writes_survive_a_takeover_without_close") else {
        return;
    };
    let name = unique("failover");
    let _image = create_image(&cfg, &name, 512 * MIB);
    let gw1 = gateway(&cfg, &name);
    let opts = PoolOptions {
        chunk_size: CHUNK as u32,
        ..PoolOptions::default()
    };
    let pool1 = Pool::create_rbd(gw1.image.clone(), &opts)
        .await
        .expect("create pool");
    let vol_bytes = 256 * MIB;
    pool1
        .create_volume("v", vol_bytes, 4096, Guarantee::None)
        .await
        .expect("volume");
    pool1.snapshot("v", "before").await.expect("snapshot");

    // A writer keeps writing one block into each fresh chunk (a first write: its mapping is
    // a journal record published before the acknowledgement) and records what was
    // acknowledged, until its gateway is fenced or the volume is full.
    let acked = Arc::new(parking_lot::Mutex::new(Vec::<u64>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let v = pool1.volume("v").expect("v");
        let acked = acked.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::Acquire) && (i + 1) * CHUNK <= vol_bytes {
                if v.write(i * STRIDE, block(i), false).await.is_err() {
                    break;
                }
                acked.lock().push(i);
                i += 1;
            }
        })
    };
    // Let it get going: some of its records are sealed by the commit thread's periodic
    // commit, the newest are not (they are in tentative journal blocks).
    while acked.lock().len() < 200 {
        assert!(
            !writer.is_finished(),
            "the writer stopped (a write failed) before the takeover"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }

    // The second gateway runs on another host: another boot id. It breaks the first
    // gateway's lock (blocklisting it), takes the lock and opens the pool.
    std::env::set_var("LUNAR_BOOT_ID", uuid::Uuid::new_v4().to_string());
    let gw2 = tokio::task::spawn_blocking({
        let cfg = cfg.clone();
        let name = name.clone();
        move || gateway(&cfg, &name)
    })
    .await
    .expect("gateway 2");
    let pool2 = Pool::open_rbd(gw2.image.clone())
        .await
        .expect("open after takeover");
    stop.store(true, Ordering::Release);
    let acked: Vec<u64> = acked.lock().clone();
    println!(
        "{} writes acknowledged by the fenced gateway before the takeover",
        acked.len()
    );

    // The fenced gateway cannot write any more (its client is blocklisted). The bound only
    // keeps a regression from hanging the test.
    let late = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        pool1
            .volume("v")
            .expect("v")
            .write(0, block(424_242), false),
    )
    .await;
    assert!(
        matches!(late, Ok(Err(_))),
        "a write through the fenced gateway must fail"
    );
    assert!(pool2.check().await.expect("fsck").is_clean());
    let v = pool2.volume("v").expect("v");
    for &i in &acked {
        let got = v.read(i * STRIDE, 1).await.expect("read");
        assert_eq!(got, block(i), "acknowledged write {i} lost in the takeover");
    }
    // The snapshot taken before the writes still reads as it was: all zeroes.
    let snap = pool2
        .clone_volume("v@before", "s", None)
        .await
        .expect("clone");
    assert_eq!(snap.mapped_bytes, 0);
    // The new owner can write and close cleanly.
    v.write(0, block(999_999), true)
        .await
        .expect("write on new owner");
    pool2.close().await.expect("close");
    drop((v, pool2));

    // The fenced gateway's writer has stopped (its client is blocklisted); drop it all off
    // the async workers (closing its image waits for anything librbd still runs).
    writer.abort();
    let _ = writer.await;
    tokio::task::spawn_blocking(move || {
        drop(pool1);
        drop(gw1);
    })
    .await
    .expect("drop the fenced gateway");
    gw2.image.lock_release().expect("release lock");
    drop(gw2);
    remove_image(&cfg, &name);
}
