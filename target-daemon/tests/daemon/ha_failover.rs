//! Two `lunard` gateways of one HA group over one RBD image on a real Ceph cluster
//! (`LUNAR_CEPH_CONF`; skipped loudly without it, failing instead when
//! `LUNAR_REQUIRE_CEPH=1`): one becomes owner; after `kill -9` of the owner the other takes
//! over and serves the data the first acknowledged; a SIGSTOPped owner is replaced, and
//! when it resumes it is fenced, comes back as standby and writes nothing; a planned move
//! hands over without fencing. Takeover times are printed, not asserted. Config errors of
//! the `ha:` section are checked without Ceph.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use lunar_test_kit::cdb::{read10, write10};
use lunar_test_kit::initiator::Initiator;
use lunar_test_kit::lunard::LunardProcess;
use target_daemon::ha::status::HaStatus;

const TARGET: &str = "iqn.2026-12.io.lunar:ha";
const GOOD: u8 = 0x00;
const CHECK_CONDITION: u8 = 0x02;
/// Bound on any wait for a role change: generous for a loaded CI machine (a takeover
/// takes about one lease plus a third of one), never a measured figure.
const WAIT: Duration = Duration::from_secs(60);
const LEASE: &str = "1500ms";

/// The test cluster's ceph.conf, or `None` (the test skips) when there is none.
fn ceph_conf() -> Option<PathBuf> {
    match std::env::var_os("LUNAR_CEPH_CONF") {
        Some(p) if !p.is_empty() => Some(PathBuf::from(p)),
        _ => {
            assert!(
                std::env::var("LUNAR_REQUIRE_CEPH").as_deref() != Ok("1"),
                "LUNAR_REQUIRE_CEPH=1 but LUNAR_CEPH_CONF is not set"
            );
            eprintln!(
                "SKIPPED: no Ceph cluster (set LUNAR_CEPH_CONF to a ceph.conf; \
                 tests/scripts/ceph.sh start DIR starts one)"
            );
            None
        }
    }
}

/// A unique group (and image) name per test run.
fn unique(what: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("t{what}{}x{}", std::process::id(), nanos % 1_000_000_000)
}

/// Removes a test's group from the cluster when dropped (declare it before the gateways,
/// so they are gone first), also when the test fails: `lunar.<group>.*` and the image
/// `<group>-img`. Clients still watching them (a killed or frozen gateway) are blocklisted
/// for a minute first, or `rbd rm` would refuse until the OSD times their watches out.
struct Cleanup {
    conf: PathBuf,
    group: String,
}

