//! Replication streams between two lunards on loopback (issue 18), driven through
//! `lunarctl replica send | lunarctl replica receive` and checked through iSCSI:
//!
//! - random writes by an initiator, then a full stream and a chain of increments: after each,
//!   the replica LUN read over iSCSI equals the source LUN at its snapshot; `snapshot diff`
//!   lists the written ranges; the replica LUN is write-protected;
//! - a clone sent as an increment from its origin takes no more space on the receiver than
//!   on the source;
//! - hostile streams (replayed, out of order, truncated, a corrupted byte) are refused with
//!   the replica unchanged;
//! - kill -9 of the receiver, and of the sender, in the middle of a transfer: the transfer
//!   resumes from the receiver's token and the replica ends identical.

use lunar_e2e::admin::Lunarctl;
use lunar_e2e::config::{with_target, yaml, ByteSize, TargetCfg};
use lunar_e2e::initiator::{qemu_image_opts, qemu_io};
use lunar_e2e::process::run;
use lunar_e2e::replication::{ctl_json, used_bytes};
use lunar_e2e::{require_tools, Lunard, LunardOptions};
use rand::{Rng, SeedableRng};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

const MIB: u64 = 1 << 20;
const SRC: &str = "iqn.2026-11.io.lunar:repl-src";
const DST: &str = "iqn.2026-11.io.lunar:repl-dst";
const HOST: &str = "iqn.2026-11.io.lunar.test:repl-host";

fn start(iqn: &str) -> (Lunard, Lunarctl) {
    let mut cfg = with_target(TargetCfg::iscsi(iqn));
    if let Some(p) = cfg.pool.as_mut() {
        p.capacity = Some(ByteSize::parse("2GiB").expect("pool capacity"));
    }
    let d = Lunard::start_with(LunardOptions {
        config_yaml: Some(yaml(&cfg)),
        ..LunardOptions::default()
    })
    .expect("start lunard");
    let ctl = Lunarctl::for_daemon(&d).expect("lunarctl");
    (d, ctl)
}

fn socket(d: &Lunard) -> PathBuf {
    d.data_dir().join("admin.sock")
}

/// `lunarctl` for daemon `d` with `args`, as a Command.
fn lunarctl(ctl: &Lunarctl, d: &Lunard, args: &[&str]) -> Command {
    let mut c = Command::new(ctl.bin());
    c.arg("--socket").arg(socket(d)).args(args);
    c
}

fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

fn cmdline(ctl: &Lunarctl, d: &Lunard, args: &[&str]) -> String {
    let mut v = vec![
        sh_quote(&ctl.bin().display().to_string()),
        "--socket".into(),
        sh_quote(&socket(d).display().to_string()),
    ];
    v.extend(args.iter().map(|a| sh_quote(a)));
    v.join(" ")
}

/// `lunarctl replica send SEND | lunarctl replica receive RECV` in one shell pipeline with
/// pipefail; panics unless both succeed.
fn pipe(ctl: &Lunarctl, src: &Lunard, send: &[&str], dst: &Lunard, recv: &[&str]) -> String {
    let mut s = vec!["replica", "send"];
    s.extend_from_slice(send);
    let mut r = vec!["replica", "receive"];
    r.extend_from_slice(recv);
    let line = format!("{} | {}", cmdline(ctl, src, &s), cmdline(ctl, dst, &r));
    let out = run(
        Command::new("bash").args(["-o", "pipefail", "-c", &line]),
        Duration::from_secs(300),
    )
    .and_then(|o| o.check())
    .unwrap_or_else(|e| panic!("{e:#}"));
    out.stdout
}

/// `lunarctl replica send ARGS > file`.
fn send_to_file(ctl: &Lunarctl, d: &Lunard, args: &[&str], file: &Path) {
    let mut a = vec!["replica", "send"];
    a.extend_from_slice(args);
    let f = std::fs::File::create(file).expect("stream file");
    let status = lunarctl(ctl, d, &a)
        .stdout(f)
        .status()
        .expect("run lunarctl replica send");
    assert!(status.success(), "replica send {args:?} failed");
}

/// `lunarctl replica receive ARGS < bytes`: (success, stderr).
fn receive_bytes(ctl: &Lunarctl, d: &Lunard, args: &[&str], bytes: &[u8]) -> (bool, String) {
    let mut a = vec!["replica", "receive"];
    a.extend_from_slice(args);
    let mut child = lunarctl(ctl, d, &a)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn lunarctl replica receive");
    let mut stdin = child.stdin.take().expect("stdin");
    let data = bytes.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&data);
    });
    let out = child.wait_with_output().expect("lunarctl replica receive");
    let _ = writer.join();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The whole LUN, read over iSCSI with qemu-img.
