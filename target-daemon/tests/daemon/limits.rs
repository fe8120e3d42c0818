//! Resource limits (`limits:` in the configuration): iSCSI connection caps, the login
//! timeout, the advertised MAXIMUM TRANSFER LENGTH, the write buffer budget shared by all
//! connections, and the admin API's connection cap, request size and idle timeout. Each test
//! drives the daemon over loopback and checks what a hostile client gets refused, and that
//! the daemon's own accounting (not RSS) stays within the configured bounds.

use std::net::SocketAddr;
use std::time::Duration;

use crate::support::local_config;
use bytes::Bytes;
use lunar_test_kit::cdb::{write10, write16};
use lunar_test_kit::initiator::{CmdResult, Initiator, RECV_LIMIT};
use scsi_proto::iscsi::pdu::{self, Bhs, NopOut, Pdu};
use target_daemon::config::{ByteSize, Config, LunCfg, TargetCfg};
use target_daemon::daemon::Daemon;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpSocket, TcpStream};

const TARGET: &str = "iqn.2026-11.io.lunar:limits";
/// The LUN's MAXIMUM TRANSFER LENGTH: 8 MiB of 512-byte blocks (Block Limits VPD).
const MTL_BLOCKS: u32 = 16384;

/// The daemon of these tests, before each sets the limits it checks: a 256 MiB pool in
/// `dir` and the target [`TARGET`] with LUN 0, the 64 MiB volume `lim`.
fn config(dir: &std::path::Path) -> Config {
    local_config(dir, ByteSize::mib(256))
        .with_target(TargetCfg::iscsi(TARGET).with_lun(LunCfg::new(0, "lim", ByteSize::mib(64))))
}

async fn start(cfg: Config) -> Daemon {
    start_with(cfg, target_daemon::admin::AdminOptions::default()).await
}

async fn start_with(cfg: Config, admin: target_daemon::admin::AdminOptions) -> Daemon {
    assert_eq!(cfg.validate(), Ok(()), "test configuration");
    Daemon::start_with(cfg, admin).await.expect("daemon starts")
}

