//! What a paired replication peer may do (decision 0024), and relationship transfers cut by
//! kill -9, between two lunards on loopback; data compared through iSCSI with qemu-img:
//!
//! - a peer asking about a volume outside its `replication.peers[].volumes` is refused
//!   with a specific error shown in the sender's `replica list`; the receiver creates
//!   nothing and reveals nothing of its other volumes;
//! - a `space_limit` smaller than the volume's data stops the first transfer with the
//!   limit's error, leaves no staged transfer, no volume, no relationship record and no
//!   used space behind (pool check clean); raised (config change and restart), the next
//!   cycle succeeds and the replica reads back equal to the source;
//! - kill -9 of the receiving lunard, then of the sending one, in the middle of a
//!   relationship's transfer (slowed by its bandwidth limit, and killed only once the
//!   receiver shows saved progress): the next cycle resumes from the receiver's token,
//!   sends less than the whole, and the replica reads back equal to the source with no
//!   leaked space.

use std::path::Path;
use std::time::Duration;

use lunar_e2e::admin::Lunarctl;
use lunar_e2e::config::{with_target, yaml, ByteSize, TargetCfg};
use lunar_e2e::initiator::{qemu_image_opts, qemu_io};
use lunar_e2e::replication::{ctl_json, free_port, relationship, repl_cfg, used_bytes};
use lunar_e2e::tools::available;
use lunar_e2e::{Lunard, LunardOptions};
use serde_json::Value;
use target_daemon::replica::identity::Identity;

const MIB: u64 = 1 << 20;
const T: &str = "iqn.2026-12.io.lunar:trust";
const HOST: &str = "iqn.2026-12.io.lunar.test:trust-host";
const WAIT: Duration = Duration::from_secs(180);

/// Two identities and two replication ports.
struct Pair {
    keys: tempfile::TempDir,
    a_id: Identity,
    b_id: Identity,
    pa: u16,
    pb: u16,
}

impl Pair {
    fn new() -> Pair {
        let keys = tempfile::tempdir().expect("tempdir");
        let id = |n: &str| {
            Identity::create(
                n,
                &keys.path().join(format!("{n}.crt")),
                &keys.path().join(format!("{n}.key")),
                false,
            )
            .expect("identity")
        };
        let (a_id, b_id) = (id("a"), id("b"));
        Pair {
            a_id,
            b_id,
            keys,
            pa: free_port(),
            pb: free_port(),
        }
    }

    /// A's configuration: listens, trusts site-b with every volume.
    fn a_yaml(&self) -> String {
        config_yaml(
            self.keys.path(),
            "a",
            self.pa,
            ("site-b", self.pb, &self.b_id),
            &["*"],
            None,
        )
    }

    /// B's configuration: trusts site-a with `volumes` and `limit`.
    fn b_yaml(&self, volumes: &[&str], limit: Option<u64>) -> String {
        config_yaml(
            self.keys.path(),
            "b",
            self.pb,
            ("site-a", self.pa, &self.a_id),
            volumes,
            limit,
        )
    }
}

fn config_yaml(
    dir: &Path,
    who: &str,
    listen: u16,
    peer: (&str, u16, &Identity),
    volumes: &[&str],
    limit: Option<u64>,
) -> String {
    let repl = repl_cfg(
        dir,
        who,
        Some(listen),
        (peer.0, Some(peer.1), peer.2),
        volumes,
        limit,
    );
    let mut cfg = with_target(TargetCfg::iscsi(T));
    if let Some(p) = cfg.pool.as_mut() {
        p.capacity = Some(ByteSize::parse("1GiB").expect("pool capacity"));
    }
    cfg.replication = Some(repl);
    yaml(&cfg)
}

fn start(yaml: String) -> (Lunard, Lunarctl) {
    let d = Lunard::start_with(LunardOptions {
        config_yaml: Some(yaml),
        ..LunardOptions::default()
    })
    .expect("start lunard");
    let ctl = Lunarctl::for_daemon(&d).expect("lunarctl");
    (d, ctl)
}

fn io(d: &Lunard, lun: u64, cmds: &[String]) {
    qemu_io(&qemu_image_opts(d.addr(), T, lun, HOST, None), cmds)
        .unwrap_or_else(|e| panic!("qemu-io: {e:#}"));
}

/// The whole LUN, read over iSCSI with qemu-img.
fn read_lun(d: &Lunard, lun: u64, scratch: &Path) -> Vec<u8> {
    lunar_e2e::replication::read_lun(d, T, lun, HOST, scratch)
}

/// Polls `cond` until it holds, for at most [`WAIT`].
fn wait_for(what: &str, cond: impl FnMut() -> bool) {
    lunar_e2e::replication::wait_for(what, WAIT, cond)
}

/// Waits until relationship `name` has completed a transfer other than `after`; returns
/// the relationship as listed then.
fn wait_transfer(ctl: &Lunarctl, name: &str, after: Option<&str>) -> Value {
    let mut out = Value::Null;
    wait_for(&format!("a new transfer of {name}"), || {
        out = relationship(ctl, name);
        out["last_transfer"]["snapshot"]
            .as_str()
            .is_some_and(|s| Some(s) != after)
    });
    out
}

