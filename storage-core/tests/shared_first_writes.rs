//! First writes into shared chunks (issue 17): a partial first write carries over only the
//! old chunk's bytes outside the written range and writes them around the caller's buffers
//! in one gathered write; a whole-chunk first write copies nothing. These hold the result to
//! a byte model: writes at any 512-byte offset and length (inside one chunk, touching either
//! end, covering it whole, spanning several), into a clone of a snapshot, the live volume,
//! snapshots taken between writes and a live clone, and then every view is read back whole,
//! before and after a reopen, with `check` clean. The other side of every copy-on-write (the
//! snapshot or origin still holding the old chunk) must read as it did before.

use std::collections::BTreeMap;

use bytes::Bytes;
use proptest::prelude::*;
use storage_core::{Guarantee, Pool, PoolOptions};

const BS: u64 = 512;
const CS: u64 = 16384;
const CHUNKS: u64 = 8;
const SIZE: u64 = CHUNKS * CS;

#[derive(Clone, Debug)]
enum Op {
    /// Write `blocks` blocks of `tag` at `lba` into view `target` (0 = "v", 1 = "c", 2 =
    /// the live clone "l" once it exists, else "v").
    Write {
        target: u8,
        lba: u64,
        blocks: u64,
        tag: u8,
    },
    /// Snapshot "v" (the chunks it shares become copy-on-write for "v").
    Snapshot,
    /// Clone "v" live (its top becomes a ghost both share), once.
    LiveClone,
}

fn op() -> impl Strategy<Value = Op> {
    let blocks_per_chunk = CS / BS;
    prop_oneof![
        8 => (0u8..3, 0..SIZE / BS, 1u64..=blocks_per_chunk * 2 + 1, 1u8..=255).prop_map(
            |(target, lba, blocks, tag)| Op::Write {
                target,
                lba,
                blocks: blocks.min(SIZE / BS - lba),
                tag,
            }
        ),
        // Exactly one chunk, aligned: the no-copy path.
        2 => (0u8..3, 0..CHUNKS, 1u8..=255).prop_map(move |(target, c, tag)| Op::Write {
            target,
            lba: c * blocks_per_chunk,
            blocks: blocks_per_chunk,
            tag,
        }),
        1 => Just(Op::Snapshot),
        1 => Just(Op::LiveClone),
    ]
}

fn pattern(tag: u8, lba: u64, blocks: u64) -> Vec<u8> {
    (0..blocks * BS)
        .map(|i| tag ^ (((lba * BS + i) / 7) as u8))
        .collect()
}

async fn read_all(pool: &Pool, name: &str) -> Vec<u8> {
    pool.volume(name)
        .expect("volume")
        .read(0, (SIZE / BS) as u32)
        .await
        .expect("read")
        .to_vec()
}

/// Read every view, through a clone for snapshots, and compare with the model.
async fn verify(pool: &Pool, models: &BTreeMap<String, Vec<u8>>, when: &str) {
    for (name, want) in models {
        let reader = if name.contains('@') {
            let r = format!("read-{}", name.replace('@', "-"));
            pool.clone_volume(name, &r, None)
                .await
                .expect("clone the snapshot");
            r
        } else {
            name.clone()
        };
        let got = read_all(pool, &reader).await;
        if let Some(at) = got.iter().zip(want).position(|(a, b)| a != b) {
            panic!(
                "{when}: '{name}' differs from the model at byte {at} (chunk {}, offset {})",
                at as u64 / CS,
                at as u64 % CS
            );
        }
        if reader != *name {
            pool.delete_volume(&reader).await.expect("delete reader");
        }
    }
}

