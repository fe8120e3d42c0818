//! TCMU front end against the simulated kernel, on real ScsiTargets and storage-core
//! volumes.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use lunar_test_kit::pattern;
use scsi_proto::scsi::sense::{asc, Sense, SenseKey};
use storage_core::{Guarantee, Pool, PoolOptions};

use super::{Data, Done, Sim};
use crate::scsi::{status, ScsiTarget};
use crate::tcmu::device::{spawn_with, DeviceExit, DeviceHandle};
use crate::tcmu::ring::{cap, entry, uflag, Completion, Entry, Ring};

const BS: usize = 512;
const BLOCKS: u64 = 8192;
const ALL: u16 = cap::OOOC | cap::READ_LEN | cap::TMR | cap::KEEP_BUF;

struct Fx {
    _dir: tempfile::TempDir,
    _pool: Pool,
    target: Arc<ScsiTarget>,
}

async fn fixture() -> Fx {
    let dir = tempfile::tempdir().unwrap();
    let pool = Pool::create(
        &dir.path().join("pool"),
        &PoolOptions {
            capacity_bytes: Some(64 << 20),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    pool.create_volume("vol0", BLOCKS * BS as u64, BS as u32, Guarantee::None)
        .await
        .unwrap();
    let target = ScsiTarget::new("naa.5001405000000001");
    target
        .add_lun(0, pool.volume("vol0").unwrap(), false)
        .unwrap();
    Fx {
        _dir: dir,
        _pool: pool,
        target,
    }
}

fn start(sim: &Sim, fx: &Fx) -> DeviceHandle {
    spawn_with(
        sim.dev_mem.clone(),
        sim.bell.clone(),
        "lun0",
        fx.target.clone(),
        0,
    )
    .unwrap()
}

fn rw10(op: u8, lba: u32, blocks: u16, flags: u8) -> Vec<u8> {
    let mut c = vec![0u8; 10];
    c[0] = op;
    c[1] = flags;
    c[2..6].copy_from_slice(&lba.to_be_bytes());
    c[7..9].copy_from_slice(&blocks.to_be_bytes());
    c
}
fn read10(lba: u32, blocks: u16) -> Vec<u8> {
    rw10(0x28, lba, blocks, 0)
}
fn write10(lba: u32, blocks: u16) -> Vec<u8> {
    rw10(0x2A, lba, blocks, 0)
}
/// WRITE 10 with FUA: always waits for the commit thread, so it is reliably slower than
/// commands that never leave the device server.
fn write10_fua(lba: u32, blocks: u16) -> Vec<u8> {
    rw10(0x2A, lba, blocks, 0x08)
}
const TUR: [u8; 6] = [0; 6];
fn inquiry(alloc: u16) -> Vec<u8> {
    let mut c = vec![0x12, 0, 0, 0, 0, 0];
    c[3..5].copy_from_slice(&alloc.to_be_bytes());
    c
}

fn by_id(done: Vec<Done>) -> HashMap<u16, Done> {
    done.into_iter().map(|d| (d.cmd_id, d)).collect()
}

fn sense_of(d: &Done) -> Sense {
    Sense::decode(&d.sense).expect("decodable sense")
}

#[tokio::test]
async fn write_read_inquiry_capacity_and_errors() {
    let fx = fixture().await;
    let mut sim = Sim::new(ALL, 8192 - 128, 1 << 20);
    let dev = start(&sim, &fx);

    // No POWER ON unit attention on the fixed nexus (it never logs in): GOOD at once.
    let tur = sim.submit(&TUR, Data::None);
    // 16 blocks of Data-Out in three scattered iovecs.
    let data = pattern(16 * BS, 7);
    let w = sim.submit(
        &write10(100, 16),
        Data::Out(data.clone(), vec![1000, 3000, 0]),
    );
    sim.irq();
    let d = by_id(sim.collect(2).await);
    assert_eq!(d[&tur].status, status::GOOD);
    assert_eq!(d[&w].status, status::GOOD, "{:?}", sense_of(&d[&w]));

    // Read back into two iovecs of different sizes, plus a single-iovec read.
    let r = sim.submit(&read10(100, 16), Data::In(16 * BS, vec![2560, 0]));
    let r1 = sim.submit(&read10(104, 2), Data::In(2 * BS, vec![]));
    // INQUIRY with a 96-byte allocation into a 4 KiB buffer: READ_LEN tells the length.
    let inq = sim.submit(&inquiry(96), Data::In(4096, vec![]));
    let cap10 = sim.submit(&[0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0], Data::In(8, vec![]));
    // Past the end: ILLEGAL REQUEST, LOGICAL BLOCK ADDRESS OUT OF RANGE.
    let oor = sim.submit(&read10(BLOCKS as u32, 1), Data::In(BS, vec![]));
    sim.irq();
    let d = by_id(sim.collect(5).await);
    assert_eq!(d[&r].status, status::GOOD);
    assert_eq!(d[&r].data, data);
    assert_eq!(d[&r1].data, &data[4 * BS..6 * BS]);
    assert_eq!(d[&inq].status, status::GOOD);
    assert_ne!(d[&inq].uflags & uflag::READ_LEN, 0);
    assert_eq!(d[&inq].read_len, 96);
    assert_eq!(d[&inq].data.len(), 96);
    assert_eq!(d[&inq].data[0] & 0x1f, 0, "direct-access block device");
    let c = &d[&cap10].data;
    assert_eq!(
        u32::from_be_bytes(c[0..4].try_into().unwrap()),
        BLOCKS as u32 - 1
    );
    assert_eq!(u32::from_be_bytes(c[4..8].try_into().unwrap()), BS as u32);
    assert_eq!(
        d[&cap10].uflags & uflag::READ_LEN,
        0,
        "full buffer: no READ_LEN"
    );
    assert_eq!(d[&oor].status, status::CHECK_CONDITION);
    let s = sense_of(&d[&oor]);
    assert_eq!(s.key, SenseKey::IllegalRequest);
    assert_eq!(s.code, asc::LBA_OUT_OF_RANGE);

    let st = dev.stats();
    assert_eq!(st.commands, 7);
    assert_eq!(st.failed, 1);
    assert_eq!(st.bytes_out, 16 * BS as u64);
    assert_eq!(dev.stop().await, DeviceExit::Stopped);
    assert_eq!(sim.pending(), 0);
}

#[tokio::test]
async fn without_read_len_a_short_data_in_is_zero_filled() {
    let fx = fixture().await;
    let mut sim = Sim::new(0, 8192 - 128, 1 << 20);
    let dev = start(&sim, &fx);
    let inq = sim.submit(&inquiry(96), Data::In(4096, vec![1000, 0]));
    sim.irq();
    let d = by_id(sim.collect(1).await);
    let i = &d[&inq];
    assert_eq!(i.status, status::GOOD);
    assert_eq!(i.uflags & uflag::READ_LEN, 0);
    assert_eq!(i.read_len, 0);
    assert_ne!(&i.raw[..8], &[0u8; 8]);
    assert!(
        i.raw[96..].iter().all(|&b| b == 0),
        "stale data-area bytes exposed"
    );
    dev.stop().await;
}

/// Slow FUA writes interleaved with commands that finish at once.
async fn mixed_batch(ooo: bool) {
    let fx = fixture().await;
    let flags = if ooo { ALL } else { cap::READ_LEN };
    let mut sim = Sim::new(flags, 64 * 1024 - 128, 4 << 20);
    let dev = start(&sim, &fx);
    let mut writes = Vec::new();
    let mut quick = Vec::new();
    for i in 0..8u32 {
        let data = pattern(64 * BS, i as u8);
        let id = sim.submit(
            &write10_fua(i * 64, 64),
            Data::Out(data.clone(), vec![4096, 8192, 0]),
        );
        writes.push((id, i, data));
        for _ in 0..3 {
            quick.push(sim.submit(&TUR, Data::None));
        }
        quick.push(sim.submit(&inquiry(36), Data::In(36, vec![])));
    }
    sim.irq();
    let done = sim.collect(writes.len() + quick.len()).await;
    let stolen = done.iter().filter(|d| d.stolen_slot).count();
    let d = by_id(done);
    for id in writes.iter().map(|w| w.0).chain(quick.iter().copied()) {
        assert_eq!(d[&id].status, status::GOOD, "cmd {id}");
    }
    if ooo {
        assert!(
            stolen > 0,
            "quick commands should complete before the FUA writes"
        );
    } else {
        assert_eq!(stolen, 0);
    }
    // Everything landed.
    let mut reads = Vec::new();
    for (_, i, data) in &writes {
        reads.push((
            sim.submit(&read10(i * 64, 64), Data::In(64 * BS, vec![])),
            data.clone(),
        ));
    }
    sim.irq();
    let d = by_id(sim.collect(reads.len()).await);
    for (id, data) in reads {
        assert_eq!(d[&id].data, data);
    }
    assert_eq!(dev.stop().await, DeviceExit::Stopped);
}

#[tokio::test]
async fn many_in_flight_complete_out_of_order_with_ooo() {
    mixed_batch(true).await;
}

#[tokio::test]
async fn many_in_flight_complete_in_ring_order_without_ooo() {
    mixed_batch(false).await;
}

#[tokio::test]
async fn ring_wraps_around_with_pad_entries() {
    let fx = fixture().await;
    // 1000-byte ring: 112-byte entries leave a 104-byte PAD, larger ones other sizes.
    let mut sim = Sim::new(ALL, 1000, 256 * 1024);
    let dev = start(&sim, &fx);
    for round in 0..40u32 {
        let blocks = 1 + (round % 5) as u16;
        let data = pattern(usize::from(blocks) * BS, round as u8);
        let lba = round * 8;
        // Up to 6 iovecs make entries of 144 bytes and more.
        let split = vec![BS / 2; (round % 6) as usize];
        let w = sim.submit(&write10(lba, blocks), Data::Out(data.clone(), split));
        let r = sim.submit(&read10(lba, blocks), Data::In(data.len(), vec![]));
        sim.irq();
        // Either may complete first (the read races the write, which may wait for the
        // journal); only compare data once the write is done.
        let d = by_id(sim.collect(2).await);
        assert_eq!(d[&w].status, status::GOOD, "round {round}");
        assert!(d.contains_key(&r), "round {round}");
        let r2 = sim.submit(&read10(lba, blocks), Data::In(data.len(), vec![100, 0]));
        sim.irq();
        let d2 = by_id(sim.collect(1).await);
        assert_eq!(d2[&r2].data, data, "round {round}");
    }
    assert!(sim.pads >= 5, "only {} PAD entries", sim.pads);
    assert_eq!(dev.stop().await, DeviceExit::Stopped);
}

#[tokio::test]
async fn malformed_entries_fail_alone_and_safely() {
    let fx = fixture().await;
    let mut sim = Sim::new(ALL, 8192 - 128, 1 << 20);
    let dev = start(&sim, &fx);
    let len = sim.dev_mem.len() as u64;
    // An iovec pointing past the mapping.
    let a = sim.submit_with(&read10(0, 1), Data::In(BS, vec![]), |e| {
        e[entry::IOV..entry::IOV + 8].copy_from_slice(&(len - 100).to_ne_bytes());
    });
    // An iovec inside the ring, not the data area.
    let b = sim.submit_with(&read10(0, 1), Data::In(BS, vec![]), |e| {
        e[entry::IOV..entry::IOV + 8].copy_from_slice(&200u64.to_ne_bytes());
    });
    // A huge iovec count.
    let c = sim.submit_with(&TUR, Data::None, |e| {
        e[entry::IOV_CNT..entry::IOV_CNT + 4].copy_from_slice(&u32::MAX.to_ne_bytes());
    });
    // A CDB offset outside the mapping, and one that overflows.
    let d = sim.submit_with(&TUR, Data::None, |e| {
        e[entry::CDB_OFF..entry::CDB_OFF + 8].copy_from_slice(&len.to_ne_bytes());
    });
    let d2 = sim.submit_with(&TUR, Data::None, |e| {
        e[entry::CDB_OFF..entry::CDB_OFF + 8].copy_from_slice(&u64::MAX.to_ne_bytes());
    });
    // An iovec whose base + length overflows.
    let f = sim.submit_with(&read10(0, 1), Data::In(BS, vec![]), |e| {
        e[entry::IOV + 8..entry::IOV + 16].copy_from_slice(&u64::MAX.to_ne_bytes());
    });
    // An opcode nobody defined.
    let u = sim.submit_with(&TUR, Data::None, |e| e[0] = (e[0] & !7) | 5);
    // And a good command after them.
    let ok = sim.submit(&inquiry(36), Data::In(36, vec![]));
    sim.irq();
    let done = by_id(sim.collect(8).await);
    for id in [a, b, c, d, d2, f] {
        assert_eq!(done[&id].status, status::CHECK_CONDITION, "cmd {id}");
        let s = sense_of(&done[&id]);
        assert_eq!(s.key, SenseKey::HardwareError);
        assert_eq!(s.code, asc::INTERNAL_TARGET_FAILURE);
    }
    assert_ne!(done[&u].uflags & uflag::UNKNOWN_OP, 0);
    assert_eq!(done[&ok].status, status::GOOD);
    assert_eq!(done[&ok].data.len(), 36);
    assert_eq!(dev.stats().malformed, 7);
    assert!(!dev.is_finished());
    assert_eq!(dev.stop().await, DeviceExit::Stopped);
}

async fn broken_by(tweak: impl FnOnce(&mut Vec<u8>)) -> (DeviceExit, usize) {
    let fx = fixture().await;
    let mut sim = Sim::new(ALL, 8192 - 128, 1 << 20);
    let dev = start(&sim, &fx);
    let good = sim.submit(&TUR, Data::None);
    sim.submit_with(&TUR, Data::None, tweak);
    sim.irq();
    let d = by_id(sim.collect(1).await);
    assert_eq!(d[&good].status, status::GOOD);
    let exit = tokio::time::timeout(std::time::Duration::from_secs(5), dev.stop())
        .await
        .expect("device loop ends");
    (exit, sim.pending())
}

#[tokio::test]
async fn an_entry_that_cannot_be_walked_past_breaks_the_ring_without_looping() {
    let zero = |e: &mut Vec<u8>| e[0..4].copy_from_slice(&1u32.to_ne_bytes());
    let (exit, left) = broken_by(zero).await;
    assert!(
        matches!(exit, DeviceExit::RingBroken(ref r) if r.contains("length 0")),
        "{exit:?}"
    );
    assert_eq!(left, 1);
    let past_head = |e: &mut Vec<u8>| e[0..4].copy_from_slice(&(4096u32 | 1).to_ne_bytes());
    let (exit, _) = broken_by(past_head).await;
    assert!(
        matches!(exit, DeviceExit::RingBroken(ref r) if r.contains("past cmd_head")),
        "{exit:?}"
    );
    let short = |e: &mut Vec<u8>| {
        // Claims 8 bytes: a response would not fit. (The sim's head still moves 112.)
        e[0..4].copy_from_slice(&(8u32 | 1).to_ne_bytes());
    };
    let (exit, _) = broken_by(short).await;
    assert!(matches!(exit, DeviceExit::RingBroken(_)), "{exit:?}");
}

#[tokio::test]
async fn stop_completes_commands_in_flight() {
    let fx = fixture().await;
    let mut sim = Sim::new(ALL, 8192 - 128, 1 << 20);
    let dev = start(&sim, &fx);
    let data = pattern(128 * BS, 3);
    let w = sim.submit(&write10_fua(0, 128), Data::Out(data, vec![]));
    sim.irq();
    // Let the loop take it (a few scheduler rounds on this single-threaded runtime; the
    // FUA write then waits for the commit thread), and stop at once.
    for _ in 0..50 {
        tokio::task::yield_now().await;
    }
    assert_eq!(dev.stop().await, DeviceExit::Stopped);
    let d = by_id(sim.reap());
    assert_eq!(
        d[&w].status,
        status::GOOD,
        "the command in flight was completed by stop"
    );
    assert_eq!(sim.pending(), 0);
}

#[tokio::test]
async fn removal_ends_the_loop() {
    let fx = fixture().await;
    let mut sim = Sim::new(ALL, 8192 - 128, 1 << 20);
    let dev = start(&sim, &fx);
    let t = sim.submit(&TUR, Data::None);
    sim.irq();
    assert_eq!(by_id(sim.collect(1).await)[&t].status, status::GOOD);
    sim.bell.remove();
    let exit = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        while !dev.is_finished() {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        dev.stop().await
    })
    .await
    .unwrap();
    assert!(matches!(exit, DeviceExit::Gone(_)), "{exit:?}");
}

// --- the ring alone, completions in a chosen order ---

fn ids(entries: &[Entry]) -> Vec<u16> {
    entries
        .iter()
        .filter_map(|e| match e {
            Entry::Cmd(c) => Some(c.cmd_id),
            _ => None,
        })
        .collect()
}

fn good() -> Completion {
    Completion::default()
}

#[test]
fn ooo_completion_steals_the_oldest_slot() {
    let mut sim = Sim::new(ALL, 1000, 64 * 1024);
    let mut ring = Ring::new(sim.dev_mem.clone()).unwrap();
    let a = sim.submit(&TUR, Data::None);
    let b = sim.submit(&TUR, Data::None);
    let c = sim.submit(&TUR, Data::None);
    let e = ring.poll().unwrap();
    assert_eq!(ids(&e), vec![a, b, c]);
    ring.complete(c, &good()).unwrap();
    assert!(ring.publish().unwrap());
    let d = sim.reap();
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].cmd_id, c);
    assert!(d[0].stolen_slot);
    ring.complete(a, &good()).unwrap();
    ring.complete(b, &good()).unwrap();
    assert!(ring.publish().unwrap());
    let d: Vec<u16> = sim.reap().iter().map(|d| d.cmd_id).collect();
    assert_eq!(d, vec![a, b]);
    // A second completion of the same command is refused, not written.
    assert!(ring.complete(a, &good()).is_err());
    assert!(!ring.publish().unwrap());
    assert_eq!(ring.outstanding(), 0);
}

