//! Unit attentions through the device server: REQUEST SENSE, mode and capacity changes,
//! SCSI-2 reservations across resets, the soft threshold.

use super::*;

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
        status_of(&f.target, &f.a, &[0x16, 0, 0, 0, 0, 0]).await,
        status::GOOD
    );
    assert_eq!(
        status_of(&f.target, &f.b, &tur).await,
        status::RESERVATION_CONFLICT
    );
    assert_eq!(
        status_of(&f.target, &f.b, &[0x16, 0, 0, 0, 0, 0]).await,
        status::RESERVATION_CONFLICT
    );
    assert_eq!(
        status_of(&f.target, &f.b, &[0x12, 0, 0, 0, 96, 0]).await,
        status::GOOD
    );
    // RELEASE from the non-holder is GOOD and changes nothing.
    assert_eq!(
        status_of(&f.target, &f.b, &[0x17, 0, 0, 0, 0, 0]).await,
        status::GOOD
    );
    assert_eq!(
        status_of(&f.target, &f.b, &tur).await,
        status::RESERVATION_CONFLICT
    );
    assert_eq!(status_of(&f.target, &f.a, &tur).await, status::GOOD);
    // LUN reset releases it; every nexus (the issuer too) sees BUS DEVICE RESET once.
    f.target.lun_reset(0, &f.a);
    for n in [&f.b, &f.a] {
        let r = run(&f.target, n, 0, &tur, Bytes::new()).await;
        assert_check(
            &r,
            SenseKey::UnitAttention,
            asc::BUS_DEVICE_RESET_FUNCTION_OCCURRED,
        );
        assert_eq!(status_of(&f.target, n, &tur).await, status::GOOD);
    }
    // The holder logging out releases it too.
    assert_eq!(
        status_of(&f.target, &f.a, &[0x16, 0, 0, 0, 0, 0]).await,
        status::GOOD
    );
    f.target.nexus_logout(&f.a);
    assert_eq!(status_of(&f.target, &f.b, &tur).await, status::GOOD);
    // Target reset: UA for the other nexuses only.
    f.target.nexus_login(&f.a);
    assert_eq!(
        status_of(&f.target, &f.a, &tur).await,
        status::CHECK_CONDITION
    );
    f.target.target_reset(&f.b);
    assert_eq!(status_of(&f.target, &f.b, &tur).await, status::GOOD);
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
        status_of(&f.target, &f.a, &[0, 0, 0, 0, 0, 0]).await,
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
            status_of(&f.target, n, &[0, 0, 0, 0, 0, 0]).await,
            status::GOOD
        );
    }
}
