//! PDU field abuse in the full feature phase: unknown opcodes, junk AHS, reserved and
//! duplicate ITTs, CmdSN outside the window, oversized segments, discovery sessions that
//! try SCSI, logout in the middle of a command, task management and Data-Out aimed at
//! another session's tasks, text floods.

use crate::{assert_session_alive, CLOSE_WITHIN};
use lunar_e2e::hostile::{self, assert_daemon_healthy, victim_session, Auth, ATTACKER, VICTIM_IQN};
use lunar_e2e::raw::{cdb10, op, status, Conn, Pdu, RESERVED_TAG};

/// An open-target session that answers R2Ts only when told to: InitialR2T=Yes and no
/// immediate data, so every WRITE waits for the test to send its data.
fn r2t_session(d: &lunar_e2e::Lunard, name: &str) -> Conn {
    let mut c = Conn::connect(d.addr(), name).unwrap();
    let r = c
        .login(
            Some(VICTIM_IQN),
            None,
            &[("InitialR2T", "Yes"), ("ImmediateData", "No")],
        )
        .unwrap();
    assert_eq!(r.login_status(), 0, "{}", r.describe());
    c.ready(0).unwrap();
    c
}

/// Sends a WRITE(10) of `blocks` blocks at `lba` and returns (ITT, CmdSN, first R2T).
fn start_write(c: &mut Conn, lba: u32, blocks: u16) -> (u32, u32, Pdu) {
    let cmd_sn = c.cmd_sn;
    let p = c.scsi_pdu(0, &cdb10(0x2a, lba, blocks), 0, u32::from(blocks) * 512);
    let itt = p.itt();
    c.send(&p).unwrap();
    let r2t = c.recv().unwrap();
    assert_eq!(r2t.opcode(), op::R2T, "WRITE: {}", r2t.describe());
    assert_eq!(r2t.itt(), itt);
    (itt, cmd_sn, r2t)
}

/// Answers `r2t` with `data` in one Data-Out (F set) and returns the command's outcome.
fn finish_write(c: &mut Conn, itt: u32, r2t: &Pdu, data: &[u8]) -> lunar_e2e::raw::ScsiResult {
    let off = r2t.u32_at(40) as usize;
    let len = r2t.u32_at(44) as usize;
    let d = c.data_out_pdu(
        itt,
        r2t.u32_at(20),
        0,
        off as u32,
        data[off..off + len].to_vec(),
        true,
    );
    c.send(&d).unwrap();
    c.complete(itt, data).unwrap()
}

fn expect_reject(c: &mut Conn, what: &str) -> Pdu {
    let r = c.recv().unwrap_or_else(|e| panic!("{what}: {e:#}"));
    assert_eq!(
        r.opcode(),
        op::REJECT,
        "{what}: want a Reject, got {}",
        r.describe()
    );
    r
}

