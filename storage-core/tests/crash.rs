//! Crash test: a child process writes, unmaps, snapshots and flushes on a pool and is killed
//! with SIGKILL at a random instant, many times. After each kill the pool is reopened, every
//! acknowledged-and-flushed write is verified, as is every FUA write acknowledged after the last
//! flush, snapshots are verified and `check` is clean. Some children run under another boot
//! id, so the reopen replays as after a reboot (only sealed journal blocks).
//!
//! A second test kills a child writing fresh chunks from several tasks and checks that every
//! write it acknowledged survives, flushed or not (the kernel-initiator data-loss finding).
//!
//! The child is this test binary re-executed with `LUNAR_CRASH_CHILD` set.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use rand::{Rng, SeedableRng};
use storage_core::{Guarantee, Pool, PoolOptions};

use crate::crash_common::{child_command, log_line, reboot_every_third};

const BS: u64 = 4096;
const BLOCKS: u64 = 1024;

#[derive(Clone, Copy, Debug)]
enum Op {
    Write { lba: u64, tag: u64 },
    Unmap { lba: u64, n: u64 },
}

/// The deterministic op stream of one child run.
fn ops(seed: u64, count: usize) -> Vec<Op> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..count)
        .map(|k| {
            if rng.gen_range(0..10) == 0 {
                Op::Unmap {
                    lba: rng.gen_range(0..BLOCKS - 16),
                    n: rng.gen_range(1..16),
                }
            } else {
                Op::Write {
                    lba: rng.gen_range(0..BLOCKS),
                    tag: seed * 1_000_000 + k as u64 + 1,
                }
            }
        })
        .collect()
}

fn block_of(tag: u64, lba: u64) -> Vec<u8> {
    let mut v = Vec::with_capacity(BS as usize);
    while v.len() < BS as usize {
        v.extend_from_slice(&tag.to_le_bytes());
        v.extend_from_slice(&lba.to_le_bytes());
    }
    v
}

