//! SCSI-level abuse: LBA overflow and end-of-LUN on every data command, writes from a
//! non-holder under every kind of reservation, EXTENDED COPY naming another target's LUN.

use crate::assert_session_alive;
use lunar_e2e::hostile::{
    self, assert_daemon_healthy, honest_session, victim_session, Auth, ATTACKER, LUN_BYTES,
};
use lunar_e2e::raw::{cdb10, cdb12, cdb16, cdb6, op, status, Conn, ScsiResult};

const ILLEGAL_REQUEST: u8 = 0x05;
const COPY_ABORTED: u8 = 0x0a;
/// LOGICAL BLOCK ADDRESS OUT OF RANGE.
const LBA_OUT_OF_RANGE: u8 = 0x21;
const BLOCKS: u64 = LUN_BYTES / 512;

/// COMPARE AND WRITE: 1-byte NUMBER OF LOGICAL BLOCKS at byte 13.
fn caw(lba: u64, blocks: u8) -> [u8; 16] {
    let mut c = [0u8; 16];
    c[0] = 0x89;
    c[2..10].copy_from_slice(&lba.to_be_bytes());
    c[13] = blocks;
    c
}

/// A data command at (lba, blocks) and the Data-Out it needs.
struct Case {
    name: &'static str,
    cdb: Vec<u8>,
    read_len: u32,
    data_out: Vec<u8>,
}

/// Every block command with a range, at `lba` for `blocks` blocks, in the CDB sizes whose
/// fields can hold the values.
fn data_commands(lba: u64, blocks: u32) -> Vec<Case> {
    let mut v = Vec::new();
    let bytes = blocks as usize * 512;
    let mut add = |name: &'static str, cdb: Vec<u8>, read: bool, out: usize| {
        v.push(Case {
            name,
            cdb,
            read_len: if read { bytes as u32 } else { 0 },
            data_out: vec![0x5e; out],
        })
    };
    if lba <= 0x1f_ffff && blocks <= 255 {
        add(
            "READ(6)",
            cdb6(0x08, lba as u32, blocks as u8).to_vec(),
            true,
            0,
        );
        add(
            "WRITE(6)",
            cdb6(0x0a, lba as u32, blocks as u8).to_vec(),
            false,
            bytes,
        );
    }
    if let (Ok(l), Ok(b)) = (u32::try_from(lba), u16::try_from(blocks)) {
        add("READ(10)", cdb10(0x28, l, b).to_vec(), true, 0);
        add("WRITE(10)", cdb10(0x2a, l, b).to_vec(), false, bytes);
        add(
            "WRITE AND VERIFY(10)",
            cdb10(0x2e, l, b).to_vec(),
            false,
            bytes,
        );
        add("VERIFY(10)", cdb10(0x2f, l, b).to_vec(), false, 0);
        add("PRE-FETCH(10)", cdb10(0x34, l, b).to_vec(), false, 0);
        add(
            "SYNCHRONIZE CACHE(10)",
            cdb10(0x35, l, b).to_vec(),
            false,
            0,
        );
        add("WRITE SAME(10)", cdb10(0x41, l, b).to_vec(), false, 512);
        add("READ(12)", cdb12(0xa8, l, blocks).to_vec(), true, 0);
        add("WRITE(12)", cdb12(0xaa, l, blocks).to_vec(), false, bytes);
        add(
            "WRITE AND VERIFY(12)",
            cdb12(0xae, l, blocks).to_vec(),
            false,
            bytes,
        );
        add("VERIFY(12)", cdb12(0xaf, l, blocks).to_vec(), false, 0);
    }
    add("READ(16)", cdb16(0x88, lba, blocks).to_vec(), true, 0);
    add("WRITE(16)", cdb16(0x8a, lba, blocks).to_vec(), false, bytes);
    add(
        "ORWRITE(16)",
        cdb16(0x8b, lba, blocks).to_vec(),
        false,
        bytes,
    );
    add(
        "WRITE AND VERIFY(16)",
        cdb16(0x8e, lba, blocks).to_vec(),
        false,
        bytes,
    );
    add("VERIFY(16)", cdb16(0x8f, lba, blocks).to_vec(), false, 0);
    add("PRE-FETCH(16)", cdb16(0x90, lba, blocks).to_vec(), false, 0);
    add(
        "SYNCHRONIZE CACHE(16)",
        cdb16(0x91, lba, blocks).to_vec(),
        false,
        0,
    );
    add(
        "WRITE SAME(16)",
        cdb16(0x93, lba, blocks).to_vec(),
        false,
        512,
    );
    if blocks <= 255 {
        add(
            "COMPARE AND WRITE",
            caw(lba, blocks as u8).to_vec(),
            false,
            2 * bytes,
        );
    }
    v
}

