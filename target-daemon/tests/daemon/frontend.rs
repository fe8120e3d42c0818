//! iSCSI front end tests over real loopback TCP: login (plain, CHAP), ACLs, discovery,
//! NOP, logout and hostile input. The targets here have no LUNs, so no storage is needed.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use lunar_test_kit::initiator::{self, Initiator};
use scsi_proto::iscsi::pdu::{self, Bhs, LoginStage, NopOut, Pdu, RejectReason};
use target_daemon::config::{ByteSize, ChapCfg, Config, PortalCfg, TargetCfg};
use target_daemon::iscsi::{Server, TargetEntry};
use target_daemon::scsi::ScsiTarget;

/// Three targets on a loopback portal, without NOP-In pings: `open` (any initiator),
/// `private` (ALICE only) and `secret` (any initiator, with CHAP). The server is started
/// without a pool: these targets have no LUNs.
fn three_targets() -> Config {
    local()
        .with_target(TargetCfg::iscsi("iqn.2026-11.io.lunar:open"))
        .with_target(TargetCfg::iscsi("iqn.2026-11.io.lunar:private").with_initiators([ALICE]))
        .with_target(
            TargetCfg::iscsi("iqn.2026-11.io.lunar:secret")
                .with_chap(ChapCfg::new("alice", "alice-secret-123")),
        )
}

/// One portal on `127.0.0.1:0`, no NOP-In pings, no targets (the pool is never opened).
fn local() -> Config {
    let mut cfg = Config::local(ByteSize::gib(1));
    cfg.iscsi.nop_interval_secs = 0;
    cfg
}

const ALICE: &str = "iqn.2026-11.io.test:alice";
const BOB: &str = "iqn.2026-11.io.test:bob";

async fn start(cfg: Config) -> (Arc<Server>, SocketAddr) {
    assert_eq!(cfg.validate(), Ok(()), "test configuration");
    let targets = cfg
        .targets
        .iter()
        .map(|t| TargetEntry {
            cfg: t.clone(),
            scsi: ScsiTarget::new(&t.iqn),
        })
        .collect();
    let server = Server::new(&cfg, targets);
    let (addr, _task) = server.listen(&cfg.portals[0]).expect("bind");
    (server, addr)
}

fn targets_named(pairs: &[(String, String)]) -> Vec<String> {
    pairs
        .iter()
        .filter(|(k, _)| k == "TargetName")
        .map(|(_, v)| v.clone())
        .collect()
}

#[tokio::test]
async fn discovery_lists_only_allowed_targets() {
    let (_s, addr) = start(three_targets()).await;
    let mut bob = Initiator::connect(addr, BOB).await;
    assert!(bob.login(None).await.ok());
    let pairs = bob.send_targets("All").await;
    let names = targets_named(&pairs);
    assert_eq!(
        names,
        vec!["iqn.2026-11.io.lunar:open", "iqn.2026-11.io.lunar:secret"]
    );
    let addr_str = format!("{addr},1");
    assert!(
        pairs
            .iter()
            .any(|(k, v)| k == "TargetAddress" && *v == addr_str),
        "{pairs:?}"
    );

    let mut alice = Initiator::connect(addr, ALICE).await;
    assert!(alice.login(None).await.ok());
    let names = targets_named(&alice.send_targets("All").await);
    assert_eq!(names.len(), 3);
    assert!(names.contains(&"iqn.2026-11.io.lunar:private".to_string()));
}

#[tokio::test]
async fn acl_denies_unlisted_initiator() {
    let (_s, addr) = start(three_targets()).await;
    let mut bob = Initiator::connect(addr, BOB).await;
    let r = bob.login(Some("iqn.2026-11.io.lunar:private")).await;
    assert_eq!((r.status_class, r.status_detail), (2, 2), "{r:?}");
    assert!(
        bob.recv_opt().await.is_none(),
        "connection closes after a failed login"
    );

    let mut alice = Initiator::connect(addr, ALICE).await;
    assert!(alice.login(Some("iqn.2026-11.io.lunar:private")).await.ok());
}

#[tokio::test]
async fn unknown_target_is_not_found() {
    let (_s, addr) = start(three_targets()).await;
    let mut bob = Initiator::connect(addr, BOB).await;
    let r = bob.login(Some("iqn.2026-11.io.lunar:nope")).await;
    assert_eq!((r.status_class, r.status_detail), (2, 3), "{r:?}");
}

