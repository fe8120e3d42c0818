//! CHAP abuse: replayed responses, reflected challenges, identifier games and malformed
//! values.

use crate::assert_login_refused;
use lunar_e2e::hostile::{
    self, assert_daemon_healthy, Auth, ATTACKER, CHAP_SECRET, CHAP_USER, VICTIM_IQN,
};
use lunar_e2e::raw::{chap_challenge, chap_response, hex, stage, Conn, Pdu};
use std::net::SocketAddr;

/// Opens a login to the victim up to the target's challenge: (connection, CHAP_I, CHAP_C).
fn challenged(addr: SocketAddr) -> (Conn, u8, Vec<u8>) {
    let mut c = Conn::connect(addr, ATTACKER).unwrap();
    c.login_req(
        false,
        stage::SECURITY,
        stage::OPERATIONAL,
        &[
            ("InitiatorName", ATTACKER),
            ("SessionType", "Normal"),
            ("TargetName", VICTIM_IQN),
            ("AuthMethod", "CHAP"),
        ],
    )
    .unwrap();
    let r = c
        .login_req(
            false,
            stage::SECURITY,
            stage::OPERATIONAL,
            &[("CHAP_A", "5")],
        )
        .unwrap();
    let (id, chal) = chap_challenge(&r.keys()).unwrap();
    (c, id, chal)
}

/// Sends the answer keys and returns the response (transit to the operational stage).
fn answer(c: &mut Conn, keys: &[(&str, &str)]) -> Option<Pdu> {
    c.login_step(true, stage::SECURITY, stage::OPERATIONAL, keys)
        .unwrap()
}

/// A CHAP_R captured from one login does not open another (every challenge is fresh), and
/// neither does a response computed for another identifier.
#[test]
fn replayed_chap_response_is_refused() {
    let (mut d, honest) = hostile::start_watched(Auth::Chap);
    // An honest login whose exchange the attacker observed.
    let (mut c1, id1, chal1) = challenged(d.addr());
    let captured = hex(&chap_response(id1, CHAP_SECRET.as_bytes(), &chal1));
    let r = answer(&mut c1, &[("CHAP_N", CHAP_USER), ("CHAP_R", &captured)]).unwrap();
    assert_eq!(r.login_status(), 0, "honest CHAP: {}", r.describe());

    for attempt in 0..3 {
        let (mut c2, id2, chal2) = challenged(d.addr());
        assert!(
            chal2 != chal1,
            "the target repeated a challenge ({attempt}): {chal1:02x?}"
        );
        let r = answer(&mut c2, &[("CHAP_N", CHAP_USER), ("CHAP_R", &captured)]);
        assert_eq!(assert_login_refused(&mut c2, r, "replayed CHAP_R"), 0x0201);
        // Right secret and challenge, wrong identifier.
        let (mut c3, id3, chal3) = challenged(d.addr());
        let _ = id2;
        let off_by_one = hex(&chap_response(
            id3.wrapping_add(1),
            CHAP_SECRET.as_bytes(),
            &chal3,
        ));
        let r = answer(&mut c3, &[("CHAP_N", CHAP_USER), ("CHAP_R", &off_by_one)]);
        assert_eq!(
            assert_login_refused(&mut c3, r, "CHAP_R for another identifier"),
            0x0201
        );
        // Right response, another user name.
        let (mut c4, id4, chal4) = challenged(d.addr());
        let good = hex(&chap_response(id4, CHAP_SECRET.as_bytes(), &chal4));
        let r = answer(&mut c4, &[("CHAP_N", "someone-else"), ("CHAP_R", &good)]);
        assert_eq!(assert_login_refused(&mut c4, r, "wrong CHAP_N"), 0x0201);
    }
    honest.assert_flood_bounds(&mut d, "CHAP replay", hostile::SMALL_ATTACK_MEMORY_MIB);
    assert_daemon_healthy(&mut d, "CHAP replay");
}

