//! Floods, bounded in count and time, on loopback: half-open logins, idle connections,
//! failed-CHAP storms, big unfinished WRITEs over many connections, and a PERSISTENT
//! RESERVE OUT with 150 000 TransportIDs. During each, an honest session on *another*
//! target keeps reading, and its READ latency must stay under
//! [`HONEST_READ_P99_BOUND`](lunar_e2e::hostile::HONEST_READ_P99_BOUND) (p99) and
//! [`HONEST_READ_MAX_BOUND`](lunar_e2e::hostile::HONEST_READ_MAX_BOUND) (max); lunard's peak resident
//! memory must stay under the bound stated per test.

use crate::flood_lock;
use lunar_e2e::config::ByteSize;
use lunar_e2e::hostile::{
    self, assert_daemon_healthy, Auth, HonestReader, ATTACKER, CHAP_USER, VICTIM_IQN,
};
use lunar_e2e::raw::{cdb10, op, status, Chap, Conn};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// Opens up to `n` TCP connections to `addr`; each sends `prefix` (possibly nothing) and
/// then stays silent. A connection the target does not accept within 3 s (a full listen
/// backlog, a cap enforced before accepting) ends the flood: the rest count as refused.
/// Returns the open connections and how many were refused.
fn open_silent(addr: SocketAddr, n: usize, prefix: &[u8]) -> (Vec<TcpStream>, usize) {
    let mut socks = Vec::with_capacity(n);
    for _ in 0..n {
        match TcpStream::connect_timeout(&addr, Duration::from_secs(3)) {
            Ok(mut s) => {
                if !prefix.is_empty() {
                    let _ = s.write_all(prefix);
                }
                socks.push(s);
            }
            Err(_) => break,
        }
    }
    let refused = n - socks.len();
    (socks, refused)
}

/// How many of `socks` the target has closed by `deadline` (each is read until EOF, a
/// reset, or the deadline).
fn count_closed(socks: &mut [TcpStream], deadline: Instant) -> usize {
    let mut closed = 0;
    for s in socks.iter_mut() {
        let mut buf = [0u8; 4096];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                let _ = s.set_nonblocking(true);
                match s.read(&mut buf) {
                    Ok(0) => closed += 1,
                    Err(e) if e.kind() != std::io::ErrorKind::WouldBlock => closed += 1,
                    _ => {}
                }
                break;
            }
            let _ = s.set_read_timeout(Some(left));
            match s.read(&mut buf) {
                Ok(0) => {
                    closed += 1;
                    break;
                }
                Ok(_) => continue,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    break
                }
                Err(_) => {
                    closed += 1;
                    break;
                }
            }
        }
    }
    closed
}

/// 1300 connections that start a login and never finish it (nothing at all, half a
/// header, a whole first Login Request, 56 KiB of continued login text) are all dropped
/// once the login timeout (2 s here) passes; the honest session does not notice. Memory
/// bound: 128 MiB (a 64 KiB receive buffer and at most 64 KiB of login text per connection:
/// ~100 MiB over a ~10 MiB idle daemon in the worst case).
#[test]
fn half_open_logins_are_timed_out() {
    let _flood = flood_lock();
    let mut cfg = hostile::config(Auth::Chap);
    cfg.iscsi.login_timeout_secs = 2;
    let mut d = hostile::start_config(&cfg);
    let honest = HonestReader::start(&d);
    let started = Instant::now();
    let first_login = {
        let c = Conn::connect(d.addr(), ATTACKER).unwrap();
        c.login_pdu(
            false,
            lunar_e2e::raw::stage::SECURITY,
            lunar_e2e::raw::stage::OPERATIONAL,
            &[
                ("InitiatorName", ATTACKER),
                ("TargetName", VICTIM_IQN),
                ("AuthMethod", "CHAP"),
            ],
        )
        .encode()
    };
    // 56 KiB of continued login text (7 C-bit PDUs of 8 KiB), just under the 64 KiB a
    // login may accumulate.
    let continued: Vec<u8> = {
        let c = Conn::connect(d.addr(), ATTACKER).unwrap();
        let mut bytes = Vec::new();
        for i in 0..7 {
            let mut p = c.login_pdu(
                false,
                lunar_e2e::raw::stage::OPERATIONAL,
                lunar_e2e::raw::stage::OPERATIONAL,
                &[],
            );
            p.bhs[1] |= 0x40;
            p.data = if i == 0 {
                b"X-pad=".to_vec()
            } else {
                Vec::new()
            };
            p.data.resize(8192, b'p');
            bytes.extend(p.encode());
        }
        bytes
    };
    let mut socks = Vec::new();
    let mut refused = 0;
    for (count, prefix) in [
        (400, &[][..]),
        (300, &first_login[..20]),
        (300, &first_login[..]),
        (300, &continued[..]),
    ] {
        let (s, r) = open_silent(d.addr(), count, prefix);
        socks.extend(s);
        refused += r;
    }
    let n = socks.len();
    let closed = count_closed(&mut socks, started + Duration::from_secs(2 + 15));
    eprintln!(
        "half-open logins: {closed}/{n} closed after {:?}, {refused} not accepted",
        started.elapsed()
    );
    honest.assert_flood_bounds(&mut d, "half-open login flood", 128);
    assert_eq!(
        closed, n,
        "half-open logins still open 15 s after the 2 s login timeout"
    );
    drop(socks);
    assert_daemon_healthy(&mut d, "half-open login flood");
}

