use scsi_proto::scsi::pr::{in_sa, out_sa, PrType, TransportId};
use scsi_proto::scsi::sense::{asc, FieldPointer, SenseKey};

use super::rules::Registration;
use super::*;

fn nx(i: &str, isid: u64, tpgt: u16) -> Nexus {
    Nexus {
        initiator: i.into(),
        isid,
        tpgt,
    }
}

fn params(key: u64, sa_key: u64) -> Vec<u8> {
    let mut p = vec![0u8; 24];
    p[0..8].copy_from_slice(&key.to_be_bytes());
    p[8..16].copy_from_slice(&sa_key.to_be_bytes());
    p
}

fn run(
    r: &mut PrState,
    n: &Nexus,
    sa: u8,
    t: u8,
    p: &[u8],
) -> (Result<PrOutcome, Sense>, Vec<(Nexus, AdditionalSense)>) {
    let (res, fx) = run_fx(r, n, sa, t, p);
    (res, fx.uas)
}

fn run_fx(
    r: &mut PrState,
    n: &Nexus,
    sa: u8,
    t: u8,
    p: &[u8],
) -> (Result<PrOutcome, Sense>, PrOutEffects) {
    let mut fx = PrOutEffects::default();
    let res =
        PrOutRequest::parse(u16::from(sa), 0, t, p).and_then(|req| r.pr_out(n, &req, &mut fx));
    (res, fx)
}

fn ok(
    r: &mut PrState,
    n: &Nexus,
    sa: u8,
    t: u8,
    key: u64,
    sa_key: u64,
) -> Vec<(Nexus, AdditionalSense)> {
    let (res, uas) = run(r, n, sa, t, &params(key, sa_key));
    assert_eq!(res, Ok(PrOutcome::Good), "service action {sa}");
    uas
}

fn conflict(r: &mut PrState, n: &Nexus, sa: u8, t: u8, key: u64, sa_key: u64) {
    let (res, _) = run(r, n, sa, t, &params(key, sa_key));
    assert_eq!(res, Ok(PrOutcome::Conflict), "service action {sa}");
}

#[test]
fn access_table_per_type() {
    // (type, registered i2 read, write, unregistered i2 read, write) per SPC-4.
    let table = [
        (3u8, false, false, false, false),
        (1, true, false, true, false),
        (6, true, true, false, false),
        (5, true, true, true, false),
        (8, true, true, false, false),
        (7, true, true, true, false),
    ];
    let a = nx("iqn.a", 1, 1);
    let b = nx("iqn.b", 2, 1);
    for (t, rr, rw, ur, uw) in table {
        let mut r = PrState::default();
        ok(
            &mut r,
            &a,
            out_sa::REGISTER_AND_IGNORE_EXISTING_KEY,
            0,
            0,
            10,
        );
        ok(
            &mut r,
            &b,
            out_sa::REGISTER_AND_IGNORE_EXISTING_KEY,
            0,
            0,
            20,
        );
        ok(&mut r, &a, out_sa::RESERVE, t, 10, 0);
        assert!(!r.conflicts(&a, Access::Read) && !r.conflicts(&a, Access::Write));
        assert_eq!(!r.conflicts(&b, Access::Read), rr, "type {t}");
        assert_eq!(!r.conflicts(&b, Access::Write), rw, "type {t}");
        ok(&mut r, &b, out_sa::REGISTER, 0, 20, 0);
        assert_eq!(!r.conflicts(&b, Access::Read), ur, "type {t}");
        assert_eq!(!r.conflicts(&b, Access::Write), uw, "type {t}");
        ok(&mut r, &a, out_sa::RELEASE, t, 10, 0);
        assert!(!r.conflicts(&b, Access::Write));
    }
}

