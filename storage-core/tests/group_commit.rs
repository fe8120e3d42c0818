//! Group commit and deferred reuse of freed chunks (issue 2, item 7).

use bytes::Bytes;
use storage_core::{Guarantee, Pool, PoolOptions};

const MIB: u64 = 1 << 20;
const CHUNK: u64 = 65536;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("rt")
}

/// Sixteen flushes issued together over the same buffered records cost at most one commit
/// (one fdatasync + seal): the waiters present when the commit thread takes the buffer all
/// complete with it, and the later ones find their records durable.
#[test]
fn concurrent_flushes_share_one_commit() {
    rt().block_on(async {
        let dir = tempfile::tempdir().expect("dir");
        let opts = PoolOptions {
            chunk_size: CHUNK as u32,
            capacity_bytes: Some(64 * MIB),
            soft_threshold_pct: None,
        };
        let pool = Pool::create(dir.path(), &opts).await.expect("create");
        pool.create_volume("v", 8 * MIB, 512, Guarantee::None)
            .await
            .expect("volume");
        let v = pool.volume("v").expect("v");
        for i in 0..32u64 {
            v.write(i * CHUNK / 512, Bytes::from(vec![i as u8; 4096]), false)
                .await
                .expect("first write");
        }
        let before = pool.stats().commits;
        let flushes = (0..16).map(|_| {
            let v = v.clone();
            tokio::spawn(async move { v.flush().await })
        });
        for f in futures_join(flushes).await {
            f.expect("join").expect("flush");
        }
        let used = pool.stats().commits - before;
        assert!(used <= 1, "16 concurrent flushes took {used} commits");
        pool.close().await.expect("close");
    });
}

async fn futures_join<T>(
    it: impl Iterator<Item = tokio::task::JoinHandle<T>>,
) -> Vec<Result<T, tokio::task::JoinError>> {
    let handles: Vec<_> = it.collect();
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        out.push(h.await);
    }
    out
}

/// On a full pool, a chunk freed by an unmap is not handed out again until a commit made the
/// unmap durable: the first write that needs it waits for one (a crash before it would
/// otherwise revive the old mapping over the new data).
#[test]
fn freed_chunks_are_not_reused_before_commit() {
    rt().block_on(async {
        let dir = tempfile::tempdir().expect("dir");
        let opts = PoolOptions {
            chunk_size: CHUNK as u32,
            capacity_bytes: Some(64 * MIB),
            soft_threshold_pct: None,
        };
        let pool = Pool::create(dir.path(), &opts).await.expect("create");
        let cap = pool.status().capacity_bytes;
        let chunks = cap / CHUNK;
        pool.create_volume("v", cap, 512, Guarantee::None)
            .await
            .expect("volume");
        let v = pool.volume("v").expect("v");
        for i in 0..chunks {
            v.write(
                i * CHUNK / 512,
                Bytes::from(vec![1u8; CHUNK as usize]),
                false,
            )
            .await
            .expect("fill");
        }
        pool.flush().await.expect("flush");
        assert_eq!(pool.status().free_bytes, 0, "the pool is full");
        let before = pool.stats().commits;
        v.unmap(0, CHUNK / 512).await.expect("unmap");
        let st = pool.status();
        if pool.stats().commits == before {
            // (Unless the 1 s background commit ran meanwhile.)
            assert_eq!(
                st.pending_free_bytes, CHUNK,
                "the freed chunk waits: {st:?}"
            );
            assert_eq!(st.free_bytes, CHUNK, "counted free, not yet allocatable");
        }
        // The only chunk that can serve this first write is the one just freed.
        v.write(0, Bytes::from(vec![7u8; CHUNK as usize]), false)
            .await
            .expect("write after unmap");
        let after = pool.stats().commits;
        assert!(
            after > before,
            "the freed chunk was reused with no commit after the unmap ({before} -> {after})"
        );
        assert_eq!(pool.status().pending_free_bytes, 0);
        let got = v.read(0, (CHUNK / 512) as u32).await.expect("read");
        assert!(got.iter().all(|&b| b == 7));
        let report = pool.check().await.expect("check");
        assert!(report.is_clean(), "{:?}", report.errors);
        // Crash (no close) and reopen: the write and the unmap are both there.
        pool.flush().await.expect("flush");
        drop(v);
        drop(pool);
        let pool = Pool::open(dir.path()).await.expect("reopen");
        let v = pool.volume("v").expect("v");
        let got = v.read(0, (CHUNK / 512) as u32).await.expect("read");
        assert!(got.iter().all(|&b| b == 7));
        assert!(pool.check().await.expect("check").is_clean());
        pool.close().await.expect("close");
    });
}
