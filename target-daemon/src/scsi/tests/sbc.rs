//! SBC-4 block commands through the device server: READ/WRITE bounds and data lengths,
//! VERIFY, WRITE SAME and UNMAP, COMPARE AND WRITE, ORWRITE, GET LBA STATUS, the Block
//! Limits.

use super::*;

#[tokio::test]
async fn write_read_roundtrip_and_bounds() {
    let f = fixture().await;
    let data = pattern(8, 7);
    let r = run(&f.target, &f.a, 0, &write10(100, 8), data.clone()).await;
    assert_eq!(r.status, status::GOOD, "{r:?}");
    assert_eq!(r.data_out_used, 8 * BS);
    let r = run(&f.target, &f.a, 0, &read10(100, 8), Bytes::new()).await;
    assert_eq!(r.status, status::GOOD);
    assert_eq!(r.data_in, data);
    // READ(16) of the last block works, one past the end does not.
    let r = run(
        &f.target,
        &f.a,
        0,
        &cdb16(0x88, 0, BLOCKS - 1, 1),
        Bytes::new(),
    )
    .await;
    assert_eq!(r.data_in.len(), BS as usize);
    let r = run(
        &f.target,
        &f.a,
        0,
        &cdb16(0x88, 0, BLOCKS - 1, 2),
        Bytes::new(),
    )
    .await;
    assert_check(&r, SenseKey::IllegalRequest, asc::LBA_OUT_OF_RANGE);
    let r = run(
        &f.target,
        &f.a,
        0,
        &cdb16(0x88, 0, u64::MAX, 1),
        Bytes::new(),
    )
    .await;
    assert_check(&r, SenseKey::IllegalRequest, asc::LBA_OUT_OF_RANGE);
    // Zero blocks: GOOD with no data.
    let r = run(&f.target, &f.a, 0, &read10(0, 0), Bytes::new()).await;
    assert_eq!((r.status, r.data_in.len()), (status::GOOD, 0));
    // READ(6) with length 0 reads 256 blocks.
    let r = run(&f.target, &f.a, 0, &[0x08, 0, 0, 0, 0, 0], Bytes::new()).await;
    assert_eq!(r.data_in.len(), 256 * BS as usize);
    // RDPROTECT is refused with a field pointer.
    let mut c = read10(0, 1);
    c[1] = 0x20;
    let s = assert_check(
        &run(&f.target, &f.a, 0, &c, Bytes::new()).await,
        SenseKey::IllegalRequest,
        asc::INVALID_FIELD_IN_CDB,
    );
    assert_eq!(s.field, Some(FieldPointer::cdb(1, Some(7))));
}

#[tokio::test]
async fn short_and_long_data_out() {
    let f = fixture().await;
    let a = pattern(2, 1);
    assert_eq!(
        run(&f.target, &f.a, 0, &write10(0, 2), a.clone())
            .await
            .status,
        status::GOOD
    );
    // Two blocks requested, one sent: only the first is written, GOOD.
    let b = pattern(1, 2);
    let r = run(&f.target, &f.a, 0, &write10(0, 2), b.clone()).await;
    assert_eq!((r.status, r.data_out_used), (status::GOOD, 2 * BS));
    let back = read_back(&f.target, &f.a, 0, 2).await;
    assert_eq!(&back[..BS as usize], &b[..]);
    assert_eq!(&back[BS as usize..], &a[BS as usize..]);
    // One block requested, two sent: only one written.
    let c = pattern(2, 3);
    let r = run(&f.target, &f.a, 0, &write10(0, 1), c.clone()).await;
    assert_eq!((r.status, r.data_out_used), (status::GOOD, BS));
    let back = read_back(&f.target, &f.a, 0, 2).await;
    assert_eq!(&back[..BS as usize], &c[..BS as usize]);
    assert_eq!(&back[BS as usize..], &a[BS as usize..]);
    assert_eq!(f.target.data_out_len(0, &write10(0, 3)), Some(3 * BS));
    assert_eq!(f.target.data_out_len(9, &write10(0, 3)), Some(0));
}

