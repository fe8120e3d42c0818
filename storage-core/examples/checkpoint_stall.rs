//! Checkpoint stall benchmark: the latency of 4 KiB random reads at queue depth 1 while a
//! checkpoint runs, on pools with 1 M and 8 M mapped chunks (64 KiB chunks: 64 GiB and
//! 512 GiB written), before and after the checkpoint replica
//! (docs/decisions/0015-checkpoint-replica.md).
//!
//! "before" is the same build with `Pool::bench_full_capture(true)`: the checkpoint copies the
//! live maps out under the metadata lock, as every checkpoint did before the replica; "after"
//! images the replica and holds the lock only to take the buffered records. The two modes
//! alternate round by round in one process, so both see the same (noisy, shared) host.
//!
//! The chunks are mapped without being written (`Pool::bench_map_unwritten`, feature
//! `bench-internals`): the pool file stays sparse and reads of it return zeros from the page
//! cache, so a read's latency is the store's own path, and the stall is what it waits for.
//!
//! Per round: a reader runs QD1 random reads for 300 ms, the checkpoint is requested, the
//! reader goes on until 300 ms after it returned; the figures are over the reads that
//! started while the checkpoint ran (p50, p99.9, max) and the checkpoint's duration.
//!
//! Run: `cargo run --release -p storage-core --features bench-internals --example
//! checkpoint_stall -- [DIR] [--rounds N] [--sizes 1,8]` (sizes in M chunks; DIR defaults to
//! a temporary directory; the pool files are sparse and removed afterwards).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use storage_core::{Guarantee, Pool, PoolOptions};

const CHUNK: u64 = 65536;
const M: u64 = 1 << 20;

/// (start offset from the checkpoint request, latency) of every read.
type Lat = Vec<(Duration, Duration)>;

/// Per round: (before?, read p99.9, read max, lookup max).
type Summary = (bool, Duration, Duration, Duration);

fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

/// What one round measured.
struct Round {
    /// Latencies of the reads that overlapped the checkpoint, sorted.
    reads: Vec<Duration>,
    /// Longest metadata lookup (`Volume::info`: the metadata lock, no I/O) that overlapped it.
    probe_max: Duration,
    checkpoint: Duration,
}

