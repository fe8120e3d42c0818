//! Kills around checkpoints: a child process writes and unmaps blocks from two tasks while a
//! third takes checkpoints back to back (with a snapshot and its delete now and then, so
//! checkpoints also image layers that a later record merges), and the parent kills it with
//! SIGKILL at an aimed instant:
//!
//! - in the middle of a checkpoint (a random delay after the child said it asked for one,
//!   within the time a checkpoint takes here);
//! - between two checkpoints (a random delay after one returned);
//! - after many checkpoints (30-60), either way.
//!
//! The checkpoint images the replica (docs/decisions/0015-checkpoint-replica.md) while the
//! writers go on logging records that must reach the restarted journal, so these are the
//! instants where an image that missed a record, or a journal that lost one, would lose an
//! acknowledged write. The second test makes every operation log a record (4 KiB chunks, so
//! each write of an unmapped block is a first write, and each unmap frees a chunk): with the
//! journal double-buffered (docs/decisions/0021-double-buffered-journal.md) those records go
//! to the other journal half while the checkpoint is written without the journal lock, and
//! a kill before its superblock lands must find them there. After each kill the parent reopens the pool, requires `check` to be
//! clean and every block to hold the value of its last acknowledged operation or of one
//! issued after it (a process kill keeps the page cache: every acknowledged write survives,
//! flushed or not). The child is this test binary re-executed with `LUNAR_CKPT_CHILD` set.

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::{Rng, SeedableRng};
use storage_core::{Guarantee, Pool, PoolOptions};

use crate::crash_common::child_command;

const BS: u64 = 4096;
const BLOCKS: u64 = 1024;
const WRITERS: u64 = 2;

fn block_of(tag: u64, lba: u64) -> Vec<u8> {
    let mut v = Vec::with_capacity(BS as usize);
    while v.len() < BS as usize {
        v.extend_from_slice(&tag.to_le_bytes());
        v.extend_from_slice(&lba.to_le_bytes());
    }
    v
}

/// The tag a block holds (0 for zeros), or `None` for anything that is neither.
fn tag_of(data: &[u8], lba: u64) -> Option<u64> {
    if data.iter().all(|&b| b == 0) {
        return Some(0);
    }
    let tag = u64::from_le_bytes(data[..8].try_into().ok()?);
    (data == block_of(tag, lba).as_slice()).then_some(tag)
}

/// Child output, one line per event, written before (issue) and after (acknowledgement).
struct Out(Mutex<std::io::Stdout>);

impl Out {
    fn line(&self, s: String) {
        let mut o = self.0.lock().expect("stdout");
        writeln!(o, "{s}").expect("stdout");
        o.flush().expect("stdout");
    }
}

async fn child(dir: &Path, iter: u64, fresh: bool) {
    let pool = Pool::open(dir).await.expect("child open");
    let vol = pool.volume("v").expect("volume");
    let out = Arc::new(Out(Mutex::new(std::io::stdout())));
    for t in 0..WRITERS {
        let vol = vol.clone();
        let out = out.clone();
        tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(iter * 100 + t);
            let mut n = 0u64;
            // With `fresh`, what this writer's blocks hold: each is unmapped if mapped and
            // written if not, so every operation logs a record (Map or Clear).
            let mut mapped = std::collections::HashSet::new();
            if fresh {
                let all = vol.read(0, BLOCKS as u32).await.expect("read");
                for b in (t..BLOCKS).step_by(WRITERS as usize) {
                    let blk = &all[(b * BS) as usize..((b + 1) * BS) as usize];
                    if blk.iter().any(|&x| x != 0) {
                        mapped.insert(b);
                    }
                }
            }
            loop {
                n += 1;
                let b = rng.gen_range(0..BLOCKS / WRITERS) * WRITERS + t;
                let unmap = if fresh {
                    // Unmap a mapped block, write (map) an unmapped one.
                    mapped.remove(&b) || {
                        mapped.insert(b);
                        false
                    }
                } else {
                    rng.gen_range(0..8) == 0
                };
                if unmap {
                    out.line(format!("I {b} 0"));
                    vol.unmap(b, 1).await.expect("unmap");
                    out.line(format!("A {b} 0"));
                } else {
                    let tag = (iter + 1) << 32 | t << 24 | n;
                    out.line(format!("I {b} {tag}"));
                    vol.write(b, Bytes::from(block_of(tag, b)), false)
                        .await
                        .expect("write");
                    out.line(format!("A {b} {tag}"));
                }
                tokio::task::yield_now().await;
            }
        });
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(iter ^ 0xc4);
    for n in 1u64.. {
        tokio::time::sleep(Duration::from_millis(rng.gen_range(1..6))).await;
        match n % 6 {
            2 => {
                let _ = pool.snapshot("v", "s").await;
            }
            5 => {
                // Merges the snapshot's layer into the volume's top (a structural record
                // between two checkpoints).
                let _ = pool.delete_snapshot("v", "s").await;
            }
            _ => {}
        }
        out.line(format!("C {n} begin"));
        pool.checkpoint().await.expect("checkpoint");
        out.line(format!("C {n} end"));
    }
}

