//! Login state machine abuse: stage skips, session-type confusion, TSIH/ISID games, version
//! games, continuation and key floods.

use crate::{assert_login_refused, assert_session_alive, CLOSE_WITHIN};
use lunar_e2e::hostile::{
    self, assert_daemon_healthy, victim_session, Auth, ATTACKER, HONEST_IQN, VICTIM_IQN,
};
use lunar_e2e::raw::{op, stage, Conn, Pdu};

const VICTIM: &str = "iqn.2026-11.io.lunar.test:victim-host";

fn operational_keys(name: &str, target: &str) -> Vec<(String, String)> {
    vec![
        ("InitiatorName".into(), name.into()),
        ("SessionType".into(), "Normal".into()),
        ("TargetName".into(), target.into()),
        ("HeaderDigest".into(), "None".into()),
        ("DataDigest".into(), "None".into()),
    ]
}

/// One way of attempting a login on a fresh connection; returns the target's answer.
type Attempt<'a> = Box<dyn Fn(&mut Conn) -> Option<Pdu> + 'a>;
/// Login keys.
type Keys<'a> = Vec<(&'a str, &'a str)>;

fn kv(v: &[(String, String)]) -> Vec<(&str, &str)> {
    v.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

/// Every way of reaching the full feature phase of a CHAP target without CHAP is refused.
#[test]
fn chap_target_refuses_every_way_around_chap() {
    let (mut d, honest) = hostile::start_watched(Auth::Chap);
    let addr = d.addr();
    let ident = operational_keys(ATTACKER, VICTIM_IQN);

    // Straight to the operational stage (security stage skipped).
    let mut c = Conn::connect(addr, ATTACKER).unwrap();
    let r = c
        .login_step(true, stage::OPERATIONAL, stage::FULL_FEATURE, &kv(&ident))
        .unwrap();
    assert_eq!(
        assert_login_refused(&mut c, r, "skipped security stage"),
        0x0201
    );

    // Security stage with AuthMethod=None.
    let mut c = Conn::connect(addr, ATTACKER).unwrap();
    let mut k = kv(&ident);
    k.push(("AuthMethod", "None"));
    let r = c
        .login_step(true, stage::SECURITY, stage::OPERATIONAL, &k)
        .unwrap();
    assert_eq!(assert_login_refused(&mut c, r, "AuthMethod=None"), 0x0201);

    // Security stage without any AuthMethod, transiting at once (to either later stage).
    for nsg in [stage::OPERATIONAL, stage::FULL_FEATURE] {
        let mut c = Conn::connect(addr, ATTACKER).unwrap();
        let r = c
            .login_step(true, stage::SECURITY, nsg, &kv(&ident))
            .unwrap();
        assert_eq!(
            assert_login_refused(&mut c, r, "no AuthMethod, T=1"),
            0x0201
        );
    }

    // AuthMethod=CHAP agreed, then: transit without running CHAP, then jump to the
    // operational stage anyway.
    let mut c = Conn::connect(addr, ATTACKER).unwrap();
    let mut k = kv(&ident);
    k.push(("AuthMethod", "CHAP"));
    let r = c
        .login_req(true, stage::SECURITY, stage::FULL_FEATURE, &k)
        .unwrap();
    assert_eq!(r.login_status(), 0, "AuthMethod=CHAP: {}", r.describe());
    assert_eq!(
        r.bhs[1] & 0x80,
        0,
        "target let the login leave the security stage before CHAP: {}",
        r.describe()
    );
    let r = c
        .login_step(true, stage::SECURITY, stage::FULL_FEATURE, &[])
        .unwrap();
    if let Some(r) = &r {
        assert!(
            r.login_status() != 0 || r.bhs[1] & 0x80 == 0,
            "transit without CHAP allowed: {}",
            r.describe()
        );
    }
    let r = c
        .login_step(true, stage::OPERATIONAL, stage::FULL_FEATURE, &[])
        .unwrap();
    assert_login_refused(&mut c, r, "operational stage while CHAP is pending");

    // CHAP_N/CHAP_R before CHAP_A (no challenge was issued).
    let mut c = Conn::connect(addr, ATTACKER).unwrap();
    let mut k = kv(&ident);
    k.push(("AuthMethod", "CHAP"));
    c.login_req(false, stage::SECURITY, stage::OPERATIONAL, &k)
        .unwrap();
    let r = c
        .login_step(
            true,
            stage::SECURITY,
            stage::OPERATIONAL,
            &[
                ("CHAP_N", hostile::CHAP_USER),
                ("CHAP_R", "0x00112233445566778899aabbccddeeff"),
            ],
        )
        .unwrap();
    assert_eq!(
        assert_login_refused(&mut c, r, "CHAP_R before CHAP_A"),
        0x0201
    );
    honest.assert_flood_bounds(
        &mut d,
        "login without CHAP",
        hostile::SMALL_ATTACK_MEMORY_MIB,
    );
    assert_daemon_healthy(&mut d, "login without CHAP");
}

/// Failed logins that reuse an existing session's InitiatorName and ISID (TSIH 0, what a
/// session reinstatement looks like) must not disturb that session.
#[test]
fn failed_logins_reusing_the_victims_name_and_isid_leave_it_alone() {
    let (mut d, honest) = hostile::start_watched(Auth::Chap);
    let mut victim = victim_session(&d, Auth::Chap, VICTIM);
    let isid = victim.isid;
    let ident = operational_keys(VICTIM, VICTIM_IQN);
    let attempts: Vec<(&str, Attempt<'_>)> = vec![
        (
            "skipped security stage",
            Box::new(|c: &mut Conn| {
                c.login_step(true, stage::OPERATIONAL, stage::FULL_FEATURE, &kv(&ident))
                    .unwrap()
            }),
        ),
        (
            "AuthMethod=None",
            Box::new(|c: &mut Conn| {
                let mut k = kv(&ident);
                k.push(("AuthMethod", "None"));
                c.login_step(true, stage::SECURITY, stage::OPERATIONAL, &k)
                    .unwrap()
            }),
        ),
        (
            "wrong CHAP secret",
            Box::new(|c: &mut Conn| {
                let bad = lunar_e2e::raw::Chap {
                    user: hostile::CHAP_USER.into(),
                    secret: "not-the-secret-123".into(),
                    mutual: None,
                };
                Some(c.login(Some(VICTIM_IQN), Some(&bad), &[]).unwrap())
            }),
        ),
    ];
    for (what, attempt) in &attempts {
        let mut c = Conn::connect(d.addr(), VICTIM).unwrap();
        c.isid = isid;
        let r = attempt(&mut c);
        assert_eq!(assert_login_refused(&mut c, r, what), 0x0201, "{what}");
        assert_session_alive(&mut victim, what);
    }
    honest.assert_flood_bounds(
        &mut d,
        "victim name/ISID reuse",
        hostile::SMALL_ATTACK_MEMORY_MIB,
    );
    assert_daemon_healthy(&mut d, "victim name/ISID reuse");
}

/// Non-leading logins (TSIH of an existing session) without the CHAP the leading login
/// passed, or naming another target, are refused and leave the session alone.
#[test]
fn non_leading_joins_without_chap_or_to_another_target_are_refused() {
    let (mut d, honest) = hostile::start_watched(Auth::Chap);
    let mut victim = victim_session(&d, Auth::Chap, VICTIM);
    let (isid, tsih) = (victim.isid, victim.tsih);
    assert_ne!(tsih, 0, "leading login assigned no TSIH");
    for cid in [1u16, 2] {
        // Skipped security stage, AuthMethod=None.
        for with_auth_none in [false, true] {
            let mut c = Conn::connect(d.addr(), VICTIM).unwrap();
            c.isid = isid;
            c.tsih = tsih;
            c.cid = cid;
            let ident = operational_keys(VICTIM, VICTIM_IQN);
            let r = if with_auth_none {
                let mut k = kv(&ident);
                k.push(("AuthMethod", "None"));
                c.login_step(true, stage::SECURITY, stage::OPERATIONAL, &k)
                    .unwrap()
            } else {
                c.login_step(true, stage::OPERATIONAL, stage::FULL_FEATURE, &kv(&ident))
                    .unwrap()
            };
            let what = format!("non-leading join, CID {cid}, AuthMethod=None {with_auth_none}");
            assert_login_refused(&mut c, r, &what);
            assert_session_alive(&mut victim, &what);
        }
        // Naming the honest target (no CHAP there) with the victim session's TSIH.
        let mut c = Conn::connect(d.addr(), VICTIM).unwrap();
        c.isid = isid;
        c.tsih = tsih;
        c.cid = cid;
        let r = c.login(Some(HONEST_IQN), None, &[]).unwrap();
        let what = format!("non-leading join naming another target, CID {cid}");
        assert_login_refused(&mut c, Some(r), &what);
        assert_session_alive(&mut victim, &what);
    }
    honest.assert_flood_bounds(
        &mut d,
        "non-leading joins",
        hostile::SMALL_ATTACK_MEMORY_MIB,
    );
    assert_daemon_healthy(&mut d, "non-leading joins");
}

/// Session-type confusion: a *discovery* login carrying an existing normal session's TSIH,
/// ISID, InitiatorName and TargetName (TSIHs are handed out in sequence, ISIDs and names are
/// not secret) must not join that session: it would get the victim's LUNs without CHAP.
#[test]
fn discovery_login_cannot_join_a_normal_session() {
    let (mut d, honest) = hostile::start_watched(Auth::Chap);
    let mut victim = victim_session(&d, Auth::Chap, VICTIM);
    let (isid, tsih) = (victim.isid, victim.tsih);
    for (cid, with_target) in [(1u16, true), (2, true), (1, false)] {
        let mut c = Conn::connect(d.addr(), VICTIM).unwrap();
        c.isid = isid;
        c.tsih = tsih;
        c.cid = cid;
        let mut keys = vec![
            ("InitiatorName", VICTIM),
            ("SessionType", "Discovery"),
            ("HeaderDigest", "None"),
            ("DataDigest", "None"),
        ];
        if with_target {
            keys.push(("TargetName", VICTIM_IQN));
        }
        let r = c
            .login_step(true, stage::OPERATIONAL, stage::FULL_FEATURE, &keys)
            .unwrap();
        let what =
            format!("discovery login with the victim's TSIH, CID {cid}, TargetName {with_target}");
        if let Some(resp) = &r {
            if resp.login_status() == 0 {
                // Show what the bypass yields before failing: learn the session's CmdSN
                // from an immediate NOP-Out, then READ the victim's LUN.
                c.exp_stat_sn = resp.stat_sn().wrapping_add(1);
                let mut nop = Pdu::new(op::NOP_OUT).immediate();
                nop.bhs[1] = 0x80;
                nop.set_u32(16, 0x77);
                nop.set_u32(20, lunar_e2e::raw::RESERVED_TAG);
                nop.set_u32(24, c.cmd_sn);
                nop.set_u32(28, c.exp_stat_sn);
                let read = c.send(&nop).and_then(|_| c.recv()).and_then(|r| {
                    c.cmd_sn = r.exp_cmd_sn();
                    c.scsi(0, &lunar_e2e::raw::cdb10(0x28, 0, 1), 512, &[])
                });
                let victim_alive = victim.ping().is_ok();
                panic!(
                    "{what}: login accepted ({}); a READ of the victim's LUN 0 through it: {:?}; \
                     victim session alive: {victim_alive}",
                    resp.describe(),
                    read.map(|r| (r.status, r.data.len()))
                );
            }
        }
        assert_login_refused(&mut c, r, &what);
        assert_session_alive(&mut victim, &what);
    }
    honest.assert_flood_bounds(
        &mut d,
        "discovery/normal confusion",
        hostile::SMALL_ATTACK_MEMORY_MIB,
    );
    assert_daemon_healthy(&mut d, "discovery/normal confusion");
}

/// Guessing TSIHs (they are small sequential numbers) with the attacker's own identity finds
/// no session to join.
#[test]
fn tsih_guessing_is_refused() {
    let (mut d, honest) = hostile::start_watched(Auth::Open);
    let mut victim = victim_session(&d, Auth::Open, VICTIM);
    for tsih in 1..=24u16 {
        let mut c = Conn::connect(d.addr(), ATTACKER).unwrap();
        c.tsih = tsih;
        let r = c.login(Some(VICTIM_IQN), None, &[]).unwrap();
        let s = assert_login_refused(&mut c, Some(r), &format!("TSIH {tsih}"));
        assert_eq!(s, 0x020a, "TSIH {tsih}: want 'session does not exist'");
    }
    assert_session_alive(&mut victim, "TSIH guessing");
    honest.assert_flood_bounds(&mut d, "TSIH guessing", hostile::SMALL_ATTACK_MEMORY_MIB);
    assert_daemon_healthy(&mut d, "TSIH guessing");
}

/// Stage, T/C-bit, version and identity games in the login phase.
#[test]
fn login_stage_and_version_games_are_refused() {
    let (mut d, honest) = hostile::start_watched(Auth::Open);
    let addr = d.addr();
    let ident = operational_keys(ATTACKER, VICTIM_IQN);
    let connect = || Conn::connect(addr, ATTACKER).unwrap();

    // First PDU in the full feature "stage" or the reserved stage 2.
    for csg in [3u8, 2] {
        let mut c = connect();
        let r = c
            .login_step(true, csg, stage::FULL_FEATURE, &kv(&ident))
            .unwrap();
        assert_eq!(
            assert_login_refused(&mut c, r, &format!("CSG {csg}")),
            0x0200
        );
    }
    // VersionMin above anything we speak.
    let mut c = connect();
    let mut p = c.login_pdu(true, stage::OPERATIONAL, stage::FULL_FEATURE, &kv(&ident));
    p.bhs[2] = 0x7f;
    p.bhs[3] = 0x10;
    c.send(&p).unwrap();
    let r = c.recv_opt().unwrap();
    assert_eq!(assert_login_refused(&mut c, r, "VersionMin 0x10"), 0x0205);
    // T and C both set.
    let mut c = connect();
    let mut p = c.login_pdu(true, stage::OPERATIONAL, stage::FULL_FEATURE, &kv(&ident));
    p.bhs[1] |= 0x40;
    c.send(&p).unwrap();
    let r = c.recv_opt().unwrap();
    assert_eq!(assert_login_refused(&mut c, r, "T and C"), 0x0200);
    // Operational stage with T=1 and NSG backwards (security) or to itself.
    for nsg in [stage::SECURITY, stage::OPERATIONAL] {
        let mut c = connect();
        let r = c
            .login_step(true, stage::OPERATIONAL, nsg, &kv(&ident))
            .unwrap();
        assert_eq!(
            assert_login_refused(&mut c, r, &format!("operational -> NSG {nsg}")),
            0x0200
        );
    }
    // Back from the operational stage to the security stage after transiting.
    let mut c = connect();
    let r = c
        .login_req(false, stage::OPERATIONAL, stage::OPERATIONAL, &kv(&ident))
        .unwrap();
    assert_eq!(r.login_status(), 0, "{}", r.describe());
    let r = c
        .login_step(
            true,
            stage::SECURITY,
            stage::OPERATIONAL,
            &[("AuthMethod", "None")],
        )
        .unwrap();
    assert_eq!(assert_login_refused(&mut c, r, "stage backwards"), 0x0200);
    // ISID, TSIH or CID changed in the middle of a login.
    for field in 0..3 {
        let mut c = connect();
        c.login_req(false, stage::OPERATIONAL, stage::OPERATIONAL, &kv(&ident))
            .unwrap();
        match field {
            0 => c.isid ^= 1,
            1 => c.tsih = 1,
            _ => c.cid = 7,
        }
        let r = c
            .login_step(true, stage::OPERATIONAL, stage::FULL_FEATURE, &[])
            .unwrap();
        assert_eq!(
            assert_login_refused(&mut c, r, &format!("identity field {field} changed")),
            0x0200
        );
    }
    // Missing names, unknown target, unknown session type.
    let cases: [(&str, Keys<'_>, u16); 4] = [
        ("no InitiatorName", vec![("TargetName", VICTIM_IQN)], 0x0207),
        ("no TargetName", vec![("InitiatorName", ATTACKER)], 0x0207),
        (
            "unknown target",
            vec![
                ("InitiatorName", ATTACKER),
                ("TargetName", "iqn.2026-11.io.lunar:nope"),
            ],
            0x0203,
        ),
        (
            "SessionType=Bogus",
            vec![
                ("InitiatorName", ATTACKER),
                ("SessionType", "Bogus"),
                ("TargetName", VICTIM_IQN),
            ],
            0,
        ),
    ];
    for (what, keys, want) in cases {
        let mut c = connect();
        let r = c
            .login_step(true, stage::OPERATIONAL, stage::FULL_FEATURE, &keys)
            .unwrap();
        let s = assert_login_refused(&mut c, r, what);
        if want != 0 {
            assert_eq!(s, want, "{what}");
        }
    }
    // A SCSI command as the very first PDU: no login, no SCSI.
    let mut c = connect();
    let mut p = c.scsi_pdu(0, &lunar_e2e::raw::cdb10(0x28, 0, 1), 512, 0);
    p.bhs[0] |= 0x40;
    c.send(&p).unwrap();
    let seen = c.expect_closed_within(CLOSE_WITHIN).unwrap();
    assert!(
        seen.iter()
            .all(|p| p.opcode() != op::SCSI_RESP && p.opcode() != op::DATA_IN),
        "SCSI command before login answered: {:?}",
        seen.iter().map(Pdu::describe).collect::<Vec<_>>()
    );
    // A Login Request in the full feature phase is rejected; the session carries on.
    let mut c = connect();
    c.login_ok(Some(VICTIM_IQN), None).unwrap();
    let p = c.login_pdu(true, stage::OPERATIONAL, stage::FULL_FEATURE, &kv(&ident));
    c.send(&p).unwrap();
    let r = c.recv().unwrap();
    assert_eq!(
        r.opcode(),
        op::REJECT,
        "login PDU in full feature phase: {}",
        r.describe()
    );
    assert_session_alive(&mut c, "after a login PDU in the full feature phase");
    honest.assert_flood_bounds(&mut d, "stage games", hostile::SMALL_ATTACK_MEMORY_MIB);
    assert_daemon_healthy(&mut d, "stage games");
}

/// 300 Login Requests with the C bit (a login that never ends its text): refused after the
/// limit, connection closed.
#[test]
fn endless_continued_login_text_is_refused() {
    let (mut d, honest) = hostile::start_watched(Auth::Open);
    let mut c = Conn::connect(d.addr(), ATTACKER).unwrap();
    let mut refused = None;
    for i in 0..300 {
        let mut p = c.login_pdu(false, stage::OPERATIONAL, stage::OPERATIONAL, &[]);
        p.bhs[1] |= 0x40;
        p.data = format!("X-Pad{i}=abc\0").into_bytes();
        c.send(&p).unwrap();
        match c.recv_opt().unwrap() {
            Some(r) if r.login_status() == 0 => continue,
            r => {
                refused = Some((i, r));
                break;
            }
        }
    }
    let Some((i, r)) = refused else {
        panic!("300 continued Login Requests accepted");
    };
    eprintln!("continued login refused at PDU {i}");
    assert_login_refused(&mut c, r, "endless continued login");
    honest.assert_flood_bounds(&mut d, "continued login", hostile::SMALL_ATTACK_MEMORY_MIB);
    assert_daemon_healthy(&mut d, "continued login");
}

/// Key floods in the login phase: many keys in one PDU, one huge value, and 200 PDUs of
/// continued text. Each is refused (or the keys ignored) with bounded memory.
#[test]
fn login_key_floods_are_bounded() {
    let (mut d, honest) = hostile::start_watched(Auth::Open);
    let addr = d.addr();
    // 8 KiB of distinct unknown keys in one PDU (the login-phase segment limit).
    let mut c = Conn::connect(addr, ATTACKER).unwrap();
    let mut text = String::new();
    text.push_str(&format!(
        "InitiatorName={ATTACKER}\0TargetName={VICTIM_IQN}\0"
    ));
    let mut i = 0;
    while text.len() < 8000 {
        text.push_str(&format!("X-k{i}=v\0"));
        i += 1;
    }
    let mut p = c.login_pdu(true, stage::OPERATIONAL, stage::FULL_FEATURE, &[]);
    p.data = text.into_bytes();
    c.send(&p).unwrap();
    match c.recv_opt().unwrap() {
        Some(r) if r.login_status() == 0 => {
            assert!(
                r.data.len() <= 8192,
                "response segment {} bytes",
                r.data.len()
            );
        }
        r => {
            assert_login_refused(&mut c, r, "8 KiB of keys");
        }
    }
    // One PDU above the login-phase segment limit (64 KiB).
    let mut c = Conn::connect(addr, ATTACKER).unwrap();
    let mut p = c.login_pdu(true, stage::OPERATIONAL, stage::FULL_FEATURE, &[]);
    p.data = format!("InitiatorName={ATTACKER}\0X-big={}\0", "a".repeat(65536)).into_bytes();
    c.send(&p).unwrap();
    let seen = c.expect_closed_within(CLOSE_WITHIN).unwrap();
    assert!(
        seen.iter().all(|p| p.login_status() != 0),
        "64 KiB login PDU accepted: {:?}",
        seen.iter().map(Pdu::describe).collect::<Vec<_>>()
    );
    // 200 continued PDUs of 8 KiB each: 1.6 MB of text for one key set.
    let mut c = Conn::connect(addr, ATTACKER).unwrap();
    let chunk = "Y".repeat(8000);
    let mut closed = false;
    for n in 0..200 {
        let mut p = c.login_pdu(false, stage::OPERATIONAL, stage::OPERATIONAL, &[]);
        p.bhs[1] |= 0x40;
        p.data = if n == 0 {
            format!("X-long={chunk}").into_bytes()
        } else {
            chunk.clone().into_bytes()
        };
        if c.send(&p).is_err() {
            closed = true;
            break;
        }
        match c.recv_opt() {
            Ok(Some(r)) if r.login_status() == 0 => {}
            Ok(r) => {
                assert_login_refused(&mut c, r, "1.6 MB of continued login text");
                closed = true;
                break;
            }
            Err(e) => panic!("continued login text: {e:#}"),
        }
    }
    assert!(closed, "1.6 MB of continued login text accepted");
    hostile::assert_memory_bounded(&mut d, "login key floods", 64);
    honest.assert_flood_bounds(&mut d, "login key floods", hostile::SMALL_ATTACK_MEMORY_MIB);
    assert_daemon_healthy(&mut d, "login key floods");
}

/// A 16 MiB DataSegmentLength announced before login: the connection is closed without the
/// target waiting for (or buffering) 16 MiB.
#[test]
fn huge_data_segment_before_login_closes_the_connection() {
    let (mut d, honest) = hostile::start_watched(Auth::Open);
    let mut c = Conn::connect(d.addr(), ATTACKER).unwrap();
    let mut p = c.login_pdu(true, stage::OPERATIONAL, stage::FULL_FEATURE, &[]);
    p.data.clear();
    let mut bytes = p.encode();
    bytes[5..8].copy_from_slice(&[0xff, 0xff, 0xff]);
    c.send_raw(&bytes).unwrap();
    // Some bytes of the announced segment, never all of it.
    c.send_raw(&[0u8; 4096]).unwrap();
    let seen = c.expect_closed_within(CLOSE_WITHIN).unwrap();
    assert!(
        seen.iter().all(|p| p.login_status() != 0),
        "16 MiB login PDU answered with success"
    );
    honest.assert_flood_bounds(
        &mut d,
        "16 MiB login segment",
        hostile::SMALL_ATTACK_MEMORY_MIB,
    );
    assert_daemon_healthy(&mut d, "16 MiB login segment");
}

/// Nonsense MaxRecvDataSegmentLength values: refused, or negotiated to something sane (a
/// 64 KiB READ then arrives in segments no longer than what was declared, at least 512).
#[test]
fn absurd_max_recv_data_segment_lengths() {
    let (mut d, honest) = hostile::start_watched(Auth::Open);
    for v in [
        "0",
        "-1",
        "511",
        "16777216",
        "4294967296",
        "abc",
        "0x200",
        "",
    ] {
        let mut c = Conn::connect(d.addr(), ATTACKER).unwrap();
        let r = c
            .login(Some(VICTIM_IQN), None, &[("MaxRecvDataSegmentLength", v)])
            .unwrap_or_else(|e| panic!("MaxRecvDataSegmentLength={v:?}: {e:#}"));
        if r.login_status() != 0 {
            assert_login_refused(&mut c, Some(r), &format!("MaxRecvDataSegmentLength={v:?}"));
            continue;
        }
        // Accepted: the target must still send Data-In PDUs we can take.
        c.ready(0).unwrap();
        let declared: u64 = if v == "0x200" {
            512
        } else {
            v.parse().unwrap_or(262144)
        };
        let cmd = c.scsi_pdu(0, &lunar_e2e::raw::cdb10(0x28, 0, 128), 65536, 0);
        let itt = cmd.itt();
        c.send(&cmd).unwrap();
        let mut got = 0usize;
        loop {
            let p = c
                .recv()
                .unwrap_or_else(|e| panic!("MaxRecvDataSegmentLength={v:?}: {e:#}"));
            assert_eq!(p.itt(), itt, "{}", p.describe());
            if p.opcode() == op::DATA_IN {
                assert!(
                    p.data.len() as u64 <= declared.clamp(512, 16_777_215),
                    "MaxRecvDataSegmentLength={v:?}: Data-In of {} bytes",
                    p.data.len()
                );
                got += p.data.len();
                if p.bhs[1] & 0x01 != 0 {
                    break;
                }
            } else {
                assert_eq!(p.opcode(), op::SCSI_RESP, "{}", p.describe());
                break;
            }
        }
        assert_eq!(got, 65536, "MaxRecvDataSegmentLength={v:?}: READ data");
    }
    honest.assert_flood_bounds(
        &mut d,
        "MaxRecvDataSegmentLength games",
        hostile::SMALL_ATTACK_MEMORY_MIB,
    );
    assert_daemon_healthy(&mut d, "MaxRecvDataSegmentLength games");
}

/// Control characters in names the initiator chooses (InitiatorName, TargetName,
/// InitiatorAlias, CHAP_N) must not reach lunard's log raw: a newline would let an
/// initiator forge log lines (a fake "login complete", a fake readiness line).
#[test]
fn control_characters_in_names_cannot_forge_log_lines() {
    let (mut d, honest) = hostile::start_watched(Auth::Chap);
    const FORGED: &str = "FORGED-LINE lunard ready: listening on 203.0.113.9:3260";
    let evil = format!("iqn.2026-11.io.lunar.test:x\n{FORGED}\r\n{FORGED}\u{1b}[2J");
    let attempts: Vec<Vec<(&str, &str)>> = vec![
        vec![("InitiatorName", evil.as_str()), ("TargetName", VICTIM_IQN)],
        vec![("InitiatorName", ATTACKER), ("TargetName", evil.as_str())],
        vec![
            ("InitiatorName", ATTACKER),
            ("SessionType", "Discovery"),
            ("InitiatorAlias", evil.as_str()),
        ],
        vec![
            ("InitiatorName", evil.as_str()),
            ("SessionType", "Discovery"),
        ],
    ];
    for keys in &attempts {
        let mut c = Conn::connect(d.addr(), ATTACKER).unwrap();
        let _ = c.login_step(true, stage::OPERATIONAL, stage::FULL_FEATURE, keys);
        // A discovery session that got in: log out so its end is logged too.
        let _ = c.logout();
    }
    // CHAP_N with control characters.
    let mut c = Conn::connect(d.addr(), ATTACKER).unwrap();
    let _ = c.login_step(
        false,
        stage::SECURITY,
        stage::OPERATIONAL,
        &[
            ("InitiatorName", ATTACKER),
            ("TargetName", VICTIM_IQN),
            ("AuthMethod", "CHAP"),
        ],
    );
    let _ = c.login_step(
        false,
        stage::SECURITY,
        stage::OPERATIONAL,
        &[("CHAP_A", "5")],
    );
    let _ = c.login_step(
        true,
        stage::SECURITY,
        stage::OPERATIONAL,
        &[
            ("CHAP_N", evil.as_str()),
            ("CHAP_R", "0x00112233445566778899aabbccddeeff"),
        ],
    );
    drop(c);
    std::thread::sleep(std::time::Duration::from_millis(300));
    d.check_alive().unwrap();
    let log = d.log();
    let forged: Vec<&str> = log
        .lines()
        .filter(|l| l.starts_with("FORGED-LINE") || l.contains('\u{1b}'))
        .collect();
    assert!(
        forged.is_empty(),
        "initiator-chosen text reached the log raw, forging {} line(s):\n{}",
        forged.len(),
        forged.join("\n")
    );
    honest.assert_flood_bounds(
        &mut d,
        "control characters in names",
        hostile::SMALL_ATTACK_MEMORY_MIB,
    );
    assert_daemon_healthy(&mut d, "control characters in names");
}
