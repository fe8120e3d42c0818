//! Model-based property test: random operation sequences against an in-memory model.

use std::collections::HashMap;

use bytes::Bytes;
use proptest::prelude::*;
use storage_core::{Guarantee, Pool, PoolOptions, StorageError};

const CS: u64 = 4096;
const BS: u64 = 512;
const VOLS: [&str; 4] = ["a", "b", "c", "d"];
const SNAPS: [&str; 3] = ["s1", "s2", "s3"];

#[derive(Clone, Debug)]
enum Op {
    Create(usize, u64, bool),
    Write(usize, u64, u64, u8),
    Unmap(usize, u64, u64),
    Zero(usize, u64, u64),
    Snap(usize, usize),
    CloneSnap(usize, usize, usize),
    CloneLive(usize, usize),
    DelVol(usize),
    DelSnap(usize, usize),
    Rollback(usize, usize),
    Resize(usize, u64),
    Split(usize),
    Reopen,
    /// Flush, then drop the pool without closing it: the next open replays the journal.
    Crash,
}

fn op() -> impl Strategy<Value = Op> {
    let v = 0..VOLS.len();
    let s = 0..SNAPS.len();
    prop_oneof![
        2 => (v.clone(), 1u64..12, any::<bool>()).prop_map(|(v, c, f)| Op::Create(v, c, f)),
        8 => (v.clone(), 0u64..96, 1u64..20, any::<u8>()).prop_map(|(v, l, n, b)| Op::Write(v, l, n, b)),
        2 => (v.clone(), 0u64..96, 1u64..24).prop_map(|(v, l, n)| Op::Unmap(v, l, n)),
        1 => (v.clone(), 0u64..96, 1u64..24).prop_map(|(v, l, n)| Op::Zero(v, l, n)),
        3 => (v.clone(), s.clone()).prop_map(|(v, s)| Op::Snap(v, s)),
        2 => (v.clone(), s.clone(), v.clone()).prop_map(|(v, s, d)| Op::CloneSnap(v, s, d)),
        2 => (v.clone(), v.clone()).prop_map(|(v, d)| Op::CloneLive(v, d)),
        2 => v.clone().prop_map(Op::DelVol),
        2 => (v.clone(), s.clone()).prop_map(|(v, s)| Op::DelSnap(v, s)),
        1 => (v.clone(), s.clone()).prop_map(|(v, s)| Op::Rollback(v, s)),
        1 => (v.clone(), 1u64..100).prop_map(|(v, b)| Op::Resize(v, b)),
        1 => v.clone().prop_map(Op::Split),
        1 => Just(Op::Reopen),
        2 => Just(Op::Crash),
    ]
}

#[derive(Clone, Debug, Default)]
struct MVol {
    data: Vec<u8>,
    mapped: Vec<bool>,
}

impl MVol {
    fn chunks(&self) -> usize {
        (self.data.len() as u64).div_ceil(CS) as usize
    }
    fn resize(&mut self, size: usize) {
        self.data.resize(size, 0);
        let n = self.chunks();
        self.mapped.resize(n, false);
    }
}

#[derive(Default)]
struct Model {
    vols: HashMap<String, MVol>,
    snaps: HashMap<(String, String), MVol>,
}

fn pattern(seed: u8, len: usize, lba: u64) -> Vec<u8> {
    (0..len)
        .map(|i| {
            seed.wrapping_add((i as u64 / 7 + lba) as u8)
                .wrapping_mul(31)
                | 1
        })
        .collect()
}

async fn verify(pool: &Pool, m: &Model) {
    let st = pool.status();
    assert_eq!(st.volumes, m.vols.len());
    assert_eq!(st.snapshots, m.snaps.len());
    for (name, mv) in &m.vols {
        let vol = pool.volume(name).expect("volume exists");
        assert_eq!(
            vol.num_blocks() * BS,
            mv.data.len() as u64,
            "size of {name}"
        );
        let got = vol
            .read(0, (mv.data.len() as u64 / BS) as u32)
            .await
            .expect("read");
        assert!(got[..] == mv.data[..], "data of {name} differs");
        let info = pool.volume_info(name).expect("info");
        let mapped = mv.mapped.iter().filter(|&&b| b).count() as u64;
        assert_eq!(info.mapped_bytes, mapped * CS, "mapped of {name}");
        if info.guarantee == Guarantee::None {
            assert_eq!(info.reserved_bytes, 0);
        } else {
            assert!(info.reserved_bytes <= (mv.data.len() as u64).div_ceil(CS) * CS);
        }
    }
    for ((v, s), ms) in &m.snaps {
        let info = pool
            .snapshots(Some(v))
            .into_iter()
            .find(|i| &i.name == s)
            .expect("snapshot listed");
        let mapped = ms.mapped.iter().filter(|&&b| b).count() as u64;
        assert_eq!(info.mapped_bytes, mapped * CS, "mapped of {v}@{s}");
        assert_eq!(info.size_bytes, ms.data.len() as u64);
    }
    let r = pool.check().await.expect("check");
    assert!(r.is_clean(), "check: {:?}", r.errors);
    let st = pool.status();
    let reserved: u64 = pool.volumes().iter().map(|v| v.reserved_bytes).sum();
    assert_eq!(st.reserved_bytes, reserved);
    assert!(st.used_bytes + st.reserved_bytes <= st.capacity_bytes);
}