/// Undefined and target-only opcodes, SNACK (ERL 0) and junk AHS are rejected; the
/// session carries on.
#[test]
fn unknown_opcodes_and_junk_ahs_are_rejected() {
    let (mut d, honest) = hostile::start_watched(Auth::Open);
    let mut c = Conn::connect(d.addr(), ATTACKER).unwrap();
    c.login_ok(Some(VICTIM_IQN), None).unwrap();
    for opcode in [
        0x07u8,
        0x0f,
        0x1c,
        0x1e,
        op::SNACK,
        op::SCSI_RESP,
        op::NOP_IN,
        op::R2T,
        op::REJECT,
        0x3e,
    ] {
        let mut p = Pdu::new(opcode);
        p.bhs[1] = 0x80;
        p.set_u32(16, c.itt());
        p.set_u32(24, c.cmd_sn);
        p.set_u32(28, c.exp_stat_sn);
        p.data = vec![0xa5; 100];
        c.send(&p).unwrap();
        expect_reject(&mut c, &format!("opcode {opcode:#04x}"));
        assert_session_alive(&mut c, &format!("after opcode {opcode:#04x}"));
    }
    // Junk AHS on a SCSI command: an unknown AHS type, then a length that runs past the
    // header (TotalAHSLength says 8 bytes, the AHS claims 1000).
    for ahs in [
        vec![0x00, 0x05, 0x7f, 0x00, 1, 2, 3, 4],
        vec![0x03, 0xe8, 0x01, 0x00, 9, 9, 9, 9],
    ] {
        let mut p = c.scsi_pdu(0, &cdb10(0x28, 0, 1), 512, 0);
        p.ahs = ahs.clone();
        c.send(&p).unwrap();
        let r = c.recv().unwrap();
        assert!(
            r.opcode() == op::REJECT
                || (r.opcode() == op::SCSI_RESP && r.bhs[3] == status::CHECK_CONDITION),
            "junk AHS {ahs:02x?}: {}",
            r.describe()
        );
        // A Reject leaves the CmdSN where the target says (the rejected PDU may not have
        // consumed one).
        c.cmd_sn = r.exp_cmd_sn();
        assert_session_alive(&mut c, "after junk AHS");
    }
    // The largest AHS the header can announce (1020 bytes of garbage).
    let mut p = c.scsi_pdu(0, &cdb10(0x28, 0, 1), 512, 0);
    p.ahs = vec![0xee; 1020];
    c.send(&p).unwrap();
    let r = c.recv_opt().unwrap();
    if let Some(r) = r {
        assert!(
            r.opcode() == op::REJECT || r.opcode() == op::SCSI_RESP,
            "1020-byte AHS: {}",
            r.describe()
        );
    }
    honest.assert_flood_bounds(&mut d, "unknown opcodes", hostile::SMALL_ATTACK_MEMORY_MIB);
    assert_daemon_healthy(&mut d, "unknown opcodes");
}

/// ITT 0xffffffff on a command and an ITT still in use by a pending WRITE are rejected; the
/// pending WRITE is unaffected.
#[test]
fn reserved_and_duplicate_itts_are_rejected() {
    let (mut d, honest) = hostile::start_watched(Auth::Open);
    let mut c = r2t_session(&d, ATTACKER);
    let mut p = c.scsi_pdu(0, &cdb10(0x28, 0, 1), 512, 0);
    p.set_u32(16, RESERVED_TAG);
    c.send(&p).unwrap();
    expect_reject(&mut c, "ITT 0xffffffff");

    let (itt, _, r2t) = start_write(&mut c, 100, 8);
    let mut dup = c.scsi_pdu(0, &cdb10(0x28, 0, 1), 512, 0);
    dup.set_u32(16, itt);
    c.send(&dup).unwrap();
    expect_reject(&mut c, "duplicate ITT");
    let data = vec![0x5a; 4096];
    let res = finish_write(&mut c, itt, &r2t, &data);
    assert_eq!(
        res.status,
        status::GOOD,
        "pending WRITE after a duplicate ITT: {res:?}"
    );
    assert_eq!(c.read10(0, 100, 8).unwrap(), data);
    honest.assert_flood_bounds(&mut d, "ITT games", hostile::SMALL_ATTACK_MEMORY_MIB);
    assert_daemon_healthy(&mut d, "ITT games");
}

