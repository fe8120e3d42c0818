//! Negotiation against the key sets real initiators send.

use super::*;
use crate::iscsi::text::{self, TextWriter};

fn kv(text: &str) -> Vec<KeyValue> {
    let bytes: Vec<u8> = text.replace('|', "\0").into_bytes();
    text::parse(&bytes).expect("test text parses")
}

fn answers(out: TextWriter) -> Vec<(String, String)> {
    text::parse(&out.finish())
        .expect("answers parse")
        .into_iter()
        .map(|k| (k.key, k.value))
        .collect()
}

fn get<'a>(a: &'a [(String, String)], key: &str) -> Option<&'a str> {
    a.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

/// open-iscsi (iscsid defaults) operational stage of a normal session.
const OPEN_ISCSI_OP: &str = "HeaderDigest=None|DataDigest=None|MaxRecvDataSegmentLength=262144|\
MaxBurstLength=16776192|FirstBurstLength=262144|DefaultTime2Wait=2|DefaultTime2Retain=0|\
IFMarker=No|OFMarker=No|ErrorRecoveryLevel=0|InitialR2T=No|ImmediateData=Yes|\
MaxOutstandingR2T=1|DataPDUInOrder=Yes|DataSequenceInOrder=Yes|MaxConnections=1|";

/// Microsoft iSCSI initiator operational stage.
const MS_OP: &str = "HeaderDigest=None|DataDigest=None|ErrorRecoveryLevel=0|InitialR2T=Yes|\
ImmediateData=Yes|MaxBurstLength=262144|FirstBurstLength=65536|MaxOutstandingR2T=1|\
MaxConnections=1|DataPDUInOrder=Yes|DataSequenceInOrder=Yes|DefaultTime2Wait=2|\
DefaultTime2Retain=20|MaxRecvDataSegmentLength=65536|IFMarker=No|OFMarker=No|";

#[test]
fn open_iscsi_normal_session() {
    let mut n = Negotiator::new(TargetSettings::default(), true);
    let mut out = TextWriter::new();
    n.respond(
        &kv("InitiatorName=iqn.2004-10.com.ubuntu:01:abc|InitiatorAlias=host|TargetName=iqn.2026-01.io.lunar:t1|SessionType=Normal|"),
        false,
        &mut out,
    )
    .expect("security stage ok");
    assert!(out.is_empty(), "declarative keys get no answer");
    assert_eq!(
        n.declared().initiator_name.as_deref(),
        Some("iqn.2004-10.com.ubuntu:01:abc")
    );
    assert_eq!(
        n.declared().target_name.as_deref(),
        Some("iqn.2026-01.io.lunar:t1")
    );

    let mut out = TextWriter::new();
    n.respond(&kv(OPEN_ISCSI_OP), true, &mut out)
        .expect("op ok");
    let a = answers(out);
    assert_eq!(get(&a, "HeaderDigest"), Some("None"));
    assert_eq!(get(&a, "MaxBurstLength"), Some("1048576"));
    assert_eq!(get(&a, "FirstBurstLength"), Some("262144"));
    assert_eq!(get(&a, "DefaultTime2Retain"), Some("0"));
    assert_eq!(get(&a, "DefaultTime2Wait"), Some("2"));
    assert_eq!(get(&a, "InitialR2T"), Some("No"));
    assert_eq!(get(&a, "ImmediateData"), Some("Yes"));
    assert_eq!(get(&a, "IFMarker"), Some("No"));
    assert_eq!(get(&a, "ErrorRecoveryLevel"), Some("0"));
    assert_eq!(get(&a, "MaxConnections"), Some("1"));
    assert_eq!(
        get(&a, "MaxRecvDataSegmentLength"),
        Some("262144"),
        "our declaration"
    );
    let p = n.params();
    assert_eq!(p.max_send_data_segment_length, 262_144);
    assert_eq!(p.max_recv_data_segment_length, 262_144);
    assert_eq!(
        (p.max_burst_length, p.first_burst_length),
        (1_048_576, 262_144)
    );
    assert!(!p.initial_r2t && p.immediate_data && !p.header_digest);
    assert_eq!(p.codec().max_recv_data_segment_length, 262_144);
}

