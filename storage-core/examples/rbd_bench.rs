//! Pool-on-RBD benchmark (feature `ceph`): 4 KiB random reads and writes at QD1 and QD32 and
//! 1 MiB sequential reads and writes at QD4 through a storage-core volume whose pool lives on
//! an RBD image, each beside `fio --ioengine=rbd` on a plain image of the same size in the
//! same run, with the ratio store/fio. Both sides go through librbd with `rbd_cache = false`
//! to the same cluster; the pairs alternate who runs first (the host is shared and noisy).
//! The volume and the plain image are filled first, so reads hit data and writes overwrite
//! (a first write into a thin volume adds a journal record; an overwrite does not).
//!
//! Run (cluster from tests/scripts/ceph.sh):
//! `LUNAR_CEPH_CONF=/path/ceph.conf cargo run --release -p storage-core --features ceph
//!  --example rbd_bench -- [--quick] [--chunk-kib N]` (N: the pool's chunk size, default 64).
//! `FIO=/path/to/fio` picks fio (it needs its rbd engine).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::{Rng, SeedableRng};
use storage_core::ceph::{CephConfig, Rados, RbdImage};
use storage_core::{Guarantee, Pool, PoolOptions, Volume};

const MIB: u64 = 1 << 20;

#[derive(Clone, Copy)]
enum Pattern {
    RandRead(usize),
    RandWrite(usize),
    SeqRead,
    SeqWrite,
}

impl Pattern {
    const ALL: [Pattern; 6] = [
        Pattern::RandRead(1),
        Pattern::RandRead(32),
        Pattern::RandWrite(1),
        Pattern::RandWrite(32),
        Pattern::SeqRead,
        Pattern::SeqWrite,
    ];

    fn label(self) -> String {
        match self {
            Pattern::RandRead(qd) => format!("4 KiB randread QD{qd} (IOPS)"),
            Pattern::RandWrite(qd) => format!("4 KiB randwrite QD{qd} (IOPS)"),
            Pattern::SeqRead => "1 MiB seq read QD4 (MB/s)".into(),
            Pattern::SeqWrite => "1 MiB seq write QD4 (MB/s)".into(),
        }
    }
}

/// Random 4 KiB I/O at queue depth `qd` over `span` for `dur`; returns IOPS.
async fn rand_io(vol: &Volume, write: bool, qd: usize, dur: Duration, span: u64) -> f64 {
    let count = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + dur;
    let blocks = span / 4096;
    let mut tasks = Vec::new();
    for t in 0..qd {
        let v = vol.clone();
        let c = count.clone();
        tasks.push(tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(t as u64 + 7);
            let buf = Bytes::from(vec![t as u8; 4096]);
            while Instant::now() < deadline {
                let lba = rng.gen_range(0..blocks);
                if write {
                    v.write(lba, buf.clone(), false).await.expect("write");
                } else {
                    v.read(lba, 1).await.expect("read");
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

/// The whole span once in 1 MiB I/Os, four in flight; returns MB/s.
async fn seq_io(vol: &Volume, write: bool, span: u64) -> f64 {
    let cursor = Arc::new(AtomicU64::new(0));
    let buf = Bytes::from(vec![0xA5u8; MIB as usize]);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let v = vol.clone();
        let cur = cursor.clone();
        let buf = buf.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let off = cur.fetch_add(MIB, Ordering::Relaxed);
                if off >= span {
                    break;
                }
                if write {
                    v.write(off / 4096, buf.clone(), false)
                        .await
                        .expect("write");
                } else {
                    v.read(off / 4096, (MIB / 4096) as u32).await.expect("read");
                }
            }
        }));
    }
    for t in tasks {
        t.await.expect("join");
    }
    if write {
        vol.flush().await.expect("flush");
    }
    span as f64 / MIB as f64 / start.elapsed().as_secs_f64()
}

async fn store_run(vol: &Volume, pat: Pattern, span: u64, dur: Duration) -> f64 {
    match pat {
        Pattern::RandRead(qd) => rand_io(vol, false, qd, dur, span).await,
        Pattern::RandWrite(qd) => rand_io(vol, true, qd, dur, span).await,
        Pattern::SeqRead => seq_io(vol, false, span).await,
        Pattern::SeqWrite => seq_io(vol, true, span).await,
    }
}

/// fio with its rbd engine on the plain image.
struct Fio {
    fio: String,
    conf: String,
    image: String,
    span: u64,
}

impl Fio {
    fn cmd(&self, rw: &str, bs: &str, qd: usize) -> std::process::Command {
        let mut cmd = std::process::Command::new(&self.fio);
        cmd.env("CEPH_CONF", &self.conf)
            .arg("--name=rbd")
            .args(["--ioengine=rbd", "--clientname=admin", "--pool=rbd"])
            .arg(format!("--rbdname={}", self.image))
            .arg(format!("--size={}", self.span))
            .args(["--output-format=json", "--randrepeat=0", "--norandommap"])
            .arg(format!("--rw={rw}"))
            .arg(format!("--bs={bs}"))
            .arg(format!("--iodepth={qd}"));
        cmd
    }

