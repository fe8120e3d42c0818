//! Login conversations as open-iscsi and the Microsoft initiator run them, plus failures and
//! hostile input.

use std::cell::Cell;

use super::*;
use crate::iscsi::chap::{chap_response, decode_binary, encode_hex, ChapCredential};
use crate::iscsi::pdu::{LoginResponse, RESERVED_TAG};

const TARGET: &str = "iqn.2026-01.io.lunar:vol1";
const INITIATOR: &str = "iqn.2004-10.com.ubuntu:01:deadbeef";
const ISID: u64 = 0x0002_3d00_0001;
/// A second target and initiator, admitted like the first (to tell join rules from ACLs).
const TARGET2: &str = "iqn.2026-01.io.lunar:vol2";
const INITIATOR2: &str = "iqn.2004-10.com.ubuntu:01:other";

struct Policy {
    chap: Option<ChapConfig>,
    discovery_chap: Option<ChapConfig>,
    allowed: bool,
    next_tsih: Cell<u16>,
    /// The live session a non-leading login finds (any TSIH); `None`: no session.
    session: Option<ExistingSession>,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            chap: None,
            discovery_chap: None,
            allowed: true,
            next_tsih: Cell::new(0x100),
            session: None,
        }
    }
}

impl LoginPolicy for Policy {
    fn target(&self, name: &str) -> Option<TargetInfo> {
        (name == TARGET || name == TARGET2).then(|| TargetInfo {
            alias: Some("vol one".into()),
            chap: self.chap.clone(),
        })
    }
    fn initiator_allowed(&self, _target: &str, initiator: &str) -> bool {
        self.allowed && (initiator == INITIATOR || initiator == INITIATOR2)
    }
    fn discovery_chap(&self) -> Option<ChapConfig> {
        self.discovery_chap.clone()
    }
    fn allocate_tsih(&self) -> Option<u16> {
        let t = self.next_tsih.get();
        self.next_tsih.set(t + 1);
        Some(t)
    }
    fn session(&self, _: u16, _: u16) -> Option<ExistingSession> {
        self.session.clone()
    }
}

/// The normal session `INITIATOR` opened to `TARGET` with `ISID`, with one connection (CID 0).
fn victim_session() -> ExistingSession {
    ExistingSession {
        session_type: SessionType::Normal,
        initiator_name: INITIATOR.into(),
        isid: ISID,
        target_name: Some(TARGET.into()),
        has_cid: false,
        connections: 1,
        max_connections: 2,
    }
}

/// A Login Request as an initiator would send it.
fn req(csg: LoginStage, nsg: LoginStage, transit: bool, cont: bool, text: &str) -> Pdu {
    req_with(csg, nsg, transit, cont, text, |_| {})
}

fn req_with(
    csg: LoginStage,
    nsg: LoginStage,
    transit: bool,
    cont: bool,
    text: &str,
    tweak: impl FnOnce(&mut LoginRequest),
) -> Pdu {
    let mut h = LoginRequest {
        transit,
        continue_bit: cont,
        csg,
        nsg,
        version_max: 0,
        version_min: 0,
        isid: ISID,
        tsih: 0,
        itt: 0x11,
        cid: 0,
        cmd_sn: 0x1000,
        exp_stat_sn: 0,
    };
    tweak(&mut h);
    Pdu::new(h, Bytes::from(text.replace('|', "\0").into_bytes()))
}

use LoginStage::{FullFeature as F, Operational as O, Security as S};

fn respond(step: LoginStep) -> (LoginResponse, Vec<(String, String)>) {
    match step {
        LoginStep::Respond(p) => split(p),
        other => panic!("expected Respond, got {other:?}"),
    }
}

fn split(p: Pdu) -> (LoginResponse, Vec<(String, String)>) {
    let Bhs::LoginResponse(h) = p.bhs else {
        panic!("not a login response")
    };
    let kv = text::parse(&p.data)
        .expect("our text parses")
        .into_iter()
        .map(|k| (k.key, k.value))
        .collect();
    (h, kv)
}

fn get<'a>(a: &'a [(String, String)], key: &str) -> Option<&'a str> {
    a.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

fn complete(step: LoginStep) -> (LoginResponse, Vec<(String, String)>, LoginOutcome) {
    match step {
        LoginStep::Complete { response, outcome } => {
            let (h, kv) = split(response);
            (h, kv, outcome)
        }
        other => panic!("expected Complete, got {other:?}"),
    }
}

fn failed(step: LoginStep) -> (LoginStatus, LoginResponse) {
    match step {
        LoginStep::Fail { response, failure } => {
            let (h, _) = split(response);
            assert_eq!(
                (h.status_class, h.status_detail),
                (failure.status.class(), failure.status.detail())
            );
            (failure.status, h)
        }
        other => panic!("expected Fail, got {other:?}"),
    }
}

fn conn() -> LoginConnection {
    LoginConnection::new(TargetSettings::default(), 1, 500)
}