/// 3000 idle connections (never a byte) with the default configuration: lunard sheds
/// them beyond its connection cap within 5 s instead of holding every one until the 30 s
/// login timeout, and an honest session is unaffected. Memory bound: 256 MiB (3000 x 64 KiB
/// receive buffers at most, over a ~10 MiB idle daemon).
#[test]
fn idle_connection_flood_is_capped() {
    let _flood = flood_lock();
    let mut d = hostile::start(Auth::Open);
    let honest = HonestReader::start(&d);
    let started = Instant::now();
    let (mut socks, refused) = open_silent(d.addr(), 3000, &[]);
    let n = socks.len();
    let closed = count_closed(&mut socks, started + Duration::from_secs(5));
    eprintln!(
        "idle connections: {closed}/{n} closed by the target within 5 s, {refused} not accepted"
    );
    honest.assert_flood_bounds(&mut d, "idle connection flood", 256);
    assert!(
        closed + refused > 0,
        "lunard kept all {n} idle connections open (no connection cap)"
    );
    drop(socks);
    // Once the flood is gone, honest logins work again (as soon as lunard has noticed the
    // closes: waited for, not assumed after a fixed pause).
    hostile::wait_honest_login_admitted(&d, Duration::from_secs(20));
    assert_daemon_healthy(&mut d, "idle connection flood");
}

/// 4 threads x 1000 logins with a wrong CHAP secret (a password-guessing storm): every one
/// refused, the honest session unaffected, memory flat (bound 128 MiB).
#[test]
fn failed_chap_storm_is_refused_without_harm() {
    let _flood = flood_lock();
    let mut d = hostile::start(Auth::Chap);
    let honest = HonestReader::start(&d);
    let addr = d.addr();
    let threads: Vec<_> = (0..4)
        .map(|t| {
            std::thread::spawn(move || {
                let mut accepted = 0;
                for i in 0..1000 {
                    let mut c = Conn::connect(addr, ATTACKER).unwrap();
                    let guess = Chap {
                        user: CHAP_USER.into(),
                        secret: format!("guess-{t}-{i}-000000"),
                        mutual: None,
                    };
                    let r = c.login(Some(VICTIM_IQN), Some(&guess), &[]).unwrap();
                    if r.login_status() == 0 {
                        accepted += 1;
                    }
                }
                accepted
            })
        })
        .collect();
    let accepted: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
    honest.assert_flood_bounds(&mut d, "failed CHAP storm", 128);
    assert_eq!(accepted, 0, "a wrong CHAP secret was accepted");
    assert_daemon_healthy(&mut d, "failed CHAP storm");
}