/// Commands far outside the CmdSN window (ahead or behind) are dropped without effect:
/// the next in-window command is answered and nothing answers the dropped one.
#[test]
fn cmdsn_outside_the_window_is_dropped() {
    let (mut d, honest) = hostile::start_watched(Auth::Open);
    let mut c = Conn::connect(d.addr(), ATTACKER).unwrap();
    c.login_ok(Some(VICTIM_IQN), None).unwrap();
    c.ready(0).unwrap();
    let marker = vec![0x77u8; 512];
    for delta in [0x8000_0000u32, 0x7fff_ffff, 1000, 0xffff_fff0] {
        let mut p = c.scsi_pdu(0, &cdb10(0x2a, 7, 1), 0, 512);
        c.cmd_sn = c.cmd_sn.wrapping_sub(1);
        let sn = c.cmd_sn.wrapping_add(delta);
        p.set_u32(24, sn);
        p.data = marker.clone();
        let dropped = p.itt();
        c.send(&p).unwrap();
        let mut q = c.scsi_pdu(0, &cdb10(0x00, 0, 0), 0, 0); // TEST UNIT READY
        let itt = q.itt();
        q.bhs[1] = 0x81;
        c.send(&q).unwrap();
        loop {
            let r = c.recv().unwrap();
            assert_ne!(
                r.itt(),
                dropped,
                "CmdSN +{delta:#x} answered: {}",
                r.describe()
            );
            if r.itt() == itt {
                break;
            }
        }
    }
    assert_ne!(
        c.read10(0, 7, 1).unwrap(),
        marker,
        "an out-of-window WRITE was executed"
    );
    honest.assert_flood_bounds(&mut d, "CmdSN window", hostile::SMALL_ATTACK_MEMORY_MIB);
    assert_daemon_healthy(&mut d, "CmdSN window");
}

/// A 16 MiB DataSegmentLength after login (far above MaxRecvDataSegmentLength): the
/// connection is closed before the data is awaited; other sessions carry on.
#[test]
fn huge_data_segment_after_login_closes_the_connection() {
    let (mut d, honest) = hostile::start_watched(Auth::Open);
    let mut victim = victim_session(&d, Auth::Open, "iqn.2026-11.io.lunar.test:bystander");
    let mut c = Conn::connect(d.addr(), ATTACKER).unwrap();
    c.login_ok(Some(VICTIM_IQN), None).unwrap();
    let p = c.scsi_pdu(0, &cdb10(0x2a, 0, 1), 0, 512);
    let mut bytes = p.encode();
    bytes[5..8].copy_from_slice(&[0xff, 0xff, 0xff]);
    c.send_raw(&bytes).unwrap();
    c.send_raw(&[0u8; 8192]).unwrap();
    let seen = c.expect_closed_within(CLOSE_WITHIN).unwrap();
    assert!(
        seen.iter()
            .all(|p| p.opcode() != op::SCSI_RESP || p.bhs[3] != status::GOOD),
        "16 MiB segment WRITE succeeded"
    );
    assert_session_alive(&mut victim, "16 MiB segment on another connection");
    honest.assert_flood_bounds(
        &mut d,
        "16 MiB segment after login",
        hostile::SMALL_ATTACK_MEMORY_MIB,
    );
    assert_daemon_healthy(&mut d, "16 MiB segment after login");
}

/// A discovery session carries no SCSI commands and no task management.
#[test]
fn discovery_session_refuses_scsi_and_task_management() {
    let (mut d, honest) = hostile::start_watched(Auth::Open);
    let mut c = Conn::connect(d.addr(), ATTACKER).unwrap();
    c.login_ok(None, None).unwrap();
    for cdb in [cdb10(0x28, 0, 1), cdb10(0x2a, 0, 1)] {
        let write = cdb[0] == 0x2a;
        let mut p = c.scsi_pdu(
            0,
            &cdb,
            if write { 0 } else { 512 },
            if write { 512 } else { 0 },
        );
        if write {
            p.data = vec![0xab; 512];
        }
        c.send(&p).unwrap();
        let r = c.recv().unwrap();
        assert_eq!(
            r.opcode(),
            op::REJECT,
            "SCSI in discovery: {}",
            r.describe()
        );
    }
    for function in [1u8, 5, 6, 7] {
        let mut p = Pdu::new(op::TMF_REQ).immediate();
        p.bhs[1] = 0x80 | function;
        p.set_u32(16, c.itt());
        p.set_u32(20, 1);
        p.set_u32(24, c.cmd_sn);
        p.set_u32(28, c.exp_stat_sn);
        c.send(&p).unwrap();
        let r = c.recv().unwrap();
        assert!(
            r.opcode() == op::REJECT || (r.opcode() == op::TMF_RESP && r.bhs[2] != 0),
            "TMF {function} in discovery: {}",
            r.describe()
        );
    }
    // SendTargets still works.
    let mut p = Pdu::new(op::TEXT_REQ).immediate();
    p.bhs[1] = 0x80;
    p.set_u32(16, c.itt());
    p.set_u32(20, RESERVED_TAG);
    p.set_u32(24, c.cmd_sn);
    p.set_u32(28, c.exp_stat_sn);
    p.data = b"SendTargets=All\0".to_vec();
    c.send(&p).unwrap();
    let r = c.recv().unwrap();
    assert_eq!(r.opcode(), op::TEXT_RESP, "{}", r.describe());
    honest.assert_flood_bounds(
        &mut d,
        "discovery session",
        hostile::SMALL_ATTACK_MEMORY_MIB,
    );
    assert_daemon_healthy(&mut d, "discovery session");
}