/// The value of `lunar_limit_refusals_total{limit="<limit>"}` (process-wide: tests in this
/// binary run in parallel, so callers compare before and after and only expect growth).
fn refusals(limit: &str) -> u64 {
    let text = target_daemon::metrics::global().render(&[]);
    let key = format!("lunar_limit_refusals_total{{limit=\"{limit}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&key))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// Connects to `addr` from the loopback address `from` (127.0.0.0/8 is all ours).
async fn connect_from(addr: SocketAddr, from: [u8; 4]) -> TcpStream {
    let s = TcpSocket::new_v4().expect("socket");
    s.bind(SocketAddr::from((from, 0))).expect("bind source");
    s.connect(addr).await.expect("connect")
}

/// An initiator connected from `from`, logged in to the target, its first unit attention
/// consumed.
async fn session_from(addr: SocketAddr, from: [u8; 4], name: &str) -> Initiator {
    let mut i = Initiator::over(connect_from(addr, from).await, name);
    assert!(i.login(Some(TARGET)).await.ok(), "{name} logs in");
    i.clear_unit_attention().await;
    i
}

/// Whether the peer closed `s` without sending anything (EOF or reset), within the hang
/// limit.
async fn closed_silently(s: &mut TcpStream) -> bool {
    let mut b = [0u8; 64];
    match tokio::time::timeout(RECV_LIMIT, s.read(&mut b)).await {
        Ok(Ok(0)) | Ok(Err(_)) => true,
        Ok(Ok(_)) => false,
        Err(_) => panic!("the connection was neither served nor closed (hang)"),
    }
}

/// An immediate NOP-Out with a fresh ITT; the caller reads what comes back.
async fn send_nop(i: &mut Initiator) -> u32 {
    let itt = i.itt();
    let p = NopOut {
        immediate: true,
        lun: 0,
        itt,
        ttt: pdu::RESERVED_TAG,
        cmd_sn: i.cmd_sn,
        exp_stat_sn: i.exp_stat_sn,
    };
    i.send(Pdu::new(p, Bytes::new())).await;
    itt
}

/// Waits (bounded) until `f` holds: for state the daemon updates right after the client
/// saw the event (a connection's slot is freed after its socket closed).
async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..2000 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("never happened: {what}");
}

#[tokio::test]
async fn connections_beyond_the_caps_are_closed_and_sessions_keep_working() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = config(dir.path());
    cfg.limits.max_connections = 4;
    cfg.limits.max_connections_per_address = 2;
    cfg.limits.max_logins_in_progress = 1;
    // Longer than the hang limit: a refusal must not be a login timeout in disguise.
    cfg.iscsi.login_timeout_secs = 60;
    let d = start(cfg).await;
    let addr = d.local_addrs()[0];
    let (per_addr, logins, total) = (
        refusals("iscsi_connections_per_address"),
        refusals("iscsi_logins_in_progress"),
        refusals("iscsi_connections"),
    );

    let mut a = session_from(addr, [127, 0, 0, 1], "iqn.2026-11.io.test:a").await;
    let mut b = session_from(addr, [127, 0, 0, 1], "iqn.2026-11.io.test:b").await;
    // A third connection from the same address.
    let mut extra = connect_from(addr, [127, 0, 0, 1]).await;
    assert!(closed_silently(&mut extra).await, "per-address cap");

    // A connection that never logs in holds the only login slot.
    let stalled = connect_from(addr, [127, 0, 0, 2]).await;
    let mut extra = connect_from(addr, [127, 0, 0, 3]).await;
    assert!(closed_silently(&mut extra).await, "login-phase cap");
    drop(stalled);
    eventually("the stalled connection's slot is freed", || {
        d.server().connection_count() == 2
    })
    .await;

    // Four connections in all: the fifth is one too many.
    let mut c = session_from(addr, [127, 0, 0, 2], "iqn.2026-11.io.test:c").await;
    let mut e = session_from(addr, [127, 0, 0, 3], "iqn.2026-11.io.test:e").await;
    let mut extra = connect_from(addr, [127, 0, 0, 4]).await;
    assert!(closed_silently(&mut extra).await, "total cap");
    assert_eq!(d.server().connection_count(), 4);

    // The sessions already in are served as before.
    for i in [&mut a, &mut b, &mut c, &mut e] {
        let r = i.nop(b"ping").await;
        assert!(matches!(r.bhs, Bhs::NopIn(_)), "{:?}", r.bhs.opcode());
        assert_eq!(&r.data[..], b"ping");
    }
    assert!(refusals("iscsi_connections_per_address") > per_addr);
    assert!(refusals("iscsi_logins_in_progress") > logins);
    assert!(refusals("iscsi_connections") > total);
    drop((a, b, c, e));
    d.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn a_stalled_login_is_closed_and_frees_its_slot() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = config(dir.path());
    cfg.limits.max_logins_in_progress = 1;
    cfg.iscsi.login_timeout_secs = 1;
    let d = start(cfg).await;
    let addr = d.local_addrs()[0];
    let before = refusals("iscsi_login_timeout");

    // Half a login PDU, then nothing.
    let mut stalled = connect_from(addr, [127, 0, 0, 1]).await;
    stalled.write_all(&[0x43, 0x87, 0, 0]).await.expect("send");
    assert!(closed_silently(&mut stalled).await, "stalled login closed");
    assert!(refusals("iscsi_login_timeout") > before);

    // Its login slot is free again.
    eventually("the stalled connection's slot is freed", || {
        d.server().connection_count() == 0
    })
    .await;
    let mut ok = session_from(addr, [127, 0, 0, 1], "iqn.2026-11.io.test:after").await;
    assert!(matches!(ok.nop(b"").await.bhs, Bhs::NopIn(_)));
    drop(ok);
    d.shutdown().await.expect("shutdown");
}

/// A WRITE(10)/WRITE(16) CDB of `blocks` blocks at LBA 0.
fn write_cdb(sixteen: bool, blocks: u32) -> Vec<u8> {
    if sixteen {
        write16(0, blocks).to_vec()
    } else {
        write10(0, u16::try_from(blocks).expect("WRITE(10) length")).to_vec()
    }
}

