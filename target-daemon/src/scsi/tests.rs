//! Device-server tests against a real storage-core pool in a temporary directory.

use std::sync::Arc;

use bytes::Bytes;
use scsi_proto::scsi::sense::{asc, FieldPointer, Sense, SenseKey};
use scsi_proto::scsi::unmap::{self, UnmapDescriptor};
use storage_core::{Guarantee, Pool, PoolOptions};

use super::{status, Nexus, ScsiRequest, ScsiResponse, ScsiTarget, TaskAttr};

const BS: u32 = 512;
const BLOCKS: u64 = 8192; // 4 MiB

struct Fixture {
    _dir: tempfile::TempDir,
    pool: Pool,
    target: Arc<ScsiTarget>,
    a: Arc<Nexus>,
    b: Arc<Nexus>,
}

fn nexus(i: u64) -> Arc<Nexus> {
    Arc::new(Nexus {
        initiator: format!("iqn.2026-11.test:init{i}"),
        isid: i,
        tpgt: 1,
    })
}

async fn fixture_with(opts: PoolOptions, read_only: bool) -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let pool = Pool::create(&dir.path().join("pool"), &opts)
        .await
        .expect("create pool");
    pool.create_volume("vol0", BLOCKS * u64::from(BS), BS, Guarantee::None)
        .await
        .expect("create volume");
    let target = ScsiTarget::new("iqn.2026-11.io.lunar:test");
    target
        .add_lun(0, pool.volume("vol0").expect("volume"), read_only)
        .expect("add lun");
    let (a, b) = (nexus(1), nexus(2));
    for n in [&a, &b] {
        target.nexus_login(n);
        // Consume the POWER ON unit attention.
        let r = run(&target, n, 0, &[0, 0, 0, 0, 0, 0], Bytes::new()).await;
        assert_eq!(r.status, status::CHECK_CONDITION);
        assert_eq!(
            sense(&r).code,
            asc::POWER_ON_RESET_OR_BUS_DEVICE_RESET_OCCURRED
        );
    }
    Fixture {
        _dir: dir,
        pool,
        target,
        a,
        b,
    }
}

async fn fixture() -> Fixture {
    fixture_with(
        PoolOptions {
            capacity_bytes: Some(64 << 20),
            ..Default::default()
        },
        false,
    )
    .await
}

async fn run(
    t: &ScsiTarget,
    n: &Arc<Nexus>,
    lun: u64,
    cdb: &[u8],
    data_out: Bytes,
) -> ScsiResponse {
    t.execute(ScsiRequest {
        nexus: n.clone(),
        lun,
        cdb: Bytes::copy_from_slice(cdb),
        data_out,
        expected_data_in: 1 << 20,
        attr: TaskAttr::Simple,
        tag: 1,
    })
    .await
}

fn sense(r: &ScsiResponse) -> Sense {
    Sense::decode(r.sense.as_ref().expect("sense data")).expect("decodable sense")
}

fn read10(lba: u32, blocks: u16) -> [u8; 10] {
    let mut c = [0u8; 10];
    c[0] = 0x28;
    c[2..6].copy_from_slice(&lba.to_be_bytes());
    c[7..9].copy_from_slice(&blocks.to_be_bytes());
    c
}

fn write10(lba: u32, blocks: u16) -> [u8; 10] {
    let mut c = read10(lba, blocks);
    c[0] = 0x2A;
    c
}

fn cdb16(op: u8, b1: u8, lba: u64, len: u32) -> [u8; 16] {
    let mut c = [0u8; 16];
    c[0] = op;
    c[1] = b1;
    c[2..10].copy_from_slice(&lba.to_be_bytes());
    c[10..14].copy_from_slice(&len.to_be_bytes());
    c
}

fn pattern(blocks: usize, seed: u8) -> Bytes {
    Bytes::from(
        (0..blocks * BS as usize)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect::<Vec<_>>(),
    )
}

