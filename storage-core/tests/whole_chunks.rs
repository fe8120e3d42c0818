//! Writes that cover several whole chunks: fresh, owned, shared and mixed ranges, a
//! fragmented allocator, and many writers and readers at once on overlapping ranges, where
//! every chunk must end up wholly from one write. Data, space figures and copy-on-write
//! counts are checked against what the chunk-by-chunk model implies.
//!
//! Written for an experiment that sent such writes down as one system call per physically
//! contiguous run (2026-12-03). It was reverted because of what the page cache does with
//! the larger writes (docs/decisions/0002-chunk-size.md); the tests stay, as they hold any
//! multi-chunk write path to the same results.

use bytes::Bytes;
use rand::{Rng, SeedableRng};
use storage_core::{Guarantee, Pool, PoolOptions};

const BS: u64 = 4096;
const CS: u64 = 65536;
const BPC: u64 = CS / BS;
const CHUNKS: u64 = 64;

fn pattern(tag: u32, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (tag.wrapping_mul(31).wrapping_add((i / 512) as u32) & 0xff) as u8)
        .collect()
}

async fn new_pool(dir: &std::path::Path) -> Pool {
    let opts = PoolOptions {
        chunk_size: CS as u32,
        capacity_bytes: Some(64 << 20),
        soft_threshold_pct: None,
    };
    Pool::create(dir, &opts).await.expect("create")
}

async fn assert_reads(pool: &Pool, name: &str, model: &[u8]) {
    let v = pool.volume(name).expect("volume");
    let got = v
        .read(0, (model.len() as u64 / BS) as u32)
        .await
        .expect("read");
    assert!(got == model, "{name} differs from the model");
}

/// Write `data` at `lba` into the volume and the model.
async fn write(pool: &Pool, name: &str, model: &mut [u8], lba: u64, data: Vec<u8>) {
    let off = (lba * BS) as usize;
    model[off..off + data.len()].copy_from_slice(&data);
    pool.volume(name)
        .expect("volume")
        .write(lba, Bytes::from(data), false)
        .await
        .expect("write");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fresh_owned_shared_and_mixed_ranges() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pool = new_pool(dir.path()).await;
    pool.create_volume("v", CHUNKS * CS, BS as u32, Guarantee::None)
        .await
        .expect("volume");
    let mut m = vec![0u8; (CHUNKS * CS) as usize];

    // Fresh: 16 chunks in one write, all allocated.
    write(&pool, "v", &mut m, 0, pattern(1, (16 * CS) as usize)).await;
    assert_eq!(pool.status().used_bytes, 16 * CS);
    assert_reads(&pool, "v", &m).await;
    // Owned: overwritten in place, nothing allocated.
    write(&pool, "v", &mut m, 0, pattern(2, (16 * CS) as usize)).await;
    assert_eq!(pool.status().used_bytes, 16 * CS);
    assert_reads(&pool, "v", &m).await;

    // Shared with a snapshot: sixteen first writes, each a copy-on-write of a whole chunk.
    pool.snapshot("v", "s").await.expect("snapshot");
    let snap = m.clone();
    let cow0 = pool.stats().cow_ops;
    write(&pool, "v", &mut m, 0, pattern(3, (16 * CS) as usize)).await;
    assert_eq!(pool.stats().cow_ops - cow0, 16);
    assert_eq!(pool.status().used_bytes, 32 * CS);
    assert_reads(&pool, "v", &m).await;
    pool.clone_volume("v@s", "c", None).await.expect("clone");
    assert_reads(&pool, "c", &snap).await;

    // Mixed (chunks 14-15 owned, 16-17 never written): written chunk by chunk.
    write(&pool, "v", &mut m, 14 * BPC, pattern(4, (4 * CS) as usize)).await;
    assert_reads(&pool, "v", &m).await;
    // Unaligned: partial, three whole chunks, partial.
    write(
        &pool,
        "v",
        &mut m,
        20 * BPC + 3,
        pattern(5, (4 * CS - 3 * BS) as usize),
    )
    .await;
    assert_reads(&pool, "v", &m).await;
    // A hole punched in the top over shared data, then a whole-chunk write across it.
    let v = pool.volume("v").expect("v");
    v.unmap(2 * BPC, 2 * BPC).await.expect("unmap");
    m[(2 * CS) as usize..(4 * CS) as usize].fill(0);
    assert_reads(&pool, "v", &m).await;
    write(&pool, "v", &mut m, BPC, pattern(6, (4 * CS) as usize)).await;
    assert_reads(&pool, "v", &m).await;
    assert_reads(&pool, "c", &snap).await;

    let r = pool.check().await.expect("check");
    assert!(r.is_clean(), "{r:?}");
    pool.close().await.expect("close");
    let pool = Pool::open(dir.path()).await.expect("reopen");
    assert_reads(&pool, "v", &m).await;
    assert_reads(&pool, "c", &snap).await;
    pool.close().await.expect("close");
}