#[tokio::test]
async fn chap_login_ok_and_wrong_secret() {
    let (_s, addr) = start(three_targets()).await;
    let mut a = Initiator::connect(addr, ALICE).await;
    let r = a
        .login_chap(
            Some("iqn.2026-11.io.lunar:secret"),
            "alice",
            "alice-secret-123",
        )
        .await;
    assert!(r.ok(), "{r:?}");
    let p = a.nop(b"x").await;
    assert!(matches!(p.bhs, Bhs::NopIn(_)));

    let mut b = Initiator::connect(addr, ALICE).await;
    let r = b
        .login_chap(
            Some("iqn.2026-11.io.lunar:secret"),
            "alice",
            "wrong-secret-456",
        )
        .await;
    assert_eq!((r.status_class, r.status_detail), (2, 1), "{r:?}");

    // No authentication at all is refused too.
    let mut c = Initiator::connect(addr, ALICE).await;
    let r = c.login(Some("iqn.2026-11.io.lunar:secret")).await;
    assert_eq!(r.status_class, 2, "{r:?}");
}

#[tokio::test]
async fn nop_ping_and_logout() {
    let (server, addr) = start(three_targets()).await;
    let mut a = Initiator::connect(addr, ALICE).await;
    assert!(a.login(Some("iqn.2026-11.io.lunar:open")).await.ok());
    let p = a.nop(b"ping-data").await;
    let Bhs::NopIn(h) = &p.bhs else {
        panic!("expected NOP-In")
    };
    assert_eq!(h.itt, 1);
    assert_eq!(&p.data[..], b"ping-data");
    assert_eq!(server.session_count(), 1);
    let p = a.logout().await;
    let Bhs::LogoutResponse(h) = &p.bhs else {
        panic!("expected Logout Response")
    };
    assert_eq!(h.response, pdu::LogoutResponseCode::Closed);
    assert!(a.recv_opt().await.is_none(), "target closes after logout");
}

#[tokio::test]
async fn session_reinstatement_replaces_old_session() {
    let (server, addr) = start(three_targets()).await;
    let mut a = Initiator::connect(addr, ALICE).await;
    assert!(a.login(Some("iqn.2026-11.io.lunar:open")).await.ok());
    let old_tsih = a.tsih;
    let mut b = Initiator::connect(addr, ALICE).await;
    b.isid = a.isid;
    assert!(b.login(Some("iqn.2026-11.io.lunar:open")).await.ok());
    assert_ne!(b.tsih, old_tsih);
    assert!(
        a.recv_opt().await.is_none(),
        "old session's connection is closed"
    );
    assert_eq!(server.session_count(), 1);
    assert!(matches!(b.nop(b"").await.bhs, Bhs::NopIn(_)));
}

/// After each hostile input the daemon must still serve a fresh session.
async fn still_serving(addr: SocketAddr) {
    let mut c = Initiator::connect(addr, ALICE).await;
    assert!(c.login(Some("iqn.2026-11.io.lunar:open")).await.ok());
    assert!(matches!(c.nop(b"alive").await.bhs, Bhs::NopIn(_)));
}

