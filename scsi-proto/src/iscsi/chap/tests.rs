use super::*;
use crate::iscsi::text;

fn cred(user: &str, secret: &str) -> ChapCredential {
    ChapCredential {
        username: user.into(),
        secret: secret.as_bytes().to_vec(),
    }
}

fn one_way() -> ChapConfig {
    ChapConfig {
        initiator: cred("alice", "initiator-secret-1"),
        mutual: None,
    }
}

fn mutual() -> ChapConfig {
    ChapConfig {
        initiator: cred("alice", "initiator-secret-1"),
        mutual: Some(cred("iqn.2026-01.io.lunar:t1", "target-secret-22")),
    }
}

fn kv(pairs: &[(&str, &str)]) -> Vec<KeyValue> {
    pairs
        .iter()
        .map(|(k, v)| KeyValue {
            key: (*k).into(),
            value: (*v).into(),
        })
        .collect()
}

fn answers(out: TextWriter) -> Vec<(String, String)> {
    text::parse(&out.finish())
        .expect("parses")
        .into_iter()
        .map(|k| (k.key, k.value))
        .collect()
}

fn get<'a>(a: &'a [(String, String)], key: &str) -> &'a str {
    a.iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("{key} missing in {a:?}"))
}

const CHALLENGE: [u8; 16] = [7u8; 16];

/// Run the CHAP_A step and return our (id, challenge) as the initiator sees them.
fn start(auth: &mut ChapAuthenticator) -> (u8, Vec<u8>) {
    let mut out = TextWriter::new();
    assert_eq!(
        auth.step(&kv(&[("CHAP_A", "7,5")]), &mut out),
        Ok(ChapProgress::InProgress)
    );
    let a = answers(out);
    assert_eq!(get(&a, "CHAP_A"), "5");
    let id: u8 = get(&a, "CHAP_I").parse().expect("numeric id");
    let chal = decode_binary(get(&a, "CHAP_C"), 1024).expect("hex challenge");
    (id, chal)
}

#[test]
fn md5_vector() {
    // MD5("abc") from RFC 1321.
    assert_eq!(
        encode_hex(&chap_response(b'a', b"b", b"c")),
        "0x900150983cd24fb0d6963f7d28e17f72"
    );
}

#[test]
fn one_way_accepts_correct_response() {
    let mut auth = ChapAuthenticator::new(one_way(), 42, CHALLENGE.to_vec());
    let (id, chal) = start(&mut auth);
    assert_eq!((id, &chal[..]), (42, &CHALLENGE[..]));
    let r = encode_hex(&chap_response(id, b"initiator-secret-1", &chal));
    let mut out = TextWriter::new();
    assert_eq!(
        auth.step(&kv(&[("CHAP_N", "alice"), ("CHAP_R", &r)]), &mut out),
        Ok(ChapProgress::Authenticated)
    );
    assert!(out.is_empty());
    assert!(auth.is_done());
}

#[test]
fn wrong_secret_or_name_fails() {
    for (name, secret) in [
        ("alice", "wrong-secret-xx"),
        ("mallory", "initiator-secret-1"),
    ] {
        let mut auth = ChapAuthenticator::new(one_way(), 1, CHALLENGE.to_vec());
        let (id, chal) = start(&mut auth);
        let r = encode_hex(&chap_response(id, secret.as_bytes(), &chal));
        let err = auth
            .step(
                &kv(&[("CHAP_N", name), ("CHAP_R", &r)]),
                &mut TextWriter::new(),
            )
            .expect_err("must fail");
        assert_eq!(err.status, LoginStatus::AuthenticationFailure);
    }
}

#[test]
fn unsupported_algorithm_and_out_of_order_fail() {
    let mut auth = ChapAuthenticator::new(one_way(), 1, CHALLENGE.to_vec());
    assert!(auth
        .step(&kv(&[("CHAP_A", "6,7")]), &mut TextWriter::new())
        .is_err());
    let mut auth = ChapAuthenticator::new(one_way(), 1, CHALLENGE.to_vec());
    assert!(auth
        .step(
            &kv(&[("CHAP_N", "alice"), ("CHAP_R", "0x00")]),
            &mut TextWriter::new()
        )
        .is_err());
    let mut auth = ChapAuthenticator::new(one_way(), 1, CHALLENGE.to_vec());
    start(&mut auth);
    assert!(auth
        .step(&kv(&[("CHAP_N", "alice")]), &mut TextWriter::new())
        .is_err());
}

