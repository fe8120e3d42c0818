//! An ESXi-style ATS heartbeat over real iSCSI sessions (issue 5).
//!
//! VMFS takes its on-disk locks and updates its heartbeats with COMPARE AND WRITE (VMware's
//! "atomic test and set"): read the lock block, then CAW it with the old content as the
//! compare half and the new content as the write half; a MISCOMPARE means another host got
//! there first, so re-read and retry. If the target ever lets two CAWs succeed from the same
//! old content (a lost update), or answers MISCOMPARE although the block equals the compare
//! data (a false miscompare), two hosts believe they own the same lock, or a host gives up a
//! lock it could have taken. This test has many sessions (distinct initiator names, like
//! many ESXi hosts) hammer one block this way while they also WRITE unrelated blocks next to
//! it, and checks:
//!
//! - synchronized rounds (every session reads the same content, then all CAW at once):
//!   exactly one session wins each round;
//! - every successful CAW wrote a distinct counter value: together they are exactly
//!   1..=total, and the block's final counter is the number of successful CAWs (no lost
//!   update), written by the session that reported that increment;
//! - every MISCOMPARE is a true one: its INFORMATION field is valid, the block really moved
//!   past the compared content, and the offset it names is the first byte where the compare
//!   data differs from one of the contents the block went through meanwhile;
//! - every read of the lock block returns one whole heartbeat (no torn write);
//! - each session's side block reads back what it wrote last, and the blocks around the
//!   range are untouched.
//!
//! It prints CAW round-trip latencies (count, p50, p99, max; `--nocapture`) and never
//! asserts on time. A second test checks the MISCOMPARE sense data of a single CAW: the
//! INFORMATION field is the offset of the first differing byte, in fixed and in descriptor
//! format, and the medium is unchanged.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::start_demo as start;
use lunar_test_kit::cdb::cdb10;
use lunar_test_kit::initiator::{CmdResult, Initiator};
use scsi_proto::scsi::sense::{asc, Sense, SenseKey};
use tokio::sync::Barrier;
use tokio::task::JoinSet;

use lunar_test_kit::lunard::DEMO_IQN as DEMO;
const BS: usize = 512;
const READ10: u8 = 0x28;
const WRITE10: u8 = 0x2A;
const COMPARE_AND_WRITE: u8 = 0x89;
const GOOD: u8 = 0x00;
const CHECK_CONDITION: u8 = 0x02;

/// The shared lock/heartbeat block.
const ATS_LBA: u32 = 100;
/// Session `s` (0-based) WRITEs its own side block `SIDE_LBA + s`.
const SIDE_LBA: u32 = 101;
/// Concurrent sessions, each its own initiator name.
const SESSIONS: usize = 8;
/// Rounds in lock step before the free-running phase: each has exactly one winner.
const SYNC_ROUNDS: usize = 10;
/// Free-running rounds per session; each ends with one successful CAW (retrying on
/// MISCOMPARE) unless the deadline passed.
const ROUNDS: usize = 200;
/// The free-running phase stops starting rounds after this (a bound, not a check).
const DEADLINE: Duration = Duration::from_secs(90);
/// The whole scenario fails as a hang after this.
const HANG_LIMIT: Duration = Duration::from_secs(240);

async fn session(addr: SocketAddr, name: &str) -> Initiator {
    let mut i = Initiator::connect(addr, name).await;
    assert!(i.login(Some(DEMO)).await.ok(), "{name} logs in");
    i.clear_unit_attention().await;
    i
}

/// Fill bytes derived from `seed`, so that every new content changes the whole block.
fn fill(b: &mut [u8], seed: u64) {
    let s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    for (i, x) in b.iter_mut().enumerate() {
        *x = (s >> ((i % 8) * 8)) as u8 ^ (i as u8).wrapping_mul(31);
    }
}

