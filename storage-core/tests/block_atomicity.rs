//! Block atomicity: a read concurrent with overwrites of the same blocks returns each block
//! wholly old or wholly new, never a mix — what a disk's sector atomicity gives and what
//! VMware's heartbeat (a plain READ of a block other hosts rewrite) relies on. Reads and
//! writes that hit the page cache run on several threads at once, so the store must order
//! them itself.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use storage_core::{Guarantee, Pool, PoolOptions};

const BS: usize = 4096;

fn pattern(v: u64) -> Bytes {
    Bytes::from(v.to_le_bytes().repeat(BS / 8))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_never_see_torn_blocks() {
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = PoolOptions {
        chunk_size: 65536,
        capacity_bytes: Some(64 << 20),
        soft_threshold_pct: None,
    };
    let pool = Pool::create(dir.path(), &opts).await.expect("create");
    pool.create_volume("v", 16 << 20, BS as u32, Guarantee::None)
        .await
        .expect("volume");
    let v = pool.volume("v").expect("v");
    // Two blocks: one whole chunk's first block, and a two-block range across the chunk
    // boundary is not needed — each block is checked on its own.
    v.write(0, pattern(0), false).await.expect("first write");
    v.write(20, pattern(0), false).await.expect("first write");
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..2u64 {
        let (v, stop) = (v.clone(), stop.clone());
        writers.push(tokio::spawn(async move {
            let mut n = w + 1;
            while !stop.load(Ordering::Relaxed) {
                v.write(0, pattern(n), false).await.expect("write");
                v.write(20, pattern(n), false).await.expect("write");
                n += 2;
            }
        }));
    }
    let mut torn = 0usize;
    let mut reads = 0usize;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    while std::time::Instant::now() < deadline {
        for lba in [0u64, 20] {
            let b = v.read(lba, 1).await.expect("read");
            let first = &b[..8];
            if b.chunks(8).any(|c| c != first) {
                torn += 1;
            }
            reads += 1;
        }
        tokio::task::yield_now().await;
    }
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.expect("writer");
    }
    assert!(reads > 1000, "too few reads ({reads}) to say anything");
    assert_eq!(torn, 0, "{torn} of {reads} reads returned a torn block");
}
