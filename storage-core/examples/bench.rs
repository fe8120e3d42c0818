//! storage-core benchmark: snapshot/clone creation time vs data written, 4 KiB random IOPS at
//! QD1/QD32 and 1 MiB sequential throughput on a fresh volume, a fully shared clone and a
//! clone 32 generations deep, plus metadata bytes per chunk on disk and in memory (a counting
//! global allocator measures the heap).
//!
//! Every I/O figure is paired with `fio --ioengine=io_uring` on a raw file of the same size in
//! the same directory (buffered, like the pool file), run right after the store's run of the
//! same pattern, and the table shows store/raw. The host this runs on is shared and noisy, so
//! a ratio is only meaningful when both sides ran under the same load: hence alternating
//! runs in one process instead of two separate benchmarks. Full runs repeat each pair three
//! times (store first, then raw first, then store first) and report the medians.
//!
//! Run: `cargo run --release -p storage-core --example bench -- [DIR] [--quick]`
//! (DIR defaults to a temporary directory; the pool file is sparse). `FIO=/path/to/fio`
//! picks fio (default: `fio` on PATH); without it the raw column says n/a.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::{Rng, SeedableRng};
use storage_core::{Guarantee, Pool, PoolOptions, Volume};

/// Counts live heap bytes, so the metadata memory figures are measured, not estimated.
struct Counting;

static LIVE: AtomicU64 = AtomicU64::new(0);

// SAFETY: every call is forwarded unchanged to the system allocator; only a counter is kept.
unsafe impl std::alloc::GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: std::alloc::Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as u64, Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { std::alloc::System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: std::alloc::Layout) {
        LIVE.fetch_sub(l.size() as u64, Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { std::alloc::System.dealloc(p, l) }
    }
    unsafe fn alloc_zeroed(&self, l: std::alloc::Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as u64, Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { std::alloc::System.alloc_zeroed(l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: std::alloc::Layout, new: usize) -> *mut u8 {
        LIVE.fetch_add(new as u64, Ordering::Relaxed);
        LIVE.fetch_sub(l.size() as u64, Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { std::alloc::System.realloc(p, l, new) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn live_heap() -> u64 {
    LIVE.load(Ordering::Relaxed)
}

const GIB: u64 = 1 << 30;
const MIB: u64 = 1 << 20;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

async fn fill(vol: &Volume, bytes: u64) -> f64 {
    let buf = Bytes::from(vec![0x5Au8; MIB as usize]);
    let bs = vol.block_size() as u64;
    let start = Instant::now();
    let mut off = 0;
    let mut tasks = Vec::new();
    while off < bytes {
        let v = vol.clone();
        let b = buf.clone();
        let lba = off / bs;
        tasks.push(tokio::spawn(async move { v.write(lba, b, false).await }));
        if tasks.len() == 8 {
            for t in tasks.drain(..) {
                t.await.expect("join").expect("fill write");
            }
        }
        off += MIB;
    }
    for t in tasks {
        t.await.expect("join").expect("fill write");
    }
    vol.flush().await.expect("flush");
    bytes as f64 / MIB as f64 / start.elapsed().as_secs_f64()
}

/// Random 4 KiB I/O at queue depth `qd` for `dur`; returns IOPS.
async fn rand_io(vol: &Volume, write: bool, qd: usize, dur: Duration, span: u64) -> f64 {
    let count = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + dur;
    let bs = vol.block_size() as u64;
    let blocks = span / 4096;
    let mut tasks = Vec::new();
    for t in 0..qd {
        let v = vol.clone();
        let c = count.clone();
        tasks.push(tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(t as u64 + 99);
            let buf = Bytes::from(vec![t as u8; 4096]);
            // The clock is read once per 16 I/Os: on this VM a clock read costs a good
            // fraction of a cached 4 KiB read, and it is the harness's cost, not the store's.
            while Instant::now() < deadline {
                for _ in 0..16 {
                    let lba = rng.gen_range(0..blocks) * 4096 / bs;
                    if write {
                        v.write(lba, buf.clone(), false).await.expect("write");
                    } else {
                        v.read(lba, (4096 / bs) as u32).await.expect("read");
                    }
                }
                c.fetch_add(16, Ordering::Relaxed);
            }
        }));
    }
    let start = Instant::now();
    for t in tasks {
        t.await.expect("join");
    }
    count.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

/// The whole span once in 1 MiB reads with four always in flight (fio's `--iodepth=4`):
/// four tasks take the next offset from a shared cursor.
async fn seq_read(vol: &Volume, span: u64) -> f64 {
    let bs = vol.block_size() as u64;
    let cursor = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let v = vol.clone();
        let cur = cursor.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let off = cur.fetch_add(MIB, Ordering::Relaxed);
                if off >= span {
                    break;
                }
                let got = v.read(off / bs, (MIB / bs) as u32).await.expect("read");
                assert_eq!(got.len() as u64, MIB);
            }
        }));
    }
    for t in tasks {
        t.await.expect("join");
    }
    span as f64 / MIB as f64 / start.elapsed().as_secs_f64()
}