#[test]
fn in_order_completion_holds_back_until_the_oldest_is_done() {
    let mut sim = Sim::new(cap::READ_LEN, 1000, 64 * 1024);
    let mut ring = Ring::new(sim.dev_mem.clone()).unwrap();
    assert!(!ring.out_of_order());
    let a = sim.submit(&TUR, Data::None);
    let b = sim.submit(&TUR, Data::None);
    let c = sim.submit(&TUR, Data::None);
    ring.poll().unwrap();
    let cc = Completion {
        status: status::CHECK_CONDITION,
        sense: Bytes::from_static(&[0x70, 0, 5, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x24, 0, 0, 0, 0, 0]),
        ..Default::default()
    };
    ring.complete(c, &cc).unwrap();
    ring.complete(b, &good()).unwrap();
    assert!(
        !ring.publish().unwrap(),
        "nothing may be released before {a}"
    );
    assert!(sim.reap().is_empty());
    ring.complete(a, &good()).unwrap();
    assert!(ring.publish().unwrap());
    let d = sim.reap();
    assert_eq!(
        d.iter().map(|d| d.cmd_id).collect::<Vec<_>>(),
        vec![a, b, c]
    );
    assert_eq!(d[2].status, status::CHECK_CONDITION);
    assert_eq!(sense_of(&d[2]).code, asc::INVALID_FIELD_IN_CDB);
}