#[tokio::test]
async fn read_only_lun_refuses_writes() {
    let f = fixture_with(
        PoolOptions {
            capacity_bytes: Some(64 << 20),
            ..Default::default()
        },
        true,
    )
    .await;
    let r = run(&f.target, &f.a, 0, &write10(0, 1), pattern(1, 0)).await;
    assert_check(&r, SenseKey::DataProtect, asc::WRITE_PROTECTED);
    let ws = cdb16(0x93, 0x08, 0, 8);
    assert_check(
        &run(&f.target, &f.a, 0, &ws, pattern(1, 0)).await,
        SenseKey::DataProtect,
        asc::WRITE_PROTECTED,
    );
    assert_eq!(
        run(&f.target, &f.a, 0, &read10(0, 1), Bytes::new())
            .await
            .status,
        status::GOOD
    );
    // MODE SENSE reports WP.
    let r = run(
        &f.target,
        &f.a,
        0,
        &[0x1A, 0x08, 0x3F, 0, 0xFF, 0],
        Bytes::new(),
    )
    .await;
    assert_eq!(r.data_in[2] & 0x80, 0x80);
}

/// VERIFY's VERIFICATION LENGTH is bounded by MAXIMUM TRANSFER LENGTH, as READ's is
/// (SBC-4), whatever BYTCHK says: a 2^32-1 block VERIFY of a big thin LUN is refused
/// instead of reading terabytes.
#[tokio::test]
async fn verify_length_is_bounded_like_a_read() {
    let f = fixture().await;
    // A thin LUN far larger than the pool, and larger than one transfer.
    f.pool
        .create_volume("big", 1 << 40, BS, Guarantee::None)
        .await
        .expect("create volume");
    f.target
        .add_lun(1, f.pool.volume("big").expect("volume"), false)
        .expect("add lun");
    settle(&f.target, &f.a, 1).await;
    let max = f.target.lun(1).expect("lun").limits.max_transfer;
    for (op, bytchk) in [(0x8F, 0u8), (0x8F, 0x02), (0x8F, 0x06)] {
        for len in [max + 1, u32::MAX] {
            let r = run(&f.target, &f.a, 1, &cdb16(op, bytchk, 0, len), Bytes::new()).await;
            let s = assert_check(&r, SenseKey::IllegalRequest, asc::INVALID_FIELD_IN_CDB);
            assert_eq!(s.field, Some(FieldPointer::cdb(10, Some(7))), "{len}");
        }
    }
    let mut v10 = read10(0, 0);
    v10[0] = 0x2F;
    v10[7..9].copy_from_slice(&u16::MAX.to_be_bytes());
    if u32::from(u16::MAX) > max {
        let r = run(&f.target, &f.a, 1, &v10, Bytes::new()).await;
        assert_check(&r, SenseKey::IllegalRequest, asc::INVALID_FIELD_IN_CDB);
    }
    // Up to the limit it verifies (unwritten blocks read as zeros), in pieces.
    let r = run(&f.target, &f.a, 1, &cdb16(0x8F, 0, 0, max), Bytes::new()).await;
    assert_eq!(r.status, status::GOOD, "{r:?}");
    let zeros = Bytes::from(vec![0u8; BS as usize]);
    let r = run(&f.target, &f.a, 1, &cdb16(0x8F, 0x06, 0, max), zeros).await;
    assert_eq!(r.status, status::GOOD, "{r:?}");
}