const OPEN_ISCSI_SEC: &str =
    "InitiatorName=iqn.2004-10.com.ubuntu:01:deadbeef|InitiatorAlias=client|\
TargetName=iqn.2026-01.io.lunar:vol1|SessionType=Normal|AuthMethod=None|";
const OPEN_ISCSI_OP: &str = "HeaderDigest=None|DataDigest=None|MaxRecvDataSegmentLength=262144|\
MaxBurstLength=16776192|FirstBurstLength=262144|DefaultTime2Wait=2|DefaultTime2Retain=0|\
IFMarker=No|OFMarker=No|ErrorRecoveryLevel=0|InitialR2T=No|ImmediateData=Yes|\
MaxOutstandingR2T=1|DataPDUInOrder=Yes|DataSequenceInOrder=Yes|MaxConnections=1|";

#[test]
fn open_iscsi_login_without_auth() {
    let policy = Policy::default();
    let mut c = conn();
    let (h, kv) = respond(c.handle(&req(S, O, true, false, OPEN_ISCSI_SEC), &policy));
    assert!(h.transit && !h.continue_bit);
    assert_eq!((h.csg, h.nsg), (S, O));
    assert_eq!((h.status_class, h.status_detail), (0, 0));
    assert_eq!((h.isid, h.tsih, h.itt), (ISID, 0, 0x11));
    assert_eq!(
        (h.stat_sn, h.exp_cmd_sn, h.max_cmd_sn),
        (500, 0x1000, 0x1000)
    );
    assert_eq!(get(&kv, "AuthMethod"), Some("None"));
    assert_eq!(get(&kv, "TargetPortalGroupTag"), Some("1"));
    assert_eq!(get(&kv, "TargetAlias"), Some("vol one"));

    let (h, kv, out) = complete(c.handle(&req(O, F, true, false, OPEN_ISCSI_OP), &policy));
    assert!(h.transit);
    assert_eq!((h.csg, h.nsg), (O, F));
    assert_eq!(h.tsih, 0x100);
    assert_eq!(h.stat_sn, 501);
    assert_eq!(h.max_cmd_sn, 0x1000 + 63);
    assert_eq!(get(&kv, "MaxRecvDataSegmentLength"), Some("262144"));
    assert_eq!(get(&kv, "MaxBurstLength"), Some("1048576"));
    assert_eq!(out.initiator_name, INITIATOR);
    assert_eq!(out.initiator_alias.as_deref(), Some("client"));
    assert_eq!(out.target_name.as_deref(), Some(TARGET));
    assert_eq!(out.session_type, SessionType::Normal);
    assert_eq!(
        (out.isid, out.tsih, out.cid, out.cmd_sn, out.stat_sn),
        (ISID, 0x100, 0, 0x1000, 502)
    );
    assert!(out.leading);
    assert_eq!(out.params.max_send_data_segment_length, 262_144);
    assert!(!out.params.initial_r2t && out.params.immediate_data);

    // Anything after completion is refused.
    let (status, _) = failed(c.handle(&req(O, F, true, false, ""), &policy));
    assert_eq!(status, LoginStatus::InitiatorError);
}

#[test]
fn microsoft_login_without_auth() {
    let policy = Policy::default();
    let mut c = conn();
    let first = "InitiatorName=iqn.2004-10.com.ubuntu:01:deadbeef|SessionType=Normal|\
TargetName=iqn.2026-01.io.lunar:vol1|AuthMethod=None|";
    let (h, _) = respond(c.handle(&req(S, O, true, false, first), &policy));
    assert!(h.transit);
    let ms_op = "HeaderDigest=None,CRC32C|DataDigest=None|ErrorRecoveryLevel=0|InitialR2T=Yes|\
ImmediateData=Yes|MaxBurstLength=262144|FirstBurstLength=65536|MaxOutstandingR2T=1|\
MaxConnections=1|DataPDUInOrder=Yes|DataSequenceInOrder=Yes|DefaultTime2Wait=2|\
DefaultTime2Retain=20|MaxRecvDataSegmentLength=65536|IFMarker=No|OFMarker=No|";
    // Microsoft sends the operational stage with T=0 first, then an empty T=1 request.
    let (h, kv) = respond(c.handle(&req(O, F, false, false, ms_op), &policy));
    assert!(!h.transit);
    assert_eq!(get(&kv, "HeaderDigest"), Some("None"));
    assert_eq!(get(&kv, "InitialR2T"), Some("Yes"));
    let (_, kv, out) = complete(c.handle(&req(O, F, true, false, ""), &policy));
    assert!(
        kv.is_empty(),
        "MaxRecvDataSegmentLength declared once: {kv:?}"
    );
    assert!(out.params.initial_r2t);
    assert_eq!(out.params.first_burst_length, 65_536);
    assert_eq!(out.params.codec().max_send_data_segment_length, 65_536);
}

