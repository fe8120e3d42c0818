//! Clone workflows seen by real initiators (issue 4): `lunarctl` drives the real `lunard`
//! through its admin socket; what hosts see is checked with libiscsi's `iscsi-ls` (REPORT
//! LUNS) and `iscsi-inq` (VPD 83h), and data with `qemu-io` / `qemu-img` over iSCSI.
//!
//! - a full clone started while the source is being written is absent from REPORT LUNS while
//!   `creating`, then listed, holding exactly the point-in-time data; a linked clone likewise,
//!   at once;
//! - ten generations of linked clones of clones, each with its own writes, verified over
//!   iSCSI; deleting the origin first and the rest in random order leaves the pool empty and
//!   `pool check` clean;
//! - `clone refresh` raises a unit attention that a logged-in host sees, and keeps the NAA id,
//!   the LUN number and the target's ACL;
//! - `lun unmap` removes a LUN from REPORT LUNS; `session list` shows a logged-in host and
//!   `session close` ends its session.

use lunar_e2e::admin::Lunarctl;
use lunar_e2e::config::{with_target, yaml, ByteSize, TargetCfg};
use lunar_e2e::initiator::{libiscsi, qemu_image_opts, qemu_io, Auth, QemuIoSession};
use lunar_e2e::process::run;
use lunar_e2e::{require_tools, Lunard, LunardOptions};
use rand::seq::SliceRandom;
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::Read;
use std::process::Command;
use std::time::{Duration, Instant};

const MIB: u64 = 1 << 20;
const T: &str = "iqn.2026-11.io.lunar:clones";
const HOST: &str = "iqn.2026-11.io.lunar.test:clones-host";

/// lunard with one empty target `T` open to any initiator and a pool of `capacity`.
fn start(capacity: &str) -> (Lunard, Lunarctl) {
    let mut cfg = with_target(TargetCfg::iscsi(T));
    if let Some(p) = cfg.pool.as_mut() {
        p.capacity = Some(ByteSize::parse(capacity).expect("pool capacity"));
    }
    let d = Lunard::start_with(LunardOptions {
        config_yaml: Some(yaml(&cfg)),
        ..LunardOptions::default()
    })
    .expect("start lunard");
    let ctl = Lunarctl::for_daemon(&d).expect("lunarctl");
    (d, ctl)
}

fn ctl_json(ctl: &Lunarctl, args: &[&str]) -> Value {
    ctl.json(args).unwrap_or_else(|e| panic!("{e:#}"))
}

fn opts(d: &Lunard, iqn: &str, lun: u64, who: &str) -> String {
    qemu_image_opts(d.addr(), iqn, lun, who, None)
}

/// Runs qemu-io commands on one LUN (one session); panics on any failure or mismatch.
fn io(d: &Lunard, iqn: &str, lun: u64, cmds: &[String]) {
    qemu_io(&opts(d, iqn, lun, HOST), cmds)
        .unwrap_or_else(|e| panic!("qemu-io on {iqn}/{lun}: {e:#}"));
}

/// qemu-io commands writing (or, with `verb` = "read", verifying) `pattern` over
/// `[off, off+len)` in 32 MiB requests.
fn span(verb: &str, pattern: u8, off: u64, len: u64) -> Vec<String> {
    let mut out = Vec::new();
    let mut o = off;
    while o < off + len {
        let n = (off + len - o).min(32 * MIB);
        out.push(format!("{verb} -P {pattern} {o} {n}"));
        o += n;
    }
    out
}

