//! High availability end to end: two lunard gateways of one HA group over one pool in an RBD
//! image (issue 16, docs/ha.md), driven by a multipath initiator (`lunar_e2e::mpio`: one
//! session per gateway, failover on path loss and on standby sense, as dm-multipath does).
//!
//! 1. SIGKILL of the owner under a writer that writes, reads back and records numbered 4 KiB
//!    records: the writer moves to the other gateway once it takes over, every acknowledged
//!    record is there afterwards; the time from the kill to the first write completed by the
//!    new owner is printed.
//! 2. SIGSTOP of the owner until the other gateway takes over, then SIGCONT: a write queued on
//!    the frozen owner must not land (it gets an error, or no answer), a write through it
//!    afterwards gets standby sense, and what the new owner wrote stays.
//! 3. A planned move (`lunarctl ha move --to gw2`) under the writer.
//! 4. Persistent reservations: REGISTER + RESERVE (write exclusive) through the owner, kill
//!    it: through the other gateway the key and the reservation are still there and another
//!    initiator's write gets RESERVATION CONFLICT.
//! 5. PERSISTENT RESERVE OUTs through the standby while the owner is killed: all GOOD, and the
//!    survivor, now owner, holds and enforces exactly what they made.
//! 6. Two pools preferring different gateways: each gateway is active/optimized for one
//!    pool's LUN and standby for the other's (RTPG per LUN through both); a planned move
//!    of one pool under two writers leaves the other pool's writer alone; SIGKILL of the
//!    gateway that then owns both: the other owns both, every acknowledged record is there.
//!
//! The kernel initiator with dm-multipath over both gateways is `kernel_initiator_ha.rs`.
//! These tests need a Ceph cluster (`LUNAR_CEPH_CONF`, see `lunar_e2e::ceph`); without one
//! they skip loudly, or fail under `LUNAR_REQUIRE_CEPH=1`.

use lunar_e2e::ceph::Scratch;
use lunar_e2e::config::{LunCfg, TargetCfg};
use lunar_e2e::ha::{
    port_groups_at, port_groups_of, runtime, Group, ALUA_ACTIVE_OPTIMIZED, ALUA_STANDBY,
    ALUA_UNAVAILABLE, IQN, LUN_BYTES, POOL_BYTES, TAKEOVER_LIMIT,
};
use lunar_e2e::mpio::{
    is_standby, is_unit_attention, read_cdb, write_cdb, Acked, Multipath, Writer, GOOD,
    RECORD_BLOCKS, RESERVATION_CONFLICT,
};
use lunar_e2e::require_ceph;
use lunar_test_kit::initiator::{Initiator, PathError};
use scsi_proto::iscsi::pdu::Bhs;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const INITIATOR: &str = "iqn.2026-11.io.lunar.test:ha-writer";

/// A writer running on its own thread until told to stop.
struct Running {
    acked: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    handle: JoinHandle<anyhow::Result<Writer>>,
}

impl Running {
    fn start(group: &Group, first: usize, run: u64) -> Running {
        Self::start_on(group, 0, INITIATOR, first, run)
    }

    /// A writer on LUN `lun` as initiator `initiator`, starting on path `first`.
    fn start_on(group: &Group, lun: u64, initiator: &str, first: usize, run: u64) -> Running {
        let mut mp = Multipath::new(IQN, initiator, &group.paths()).on_lun(lun);
        mp.prefer(first);
        let mut w = Writer::new(mp, run, 0);
        let acked = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (a, s) = (acked.clone(), stop.clone());
        let handle = std::thread::spawn(move || {
            runtime()?.block_on(async move {
                while !s.load(Ordering::SeqCst) {
                    w.step().await?;
                    a.store(w.acked.len(), Ordering::SeqCst);
                }
                // The sessions belong to this thread's runtime: log out here; whoever
                // reads back afterwards logs in again.
                w.mp.close().await;
                Ok(w)
            })
        });
        Running {
            acked,
            stop,
            handle,
        }
    }

    fn count(&self) -> usize {
        self.acked.load(Ordering::SeqCst)
    }