#[test]
fn discovery_session() {
    let policy = Policy::default();
    let mut c = conn();
    let (h, kv) = respond(c.handle(
        &req(
            S,
            O,
            true,
            false,
            "InitiatorName=iqn.x:any|SessionType=Discovery|AuthMethod=None|",
        ),
        &policy,
    ));
    assert!(h.transit);
    assert_eq!(get(&kv, "TargetPortalGroupTag"), None);
    let (_, kv, out) = complete(c.handle(
        &req(O, F, true, false, "HeaderDigest=None|DataDigest=None|MaxRecvDataSegmentLength=32768|DefaultTime2Wait=2|DefaultTime2Retain=0|IFMarker=No|OFMarker=No|ErrorRecoveryLevel=0|"),
        &policy,
    ));
    assert_eq!(get(&kv, "IFMarker"), Some("No"));
    assert_eq!(out.session_type, SessionType::Discovery);
    assert_eq!(out.target_name, None);
    assert_eq!(out.params.max_send_data_segment_length, 32_768);
}

fn chap_policy(mutual: bool) -> Policy {
    Policy {
        chap: Some(ChapConfig {
            initiator: ChapCredential {
                username: "alice".into(),
                secret: b"initiator-secret-1".to_vec(),
            },
            mutual: mutual.then(|| ChapCredential {
                username: TARGET.into(),
                secret: b"target-secret-222".to_vec(),
            }),
        }),
        ..Policy::default()
    }
}

/// Runs AuthMethod and CHAP_A; returns the target's (CHAP_I, CHAP_C).
fn chap_start(c: &mut LoginConnection, policy: &Policy) -> (u8, Vec<u8>) {
    let first = OPEN_ISCSI_SEC.replace("AuthMethod=None", "AuthMethod=CHAP,None");
    let (h, kv) = respond(c.handle(&req(S, O, true, false, &first), policy));
    assert!(
        !h.transit,
        "target holds the security stage while CHAP runs"
    );
    assert_eq!(get(&kv, "AuthMethod"), Some("CHAP"));
    let (h, kv) = respond(c.handle(&req(S, O, true, false, "CHAP_A=5|"), policy));
    assert!(!h.transit);
    let id = get(&kv, "CHAP_I")
        .and_then(|v| v.parse().ok())
        .expect("CHAP_I");
    let chal = get(&kv, "CHAP_C")
        .and_then(|v| decode_binary(v, 1024))
        .expect("CHAP_C");
    assert!(chal.len() >= 16);
    (id, chal)
}

#[test]
fn chap_one_way_accepted() {
    let policy = chap_policy(false);
    let mut c = conn();
    let (id, chal) = chap_start(&mut c, &policy);
    let r = encode_hex(&chap_response(id, b"initiator-secret-1", &chal));
    let (h, kv) = respond(c.handle(
        &req(S, O, true, false, &format!("CHAP_N=alice|CHAP_R={r}|")),
        &policy,
    ));
    assert!(h.transit);
    assert_eq!((h.csg, h.nsg), (S, O));
    assert!(kv.is_empty());
    let (_, _, out) = complete(c.handle(&req(O, F, true, false, OPEN_ISCSI_OP), &policy));
    assert_eq!(out.tsih, 0x100);
}

#[test]
fn chap_wrong_secret_rejected() {
    let policy = chap_policy(false);
    let mut c = conn();
    let (id, chal) = chap_start(&mut c, &policy);
    let r = encode_hex(&chap_response(id, b"not-the-secret", &chal));
    let (status, h) = failed(c.handle(
        &req(S, O, true, false, &format!("CHAP_N=alice|CHAP_R={r}|")),
        &policy,
    ));
    assert_eq!(status, LoginStatus::AuthenticationFailure);
    assert_eq!((h.status_class, h.status_detail), (2, 1));
}

#[test]
fn chap_mutual_accepted_and_missing_mutual_rejected() {
    let policy = chap_policy(true);
    let mut c = conn();
    let (id, chal) = chap_start(&mut c, &policy);
    let r = encode_hex(&chap_response(id, b"initiator-secret-1", &chal));
    let mine = [0x3cu8; 16];
    let text = format!(
        "CHAP_N=alice|CHAP_R={r}|CHAP_I=200|CHAP_C={}|",
        encode_hex(&mine)
    );
    let (h, kv) = respond(c.handle(&req(S, O, true, false, &text), &policy));
    assert!(h.transit);
    assert_eq!(get(&kv, "CHAP_N"), Some(TARGET));
    let expect = chap_response(200, b"target-secret-222", &mine);
    assert_eq!(
        get(&kv, "CHAP_R")
            .and_then(|v| decode_binary(v, 16))
            .as_deref(),
        Some(&expect[..])
    );

    let mut c = conn();
    let (id, chal) = chap_start(&mut c, &policy);
    let r = encode_hex(&chap_response(id, b"initiator-secret-1", &chal));
    let (status, _) = failed(c.handle(
        &req(S, O, true, false, &format!("CHAP_N=alice|CHAP_R={r}|")),
        &policy,
    ));
    assert_eq!(status, LoginStatus::AuthenticationFailure);
}