#[tokio::test]
async fn verify_compares() {
    let f = fixture().await;
    let data = pattern(4, 9);
    run(&f.target, &f.a, 0, &write10(10, 4), data.clone()).await;
    let mut v = read10(10, 4);
    v[0] = 0x2F;
    v[1] = 0x02; // BYTCHK=1
    assert_eq!(
        run(&f.target, &f.a, 0, &v, data.clone()).await.status,
        status::GOOD
    );
    let mut bad = data.to_vec();
    bad[700] ^= 0xFF;
    let s = assert_check(
        &run(&f.target, &f.a, 0, &v, Bytes::from(bad)).await,
        SenseKey::Miscompare,
        asc::MISCOMPARE_DURING_VERIFY_OPERATION,
    );
    assert_eq!(s.information, Some(700));
    // BYTCHK=0 just checks the medium; beyond the end is LBA OUT OF RANGE.
    v[1] = 0;
    assert_eq!(
        run(&f.target, &f.a, 0, &v, Bytes::new()).await.status,
        status::GOOD
    );
    let mut v = cdb16(0x8F, 0, BLOCKS, 1);
    v[1] = 0;
    assert_check(
        &run(&f.target, &f.a, 0, &v, Bytes::new()).await,
        SenseKey::IllegalRequest,
        asc::LBA_OUT_OF_RANGE,
    );
}

#[tokio::test]
async fn write_same_unmap_and_lba_status() {
    let f = fixture().await;
    // Non-zero pattern replicated over 300 blocks.
    let blk = pattern(1, 42);
    let r = run(&f.target, &f.a, 0, &cdb16(0x93, 0, 1000, 300), blk.clone()).await;
    assert_eq!(r.status, status::GOOD, "{r:?}");
    let back = read_back(&f.target, &f.a, 1000, 300).await;
    assert!(back.chunks(BS as usize).all(|c| c == &blk[..]));
    // GET LBA STATUS at 1000: mapped.
    let r = run(
        &f.target,
        &f.a,
        0,
        &cdb16(0x9E, 0x12, 1000, 64),
        Bytes::new(),
    )
    .await;
    assert_eq!(r.status, status::GOOD);
    assert_eq!(&r.data_in[8..16], &1000u64.to_be_bytes());
    assert_eq!(r.data_in[20], 0, "mapped");
    // UNMAP a chunk-aligned range (64 KiB chunks = 128 blocks) and read zeros back.
    let list = unmap::encode(&[UnmapDescriptor {
        lba: 1024,
        blocks: 256,
    }]);
    let mut c = [0u8; 10];
    c[0] = 0x42;
    c[7..9].copy_from_slice(&(list.len() as u16).to_be_bytes());
    assert_eq!(
        run(&f.target, &f.a, 0, &c, Bytes::from(list)).await.status,
        status::GOOD
    );
    let back = read_back(&f.target, &f.a, 1024, 256).await;
    assert!(back.iter().all(|&b| b == 0));
    let r = run(
        &f.target,
        &f.a,
        0,
        &cdb16(0x9E, 0x12, 1024, 64),
        Bytes::new(),
    )
    .await;
    assert_eq!(
        r.data_in[20],
        1,
        "deallocated after UNMAP: {:?}",
        &r.data_in[..]
    );
    // WRITE SAME with UNMAP and a zero block reads back zeros.
    let r = run(
        &f.target,
        &f.a,
        0,
        &cdb16(0x93, 0x08, 1000, 24),
        Bytes::from(vec![0u8; BS as usize]),
    )
    .await;
    assert_eq!(r.status, status::GOOD);
    let back = read_back(&f.target, &f.a, 1000, 24).await;
    assert!(back.iter().all(|&b| b == 0));
    // Beyond the end, and GET LBA STATUS past the end.
    let r = run(
        &f.target,
        &f.a,
        0,
        &cdb16(0x93, 0, BLOCKS - 1, 2),
        blk.clone(),
    )
    .await;
    assert_check(&r, SenseKey::IllegalRequest, asc::LBA_OUT_OF_RANGE);
    let r = run(
        &f.target,
        &f.a,
        0,
        &cdb16(0x9E, 0x12, BLOCKS, 64),
        Bytes::new(),
    )
    .await;
    assert_check(&r, SenseKey::IllegalRequest, asc::LBA_OUT_OF_RANGE);
    // WRITE SAME Data-Out must be exactly one block.
    let r = run(&f.target, &f.a, 0, &cdb16(0x93, 0x08, 0, 1), pattern(2, 1)).await;
    assert_check(
        &r,
        SenseKey::IllegalRequest,
        asc::INVALID_FIELD_IN_COMMAND_INFORMATION_UNIT,
    );
    let r = run(
        &f.target,
        &f.a,
        0,
        &cdb16(0x93, 0x08, 0, 1),
        Bytes::from(vec![0u8; 256]),
    )
    .await;
    assert_check(
        &r,
        SenseKey::IllegalRequest,
        asc::INVALID_FIELD_IN_COMMAND_INFORMATION_UNIT,
    );
    // UNMAP with a truncated header.
    c[7..9].copy_from_slice(&4u16.to_be_bytes());
    let r = run(&f.target, &f.a, 0, &c, Bytes::from_static(&[0, 0, 0, 0])).await;
    assert_check(
        &r,
        SenseKey::IllegalRequest,
        asc::PARAMETER_LIST_LENGTH_ERROR,
    );
}

