//! Arbitrary byte streams decoded as PDUs and fed to a login state machine: it must never
//! panic, must answer every PDU with a Login Response until the login ends, and a join
//! (TSIH ≠ 0) completes only into the session whose identity it matches.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use scsi_proto::iscsi::chap::{ChapConfig, ChapCredential};
use scsi_proto::iscsi::login::{
    ExistingSession, LoginConnection, LoginPolicy, LoginStep, TargetInfo,
};
use scsi_proto::iscsi::negotiate::{SessionType, TargetSettings};
use scsi_proto::iscsi::pdu::{decode, Bhs, CodecConfig};

struct Policy;

impl LoginPolicy for Policy {
    fn target(&self, name: &str) -> Option<TargetInfo> {
        name.starts_with("iqn.").then(|| TargetInfo {
            alias: None,
            chap: name.ends_with("chap").then(|| ChapConfig {
                initiator: ChapCredential {
                    username: "user".into(),
                    secret: b"0123456789ab".to_vec(),
                },
                mutual: None,
            }),
        })
    }
    fn initiator_allowed(&self, _: &str, initiator: &str) -> bool {
        !initiator.ends_with("denied")
    }
    fn discovery_chap(&self) -> Option<ChapConfig> {
        None
    }
    fn allocate_tsih(&self) -> Option<u16> {
        Some(1)
    }
    fn session(&self, tsih: u16, cid: u16) -> Option<ExistingSession> {
        // TSIH 1: a normal session to a CHAP target; TSIH 2: a discovery session.
        let normal = tsih == 1;
        (tsih == 1 || tsih == 2).then(|| ExistingSession {
            session_type: if normal {
                SessionType::Normal
            } else {
                SessionType::Discovery
            },
            initiator_name: "iqn.x".into(),
            isid: 0,
            target_name: normal.then(|| "iqn.chap".into()),
            has_cid: cid == 0,
            connections: 1,
            max_connections: 2,
        })
    }
}

fuzz_target!(|data: &[u8]| {
    let mut buf = BytesMut::from(data);
    let mut login = LoginConnection::new(TargetSettings::default(), 1, 0);
    let cfg = CodecConfig::default();
    let mut ended = false;
    while let Ok(Some(pdu)) = decode(&mut buf, &cfg) {
        let step = login.handle(&pdu, &Policy);
        let response = match &step {
            LoginStep::Respond(p) => p,
            LoginStep::Complete { response, .. } | LoginStep::Fail { response, .. } => response,
        };
        assert!(matches!(response.bhs, Bhs::LoginResponse(_)));
        // A join completes only into a session of the type, target and initiator it names.
        if let LoginStep::Complete { outcome, .. } = &step {
            if !outcome.leading {
                let normal = outcome.session_type == SessionType::Normal;
                assert_eq!(outcome.tsih, if normal { 1 } else { 2 });
                assert!(outcome.initiator_name.eq_ignore_ascii_case("iqn.x"));
                if normal {
                    let t = outcome.target_name.as_deref().unwrap_or("");
                    assert!(t.eq_ignore_ascii_case("iqn.chap"));
                }
            }
        }
        if ended {
            assert!(matches!(step, LoginStep::Fail { .. }));
        }
        ended |= !matches!(step, LoginStep::Respond(_));
    }
});
