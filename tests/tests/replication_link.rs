//! Replication between two lunards on loopback (issue 18, docs/replication.md): separate
//! data directories and ports, mutual TLS with pinned identities, a relationship on a
//! short schedule. Data is written and compared through iSCSI with qemu-io:
//!
//! - the first cycle sends in full, later ones increments; after each, a linked clone of
//!   the replica's newest snapshot (a normal writable LUN, made while replication goes on)
//!   holds exactly what the source held when the snapshot was taken;
//! - the replica LUN refuses writes (DATA PROTECT) until promoted;
//! - promote, write on the replica, reverse: the old source is rolled back to the last
//!   common snapshot and receives an increment; it then holds the promoted side's data;
//! - a clone of a replicated LUN's snapshot, replicated by its own relationship to the same
//!   peer, arrives as an increment from its origin: the replica side's space grows by the
//!   clone's own chunks only, and retention there keeps the origin snapshot;
//! - a transfer in flight shows its bytes, total, rate and time left in `replica list`
//!   and in the metrics, on both sides.

use std::time::{Duration, Instant};

use lunar_e2e::admin::Lunarctl;
use lunar_e2e::config::{with_target, yaml, TargetCfg};
use lunar_e2e::initiator::{qemu_image_opts, qemu_io, qemu_io_read_only};
use lunar_e2e::replication::{ctl_json, free_port, paired_sites, relationship, used_bytes};
use lunar_e2e::tools::available;
use lunar_e2e::{Lunard, LunardOptions};
use target_daemon::config::ReplicationCfg;

const MIB: u64 = 1 << 20;
const T: &str = "iqn.2026-12.io.lunar:repl";
const HOST: &str = "iqn.2026-12.io.lunar.test:repl-host";
const WAIT: Duration = Duration::from_secs(180);

fn start(repl: ReplicationCfg, metrics: Option<std::net::SocketAddr>) -> (Lunard, Lunarctl) {
    let mut cfg = with_target(TargetCfg::iscsi(T));
    cfg.replication = Some(repl);
    let d = Lunard::start_with(LunardOptions {
        config_yaml: Some(yaml(&cfg)),
        extra_args: metrics.map_or_else(Vec::new, |m| vec!["--metrics".into(), m.to_string()]),
        ..LunardOptions::default()
    })
    .expect("start lunard");
    let ctl = Lunarctl::for_daemon(&d).expect("lunarctl");
    (d, ctl)
}

fn io(d: &Lunard, lun: u64, cmds: &[String]) -> anyhow::Result<()> {
    qemu_io(&qemu_image_opts(d.addr(), T, lun, HOST, None), cmds).map(|_| ())
}