fn assert_check(
    r: &ScsiResponse,
    key: SenseKey,
    code: scsi_proto::scsi::sense::AdditionalSense,
) -> Sense {
    assert_eq!(
        r.status,
        status::CHECK_CONDITION,
        "expected CHECK CONDITION, got {r:?}"
    );
    let s = sense(r);
    assert_eq!((s.key, s.code), (key, code), "sense {s}");
    s
}

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
    let back = run(&f.target, &f.a, 0, &read10(0, 2), Bytes::new())
        .await
        .data_in;
    assert_eq!(&back[..BS as usize], &b[..]);
    assert_eq!(&back[BS as usize..], &a[BS as usize..]);
    // One block requested, two sent: only one written.
    let c = pattern(2, 3);
    let r = run(&f.target, &f.a, 0, &write10(0, 1), c.clone()).await;
    assert_eq!((r.status, r.data_out_used), (status::GOOD, BS));
    let back = run(&f.target, &f.a, 0, &read10(0, 2), Bytes::new())
        .await
        .data_in;
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
    let back = run(&f.target, &f.a, 0, &read10(1000, 300), Bytes::new())
        .await
        .data_in;
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
    let back = run(&f.target, &f.a, 0, &read10(1024, 256), Bytes::new())
        .await
        .data_in;
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
    let back = run(&f.target, &f.a, 0, &read10(1000, 24), Bytes::new())
        .await
        .data_in;
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
async fn errors_have_precise_sense() {
    let f = fixture().await;
    let r = run(&f.target, &f.a, 0, &[0x02, 0, 0, 0, 0, 0], Bytes::new()).await;
    let s = assert_check(
        &r,
        SenseKey::IllegalRequest,
        asc::INVALID_COMMAND_OPERATION_CODE,
    );
    assert_eq!(s.field, Some(FieldPointer::cdb(0, None)));
    // Unknown LUN: LOGICAL UNIT NOT SUPPORTED, INQUIRY says "no device here".
    let r = run(&f.target, &f.a, 5, &read10(0, 1), Bytes::new()).await;
    assert_check(
        &r,
        SenseKey::IllegalRequest,
        asc::LOGICAL_UNIT_NOT_SUPPORTED,
    );
    let r = run(&f.target, &f.a, 5, &[0x12, 0, 0, 0, 96, 0], Bytes::new()).await;
    assert_eq!((r.status, r.data_in[0]), (status::GOOD, 0x7F));
    // Unsupported VPD page.
    let r = run(
        &f.target,
        &f.a,
        0,
        &[0x12, 1, 0x86, 0, 255, 0],
        Bytes::new(),
    )
    .await;
    let s = assert_check(&r, SenseKey::IllegalRequest, asc::INVALID_FIELD_IN_CDB);
    assert_eq!(s.field, Some(FieldPointer::cdb(2, Some(7))));
    // START STOP UNIT with LOEJ on a fixed disk.
    let r = run(&f.target, &f.a, 0, &[0x1B, 1, 0, 0, 0x02, 0], Bytes::new()).await;
    assert_check(&r, SenseKey::IllegalRequest, asc::INVALID_FIELD_IN_CDB);
    assert_eq!(
        run(&f.target, &f.a, 0, &[0x1B, 0, 0, 0, 0x01, 0], Bytes::new())
            .await
            .status,
        status::GOOD
    );
    // PRE-FETCH: CONDITION MET.
    let mut pf = read10(0, 8);
    pf[0] = 0x34;
    assert_eq!(
        run(&f.target, &f.a, 0, &pf, Bytes::new()).await.status,
        status::CONDITION_MET
    );
    // SYNCHRONIZE CACHE.
    let mut sc = read10(0, 0);
    sc[0] = 0x35;
    assert_eq!(
        run(&f.target, &f.a, 0, &sc, Bytes::new()).await.status,
        status::GOOD
    );
}