#[test]
fn chap_required_cannot_be_skipped() {
    let policy = chap_policy(false);
    // Offering only None.
    let (status, _) = failed(conn().handle(&req(S, O, true, false, OPEN_ISCSI_SEC), &policy));
    assert_eq!(status, LoginStatus::AuthenticationFailure);
    // Starting in the operational stage.
    let text = OPEN_ISCSI_SEC.replace("AuthMethod=None|", "");
    let (status, _) = failed(conn().handle(&req(O, F, true, false, &text), &policy));
    assert_eq!(status, LoginStatus::AuthenticationFailure);
    // Transit without ever negotiating AuthMethod.
    let (status, _) = failed(conn().handle(&req(S, O, true, false, &text), &policy));
    assert_eq!(status, LoginStatus::AuthenticationFailure);
}

#[test]
fn weak_chap_config_is_a_target_error() {
    let mut policy = chap_policy(false);
    if let Some(c) = policy.chap.as_mut() {
        c.initiator.secret = b"short".to_vec();
    }
    let first = OPEN_ISCSI_SEC.replace("AuthMethod=None", "AuthMethod=CHAP");
    let (status, h) = failed(conn().handle(&req(S, O, true, false, &first), &policy));
    assert_eq!(status, LoginStatus::TargetError);
    assert_eq!(h.status_class, 3);
}

#[test]
fn operational_first_and_security_to_full_feature() {
    let policy = Policy::default();
    // Skip security entirely.
    let text = format!(
        "{}{}",
        OPEN_ISCSI_SEC.replace("AuthMethod=None|", ""),
        OPEN_ISCSI_OP
    );
    let (_, kv, out) = complete(conn().handle(&req(O, F, true, false, &text), &policy));
    assert_eq!(get(&kv, "TargetPortalGroupTag"), Some("1"));
    assert_eq!(out.params.max_recv_data_segment_length, 262_144);
    // Security straight to full feature: defaults stand, nothing declared.
    let (h, _, out) = complete(conn().handle(&req(S, F, true, false, OPEN_ISCSI_SEC), &policy));
    assert_eq!((h.csg, h.nsg), (S, F));
    assert_eq!(out.params, SessionParams::default());
}

#[test]
fn identity_failures() {
    let policy = Policy::default();
    let cases: Vec<(&str, LoginStatus)> = vec![
        (
            "TargetName=iqn.2026-01.io.lunar:vol1|SessionType=Normal|",
            LoginStatus::MissingParameter,
        ),
        (
            "InitiatorName=iqn.2004-10.com.ubuntu:01:deadbeef|SessionType=Normal|",
            LoginStatus::MissingParameter,
        ),
        (
            "InitiatorName=iqn.2004-10.com.ubuntu:01:deadbeef|TargetName=iqn.nope:x|",
            LoginStatus::NotFound,
        ),
        (
            "InitiatorName=iqn.other:1|TargetName=iqn.2026-01.io.lunar:vol1|",
            LoginStatus::AuthorizationFailure,
        ),
        (
            "InitiatorName=iqn.2004-10.com.ubuntu:01:deadbeef|SessionType=Bogus|",
            LoginStatus::SessionTypeNotSupported,
        ),
    ];
    for (text, want) in cases {
        let (status, _) = failed(conn().handle(&req(S, O, true, false, text), &policy));
        assert_eq!(status, want, "{text}");
    }
    let (status, h) = failed(conn().handle(
        &req_with(S, O, true, false, OPEN_ISCSI_SEC, |r| r.version_min = 2),
        &policy,
    ));
    assert_eq!(status, LoginStatus::UnsupportedVersion);
    assert_eq!((h.status_class, h.status_detail), (2, 5));
}

#[test]
fn joining_sessions() {
    let full = ExistingSession {
        max_connections: 1,
        ..victim_session()
    };
    let reinstating = ExistingSession {
        has_cid: true,
        ..full.clone()
    };
    for (session, want) in [
        (None, Some(LoginStatus::SessionDoesNotExist)),
        (Some(full), Some(LoginStatus::TooManyConnections)),
        (Some(reinstating), None),
        (Some(victim_session()), None),
    ] {
        let policy = Policy {
            session,
            ..Policy::default()
        };
        let step = conn().handle(
            &req_with(S, F, true, false, OPEN_ISCSI_SEC, |r| {
                r.tsih = 0x77;
                r.cid = 2
            }),
            &policy,
        );
        match want {
            Some(w) => assert_eq!(failed(step).0, w),
            None => {
                let (h, _, out) = complete(step);
                assert_eq!(
                    (h.tsih, out.tsih, out.cid, out.leading),
                    (0x77, 0x77, 2, false)
                );
            }
        }
    }
}