/// Heartbeat block: counter (big-endian u64) at 0, writer id (u64) at 8, then fill.
/// Writer 0 is the initial content; session `s` writes as `s + 1`.
fn heartbeat(counter: u64, writer: u64) -> Vec<u8> {
    let mut b = vec![0u8; BS];
    b[0..8].copy_from_slice(&counter.to_be_bytes());
    b[8..16].copy_from_slice(&writer.to_be_bytes());
    fill(&mut b[16..], counter ^ (writer << 48));
    b
}

/// (counter, writer) of a heartbeat block; panics unless it is exactly one whole heartbeat.
fn decode_heartbeat(b: &[u8]) -> (u64, u64) {
    assert_eq!(b.len(), BS, "one block");
    let counter = u64::from_be_bytes(b[0..8].try_into().expect("8 bytes"));
    let writer = u64::from_be_bytes(b[8..16].try_into().expect("8 bytes"));
    assert!(
        b == heartbeat(counter, writer).as_slice(),
        "torn or foreign heartbeat block (counter {counter}, writer {writer})"
    );
    (counter, writer)
}

/// Content of session `s`'s side block after its `seq`-th write.
fn side_block(s: usize, seq: u64) -> Vec<u8> {
    let mut b = vec![0u8; BS];
    b[0..8].copy_from_slice(b"SIDEBLK!");
    b[8..16].copy_from_slice(&(s as u64).to_be_bytes());
    b[16..24].copy_from_slice(&seq.to_be_bytes());
    fill(&mut b[24..], ((s as u64) << 40) | seq);
    b
}

fn first_difference(a: &[u8], b: &[u8]) -> Option<usize> {
    a.iter().zip(b).position(|(x, y)| x != y)
}

fn caw_cdb(lba: u32, blocks: u8) -> [u8; 16] {
    let mut c = [0u8; 16];
    c[0] = COMPARE_AND_WRITE;
    c[2..10].copy_from_slice(&u64::from(lba).to_be_bytes());
    c[13] = blocks;
    c
}

async fn read_block(i: &mut Initiator, lba: u32) -> Vec<u8> {
    let r = i
        .run(&cdb10(READ10, lba, 1), true, BS as u32, &[], 0, 0)
        .await;
    assert_eq!(r.status, GOOD, "READ(10) of LBA {lba}: {r:?}");
    assert_eq!(r.data.len(), BS, "READ(10) of LBA {lba}: {r:?}");
    r.data
}

async fn write_block(i: &mut Initiator, lba: u32, data: &[u8]) {
    let r = i
        .run(&cdb10(WRITE10, lba, 1), false, BS as u32, data, BS, 8192)
        .await;
    assert_eq!(r.status, GOOD, "WRITE(10) of LBA {lba}: {r:?}");
}

/// The decoded sense of a CHECK CONDITION (fixed or descriptor format).
fn sense_of(r: &CmdResult) -> Sense {
    assert_eq!(r.status, CHECK_CONDITION, "{r:?}");
    Sense::decode(&r.sense).unwrap_or_else(|| panic!("undecodable sense data: {r:?}"))
}

#[derive(Debug)]
enum Caw {
    Good,
    /// MISCOMPARE, with the INFORMATION field if VALID.
    Miscompare(Option<u64>),
}

/// One-block COMPARE AND WRITE (Data-Out: `compare` then `new`, all immediate data) and
/// its round-trip time. Anything but GOOD or MISCOMPARE / MISCOMPARE DURING VERIFY
/// OPERATION fails the test.
async fn caw(i: &mut Initiator, lba: u32, compare: &[u8], new: &[u8]) -> (Caw, Duration) {
    let data = [compare, new].concat();
    let t = Instant::now();
    let r = i
        .run(
            &caw_cdb(lba, 1),
            false,
            data.len() as u32,
            &data,
            data.len(),
            8192,
        )
        .await;
    let took = t.elapsed();
    if r.status == GOOD {
        return (Caw::Good, took);
    }
    let s = sense_of(&r);
    assert_eq!(
        (s.key, s.code),
        (
            SenseKey::Miscompare,
            asc::MISCOMPARE_DURING_VERIFY_OPERATION
        ),
        "COMPARE AND WRITE of LBA {lba}: only GOOD or MISCOMPARE is expected: {r:?}"
    );
    (Caw::Miscompare(s.information), took)
}

