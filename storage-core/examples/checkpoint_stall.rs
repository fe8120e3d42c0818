//! Checkpoint stall benchmark: the latency of 4 KiB random reads and of 4 KiB first writes
//! (each to a chunk never written, so each appends a record to the journal), each at queue
//! depth 1, and of flushes (4 KiB FUA overwrites at queue depth 1: each waits for a commit),
//! while a checkpoint runs, on pools with 1 M and 8 M mapped chunks (64 KiB chunks: 64 GiB
//! and 512 GiB written), in four modes (`--modes`, default `hold,double`):
//!
//! - `capture`: `Pool::bench_full_capture(true)`, the checkpoint copies the live maps out
//!   under the metadata lock, as every checkpoint did before the replica
//!   (docs/decisions/0015-checkpoint-replica.md), and holds the journal lock throughout;
//! - `hold`: `Pool::bench_checkpoint_holds_journal(true)`, the replica is imaged but the
//!   journal lock is held for the whole checkpoint (encode, write, two syncs), as before the
//!   journal was double-buffered (docs/decisions/0021-double-buffered-journal.md);
//! - `inline`: `Pool::bench_checkpoint_inline(true)`, double-buffered, but the commit thread
//!   writes the checkpoint itself and seals nothing meanwhile, so flushes wait for it, as
//!   before checkpoints had a thread of their own (docs/decisions/0029-checkpoint-thread.md);
//! - `double`: the build's own way: appends move to the other journal half, the checkpoint
//!   runs without the journal lock on a thread of its own, and the commit thread goes on
//!   sealing the new half's blocks.
//!
//! The modes alternate round by round in one process, so all see the same (noisy, shared)
//! host.
//!
//! The chunks are mapped without being written (`Pool::bench_map_unwritten`, feature
//! `bench-internals`): the pool file stays sparse and reads of it return zeros from the page
//! cache, so a read's latency is the store's own path, and the stall is what it waits for.
//!
//! Per round: a reader runs QD1 random reads and a writer QD1 first writes for 300 ms, the
//! checkpoint is requested, both go on until 300 ms after it returned; the figures are over
//! the operations that overlapped the checkpoint (p50, p99, p99.9, max) and the checkpoint's
//! duration.
//!
//! Run: `cargo run --release -p storage-core --features bench-internals --example
//! checkpoint_stall -- [DIR] [--rounds N] [--sizes 1,8] [--modes hold,inline,double]` (sizes in M
//! chunks; DIR defaults to a temporary directory; the pool files are sparse and removed
//! afterwards).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use storage_core::{Guarantee, Pool, PoolOptions};

const CHUNK: u64 = 65536;
const M: u64 = 1 << 20;

/// (start offset from the checkpoint request, latency) of every read.
type Lat = Vec<(Duration, Duration)>;

/// How a round's checkpoint runs.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Capture,
    Hold,
    Inline,
    Double,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Capture => "capture",
            Mode::Hold => "hold",
            Mode::Inline => "inline",
            Mode::Double => "double",
        }
    }

    fn set(self, pool: &Pool) {
        pool.bench_full_capture(self == Mode::Capture);
        pool.bench_checkpoint_holds_journal(self == Mode::Hold);
        pool.bench_checkpoint_inline(self == Mode::Inline);
    }
}

/// Per round: (mode, read p99.9, read max, lookup max, first write p99.9, first write max,
/// flush p99, flush p99.9, flush max).
type Summary = (
    Mode,
    Duration,
    Duration,
    Duration,
    Duration,
    Duration,
    Duration,
    Duration,
    Duration,
);

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
    /// Latencies of the first writes that overlapped the checkpoint, sorted.
    writes: Vec<Duration>,
    /// Latencies of the FUA overwrites that overlapped the checkpoint, sorted.
    flushes: Vec<Duration>,
    /// Longest metadata lookup (`Volume::info`: the metadata lock, no I/O) that overlapped it.
    probe_max: Duration,
    checkpoint: Duration,
}