#[tokio::test]
async fn a_write_over_the_maximum_transfer_length_is_refused_before_any_data() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = start(config(dir.path())).await;
    let addr = d.local_addrs()[0];
    let mut i = session_from(addr, [127, 0, 0, 1], "iqn.2026-11.io.test:mtl").await;
    // One block over the limit (WRITE(10)), and the report's 64 MiB (WRITE(16)), the
    // latter with immediate data the target must take in and drop.
    for (sixteen, blocks, immediate) in [(false, MTL_BLOCKS + 1, 0usize), (true, 131072, 65536)] {
        let edtl = blocks * 512;
        let imm = Bytes::from(vec![0x5a; immediate]);
        let cmd = i.command(&write_cdb(sixteen, blocks), false, true, edtl, imm);
        let itt = cmd.bhs.itt();
        i.send(cmd).await;
        // The response comes at once: no R2T solicits data first.
        let p = i.recv().await;
        let Bhs::ScsiResponse(resp) = &p.bhs else {
            panic!("expected the response, not {:?}", p.bhs.opcode());
        };
        assert_eq!((resp.itt, resp.status), (itt, 0x02), "CHECK CONDITION");
        let sense = pdu::parse_sense_segment(&p.data).expect("sense").to_vec();
        let r = CmdResult {
            sense,
            ..Default::default()
        };
        assert_eq!(
            r.sense.get(2).map(|k| k & 0x0f),
            Some(0x05),
            "ILLEGAL REQUEST"
        );
        assert_eq!(
            (r.sense[12], r.sense[13]),
            (0x24, 0x00),
            "INVALID FIELD IN CDB"
        );
        // SKSV, C/D (a CDB field), BPV, bit 7 of the TRANSFER LENGTH field's first byte.
        let field = if sixteen { 10 } else { 7 };
        assert_eq!(&r.sense[15..18], &[0xcf, 0, field], "field pointer");
        assert_eq!(d.server().write_buffer_used(), 0, "nothing reserved");
    }
    // A write at the limit is served.
    let data = vec![0x11u8; (MTL_BLOCKS * 512) as usize];
    let r = i
        .run(
            &write_cdb(false, MTL_BLOCKS),
            false,
            MTL_BLOCKS * 512,
            &data,
            0,
            65536,
        )
        .await;
    assert_eq!(r.status, 0, "{r:?}");
    drop(i);
    d.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn unfinished_writes_on_many_connections_stay_within_the_write_buffer_budget() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = config(dir.path());
    cfg.limits.write_buffer_bytes = ByteSize::mib(32);
    let d = start(cfg).await;
    let addr = d.local_addrs()[0];
    let full = MTL_BLOCKS * 512; // 8 MiB: four fit in the budget.
    let mut conns = Vec::new();
    for n in 0..5 {
        let name = format!("iqn.2026-11.io.test:w{n}");
        conns.push(session_from(addr, [127, 0, 0, 1], &name).await);
    }
    // Each connection starts an 8 MiB write with no unsolicited data and never sends it.
    let mut itts = Vec::new();
    let mut first_r2t = None;
    for (n, c) in conns.iter_mut().enumerate() {
        let cmd = c.command(
            &write_cdb(false, MTL_BLOCKS),
            false,
            true,
            full,
            Bytes::new(),
        );
        itts.push(cmd.bhs.itt());
        c.send(cmd).await;
        let nop = send_nop(c).await;
        let first = c.recv().await;
        if n < 4 {
            let Bhs::R2t(r2t) = first.bhs else {
                panic!("write {n} is solicited, got {:?}", first.bhs.opcode());
            };
            if n == 1 {
                first_r2t = Some(r2t);
            }
            let p = c.recv().await;
            assert!(matches!(p.bhs, Bhs::NopIn(_)) && p.bhs.itt() == nop);
        } else {
            // The reader handles the WRITE before the NOP-Out, so an R2T would come first.
            assert!(
                matches!(first.bhs, Bhs::NopIn(_)),
                "the fifth write waits for budget, got {:?}",
                first.bhs.opcode()
            );
        }
    }
    assert_eq!(d.server().write_buffer_used(), 4 * u64::from(full));

    // A write whose data comes unasked (immediate data) cannot wait: TASK SET FULL.
    let before = refusals("write_buffer");
    let c = &mut conns[0];
    let cmd = c.command(
        &write10(0, 128),
        false,
        true,
        65536,
        Bytes::from(vec![1u8; 65536]),
    );
    let itt = cmd.bhs.itt();
    c.send(cmd).await;
    let p = c.recv().await;
    match &p.bhs {
        Bhs::ScsiResponse(r) => {
            assert_eq!(r.itt, itt);
            assert_eq!(r.status, 0x28, "TASK SET FULL");
        }
        other => panic!("expected the response, got {:?}", other.opcode()),
    }
    assert!(refusals("write_buffer") > before);
    assert_eq!(d.server().write_buffer_used(), 4 * u64::from(full));

    // The second connection completes its write: its budget goes to the fifth.
    let data = vec![0x22u8; full as usize];
    let c = &mut conns[1];
    let r2t = first_r2t.expect("the second write's R2T");
    c.answer_r2t(itts[1], &r2t, &data, 65536).await;
    let r = c.finish(itts[1], &data, 65536).await;
    assert_eq!(r.status, 0, "{r:?}");
    let p = conns[4].recv().await;
    assert!(matches!(p.bhs, Bhs::R2t(_)), "{:?}", p.bhs.opcode());
    assert!(d.server().write_buffer_used() <= 32 << 20);

    // Connections that go away return what they held.
    drop(conns);
    eventually("every grant returned", || {
        d.server().write_buffer_used() == 0
    })
    .await;
    d.shutdown().await.expect("shutdown");
}