#[test]
fn checkpoint_crash_child() {
    let Ok(dir) = std::env::var("LUNAR_CKPT_CHILD") else {
        return;
    };
    let iter: u64 = std::env::var("LUNAR_CKPT_ITER")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let fresh = std::env::var_os("LUNAR_CKPT_FRESH").is_some();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("rt");
    rt.block_on(child(Path::new(&dir), iter, fresh));
}

/// Where the parent aims the kill.
#[derive(Clone, Copy, Debug)]
enum Aim {
    /// `delay` after checkpoint `n` was asked for.
    During { n: u64, delay: Duration },
    /// `delay` after checkpoint `n` returned.
    After { n: u64, delay: Duration },
}

/// Run one child until the aimed kill; returns its output lines.
fn run_child(dir: &Path, iter: u64, aim: Aim, fresh: bool) -> Vec<String> {
    let mut cmd = child_command("checkpoint_crash::checkpoint_crash_child");
    if fresh {
        cmd.env("LUNAR_CKPT_FRESH", "1");
    }
    let mut child = cmd
        .env("LUNAR_CKPT_CHILD", dir)
        .env("LUNAR_CKPT_ITER", iter.to_string())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn child");
    let stdout = child.stdout.take().expect("child stdout");
    let (key, delay) = match aim {
        Aim::During { n, delay } => (format!("C {n} begin"), delay),
        Aim::After { n, delay } => (format!("C {n} end"), delay),
    };
    let mut lines = Vec::new();
    let mut reader = std::io::BufReader::new(stdout);
    let mut buf = String::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut killed = false;
    loop {
        buf.clear();
        match reader.read_line(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        // The test harness's "test checkpoint_crash_child ... " may precede the first line.
        let l = buf.trim_end();
        let l = l.rsplit_once("... ").map_or(l, |x| x.1).to_string();
        let hit = l == key;
        lines.push(l);
        if (hit || Instant::now() > deadline) && !killed {
            // Spin rather than sleep: the delays are shorter than a timer's slack.
            let t = Instant::now();
            while t.elapsed() < delay {
                std::hint::spin_loop();
            }
            child.kill().expect("kill");
            killed = true;
        }
    }
    let _ = child.wait();
    assert!(killed, "iteration {iter}: the child ended on its own");
    lines
}

#[test]
fn kills_during_and_between_checkpoints_lose_nothing_acknowledged() {
    kills(16384, false, 18);
}

#[test]
fn kills_during_checkpoints_with_first_writes_racing_lose_nothing_acknowledged() {
    kills(4096, true, 18);
}

/// Create a pool with `chunk_size` chunks, run `iterations` children killed at aimed
/// instants, and verify every block after each kill.
fn kills(chunk_size: u32, fresh: bool, iterations: u64) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("rt");
    rt.block_on(async {
        let dir = tempfile::tempdir().expect("tempdir");
        let opts = PoolOptions {
            chunk_size,
            capacity_bytes: Some(256 << 20),
            soft_threshold_pct: None,
        };
        let pool = Pool::create(dir.path(), &opts).await.expect("create");
        pool.create_volume("v", BLOCKS * BS, BS as u32, Guarantee::None)
            .await
            .expect("volume");
        pool.close().await.expect("close");
        drop(pool);
        // What every block holds (verified after each kill).
        let mut state = vec![0u64; BLOCKS as usize];
        let mut rng = rand::rngs::StdRng::seed_from_u64(0xc4c4);
        let (mut acked_total, mut ckpts_total) = (0usize, 0usize);
        for iter in 0..iterations {
            let delay_during = Duration::from_micros(rng.gen_range(0..4000));
            let delay_after = Duration::from_micros(rng.gen_range(0..3000));
            let aim = match iter % 3 {
                0 => Aim::During {
                    n: rng.gen_range(1..5),
                    delay: delay_during,
                },
                1 => Aim::After {
                    n: rng.gen_range(1..5),
                    delay: delay_after,
                },
                _ if rng.gen_bool(0.5) => Aim::During {
                    n: rng.gen_range(30..60),
                    delay: delay_during,
                },
                _ => Aim::After {
                    n: rng.gen_range(30..60),
                    delay: delay_after,
                },
            };
            let dirp = dir.path().to_path_buf();
            let lines = tokio::task::spawn_blocking(move || run_child(&dirp, iter, aim, fresh))
                .await
                .expect("child runner");
            // Per block: the values issued this iteration in order, and how many of them
            // were acknowledged (one writer per block, one operation at a time).
            let mut ops: HashMap<u64, (Vec<u64>, usize)> = HashMap::new();
            let mut ckpts = 0;
            for l in &lines {
                let w: Vec<&str> = l.split_whitespace().collect();
                match w.as_slice() {
                    ["I", b, v] => {
                        if let (Ok(b), Ok(v)) = (b.parse::<u64>(), v.parse::<u64>()) {
                            ops.entry(b).or_default().0.push(v);
                        }
                    }
                    ["A", b, _] => {
                        if let Ok(b) = b.parse::<u64>() {
                            ops.entry(b).or_default().1 += 1;
                        }
                    }
                    ["C", _, "end"] => ckpts += 1,
                    _ => {}
                }
            }
            let pool = Pool::open(dir.path()).await.expect("reopen after the kill");
            let report = pool.check().await.expect("check");
            assert!(
                report.is_clean(),
                "iteration {iter} ({aim:?}): {:?}",
                report.errors
            );
            let all = pool
                .volume("v")
                .expect("volume")
                .read(0, BLOCKS as u32)
                .await
                .expect("read");
            for b in 0..BLOCKS {
                let got = tag_of(&all[(b * BS) as usize..((b + 1) * BS) as usize], b);
                let allowed: Vec<u64> = match ops.get(&b) {
                    None => vec![state[b as usize]],
                    Some((issued, 0)) => std::iter::once(state[b as usize])
                        .chain(issued.iter().copied())
                        .collect(),
                    Some((issued, acked)) => issued[acked - 1..].to_vec(),
                };
                assert!(
                    got.is_some_and(|g| allowed.contains(&g)),
                    "iteration {iter} ({aim:?}, {ckpts} checkpoints): block {b} holds {got:?} ({:?}), \
                     allowed {allowed:?} (the last is the newest)", ops.get(&b)
                );
                state[b as usize] = got.unwrap_or_default();
            }
            acked_total += ops.values().map(|o| o.1).sum::<usize>();
            ckpts_total += ckpts;
            pool.close().await.expect("close");
        }
        eprintln!(
            "checkpoint crash test: {iterations} kills, {ckpts_total} checkpoints, \
             {acked_total} acknowledged operations verified"
        );
        assert!(ckpts_total > 200, "too few checkpoints ({ckpts_total})");
        assert!(acked_total > 2000, "too few operations ({acked_total})");
    });
}
