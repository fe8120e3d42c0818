//! Data-Out sequencing games: every way a Data-Out PDU can be out of order, out of range
//! or unasked for, immediate data abuse, and transfer lengths beyond what the LUN accepts.

use crate::assert_session_alive;
use lunar_e2e::hostile::{self, assert_daemon_healthy, Auth, ATTACKER, VICTIM_IQN};
use lunar_e2e::raw::{cdb10, cdb16, op, status, Conn, ScsiResult, RESERVED_TAG};

/// ABORTED COMMAND.
const ABORTED_COMMAND: u8 = 0x0b;
/// ILLEGAL REQUEST.
const ILLEGAL_REQUEST: u8 = 0x05;

fn session(d: &lunar_e2e::Lunard, overrides: &[(&str, &str)]) -> Conn {
    let mut c = Conn::connect(d.addr(), ATTACKER).unwrap();
    let r = c.login(Some(VICTIM_IQN), None, overrides).unwrap();
    assert_eq!(r.login_status(), 0, "{}", r.describe());
    c.ready(0).unwrap();
    c
}

/// Waits for the SCSI Response of `itt`, ignoring nothing else: any other PDU fails.
fn response_of(c: &mut Conn, itt: u32, what: &str) -> ScsiResult {
    loop {
        let p = c.recv().unwrap_or_else(|e| panic!("{what}: {e:#}"));
        match p.opcode() {
            op::SCSI_RESP if p.itt() == itt => {
                return ScsiResult {
                    status: p.bhs[3],
                    response: p.bhs[2],
                    sense: lunar_e2e::raw::sense_of(&p.data),
                    data: Vec::new(),
                    r2ts: 0,
                }
            }
            op::R2T if p.itt() == itt => {}
            _ => panic!("{what}: unexpected {}", p.describe()),
        }
    }
}

fn assert_data_phase_error(r: &ScsiResult, what: &str) {
    assert!(
        r.is_check(ABORTED_COMMAND, 0x4b) || r.response != 0,
        "{what}: want CHECK CONDITION ABORTED COMMAND/DATA PHASE ERROR, got {r:?}"
    );
}

/// Every sequencing error of solicited Data-Out fails the command (DATA PHASE ERROR) and
/// leaves the session working; the LUN keeps its old contents.
#[test]
fn solicited_data_out_sequencing_errors_fail_the_command() {
    let (mut d, honest) = hostile::start_watched(Auth::Open);
    let mut c = session(&d, &[("InitialR2T", "Yes"), ("ImmediateData", "No")]);
    let lba = 1000;
    let before = c.read10(0, lba, 16).unwrap();
    // (what, TTT delta, DataSN, offset, length, F)
    let cases: [(&str, u32, u32, u32, usize, bool); 7] = [
        ("wrong TTT", 1, 0, 0, 8192, true),
        ("reserved TTT", u32::MAX, 0, 0, 8192, true),
        ("DataSN 1 first", 0, 1, 0, 8192, true),
        ("offset not at the start", 0, 0, 512, 7680, true),
        ("more than solicited", 0, 0, 0, 8704, true),
        ("F bit before the end", 0, 0, 0, 4096, true),
        ("offset overflow", 0, 0, 0xffff_fe00, 512, true),
    ];
    for (what, ttt_delta, data_sn, offset, len, fin) in cases {
        let p = c.scsi_pdu(0, &cdb10(0x2a, lba, 16), 0, 8192);
        let itt = p.itt();
        c.send(&p).unwrap();
        let r2t = c.recv().unwrap();
        assert_eq!(r2t.opcode(), op::R2T, "{what}: {}", r2t.describe());
        let ttt = if ttt_delta == u32::MAX {
            RESERVED_TAG
        } else {
            r2t.u32_at(20).wrapping_add(ttt_delta)
        };
        let dout = c.data_out_pdu(itt, ttt, data_sn, offset, vec![0xd1; len], fin);
        c.send(&dout).unwrap();
        let r = response_of(&mut c, itt, what);
        assert_data_phase_error(&r, what);
        assert_session_alive(&mut c, what);
    }
    // DataSN repeated within one burst.
    let p = c.scsi_pdu(0, &cdb10(0x2a, lba, 16), 0, 8192);
    let itt = p.itt();
    c.send(&p).unwrap();
    let r2t = c.recv().unwrap();
    let ttt = r2t.u32_at(20);
    c.send(&c.data_out_pdu(itt, ttt, 0, 0, vec![0xd2; 4096], false))
        .unwrap();
    c.send(&c.data_out_pdu(itt, ttt, 0, 4096, vec![0xd2; 4096], true))
        .unwrap();
    assert_data_phase_error(
        &response_of(&mut c, itt, "DataSN repeated"),
        "DataSN repeated",
    );
    // Data-Out for a task that does not exist: ignored (ERL 0), nothing answers it.
    let stray = c.data_out_pdu(0x00ab_cdef, 0x1234, 0, 0, vec![0xd3; 512], true);
    c.send(&stray).unwrap();
    assert_session_alive(&mut c, "stray Data-Out");
    assert_eq!(
        c.read10(0, lba, 16).unwrap(),
        before,
        "a failed WRITE changed the LUN"
    );
    honest.assert_flood_bounds(
        &mut d,
        "solicited Data-Out games",
        hostile::SMALL_ATTACK_MEMORY_MIB,
    );
    assert_daemon_healthy(&mut d, "solicited Data-Out games");
}