/// Mutual CHAP reflection: the initiator sends the target's own challenge back as its
/// CHAP_C, hoping for the target's answer to replay elsewhere. Refused; and an initiator
/// that fails its own proof gets no target response to use as an oracle.
#[test]
fn mutual_chap_reflection_is_refused() {
    let (mut d, honest) = hostile::start_watched(Auth::Mutual);
    let (mut c, id, chal) = challenged(d.addr());
    let resp = hex(&chap_response(id, CHAP_SECRET.as_bytes(), &chal));
    let id_s = id.to_string();
    let chal_s = hex(&chal);
    let r = answer(
        &mut c,
        &[
            ("CHAP_N", CHAP_USER),
            ("CHAP_R", &resp),
            ("CHAP_I", &id_s),
            ("CHAP_C", &chal_s),
        ],
    );
    if let Some(r) = &r {
        assert!(
            !r.keys().contains_key("CHAP_R"),
            "target answered a reflected challenge: {:?}",
            r.keys()
        );
    }
    assert_eq!(
        assert_login_refused(&mut c, r, "reflected challenge"),
        0x0201
    );

    // No secret, but a challenge: the target must not compute its response first.
    let (mut c, _, _) = challenged(d.addr());
    let r = answer(
        &mut c,
        &[
            ("CHAP_N", CHAP_USER),
            ("CHAP_R", "0x00000000000000000000000000000000"),
            ("CHAP_I", "7"),
            ("CHAP_C", "0x0102030405060708090a0b0c0d0e0f10"),
        ],
    );
    if let Some(r) = &r {
        assert!(
            !r.keys().contains_key("CHAP_R"),
            "target answered the challenge of an unauthenticated initiator: {:?}",
            r.keys()
        );
    }
    assert_eq!(assert_login_refused(&mut c, r, "oracle attempt"), 0x0201);

    // Identifier and challenge games on the initiator's side of mutual CHAP.
    for (i_id, i_chal) in [
        ("256", "0x0102030405060708090a0b0c0d0e0f10"),
        ("-1", "0x0102030405060708090a0b0c0d0e0f10"),
        ("x", "0x0102030405060708090a0b0c0d0e0f10"),
        ("1", ""),
        ("1", "0x"),
        ("1", "0xzz"),
    ] {
        let (mut c, id, chal) = challenged(d.addr());
        let resp = hex(&chap_response(id, CHAP_SECRET.as_bytes(), &chal));
        let r = answer(
            &mut c,
            &[
                ("CHAP_N", CHAP_USER),
                ("CHAP_R", &resp),
                ("CHAP_I", i_id),
                ("CHAP_C", i_chal),
            ],
        );
        let what = format!("mutual CHAP_I={i_id:?} CHAP_C={i_chal:?}");
        let s = assert_login_refused(&mut c, r, &what);
        assert!(
            s == 0x0201 || s == 0x0200 || s == 0xffff,
            "{what}: {s:#06x}"
        );
    }
    honest.assert_flood_bounds(
        &mut d,
        "mutual CHAP reflection",
        hostile::SMALL_ATTACK_MEMORY_MIB,
    );
    assert_daemon_healthy(&mut d, "mutual CHAP reflection");
}

/// Malformed CHAP values: empty and huge CHAP_R, wrong encodings, unsupported algorithms,
/// repeated keys, keys out of order.
#[test]
fn malformed_chap_values_are_refused() {
    let (mut d, honest) = hostile::start_watched(Auth::Chap);
    let huge = format!("0x{}", "ab".repeat(4000));
    for (what, r_value) in [
        ("empty CHAP_R", ""),
        ("bare 0x", "0x"),
        ("odd hex", "0x123"),
        ("not hex", "0xgg112233445566778899aabbccddeeff"),
        ("short", "0x0011"),
        ("base64 garbage", "0b!!!!"),
        ("huge", huge.as_str()),
    ] {
        let (mut c, _, _) = challenged(d.addr());
        let r = answer(&mut c, &[("CHAP_N", CHAP_USER), ("CHAP_R", r_value)]);
        let s = assert_login_refused(&mut c, r, what);
        assert!(
            s == 0x0201 || s == 0x0200 || s == 0xffff,
            "{what}: {s:#06x}"
        );
    }
    // CHAP_N and CHAP_R twice (once right).
    let (mut c, id, chal) = challenged(d.addr());
    let good = hex(&chap_response(id, CHAP_SECRET.as_bytes(), &chal));
    let r = answer(
        &mut c,
        &[
            ("CHAP_N", CHAP_USER),
            ("CHAP_R", "0x00000000000000000000000000000000"),
            ("CHAP_R", &good),
        ],
    );
    let s = assert_login_refused(&mut c, r, "CHAP_R twice");
    assert!(s == 0x0201 || s == 0x0200, "CHAP_R twice: {s:#06x}");
    // Unsupported algorithm lists.
    for algs in ["7", "", "5x", "6,7"] {
        let mut c = Conn::connect(d.addr(), ATTACKER).unwrap();
        c.login_req(
            false,
            stage::SECURITY,
            stage::OPERATIONAL,
            &[
                ("InitiatorName", ATTACKER),
                ("TargetName", VICTIM_IQN),
                ("AuthMethod", "CHAP"),
            ],
        )
        .unwrap();
        let r = c
            .login_step(
                false,
                stage::SECURITY,
                stage::OPERATIONAL,
                &[("CHAP_A", algs)],
            )
            .unwrap();
        let what = format!("CHAP_A={algs:?}");
        if let Some(r) = &r {
            assert!(
                !r.keys().contains_key("CHAP_C"),
                "{what}: the target issued a challenge: {:?}",
                r.keys()
            );
        }
        assert_login_refused(&mut c, r, &what);
    }
    // CHAP_A again after the challenge.
    let (mut c, _, _) = challenged(d.addr());
    let r = c
        .login_step(
            false,
            stage::SECURITY,
            stage::OPERATIONAL,
            &[("CHAP_A", "5")],
        )
        .unwrap();
    assert_login_refused(&mut c, r, "CHAP_A twice");
    hostile::assert_memory_bounded(&mut d, "malformed CHAP", 64);
    honest.assert_flood_bounds(&mut d, "malformed CHAP", hostile::SMALL_ATTACK_MEMORY_MIB);
    assert_daemon_healthy(&mut d, "malformed CHAP");
}