/// Free chunks scattered over the pool: one write lands on non-adjacent chunks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_into_scattered_free_chunks() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pool = new_pool(dir.path()).await;
    for name in ["a", "b"] {
        pool.create_volume(name, 32 * CS, BS as u32, Guarantee::None)
            .await
            .expect("volume");
    }
    // Interleave single-chunk first writes of a and b, then delete b: every other chunk of
    // that region becomes free.
    for i in 0..32u64 {
        for name in ["a", "b"] {
            pool.volume(name)
                .expect("v")
                .write(i * BPC, Bytes::from(pattern(i as u32, CS as usize)), false)
                .await
                .expect("write");
        }
    }
    // Fill the rest of the pool so the allocator's cursor ends at its end and wraps into
    // the holes b leaves.
    let free = pool.status().free_bytes;
    pool.create_volume("f", free, BS as u32, Guarantee::None)
        .await
        .expect("filler");
    let f = pool.volume("f").expect("f");
    for i in 0..free / CS {
        f.write(i * BPC, Bytes::from(pattern(9, CS as usize)), false)
            .await
            .expect("fill");
    }
    assert_eq!(pool.status().free_bytes, 0, "pool full");
    pool.delete_volume("b").await.expect("delete");
    pool.flush().await.expect("flush");
    assert_eq!(
        pool.status().free_bytes,
        32 * CS,
        "only b's scattered chunks are free"
    );
    pool.create_volume("c", 32 * CS, BS as u32, Guarantee::None)
        .await
        .expect("volume");
    let mut m = vec![0u8; (32 * CS) as usize];
    write(&pool, "c", &mut m, 0, pattern(77, (32 * CS) as usize)).await;
    assert_reads(&pool, "c", &m).await;
    let r = pool.check().await.expect("check");
    assert!(r.is_clean(), "{r:?}");
    pool.close().await.expect("close");
}

/// Writers of multi-chunk ranges (aligned and not) and readers, all at once on one small
/// region: no deadlock, every chunk holds exactly one writer's data at the end, and the
/// pool checks clean.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_overlapping_writers_never_tear_a_chunk() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pool = new_pool(dir.path()).await;
    pool.create_volume("v", 16 * CS, BS as u32, Guarantee::None)
        .await
        .expect("volume");
    pool.snapshot("v", "s").await.expect("snapshot");
    let v = pool.volume("v").expect("v");
    let mut tasks = Vec::new();
    for t in 0..8u32 {
        let v = v.clone();
        tasks.push(tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(u64::from(t));
            for k in 0..40u32 {
                let first = rng.gen_range(0..12u64);
                let n = rng.gen_range(2..=4u64);
                // Each chunk written gets one tag over all its bytes.
                let tag = (t << 16) | k | 0x8000_0000;
                let data: Vec<u8> = tag.to_le_bytes().repeat((n * CS / 4) as usize);
                v.write(first * BPC, Bytes::from(data), false)
                    .await
                    .expect("write");
                if k % 5 == 0 {
                    v.read(rng.gen_range(0..16 * BPC - 16), 16)
                        .await
                        .expect("read");
                }
            }
        }));
    }
    let res = tokio::time::timeout(std::time::Duration::from_secs(60), async {
        for t in tasks {
            t.await.expect("join");
        }
    })
    .await;
    assert!(res.is_ok(), "writers deadlocked");
    let all = v.read(0, (16 * BPC) as u32).await.expect("read");
    for c in 0..16usize {
        let chunk = &all[c * CS as usize..(c + 1) * CS as usize];
        let first = &chunk[..4];
        assert!(
            chunk.chunks(4).all(|w| w == first),
            "chunk {c} mixes data of several writes"
        );
    }
    let r = pool.check().await.expect("check");
    assert!(r.is_clean(), "{r:?}");
    pool.close().await.expect("close");
}