/// The issue-14 bypass: a Discovery-typed non-leading login with the TSIH, ISID and names
/// of a normal session was authenticated against the discovery settings (none) and then
/// joined the normal session. Any identity mismatch must now read as "no such session".
#[test]
fn a_join_must_match_the_sessions_type_target_initiator_and_isid() {
    let policy = Policy {
        chap: chap_policy(false).chap,
        session: Some(victim_session()),
        ..Policy::default()
    };
    let join = |text: &str, isid: u64| {
        conn().handle(
            &req_with(S, F, true, false, text, |r| {
                r.tsih = 0x100;
                r.cid = 1;
                r.isid = isid;
            }),
            &policy,
        )
    };
    let discovery = OPEN_ISCSI_SEC.replace("SessionType=Normal", "SessionType=Discovery");
    let other_target = OPEN_ISCSI_SEC.replace(TARGET, TARGET2);
    let other_initiator = OPEN_ISCSI_SEC.replace(INITIATOR, INITIATOR2);
    for (text, isid) in [
        (discovery.as_str(), ISID),
        (other_target.as_str(), ISID),
        (other_initiator.as_str(), ISID),
        (OPEN_ISCSI_SEC, ISID + 1),
    ] {
        let (status, h) = failed(join(text, isid));
        assert_eq!(
            status,
            LoginStatus::SessionDoesNotExist,
            "{text} isid {isid:x}"
        );
        assert_eq!((h.status_class, h.status_detail), (2, 0x0a));
    }
    // The right identity still has to pass the target's CHAP, like the leading login did.
    let (status, _) = failed(join(OPEN_ISCSI_SEC, ISID));
    assert_eq!(status, LoginStatus::AuthenticationFailure);
}

/// A discovery session can still take a connection of its own type.
#[test]
fn a_discovery_session_is_joined_only_as_discovery() {
    let policy = Policy {
        session: Some(ExistingSession {
            session_type: SessionType::Discovery,
            target_name: None,
            ..victim_session()
        }),
        ..Policy::default()
    };
    let text = "InitiatorName=iqn.2004-10.com.ubuntu:01:deadbeef|SessionType=Discovery|\
AuthMethod=None|";
    let (_, _, out) = complete(conn().handle(
        &req_with(S, F, true, false, text, |r| r.tsih = 0x100),
        &policy,
    ));
    assert_eq!(
        (out.session_type, out.leading),
        (SessionType::Discovery, false)
    );
    // The same session named by a normal login is not found.
    let (status, _) = failed(conn().handle(
        &req_with(S, F, true, false, OPEN_ISCSI_SEC, |r| r.tsih = 0x100),
        &policy,
    ));
    assert_eq!(status, LoginStatus::SessionDoesNotExist);
}

/// The session is looked up again when the join completes: it may have ended (and its TSIH
/// been reused) while the login was authenticating.
#[test]
fn a_join_is_checked_again_at_completion() {
    let mut policy = Policy {
        session: Some(victim_session()),
        ..Policy::default()
    };
    let mut c = conn();
    let (h, _) = respond(c.handle(
        &req_with(S, O, true, false, OPEN_ISCSI_SEC, |r| r.tsih = 0x100),
        &policy,
    ));
    assert!(h.transit);
    policy.session = Some(ExistingSession {
        initiator_name: "iqn.2004-10.com.ubuntu:01:someone-else".into(),
        ..victim_session()
    });
    let (status, _) = failed(c.handle(
        &req_with(O, F, true, false, OPEN_ISCSI_OP, |r| r.tsih = 0x100),
        &policy,
    ));
    assert_eq!(status, LoginStatus::SessionDoesNotExist);
}

/// Target, ACL, session and authentication are decided from the first Login Request's
/// identity keys; declaring or changing one later would complete a login as something it
/// was not authorized as.
#[test]
fn identity_keys_cannot_be_declared_after_the_first_request() {
    let policy = Policy::default();
    for later in [
        "SessionType=Discovery|",
        "TargetName=iqn.2026-01.io.lunar:vol2|",
        "InitiatorName=iqn.2004-10.com.ubuntu:01:other|",
    ] {
        let mut c = conn();
        let first = OPEN_ISCSI_SEC.replace("SessionType=Normal|", "");
        let (h, _) = respond(c.handle(&req(S, O, true, false, &first), &policy));
        assert!(h.transit);
        let (status, _) = failed(c.handle(&req(O, F, true, false, later), &policy));
        assert_eq!(status, LoginStatus::InitiatorError, "{later}");
    }
    // Repeating the same values (libiscsi does after CHAP), or the default type, is fine.
    let mut c = conn();
    let first = OPEN_ISCSI_SEC.replace("SessionType=Normal|", "");
    respond(c.handle(&req(S, O, true, false, &first), &policy));
    complete(c.handle(
        &req(
            O,
            F,
            true,
            false,
            "SessionType=Normal|TargetName=iqn.2026-01.io.lunar:vol1|",
        ),
        &policy,
    ));
}

#[test]
fn continued_request_text_is_reassembled() {
    let policy = Policy::default();
    let mut c = conn();
    respond(c.handle(&req(S, O, true, false, OPEN_ISCSI_SEC), &policy));
    let bytes = OPEN_ISCSI_OP.as_bytes();
    let (a, rest) = bytes.split_at(100);
    let (b, d) = rest.split_at(150);
    let pieces = [(a, true), (b, true), (d, false)];
    let mut result = None;
    for (i, (piece, cont)) in pieces.iter().enumerate() {
        let text = std::str::from_utf8(piece).expect("ascii");
        let step = c.handle(&req(O, F, !cont, *cont, text), &policy);
        if i < 2 {
            let (h, kv) = respond(step);
            assert!(!h.transit && !h.continue_bit && kv.is_empty());
        } else {
            result = Some(complete(step));
        }
    }
    let (_, kv, _) = result.expect("completed");
    assert_eq!(get(&kv, "MaxBurstLength"), Some("1048576"));
}