/// Logout in the middle of a WRITE that still waits for data: answered, the connection
/// closes, the half-written command has no effect.
#[test]
fn logout_in_the_middle_of_a_write() {
    let (mut d, honest) = hostile::start_watched(Auth::Open);
    let mut c = r2t_session(&d, ATTACKER);
    let (itt, _, r2t) = start_write(&mut c, 200, 8);
    // Half of the data, then logout.
    let d1 = c.data_out_pdu(itt, r2t.u32_at(20), 0, 0, vec![0x66; 2048], false);
    c.send(&d1).unwrap();
    let r = c.logout().unwrap();
    assert_eq!(r.opcode(), op::LOGOUT_RESP);
    c.expect_closed_within(CLOSE_WITHIN).unwrap();
    let mut h = victim_session(&d, Auth::Open, "iqn.2026-11.io.lunar.test:reader");
    assert_ne!(
        h.read10(0, 200, 8).unwrap()[..2048],
        [0x66; 2048],
        "half a WRITE landed"
    );
    honest.assert_flood_bounds(
        &mut d,
        "logout mid-command",
        hostile::SMALL_ATTACK_MEMORY_MIB,
    );
    assert_daemon_healthy(&mut d, "logout mid-command");
}

/// ABORT TASK naming another session's ITT, and Data-Out carrying another session's ITT and
/// TTT, do not touch that session's task: its WRITE completes with its own data.
#[test]
fn task_management_and_data_out_cannot_reach_another_session() {
    let (mut d, honest) = hostile::start_watched(Auth::Open);
    let mut a = r2t_session(&d, "iqn.2026-11.io.lunar.test:alice");
    let mut m = r2t_session(&d, ATTACKER);
    let (itt, cmd_sn, r2t) = start_write(&mut a, 300, 8);
    let ttt = r2t.u32_at(20);

    // ABORT TASK of Alice's ITT (and her CmdSN) from Mallory's session.
    let mut p = Pdu::new(op::TMF_REQ).immediate();
    p.bhs[1] = 0x81;
    p.set_u64(8, lunar_e2e::raw::lun_field(0));
    p.set_u32(16, m.itt());
    p.set_u32(20, itt);
    p.set_u32(24, m.cmd_sn);
    p.set_u32(28, m.exp_stat_sn);
    p.set_u32(32, cmd_sn);
    m.send(&p).unwrap();
    let r = m.recv().unwrap();
    assert_eq!(r.opcode(), op::TMF_RESP, "{}", r.describe());
    // Data-Out into Alice's transfer from Mallory's connection.
    let evil = m.data_out_pdu(itt, ttt, 0, 0, vec![0xee; 4096], true);
    m.send(&evil).unwrap();
    assert_session_alive(&mut m, "after foreign Data-Out");

    let data = vec![0x3c; 4096];
    let res = finish_write(&mut a, itt, &r2t, &data);
    assert_eq!(res.status, status::GOOD, "Alice's WRITE: {res:?}");
    assert_eq!(a.read10(0, 300, 8).unwrap(), data, "Alice's data");
    honest.assert_flood_bounds(
        &mut d,
        "cross-session TMF and Data-Out",
        hostile::SMALL_ATTACK_MEMORY_MIB,
    );
    assert_daemon_healthy(&mut d, "cross-session TMF and Data-Out");
}

