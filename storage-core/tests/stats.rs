//! Activity counters: copy-on-write after a snapshot, metadata commits and the commit
//! observer move exactly as the operations imply.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use storage_core::{Guarantee, Pool, PoolOptions};

const MIB: u64 = 1 << 20;
const CHUNK: u32 = 65536;

#[test]
fn cow_and_commit_counters() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("rt");
    rt.block_on(async {
        let dir = tempfile::tempdir().expect("dir");
        let opts = PoolOptions {
            chunk_size: CHUNK,
            capacity_bytes: Some(64 * MIB),
            soft_threshold_pct: None,
        };
        let pool = Pool::create(dir.path(), &opts).await.expect("create");
        let observed = Arc::new(AtomicU64::new(0));
        let o = observed.clone();
        pool.set_commit_observer(Arc::new(move |_| {
            o.fetch_add(1, Ordering::Relaxed);
        }));
        pool.create_volume("v", 4 * MIB, 512, Guarantee::None)
            .await
            .expect("volume");
        let v = pool.volume("v").expect("v");
        // Two fresh chunks: allocations, not copy-on-write.
        v.write(0, Bytes::from(vec![1u8; 2 * CHUNK as usize]), true)
            .await
            .expect("write");
        let s0 = pool.stats();
        assert_eq!((s0.cow_ops, s0.cow_bytes), (0, 0));
        assert!(s0.commits >= 1, "a FUA first write commits: {s0:?}");
        assert!(observed.load(Ordering::Relaxed) >= 1);

        pool.snapshot("v", "s").await.expect("snapshot");
        // Chunk 0: partial overwrite of a shared chunk -> one CoW with a read-modify-write.
        v.write(0, Bytes::from(vec![2u8; 512]), false)
            .await
            .expect("w0");
        // Chunk 1: whole-chunk overwrite -> CoW without copying old data.
        v.write(
            u64::from(CHUNK / 512),
            Bytes::from(vec![3u8; CHUNK as usize]),
            false,
        )
        .await
        .expect("w1");
        // Overwriting the now-private chunk 0 again costs nothing.
        v.write(1, Bytes::from(vec![4u8; 512]), false)
            .await
            .expect("w0 again");
        let s1 = pool.stats();
        assert_eq!(s1.cow_ops, 2, "{s1:?}");
        // Only the part of chunk 0 the 512-byte write did not cover is carried over.
        assert_eq!(s1.cow_bytes, u64::from(CHUNK) - 512, "{s1:?}");
        pool.flush().await.expect("flush");
        assert!(pool.stats().commits > s0.commits);
        assert_eq!(
            observed.load(Ordering::Relaxed),
            pool.stats().commits,
            "the observer sees every commit"
        );
        pool.close().await.expect("close");
    });
}

/// A commit costs two fdatasyncs while data writes are pending (the data with the journal
/// blocks, then the seal) and one when the data is already durable, as for a snapshot taken
/// on an idle volume; that one sync is what makes snapshot creation well under a millisecond
/// on a disk with a fast cache flush (docs/performance.md).
#[test]
fn an_idle_snapshot_costs_one_sync_and_a_dirty_commit_two() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("rt");
    rt.block_on(async {
        let dir = tempfile::tempdir().expect("dir");
        let opts = PoolOptions {
            chunk_size: CHUNK,
            capacity_bytes: Some(64 * MIB),
            soft_threshold_pct: None,
        };
        let pool = Pool::create(dir.path(), &opts).await.expect("create");
        pool.create_volume("v", 4 * MIB, 4096, Guarantee::None)
            .await
            .expect("volume");
        let v = pool.volume("v").expect("v");
        for round in 0..3u8 {
            // A first write and a flush: data pending, so data sync then seal sync (by this
            // flush or by the once-a-second background commit, whichever came first).
            let s0 = pool.stats().syncs;
            v.write(u64::from(round) * 16, Bytes::from(vec![round; 4096]), false)
                .await
                .expect("write");
            v.flush().await.expect("flush");
            let s1 = pool.stats().syncs;
            assert_eq!(s1 - s0, 2, "round {round}: a commit with pending data");
            // Nothing pending: the snapshot's commit is one sync.
            pool.snapshot("v", &format!("s{round}"))
                .await
                .expect("snapshot");
            let s2 = pool.stats().syncs;
            assert_eq!(s2 - s1, 1, "round {round}: a snapshot of an idle volume");
            // Nothing at all to do: a flush costs nothing.
            v.flush().await.expect("flush");
            assert_eq!(pool.stats().syncs, s2, "round {round}: an idle flush");
        }
        pool.close().await.expect("close");
    });
}