impl Cleanup {
    fn cli(&self, tool: &str, args: &[&str]) -> Option<String> {
        std::process::Command::new(tool)
            .arg("-c")
            .arg(&self.conf)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let prefix = format!("lunar.{}.", self.group);
        let image = format!("{}-img", self.group);
        let objs: Vec<String> = self
            .cli("rados", &["-p", "rbd", "ls"])
            .unwrap_or_default()
            .lines()
            .filter(|o| o.starts_with(&prefix))
            .map(str::to_string)
            .collect();
        let mut watchers: Vec<String> = objs
            .iter()
            .filter_map(|o| self.cli("rados", &["-p", "rbd", "listwatchers", o]))
            .chain(self.cli("rbd", &["-p", "rbd", "status", &image]))
            .flat_map(|out| {
                out.split_whitespace()
                    .filter_map(|w| w.strip_prefix("watcher="))
                    .map(str::to_string)
                    .collect::<Vec<_>>()
            })
            .collect();
        watchers.sort();
        watchers.dedup();
        for w in &watchers {
            let _ = self.cli("ceph", &["osd", "blocklist", "add", w, "60"]);
        }
        for o in &objs {
            let _ = self.cli("rados", &["-p", "rbd", "rm", o]);
        }
        for _ in 0..20 {
            let gone = self
                .cli("rbd", &["-p", "rbd", "ls"])
                .is_some_and(|l| !l.lines().any(|n| n == image));
            if gone
                || self
                    .cli("rbd", &["-p", "rbd", "rm", "--no-progress", &image])
                    .is_some()
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        eprintln!("cleanup: image {image} could not be removed");
    }
}

fn gateway_yaml(conf: &Path, group: &str, gw: &str, port_group: u16) -> String {
    format!(
        "data_dir: ./data\n\
         portals:\n  - listen: 127.0.0.1:0\n\
         pool:\n  capacity: 256MiB\n  rbd:\n    image: {group}-img\n\
         ha:\n  group: {group}\n  gateway: {gw}\n  port_group: {port_group}\n  lease: {LEASE}\n  ceph:\n    conf: {}\n    pool: rbd\n\
         targets:\n  - iqn: {TARGET}\n    allow_any: true\n    luns:\n      - id: 0\n        volume: ha0\n        size: 16MiB\n",
        conf.display()
    )
}

/// One gateway process and its directory.
struct Gw {
    name: String,
    dir: PathBuf,
    proc: Option<LunardProcess>,
}

impl Gw {
    fn start(base: &Path, conf: &Path, group: &str, name: &str, port_group: u16) -> Gw {
        let dir = base.join(name);
        std::fs::create_dir_all(&dir).expect("gateway dir");
        let cfg = dir.join("lunar.yaml");
        std::fs::write(&cfg, gateway_yaml(conf, group, name, port_group)).expect("config");
        let proc = LunardProcess::spawn_ready(
            Command::new(env!("CARGO_BIN_EXE_lunard"))
                .current_dir(&dir)
                .args(["--no-metrics", "--config"])
                .arg(&cfg),
        );
        Gw {
            name: name.into(),
            dir,
            proc: Some(proc),
        }
    }

    fn addr(&self) -> std::net::SocketAddr {
        self.proc.as_ref().expect("running").addr()
    }

    fn pid(&self) -> libc::pid_t {
        self.proc.as_ref().expect("running").pid() as libc::pid_t
    }

    fn signal(&self, sig: libc::c_int) {
        // SAFETY: kill(2) on our own, not yet reaped child.
        assert_eq!(unsafe { libc::kill(self.pid(), sig) }, 0);
    }

    fn lunarctl(&self, args: &[&str]) -> std::process::Output {
        Command::new(env!("CARGO_BIN_EXE_lunarctl"))
            .arg("--socket")
            .arg(self.dir.join("data/admin.sock"))
            .args(args)
            .output()
            .expect("run lunarctl")
    }

    fn status(&self) -> Option<HaStatus> {
        let out = self.lunarctl(&["--json", "ha", "status"]);
        if !out.status.success() {
            return None;
        }
        serde_json::from_slice(&out.stdout).ok()
    }