#[tokio::test]
async fn no_space_is_data_protect() {
    // A pool with about 2 MiB of data space under a 4 MiB thin volume: filling it must
    // fail with 27/07 (the pool also needs room for its metadata).
    let opts = PoolOptions {
        capacity_bytes: Some(9 * (1 << 20) + (2 << 20)),
        ..Default::default()
    };
    let f = fixture_with(opts, false).await;
    let chunk = pattern(128, 5);
    let mut saw = None;
    for i in 0..(BLOCKS / 128) as u32 {
        let r = run(&f.target, &f.a, 0, &write10(i * 128, 128), chunk.clone()).await;
        if r.status != status::GOOD {
            saw = Some(r);
            break;
        }
    }
    let r = saw.expect("a thin pool smaller than its volume must run out of space");
    assert_check(
        &r,
        SenseKey::DataProtect,
        asc::SPACE_ALLOCATION_FAILED_WRITE_PROTECT,
    );
}

#[tokio::test]
async fn compare_and_write_is_atomic_test_and_set() {
    let f = fixture().await;
    let old = pattern(1, 1);
    let new = pattern(1, 2);
    assert_eq!(
        run(&f.target, &f.a, 0, &write10(50, 1), old.clone())
            .await
            .status,
        status::GOOD
    );
    let mut caw = cdb16(0x89, 0, 50, 0);
    caw[13] = 1;
    let both = |a: &Bytes, b: &Bytes| Bytes::from([&a[..], &b[..]].concat());
    // Matching compare: the new data is written.
    let r = run(&f.target, &f.a, 0, &caw, both(&old, &new)).await;
    assert_eq!(r.status, status::GOOD, "{r:?}");
    assert_eq!(r.data_out_used, 2 * BS);
    assert_eq!(read_back(&f.target, &f.a, 50, 1).await, new);
    // Stale compare (another host won the lock): MISCOMPARE, medium unchanged.
    let s = assert_check(
        &run(&f.target, &f.b, 0, &caw, both(&old, &pattern(1, 3))).await,
        SenseKey::Miscompare,
        asc::MISCOMPARE_DURING_VERIFY_OPERATION,
    );
    assert_eq!(s.information, Some(first_diff(&old, &new) as u64));
    assert_eq!(read_back(&f.target, &f.a, 50, 1).await, new);
    // Too many blocks, wrong Data-Out size, beyond the end.
    caw[13] = 65;
    assert_check(
        &run(&f.target, &f.a, 0, &caw, Bytes::new()).await,
        SenseKey::IllegalRequest,
        asc::INVALID_FIELD_IN_CDB,
    );
    caw[13] = 1;
    assert_check(
        &run(&f.target, &f.a, 0, &caw, new.clone()).await,
        SenseKey::IllegalRequest,
        asc::INVALID_FIELD_IN_COMMAND_INFORMATION_UNIT,
    );
    let mut end = cdb16(0x89, 0, BLOCKS, 0);
    end[13] = 1;
    assert_check(
        &run(&f.target, &f.a, 0, &end, both(&old, &new)).await,
        SenseKey::IllegalRequest,
        asc::LBA_OUT_OF_RANGE,
    );
}