/// Unsolicited data games: unsolicited Data-Out when InitialR2T=Yes, beyond
/// FirstBurstLength, out of sequence; immediate data longer than EDTL or FirstBurstLength,
/// or on a READ.
#[test]
fn unsolicited_and_immediate_data_games_are_refused() {
    let (mut d, honest) = hostile::start_watched(Auth::Open);
    // InitialR2T=Yes: unsolicited Data-Out is a protocol error.
    let mut c = session(&d, &[("InitialR2T", "Yes"), ("ImmediateData", "No")]);
    let p = c.scsi_pdu(0, &cdb10(0x2a, 2000, 8), 0, 4096);
    let itt = p.itt();
    c.send(&p).unwrap();
    let _r2t = c.recv().unwrap();
    c.send(&c.data_out_pdu(itt, RESERVED_TAG, 0, 0, vec![1; 4096], true))
        .unwrap();
    assert_data_phase_error(
        &response_of(&mut c, itt, "unsolicited with InitialR2T"),
        "unsolicited with InitialR2T",
    );
    assert_session_alive(&mut c, "unsolicited with InitialR2T");

    // InitialR2T=No, FirstBurstLength 8 KiB.
    let mut c = session(
        &d,
        &[
            ("InitialR2T", "No"),
            ("ImmediateData", "Yes"),
            ("FirstBurstLength", "8192"),
        ],
    );
    assert!(!c.neg.initial_r2t, "InitialR2T=No not negotiated");
    let first_burst = c.neg.first_burst as usize;
    // Unsolicited data past FirstBurstLength.
    let p = c.scsi_pdu(0, &cdb10(0x2a, 2000, 64), 0, 32768);
    let itt = p.itt();
    c.send(&p).unwrap();
    c.send(&c.data_out_pdu(itt, RESERVED_TAG, 0, 0, vec![2; first_burst + 512], true))
        .unwrap();
    assert_data_phase_error(
        &response_of(&mut c, itt, "beyond FirstBurstLength"),
        "beyond FirstBurstLength",
    );
    // Unsolicited DataSN out of sequence.
    let p = c.scsi_pdu(0, &cdb10(0x2a, 2000, 64), 0, 32768);
    let itt = p.itt();
    c.send(&p).unwrap();
    c.send(&c.data_out_pdu(itt, RESERVED_TAG, 5, 0, vec![3; 512], false))
        .unwrap();
    assert_data_phase_error(
        &response_of(&mut c, itt, "unsolicited DataSN"),
        "unsolicited DataSN",
    );
    assert_session_alive(&mut c, "unsolicited games");

    // Immediate data longer than EDTL, longer than FirstBurstLength, on a READ.
    for (what, cdb, edtl, imm, write) in [
        (
            "immediate > EDTL",
            cdb10(0x2a, 2000, 1),
            512u32,
            1024usize,
            true,
        ),
        (
            "immediate > FirstBurstLength",
            cdb10(0x2a, 2000, 64),
            32768,
            first_burst + 512,
            true,
        ),
        (
            "immediate data on a READ",
            cdb10(0x28, 2000, 1),
            512,
            512,
            false,
        ),
    ] {
        let mut p = if write {
            c.scsi_pdu(0, &cdb, 0, edtl)
        } else {
            c.scsi_pdu(0, &cdb, edtl, 0)
        };
        p.data = vec![4; imm];
        let itt = p.itt();
        c.send(&p).unwrap();
        let r = c.recv().unwrap();
        assert!(
            r.opcode() == op::REJECT
                || (r.opcode() == op::SCSI_RESP && r.itt() == itt && r.bhs[3] != status::GOOD),
            "{what}: {}",
            r.describe()
        );
        if r.opcode() == op::REJECT {
            // A rejected command consumed no CmdSN slot the target will wait for.
            c.cmd_sn = r.exp_cmd_sn();
        }
        assert_session_alive(&mut c, what);
    }
    honest.assert_flood_bounds(
        &mut d,
        "unsolicited games",
        hostile::SMALL_ATTACK_MEMORY_MIB,
    );
    assert_daemon_healthy(&mut d, "unsolicited games");
}

