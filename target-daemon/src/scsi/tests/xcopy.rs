//! EXTENDED COPY and RECEIVE COPY RESULTS through the device server, on a real pool.

use super::*;
use scsi_proto::scsi::xcopy;

fn naa(f: &Fixture, lun: u64) -> [u8; 16] {
    f.target.lun(lun).expect("lun").naa()
}

fn target_desc(naa: &[u8; 16]) -> Vec<u8> {
    let mut d = vec![0u8; 32];
    d[0] = 0xE4;
    d[4] = 0x01;
    d[5] = 0x03;
    d[7] = 16;
    d[8..24].copy_from_slice(naa);
    d[29..32].copy_from_slice(&BS.to_be_bytes()[1..]);
    d
}

fn seg(src: u16, dst: u16, blocks: u16, src_lba: u64, dst_lba: u64) -> Vec<u8> {
    let mut d = vec![0u8; 28];
    d[0] = 0x02;
    d[3] = 24;
    d[4..6].copy_from_slice(&src.to_be_bytes());
    d[6..8].copy_from_slice(&dst.to_be_bytes());
    d[10..12].copy_from_slice(&blocks.to_be_bytes());
    d[12..20].copy_from_slice(&src_lba.to_be_bytes());
    d[20..28].copy_from_slice(&dst_lba.to_be_bytes());
    d
}

fn param_list(list_id: u8, targets: &[Vec<u8>], segs: &[Vec<u8>]) -> Bytes {
    let t = targets.concat();
    let s = segs.concat();
    let mut b = vec![0u8; 16];
    b[0] = list_id;
    b[2..4].copy_from_slice(&(t.len() as u16).to_be_bytes());
    b[8..12].copy_from_slice(&(s.len() as u32).to_be_bytes());
    b.extend_from_slice(&t);
    b.extend_from_slice(&s);
    Bytes::from(b)
}

fn xcopy_cdb(len: usize) -> [u8; 16] {
    let mut c = [0u8; 16];
    c[0] = 0x83;
    c[10..14].copy_from_slice(&(len as u32).to_be_bytes());
    c
}

fn rcr_cdb(sa: u8, list_id: u8) -> [u8; 16] {
    let mut c = [0u8; 16];
    c[0] = 0x84;
    c[1] = sa;
    c[2] = list_id;
    c[10..14].copy_from_slice(&1024u32.to_be_bytes());
    c
}

async fn xcopy(f: &Fixture, n: &Arc<Nexus>, lun: u64, list: Bytes) -> ScsiResponse {
    run(&f.target, n, lun, &xcopy_cdb(list.len()), list).await
}

async fn read(f: &Fixture, lun: u64, lba: u32, blocks: u16) -> Bytes {
    let r = run(&f.target, &f.a, lun, &read10(lba, blocks), Bytes::new()).await;
    assert_eq!(r.status, status::GOOD, "{r:?}");
    r.data_in
}

async fn write(f: &Fixture, lun: u64, lba: u32, data: Bytes) {
    let blocks = (data.len() / BS as usize) as u16;
    let r = run(&f.target, &f.a, lun, &write10(lba, blocks), data).await;
    assert_eq!(r.status, status::GOOD, "{r:?}");
}

/// A second LUN (1) on the fixture's target, and its first unit attention consumed.
async fn second_lun(f: &Fixture, read_only: bool) {
    f.pool
        .create_volume("vol1", BLOCKS * u64::from(BS), BS, Guarantee::None)
        .await
        .expect("create vol1");
    f.target
        .add_lun(1, f.pool.volume("vol1").expect("vol1"), read_only)
        .expect("add lun 1");
    for n in [&f.a, &f.b] {
        for lun in [0, 1] {
            // POWER ON on LUN 1, REPORTED LUNS DATA HAS CHANGED on LUN 0.
            let _ = run(&f.target, n, lun, &[0, 0, 0, 0, 0, 0], Bytes::new()).await;
        }
    }
}