#[test]
fn register_rules_and_generation() {
    let mut r = PrState::default();
    let a = nx("iqn.a", 1, 1);
    conflict(&mut r, &a, out_sa::REGISTER, 0, 5, 6); // unregistered, non-zero key
    ok(&mut r, &a, out_sa::REGISTER, 0, 0, 6);
    conflict(&mut r, &a, out_sa::REGISTER, 0, 7, 8); // wrong key
    ok(&mut r, &a, out_sa::REGISTER, 0, 6, 8);
    conflict(&mut r, &a, out_sa::RESERVE, 1, 6, 0);
    assert_eq!(r.d.generation, 2);
    ok(&mut r, &a, out_sa::RESERVE, 1, 8, 0);
    assert_eq!(r.d.generation, 2, "RESERVE does not bump the generation");
    ok(&mut r, &a, out_sa::RESERVE, 1, 8, 0);
    conflict(&mut r, &a, out_sa::RESERVE, 3, 8, 0);
    let (res, _) = run(&mut r, &a, out_sa::RELEASE, 3, &params(8, 0));
    assert!(res.is_err(), "RELEASE with another type: INVALID RELEASE");
    // Unregistering the holder releases the reservation.
    ok(&mut r, &a, out_sa::REGISTER, 0, 8, 0);
    assert!(!r.is_reserved() && !r.is_active());
    // Bad lengths and unsupported bits.
    let (res, _) = run(&mut r, &a, out_sa::REGISTER, 0, &params(0, 1)[..20]);
    assert!(res.is_err());
    let mut p = params(0, 1);
    p[20] = 0x08;
    assert!(
        run(&mut r, &a, out_sa::REGISTER, 0, &p).0.is_err(),
        "SPEC_I_PT without its TransportID list"
    );
}

/// REGISTER with SPEC_I_PT and a TransportID list after the basic parameters.
fn spec_params(sa_key: u64, ids: &[TransportId]) -> Vec<u8> {
    let mut p = params(0, sa_key);
    p[20] = 0x08;
    let list: Vec<u8> = ids.iter().flat_map(TransportId::encode).collect();
    p.extend_from_slice(&(list.len() as u32).to_be_bytes());
    p.extend_from_slice(&list);
    p
}

#[test]
fn spec_i_pt_registers_the_named_ports_all_or_nothing() {
    let mut r = PrState::default();
    let a = nx("iqn.a", 1, 1);
    let b = nx("iqn.b", 2, 1);
    let c = nx("iqn.c", 3, 1);
    let port = |n: &Nexus| TransportId {
        name: n.initiator.clone(),
        isid: Some(n.isid),
    };
    // A whole device (no ISID) is refused, and so is a list naming the same port twice.
    let device = TransportId {
        name: "iqn.b".into(),
        isid: None,
    };
    assert!(run(
        &mut r,
        &a,
        out_sa::REGISTER,
        0,
        &spec_params(0xA, &[device])
    )
    .0
    .is_err());
    assert!(run(
        &mut r,
        &a,
        out_sa::REGISTER,
        0,
        &spec_params(0xA, &[port(&b), port(&b)])
    )
    .0
    .is_err());
    assert!(
        r.d.registrations.is_empty(),
        "a refused list registers nothing"
    );
    // A registers itself and B in one command.
    let (res, _) = run(
        &mut r,
        &a,
        out_sa::REGISTER,
        0,
        &spec_params(0xA, &[port(&b)]),
    );
    assert!(res.is_ok(), "{res:?}");
    assert_eq!(r.d.registrations.len(), 2);
    // B holds the key now: it may reserve with it without registering itself.
    ok(&mut r, &b, out_sa::RESERVE, 5, 0xA, 0);
    assert!(r.conflicts(&c, Access::Write));
    // A registered issuer, or a list naming a registered port, changes nothing.
    assert!(run(
        &mut r,
        &a,
        out_sa::REGISTER,
        0,
        &spec_params(0xB, &[port(&c)])
    )
    .0
    .is_err());
    assert!(run(
        &mut r,
        &c,
        out_sa::REGISTER,
        0,
        &spec_params(0xC, &[port(&b)])
    )
    .0
    .is_err());
    assert_eq!(r.d.registrations.len(), 2);
    // SPEC_I_PT is for REGISTER only.
    let p = spec_params(0xC, &[port(&a)]);
    assert!(
        run(&mut r, &c, out_sa::REGISTER_AND_IGNORE_EXISTING_KEY, 0, &p)
            .0
            .is_err()
    );
}

