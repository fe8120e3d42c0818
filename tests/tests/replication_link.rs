//! Replication between two lunards on loopback (issue 18, docs/replication.md): separate
//! data directories and ports, mutual TLS with pinned identities, a relationship on a
//! short schedule. Data is written and compared through iSCSI with qemu-io:
//!
//! - the first cycle sends in full, later ones increments; after each, a linked clone of
//!   the replica's newest snapshot (a normal writable LUN, made while replication goes on)
//!   holds exactly what the source held when the snapshot was taken;
//! - the replica LUN refuses writes (DATA PROTECT) until promoted;
//! - promote, write on the replica, reverse: the old source is rolled back to the last
//!   common snapshot and receives an increment; it then holds the promoted side's data.

use std::net::TcpListener;
use std::path::Path;
use std::time::{Duration, Instant};

use lunar_e2e::admin::Lunarctl;
use lunar_e2e::config::{with_target, yaml, TargetCfg};
use lunar_e2e::initiator::{qemu_image_opts, qemu_io};
use lunar_e2e::tools::available;
use lunar_e2e::{Lunard, LunardOptions};
use serde_json::Value;
use target_daemon::config::{DurationCfg, IdentityCfg, PeerCfg, ReplicationCfg};
use target_daemon::replica::identity::Identity;

const MIB: u64 = 1 << 20;
const T: &str = "iqn.2026-12.io.lunar:repl";
const HOST: &str = "iqn.2026-12.io.lunar.test:repl-host";
const WAIT: Duration = Duration::from_secs(180);

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

fn repl_cfg(
    dir: &Path,
    who: &str,
    listen: Option<u16>,
    peer: (&str, Option<u16>, &Identity),
) -> ReplicationCfg {
    ReplicationCfg {
        listen: listen.map(|p| format!("127.0.0.1:{p}").parse().expect("addr")),
        identity: IdentityCfg {
            cert: dir.join(format!("{who}.crt")),
            key: dir.join(format!("{who}.key")),
        },
        peers: vec![PeerCfg {
            name: peer.0.into(),
            address: peer.1.map(|p| format!("127.0.0.1:{p}")),
            fingerprint: Some(peer.2.fingerprint().to_string()),
            certificate: None,
            volumes: Some(vec!["*".into()]),
            space_limit: None,
        }],
        max_connections: 8,
        handshake_timeout: DurationCfg(Duration::from_secs(10)),
        idle_timeout: DurationCfg(Duration::from_secs(30)),
    }
}

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

fn ctl_json(ctl: &Lunarctl, args: &[&str]) -> Value {
    ctl.json(args)
        .unwrap_or_else(|e| panic!("lunarctl {args:?}: {e:#}"))
}

fn io(d: &Lunard, lun: u64, cmds: &[String]) -> anyhow::Result<()> {
    qemu_io(&qemu_image_opts(d.addr(), T, lun, HOST, None), cmds).map(|_| ())
}

fn relationship(ctl: &Lunarctl, name: &str) -> Value {
    let list = ctl_json(ctl, &["replica", "list"]);
    list.as_array()
        .and_then(|a| a.iter().find(|r| r["name"] == name).cloned())
        .unwrap_or(Value::Null)
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

#[test]
fn increments_compare_promote_and_reverse() {
    if !available("replication_link", &["qemu-io"]) {
        return;
    }
    let keys = tempfile::tempdir().expect("tempdir");
    let a_id = Identity::create(
        "site-a",
        &keys.path().join("a.crt"),
        &keys.path().join("a.key"),
        false,
    )
    .expect("identity a");
    let b_id = Identity::create(
        "site-b",
        &keys.path().join("b.crt"),
        &keys.path().join("b.key"),
        false,
    )
    .expect("identity b");
    let (pa, pb) = (free_port(), free_port());
    let (b, bctl) = start(repl_cfg(
        keys.path(),
        "b",
        Some(pb),
        ("site-a", Some(pa), &a_id),
    ));
    let (a, actl) = start(repl_cfg(
        keys.path(),
        "a",
        Some(pa),
        ("site-b", Some(pb), &b_id),
    ));

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
