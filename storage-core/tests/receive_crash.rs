//! Crash test of receives: a child process applies an increment, a full stream or a clone
//! stream (by round; resuming whatever an earlier child staged) and is killed with SIGKILL at a random instant, again and again,
//! until one child commits. After every kill the pool is reopened in this process and must
//! show either nothing of the increment (the replica volume and its snapshots as before,
//! the staged receive listed with a resume point at or past every progress the child saw
//! acknowledged) or all of it (the new snapshot and the volume reading exactly as the
//! sender's snapshot), with a clean fsck. Every third child runs under another boot id, so
//! the reopen replays as after a power loss (only sealed journal blocks count).
//!
//! The child is this test binary re-executed with `LUNAR_RECV_CHILD` set.

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use rand::{Rng, SeedableRng};
use storage_core::{Pool, PoolOptions, ReceiveBase, ReceiveSpec};

use crate::crash_common::{
    child_runtime, kill_after, log_line, progress_log, progress_text, spawn_child,
};

const CS: u64 = 64 * 1024;
const CHUNKS: u64 = 160;
const BASE_UUID: u128 = 0x1111;
const SNAP_UUID: u128 = 0x2222;

/// Contents of the base snapshot: chunk i holds data for i % 3 != 0.
fn base_chunk(i: u64) -> Option<Vec<u8>> {
    (!i.is_multiple_of(3)).then(|| vec![(i % 251) as u8 + 1; CS as usize])
}

/// The increment of round `seed`: (index, Some(data) | None for a hole), ascending.
fn changes(seed: u64) -> Vec<(u64, Option<Vec<u8>>)> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut out = Vec::new();
    for i in 0..CHUNKS {
        if rng.gen_range(0..3) != 0 {
            continue;
        }
        let d = if rng.gen_range(0..5) == 0 {
            None
        } else {
            let mut v = vec![(seed % 200) as u8 + 7; CS as usize];
            v[..8].copy_from_slice(&i.to_le_bytes());
            Some(v)
        };
        out.push((i, d));
    }
    out
}

/// What the received snapshot holds: the increment over the base, or over zeros for a full
/// stream (kind 1).
fn expected(seed: u64) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = (0..CHUNKS)
        .map(|i| match base_chunk(i) {
            Some(d) if kind(seed) != 1 => d,
            _ => vec![0; CS as usize],
        })
        .collect();
    for (i, d) in changes(seed) {
        out[i as usize] = d.unwrap_or_else(|| vec![0; CS as usize]);
    }
    out
}

/// Round `seed` receives kind `seed % 3`: 0 an increment on `r@s1` into `r`, 1 a full
/// stream creating `n`, 2 a clone stream creating `c` as a clone of `r@s1`.
fn kind(seed: u64) -> u64 {
    seed % 3
}

/// The volume round `seed` receives into.
fn target(seed: u64) -> &'static str {
    ["r", "n", "c"][kind(seed) as usize]
}

fn spec(seed: u64) -> ReceiveSpec {
    let on_s1 = uuid::Uuid::from_u128(BASE_UUID);
    ReceiveSpec {
        volume: target(seed).into(),
        base: match kind(seed) {
            0 => ReceiveBase::Snapshot {
                snapshot: "s1".into(),
                uuid: on_s1,
            },
            1 => ReceiveBase::New,
            _ => ReceiveBase::Origin {
                volume: "r".into(),
                snapshot: "s1".into(),
                uuid: on_s1,
            },
        },
        snapshot: "s2".into(),
        snapshot_uuid: uuid::Uuid::from_u128(SNAP_UUID),
        size_bytes: CHUNKS * CS,
        block_size: 4096,
    }
}

/// The replica as the previous full receive left it: `r` and `r@s1`.
async fn baseline(dir: &Path) {
    let opts = PoolOptions {
        chunk_size: CS as u32,
        capacity_bytes: Some(64 << 20),
        soft_threshold_pct: None,
    };
    let pool = Pool::create(dir, &opts).await.expect("create");
    let mut rx = pool
        .receive_begin(ReceiveSpec {
            volume: "r".into(),
            base: ReceiveBase::New,
            snapshot: "s1".into(),
            snapshot_uuid: uuid::Uuid::from_u128(BASE_UUID),
            size_bytes: CHUNKS * CS,
            block_size: 4096,
        })
        .await
        .expect("begin full");
    for i in 0..CHUNKS {
        if let Some(d) = base_chunk(i) {
            rx.put_chunk(i, Bytes::from(d)).await.expect("put");
        }
    }
    rx.commit().await.expect("commit full");
    pool.close().await.expect("close");
}

/// Apply round `seed`'s increment, resuming, saving progress every few chunks; log each
/// acknowledged progress and the commit to `progress`.
async fn child(dir: &Path, seed: u64) {
    let pool = Pool::open(dir).await.expect("child open");
    let mut log = progress_log(dir);
    let mut rx = pool.receive_begin(spec(seed)).await.expect("child begin");
    let start = rx.next_index();
    let mut since = 0;
    for (i, d) in changes(seed) {
        if i < start {
            continue;
        }
        match d {
            Some(d) => rx.put_chunk(i, Bytes::from(d)).await.expect("put"),
            None => rx.put_hole(i).await.expect("hole"),
        }
        since += 1;
        if since == 7 {
            since = 0;
            rx.save_progress().await.expect("save");
            log_line(&mut log, format_args!("progress {}", rx.next_index()));
        }
        tokio::time::sleep(Duration::from_micros(300)).await;
    }
    rx.commit().await.expect("commit");
    log_line(&mut log, "committed");
    pool.close().await.expect("close");
}