/// WRITE(16) asking for 2^32-1 blocks, with an EDTL to match and with a small one: refused
/// with ILLEGAL REQUEST / INVALID FIELD IN CDB, and never by buffering gigabytes.
#[test]
fn write16_with_a_4g_block_transfer_length_is_refused() {
    let (mut d, honest) = hostile::start_watched(Auth::Open);
    let mut c = session(&d, &[("InitialR2T", "Yes"), ("ImmediateData", "No")]);
    for edtl in [u32::MAX, 4096] {
        let p = c.scsi_pdu(0, &cdb16(0x8a, 0, u32::MAX), 0, edtl);
        let itt = p.itt();
        c.send(&p).unwrap();
        // Answer what is solicited (at most EDTL), then expect the refusal.
        let r = c
            .complete(itt, &vec![0u8; edtl.min(1 << 20) as usize])
            .unwrap();
        assert!(
            r.is_check(ILLEGAL_REQUEST, 0x24),
            "WRITE(16) of 2^32-1 blocks, EDTL {edtl:#x}: {r:?}"
        );
        assert_eq!(
            r.r2ts,
            if edtl == u32::MAX { 0 } else { r.r2ts },
            "data solicited for a 2^32-1 block WRITE"
        );
    }
    assert_session_alive(&mut c, "WRITE(16) 2^32-1");
    honest.assert_flood_bounds(&mut d, "WRITE(16) 2^32-1", hostile::SMALL_ATTACK_MEMORY_MIB);
    assert_daemon_healthy(&mut d, "WRITE(16) 2^32-1");
}

/// A WRITE longer than the Block Limits VPD's MAXIMUM TRANSFER LENGTH (but under the
/// front end's 64 MiB hard cap) is refused before any data is solicited: CHECK CONDITION,
/// ILLEGAL REQUEST, INVALID FIELD IN CDB (24/00), no R2T. Otherwise every such command
/// makes the target buffer up to 64 MiB it will refuse anyway.
#[test]
fn write_above_max_transfer_length_is_refused_before_any_data() {
    let (mut d, honest) = hostile::start_watched(Auth::Open);
    let mut c = session(&d, &[("InitialR2T", "Yes"), ("ImmediateData", "No")]);
    // Block Limits VPD (B0h): MAXIMUM TRANSFER LENGTH in blocks at bytes 8..12.
    let mut inq = [0u8; 6];
    inq[0] = 0x12;
    inq[1] = 0x01;
    inq[2] = 0xb0;
    inq[4] = 0xff;
    let vpd = c.scsi(0, &inq, 255, &[]).unwrap();
    assert_eq!(vpd.status, status::GOOD, "Block Limits VPD: {vpd:?}");
    let max_blocks = u32::from_be_bytes([vpd.data[8], vpd.data[9], vpd.data[10], vpd.data[11]]);
    assert!(
        max_blocks > 0 && max_blocks < 65535,
        "MAXIMUM TRANSFER LENGTH {max_blocks}"
    );
    let blocks = (max_blocks * 2).min(65535) as u16;
    let p = c.scsi_pdu(0, &cdb10(0x2a, 0, blocks), 0, u32::from(blocks) * 512);
    let itt = p.itt();
    c.send(&p).unwrap();
    let r = c.recv().unwrap();
    assert_eq!(
        r.opcode(),
        op::SCSI_RESP,
        "WRITE of {blocks} blocks (max {max_blocks}): want an immediate refusal, got {}",
        r.describe()
    );
    assert_eq!(r.itt(), itt);
    let sense = lunar_e2e::raw::sense_of(&r.data);
    assert_eq!(r.bhs[3], status::CHECK_CONDITION);
    assert_eq!(
        lunar_e2e::raw::sense_triple(&sense).map(|(k, a, _)| (k, a)),
        Some((ILLEGAL_REQUEST, 0x24)),
        "sense {sense:02x?}"
    );
    assert_session_alive(&mut c, "WRITE above MAXIMUM TRANSFER LENGTH");
    honest.assert_flood_bounds(
        &mut d,
        "WRITE above MAXIMUM TRANSFER LENGTH",
        hostile::SMALL_ATTACK_MEMORY_MIB,
    );
    assert_daemon_healthy(&mut d, "WRITE above MAXIMUM TRANSFER LENGTH");
}