/// `count` distinct initiator ports.
fn ports(count: usize) -> Vec<TransportId> {
    (0..count)
        .map(|i| TransportId {
            name: format!("iqn.2026-12.test:host{i}"),
            isid: Some(0x4000_0000_0000 | i as u64),
        })
        .collect()
}

fn assert_sense(res: Result<PrOutcome, Sense>, code: AdditionalSense) -> Sense {
    let s = res.expect_err("CHECK CONDITION");
    assert_eq!((s.key, s.code), (SenseKey::IllegalRequest, code), "{s:?}");
    s
}

#[test]
fn spec_i_pt_lists_up_to_the_registration_limit() {
    let a = nx("iqn.a", 1, 1);
    let full = ports(MAX_REGISTRATIONS - 1);
    // One too many: INSUFFICIENT REGISTRATION RESOURCES, nothing registered.
    let mut r = PrState::default();
    let mut over = full.clone();
    over.push(TransportId {
        name: "iqn.one-more".into(),
        isid: Some(7),
    });
    let (res, _) = run(&mut r, &a, out_sa::REGISTER, 0, &spec_params(0xA, &over));
    assert_sense(res, asc::INSUFFICIENT_REGISTRATION_RESOURCES);
    assert!(r.d.registrations.is_empty() && r.d.generation == 0);
    // A repeated port at the far end of a long list is still found, with the
    // TransportID list's field pointer, and the list stays all or nothing.
    let mut dup = full.clone();
    let last = dup.len() - 1;
    dup[last] = dup[0].clone();
    let (res, _) = run(&mut r, &a, out_sa::REGISTER, 0, &spec_params(0xA, &dup));
    let s = assert_sense(res, asc::INVALID_FIELD_IN_PARAMETER_LIST);
    assert_eq!(
        s.field,
        Some(FieldPointer::param(28, None)),
        "points at the TransportID list"
    );
    assert!(r.d.registrations.is_empty());
    // So is a list naming the issuer itself.
    let mut me = full[..10].to_vec();
    me.push(TransportId {
        name: a.initiator.clone(),
        isid: Some(a.isid),
    });
    let (res, _) = run(&mut r, &a, out_sa::REGISTER, 0, &spec_params(0xA, &me));
    assert_sense(res, asc::INVALID_FIELD_IN_PARAMETER_LIST);
    assert!(r.d.registrations.is_empty());
    // Exactly the limit: every port registered.
    let (res, _) = run(&mut r, &a, out_sa::REGISTER, 0, &spec_params(0xA, &full));
    assert_eq!(res, Ok(PrOutcome::Good));
    assert_eq!(r.d.registrations.len(), MAX_REGISTRATIONS);
    let last = &full[full.len() - 1];
    assert!(r
        .d
        .find(&nx(&last.name, last.isid.unwrap_or_default(), 1))
        .is_some());
    // Full: B cannot register even alone. With room made (A and three ports
    // unregister), a list naming a registered port at its end is refused, and one of
    // new ports fills the room again.
    let b = nx("iqn.b", 2, 1);
    let fresh = |i: u64| TransportId {
        name: "iqn.fresh".into(),
        isid: Some(i),
    };
    let (res, _) = run(&mut r, &b, out_sa::REGISTER, 0, &spec_params(0xB, &[]));
    assert_sense(res, asc::INSUFFICIENT_REGISTRATION_RESOURCES);
    ok(&mut r, &a, out_sa::REGISTER, 0, 0xA, 0);
    for p in &full[..3] {
        ok(
            &mut r,
            &nx(&p.name, p.isid.unwrap_or_default(), 1),
            out_sa::REGISTER,
            0,
            0xA,
            0,
        );
    }
    let taken = [fresh(1), fresh(2), full[full.len() - 1].clone()];
    let (res, _) = run(&mut r, &b, out_sa::REGISTER, 0, &spec_params(0xB, &taken));
    assert_sense(res, asc::INVALID_FIELD_IN_PARAMETER_LIST);
    assert_eq!(r.d.registrations.len(), MAX_REGISTRATIONS - 4);
    let new = [fresh(1), fresh(2), fresh(3)];
    let (res, _) = run(&mut r, &b, out_sa::REGISTER, 0, &spec_params(0xB, &new));
    assert_eq!(res, Ok(PrOutcome::Good));
    assert_eq!(r.d.registrations.len(), MAX_REGISTRATIONS);
}