    /// Waits until `n` records are acknowledged; fails if the writer failed or stalled for
    /// `limit`.
    fn wait_for(&self, n: usize, limit: Duration) {
        let deadline = Instant::now() + limit;
        while self.count() < n {
            assert!(
                !self.handle.is_finished(),
                "the writer stopped at {} records (wanted {n}); see its error below",
                self.count()
            );
            assert!(
                Instant::now() < deadline,
                "the writer stalled at {} records (wanted {n}) for {limit:?}",
                self.count()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn finish(self) -> Writer {
        self.stop.store(true, Ordering::SeqCst);
        match self.handle.join() {
            Ok(Ok(w)) => w,
            Ok(Err(e)) => panic!("writer failed: {e:#}"),
            Err(_) => panic!("writer thread panicked"),
        }
    }
}

/// Every record the writer acknowledged reads back as acknowledged (through whichever
/// gateway serves now).
fn verify_everything(mut w: Writer) -> Writer {
    let rt = runtime().expect("runtime");
    let bad = rt.block_on(w.verify_all()).expect("read back");
    assert!(
        bad.is_empty(),
        "{} of {} acknowledged records are not there:\n{}",
        bad.len(),
        w.acked.len(),
        bad.join("\n")
    );
    w
}

/// The writer's path events from `since` on; an event that repeats the previous one of the
/// same path (a retry loop over two paths) is counted, not printed.
fn print_events(w: &Writer, since: Instant) {
    let mut last: std::collections::HashMap<&str, &str> = std::collections::HashMap::new();
    let mut folded = 0;
    for e in w.mp.events.iter().filter(|e| e.at >= since) {
        if last.insert(e.path.as_str(), e.what.as_str()) == Some(e.what.as_str()) {
            folded += 1;
            continue;
        }
        let t = e.at.duration_since(since).as_secs_f64();
        eprintln!("  +{t:7.3} s {:>4}: {}", e.path, e.what);
    }
    eprintln!("  ({folded} repeated events not shown)");
}

/// The first record acknowledged after `t` through gateway `path`.
fn first_after(acked: &[Acked], t: Instant, path: usize) -> Option<&Acked> {
    acked.iter().find(|a| a.at > t && a.path == path)
}

/// 1. SIGKILL of the owner under the writer.
#[test]
fn sigkill_owner_writer_moves_and_nothing_is_lost() {
    require_ceph!(cluster);
    let mut g = Group::start(Scratch::new(&cluster, "kill"), 2).expect("start gateways");
    let owner = g.wait_owner(None, TAKEOVER_LIMIT).expect("an owner");
    let w = Running::start(&g, owner, 1);
    w.wait_for(30, TAKEOVER_LIMIT);
    let before = w.count();
    let killed = Instant::now();
    g.gws[owner].kill9();
    let new_owner = g.wait_owner(Some(owner), TAKEOVER_LIMIT).expect("takeover");
    w.wait_for(before + 30, TAKEOVER_LIMIT);
    let w = verify_everything(w.finish());
    // A GOOD the old owner sent just before it died may be read just after the kill: at
    // most that one write (the writer has one in flight), and before any other.
    let after: Vec<&Acked> = w.acked.iter().filter(|a| a.at > killed).collect();
    let on_old: Vec<usize> = after
        .iter()
        .enumerate()
        .filter(|(_, a)| a.path == owner)
        .map(|(i, _)| i)
        .collect();
    assert!(
        on_old.is_empty() || on_old == [0],
        "writes completed on the killed gateway after the kill: {on_old:?} of {after:?}"
    );
    let first = first_after(&w.acked, killed, new_owner).expect("writes on the new owner");
    eprintln!(
        "HA failover (SIGKILL): {} -> {}: first write completed on the new owner {:.3} s after \
         the kill; {} records acknowledged, all read back",
        g.gws[owner].name,
        g.gws[new_owner].name,
        first.at.duration_since(killed).as_secs_f64(),
        w.acked.len()
    );
    print_events(&w, killed);
    dead_gateway_is_reported_unavailable(&g, owner, new_owner);
    // The killed gateway's watches linger at the OSD; the cleanup must still remove
    // everything the test made.
    let (cluster, group, image) = (
        g.scratch.cluster.clone(),
        g.scratch.group.clone(),
        g.scratch.image.clone(),
    );
    let keep = std::env::var("LUNAR_CEPH_KEEP").is_ok_and(|v| v == "1");
    drop(g);
    if !keep {
        let left = cluster
            .group_leftovers(lunar_e2e::ceph::POOL, &group, &image)
            .expect("list the cluster");
        assert!(left.is_empty(), "left in the cluster: {left:?}");
    }
}

/// After a gateway died, the survivor reports its port group unavailable once its registry
/// heartbeat is a few leases old (never standby forever: hosts must not count a dead path
/// as a standby one), and `lunarctl ha status` says so.
fn dead_gateway_is_reported_unavailable(g: &Group, dead: usize, survivor: usize) {
    let rt = runtime().expect("runtime");
    let dead_pg = g.gws[dead].port_group;
    let deadline = Instant::now() + TAKEOVER_LIMIT;
    let groups = loop {
        let groups = rt
            .block_on(port_groups_at(g.gws[survivor].addr()))
            .expect("RTPG through the survivor");
        if groups.contains(&(dead_pg, ALUA_UNAVAILABLE)) {
            break groups;
        }
        assert!(
            Instant::now() < deadline,
            "the dead gateway's group is never reported unavailable: {groups:?}"
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    assert!(
        groups.contains(&(g.gws[survivor].port_group, ALUA_ACTIVE_OPTIMIZED)),
        "{groups:?}"
    );
    let status = g.gws[survivor]
        .ctl()
        .expect("lunarctl")
        .json(&["ha", "status"])
        .expect("lunarctl ha status");
    let gws = status["gateways"].as_array().cloned().unwrap_or_default();
    let row = gws
        .iter()
        .find(|r| r["name"] == g.gws[dead].name.as_str())
        .unwrap_or_else(|| panic!("no row for the dead gateway: {status}"));
    assert_eq!(row["alua"], "unavailable", "{status}");
    assert!(
        row["last_seen_secs_ago"].as_u64().is_some_and(|s| s >= 1),
        "{status}"
    );
}

/// A session logged in to one gateway, past its unit attentions.
async fn session(addr: std::net::SocketAddr, name: &str) -> Initiator {
    let mut i = Initiator::try_connect(addr, name).await.expect("connect");
    let l = i
        .try_login(IQN, Duration::from_secs(20))
        .await
        .expect("login");
    assert!(l.ok(), "login refused: {l:?}");
    for _ in 0..16 {
        let r = i
            .try_run(&[0u8; 6], 0, &[], Duration::from_secs(20))
            .await
            .expect("TEST UNIT READY");
        if !is_unit_attention(&r) {
            return i;
        }
    }
    panic!("unit attentions never cleared");
}

/// 2. SIGSTOP of the owner until the other gateway takes over, then SIGCONT.
#[test]
fn sigstop_owner_never_writes_again_after_takeover() {
    require_ceph!(cluster);
    let g = Group::start(Scratch::new(&cluster, "stop"), 2).expect("start gateways");
    let a = g.wait_owner(None, TAKEOVER_LIMIT).expect("an owner");
    let b = 1 - a;
    let rt = runtime().expect("runtime");
    // A probe LBA far from the writer's records.
    let probe_lba = 1 << 20;
    let probe = |tag: u8| lunar_test_kit::pattern(4096, tag);
    let mut stale_session =
        rt.block_on(session(g.gws[a].addr(), "iqn.2026-11.io.lunar.test:stale"));
    let w = Running::start(&g, a, 2);
    w.wait_for(30, TAKEOVER_LIMIT);

    let frozen = Instant::now();
    g.gws[a].freeze();
    // A write queued on the frozen owner: its socket takes it, nothing runs it (yet).
    let stale = stale_session.command(
        &write_cdb(probe_lba, RECORD_BLOCKS),
        false,
        true,
        4096,
        probe(0xa5).into(),
    );
    let stale_itt = stale.bhs.itt();
    rt.block_on(stale_session.try_send(stale))
        .expect("queue a write on the frozen owner");

    let took_over = g.wait_owner(Some(a), TAKEOVER_LIMIT).expect("takeover");
    assert_eq!(took_over, b);
    let at_takeover = w.count();
    w.wait_for(at_takeover + 20, TAKEOVER_LIMIT);
    // The new owner writes the probe block.
    rt.block_on(async {
        let mut s = session(g.gws[b].addr(), "iqn.2026-11.io.lunar.test:fresh").await;
        let r = s
            .try_run(
                &write_cdb(probe_lba, RECORD_BLOCKS),
                0,
                &probe(0x5a),
                Duration::from_secs(30),
            )
            .await
            .expect("probe write through the new owner");
        assert_eq!(r.status, GOOD, "probe write through the new owner: {r:?}");
    });

    g.gws[a].thaw();
    let thawed = Instant::now();
    // What the old owner did with the queued write once it ran again: anything but GOOD.
    let answer = rt.block_on(async {
        loop {
            match stale_session.try_recv(Duration::from_secs(60)).await {
                Ok(p) => match &p.bhs {
                    Bhs::ScsiResponse(r) if r.itt == stale_itt => {
                        return Some((r.status, p.data.to_vec()));
                    }
                    _ => continue,
                },
                Err(PathError::Timeout) => {
                    panic!("the old owner neither answered nor closed in 60 s")
                }
                Err(_) => return None,
            }
        }
    });
    match &answer {
        Some((status, sense)) => {
            assert_ne!(
                *status, GOOD,
                "the old owner acknowledged a write after it lost the pool"
            );
            eprintln!("queued write on the old owner after SIGCONT: status {status:#x} sense {sense:02x?}");
        }
        None => eprintln!("queued write on the old owner after SIGCONT: connection closed"),
    }
    // The old owner comes back as standby (fenced, reconnected): it reports B optimized and
    // itself standby, and refuses media access.
    let deadline = Instant::now() + TAKEOVER_LIMIT;
    loop {
        if let Ok(groups) = rt.block_on(g.gws[a].port_groups()) {
            let state = |pg: u16| groups.iter().find(|(id, _)| *id == pg).map(|(_, s)| *s);
            if state(g.gws[b].port_group) == Some(ALUA_ACTIVE_OPTIMIZED)
                && state(g.gws[a].port_group) == Some(ALUA_STANDBY)
            {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the old owner never came back as standby"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    rt.block_on(async {
        let mut s = session(g.gws[a].addr(), "iqn.2026-11.io.lunar.test:late").await;
        let r = s
            .try_run(
                &write_cdb(probe_lba, RECORD_BLOCKS),
                0,
                &probe(0x77),
                Duration::from_secs(30),
            )
            .await
            .expect("write through the old owner");
        assert!(
            is_standby(&r),
            "a write through the old owner must get NOT READY / standby, got {r:?}"
        );
    });
    // The new owner's probe block stands, and so does every acknowledged record.
    let w = w.finish();
    rt.block_on(async {
        let mut s = session(g.gws[b].addr(), "iqn.2026-11.io.lunar.test:check").await;
        let r = s
            .try_run(
                &read_cdb(probe_lba, RECORD_BLOCKS),
                4096,
                &[],
                Duration::from_secs(30),
            )
            .await
            .expect("read the probe block");
        assert_eq!(r.status, GOOD);
        assert!(
            r.data == probe(0x5a),
            "the probe block is not what the new owner wrote (stale write from the old owner?)"
        );
    });
    let w = verify_everything(w);
    let first = first_after(&w.acked, frozen, b).expect("writes on the new owner");
    let metric = |i: usize, name: &str| {
        g.gws[i]
            .metric(name, "")
            .map_or_else(|e| format!("? ({e:#})"), |v| v.to_string())
    };
    eprintln!(
        "HA failover (SIGSTOP): first write completed on {} {:.3} s after the freeze; old owner \
         resumed {:.1} s after the freeze and stayed off the pool (its lunar_ha_fenced_total \
         {}; the new owner's lunar_ha_takeovers_total {}); {} records, all read back",
        g.gws[first.path].name,
        first.at.duration_since(frozen).as_secs_f64(),
        thawed.duration_since(frozen).as_secs_f64(),
        metric(a, "lunar_ha_fenced_total"),
        metric(b, "lunar_ha_takeovers_total"),
        w.acked.len()
    );
    print_events(&w, frozen);
}

/// 3. A planned move under the writer.
#[test]
fn planned_move_under_writer() {
    require_ceph!(cluster);
    let g = Group::start(Scratch::new(&cluster, "move"), 2).expect("start gateways");
    let a = g.wait_owner(None, TAKEOVER_LIMIT).expect("an owner");
    let b = 1 - a;
    let w = Running::start(&g, a, 3);
    w.wait_for(30, TAKEOVER_LIMIT);
    let ctl = g.gws[a].ctl().expect("lunarctl");
    let moved = Instant::now();
    let out = ctl
        .run(&["ha", "move", "--to", &g.gws[b].name])
        .expect("lunarctl ha move");
    assert!(
        out.status.success(),
        "lunarctl ha move failed: {}",
        out.combined()
    );
    assert_eq!(g.wait_owner(Some(a), TAKEOVER_LIMIT).expect("moved"), b);
    let at = w.count();
    w.wait_for(at + 30, TAKEOVER_LIMIT);
    let w = verify_everything(w.finish());
    let first_b = w
        .acked
        .iter()
        .position(|x| x.path == b && x.at > moved)
        .expect("writes on the new owner");
    assert!(
        w.acked[first_b..].iter().all(|x| x.path == b),
        "writes completed on the old owner after the new one served"
    );
    // The old owner's own view: standby under the new owner (it gets there by itself
    // after releasing; wait for it rather than assume it already has).
    let deadline = Instant::now() + TAKEOVER_LIMIT;
    let status = loop {
        let status = ctl.json(&["ha", "status"]).expect("lunarctl ha status");
        if status["role"] == "standby" {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the old owner never became standby: {status}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(
        status["owner"].as_str(),
        Some(g.gws[b].name.as_str()),
        "owner after the move: {status}"
    );
    eprintln!(
        "HA planned move {} -> {}: first write on the new owner {:.3} s after `ha move`; {} \
         records, all read back; epoch now {}",
        g.gws[a].name,
        g.gws[b].name,
        w.acked[first_b].at.duration_since(moved).as_secs_f64(),
        w.acked.len(),
        status["epoch"]
    );
    print_events(&w, moved);
}

/// PERSISTENT RESERVE OUT `service_action` with `key`, `sa_key` and `type`.
fn pr_out(service_action: u8, pr_type: u8, key: u64, sa_key: u64) -> ([u8; 10], Vec<u8>) {
    let mut cdb = [0u8; 10];
    cdb[0] = 0x5f;
    cdb[1] = service_action;
    cdb[2] = pr_type;
    cdb[5..9].copy_from_slice(&24u32.to_be_bytes());
    let mut p = vec![0u8; 24];
    p[..8].copy_from_slice(&key.to_be_bytes());
    p[8..16].copy_from_slice(&sa_key.to_be_bytes());
    (cdb, p)
}

/// PERSISTENT RESERVE IN `service_action` (0 READ KEYS, 1 READ RESERVATION).
fn pr_in(service_action: u8) -> [u8; 10] {
    let mut cdb = [0u8; 10];
    cdb[0] = 0x5e;
    cdb[1] = service_action;
    cdb[7..9].copy_from_slice(&1024u16.to_be_bytes());
    cdb
}

fn keys_of(data: &[u8]) -> Vec<u64> {
    let len = u32::from_be_bytes([data[4], data[5], data[6], data[7]]) as usize;
    data[8..(8 + len).min(data.len())]
        .chunks_exact(8)
        .map(|k| u64::from_be_bytes(k.try_into().unwrap_or_default()))
        .collect()
}

/// `(key, type)` of the reservation in a READ RESERVATION answer.
fn reservation_of(data: &[u8]) -> Option<(u64, u8)> {
    let len = u32::from_be_bytes([data[4], data[5], data[6], data[7]]);
    (len >= 16).then(|| {
        (
            u64::from_be_bytes(data[8..16].try_into().unwrap_or_default()),
            data[21] & 0x0f,
        )
    })
}

/// 4. PR registrations and reservations survive the owner's death.
#[test]
fn persistent_reservation_survives_owner_kill() {
    require_ceph!(cluster);
    const KEY: u64 = 0x1eaf_cafe_0000_0001;
    const WRITE_EXCLUSIVE: u8 = 1;
    let mut g = Group::start(Scratch::new(&cluster, "pr"), 2).expect("start gateways");
    let a = g.wait_owner(None, TAKEOVER_LIMIT).expect("an owner");
    let b = 1 - a;
    let rt = runtime().expect("runtime");
    let paths = g.paths();
    // The holder talks to the owner; the other initiator only to the other gateway.
    let mut holder = Multipath::new(IQN, "iqn.2026-11.io.lunar.test:pr-holder", &paths[a..=a]);
    let mut other = Multipath::new(IQN, "iqn.2026-11.io.lunar.test:pr-other", &paths[b..=b]);
    rt.block_on(async {
        let (cdb, p) = pr_out(0x00, 0, 0, KEY);
        let r = holder.io(&cdb, 0, &p).await.expect("REGISTER");
        assert_eq!(r.result.status, GOOD, "REGISTER: {:?}", r.result);
        let (cdb, p) = pr_out(0x01, WRITE_EXCLUSIVE, KEY, 0);
        let r = holder.io(&cdb, 0, &p).await.expect("RESERVE");
        assert_eq!(r.result.status, GOOD, "RESERVE: {:?}", r.result);
        // Through the standby gateway the reservation is visible at once (PR IN is served
        // in standby; the PR state is cluster-wide).
        let r = other
            .io(&pr_in(1), 1024, &[])
            .await
            .expect("READ RESERVATION");
        assert_eq!(r.result.status, GOOD);
        assert_eq!(
            reservation_of(&r.result.data),
            Some((KEY, WRITE_EXCLUSIVE)),
            "the standby gateway does not report the reservation"
        );
    });
    let killed = Instant::now();
    g.gws[a].kill9();
    assert_eq!(g.wait_owner(Some(a), TAKEOVER_LIMIT).expect("takeover"), b);
    rt.block_on(async {
        // Write exclusive: the other initiator may read but not write, on the new owner.
        let data = lunar_test_kit::pattern(4096, 9);
        let r = other
            .io(&write_cdb(4096, RECORD_BLOCKS), 0, &data)
            .await
            .expect("write by the other initiator");
        assert_eq!(
            r.result.status, RESERVATION_CONFLICT,
            "a write by a non-holder after failover: {:?}",
            r.result
        );
        let r = other
            .io(&read_cdb(4096, RECORD_BLOCKS), 4096, &[])
            .await
            .expect("read by the other initiator");
        assert_eq!(r.result.status, GOOD, "reads are allowed: {:?}", r.result);
        let r = other.io(&pr_in(0), 1024, &[]).await.expect("READ KEYS");
        assert_eq!(r.result.status, GOOD);
        assert_eq!(
            keys_of(&r.result.data),
            vec![KEY],
            "registrations after failover"
        );
        let r = other
            .io(&pr_in(1), 1024, &[])
            .await
            .expect("READ RESERVATION");
        assert_eq!(r.result.status, GOOD);
        assert_eq!(
            reservation_of(&r.result.data),
            Some((KEY, WRITE_EXCLUSIVE)),
            "the reservation after failover"
        );
    });
    eprintln!(
        "HA PR: registration and write-exclusive reservation held across the kill of {} \
         (checked through {} {:.1} s after the kill)",
        g.gws[a].name,
        g.gws[b].name,
        killed.elapsed().as_secs_f64()
    );
}

/// Case 5: PERSISTENT RESERVE OUTs through one gateway while the other one, the owner, is
/// killed. Every one answers GOOD (the dead gateway's lingering watch holds none back for
/// good: once the surviving gateway took over, the dead one is neither owner nor
/// heartbeating), and afterwards the surviving gateway, now the owner, reports exactly the
/// registrations and the reservation they made and enforces them. (The killed gateway is
/// gone; the harness does not restart it, so "both" is the survivor's view and its I/O
/// checks.)
#[test]
fn pr_outs_through_one_gateway_while_the_other_is_killed() {
    require_ceph!(cluster);
    const WRITE_EXCLUSIVE: u8 = 1;
    const CHANGES: u64 = 6;
    let mut g = Group::start(Scratch::new(&cluster, "prkill"), 2).expect("start gateways");
    let a = g.wait_owner(None, TAKEOVER_LIMIT).expect("an owner");
    let b = 1 - a;
    let paths = g.paths()[b..=b].to_vec();
    let done = Arc::new(AtomicUsize::new(0));
    let d = done.clone();
    let pr_outs = std::thread::spawn(move || {
        let rt = runtime().expect("runtime");
        rt.block_on(async {
            let mut holder = Multipath::new(IQN, "iqn.2026-11.io.lunar.test:prk-holder", &paths);
            let mut member = Multipath::new(IQN, "iqn.2026-11.io.lunar.test:prk-member", &paths);
            // A PR OUT may wait for notify rounds while the owner dies: no path failover.
            holder.cmd_limit = Duration::from_secs(60);
            member.cmd_limit = Duration::from_secs(60);
            let mut took = Vec::new();
            let (cdb, p) = pr_out(0x00, 0, 0, 0x7000);
            let r = holder.io(&cdb, 0, &p).await.expect("REGISTER holder");
            assert_eq!(r.result.status, GOOD, "REGISTER holder: {:?}", r.result);
            // The member changes its key again and again: each change decided on the last.
            let mut key = 0;
            for i in 1..=CHANGES {
                let started = Instant::now();
                let (cdb, p) = pr_out(0x00, 0, key, 0x8000 + i);
                let r = member.io(&cdb, 0, &p).await.expect("REGISTER member");
                assert_eq!(
                    r.result.status, GOOD,
                    "REGISTER member #{i}: {:?}",
                    r.result
                );
                took.push(started.elapsed());
                key = 0x8000 + i;
                d.fetch_add(1, Ordering::SeqCst);
            }
            let (cdb, p) = pr_out(0x01, WRITE_EXCLUSIVE, 0x7000, 0);
            let r = holder.io(&cdb, 0, &p).await.expect("RESERVE");
            assert_eq!(r.result.status, GOOD, "RESERVE: {:?}", r.result);
            took
        })
    });
    let bound = Instant::now() + Duration::from_secs(60);
    while done.load(Ordering::SeqCst) < 2 {
        assert!(Instant::now() < bound, "the first PR OUTs did not complete");
        std::thread::sleep(Duration::from_millis(20));
    }
    let killed = Instant::now();
    g.gws[a].kill9();
    let took = pr_outs.join().expect("PR OUT thread");
    assert_eq!(g.wait_owner(Some(a), TAKEOVER_LIMIT).expect("takeover"), b);
    eprintln!(
        "HA PR OUTs through {} while {} was killed: {:?} each (the kill after the 2nd; all done {:.1} s after it)",
        g.gws[b].name,
        g.gws[a].name,
        took,
        killed.elapsed().as_secs_f64()
    );
    let rt = runtime().expect("runtime");
    let paths = g.paths();
    let mut other = Multipath::new(IQN, "iqn.2026-11.io.lunar.test:prk-other", &paths[b..=b]);
    rt.block_on(async {
        let r = other.io(&pr_in(0), 1024, &[]).await.expect("READ KEYS");
        assert_eq!(r.result.status, GOOD);
        let mut keys = keys_of(&r.result.data);
        keys.sort_unstable();
        assert_eq!(keys, vec![0x7000, 0x8000 + CHANGES], "registrations");
        let r = other
            .io(&pr_in(1), 1024, &[])
            .await
            .expect("READ RESERVATION");
        assert_eq!(r.result.status, GOOD);
        assert_eq!(
            reservation_of(&r.result.data),
            Some((0x7000, WRITE_EXCLUSIVE)),
            "the reservation"
        );
        let data = lunar_test_kit::pattern(4096, 3);
        let r = other
            .io(&write_cdb(4096, RECORD_BLOCKS), 0, &data)
            .await
            .expect("write by an unregistered initiator");
        assert_eq!(
            r.result.status, RESERVATION_CONFLICT,
            "the new owner enforces the reservation: {:?}",
            r.result
        );
    });
}

/// The shipped two-gateway example (deploy/ha/) and the configuration in docs/ha.md are
/// valid lunard configurations, of one group, with distinct gateways and port groups, and
/// each portal's TPGT is its gateway's port group. (No Ceph needed.)
#[test]
fn deploy_examples_are_valid_gateway_pairs() {
    use lunar_e2e::config::Config;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf();
    let mut gws = Vec::new();
    for name in ["gw1.yaml", "gw2.yaml"] {
        let path = root.join("deploy/ha").join(name);
        let text = std::fs::read_to_string(&path).expect("read deploy example");
        // The file itself: this test's build may lack the `ceph` feature lunard needs.
        let cfg =
            Config::from_yaml_str_any_build(&text, name).unwrap_or_else(|e| panic!("{name}: {e}"));
        let ha = cfg.ha.clone().expect("an ha: section");
        assert!(cfg.first_pool().rbd.is_some(), "{name}: pool.rbd");
        for p in &cfg.portals {
            assert_eq!(p.tpgt, ha.port_group, "{name}: portal TPGT = port group");
        }
        gws.push((cfg, ha));
    }
    let (a, b) = (&gws[0], &gws[1]);
    assert_eq!(a.1.group, b.1.group);
    assert_ne!(a.1.gateway, b.1.gateway);
    assert_ne!(a.1.port_group, b.1.port_group);
    assert_eq!(a.0.pool, b.0.pool, "same pool image and capacity");
    assert_eq!(a.0.targets, b.0.targets, "same targets on every gateway");
    let doc = std::fs::read_to_string(root.join("docs/ha.md")).expect("docs/ha.md");
    let blocks: Vec<String> = lunar_test_kit::markdown::fenced_blocks(&doc)
        .into_iter()
        .filter(|(info, _)| info == "yaml")
        .map(|(_, body)| body)
        .collect();
    assert!(!blocks.is_empty(), "docs/ha.md has no yaml block");
    for body in blocks {
        let cfg =
            Config::from_yaml_str_any_build(&body, "docs/ha.md").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(cfg.ha, Some(a.1.clone()), "docs/ha.md shows gw1");
        assert_eq!(cfg.first_pool().rbd, a.0.first_pool().rbd);
    }
}

/// Case 6, several pools per gateway: pool `a` (LUN 0) prefers gw1, pool `b` (LUN 1) prefers
/// gw2; each is its own HA unit (lease, owner, epoch). Through either gateway, LUN 0
/// reports gw1 active/optimized and gw2 standby, LUN 1 the reverse. `lunarctl ha move
/// --pool a --to gw2` under a writer per LUN: pool a moves, pool b's writer never meets a
/// standby, transitioning or failed path and its epoch stays. Then SIGKILL of gw2, which
/// owns both: gw1 takes both over and every acknowledged record of both LUNs is there.
#[test]
fn two_pools_spread_move_alone_and_fail_over_together() {
    require_ceph!(cluster);
    let mut scratch = Scratch::new(&cluster, "pools");
    let image_b = format!("{}-b", scratch.group);
    scratch.more_images.push(image_b.clone());
    let image_a = scratch.image.clone();
    let mut g = Group::start_with(scratch, 2, |_, mut cfg| {
        cfg = cfg.with_rbd_pools(
            &[("a", &image_a, Some("gw1")), ("b", &image_b, Some("gw2"))],
            POOL_BYTES,
        );
        cfg.targets = vec![TargetCfg::iscsi(IQN)
            .with_lun(LunCfg::new(0, "a0", LUN_BYTES).in_pool("a"))
            .with_lun(LunCfg::new(1, "b0", LUN_BYTES).in_pool("b"))];
        cfg
    })
    .expect("start gateways");
    // The preferred gateways took their pools (gw2 started after gw1, which left it b).
    assert_eq!(
        g.wait_owner_of(0, None, TAKEOVER_LIMIT)
            .expect("owner of a"),
        0
    );
    assert_eq!(
        g.wait_owner_of(1, None, TAKEOVER_LIMIT)
            .expect("owner of b"),
        1
    );
    let rt = runtime().expect("runtime");
    let spread = |owner: u16| -> Vec<(u16, u8)> {
        [1u16, 2]
            .into_iter()
            .map(|pg| {
                let state = if pg == owner {
                    ALUA_ACTIVE_OPTIMIZED
                } else {
                    ALUA_STANDBY
                };
                (pg, state)
            })
            .collect()
    };
    // Every gateway gets there (the one that did not take a pool over learns of its LUN
    // from the other's save, a notify later): wait for each, then it stays.
    for gw in &g.gws {
        for (lun, owner) in [(0u64, 1u16), (1, 2)] {
            let deadline = Instant::now() + TAKEOVER_LIMIT;
            loop {
                let groups = rt.block_on(port_groups_of(gw.addr(), lun));
                if groups.as_ref().is_ok_and(|gr| *gr == spread(owner)) {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "LUN {lun} through {}: its pool's owner is port group {owner}; got {groups:?}",
                    gw.name
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
    let status = g.gws[0].ctl().expect("lunarctl");
    let status = status.json(&["ha", "status"]).expect("ha status");
    let pools = status["pools"].as_array().expect("a pools list").clone();
    let owners: Vec<(&str, &str)> = pools
        .iter()
        .map(|p| {
            (
                p["pool"].as_str().unwrap_or(""),
                p["owner"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(owners, [("a", "gw1"), ("b", "gw2")], "{status}");
    let epoch_b = pools[1]["epoch"].as_u64().expect("epoch of b");

    let wa = Running::start_on(&g, 0, &format!("{INITIATOR}-a"), 0, 61);
    let wb = Running::start_on(&g, 1, &format!("{INITIATOR}-b"), 1, 62);
    wa.wait_for(20, TAKEOVER_LIMIT);
    wb.wait_for(20, TAKEOVER_LIMIT);
    let moved = Instant::now();
    let out = g.gws[0]
        .ctl()
        .expect("lunarctl")
        .run(&["ha", "move", "--pool", "a", "--to", "gw2"])
        .expect("lunarctl ha move");
    assert!(out.status.success(), "ha move: {}", out.combined());
    assert_eq!(
        g.wait_owner_of(0, Some(0), TAKEOVER_LIMIT)
            .expect("a moved"),
        1
    );
    let (a_now, b_now) = (wa.count(), wb.count());
    wa.wait_for(a_now + 20, TAKEOVER_LIMIT);
    wb.wait_for(b_now + 20, TAKEOVER_LIMIT);
    assert_eq!(g.owner_of(1), Some(1), "pool b stayed on gw2");
    let status = g.gws[1]
        .ctl()
        .expect("lunarctl")
        .json(&["ha", "status"])
        .expect("ha status");
    assert_eq!(
        status["pools"][1]["epoch"].as_u64(),
        Some(epoch_b),
        "{status}"
    );

    // SIGKILL of gw2, owner of both: gw1 takes both.
    let before = (wa.count(), wb.count());
    let killed = Instant::now();
    g.gws[1].kill9();
    assert_eq!(
        g.wait_owner_of(0, Some(1), TAKEOVER_LIMIT)
            .expect("a taken"),
        0
    );
    assert_eq!(
        g.wait_owner_of(1, Some(1), TAKEOVER_LIMIT)
            .expect("b taken"),
        0
    );
    wa.wait_for(before.0 + 20, TAKEOVER_LIMIT);
    wb.wait_for(before.1 + 20, TAKEOVER_LIMIT);
    let wa = verify_everything(wa.finish());
    let wb = verify_everything(wb.finish());
    // Pool b's writer was left alone by pool a's move: nothing but unit attentions on its
    // paths between the move and the kill.
    let troubled: Vec<String> = wb
        .mp
        .events
        .iter()
        .filter(|e| e.at >= moved && e.at < killed && !e.what.starts_with("unit attention"))
        .map(|e| format!("{}: {}", e.path, e.what))
        .collect();
    assert!(
        troubled.is_empty(),
        "pool b's writer during pool a's move: {troubled:?}"
    );
    let first = |w: &Writer| first_after(&w.acked, killed, 0).map(|a| a.at.duration_since(killed));
    eprintln!(
        "HA two pools: move of a alone (b untouched, epoch {epoch_b}); SIGKILL of gw2 owning \
         both: first writes on gw1 {:.3} s (a) and {:.3} s (b) after the kill; {} + {} \
         records, all read back",
        first(&wa).map_or(f64::NAN, |d| d.as_secs_f64()),
        first(&wb).map_or(f64::NAN, |d| d.as_secs_f64()),
        wa.acked.len(),
        wb.acked.len()
    );
}