    /// IOPS (random) or MB/s (sequential) for `pat`; `None` if fio failed.
    fn run(&self, pat: Pattern, dur: Duration) -> Option<f64> {
        let (rw, bs, qd, timed) = match pat {
            Pattern::RandRead(qd) => ("randread", "4k", qd, true),
            Pattern::RandWrite(qd) => ("randwrite", "4k", qd, true),
            Pattern::SeqRead => ("read", "1M", 4, false),
            Pattern::SeqWrite => ("write", "1M", 4, false),
        };
        let mut cmd = self.cmd(rw, bs, qd);
        if timed {
            cmd.arg("--time_based")
                .arg(format!("--runtime={}ms", dur.as_millis()));
        }
        let out = cmd.output().ok()?;
        if !out.status.success() {
            eprintln!("fio failed: {}", String::from_utf8_lossy(&out.stderr));
            return None;
        }
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        let job = v.get("jobs")?.get(0)?;
        let side = if matches!(pat, Pattern::RandWrite(_) | Pattern::SeqWrite) {
            "write"
        } else {
            "read"
        };
        let s = job.get(side)?;
        match pat {
            Pattern::SeqRead | Pattern::SeqWrite => Some(s.get("bw_bytes")?.as_f64()? / MIB as f64),
            _ => s.get("iops")?.as_f64(),
        }
    }

    /// Write the whole image once, so reads hit data.
    fn fill(&self) -> bool {
        self.cmd("write", "4M", 8)
            .output()
            .is_ok_and(|o| o.status.success())
    }
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    v.retain(|x| x.is_finite());
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quick = args.iter().any(|a| a == "--quick");
    let chunk_size = match args.iter().position(|a| a == "--chunk-kib") {
        Some(i) => match args.get(i + 1).and_then(|v| v.parse::<u32>().ok()) {
            Some(k) => k * 1024,
            None => {
                eprintln!("--chunk-kib takes a number of KiB");
                std::process::exit(2);
            }
        },
        None => PoolOptions::default().chunk_size,
    };
    let Ok(conf) = std::env::var("LUNAR_CEPH_CONF") else {
        eprintln!("set LUNAR_CEPH_CONF to a cluster's ceph.conf (tests/scripts/ceph.sh start DIR)");
        std::process::exit(2);
    };
    let (span, dur, rounds) = if quick {
        (256 * MIB, Duration::from_secs(2), 1)
    } else {
        (1024 * MIB, Duration::from_secs(5), 3)
    };
    let cfg = CephConfig {
        conf: conf.clone().into(),
        client: "admin".into(),
    };
    let rados = Rados::connect(&cfg).expect("connect");
    let io = rados.ioctx("rbd").expect("pool rbd");
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let tag = format!("{}-{nanos:x}", std::process::id());
    let pool_img = format!("lunar-bench-pool-{tag}");
    let plain_img = format!("lunar-bench-plain-{tag}");
    // The pool needs room for the volume plus its metadata regions.
    RbdImage::create(&io, &pool_img, span + span / 4 + 256 * MIB).expect("create pool image");
    RbdImage::create(&io, &plain_img, span).expect("create plain image");
    let image = RbdImage::open(&io, &pool_img).expect("open pool image");
    image.lock_acquire_exclusive().expect("lock");
    let opts = PoolOptions {
        chunk_size,
        ..PoolOptions::default()
    };
    let pool = Pool::create_rbd(image.clone(), &opts)
        .await
        .expect("create pool");
    pool.create_volume("v", span, 4096, Guarantee::None)
        .await
        .expect("volume");
    let vol = pool.volume("v").expect("v");
    let fill = seq_io(&vol, true, span).await;
    let fio = Fio {
        fio: std::env::var("FIO").unwrap_or_else(|_| "fio".into()),
        conf,
        image: plain_img.clone(),
        span,
    };
    let have_fio = fio.fill();
    if !have_fio {
        println!("(fio with the rbd engine not found or failed: set FIO=/path/to/fio)");
    }
    println!(
        "pool on RBD image {pool_img} ({} MiB span, {} KiB chunks, backend {}), volatile write cache: {}; first fill {fill:.0} MB/s",
        span / MIB,
        chunk_size / 1024,
        pool.io_backend(),
        pool.volatile_write_cache()
    );
    println!();
    println!("| pattern | storage-core on RBD | fio rbd engine | store / fio |");
    println!("|---|---:|---:|---:|");
    for pat in Pattern::ALL {
        let mut store = Vec::new();
        let mut raw = Vec::new();
        for r in 0..rounds {
            if r % 2 == 1 && have_fio {
                raw.extend(fio.run(pat, dur));
            }
            store.push(store_run(&vol, pat, span, dur).await);
            if r % 2 == 0 && have_fio {
                raw.extend(fio.run(pat, dur));
            }
        }
        let st = median(store).unwrap_or(0.0);
        let (rv, ratio) = match median(raw) {
            Some(rv) if rv > 0.0 => (format!("{rv:.0}"), format!("{:.2}", st / rv)),
            _ => ("n/a".into(), "n/a".into()),
        };
        println!("| {:<28} | {st:>9.0} | {rv:>9} | {ratio:>5} |", pat.label());
    }
    pool.close().await.expect("close");
    drop((vol, pool));
    tokio::task::spawn_blocking(move || {
        let _ = image.lock_release();
        drop(image);
    })
    .await
    .expect("close image");
    for name in [&pool_img, &plain_img] {
        if let Err(e) = RbdImage::remove(&io, name) {
            eprintln!("removing {name}: {e}");
        }
    }
}
