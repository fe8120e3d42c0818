//! Replication engine (docs/decisions/0017-replication-engine.md): snapshot deltas found from
//! the layer tree, and receives staged in a hidden layer and committed by one record.
//!
//! Round trips between two pools (full, chains of increments, a clone sent from its origin),
//! hostile calls, and a receive interrupted by close/reopen at every step.

use bytes::Bytes;
use storage_core::{
    ChunkDelta, Guarantee, Pool, PoolOptions, ReceiveBase, ReceiveSpec, SnapshotRef, StorageError,
};

const CS: u64 = 64 * 1024;
const BS: u64 = 4096;

async fn new_pool(dir: &std::path::Path) -> Pool {
    let opts = PoolOptions {
        chunk_size: CS as u32,
        capacity_bytes: Some(64 << 20),
        soft_threshold_pct: None,
    };
    Pool::create(dir, &opts).await.expect("create pool")
}

fn block(tag: u8, lba: u64) -> Bytes {
    let mut v = vec![tag; BS as usize];
    v[..8].copy_from_slice(&lba.to_le_bytes());
    Bytes::from(v)
}

async fn write(pool: &Pool, vol: &str, lba: u64, tag: u8) {
    pool.volume(vol)
        .expect("volume")
        .write(lba, block(tag, lba), false)
        .await
        .expect("write");
}

/// Every byte of `vol@snap` (through a throwaway clone).
async fn snapshot_bytes(pool: &Pool, vol: &str, snap: &str) -> Vec<u8> {
    let name = format!("read-{vol}-{snap}");
    pool.clone_volume(&format!("{vol}@{snap}"), &name, None)
        .await
        .expect("clone for reading");
    let bytes = volume_bytes(pool, &name).await;
    pool.delete_volume(&name).await.expect("delete reader");
    bytes
}

async fn volume_bytes(pool: &Pool, vol: &str) -> Vec<u8> {
    let v = pool.volume(vol).expect("volume");
    let n = v.num_blocks();
    let mut out = Vec::new();
    let mut lba = 0;
    while lba < n {
        let k = (n - lba).min(256);
        out.extend_from_slice(&v.read(lba, k as u32).await.expect("read"));
        lba += k;
    }
    out
}

/// Send `from -> to` of `src` into `dst` as `spec`, the way a stream driver does.
async fn replicate(
    src: &Pool,
    dst: &Pool,
    from: Option<&SnapshotRef>,
    to: &SnapshotRef,
    volume: &str,
    base: ReceiveBase,
) -> storage_core::SnapshotInfo {
    let delta = src.snapshot_delta(from, to).expect("delta");
    let spec = ReceiveSpec {
        volume: volume.into(),
        base,
        snapshot: to.snapshot.clone(),
        snapshot_uuid: delta.to_uuid,
        size_bytes: delta.size_bytes,
        block_size: delta.block_size,
    };
    let mut rx = dst.receive_begin(spec).await.expect("receive_begin");
    assert_eq!(rx.next_index(), 0);
    for c in &delta.changes {
        if c.data {
            let data = src
                .read_snapshot_chunk(to, c.index)
                .await
                .expect("read chunk");
            rx.put_chunk(c.index, data).await.expect("put_chunk");
        } else {
            rx.put_hole(c.index).await.expect("put_hole");
        }
    }
    rx.commit().await.expect("commit")
}