#[test]
fn microsoft_normal_session() {
    let mut n = Negotiator::new(TargetSettings::default(), true);
    let mut out = TextWriter::new();
    n.respond(
        &kv("InitiatorName=iqn.1991-05.com.microsoft:win|SessionType=Normal|TargetName=iqn.x:t|"),
        false,
        &mut out,
    )
    .expect("ok");
    let mut out = TextWriter::new();
    n.respond(&kv(MS_OP), true, &mut out).expect("ok");
    let a = answers(out);
    assert_eq!(
        get(&a, "InitialR2T"),
        Some("Yes"),
        "OR with initiator's Yes"
    );
    assert_eq!(get(&a, "MaxBurstLength"), Some("262144"));
    assert_eq!(get(&a, "FirstBurstLength"), Some("65536"));
    assert_eq!(get(&a, "DefaultTime2Retain"), Some("20"));
    let p = n.params();
    assert_eq!(p.max_send_data_segment_length, 65_536);
    assert!(p.initial_r2t);
}

#[test]
fn discovery_session_marks_session_keys_irrelevant() {
    let mut n = Negotiator::new(TargetSettings::default(), true);
    let mut out = TextWriter::new();
    n.respond(
        &kv("InitiatorName=iqn.a:b|SessionType=Discovery|"),
        false,
        &mut out,
    )
    .expect("ok");
    let mut out = TextWriter::new();
    n.respond(
        &kv("HeaderDigest=CRC32C,None|DataDigest=None|MaxRecvDataSegmentLength=32768|MaxBurstLength=4096|InitialR2T=Yes|"),
        true,
        &mut out,
    )
    .expect("ok");
    let a = answers(out);
    assert_eq!(
        get(&a, "HeaderDigest"),
        Some("CRC32C"),
        "initiator's first preference"
    );
    assert_eq!(get(&a, "MaxBurstLength"), Some("Irrelevant"));
    assert_eq!(get(&a, "InitialR2T"), Some("Irrelevant"));
    let p = n.params();
    assert_eq!(p.session_type, SessionType::Discovery);
    assert!(p.header_digest && !p.data_digest);
    assert_eq!(p.max_burst_length, 262_144, "default kept");
}

#[test]
fn invalid_values_are_rejected_and_defaults_kept() {
    let mut n = Negotiator::new(TargetSettings::default(), true);
    let mut out = TextWriter::new();
    n.respond(
        &kv("MaxBurstLength=100|ImmediateData=Maybe|MaxOutstandingR2T=0|DefaultTime2Wait=3601|HeaderDigest=MD5|X-com.example.foo=1|FooBar=2|OFMarkInt=2048~2048|"),
        true,
        &mut out,
    )
    .expect("rejects are answers, not failures");
    let a = answers(out);
    assert_eq!(get(&a, "MaxBurstLength"), Some("Reject"));
    assert_eq!(get(&a, "ImmediateData"), Some("Reject"));
    assert_eq!(get(&a, "MaxOutstandingR2T"), Some("Reject"));
    assert_eq!(get(&a, "DefaultTime2Wait"), Some("Reject"));
    assert_eq!(get(&a, "HeaderDigest"), Some("Reject"));
    assert_eq!(get(&a, "X-com.example.foo"), Some("NotUnderstood"));
    assert_eq!(get(&a, "FooBar"), Some("NotUnderstood"));
    assert_eq!(get(&a, "OFMarkInt"), Some("Irrelevant"));
    let p = n.params();
    assert_eq!(p.max_burst_length, 262_144);
    assert!(p.immediate_data);
    assert_eq!(p.max_outstanding_r2t, 1);
}

#[test]
fn first_burst_clamped_to_max_burst_in_any_order() {
    let mut n = Negotiator::new(TargetSettings::default(), true);
    let mut out = TextWriter::new();
    n.respond(
        &kv("FirstBurstLength=262144|MaxBurstLength=131072|"),
        true,
        &mut out,
    )
    .expect("ok");
    let a = answers(out);
    assert_eq!(
        a.iter().filter(|(k, _)| k == "FirstBurstLength").count(),
        1,
        "answered once"
    );
    assert_eq!(get(&a, "FirstBurstLength"), Some("131072"));
    let p = n.params();
    assert_eq!(
        (p.max_burst_length, p.first_burst_length),
        (131_072, 131_072)
    );
}