#[test]
fn recv_crash_child() {
    let Ok(dir) = std::env::var("LUNAR_RECV_CHILD") else {
        return;
    };
    let seed: u64 = std::env::var("LUNAR_RECV_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    child_runtime().block_on(child(Path::new(&dir), seed));
}

/// (highest acknowledged resume point, whether the commit was acknowledged).
fn acknowledged(dir: &Path) -> (u64, bool) {
    let text = progress_text(dir);
    let mut next = 0;
    let mut done = false;
    for line in text.lines() {
        match line.split_once(' ') {
            Some(("progress", n)) => next = next.max(n.parse().unwrap_or(0)),
            _ if line == "committed" => done = true,
            _ => {}
        }
    }
    (next, done)
}

async fn chunks_of(pool: &Pool, vol: &str) -> Vec<Vec<u8>> {
    crate::crash_common::volume_chunks(pool, vol, CS, CHUNKS).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_receives_leave_nothing_or_everything() {
    let rt_seed: u64 = std::env::var("LUNAR_RECV_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(7);
    let mut rng = rand::rngs::StdRng::seed_from_u64(rt_seed);
    let mut kills = 0;
    let mut staged_seen = 0;
    for round in 0..6u64 {
        let dir = tempfile::tempdir().expect("tempdir");
        baseline(dir.path()).await;
        let base_bytes: Vec<Vec<u8>> = (0..CHUNKS)
            .map(|i| base_chunk(i).unwrap_or_else(|| vec![0; CS as usize]))
            .collect();
        let want = expected(round);
        let mut committed = false;
        for attempt in 0..60u32 {
            let dir_s = dir.path().to_string_lossy();
            let seed_s = round.to_string();
            let envs = [("LUNAR_RECV_CHILD", &*dir_s), ("LUNAR_RECV_SEED", &*seed_s)];
            let mut child = spawn_child("receive_crash::recv_crash_child", &envs, attempt);
            // Later attempts wait longer, so the child eventually gets to commit.
            let wait = rng.gen_range(0..40 + 15 * attempt as u64);
            let (killed, status) = kill_after(&mut child, Duration::from_millis(wait));
            let finished = !killed;
            if killed {
                kills += 1;
            }
            let (acked, done) = acknowledged(dir.path());
            let pool = Pool::open(dir.path()).await.expect("reopen after kill");
            let report = pool.check().await.expect("check");
            assert!(
                report.is_clean(),
                "round {round} attempt {attempt}: {:?}",
                report.errors
            );
            let tgt = target(round);
            let has_s2 = pool.snapshots(Some(tgt)).iter().any(|s| s.name == "s2");
            let staged = pool.receives();
            if has_s2 {
                assert!(staged.is_empty(), "committed, yet a receive is listed");
                assert_eq!(
                    chunks_of(&pool, tgt).await,
                    want,
                    "round {round}: r is not s2"
                );
                let s2 = pool
                    .snapshots(Some(tgt))
                    .into_iter()
                    .find(|s| s.name == "s2")
                    .expect("s2");
                assert_eq!(s2.uuid, uuid::Uuid::from_u128(SNAP_UUID));
                committed = true;
            } else {
                assert!(
                    !done,
                    "round {round}: the commit was acknowledged but s2 is missing"
                );
                assert!(
                    !(finished && status.success()),
                    "a child exited cleanly without committing"
                );
                assert_eq!(
                    chunks_of(&pool, "r").await,
                    base_bytes,
                    "round {round} attempt {attempt}: half an increment is visible"
                );
                if tgt != "r" {
                    assert!(
                        pool.volume_info(tgt).is_err(),
                        "round {round} attempt {attempt}: {tgt} exists before its commit"
                    );
                }
                assert_eq!(
                    pool.volumes().len(),
                    1,
                    "only r is a volume before the commit"
                );
                match staged.as_slice() {
                    [] => assert_eq!(acked, 0, "acknowledged progress lost with its receive"),
                    [s] => {
                        staged_seen += 1;
                        assert_eq!(s.spec, spec(round));
                        assert!(
                            s.next_index >= acked,
                            "resume point {} behind acknowledged progress {acked}",
                            s.next_index
                        );
                    }
                    more => panic!("{} receives staged", more.len()),
                }
            }
            pool.close().await.expect("close");
            if committed {
                break;
            }
        }
        assert!(
            committed,
            "round {round}: no child got to commit in 60 attempts"
        );
        // Used space: only the base and the increment's data, nothing leaked by the kills.
        let pool = Pool::open(dir.path()).await.expect("reopen");
        let data_chunks =
            |v: &Vec<Vec<u8>>| v.iter().filter(|c| c.iter().any(|&b| b != 0)).count() as u64;
        let changed_data = changes(round).iter().filter(|(_, d)| d.is_some()).count() as u64;
        assert_eq!(
            pool.status().used_bytes,
            (data_chunks(&base_bytes) + changed_data) * CS,
            "round {round}: space used after the receive"
        );
        pool.close().await.expect("close");
    }
    assert!(kills > 4, "only {kills} children were killed");
    eprintln!("receive crash test: {kills} kills, {staged_seen} reopens found a staged receive");
}