/// Text request floods in the full feature phase: endless C-bit continuation and a storm
/// of SendTargets requests are bounded; the session or at least the daemon survives.
#[test]
fn text_request_floods_are_bounded() {
    let (mut d, honest) = hostile::start_watched(Auth::Open);
    let mut c = Conn::connect(d.addr(), ATTACKER).unwrap();
    c.login_ok(Some(VICTIM_IQN), None).unwrap();
    // 400 continued Text Requests of 8 KiB (3.2 MB for one key set).
    let itt = c.itt();
    let chunk = vec![b'Z'; 8192];
    let mut stopped = false;
    for n in 0..400 {
        let mut p = Pdu::new(op::TEXT_REQ).immediate();
        p.bhs[1] = 0x40; // C
        p.set_u32(16, itt);
        p.set_u32(20, RESERVED_TAG);
        p.set_u32(24, c.cmd_sn);
        p.set_u32(28, c.exp_stat_sn);
        p.data = if n == 0 {
            b"X-flood=".to_vec()
        } else {
            chunk.clone()
        };
        if c.send(&p).is_err() {
            stopped = true;
            break;
        }
        match c.recv_opt().unwrap() {
            None => {
                stopped = true;
                break;
            }
            Some(r) if r.opcode() == op::REJECT => {
                stopped = true;
                break;
            }
            Some(r) if r.opcode() == op::TEXT_RESP && r.bhs[1] & 0x80 == 0 => {
                // Continue: the target acknowledges and waits for the rest.
                if r.u32_at(20) != RESERVED_TAG {
                    // It wants the target transfer tag echoed.
                }
            }
            Some(r) => panic!("continued text PDU {n}: {}", r.describe()),
        }
    }
    assert!(stopped, "3.2 MB of continued text accepted");
    // A storm of SendTargets in a normal session.
    let mut c = Conn::connect(d.addr(), ATTACKER).unwrap();
    c.login_ok(Some(VICTIM_IQN), None).unwrap();
    for _ in 0..500 {
        let mut p = Pdu::new(op::TEXT_REQ);
        p.bhs[1] = 0x80;
        p.set_u32(16, c.itt());
        p.set_u32(20, RESERVED_TAG);
        p.set_u32(24, c.cmd_sn);
        c.cmd_sn += 1;
        p.set_u32(28, c.exp_stat_sn);
        p.data = b"SendTargets=All\0".to_vec();
        c.send(&p).unwrap();
        let r = c.recv().unwrap();
        assert!(
            r.opcode() == op::TEXT_RESP || r.opcode() == op::REJECT,
            "{}",
            r.describe()
        );
    }
    hostile::assert_memory_bounded(&mut d, "text floods", 64);
    honest.assert_flood_bounds(&mut d, "text floods", hostile::SMALL_ATTACK_MEMORY_MIB);
    assert_daemon_healthy(&mut d, "text floods");
}