#[test]
fn duplicates_and_floods_fail_the_login() {
    let mut n = Negotiator::new(TargetSettings::default(), true);
    let mut out = TextWriter::new();
    n.respond(&kv("MaxBurstLength=65536|"), true, &mut out)
        .expect("ok");
    let err = n
        .respond(&kv("MaxBurstLength=65536|"), true, &mut TextWriter::new())
        .expect_err("duplicate");
    assert_eq!(err.status, LoginStatus::InitiatorError);

    let mut n = Negotiator::new(TargetSettings::default(), true);
    let mut failed = None;
    for chunk in 0..10 {
        let text: String = (0..100).map(|i| format!("X-k{chunk}-{i}=v|")).collect();
        if let Err(e) = n.respond(&kv(&text), true, &mut TextWriter::new()) {
            failed = Some(e);
            break;
        }
    }
    assert_eq!(failed.map(|e| e.status), Some(LoginStatus::InitiatorError));
}

#[test]
fn required_digest_and_bad_values_fail() {
    let settings = TargetSettings {
        data_digest: DigestPolicy::Required,
        ..TargetSettings::default()
    };
    let mut n = Negotiator::new(settings.clone(), true);
    let err = n
        .respond(&kv("DataDigest=None|"), true, &mut TextWriter::new())
        .expect_err("required");
    assert_eq!(err.status, LoginStatus::InitiatorError);
    let mut n = Negotiator::new(settings, true);
    n.respond(&kv("DataDigest=None,CRC32C|"), true, &mut TextWriter::new())
        .expect("CRC32C picked");
    assert!(n.params().data_digest);

    let mut n = Negotiator::new(TargetSettings::default(), true);
    let err = n
        .respond(&kv("SessionType=Bogus|"), false, &mut TextWriter::new())
        .expect_err("bad type");
    assert_eq!(err.status, LoginStatus::SessionTypeNotSupported);
    let err = Negotiator::new(TargetSettings::default(), true)
        .respond(
            &kv("MaxRecvDataSegmentLength=100|"),
            true,
            &mut TextWriter::new(),
        )
        .expect_err("too small");
    assert_eq!(err.status, LoginStatus::InitiatorError);
}

#[test]
fn non_leading_login_only_negotiates_connection_keys() {
    let mut n = Negotiator::new(TargetSettings::default(), false);
    let mut out = TextWriter::new();
    n.respond(
        &kv("MaxBurstLength=65536|HeaderDigest=CRC32C|MaxRecvDataSegmentLength=8192|"),
        true,
        &mut out,
    )
    .expect("ok");
    let a = answers(out);
    assert_eq!(get(&a, "MaxBurstLength"), Some("Irrelevant"));
    assert_eq!(get(&a, "HeaderDigest"), Some("CRC32C"));
}

#[test]
fn numbers_and_settings() {
    assert_eq!(parse_number("0x10"), Some(16));
    assert_eq!(parse_number("65536"), Some(65536));
    assert_eq!(parse_number("-1"), None);
    assert_eq!(parse_number("0x"), None);
    assert_eq!(parse_number("99999999999999999999999"), None);
    assert!(TargetSettings::default().validate().is_ok());
    let bad = TargetSettings {
        first_burst_length: 2 << 20,
        ..TargetSettings::default()
    };
    assert!(bad.validate().is_err());
}

#[test]
fn identity_repeats_allowed_only_with_same_value() {
    let mut n = Negotiator::new(TargetSettings::default(), true);
    let ids = "InitiatorName=iqn.a:b|TargetName=iqn.t:1|SessionType=Normal|";
    n.respond(&kv(ids), false, &mut TextWriter::new())
        .expect("first");
    n.respond(&kv(ids), true, &mut TextWriter::new())
        .expect("same values again");
    let err = n
        .respond(&kv("TargetName=iqn.t:2|"), true, &mut TextWriter::new())
        .expect_err("changed target");
    assert_eq!(err.status, LoginStatus::InitiatorError);
}

