//! Property test: snapshot deltas against brute force.
//!
//! Random sequences of writes, unmaps, snapshots, clones (of snapshots and of live
//! volumes), snapshot and volume deletes, rollbacks, resizes, splits and reopens; then, for
//! every ordered pair of snapshots, a delta that the engine gives must be exactly what a
//! byte-by-byte comparison of the two allows: every chunk whose contents differ is listed,
//! and each listed chunk says truly whether it holds data (zeros otherwise). Deltas along a
//! lineage (a snapshot from the snapshot its volume was at before, a clone's snapshot from
//! its origin) must be found, not refused as `NotAncestor`. And applying each delta to the
//! earlier snapshot's bytes gives the later one's.

use std::collections::HashMap;

use bytes::Bytes;
use proptest::prelude::*;
use storage_core::{Guarantee, Pool, PoolOptions, SnapshotRef, StorageError};

const CS: u64 = 4096;
const BS: u64 = 512;
const VOLS: usize = 3;

#[derive(Clone, Debug)]
enum Op {
    Write(usize, u64, u64, u8),
    Unmap(usize, u64, u64),
    Snap(usize),
    CloneSnap(usize, usize),
    CloneLive(usize, usize),
    DelSnap(usize),
    DelVol(usize),
    Rollback(usize, usize),
    Resize(usize, u64),
    Split(usize),
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    let v = 0..VOLS;
    prop_oneof![
        16 => (v.clone(), 0u64..256, 1u64..24, 1u8..255).prop_map(|(v, l, n, b)| Op::Write(v, l, n, b)),
        3 => (v.clone(), 0u64..256, 1u64..40).prop_map(|(v, l, n)| Op::Unmap(v, l, n)),
        6 => v.clone().prop_map(Op::Snap),
        2 => (0usize..16, v.clone()).prop_map(|(s, d)| Op::CloneSnap(s, d)),
        2 => (v.clone(), v.clone()).prop_map(|(s, d)| Op::CloneLive(s, d)),
        2 => (0usize..16).prop_map(Op::DelSnap),
        1 => v.clone().prop_map(Op::DelVol),
        1 => (v.clone(), 0usize..16).prop_map(|(v, s)| Op::Rollback(v, s)),
        2 => (v.clone(), 8u64..40).prop_map(|(v, c)| Op::Resize(v, c)),
        1 => v.clone().prop_map(Op::Split),
        1 => Just(Op::Reopen),
    ]
}

fn vname(i: usize) -> String {
    format!("v{i}")
}

/// Snapshots taken so far: (volume, name), with the snapshot that the volume was at before
/// (its lineage parent), when known.
struct Snaps {
    list: Vec<(SnapshotRef, Option<SnapshotRef>)>,
    /// Per volume: the snapshot its current contents descend from.
    last: HashMap<String, Option<SnapshotRef>>,
}

async fn chunk_bytes(pool: &Pool, s: &SnapshotRef, n: u64) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for i in 0..n {
        let mut c = pool
            .read_snapshot_chunk(s, i)
            .await
            .expect("read snapshot chunk")
            .to_vec();
        c.resize(CS as usize, 0);
        out.push(c);
    }
    out
}