#[tokio::test]
async fn copies_within_a_lun_and_reports_status() {
    let f = fixture().await;
    let data = pattern(64, 3);
    write(&f, 0, 10, data.clone()).await;
    let n0 = naa(&f, 0);
    let r = xcopy(
        &f,
        &f.a,
        0,
        param_list(5, &[target_desc(&n0)], &[seg(0, 0, 64, 10, 4000)]),
    )
    .await;
    assert_eq!(r.status, status::GOOD, "{r:?}");
    assert_eq!(read(&f, 0, 4000, 64).await, data);

    let st = run(&f.target, &f.a, 0, &rcr_cdb(0x00, 5), Bytes::new()).await;
    assert_eq!(st.status, status::GOOD);
    assert_eq!(
        &st.data_in[..],
        &xcopy::CopyStatus {
            state: xcopy::CopyState::Completed,
            segments_processed: 1,
            bytes: 64 * u64::from(BS),
        }
        .encode()[..]
    );
    // Status belongs to the I_T nexus that ran the copy.
    let other = run(&f.target, &f.b, 0, &rcr_cdb(0x00, 5), Bytes::new()).await;
    assert_check(&other, SenseKey::IllegalRequest, asc::INVALID_FIELD_IN_CDB);
    // No copy with that list identifier at all.
    let none = run(&f.target, &f.a, 0, &rcr_cdb(0x00, 6), Bytes::new()).await;
    assert_check(&none, SenseKey::IllegalRequest, asc::INVALID_FIELD_IN_CDB);
    // A successful copy has no failed segment details.
    let fsd = run(&f.target, &f.a, 0, &rcr_cdb(0x04, 5), Bytes::new()).await;
    assert_eq!(&fsd.data_in[..], &[0, 0, 0, 0]);
    let op = run(&f.target, &f.a, 0, &rcr_cdb(0x03, 0), Bytes::new()).await;
    assert_eq!(op.status, status::GOOD);
    assert_eq!(&op.data_in[8..10], &32u16.to_be_bytes());
}

#[tokio::test]
async fn copies_between_luns_keeping_holes_unallocated() {
    let f = fixture().await;
    second_lun(&f, false).await;
    let chunk_blocks = (f.pool.status().chunk_size / BS) as u32;
    // Source: chunk 0 written, chunk 1 never written, chunk 2 written.
    let a = pattern(chunk_blocks as usize, 7);
    let c = pattern(chunk_blocks as usize, 9);
    write(&f, 0, 0, a.clone()).await;
    write(&f, 0, 2 * chunk_blocks, c.clone()).await;
    // Destination already holds data where the hole will land.
    write(&f, 1, chunk_blocks, pattern(chunk_blocks as usize, 1)).await;
    let mapped_before = f.pool.volume("vol1").expect("vol1").info().mapped_bytes;
    assert_eq!(mapped_before, u64::from(chunk_blocks * BS));

    let (n0, n1) = (naa(&f, 0), naa(&f, 1));
    let blocks = (3 * chunk_blocks) as u16;
    let r = xcopy(
        &f,
        &f.a,
        0,
        param_list(
            1,
            &[target_desc(&n0), target_desc(&n1)],
            &[seg(0, 1, blocks, 0, 0)],
        ),
    )
    .await;
    assert_eq!(r.status, status::GOOD, "{r:?}");
    assert_eq!(read(&f, 1, 0, chunk_blocks as u16).await, a);
    let hole = read(&f, 1, chunk_blocks, chunk_blocks as u16).await;
    assert!(hole.iter().all(|&b| b == 0), "copied hole reads zeros");
    assert_eq!(read(&f, 1, 2 * chunk_blocks, chunk_blocks as u16).await, c);
    // Exactly the two written chunks are allocated in the destination: the hole was
    // unmapped there, not filled with zeros.
    let mapped = f.pool.volume("vol1").expect("vol1").info().mapped_bytes;
    assert_eq!(mapped, 2 * u64::from(chunk_blocks * BS));
    // The copy manager can be either end: issued to LUN 1, copying back onto LUN 0.
    let r = xcopy(
        &f,
        &f.b,
        1,
        param_list(
            2,
            &[target_desc(&n1), target_desc(&n0)],
            &[seg(0, 1, 8, 0, 5000)],
        ),
    )
    .await;
    assert_eq!(r.status, status::GOOD, "{r:?}");
    assert_eq!(read(&f, 0, 5000, 8).await, a.slice(..8 * BS as usize));
}