fn first_diff(a: &[u8], b: &[u8]) -> usize {
    a.iter().zip(b).position(|(x, y)| x != y).unwrap_or(a.len())
}

#[tokio::test]
async fn orwrite_ors_into_the_medium() {
    let f = fixture().await;
    let a = Bytes::from(vec![0xA5u8; 2 * BS as usize]);
    let b = Bytes::from(vec![0x5Au8; 2 * BS as usize]);
    assert_eq!(
        run(&f.target, &f.a, 0, &write10(7, 2), a).await.status,
        status::GOOD
    );
    let r = run(&f.target, &f.a, 0, &cdb16(0x8B, 0, 7, 2), b).await;
    assert_eq!((r.status, r.data_out_used), (status::GOOD, 2 * BS));
    let back = read_back(&f.target, &f.a, 7, 2).await;
    assert!(back.iter().all(|&x| x == 0xFF));
    let r = run(
        &f.target,
        &f.a,
        0,
        &cdb16(0x8B, 0, BLOCKS - 1, 2),
        pattern(2, 0),
    )
    .await;
    assert_check(&r, SenseKey::IllegalRequest, asc::LBA_OUT_OF_RANGE);
}

#[tokio::test]
async fn read_defect_data_is_empty() {
    let f = fixture().await;
    let r = run(
        &f.target,
        &f.a,
        0,
        &[0x37, 0, 0x18 | 5, 0, 0, 0, 0, 0, 255, 0],
        Bytes::new(),
    )
    .await;
    assert_eq!(
        (r.status, &r.data_in[..]),
        (status::GOOD, &[0u8, 0x1D, 0, 0][..])
    );
    let r = run(
        &f.target,
        &f.a,
        0,
        &[0xB7, 0x08 | 4, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0],
        Bytes::new(),
    )
    .await;
    assert_eq!(
        (r.status, &r.data_in[..]),
        (status::GOOD, &[0u8, 0x0C, 0, 0, 0, 0, 0, 0][..])
    );
}

/// GET LBA STATUS at `lba`: (provisioning status of the first descriptor, its length).
async fn lba_status(t: &ScsiTarget, n: &Arc<Nexus>, lba: u64) -> (u8, u32) {
    let r = run(t, n, 0, &cdb16(0x9E, 0x12, lba, 64), Bytes::new()).await;
    assert_eq!(r.status, status::GOOD, "{r:?}");
    assert_eq!(&r.data_in[8..16], &lba.to_be_bytes());
    let len = u32::from_be_bytes([r.data_in[16], r.data_in[17], r.data_in[18], r.data_in[19]]);
    (r.data_in[20] & 0x0F, len)
}

#[tokio::test]
async fn physical_block_is_4k_on_512_byte_luns() {
    let f = fixture().await;
    let r = run(&f.target, &f.a, 0, &cdb16(0x9E, 0x10, 0, 32), Bytes::new()).await;
    assert_eq!(r.status, status::GOOD);
    assert_eq!(
        r.data_in[13] & 0x0F,
        3,
        "8 logical blocks per physical block"
    );
    assert_eq!(
        (r.data_in[14] & 0x3F, r.data_in[15]),
        (0, 0),
        "lowest aligned LBA 0"
    );
    // Block Limits granularities are whole physical blocks.
    let r = run(&f.target, &f.a, 0, &[0x12, 1, 0xB0, 0, 64, 0], Bytes::new()).await;
    let be32 = |o: usize| {
        u32::from_be_bytes([
            r.data_in[o],
            r.data_in[o + 1],
            r.data_in[o + 2],
            r.data_in[o + 3],
        ])
    };
    let otlg = u16::from_be_bytes([r.data_in[6], r.data_in[7]]);
    assert_eq!(otlg % 8, 0, "OPTIMAL TRANSFER LENGTH GRANULARITY");
    assert_eq!(be32(28) % 8, 0, "OPTIMAL UNMAP GRANULARITY");
    assert!(
        be32(20) >= 8,
        "MAXIMUM UNMAP LBA COUNT covers a physical block"
    );
    // An unaligned WRITE SAME with UNMAP inside one physical block is fine.
    for i in 1..8u64 {
        let r = run(
            &f.target,
            &f.a,
            0,
            &cdb16(0x93, 0x08, i, (8 - i) as u32),
            Bytes::from(vec![0u8; BS as usize]),
        )
        .await;
        assert_eq!(r.status, status::GOOD, "{r:?}");
    }
    // A 4096-byte LUN: logical = physical, exponent 0.
    let t = extra_lun(&f, "v4k", 256, 4096, Guarantee::None).await;
    let r = run(&t, &f.a, 0, &cdb16(0x9E, 0x10, 0, 32), Bytes::new()).await;
    assert_eq!(r.status, status::GOOD);
    assert_eq!(&r.data_in[8..12], &4096u32.to_be_bytes());
    assert_eq!(r.data_in[13] & 0x0F, 0);
}