/// One I/O pattern of the profile, for the store and for fio.
#[derive(Clone, Copy)]
enum Pattern {
    RandRead(usize),
    RandWrite(usize),
    SeqRead,
}

impl Pattern {
    const ALL: [Pattern; 5] = [
        Pattern::RandRead(1),
        Pattern::RandRead(32),
        Pattern::SeqRead,
        Pattern::RandWrite(1),
        Pattern::RandWrite(32),
    ];

    fn label(self) -> String {
        match self {
            Pattern::RandRead(qd) => format!("4 KiB randread QD{qd} (IOPS)"),
            Pattern::RandWrite(qd) => format!("4 KiB randwrite QD{qd} (IOPS)"),
            Pattern::SeqRead => "1 MiB seq read QD4 (MB/s)".to_string(),
        }
    }
}

/// The raw-file side: fio with io_uring, buffered, on a file of the span's size.
struct RawFile {
    fio: String,
    path: std::path::PathBuf,
    span: u64,
}

impl RawFile {
    /// Creates and fills the raw file (so reads hit data, as on the filled volume). `None`
    /// when fio cannot be run.
    fn prepare(dir: &std::path::Path, span: u64) -> Option<RawFile> {
        Self::prepare_as(dir, "bench-raw.img", span, MIB as usize)
    }

    /// Like [`RawFile::prepare`], written in `write_size` writes. The size of the writes that
    /// brought data into the page cache sets its folio size, and cached random reads of
    /// large folios are cheaper (fewer xarray nodes and folio structs to touch).
    fn prepare_as(
        dir: &std::path::Path,
        name: &str,
        span: u64,
        write_size: usize,
    ) -> Option<RawFile> {
        let fio = std::env::var("FIO").unwrap_or_else(|_| "fio".to_string());
        let ok = std::process::Command::new(&fio)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        if !ok {
            println!("(fio not found: set FIO=/path/to/fio for the raw-file column)");
            return None;
        }
        let raw = RawFile {
            fio,
            path: dir.join(name),
            span,
        };
        let buf = vec![0x5Au8; write_size];
        let mut f = std::fs::File::create(&raw.path).ok()?;
        for _ in 0..span / write_size as u64 {
            std::io::Write::write_all(&mut f, &buf).ok()?;
        }
        f.sync_all().ok()?;
        Some(raw)
    }

    /// Runs fio for `pat` and returns IOPS (random) or MB/s (sequential); `None` if fio failed.
    fn run(&self, pat: Pattern, dur: Duration) -> Option<f64> {
        let mut cmd = std::process::Command::new(&self.fio);
        cmd.arg("--name=raw")
            .arg(format!("--filename={}", self.path.display()))
            .arg(format!("--size={}", self.span))
            .args(["--ioengine=io_uring", "--direct=0", "--output-format=json"])
            // fio drops the file's page cache before a run by default; the store's reads are
            // served from a warm cache, so the raw file's must be too.
            .args(["--randrepeat=0", "--norandommap", "--invalidate=0"]);
        let (rw, bs, qd, timed) = match pat {
            Pattern::RandRead(qd) => ("randread", "4k", qd, true),
            Pattern::RandWrite(qd) => ("randwrite", "4k", qd, true),
            // Like `seq_read`: the whole span once, four 1 MiB reads in flight.
            Pattern::SeqRead => ("read", "1M", 4, false),
        };
        cmd.arg(format!("--rw={rw}"))
            .arg(format!("--bs={bs}"))
            .arg(format!("--iodepth={qd}"));
        if timed {
            cmd.arg("--time_based")
                .arg(format!("--runtime={}ms", dur.as_millis()));
        }
        let out = cmd.output().ok()?;
        if !out.status.success() {
            return None;
        }
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        let job = v.get("jobs")?.get(0)?;
        let side = if matches!(pat, Pattern::RandWrite(_)) {
            "write"
        } else {
            "read"
        };
        let s = job.get(side)?;
        match pat {
            Pattern::SeqRead => Some(s.get("bw_bytes")?.as_f64()? / MIB as f64),
            _ => s.get("iops")?.as_f64(),
        }
    }
}

/// The store's figure for `pat`.
async fn store_run(vol: &Volume, pat: Pattern, span: u64, dur: Duration) -> f64 {
    match pat {
        Pattern::RandRead(qd) => rand_io(vol, false, qd, dur, span).await,
        Pattern::RandWrite(qd) => rand_io(vol, true, qd, dur, span).await,
        Pattern::SeqRead => seq_read(vol, span).await,
    }
}

