//! Reads through a deep clone-of-clone chain, which the per-volume resolution cache
//! (`chaincache`) answers after the first walk, stay exact while the tree changes under
//! them: deletes that merge layers, snapshots, rollback, split. Every read is compared with
//! a model, twice (the second read is served from the cache), and `check` stays clean.

use std::collections::BTreeMap;

use bytes::Bytes;
use storage_core::{Guarantee, Pool, PoolOptions};

const BS: u32 = 4096;
const CHUNK: u64 = 65536;
const CHUNKS: u64 = 48;
/// Blocks per chunk.
const BPC: u64 = CHUNK / BS as u64;

fn block(gen: u32, index: u64) -> Bytes {
    let tag = (gen << 16) | index as u32 | 0x8000_0000;
    Bytes::from(tag.to_le_bytes().repeat(BS as usize / 4))
}

/// Volume name -> chunk index -> what its first block holds (`None`: zeros).
type Model = BTreeMap<String, Vec<Option<Bytes>>>;

async fn verify(pool: &Pool, model: &Model, step: &str) {
    let zeros = Bytes::from(vec![0u8; BS as usize]);
    for _pass in 0..2 {
        for (name, chunks) in model {
            let v = pool
                .volume(name)
                .unwrap_or_else(|e| panic!("{step}: {name}: {e}"));
            for (i, want) in chunks.iter().enumerate() {
                let got = v.read(i as u64 * BPC, 1).await.expect("read");
                let want = want.as_ref().unwrap_or(&zeros);
                assert!(got == *want, "{step}: {name} chunk {i} differs");
            }
        }
    }
    let r = pool.check().await.expect("check");
    assert!(r.is_clean(), "{step}: check: {r:?}");
}

async fn write(pool: &Pool, model: &mut Model, name: &str, gen: u32, index: u64) {
    let b = block(gen, index);
    pool.volume(name)
        .expect("volume")
        .write(index * BPC, b.clone(), false)
        .await
        .expect("write");
    model.get_mut(name).expect("model")[index as usize] = Some(b);
}

async fn unmap(pool: &Pool, model: &mut Model, name: &str, index: u64) {
    pool.volume(name)
        .expect("volume")
        .unmap(index * BPC, BPC)
        .await
        .expect("unmap");
    model.get_mut(name).expect("model")[index as usize] = None;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deep_chain_reads_stay_exact_through_tree_changes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = PoolOptions {
        chunk_size: CHUNK as u32,
        capacity_bytes: Some(256 << 20),
        soft_threshold_pct: None,
    };
    let pool = Pool::create(dir.path(), &opts).await.expect("create");
    let mut model = Model::new();
    pool.create_volume("g0", CHUNKS * CHUNK, BS, Guarantee::None)
        .await
        .expect("g0");
    model.insert("g0".into(), vec![None; CHUNKS as usize]);
    for i in 0..CHUNKS {
        write(&pool, &mut model, "g0", 0, i).await;
    }
    // Twelve generations, each a live clone of the previous one; each writes every
    // (g+1)-th chunk and punches a hole at chunk g; the source writes after the clone.
    for g in 1..=12u32 {
        let (src, name) = (format!("g{}", g - 1), format!("g{g}"));
        pool.clone_volume(&src, &name, None).await.expect("clone");
        let copy = model[&src].clone();
        model.insert(name.clone(), copy);
        for i in (0..CHUNKS).step_by(g as usize + 1) {
            write(&pool, &mut model, &name, g, i).await;
        }
        unmap(&pool, &mut model, &name, g as u64).await;
        write(&pool, &mut model, &src, 100 + g, CHUNKS - 1).await;
    }
    verify(&pool, &model, "built").await;
    assert!(
        pool.stats().chain_cache_entries > 0,
        "reads through the deep chain are cached"
    );

    // Deleting a middle generation and the origin merges or keeps ghosts below the rest.
    for name in ["g5", "g0"] {
        pool.delete_volume(name).await.expect("delete");
        model.remove(name);
        verify(&pool, &model, &format!("after deleting {name}")).await;
    }
    // Write chunks whose deep resolution is cached, then snapshot: the written data moves
    // into a frozen layer under a new top, so the cached answers are stale from then on.
    write(&pool, &mut model, "g12", 150, 5).await;
    unmap(&pool, &mut model, "g12", 7).await;
    // Snapshot the deepest, diverge, roll back.
    pool.snapshot("g12", "s").await.expect("snapshot");
    verify(&pool, &model, "after the snapshot").await;
    let before = model["g12"].clone();
    write(&pool, &mut model, "g12", 200, 3).await;
    unmap(&pool, &mut model, "g12", 4).await;
    verify(&pool, &model, "after writing past the snapshot").await;
    pool.rollback("g12", "s").await.expect("rollback");
    model.insert("g12".into(), before);
    verify(&pool, &model, "after rollback").await;
    // Split a middle generation (it stops sharing anything), then delete its source.
    let job = pool.start_split("g8").expect("split");
    job.wait().await.expect("split");
    verify(&pool, &model, "after split").await;
    pool.delete_volume("g7").await.expect("delete g7");
    model.remove("g7");
    verify(&pool, &model, "after deleting g7").await;
    // Unique/shared reconcile may reclaim ghost entries nobody sees any more.
    pool.reconcile_space().await.expect("reconcile");
    verify(&pool, &model, "after reconcile").await;
    pool.close().await.expect("close");

    // Reopen: caches start empty and fill again.
    let pool = Pool::open(dir.path()).await.expect("reopen");
    verify(&pool, &model, "after reopen").await;
    pool.close().await.expect("close");
}
