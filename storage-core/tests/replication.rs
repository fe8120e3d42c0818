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
        if round == 3 {
            // Dev/test on the replica: a clone of a received snapshot, written to, while
            // later increments arrive.
            dst.clone_volume("r@s3", "dev", None)
                .await
                .expect("dev clone");
            write(&dst, "dev", 5, 77).await;
        }
        prev = to;
    }
    let mut dev_want = snapshot_bytes(&src, "v", "s3").await;
    dev_want[5 * BS as usize..6 * BS as usize].copy_from_slice(&block(77, 5));
    assert_eq!(
        volume_bytes(&dst, "dev").await,
        dev_want,
        "the clone kept its contents"
    );
    // Retention deletes the received snapshot the clone depends on: the clone keeps it.
    dst.delete_snapshot("r", "s3").await.expect("delete r@s3");
    assert_eq!(volume_bytes(&dst, "dev").await, dev_want);
    assert!(dst.check().await.expect("check").is_clean());
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

fn spec_on(base: ReceiveBase, snapshot: &str, uuid: u128, chunks: u64) -> ReceiveSpec {
    ReceiveSpec {
        volume: "r".into(),
        base,
        snapshot: snapshot.into(),
        snapshot_uuid: uuid::Uuid::from_u128(uuid),
        size_bytes: chunks * CS,
        block_size: BS as u32,
    }
}

fn chunk(tag: u8) -> Bytes {
    Bytes::from(vec![tag; CS as usize])
}

/// A replica `r` with `r@s1` (uuid 1) from a full receive of 8 chunks, chunk i = i + 1.
async fn replica(dir: &std::path::Path) -> Pool {
    let pool = new_pool(dir).await;
    let mut rx = pool
        .receive_begin(spec_on(ReceiveBase::New, "s1", 1, 8))
        .await
        .expect("begin");
    for i in 0..8 {
        rx.put_chunk(i, chunk(i as u8 + 1)).await.expect("put");
    }
    rx.commit().await.expect("commit");
    pool
}