#[tokio::test]
async fn hostile_inputs_do_not_hurt_other_sessions() {
    let (_s, addr) = start(three_targets()).await;

    // Truncated PDU, then the initiator goes away.
    let mut t = Initiator::connect(addr, BOB).await;
    t.send_raw(&[0x43, 0x87, 0, 0, 0, 0, 0, 20]).await;
    drop(t);
    still_serving(addr).await;

    // Giant DataSegmentLength during login: the connection is closed, nothing is buffered.
    let mut g = Initiator::connect(addr, BOB).await;
    let mut hdr = [0u8; 48];
    hdr[0] = 0x43;
    hdr[5..8].copy_from_slice(&[0xff, 0xff, 0xff]);
    g.send_raw(&hdr).await;
    assert!(g.recv_opt().await.is_none());
    still_serving(addr).await;

    // In the full feature phase: bad opcode -> Reject (command not supported).
    let mut a = Initiator::connect(addr, ALICE).await;
    assert!(a.login(Some("iqn.2026-11.io.lunar:open")).await.ok());
    let mut bad = [0u8; 48];
    bad[0] = 0x1e;
    bad[16..20].copy_from_slice(&7u32.to_be_bytes());
    a.send_raw(&bad).await;
    let p = a.recv().await;
    let Bhs::Reject(r) = &p.bhs else {
        panic!("expected Reject, got {:?}", p.bhs.opcode())
    };
    assert_eq!(r.reason, RejectReason::CommandNotSupported);
    assert_eq!(&p.data[..48], &bad[..]);

    // Out-of-window CmdSN: silently ignored; the next in-window command is answered.
    let far = NopOut {
        immediate: false,
        lun: 0,
        itt: 77,
        ttt: pdu::RESERVED_TAG,
        cmd_sn: a.cmd_sn.wrapping_add(100_000),
        exp_stat_sn: a.exp_stat_sn,
    };
    a.send(Pdu::new(far, Bytes::new())).await;
    let ok = NopOut {
        immediate: false,
        lun: 0,
        itt: 78,
        ttt: pdu::RESERVED_TAG,
        cmd_sn: a.cmd_sn,
        exp_stat_sn: a.exp_stat_sn,
    };
    a.send(Pdu::new(ok, Bytes::new())).await;
    let p = a.recv().await;
    assert_eq!(p.bhs.itt(), 78, "the out-of-window NOP-Out got no answer");
    a.cmd_sn = a.cmd_sn.wrapping_add(1);

    // Giant DataSegmentLength in the full feature phase: connection closed.
    let mut hdr = [0u8; 48];
    hdr[0] = 0x40;
    hdr[5..8].copy_from_slice(&[0xff, 0xff, 0xff]);
    a.send_raw(&hdr).await;
    assert!(a.recv_opt().await.is_none());
    still_serving(addr).await;

    // Key flood in a login: refused without hurting anyone.
    let mut f = Initiator::connect(addr, BOB).await;
    let mut text = Vec::new();
    for i in 0..5000 {
        text.extend_from_slice(format!("X-flood-{i}=value\0").as_bytes());
    }
    for chunk in text.chunks(8000) {
        let req = pdu::LoginRequest {
            transit: false,
            continue_bit: true,
            csg: pdu::LoginStage::Operational,
            nsg: pdu::LoginStage::Operational,
            version_max: 0,
            version_min: 0,
            isid: f.isid,
            tsih: 0,
            itt: 1,
            cid: 1,
            cmd_sn: 1,
            exp_stat_sn: 0,
        };
        f.send(Pdu::new(req, Bytes::copy_from_slice(chunk))).await;
        // The target answers each continued PDU (empty response) or fails the login.
        match f.recv_opt().await {
            Some(p) => {
                let Bhs::LoginResponse(r) = &p.bhs else {
                    panic!("expected Login Response")
                };
                if r.status_class != 0 {
                    break;
                }
            }
            None => break,
        }
    }
    still_serving(addr).await;
}

#[tokio::test]
async fn idle_initiator_is_pinged_and_dropped_when_silent() {
    let mut cfg = three_targets();
    cfg.iscsi.nop_interval_secs = 1;
    cfg.iscsi.nop_timeout_secs = 1;
    let (server, addr) = start(cfg).await;
    let mut a = Initiator::connect(addr, ALICE).await;
    assert!(a.login(Some("iqn.2026-11.io.lunar:open")).await.ok());
    let p = a.recv().await;
    let Bhs::NopIn(ping) = &p.bhs else {
        panic!("expected a NOP-In ping, got {:?}", p.bhs.opcode())
    };
    assert_eq!(ping.itt, pdu::RESERVED_TAG);
    assert_ne!(ping.ttt, pdu::RESERVED_TAG);
    // Answering keeps the connection alive: the next thing is another ping, not a close.
    let answer = NopOut {
        immediate: true,
        lun: 0,
        itt: pdu::RESERVED_TAG,
        ttt: ping.ttt,
        cmd_sn: a.cmd_sn,
        exp_stat_sn: a.exp_stat_sn,
    };
    a.send(Pdu::header_only(answer)).await;
    let p = a.recv().await;
    assert!(matches!(&p.bhs, Bhs::NopIn(h) if h.itt == pdu::RESERVED_TAG));
    // Now stay silent: the target drops the connection and the session.
    assert!(a.recv_opt().await.is_none());
    still_serving(addr).await;
    let _ = server;
}