/// One attacking connection: 8 WRITEs of 8 MiB; every R2T is answered except the last
/// 512 bytes of each command, so the target holds the data and waits. Returns the data
/// bytes the target solicited and received.
fn unfinished_writes(addr: SocketAddr, cid: usize) -> u64 {
    let mut c = Conn::connect(addr, &format!("{ATTACKER}-{cid}")).unwrap();
    let r = c
        .login(
            Some(VICTIM_IQN),
            None,
            &[
                ("InitialR2T", "Yes"),
                ("ImmediateData", "No"),
                ("MaxBurstLength", "16776192"),
                ("MaxOutstandingR2T", "16"),
            ],
        )
        .unwrap();
    assert_eq!(r.login_status(), 0, "{}", r.describe());
    c.ready(0).unwrap();
    const BLOCKS: u16 = 16384; // 8 MiB
    const LEN: u32 = BLOCKS as u32 * 512;
    for i in 0..8u32 {
        let p = c.scsi_pdu(0, &cdb10(0x2a, i * u32::from(BLOCKS), BLOCKS), 0, LEN);
        c.send(&p).unwrap();
    }
    let seg = c.neg.max_send_segment.clamp(512, 262144) as usize;
    let payload = vec![0xf1u8; seg];
    let mut sent = 0u64;
    // Answer R2Ts until none comes for 2 s (the target is holding back or waiting).
    loop {
        let p = match c.recv_within(Duration::from_secs(2)) {
            Ok(Some(p)) => p,
            Ok(None) => break,
            Err(_) => break,
        };
        if p.opcode() != op::R2T {
            continue;
        }
        let (itt, ttt) = (p.itt(), p.u32_at(20));
        let (off, len) = (p.u32_at(40), p.u32_at(44));
        let last = off + len == LEN;
        let end = if last { off + len - 512 } else { off + len };
        let mut at = off;
        let mut sn = 0;
        while at < end {
            let n = (end - at).min(seg as u32);
            let fin = !last && at + n == end;
            let d = c.data_out_pdu(itt, ttt, sn, at, payload[..n as usize].to_vec(), fin);
            if c.send(&d).is_err() {
                return sent;
            }
            sent += u64::from(n);
            at += n;
            sn += 1;
        }
    }
    // Keep the connection (and the target's buffers) alive until the caller checks memory.
    std::mem::forget(c);
    sent
}

/// 16 connections x 8 unfinished 8 MiB WRITEs: without a daemon-wide write buffer budget
/// the target solicits and holds 16 x 64 MiB = 1 GiB. With `limits.write_buffer_bytes` at
/// 128 MiB the bound is twice that plus 64 MiB: the budget counts the bytes a write keeps,
/// and the receive buffers behind them may be larger (measured: 729 MiB peak at the default
/// 512 MiB budget). And the honest session unharmed.
#[test]
fn unfinished_writes_across_many_connections_are_bounded() {
    const BUDGET_MIB: u64 = 128;
    let _flood = flood_lock();
    let mut cfg = hostile::config(Auth::Open);
    cfg.limits.write_buffer_bytes = ByteSize::mib(BUDGET_MIB);
    let mut d = hostile::start_config(&cfg);
    let honest = HonestReader::start(&d);
    let addr = d.addr();
    let threads: Vec<_> = (0..16)
        .map(|i| std::thread::spawn(move || unfinished_writes(addr, i)))
        .collect();
    let held: u64 = threads.into_iter().map(|t| t.join().unwrap()).sum();
    eprintln!(
        "unfinished WRITEs: the target accepted {} MiB of data it still holds",
        held >> 20
    );
    honest.assert_flood_bounds(&mut d, "unfinished WRITE flood", 2 * BUDGET_MIB + 64);
    assert_daemon_healthy(&mut d, "unfinished WRITE flood");
}

/// An iSCSI TransportID (format 01b: name, ",i,0x", ISID), padded to a multiple of 4.
fn transport_id(name: &str, isid: u64) -> Vec<u8> {
    let mut body = format!("{name},i,0x{isid:012x}").into_bytes();
    body.push(0);
    while body.len() % 4 != 0 {
        body.push(0);
    }
    let mut t = vec![0x45u8, 0];
    t.extend_from_slice(&(body.len() as u16).to_be_bytes());
    t.extend_from_slice(&body);
    t
}