#[test]
fn long_response_is_continued() {
    let policy = Policy::default();
    let mut c = conn();
    respond(c.handle(&req(S, O, true, false, OPEN_ISCSI_SEC), &policy));
    // 200 long vendor keys: each answered NotUnderstood, about 15 KiB of answers.
    let text: String = (0..200)
        .map(|i| format!("X-{i:03}{}=1|", "k".repeat(58)))
        .collect();
    let mut all = Vec::new();
    let LoginStep::Respond(p) = c.handle(&req(O, F, true, false, &text), &policy) else {
        panic!("expected a continued response")
    };
    let Bhs::LoginResponse(h) = &p.bhs else {
        panic!("not a login response")
    };
    assert!(h.continue_bit && !h.transit, "C=1 requires T=0");
    assert_eq!(p.data.len(), LOGIN_SEGMENT_LEN);
    all.extend_from_slice(&p.data);
    // Text while the target is still sending is a protocol error; an empty request continues.
    let step = c.handle(&req(O, F, true, false, ""), &policy);
    let LoginStep::Complete { response, outcome } = step else {
        panic!("expected completion, got {step:?}")
    };
    let Bhs::LoginResponse(h) = &response.bhs else {
        panic!("not a login response")
    };
    assert!(h.transit && !h.continue_bit);
    all.extend_from_slice(&response.data);
    let kv = text::parse(&all).expect("reassembled answers parse");
    assert_eq!(
        kv.iter().filter(|k| k.value == "NotUnderstood").count(),
        200
    );
    assert_eq!(outcome.session_type, SessionType::Normal);

    let mut c = conn();
    respond(c.handle(&req(S, O, true, false, OPEN_ISCSI_SEC), &policy));
    let _ = c.handle(&req(O, F, true, false, &text), &policy);
    let (s, _) = failed(c.handle(&req(O, F, true, false, "X-more=1|"), &policy));
    assert_eq!(s, LoginStatus::InitiatorError);
}

#[test]
fn hostile_inputs_fail_cleanly() {
    let policy = Policy::default();

    // Key flood across several PDUs.
    let mut c = conn();
    respond(c.handle(&req(S, O, true, false, OPEN_ISCSI_SEC), &policy));
    let mut status = None;
    for round in 0..10 {
        let text: String = (0..200).map(|i| format!("X-r{round}k{i}=v|")).collect();
        if let LoginStep::Fail { failure, .. } = c.handle(&req(O, F, false, false, &text), &policy)
        {
            status = Some(failure.status);
            break;
        }
    }
    assert_eq!(status, Some(LoginStatus::InitiatorError));

    // Endless continuation.
    let mut c = conn();
    let chunk = "X-a=".to_string() + &"b".repeat(8000);
    let mut status = None;
    for _ in 0..20 {
        if let LoginStep::Fail { failure, .. } = c.handle(&req(S, O, false, true, &chunk), &policy)
        {
            status = Some(failure.status);
            break;
        }
    }
    assert_eq!(status, Some(LoginStatus::InitiatorError));

    // Endless non-transit requests.
    let mut c = conn();
    respond(c.handle(&req(S, O, false, false, OPEN_ISCSI_SEC), &policy));
    let mut n = 0;
    while let LoginStep::Respond(_) = c.handle(&req(S, O, false, false, ""), &policy) {
        n += 1;
        assert!(n <= MAX_LOGIN_PDUS, "must give up");
    }

    // Malformed text, reserved stage, T+C, changing ISID, non-login PDU.
    let (s, _) = failed(conn().handle(&req(S, O, true, false, "NoEquals|"), &policy));
    assert_eq!(s, LoginStatus::InitiatorError);
    let (s, _) = failed(conn().handle(&req(LoginStage::Reserved, F, true, false, ""), &policy));
    assert_eq!(s, LoginStatus::InitiatorError);
    let (s, _) = failed(conn().handle(&req(S, O, true, true, OPEN_ISCSI_SEC), &policy));
    assert_eq!(s, LoginStatus::InitiatorError);
    let mut c = conn();
    respond(c.handle(&req(S, O, false, false, OPEN_ISCSI_SEC), &policy));
    let (s, _) = failed(c.handle(&req_with(S, O, true, false, "", |r| r.isid = 7), &policy));
    assert_eq!(s, LoginStatus::InitiatorError);
    let mut c = conn();
    respond(c.handle(&req(S, O, false, false, OPEN_ISCSI_SEC), &policy));
    let (s, _) = failed(c.handle(&req(O, F, true, false, ""), &policy));
    assert_eq!(s, LoginStatus::InitiatorError, "stage jump without transit");
    let nop = Pdu::header_only(crate::iscsi::pdu::NopOut {
        immediate: true,
        lun: 0,
        itt: 5,
        ttt: RESERVED_TAG,
        cmd_sn: 0,
        exp_stat_sn: 0,
    });
    let (s, h) = failed(conn().handle(&nop, &policy));
    assert_eq!(s, LoginStatus::InvalidDuringLogin);
    assert_eq!(h.itt, 5);
    // Security keys in the operational stage and CHAP keys without AuthMethod.
    let mut c = conn();
    respond(c.handle(&req(S, O, true, false, OPEN_ISCSI_SEC), &policy));
    let (s, _) = failed(c.handle(&req(O, F, true, false, "AuthMethod=None|"), &policy));
    assert_eq!(s, LoginStatus::InitiatorError);
    let (s, _) = failed(conn().handle(
        &req(
            S,
            O,
            true,
            false,
            &format!("{OPEN_ISCSI_SEC}CHAP_A=5|").replace("AuthMethod=None|", ""),
        ),
        &policy,
    ));
    assert_eq!(s, LoginStatus::InitiatorError);
}