/// One round: reads (and metadata-only lookups) around a checkpoint.
async fn round(pool: &Pool, chunks: u64, seed: u64) -> Round {
    let vol = pool.volume("v").expect("volume");
    let stop = Arc::new(AtomicBool::new(false));
    let t0 = Instant::now();
    // A thread of its own, so the runtime's scheduling of the reader does not show in it: the
    // lookup only takes the metadata lock, no I/O, so its wait is the lock's stall.
    let prober = {
        let stop = stop.clone();
        let vol = vol.clone();
        std::thread::spawn(move || {
            let mut lat: Lat = Vec::new();
            while !stop.load(Ordering::Acquire) {
                let s = Instant::now();
                std::hint::black_box(vol.info());
                lat.push((s - t0, s.elapsed()));
                std::thread::sleep(Duration::from_micros(200));
            }
            lat
        })
    };
    let reader = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let mut lat: Lat = Vec::new();
            while !stop.load(Ordering::Acquire) {
                let lba = rng.gen_range(0..chunks) * (CHUNK / 4096);
                let s = Instant::now();
                vol.read(lba, 1).await.expect("read");
                lat.push((s - t0, s.elapsed()));
            }
            lat
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let c0 = t0.elapsed();
    pool.checkpoint().await.expect("checkpoint");
    let c1 = t0.elapsed();
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Release);
    let lat = reader.await.expect("reader");
    let probes = prober.join().expect("prober");
    // Those that started while the checkpoint ran, or that were still waiting when it began.
    let overlapping = |lat: Lat| -> Vec<Duration> {
        let mut v: Vec<Duration> = lat
            .into_iter()
            .filter(|&(s, l)| s + l >= c0 && s <= c1)
            .map(|(_, l)| l)
            .collect();
        v.sort_unstable();
        v
    };
    Round {
        reads: overlapping(lat),
        probe_max: overlapping(probes).last().copied().unwrap_or_default(),
        checkpoint: c1 - c0,
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rounds: usize = arg(&args, "--rounds")
        .and_then(|s| s.parse().ok())
        .unwrap_or(4);
    let sizes: Vec<u64> = arg(&args, "--sizes")
        .unwrap_or_else(|| "1,8".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = args
        .iter()
        .enumerate()
        .find(|(i, a)| !a.starts_with("--") && (*i == 0 || !args[i - 1].starts_with("--")))
        .map(|(_, a)| std::path::PathBuf::from(a))
        .unwrap_or_else(|| tmp.path().to_path_buf());
    println!("| mapped chunks | mode | round | reads during | p50 µs | p99.9 µs | max µs | lookup max µs | checkpoint ms |");
    println!("|---:|---|---:|---:|---:|---:|---:|---:|---:|");
    for &m in &sizes {
        let chunks = m * M;
        let path = dir.join(format!("stall-{m}M.img"));
        let _ = std::fs::remove_file(&path);
        let opts = PoolOptions {
            chunk_size: CHUNK as u32,
            capacity_bytes: Some((chunks + chunks / 8 + 4096) * CHUNK),
            soft_threshold_pct: None,
        };
        let pool = Pool::create(&path, &opts).await.expect("create pool");
        pool.create_volume("v", chunks * CHUNK, 4096, Guarantee::None)
            .await
            .expect("volume");
        let t = Instant::now();
        let batch = 256 * 1024;
        let mut first = 0;
        while first < chunks {
            let n = batch.min(chunks - first);
            pool.bench_map_unwritten("v", first, n).await.expect("map");
            first += n;
        }
        // No background reconcile pass during the rounds (it would scan the 8 M entries),
        // and every round starts from an empty journal.
        pool.reconcile_space().await.expect("reconcile");
        pool.checkpoint().await.expect("checkpoint");
        eprintln!(
            "{m} M chunks mapped in {:.1} s, image {} MB",
            t.elapsed().as_secs_f64(),
            pool.metadata_image_bytes() / 1_000_000
        );
        let mut summary: Vec<Summary> = Vec::new();
        for r in 0..rounds * 2 {
            // before, after, after, before, ...: each mode runs first as often as the other.
            let before = (r % 4 == 0) || (r % 4 == 3);
            pool.bench_full_capture(before);
            let rd = round(&pool, chunks, r as u64).await;
            let during = &rd.reads;
            let (p999, max) = (pct(during, 0.999), pct(during, 1.0));
            println!(
                "| {m} M | {} | {} | {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} |",
                if before { "before" } else { "after" },
                r / 2 + 1,
                during.len(),
                us(pct(during, 0.5)),
                us(p999),
                us(max),
                us(rd.probe_max),
                rd.checkpoint.as_secs_f64() * 1e3
            );
            summary.push((before, p999, max, rd.probe_max));
        }
        for before in [true, false] {
            let v: Vec<_> = summary.iter().filter(|s| s.0 == before).collect();
            let range = |f: &dyn Fn(&Summary) -> Duration| {
                let lo = v.iter().map(|s| us(f(s))).fold(f64::MAX, f64::min);
                let hi = v.iter().map(|s| us(f(s))).fold(0.0, f64::max);
                format!("{lo:.0}-{hi:.0}")
            };
            eprintln!(
                "{m} M {}: read p99.9 {} µs, read max {} µs, lookup max {} µs",
                if before { "before" } else { "after" },
                range(&|s| s.1),
                range(&|s| s.2),
                range(&|s| s.3),
            );
        }
        pool.close().await.expect("close");
        drop(pool);
        let _ = std::fs::remove_file(&path);
    }
}