fn lun_names(ctl: &Lunarctl) -> Vec<String> {
    ctl_json(ctl, &["lun", "list"])
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|l| l["name"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn pending(ctl: &Lunarctl) -> Vec<Value> {
    ctl_json(ctl, &["replica", "receive-status"])
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn assert_clean(ctl: &Lunarctl) {
    let check = ctl_json(ctl, &["pool", "check"]);
    assert_eq!(check["clean"], true, "{check}");
    assert_eq!(check["leaked_chunks"], 0, "{check}");
}

fn create_relationship(ctl: &Lunarctl, name: &str, volume: &str, remote: &str, extra: &[&str]) {
    let mut args = vec![
        "replica",
        "create",
        name,
        "--volume",
        volume,
        "--peer",
        "site-b",
        "--remote-volume",
        remote,
        "--every",
        "1h",
    ];
    args.extend_from_slice(extra);
    ctl_json(ctl, &args);
}

#[test]
fn a_peer_is_held_to_its_volumes_and_its_space_limit() {
    if !available("replication_trust", &["qemu-io", "qemu-img"]) {
        return;
    }
    let scratch = tempfile::tempdir().expect("scratch");
    let pair = Pair::new();
    // B lets site-a replicate into prod-* only, within 8 MiB at first.
    let (mut b, bctl) = start(pair.b_yaml(&["prod-*"], Some(8 * MIB)));
    let (a, actl) = start(pair.a_yaml());

    // B's own LUN, with a snapshot, that site-a was not given.
    ctl_json(
        &bctl,
        &[
            "lun", "create", "other", "--size", "8M", "--target", T, "--lun-id", "0",
        ],
    );
    io(&b, 0, &[format!("write -P 0x5a 0 {}", 2 * MIB)]);
    ctl_json(&bctl, &["snapshot", "create", "other@mine"]);
    let b_used = used_bytes(&bctl);

    // 1. Outside the allow-list: the first request (Status) is refused, naming the volume.
    ctl_json(
        &actl,
        &[
            "lun", "create", "secret", "--size", "8M", "--target", T, "--lun-id", "0",
        ],
    );
    io(&a, 0, &[format!("write -P 0x11 0 {}", 4 * MIB)]);
    create_relationship(&actl, "peek", "secret", "other", &[]);
    let mut r = Value::Null;
    wait_for("the refusal of relationship peek", || {
        r = relationship(&actl, "peek");
        r["last_error"].as_str().is_some()
    });
    let err = r["last_error"].as_str().unwrap_or_default();
    assert!(
        err.contains("peer site-a may not replicate into volume other")
            && err.contains("forbidden"),
        "{r}"
    );
    assert!(
        !err.contains("mine"),
        "the refusal reveals nothing of B's volume: {err}"
    );
    ctl_json(&actl, &["replica", "pause", "peek"]);
    // Nothing was created or changed on B.
    assert_eq!(lun_names(&bctl), vec!["other".to_string()]);
    assert_eq!(relationship(&bctl, "peek"), Value::Null);
    assert!(pending(&bctl).is_empty());
    let snaps = ctl_json(&bctl, &["snapshot", "list", "other"]);
    assert_eq!(snaps.as_array().map(Vec::len), Some(1), "{snaps}");
    assert_eq!(used_bytes(&bctl), b_used);
    let log = b.log();
    assert!(
        log.contains("replication request refused") && log.contains("site-a"),
        "B logs the refusal with the peer's name"
    );

    // 2. Within the allow-list but over the space limit: 16 MiB of data, an 8 MiB limit.
    ctl_json(
        &actl,
        &[
            "lun", "create", "prod-db", "--size", "32M", "--target", T, "--lun-id", "1",
        ],
    );
    io(&a, 1, &[format!("write -P 0x22 0 {}", 16 * MIB)]);
    create_relationship(&actl, "prod", "prod-db", "prod-db", &[]);
    wait_for("the space limit's refusal", || {
        r = relationship(&actl, "prod");
        r["last_error"].as_str().is_some()
    });
    let err = r["last_error"].as_str().unwrap_or_default();
    assert!(
        err.contains("space_limit") && err.contains("may not use more than 8388608 bytes"),
        "{r}"
    );
    // Stop the retries, then B holds nothing of it: no staging, no volume, no space.
    ctl_json(&actl, &["replica", "pause", "prod"]);
    wait_for("prod paused", || {
        relationship(&actl, "prod")["state"] == "paused"
    });
    assert!(pending(&bctl).is_empty(), "{:?}", pending(&bctl));
    assert!(!lun_names(&bctl).contains(&"prod-db".to_string()));
    // B answered each refusal after dropping the record the first transfer had created.
    assert_eq!(
        relationship(&bctl, "prod"),
        Value::Null,
        "a relationship refused at its first transfer leaves no record on B"
    );
    wait_for("B's used space back where it was", || {
        used_bytes(&bctl) == b_used
    });
    assert_clean(&bctl);

    // 3. A larger limit (config change and restart): the next cycle goes through.
    b.stop().expect("stop B");
    b.set_config_yaml(pair.b_yaml(&["prod-*"], Some(64 * MIB)));
    b.restart().expect("restart B");
    ctl_json(&actl, &["replica", "resume", "prod"]);
    let r = wait_transfer(&actl, "prod", None);
    assert_eq!(r["last_transfer"]["kind"], "full", "{r}");
    ctl_json(
        &bctl,
        &["lun", "map", "prod-db", "--target", T, "--lun-id", "1"],
    );
    assert!(
        read_lun(&b, 1, scratch.path()) == read_lun(&a, 1, scratch.path()),
        "the replica differs from the source"
    );
    assert_clean(&bctl);
    drop((a, b));
}

/// Polls B until the receive into `volume` has saved progress past its start.
fn wait_saved_progress(bctl: &Lunarctl, volume: &str) {
    wait_for("a saved part of the transfer on the receiver", || {
        pending(bctl).iter().any(|p| {
            p["volume"] == volume
                && p["next_index"].as_u64().is_some_and(|n| n > 0)
                && p["staged_bytes"].as_u64().is_some_and(|n| n > 0)
        })
    });
}

#[test]
fn kill_9_of_either_lunard_mid_transfer_resumes_the_relationship() {
    if !available("replication_trust", &["qemu-io", "qemu-img"]) {
        return;
    }
    const SIZE: u64 = 48 * MIB;
    let scratch = tempfile::tempdir().expect("scratch");
    let pair = Pair::new();
    let (mut b, bctl) = start(pair.b_yaml(&["vol"], None));
    let (mut a, actl) = start(pair.a_yaml());
    ctl_json(
        &actl,
        &[
            "lun", "create", "vol", "--size", "48M", "--target", T, "--lun-id", "0",
        ],
    );
    let fill: Vec<String> = (0..SIZE / MIB)
        .map(|i| format!("write -P {} {} {MIB}", i % 250 + 1, i * MIB))
        .collect();
    io(&a, 0, &fill);
    // 8 MiB/s: the full transfer takes about 6 s, long enough to be cut in the middle.
    create_relationship(&actl, "r1", "vol", "vol", &["--bandwidth", "8MiB"]);

    // 1. kill -9 of the receiver once it has saved part of the stream.
    wait_saved_progress(&bctl, "vol");
    b.kill9().expect("kill -9 B");
    b.restart().expect("restart B");
    assert!(
        !pending(&bctl).is_empty(),
        "the staged transfer survived the crash"
    );
    ctl_json(&actl, &["replica", "sync", "r1"]);
    let r = wait_transfer(&actl, "r1", None);
    let first = r["last_transfer"]["snapshot"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let bytes = r["last_transfer"]["bytes"].as_u64().unwrap_or(u64::MAX);
    assert!(
        bytes < SIZE,
        "the transfer after the crash resumed ({bytes} bytes sent, the whole is {SIZE}): {r}"
    );
    assert!(pending(&bctl).is_empty());
    ctl_json(
        &bctl,
        &["lun", "map", "vol", "--target", T, "--lun-id", "0"],
    );
    let want = read_lun(&a, 0, scratch.path());
    assert!(
        read_lun(&b, 0, scratch.path()) == want,
        "the replica differs after the receiver's crash"
    );
    assert_clean(&bctl);
    assert_eq!(used_bytes(&bctl), SIZE, "the replica holds its data once");

    // 2. kill -9 of the sender in the middle of an increment.
    let rewrite: Vec<String> = (0..SIZE / MIB)
        .map(|i| format!("write -P {} {} {MIB}", (i * 7) % 250 + 1, i * MIB))
        .collect();
    io(&a, 0, &rewrite);
    ctl_json(&actl, &["replica", "sync", "r1"]);
    wait_saved_progress(&bctl, "vol");
    a.kill9().expect("kill -9 A");
    a.restart().expect("restart A");
    // The restarted source's relationship is due at its next interval; ask for it now
    // (retried until the cycle the restart started, if any, is over).
    wait_for("a cycle of r1 after A's restart", || {
        actl.json(&["replica", "sync", "r1"]).is_ok()
            && relationship(&actl, "r1")["last_transfer"]["snapshot"]
                .as_str()
                .is_some_and(|s| s != first)
    });
    let r = relationship(&actl, "r1");
    let bytes = r["last_transfer"]["bytes"].as_u64().unwrap_or(u64::MAX);
    assert_eq!(r["last_transfer"]["kind"], "increment", "{r}");
    assert!(
        bytes < SIZE,
        "the increment after the sender's crash resumed ({bytes} bytes): {r}"
    );
    assert!(pending(&bctl).is_empty());
    let want = read_lun(&a, 0, scratch.path());
    assert!(
        read_lun(&b, 0, scratch.path()) == want,
        "the replica differs after the sender's crash"
    );
    assert_clean(&bctl);
    drop((a, b));
}