/// The ITTs of the R2Ts `c` receives before the NOP-In answering `nop`.
async fn r2ts_before_nop(c: &mut Initiator, nop: u32) -> Vec<u32> {
    let mut itts = Vec::new();
    loop {
        let p = c.recv().await;
        match &p.bhs {
            Bhs::R2t(r) => itts.push(r.itt),
            Bhs::NopIn(_) if p.bhs.itt() == nop => return itts,
            other => panic!("unexpected {:?}", other.opcode()),
        }
    }
}

/// One session that queues large writes and withholds their data holds at most its share
/// of the write buffer budget (`limits.write_buffer_bytes_per_connection`, by default an
/// eighth of the budget and at least 16 MiB): another session's writes, with immediate data
/// and solicited, are served while the first one is stuck. Before the share existed the
/// first session's four 8 MiB writes took the whole 32 MiB: the other session's write with
/// immediate data ended in TASK SET FULL and its solicited write got no R2T.
#[tokio::test]
async fn a_session_withholding_write_data_cannot_starve_another_session() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = config(dir.path());
    cfg.limits.write_buffer_bytes = ByteSize::mib(32);
    assert_eq!(cfg.limits.write_buffer_share(), 16 << 20);
    let d = start(cfg).await;
    let addr = d.local_addrs()[0];
    let mut hog = session_from(addr, [127, 0, 0, 1], "iqn.2026-12.io.test:hog").await;
    let mut other = session_from(addr, [127, 0, 0, 1], "iqn.2026-12.io.test:other").await;
    let full = MTL_BLOCKS * 512; // 8 MiB: two fill the hog's share, four the budget.

    // The hog queues four 8 MiB writes with no unsolicited data and sends none of it.
    let mut itts = Vec::new();
    for _ in 0..4 {
        let cmd = hog.command(
            &write_cdb(false, MTL_BLOCKS),
            false,
            true,
            full,
            Bytes::new(),
        );
        itts.push(cmd.bhs.itt());
        hog.send(cmd).await;
    }
    let nop = send_nop(&mut hog).await;
    let solicited = r2ts_before_nop(&mut hog, nop).await;
    assert_eq!(
        solicited,
        itts[..2],
        "only the writes within the hog's share are solicited"
    );

    // The other session's write with immediate data (it cannot wait) is served...
    let data = vec![0x33u8; 65536];
    let r = other
        .run(&write10(0, 128), false, 65536, &data, 65536, 65536)
        .await;
    assert_eq!(r.status, 0, "immediate data while the hog is stuck: {r:?}");
    // ...and so is a solicited 8 MiB write.
    let data = vec![0x44u8; full as usize];
    let r = other
        .run(&write_cdb(false, MTL_BLOCKS), false, full, &data, 0, 65536)
        .await;
    assert_eq!(r.status, 0, "solicited write while the hog is stuck: {r:?}");

    // The budget the other session returned does not go to the hog's waiting writes.
    let nop = send_nop(&mut hog).await;
    assert_eq!(r2ts_before_nop(&mut hog, nop).await, Vec::<u32>::new());
    drop((hog, other));
    eventually("every grant returned", || {
        d.server().write_buffer_used() == 0
    })
    .await;
    d.shutdown().await.expect("shutdown");
}

