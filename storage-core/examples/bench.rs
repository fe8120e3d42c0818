//! storage-core benchmark: snapshot/clone creation time vs data written, 4 KiB random IOPS at
//! QD1/QD32 and 1 MiB sequential throughput on a fresh volume, a fully shared clone and a
//! clone 32 generations deep, plus metadata bytes per chunk.
//!
//! Run: `cargo run --release -p storage-core --example bench -- [DIR] [--quick]`
//! (DIR defaults to a temporary directory; the pool file is sparse).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::{Rng, SeedableRng};
use storage_core::{Guarantee, Pool, PoolOptions, Volume};

const GIB: u64 = 1 << 30;
const MIB: u64 = 1 << 20;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
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
            while Instant::now() < deadline {
                let lba = rng.gen_range(0..blocks) * 4096 / bs;
                if write {
                    v.write(lba, buf.clone(), false).await.expect("write");
                } else {
                    v.read(lba, (4096 / bs) as u32).await.expect("read");
                }
                c.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let start = Instant::now();
    for t in tasks {
        t.await.expect("join");
    }
    count.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

async fn seq_read(vol: &Volume, span: u64) -> f64 {
    let bs = vol.block_size() as u64;
    let start = Instant::now();
    let mut off = 0;
    while off < span {
        let mut tasks = Vec::new();
        for k in 0..4 {
            if off + k * MIB >= span {
                break;
            }
            let v = vol.clone();
            let lba = (off + k * MIB) / bs;
            tasks.push(tokio::spawn(
                async move { v.read(lba, (MIB / bs) as u32).await },
            ));
        }
        for t in tasks {
            t.await.expect("join").expect("read");
        }
        off += 4 * MIB;
    }
    span as f64 / MIB as f64 / start.elapsed().as_secs_f64()
}

async fn profile(label: &str, vol: &Volume, span: u64, dur: Duration) {
    let rr1 = rand_io(vol, false, 1, dur, span).await;
    let rr32 = rand_io(vol, false, 32, dur, span).await;
    let sr = seq_read(vol, span).await;
    let rw1 = rand_io(vol, true, 1, dur, span).await;
    let rw32 = rand_io(vol, true, 32, dur, span).await;
    println!("| {label:<28} | {rr1:>9.0} | {rr32:>9.0} | {rw1:>9.0} | {rw32:>9.0} | {sr:>8.0} |");
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
    println!("\n| written | snapshot ms (median of 5) | clone of snapshot ms | live clone ms | fill MB/s |");
    println!("|---|---|---|---|---|");
    for (name, bytes) in [("small", 64 * MIB), ("big", big)] {
        pool.create_volume(name, bytes, 512, Guarantee::None)
            .await
            .expect("volume");
        let v = pool.volume(name).expect("vol");
        let mbs = fill(&v, bytes).await;
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
            "| {} MiB | {:.2} | {:.2} | {:.2} | {mbs:.0} |",
            bytes / MIB,
            ms(snap),
            ms(clone),
            ms(live)
        );
    }
    let meta = pool.metadata_image_bytes();
    let used_chunks = pool.status().used_bytes / 65536;
    println!(
        "\nmetadata image: {meta} bytes for {used_chunks} owned chunks = {:.1} bytes/chunk (journal: 25 bytes per first-write record)",
        meta as f64 / used_chunks.max(1) as f64
    );
    for v in pool.volumes() {
        pool.delete_volume(&v.name).await.expect("delete");
    }

    // I/O profiles.
    println!("\n| volume ({} MiB span) | randread QD1 IOPS | randread QD32 | randwrite QD1 | randwrite QD32 | seqread 1M MB/s |", span / MIB);
    println!("|---|---|---|---|---|---|");
    pool.create_volume("fresh", span, 4096, Guarantee::None)
        .await
        .expect("fresh");
    let fresh = pool.volume("fresh").expect("fresh");
    let wmbs = fill(&fresh, span).await;
    profile("fresh volume", &fresh, span, dur).await;
    pool.snapshot("fresh", "base").await.expect("snap");
    pool.clone_volume("fresh@base", "shared", None)
        .await
        .expect("clone");
    let shared = pool.volume("shared").expect("shared");
    profile("fully shared clone (CoW)", &shared, span, dur).await;
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
    profile("clone 32 generations deep", &deep, span, dur).await;
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