#[tokio::test]
async fn crc32c_digests_are_negotiated_and_used() {
    let (_s, addr) = start(three_targets()).await;
    let mut a = Initiator::connect(addr, ALICE).await;
    let r = a
        .login_with(
            Some("iqn.2026-11.io.lunar:open"),
            &[("HeaderDigest", "CRC32C"), ("DataDigest", "CRC32C")],
        )
        .await;
    assert!(r.ok(), "{r:?}");
    assert_eq!(
        r.keys.get("HeaderDigest").map(String::as_str),
        Some("CRC32C")
    );
    assert_eq!(r.keys.get("DataDigest").map(String::as_str), Some("CRC32C"));
    a.codec.header_digest = true;
    a.codec.data_digest = true;
    let p = a.nop(b"digest").await;
    assert_eq!(&p.data[..], b"digest");
}

/// `lunar_iscsi_digest_errors_total{kind="<kind>"}` from the process-wide registry (0 until
/// the first error of that kind).
fn digest_errors(kind: &str) -> u64 {
    let text = target_daemon::metrics::global().render(&[]);
    let series = format!("lunar_iscsi_digest_errors_total{{kind=\"{kind}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(series.as_str()))
        .map_or(0, |v| v.trim().parse().expect("counter value"))
}

#[tokio::test]
async fn digest_errors_on_a_live_connection() {
    let (_s, addr) = start(three_targets()).await;
    let mut a = Initiator::connect(addr, ALICE).await;
    let r = a
        .login_with(
            Some("iqn.2026-11.io.lunar:open"),
            &[("HeaderDigest", "CRC32C"), ("DataDigest", "CRC32C")],
        )
        .await;
    assert!(r.ok(), "{r:?}");
    assert_eq!(r.keys.get("DataDigest").map(String::as_str), Some("CRC32C"));
    a.codec.header_digest = true;
    a.codec.data_digest = true;
    let (data_before, header_before) = (digest_errors("data"), digest_errors("header"));
    let nop_bytes = |a: &mut Initiator, data: &'static [u8]| {
        let nop = NopOut {
            immediate: true,
            lun: 0,
            itt: a.itt(),
            ttt: pdu::RESERVED_TAG,
            cmd_sn: a.cmd_sn,
            exp_stat_sn: a.exp_stat_sn,
        };
        let mut out = bytes::BytesMut::new();
        Pdu::new(nop, Bytes::from_static(data))
            .encode(&a.codec, &mut out)
            .expect("encode");
        out.to_vec()
    };

    // BHS (48) + header digest (4) + data "digest!!" (8) + data digest (4).
    let mut bad_data = nop_bytes(&mut a, b"digest!!");
    assert_eq!(bad_data.len(), 48 + 4 + 8 + 4);
    bad_data[52] ^= 0x01;
    a.send_raw(&bad_data).await;
    let p = a.recv().await;
    let Bhs::Reject(r) = &p.bhs else {
        panic!("expected Reject, got {:?}", p.bhs.opcode())
    };
    assert_eq!(r.reason, RejectReason::DataDigestError);
    assert_eq!(u8::from(r.reason), 0x02);
    assert_eq!(
        &p.data[..48],
        &bad_data[..48],
        "the rejected header is returned"
    );
    // The connection keeps working.
    let p = a.nop(b"still here").await;
    assert!(matches!(p.bhs, Bhs::NopIn(_)), "{:?}", p.bhs.opcode());
    assert_eq!(&p.data[..], b"still here");

    // A damaged header digest: nothing in the header can be trusted, the connection closes.
    let mut bad_header = nop_bytes(&mut a, b"gone");
    bad_header[49] ^= 0x80;
    a.send_raw(&bad_header).await;
    let closed = tokio::time::timeout(std::time::Duration::from_secs(10), a.recv_opt())
        .await
        .expect("the target neither closed nor answered");
    assert!(
        closed.is_none(),
        "expected the connection to close, got {:?}",
        closed.map(|p| p.bhs.opcode())
    );
    still_serving(addr).await;

    // Only this test makes digest errors in this process.
    assert_eq!(digest_errors("data") - data_before, 1);
    assert_eq!(digest_errors("header") - header_before, 1);
}