/// One JSON line from an admin connection, or `None` at EOF.
async fn admin_line<R: tokio::io::AsyncRead + Unpin>(
    r: &mut BufReader<R>,
) -> Option<serde_json::Value> {
    let mut line = String::new();
    let n = tokio::time::timeout(RECV_LIMIT, r.read_line(&mut line))
        .await
        .expect("admin connection neither answered nor closed (hang)")
        .unwrap_or(0);
    (n > 0).then(|| serde_json::from_str(&line).expect("JSON line"))
}

#[tokio::test]
async fn admin_tcp_caps_connections_request_size_and_idle_time() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token = "limits-token-123";
    let mut cfg = config(dir.path());
    cfg.limits.admin_max_connections = 2;
    cfg.limits.admin_max_unauthenticated_request_bytes = ByteSize::kib(1);
    cfg.limits.admin_idle_timeout_secs = 1;
    let d = start_with(
        cfg,
        target_daemon::admin::AdminOptions {
            socket: None,
            tcp: Some("127.0.0.1:0".parse().expect("addr")),
            token: Some(token.into()),
            ..Default::default()
        },
    )
    .await;
    let addr = d.admin().and_then(|a| a.tcp_addr()).expect("admin TCP");
    let (busy, size, idle) = (
        refusals("admin_connections"),
        refusals("admin_request_size"),
        refusals("admin_idle_timeout"),
    );
    let open = |s: TcpStream| {
        let (r, w) = s.into_split();
        (BufReader::new(r), w)
    };
    let (mut r1, mut w1) = open(TcpStream::connect(addr).await.expect("connect"));
    let (mut r2, mut w2) = open(TcpStream::connect(addr).await.expect("connect"));
    // Both are served (the second without a token: refused, but answered).
    let ok = format!("{{\"op\":\"pool.status\",\"token\":\"{token}\"}}\n");
    w1.write_all(ok.as_bytes()).await.expect("send");
    assert_eq!(admin_line(&mut r1).await.expect("answer")["ok"], true);
    w2.write_all(b"{\"op\":\"pool.status\"}\n")
        .await
        .expect("send");
    assert_eq!(admin_line(&mut r2).await.expect("answer")["ok"], false);

    // A third connection is told it is one too many, then closed.
    let (mut r3, _w3) = open(TcpStream::connect(addr).await.expect("connect"));
    let v = admin_line(&mut r3).await.expect("refusal line");
    assert_eq!(v["error"]["kind"], "busy", "{v}");
    assert!(admin_line(&mut r3).await.is_none(), "then closed");
    assert!(refusals("admin_connections") > busy);

    // Before showing the token a request is limited to 1 KiB...
    let big = format!(
        "{{\"op\":\"pool.status\",\"pad\":\"{}\"}}\n",
        "x".repeat(2048)
    );
    w2.write_all(big.as_bytes()).await.expect("send");
    let v = admin_line(&mut r2).await.expect("refusal line");
    assert_eq!(v["error"]["kind"], "bad_request", "{v}");
    assert!(admin_line(&mut r2).await.is_none(), "then closed");
    assert!(refusals("admin_request_size") > size);
    // ...after it, full-size requests are read (and answered on their merits).
    let big = format!(
        "{{\"op\":\"pool.status\",\"token\":\"{token}\",\"pad\":\"{}\"}}\n",
        "x".repeat(2048)
    );
    w1.write_all(big.as_bytes()).await.expect("send");
    let v = admin_line(&mut r1).await.expect("answer");
    assert!(
        !v.to_string().contains("longer than"),
        "an authenticated connection may send more: {v}"
    );

    // A silent connection is closed after the idle timeout.
    assert!(
        admin_line(&mut r1).await.is_none(),
        "idle connection closed"
    );
    assert!(refusals("admin_idle_timeout") > idle);
    d.shutdown().await.expect("shutdown");
}