/// PERSISTENT RESERVE OUT REGISTER with SPEC_I_PT and 150 000 distinct TransportIDs
/// (6 MB of parameter data): refused with INSUFFICIENT REGISTRATION RESOURCES (55/04) or
/// a parameter list error, within the 20 s receive limit, while the honest session on the
/// other target keeps its READ latency. Memory bound: 256 MiB (the 6 MB list, decoded).
#[test]
fn spec_i_pt_with_150k_transport_ids_is_refused_without_freezing() {
    let _flood = flood_lock();
    let mut d = hostile::start(Auth::Open);
    let mut m = hostile::victim_session(&d, Auth::Open, ATTACKER);
    let mut list = Vec::new();
    for i in 0..150_000u64 {
        list.extend(transport_id(
            &format!("iqn.2026-11.x:{i:06}"),
            0x23d0_0000_0000 | i,
        ));
    }
    let mut param = vec![0u8; 28];
    param[8..16].copy_from_slice(&0x5eedu64.to_be_bytes());
    param[20] = 0x08; // SPEC_I_PT
    param[24..28].copy_from_slice(&(list.len() as u32).to_be_bytes());
    param.extend_from_slice(&list);
    let mut cdb = [0u8; 10];
    cdb[0] = 0x5f;
    cdb[5..9].copy_from_slice(&(param.len() as u32).to_be_bytes());
    let honest = HonestReader::start(&d);
    let t0 = Instant::now();
    let r = m.scsi(0, &cdb, 0, &param);
    let took = t0.elapsed();
    let lat = honest.assert_flood_bounds(&mut d, "SPEC_I_PT with 150k TransportIDs", 256);
    let r = r.unwrap_or_else(|e| panic!("SPEC_I_PT with 150k TransportIDs ({took:?}): {e:#}"));
    eprintln!(
        "SPEC_I_PT with 150k TransportIDs: answered in {took:?}: {:?} (honest max {:?})",
        r.sense_triple(),
        lat.max
    );
    assert_eq!(
        r.status,
        status::CHECK_CONDITION,
        "150k registrations accepted: {r:?}"
    );
    let (key, asc, ascq) = r.sense_triple().unwrap_or_default();
    assert!(
        key == 0x05 && ((asc, ascq) == (0x55, 0x04) || asc == 0x1a || asc == 0x26),
        "want ILLEGAL REQUEST with 55/04, 1A/xx or 26/xx, got {key:#x} {asc:#04x}/{ascq:#04x}"
    );
    assert_daemon_healthy(&mut d, "SPEC_I_PT flood");
}

/// Slow readers: 4 connections each queue a full CmdSN window (64) of 8 MiB READs (the
/// MAXIMUM TRANSFER LENGTH) and never read a byte of the answers. Every READ's data then
/// would wait in lunard's memory for a socket that does not drain (until the 30 s write-stall
/// timeout): 64 x 8 MiB = 512 MiB per connection, 2 GiB for the four, without the read buffer
/// budget (`limits.read_buffer_bytes_per_connection`, 16 MiB by default, keeps the rest of
/// the READs waiting before they run). The bound: peak RSS under 512 MiB for the four, and
/// the honest session unharmed.
#[test]
fn slow_readers_cannot_pin_unbounded_read_data() {
    let _flood = flood_lock();
    let mut d = hostile::start(Auth::Open);
    // Real data (unwritten ranges might read as untouched zero pages).
    let mut w = hostile::victim_session(&d, Auth::Open, "iqn.2026-11.io.lunar.test:filler");
    let chunk = vec![0x6bu8; 1 << 20];
    for mib in 0..(hostile::LUN_BYTES >> 20) as u32 {
        w.write10(0, mib * 2048, &chunk).unwrap();
    }
    drop(w);
    let honest = HonestReader::start(&d);
    let mut held = Vec::new();
    for i in 0..4 {
        let mut c = hostile::victim_session(&d, Auth::Open, &format!("{ATTACKER}-slow{i}"));
        let window = c.max_cmd_sn_window();
        for n in 0..window.min(64) {
            let lba = (n % 8) * 16384;
            let p = c.scsi_pdu(0, &cdb10(0x28, lba, 16384), 8 << 20, 0);
            c.send(&p).unwrap();
        }
        held.push(c);
    }
    std::thread::sleep(Duration::from_secs(3));
    honest.assert_flood_bounds(&mut d, "slow readers", 512);
    drop(held);
    assert_daemon_healthy(&mut d, "slow readers");
}