#[tokio::test]
async fn connection_reinstatement_keeps_the_session() {
    let (server, addr) = start(three_targets()).await;
    let mut a = Initiator::connect(addr, ALICE).await;
    assert!(a.login(Some("iqn.2026-11.io.lunar:open")).await.ok());
    let mut b = Initiator::connect(addr, ALICE).await;
    b.isid = a.isid;
    b.tsih = a.tsih;
    b.cmd_sn = a.cmd_sn;
    let r = b.login(Some("iqn.2026-11.io.lunar:open")).await;
    assert!(r.ok(), "{r:?}");
    assert_eq!(b.tsih, a.tsih, "same session");
    assert!(a.recv_opt().await.is_none(), "the old connection is closed");
    assert!(matches!(b.nop(b"still here").await.bhs, Bhs::NopIn(_)));
    assert_eq!(server.session_count(), 1);
}

/// Issue 14: a login typed Discovery, carrying the TSIH, ISID, InitiatorName and TargetName
/// of a CHAP-protected normal session, was authenticated against the discovery settings
/// (none) and then joined that session, with read/write on its LUNs, dropping the victim.
#[tokio::test]
async fn a_discovery_typed_join_cannot_take_over_a_normal_session() {
    let (server, addr) = start(three_targets()).await;
    let secret = "iqn.2026-11.io.lunar:secret";
    let mut victim = Initiator::connect(addr, ALICE).await;
    assert!(victim
        .login_chap(Some(secret), "alice", "alice-secret-123")
        .await
        .ok());
    for (session_type, stage) in [
        ("Discovery", LoginStage::Operational),
        ("Discovery", LoginStage::Security),
        ("Normal", LoginStage::Operational),
    ] {
        let mut attacker = Initiator::connect_with_isid(addr, ALICE, victim.isid).await;
        attacker.tsih = victim.tsih;
        let mut keys = vec![
            ("InitiatorName", ALICE),
            ("SessionType", session_type),
            ("TargetName", secret),
        ];
        if stage == LoginStage::Security {
            keys.push(("AuthMethod", "None"));
        } else {
            keys.extend(Initiator::operational_keys());
        }
        let (r, _) = attacker
            .login_step(stage, LoginStage::FullFeature, true, &keys)
            .await;
        assert_eq!(r.status_class, 2, "{session_type} join in {stage:?}: {r:?}");
        assert!(
            attacker.recv_opt().await.is_none(),
            "a refused login is closed"
        );
    }
    // The victim's connection and session are untouched.
    assert!(matches!(victim.nop(b"still mine").await.bhs, Bhs::NopIn(_)));
    assert_eq!(server.session_count(), 1);
}

#[tokio::test]
async fn mutual_chap_and_discovery_chap() {
    let mut cfg = local().with_target(TargetCfg::iscsi("iqn.2026-11.io.lunar:mutual").with_chap(
        ChapCfg::new("alice", "alice-secret-123").with_mutual("lunar", "lunar-secret-456"),
    ));
    cfg.discovery.chap = Some(ChapCfg::new("disco", "discovery-secret-1"));
    let (_s, addr) = start(cfg).await;
    let mut a = Initiator::connect(addr, ALICE).await;
    let r = a
        .login_chap_mutual(
            Some("iqn.2026-11.io.lunar:mutual"),
            "alice",
            "alice-secret-123",
            Some(("lunar", "lunar-secret-456")),
        )
        .await;
    assert!(r.ok(), "{r:?}");

    // Discovery requires its own CHAP credentials.
    let mut d = Initiator::connect(addr, BOB).await;
    assert_eq!(d.login(None).await.status_class, 2);
    let mut d = Initiator::connect(addr, BOB).await;
    let r = d.login_chap(None, "disco", "discovery-secret-1").await;
    assert!(r.ok(), "{r:?}");
    assert_eq!(
        targets_named(&d.send_targets("All").await),
        vec!["iqn.2026-11.io.lunar:mutual"]
    );
}