async fn run(ops: Vec<Op>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = PoolOptions {
        chunk_size: CS as u32,
        capacity_bytes: Some(24 << 20),
        soft_threshold_pct: None,
    };
    let mut pool = Pool::create(dir.path(), &opts).await.expect("create");
    let mut m = Model::default();
    for op in ops {
        match op {
            Op::Create(v, c, full) => {
                let name = VOLS[v];
                let g = if full {
                    Guarantee::Full
                } else {
                    Guarantee::None
                };
                let r = pool
                    .create_volume(name, c * CS - if c % 2 == 0 { BS } else { 0 }, BS as u32, g)
                    .await;
                if m.vols.contains_key(name) {
                    assert!(matches!(r, Err(StorageError::AlreadyExists(_))));
                } else {
                    r.expect("create volume");
                    let mut mv = MVol::default();
                    mv.resize((c * CS - if c % 2 == 0 { BS } else { 0 }) as usize);
                    m.vols.insert(name.into(), mv);
                }
            }
            Op::Write(v, lba, n, seed) => {
                let Some(mv) = m.vols.get_mut(VOLS[v]) else {
                    continue;
                };
                let blocks = mv.data.len() as u64 / BS;
                if lba >= blocks {
                    continue;
                }
                let n = n.min(blocks - lba);
                let data = pattern(seed, (n * BS) as usize, lba);
                let vol = pool.volume(VOLS[v]).expect("vol");
                // Split into two buffers to exercise gather writes.
                let cut = (data.len() / 2) / BS as usize * BS as usize;
                let b = Bytes::from(data.clone());
                vol.write_vectored(lba, vec![b.slice(..cut), b.slice(cut..)], seed % 5 == 0)
                    .await
                    .expect("write");
                let off = (lba * BS) as usize;
                mv.data[off..off + data.len()].copy_from_slice(&data);
                for c in (off as u64 / CS)..=((off + data.len() - 1) as u64 / CS) {
                    mv.mapped[c as usize] = true;
                }
            }
            Op::Unmap(v, lba, n) | Op::Zero(v, lba, n) => {
                let Some(mv) = m.vols.get_mut(VOLS[v]) else {
                    continue;
                };
                let blocks = mv.data.len() as u64 / BS;
                if lba >= blocks {
                    continue;
                }
                let n = n.min(blocks - lba);
                let vol = pool.volume(VOLS[v]).expect("vol");
                let is_unmap = matches!(op, Op::Unmap(..));
                if is_unmap {
                    vol.unmap(lba, n).await.expect("unmap");
                } else {
                    vol.write_zeroes(lba, n, false).await.expect("write zeroes");
                }
                // Zeroing a thin volume deallocates whole chunks just like UNMAP; only a
                // full-guarantee volume keeps (and maps) the zeroed chunks.
                let unmap = is_unmap || vol.info().guarantee == Guarantee::None;
                let off = lba * BS;
                let end = off + n * BS;
                mv.data[off as usize..end as usize].fill(0);
                let size = mv.data.len() as u64;
                for c in (off / CS)..=((end - 1) / CS) {
                    let cstart = c * CS;
                    let cend = (cstart + CS).min(size);
                    if !unmap {
                        mv.mapped[c as usize] = true;
                    } else if off <= cstart && end >= cend {
                        mv.mapped[c as usize] = false;
                    }
                }
            }
            Op::Snap(v, s) => {
                let key = (VOLS[v].to_string(), SNAPS[s].to_string());
                let r = pool.snapshot(VOLS[v], SNAPS[s]).await;
                match m.vols.get(VOLS[v]) {
                    None => assert!(matches!(r, Err(StorageError::NotFound(_)))),
                    Some(_) if m.snaps.contains_key(&key) => {
                        assert!(matches!(r, Err(StorageError::AlreadyExists(_))))
                    }
                    Some(mv) => {
                        r.expect("snapshot");
                        m.snaps.insert(key, mv.clone());
                    }
                }
            }
            Op::CloneSnap(v, s, d) => {
                let key = (VOLS[v].to_string(), SNAPS[s].to_string());
                let src = format!("{}@{}", VOLS[v], SNAPS[s]);
                let r = pool.clone_volume(&src, VOLS[d], None).await;
                match m.snaps.get(&key) {
                    Some(ms) if !m.vols.contains_key(VOLS[d]) => {
                        r.expect("clone snap");
                        m.vols.insert(VOLS[d].into(), ms.clone());
                    }
                    _ => assert!(r.is_err()),
                }
            }
            Op::CloneLive(v, d) => {
                let r = pool.clone_volume(VOLS[v], VOLS[d], None).await;
                match m.vols.get(VOLS[v]) {
                    Some(mv) if !m.vols.contains_key(VOLS[d]) => {
                        r.expect("clone live");
                        let c = mv.clone();
                        m.vols.insert(VOLS[d].into(), c);
                    }
                    _ => assert!(r.is_err()),
                }
            }
            Op::DelVol(v) => {
                let r = pool.delete_volume(VOLS[v]).await;
                if m.vols.remove(VOLS[v]).is_some() {
                    r.expect("delete volume");
                    m.snaps.retain(|(vv, _), _| vv != VOLS[v]);
                } else {
                    assert!(matches!(r, Err(StorageError::NotFound(_))));
                }
            }
            Op::DelSnap(v, s) => {
                let key = (VOLS[v].to_string(), SNAPS[s].to_string());
                let r = pool.delete_snapshot(VOLS[v], SNAPS[s]).await;
                if m.snaps.remove(&key).is_some() {
                    r.expect("delete snapshot");
                } else {
                    assert!(matches!(r, Err(StorageError::NotFound(_))));
                }
            }
            Op::Rollback(v, s) => {
                let key = (VOLS[v].to_string(), SNAPS[s].to_string());
                let r = pool.rollback(VOLS[v], SNAPS[s]).await;
                match m.snaps.get(&key) {
                    Some(ms) => {
                        r.expect("rollback");
                        m.vols.insert(VOLS[v].into(), ms.clone());
                    }
                    None => assert!(r.is_err()),
                }
            }
            Op::Resize(v, blocks) => {
                let Some(mv) = m.vols.get_mut(VOLS[v]) else {
                    continue;
                };
                pool.resize_volume(VOLS[v], blocks * BS, true)
                    .await
                    .expect("resize");
                mv.resize((blocks * BS) as usize);
            }
            Op::Split(v) => {
                if m.vols.contains_key(VOLS[v]) {
                    let job = pool.start_split(VOLS[v]).expect("split");
                    job.wait().await.expect("split finished");
                }
            }
            Op::Crash => {
                pool.flush().await.expect("flush");
                drop(pool);
                pool = Pool::open(dir.path()).await.expect("open after crash");
            }
            Op::Reopen => {
                pool.close().await.expect("close");
                drop(pool);
                pool = Pool::open(dir.path()).await.expect("reopen");
            }
        }
        verify(&pool, &m).await;
    }
    pool.reconcile_space().await.expect("reconcile");
    verify(&pool, &m).await;
    // Unique figures never exceed mapped and sum to at most what the pool uses.
    let st = pool.status();
    let mut sum = 0;
    for v in pool.volumes() {
        assert!(v.unique_bytes <= v.mapped_bytes);
        sum += v.unique_bytes;
    }
    for s in pool.snapshots(None) {
        assert!(s.unique_bytes <= s.mapped_bytes);
        sum += s.unique_bytes;
    }
    assert!(sum <= st.used_bytes);
    pool.close().await.expect("close");
    let pool = Pool::open(dir.path()).await.expect("final reopen");
    verify(&pool, &m).await;
    pool.close().await.expect("close");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, max_shrink_iters: 200, ..ProptestConfig::default() })]
    #[test]
    fn random_operations_match_model(ops in proptest::collection::vec(op(), 1..40)) {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
        rt.block_on(run(ops));
    }
}