/// PERSISTENT RESERVE OUT REGISTER from 5000 I_T nexuses (one initiator name, 5000 ISIDs,
/// each session dropped after registering: registrations outlive their sessions). The
/// registration list must be bounded: some REGISTER is refused with INSUFFICIENT
/// REGISTRATION RESOURCES (55/04) before all 5000 are accepted (this assumes a default
/// limit below 5000 registrations per LUN). Honest session unharmed,
/// memory under 128 MiB.
#[test]
fn pr_registrations_from_thousands_of_nexuses_are_bounded() {
    let _flood = flood_lock();
    let mut d = hostile::start(Auth::Open);
    let honest = HonestReader::start(&d);
    let addr = d.addr();
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            std::thread::spawn(move || {
                let (mut ok, mut refused) = (0u32, Vec::new());
                for i in 0..1250u64 {
                    let mut c = Conn::connect(addr, ATTACKER).unwrap();
                    c.login_ok(Some(VICTIM_IQN), None).unwrap();
                    let mut cdb = [0u8; 10];
                    cdb[0] = 0x5f;
                    cdb[5..9].copy_from_slice(&24u32.to_be_bytes());
                    let mut p = vec![0u8; 24];
                    p[8..16].copy_from_slice(&(0x1_0000 + t * 10_000 + i).to_be_bytes());
                    let r = c.scsi(0, &cdb, 0, &p).unwrap();
                    if r.status == status::GOOD {
                        ok += 1;
                    } else {
                        refused.push(r.sense_triple());
                    }
                }
                (ok, refused)
            })
        })
        .collect();
    let mut accepted = 0;
    let mut refused = Vec::new();
    for t in threads {
        let (ok, r) = t.join().unwrap();
        accepted += ok;
        refused.extend(r);
    }
    eprintln!(
        "PR registrations: {accepted} accepted, {} refused",
        refused.len()
    );
    honest.assert_flood_bounds(&mut d, "PR registration flood", 128);
    assert!(
        refused.iter().all(|s| *s == Some((0x05, 0x55, 0x04))),
        "REGISTER refused otherwise than with 55/04: {:?}",
        &refused[..refused.len().min(5)]
    );
    assert!(
        !refused.is_empty(),
        "all {accepted} registrations accepted: the list is unbounded"
    );
    assert_daemon_healthy(&mut d, "PR registration flood");
}

/// EXTENDED COPY amplification: 8 lists of 256 segments x 32 MiB each (8 GiB of copying per
/// 7 KiB command) within the victim's written 64 MiB LUN, issued at once. Each copy is real
/// work the initiator may ask for; what it may not do is starve the other target: the honest
/// session keeps its READ latency while the copies run (or are refused), memory under
/// 256 MiB (copies move 4 MiB pieces).
#[test]
fn extended_copy_amplification_does_not_starve_other_targets() {
    let _flood = flood_lock();
    let mut d = hostile::start(Auth::Open);
    let mut m = hostile::victim_session(&d, Auth::Open, ATTACKER);
    let chunk = vec![0x3au8; 1 << 20];
    for mib in 0..(hostile::LUN_BYTES >> 20) as u32 {
        m.write10(0, mib * 2048, &chunk).unwrap();
    }
    // The victim LUN's NAA designator (VPD 83h).
    let r = m
        .scsi(0, &[0x12, 0x01, 0x83, 0x01, 0x00, 0x00], 256, &[])
        .unwrap();
    let naa = {
        let d = &r.data;
        let mut at = 4;
        let mut found = None;
        while at + 4 <= d.len() {
            let len = usize::from(d[at + 3]);
            if (d[at + 1] >> 4) & 3 == 0 && d[at + 1] & 0x0f == 3 && len == 16 {
                let mut n = [0u8; 16];
                n.copy_from_slice(&d[at + 4..at + 20]);
                found = Some(n);
            }
            at += 4 + len;
        }
        found.expect("NAA designator")
    };
    let mut list = vec![0u8; 16];
    list[1] = 0x18;
    list[2..4].copy_from_slice(&32u16.to_be_bytes());
    list[8..12].copy_from_slice(&(256u32 * 28).to_be_bytes());
    let mut t = [0u8; 32];
    t[0] = 0xe4;
    t[4] = 0x01;
    t[5] = 0x03;
    t[7] = 16;
    t[8..24].copy_from_slice(&naa);
    t[29..32].copy_from_slice(&512u32.to_be_bytes()[1..]);
    list.extend_from_slice(&t);
    for i in 0..256u64 {
        let mut s = [0u8; 28];
        s[0] = 0x02;
        s[2..4].copy_from_slice(&24u16.to_be_bytes());
        s[10..12].copy_from_slice(&65535u16.to_be_bytes());
        s[12..20].copy_from_slice(&((i % 2) * 65536).to_be_bytes());
        s[20..28].copy_from_slice(&(((i + 1) % 2) * 65536).to_be_bytes());
        list.extend_from_slice(&s);
    }
    let mut cdb = [0u8; 16];
    cdb[0] = 0x83;
    cdb[10..14].copy_from_slice(&(list.len() as u32).to_be_bytes());
    let honest = HonestReader::start(&d);
    let t0 = Instant::now();
    let mut itts = Vec::new();
    for _ in 0..8 {
        let mut p = m.scsi_pdu(0, &cdb, 0, list.len() as u32);
        p.data = list.clone();
        itts.push(p.itt());
        m.send(&p).unwrap();
    }
    // Give the copies 5 s; closing the session then aborts what still runs, so the test
    // is bounded.
    let mut done = 0;
    let deadline = Instant::now() + Duration::from_secs(5);
    while done < itts.len() && Instant::now() < deadline {
        match m.recv_within(
            deadline
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(1)),
        ) {
            Ok(Some(p)) if p.opcode() == op::SCSI_RESP => done += 1,
            Ok(Some(p)) if p.opcode() == op::R2T => {
                panic!("EXTENDED COPY asked for more data: {}", p.describe())
            }
            Ok(Some(_)) => {}
            _ => break,
        }
    }
    eprintln!(
        "EXTENDED COPY amplification: {done}/8 copies finished in {:?}",
        t0.elapsed()
    );
    honest.assert_flood_bounds(&mut d, "EXTENDED COPY amplification", 256);
    drop(m);
    assert_daemon_healthy(&mut d, "EXTENDED COPY amplification");
}