fn snap_uuid(pool: &Pool, vol: &str, snap: &str) -> uuid::Uuid {
    pool.snapshots(Some(vol))
        .into_iter()
        .find(|s| s.name == snap)
        .expect("snapshot listed")
        .uuid
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_then_increments_then_clone_reproduce_the_source() {
    let (d1, d2) = (
        tempfile::tempdir().expect("t"),
        tempfile::tempdir().expect("t"),
    );
    let src = new_pool(d1.path()).await;
    let dst = new_pool(d2.path()).await;
    src.create_volume("v", 64 * CS, BS as u32, Guarantee::None)
        .await
        .expect("v");
    for i in 0..40 {
        write(&src, "v", i * 16 + 3, 1).await;
    }
    src.snapshot("v", "s1").await.expect("s1");
    let s1 = SnapshotRef::new("v", "s1");
    let info = replicate(&src, &dst, None, &s1, "r", ReceiveBase::New).await;
    assert_eq!(
        info.uuid,
        snap_uuid(&src, "v", "s1"),
        "the sender's uuid is kept"
    );
    assert_eq!(
        snapshot_bytes(&dst, "r", "s1").await,
        snapshot_bytes(&src, "v", "s1").await
    );
    assert_eq!(
        volume_bytes(&dst, "r").await,
        snapshot_bytes(&src, "v", "s1").await
    );

    // Increments: overwrite some, unmap some, grow.
    let mut prev = s1;
    for round in 2..5u8 {
        for i in 0..5u64 {
            write(&src, "v", (i * 37 + round as u64 * 11) % 1024, round).await;
        }
        src.volume("v")
            .expect("v")
            .unmap(round as u64 * 64, 32)
            .await
            .expect("unmap");
        if round == 3 {
            src.resize_volume("v", 80 * CS, false).await.expect("grow");
            write(&src, "v", 70 * 16, round).await;
        }
        let name = format!("s{round}");
        src.snapshot("v", &name).await.expect("snap");
        let to = SnapshotRef::new("v", &name);
        let delta = src.snapshot_delta(Some(&prev), &to).expect("delta");
        assert!(
            delta.changes.len() <= 12,
            "round {round}: {} changes for 5 writes, an unmap and a grow",
            delta.changes.len()
        );
        let base = ReceiveBase::Snapshot {
            snapshot: prev.snapshot.clone(),
            uuid: snap_uuid(&src, "v", &prev.snapshot),
        };
        replicate(&src, &dst, Some(&prev), &to, "r", base).await;
        assert_eq!(
            snapshot_bytes(&dst, "r", &name).await,
            snapshot_bytes(&src, "v", &name).await,
            "round {round}"
        );
        assert_eq!(
            volume_bytes(&dst, "r").await,
            snapshot_bytes(&src, "v", &name).await
        );
        prev = to;
    }
    // Older received snapshots are intact.
    assert_eq!(
        snapshot_bytes(&dst, "r", "s2").await,
        snapshot_bytes(&src, "v", "s2").await
    );

    // A clone of s2, changed a little, sent as an increment from its origin.
    src.clone_volume("v@s2", "c", None).await.expect("clone");
    for i in 0..3 {
        write(&src, "c", i * 100, 9).await;
    }
    src.snapshot("c", "cs").await.expect("clone snap");
    let cs = SnapshotRef::new("c", "cs");
    let s2 = SnapshotRef::new("v", "s2");
    let delta = src.snapshot_delta(Some(&s2), &cs).expect("clone delta");
    assert_eq!(delta.changes.len(), 3, "only what the clone wrote");
    let before = dst.status().used_bytes;
    let base = ReceiveBase::Origin {
        volume: "r".into(),
        snapshot: "s2".into(),
        uuid: snap_uuid(&src, "v", "s2"),
    };
    replicate(&src, &dst, Some(&s2), &cs, "rc", base).await;
    assert_eq!(
        dst.status().used_bytes - before,
        3 * CS,
        "the received clone shares its origin's chunks"
    );
    assert_eq!(
        snapshot_bytes(&dst, "rc", "cs").await,
        snapshot_bytes(&src, "c", "cs").await
    );
    assert_eq!(
        dst.volume_info("rc").expect("rc").origin.as_deref(),
        Some("r@s2")
    );
    assert!(dst.check().await.expect("check").is_clean());
    // Deleting the origin's replica volume keeps what the clone needs.
    let want = volume_bytes(&dst, "rc").await;
    dst.delete_volume("r").await.expect("delete r");
    assert_eq!(volume_bytes(&dst, "rc").await, want);
    assert!(dst.check().await.expect("check").is_clean());
    dst.close().await.expect("close");
    let dst = Pool::open(d2.path()).await.expect("reopen");
    assert_eq!(volume_bytes(&dst, "rc").await, want);
    assert!(dst.check().await.expect("check").is_clean());
    src.close().await.expect("close");
    dst.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deltas_and_changed_ranges() {
    let d = tempfile::tempdir().expect("t");
    let pool = new_pool(d.path()).await;
    pool.create_volume("v", 64 * CS, BS as u32, Guarantee::None)
        .await
        .expect("v");
    write(&pool, "v", 0, 1).await;
    write(&pool, "v", 16, 1).await;
    write(&pool, "v", 5 * 16, 1).await;
    pool.snapshot("v", "a").await.expect("a");
    write(&pool, "v", 16, 2).await; // chunk 1 changes
    write(&pool, "v", 2 * 16, 2).await; // chunk 2 new
    pool.volume("v")
        .expect("v")
        .unmap(5 * 16, 16)
        .await
        .expect("unmap"); // chunk 5 gone
    pool.snapshot("v", "b").await.expect("b");
    let a = SnapshotRef::new("v", "a");
    let b = SnapshotRef::new("v", "b");
    let full = pool.snapshot_delta(None, &b).expect("full");
    assert_eq!(
        full.changes.iter().map(|c| c.index).collect::<Vec<_>>(),
        vec![0, 1, 2]
    );
    let d = pool.snapshot_delta(Some(&a), &b).expect("delta");
    assert_eq!(
        d.changes,
        vec![
            ChunkDelta {
                index: 1,
                data: true
            },
            ChunkDelta {
                index: 2,
                data: true
            },
            ChunkDelta {
                index: 5,
                data: false
            },
        ]
    );
    let r = d.changed_ranges();
    assert_eq!(r.len(), 2);
    assert_eq!((r[0].lba, r[0].blocks, r[0].data), (16, 32, true));
    assert_eq!((r[1].lba, r[1].blocks, r[1].data), (80, 16, false));
    // Backwards, across volumes, and after a rollback: not an ancestor.
    assert!(matches!(
        pool.snapshot_delta(Some(&b), &a),
        Err(StorageError::NotAncestor(_))
    ));
    pool.create_volume("w", 64 * CS, BS as u32, Guarantee::None)
        .await
        .expect("w");
    pool.snapshot("w", "x").await.expect("x");
    assert!(matches!(
        pool.snapshot_delta(Some(&a), &SnapshotRef::new("w", "x")),
        Err(StorageError::NotAncestor(_))
    ));
    assert!(matches!(
        pool.snapshot_delta(Some(&SnapshotRef::new("v", "nope")), &b),
        Err(StorageError::NotFound(_))
    ));
    // Same snapshot: nothing changed.
    assert!(pool
        .snapshot_delta(Some(&b), &b)
        .expect("same")
        .changes
        .is_empty());
    pool.close().await.expect("close");
}
