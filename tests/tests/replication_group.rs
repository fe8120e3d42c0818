//! Replication of a consistency group between two lunards on loopback (issue 18,
//! docs/replication.md "Consistency groups", decision 0027): one relationship for the group,
//! one group snapshot per cycle, every member's stream staged on the replica and committed
//! there with the others in one journal block.
//!
//! - A writer writes sequence n to LUN `a`, waits for the completion, then writes n to LUN
//!   `b`, through iSCSI, while cycles run. After each cycle, the replica's members read back
//!   through iSCSI hold `a = b` or `a = b + 1` (write-order consistent: never a `b` newer
//!   than its `a`), and equal the source's group snapshot of that cycle.
//! - kill -9 of the receiving lunard after the first member's stream is staged and while
//!   the second's is in flight (before the group commit) leaves every member of the replica
//!   at the previous group snapshot; the next cycle resumes the staged streams from their
//!   tokens and completes; `pool check` is clean on the replica.
//! - Failback: after a promote of the group on the replica and writes on both sides,
//!   `replica reverse` rolls the old source's members back to the last common group
//!   snapshot together and replicates the other way with an increment (no full copy).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lunar_e2e::admin::Lunarctl;
use lunar_e2e::config::{with_target, yaml, TargetCfg};
use lunar_e2e::initiator::{qemu_image_opts, qemu_io, qemu_io_read_only, QemuIoSession};
use lunar_e2e::replication::{ctl_json, paired_sites, relationship, wait_for};
use lunar_e2e::tools::available;
use lunar_e2e::{Lunard, LunardOptions};
use serde_json::Value;
use target_daemon::config::ReplicationCfg;

const MIB: u64 = 1 << 20;
const T: &str = "iqn.2026-12.io.lunar:replgroup";
const HOST: &str = "iqn.2026-12.io.lunar.test:replgroup-host";
const WAIT: Duration = Duration::from_secs(180);

fn start(repl: ReplicationCfg) -> (Lunard, Lunarctl) {
    let mut cfg = with_target(TargetCfg::iscsi(T));
    cfg.replication = Some(repl);
    let d = Lunard::start_with(LunardOptions {
        config_yaml: Some(yaml(&cfg)),
        ..LunardOptions::default()
    })
    .expect("start lunard");
    let ctl = Lunarctl::for_daemon(&d).expect("lunarctl");
    (d, ctl)
}