#[tokio::test]
async fn inquiry_vpd_and_capacity() {
    let f = fixture().await;
    let r = run(&f.target, &f.a, 0, &[0x12, 0, 0, 1, 4, 0], Bytes::new()).await;
    assert_eq!(r.status, status::GOOD);
    assert_eq!(
        r.data_in.len(),
        96,
        "the whole standard INQUIRY data fits in 260 bytes"
    );
    assert_eq!(&r.data_in[8..13], b"LUNAR");
    let rc = run(
        &f.target,
        &f.a,
        0,
        &[0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        Bytes::new(),
    )
    .await;
    assert_eq!(&rc.data_in[..], &[0, 0, 0x1F, 0xFF, 0, 0, 2, 0]);
    let r = run(&f.target, &f.a, 0, &cdb16(0x9E, 0x10, 0, 32), Bytes::new()).await;
    assert_eq!(r.data_in.len(), 32);
    assert_eq!(r.data_in[14] & 0xC0, 0xC0, "LBPME and LBPRZ");
    // Allocation length 0: no data, GOOD.
    let r = run(&f.target, &f.a, 0, &cdb16(0x9E, 0x10, 0, 0), Bytes::new()).await;
    assert_eq!((r.status, r.data_in.len()), (status::GOOD, 0));
    // Block limits and provisioning.
    let r = run(&f.target, &f.a, 0, &[0x12, 1, 0xB2, 0, 8, 0], Bytes::new()).await;
    assert_eq!(&r.data_in[..], &[0, 0xB2, 0, 4, 0, 0xE4, 2, 0]);
    let r = run(&f.target, &f.a, 0, &[0x12, 1, 0xB0, 0, 64, 0], Bytes::new()).await;
    let gran = u32::from_be_bytes([r.data_in[28], r.data_in[29], r.data_in[30], r.data_in[31]]);
    assert!(gran >= 1 && u64::from(gran) * u64::from(BS) <= 1 << 20);
    // RSOC all commands.
    let r = run(
        &f.target,
        &f.a,
        0,
        &[0xA3, 0x0C, 0, 0, 0, 0, 0, 0, 0x10, 0, 0, 0],
        Bytes::new(),
    )
    .await;
    assert_eq!(r.status, status::GOOD);
    assert!(r.data_in.len() > 100);
}

fn naa_of(page83: &[u8]) -> Vec<u8> {
    assert_eq!(page83[1], 0x83);
    assert_eq!(page83[5] & 0x0F, 3, "first designator is NAA");
    page83[8..24].to_vec()
}

#[tokio::test]
async fn identity_is_stable_and_unique_per_clone() {
    let f = fixture().await;
    let naa0 = naa_of(
        &run(&f.target, &f.a, 0, &[0x12, 1, 0x83, 1, 0, 0], Bytes::new())
            .await
            .data_in,
    );
    assert_eq!(naa0[0] >> 4, 6);
    f.pool
        .clone_volume("vol0", "clone0", None)
        .await
        .expect("clone");
    f.target
        .add_lun(1, f.pool.volume("clone0").expect("clone handle"), false)
        .expect("add clone");
    // LUN 0 now reports REPORTED LUNS DATA HAS CHANGED to both nexuses; LUN 1 POWER ON.
    let r = run(&f.target, &f.a, 0, &[0, 0, 0, 0, 0, 0], Bytes::new()).await;
    assert_check(
        &r,
        SenseKey::UnitAttention,
        asc::REPORTED_LUNS_DATA_HAS_CHANGED,
    );
    let naa1 = naa_of(
        &run(&f.target, &f.a, 1, &[0x12, 1, 0x83, 1, 0, 0], Bytes::new())
            .await
            .data_in,
    );
    assert_ne!(naa0, naa1);
    // A new target object over the same volume (a daemon restart) reports the same NAA.
    let t2 = ScsiTarget::new("iqn.2026-11.io.lunar:test");
    t2.add_lun(0, f.pool.volume("vol0").expect("volume"), false)
        .expect("add");
    let again = naa_of(
        &run(&t2, &f.a, 0, &[0x12, 1, 0x83, 1, 0, 0], Bytes::new())
            .await
            .data_in,
    );
    assert_eq!(naa0, again);
    // REPORT LUNS lists both and clears the inventory UA for B on LUN 0.
    let r = run(
        &f.target,
        &f.b,
        0,
        &[0xA0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0],
        Bytes::new(),
    )
    .await;
    assert_eq!(&r.data_in[..4], &[0, 0, 0, 16]);
    assert_eq!(
        run(&f.target, &f.b, 0, &[0, 0, 0, 0, 0, 0], Bytes::new())
            .await
            .status,
        status::GOOD
    );
    f.target.remove_lun(1).expect("remove");
    let r = run(&f.target, &f.b, 0, &[0, 0, 0, 0, 0, 0], Bytes::new()).await;
    assert_check(
        &r,
        SenseKey::UnitAttention,
        asc::REPORTED_LUNS_DATA_HAS_CHANGED,
    );
    assert!(f.target.remove_lun(1).is_err());
    assert!(f
        .target
        .add_lun(0, f.pool.volume("vol0").expect("v"), false)
        .is_err());
}

#[tokio::test]
async fn mode_select_d_sense_and_ua_for_others() {
    let f = fixture().await;
    // Read the current Control page, set D_SENSE, select it back.
    let r = run(
        &f.target,
        &f.a,
        0,
        &[0x1A, 0x08, 0x0A, 0, 0xFF, 0],
        Bytes::new(),
    )
    .await;
    let mut list = r.data_in.to_vec();
    list[0] = 0; // MODE DATA LENGTH is reserved in MODE SELECT
    list[2] = 0; // device-specific parameter
    list[6] |= 0x04; // D_SENSE
    let sel = [0x15, 0x10, 0, 0, list.len() as u8, 0];
    let r = run(&f.target, &f.a, 0, &sel, Bytes::from(list.clone())).await;
    assert_eq!(r.status, status::GOOD, "{r:?}");
    // Errors now come in descriptor format.
    let r = run(&f.target, &f.a, 0, &[0x02, 0, 0, 0, 0, 0], Bytes::new()).await;
    assert_eq!(r.sense.as_ref().expect("sense")[0], 0x72);
    // The other nexus learns about it.
    let r = run(&f.target, &f.b, 0, &[0, 0, 0, 0, 0, 0], Bytes::new()).await;
    assert_check(&r, SenseKey::UnitAttention, asc::MODE_PARAMETERS_CHANGED);
    // An unchangeable bit (SWP) is refused with a parameter-list pointer.
    list[8] |= 0x08;
    let r = run(&f.target, &f.a, 0, &sel, Bytes::from(list)).await;
    let s = assert_check(
        &r,
        SenseKey::IllegalRequest,
        asc::INVALID_FIELD_IN_PARAMETER_LIST,
    );
    assert_eq!(s.field, Some(FieldPointer::param(8, Some(3))));
}

#[tokio::test]
async fn reservations_and_resets() {
    let f = fixture().await;
    let tur = [0u8, 0, 0, 0, 0, 0];
    assert_eq!(
        run(&f.target, &f.a, 0, &[0x16, 0, 0, 0, 0, 0], Bytes::new())
            .await
            .status,
        status::GOOD
    );
    assert_eq!(
        run(&f.target, &f.b, 0, &tur, Bytes::new()).await.status,
        status::RESERVATION_CONFLICT
    );
    assert_eq!(
        run(&f.target, &f.b, 0, &[0x16, 0, 0, 0, 0, 0], Bytes::new())
            .await
            .status,
        status::RESERVATION_CONFLICT
    );
    assert_eq!(
        run(&f.target, &f.b, 0, &[0x12, 0, 0, 0, 96, 0], Bytes::new())
            .await
            .status,
        status::GOOD
    );
    // RELEASE from the non-holder is GOOD and changes nothing.
    assert_eq!(
        run(&f.target, &f.b, 0, &[0x17, 0, 0, 0, 0, 0], Bytes::new())
            .await
            .status,
        status::GOOD
    );
    assert_eq!(
        run(&f.target, &f.b, 0, &tur, Bytes::new()).await.status,
        status::RESERVATION_CONFLICT
    );
    assert_eq!(
        run(&f.target, &f.a, 0, &tur, Bytes::new()).await.status,
        status::GOOD
    );
    // LUN reset releases it; every nexus (the issuer too) sees BUS DEVICE RESET once.
    f.target.lun_reset(0, &f.a);
    for n in [&f.b, &f.a] {
        let r = run(&f.target, n, 0, &tur, Bytes::new()).await;
        assert_check(
            &r,
            SenseKey::UnitAttention,
            asc::BUS_DEVICE_RESET_FUNCTION_OCCURRED,
        );
        assert_eq!(
            run(&f.target, n, 0, &tur, Bytes::new()).await.status,
            status::GOOD
        );
    }
    // The holder logging out releases it too.
    assert_eq!(
        run(&f.target, &f.a, 0, &[0x16, 0, 0, 0, 0, 0], Bytes::new())
            .await
            .status,
        status::GOOD
    );
    f.target.nexus_logout(&f.a);
    assert_eq!(
        run(&f.target, &f.b, 0, &tur, Bytes::new()).await.status,
        status::GOOD
    );
    // Target reset: UA for the other nexuses only.
    f.target.nexus_login(&f.a);
    assert_eq!(
        run(&f.target, &f.a, 0, &tur, Bytes::new()).await.status,
        status::CHECK_CONDITION
    );
    f.target.target_reset(&f.b);
    assert_eq!(
        run(&f.target, &f.b, 0, &tur, Bytes::new()).await.status,
        status::GOOD
    );
    let r = run(&f.target, &f.a, 0, &tur, Bytes::new()).await;
    assert_check(
        &r,
        SenseKey::UnitAttention,
        asc::BUS_DEVICE_RESET_FUNCTION_OCCURRED,
    );
}

#[tokio::test]
async fn request_sense_returns_and_clears_ua() {
    let f = fixture().await;
    f.target.lun_reset(0, &f.b);
    let r = run(&f.target, &f.a, 0, &[0x03, 0, 0, 0, 252, 0], Bytes::new()).await;
    assert_eq!(r.status, status::GOOD);
    let s = Sense::decode(&r.data_in).expect("sense data");
    assert_eq!(
        (s.key, s.code),
        (
            SenseKey::UnitAttention,
            asc::BUS_DEVICE_RESET_FUNCTION_OCCURRED
        )
    );
    let r = run(&f.target, &f.a, 0, &[0x03, 1, 0, 0, 252, 0], Bytes::new()).await;
    assert_eq!(r.data_in[0], 0x72);
    assert_eq!(r.data_in[1], 0, "NO SENSE");
    assert_eq!(
        run(&f.target, &f.a, 0, &[0, 0, 0, 0, 0, 0], Bytes::new())
            .await
            .status,
        status::GOOD
    );
}

#[tokio::test]
async fn capacity_change_is_reported() {
    let f = fixture().await;
    f.pool
        .resize_volume("vol0", 2 * BLOCKS * u64::from(BS), false)
        .await
        .expect("grow");
    let r = run(&f.target, &f.a, 0, &[0, 0, 0, 0, 0, 0], Bytes::new()).await;
    assert_check(&r, SenseKey::UnitAttention, asc::CAPACITY_DATA_HAS_CHANGED);
    let r = run(&f.target, &f.b, 0, &[0, 0, 0, 0, 0, 0], Bytes::new()).await;
    assert_check(&r, SenseKey::UnitAttention, asc::CAPACITY_DATA_HAS_CHANGED);
    let r = run(&f.target, &f.a, 0, &cdb16(0x9E, 0x10, 0, 32), Bytes::new()).await;
    assert_eq!(&r.data_in[..8], &(2 * BLOCKS - 1).to_be_bytes());
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
    assert_eq!(
        run(&f.target, &f.a, 0, &read10(50, 1), Bytes::new())
            .await
            .data_in,
        new
    );
    // Stale compare (another host won the lock): MISCOMPARE, medium unchanged.
    let s = assert_check(
        &run(&f.target, &f.b, 0, &caw, both(&old, &pattern(1, 3))).await,
        SenseKey::Miscompare,
        asc::MISCOMPARE_DURING_VERIFY_OPERATION,
    );
    assert_eq!(s.information, Some(first_diff(&old, &new) as u64));
    assert_eq!(
        run(&f.target, &f.a, 0, &read10(50, 1), Bytes::new())
            .await
            .data_in,
        new
    );
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
async fn soft_threshold_ua_reaches_every_nexus() {
    let f = fixture().await;
    f.target.soft_threshold_reached();
    for n in [&f.a, &f.b] {
        let r = run(&f.target, n, 0, &[0, 0, 0, 0, 0, 0], Bytes::new()).await;
        assert_check(
            &r,
            SenseKey::UnitAttention,
            asc::THIN_PROVISIONING_SOFT_THRESHOLD_REACHED,
        );
        assert_eq!(
            run(&f.target, n, 0, &[0, 0, 0, 0, 0, 0], Bytes::new())
                .await
                .status,
            status::GOOD
        );
    }
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
    let back = run(&f.target, &f.a, 0, &read10(7, 2), Bytes::new())
        .await
        .data_in;
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

fn pr_out_cdb(sa: u8, pr_type: u8) -> [u8; 10] {
    [0x5F, sa, pr_type, 0, 0, 0, 0, 0, 24, 0]
}

fn pr_params(rk: u64, sark: u64) -> Bytes {
    let mut p = vec![0u8; 24];
    p[..8].copy_from_slice(&rk.to_be_bytes());
    p[8..16].copy_from_slice(&sark.to_be_bytes());
    Bytes::from(p)
}

#[tokio::test]
async fn persistent_reservations_through_the_device_server() {
    let f = fixture().await;
    let t = &f.target;
    let ok = |r: ScsiResponse| assert_eq!(r.status, status::GOOD, "{r:?}");
    ok(run(t, &f.a, 0, &pr_out_cdb(0, 0), pr_params(0, 0xAA)).await);
    ok(run(t, &f.b, 0, &pr_out_cdb(0, 0), pr_params(0, 0xBB)).await);
    // A takes WRITE EXCLUSIVE; B can read but not write; SCSI-2 RESERVE conflicts.
    ok(run(t, &f.a, 0, &pr_out_cdb(1, 1), pr_params(0xAA, 0)).await);
    assert_eq!(
        run(t, &f.b, 0, &read10(0, 1), Bytes::new()).await.status,
        status::GOOD
    );
    let r = run(t, &f.b, 0, &write10(0, 1), pattern(1, 0)).await;
    assert_eq!(
        (r.status, r.data_out_used),
        (status::RESERVATION_CONFLICT, BS)
    );
    ok(run(t, &f.a, 0, &write10(0, 1), pattern(1, 0)).await);
    assert_eq!(
        run(t, &f.b, 0, &[0x16, 0, 0, 0, 0, 0], Bytes::new())
            .await
            .status,
        status::RESERVATION_CONFLICT
    );
    // READ KEYS and READ RESERVATION.
    let keys = run(t, &f.b, 0, &[0x5E, 0, 0, 0, 0, 0, 0, 1, 0, 0], Bytes::new()).await;
    assert_eq!(&keys.data_in[4..8], &16u32.to_be_bytes());
    let res = run(t, &f.b, 0, &[0x5E, 1, 0, 0, 0, 0, 0, 1, 0, 0], Bytes::new()).await;
    assert_eq!(&res.data_in[8..16], &0xAAu64.to_be_bytes());
    // B preempts A: A loses its registration and gets RESERVATIONS PREEMPTED.
    ok(run(t, &f.b, 0, &pr_out_cdb(4, 3), pr_params(0xBB, 0xAA)).await);
    let r = run(t, &f.a, 0, &[0, 0, 0, 0, 0, 0], Bytes::new()).await;
    // SPC-4: losing a registration to PREEMPT is REGISTRATIONS PREEMPTED (2A/05).
    assert_check(
        &r,
        SenseKey::UnitAttention,
        scsi_proto::scsi::sense::AdditionalSense::new(0x2A, 0x05),
    );
    assert_eq!(
        run(t, &f.a, 0, &read10(0, 1), Bytes::new()).await.status,
        status::RESERVATION_CONFLICT
    );
    // Registrations survive logout; CLEAR ends everything.
    t.nexus_logout(&f.b);
    t.nexus_login(&f.b);
    run(t, &f.b, 0, &[0, 0, 0, 0, 0, 0], Bytes::new()).await;
    ok(run(t, &f.b, 0, &pr_out_cdb(3, 0), pr_params(0xBB, 0)).await);
    ok(run(t, &f.a, 0, &read10(0, 1), Bytes::new()).await);
    // Unsupported APTPL is an invalid parameter-list field.
    let mut p = pr_params(0, 1).to_vec();
    p[20] = 1;
    let r = run(t, &f.a, 0, &pr_out_cdb(0, 0), Bytes::from(p)).await;
    assert_check(
        &r,
        SenseKey::IllegalRequest,
        asc::INVALID_FIELD_IN_PARAMETER_LIST,
    );
}

/// A PERSISTENT RESERVE OUT whose PARAMETER LIST LENGTH exceeds what the registration
/// limit leaves room for is refused before its data is transferred (the transport is told
/// to take none) and before anything is decoded, even when the whole list did arrive.
#[tokio::test]
async fn oversized_pr_out_parameter_lists_are_refused_unread() {
    use scsi_proto::scsi::pr::{TransportId, MAX_ISCSI_NAME_LEN};
    let f = fixture().await;
    let t = &f.target;
    let cdb = |len: u32| {
        let mut c = pr_out_cdb(0, 0);
        c[5..9].copy_from_slice(&len.to_be_bytes());
        c
    };
    assert_eq!(t.data_out_len(0, &cdb(u32::MAX)), Some(0));
    assert_eq!(t.data_out_len(0, &cdb(24)), Some(24));
    // A well-formed SPEC_I_PT list one longest TransportID beyond the limit.
    let ids: Vec<u8> = (0..=super::pr::MAX_REGISTRATIONS)
        .flat_map(|i| {
            let mut name = format!("iqn.2026-12.test:{i}-");
            name.push_str(&"x".repeat(MAX_ISCSI_NAME_LEN - name.len()));
            TransportId {
                name,
                isid: Some(i as u64),
            }
            .encode()
        })
        .collect();
    let mut p = pr_params(0, 0xAA).to_vec();
    p[20] = 0x08;
    p.extend_from_slice(&(ids.len() as u32).to_be_bytes());
    p.extend_from_slice(&ids);
    let len = u32::try_from(p.len()).expect("fits");
    assert!(len > super::pr::MAX_PARAM_LEN);
    assert_eq!(t.data_out_len(0, &cdb(len)), Some(0));
    let r = run(t, &f.a, 0, &cdb(len), Bytes::from(p)).await;
    assert_check(
        &r,
        SenseKey::IllegalRequest,
        asc::PARAMETER_LIST_LENGTH_ERROR,
    );
    let keys = run(t, &f.a, 0, &READ_KEYS, Bytes::new()).await;
    assert_eq!(&keys.data_in[4..8], &[0; 4], "nothing registered");
}

/// A PERSISTENT RESERVE OUT waiting for its LUN's turn (held here as the previous one's
/// APTPL write would hold it) holds no lock I/O needs: reads and writes of the reserved LUN
/// go on, and the PERSISTENT RESERVE OUT completes once the turn is free.
#[tokio::test]
async fn a_pr_out_waiting_for_its_turn_blocks_no_io() {
    let f = fixture().await;
    let t = &f.target;
    let ok = |r: ScsiResponse| assert_eq!(r.status, status::GOOD, "{r:?}");
    ok(run(t, &f.a, 0, &pr_out_cdb(0, 0), pr_params(0, 0xAA)).await);
    ok(run(t, &f.a, 0, &pr_out_cdb(1, 1), pr_params(0xAA, 0)).await);
    let turn = t.lun(0).expect("lun").pr_order.clone().lock_owned().await;
    let register_b = tokio::spawn({
        let (t, b) = (t.clone(), f.b.clone());
        async move { run(&t, &b, 0, &pr_out_cdb(0, 0), pr_params(0, 0xBB)).await }
    });
    ok(run(t, &f.b, 0, &read10(0, 1), Bytes::new()).await);
    ok(run(t, &f.a, 0, &write10(0, 1), pattern(1, 3)).await);
    let keys = run(t, &f.a, 0, &READ_KEYS, Bytes::new()).await;
    assert_eq!(
        &keys.data_in[4..8],
        &8u32.to_be_bytes(),
        "B not registered yet"
    );
    drop(turn);
    ok(register_b.await.expect("PR OUT task"));
    let keys = run(t, &f.a, 0, &READ_KEYS, Bytes::new()).await;
    assert_eq!(&keys.data_in[4..8], &16u32.to_be_bytes());
}

const READ_KEYS: [u8; 10] = [0x5E, 0, 0, 0, 0, 0, 0, 1, 0, 0];
const READ_RESERVATION: [u8; 10] = [0x5E, 1, 0, 0, 0, 0, 0, 1, 0, 0];

/// TEST UNIT READY until GOOD (consumes pending unit attentions; bounded).
async fn settle(t: &ScsiTarget, n: &Arc<Nexus>, lun: u64) {
    for _ in 0..8 {
        if run(t, n, lun, &[0, 0, 0, 0, 0, 0], Bytes::new())
            .await
            .status
            == status::GOOD
        {
            return;
        }
    }
    panic!("LUN {lun} keeps failing TEST UNIT READY");
}

#[tokio::test]
async fn scsi2_reserve_release_under_a_persistent_reservation() {
    // CRH=1 (SPC-4 5.13.3): with a persistent reservation held, RESERVE/RELEASE from the
    // holder (or, under registrants-only / all-registrants types, any registrant) are GOOD
    // and change nothing; from anyone else RESERVATION CONFLICT.
    let f = fixture().await;
    let t = &f.target;
    let c = nexus(3);
    t.nexus_login(&c);
    settle(t, &c, 0).await;
    let ok = |r: ScsiResponse| assert_eq!(r.status, status::GOOD, "{r:?}");
    let conflict = |r: ScsiResponse| assert_eq!(r.status, status::RESERVATION_CONFLICT, "{r:?}");
    let (reserve6, release6) = ([0x16u8, 0, 0, 0, 0, 0], [0x17u8, 0, 0, 0, 0, 0]);
    let (reserve10, release10) = (
        [0x56u8, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        [0x57u8, 0, 0, 0, 0, 0, 0, 0, 0, 0],
    );
    ok(run(t, &f.a, 0, &pr_out_cdb(0, 0), pr_params(0, 0xAA)).await);
    ok(run(t, &f.b, 0, &pr_out_cdb(0, 0), pr_params(0, 0xBB)).await);
    // A holds WRITE EXCLUSIVE.
    ok(run(t, &f.a, 0, &pr_out_cdb(1, 1), pr_params(0xAA, 0)).await);
    let keys = run(t, &f.a, 0, &READ_KEYS, Bytes::new()).await.data_in;
    let res = run(t, &f.a, 0, &READ_RESERVATION, Bytes::new())
        .await
        .data_in;
    assert_eq!(&res[4..8], &16u32.to_be_bytes());
    assert_eq!((&res[8..16], res[21]), (&0xAAu64.to_be_bytes()[..], 0x01));
    for cdb in [&reserve6[..], &release6, &reserve10, &release10, &reserve6] {
        ok(run(t, &f.a, 0, cdb, Bytes::new()).await);
    }
    // No SCSI-2 reservation was established: C (unregistered) may still run TEST UNIT
    // READY, and reads are allowed under WRITE EXCLUSIVE.
    ok(run(t, &c, 0, &[0, 0, 0, 0, 0, 0], Bytes::new()).await);
    ok(run(t, &c, 0, &read10(0, 1), Bytes::new()).await);
    // The persistent reservation is unchanged (generation included).
    assert_eq!(
        run(t, &f.a, 0, &READ_KEYS, Bytes::new()).await.data_in,
        keys
    );
    assert_eq!(
        run(t, &f.a, 0, &READ_RESERVATION, Bytes::new())
            .await
            .data_in,
        res
    );
    ok(run(t, &f.a, 0, &write10(0, 1), pattern(1, 7)).await);
    // A non-registrant, and a registrant that does not hold a WRITE EXCLUSIVE reservation.
    for n in [&c, &f.b] {
        for cdb in [&reserve6[..], &release6, &reserve10, &release10] {
            conflict(run(t, n, 0, cdb, Bytes::new()).await);
        }
    }
    conflict(run(t, &c, 0, &write10(0, 1), pattern(1, 0)).await);
    assert_eq!(
        run(t, &f.a, 0, &READ_RESERVATION, Bytes::new())
            .await
            .data_in,
        res
    );
    // Under WRITE EXCLUSIVE – ALL REGISTRANTS every registrant is a holder.
    ok(run(t, &f.a, 0, &pr_out_cdb(2, 1), pr_params(0xAA, 0)).await);
    ok(run(t, &f.a, 0, &pr_out_cdb(1, 7), pr_params(0xAA, 0)).await);
    let res = run(t, &f.b, 0, &READ_RESERVATION, Bytes::new())
        .await
        .data_in;
    assert_eq!(res[21], 0x07);
    for cdb in [&reserve6[..], &release6] {
        ok(run(t, &f.b, 0, cdb, Bytes::new()).await);
        conflict(run(t, &c, 0, cdb, Bytes::new()).await);
    }
    assert_eq!(
        run(t, &f.b, 0, &READ_RESERVATION, Bytes::new())
            .await
            .data_in,
        res
    );
    // Without a persistent reservation SPC-2 rules apply again.
    ok(run(t, &f.a, 0, &pr_out_cdb(2, 7), pr_params(0xAA, 0)).await);
    ok(run(t, &c, 0, &reserve6, Bytes::new()).await);
    conflict(run(t, &f.a, 0, &[0, 0, 0, 0, 0, 0], Bytes::new()).await);
    ok(run(t, &c, 0, &release6, Bytes::new()).await);
    ok(run(t, &f.a, 0, &[0, 0, 0, 0, 0, 0], Bytes::new()).await);
}

#[tokio::test]
async fn a_clone_does_not_inherit_reservations() {
    let f = fixture().await;
    let t = &f.target;
    let ok = |r: ScsiResponse| assert_eq!(r.status, status::GOOD, "{r:?}");
    ok(run(t, &f.a, 0, &pr_out_cdb(0, 0), pr_params(0, 0xAA)).await);
    ok(run(t, &f.a, 0, &pr_out_cdb(1, 1), pr_params(0xAA, 0)).await);
    ok(run(t, &f.a, 0, &write10(3, 1), pattern(1, 9)).await);
    f.pool
        .clone_volume("vol0", "clone0", None)
        .await
        .expect("clone");
    t.add_lun(1, f.pool.volume("clone0").expect("clone handle"), false)
        .expect("add clone");
    for n in [&f.a, &f.b] {
        settle(t, n, 0).await;
        settle(t, n, 1).await;
    }
    // The clone has the data but no registration and no reservation.
    assert_eq!(
        run(t, &f.b, 1, &read10(3, 1), Bytes::new()).await.data_in,
        pattern(1, 9)
    );
    let keys = run(t, &f.b, 1, &READ_KEYS, Bytes::new()).await;
    assert_eq!(keys.status, status::GOOD);
    assert_eq!(
        &keys.data_in[4..8],
        &0u32.to_be_bytes(),
        "no keys on the clone"
    );
    assert_eq!(keys.data_in.len(), 8);
    let res = run(t, &f.b, 1, &READ_RESERVATION, Bytes::new()).await;
    assert_eq!(res.status, status::GOOD);
    assert_eq!(&res.data_in[4..8], &0u32.to_be_bytes(), "no reservation");
    assert_eq!(res.data_in.len(), 8);
    // B may write the clone (and take SCSI-2 or persistent reservations on it) while
    // LUN 0 still refuses it.
    ok(run(t, &f.b, 1, &write10(3, 1), pattern(1, 1)).await);
    ok(run(t, &f.b, 1, &pr_out_cdb(0, 0), pr_params(0, 0xBB)).await);
    ok(run(t, &f.b, 1, &pr_out_cdb(1, 1), pr_params(0xBB, 0)).await);
    assert_eq!(
        run(t, &f.b, 0, &write10(3, 1), pattern(1, 1)).await.status,
        status::RESERVATION_CONFLICT
    );
    let keys0 = run(t, &f.a, 0, &READ_KEYS, Bytes::new()).await.data_in;
    assert_eq!(
        &keys0[4..16],
        &[&8u32.to_be_bytes()[..], &0xAAu64.to_be_bytes()].concat()[..]
    );
    let res0 = run(t, &f.a, 0, &READ_RESERVATION, Bytes::new())
        .await
        .data_in;
    assert_eq!(&res0[8..16], &0xAAu64.to_be_bytes());
    let res1 = run(t, &f.a, 1, &READ_RESERVATION, Bytes::new())
        .await
        .data_in;
    assert_eq!(&res1[8..16], &0xBBu64.to_be_bytes());
}

/// A second target over a new volume of `blocks` blocks of `bs` bytes, nexus A logged in
/// and its unit attentions consumed.
async fn extra_lun(f: &Fixture, name: &str, blocks: u64, bs: u32, g: Guarantee) -> Arc<ScsiTarget> {
    f.pool
        .create_volume(name, blocks * u64::from(bs), bs, g)
        .await
        .expect("create volume");
    let t = ScsiTarget::new("iqn.2026-11.io.lunar:extra");
    t.add_lun(0, f.pool.volume(name).expect("volume"), false)
        .expect("add lun");
    t.nexus_login(&f.a);
    settle(&t, &f.a, 0).await;
    t
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
    let back = run(
        &f.target,
        &f.a,
        0,
        &read10((BLOCKS - 301) as u32, 301),
        Bytes::new(),
    )
    .await
    .data_in;
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
    let back = run(
        &f.target,
        &f.a,
        0,
        &read10((BLOCKS - 300) as u32, 300),
        Bytes::new(),
    )
    .await
    .data_in;
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
async fn write_same_zero_block_without_unmap_leaves_thin_chunks_unallocated() {
    let f = fixture().await;
    // 64 KiB chunks = 128 blocks. Map chunks 0..8.
    let r = run(&f.target, &f.a, 0, &write10(0, 1024), pattern(1024, 3)).await;
    assert_eq!(r.status, status::GOOD);
    let info = || f.pool.volume_info("vol0").expect("info");
    assert_eq!(info().mapped_bytes, 8 * 65536);
    // VMware block zero: WRITE SAME(16), UNMAP=0, a zero block, LBAs 100..800.
    let r = run(
        &f.target,
        &f.a,
        0,
        &cdb16(0x93, 0, 100, 700),
        Bytes::from(vec![0u8; BS as usize]),
    )
    .await;
    assert_eq!(r.status, status::GOOD, "{r:?}");
    // Chunks 1..=5 (LBAs 128..768) are deallocated; the partial chunks 0 and 6 stay mapped.
    assert_eq!(lba_status(&f.target, &f.a, 0).await, (0, 128));
    assert_eq!(lba_status(&f.target, &f.a, 128).await, (1, 640));
    assert_eq!(lba_status(&f.target, &f.a, 768).await.0, 0);
    assert_eq!(info().mapped_bytes, 3 * 65536);
    let want = pattern(1024, 3);
    let back = run(&f.target, &f.a, 0, &read10(0, 1024), Bytes::new())
        .await
        .data_in;
    for (i, (got, exp)) in back
        .chunks(BS as usize)
        .zip(want.chunks(BS as usize))
        .enumerate()
    {
        if (100..800).contains(&i) {
            assert!(got.iter().all(|&b| b == 0), "block {i} zeroed");
        } else {
            assert_eq!(got, exp, "block {i} untouched");
        }
    }
    // WRITE SAME(10) the same way over the rest of chunk 7.
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
    assert_eq!(lba_status(&f.target, &f.a, 896).await.0, 1);
    assert_eq!(info().mapped_bytes, 2 * 65536);
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
    let back = run(&f.target, &f.a, 0, &read10(0, 256), Bytes::new())
        .await
        .data_in;
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

mod xcopy;

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

/// A PERSISTENT RESERVE OUT whose APTPL save fails is not GOOD (issue 14) and changes
/// nothing: the state initiators see and are told about is the persistent one. Here the
/// state file's place is taken by a directory, so the save's rename fails.
#[tokio::test]
async fn a_failed_aptpl_save_answers_hardware_error_and_changes_nothing() {
    let f = fixture().await;
    let store_dir = tempfile::tempdir().expect("tempdir");
    f.pool
        .create_volume("aptpl", 64 * u64::from(BS), BS, Guarantee::None)
        .await
        .expect("create volume");
    let volume = f.pool.volume("aptpl").expect("volume");
    let obstruction = store_dir
        .path()
        .join("pr")
        .join(format!("{}.json", volume.uuid()));
    let t = ScsiTarget::with_pr_store(
        "iqn.2026-11.io.lunar:aptpl",
        f.pool.status().chunk_size,
        super::pr::FileStore::for_data_dir(store_dir.path()),
    );
    t.add_lun(0, volume, false).expect("add lun");
    for n in [&f.a, &f.b] {
        t.nexus_login(n);
        settle(&t, n, 0).await;
    }
    let aptpl = |rk: u64, sark: u64| {
        let mut p = pr_params(rk, sark).to_vec();
        p[20] = 1;
        Bytes::from(p)
    };
    // B registers without APTPL (the store removes the file it never wrote: fine).
    let r = run(&t, &f.b, 0, &pr_out_cdb(0, 0), pr_params(0, 0xBB)).await;
    assert_eq!(r.status, status::GOOD, "{r:?}");
    std::fs::create_dir_all(&obstruction).expect("obstruction");
    // A's REGISTER with APTPL cannot be saved: HARDWARE ERROR, nothing registered.
    let r = run(&t, &f.a, 0, &pr_out_cdb(0, 0), aptpl(0, 0xAA)).await;
    assert_check(&r, SenseKey::HardwareError, asc::INTERNAL_TARGET_FAILURE);
    let keys = run(&t, &f.a, 0, &READ_KEYS, Bytes::new()).await;
    assert_eq!(
        &keys.data_in[0..4],
        &1u32.to_be_bytes(),
        "generation unchanged"
    );
    assert_eq!(&keys.data_in[4..8], &8u32.to_be_bytes(), "only B's key");
    assert_eq!(&keys.data_in[8..16], &0xBBu64.to_be_bytes());
    // B's APTPL REGISTER (a key change) fails too; nobody was told of a change, so nobody
    // has a unit attention.
    let r = run(&t, &f.b, 0, &pr_out_cdb(0, 0), aptpl(0xBB, 0xBC)).await;
    assert_check(&r, SenseKey::HardwareError, asc::INTERNAL_TARGET_FAILURE);
    let r = run(&t, &f.a, 0, &[0, 0, 0, 0, 0, 0], Bytes::new()).await;
    assert_eq!(r.status, status::GOOD, "no unit attention: {r:?}");
    let keys = run(&t, &f.b, 0, &READ_KEYS, Bytes::new()).await;
    assert_eq!(&keys.data_in[8..16], &0xBBu64.to_be_bytes(), "B's old key");
    // Once the store works again the same command succeeds and is saved.
    std::fs::remove_dir(&obstruction).expect("remove obstruction");
    let r = run(&t, &f.a, 0, &pr_out_cdb(0, 0), aptpl(0, 0xAA)).await;
    assert_eq!(r.status, status::GOOD, "{r:?}");
    assert!(obstruction.is_file(), "state saved");
}