#[test]
fn mutual_answers_with_target_secret() {
    let mut auth = ChapAuthenticator::new(mutual(), 9, CHALLENGE.to_vec());
    let (id, chal) = start(&mut auth);
    let r = encode_hex(&chap_response(id, b"initiator-secret-1", &chal));
    let my_chal = [0x55u8; 20];
    let mut out = TextWriter::new();
    let res = auth.step(
        &kv(&[
            ("CHAP_N", "alice"),
            ("CHAP_R", &r),
            ("CHAP_I", "77"),
            ("CHAP_C", &encode_hex(&my_chal)),
        ]),
        &mut out,
    );
    assert_eq!(res, Ok(ChapProgress::Authenticated));
    let a = answers(out);
    assert_eq!(get(&a, "CHAP_N"), "iqn.2026-01.io.lunar:t1");
    let expect = chap_response(77, b"target-secret-22", &my_chal);
    assert_eq!(
        decode_binary(get(&a, "CHAP_R"), 16).as_deref(),
        Some(&expect[..])
    );
}

#[test]
fn mutual_missing_reflected_or_unconfigured_fails() {
    // Mutual required but the initiator does not ask.
    let mut auth = ChapAuthenticator::new(mutual(), 9, CHALLENGE.to_vec());
    let (id, chal) = start(&mut auth);
    let r = encode_hex(&chap_response(id, b"initiator-secret-1", &chal));
    assert!(auth
        .step(
            &kv(&[("CHAP_N", "alice"), ("CHAP_R", &r)]),
            &mut TextWriter::new()
        )
        .is_err());

    // Reflected challenge.
    let mut auth = ChapAuthenticator::new(mutual(), 9, CHALLENGE.to_vec());
    let (id, chal) = start(&mut auth);
    let r = encode_hex(&chap_response(id, b"initiator-secret-1", &chal));
    let err = auth
        .step(
            &kv(&[
                ("CHAP_N", "alice"),
                ("CHAP_R", &r),
                ("CHAP_I", &id.to_string()),
                ("CHAP_C", &encode_hex(&chal)),
            ]),
            &mut TextWriter::new(),
        )
        .expect_err("reflection");
    assert!(err.reason.contains("reflected"));

    // Initiator asks for mutual, target has no credentials.
    let mut auth = ChapAuthenticator::new(one_way(), 9, CHALLENGE.to_vec());
    let (id, chal) = start(&mut auth);
    let r = encode_hex(&chap_response(id, b"initiator-secret-1", &chal));
    assert!(auth
        .step(
            &kv(&[
                ("CHAP_N", "alice"),
                ("CHAP_R", &r),
                ("CHAP_I", "1"),
                ("CHAP_C", "0x0102")
            ]),
            &mut TextWriter::new()
        )
        .is_err());
}

#[test]
fn config_validation() {
    assert!(one_way().validate().is_ok());
    assert!(mutual().validate().is_ok());
    let weak = ChapConfig {
        initiator: cred("a", "short"),
        mutual: None,
    };
    assert!(matches!(
        weak.validate(),
        Err(ChapConfigError::SecretLength(_))
    ));
    let same = ChapConfig {
        initiator: cred("a", "same-secret-123"),
        mutual: Some(cred("t", "same-secret-123")),
    };
    assert_eq!(same.validate(), Err(ChapConfigError::SameSecrets));
    assert!(!format!("{:?}", one_way()).contains("initiator-secret-1"));
}

#[test]
fn binary_encodings() {
    assert_eq!(decode_binary("0x0a0B", 16), Some(vec![0x0a, 0x0b]));
    assert_eq!(decode_binary("0Xabc", 16), Some(vec![0x0a, 0xbc]));
    assert_eq!(decode_binary("0bAQID", 16), Some(vec![1, 2, 3]));
    assert_eq!(decode_binary("0bAQI=", 16), Some(vec![1, 2]));
    assert_eq!(decode_binary("0bAQ==", 16), Some(vec![1]));
    assert_eq!(decode_binary("0bA===", 16), None);
    assert_eq!(decode_binary("0bAQ==AQID", 16), None);
    assert_eq!(decode_binary("0xzz", 16), None);
    assert_eq!(decode_binary("1234", 16), None);
    assert_eq!(decode_binary(&format!("0x{}", "00".repeat(17)), 16), None);
    assert!(constant_time_eq(b"abc", b"abc"));
    assert!(!constant_time_eq(b"abc", b"abd"));
    assert!(!constant_time_eq(b"abc", b"ab"));
}
