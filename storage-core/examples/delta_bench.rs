//! Snapshot delta benchmark (issue 18): the time to find N changed chunks between two
//! snapshots of a 1 TiB volume (64 KiB chunks: 16 M logical chunks), for N = 1 000 and
//! 1 000 000, on a volume whose older snapshot maps a large base (default 2 M chunks,
//! 128 GiB) and, alongside, on one with no base: the delta walks only the layers between
//! the two snapshots (docs/decisions/0017-replication-engine.md), so its time follows N, not
//! the volume size nor what the older snapshot maps. For contrast, the full delta of the
//! base snapshot (every mapped chunk: what a scan of the maps would cost at least).
//!
//! The chunks are mapped without being written (`Pool::bench_map_unwritten`, feature
//! `bench-internals`), so the pool file stays sparse. The 1 000 changes are scattered at
//! random over the whole volume; the 1 M changes are 1 000 runs of 1 000.
//!
//! Run: `cargo run --release -p storage-core --features bench-internals --example
//! delta_bench -- [DIR] [--base-m 2] [--rounds 5]`.

use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use storage_core::{Guarantee, Pool, PoolOptions, SnapshotRef};

const CHUNK: u64 = 65536;
const TIB: u64 = 1 << 40;
const M: u64 = 1 << 20;

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

/// Map `count` scattered chunks (1 000-chunk runs when `runs`, else single chunks) that
/// avoid nothing in particular: overwrites of base chunks are changes too.
async fn map_changes(pool: &Pool, vol: &str, count: u64, seed: u64) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let chunks = TIB / CHUNK;
    if count > 1000 && count.is_multiple_of(1000) {
        let runs = count / 1000;
        let stride = chunks / runs;
        for r in 0..runs {
            let first = r * stride + rng.gen_range(0..stride - 1000);
            pool.bench_map_unwritten(vol, first, 1000)
                .await
                .expect("map");
        }
    } else {
        let mut picked = std::collections::BTreeSet::new();
        while (picked.len() as u64) < count {
            picked.insert(rng.gen_range(0..chunks));
        }
        for i in picked {
            pool.bench_map_unwritten(vol, i, 1).await.expect("map");
        }
    }
}

/// Median and minimum of `rounds` timings of the delta `from -> to` (and its length).
fn time_delta(
    pool: &Pool,
    from: Option<&SnapshotRef>,
    to: &SnapshotRef,
    rounds: usize,
) -> (Duration, Duration, usize) {
    let mut t = Vec::new();
    let mut n = 0;
    for _ in 0..rounds {
        let start = Instant::now();
        let d = pool.snapshot_delta(from, to).expect("delta");
        t.push(start.elapsed());
        n = d.changes.len();
    }
    t.sort();
    (t[t.len() / 2], t[0], n)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let base_m: u64 = arg(&args, "--base-m")
        .and_then(|s| s.parse().ok())
        .unwrap_or(2);
    let rounds: usize = arg(&args, "--rounds")
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = args
        .first()
        .filter(|a| !a.starts_with("--"))
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| tmp.path().to_path_buf());
    let base = base_m * M;
    let path = dir.join(format!("delta-bench-{}.img", std::process::id()));
    let opts = PoolOptions {
        chunk_size: CHUNK as u32,
        capacity_bytes: Some((base + 2 * M + 2 * M + 8192) * CHUNK),
        soft_threshold_pct: None,
    };
    let pool = Pool::create(&path, &opts).await.expect("create pool");
    let t0 = Instant::now();
    for (vol, with_base) in [("big", true), ("empty", false)] {
        pool.create_volume(vol, TIB, 4096, Guarantee::None)
            .await
            .expect("volume");
        if with_base {
            let mut first = 0;
            while first < base {
                let n = (base - first).min(M / 4);
                pool.bench_map_unwritten(vol, first, n).await.expect("map");
                first += n;
            }
        }
        pool.snapshot(vol, "s0").await.expect("s0");
        map_changes(&pool, vol, 1000, 1).await;
        pool.snapshot(vol, "s1k").await.expect("s1k");
        map_changes(&pool, vol, 1_000_000, 2).await;
        pool.snapshot(vol, "s1m").await.expect("s1m");
    }
    println!(
        "set-up: 2 volumes of 1 TiB, base {} M chunks mapped in 'big', {:.1} s",
        base_m,
        t0.elapsed().as_secs_f64()
    );
    println!("delta                               changes   median ms   min ms");
    // Alternate the cases round by round so both see the same host load.
    let cases: Vec<(&str, Option<SnapshotRef>, SnapshotRef)> = vec![
        (
            "1 000 changed, big base",
            Some(SnapshotRef::new("big", "s0")),
            SnapshotRef::new("big", "s1k"),
        ),
        (
            "1 000 changed, no base",
            Some(SnapshotRef::new("empty", "s0")),
            SnapshotRef::new("empty", "s1k"),
        ),
        (
            "1 000 000 changed, big base",
            Some(SnapshotRef::new("big", "s1k")),
            SnapshotRef::new("big", "s1m"),
        ),
        (
            "1 000 000 changed, no base",
            Some(SnapshotRef::new("empty", "s1k")),
            SnapshotRef::new("empty", "s1m"),
        ),
        (
            "full delta of the base",
            None,
            SnapshotRef::new("big", "s0"),
        ),
    ];
    let mut results: Vec<Vec<Duration>> = vec![Vec::new(); cases.len()];
    let mut lens = vec![0; cases.len()];
    for _ in 0..rounds {
        for (k, (_, from, to)) in cases.iter().enumerate() {
            let (med, _, n) = time_delta(&pool, from.as_ref(), to, 1);
            results[k].push(med);
            lens[k] = n;
        }
    }
    for (k, (name, _, _)) in cases.iter().enumerate() {
        let mut t = results[k].clone();
        t.sort();
        println!(
            "{name:<34} {:>9} {:>10.3} {:>8.3}",
            lens[k],
            ms(t[t.len() / 2]),
            ms(t[0])
        );
    }
    pool.close().await.expect("close");
    let _ = std::fs::remove_file(&path);
}