/// Commands held for a CmdSN gap: each of 64 connections leaves its next CmdSN unused and
/// sends the rest of its window (63 WRITEs) with 256 KiB of immediate data each. The target
/// holds them until the gap fills, so without a limit a session pins a window of immediate
/// data (64 x 256 KiB = 16 MiB): 64 sessions, 1 GiB. lunard holds at most 1 MiB per session
/// (and closes the connection beyond). The bound: peak RSS under 512 MiB, and the honest
/// session unharmed.
#[test]
fn commands_held_for_a_cmdsn_gap_are_bounded() {
    let _flood = flood_lock();
    let mut d = hostile::start(Auth::Open);
    let honest = HonestReader::start(&d);
    let addr = d.addr();
    let threads: Vec<_> = (0..64)
        .map(|i| {
            std::thread::spawn(move || {
                let mut c = Conn::connect(addr, &format!("{ATTACKER}-gap{i}")).unwrap();
                let r = c
                    .login(
                        Some(VICTIM_IQN),
                        None,
                        &[
                            ("ImmediateData", "Yes"),
                            ("FirstBurstLength", "262144"),
                            ("MaxRecvDataSegmentLength", "262144"),
                        ],
                    )
                    .unwrap();
                assert_eq!(r.login_status(), 0, "{}", r.describe());
                let imm = (c.neg.first_burst.min(c.neg.max_send_segment) as usize / 512) * 512;
                let window = c.max_cmd_sn_window();
                c.cmd_sn = c.cmd_sn.wrapping_add(1); // the gap
                let data = vec![0x9du8; imm];
                let mut sent = 0u64;
                for n in 1..window {
                    let mut p =
                        c.scsi_pdu(0, &cdb10(0x2a, n * 1024, (imm / 512) as u16), 0, imm as u32);
                    p.data = data.clone();
                    if c.send(&p).is_err() {
                        break;
                    }
                    sent += imm as u64;
                }
                (c, sent)
            })
        })
        .collect();
    let mut held = Vec::new();
    let mut bytes = 0;
    for t in threads {
        let (c, sent) = t.join().unwrap();
        bytes += sent;
        held.push(c);
    }
    std::thread::sleep(Duration::from_secs(1));
    eprintln!(
        "CmdSN gap: {} MiB of immediate data sent behind gaps",
        bytes >> 20
    );
    honest.assert_flood_bounds(&mut d, "commands held for a CmdSN gap", 512);
    drop(held);
    assert_daemon_healthy(&mut d, "CmdSN gap flood");
}