#[tokio::test]
async fn write_same_zero_blocks_runs_to_the_end_within_the_limit() {
    let f = fixture().await;
    // WSNZ=0 and a MAXIMUM WRITE SAME LENGTH.
    let r = run(&f.target, &f.a, 0, &[0x12, 1, 0xB0, 0, 64, 0], Bytes::new()).await;
    assert_eq!(r.data_in[4] & 1, 0, "WSNZ");
    let max = u64::from_be_bytes(r.data_in[36..44].try_into().expect("8 bytes"));
    assert_eq!(max, 0xFFFF);
    // NUMBER OF LOGICAL BLOCKS 0 at BLOCKS-300: the last 300 blocks, nothing before.
    let blk = pattern(1, 9);
    let r = run(
        &f.target,
        &f.a,
        0,
        &cdb16(0x93, 0, BLOCKS - 300, 0),
        blk.clone(),
    )
    .await;
    assert_eq!(r.status, status::GOOD, "{r:?}");
    let back = read_back(&f.target, &f.a, (BLOCKS - 301) as u32, 301).await;
    assert!(
        back[..BS as usize].iter().all(|&b| b == 0),
        "block before untouched"
    );
    assert!(back[BS as usize..]
        .chunks(BS as usize)
        .all(|c| c == &blk[..]));
    // WRITE SAME(10) of zeros from LBA 0 to the end: the whole (4 MiB) LUN.
    let mut ws10 = [0u8; 10];
    ws10[0] = 0x41;
    let r = run(
        &f.target,
        &f.a,
        0,
        &ws10,
        Bytes::from(vec![0u8; BS as usize]),
    )
    .await;
    assert_eq!(r.status, status::GOOD, "{r:?}");
    let back = read_back(&f.target, &f.a, (BLOCKS - 300) as u32, 300).await;
    assert!(back.iter().all(|&b| b == 0));
    // The LBA must exist: at or past the end is LBA OUT OF RANGE.
    for lba in [BLOCKS, BLOCKS + 1, u64::MAX] {
        let r = run(&f.target, &f.a, 0, &cdb16(0x93, 0, lba, 0), blk.clone()).await;
        assert_check(&r, SenseKey::IllegalRequest, asc::LBA_OUT_OF_RANGE);
    }
    // A LUN longer than MAXIMUM WRITE SAME LENGTH: "to the end" longer than the limit is
    // INVALID FIELD IN CDB at NUMBER OF LOGICAL BLOCKS, and writes nothing.
    let big = 0x20000u64;
    let t = extra_lun(&f, "big", big, BS, Guarantee::None).await;
    let r = run(&t, &f.a, 0, &write10(0, 1), blk.clone()).await;
    assert_eq!(r.status, status::GOOD);
    let s = assert_check(
        &run(
            &t,
            &f.a,
            0,
            &cdb16(0x93, 0, 0, 0),
            Bytes::from(vec![0u8; BS as usize]),
        )
        .await,
        SenseKey::IllegalRequest,
        asc::INVALID_FIELD_IN_CDB,
    );
    assert_eq!(s.field, Some(FieldPointer::cdb(10, Some(7))));
    let s = assert_check(
        &run(&t, &f.a, 0, &ws10, Bytes::from(vec![0u8; BS as usize])).await,
        SenseKey::IllegalRequest,
        asc::INVALID_FIELD_IN_CDB,
    );
    assert_eq!(s.field, Some(FieldPointer::cdb(7, Some(7))));
    let back = run(&t, &f.a, 0, &read10(0, 1), Bytes::new()).await.data_in;
    assert_eq!(&back[..], &blk[..], "a refused WRITE SAME writes nothing");
    let r = run(&t, &f.a, 0, &cdb16(0x93, 0, big - max - 1, 0), blk.clone()).await;
    assert_check(&r, SenseKey::IllegalRequest, asc::INVALID_FIELD_IN_CDB);
    for lba in [big - max, big - max + 1] {
        let r = run(
            &t,
            &f.a,
            0,
            &cdb16(0x93, 0, lba, 0),
            Bytes::from(vec![0u8; BS as usize]),
        )
        .await;
        assert_eq!(r.status, status::GOOD, "{r:?}");
    }
}

