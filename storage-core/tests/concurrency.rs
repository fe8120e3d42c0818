//! Racing writes to one chunk (first-write copy-on-write ordering), writes racing snapshots,
//! and the split job's progress and cancel.

use bytes::Bytes;
use storage_core::{Guarantee, Pool, PoolOptions, StorageError};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .expect("rt")
}

#[test]
fn racing_first_writes_to_one_chunk_all_land() {
    rt().block_on(async {
        let dir = tempfile::tempdir().expect("tempdir");
        let opts = PoolOptions {
            chunk_size: 65536,
            capacity_bytes: Some(64 << 20),
            soft_threshold_pct: None,
        };
        let pool = Pool::create(dir.path(), &opts).await.expect("create");
        pool.create_volume("v", 1 << 20, 512, Guarantee::None)
            .await
            .expect("v");
        let v = pool.volume("v").expect("v");
        for round in 0u8..6 {
            // Share every chunk with a snapshot so the next writes are first writes (CoW).
            v.write(0, Bytes::from(vec![0xEE; 1 << 20]), false)
                .await
                .expect("fill");
            pool.snapshot("v", &format!("s{round}"))
                .await
                .expect("snapshot");
            let mut tasks = Vec::new();
            for blk in 0..128u64 {
                let v = v.clone();
                // Blocks 0..128 all live in chunk 0 (64 KiB / 512).
                tasks.push(tokio::spawn(async move {
                    v.write(blk, Bytes::from(vec![blk as u8 ^ round; 512]), false)
                        .await
                }));
            }
            for t in tasks {
                t.await.expect("join").expect("write");
            }
            let got = v.read(0, 128).await.expect("read");
            for blk in 0..128usize {
                assert!(
                    got[blk * 512..(blk + 1) * 512]
                        .iter()
                        .all(|&b| b == blk as u8 ^ round),
                    "round {round}: block {blk} lost"
                );
            }
            // The snapshot still holds the old contents.
            pool.clone_volume(&format!("v@s{round}"), "peek", None)
                .await
                .expect("clone");
            let old = pool
                .volume("peek")
                .expect("peek")
                .read(0, 128)
                .await
                .expect("read");
            assert!(old.iter().all(|&b| b == 0xEE));
            pool.delete_volume("peek").await.expect("delete");
        }
        let r = pool.check().await.expect("check");
        assert!(r.is_clean(), "{:?}", r.errors);
        pool.close().await.expect("close");
    });
}

#[test]
fn snapshots_racing_writes_see_whole_writes() {
    rt().block_on(async {
        let dir = tempfile::tempdir().expect("tempdir");
        let opts = PoolOptions {
            chunk_size: 16384,
            capacity_bytes: Some(64 << 20),
            soft_threshold_pct: None,
        };
        let pool = Pool::create(dir.path(), &opts).await.expect("create");
        pool.create_volume("v", 1 << 20, 4096, Guarantee::None)
            .await
            .expect("v");
        let v = pool.volume("v").expect("v");
        // Each write covers 3 chunks with one value; a snapshot must never see a mix.
        let writer = {
            let v = v.clone();
            tokio::spawn(async move {
                for i in 1..=300u32 {
                    v.write(2, Bytes::from(vec![(i % 250) as u8 + 1; 12 * 4096]), false)
                        .await
                        .expect("write");
                }
            })
        };
        let mut n = 0;
        while !writer.is_finished() && n < 40 {
            pool.snapshot("v", &format!("s{n}"))
                .await
                .expect("snapshot");
            n += 1;
        }
        writer.await.expect("writer");
        for i in 0..n {
            pool.clone_volume(&format!("v@s{i}"), "peek", None)
                .await
                .expect("clone");
            let got = pool
                .volume("peek")
                .expect("peek")
                .read(2, 12)
                .await
                .expect("read");
            assert!(
                got.iter().all(|&b| b == got[0]),
                "snapshot s{i} saw a torn write"
            );
            pool.delete_volume("peek").await.expect("delete");
        }
        // Delete snapshots in a scrambled order; everything stays consistent.
        for i in (0..n)
            .rev()
            .step_by(2)
            .chain((0..n).rev().skip(1).step_by(2))
        {
            pool.delete_snapshot("v", &format!("s{i}"))
                .await
                .expect("delete snapshot");
        }
        let r = pool.check().await.expect("check");
        assert!(r.is_clean(), "{:?}", r.errors);
        assert_eq!(pool.status().layers, 1);
        pool.close().await.expect("close");
    });
}

/// The cancel must reach the split before it finishes. On a multi-threaded runtime the split
/// runs on another worker from the moment it starts, and a test thread descheduled for a few
/// milliseconds between `start_split` and `cancel` (a busy CI machine) found it done: the
/// test read "running" and acted on it later. On a current-thread runtime the split task is
/// not polled until the test awaits, so `cancel` always comes before its first batch.
#[test]
fn split_reports_progress_and_can_be_cancelled() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    rt.block_on(async {
        let dir = tempfile::tempdir().expect("tempdir");
        let opts = PoolOptions {
            chunk_size: 4096,
            capacity_bytes: Some(64 << 20),
            soft_threshold_pct: None,
        };
        let pool = Pool::create(dir.path(), &opts).await.expect("create");
        pool.create_volume("v", 4 << 20, 4096, Guarantee::None)
            .await
            .expect("v");
        let v = pool.volume("v").expect("v");
        v.write(0, Bytes::from(vec![5u8; 4 << 20]), false)
            .await
            .expect("fill");
        pool.clone_volume("v", "c", None).await.expect("clone");
        let job = pool.start_split("c").expect("split");
        assert_eq!(job.progress().1, 1024);
        job.cancel();
        assert!(matches!(job.wait().await, Err(StorageError::Cancelled)));
        let job = pool.start_split("c").expect("split again");
        job.wait().await.expect("split finished");
        // The clone now owns all its data and is independent of v.
        pool.reconcile_space().await.expect("reconcile");
        let ci = pool.volume_info("c").expect("c");
        assert_eq!(ci.unique_bytes, 4 << 20);
        assert_eq!(ci.shared_bytes, 0);
        pool.delete_volume("v").await.expect("delete v");
        let got = pool
            .volume("c")
            .expect("c")
            .read(0, 1024)
            .await
            .expect("read");
        assert!(got.iter().all(|&b| b == 5));
        assert_eq!(pool.status().used_bytes, 4 << 20);
        let r = pool.check().await.expect("check");
        assert!(r.is_clean(), "{:?}", r.errors);
        pool.close().await.expect("close");
    });
}