/// What one session did.
#[derive(Debug, Default)]
struct Report {
    session: usize,
    /// Counter values this session's successful CAWs wrote.
    wrote: Vec<u64>,
    /// Per synchronized round: did this session win it?
    sync_wins: Vec<bool>,
    miscompares: u64,
    good_latency: Vec<Duration>,
    miscompare_latency: Vec<Duration>,
    /// Content of the last WRITE to the side block, if any.
    side_last: Option<Vec<u8>>,
    side_writes: u64,
    /// Free-running rounds completed (each with one successful CAW).
    rounds: usize,
}

impl Report {
    async fn side_write(&mut self, i: &mut Initiator) {
        let data = side_block(self.session, self.side_writes);
        write_block(i, SIDE_LBA + self.session as u32, &data).await;
        self.side_writes += 1;
        self.side_last = Some(data);
    }

    fn writer(&self) -> u64 {
        self.session as u64 + 1
    }

    /// A CAW that compared against `(counter, writer)` got MISCOMPARE with `info`: check
    /// that it was a true miscompare. Returns the re-read (counter, writer).
    async fn check_miscompare(
        &mut self,
        i: &mut Initiator,
        counter: u64,
        writer: u64,
        info: Option<u64>,
    ) -> (u64, u64) {
        self.miscompares += 1;
        let compared = heartbeat(counter, writer);
        let info = info.expect("MISCOMPARE has a valid INFORMATION field") as usize;
        assert!(
            info < BS,
            "INFORMATION {info} is outside the compared block"
        );
        let (now, now_writer) = decode_heartbeat(&read_block(i, ATS_LBA).await);
        // Only CAWs change the lock block, and each increments the counter by one, so the
        // counter never goes back: if it did not move, the block equalled the compare data.
        assert!(
            now >= counter,
            "the lock block went back from counter {counter} to {now}"
        );
        assert!(
            now > counter || now_writer == writer,
            "lost update: two CAWs both wrote counter {counter} (writers {writer} and \
             {now_writer})"
        );
        assert!(
            now > counter,
            "false miscompare: session {} compared counter {counter} (writer {writer}), \
             the block still holds counter {now} (writer {now_writer}), INFORMATION {info}",
            self.session
        );
        // At the CAW the block held one of the contents it went through since our read.
        let explained = (counter + 1..=now).any(|c| {
            (0..=SESSIONS as u64)
                .any(|w| first_difference(&compared, &heartbeat(c, w)) == Some(info))
        });
        assert!(
            explained,
            "MISCOMPARE INFORMATION {info} is not the first differing byte between the \
             compare data (counter {counter}) and any content the block held since (counters \
             {}..={now})",
            counter + 1
        );
        (now, now_writer)
    }
}