async fn run(ops: Vec<Op>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = PoolOptions {
        chunk_size: CS as u32,
        capacity_bytes: Some(32 << 20),
        soft_threshold_pct: None,
    };
    let pool = Pool::create(dir.path(), &opts).await.expect("create");
    pool.create_volume("v", SIZE, BS as u32, Guarantee::None)
        .await
        .expect("volume");
    // Every chunk of "v" holds data, then a snapshot shares all of them with a clone.
    let base = pattern(0x5a, 0, SIZE / BS);
    pool.volume("v")
        .expect("v")
        .write(0, Bytes::from(base.clone()), false)
        .await
        .expect("fill");
    pool.snapshot("v", "base").await.expect("snapshot");
    pool.clone_volume("v@base", "c", None).await.expect("clone");
    let mut models: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for name in ["v", "v@base", "c"] {
        models.insert(name.to_string(), base.clone());
    }
    let mut snaps = 0;
    let mut live = false;
    for op in ops {
        match op {
            Op::Write {
                target,
                lba,
                blocks,
                tag,
            } => {
                if blocks == 0 {
                    continue;
                }
                let name = match target {
                    0 => "v",
                    1 => "c",
                    _ if live => "l",
                    _ => "v",
                };
                let data = pattern(tag, lba, blocks);
                let m = models.get_mut(name).expect("model");
                let off = (lba * BS) as usize;
                m[off..off + data.len()].copy_from_slice(&data);
                pool.volume(name)
                    .expect("volume")
                    .write(lba, Bytes::from(data), false)
                    .await
                    .expect("write");
            }
            Op::Snapshot => {
                snaps += 1;
                let s = format!("s{snaps}");
                pool.snapshot("v", &s).await.expect("snapshot");
                let m = models["v"].clone();
                models.insert(format!("v@{s}"), m);
            }
            Op::LiveClone if !live => {
                live = true;
                pool.clone_volume("v", "l", None).await.expect("live clone");
                let m = models["v"].clone();
                models.insert("l".into(), m);
            }
            Op::LiveClone => {}
        }
    }
    verify(&pool, &models, "before reopen").await;
    let report = pool.check().await.expect("check");
    assert!(report.is_clean(), "{:?}", report.errors);
    pool.close().await.expect("close");

    let pool = Pool::open(dir.path()).await.expect("reopen");
    verify(&pool, &models, "after reopen").await;
    let report = pool.check().await.expect("check");
    assert!(report.is_clean(), "{:?}", report.errors);
    pool.close().await.expect("close");
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("MODEL_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(32),
        max_shrink_iters: 200,
        ..ProptestConfig::default()
    })]
    #[test]
    fn first_writes_into_shared_chunks_match_the_model(ops in proptest::collection::vec(op(), 1..24)) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(run(ops));
    }
}

/// The three shapes of a partial first write into a shared chunk, and a whole one, each
/// once, with the copy-on-write byte count they imply.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_tail_middle_and_whole_chunk_first_writes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = PoolOptions {
        chunk_size: CS as u32,
        capacity_bytes: Some(32 << 20),
        soft_threshold_pct: None,
    };
    let pool = Pool::create(dir.path(), &opts).await.expect("create");
    pool.create_volume("v", SIZE, BS as u32, Guarantee::None)
        .await
        .expect("volume");
    let base = pattern(0x33, 0, SIZE / BS);
    let v = pool.volume("v").expect("v");
    v.write(0, Bytes::from(base.clone()), false)
        .await
        .expect("fill");
    pool.snapshot("v", "s").await.expect("snapshot");
    let bpc = CS / BS;
    let mut m = base.clone();
    let cow0 = pool.stats().cow_bytes;
    // (chunk, first block in it, blocks): at the start, at the end, in the middle, whole.
    let writes = [(0, 0, 3), (1, bpc - 5, 5), (2, 7, 9), (3, 0, bpc)];
    let mut carried = 0;
    for (k, &(chunk, at, blocks)) in writes.iter().enumerate() {
        let lba = chunk * bpc + at;
        let data = pattern(0x80 + k as u8, lba, blocks);
        let off = (lba * BS) as usize;
        m[off..off + data.len()].copy_from_slice(&data);
        v.write(lba, Bytes::from(data), false).await.expect("write");
        carried += CS - blocks * BS;
    }
    assert_eq!(pool.stats().cow_bytes - cow0, carried);
    let mut models = BTreeMap::new();
    models.insert("v".to_string(), m);
    models.insert("v@s".to_string(), base);
    verify(&pool, &models, "after the writes").await;
    pool.close().await.expect("close");
}