/// libiscsi (the iscsi-test-cu driver) without CHAP: one operational-stage PDU carrying the
/// identity and every operational key, T=1 straight to full feature.
const LIBISCSI_IDS: &str = "InitiatorName=iqn.2004-10.com.ubuntu:01:deadbeef|\
InitiatorAlias=libiscsi|TargetName=iqn.2026-01.io.lunar:vol1|SessionType=Normal|";
const LIBISCSI_OP: &str = "HeaderDigest=None,CRC32C|DataDigest=None|InitialR2T=No|\
ImmediateData=Yes|MaxBurstLength=262144|FirstBurstLength=262144|DefaultTime2Wait=2|\
DefaultTime2Retain=0|MaxOutstandingR2T=1|ErrorRecoveryLevel=0|IFMarker=No|OFMarker=No|\
MaxConnections=1|MaxRecvDataSegmentLength=262144|DataPDUInOrder=Yes|DataSequenceInOrder=Yes|";

#[test]
fn libiscsi_login_without_chap() {
    let policy = Policy::default();
    let (h, kv, out) = complete(conn().handle(
        &req(O, F, true, false, &format!("{LIBISCSI_IDS}{LIBISCSI_OP}")),
        &policy,
    ));
    assert_eq!((h.csg, h.nsg, h.status_class), (O, F, 0));
    assert_eq!(get(&kv, "HeaderDigest"), Some("None"));
    assert_eq!(get(&kv, "TargetPortalGroupTag"), Some("1"));
    assert_eq!(out.params.max_burst_length, 262_144);
}

#[test]
fn libiscsi_login_with_mutual_chap() {
    let policy = chap_policy(true);
    let mut c = conn();
    let (h, kv) = respond(c.handle(
        &req(
            S,
            O,
            true,
            false,
            &format!("{LIBISCSI_IDS}AuthMethod=CHAP,None|"),
        ),
        &policy,
    ));
    assert!(!h.transit);
    assert_eq!(get(&kv, "AuthMethod"), Some("CHAP"));
    // libiscsi sends CHAP_A with T=0.
    let (h, kv) = respond(c.handle(&req(S, O, false, false, "CHAP_A=5|"), &policy));
    assert!(!h.transit);
    let id: u8 = get(&kv, "CHAP_I")
        .and_then(|v| v.parse().ok())
        .expect("CHAP_I");
    let chal = get(&kv, "CHAP_C")
        .and_then(|v| decode_binary(v, 1024))
        .expect("CHAP_C");
    // Upper-case hex response, 32-byte initiator challenge, CHAP_I counting from 1.
    let r = encode_hex(&chap_response(id, b"initiator-secret-1", &chal))
        .to_uppercase()
        .replacen("0X", "0x", 1);
    let mine: Vec<u8> = (0u8..32).collect();
    let text = format!(
        "CHAP_N=alice|CHAP_R={r}|CHAP_I=1|CHAP_C={}|",
        encode_hex(&mine).to_uppercase().replacen("0X", "0x", 1)
    );
    let (h, kv) = respond(c.handle(&req(S, O, true, false, &text), &policy));
    assert!(h.transit && h.csg == S && h.nsg == O);
    assert_eq!(get(&kv, "CHAP_N"), Some(TARGET));
    let expect = chap_response(1, b"target-secret-222", &mine);
    assert_eq!(get(&kv, "CHAP_R"), Some(encode_hex(&expect).as_str()));
    // The operational PDU repeats InitiatorName/TargetName/SessionType.
    let (_, _, out) = complete(c.handle(
        &req(O, F, true, false, &format!("{LIBISCSI_IDS}{LIBISCSI_OP}")),
        &policy,
    ));
    assert_eq!(out.initiator_name, INITIATOR);
}

mod fuzz {
    use super::*;
    use proptest::prelude::*;