#[tokio::test]
async fn overlapping_copy_onto_itself_moves_like_memmove() {
    let f = fixture().await;
    let data = pattern(3000, 11);
    write(&f, 0, 100, data.clone()).await;
    let n0 = naa(&f, 0);
    // Forward by 500 blocks: pieces must be taken from the end.
    let r = xcopy(
        &f,
        &f.a,
        0,
        param_list(1, &[target_desc(&n0)], &[seg(0, 0, 3000, 100, 600)]),
    )
    .await;
    assert_eq!(r.status, status::GOOD, "{r:?}");
    assert_eq!(read(&f, 0, 600, 3000).await, data);
}

#[tokio::test]
async fn unreachable_and_foreign_luns_are_refused() {
    let f = fixture().await;
    let n0 = naa(&f, 0);
    // A LUN of another target (another ACL) in the same pool: not nameable from here.
    f.pool
        .create_volume("secret", BLOCKS * u64::from(BS), BS, Guarantee::None)
        .await
        .expect("create");
    let other = ScsiTarget::new("iqn.2026-11.io.lunar:other");
    other
        .add_lun(0, f.pool.volume("secret").expect("secret"), false)
        .expect("add");
    let secret = other.lun(0).expect("lun").naa();
    let r = xcopy(
        &f,
        &f.a,
        0,
        param_list(
            1,
            &[target_desc(&n0), target_desc(&secret)],
            &[seg(0, 1, 8, 0, 0)],
        ),
    )
    .await;
    assert_check(&r, SenseKey::CopyAborted, xcopy::UNREACHABLE_COPY_TARGET);
    // A segment naming a descriptor index that does not exist.
    let r = xcopy(
        &f,
        &f.a,
        0,
        param_list(2, &[target_desc(&n0)], &[seg(0, 1, 8, 0, 0)]),
    )
    .await;
    assert_check(
        &r,
        SenseKey::CopyAborted,
        xcopy::COPY_TARGET_DEVICE_NOT_REACHABLE,
    );
    // Beyond the end of the destination: COPY ABORTED, and the failure is retained.
    let r = xcopy(
        &f,
        &f.a,
        0,
        param_list(3, &[target_desc(&n0)], &[seg(0, 0, 16, 0, BLOCKS - 8)]),
    )
    .await;
    assert_check(&r, SenseKey::CopyAborted, asc::NO_ADDITIONAL_SENSE);
    let st = run(&f.target, &f.a, 0, &rcr_cdb(0x00, 3), Bytes::new()).await;
    assert_eq!(st.data_in[4], 0x02, "completed with errors");
    let fsd = run(&f.target, &f.a, 0, &rcr_cdb(0x04, 3), Bytes::new()).await;
    assert_eq!(fsd.data_in[56], status::CHECK_CONDITION);
    let sense_len = u16::from_be_bytes([fsd.data_in[58], fsd.data_in[59]]) as usize;
    let s = Sense::decode(&fsd.data_in[60..60 + sense_len]).expect("sense");
    assert_eq!(s.key, SenseKey::CopyAborted);
    // An empty parameter list is a no-op; a truncated one is a length error.
    let r = run(&f.target, &f.a, 0, &xcopy_cdb(0), Bytes::new()).await;
    assert_eq!(r.status, status::GOOD);
    let list = param_list(4, &[target_desc(&n0)], &[seg(0, 0, 1, 0, 1)]);
    let r = run(
        &f.target,
        &f.a,
        0,
        &xcopy_cdb(list.len() - 1),
        list.slice(..list.len() - 1),
    )
    .await;
    assert_check(
        &r,
        SenseKey::IllegalRequest,
        asc::PARAMETER_LIST_LENGTH_ERROR,
    );
}