#[tokio::test]
async fn write_same_zero_block_without_unmap_allocates_thin_chunks() {
    let f = fixture().await;
    // 64 KiB chunks = 128 blocks. Map chunks 0..4.
    let r = run(&f.target, &f.a, 0, &write10(0, 512), pattern(512, 3)).await;
    assert_eq!(r.status, status::GOOD);
    let info = || f.pool.volume_info("vol0").expect("info");
    assert_eq!(info().mapped_bytes, 4 * 65536);
    // Linux BLKZEROOUT / VMware block zero: WRITE SAME(16), UNMAP=0, a zero block, LBAs
    // 100..800. A write: the mapped chunks stay mapped and the holes 4..=6 get allocated.
    let r = run(
        &f.target,
        &f.a,
        0,
        &cdb16(0x93, 0, 100, 700),
        Bytes::from(vec![0u8; BS as usize]),
    )
    .await;
    assert_eq!(r.status, status::GOOD, "{r:?}");
    assert_eq!(lba_status(&f.target, &f.a, 0).await, (0, 896));
    assert_eq!(lba_status(&f.target, &f.a, 896).await.0, 1);
    assert_eq!(info().mapped_bytes, 7 * 65536);
    let want = pattern(512, 3);
    let back = read_back(&f.target, &f.a, 0, 1024).await;
    for (i, got) in back.chunks(BS as usize).enumerate() {
        if (100..800).contains(&i) || i >= 512 {
            assert!(got.iter().all(|&b| b == 0), "block {i} zeroed");
        } else {
            assert_eq!(
                got,
                &want[i * BS as usize..(i + 1) * BS as usize],
                "block {i}"
            );
        }
    }
    // WRITE SAME(10) the same way over chunk 7.
    let mut ws10 = [0u8; 10];
    ws10[0] = 0x41;
    ws10[2..6].copy_from_slice(&896u32.to_be_bytes());
    ws10[7..9].copy_from_slice(&128u16.to_be_bytes());
    let r = run(
        &f.target,
        &f.a,
        0,
        &ws10,
        Bytes::from(vec![0u8; BS as usize]),
    )
    .await;
    assert_eq!(r.status, status::GOOD, "{r:?}");
    assert_eq!(lba_status(&f.target, &f.a, 896).await.0, 0);
    assert_eq!(info().mapped_bytes, 8 * 65536);
    // UNMAP=1 with a non-zero pattern deallocates too: the range reads zeros.
    let r = run(&f.target, &f.a, 0, &write10(0, 256), pattern(256, 5)).await;
    assert_eq!(r.status, status::GOOD);
    let r = run(
        &f.target,
        &f.a,
        0,
        &cdb16(0x93, 0x08, 10, 246),
        pattern(1, 6),
    )
    .await;
    assert_eq!(r.status, status::GOOD, "{r:?}");
    let back = read_back(&f.target, &f.a, 0, 256).await;
    assert_eq!(
        &back[..10 * BS as usize],
        &pattern(256, 5)[..10 * BS as usize]
    );
    assert!(back[10 * BS as usize..].iter().all(|&b| b == 0));
    assert_eq!(lba_status(&f.target, &f.a, 128).await.0, 1);
    // A full-guarantee LUN keeps its blocks mapped (its space is reserved anyway).
    let t = extra_lun(&f, "full", 1024, BS, Guarantee::Full).await;
    let r = run(&t, &f.a, 0, &write10(0, 256), pattern(256, 4)).await;
    assert_eq!(r.status, status::GOOD);
    let r = run(
        &t,
        &f.a,
        0,
        &cdb16(0x93, 0, 0, 256),
        Bytes::from(vec![0u8; BS as usize]),
    )
    .await;
    assert_eq!(r.status, status::GOOD, "{r:?}");
    assert_eq!(lba_status(&t, &f.a, 0).await, (0, 256));
    let back = run(&t, &f.a, 0, &read10(0, 256), Bytes::new())
        .await
        .data_in;
    assert!(back.iter().all(|&b| b == 0));
}

