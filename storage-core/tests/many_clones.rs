//! Any number of clones of one source (issue 2: "no 255 limit", where QUADStor and some
//! arrays stop): 300 linked clones of one snapshot and 40 live clones of one volume, each
//! with its own write, all isolated from each other and from the source; deleting the source
//! first and the clones in an interleaved order leaves an empty, clean pool.

use bytes::Bytes;
use storage_core::{Guarantee, Pool, PoolOptions};

const BS: u32 = 4096;

fn block(tag: u32) -> Bytes {
    Bytes::from(tag.to_le_bytes().repeat(BS as usize / 4))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hundred_clones_of_one_snapshot() {
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = PoolOptions {
        chunk_size: 65536,
        capacity_bytes: Some(256 << 20),
        soft_threshold_pct: None,
    };
    let pool = Pool::create(dir.path(), &opts).await.expect("create");
    pool.create_volume("gold", 16 << 20, BS, Guarantee::None)
        .await
        .expect("gold");
    let gold = pool.volume("gold").expect("gold");
    for lba in 0..64u64 {
        gold.write(lba * 16, block(1_000_000 + lba as u32), false)
            .await
            .expect("write gold");
    }
    pool.snapshot("gold", "base").await.expect("snapshot");
    const N: u32 = 300;
    for i in 0..N {
        pool.clone_volume("gold@base", &format!("c{i}"), None)
            .await
            .unwrap_or_else(|e| panic!("clone {i}: {e}"));
        // Every clone overwrites block 0 with its own tag and leaves the rest shared.
        pool.volume(&format!("c{i}"))
            .expect("clone")
            .write(0, block(i), false)
            .await
            .expect("write clone");
    }
    // Live clones of the volume itself (each takes an implicit snapshot).
    for j in 0..40u32 {
        pool.clone_volume("gold", &format!("live{j}"), None)
            .await
            .unwrap_or_else(|e| panic!("live clone {j}: {e}"));
        gold.write(16, block(2_000_000 + j), false)
            .await
            .expect("write gold after live clone");
    }
    for i in 0..N {
        let c = pool.volume(&format!("c{i}")).expect("clone");
        assert_eq!(
            c.read(0, 1).await.expect("read"),
            block(i),
            "clone {i} block 0"
        );
        assert_eq!(
            c.read(16, 1).await.expect("read"),
            block(1_000_001),
            "clone {i} sees the snapshot, not later source writes"
        );
    }
    for j in 0..40u32 {
        let c = pool.volume(&format!("live{j}")).expect("live clone");
        let want = if j == 0 { 1_000_001 } else { 2_000_000 + j - 1 };
        assert_eq!(
            c.read(16, 1).await.expect("read"),
            block(want),
            "live clone {j}"
        );
    }
    assert_eq!(gold.read(0, 1).await.expect("read"), block(1_000_000));

    // Delete the source first, then the clones, interleaving old and new.
    pool.delete_volume("gold").await.expect("delete source");
    let mut names: Vec<String> = (0..N).map(|i| format!("c{i}")).collect();
    names.extend((0..40).map(|j| format!("live{j}")));
    let (even, odd): (Vec<_>, Vec<_>) = names.iter().enumerate().partition(|(k, _)| k % 2 == 0);
    for (_, n) in odd.iter().rev().chain(even.iter()) {
        if n.as_str() == "c150" {
            // Half-way: a survivor still reads its own and the shared data.
            let c = pool.volume("c298").expect("c298");
            assert_eq!(c.read(0, 1).await.expect("read"), block(298));
            assert_eq!(c.read(32, 1).await.expect("read"), block(1_000_002));
        }
        pool.delete_volume(n)
            .await
            .unwrap_or_else(|e| panic!("delete {n}: {e}"));
    }
    pool.reconcile_space().await.expect("reconcile");
    let st = pool.status();
    assert_eq!(st.used_bytes, 0, "every chunk released: {st:?}");
    let report = pool.check().await.expect("check");
    assert!(report.is_clean(), "{:?}", report.errors);
}