    /// Waits until the status satisfies `want`; returns it and when it was first seen.
    fn wait(&self, what: &str, want: impl Fn(&HaStatus) -> bool) -> (HaStatus, Instant) {
        let start = Instant::now();
        loop {
            if let Some(s) = self.status().filter(|s| want(s)) {
                return (s, Instant::now());
            }
            assert!(
                start.elapsed() < WAIT,
                "{}: not {what} within {WAIT:?}; last status {:?}",
                self.name,
                self.status()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

async fn session(addr: std::net::SocketAddr, name: &str) -> Initiator {
    let mut i = Initiator::connect(addr, name).await;
    assert!(i.login(Some(TARGET)).await.ok(), "{name} logs in");
    // Consume the unit attentions of a new nexus; a standby then answers NOT READY.
    for _ in 0..8 {
        let r = i.run(&[0u8; 6], false, 0, &[], 0, 0).await;
        if r.sense.get(2).map(|k| k & 0x0F) != Some(0x06) {
            break;
        }
    }
    i
}

fn block(tag: u8) -> Vec<u8> {
    vec![tag; 512]
}

async fn write(i: &mut Initiator, lba: u32, data: &[u8]) -> u8 {
    i.run(&write10(lba, 1), false, 512, data, 0, 8192)
        .await
        .status
}

async fn read(i: &mut Initiator, lba: u32) -> (u8, Vec<u8>) {
    let r = i.run(&read10(lba, 1), true, 512, &[], 0, 0).await;
    (r.status, r.data)
}

/// READ until it succeeds: the first answers carry unit attentions (the state change,
/// the new nexus), and the role can read "active" a moment before the LUNs are
/// active/optimized (04/0A until then). Bounded by time, not by a number of tries, so a
/// loaded machine does not turn that moment into a failure.
async fn read_good(i: &mut Initiator, lba: u32) -> Vec<u8> {
    let until = Instant::now() + Duration::from_secs(30);
    let mut last = 0;
    while Instant::now() < until {
        let (st, data) = read(i, lba).await;
        if st == GOOD {
            return data;
        }
        last = st;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("READ never succeeded on the owner within 30 s (last status {last:#04x})");
}

/// Owner gw1 with a block written through it, standby gw2.
async fn pair(base: &Path, conf: &Path, group: &str) -> (Gw, Gw, u64) {
    let gw1 = Gw::start(base, conf, group, "gw1", 1);
    let (s1, _) = gw1.wait("active", |s| s.role == "active");
    let gw2 = Gw::start(base, conf, group, "gw2", 2);
    let (s2, _) = gw2.wait("standby under gw1", |s| {
        s.role == "standby" && s.owner.as_deref() == Some("gw1")
    });
    assert_eq!(s1.epoch, s2.epoch);
    (gw1, gw2, s1.epoch)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(feature = "ceph"), ignore = "needs the ceph feature")]
async fn kill_9_of_the_owner_the_standby_takes_over_with_the_data() {
    let Some(conf) = ceph_conf() else { return };
    let base = tempfile::tempdir().expect("tempdir");
    let group = unique("kill");
    let _cleanup = Cleanup {
        conf: conf.clone(),
        group: group.clone(),
    };
    let (mut gw1, gw2, epoch) = pair(base.path(), &conf, &group).await;
    let mut i1 = session(gw1.addr(), "iqn.2026-12.io.test:h1").await;
    assert_eq!(write(&mut i1, 7, &block(0xA7)).await, GOOD);
    // The standby refuses media access (NOT READY) but is a path to the same LUN.
    let mut i2 = session(gw2.addr(), "iqn.2026-12.io.test:h1").await;
    let (st, _) = read(&mut i2, 7).await;
    assert_eq!(st, CHECK_CONDITION, "standby refuses READ");

    let killed = Instant::now();
    gw1.proc.take().expect("gw1").kill();
    let (s, active_at) = gw2.wait("active after the kill", |s| s.role == "active");
    let data = read_good(&mut i2, 7).await;
    let first_io = Instant::now();
    eprintln!(
        "takeover after kill -9: active {:?}, first READ completed {:?} after the kill",
        active_at - killed,
        first_io - killed
    );
    assert_eq!(s.epoch, epoch + 1);
    assert_eq!(s.owner.as_deref(), Some("gw2"));
    assert_eq!(data, block(0xA7), "the write acknowledged by gw1 is on gw2");
    drop(i1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(feature = "ceph"), ignore = "needs the ceph feature")]
async fn a_frozen_owner_is_fenced_and_resumes_as_standby_without_writing() {
    let Some(conf) = ceph_conf() else { return };
    let base = tempfile::tempdir().expect("tempdir");
    let group = unique("stop");
    let _cleanup = Cleanup {
        conf: conf.clone(),
        group: group.clone(),
    };
    let (gw1, gw2, epoch) = pair(base.path(), &conf, &group).await;
    let mut i1 = session(gw1.addr(), "iqn.2026-12.io.test:h2").await;
    assert_eq!(write(&mut i1, 3, &block(0x11)).await, GOOD);

    let stopped = Instant::now();
    gw1.signal(libc::SIGSTOP);
    // A write sent to the frozen owner sits in its socket until it resumes.
    let stale = block(0xEE);
    let cmd = i1.command(
        &write10(3, 1),
        false,
        true,
        512,
        bytes::Bytes::from(stale.clone()),
    );
    let itt = cmd.bhs.itt();
    i1.send(cmd).await;
    let (s, active_at) = gw2.wait("active after SIGSTOP", |s| s.role == "active");
    eprintln!("takeover of a SIGSTOPped owner: {:?}", active_at - stopped);
    assert_eq!(s.epoch, epoch + 1);
    let mut i2 = session(gw2.addr(), "iqn.2026-12.io.test:h2").await;
    assert_eq!(read_good(&mut i2, 3).await, block(0x11));

    gw1.signal(libc::SIGCONT);
    let r = i1.finish(itt, &stale, 8192).await;
    assert_ne!(
        r.status, GOOD,
        "the fenced owner acknowledged a write after resuming"
    );
    gw1.wait("standby after resuming", |s| {
        s.role == "standby" && s.owner.as_deref() == Some("gw2")
    });
    // Nothing it had in hand reached the image.
    assert_eq!(read_good(&mut i2, 3).await, block(0x11));
    let (st, _) = read(&mut i1, 3).await;
    assert_eq!(st, CHECK_CONDITION, "the old owner is standby now");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(feature = "ceph"), ignore = "needs the ceph feature")]
async fn a_planned_move_hands_the_pool_over() {
    let Some(conf) = ceph_conf() else { return };
    let base = tempfile::tempdir().expect("tempdir");
    let group = unique("move");
    let _cleanup = Cleanup {
        conf: conf.clone(),
        group: group.clone(),
    };
    let (gw1, mut gw2, epoch) = pair(base.path(), &conf, &group).await;
    let mut i1 = session(gw1.addr(), "iqn.2026-12.io.test:h3").await;
    assert_eq!(write(&mut i1, 9, &block(0x5A)).await, GOOD);

    let asked = Instant::now();
    let out = gw1.lunarctl(&["ha", "move", "--to", "gw2"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (s, active_at) = gw2.wait("active after the move", |s| s.role == "active");
    eprintln!("planned move: {:?}", active_at - asked);
    assert_eq!(s.epoch, epoch + 1);
    assert_eq!(s.preferred, None);
    gw1.wait("standby after the move", |s| s.role == "standby");
    let mut i2 = session(gw2.addr(), "iqn.2026-12.io.test:h3").await;
    assert_eq!(read_good(&mut i2, 9).await, block(0x5A));
    // Moving to a gateway that does not exist is refused.
    let out = gw2.lunarctl(&["ha", "move", "--to", "nosuch"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no gateway named"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A clean stop of the owner hands over too: it releases the lease instead of letting
    // it expire, and nobody is fenced.
    let stopped = Instant::now();
    let status = gw2.proc.take().expect("gw2").terminate();
    assert!(status.success(), "{status:?}");
    let (s, active_at) = gw1.wait("active after the owner stopped", |s| s.role == "active");
    eprintln!(
        "hand-over on SIGTERM of the owner: {:?}",
        active_at - stopped
    );
    assert_eq!(s.epoch, epoch + 2);
    let mut i1 = session(gw1.addr(), "iqn.2026-12.io.test:h3b").await;
    assert_eq!(read_good(&mut i1, 9).await, block(0x5A));
}

#[test]
fn ha_config_errors_name_the_field_and_stop_lunard() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("bad.yaml");
    let yaml = gateway_yaml(Path::new("/nonexistent/ceph.conf"), "g1", "gw1", 0);
    std::fs::write(&cfg, yaml).expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_lunard"))
        .arg("--config")
        .arg(&cfg)
        .output()
        .expect("run lunard");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("ha.port_group"), "{err}");
}

/// A lunard without `ha:` answers the HA requests with one clear line, not a hang or a panic.
#[tokio::test]
async fn ha_requests_to_a_lunard_without_ha_say_so() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = crate::admin_support::start(dir.path(), target_daemon::config::ByteSize::mib(64)).await;
    crate::admin_support::ctl(dir.path(), &["ha", "status"])
        .await
        .fails_with("not a gateway of an HA group");
    crate::admin_support::ctl(dir.path(), &["ha", "move", "--to", "gw2"])
        .await
        .fails_with("not a gateway of an HA group");
    d.shutdown().await.expect("shutdown");
}

/// An existing image without a Lunar pool that lunard did not create (another system's
/// disk named by mistake in `pool.rbd.image`) is never formatted: the gateway says why in
/// its status, and the image's bytes stay as they were.
#[cfg(feature = "ceph")]
#[test]
fn an_image_lunard_did_not_create_is_never_formatted() {
    use storage_core::ceph::{CephConfig, Rados, RbdImage};
    let Some(conf) = ceph_conf() else { return };
    let base = tempfile::tempdir().expect("tempdir");
    let group = unique("foreign");
    let _cleanup = Cleanup {
        conf: conf.clone(),
        group: group.clone(),
    };
    let rados = Rados::connect(&CephConfig {
        conf: conf.clone(),
        client: "admin".into(),
    })
    .expect("connect");
    let io = rados.ioctx("rbd").expect("pool rbd");
    let name = format!("{group}-img");
    RbdImage::create(&io, &name, 64 << 20).expect("create the foreign image");
    let disk: Vec<u8> = (0..8192u32).map(|i| (i % 251) as u8).collect();
    {
        let img = RbdImage::open(&io, &name).expect("open");
        img.write_at(0, &disk).expect("write");
        img.flush_sync().expect("flush");
    }
    let mut gw = Gw::start(base.path(), &conf, &group, "gw1", 1);
    let (s, _) = gw.wait("refusing the foreign image", |s| {
        s.last_error
            .as_deref()
            .is_some_and(|e| e.contains("not created by lunard"))
    });
    assert_ne!(s.role, "active");
    let status = gw.proc.take().expect("gw1").terminate();
    assert!(status.success(), "{status:?}");
    let img = RbdImage::open(&io, &name).expect("open again");
    let mut back = vec![0u8; disk.len()];
    img.read_at(0, &mut back).expect("read");
    assert_eq!(back, disk, "the foreign image was written");
    drop(img);
    if let Err(e) = RbdImage::remove(&io, &name) {
        eprintln!("leaving image {name}: {e}");
    }
}

/// Commands whose librbd I/O is in flight when they are aborted or their connection goes
/// away. On RBD a command's response is written from librbd's completion thread
/// (docs/decisions/0022-completion-driven-responses.md): the completion must then find the
/// task gone (aborted: its future dropped, nothing sent after the TMF's answer; cut off: the
/// writer closed) with librbd still owning the buffers, and nothing may crash, hang or
/// corrupt data. The gateway keeps its role and serves the data afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(feature = "ceph"), ignore = "needs the ceph feature")]
async fn commands_aborted_or_cut_off_while_librbd_owns_their_buffers() {
    use scsi_proto::iscsi::pdu::{Bhs, Pdu, TaskMgmtRequest, TmFunction, TmResponse};
    use std::collections::HashSet;

    const INI: &str = "iqn.2026-12.io.test:inflight";
    const ZONES: u32 = 24;
    const ZONE_BLOCKS: u16 = 16;
    let Some(conf) = ceph_conf() else { return };
    let base = tempfile::tempdir().expect("tempdir");
    let group = unique("inflight");
    let _cleanup = Cleanup {
        conf: conf.clone(),
        group: group.clone(),
    };
    let gw = Gw::start(base.path(), &conf, &group, "gw1", 1);
    let (before, _) = gw.wait("active", |s| s.role == "active");
    let zone = |z: u32| vec![z as u8 + 1; usize::from(ZONE_BLOCKS) * 512];
    let mut i = session(gw.addr(), INI).await;
    read_good(&mut i, 0).await;
    for z in 0..ZONES {
        let st = i
            .run(
                &write10(z * u32::from(ZONE_BLOCKS), ZONE_BLOCKS),
                false,
                u32::from(ZONE_BLOCKS) * 512,
                &zone(z),
                0,
                8192,
            )
            .await
            .status;
        assert_eq!(st, GOOD, "prefill zone {z}");
    }
    // Sends READs of every zone and WRITEs of the same data (immediate data) without waiting.
    let flood = |c: &mut Initiator| -> Vec<Pdu> {
        let mut cmds = Vec::new();
        for z in 0..ZONES {
            let lba = z * u32::from(ZONE_BLOCKS);
            let len = u32::from(ZONE_BLOCKS) * 512;
            cmds.push(c.command(
                &read10(lba, ZONE_BLOCKS),
                true,
                false,
                len,
                Default::default(),
            ));
            if z % 3 == 0 {
                let data = bytes::Bytes::from(zone(z));
                cmds.push(c.command(&write10(lba, ZONE_BLOCKS), false, true, len, data));
            }
        }
        cmds
    };

    // Connections that go away with everything in flight.
    for _ in 0..4 {
        let mut c = session(gw.addr(), INI).await;
        for cmd in flood(&mut c) {
            c.send(cmd).await;
        }
        drop(c);
    }

    // ABORT TASK SET with everything in flight: every command either answered before the
    // TMF's answer or never.
    for _ in 0..4 {
        let mut c = session(gw.addr(), INI).await;
        let mut pending = HashSet::new();
        for cmd in flood(&mut c) {
            pending.insert(cmd.bhs.itt());
            c.send(cmd).await;
        }
        let sent = pending.len();
        let tmf_itt = c.itt();
        let req = TaskMgmtRequest {
            immediate: true,
            function: TmFunction::AbortTaskSet,
            lun: 0,
            itt: tmf_itt,
            referenced_task_tag: 0xffff_ffff,
            cmd_sn: c.cmd_sn,
            exp_stat_sn: c.exp_stat_sn,
            ref_cmd_sn: 0,
            exp_data_sn: 0,
        };
        c.send(Pdu::header_only(req)).await;
        loop {
            let p = c.recv().await;
            match &p.bhs {
                Bhs::TaskMgmtResponse(r) if r.itt == tmf_itt => {
                    assert_eq!(r.response, TmResponse::Complete);
                    break;
                }
                Bhs::ScsiResponse(r) => {
                    assert_eq!(r.status, GOOD, "a command answered before the abort");
                    pending.remove(&r.itt);
                }
                Bhs::DataIn(d) if d.status.is_some() => {
                    pending.remove(&d.itt);
                }
                Bhs::DataIn(_) | Bhs::NopIn(_) => {}
                other => panic!("unexpected {:?} before the TMF response", other.opcode()),
            }
        }
        eprintln!(
            "ABORT TASK SET: {} of {sent} commands still in flight were aborted",
            pending.len()
        );
        // Whatever is still pending was aborted: a command after the abort is answered, and
        // nothing for an aborted task comes before (or after) it on this connection.
        let tur = c.command(&[0u8; 6], false, false, 0, Default::default());
        let tur_itt = tur.bhs.itt();
        c.send(tur).await;
        loop {
            let p = c.recv().await;
            let itt = p.bhs.itt();
            assert!(
                !pending.contains(&itt),
                "{:?} for aborted task {itt:#x} after the abort was answered",
                p.bhs.opcode()
            );
            if itt == tur_itt && matches!(p.bhs, Bhs::ScsiResponse(_)) {
                break;
            }
        }
    }

    // Still the owner, same epoch; every zone reads back as written.
    let mut v = session(gw.addr(), INI).await;
    for z in 0..ZONES {
        let r = v
            .run(
                &read10(z * u32::from(ZONE_BLOCKS), ZONE_BLOCKS),
                true,
                u32::from(ZONE_BLOCKS) * 512,
                &[],
                0,
                0,
            )
            .await;
        assert_eq!(r.status, GOOD, "read zone {z}");
        assert!(r.data == zone(z), "zone {z} reads back as written");
    }
    let after = gw.status().expect("gateway answers");
    assert_eq!((after.role.as_str(), after.epoch), ("active", before.epoch));
}
