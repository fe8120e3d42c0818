//! Crash test of consistency groups: a child process is killed with SIGKILL at a random
//! instant, again and again, while it
//! - (snapshots) writes sequence n to volume `a`, then — once that write completed — to
//!   volume `b`, and takes group snapshots of both now and then; or
//! - (receives) stages an increment for each of the replica volumes `ra` and `rb` and commits
//!   them with one group commit; or
//! - (rollbacks) writes sequence n to `a` then `b` and flushes, takes group snapshots now and
//!   then, and rolls both members back to a random earlier group snapshot with one group
//!   rollback (the reverse of a replicated group).
//!
//! After every kill the pool is reopened in this process, fsck must be clean, and the group
//! must be all or none: every group snapshot exists on both members or on neither (and every
//! one the child saw acknowledged exists), each holds `a = b` or `a = b + 1`; the replica
//! volumes both read as the new increment (with its snapshot) or both as before; after a
//! group rollback the live members hold `a = b` or `a = b + 1` (one rolled back without the
//! other would show `a < b` or a jump). Every
//! third child runs under another boot id, so the reopen replays as after a power loss.
//!
//! The child is this test binary re-executed with `LUNAR_GROUP_CHILD` set.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use rand::{Rng, SeedableRng};
use storage_core::{Guarantee, Pool, PoolOptions, ReceiveBase, ReceiveSpec};

use crate::crash_common::{child_runtime, kill_after, log_line, progress_log, progress_text};

const CS: u64 = 64 * 1024;
const CHUNKS: u64 = 24;

fn opts() -> PoolOptions {
    PoolOptions {
        chunk_size: CS as u32,
        capacity_bytes: Some(128 << 20),
        soft_threshold_pct: None,
    }
}

fn block(tag: u64) -> Bytes {
    let mut v = vec![0u8; 4096];
    v[..8].copy_from_slice(&tag.to_le_bytes());
    Bytes::from(v)
}

fn tag(b: &[u8]) -> u64 {
    u64::from_le_bytes(b[..8].try_into().unwrap_or([0; 8]))
}

/// Lines of the progress file that start with `what `.
fn logged(dir: &Path, what: &str) -> Vec<String> {
    progress_text(dir)
        .lines()
        .filter_map(|l| l.strip_prefix(what).map(|r| r.trim().to_string()))
        .collect()
}

