//! SPC-4 primary commands through the device server: INQUIRY and VPD identity, errors and
//! their sense, START STOP UNIT, PRE-FETCH, SYNCHRONIZE CACHE.

use super::*;

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