#[tokio::test]
async fn unmap_granularity_follows_the_pool_chunk() {
    let f = fixture().await;
    let t = ScsiTarget::with_chunk_size("iqn.2026-11.io.lunar:chunky", 256 * 1024);
    t.add_lun(0, f.pool.volume("vol0").expect("volume"), false)
        .expect("add");
    let r = run(&t, &f.a, 0, &[0x12, 1, 0xB0, 0, 64, 0], Bytes::new()).await;
    let gran = u32::from_be_bytes([r.data_in[28], r.data_in[29], r.data_in[30], r.data_in[31]]);
    assert_eq!(gran, 256 * 1024 / BS);
}

/// Commands over the Block Limits: the device server refuses each with INVALID FIELD IN CDB
/// pointing at its length field, and tells transports up front to collect no Data-Out for
/// it (so iSCSI never buffers data for a command refused for its size).
#[tokio::test]
async fn transfers_over_the_block_limits_take_no_data_and_fail_with_the_field() {
    let f = fixture().await;
    let mtl = (8 << 20) / BS; // MAXIMUM TRANSFER LENGTH in blocks
    let mut caw = [0u8; 16];
    caw[0] = 0x89;
    caw[13] = 65; // over MAXIMUM COMPARE AND WRITE LENGTH (64)
    let cases: Vec<(Vec<u8>, u16)> = vec![
        (cdb16(0x8a, 0, 0, mtl + 1).to_vec(), 10),    // WRITE(16)
        (cdb16(0x88, 0, 0, mtl + 1).to_vec(), 10),    // READ(16)
        (cdb16(0x8e, 0, 0, mtl + 1).to_vec(), 10),    // WRITE AND VERIFY(16)
        (cdb16(0x8f, 0x02, 0, mtl + 1).to_vec(), 10), // VERIFY(16), BYTCHK 01b
        (caw.to_vec(), 13),
    ];
    for (cdb, field) in cases {
        assert_eq!(f.target.data_out_len(0, &cdb), Some(0), "{cdb:02x?}");
        let r = run(&f.target, &f.a, 0, &cdb, Bytes::new()).await;
        let s = assert_check(&r, SenseKey::IllegalRequest, asc::INVALID_FIELD_IN_CDB);
        let p = s.field.expect("field pointer");
        assert_eq!(
            (p.in_cdb, p.byte, p.bit),
            (true, field, Some(7)),
            "{cdb:02x?}"
        );
    }
    // At the limit a WRITE still takes its data.
    assert_eq!(
        f.target.data_out_len(0, &cdb16(0x8a, 0, 0, mtl)),
        Some(mtl * BS)
    );
}