/// Waits until relationship `name` on `ctl`'s side has completed a transfer other than
/// `after`; returns that transfer's snapshot.
fn wait_transfer(ctl: &Lunarctl, name: &str, after: Option<&str>) -> String {
    let t0 = Instant::now();
    loop {
        let r = relationship(ctl, name);
        if let Some(s) = r["last_transfer"]["snapshot"].as_str() {
            if Some(s) != after {
                return s.to_string();
            }
        }
        assert!(
            t0.elapsed() < WAIT,
            "no new transfer of {name} within {WAIT:?}: {r}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Makes a linked clone of `volume@snap` on `ctl`'s lunard, mapped at `lun`.
fn clone_at(ctl: &Lunarctl, volume: &str, snap: &str, name: &str, lun: u64) {
    ctl_json(
        ctl,
        &[
            "clone",
            "create",
            "--source",
            &format!("{volume}@{snap}"),
            "--name",
            name,
            "--target",
            T,
            "--lun-id",
            &lun.to_string(),
        ],
    );
}

/// Two paired lunards: (site A, its lunarctl, site B, its lunarctl, the keys' directory).
/// Each exports metrics at its `metrics` address when given.
fn pair(
    metrics: [Option<std::net::SocketAddr>; 2],
) -> (Lunard, Lunarctl, Lunard, Lunarctl, tempfile::TempDir) {
    let keys = tempfile::tempdir().expect("tempdir");
    let (a_cfg, b_cfg) = paired_sites(keys.path());
    let (b, bctl) = start(b_cfg, metrics[1]);
    let (a, actl) = start(a_cfg, metrics[0]);
    (a, actl, b, bctl, keys)
}

#[test]
fn increments_compare_promote_and_reverse() {
    if !available("replication_link", &["qemu-io"]) {
        return;
    }
    let (a, actl, b, bctl, _keys) = pair([None, None]);

    ctl_json(
        &actl,
        &[
            "lun", "create", "vol", "--size", "64M", "--target", T, "--lun-id", "0",
        ],
    );
    io(&a, 0, &[format!("write -P 0x11 0 {}", 16 * MIB)]).expect("write on A");
    ctl_json(
        &actl,
        &[
            "replica",
            "create",
            "r1",
            "--volume",
            "vol",
            "--peer",
            "site-b",
            "--every",
            "2s",
            "--keep-local",
            "2",
            "--keep-remote",
            "3",
        ],
    );
    let s1 = wait_transfer(&actl, "r1", None);
    assert_eq!(relationship(&actl, "r1")["last_transfer"]["kind"], "full");
    // The replica side knows the relationship, as the replica.
    let rb = relationship(&bctl, "r1");
    assert_eq!(rb["role"], "replica", "{rb}");

    // The replica LUN refuses writes until promoted.
    ctl_json(
        &bctl,
        &["lun", "map", "vol", "--target", T, "--lun-id", "0"],
    );
    assert!(
        io(&b, 0, &[format!("write -P 0x99 0 {MIB}")]).is_err(),
        "a write to the replica LUN succeeded"
    );
    let e = bctl.json(&["lun", "set", "vol", "--read-only", "false"]);
    assert!(
        e.is_err(),
        "lun set --read-only false on a replica must be refused"
    );

    // Compare s1 through a linked clone of the replica's snapshot (writable).
    clone_at(&bctl, "vol", &s1, "c1", 1);
    io(
        &b,
        1,
        &[
            format!("read -P 0x11 0 {}", 16 * MIB),
            format!("read -P 0 {} {}", 16 * MIB, 48 * MIB),
        ],
    )
    .expect("s1 on B");
    io(&b, 1, &[format!("write -P 0x77 0 {MIB}")])
        .expect("the clone of a replica snapshot is writable");

    // Increments: two rounds of writes, each compared once a later transfer completes.
    let mut last = s1.clone();
    for (i, pat) in [0x22u8, 0x33].into_iter().enumerate() {
        let off = (20 + 8 * i as u64) * MIB;
        io(&a, 0, &[format!("write -P {pat:#x} {off} {}", 4 * MIB)]).expect("write on A");
        // A transfer that started before the write may not hold it: wait for two.
        let s = wait_transfer(&actl, "r1", Some(&last));
        let s = wait_transfer(&actl, "r1", Some(&s));
        assert_eq!(
            relationship(&actl, "r1")["last_transfer"]["kind"],
            "increment"
        );
        let cname = format!("c{}", i + 2);
        clone_at(&bctl, "vol", &s, &cname, 2 + i as u64);
        io(
            &b,
            2 + i as u64,
            &[
                format!("read -P 0x11 0 {}", 16 * MIB),
                format!("read -P {pat:#x} {off} {}", 4 * MIB),
            ],
        )
        .expect("increment on B");
        last = s;
    }

    // Failover: pause the source (the old site "fails"), promote B, write there.
    ctl_json(&actl, &["replica", "pause", "r1"]);
    ctl_json(&bctl, &["replica", "promote", "r1"]);
    io(&b, 0, &[format!("write -P 0x44 {} {}", 40 * MIB, 2 * MIB)])
        .expect("the promoted replica is writable");
    // Failback: reverse from B; A rolls back to the last common snapshot and receives.
    ctl_json(&bctl, &["replica", "reverse", "r1"]);
    let back = wait_transfer(&bctl, "r1", None);
    let back = wait_transfer(&bctl, "r1", Some(&back));
    assert_eq!(
        relationship(&bctl, "r1")["last_transfer"]["kind"],
        "increment",
        "reverse must not copy in full"
    );
    assert_eq!(relationship(&actl, "r1")["role"], "replica");
    clone_at(&actl, "vol", &back, "back", 1);
    io(
        &a,
        1,
        &[
            format!("read -P 0x11 0 {}", 16 * MIB),
            format!("read -P 0x22 {} {}", 20 * MIB, 4 * MIB),
            format!("read -P 0x33 {} {}", 28 * MIB, 4 * MIB),
            format!("read -P 0x44 {} {}", 40 * MIB, 2 * MIB),
        ],
    )
    .expect("A holds B's data after the reverse");
    drop((a, b));
}

fn snapshot_names(ctl: &Lunarctl, lun: &str) -> Vec<String> {
    let v = ctl_json(ctl, &["snapshot", "list", lun]);
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s["name"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn create_relationship(ctl: &Lunarctl, name: &str, volume: &str, extra: &[&str]) {
    let mut args = vec![
        "replica", "create", name, "--volume", volume, "--peer", "site-b", "--every", "1h",
    ];
    args.extend_from_slice(extra);
    ctl_json(ctl, &args);
}

#[test]
fn a_clone_arrives_as_an_increment_from_its_replicated_origin() {
    if !available("replication_link", &["qemu-io"]) {
        return;
    }
    let (a, actl, b, bctl, _keys) = pair([None, None]);
    // gold, replicated by r1 (one cycle: the schedule is an hour).
    ctl_json(
        &actl,
        &[
            "lun", "create", "gold", "--size", "64M", "--target", T, "--lun-id", "0",
        ],
    );
    io(&a, 0, &[format!("write -P 0x11 0 {}", 16 * MIB)]).expect("write gold");
    create_relationship(
        &actl,
        "r1",
        "gold",
        &["--keep-local", "1", "--keep-remote", "2"],
    );
    let s1 = wait_transfer(&actl, "r1", None);
    assert_eq!(relationship(&actl, "r1")["last_transfer"]["kind"], "full");

    // dev, a clone of the replicated snapshot, with 3 MiB of its own (whole chunks: 1 MiB
    // aligned, and chunks are at most 1 MiB).
    clone_at(&actl, "gold", &s1, "dev", 1);
    io(
        &a,
        1,
        &[
            format!("write -P 0x5a {} {}", 4 * MIB, 2 * MIB),
            format!("write -P 0x6b {} {MIB}", 40 * MIB),
        ],
    )
    .expect("write dev");
    let own = 3 * MIB;

    let before = used_bytes(&bctl);
    create_relationship(&actl, "r2", "dev", &[]);
    wait_transfer(&actl, "r2", None);
    assert_eq!(
        relationship(&actl, "r2")["last_transfer"]["kind"],
        "clone",
        "a clone whose origin the peer holds goes as an increment from it"
    );
    let grew = used_bytes(&bctl) - before;
    assert_eq!(
        grew, own,
        "the replica side grew by {grew} bytes for a clone with {own} bytes of its own"
    );
    let dev_b = ctl_json(&bctl, &["lun", "show", "dev"]);
    assert_eq!(dev_b["origin"], format!("gold@{s1}"), "{dev_b}");
    assert_eq!(dev_b["read_only"], true, "{dev_b}");

    // The replica reads back as the source clone, through iSCSI.
    ctl_json(
        &bctl,
        &["lun", "map", "dev", "--target", T, "--lun-id", "1"],
    );
    let want = [
        format!("read -P 0x11 0 {}", 4 * MIB),
        format!("read -P 0x5a {} {}", 4 * MIB, 2 * MIB),
        format!("read -P 0x11 {} {}", 6 * MIB, 10 * MIB),
        format!("read -P 0 {} {}", 16 * MIB, 24 * MIB),
        format!("read -P 0x6b {} {MIB}", 40 * MIB),
        format!("read -P 0 {} {}", 41 * MIB, 23 * MIB),
    ];
    io(&a, 1, &want).expect("the source clone");
    // The replica is write-protected: read it as a host would, read-only.
    qemu_io_read_only(&qemu_image_opts(b.addr(), T, 1, HOST, None), &want)
        .expect("the replica of the clone");

    // Retention keeps gold@s1 on both sides while the clones depend on it, although r1
    // keeps one (here) and two (there) snapshots: after two more cycles of r1, gold@s1 is
    // beyond the count on both sides.
    let mut last = s1.clone();
    for _ in 0..2 {
        ctl_json(&actl, &["replica", "sync", "r1"]);
        last = wait_transfer(&actl, "r1", Some(&last));
    }
    for (side, ctl) in [("source", &actl), ("replica", &bctl)] {
        let names = snapshot_names(ctl, "gold");
        assert!(names.contains(&s1), "{side} lost gold@{s1}: {names:?}");
        assert!(names.contains(&last), "{side}: {names:?}");
    }
    // The replica side shows the source's keep counts (seen from there: it keeps 2) and
    // its own lag.
    let r1b = relationship(&bctl, "r1");
    assert_eq!(
        (r1b["keep_local"].as_u64(), r1b["keep_remote"].as_u64()),
        (Some(2), Some(1)),
        "{r1b}"
    );
    assert!(r1b["lag_ms"].as_u64().is_some(), "{r1b}");
    drop((a, b));
}

#[test]
fn a_transfer_in_flight_shows_its_progress_on_both_sides() {
    if !available("replication_link", &["qemu-io"]) {
        return;
    }
    let addr =
        || -> std::net::SocketAddr { format!("127.0.0.1:{}", free_port()).parse().expect("addr") };
    let (ma, mb) = (addr(), addr());
    let (a, actl, b, bctl, _keys) = pair([Some(ma), Some(mb)]);
    ctl_json(
        &actl,
        &[
            "lun", "create", "big", "--size", "32M", "--target", T, "--lun-id", "0",
        ],
    );
    io(&a, 0, &[format!("write -P 0x21 0 {}", 24 * MIB)]).expect("write");
    // 24 MiB at 4 MiB/s: six seconds in flight, whatever the machine's speed.
    create_relationship(&actl, "slow", "big", &["--bandwidth", "4MiB"]);
    let (mut seen_a, mut seen_b) = (None, None);
    let t0 = Instant::now();
    while seen_a.is_none() || seen_b.is_none() {
        let ra = relationship(&actl, "slow");
        let t = &ra["transfer"];
        if seen_a.is_none() && t["bytes"].as_u64().is_some_and(|b| b > 0) && !t["eta_ms"].is_null()
        {
            let metrics = lunar_e2e::ha::http_get(ma, "/metrics").expect("metrics of A");
            seen_a = Some((t.clone(), metrics));
        }
        let rb = relationship(&bctl, "slow");
        if seen_b.is_none() && rb["transfer"]["bytes"].as_u64().is_some_and(|b| b > 0) {
            let metrics = lunar_e2e::ha::http_get(mb, "/metrics").expect("metrics of B");
            seen_b = Some((rb.clone(), metrics));
        }
        assert!(
            ra["last_transfer"].is_null(),
            "the transfer ended before both sides were seen in flight: {seen_a:?} {seen_b:?}"
        );
        assert!(t0.elapsed() < WAIT, "no transfer in flight: {ra}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let (t, ma_text) = seen_a.expect("seen on A");
    let total = t["total_bytes"].as_u64().expect("total");
    let bytes = t["bytes"].as_u64().expect("bytes");
    assert!(total > 24 * MIB && bytes < total, "{t}");
    assert_eq!(t["kind"], "full", "{t}");
    assert!(
        t["rate_bytes_per_sec"].as_f64().is_some_and(|r| r > 0.0),
        "{t}"
    );
    let sent = lunar_e2e::ha::metric_sum(
        &ma_text,
        "lunar_replica_transfer_bytes",
        "relationship=\"slow\"",
    );
    let size = lunar_e2e::ha::metric_sum(
        &ma_text,
        "lunar_replica_transfer_size_bytes",
        "relationship=\"slow\"",
    );
    assert!(
        sent > 0.0 && size == total as f64,
        "sent {sent}, size {size}, total {total}"
    );
    let (rb, mb_text) = seen_b.expect("seen on B");
    assert_eq!(rb["state"], "receiving", "{rb}");
    let got = lunar_e2e::ha::metric_sum(
        &mb_text,
        "lunar_replica_transfer_bytes",
        "relationship=\"slow\"",
    );
    assert!(got > 0.0, "B's metrics:\n{mb_text}");
    // Once done, the progress is gone and the replica side reports its lag.
    wait_transfer(&actl, "slow", None);
    assert!(relationship(&actl, "slow")["transfer"].is_null());
    let t0 = Instant::now();
    loop {
        let text = lunar_e2e::ha::http_get(mb, "/metrics").expect("metrics of B");
        if text.contains("lunar_replica_lag_seconds{relationship=\"slow\"}") {
            break;
        }
        assert!(t0.elapsed() < WAIT, "B exports no lag for slow:\n{text}");
        std::thread::sleep(Duration::from_millis(250));
    }
    drop((a, b));
}
