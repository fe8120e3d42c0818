//! Arbitrary byte streams decoded as PDUs and fed to a login state machine: it must never
//! panic and must answer every PDU with a Login Response until the login ends.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use scsi_proto::iscsi::chap::{ChapConfig, ChapCredential};
use scsi_proto::iscsi::login::{JoinDecision, LoginConnection, LoginPolicy, LoginStep, TargetInfo};
use scsi_proto::iscsi::negotiate::TargetSettings;
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
    fn join_session(&self, tsih: u16, _: u64, _: &str, _: Option<&str>, _: u16) -> JoinDecision {
        if tsih == 1 {
            JoinDecision::Allowed
        } else {
            JoinDecision::NoSuchSession
        }
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
        if ended {
            assert!(matches!(step, LoginStep::Fail { .. }));
        }
        ended |= !matches!(step, LoginStep::Respond(_));
    }
});