/// Two paired lunards: (site A, its lunarctl, site B, its lunarctl, the keys' directory).
fn pair() -> (Lunard, Lunarctl, Lunard, Lunarctl, tempfile::TempDir) {
    let keys = tempfile::tempdir().expect("tempdir");
    let (a_cfg, b_cfg) = paired_sites(keys.path());
    let (b, bctl) = start(b_cfg);
    let (a, actl) = start(a_cfg);
    (a, actl, b, bctl, keys)
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
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn pending(ctl: &Lunarctl) -> Vec<Value> {
    ctl_json(ctl, &["replica", "receive-status"])
        .as_array()
        .cloned()
        .unwrap_or_default()
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

/// The first byte of LUN `lun` of `d`'s target, read through iSCSI (read-only: replicas
/// are write-protected, and a host reads them so).
fn first_byte(d: &Lunard, lun: u64) -> u8 {
    let out = qemu_io_read_only(
        &qemu_image_opts(d.addr(), T, lun, HOST, None),
        &["read -v 0 512".to_string()],
    )
    .unwrap_or_else(|e| panic!("read LUN {lun}: {e:#}"));
    let text = out.stdout.clone();
    text.lines()
        .find_map(|l| l.strip_prefix("00000000:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|h| u8::from_str_radix(h, 16).ok())
        .unwrap_or_else(|| panic!("no hex dump in qemu-io's output: {text}"))
}

/// The members' first bytes at source group snapshot `snap`: read through linked clones of
/// `a@snap` and `b@snap` mapped at `lun` and `lun + 1` on A.
fn source_at(a: &Lunard, actl: &Lunarctl, snap: &str, lun: u64) -> (u8, u8) {
    let mut got = [0u8; 2];
    for (i, m) in ["a", "b"].iter().enumerate() {
        let id = lun + i as u64;
        ctl_json(
            actl,
            &[
                "clone",
                "create",
                "--source",
                &format!("{m}@{snap}"),
                "--name",
                &format!("{m}-{snap}"),
                "--target",
                T,
                "--lun-id",
                &id.to_string(),
            ],
        );
        got[i] = first_byte(a, id);
    }
    (got[0], got[1])
}

#[test]
fn a_group_replicates_write_order_consistent_and_survives_a_kill_of_the_receiver() {
    if !available("replication_group", &["qemu-io"]) {
        return;
    }
    let (a, actl, mut b, bctl, _keys) = pair();
    for (m, lun) in [("a", "0"), ("b", "1")] {
        ctl_json(
            &actl,
            &[
                "lun", "create", m, "--size", "32M", "--target", T, "--lun-id", lun,
            ],
        );
    }
    ctl_json(&actl, &["cg", "create", "db", "--lun", "a", "--lun", "b"]);
    // An hour's schedule: cycles run when the test asks (`sync`), so each cycle's result
    // is read before the next one starts. 4 MiB/s: a 24 MiB member stream takes seconds.
    ctl_json(
        &actl,
        &[
            "replica",
            "create",
            "g",
            "--group",
            "db",
            "--peer",
            "site-b",
            "--every",
            "1h",
            "--keep-local",
            "10",
            "--keep-remote",
            "10",
            "--bandwidth",
            "4MiB",
        ],
    );
    let first = wait_transfer(&actl, "g", None);
    let g = relationship(&actl, "g");
    assert_eq!(g["group"], "db", "{g}");
    let members: Vec<&str> = g["members"]
        .as_array()
        .map(|m| m.iter().filter_map(|m| m["volume"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(members, ["a", "b"], "{g}");
    // The replica side keeps one record per member, tied to the group's relationship.
    for m in ["a", "b"] {
        let r = relationship(&bctl, &format!("g.{m}"));
        assert_eq!(r["role"], "replica", "{r}");
        assert_eq!(r["group"], "g", "{r}");
        assert_eq!(r["volume"], m, "{r}");
    }
    // A member LUN cannot join another relationship; the group cannot go while replicated.
    assert!(actl
        .json(&["replica", "create", "x", "--volume", "a", "--peer", "site-b"])
        .is_err());
    assert!(actl.json(&["cg", "delete", "db"]).is_err());
    for (m, lun) in [("a", "0"), ("b", "1")] {
        ctl_json(&bctl, &["lun", "map", m, "--target", T, "--lun-id", lun]);
    }

    // The writer: sequence n to a, completed, then to b; cycles run meanwhile.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (addr, stop) = (a.addr(), stop.clone());
        std::thread::spawn(move || {
            let mut sa =
                QemuIoSession::open(&qemu_image_opts(addr, T, 0, HOST, None)).expect("session a");
            let mut sb =
                QemuIoSession::open(&qemu_image_opts(addr, T, 1, HOST, None)).expect("session b");
            let mut n = 0u32;
            while n < 250 && !stop.load(Ordering::Relaxed) {
                n += 1;
                sa.command(&format!("write -P {n} 0 4k")).expect("write a");
                sb.command(&format!("write -P {n} 0 4k")).expect("write b");
                std::thread::sleep(Duration::from_millis(20));
            }
            n
        })
    };
    let mut last = first.clone();
    let mut seen_data = false;
    for cycle in 0..5u64 {
        ctl_json(&actl, &["replica", "sync", "g"]);
        let s = wait_transfer(&actl, "g", Some(&last));
        // The replica does not change until the next `sync`: read both members now.
        let (ra, rb) = (first_byte(&b, 0), first_byte(&b, 1));
        assert!(
            ra == rb || ra == rb.wrapping_add(1),
            "cycle {cycle} ({s}): the replica holds a = {ra}, b = {rb}: not write-order consistent"
        );
        seen_data |= ra != 0;
        let (sa, sb) = source_at(&a, &actl, &s, 2 + 2 * cycle);
        assert_eq!(
            (ra, rb),
            (sa, sb),
            "cycle {cycle}: the replica differs from the source's group snapshot {s}"
        );
        for m in ["a", "b"] {
            let names = snapshot_names(&bctl, m);
            assert!(names.contains(&s), "{m} on the replica: {names:?}");
        }
        last = s;
    }
    stop.store(true, Ordering::Relaxed);
    let n = writer.join().expect("writer");
    assert!(n > 0 && seen_data, "the writer wrote {n}");

    // kill -9 of the receiver between the member streams and the group commit: the first
    // member is staged whole, the second is being received (4 MiB/s).
    qemu_io(
        &qemu_image_opts(a.addr(), T, 0, HOST, None),
        &["write -P 0xa1 0 4k".to_string()],
    )
    .expect("write a");
    qemu_io(
        &qemu_image_opts(a.addr(), T, 1, HOST, None),
        &[format!("write -P 0xb1 0 {}", 24 * MIB)],
    )
    .expect("write b");
    let before = (first_byte(&b, 0), first_byte(&b, 1));
    let snaps_before = [snapshot_names(&bctl, "a"), snapshot_names(&bctl, "b")];
    ctl_json(&actl, &["replica", "sync", "g"]);
    wait_for("a staged, b being received on the replica", WAIT, || {
        let p = pending(&bctl);
        p.iter().any(|p| p["volume"] == "a")
            && p.iter().any(|p| {
                p["volume"] == "b"
                    && p["next_index"].as_u64().is_some_and(|n| n > 0)
                    && p["staged_bytes"].as_u64().is_some_and(|n| n > 0)
            })
    });
    b.kill9().expect("kill -9 B");
    // Hold the source's cycles while the replica is checked.
    ctl_json(&actl, &["replica", "pause", "g"]);
    wait_for("the interrupted cycle to end on A", WAIT, || {
        relationship(&actl, "g")["state"] != "transferring"
    });
    b.restart().expect("restart B");
    for (m, was) in ["a", "b"].iter().zip(&snaps_before) {
        let names = snapshot_names(&bctl, m);
        assert_eq!(
            &names, was,
            "{m}: every member stays at the previous group snapshot ({last})"
        );
    }
    assert_eq!(
        (first_byte(&b, 0), first_byte(&b, 1)),
        before,
        "the replica's data changed without a group commit"
    );
    let staged: Vec<String> = pending(&bctl)
        .iter()
        .filter_map(|p| p["volume"].as_str().map(str::to_string))
        .collect();
    assert!(
        staged.contains(&"a".to_string()) && staged.contains(&"b".to_string()),
        "the staged receives survive the crash: {staged:?}"
    );
    // The next cycle resumes both staged streams (the same group snapshot) and commits.
    ctl_json(&actl, &["replica", "resume", "g"]);
    let s = wait_transfer(&actl, "g", Some(&last));
    let g = relationship(&actl, "g");
    let bytes = g["last_transfer"]["bytes"].as_u64().unwrap_or(u64::MAX);
    assert!(
        bytes < 24 * MIB,
        "the cycle after the crash resumed the staged streams ({bytes} bytes sent): {g}"
    );
    assert!(pending(&bctl).is_empty(), "{:?}", pending(&bctl));
    for m in ["a", "b"] {
        let names = snapshot_names(&bctl, m);
        assert!(names.contains(&s), "{m} on the replica: {names:?}");
    }
    assert_eq!((first_byte(&b, 0), first_byte(&b, 1)), (0xa1, 0xb1));
    qemu_io_read_only(
        &qemu_image_opts(b.addr(), T, 1, HOST, None),
        &[format!("read -P 0xb1 0 {}", 24 * MIB)],
    )
    .expect("b's 24 MiB on the replica");
    let check = ctl_json(&bctl, &["pool", "check"]);
    assert_eq!(check["clean"], true, "{check}");
    assert_eq!(check["leaked_chunks"], 0, "{check}");

    // Promote acts on every member of the group.
    ctl_json(&actl, &["replica", "pause", "g"]);
    ctl_json(&bctl, &["replica", "promote", "g"]);
    for m in ["a", "b"] {
        let r = relationship(&bctl, &format!("g.{m}"));
        assert_eq!(r["role"], "promoted", "{r}");
    }
    qemu_io(
        &qemu_image_opts(b.addr(), T, 1, HOST, None),
        &["write -P 0x77 0 4k".to_string()],
    )
    .expect("a promoted member is writable");
    drop((a, b));
}

/// Failback of a group without a full copy: A replicates {a, b} to B; A's site "fails"
/// (its relationship paused, then its lunard killed), B promotes the group and writes;
/// A writes too after the failover (writes the reverse discards). A reverse while A is
/// down is refused and changes nothing; once A is back, `replica reverse` on B rolls A's
/// members back to the last common group snapshot together and makes them B's replicas,
/// and B's next cycle sends only the changes: A then reads B's data on both members.
#[test]
fn a_promoted_group_reverses_from_the_last_common_group_snapshot() {
    if !available("replication_group", &["qemu-io"]) {
        return;
    }
    let (mut a, actl, b, bctl, _keys) = pair();
    for (m, lun) in [("a", "0"), ("b", "1")] {
        ctl_json(
            &actl,
            &[
                "lun", "create", m, "--size", "32M", "--target", T, "--lun-id", lun,
            ],
        );
        // 8 MiB of data per member: what a full copy would send again.
        qemu_io(
            &qemu_image_opts(a.addr(), T, lun.parse().unwrap_or(0), HOST, None),
            &[format!("write -P 0x11 0 {}", 8 * MIB)],
        )
        .expect("write on A");
    }
    ctl_json(&actl, &["cg", "create", "db", "--lun", "a", "--lun", "b"]);
    ctl_json(
        &actl,
        &[
            "replica",
            "create",
            "g",
            "--group",
            "db",
            "--peer",
            "site-b",
            "--every",
            "1h",
            "--keep-local",
            "5",
            "--keep-remote",
            "5",
        ],
    );
    let first = wait_transfer(&actl, "g", None);
    let full = relationship(&actl, "g")["last_transfer"]["bytes"]
        .as_u64()
        .unwrap_or(0);
    assert!(full >= 16 * MIB, "the first transfer is full: {full} bytes");
    // Two more cycles, each with a change on both members.
    let mut last = first;
    for (i, pat) in [0x22u8, 0x33].into_iter().enumerate() {
        for lun in [0, 1] {
            qemu_io(
                &qemu_image_opts(a.addr(), T, lun, HOST, None),
                &[format!("write -P {pat:#x} {} 4k", (9 + i as u64) * MIB)],
            )
            .expect("write on A");
        }
        ctl_json(&actl, &["replica", "sync", "g"]);
        last = wait_transfer(&actl, "g", Some(&last));
    }
    for (m, lun) in [("a", "0"), ("b", "1")] {
        ctl_json(&bctl, &["lun", "map", m, "--target", T, "--lun-id", lun]);
    }
    // The wrong sides refuse: the source, and a replica not promoted yet.
    let e = actl
        .json(&["replica", "reverse", "g"])
        .expect_err("reverse on the source");
    assert!(format!("{e:#}").contains("promoted replica"), "{e:#}");
    let e = bctl
        .json(&["replica", "reverse", "g"])
        .expect_err("reverse before the promote");
    assert!(
        format!("{e:#}").contains("promote the group first"),
        "{e:#}"
    );

    // Failover: A stops, B promotes the group and writes on both members.
    ctl_json(&actl, &["replica", "pause", "g"]);
    wait_for("A's cycle to end", WAIT, || {
        relationship(&actl, "g")["state"] != "transferring"
    });
    ctl_json(&bctl, &["replica", "promote", "g"]);
    for (lun, pat) in [(0u64, 0xc1u8), (1, 0xc2)] {
        qemu_io(
            &qemu_image_opts(b.addr(), T, lun, HOST, None),
            &[format!("write -P {pat:#x} 0 4k")],
        )
        .expect("write on promoted B");
    }
    // A keeps writing after the failover: the reverse discards these writes.
    for lun in [0, 1] {
        qemu_io(
            &qemu_image_opts(a.addr(), T, lun, HOST, None),
            &[format!("write -P 0xee {} 4k", 12 * MIB)],
        )
        .expect("write on the old source");
    }

    // A is down: the reverse is refused and nothing changes on B.
    a.kill9().expect("kill -9 A");
    let e = bctl
        .json(&["replica", "reverse", "g"])
        .expect_err("reverse with the old source down");
    assert!(format!("{e:#}").contains("reachable"), "{e:#}");
    for m in ["a", "b"] {
        let r = relationship(&bctl, &format!("g.{m}"));
        assert_eq!(r["role"], "promoted", "{r}");
    }
    assert_eq!(relationship(&bctl, "g"), Value::Null);
    a.restart().expect("restart A");

    // Failback: B becomes the group's source, A's members its replicas.
    ctl_json(&bctl, &["replica", "reverse", "g"]);
    let g = relationship(&bctl, "g");
    assert_eq!(g["role"], "source", "{g}");
    let members: Vec<&str> = g["members"]
        .as_array()
        .map(|m| m.iter().filter_map(|m| m["volume"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(members, ["a", "b"], "{g}");
    for m in ["a", "b"] {
        assert_eq!(relationship(&bctl, &format!("g.{m}")), Value::Null);
        let r = relationship(&actl, &format!("g.{m}"));
        assert_eq!(r["role"], "replica", "{r}");
        assert_eq!(r["group"], "g", "{r}");
    }
    assert_eq!(relationship(&actl, "g"), Value::Null);
    let back = wait_transfer(&bctl, "g", None);
    let t = relationship(&bctl, "g")["last_transfer"].clone();
    assert_eq!(t["kind"], "increment", "no full copy: {t}");
    let bytes = t["bytes"].as_u64().unwrap_or(u64::MAX);
    assert!(
        bytes < MIB && bytes < full / 16,
        "the reverse sent only the changes ({bytes} bytes; the full copy was {full}): {t}"
    );
    for m in ["a", "b"] {
        let names = snapshot_names(&actl, m);
        assert!(names.contains(&back), "{m} on A: {names:?}");
        assert!(
            names.contains(&last),
            "{m} on A keeps the common {last}: {names:?}"
        );
    }
    // A's members hold B's data, the common snapshot's data, and not A's discarded writes.
    for (lun, pat) in [(0u64, 0xc1u8), (1, 0xc2)] {
        qemu_io_read_only(
            &qemu_image_opts(a.addr(), T, lun, HOST, None),
            &[
                format!("read -P {pat:#x} 0 4k"),
                format!("read -P 0x11 4k {}", 8 * MIB - 4096),
                format!("read -P 0x22 {} 4k", 9 * MIB),
                format!("read -P 0x33 {} 4k", 10 * MIB),
                format!("read -P 0 {} 4k", 12 * MIB),
            ],
        )
        .unwrap_or_else(|e| panic!("LUN {lun} on A after the reverse: {e:#}"));
    }
    // A's members are write-protected replicas now.
    assert!(
        qemu_io(
            &qemu_image_opts(a.addr(), T, 0, HOST, None),
            &["write -P 0x99 0 4k".to_string()],
        )
        .is_err(),
        "a write to A's replica member succeeded"
    );
    let check = ctl_json(&actl, &["pool", "check"]);
    assert_eq!(check["clean"], true, "{check}");
    drop((a, b));
}