/// One round: reads, first writes (and metadata-only lookups) around a checkpoint. First
/// writes go to chunks `fresh..` (never written), from `*next` on.
async fn round(pool: &Pool, chunks: u64, seed: u64, next: &mut u64) -> Round {
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
                // A read the page cache serves completes without ever returning Pending, so
                // without this the reader would keep its runtime worker to itself and the
                // writer's wake-ups would queue behind it (an iSCSI connection task yields
                // on its socket between commands).
                if lat.len().is_multiple_of(16) {
                    tokio::task::yield_now().await;
                }
            }
            lat
        })
    };
    let writer = {
        let stop = stop.clone();
        let vol = pool.volume("v").expect("volume");
        let first = *next;
        tokio::spawn(async move {
            let mut lat: Lat = Vec::new();
            let mut c = first;
            let data = bytes::Bytes::from(vec![0xa5u8; 4096]);
            while !stop.load(Ordering::Acquire) {
                let s = Instant::now();
                vol.write(c * (CHUNK / 4096), data.clone(), false)
                    .await
                    .expect("first write");
                lat.push((s - t0, s.elapsed()));
                c += 1;
            }
            (lat, c)
        })
    };
    // QD1 FUA overwrites of one chunk mapped before the round: each returns once a commit
    // has synced the data and sealed the journal (docs/storage-format.md, "Transaction
    // model").
    let flusher = {
        let stop = stop.clone();
        let vol = pool.volume("v").expect("volume");
        tokio::spawn(async move {
            let mut lat: Lat = Vec::new();
            let data = bytes::Bytes::from(vec![0x5au8; 4096]);
            while !stop.load(Ordering::Acquire) {
                let s = Instant::now();
                vol.write(0, data.clone(), true).await.expect("FUA write");
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
    let (wlat, c) = writer.await.expect("writer");
    let flat = flusher.await.expect("flusher");
    *next = c;
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
        writes: overlapping(wlat),
        flushes: overlapping(flat),
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
    let modes: Vec<Mode> = arg(&args, "--modes")
        .unwrap_or_else(|| "hold,double".into())
        .split(',')
        .filter_map(|s| match s.trim() {
            "capture" => Some(Mode::Capture),
            "hold" => Some(Mode::Hold),
            "inline" => Some(Mode::Inline),
            "double" => Some(Mode::Double),
            _ => None,
        })
        .collect();
    println!("| mapped chunks | mode | round | reads during | read p50 µs | read p99.9 µs | read max µs | lookup max µs | first writes during | write p50 µs | write p99 µs | write p99.9 µs | write max µs | flushes during | flush p50 µs | flush p99 µs | flush p99.9 µs | flush max µs | checkpoint ms |");
    println!("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for &m in &sizes {
        let chunks = m * M;
        let path = dir.join(format!("stall-{m}M.img"));
        let _ = std::fs::remove_file(&path);
        let opts = PoolOptions {
            chunk_size: CHUNK as u32,
            capacity_bytes: Some((chunks + chunks / 4 + 4096) * CHUNK),
            soft_threshold_pct: None,
        };
        let pool = Pool::create(&path, &opts).await.expect("create pool");
        // Room past the mapped chunks for the first writes.
        pool.create_volume("v", (chunks + chunks / 8) * CHUNK, 4096, Guarantee::None)
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
        let mut next = chunks;
        for r in 0..rounds * modes.len() {
            // Each mode runs in each position of the rotation as often as the others.
            let k = modes.len();
            let mode = modes[(r % k + r / k) % k];
            mode.set(&pool);
            let rd = round(&pool, chunks, r as u64, &mut next).await;
            let (rs, ws, fs) = (&rd.reads, &rd.writes, &rd.flushes);
            println!(
                "| {m} M | {} | {} | {} | {:.0} | {:.0} | {:.0} | {:.0} | {} | {:.0} | {:.0} | {:.0} | {:.0} | {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} |",
                mode.name(),
                r / k + 1,
                rs.len(),
                us(pct(rs, 0.5)),
                us(pct(rs, 0.999)),
                us(pct(rs, 1.0)),
                us(rd.probe_max),
                ws.len(),
                us(pct(ws, 0.5)),
                us(pct(ws, 0.99)),
                us(pct(ws, 0.999)),
                us(pct(ws, 1.0)),
                fs.len(),
                us(pct(fs, 0.5)),
                us(pct(fs, 0.99)),
                us(pct(fs, 0.999)),
                us(pct(fs, 1.0)),
                rd.checkpoint.as_secs_f64() * 1e3
            );
            summary.push((
                mode,
                pct(rs, 0.999),
                pct(rs, 1.0),
                rd.probe_max,
                pct(ws, 0.999),
                pct(ws, 1.0),
                pct(fs, 0.99),
                pct(fs, 0.999),
                pct(fs, 1.0),
            ));
        }
        for &mode in &modes {
            let v: Vec<_> = summary.iter().filter(|s| s.0 == mode).collect();
            let range = |f: &dyn Fn(&Summary) -> Duration| {
                let lo = v.iter().map(|s| us(f(s))).fold(f64::MAX, f64::min);
                let hi = v.iter().map(|s| us(f(s))).fold(0.0, f64::max);
                format!("{lo:.0}-{hi:.0}")
            };
            eprintln!(
                "{m} M {}: read p99.9 {} µs, read max {} µs, lookup max {} µs, first write p99.9 {} µs, first write max {} µs, flush p99 {} µs, flush p99.9 {} µs, flush max {} µs",
                mode.name(),
                range(&|s| s.1),
                range(&|s| s.2),
                range(&|s| s.3),
                range(&|s| s.4),
                range(&|s| s.5),
                range(&|s| s.6),
                range(&|s| s.7),
                range(&|s| s.8),
            );
        }
        pool.close().await.expect("close");
        drop(pool);
        let _ = std::fs::remove_file(&path);
    }
}