#[tokio::test]
async fn read_only_and_reserved_destinations_are_protected() {
    let f = fixture().await;
    second_lun(&f, true).await;
    let (n0, n1) = (naa(&f, 0), naa(&f, 1));
    let list = || {
        param_list(
            1,
            &[target_desc(&n0), target_desc(&n1)],
            &[seg(0, 1, 8, 0, 0)],
        )
    };
    let r = xcopy(&f, &f.a, 0, list()).await;
    assert_check(&r, SenseKey::DataProtect, asc::WRITE_PROTECTED);

    // Copy onto LUN 0 while another initiator holds a SCSI-2 reservation on it, issued to
    // LUN 1 (which nobody reserved).
    let back = param_list(
        2,
        &[target_desc(&n1), target_desc(&n0)],
        &[seg(0, 1, 8, 0, 0)],
    );
    let r = run(&f.target, &f.b, 0, &[0x16, 0, 0, 0, 0, 0], Bytes::new()).await;
    assert_eq!(r.status, status::GOOD);
    let r = xcopy(&f, &f.a, 1, back.clone()).await;
    assert_eq!(r.status, status::RESERVATION_CONFLICT);
    // The holder itself may copy.
    let r = xcopy(&f, &f.b, 1, back).await;
    assert_eq!(r.status, status::GOOD, "{r:?}");
}

#[tokio::test]
async fn an_aborted_copy_releases_its_list_identifier() {
    let f = fixture().await;
    write(&f, 0, 0, pattern(2048, 5)).await;
    let n0 = naa(&f, 0);
    let list = param_list(9, &[target_desc(&n0)], &[seg(0, 0, 2048, 0, 4096)]);
    // Dropping the command mid-copy is what ABORT TASK and session loss do to it. Holding
    // the destination's COMPARE AND WRITE lock parks the copy at its first write.
    let lun = f.target.lun(0).expect("lun");
    let held = lun.atomic.write().await;
    let cut = tokio::time::timeout(
        std::time::Duration::from_millis(50),
        xcopy(&f, &f.a, 0, list.clone()),
    )
    .await;
    drop(held);
    assert!(
        cut.is_err(),
        "the copy must still have been running when dropped"
    );
    let st = run(&f.target, &f.a, 0, &rcr_cdb(0x00, 9), Bytes::new()).await;
    assert_eq!(st.status, status::GOOD);
    assert_eq!(
        st.data_in[4], 0x02,
        "an aborted copy is reported as ended with errors"
    );
    let fsd = run(&f.target, &f.a, 0, &rcr_cdb(0x04, 9), Bytes::new()).await;
    assert_eq!(fsd.data_in[56], status::TASK_ABORTED);
    // The list identifier is free again.
    let r = xcopy(&f, &f.a, 0, list).await;
    assert_eq!(r.status, status::GOOD, "{r:?}");
}