#[test]
fn initiator_answers_are_not_answered_again() {
    let mut n = Negotiator::new(TargetSettings::default(), true);
    let mut out = TextWriter::new();
    n.respond(
        &kv("TargetAlias=NotUnderstood|TargetPortalGroupTag=Irrelevant|"),
        true,
        &mut out,
    )
    .expect("ok");
    let a = answers(out);
    assert_eq!(
        a,
        vec![("MaxRecvDataSegmentLength".to_string(), "262144".to_string())]
    );
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    fn seg() -> impl Strategy<Value = u32> {
        512u32..=16_777_215
    }

    proptest! {
        /// Whatever in-range values an initiator offers, each offered key is answered exactly
        /// once, the answers apply the RFC result functions against our settings, and the
        /// outcome is consistent (FirstBurstLength ≤ MaxBurstLength).
        #[test]
        fn result_functions_hold(
            mbl in seg(), fbl in seg(), mrdsl in seg(),
            ir2t: bool, imm: bool, mor2t in 1u32..=65535, t2w in 0u16..=3600, t2r in 0u16..=3600,
            erl in 0u8..=2, ours_ir2t: bool, ours_imm: bool,
        ) {
            let settings = TargetSettings { initial_r2t: ours_ir2t, immediate_data: ours_imm, ..TargetSettings::default() };
            let yn = |b: bool| if b { "Yes" } else { "No" };
            let offer = format!(
                "MaxBurstLength={mbl}|FirstBurstLength={fbl}|MaxRecvDataSegmentLength={mrdsl}|InitialR2T={}|ImmediateData={}|MaxOutstandingR2T={mor2t}|DefaultTime2Wait={t2w}|DefaultTime2Retain={t2r}|ErrorRecoveryLevel={erl}|",
                yn(ir2t), yn(imm)
            );
            let mut n = Negotiator::new(settings.clone(), true);
            let mut out = TextWriter::new();
            n.respond(&kv(&offer), true, &mut out).expect("in-range offers never fail");
            let a = answers(out);
            for key in ["MaxBurstLength", "FirstBurstLength", "InitialR2T", "ImmediateData", "MaxOutstandingR2T", "DefaultTime2Wait", "DefaultTime2Retain", "ErrorRecoveryLevel", "MaxRecvDataSegmentLength"] {
                prop_assert_eq!(a.iter().filter(|(k, _)| k == key).count(), 1, "{}", key);
            }
            let p = n.params();
            prop_assert_eq!(p.max_burst_length, mbl.min(settings.max_burst_length));
            prop_assert_eq!(p.first_burst_length, fbl.min(settings.first_burst_length).min(p.max_burst_length));
            prop_assert_eq!(p.max_send_data_segment_length, mrdsl);
            prop_assert_eq!(p.initial_r2t, ir2t || ours_ir2t);
            prop_assert_eq!(p.immediate_data, imm && ours_imm);
            prop_assert_eq!(p.max_outstanding_r2t, mor2t.min(settings.max_outstanding_r2t));
            prop_assert_eq!(p.default_time2wait, t2w.max(settings.default_time2wait));
            prop_assert_eq!(p.default_time2retain, t2r.min(settings.default_time2retain));
            prop_assert_eq!(p.error_recovery_level, 0);
            // What we answered is what we will use.
            let mbl_s = p.max_burst_length.to_string();
            prop_assert_eq!(get(&a, "MaxBurstLength"), Some(mbl_s.as_str()));
            let fbl_s = p.first_burst_length.to_string();
            prop_assert_eq!(get(&a, "FirstBurstLength"), Some(fbl_s.as_str()));
            prop_assert_eq!(get(&a, "InitialR2T"), Some(yn(p.initial_r2t)));
            prop_assert_eq!(get(&a, "ImmediateData"), Some(yn(p.immediate_data)));
        }
    }
}

#[test]
fn protocol_level_key_is_understood() {
    let mut n = Negotiator::new(TargetSettings::default(), true);
    let mut out = TextWriter::new();
    n.respond(&kv("iSCSIProtocolLevel=2|"), true, &mut out)
        .expect("lower-case RFC 7144 key parses and negotiates");
    assert_eq!(get(&answers(out), "iSCSIProtocolLevel"), Some("1"));
}