#[test]
fn registrations_stop_at_the_limit() {
    let mut r = PrState::default();
    for i in 0..MAX_REGISTRATIONS {
        ok(
            &mut r,
            &nx("iqn.h", i as u64, 1),
            out_sa::REGISTER,
            0,
            0,
            i as u64 + 1,
        );
    }
    let generation = r.d.generation;
    let newcomer = nx("iqn.new", 1, 1);
    for sa in [out_sa::REGISTER, out_sa::REGISTER_AND_IGNORE_EXISTING_KEY] {
        let (res, uas) = run(&mut r, &newcomer, sa, 0, &params(0, 0x99));
        assert_sense(res, asc::INSUFFICIENT_REGISTRATION_RESOURCES);
        assert!(uas.is_empty());
    }
    assert_eq!(r.d.registrations.len(), MAX_REGISTRATIONS);
    assert_eq!(
        r.d.generation, generation,
        "a refused REGISTER changes nothing"
    );
    // Registered nexuses still change their keys, and REGISTER AND MOVE to a new
    // nexus needs room unless it unregisters the source.
    let h0 = nx("iqn.h", 0, 1);
    ok(&mut r, &h0, out_sa::REGISTER, 0, 1, 0x10);
    ok(&mut r, &h0, out_sa::RESERVE, 1, 0x10, 0);
    let tid = TransportId {
        name: "iqn.dest".into(),
        isid: Some(3),
    }
    .encode();
    let mv = |unreg: bool| {
        let mut p = params(0x10, 0xD);
        p[17] = if unreg { 0x02 } else { 0 };
        p[18..20].copy_from_slice(&1u16.to_be_bytes());
        p[20..24].copy_from_slice(&(tid.len() as u32).to_be_bytes());
        p.extend_from_slice(&tid);
        p
    };
    let (res, _) = run(&mut r, &h0, out_sa::REGISTER_AND_MOVE, 1, &mv(false));
    assert_sense(res, asc::INSUFFICIENT_REGISTRATION_RESOURCES);
    assert!(r.d.is_holder(&h0));
    let (res, _) = run(&mut r, &h0, out_sa::REGISTER_AND_MOVE, 1, &mv(true));
    assert_eq!(res, Ok(PrOutcome::Good));
    assert!(r.d.is_holder(&nx("iqn.dest", 3, 1)));
    assert_eq!(r.d.registrations.len(), MAX_REGISTRATIONS);
    // Unregistering makes room again.
    ok(&mut r, &nx("iqn.h", 5, 1), out_sa::REGISTER, 0, 6, 0);
    ok(&mut r, &newcomer, out_sa::REGISTER, 0, 0, 0x99);
}

#[test]
fn parameter_lists_beyond_the_limit_take_no_data() {
    assert_eq!(data_out_len(24), 24);
    assert_eq!(data_out_len(MAX_PARAM_LEN), MAX_PARAM_LEN);
    assert_eq!(data_out_len(MAX_PARAM_LEN + 1), 0);
    assert_eq!(data_out_len(u32::MAX), 0);
    // The longest valid list fits: the limit's worth of the longest TransportIDs.
    let longest = TransportId {
        name: "n".repeat(proto::MAX_ISCSI_NAME_LEN),
        isid: Some(1),
    };
    assert_eq!(longest.encode().len(), proto::MAX_TRANSPORT_ID_LEN);
    let p = spec_params(0xA, &vec![longest; MAX_REGISTRATIONS]);
    assert_eq!(p.len(), MAX_PARAM_LEN as usize);
}