/// Immediate commands bypass the CmdSN window; a flood of 300 immediate WRITEs that never
/// get their data is bounded by the task table (twice the window): the excess is rejected
/// (IMMEDIATE COMMAND REJECT), and the session still answers.
#[test]
fn immediate_command_flood_is_bounded() {
    let (mut d, honest) = hostile::start_watched(Auth::Open);
    let mut c = r2t_session(&d, ATTACKER);
    for i in 0..300u32 {
        let sn = c.cmd_sn;
        let mut p = c.scsi_pdu(0, &cdb10(0x2a, 5000 + i, 1), 0, 512);
        c.cmd_sn = sn;
        p.bhs[0] |= 0x40;
        c.send(&p).unwrap();
    }
    let (mut r2ts, mut rejects) = (0, 0);
    while r2ts + rejects < 300 {
        let p = c.recv().unwrap();
        match p.opcode() {
            op::R2T => r2ts += 1,
            op::REJECT => {
                assert_eq!(
                    p.bhs[2],
                    0x06,
                    "want IMMEDIATE COMMAND REJECT: {}",
                    p.describe()
                );
                rejects += 1;
            }
            _ => panic!("immediate flood: {}", p.describe()),
        }
    }
    eprintln!("immediate flood: {r2ts} admitted, {rejects} rejected");
    assert!(rejects > 0, "300 immediate commands admitted");
    assert!(
        r2ts <= 128,
        "{r2ts} immediate commands admitted (window 64)"
    );
    assert_session_alive(&mut c, "immediate command flood");
    honest.assert_flood_bounds(
        &mut d,
        "immediate command flood",
        hostile::SMALL_ATTACK_MEMORY_MIB,
    );
    assert_daemon_healthy(&mut d, "immediate command flood");
}

/// TARGET WARM RESET and TARGET COLD RESET from a session on the victim target reach only
/// that target: a session on the other target sees no unit attention and keeps its
/// connection.
#[test]
fn target_resets_do_not_cross_targets() {
    let (mut d, watcher) = hostile::start_watched(Auth::Open);
    let mut honest = lunar_e2e::hostile::honest_session(&d);
    for function in [6u8, 7] {
        let mut m = victim_session(&d, Auth::Open, ATTACKER);
        let mut p = Pdu::new(op::TMF_REQ).immediate();
        p.bhs[1] = 0x80 | function;
        p.set_u32(16, m.itt());
        p.set_u32(20, RESERVED_TAG);
        p.set_u32(24, m.cmd_sn);
        p.set_u32(28, m.exp_stat_sn);
        m.send(&p).unwrap();
        let r = m.recv_opt().unwrap();
        if let Some(r) = r {
            assert_eq!(r.opcode(), op::TMF_RESP, "TMF {function}: {}", r.describe());
        }
        let r = honest
            .scsi_once(0, &cdb10(0x28, 0, 8), 4096, &[])
            .unwrap_or_else(|e| panic!("honest session after TMF {function}: {e:#}"));
        assert_eq!(
            r.status,
            status::GOOD,
            "TMF {function} on the victim target reached the honest target: {:?}",
            r.sense_triple()
        );
    }
    watcher.assert_flood_bounds(&mut d, "target resets", hostile::SMALL_ATTACK_MEMORY_MIB);
    assert_daemon_healthy(&mut d, "target resets");
}