fn read_lun(d: &Lunard, iqn: &str, lun: u64, scratch: &Path) -> Vec<u8> {
    lunar_e2e::replication::read_lun(d, iqn, lun, HOST, scratch)
}

/// `n` random writes (and a few discards) of random patterns into a LUN of `size` bytes.
fn random_writes(d: &Lunard, iqn: &str, lun: u64, size: u64, n: usize, rng: &mut impl Rng) {
    let mut cmds = Vec::new();
    for i in 0..n {
        let len = rng.gen_range(1..=64u64) * 4096;
        let off = rng.gen_range(0..(size - len) / 4096) * 4096;
        if i % 7 == 6 {
            cmds.push(format!("discard {off} {len}"));
        } else {
            cmds.push(format!("write -P {} {off} {len}", rng.gen_range(1..=255u8)));
        }
    }
    qemu_io(&qemu_image_opts(d.addr(), iqn, lun, HOST, None), &cmds)
        .unwrap_or_else(|e| panic!("qemu-io: {e:#}"));
}

#[test]
fn a_chain_of_streams_keeps_the_replica_identical_and_hostile_streams_change_nothing() {
    require_tools!("qemu-io", "qemu-img", "bash");
    const SIZE: u64 = 32 * MIB;
    let scratch = tempfile::tempdir().expect("scratch");
    let (src, sctl) = start(SRC);
    let (dst, dctl) = start(DST);
    let mut rng = rand::rngs::StdRng::seed_from_u64(18);
    ctl_json(
        &sctl,
        &[
            "lun", "create", "a", "--size", "32M", "--target", SRC, "--lun-id", "0",
        ],
    );

    let mut last = Vec::new();
    for round in 0u32..4 {
        random_writes(&src, SRC, 0, SIZE, 40, &mut rng);
        let snap = format!("s{round}");
        ctl_json(&sctl, &["snapshot", "create", &format!("a@{snap}")]);
        // Nothing writes the source between the snapshot and this read.
        let want = read_lun(&src, SRC, 0, scratch.path());
        let prev = format!("s{}", round.wrapping_sub(1));
        let mut send = vec!["--volume", "a", "--snapshot", &snap];
        if round > 0 {
            send.extend_from_slice(&["--from", &prev]);
        }
        let said = pipe(&sctl, &src, &send, &dst, &["--volume", "a"]);
        assert!(said.contains(&format!("a@{snap}")), "{said}");
        if round == 0 {
            // The replica is a write-protected LUN.
            let lun = ctl_json(&dctl, &["lun", "show", "a"]);
            assert_eq!(lun["read_only"], true, "{lun}");
            ctl_json(
                &dctl,
                &["lun", "map", "a", "--target", DST, "--lun-id", "0"],
            );
            let denied = qemu_io(
                &qemu_image_opts(dst.addr(), DST, 0, HOST, None),
                &["write -P 7 0 4096".to_string()],
            );
            assert!(denied.is_err(), "a write to the replica LUN was accepted");
        } else {
            // The changed-block list covers what changed (and no more than the volume).
            let diff = ctl_json(&sctl, &["snapshot", "diff", "a", &prev, &snap]);
            let ranges = diff["ranges"].as_array().expect("ranges");
            assert!(!ranges.is_empty(), "{diff}");
            assert!(diff["changed_bytes"].as_u64().expect("changed") <= SIZE);
        }
        let got = read_lun(&dst, DST, 0, scratch.path());
        assert!(
            got == want,
            "round {round}: the replica differs from the source"
        );
        last = got;
    }

    // A clone sent as an increment from its origin shares the origin's chunks.
    let src_before = used_bytes(&sctl);
    ctl_json(
        &sctl,
        &[
            "clone", "create", "--source", "a@s1", "--name", "c", "--target", SRC, "--lun-id", "1",
        ],
    );
    random_writes(&src, SRC, 1, SIZE, 10, &mut rng);
    ctl_json(&sctl, &["snapshot", "create", "c@c1"]);
    let src_cost = used_bytes(&sctl) - src_before;
    let want_c = read_lun(&src, SRC, 1, scratch.path());
    let dst_before = used_bytes(&dctl);
    pipe(
        &sctl,
        &src,
        &["--volume", "c", "--snapshot", "c1", "--from", "a@s1"],
        &dst,
        &["--volume", "c"],
    );
    let dst_cost = used_bytes(&dctl) - dst_before;
    assert!(
        dst_cost <= src_cost,
        "the received clone took {dst_cost} bytes, the source clone {src_cost}"
    );
    ctl_json(
        &dctl,
        &["lun", "map", "c", "--target", DST, "--lun-id", "1"],
    );
    assert!(
        read_lun(&dst, DST, 1, scratch.path()) == want_c,
        "clone differs"
    );

    // Hostile streams: each refused, the replica unchanged, nothing staged left behind.
    random_writes(&src, SRC, 0, SIZE, 20, &mut rng);
    ctl_json(&sctl, &["snapshot", "create", "a@s4"]);
    random_writes(&src, SRC, 0, SIZE, 20, &mut rng);
    ctl_json(&sctl, &["snapshot", "create", "a@s5"]);
    let f3 = scratch.path().join("s3.stream");
    let f4 = scratch.path().join("s4.stream");
    let f5 = scratch.path().join("s5.stream");
    send_to_file(
        &sctl,
        &src,
        &["--volume", "a", "--snapshot", "s3", "--from", "s2"],
        &f3,
    );
    send_to_file(
        &sctl,
        &src,
        &["--volume", "a", "--snapshot", "s4", "--from", "s3"],
        &f4,
    );
    send_to_file(
        &sctl,
        &src,
        &["--volume", "a", "--snapshot", "s5", "--from", "s4"],
        &f5,
    );
    let s3 = std::fs::read(&f3).expect("s3 stream");
    let s4 = std::fs::read(&f4).expect("s4 stream");
    let s5 = std::fs::read(&f5).expect("s5 stream");
    let recv = |bytes: &[u8]| receive_bytes(&dctl, &dst, &["--volume", "a"], bytes);
    let (ok, err) = recv(&s3);
    assert!(!ok && err.contains("replayed"), "{err}");
    let (ok, err) = recv(&s5);
    assert!(!ok && err.contains("not on this pool"), "{err}");
    let mut corrupt = s4.clone();
    let at = corrupt.len() / 2;
    corrupt[at] ^= 0x10;
    let (ok, err) = recv(&corrupt);
    assert!(!ok && err.contains("corrupt"), "{err}");
    let (ok, err) = recv(b"this is not a replication stream at all");
    assert!(
        !ok && err.contains("not a Lunar replication stream"),
        "{err}"
    );
    let (ok, err) = recv(&s4[..s4.len() * 2 / 3]);
    assert!(
        !ok && err.contains("truncated") && err.contains("--resume"),
        "{err}"
    );
    let pending = ctl_json(&dctl, &["replica", "receive-status"]);
    assert_eq!(pending.as_array().map(Vec::len), Some(1), "{pending}");
    assert!(
        read_lun(&dst, DST, 0, scratch.path()) == last,
        "a refused stream changed the replica"
    );
    // The whole stream, sent again, finishes the truncated one; then s5 applies.
    let (ok, err) = recv(&s4);
    assert!(ok, "{err}");
    let (ok, err) = recv(&s5);
    assert!(ok, "{err}");
    let pending = ctl_json(&dctl, &["replica", "receive-status"]);
    assert_eq!(pending.as_array().map(Vec::len), Some(0), "{pending}");
    assert!(
        read_lun(&dst, DST, 0, scratch.path()) == read_lun(&src, SRC, 0, scratch.path()),
        "after s5 the replica differs"
    );
    let check = ctl_json(&dctl, &["pool", "check"]);
    assert_eq!(check["clean"], true, "{check}");
}