#[test]
fn preempt_moves_the_reservation_and_reports() {
    let mut r = PrState::default();
    let a = nx("iqn.a", 1, 1);
    let b = nx("iqn.b", 2, 1);
    ok(&mut r, &a, out_sa::REGISTER, 0, 0, 0xA);
    ok(&mut r, &b, out_sa::REGISTER, 0, 0, 0xB);
    ok(&mut r, &a, out_sa::RESERVE, 5, 0xA, 0);
    assert!(r.conflicts(&nx("iqn.c", 3, 1), Access::Write));
    conflict(&mut r, &b, out_sa::PREEMPT, 5, 0xB, 0xC);
    let uas = ok(&mut r, &b, out_sa::PREEMPT_AND_ABORT, 5, 0xB, 0xA);
    assert_eq!(uas, vec![(a.clone(), asc::REGISTRATIONS_PREEMPTED)]);
    assert!(r.d.is_holder(&b));
    assert!(r.conflicts(&a, Access::Write));
    ok(&mut r, &a, out_sa::REGISTER, 0, 0, 0xA);
    let uas = ok(&mut r, &b, out_sa::CLEAR, 0, 0xB, 0);
    assert_eq!(uas, vec![(a.clone(), asc::RESERVATIONS_PREEMPTED)]);
    assert!(!r.conflicts(&a, Access::Write));
    assert!(!r.is_active());
}

#[test]
fn preempt_and_abort_names_the_preempted_nexuses() {
    let mut r = PrState::default();
    let a = nx("iqn.a", 1, 1);
    let b = nx("iqn.b", 2, 1);
    let all_tg_pt = |key, sa_key| {
        let mut p = params(key, sa_key);
        p[20] = 0x04;
        p
    };
    let preempt_and_abort = |r: &mut PrState, sa_key| {
        let (res, fx) = run_fx(r, &b, out_sa::PREEMPT_AND_ABORT, 5, &params(0xB, sa_key));
        assert_eq!(res, Ok(PrOutcome::Good));
        fx.abort.expect("preempted nexuses")
    };
    ok(&mut r, &a, out_sa::REGISTER, 0, 0, 0xA);
    ok(&mut r, &b, out_sa::REGISTER, 0, 0, 0xB);
    ok(&mut r, &a, out_sa::RESERVE, 5, 0xA, 0);
    // PREEMPT names nobody to abort, nor does a refused PREEMPT AND ABORT.
    let (res, fx) = run_fx(&mut r, &b, out_sa::PREEMPT, 5, &params(0xB, 0xA));
    assert_eq!(res, Ok(PrOutcome::Good));
    assert!(fx.abort.is_none());
    ok(&mut r, &a, out_sa::REGISTER, 0, 0, 0xA);
    let (res, fx) = run_fx(&mut r, &b, out_sa::PREEMPT_AND_ABORT, 5, &params(0xB, 0xC));
    assert_eq!(res, Ok(PrOutcome::Conflict));
    assert!(fx.abort.is_none());
    // A registered through port 1: that nexus only.
    let p = preempt_and_abort(&mut r, 0xA);
    assert!(p.contains(&a));
    assert!(!p.contains(&b), "never the issuer");
    assert!(!p.contains(&nx("iqn.a", 1, 2)), "another target port");
    assert!(!p.contains(&nx("iqn.a", 3, 1)), "another ISID");
    assert!(!p.contains(&nx("iqn.c", 1, 1)));
    // An ALL_TG_PT registration: A's nexuses through every target port.
    assert_eq!(
        run(&mut r, &a, out_sa::REGISTER, 0, &all_tg_pt(0, 0xA)).0,
        Ok(PrOutcome::Good)
    );
    let p = preempt_and_abort(&mut r, 0xA);
    assert!(p.contains(&a) && p.contains(&nx("iqn.a", 1, 2)) && !p.contains(&b));
    // A preempted registration that also covers the issuer's nexus (B's port through
    // port 2 registered ALL_TG_PT): the issuer's tasks are still not aborted.
    let b2 = nx("iqn.b", 2, 2);
    assert_eq!(
        run(&mut r, &b2, out_sa::REGISTER, 0, &all_tg_pt(0, 0xD)).0,
        Ok(PrOutcome::Good)
    );
    let p = preempt_and_abort(&mut r, 0xD);
    assert!(p.contains(&b2) && !p.contains(&b));
}