async fn snapshot_child(dir: &Path) {
    let pool = Pool::open(dir).await.expect("child open");
    let mut log = progress_log(dir);
    let (a, b) = (pool.volume("a").expect("a"), pool.volume("b").expect("b"));
    let mut n = tag(&a.read(0, 1).await.expect("read a"));
    let taken = pool.snapshots(Some("a")).len();
    for k in 0.. {
        n += 1;
        a.write(0, block(n), false).await.expect("write a");
        b.write(0, block(n), false).await.expect("write b");
        if k % 4 == 3 && taken + k / 4 < 500 {
            let name = format!("g{n}");
            // Members listed in another order than their ids now and then.
            let pairs = if n.is_multiple_of(2) {
                [("a", name.as_str()), ("b", name.as_str())]
            } else {
                [("b", name.as_str()), ("a", name.as_str())]
            };
            pool.snapshot_group(&pairs).await.expect("group snapshot");
            log_line(&mut log, format_args!("snap {name}"));
        }
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
}

/// Group snapshot names of `a` (the `g<n>` ones).
fn group_snaps(pool: &Pool) -> Vec<String> {
    pool.snapshots(Some("a"))
        .into_iter()
        .map(|s| s.name)
        .filter(|n| n.starts_with('g'))
        .collect()
}

/// Writes n to `a`, then to `b`, then flushes (so after a kill only the last pair can be
/// half there, and in write order); every 4th pair a group snapshot, every 5th a group
/// rollback of both members to a random group snapshot, after which the sequence goes on
/// from the value the members were rolled back to (so `a = b` or `a = b + 1` holds live).
async fn rollback_child(dir: &Path, seed: u64) {
    let pool = Pool::open(dir).await.expect("child open");
    let mut log = progress_log(dir);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let (a, b) = (pool.volume("a").expect("a"), pool.volume("b").expect("b"));
    let mut n =
        tag(&a.read(0, 1).await.expect("read a")).max(tag(&b.read(0, 1).await.expect("read b")));
    // Snapshot names stay unique across children: each child starts a new hundred thousand.
    let mut seq = (logged(dir, "child").len() as u64 + 1) * 100_000;
    log_line(&mut log, format_args!("child {seq}"));
    for k in 1u64.. {
        n += 1;
        a.write(0, block(n), false).await.expect("write a");
        b.write(0, block(n), false).await.expect("write b");
        pool.flush().await.expect("flush");
        if k % 4 == 0 && group_snaps(&pool).len() < 200 {
            seq += 1;
            let name = format!("g{seq}");
            pool.snapshot_group(&[("a", name.as_str()), ("b", name.as_str())])
                .await
                .expect("group snapshot");
        }
        if k % 5 == 0 {
            let snaps = group_snaps(&pool);
            if !snaps.is_empty() {
                let to = &snaps[rng.gen_range(0..snaps.len())];
                pool.rollback_group(&[("a", to.as_str()), ("b", to.as_str())])
                    .await
                    .expect("group rollback");
                log_line(&mut log, format_args!("rolled {to}"));
                n = tag(&a.read(0, 1).await.expect("read a"));
            }
        }
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
}

fn chunk(vol: &str, gen: u64, i: u64) -> Option<Vec<u8>> {
    // Generation 1: every chunk but each fifth; generation 2 rewrites each third, holes
    // each seventh.
    match gen {
        1 if !i.is_multiple_of(5) => Some(vec![
            (i as u8) + if vol == "ra" { 1 } else { 101 };
            CS as usize
        ]),
        1 => None,
        _ if i.is_multiple_of(7) => None,
        _ if i.is_multiple_of(3) => Some(vec![
            (i as u8) + if vol == "ra" { 51 } else { 151 };
            CS as usize
        ]),
        _ => chunk(vol, 1, i),
    }
}

fn spec(vol: &str, gen: u64) -> ReceiveSpec {
    let id = |g: u64| uuid::Uuid::from_u128(if vol == "ra" { 0x100 } else { 0x200 } + g as u128);
    ReceiveSpec {
        volume: vol.into(),
        base: if gen == 1 {
            ReceiveBase::New
        } else {
            ReceiveBase::Snapshot {
                snapshot: format!("s{}", gen - 1),
                uuid: id(gen - 1),
            }
        },
        snapshot: format!("s{gen}"),
        snapshot_uuid: id(gen),
        size_bytes: CHUNKS * CS,
        block_size: 4096,
    }
}

/// Stages generation `gen` of both replica volumes (resuming) and commits them together.
async fn receive_group(pool: &Pool, gen: u64, pause: bool) {
    let mut handles = Vec::new();
    for vol in ["ra", "rb"] {
        let mut rx = pool.receive_begin(spec(vol, gen)).await.expect("begin");
        for i in rx.next_index()..CHUNKS {
            if gen > 1 && i % 3 != 0 && i % 7 != 0 {
                continue;
            }
            match chunk(vol, gen, i) {
                Some(d) => rx.put_chunk(i, Bytes::from(d)).await.expect("put"),
                None => rx.put_hole(i).await.expect("hole"),
            }
            if i % 4 == 3 {
                rx.save_progress().await.expect("save");
            }
            if pause {
                tokio::time::sleep(Duration::from_micros(500)).await;
            }
        }
        handles.push(rx);
    }
    pool.receive_commit_group(handles)
        .await
        .expect("group commit");
}

async fn receive_child(dir: &Path) {
    let pool = Pool::open(dir).await.expect("child open");
    let mut log = progress_log(dir);
    receive_group(&pool, 2, true).await;
    log_line(&mut log, "committed");
    pool.close().await.expect("close");
}

#[test]
fn group_crash_child() {
    let Ok(dir) = std::env::var("LUNAR_GROUP_CHILD") else {
        return;
    };
    let rt = child_runtime();
    let dir = Path::new(&dir);
    match std::env::var("LUNAR_GROUP_MODE").as_deref() {
        Ok("receive") => rt.block_on(receive_child(dir)),
        Ok("rollback") => {
            let seed = std::env::var("LUNAR_GROUP_SEED")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            rt.block_on(rollback_child(dir, seed))
        }
        _ => rt.block_on(snapshot_child(dir)),
    }
}

fn spawn_child(dir: &Path, mode: &str, attempt: u32) -> std::process::Child {
    let dir = dir.to_string_lossy();
    let seed = attempt.to_string();
    let envs = [
        ("LUNAR_GROUP_CHILD", &*dir),
        ("LUNAR_GROUP_MODE", mode),
        ("LUNAR_GROUP_SEED", &seed),
    ];
    crate::crash_common::spawn_child("group_crash::group_crash_child", &envs, attempt)
}

/// Tag of block 0 of `vol@snap`, read through a clone.
async fn snap_tag(pool: &Pool, vol: &str, snap: &str) -> u64 {
    let clone = format!("read-{vol}");
    pool.clone_volume(&format!("{vol}@{snap}"), &clone, None)
        .await
        .expect("clone");
    let t = tag(&pool
        .volume(&clone)
        .expect("clone")
        .read(0, 1)
        .await
        .expect("read"));
    pool.delete_volume(&clone).await.expect("delete clone");
    t
}

/// A closed pool with the empty thin volumes `a` and `b` (1 MiB each), in a new directory.
async fn pool_with_a_and_b() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let pool = Pool::create(dir.path(), &opts()).await.expect("create");
    for v in ["a", "b"] {
        pool.create_volume(v, 1 << 20, 4096, Guarantee::None)
            .await
            .expect("volume");
    }
    pool.close().await.expect("close");
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_group_snapshots_are_all_or_none() {
    let dir = pool_with_a_and_b().await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(27);
    let mut verified = BTreeSet::new();
    let mut kills = 0;
    for attempt in 0..24u32 {
        let mut child = spawn_child(dir.path(), "snapshot", attempt);
        // The snapshot child never ends by itself: every attempt is a kill.
        kill_after(&mut child, Duration::from_millis(rng.gen_range(20..200)));
        kills += 1;
        let acked = logged(dir.path(), "snap");
        let pool = Pool::open(dir.path()).await.expect("reopen after kill");
        let report = pool.check().await.expect("check");
        assert!(report.is_clean(), "attempt {attempt}: {:?}", report.errors);
        let names = |v: &str| -> BTreeSet<String> {
            pool.snapshots(Some(v))
                .into_iter()
                .map(|s| s.name)
                .collect()
        };
        let (on_a, on_b) = (names("a"), names("b"));
        assert_eq!(
            on_a, on_b,
            "attempt {attempt}: a group snapshot on one member only"
        );
        for name in &acked {
            assert!(on_a.contains(name), "acknowledged group {name} lost");
        }
        for name in on_a.difference(&verified.clone()) {
            let (ta, tb) = (
                snap_tag(&pool, "a", name).await,
                snap_tag(&pool, "b", name).await,
            );
            assert!(
                ta == tb || ta == tb + 1,
                "group {name}: a holds {ta}, b holds {tb}"
            );
            verified.insert(name.clone());
        }
        pool.close().await.expect("close");
    }
    assert!(
        verified.len() > 3,
        "only {} group snapshots were taken",
        verified.len()
    );
    eprintln!(
        "group snapshot crash test: {kills} kills, {} group snapshots verified",
        verified.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_group_rollbacks_are_all_or_none() {
    let dir = pool_with_a_and_b().await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x6b);
    for attempt in 0..20u32 {
        let mut child = spawn_child(dir.path(), "rollback", attempt);
        // The rollback child never ends by itself: every attempt is a kill.
        kill_after(&mut child, Duration::from_millis(rng.gen_range(30..300)));
        let pool = Pool::open(dir.path()).await.expect("reopen after kill");
        let report = pool.check().await.expect("check");
        assert!(report.is_clean(), "attempt {attempt}: {:?}", report.errors);
        let live = |v: &str| {
            let pool = pool.clone();
            let v = v.to_string();
            async move {
                tag(&pool
                    .volume(&v)
                    .expect("vol")
                    .read(0, 1)
                    .await
                    .expect("read"))
            }
        };
        let names = |v: &str| -> BTreeSet<String> {
            pool.snapshots(Some(v))
                .into_iter()
                .map(|s| s.name)
                .collect()
        };
        let (ta, tb) = (live("a").await, live("b").await);
        assert!(
            ta == tb || ta == tb + 1,
            "attempt {attempt}: live a holds {ta}, b holds {tb}: a group rollback moved one member"
        );
        for name in names("a") {
            let (sa, sb) = (
                snap_tag(&pool, "a", &name).await,
                snap_tag(&pool, "b", &name).await,
            );
            assert_eq!(sa, sb, "group snapshot {name}: a holds {sa}, b holds {sb}");
        }
        assert_eq!(names("a"), names("b"), "attempt {attempt}");
        pool.close().await.expect("close");
    }
    let rolled = logged(dir.path(), "rolled").len();
    assert!(
        rolled > 3,
        "only {rolled} group rollbacks were acknowledged"
    );
    eprintln!("group rollback crash test: 20 kills, {rolled} group rollbacks acknowledged");
}

async fn volume_chunks(pool: &Pool, vol: &str) -> Vec<Vec<u8>> {
    crate::crash_common::volume_chunks(pool, vol, CS, CHUNKS).await
}

fn want(vol: &str, gen: u64) -> Vec<Vec<u8>> {
    (0..CHUNKS)
        .map(|i| chunk(vol, gen, i).unwrap_or_else(|| vec![0; CS as usize]))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_group_receives_commit_all_or_none() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(1827);
    let mut kills = 0;
    for round in 0..3 {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let pool = Pool::create(dir.path(), &opts()).await.expect("create");
            receive_group(&pool, 1, false).await;
            pool.close().await.expect("close");
        }
        let mut committed = false;
        for attempt in 0..60u32 {
            let mut child = spawn_child(dir.path(), "receive", attempt);
            let wait = rng.gen_range(0..30 + 10 * attempt as u64);
            if kill_after(&mut child, Duration::from_millis(wait)).0 {
                kills += 1;
            }
            let done = !logged(dir.path(), "committed").is_empty();
            let pool = Pool::open(dir.path()).await.expect("reopen after kill");
            let report = pool.check().await.expect("check");
            assert!(
                report.is_clean(),
                "round {round} attempt {attempt}: {:?}",
                report.errors
            );
            let has = |v: &str| pool.snapshots(Some(v)).iter().any(|s| s.name == "s2");
            let (a2, b2) = (has("ra"), has("rb"));
            assert_eq!(
                a2, b2,
                "round {round} attempt {attempt}: one member committed alone"
            );
            let gen = if a2 { 2 } else { 1 };
            assert!(
                !done || a2,
                "round {round}: an acknowledged group commit is missing"
            );
            for vol in ["ra", "rb"] {
                assert_eq!(
                    volume_chunks(&pool, vol).await,
                    want(vol, gen),
                    "round {round} attempt {attempt}: {vol} is not generation {gen}"
                );
            }
            if a2 {
                assert!(
                    pool.receives().is_empty(),
                    "committed, yet receives are staged"
                );
            }
            pool.close().await.expect("close");
            if a2 {
                committed = true;
                break;
            }
        }
        assert!(
            committed,
            "round {round}: no child got to commit in 60 attempts"
        );
    }
    assert!(kills > 3, "only {kills} children were killed");
    eprintln!("group receive crash test: {kills} kills");
}