/// LUN numbers per target that a discovery + REPORT LUNS by `iscsi-ls -s` shows, as
/// `initiator`.
fn listed(d: &Lunard, initiator: &str) -> BTreeMap<String, Vec<u64>> {
    let out = libiscsi(
        "iscsi-ls",
        &["-s"],
        &d.portal_url(),
        Some(initiator),
        &Auth::default(),
    )
    .and_then(|o| o.check())
    .unwrap_or_else(|e| panic!("iscsi-ls: {e:#}"));
    let mut map: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut cur: Option<String> = None;
    for line in out.stdout.lines() {
        let l = line.trim();
        if let Some(t) = l.strip_prefix("Target:") {
            let t = t.split_whitespace().next().unwrap_or_default().to_string();
            map.entry(t.clone()).or_default();
            cur = Some(t);
        } else if let Some(rest) = l.strip_prefix("Lun:") {
            let n: u64 = rest
                .split_whitespace()
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("unparsable iscsi-ls line {line:?}"));
            let t = cur
                .clone()
                .unwrap_or_else(|| panic!("LUN before target:\n{}", out.stdout));
            map.entry(t).or_default().push(n);
        }
    }
    map
}

fn luns_of(d: &Lunard, iqn: &str, initiator: &str) -> Vec<u64> {
    listed(d, initiator).remove(iqn).unwrap_or_default()
}