/// Waits up to 120 s for `cond`.
fn wait_for(what: &str, cond: impl FnMut() -> bool) {
    lunar_e2e::replication::wait_for(what, Duration::from_secs(120), cond)
}

fn pending_token(ctl: &Lunarctl) -> Option<(String, u64)> {
    let v = ctl.json(&["replica", "receive-status"]).ok()?;
    let p = v.as_array()?.first()?.clone();
    Some((
        p["resume_token"].as_str()?.to_string(),
        p["next_index"].as_u64()?,
    ))
}

#[test]
fn kill_9_of_the_receiver_or_the_sender_mid_transfer_resumes_from_the_token() {
    require_tools!("qemu-io", "qemu-img", "bash");
    const SIZE: u64 = 48 * MIB;
    let scratch = tempfile::tempdir().expect("scratch");
    let (mut src, sctl) = start(SRC);
    let (mut dst, dctl) = start(DST);
    ctl_json(
        &sctl,
        &[
            "lun", "create", "a", "--size", "48M", "--target", SRC, "--lun-id", "0",
        ],
    );
    let fill: Vec<String> = (0..SIZE / MIB)
        .map(|i| format!("write -P {} {} {MIB}", i % 250 + 1, i * MIB))
        .collect();
    qemu_io(&qemu_image_opts(src.addr(), SRC, 0, HOST, None), &fill)
        .unwrap_or_else(|e| panic!("qemu-io: {e:#}"));
    ctl_json(&sctl, &["snapshot", "create", "a@s0"]);
    let want0 = read_lun(&src, SRC, 0, scratch.path());

    // 1. The receiver is killed after it has saved part of the stream.
    let f0 = scratch.path().join("s0.stream");
    send_to_file(&sctl, &src, &["--volume", "a", "--snapshot", "s0"], &f0);
    let s0 = std::fs::read(&f0).expect("s0 stream");
    let mut child = lunarctl(&dctl, &dst, &["replica", "receive", "--volume", "a"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn receive");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin
        .write_all(&s0[..s0.len() * 6 / 10])
        .expect("feed the receiver");
    stdin.flush().expect("flush");
    // The stream stalls here; lunard saves what it applied (after 1 s of waiting).
    wait_for("a saved receive", || {
        pending_token(&dctl).is_some_and(|(_, next)| next > 0)
    });
    dst.kill9().expect("kill -9 the receiver");
    drop(stdin);
    let _ = child.wait();
    dst.restart().expect("restart the receiver");
    let (token, next) = pending_token(&dctl).expect("the receive survived the crash");
    assert!(next > 0);
    pipe(
        &sctl,
        &src,
        &["--volume", "a", "--snapshot", "s0", "--resume", &token],
        &dst,
        &["--volume", "a"],
    );
    ctl_json(
        &dctl,
        &["lun", "map", "a", "--target", DST, "--lun-id", "0"],
    );
    assert!(
        read_lun(&dst, DST, 0, scratch.path()) == want0,
        "s0 differs after the resume"
    );

    // 2. The sender is killed in the middle of an increment.
    let half: Vec<String> = (0..SIZE / MIB)
        .map(|i| format!("write -P {} {} {MIB}", (i * 7) % 250 + 1, i * MIB))
        .collect();
    qemu_io(&qemu_image_opts(src.addr(), SRC, 0, HOST, None), &half)
        .unwrap_or_else(|e| panic!("qemu-io: {e:#}"));
    ctl_json(&sctl, &["snapshot", "create", "a@s1"]);
    let want1 = read_lun(&src, SRC, 0, scratch.path());
    let mut sender = lunarctl(
        &sctl,
        &src,
        &[
            "replica",
            "send",
            "--volume",
            "a",
            "--snapshot",
            "s1",
            "--from",
            "s0",
        ],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .expect("spawn send");
    let mut receiver = lunarctl(&dctl, &dst, &["replica", "receive", "--volume", "a"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn receive");
    let mut from = sender.stdout.take().expect("sender stdout");
    let mut to = receiver.stdin.take().expect("receiver stdin");
    // Relay 12 MiB (a quarter of the stream), then kill the sender while it is blocked
    // writing the rest (nothing reads it meanwhile), then relay what was in flight.
    let mut buf = vec![0u8; 64 * 1024];
    let mut moved = 0u64;
    while moved < 12 * MIB {
        let n = from.read(&mut buf).expect("read the stream");
        assert!(n > 0, "the stream ended early");
        to.write_all(&buf[..n]).expect("relay");
        moved += n as u64;
    }
    src.kill9().expect("kill -9 the sender");
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => to.write_all(&buf[..n]).expect("relay"),
        }
    }
    drop(to);
    let sent = sender.wait_with_output().expect("sender");
    assert!(!sent.status.success(), "the cut send claimed success");
    let got = receiver.wait_with_output().expect("receiver");
    let err = String::from_utf8_lossy(&got.stderr);
    assert!(!got.status.success() && err.contains("--resume"), "{err}");
    src.restart().expect("restart the sender");
    let (token, _) = pending_token(&dctl).expect("the cut receive is kept");
    pipe(
        &sctl,
        &src,
        &[
            "--volume",
            "a",
            "--snapshot",
            "s1",
            "--from",
            "s0",
            "--resume",
            &token,
        ],
        &dst,
        &["--volume", "a"],
    );
    assert!(
        read_lun(&dst, DST, 0, scratch.path()) == want1,
        "s1 differs after the resume"
    );
    let check = ctl_json(&dctl, &["pool", "check"]);
    assert_eq!(check["clean"], true, "{check}");
}
