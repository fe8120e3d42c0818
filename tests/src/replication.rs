//! Helpers the replication e2e tests share (tests/tests/replication*.rs): paired lunards'
//! replication configuration, the `lunarctl` queries they poll, and reading a whole LUN
//! back over iSCSI to compare replica and source.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use target_daemon::config::{DurationCfg, IdentityCfg, PeerCfg, ReplicationCfg};
use target_daemon::replica::identity::Identity;

use crate::admin::Lunarctl;
use crate::initiator::qemu_image_opts;
use crate::process::run;
use crate::Lunard;

/// A free loopback port for a replication listener (see [`crate::net::free_loopback_port`]
/// on the race with other processes).
pub fn free_port() -> u16 {
    crate::net::free_loopback_port().expect("a free loopback port")
}

/// The replication section of site `who`: its identity at `dir/who.crt` and `dir/who.key`,
/// listening on `listen` (loopback), pairing with one peer `(name, port, identity)` (reached
/// at that loopback port when given), which may replicate into `volumes` within
/// `space_limit` bytes.
pub fn repl_cfg(
    dir: &Path,
    who: &str,
    listen: Option<u16>,
    peer: (&str, Option<u16>, &Identity),
    volumes: &[&str],
    space_limit: Option<u64>,
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
            volumes: Some(volumes.iter().map(|v| v.to_string()).collect()),
            space_limit: space_limit.map(target_daemon::config::ByteSize),
        }],
        max_connections: 8,
        handshake_timeout: DurationCfg(Duration::from_secs(10)),
        idle_timeout: DurationCfg(Duration::from_secs(30)),
    }
}

/// `lunarctl ARGS` as JSON; panics (naming the command) when it fails.
pub fn ctl_json(ctl: &Lunarctl, args: &[&str]) -> Value {
    ctl.json(args)
        .unwrap_or_else(|e| panic!("lunarctl {args:?}: {e:#}"))
}

/// Relationship `name` as `replica list` shows it (`Null` when it is not listed).
pub fn relationship(ctl: &Lunarctl, name: &str) -> Value {
    let list = ctl_json(ctl, &["replica", "list"]);
    list.as_array()
        .and_then(|a| a.iter().find(|r| r["name"] == name).cloned())
        .unwrap_or(Value::Null)
}

/// The pool's used bytes (`pool status`, one pool or the first of several).
pub fn used_bytes(ctl: &Lunarctl) -> u64 {
    let v = ctl_json(ctl, &["pool", "status"]);
    v["used_bytes"]
        .as_u64()
        .or_else(|| v[0]["used_bytes"].as_u64())
        .unwrap_or_else(|| panic!("used_bytes in {v}"))
}

/// Polls `cond` every 100 ms until it holds; panics after `limit`.
pub fn wait_for(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !cond() {
        assert!(t0.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// LUN `lun` of target `iqn` on `d`, read whole over iSCSI with qemu-img as initiator
/// `host` (through a file in `scratch`, removed afterwards).
pub fn read_lun(d: &Lunard, iqn: &str, lun: u64, host: &str, scratch: &Path) -> Vec<u8> {
    static READS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = READS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = scratch.join(format!("read-{}-{n}-{lun}.raw", std::process::id()));
    let opts = qemu_image_opts(d.addr(), iqn, lun, host, None);
    run(
        Command::new("qemu-img")
            .args(["convert", "--image-opts", &opts, "-O", "raw"])
            .arg(&path),
        Duration::from_secs(300),
    )
    .and_then(|o| o.check())
    .unwrap_or_else(|e| panic!("{e:#}"));
    let bytes = std::fs::read(&path).expect("read image");
    let _ = std::fs::remove_file(&path);
    bytes
}

/// The replication sections of two paired sites, `site-a` and `site-b`, each trusting the
/// other for every volume with no space limit: identities created under `keys`, listeners on
/// free loopback ports. Returns (site A's section, site B's section).
pub fn paired_sites(keys: &Path) -> (ReplicationCfg, ReplicationCfg) {
    let id = |name: &str, file: &str| {
        Identity::create(
            name,
            &keys.join(format!("{file}.crt")),
            &keys.join(format!("{file}.key")),
            false,
        )
        .unwrap_or_else(|e| panic!("identity {name}: {e:#}"))
    };
    let (a_id, b_id) = (id("site-a", "a"), id("site-b", "b"));
    let (pa, pb) = (free_port(), free_port());
    let a = repl_cfg(
        keys,
        "a",
        Some(pa),
        ("site-b", Some(pb), &b_id),
        &["*"],
        None,
    );
    let b = repl_cfg(
        keys,
        "b",
        Some(pb),
        ("site-a", Some(pa), &a_id),
        &["*"],
        None,
    );
    (a, b)
}