/// The admin Unix socket has its own connection cap (`limits.admin_max_local_connections`):
/// the connection beyond it gets one `busy` line and is closed, and counts as
/// `admin_local_connections`; the ones within it are served. Before the cap every
/// connection was served, however many.
#[tokio::test]
async fn admin_unix_socket_caps_connections() {
    use tokio::net::UnixStream;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = config(dir.path());
    cfg.limits.admin_max_local_connections = 2;
    let d = start(cfg).await;
    let path = d.admin().expect("admin").socket().to_path_buf();
    let busy = refusals("admin_local_connections");
    let open = |s: UnixStream| {
        let (r, w) = s.into_split();
        (BufReader::new(r), w)
    };
    let req = b"{\"op\":\"pool.status\"}\n";
    let (mut r1, mut w1) = open(UnixStream::connect(&path).await.expect("connect"));
    let (mut r2, mut w2) = open(UnixStream::connect(&path).await.expect("connect"));
    for (r, w) in [(&mut r1, &mut w1), (&mut r2, &mut w2)] {
        w.write_all(req).await.expect("send");
        assert_eq!(admin_line(r).await.expect("answer")["ok"], true);
    }
    let (mut r3, mut w3) = open(UnixStream::connect(&path).await.expect("connect"));
    // The refusal comes whether or not the client has sent its request yet.
    let _ = w3.write_all(req).await;
    let v = admin_line(&mut r3).await.expect("refusal line");
    assert_eq!(v["error"]["kind"], "busy", "{v}");
    assert!(admin_line(&mut r3).await.is_none(), "then closed");
    assert!(refusals("admin_local_connections") > busy);
    // A slot freed is reusable (the server notices the close right after the client).
    drop((r1, w1));
    let mut served = false;
    for _ in 0..2000 {
        let (mut r, mut w) = open(UnixStream::connect(&path).await.expect("connect"));
        let _ = w.write_all(req).await;
        if admin_line(&mut r).await.is_some_and(|v| v["ok"] == true) {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(served, "the freed slot never served again");
    d.shutdown().await.expect("shutdown");
}

/// `lunarctl` reads at most 64 MiB of a response: a peer that sends an endless line (here a
/// fake admin socket) gets a clear error, not all of lunarctl's memory. Before the bound,
/// `read_line` buffered everything (here: 80 MiB, then "invalid response").
#[tokio::test]
async fn lunarctl_refuses_an_endless_response() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("fake.sock");
    let l = tokio::net::UnixListener::bind(&path).expect("bind");
    let fake = tokio::spawn(async move {
        let (s, _) = l.accept().await.expect("accept");
        let (r, mut w) = s.into_split();
        let mut line = String::new();
        let _ = BufReader::new(r).read_line(&mut line).await;
        // 80 MiB without a newline, or until lunarctl stops reading.
        let chunk = vec![b'x'; 1 << 20];
        for _ in 0..80 {
            if w.write_all(&chunk).await.is_err() {
                return;
            }
        }
    });
    let out = tokio::time::timeout(
        RECV_LIMIT,
        tokio::process::Command::new(env!("CARGO_BIN_EXE_lunarctl"))
            .arg("--socket")
            .arg(&path)
            .args(["pool", "status"])
            .output(),
    )
    .await
    .expect("lunarctl neither answered nor failed (hang)")
    .expect("run lunarctl");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("response is longer than 64MiB"),
        "lunarctl stderr: {err}"
    );
    fake.abort();
}