/// An UNMAP parameter list with one descriptor.
fn unmap_list(lba: u64, blocks: u32) -> Vec<u8> {
    let mut p = vec![0u8; 24];
    p[0..2].copy_from_slice(&22u16.to_be_bytes());
    p[2..4].copy_from_slice(&16u16.to_be_bytes());
    p[8..16].copy_from_slice(&lba.to_be_bytes());
    p[16..20].copy_from_slice(&blocks.to_be_bytes());
    p
}

fn unmap_cdb(len: u16) -> [u8; 10] {
    let mut c = [0u8; 10];
    c[0] = 0x42;
    c[7..9].copy_from_slice(&len.to_be_bytes());
    c
}

fn run(c: &mut Conn, case: &Case) -> ScsiResult {
    c.scsi(0, &case.cdb, case.read_len, &case.data_out)
        .unwrap_or_else(|e| panic!("{}: {e:#}", case.name))
}

/// One past the end, straddling the end, and addresses whose sum overflows: every data
/// command answers CHECK CONDITION, ILLEGAL REQUEST, LOGICAL BLOCK ADDRESS OUT OF RANGE,
/// and nothing is written.
#[test]
fn lba_overflow_and_end_of_lun_on_every_data_command() {
    let (mut d, honest) = hostile::start_watched(Auth::Open);
    let mut c = victim_session(&d, Auth::Open, ATTACKER);
    let last = BLOCKS - 1;
    let before = c.read10(0, last as u32, 1).unwrap();
    let ranges: [(u64, u32); 5] = [
        (BLOCKS, 1),
        (last, 2),
        (u64::from(u32::MAX), 1),
        (u64::MAX, 1),
        (u64::MAX, 2),
    ];
    let mut failures = Vec::new();
    for (lba, blocks) in ranges {
        for case in data_commands(lba, blocks) {
            let r = run(&mut c, &case);
            if !r.is_check(ILLEGAL_REQUEST, LBA_OUT_OF_RANGE) {
                failures.push(format!(
                    "{} LBA {lba:#x} x{blocks}: status {:#04x} sense {:?}",
                    case.name,
                    r.status,
                    r.sense_triple()
                ));
            }
        }
        let list = unmap_list(lba, blocks);
        let r = c.scsi(0, &unmap_cdb(list.len() as u16), 0, &list).unwrap();
        if !r.is_check(ILLEGAL_REQUEST, LBA_OUT_OF_RANGE) {
            failures.push(format!(
                "UNMAP LBA {lba:#x} x{blocks}: status {:#04x} sense {:?}",
                r.status,
                r.sense_triple()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "not refused as out of range:\n{}",
        failures.join("\n")
    );
    assert_eq!(
        c.read10(0, last as u32, 1).unwrap(),
        before,
        "the last block changed"
    );
    honest.assert_flood_bounds(&mut d, "LBA overflow", hostile::SMALL_ATTACK_MEMORY_MIB);
    assert_daemon_healthy(&mut d, "LBA overflow");
}

/// PERSISTENT RESERVE OUT with a 24-byte parameter list.
fn prout(c: &mut Conn, lun: u64, sa: u8, typ: u8, key: u64, sa_key: u64) -> ScsiResult {
    let mut cdb = [0u8; 10];
    cdb[0] = 0x5f;
    cdb[1] = sa;
    cdb[2] = typ;
    cdb[5..9].copy_from_slice(&24u32.to_be_bytes());
    let mut p = vec![0u8; 24];
    p[0..8].copy_from_slice(&key.to_be_bytes());
    p[8..16].copy_from_slice(&sa_key.to_be_bytes());
    c.scsi(lun, &cdb, 0, &p).unwrap()
}

/// Every write-type command (and EXTENDED COPY, MODE SELECT, START STOP UNIT) from `c`,
/// which holds no reservation, on `lun`.
fn write_type_commands(lun_naa: &[u8; 16]) -> Vec<Case> {
    let mut v: Vec<Case> = data_commands(10, 1)
        .into_iter()
        .filter(|c| {
            !c.name.starts_with("READ")
                && !c.name.starts_with("VERIFY")
                && !c.name.starts_with("PRE-FETCH")
        })
        .collect();
    let list = unmap_list(10, 1);
    v.push(Case {
        name: "UNMAP",
        cdb: unmap_cdb(list.len() as u16).to_vec(),
        read_len: 0,
        data_out: list,
    });
    let x = xcopy_list(lun_naa, lun_naa, 0, 100, 1);
    v.push(Case {
        name: "EXTENDED COPY",
        cdb: xcopy_cdb(x.len() as u32).to_vec(),
        read_len: 0,
        data_out: x,
    });
    // MODE SELECT(6) with a header only (no pages), START STOP UNIT (START=1).
    v.push(Case {
        name: "MODE SELECT(6)",
        cdb: vec![0x15, 0x10, 0, 0, 4, 0],
        read_len: 0,
        data_out: vec![0u8; 4],
    });
    v.push(Case {
        name: "START STOP UNIT",
        cdb: vec![0x1b, 0, 0, 0, 1, 0],
        read_len: 0,
        data_out: Vec::new(),
    });
    v
}

/// The 16-byte NAA designator of `lun` (Device Identification VPD page).
fn naa_of(c: &mut Conn, lun: u64) -> [u8; 16] {
    let r = c
        .scsi(lun, &[0x12, 0x01, 0x83, 0x01, 0x00, 0x00], 256, &[])
        .unwrap();
    assert_eq!(r.status, status::GOOD, "VPD 83h: {r:?}");
    let d = &r.data;
    let mut at = 4;
    while at + 4 <= d.len() {
        let len = usize::from(d[at + 3]);
        let (assoc, typ) = ((d[at + 1] >> 4) & 3, d[at + 1] & 0x0f);
        if assoc == 0 && typ == 3 && len == 16 && at + 4 + 16 <= d.len() {
            let mut naa = [0u8; 16];
            naa.copy_from_slice(&d[at + 4..at + 20]);
            return naa;
        }
        at += 4 + len;
    }
    panic!("no 16-byte NAA designator in {d:02x?}");
}

/// An EXTENDED COPY (LID1) list: one block-to-block segment from `src` to `dst`.
fn xcopy_list(src: &[u8; 16], dst: &[u8; 16], src_lba: u64, dst_lba: u64, blocks: u16) -> Vec<u8> {
    let mut p = vec![0u8; 16];
    p[1] = 0x18; // LIST ID USAGE 11b: no list identifier
    p[2..4].copy_from_slice(&64u16.to_be_bytes());
    p[8..12].copy_from_slice(&28u32.to_be_bytes());
    for naa in [src, dst] {
        let mut t = [0u8; 32];
        t[0] = 0xe4;
        t[4] = 0x01; // binary
        t[5] = 0x03; // LU association, NAA
        t[7] = 16;
        t[8..24].copy_from_slice(naa);
        t[29..32].copy_from_slice(&512u32.to_be_bytes()[1..]);
        p.extend_from_slice(&t);
    }
    let mut s = [0u8; 28];
    s[0] = 0x02;
    s[2..4].copy_from_slice(&24u16.to_be_bytes());
    s[4..6].copy_from_slice(&0u16.to_be_bytes());
    s[6..8].copy_from_slice(&1u16.to_be_bytes());
    s[10..12].copy_from_slice(&blocks.to_be_bytes());
    s[12..20].copy_from_slice(&src_lba.to_be_bytes());
    s[20..28].copy_from_slice(&dst_lba.to_be_bytes());
    p.extend_from_slice(&s);
    p
}

fn xcopy_cdb(len: u32) -> [u8; 16] {
    let mut c = [0u8; 16];
    c[0] = 0x83;
    c[10..14].copy_from_slice(&len.to_be_bytes());
    c
}

/// Under a persistent reservation (WRITE EXCLUSIVE, then EXCLUSIVE ACCESS) and a SCSI-2
/// RESERVE held by Alice, every write-type command and EXTENDED COPY from Mallory (not
/// registered) gets RESERVATION CONFLICT and changes nothing.
#[test]
fn non_holders_get_reservation_conflict_on_every_write_type_command() {
    let (mut d, honest) = hostile::start_watched(Auth::Open);
    let mut alice = victim_session(&d, Auth::Open, "iqn.2026-11.io.lunar.test:alice");
    let mut m = victim_session(&d, Auth::Open, ATTACKER);
    m.ready(1).unwrap();
    alice.ready(1).unwrap();
    let naa0 = naa_of(&mut m, 0);
    let naa1 = naa_of(&mut m, 1);
    let before = alice.read10(0, 10, 1).unwrap();
    let mut failures = Vec::new();

    // WRITE EXCLUSIVE (type 1) on LUN 0: writes conflict, READs pass.
    let r = prout(&mut alice, 0, 0x00, 0, 0, 0xa11ce);
    assert_eq!(r.status, status::GOOD, "REGISTER: {r:?}");
    let r = prout(&mut alice, 0, 0x01, 0x01, 0xa11ce, 0);
    assert_eq!(r.status, status::GOOD, "RESERVE: {r:?}");
    for case in write_type_commands(&naa0) {
        let r = run(&mut m, &case);
        if r.status != status::RESERVATION_CONFLICT {
            failures.push(format!(
                "WRITE EXCLUSIVE: {}: {:#04x} {:?}",
                case.name,
                r.status,
                r.sense_triple()
            ));
        }
    }
    assert_eq!(
        m.read10(0, 10, 1).unwrap(),
        before,
        "WRITE EXCLUSIVE blocks READs"
    );
    // Attempts to take over: RESERVE, PREEMPT and CLEAR with a guessed key, REGISTER AND
    // IGNORE EXISTING KEY followed by RESERVE.
    for (what, sa, typ, key) in [
        ("RESERVE", 0x01u8, 0x01u8, 0xa11ceu64),
        ("PREEMPT", 0x04, 0x01, 0xa11ce),
        ("CLEAR", 0x03, 0, 0xa11ce),
    ] {
        let r = prout(&mut m, 0, sa, typ, key, 0xa11ce);
        if r.status != status::RESERVATION_CONFLICT {
            failures.push(format!(
                "unregistered {what}: {:#04x} {:?}",
                r.status,
                r.sense_triple()
            ));
        }
    }

    // EXCLUSIVE ACCESS (type 3): READs conflict too.
    let r = prout(&mut alice, 0, 0x02, 0x01, 0xa11ce, 0);
    assert_eq!(r.status, status::GOOD, "RELEASE: {r:?}");
    let r = prout(&mut alice, 0, 0x01, 0x03, 0xa11ce, 0);
    assert_eq!(r.status, status::GOOD, "RESERVE EXCLUSIVE ACCESS: {r:?}");
    let r = m.scsi(0, &cdb10(0x28, 10, 1), 512, &[]).unwrap();
    if r.status != status::RESERVATION_CONFLICT {
        failures.push(format!("EXCLUSIVE ACCESS: READ(10): {:#04x}", r.status));
    }
    for case in write_type_commands(&naa0) {
        let r = run(&mut m, &case);
        if r.status != status::RESERVATION_CONFLICT {
            failures.push(format!(
                "EXCLUSIVE ACCESS: {}: {:#04x} {:?}",
                case.name,
                r.status,
                r.sense_triple()
            ));
        }
    }

    // SCSI-2 RESERVE(6) on LUN 1: everything but the usual exceptions conflicts, and an
    // EXTENDED COPY on LUN 0 that reads or writes LUN 1 does too.
    let r = alice.scsi(1, &[0x16, 0, 0, 0, 0, 0], 0, &[]).unwrap();
    assert_eq!(r.status, status::GOOD, "RESERVE(6): {r:?}");
    let before1 = alice.read10(1, 10, 1).unwrap();
    for case in write_type_commands(&naa1) {
        let r = m.scsi(1, &case.cdb, case.read_len, &case.data_out).unwrap();
        if r.status != status::RESERVATION_CONFLICT {
            failures.push(format!(
                "RESERVE(6): {}: {:#04x} {:?}",
                case.name,
                r.status,
                r.sense_triple()
            ));
        }
    }
    for (what, list) in [
        ("into the reserved LUN", xcopy_list(&naa0, &naa1, 0, 10, 1)),
        (
            "out of the reserved LUN",
            xcopy_list(&naa1, &naa0, 10, 0, 1),
        ),
    ] {
        // LUN 0 is under Alice's EXCLUSIVE ACCESS too; use an unreserved issuer LUN? There
        // is none, so issue it on LUN 1 (reserved): either way it must conflict.
        let r = m.scsi(1, &xcopy_cdb(list.len() as u32), 0, &list).unwrap();
        if r.status != status::RESERVATION_CONFLICT {
            failures.push(format!(
                "EXTENDED COPY {what}: {:#04x} {:?}",
                r.status,
                r.sense_triple()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "not refused with RESERVATION CONFLICT:\n{}",
        failures.join("\n")
    );
    assert_eq!(alice.read10(0, 10, 1).unwrap(), before, "LUN 0 changed");
    assert_eq!(alice.read10(1, 10, 1).unwrap(), before1, "LUN 1 changed");
    honest.assert_flood_bounds(&mut d, "reservations", hostile::SMALL_ATTACK_MEMORY_MIB);
    assert_daemon_healthy(&mut d, "reservations");
}

/// EXTENDED COPY resolves designators only among the issuing session's target's LUNs: a
/// list naming the honest target's LUN (as source or destination) is refused with COPY
/// ABORTED / UNREACHABLE COPY TARGET and copies nothing.
#[test]
fn extended_copy_naming_another_targets_lun_is_refused() {
    let (mut d, honest) = hostile::start_watched(Auth::Open);
    let mut h = honest_session(&d);
    let secret = vec![0x5eu8; 4096];
    h.write10(0, 0, &secret).unwrap();
    let honest_naa = naa_of(&mut h, 0);
    let mut m = victim_session(&d, Auth::Open, ATTACKER);
    let victim_naa = naa_of(&mut m, 0);
    let before = m.read10(0, 0, 8).unwrap();
    for (what, list) in [
        (
            "read another target's LUN",
            xcopy_list(&honest_naa, &victim_naa, 0, 0, 8),
        ),
        (
            "write another target's LUN",
            xcopy_list(&victim_naa, &honest_naa, 0, 0, 8),
        ),
    ] {
        let r = m.scsi(0, &xcopy_cdb(list.len() as u32), 0, &list).unwrap();
        assert!(
            r.is_check(COPY_ABORTED, 0x08),
            "EXTENDED COPY to {what}: {:#04x} {:?}",
            r.status,
            r.sense_triple()
        );
    }
    assert_eq!(
        m.read10(0, 0, 8).unwrap(),
        before,
        "the honest LUN's data leaked"
    );
    assert_eq!(
        h.read10(0, 0, 8).unwrap(),
        secret,
        "the honest LUN was overwritten"
    );
    honest.assert_flood_bounds(
        &mut d,
        "cross-target EXTENDED COPY",
        hostile::SMALL_ATTACK_MEMORY_MIB,
    );
    assert_daemon_healthy(&mut d, "cross-target EXTENDED COPY");
}

/// LUN field games: LUNs the target does not have (peripheral and flat addressing, a
/// multi-level LUN, the LUN numbers of the *other* target) answer LOGICAL UNIT NOT
/// SUPPORTED (or, for INQUIRY, peripheral qualifier 3) and never reach another target.
#[test]
fn lun_addressing_games_reach_nothing() {
    let (mut d, honest) = hostile::start_watched(Auth::Open);
    let mut h = honest_session(&d);
    let secret = vec![0x4du8; 512];
    h.write10(0, 0, &secret).unwrap();
    let mut m = victim_session(&d, Auth::Open, ATTACKER);
    m.ready(1).unwrap();
    let raw_luns: [(&str, u64); 6] = [
        ("LUN 2", 2 << 48),
        ("LUN 255", 255 << 48),
        ("flat LUN 16383", (0x4000 | 0x3fff) << 48),
        ("flat LUN 2", (0x4000 | 2) << 48),
        ("two-level LUN 0/0", 0x0000_0001_0000_0000),
        ("extended addressing", 0xc000_0000_0000_0000),
    ];
    for (what, lun) in raw_luns {
        let mut p = m.scsi_pdu(0, &cdb10(0x28, 0, 1), 512, 0);
        p.set_u64(8, lun);
        let itt = p.itt();
        m.send(&p).unwrap();
        let r = m.complete(itt, &[]).unwrap();
        assert!(
            r.is_check(ILLEGAL_REQUEST, 0x25),
            "READ of {what}: want LOGICAL UNIT NOT SUPPORTED, got {:#04x} {:?} ({} bytes)",
            r.status,
            r.sense_triple(),
            r.data.len()
        );
        assert!(
            r.data.is_empty() || r.data != secret,
            "{what} read the honest target's LUN"
        );
        let mut p = m.scsi_pdu(0, &[0x12, 0, 0, 0, 36, 0], 36, 0);
        p.set_u64(8, lun);
        let itt = p.itt();
        m.send(&p).unwrap();
        let r = m.complete(itt, &[]).unwrap();
        assert!(
            (r.status == status::GOOD && r.data.first().is_some_and(|b| b >> 5 == 3))
                || r.is_check(ILLEGAL_REQUEST, 0x25),
            "INQUIRY of {what}: {:#04x} {:?} {:02x?}",
            r.status,
            r.sense_triple(),
            r.data.first()
        );
    }
    assert_eq!(h.read10(0, 0, 1).unwrap(), secret);
    honest.assert_flood_bounds(
        &mut d,
        "LUN addressing games",
        hostile::SMALL_ATTACK_MEMORY_MIB,
    );
    assert_daemon_healthy(&mut d, "LUN addressing games");
}

/// Expected Data Transfer Length disagreeing with the CDB: the target never sends more
/// Data-In than EDTL, reports the residual, and a direction mismatch is refused without
/// a hang.
#[test]
fn transfer_length_mismatches_are_bounded() {
    let (mut d, honest) = hostile::start_watched(Auth::Open);
    let mut m = victim_session(&d, Auth::Open, ATTACKER);
    for (what, blocks, edtl) in [
        ("overflow", 8u16, 512u32),
        ("underflow", 1, 65536),
        ("EDTL 0", 8, 0),
    ] {
        let mut p = m.scsi_pdu(0, &cdb10(0x28, 0, blocks), edtl, 0);
        if edtl == 0 {
            p.bhs[1] |= 0x40; // R bit with nothing to receive
        }
        let itt = p.itt();
        m.send(&p).unwrap();
        let mut got = 0usize;
        loop {
            let r = m.recv().unwrap();
            assert_eq!(r.itt(), itt, "{what}: {}", r.describe());
            match r.opcode() {
                op::DATA_IN => {
                    got += r.data.len();
                    if r.bhs[1] & 0x01 != 0 {
                        break;
                    }
                }
                op::SCSI_RESP => break,
                _ => panic!("{what}: {}", r.describe()),
            }
        }
        assert!(
            got as u32 <= edtl,
            "{what}: {got} bytes of Data-In for EDTL {edtl}"
        );
    }
    // READ CDB with the W bit and no R bit, and WRITE CDB with the R bit and no W bit.
    for (what, cdb, read) in [
        ("READ with W", cdb10(0x28, 0, 1), false),
        ("WRITE with R", cdb10(0x2a, 0, 1), true),
    ] {
        let mut p = if read {
            m.scsi_pdu(0, &cdb, 512, 0)
        } else {
            m.scsi_pdu(0, &cdb, 0, 512)
        };
        if !read {
            p.data = vec![0x11; 512];
        }
        let itt = p.itt();
        m.send(&p).unwrap();
        let r = m.recv().unwrap();
        assert!(
            r.opcode() == op::REJECT
                || r.opcode() == op::SCSI_RESP
                || r.opcode() == op::DATA_IN
                || r.opcode() == op::R2T,
            "{what}: {}",
            r.describe()
        );
        if r.opcode() == op::REJECT {
            m.cmd_sn = r.exp_cmd_sn();
        } else if r.opcode() != op::SCSI_RESP {
            // Drain to the end of this task.
            if r.opcode() == op::R2T {
                let dout = m.data_out_pdu(
                    itt,
                    r.u32_at(20),
                    0,
                    r.u32_at(40),
                    vec![0u8; r.u32_at(44) as usize],
                    true,
                );
                m.send(&dout).unwrap();
            }
            if !(r.opcode() == op::DATA_IN && r.bhs[1] & 0x01 != 0) {
                m.complete(itt, &[]).unwrap();
            }
        }
        assert_session_alive(&mut m, what);
    }
    honest.assert_flood_bounds(
        &mut d,
        "transfer length mismatches",
        hostile::SMALL_ATTACK_MEMORY_MIB,
    );
    assert_daemon_healthy(&mut d, "transfer length mismatches");
}