/// One ESXi-like host: synchronized rounds, then free-running read / CAW / retry rounds,
/// with WRITEs to its own side block interleaved.
async fn host(addr: SocketAddr, s: usize, barrier: Arc<Barrier>, deadline: Instant) -> Report {
    let mut i = session(addr, &format!("iqn.2026-11.io.test:esx-{s:02}")).await;
    let mut rep = Report {
        session: s,
        ..Report::default()
    };
    let me = rep.writer();

    // Lock step: everyone reads the same content, then everyone CAWs at once.
    for _ in 0..SYNC_ROUNDS {
        barrier.wait().await;
        let (c, w) = decode_heartbeat(&read_block(&mut i, ATS_LBA).await);
        barrier.wait().await;
        let (out, took) = caw(&mut i, ATS_LBA, &heartbeat(c, w), &heartbeat(c + 1, me)).await;
        match out {
            Caw::Good => {
                rep.good_latency.push(took);
                rep.wrote.push(c + 1);
                rep.sync_wins.push(true);
            }
            Caw::Miscompare(info) => {
                rep.miscompare_latency.push(took);
                rep.check_miscompare(&mut i, c, w, info).await;
                rep.sync_wins.push(false);
            }
        }
        rep.side_write(&mut i).await;
    }
    // Everyone's lock-step CAWs are done before anyone runs free.
    barrier.wait().await;

    // Free running: heartbeat, retrying on MISCOMPARE; side WRITEs before the CAW on even
    // rounds and after it on odd ones.
    'rounds: for round in 0..ROUNDS {
        let (mut c, mut w) = decode_heartbeat(&read_block(&mut i, ATS_LBA).await);
        if round % 2 == 0 {
            rep.side_write(&mut i).await;
        }
        loop {
            if Instant::now() > deadline {
                break 'rounds;
            }
            let (out, took) = caw(&mut i, ATS_LBA, &heartbeat(c, w), &heartbeat(c + 1, me)).await;
            match out {
                Caw::Good => {
                    rep.good_latency.push(took);
                    rep.wrote.push(c + 1);
                    break;
                }
                Caw::Miscompare(info) => {
                    rep.miscompare_latency.push(took);
                    (c, w) = rep.check_miscompare(&mut i, c, w, info).await;
                }
            }
        }
        if round % 2 == 1 {
            rep.side_write(&mut i).await;
        }
        rep.rounds += 1;
    }
    i.logout().await;
    rep
}