#[test]
fn pad_and_tail_wrap_are_followed() {
    // 4 entries of 112 bytes fill 448 of 504; the 5th needs a PAD of 56 and goes to 0.
    let mut sim = Sim::new(ALL, 504, 64 * 1024);
    let mut ring = Ring::new(sim.dev_mem.clone()).unwrap();
    let first: Vec<u16> = (0..4).map(|_| sim.submit(&TUR, Data::None)).collect();
    assert_eq!(ids(&ring.poll().unwrap()), first);
    for &id in &first[..3] {
        ring.complete(id, &good()).unwrap();
    }
    ring.publish().unwrap();
    assert_eq!(sim.reap().len(), 3);
    let n = sim.submit(&TUR, Data::None);
    assert_eq!(sim.pads, 1);
    let e = ring.poll().unwrap();
    assert!(matches!(e[0], Entry::Pad));
    assert_eq!(ids(&e), vec![n]);
    ring.complete(n, &good()).unwrap();
    ring.complete(first[3], &good()).unwrap();
    ring.publish().unwrap();
    let d: Vec<u16> = sim.reap().iter().map(|d| d.cmd_id).collect();
    assert_eq!(d.len(), 2);
    assert_eq!(ring.outstanding(), 0);
}

#[test]
fn bad_mailboxes_are_refused() {
    let sim = Sim::new(ALL, 1000, 4096);
    let m = &sim.dev_mem;
    m.write(crate::tcmu::ring::mailbox::VERSION, &1u16.to_ne_bytes())
        .unwrap();
    assert!(Ring::new(m.clone()).is_err());
    m.write(crate::tcmu::ring::mailbox::VERSION, &2u16.to_ne_bytes())
        .unwrap();
    m.write(
        crate::tcmu::ring::mailbox::CMDR_SIZE,
        &u32::MAX.to_ne_bytes(),
    )
    .unwrap();
    assert!(Ring::new(m.clone()).is_err());
    m.write(
        crate::tcmu::ring::mailbox::CMDR_SIZE,
        &1000u32.to_ne_bytes(),
    )
    .unwrap();
    m.write(crate::tcmu::ring::mailbox::CMD_TAIL, &1001u32.to_ne_bytes())
        .unwrap();
    assert!(Ring::new(m.clone()).is_err());
    m.write(crate::tcmu::ring::mailbox::CMD_TAIL, &0u32.to_ne_bytes())
        .unwrap();
    assert!(Ring::new(m.clone()).is_ok());
    // A head outside the ring breaks it on the first poll.
    let mut r = Ring::new(m.clone()).unwrap();
    m.write(crate::tcmu::ring::mailbox::CMD_HEAD, &5000u32.to_ne_bytes())
        .unwrap();
    assert!(r.poll().unwrap().is_empty());
    assert!(r.broken().is_some());
    assert!(r.poll().is_err());
}