#[test]
fn all_tg_pt_covers_every_port() {
    let mut r = PrState::default();
    let a1 = nx("iqn.a", 1, 1);
    let a2 = nx("iqn.a", 1, 2);
    let mut p = params(0, 0xA);
    p[20] = 0x04;
    assert_eq!(
        run(&mut r, &a1, out_sa::REGISTER, 0, &p).0,
        Ok(PrOutcome::Good)
    );
    assert_eq!(r.d.find(&a2), Some(0));
    ok(&mut r, &a2, out_sa::RESERVE, 7, 0xA, 0);
    assert!(!r.conflicts(&a1, Access::Write));
    assert!(
        r.conflicts(&nx("iqn.a", 9, 1), Access::Write),
        "other ISID = other port"
    );
    let full = r.pr_in(u16::from(in_sa::READ_FULL_STATUS));
    assert_eq!(full[8 + 12], 0x03, "ALL_TG_PT + R_HOLDER");
    let caps = r.pr_in(u16::from(in_sa::REPORT_CAPABILITIES));
    assert_eq!(caps[2] & 0x0C, 0x0C, "ATP_C=1, SIP_C=1");
}

#[test]
fn register_and_move_hands_over() {
    let mut r = PrState::default();
    let a = nx("iqn.a", 1, 1);
    ok(&mut r, &a, out_sa::REGISTER, 0, 0, 0xA);
    ok(&mut r, &a, out_sa::RESERVE, 1, 0xA, 0);
    let tid = TransportId {
        name: "iqn.b".into(),
        isid: Some(2),
    }
    .encode();
    let mut p = params(0xA, 0xB);
    p[17] = 0x02;
    p[18..20].copy_from_slice(&1u16.to_be_bytes());
    p[20..24].copy_from_slice(&(tid.len() as u32).to_be_bytes());
    p.extend_from_slice(&tid);
    assert_eq!(
        run(&mut r, &a, out_sa::REGISTER_AND_MOVE, 1, &p).0,
        Ok(PrOutcome::Good)
    );
    assert!(r.d.is_holder(&nx("iqn.b", 2, 1)));
    assert!(r.d.find(&a).is_none(), "UNREG dropped the source");
    let res = r.pr_in(u16::from(in_sa::READ_RESERVATION));
    assert_eq!(&res[8..16], &0xBu64.to_be_bytes());
}

#[test]
fn state_file_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::new(dir.path().join("pr"));
    let id = uuid::Uuid::from_u128(7);
    assert_eq!(store.load(id).unwrap(), None, "nothing saved yet");
    let st = PrData {
        generation: 4,
        registrations: vec![Registration {
            initiator: "iqn.a".into(),
            isid: 1,
            tpgt: None,
            key: 9,
            origin_tpgt: 1,
            holder: true,
        }],
        reservation: Some(5),
        aptpl: true,
    };
    store.save(id, Some(&st)).unwrap();
    let back = store.load(id).unwrap().expect("saved state");
    assert_eq!(back, st);
    assert_eq!(back.res_type(), Some(PrType::WriteExclusiveRegistrantsOnly));
    // Reloaded into a LUN's state: the registration and reservation are back.
    let r = PrState::for_lun(id, Some(Arc::new(FileStore::new(dir.path().join("pr")))));
    assert!(r.is_reserved() && r.d.find(&nx("iqn.a", 1, 3)).is_some());
    let path = dir.path().join("pr").join(format!("{id}.json"));
    std::fs::write(&path, b"{not json").unwrap();
    assert!(
        store.load(id).is_err(),
        "a corrupt file is an error, not a state"
    );
    let r = PrState::for_lun(id, Some(Arc::new(FileStore::new(dir.path().join("pr")))));
    assert!(
        !r.is_active(),
        "a corrupt file leaves the LUN without reservations"
    );
    store.save(id, None).unwrap();
    assert!(!path.exists());
    store.save(id, None).unwrap();
}