    fn stage() -> impl Strategy<Value = LoginStage> {
        (0u8..4).prop_map(LoginStage::from_bits)
    }

    /// Text made of plausible keys with random values, or raw random bytes.
    fn text_bytes() -> impl Strategy<Value = Vec<u8>> {
        let keys = prop::sample::select(vec![
            "InitiatorName",
            "TargetName",
            "SessionType",
            "AuthMethod",
            "CHAP_A",
            "CHAP_N",
            "CHAP_R",
            "CHAP_I",
            "CHAP_C",
            "HeaderDigest",
            "MaxBurstLength",
            "FirstBurstLength",
            "MaxRecvDataSegmentLength",
            "InitialR2T",
            "X-foo",
            "Bogus",
        ]);
        let values = prop::sample::select(vec![
            "iqn.2026-01.io.lunar:vol1",
            "iqn.2004-10.com.ubuntu:01:deadbeef",
            "Normal",
            "Discovery",
            "CHAP,None",
            "None",
            "5",
            "0x00",
            "CRC32C",
            "65536",
            "Yes",
            "",
            "0",
        ]);
        prop_oneof![
            prop::collection::vec((keys, values), 0..12).prop_map(|kv| {
                kv.iter()
                    .flat_map(|(k, v)| format!("{k}={v}\0").into_bytes())
                    .collect()
            }),
            prop::collection::vec(any::<u8>(), 0..300),
        ]
    }

    fn request() -> impl Strategy<Value = Pdu> {
        (
            stage(),
            stage(),
            any::<bool>(),
            any::<bool>(),
            0u8..2,
            prop::sample::select(vec![0u16, 0x100]),
            text_bytes(),
        )
            .prop_map(|(csg, nsg, t, c, vmin, tsih, data)| {
                Pdu::new(
                    LoginRequest {
                        transit: t,
                        continue_bit: c,
                        csg,
                        nsg,
                        version_max: 0,
                        version_min: vmin,
                        isid: ISID,
                        tsih,
                        itt: 1,
                        cid: 0,
                        cmd_sn: 9,
                        exp_stat_sn: 0,
                    },
                    Bytes::from(data),
                )
            })
    }

    proptest! {
        /// Random conversations never panic, every answer is a Login Response within the
        /// login segment size, and once the login ends it stays ended.
        #[test]
        fn random_conversations(reqs in prop::collection::vec(request(), 1..12), chap: bool) {
            let policy = if chap { chap_policy(true) } else { Policy { session: Some(victim_session()), ..Policy::default() } };
            let mut c = conn();
            let mut ended = false;
            for r in &reqs {
                let step = c.handle(r, &policy);
                let pdu = match &step {
                    LoginStep::Respond(p) => p,
                    LoginStep::Complete { response, .. } | LoginStep::Fail { response, .. } => response,
                };
                prop_assert!(matches!(pdu.bhs, Bhs::LoginResponse(_)));
                prop_assert!(pdu.data.len() <= LOGIN_SEGMENT_LEN);
                if ended {
                    prop_assert!(matches!(step, LoginStep::Fail { .. }), "login must stay ended");
                }
                if !matches!(step, LoginStep::Respond(_)) {
                    ended = true;
                }
            }
        }
    }
}

#[test]
fn tsih_exhaustion_is_out_of_resources() {
    struct NoTsih(Policy);
    impl LoginPolicy for NoTsih {
        fn target(&self, n: &str) -> Option<TargetInfo> {
            self.0.target(n)
        }
        fn initiator_allowed(&self, t: &str, i: &str) -> bool {
            self.0.initiator_allowed(t, i)
        }
        fn discovery_chap(&self) -> Option<ChapConfig> {
            None
        }
        fn allocate_tsih(&self) -> Option<u16> {
            None
        }
        fn session(&self, _: u16, _: u16) -> Option<ExistingSession> {
            None
        }
    }
    let (status, h) = failed(conn().handle(
        &req(S, F, true, false, OPEN_ISCSI_SEC),
        &NoTsih(Policy::default()),
    ));
    assert_eq!(status, LoginStatus::OutOfResources);
    assert_eq!((h.status_class, h.status_detail), (3, 2));
}

#[test]
fn chap_response_in_base64_is_accepted() {
    let policy = chap_policy(false);
    let mut c = conn();
    let (id, chal) = chap_start(&mut c, &policy);
    let r = chap_response(id, b"initiator-secret-1", &chal);
    // Standard base64 of the 16-byte response.
    const ALPHA: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut b64 = String::from("0b");
    for chunk in r.chunks(3) {
        let mut n = 0u32;
        for (i, &b) in chunk.iter().enumerate() {
            n |= u32::from(b) << (16 - 8 * i);
        }
        for i in 0..4 {
            if i <= chunk.len() {
                b64.push(char::from(ALPHA[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                b64.push('=');
            }
        }
    }
    let (h, _) = respond(c.handle(
        &req(S, O, true, false, &format!("CHAP_N=alice|CHAP_R={b64}|")),
        &policy,
    ));
    assert!(h.transit);
}
