//! Persistent reservations through the device server: PERSISTENT RESERVE IN/OUT, conflicts,
//! SCSI-2 RESERVE/RELEASE under a persistent reservation, parameter-list limits, the
//! per-LUN turn and the store (APTPL).

use super::*;

fn pr_out_cdb(sa: u8, pr_type: u8) -> [u8; 10] {
    [0x5F, sa, pr_type, 0, 0, 0, 0, 0, 24, 0]
}

fn pr_params(rk: u64, sark: u64) -> Bytes {
    let mut p = vec![0u8; 24];
    p[..8].copy_from_slice(&rk.to_be_bytes());
    p[8..16].copy_from_slice(&sark.to_be_bytes());
    Bytes::from(p)
}

const READ_KEYS: [u8; 10] = [0x5E, 0, 0, 0, 0, 0, 0, 1, 0, 0];
const READ_RESERVATION: [u8; 10] = [0x5E, 1, 0, 0, 0, 0, 0, 1, 0, 0];

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
    let ids: Vec<u8> = (0..=crate::scsi::pr::MAX_REGISTRATIONS)
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
    assert!(len > crate::scsi::pr::MAX_PARAM_LEN);
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
        crate::scsi::pr::FileStore::for_data_dir(store_dir.path()),
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

/// A store whose saves wait until the test lets each through, saying when one started.
#[derive(Debug)]
struct GatedStore {
    started: tokio::sync::mpsc::Sender<()>,
    release: std::sync::Mutex<tokio::sync::mpsc::Receiver<()>>,
}

impl crate::scsi::pr::PrStore for GatedStore {
    fn load(&self, _: uuid::Uuid) -> anyhow::Result<Option<crate::scsi::pr::PrData>> {
        Ok(None)
    }

    fn save(&self, _: uuid::Uuid, _: Option<&crate::scsi::pr::PrData>) -> anyhow::Result<()> {
        self.started.blocking_send(()).ok();
        let mut release = self.release.lock().expect("release lock");
        release.blocking_recv();
        Ok(())
    }
}

/// A PERSISTENT RESERVE OUT takes effect only once its save is done: while the store is
/// still writing, other nexuses see the old state (and no unit attention), and I/O is not
/// held up by the write.
#[tokio::test]
async fn a_change_is_invisible_until_it_is_saved() {
    let f = fixture().await;
    let (started_tx, mut started) = tokio::sync::mpsc::channel(1);
    let (release, release_rx) = tokio::sync::mpsc::channel(1);
    let store = Arc::new(GatedStore {
        started: started_tx,
        release: std::sync::Mutex::new(release_rx),
    });
    f.pool
        .create_volume("gated", 64 * u64::from(BS), BS, Guarantee::None)
        .await
        .expect("create volume");
    let t = ScsiTarget::with_pr_store(
        "iqn.2026-11.io.lunar:gated",
        f.pool.status().chunk_size,
        store,
    );
    t.add_lun(0, f.pool.volume("gated").expect("volume"), false)
        .expect("add lun");
    for n in [&f.a, &f.b] {
        t.nexus_login(n);
        settle(&t, n, 0).await;
    }
    let register_a = tokio::spawn({
        let (t, a) = (t.clone(), f.a.clone());
        async move { run(&t, &a, 0, &pr_out_cdb(0, 0), pr_params(0, 0xAA)).await }
    });
    started.recv().await.expect("the save started");
    let keys = run(&t, &f.b, 0, &READ_KEYS, Bytes::new()).await;
    assert_eq!(
        &keys.data_in[0..8],
        &[0; 8],
        "generation 0, no keys while saving"
    );
    let r = run(&t, &f.b, 0, &write10(0, 1), pattern(1, 5)).await;
    assert_eq!(r.status, status::GOOD, "I/O goes on: {r:?}");
    release.send(()).await.expect("release the save");
    let r = register_a.await.expect("PR OUT task");
    assert_eq!(r.status, status::GOOD, "{r:?}");
    let keys = run(&t, &f.b, 0, &READ_KEYS, Bytes::new()).await;
    assert_eq!(
        &keys.data_in[0..4],
        &1u32.to_be_bytes(),
        "generation 1 once saved"
    );
    assert_eq!(&keys.data_in[8..16], &0xAAu64.to_be_bytes());
}