/// A change is decided without touching the state: until it is committed (after its
/// store write succeeded) the LUN keeps the old state, and a conflict or refusal commits
/// nothing at all.
#[test]
fn decided_changes_take_effect_only_when_committed() {
    let mut r = PrState::default();
    let a = nx("iqn.a", 1, 1);
    let b = nx("iqn.b", 2, 1);
    ok(&mut r, &a, out_sa::REGISTER, 0, 0, 0xA);
    ok(&mut r, &a, out_sa::RESERVE, 3, 0xA, 0);
    let req = PrOutRequest::parse(u16::from(out_sa::REGISTER), 0, 0, &params(0, 0xB)).unwrap();
    let Ok(Decision::Change(change)) = r.decide(&b, &req) else {
        panic!("REGISTER decided");
    };
    assert!(r.conflicts(&b, Access::Read), "B is not registered yet");
    assert_eq!(r.d.generation, 1);
    r.commit(change);
    assert_eq!(r.d.generation, 2);
    assert!(r.d.find(&b).is_some());
    let clear = PrOutRequest::parse(u16::from(out_sa::CLEAR), 0, 0, &params(0xB, 0)).unwrap();
    assert!(matches!(r.decide(&b, &clear), Ok(Decision::Change(_))));
    assert!(r.is_reserved(), "an uncommitted CLEAR changes nothing");
}

/// The unit attentions derived from two states (for a gateway that missed a change) are
/// those the change itself announced, for every kind of change that announces any, and
/// none for those that do not; the issuer (behind another gateway) is left out as the
/// announcement leaves it out.
#[test]
fn missed_unit_attentions_match_the_announced_ones() {
    use std::collections::HashSet;
    let (a, b, c) = (nx("a", 1, 1), nx("b", 2, 2), nx("c", 3, 2));
    // WE-RO 5, WE-AR 7, WE 1.
    type Step = (&'static str, u8, u8, u64, u64);
    let cases: Vec<(&str, Vec<Step>, Step)> = vec![
        (
            "release WE-RO",
            vec![("a", out_sa::RESERVE, 5, 0xA, 0)],
            ("a", out_sa::RELEASE, 5, 0xA, 0),
        ),
        (
            "release WE-AR",
            vec![("a", out_sa::RESERVE, 7, 0xA, 0)],
            ("b", out_sa::RELEASE, 7, 0xB, 0),
        ),
        (
            "release WE",
            vec![("a", out_sa::RESERVE, 1, 0xA, 0)],
            ("a", out_sa::RELEASE, 1, 0xA, 0),
        ),
        (
            "holder of WE-RO leaves",
            vec![("a", out_sa::RESERVE, 5, 0xA, 0)],
            ("a", out_sa::REGISTER, 0, 0xA, 0),
        ),
        (
            "clear",
            vec![("a", out_sa::RESERVE, 1, 0xA, 0)],
            ("b", out_sa::CLEAR, 0, 0xB, 0),
        ),
        (
            "preempt a registrant",
            vec![],
            ("b", out_sa::PREEMPT, 0, 0xB, 0xC),
        ),
        (
            "preempt the holder, same type",
            vec![("a", out_sa::RESERVE, 1, 0xA, 0)],
            ("b", out_sa::PREEMPT, 1, 0xB, 0xA),
        ),
        (
            "preempt the holder, new type",
            vec![("a", out_sa::RESERVE, 1, 0xA, 0)],
            ("b", out_sa::PREEMPT_AND_ABORT, 5, 0xB, 0xA),
        ),
        ("unregister", vec![], ("c", out_sa::REGISTER, 0, 0xC, 0)),
    ];
    let who = |name: &str| match name {
        "a" => a.clone(),
        "b" => b.clone(),
        _ => c.clone(),
    };
    for (what, setup, step) in cases {
        let mut r = PrState::default();
        for (n, k) in [(&a, 0xA), (&b, 0xB), (&c, 0xC)] {
            ok(&mut r, n, out_sa::REGISTER, 0, 0, k);
        }
        for (n, sa, t, key, sa_key) in setup {
            ok(&mut r, &who(n), sa, t, key, sa_key);
        }
        let before = r.d.clone();
        let issuer = who(step.0);
        let announced: HashSet<_> = ok(&mut r, &issuer, step.1, step.2, step.3, step.4)
            .into_iter()
            .collect();
        let derived: HashSet<_> = rules::missed_unit_attentions(&before, &r.d)
            .iter()
            .map(|(reg, code)| (ua_nexus(reg), *code))
            .filter(|(n, _)| *n != issuer)
            .collect();
        assert_eq!(derived, announced, "{what}");
    }
}