fn median_f(mut v: Vec<f64>) -> Option<f64> {
    v.retain(|x| x.is_finite());
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied()
}

/// Prints one table block: every pattern on `vol`, each beside fio on the raw file, the two
/// alternating run by run.
async fn profile(
    label: &str,
    vol: &Volume,
    raw: Option<&RawFile>,
    span: u64,
    dur: Duration,
    rounds: usize,
) {
    for pat in Pattern::ALL {
        let mut store = Vec::new();
        let mut rawv = Vec::new();
        for r in 0..rounds {
            // Alternate who goes first, so a load change mid-pair does not always favour
            // the same side.
            if r % 2 == 1 {
                rawv.extend(raw.and_then(|f| f.run(pat, dur)));
            }
            store.push(store_run(vol, pat, span, dur).await);
            if r % 2 == 0 {
                rawv.extend(raw.and_then(|f| f.run(pat, dur)));
            }
        }
        let st = median_f(store).unwrap_or(0.0);
        let (rv, ratio) = match median_f(rawv) {
            Some(rv) if rv > 0.0 => (format!("{rv:.0}"), format!("{:.2}", st / rv)),
            _ => ("n/a".to_string(), "n/a".to_string()),
        };
        println!(
            "| {label:<28} | {:<28} | {st:>9.0} | {rv:>9} | {ratio:>5} |",
            pat.label()
        );
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quick = args.iter().any(|a| a == "--quick");
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = args
        .iter()
        .find(|a| !a.starts_with("--"))
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| tmp.path().to_path_buf());
    let big = if quick { GIB } else { 8 * GIB };
    let span = if quick { 256 * MIB } else { GIB };
    let dur = Duration::from_secs(if quick { 1 } else { 3 });
    let opts = PoolOptions {
        chunk_size: 65536,
        capacity_bytes: Some(big * 2 + 4 * GIB),
        soft_threshold_pct: None,
    };
    let path = dir.join("bench-pool.img");
    let _ = std::fs::remove_file(&path);
    let pool = Pool::create(&path, &opts).await.expect("create pool");
    println!(
        "backend: {}, chunk 64 KiB, pool {} GiB sparse at {}",
        pool.io_backend(),
        (big * 2 + 4 * GIB) / GIB,
        path.display()
    );

    // Snapshot / clone creation time vs amount of data written.
    println!("\n| written | snapshot µs (median of 5) | clone of snapshot µs | live clone µs | fill MB/s |");
    println!("|---|---|---|---|---|");
    let mut heap_per_chunk = 0.0;
    for (name, bytes) in [("small", 64 * MIB), ("big", big)] {
        let heap0 = live_heap();
        pool.create_volume(name, bytes, 512, Guarantee::None)
            .await
            .expect("volume");
        let v = pool.volume(name).expect("vol");
        let mbs = fill(&v, bytes).await;
        // Let the fill's buffers and the commit settle, then count what stayed.
        tokio::time::sleep(Duration::from_millis(300)).await;
        heap_per_chunk = live_heap().saturating_sub(heap0) as f64 / (bytes / 65536) as f64;
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut snap = Vec::new();
        for k in 0..5 {
            let t = Instant::now();
            pool.snapshot(name, &format!("s{k}"))
                .await
                .expect("snapshot");
            snap.push(t.elapsed());
        }
        let mut clone = Vec::new();
        for k in 0..5 {
            let t = Instant::now();
            pool.clone_volume(&format!("{name}@s0"), &format!("{name}-c{k}"), None)
                .await
                .expect("clone");
            clone.push(t.elapsed());
        }
        let mut live = Vec::new();
        for k in 0..5 {
            let t = Instant::now();
            pool.clone_volume(name, &format!("{name}-lc{k}"), None)
                .await
                .expect("live clone");
            live.push(t.elapsed());
        }
        let (snap, clone, live) = (median(snap), median(clone), median(live));
        println!(
            "| {} MiB | {:.0} | {:.0} | {:.0} | {mbs:.0} |",
            bytes / MIB,
            us(snap),
            us(clone),
            us(live)
        );
    }
    let meta = pool.metadata_image_bytes();
    let used_chunks = pool.status().used_bytes / 65536;
    println!(
        "\nmetadata image: {meta} bytes for {used_chunks} owned chunks = {:.1} bytes/chunk (journal: 25 bytes per first-write record)",
        meta as f64 / used_chunks.max(1) as f64
    );
    println!("metadata memory: {heap_per_chunk:.1} heap bytes per mapped chunk (measured: live heap growth over the {} GiB fill)", big / GIB);
    // Per volume: a thousand empty volumes, each with an open handle (its lock tables and
    // resolution-cache shards exist once a handle does).
    let heap0 = live_heap();
    let mut handles = Vec::new();
    for k in 0..1000 {
        let n = format!("empty{k}");
        pool.create_volume(&n, GIB, 4096, Guarantee::None)
            .await
            .expect("empty volume");
        handles.push(pool.volume(&n).expect("handle"));
    }
    println!(
        "metadata memory: {:.0} heap bytes per volume with an open handle (1000 empty volumes)",
        live_heap().saturating_sub(heap0) as f64 / 1000.0
    );
    drop(handles);
    for v in pool.volumes() {
        pool.delete_volume(&v.name).await.expect("delete");
    }

    // I/O profiles, each figure beside fio on a raw file in the same directory.
    let rounds = if quick { 1 } else { 3 };
    let raw = RawFile::prepare(&dir, span);
    println!(
        "\n| volume ({} MiB span) | pattern | storage-core | fio raw file | store / raw |",
        span / MIB
    );
    println!("|---|---|---:|---:|---:|");
    pool.create_volume("fresh", span, 4096, Guarantee::None)
        .await
        .expect("fresh");
    let fresh = pool.volume("fresh").expect("fresh");
    let wmbs = fill(&fresh, span).await;
    profile("fresh volume", &fresh, raw.as_ref(), span, dur, rounds).await;
    pool.snapshot("fresh", "base").await.expect("snap");
    pool.clone_volume("fresh@base", "shared", None)
        .await
        .expect("clone");
    let shared = pool.volume("shared").expect("shared");
    profile(
        "fully shared clone (CoW)",
        &shared,
        raw.as_ref(),
        span,
        dur,
        rounds,
    )
    .await;
    // 32 generations: each a clone of the previous, each writing a slice of its own.
    let mut prev = "fresh".to_string();
    for g in 1..=32 {
        let name = format!("gen{g}");
        pool.clone_volume(&prev, &name, None)
            .await
            .expect("gen clone");
        let v = pool.volume(&name).expect("gen");
        let slice = span / 32;
        v.write(
            (g - 1) * slice / 4096,
            Bytes::from(vec![g as u8; MIB as usize]),
            false,
        )
        .await
        .expect("gen write");
        prev = name;
    }
    let deep = pool.volume(&prev).expect("deep");
    profile(
        "clone 32 generations deep",
        &deep,
        raw.as_ref(),
        span,
        dur,
        rounds,
    )
    .await;
    // The pool file's data came in through chunk-sized (64 KiB) writes, the raw file's
    // through 1 MiB writes; show what that alone does to fio's cached QD1 random reads.
    if raw.is_some() {
        let chunked = RawFile::prepare_as(&dir, "bench-raw-64k.img", span, 65536);
        let big = raw.as_ref().and_then(|r| r.run(Pattern::RandRead(1), dur));
        let small = chunked
            .as_ref()
            .and_then(|r| r.run(Pattern::RandRead(1), dur));
        if let (Some(b), Some(c)) = (big, small) {
            println!(
                "\npage-cache folio check, fio 4 KiB randread QD1 on a raw file laid down in 1 MiB writes: {b:.0} IOPS; in 64 KiB writes (as the pool's chunks are): {c:.0} IOPS ({:.2})",
                c / b
            );
        }
        if let Some(r) = chunked {
            let _ = std::fs::remove_file(&r.path);
        }
    }
    let cached = pool.stats().chain_cache_entries;
    println!(
        "\ndeep-chain resolution cache after these runs: {cached} entries (~{:.1} MiB); the volume has {} chunks",
        cached as f64 * 32.0 / MIB as f64,
        span / 65536
    );
    if let Some(r) = &raw {
        let _ = std::fs::remove_file(&r.path);
    }
    println!(
        "\nsequential 1 MiB write (fresh volume, QD8): {wmbs:.0} MB/s; layers in pool: {}",
        pool.status().layers
    );
    pool.clone_volume("fresh@base", "tosplit", None)
        .await
        .expect("clone to split");
    let t = Instant::now();
    let job = pool.start_split("tosplit").expect("split");
    let (_, total) = job.progress();
    job.wait().await.expect("split");
    let el = t.elapsed().as_secs_f64();
    println!(
        "split of a fully shared {} MiB clone: {total} chunks in {el:.2} s ({:.0} MB/s copied)",
        span / MIB,
        (total * 65536) as f64 / MIB as f64 / el
    );
    let r = pool.check().await.expect("check");
    println!(
        "check: clean={} ({} layers, {} chunks)",
        r.is_clean(),
        r.layers,
        r.owned_chunks
    );
    pool.close().await.expect("close");
    let _ = std::fs::remove_file(&path);
}