/// With CRC32C digests negotiated: a data digest error is rejected (DATA DIGEST ERROR)
/// and its command not executed, the session continues; a header digest error closes the
/// connection (the header cannot be trusted, RFC 7143 section 7.8).
#[test]
fn digest_errors_are_refused() {
    let (mut d, honest) = hostile::start_watched(Auth::Open);
    let mut c = Conn::connect(d.addr(), ATTACKER).unwrap();
    let r = c
        .login(
            Some(VICTIM_IQN),
            None,
            &[
                ("HeaderDigest", "CRC32C,None"),
                ("DataDigest", "CRC32C,None"),
            ],
        )
        .unwrap();
    assert_eq!(r.login_status(), 0, "{}", r.describe());
    assert_eq!(
        c.digests,
        (true, true),
        "digests not negotiated: {:?}",
        r.keys()
    );
    c.ready(0).unwrap();
    let before = c.read10(0, 400, 1).unwrap();

    // Immediate-data WRITE with a corrupt data digest.
    let mut p = c.scsi_pdu(0, &cdb10(0x2a, 400, 1), 0, 512);
    p.data = vec![0x99; 512];
    let mut bytes = p.encode_with_digests(true, true);
    let n = bytes.len();
    bytes[n - 1] ^= 0xff;
    c.send_raw(&bytes).unwrap();
    let r = c.recv().unwrap();
    assert_eq!(r.opcode(), op::REJECT, "bad data digest: {}", r.describe());
    assert_eq!(r.bhs[2], 0x02, "want DATA DIGEST ERROR: {}", r.describe());
    // The rejected command consumed no CmdSN the target waits for.
    c.cmd_sn = r.exp_cmd_sn();
    assert_session_alive(&mut c, "after a data digest error");
    assert_eq!(
        c.read10(0, 400, 1).unwrap(),
        before,
        "a WRITE with a bad data digest landed"
    );

    // A corrupt header digest.
    let p = c.scsi_pdu(0, &cdb10(0x28, 0, 1), 512, 0);
    let mut bytes = p.encode_with_digests(true, true);
    bytes[48] ^= 0xff;
    c.send_raw(&bytes).unwrap();
    let seen = c.expect_closed_within(CLOSE_WITHIN).unwrap();
    assert!(
        seen.iter()
            .all(|p| p.opcode() != op::DATA_IN && p.opcode() != op::SCSI_RESP),
        "a PDU with a bad header digest was executed"
    );
    honest.assert_flood_bounds(&mut d, "digest errors", hostile::SMALL_ATTACK_MEMORY_MIB);
    assert_daemon_healthy(&mut d, "digest errors");
}

/// An ORDERED WRITE that never gets its data blocks later commands of its own session only:
/// a bystander session on the same LUN keeps reading, and ACA or reserved task attributes
/// get an answer, not a hang.
#[test]
fn stalled_ordered_task_and_odd_task_attributes_stay_within_the_session() {
    let (mut d, honest) = hostile::start_watched(Auth::Open);
    let mut m = r2t_session(&d, ATTACKER);
    let mut bystander = victim_session(&d, Auth::Open, "iqn.2026-11.io.lunar.test:bystander");
    let mut p = m.scsi_pdu(0, &cdb10(0x2a, 600, 8), 0, 4096);
    p.bhs[1] = (p.bhs[1] & !0x07) | 0x02; // ORDERED
    m.send(&p).unwrap();
    let r2t = m.recv().unwrap();
    assert_eq!(r2t.opcode(), op::R2T, "{}", r2t.describe());
    // The WRITE now waits for data that never comes.
    assert_session_alive(&mut bystander, "stalled ORDERED task on another session");
    // ACA (4) and reserved attributes (5-7) on the attacker's session: answered.
    let mut c = Conn::connect(d.addr(), ATTACKER).unwrap();
    c.login_ok(Some(VICTIM_IQN), None).unwrap();
    c.ready(0).unwrap();
    for attr in 4u8..=7 {
        let mut p = c.scsi_pdu(0, &cdb10(0x28, 0, 1), 512, 0);
        p.bhs[1] = (p.bhs[1] & !0x07) | attr;
        let itt = p.itt();
        c.send(&p).unwrap();
        let r = c.recv().unwrap();
        assert!(
            (r.itt() == itt && matches!(r.opcode(), op::SCSI_RESP | op::DATA_IN))
                || r.opcode() == op::REJECT,
            "task attribute {attr}: {}",
            r.describe()
        );
        if r.opcode() == op::DATA_IN && r.bhs[1] & 0x01 == 0 {
            c.complete(itt, &[]).unwrap();
        }
        if r.opcode() == op::REJECT {
            c.cmd_sn = r.exp_cmd_sn();
        }
    }
    assert_session_alive(&mut c, "odd task attributes");
    honest.assert_flood_bounds(
        &mut d,
        "ORDERED stall and task attributes",
        hostile::SMALL_ATTACK_MEMORY_MIB,
    );
    assert_daemon_healthy(&mut d, "ORDERED stall and task attributes");
}