async fn child(dir: &Path, seed: u64, iter: u64) {
    let pool = Pool::open(dir).await.expect("child open");
    let progress = dir.join("progress");
    let mut pf = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&progress)
        .expect("progress");
    let _ = pool
        .delete_snapshot("v", &format!("s{}", iter.wrapping_sub(2)))
        .await;
    pool.snapshot("v", &format!("s{iter}"))
        .await
        .expect("snapshot");
    log_line(&mut pf, format_args!("snap {iter}"));
    // Clones left behind by the previous (killed) child go first.
    for v in pool.volumes() {
        if v.name != "v" {
            pool.delete_volume(&v.name).await.expect("delete old clone");
        }
    }
    let vol = pool.volume("v").expect("volume");
    // Structural churn in the background of the data stream: live clones (ghost layers),
    // writes into them, deletes in changing order, reconcile (garbage reclaim).
    let churn = {
        let pool = pool.clone();
        tokio::spawn(async move {
            for j in 0u64.. {
                let name = format!("c{iter}-{j}");
                if pool.clone_volume("v", &name, None).await.is_err() {
                    return;
                }
                if let Ok(c) = pool.volume(&name) {
                    let _ = c
                        .write(j % BLOCKS, Bytes::from(vec![j as u8; BS as usize]), false)
                        .await;
                }
                if j >= 2 {
                    let _ = pool.delete_volume(&format!("c{iter}-{}", j - 2)).await;
                }
                if j % 3 == 0 {
                    let _ = pool.reconcile_space().await;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    // Even runs flush every 4 ops (FUA is rare); odd runs flush every 64 ops and write every
    // 8th op with FUA, so kills land among FUA writes that no flush covers yet.
    let (flush_every, fua_every) = if seed.is_multiple_of(2) {
        (4, 50)
    } else {
        (64, 8)
    };
    for (k, op) in ops(seed, 100_000).into_iter().enumerate() {
        match op {
            Op::Write { lba, tag } => {
                let fua = k % fua_every == 0;
                vol.write(lba, Bytes::from(block_of(tag, lba)), fua)
                    .await
                    .expect("write");
                if fua {
                    // Acknowledged with FUA: durable now, whatever flushes follow.
                    log_line(&mut pf, format_args!("fua {seed} {k}"));
                }
            }
            Op::Unmap { lba, n } => vol.unmap(lba, n).await.expect("unmap"),
        }
        if k % flush_every == flush_every - 1 {
            vol.flush().await.expect("flush");
            log_line(&mut pf, format_args!("{seed} {k}"));
        }
    }
    churn.abort();
}

#[test]
fn crash_child() {
    let Ok(dir) = std::env::var("LUNAR_CRASH_CHILD") else {
        return;
    };
    let seed: u64 = std::env::var("LUNAR_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let iter: u64 = std::env::var("LUNAR_CRASH_ITER")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("rt");
    rt.block_on(child(Path::new(&dir), seed, iter));
}

/// Last flushed op index of run `seed`, whether snapshot `iter` was acknowledged, and the
/// op indexes of the FUA writes acknowledged in that run.
fn progress(dir: &Path, seed: u64, iter: u64) -> (Option<usize>, bool, Vec<usize>) {
    let text = std::fs::read_to_string(dir.join("progress")).unwrap_or_default();
    let mut last = None;
    let mut snap = false;
    let mut fua = Vec::new();
    for line in text.lines() {
        let mut it = line.split_whitespace();
        match (it.next(), it.next(), it.next()) {
            (Some("snap"), Some(i), None) if i.parse() == Ok(iter) => snap = true,
            (Some("fua"), Some(s), Some(k)) if s.parse() == Ok(seed) => {
                fua.extend(k.parse::<usize>().ok())
            }
            (Some(s), Some(k), None) if s.parse() == Ok(seed) => last = k.parse().ok().or(last),
            _ => {}
        }
    }
    (last, snap, fua)
}

async fn read_all(pool: &Pool, name: &str) -> Vec<Vec<u8>> {
    let vol = pool.volume(name).expect("volume");
    let all = vol.read(0, BLOCKS as u32).await.expect("read all");
    all.chunks(BS as usize).map(|c| c.to_vec()).collect()
}

#[test]
fn killed_writer_loses_nothing_acknowledged() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("rt");
    rt.block_on(async {
        let dir = tempfile::tempdir().expect("tempdir");
        let opts = PoolOptions {
            chunk_size: 16384,
            capacity_bytes: Some(128 << 20),
            soft_threshold_pct: None,
        };
        let pool = Pool::create(dir.path(), &opts).await.expect("create");
        pool.create_volume("v", BLOCKS * BS, BS as u32, Guarantee::None)
            .await
            .expect("volume");
        pool.close().await.expect("close");
        drop(pool);
        let mut baseline: Vec<Vec<u8>> = vec![vec![0u8; BS as usize]; BLOCKS as usize];
        let mut snapshots: HashMap<u64, Vec<Vec<u8>>> = HashMap::new();
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed);
        let iterations = 24;
        let mut total_verified = 0usize;
        let mut total_fua = 0usize;
        for iter in 0..iterations {
            let seed = iter + 1;
            let mut cmd = child_command("crash::crash_child");
            cmd.env("LUNAR_CRASH_CHILD", dir.path())
                .env("LUNAR_CRASH_SEED", seed.to_string())
                .env("LUNAR_CRASH_ITER", iter.to_string())
                .stdout(std::process::Stdio::null());
            reboot_every_third(&mut cmd, iter);
            let mut child = cmd.spawn().expect("spawn child");
            tokio::time::sleep(Duration::from_millis(rng.gen_range(300..1500))).await;
            child.kill().expect("kill");
            let _ = child.wait();

            let pool = Pool::open(dir.path()).await.expect("reopen after crash");
            let report = pool.check().await.expect("check");
            assert!(report.is_clean(), "iteration {iter}: {:?}", report.errors);
            let (last, snapped, fua) = progress(dir.path(), seed, iter);
            // Expected state at the last acknowledged flush, plus what later ops may have done.
            let horizon = last
                .map_or(0, |l| l + 1)
                .max(fua.iter().max().map_or(0, |k| k + 1));
            let stream = ops(seed, horizon + 400);
            let flushed = last.map_or(0, |l| l + 1);
            let mut expect = baseline.clone();
            for op in &stream[..flushed] {
                match *op {
                    Op::Write { lba, tag } => expect[lba as usize] = block_of(tag, lba),
                    Op::Unmap { lba, n } => {
                        (lba..lba + n).for_each(|b| expect[b as usize] = vec![0u8; BS as usize])
                    }
                }
            }
            let mut maybe: Vec<Vec<Vec<u8>>> = vec![Vec::new(); BLOCKS as usize];
            for op in &stream[flushed..] {
                match *op {
                    Op::Write { lba, tag } => maybe[lba as usize].push(block_of(tag, lba)),
                    Op::Unmap { lba, n } => {
                        (lba..lba + n).for_each(|b| maybe[b as usize].push(vec![0u8; BS as usize]))
                    }
                }
            }
            let got = read_all(&pool, "v").await;
            for b in 0..BLOCKS as usize {
                assert!(
                    got[b] == expect[b] || maybe[b].contains(&got[b]),
                    "iteration {iter}: block {b} holds neither the flushed data nor a later write"
                );
            }
            // A FUA write acknowledged after the last flush is durable on its own: its block
            // holds it, or something a later op of the stream wrote there.
            let mut fua_checked = 0usize;
            for &k in fua.iter().filter(|&&k| k >= flushed) {
                let Op::Write { lba, tag } = stream[k] else {
                    continue;
                };
                let b = lba as usize;
                let mut allowed = vec![block_of(tag, lba)];
                for op in &stream[k + 1..] {
                    match *op {
                        Op::Write { lba: l, tag: t } if l == lba => allowed.push(block_of(t, l)),
                        Op::Unmap { lba: l, n } if (l..l + n).contains(&lba) => {
                            allowed.push(vec![0u8; BS as usize])
                        }
                        _ => {}
                    }
                }
                assert!(
                    allowed.contains(&got[b]),
                    "iteration {iter}: FUA write {k} to block {b} was acknowledged but is lost"
                );
                fua_checked += 1;
            }
            total_fua += fua_checked;
            total_verified += flushed;
            // Snapshots taken by acknowledged calls must hold the state they were taken at.
            if snapped {
                snapshots.insert(iter, baseline.clone());
            }
            let names: Vec<String> = pool
                .snapshots(Some("v"))
                .into_iter()
                .map(|s| s.name)
                .collect();
            for (&i, content) in &snapshots {
                let name = format!("s{i}");
                if !names.contains(&name) {
                    continue;
                }
                pool.clone_volume(&format!("v@{name}"), "verify", None)
                    .await
                    .expect("clone snapshot");
                let got = read_all(&pool, "verify").await;
                assert!(
                    got == *content,
                    "iteration {iter}: snapshot {name} content changed"
                );
                pool.delete_volume("verify")
                    .await
                    .expect("delete verify clone");
            }
            snapshots.retain(|i, _| names.contains(&format!("s{i}")));
            baseline = got;
            pool.close().await.expect("close");
        }
        eprintln!(
            "crash test: {iterations} kills, {total_verified} acknowledged ops verified, \
             {total_fua} FUA writes acknowledged after the last flush verified"
        );
        assert!(
            total_verified > 100,
            "the children made too little progress ({total_verified} ops) to test anything"
        );
    });
}

// ---------------------------------------------------------------------------------------------
// Acknowledged first writes survive a process kill even when the flush comes afterwards.
//
// The kernel-initiator finding (docs/testing-kernel.md): ext4's data WRITEs were answered GOOD
// by one lunard, lunard was SIGKILLed, and the SYNCHRONIZE CACHE that ext4 sent next (or
// retried) was answered GOOD by the restarted lunard. A process kill keeps the host page
// cache, so data written in place survives; the chunk mappings of first writes must survive
// too, or those files read back as zeros although every command succeeded.

/// Blocks of each volume in the acknowledged-writes test (16 MiB of 4 KiB blocks).
const ACK_BLOCKS: u64 = 4096;
/// Concurrent writer tasks in the acknowledged-writes child.
const ACK_TASKS: u64 = 4;

fn ack_tag(iter: u64, block: u64) -> u64 {
    (iter + 1) * 1_000_000 + block
}

/// Child: several tasks write every block of a fresh volume once (so every chunk starts with
/// a first write, some chunks shared between tasks), task 0 flushes now and then, task 1
/// writes every 8th block with FUA; every write is logged as `ack <block>` once it returned.
async fn ack_child(dir: &Path, iter: u64) {
    let pool = Pool::open(dir).await.expect("child open");
    let vol = pool.volume(&format!("a{iter}")).expect("volume");
    let log = std::sync::Arc::new(std::sync::Mutex::new(
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join(format!("acks{iter}")))
            .expect("ack log"),
    ));
    let mut tasks = Vec::new();
    for t in 0..ACK_TASKS {
        let vol = vol.clone();
        let log = log.clone();
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            let mut b = t;
            while b < ACK_BLOCKS {
                // Two-block writes now and then cross a chunk boundary (two first writes).
                let blocks = if n % 5 == 4 && b + ACK_TASKS < ACK_BLOCKS && b % 4 == 3 {
                    2
                } else {
                    1
                };
                let mut data = block_of(ack_tag(iter, b), b);
                if blocks == 2 {
                    data.extend(block_of(ack_tag(iter, b + 1), b + 1));
                }
                let fua = t == 1 && n.is_multiple_of(8);
                vol.write(b, Bytes::from(data), fua).await.expect("write");
                {
                    let mut f = log.lock().expect("log lock");
                    for k in 0..blocks {
                        log_line(&mut *f, format_args!("ack {}", b + k));
                    }
                }
                if t == 0 && n % 16 == 15 {
                    vol.flush().await.expect("flush");
                }
                n += 1;
                b += if blocks == 2 {
                    ACK_TASKS.max(2)
                } else {
                    ACK_TASKS
                };
                // Pace the stream so the kill lands among writes, not after them.
                tokio::time::sleep(Duration::from_micros(500)).await;
            }
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    log_line(&mut *log.lock().expect("log lock"), "done");
    std::future::pending::<()>().await;
}

#[test]
fn ack_child_entry() {
    let Ok(dir) = std::env::var("LUNAR_ACK_CHILD") else {
        return;
    };
    let iter: u64 = std::env::var("LUNAR_CRASH_ITER")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("rt");
    rt.block_on(ack_child(Path::new(&dir), iter));
}

#[test]
fn killed_writer_keeps_acknowledged_first_writes_for_a_later_flush() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("rt");
    rt.block_on(async {
        let dir = tempfile::tempdir().expect("tempdir");
        let opts = PoolOptions {
            chunk_size: 16384,
            capacity_bytes: Some(256 << 20),
            soft_threshold_pct: None,
        };
        let pool = Pool::create(dir.path(), &opts).await.expect("create");
        pool.close().await.expect("close");
        drop(pool);
        let mut rng = rand::rngs::StdRng::seed_from_u64(0xac4);
        let iterations = 8u64;
        let mut checked = 0usize;
        for iter in 0..iterations {
            {
                let pool = Pool::open(dir.path()).await.expect("open");
                pool.create_volume(
                    &format!("a{iter}"),
                    ACK_BLOCKS * BS,
                    BS as u32,
                    Guarantee::None,
                )
                .await
                .expect("volume");
                pool.close().await.expect("close");
            }
            let mut child = child_command("crash::ack_child_entry")
                .env("LUNAR_ACK_CHILD", dir.path())
                .env("LUNAR_CRASH_ITER", iter.to_string())
                .stdout(std::process::Stdio::null())
                .spawn()
                .expect("spawn child");
            tokio::time::sleep(Duration::from_millis(rng.gen_range(200..900))).await;
            child.kill().expect("kill");
            let _ = child.wait();

            // The restarted target answers the initiator's (retried) SYNCHRONIZE CACHE.
            let pool = Pool::open(dir.path()).await.expect("reopen after crash");
            pool.flush().await.expect("flush after restart");
            let report = pool.check().await.expect("check");
            assert!(report.is_clean(), "iteration {iter}: {:?}", report.errors);
            let text =
                std::fs::read_to_string(dir.path().join(format!("acks{iter}"))).unwrap_or_default();
            let acked: Vec<u64> = text
                .lines()
                .filter_map(|l| l.strip_prefix("ack ")?.parse().ok())
                .collect();
            let vol = pool.volume(&format!("a{iter}")).expect("volume");
            let all = vol.read(0, ACK_BLOCKS as u32).await.expect("read");
            let mut lost = Vec::new();
            for &b in &acked {
                let got = &all[(b * BS) as usize..((b + 1) * BS) as usize];
                if got != block_of(ack_tag(iter, b), b).as_slice() {
                    lost.push(b);
                }
            }
            // Blocks never acknowledged hold zeros or their (unacknowledged) write.
            for b in 0..ACK_BLOCKS {
                let got = &all[(b * BS) as usize..((b + 1) * BS) as usize];
                assert!(
                    got.iter().all(|&x| x == 0) || got == block_of(ack_tag(iter, b), b).as_slice(),
                    "iteration {iter}: block {b} holds foreign data"
                );
            }
            assert!(
                lost.is_empty(),
                "iteration {iter}: {} of {} acknowledged writes lost after the kill and a later \
                 flush (first lost blocks {:?})",
                lost.len(),
                acked.len(),
                &lost[..lost.len().min(8)]
            );
            checked += acked.len();
            pool.close().await.expect("close");
        }
        eprintln!("acknowledged-writes crash test: {iterations} kills, {checked} writes verified");
        assert!(
            checked > 1000,
            "the children wrote too little ({checked}) to test anything"
        );
    });
}