fn on_s1() -> ReceiveBase {
    ReceiveBase::Snapshot {
        snapshot: "s1".into(),
        uuid: uuid::Uuid::from_u128(1),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_calls_get_specific_errors_and_leave_the_replica_alone() {
    let d = tempfile::tempdir().expect("t");
    let pool = replica(d.path()).await;
    let before = volume_bytes(&pool, "r").await;
    let used = pool.status().used_bytes;
    let inval = |r: Result<_, StorageError>| matches!(r, Err(StorageError::InvalidArgument(_)));

    // Base uuid mismatch, missing base, volume exists for New, snapshot exists, bad sizes.
    let wrong = ReceiveBase::Snapshot {
        snapshot: "s1".into(),
        uuid: uuid::Uuid::from_u128(99),
    };
    assert!(inval(
        pool.receive_begin(spec_on(wrong, "s2", 2, 8))
            .await
            .map(|_| ())
    ));
    let missing = ReceiveBase::Snapshot {
        snapshot: "nope".into(),
        uuid: uuid::Uuid::from_u128(1),
    };
    assert!(matches!(
        pool.receive_begin(spec_on(missing, "s2", 2, 8))
            .await
            .map(|_| ()),
        Err(StorageError::NotFound(_))
    ));
    assert!(matches!(
        pool.receive_begin(spec_on(ReceiveBase::New, "s2", 2, 8))
            .await
            .map(|_| ()),
        Err(StorageError::AlreadyExists(_))
    ));
    assert!(matches!(
        pool.receive_begin(spec_on(on_s1(), "s1", 2, 8))
            .await
            .map(|_| ()),
        Err(StorageError::AlreadyExists(_))
    ));
    // The same sender snapshot again under another name: received already.
    assert!(matches!(
        pool.receive_begin(spec_on(on_s1(), "again", 1, 8))
            .await
            .map(|_| ()),
        Err(StorageError::AlreadyExists(_))
    ));
    let mut bad = spec_on(on_s1(), "s2", 2, 8);
    bad.block_size = 512;
    assert!(inval(pool.receive_begin(bad).await.map(|_| ())));
    let mut bad = spec_on(on_s1(), "s2", 2, 8);
    bad.size_bytes = 1000;
    assert!(inval(pool.receive_begin(bad).await.map(|_| ())));
    let mut bad = spec_on(on_s1(), "s2", 2, 8);
    bad.snapshot = "a@b".into();
    assert!(inval(pool.receive_begin(bad).await.map(|_| ())));
    assert!(pool.receives().is_empty(), "refused receives stage nothing");

    // Puts out of order, of the wrong size, past the end.
    let mut rx = pool
        .receive_begin(spec_on(on_s1(), "s2", 2, 10))
        .await
        .expect("begin");
    assert!(matches!(
        pool.receive_begin(spec_on(on_s1(), "s2", 2, 10))
            .await
            .map(|_| ()),
        Err(StorageError::Busy(_))
    ));
    assert!(matches!(
        pool.receive_begin(spec_on(on_s1(), "s3", 3, 10))
            .await
            .map(|_| ()),
        Err(StorageError::Busy(_))
    ));
    rx.put_chunk(3, chunk(33)).await.expect("put 3");
    assert!(inval(rx.put_chunk(3, chunk(34)).await));
    assert!(inval(rx.put_chunk(2, chunk(34)).await));
    assert!(inval(rx.put_hole(1).await));
    assert!(inval(rx.put_chunk(4, Bytes::from(vec![1u8; 4096])).await));
    assert!(inval(rx.put_chunk(10, chunk(1)).await));
    assert!(inval(rx.put_hole(10).await));
    assert_eq!(rx.next_index(), 4);
    rx.put_hole(5).await.expect("hole");
    // Nothing of it is visible: not a volume, not a snapshot, the replica unchanged.
    assert_eq!(pool.volumes().len(), 1);
    assert_eq!(pool.snapshots(None).len(), 1);
    assert_eq!(pool.status().snapshots, 1);
    assert_eq!(volume_bytes(&pool, "r").await, before);
    assert_eq!(
        pool.status().used_bytes,
        used + CS,
        "staged data counts in the pool"
    );
    assert!(pool.check().await.expect("check").is_clean());
    assert!(matches!(
        pool.receive_abort("r").await,
        Err(StorageError::Busy(_))
    ));
    rx.abort().await.expect("abort");
    assert!(pool.receives().is_empty());
    assert_eq!(
        pool.status().used_bytes,
        used,
        "abort frees what was staged"
    );
    assert_eq!(volume_bytes(&pool, "r").await, before);
    assert!(matches!(
        pool.receive_abort("r").await,
        Err(StorageError::NotFound(_))
    ));

    // Commit of a base that went away meanwhile: refused, staging kept, abortable.
    let mut rx = pool
        .receive_begin(spec_on(on_s1(), "s2", 2, 8))
        .await
        .expect("begin");
    rx.put_chunk(0, chunk(50)).await.expect("put");
    pool.delete_snapshot("r", "s1").await.expect("delete base");
    assert!(matches!(rx.commit().await, Err(StorageError::NotFound(_))));
    assert_eq!(pool.receives().len(), 1);
    assert_eq!(volume_bytes(&pool, "r").await, before);
    pool.receive_abort("r").await.expect("abort by volume");
    assert!(pool.receives().is_empty());
    assert!(pool.check().await.expect("check").is_clean());
    pool.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receive_survives_close_and_reopen_and_resumes() {
    let d = tempfile::tempdir().expect("t");
    let mut pool = replica(d.path()).await;
    let spec = spec_on(on_s1(), "s2", 2, 12);
    let mut want: Vec<u8> = Vec::new();
    for i in 0..12u8 {
        let c = match i {
            1 | 9 => vec![0u8; CS as usize],
            3 | 5 | 8 | 10 | 11 => vec![100 + i; CS as usize],
            i if i < 8 => vec![i + 1; CS as usize],
            _ => vec![0u8; CS as usize],
        };
        want.extend_from_slice(&c);
    }
    // The increment: 1 and 9 holes, 3 5 8 10 11 data; applied over three sessions.
    let steps: Vec<(u64, Option<u8>)> = vec![
        (1, None),
        (3, Some(103)),
        (5, Some(105)),
        (8, Some(108)),
        (9, None),
        (10, Some(110)),
        (11, Some(111)),
    ];
    let mut done = 0;
    for session in 0..3 {
        let mut rx = pool.receive_begin(spec.clone()).await.expect("begin");
        let listed = pool.receives();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].next_index, rx.next_index());
        let start = rx.next_index();
        let mut put = 0;
        for &(i, d) in &steps {
            if i < start {
                continue;
            }
            match d {
                Some(t) => rx.put_chunk(i, chunk(t)).await.expect("put"),
                None => rx.put_hole(i).await.expect("hole"),
            }
            put += 1;
            done += 1;
            if session < 2 && put == 2 {
                rx.save_progress().await.expect("save");
                // One more put that is not saved: resent after the reopen.
                if let Some(&(i, d)) = steps.iter().find(|(i, _)| *i >= rx.next_index()) {
                    match d {
                        Some(t) => rx.put_chunk(i, chunk(t)).await.expect("put"),
                        None => rx.put_hole(i).await.expect("hole"),
                    }
                }
                break;
            }
        }
        if session < 2 {
            drop(rx);
            pool.close().await.expect("close");
            pool = Pool::open(d.path()).await.expect("reopen");
            assert!(pool.check().await.expect("check").is_clean());
            assert_eq!(pool.volumes().len(), 1);
        } else {
            rx.commit().await.expect("commit");
        }
    }
    assert!(done >= steps.len());
    assert_eq!(volume_bytes(&pool, "r").await, want);
    assert_eq!(snapshot_bytes(&pool, "r", "s2").await, want);
    assert!(pool.receives().is_empty());
    // Committing the same snapshot again (a retry after a lost acknowledgement) is refused.
    assert!(matches!(
        pool.receive_begin(spec.clone()).await.map(|_| ()),
        Err(StorageError::AlreadyExists(_))
    ));
    assert!(pool.check().await.expect("check").is_clean());
    pool.close().await.expect("close");
    let pool = Pool::open(d.path()).await.expect("reopen");
    assert_eq!(volume_bytes(&pool, "r").await, want);
    assert!(pool.check().await.expect("check").is_clean());
    pool.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_increment_drops_the_replicas_own_writes_and_a_short_last_chunk_works() {
    let d = tempfile::tempdir().expect("t");
    let pool = new_pool(d.path()).await;
    // 3.5 chunks: the last chunk is half a chunk.
    let size = 3 * CS + CS / 2;
    let mut spec = spec_on(ReceiveBase::New, "s1", 1, 0);
    spec.size_bytes = size;
    let mut rx = pool.receive_begin(spec).await.expect("begin");
    assert!(matches!(
        rx.put_chunk(3, chunk(1)).await,
        Err(StorageError::InvalidArgument(_))
    ));
    rx.put_chunk(3, Bytes::from(vec![7u8; (CS / 2) as usize]))
        .await
        .expect("short last chunk");
    rx.commit().await.expect("commit");
    let got = pool
        .read_snapshot_chunk(&SnapshotRef::new("r", "s1"), 3)
        .await
        .expect("read");
    assert_eq!(got.len() as u64, CS / 2);
    assert!(got.iter().all(|&b| b == 7));
    // The replica volume is written to (it should not be); the next increment drops that.
    // It is fully reserved: the commit keeps its reservation exact.
    pool.set_guarantee("r", Guarantee::Full)
        .await
        .expect("full");
    write(&pool, "r", 0, 9).await;
    let mut spec = spec_on(on_s1(), "s2", 2, 0);
    spec.size_bytes = size;
    let mut rx = pool.receive_begin(spec).await.expect("begin");
    rx.put_chunk(1, chunk(4)).await.expect("put");
    rx.commit().await.expect("commit");
    let bytes = volume_bytes(&pool, "r").await;
    assert!(
        bytes[..CS as usize].iter().all(|&b| b == 0),
        "own write dropped"
    );
    assert!(bytes[CS as usize..2 * CS as usize].iter().all(|&b| b == 4));
    assert!(bytes[3 * CS as usize..].iter().all(|&b| b == 7));
    assert_eq!(
        pool.volume_info("r").expect("r").reserved_bytes,
        4 * CS,
        "a full volume's new empty top reserves every chunk"
    );
    assert!(pool.check().await.expect("check").is_clean());
    pool.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replicated_clone_uses_the_same_space_as_on_the_source() {
    let (d1, d2) = (
        tempfile::tempdir().expect("t"),
        tempfile::tempdir().expect("t"),
    );
    let src = new_pool(d1.path()).await;
    let dst = new_pool(d2.path()).await;
    src.create_volume("gold", 32 * CS, BS as u32, Guarantee::None)
        .await
        .expect("gold");
    for i in 0..32 {
        write(&src, "gold", i * 16, 3).await;
    }
    src.snapshot("gold", "base").await.expect("base");
    let base = SnapshotRef::new("gold", "base");
    let mut clones = Vec::new();
    for k in 0..4u64 {
        let name = format!("vm{k}");
        src.clone_volume("gold@base", &name, None)
            .await
            .expect("clone");
        for j in 0..=k {
            write(&src, &name, (j * 5 + k) * 16, 40 + k as u8).await;
        }
        src.snapshot(&name, "daily").await.expect("snap");
        clones.push(name);
    }
    replicate(&src, &dst, None, &base, "gold", ReceiveBase::New).await;
    let base_uuid = snap_uuid(&src, "gold", "base");
    for name in &clones {
        let to = SnapshotRef::new(name, "daily");
        let origin = ReceiveBase::Origin {
            volume: "gold".into(),
            snapshot: "base".into(),
            uuid: base_uuid,
        };
        replicate(&src, &dst, Some(&base), &to, name, origin).await;
        assert_eq!(
            snapshot_bytes(&dst, name, "daily").await,
            snapshot_bytes(&src, name, "daily").await
        );
    }
    assert_eq!(
        dst.status().used_bytes,
        src.status().used_bytes,
        "clone savings survive replication"
    );
    assert_eq!(src.status().used_bytes, (32 + 1 + 2 + 3 + 4) * CS);
    assert!(dst.check().await.expect("check").is_clean());
    src.close().await.expect("close");
    dst.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_source_rollback_the_increment_goes_on_the_rollback_snapshot() {
    let (d1, d2) = (
        tempfile::tempdir().expect("t"),
        tempfile::tempdir().expect("t"),
    );
    let src = new_pool(d1.path()).await;
    let dst = new_pool(d2.path()).await;
    src.create_volume("v", 16 * CS, BS as u32, Guarantee::None)
        .await
        .expect("v");
    write(&src, "v", 0, 1).await;
    src.snapshot("v", "s1").await.expect("s1");
    write(&src, "v", 16, 2).await;
    src.snapshot("v", "s2").await.expect("s2");
    let (s1, s2) = (SnapshotRef::new("v", "s1"), SnapshotRef::new("v", "s2"));
    replicate(&src, &dst, None, &s1, "r", ReceiveBase::New).await;
    let on = |s: &str| ReceiveBase::Snapshot {
        snapshot: s.into(),
        uuid: snap_uuid(&src, "v", s),
    };
    replicate(&src, &dst, Some(&s1), &s2, "r", on("s1")).await;
    src.rollback("v", "s1").await.expect("rollback");
    write(&src, "v", 32, 3).await;
    src.snapshot("v", "s3").await.expect("s3");
    let s3 = SnapshotRef::new("v", "s3");
    assert!(matches!(
        src.snapshot_delta(Some(&s2), &s3),
        Err(StorageError::NotAncestor(_))
    ));
    replicate(&src, &dst, Some(&s1), &s3, "r", on("s1")).await;
    assert_eq!(
        volume_bytes(&dst, "r").await,
        snapshot_bytes(&src, "v", "s3").await
    );
    assert_eq!(
        snapshot_bytes(&dst, "r", "s2").await,
        snapshot_bytes(&src, "v", "s2").await,
        "the snapshot the rollback passed over stays, as on the source"
    );
    assert!(dst.check().await.expect("check").is_clean());
    src.close().await.expect("close");
    dst.close().await.expect("close");
}