/// Nearest-rank percentile of sorted durations.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn print_latency(what: &str, mut v: Vec<Duration>) {
    if v.is_empty() {
        println!("{what}: count 0");
        return;
    }
    v.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "{what}: count {}, p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
        v.len(),
        ms(percentile(&v, 50.0)),
        ms(percentile(&v, 99.0)),
        ms(*v.last().expect("non-empty"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ats_heartbeat_many_sessions_no_lost_update_no_false_miscompare() {
    let _heavy = crate::support::heavy().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (daemon, addr) = start(dir.path()).await;
    let mut admin = session(addr, "iqn.2026-11.io.test:vcenter").await;
    write_block(&mut admin, ATS_LBA, &heartbeat(0, 0)).await;

    let started = Instant::now();
    let deadline = started + DEADLINE;
    let barrier = Arc::new(Barrier::new(SESSIONS));
    let mut hosts = JoinSet::new();
    for s in 0..SESSIONS {
        hosts.spawn(host(addr, s, barrier.clone(), deadline));
    }
    // Join in completion order, so a failing host's panic surfaces at once (the others may
    // be stuck at the barrier waiting for it).
    let mut reports = tokio::time::timeout(HANG_LIMIT, async {
        let mut reports = Vec::new();
        while let Some(r) = hosts.join_next().await {
            match r {
                Ok(rep) => reports.push(rep),
                Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                Err(e) => panic!("host task failed: {e}"),
            }
        }
        reports
    })
    .await
    .expect("ATS heartbeat scenario hung");
    let wall = started.elapsed();
    reports.sort_by_key(|r| r.session);

    // Every synchronized round had exactly one winner.
    for round in 0..SYNC_ROUNDS {
        let winners: Vec<usize> = reports
            .iter()
            .filter(|r| r.sync_wins[round])
            .map(|r| r.session)
            .collect();
        assert_eq!(
            winners.len(),
            1,
            "synchronized round {round}: sessions {winners:?} all won the same compare"
        );
    }

    // No lost update: the successful CAWs wrote 1, 2, ..., total, each exactly once, and
    // the block holds the last of them, by the session that reported it.
    let mut wrote: Vec<(u64, u64)> = reports
        .iter()
        .flat_map(|r| r.wrote.iter().map(move |&c| (c, r.writer())))
        .collect();
    wrote.sort();
    let total = wrote.len() as u64;
    assert!(total > 0, "no CAW succeeded");
    for (n, (c, w)) in wrote.iter().enumerate() {
        assert_eq!(
            *c,
            n as u64 + 1,
            "successful CAWs must write each counter value once (writer {w}): {:?}",
            &wrote[n.saturating_sub(2)..(n + 2).min(wrote.len())]
        );
    }
    let (final_counter, final_writer) = decode_heartbeat(&read_block(&mut admin, ATS_LBA).await);
    assert_eq!(
        final_counter, total,
        "final counter vs successful CAWs (lost update)"
    );
    assert_eq!(
        final_writer,
        wrote[wrote.len() - 1].1,
        "the last increment's writer"
    );

    // The side blocks hold each session's last WRITE; the neighbours are untouched.
    for r in &reports {
        let got = read_block(&mut admin, SIDE_LBA + r.session as u32).await;
        let want = r
            .side_last
            .as_deref()
            .expect("every session wrote its side block");
        assert!(
            got == want,
            "side block of session {} is not its last write",
            r.session
        );
    }
    for lba in [ATS_LBA - 1, SIDE_LBA + SESSIONS as u32] {
        assert_eq!(
            read_block(&mut admin, lba).await,
            vec![0u8; BS],
            "LBA {lba} was never written"
        );
    }

    let miscompares: u64 = reports.iter().map(|r| r.miscompares).sum();
    let side_writes: u64 = reports.iter().map(|r| r.side_writes).sum();
    let rounds: usize = reports.iter().map(|r| r.rounds).sum();
    println!(
        "ATS heartbeat: {SESSIONS} sessions, {total} successful CAWs ({SYNC_ROUNDS} lock-step \
         rounds + {rounds} of {} free-running rounds), {miscompares} MISCOMPAREs (all true), \
         {side_writes} side WRITEs, {:.2} s",
        SESSIONS * ROUNDS,
        wall.as_secs_f64()
    );
    if rounds < SESSIONS * ROUNDS {
        println!("NOTE: the {DEADLINE:?} deadline cut the free-running phase short");
    }
    for r in &reports {
        println!(
            "  session {}: {} increments, {} miscompares, {} side writes",
            r.session,
            r.wrote.len(),
            r.miscompares,
            r.side_writes
        );
    }
    let good: Vec<Duration> = reports
        .iter()
        .flat_map(|r| r.good_latency.clone())
        .collect();
    let mis: Vec<Duration> = reports
        .iter()
        .flat_map(|r| r.miscompare_latency.clone())
        .collect();
    print_latency("CAW round trip, all", [&good[..], &mis[..]].concat());
    print_latency("CAW round trip, GOOD", good);
    print_latency("CAW round trip, MISCOMPARE", mis);

    admin.logout().await;
    daemon.shutdown().await.expect("clean shutdown");
}

/// Sets or clears D_SENSE in the Control mode page (MODE SENSE(6) / MODE SELECT(6)).
async fn set_d_sense(i: &mut Initiator, on: bool) {
    let r = i
        .run(&[0x1A, 0x08, 0x0A, 0, 0xFF, 0], true, 0xFF, &[], 0, 0)
        .await;
    assert_eq!(r.status, GOOD, "MODE SENSE(6) Control page: {r:?}");
    let mut list = r.data;
    list[0] = 0; // MODE DATA LENGTH is reserved in MODE SELECT
    list[2] = 0; // device-specific parameter
    if on {
        list[6] |= 0x04;
    } else {
        list[6] &= !0x04;
    }
    let sel = [0x15, 0x10, 0, 0, list.len() as u8, 0];
    let r = i
        .run(&sel, false, list.len() as u32, &list, list.len(), 8192)
        .await;
    assert_eq!(r.status, GOOD, "MODE SELECT(6) D_SENSE={on}: {r:?}");
}

#[tokio::test]
async fn compare_and_write_miscompare_reports_first_differing_byte() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (daemon, addr) = start(dir.path()).await;
    let mut i = session(addr, "iqn.2026-11.io.test:esx-single").await;
    const LBA: u32 = 200;
    let stored = heartbeat(41, 7);
    let new = heartbeat(42, 3);
    write_block(&mut i, LBA, &stored).await;

    // (bytes to corrupt in the compare data, expected INFORMATION, descriptor format?)
    let cases: [(&[usize], u64, bool); 6] = [
        (&[0], 0, false),
        (&[7], 7, false),
        (&[300], 300, false),
        (&[511], 511, false),
        (&[300, 400, 17], 17, false),
        (&[300, 400], 300, true),
    ];
    let mut d_sense = false;
    for (bytes, want, descriptor) in cases {
        if descriptor != d_sense {
            set_d_sense(&mut i, descriptor).await;
            d_sense = descriptor;
        }
        let mut compare = stored.clone();
        for &b in bytes {
            compare[b] ^= 0x5A;
        }
        let data = [&compare[..], &new[..]].concat();
        let r = i
            .run(
                &caw_cdb(LBA, 1),
                false,
                data.len() as u32,
                &data,
                data.len(),
                8192,
            )
            .await;
        let s = sense_of(&r);
        assert_eq!(
            (s.key, s.code),
            (
                SenseKey::Miscompare,
                asc::MISCOMPARE_DURING_VERIFY_OPERATION
            ),
            "compare data differing at {bytes:?}: {r:?}"
        );
        assert_eq!(
            r.sense[0] & 0x7F,
            if descriptor { 0x72 } else { 0x70 },
            "sense format with D_SENSE={descriptor}"
        );
        assert_eq!(
            s.information,
            Some(want),
            "INFORMATION for compare data differing at {bytes:?}"
        );
        assert!(
            read_block(&mut i, LBA).await == stored,
            "a MISCOMPARE must leave the block unchanged (differing at {bytes:?})"
        );
    }
    set_d_sense(&mut i, false).await;

    // And the matching compare writes the new content.
    let (out, _) = caw(&mut i, LBA, &stored, &new).await;
    assert!(matches!(out, Caw::Good), "{out:?}");
    assert!(
        read_block(&mut i, LBA).await == new,
        "the CAW wrote its data"
    );

    i.logout().await;
    daemon.shutdown().await.expect("clean shutdown");
}

/// COMPARE AND WRITE and WRITE SAME refuse a Data-Out whose size does not match the CDB
/// (libiscsi's InvalidDataOutSize tests, which skip on LUNs with one logical block per
/// physical block): the device server must not compare or write a prefix of what came.
#[tokio::test]
async fn data_out_of_the_wrong_size_is_refused_and_changes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (daemon, addr) = start(dir.path()).await;
    let mut i = session(addr, "iqn.2026-11.io.test:esx-sizes").await;
    const LBA: u32 = 300;
    let stored = heartbeat(5, 1);
    write_block(&mut i, LBA, &stored).await;
    let new = heartbeat(6, 1);
    // NUMBER OF LOGICAL BLOCKS 1 wants 2 blocks; send 4 (matching compare first) and 1.
    for data in [
        [&stored[..], &new[..], &new[..], &new[..]].concat(),
        stored.to_vec(),
    ] {
        let r = i
            .run(
                &caw_cdb(LBA, 1),
                false,
                data.len() as u32,
                &data,
                data.len(),
                8192,
            )
            .await;
        let s = sense_of(&r);
        assert_eq!(
            s.key,
            SenseKey::IllegalRequest,
            "CAW with {} bytes: {r:?}",
            data.len()
        );
        assert!(read_block(&mut i, LBA).await == stored, "block unchanged");
    }
    // WRITE SAME(10) of 4 blocks with half a block and with two blocks of Data-Out.
    let mut ws = [0u8; 10];
    ws[0] = 0x41;
    ws[2..6].copy_from_slice(&LBA.to_be_bytes());
    ws[8] = 4;
    for len in [BS / 2, 2 * BS] {
        let data = vec![0xA5u8; len];
        let r = i.run(&ws, false, len as u32, &data, len, 8192).await;
        let s = sense_of(&r);
        assert_eq!(
            s.key,
            SenseKey::IllegalRequest,
            "WRITE SAME with {len} bytes: {r:?}"
        );
        assert!(read_block(&mut i, LBA).await == stored, "block unchanged");
    }
    drop(i);
    daemon.shutdown().await.expect("clean shutdown");
}