/// Whether VPD page 83h of the LUN, as `iscsi-inq -e 1 -c 131` (0x83) prints it, carries
/// `naa` (the `naa.<hex>` form `lunarctl lun show` uses) as the logical unit's NAA
/// designator. libiscsi prints binary designators raw with `%s`, so the printed bytes stop at
/// the first zero byte of the identifier (about one identifier in sixteen has one): the
/// output must hold exactly the identifier's bytes up to its first zero byte.
fn vpd_has_naa(d: &Lunard, iqn: &str, lun: u64, initiator: &str, naa: &str) -> bool {
    let url = d.lun_url(iqn, lun);
    let out = Command::new("iscsi-inq")
        .args(["-i", initiator, "-e", "1", "-c", "131", &url])
        .output()
        .expect("run iscsi-inq");
    assert!(
        out.status.success(),
        "iscsi-inq VPD 83h of {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ok = lu_naa_printed_as(&out.stdout, naa);
    if !ok {
        eprintln!(
            "VPD 83h of {url} does not carry {naa}:\n{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    ok
}

/// Whether `text` has a logical-unit NAA designator printed as `naa`'s bytes (up to the
/// first zero byte) followed by `]`.
fn lu_naa_printed_as(text: &[u8], naa: &str) -> bool {
    const MARK: &[u8] = b"Designator Type:(3) NAA\nDesignator:[";
    let Some(hex) = naa.strip_prefix("naa.") else {
        return false;
    };
    let want: Vec<u8> = (0..hex.len() / 2)
        .filter_map(|i| u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok())
        .collect();
    if want.len() != 16 || want[0] >> 4 != 6 {
        return false;
    }
    let printed = &want[..want.iter().position(|&b| b == 0).unwrap_or(16)];
    let mut from = 0;
    while let Some(p) = text[from..].windows(MARK.len()).position(|w| w == MARK) {
        let at = from + p + MARK.len();
        let block = String::from_utf8_lossy(&text[..at]);
        let lu = block
            .rsplit("DEVICE DESIGNATOR")
            .next()
            .is_some_and(|b| b.contains("Association:(0) LOGICAL_UNIT"));
        let rest = &text[at..];
        if lu && rest.starts_with(printed) && rest.get(printed.len()) == Some(&b']') {
            return true;
        }
        from = at;
    }
    false
}

fn job_by_id(ctl: &Lunarctl, id: &str) -> Value {
    let jobs = ctl_json(ctl, &["clone", "list"]);
    jobs.as_array()
        .expect("clone list is an array")
        .iter()
        .find(|j| j["id"] == id)
        .unwrap_or_else(|| panic!("job {id} not in {jobs}"))
        .clone()
}

fn qemu_img(args: &[&str]) {
    run(
        Command::new("qemu-img").args(args),
        Duration::from_secs(300),
    )
    .and_then(|o| o.check())
    .unwrap_or_else(|e| panic!("{e:#}"));
}

#[test]
fn full_clone_hidden_until_complete_then_point_in_time_and_linked_at_once() {
    require_tools!("qemu-io", "qemu-img", "iscsi-ls", "iscsi-inq");
    let t0 = Instant::now();
    let (d, ctl) = start("4GiB");
    const SIZE: u64 = 512 * MIB;
    const BEFORE: u64 = 384 * MIB;
    ctl_json(
        &ctl,
        &[
            "lun", "create", "a", "--size", "512M", "--target", T, "--lun-id", "0",
        ],
    );
    // The pattern the clone must hold: 0x11 over the first 384 MiB, zeros after.
    io(&d, T, 0, &span("write", 0x11, 0, BEFORE));

    let job = ctl_json(
        &ctl,
        &[
            "clone", "create", "--source", "a", "--name", "a-full", "--mode", "full", "--target",
            T, "--lun-id", "1",
        ],
    );
    let id = job["id"].as_str().expect("job id").to_string();
    assert_eq!(job["mode"], "full", "{job}");
    // More writes to A while the copy runs (another session): none may reach the clone.
    let addr = d.addr();
    let writer = std::thread::spawn(move || {
        let mut cmds = span("write", 0x22, 0, 32 * MIB);
        cmds.extend(span("write", 0x22, 200 * MIB, 32 * MIB));
        cmds.extend(span("write", 0x22, 400 * MIB, 16 * MIB));
        qemu_io(
            &qemu_image_opts(addr, T, 0, "iqn.2026-11.io.lunar.test:writer", None),
            &cmds,
        )
        .map(|_| Instant::now())
    });
    let mut seen_creating = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    let completed_at = loop {
        let j = job_by_id(&ctl, &id);
        match j["state"].as_str().unwrap_or_default() {
            "completed" => break Instant::now(),
            s @ ("queued" | "creating") => {
                let luns = luns_of(&d, T, HOST);
                // The job may have finished between the two calls: only a listing taken
                // while it is still running counts.
                let still = job_by_id(&ctl, &id)["state"] != "completed";
                if still {
                    assert_eq!(
                        luns,
                        vec![0],
                        "REPORT LUNS lists the clone while its job is {s} ({}%)",
                        j["progress_pct"]
                    );
                    let l = ctl_json(&ctl, &["lun", "show", "a-full"]);
                    assert!(
                        ["creating", "online"].contains(&l["state"].as_str().unwrap_or("")),
                        "{l}"
                    );
                    seen_creating += 1;
                }
            }
            other => panic!("clone job ended {other}: {j}"),
        }
        assert!(
            Instant::now() < deadline,
            "clone job still running after 60 s"
        );
    };
    let wrote_at = writer
        .join()
        .expect("writer thread")
        .unwrap_or_else(|e| panic!("writes to A during the clone: {e:#}"));
    eprintln!(
        "full clone: {seen_creating} REPORT LUNS listings while creating; writer {} the copy",
        if wrote_at < completed_at {
            "finished before"
        } else {
            "outlasted"
        }
    );
    assert!(
        seen_creating > 0,
        "the full clone completed before a single listing: the hidden state was never checked"
    );
    assert_eq!(
        luns_of(&d, T, HOST),
        vec![0, 1],
        "completed clone not listed"
    );
    assert_eq!(
        ctl_json(&ctl, &["lun", "show", "a-full"])["state"],
        "online"
    );

    // The clone's whole LUN, read with qemu-img over iSCSI, is exactly the pattern written
    // before the clone started.
    let dir = tempfile::tempdir().expect("tempdir");
    let img = dir.path().join("a-full.raw");
    let src = opts(&d, T, 1, HOST);
    qemu_img(&[
        "convert",
        "-O",
        "raw",
        "--image-opts",
        &src,
        img.to_str().unwrap(),
    ]);
    let mut f = std::fs::File::open(&img).expect("image");
    assert_eq!(f.metadata().unwrap().len(), SIZE, "clone size");
    let mut buf = vec![0u8; MIB as usize];
    for m in 0..SIZE / MIB {
        f.read_exact(&mut buf).expect("read image");
        let want = if m * MIB < BEFORE { 0x11 } else { 0 };
        if let Some(p) = buf.iter().position(|&b| b != want) {
            panic!(
                "clone byte {} is {:#04x}, want {want:#04x} (the data of the instant the clone started)",
                m * MIB + p as u64,
                buf[p]
            );
        }
    }
    // A itself took the later writes.
    let mut a_now = span("read", 0x22, 0, 32 * MIB);
    a_now.extend(span("read", 0x11, 32 * MIB, 168 * MIB));
    a_now.extend(span("read", 0x22, 200 * MIB, 32 * MIB));
    a_now.extend(span("read", 0x11, 232 * MIB, 152 * MIB));
    a_now.extend(span("read", 0, 384 * MIB, 16 * MIB));
    a_now.extend(span("read", 0x22, 400 * MIB, 16 * MIB));
    a_now.extend(span("read", 0, 416 * MIB, 96 * MIB));
    io(&d, T, 0, &a_now);

    // A linked clone completes at once, listed as soon as the call returns, with A's data of
    // that instant; writes to A afterwards do not reach it.
    let job = ctl_json(
        &ctl,
        &[
            "clone", "create", "--source", "a", "--name", "a-linked", "--target", T, "--lun-id",
            "2",
        ],
    );
    assert_eq!(job["state"], "completed", "{job}");
    assert_eq!(luns_of(&d, T, HOST), vec![0, 1, 2]);
    io(&d, T, 0, &span("write", 0x33, 0, 8 * MIB));
    let mut linked = span("read", 0x22, 0, 32 * MIB);
    linked.extend(a_now[1..].iter().cloned());
    io(&d, T, 2, &linked);
    io(&d, T, 0, &span("read", 0x33, 0, 8 * MIB));
    io(&d, T, 1, &span("read", 0x11, 0, 16 * MIB));

    // Each LUN is its own device: distinct NAA ids, the ones lunarctl reports.
    let mut naas = Vec::new();
    for (lun, name) in [(0, "a"), (1, "a-full"), (2, "a-linked")] {
        let shown = ctl_json(&ctl, &["lun", "show", name]);
        let naa = shown["naa"].as_str().expect("lun show has naa").to_string();
        assert!(
            vpd_has_naa(&d, T, lun, HOST, &naa),
            "LUN {lun} ({name}) VPD 83h is not {naa}"
        );
        assert!(!naas.contains(&naa), "{name} repeats NAA {naa}");
        naas.push(naa);
    }
    eprintln!("full + linked clone test took {:?}", t0.elapsed());
}

#[test]
fn ten_generations_of_linked_clones_then_delete_all_leaves_pool_empty() {
    require_tools!("qemu-io", "iscsi-ls");
    let t0 = Instant::now();
    let (d, ctl) = start("2GiB");
    ctl_json(
        &ctl,
        &[
            "lun", "create", "g0", "--size", "32M", "--target", T, "--lun-id", "0",
        ],
    );
    io(&d, T, 0, &span("write", 0x40, 0, 24 * MIB));
    // Generation g writes 0x40+g over MiB [2g, 2g+1); it inherits its ancestors' writes.
    let expect = |g: u64| -> Vec<String> {
        let mut v = Vec::new();
        for k in 0..12u64 {
            let p = if k >= 1 && k <= g {
                0x40 + k as u8
            } else {
                0x40
            };
            v.push(format!("read -P {p} {} {MIB}", 2 * k * MIB));
            v.push(format!("read -P 0x40 {} {MIB}", (2 * k + 1) * MIB));
        }
        v.push(format!("read -P 0 {} {}", 24 * MIB, 8 * MIB));
        v
    };
    for g in 1..=10u64 {
        let (src, name) = (format!("g{}", g - 1), format!("g{g}"));
        let job = ctl_json(
            &ctl,
            &[
                "clone",
                "create",
                "--source",
                &src,
                "--name",
                &name,
                "--target",
                T,
                "--lun-id",
                &g.to_string(),
            ],
        );
        assert_eq!(job["state"], "completed", "{job}");
        io(
            &d,
            T,
            g,
            &[format!("write -P {} {} {MIB}", 0x40 + g as u8, 2 * g * MIB)],
        );
    }
    assert_eq!(luns_of(&d, T, HOST), (0..=10).collect::<Vec<u64>>());
    for g in 0..=10u64 {
        io(&d, T, g, &expect(g));
    }
    // The origin first, then the rest in random order; the survivors keep their data.
    let mut order: Vec<u64> = (1..=10).collect();
    order.shuffle(&mut rand::thread_rng());
    order.insert(0, 0);
    eprintln!("deleting generations in order {order:?}");
    for (k, &g) in order.iter().enumerate() {
        ctl_json(&ctl, &["lun", "delete", &format!("g{g}")]);
        let mut left: Vec<u64> = order[k + 1..].to_vec();
        left.sort_unstable();
        assert_eq!(luns_of(&d, T, HOST), left, "after deleting g{g}");
        // Verify every survivor after the origin's and after every third deletion.
        if k == 0 || k % 3 == 0 {
            for &s in &left {
                io(&d, T, s, &expect(s));
            }
        }
    }
    let st = ctl_json(&ctl, &["pool", "status"]);
    assert_eq!(st["used_bytes"], 0, "pool not empty: {st}");
    assert_eq!(st["reserved_bytes"], 0, "{st}");
    assert_eq!(st["volumes"], 0, "{st}");
    assert_eq!(
        ctl_json(&ctl, &["lun", "list"]).as_array().map(Vec::len),
        Some(0)
    );
    let check = ctl_json(&ctl, &["pool", "check"]);
    assert_eq!(check["clean"], true, "{check}");
    assert_eq!(check["leaked_chunks"], 0, "{check}");
    eprintln!("ten generations test took {:?}", t0.elapsed());
}

#[test]
fn clone_refresh_raises_unit_attention_and_keeps_naa_lun_and_acl() {
    require_tools!("qemu-io", "iscsi-ls", "iscsi-inq");
    let (d, ctl) = start("2GiB");
    const DEV: &str = "iqn.2026-11.io.lunar:clones-dev";
    const DEVBOX: &str = "iqn.2026-11.io.lunar.test:devbox";
    const STRANGER: &str = "iqn.2026-11.io.lunar.test:stranger";
    ctl_json(&ctl, &["target", "create", DEV]);
    ctl_json(&ctl, &["acl", "add", DEV, DEVBOX]);
    ctl_json(
        &ctl,
        &[
            "lun", "create", "prod", "--size", "64M", "--target", T, "--lun-id", "0",
        ],
    );
    io(&d, T, 0, &span("write", 0x51, 0, 8 * MIB));
    ctl_json(
        &ctl,
        &[
            "clone", "create", "--source", "prod", "--name", "dev", "--target", DEV, "--lun-id",
            "3",
        ],
    );
    let shown = ctl_json(&ctl, &["lun", "show", "dev"]);
    let naa = shown["naa"].as_str().expect("lun show has naa").to_string();
    assert!(vpd_has_naa(&d, DEV, 3, DEVBOX, &naa), "{shown}");
    let prod = ctl_json(&ctl, &["lun", "show", "prod"]);
    let prod_naa = prod["naa"].as_str().expect("lun show has naa").to_string();
    assert!(vpd_has_naa(&d, T, 0, HOST, &prod_naa), "{prod}");
    assert_ne!(prod_naa, naa, "clone has the source's NAA id");
    // Production moves on.
    io(&d, T, 0, &span("write", 0x52, 0, 4 * MIB));

    // A developer host stays logged in to the clone across the refresh.
    let mut host = QemuIoSession::open(&opts(&d, DEV, 3, DEVBOX)).expect("qemu-io session");
    host.command(&format!("read -P 0x51 0 {}", 8 * MIB))
        .expect("clone holds the old data");
    let ua_before = host.stderr().matches("UNIT_ATTENTION").count();
    ctl.fails_with(&["clone", "refresh", "dev"], "in use")
        .unwrap_or_else(|e| panic!("{e:#}"));
    let after = ctl_json(&ctl, &["clone", "refresh", "dev", "--force"]);
    assert_eq!(
        after["naa"],
        naa.as_str(),
        "lunarctl: refresh changed the NAA id"
    );
    // The host's next command draws the unit attention (qemu reports the CHECK CONDITION
    // and retries), then reads the refreshed data.
    host.command(&format!("read -P 0x52 0 {}", 4 * MIB))
        .expect("refreshed data, new part");
    host.command(&format!("read -P 0x51 {} {}", 4 * MIB, 4 * MIB))
        .expect("refreshed data, old part");
    let (_, stderr) = host.quit().expect("qemu-io quits");
    let uas = stderr.matches("UNIT_ATTENTION").count();
    assert!(
        uas > ua_before,
        "the logged-in host saw no unit attention after clone refresh:\n{stderr}"
    );
    eprintln!("host's view of the refresh:\n{stderr}");

    // Same device for hosts: NAA id in VPD 83h, LUN number, ACL.
    assert!(vpd_has_naa(&d, DEV, 3, DEVBOX, &naa), "VPD 83h NAA changed");
    assert_eq!(luns_of(&d, DEV, DEVBOX), vec![3]);
    let shown = ctl_json(&ctl, &["lun", "show", "dev"]);
    assert_eq!(shown["mappings"][0]["target"], DEV, "{shown}");
    assert_eq!(shown["mappings"][0]["lun_id"], 3, "{shown}");
    let acl = ctl_json(&ctl, &["acl", "list", DEV]);
    assert_eq!(acl["initiators"], serde_json::json!([DEVBOX]), "{acl}");
    assert_eq!(acl["allow_any"], false, "{acl}");
    let refused = libiscsi(
        "iscsi-inq",
        &[],
        &d.lun_url(DEV, 3),
        Some(STRANGER),
        &Auth::default(),
    )
    .expect("run iscsi-inq");
    assert!(
        !refused.status.success() && !refused.stdout.contains("DIRECT_ACCESS"),
        "an initiator outside the ACL logged in to the refreshed clone:\n{}",
        refused.combined()
    );
    io(&d, T, 0, &span("read", 0x52, 0, 4 * MIB));
}

#[test]
fn unmap_leaves_report_luns_and_sessions_are_listed_and_closed() {
    require_tools!("qemu-io", "iscsi-ls");
    let (d, ctl) = start("1GiB");
    const VIEWER: &str = "iqn.2026-11.io.lunar.test:viewer";
    ctl_json(
        &ctl,
        &[
            "lun", "create", "x", "--size", "16M", "--target", T, "--lun-id", "0",
        ],
    );
    ctl_json(
        &ctl,
        &[
            "lun", "create", "y", "--size", "16M", "--target", T, "--lun-id", "1",
        ],
    );
    assert_eq!(ctl_json(&ctl, &["session", "list"]), serde_json::json!([]));

    let mut host = QemuIoSession::open(&opts(&d, T, 1, HOST)).expect("qemu-io session");
    host.command("write -P 0x61 0 65536").expect("write");
    let sessions = ctl_json(&ctl, &["session", "list", "--target", T]);
    let mine: Vec<&Value> = sessions
        .as_array()
        .expect("array")
        .iter()
        .filter(|s| s["initiator"] == HOST)
        .collect();
    assert_eq!(
        mine.len(),
        1,
        "the logged-in host is not listed once: {sessions}"
    );
    let s = mine[0];
    assert_eq!(s["target"], T, "{s}");
    assert_eq!(s["luns"], serde_json::json!([0, 1]), "{s}");
    let tsih = s["tsih"].clone();
    let table = ctl
        .run(&["session", "list"])
        .expect("lunarctl")
        .check()
        .expect("ok");
    assert!(
        table.stdout.contains(HOST),
        "table lacks the host:\n{}",
        table.stdout
    );

    // Unmapping a LUN of a target a host is logged in to needs --force.
    ctl.fails_with(&["lun", "unmap", "x", "--target", T], "logged-in sessions")
        .unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(
        luns_of(&d, T, VIEWER),
        vec![0, 1],
        "a refused unmap changed REPORT LUNS"
    );
    ctl_json(&ctl, &["lun", "unmap", "x", "--target", T, "--force"]);
    assert_eq!(
        luns_of(&d, T, VIEWER),
        vec![1],
        "unmapped LUN still reported"
    );
    // The logged-in host is told (REPORTED LUNS DATA HAS CHANGED on its LUN).
    let before = host.stderr().matches("UNIT_ATTENTION").count();
    host.command("read -P 0x61 0 65536")
        .expect("read after unmap");
    assert!(
        host.stderr().matches("UNIT_ATTENTION").count() > before,
        "no unit attention after the unmap:\n{}",
        host.stderr()
    );
    let x = ctl_json(&ctl, &["lun", "show", "x"]);
    assert_eq!(x["mappings"], serde_json::json!([]), "{x}");

    // session close ends that session.
    let closed = ctl_json(&ctl, &["session", "close", T]);
    assert!(closed["closed_sessions"].as_u64() >= Some(1), "{closed}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = ctl_json(&ctl, &["session", "list"]);
        let still = now
            .as_array()
            .expect("array")
            .iter()
            .any(|s| s["tsih"] == tsih && s["initiator"] == HOST);
        if !still {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "session {tsih} still open: {now}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(host.quit());
    let deadline = Instant::now() + Duration::from_secs(10);
    while ctl_json(&ctl, &["session", "list"]) != serde_json::json!([]) {
        assert!(
            Instant::now() < deadline,
            "sessions left after the host logged out"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // No longer in use: the unmapped LUN can be deleted without --force.
    ctl_json(&ctl, &["lun", "delete", "x"]);
}

#[test]
fn naa_printed_raw_is_matched_up_to_its_first_zero_byte() {
    let out = |assoc: &str, id: &[u8]| {
        let mut t = format!(
            "DEVICE DESIGNATOR #3\nAssociation:{assoc}\nDesignator Type:(3) NAA\nDesignator:["
        )
        .into_bytes();
        t.extend_from_slice(id);
        t.extend_from_slice(b"]\n\n");
        t
    };
    let lu = "(0) LOGICAL_UNIT";
    let full = "naa.60a4c5527f25b9a682a49e8088a49c37";
    let with_zero = "naa.60a4c5527f2500a682a49e8088a49c37";
    let bytes = |n: &str| -> Vec<u8> {
        let h = &n[4..];
        (0..16)
            .map(|i| u8::from_str_radix(&h[2 * i..2 * i + 2], 16).unwrap())
            .collect()
    };
    assert!(lu_naa_printed_as(&out(lu, &bytes(full)), full));
    // libiscsi's %s stops at the zero byte.
    let b = bytes(with_zero);
    assert!(lu_naa_printed_as(&out(lu, &b[..6]), with_zero));
    assert!(!lu_naa_printed_as(&out(lu, &b[..6]), full));
    assert!(!lu_naa_printed_as(&out(lu, &bytes(full)), with_zero));
    // A target-port designator does not count.
    assert!(!lu_naa_printed_as(
        &out("(1) TARGET_PORT", &bytes(full)),
        full
    ));
}