/// An initiator that loses access to a copy target mid-segment (preempted from a
/// registrants-only reservation, or another initiator takes a SCSI-2 reservation) stops
/// copying before the next piece: RESERVATION CONFLICT, and nothing after the piece under
/// way reaches the destination. The test hook changes the reservation between pieces, so
/// nothing depends on timing.
#[tokio::test]
async fn losing_access_mid_segment_stops_the_copy() {
    use crate::scsi::pr::{PrOutEffects, PrOutRequest};
    use scsi_proto::scsi::pr::out_sa;
    let f = fixture().await;
    second_lun(&f, false).await;
    let chunk_blocks = (f.pool.status().chunk_size / BS) as u32;
    // Source chunks 0, 2 and 4 written, 1 and 3 never: five pieces.
    for c in [0, 2, 4] {
        write(
            &f,
            0,
            c * chunk_blocks,
            pattern(chunk_blocks as usize, c as u8 + 1),
        )
        .await;
    }
    let (n0, n1) = (naa(&f, 0), naa(&f, 1));
    let list = |id| {
        param_list(
            id,
            &[target_desc(&n0), target_desc(&n1)],
            &[seg(0, 1, (5 * chunk_blocks) as u16, 0, 0)],
        )
    };
    let pr_out = |sa: u8, t: u8, key: u64, sa_key: u64| {
        let c = [0x5F, sa, t, 0, 0, 0, 0, 0, 24, 0];
        let mut p = vec![0u8; 24];
        p[..8].copy_from_slice(&key.to_be_bytes());
        p[8..16].copy_from_slice(&sa_key.to_be_bytes());
        (c, Bytes::from(p))
    };
    // A and B register on the destination; B reserves it Write Exclusive – Registrants
    // Only, so A (a registrant) may write it.
    for (n, key) in [(&f.a, 0xA), (&f.b, 0xB)] {
        let (c, p) = pr_out(out_sa::REGISTER, 0, 0, key);
        assert_eq!(run(&f.target, n, 1, &c, p).await.status, status::GOOD);
    }
    let (c, p) = pr_out(out_sa::RESERVE, 5, 0xB, 0);
    assert_eq!(run(&f.target, &f.b, 1, &c, p).await.status, status::GOOD);

    // Before the third piece, B preempts A's registration.
    let dst = f.target.lun(1).expect("lun 1");
    let b = (*f.b).clone();
    *f.target.lun(0).expect("lun 0").copies.piece_hook.lock() = Some(Box::new(move |k| {
        if k == 2 {
            let (_, p) = pr_out(out_sa::PREEMPT, 5, 0xB, 0xA);
            let req = PrOutRequest::parse(u16::from(out_sa::PREEMPT), 0, 5, &p).expect("parse");
            let mut fx = PrOutEffects::default();
            let done = dst.pr.lock().pr_out(&b, &req, &mut fx);
            assert_eq!(done, Ok(crate::scsi::pr::PrOutcome::Good));
        }
    }));
    let r = xcopy(&f, &f.a, 0, list(1)).await;
    assert_eq!(r.status, status::RESERVATION_CONFLICT, "{r:?}");
    let cb = chunk_blocks as u16;
    assert_eq!(read(&f, 1, 0, cb).await, pattern(chunk_blocks as usize, 1));
    for c in [2, 4] {
        let d = read(&f, 1, c * chunk_blocks, cb).await;
        assert!(
            d.iter().all(|&x| x == 0),
            "chunk {c} copied after the preempt"
        );
    }

    // The same with a SCSI-2 reservation B takes before the second piece.
    let (c, p) = pr_out(out_sa::CLEAR, 0, 0xB, 0);
    assert_eq!(run(&f.target, &f.b, 1, &c, p).await.status, status::GOOD);
    let dst = f.target.lun(1).expect("lun 1");
    let b = (*f.b).clone();
    *f.target.lun(0).expect("lun 0").copies.piece_hook.lock() = Some(Box::new(move |k| {
        if k == 1 {
            assert!(dst.reserve(&b));
        }
    }));
    let r = xcopy(&f, &f.a, 0, list(2)).await;
    assert_eq!(r.status, status::RESERVATION_CONFLICT, "{r:?}");
    let r = run(&f.target, &f.b, 1, &[0x17, 0, 0, 0, 0, 0], Bytes::new()).await;
    assert_eq!(r.status, status::GOOD);
    for c in [2, 4] {
        let d = read(&f, 1, c * chunk_blocks, cb).await;
        assert!(d.iter().all(|&x| x == 0), "chunk {c} copied after RESERVE");
    }
}