#[tokio::test]
async fn ipv6_portal_and_advertised_address() {
    let mut cfg = local().with_target(TargetCfg::iscsi("iqn.2026-11.io.lunar:v6"));
    cfg.portals = vec![PortalCfg::new("[::1]:0".parse().expect("addr"))
        .with_advertise("[2001:db8::7]:3260".parse().expect("addr"))
        .with_tpgt(3)];
    assert_eq!(cfg.validate(), Ok(()), "test configuration");
    let targets = cfg
        .targets
        .iter()
        .map(|t| TargetEntry {
            cfg: t.clone(),
            scsi: ScsiTarget::new(&t.iqn),
        })
        .collect();
    let server = Server::new(&cfg, targets);
    let addr = match server.listen(&cfg.portals[0]) {
        Ok((addr, _task)) => addr,
        Err(e) if e.kind() == std::io::ErrorKind::AddrNotAvailable => {
            // Under LUNAR_E2E_STRICT (CI) a missing IPv6 loopback is a failure: IPv6
            // portals are a requirement, and a test that silently stops running is lost.
            let strict = std::env::var("LUNAR_E2E_STRICT")
                .is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
            assert!(
                !strict,
                "no IPv6 loopback ([::1]) here: {e}; LUNAR_E2E_STRICT=1 so this is a failure, not a skip"
            );
            eprintln!();
            eprintln!("!!! SKIPPED ipv6 portal test: no IPv6 loopback ([::1]) here: {e}");
            return;
        }
        Err(e) => panic!("bind [::1]: {e}"),
    };
    assert!(addr.is_ipv6());
    let mut c = Initiator::connect(addr, BOB).await;
    assert!(c.login(None).await.ok());
    let pairs = c.send_targets("All").await;
    assert!(
        pairs
            .iter()
            .any(|(k, v)| k == "TargetAddress" && v == "[2001:db8::7]:3260,3"),
        "{pairs:?}"
    );
}

#[tokio::test]
async fn targets_and_access_change_at_run_time() {
    let (server, addr) = start(three_targets()).await;
    let t = TargetCfg::iscsi("iqn.2026-11.io.lunar:added");
    server
        .add_target(TargetEntry {
            scsi: ScsiTarget::new(&t.iqn),
            cfg: t.clone(),
        })
        .expect("add target");
    assert!(server
        .add_target(TargetEntry {
            scsi: ScsiTarget::new(&t.iqn),
            cfg: t,
        })
        .is_err());

    let mut d = Initiator::connect(addr, BOB).await;
    assert!(d.login(None).await.ok());
    assert!(targets_named(&d.send_targets("All").await)
        .contains(&"iqn.2026-11.io.lunar:added".to_string()));

    let mut a = Initiator::connect(addr, BOB).await;
    assert!(a.login(Some("iqn.2026-11.io.lunar:added")).await.ok());
    let list = server.session_list();
    assert!(list
        .iter()
        .any(|s| s.target.as_deref() == Some("iqn.2026-11.io.lunar:added") && s.initiator == BOB));

    // Restrict access: new logins from Bob are refused, the existing session lives on.
    server
        .set_target_access(
            "iqn.2026-11.io.lunar:added",
            false,
            vec![ALICE.to_string()],
            None,
        )
        .expect("set access");
    let mut b = Initiator::connect(addr, BOB).await;
    let r = b.login(Some("iqn.2026-11.io.lunar:added")).await;
    assert_eq!((r.status_class, r.status_detail), (2, 2));
    assert!(matches!(a.nop(b"still").await.bhs, Bhs::NopIn(_)));
    assert!(!targets_named(&d.send_targets("All").await)
        .contains(&"iqn.2026-11.io.lunar:added".to_string()));

    // Force-close, then remove: the target disappears.
    assert_eq!(server.close_sessions("iqn.2026-11.io.lunar:added").await, 1);
    assert!(a.recv_opt().await.is_none());
    server
        .remove_target("iqn.2026-11.io.lunar:added")
        .await
        .expect("remove");
    let mut c = Initiator::connect(addr, ALICE).await;
    let r = c.login(Some("iqn.2026-11.io.lunar:added")).await;
    assert_eq!((r.status_class, r.status_detail), (2, 3));
}