async fn run(ops: Vec<Op>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = PoolOptions {
        chunk_size: CS as u32,
        capacity_bytes: Some(64 << 20),
        soft_threshold_pct: None,
    };
    let mut pool = Pool::create(dir.path(), &opts).await.expect("create");
    let mut snaps = Snaps {
        list: Vec::new(),
        last: HashMap::new(),
    };
    for i in 0..VOLS {
        pool.create_volume(&vname(i), 32 * CS, BS as u32, Guarantee::None)
            .await
            .expect("volume");
        snaps.last.insert(vname(i), None);
    }
    let mut n = 0;
    for op in ops {
        n += 1;
        match op {
            Op::Write(v, lba, k, b) => {
                if let Ok(vol) = pool.volume(&vname(v)) {
                    let nb = vol.num_blocks();
                    let lba = lba % nb;
                    let k = k.min(nb - lba);
                    let data = Bytes::from(vec![b.wrapping_add(n as u8); (k * BS) as usize]);
                    vol.write(lba, data, false).await.expect("write");
                }
            }
            Op::Unmap(v, lba, k) => {
                if let Ok(vol) = pool.volume(&vname(v)) {
                    let nb = vol.num_blocks();
                    let lba = lba % nb;
                    vol.unmap(lba, k.min(nb - lba)).await.expect("unmap");
                }
            }
            Op::Snap(v) => {
                let name = format!("s{n}");
                if pool.snapshot(&vname(v), &name).await.is_ok() {
                    let r = SnapshotRef::new(vname(v), name);
                    let parent = snaps.last.get(&vname(v)).cloned().flatten();
                    snaps.list.push((r.clone(), parent));
                    snaps.last.insert(vname(v), Some(r));
                }
            }
            Op::CloneSnap(s, d) => {
                if let Some((r, _)) = snaps.list.get(s).cloned() {
                    if pool
                        .clone_volume(&r.to_string(), &vname(d), None)
                        .await
                        .is_ok()
                    {
                        snaps.last.insert(vname(d), Some(r));
                    }
                }
            }
            Op::CloneLive(s, d) => {
                if pool.clone_volume(&vname(s), &vname(d), None).await.is_ok() {
                    let l = snaps.last.get(&vname(s)).cloned().flatten();
                    snaps.last.insert(vname(d), l);
                }
            }
            Op::DelSnap(s) => {
                if s < snaps.list.len() {
                    let (r, _) = snaps.list.remove(s);
                    pool.delete_snapshot(&r.volume, &r.snapshot)
                        .await
                        .expect("delete snapshot");
                    for (_, p) in snaps.list.iter_mut() {
                        if p.as_ref() == Some(&r) {
                            *p = None;
                        }
                    }
                    for l in snaps.last.values_mut() {
                        if l.as_ref() == Some(&r) {
                            *l = None;
                        }
                    }
                }
            }
            Op::DelVol(v) => {
                if pool.delete_volume(&vname(v)).await.is_ok() {
                    let gone: Vec<SnapshotRef> = snaps
                        .list
                        .iter()
                        .filter(|(r, _)| r.volume == vname(v))
                        .map(|(r, _)| r.clone())
                        .collect();
                    snaps.list.retain(|(r, _)| r.volume != vname(v));
                    for (_, p) in snaps.list.iter_mut() {
                        if p.as_ref().is_some_and(|x| gone.contains(x)) {
                            *p = None;
                        }
                    }
                    for l in snaps.last.values_mut() {
                        if l.as_ref().is_some_and(|x| gone.contains(x)) {
                            *l = None;
                        }
                    }
                    snaps.last.remove(&vname(v));
                }
            }
            Op::Rollback(v, s) => {
                if let Some((r, _)) = snaps.list.get(s).cloned() {
                    if r.volume == vname(v) && pool.rollback(&r.volume, &r.snapshot).await.is_ok() {
                        snaps.last.insert(vname(v), Some(r));
                    }
                }
            }
            Op::Resize(v, c) => {
                let _ = pool.resize_volume(&vname(v), c * CS, true).await;
            }
            Op::Split(v) => {
                if let Ok(job) = pool.start_split(&vname(v)) {
                    if job.wait().await.is_ok() {
                        snaps.last.insert(vname(v), None);
                    }
                }
            }
            Op::Reopen => {
                pool.close().await.expect("close");
                pool = Pool::open(dir.path()).await.expect("reopen");
            }
        }
    }
    let mut contents: HashMap<SnapshotRef, (u64, Vec<Vec<u8>>)> = HashMap::new();
    for info in pool.snapshots(None) {
        let r = SnapshotRef::new(&info.volume, &info.name);
        let nch = info.size_bytes.div_ceil(CS);
        let bytes = chunk_bytes(&pool, &r, nch).await;
        contents.insert(r, (nch, bytes));
    }
    let zero = vec![0u8; CS as usize];
    for (to, (to_n, to_bytes)) in &contents {
        // Full delta: exactly the chunks that hold data, as far as contents tell.
        let full = pool.snapshot_delta(None, to).expect("full delta");
        assert!(full.changes.windows(2).all(|w| w[0].index < w[1].index));
        assert!(full.changes.iter().all(|c| c.data && c.index < *to_n));
        for (i, b) in to_bytes.iter().enumerate() {
            if *b != zero {
                assert!(
                    full.changes.iter().any(|c| c.index == i as u64),
                    "{to}: chunk {i} holds data but is not in the full delta"
                );
            }
        }
        for (from, (from_n, from_bytes)) in &contents {
            let d = match pool.snapshot_delta(Some(from), to) {
                Ok(d) => d,
                Err(StorageError::NotAncestor(_)) => continue,
                Err(e) => panic!("delta {from} -> {to}: {e}"),
            };
            assert!(d.changes.windows(2).all(|w| w[0].index < w[1].index));
            let mut patched: Vec<Vec<u8>> = (0..*to_n as usize)
                .map(|i| {
                    if (i as u64) < *from_n {
                        from_bytes[i].clone()
                    } else {
                        zero.clone()
                    }
                })
                .collect();
            for c in &d.changes {
                assert!(
                    c.index < *to_n,
                    "{from} -> {to}: chunk {} past the end",
                    c.index
                );
                let want = &to_bytes[c.index as usize];
                if !c.data {
                    assert_eq!(want, &zero, "{from} -> {to}: chunk {} said zero", c.index);
                }
                patched[c.index as usize] = want.clone();
            }
            for i in 0..*to_n as usize {
                assert!(
                    patched[i] == to_bytes[i],
                    "{from} -> {to}: chunk {i} differs but is not in the delta"
                );
            }
        }
    }
    // Lineage deltas are found.
    for (s, parent) in &snaps.list {
        if let Some(p) = parent {
            if contents.contains_key(p) {
                pool.snapshot_delta(Some(p), s)
                    .unwrap_or_else(|e| panic!("lineage delta {p} -> {s}: {e}"));
            }
        }
    }
    assert!(pool.check().await.expect("check").is_clean());
    pool.close().await.expect("close");
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 48,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]
    #[test]
    fn deltas_match_brute_force(ops in proptest::collection::vec(op(), 1..60)) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(run(ops));
    }
}