#[tokio::test]
async fn long_send_targets_answer_is_continued() {
    use scsi_proto::iscsi::pdu::TextRequest;
    use scsi_proto::iscsi::text;
    let mut cfg = local();
    for i in 0..40 {
        cfg = cfg.with_target(TargetCfg::iscsi(format!(
            "iqn.2026-11.io.lunar:target-number-{i:03}"
        )));
    }
    let (_s, addr) = start(cfg).await;
    let mut d = Initiator::connect(addr, BOB).await;
    let r = d
        .login_with(None, &[("MaxRecvDataSegmentLength", "512")])
        .await;
    assert!(r.ok(), "{r:?}");
    d.codec.max_recv_data_segment_length = 512;
    let itt = d.itt();
    let mut ttt = pdu::RESERVED_TAG;
    let mut data = Vec::new();
    let mut first = true;
    let mut pieces = 0;
    loop {
        let req = TextRequest {
            immediate: true,
            final_bit: true,
            continue_bit: false,
            lun: 0,
            itt,
            ttt,
            cmd_sn: d.cmd_sn,
            exp_stat_sn: d.exp_stat_sn,
        };
        let payload = if first {
            initiator::kv(&[("SendTargets", "All")])
        } else {
            Bytes::new()
        };
        first = false;
        d.send(Pdu::new(req, payload)).await;
        let p = d.recv().await;
        let Bhs::TextResponse(h) = &p.bhs else {
            panic!("expected Text Response")
        };
        assert!(p.data.len() <= 512);
        data.extend_from_slice(&p.data);
        pieces += 1;
        if h.final_bit {
            assert!(!h.continue_bit);
            break;
        }
        assert!(h.continue_bit);
        assert_ne!(h.ttt, pdu::RESERVED_TAG);
        ttt = h.ttt;
    }
    assert!(pieces > 2, "the answer needed continuation");
    let names = text::parse(&data)
        .expect("reassembled text")
        .into_iter()
        .filter(|kv| kv.key == "TargetName")
        .count();
    assert_eq!(names, 40);
}

#[tokio::test]
async fn protocol_violations_are_rejected_with_the_right_reason() {
    let (_s, addr) = start(three_targets()).await;
    let mut d = Initiator::connect(addr, BOB).await;
    assert!(d.login(None).await.ok());

    // A SCSI command in a discovery session.
    let cmd = d.command(&[0x12, 0, 0, 0, 36, 0], true, false, 36, Bytes::new());
    d.send(cmd).await;
    let p = d.recv().await;
    let Bhs::Reject(r) = &p.bhs else {
        panic!("expected Reject, got {:?}", p.bhs.opcode())
    };
    assert_eq!(r.reason, RejectReason::ProtocolError);
    assert_eq!(p.data[0] & 0x3f, 0x01, "the rejected header is returned");

    // SNACK at ErrorRecoveryLevel 0.
    let snack = pdu::Snack {
        kind: pdu::SnackType::Status,
        lun: 0,
        itt: 99,
        ttt: pdu::RESERVED_TAG,
        exp_stat_sn: d.exp_stat_sn,
        beg_run: 0,
        run_length: 0,
    };
    d.send(Pdu::header_only(snack)).await;
    let p = d.recv().await;
    let Bhs::Reject(r) = &p.bhs else {
        panic!("expected Reject, got {:?}", p.bhs.opcode())
    };
    assert_eq!(r.reason, RejectReason::CommandNotSupported);

    // A Login Request in the full feature phase.
    let login = pdu::LoginRequest {
        transit: true,
        continue_bit: false,
        csg: pdu::LoginStage::Operational,
        nsg: pdu::LoginStage::FullFeature,
        version_max: 0,
        version_min: 0,
        isid: d.isid,
        tsih: d.tsih,
        itt: 100,
        cid: 1,
        cmd_sn: d.cmd_sn,
        exp_stat_sn: d.exp_stat_sn,
    };
    d.send(Pdu::header_only(login)).await;
    let p = d.recv().await;
    let Bhs::Reject(r) = &p.bhs else {
        panic!("expected Reject, got {:?}", p.bhs.opcode())
    };
    assert_eq!(r.reason, RejectReason::ProtocolError);

    // The session still answers.
    assert!(matches!(d.nop(b"ok").await.bhs, Bhs::NopIn(_)));
}
