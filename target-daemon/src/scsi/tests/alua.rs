//! ALUA across the gateways of an HA group: two device servers for one LUN, the owner's
//! with the volume, the standby's pool-less; what each state allows and refuses with which
//! sense, REPORT TARGET PORT GROUPS and VPD 83h identical in content on both, the unit
//! attention a state change raises, and the volume taken away and given back.

use super::*;
use crate::scsi::alua::{AccessState, AluaView, GroupState};
use crate::scsi::LunShape;

const IQN: &str = "iqn.2026-11.io.lunar:ha";
const TUR: [u8; 6] = [0; 6];
const INQUIRY: [u8; 6] = [0x12, 0, 0, 0, 96, 0];
const VPD83: [u8; 6] = [0x12, 1, 0x83, 0, 255, 0];
const READ_CAPACITY10: [u8; 10] = [0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0];
const READ_CAPACITY16: [u8; 16] = [0x9E, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 32, 0, 0];
const REPORT_LUNS: [u8; 12] = [0xA0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0];
const MODE_SENSE6: [u8; 6] = [0x1A, 0, 0x3F, 0, 255, 0];
const READ_KEYS: [u8; 10] = [0x5E, 0, 0, 0, 0, 0, 0, 1, 0, 0];
const SYNC_CACHE10: [u8; 10] = [0x35, 0, 0, 0, 0, 0, 0, 0, 0, 0];
const RTPG_EXTENDED: [u8; 12] = [0xA3, 0x2A, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0];

fn groups(owner: u16) -> Vec<GroupState> {
    [1u16, 2]
        .into_iter()
        .map(|id| GroupState {
            id,
            gateway: format!("gw{id}"),
            state: if id == owner {
                AccessState::ActiveOptimized
            } else {
                AccessState::Standby
            },
        })
        .collect()
}

/// Gateway 1 owns the pool (its LUN has the volume), gateway 2 is standby (its LUN is built
/// from the shape alone); both present one identity. Nexus A is logged in to both, its
/// POWER ON unit attention consumed.
struct Ha {
    f: Fixture,
    views: [Arc<AluaView>; 2],
    gw: [Arc<ScsiTarget>; 2],
}

async fn ha() -> Ha {
    let f = fixture().await;
    let vol = f.pool.volume("vol0").expect("volume");
    let shape = LunShape {
        name: "vol0".into(),
        blocks: vol.num_blocks(),
        block_size: vol.block_size(),
        thin: true,
        identity: vol.uuid(),
    };
    let views = [AluaView::new(1, groups(1)), AluaView::new(2, groups(1))];
    let gw1 = ScsiTarget::new(IQN);
    gw1.set_alua(views[0].clone());
    gw1.add_lun(0, vol, false).expect("add lun");
    let gw2 = ScsiTarget::new(IQN);
    gw2.set_alua(views[1].clone());
    gw2.add_pool_less_lun(0, shape, false)
        .expect("add pool-less lun");
    for t in [&gw1, &gw2] {
        t.nexus_login(&f.a);
        let r = run(t, &f.a, 0, &INQUIRY, Bytes::new()).await;
        assert_eq!(r.status, status::GOOD);
        let r = run(t, &f.a, 0, &READ_CAPACITY10, Bytes::new()).await;
        assert_check(
            &r,
            SenseKey::UnitAttention,
            asc::POWER_ON_RESET_OR_BUS_DEVICE_RESET_OCCURRED,
        );
    }
    Ha {
        f,
        views,
        gw: [gw1, gw2],
    }
}

/// The designator of `kind` (SPC-4 table 459: 3 NAA, 4 relative target port, 5 target
/// port group) in VPD page 83h data.
fn designator(page: &[u8], kind: u8) -> Option<Vec<u8>> {
    let end = 4 + usize::from(u16::from_be_bytes([page[2], page[3]]));
    let mut at = 4;
    while at + 4 <= end.min(page.len()) {
        let len = usize::from(page[at + 3]);
        if page[at + 1] & 0x0F == kind {
            return page.get(at + 4..at + 4 + len).map(<[u8]>::to_vec);
        }
        at += 4 + len;
    }
    None
}

#[tokio::test]
async fn standby_answers_inventory_identity_capacity_and_reservations() {
    let h = ha().await;
    let (t, a) = (&h.gw[1], &h.f.a);

    let inq = run(t, a, 0, &INQUIRY, Bytes::new()).await;
    assert_eq!(inq.status, status::GOOD);
    assert_eq!(inq.data_in[5] & 0x30, 0x10, "TPGS = 01b (implicit ALUA)");

    let rc = run(t, a, 0, &READ_CAPACITY10, Bytes::new()).await;
    assert_eq!(rc.status, status::GOOD, "{rc:?}");
    let last = u32::from_be_bytes([rc.data_in[0], rc.data_in[1], rc.data_in[2], rc.data_in[3]]);
    assert_eq!(u64::from(last) + 1, BLOCKS);
    assert_eq!(&rc.data_in[4..8], &BS.to_be_bytes());
    let rc16 = run(t, a, 0, &READ_CAPACITY16, Bytes::new()).await;
    assert_eq!(rc16.status, status::GOOD);
    assert_eq!(&rc16.data_in[0..8], &(BLOCKS - 1).to_be_bytes());

    for cdb in [
        &REPORT_LUNS[..],
        &MODE_SENSE6[..],
        &READ_KEYS[..],
        &RTPG_EXTENDED[..],
    ] {
        let r = run(t, a, 0, cdb, Bytes::new()).await;
        assert_eq!(r.status, status::GOOD, "{cdb:02x?} on standby: {r:?}");
    }
    // PERSISTENT RESERVE OUT (REGISTER) works on the standby too: it touches no medium.
    let mut params = vec![0u8; 24];
    params[8..16].copy_from_slice(&0xABCDu64.to_be_bytes());
    let reg = run(
        t,
        a,
        0,
        &[0x5F, 0, 0, 0, 0, 0, 0, 0, 24, 0],
        Bytes::from(params),
    )
    .await;
    assert_eq!(reg.status, status::GOOD, "{reg:?}");
    let keys = run(t, a, 0, &READ_KEYS, Bytes::new()).await;
    assert_eq!(&keys.data_in[8..16], &0xABCDu64.to_be_bytes());
}

#[tokio::test]
async fn standby_refuses_media_access_and_test_unit_ready_with_04_0b() {
    let h = ha().await;
    let (t, a) = (&h.gw[1], &h.f.a);
    let standby = asc::LOGICAL_UNIT_NOT_ACCESSIBLE_TARGET_PORT_IN_STANDBY_STATE;
    let unmap = [0x42, 0, 0, 0, 0, 0, 0, 0, 24, 0];
    let write_same16 = cdb16(0x93, 0x08, 0, 8);
    let caw = {
        let mut c = [0u8; 16];
        c[0] = 0x89;
        c[13] = 1;
        c
    };
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("TEST UNIT READY", TUR.to_vec()),
        ("READ(10)", read10(0, 1).to_vec()),
        ("WRITE(10)", write10(0, 1).to_vec()),
        ("SYNCHRONIZE CACHE(10)", SYNC_CACHE10.to_vec()),
        ("UNMAP", unmap.to_vec()),
        ("WRITE SAME(16)", write_same16.to_vec()),
        ("COMPARE AND WRITE", caw.to_vec()),
        ("READ(16)", cdb16(0x88, 0, 0, 1).to_vec()),
    ];
    for (name, cdb) in cases {
        assert_eq!(
            t.data_out_len(0, &cdb).unwrap_or(0),
            0,
            "{name}: no Data-Out is collected for a refused command"
        );
        let r = run(t, a, 0, &cdb, pattern(1, 1)).await;
        assert_check(&r, SenseKey::NotReady, standby);
    }
    assert_eq!(t.data_in_len(0, &read10(0, 8)), Some(0));
}

#[tokio::test]
async fn transitioning_and_unavailable_refuse_all_but_inventory() {
    let h = ha().await;
    let (t, a) = (&h.gw[1], &h.f.a);
    h.views[1].set_local(AccessState::Transitioning);
    let r = run(t, a, 0, &TUR, Bytes::new()).await;
    assert_check(
        &r,
        SenseKey::UnitAttention,
        asc::ASYMMETRIC_ACCESS_STATE_CHANGED,
    );
    let transition = asc::LOGICAL_UNIT_NOT_ACCESSIBLE_ASYMMETRIC_ACCESS_STATE_TRANSITION;
    for cdb in [
        &TUR[..],
        &READ_CAPACITY10[..],
        &read10(0, 1)[..],
        &READ_KEYS[..],
    ] {
        let r = run(t, a, 0, cdb, Bytes::new()).await;
        assert_check(&r, SenseKey::NotReady, transition);
    }
    for cdb in [
        &INQUIRY[..],
        &REPORT_LUNS[..],
        &RTPG_EXTENDED[..],
        &VPD83[..],
    ] {
        let r = run(t, a, 0, cdb, Bytes::new()).await;
        assert_eq!(r.status, status::GOOD, "{cdb:02x?} while transitioning");
    }

    h.views[1].set_local(AccessState::Unavailable);
    let _ua = run(t, a, 0, &TUR, Bytes::new()).await;
    let unavailable = asc::LOGICAL_UNIT_NOT_ACCESSIBLE_TARGET_PORT_IN_UNAVAILABLE_STATE;
    for cdb in [&TUR[..], &READ_CAPACITY10[..], &write10(0, 1)[..]] {
        let r = run(t, a, 0, cdb, Bytes::new()).await;
        assert_check(&r, SenseKey::NotReady, unavailable);
    }
    let r = run(t, a, 0, &INQUIRY, Bytes::new()).await;
    assert_eq!(r.status, status::GOOD);
}

#[tokio::test]
async fn every_gateway_reports_the_same_groups_and_identity() {
    let h = ha().await;
    let a = &h.f.a;
    let mut rtpg = Vec::new();
    let mut vpd = Vec::new();
    for t in &h.gw {
        let r = run(t, a, 0, &RTPG_EXTENDED, Bytes::new()).await;
        assert_eq!(r.status, status::GOOD);
        rtpg.push(r.data_in);
        let v = run(t, a, 0, &VPD83, Bytes::new()).await;
        assert_eq!(v.status, status::GOOD);
        vpd.push(v.data_in);
    }
    assert_eq!(rtpg[0], rtpg[1], "REPORT TARGET PORT GROUPS is one list");
    let d = &rtpg[0];
    assert_eq!(
        &d[0..4],
        &28u32.to_be_bytes(),
        "extended header + two groups"
    );
    assert_eq!(d[4], 0x10, "extended format");
    assert_eq!(d[5], crate::scsi::alua::IMPLICIT_TRANSITION_SECS);
    let g1 = &d[8..20];
    let g2 = &d[20..32];
    assert_eq!(g1[0], 0x00, "group 1 active/optimized, not preferred");
    assert_eq!(g2[0], 0x02, "group 2 standby");
    for (g, id) in [(g1, 1u16), (g2, 2)] {
        assert_eq!(g[1], 0x8D, "T_SUP, U_SUP, S_SUP, AO_SUP");
        assert_eq!(&g[2..4], &id.to_be_bytes(), "group number = port_group");
        assert_eq!(g[7], 1, "one port");
        assert_eq!(&g[10..12], &id.to_be_bytes(), "relative port = port_group");
    }

    let naa: Vec<_> = vpd.iter().map(|p| designator(p, 3)).collect();
    assert!(naa[0].is_some());
    assert_eq!(naa[0], naa[1], "one device: the same NAA on every gateway");
    for (i, p) in vpd.iter().enumerate() {
        let port = (i as u16 + 1).to_be_bytes();
        let rel = designator(p, 4).expect("relative target port designator");
        assert_eq!(&rel[2..4], &port, "gateway {}: relative port", i + 1);
        let tpg = designator(p, 5).expect("target port group designator");
        assert_eq!(&tpg[2..4], &port, "gateway {}: target port group", i + 1);
    }
}

#[tokio::test]
async fn a_state_change_raises_asymmetric_access_state_changed_on_every_nexus() {
    let h = ha().await;
    let t = &h.gw[0];
    t.nexus_login(&h.f.b);
    settle(t, &h.f.b, 0).await;
    settle(t, &h.f.a, 0).await;

    // Setting the same list again is no change.
    h.views[0].set_groups(groups(1));
    assert_eq!(status_of(t, &h.f.a, &TUR).await, status::GOOD);

    // A takeover: gateway 2 becomes the owner. Both nexuses hear of it once; INQUIRY
    // neither reports nor clears it.
    h.views[0].set_groups(groups(2));
    let inq = run(t, &h.f.a, 0, &INQUIRY, Bytes::new()).await;
    assert_eq!(inq.status, status::GOOD);
    for n in [&h.f.a, &h.f.b] {
        let r = run(t, n, 0, &TUR, Bytes::new()).await;
        assert_check(
            &r,
            SenseKey::UnitAttention,
            asc::ASYMMETRIC_ACCESS_STATE_CHANGED,
        );
        // Gateway 1 is standby now.
        let r = run(t, n, 0, &TUR, Bytes::new()).await;
        assert_check(
            &r,
            SenseKey::NotReady,
            asc::LOGICAL_UNIT_NOT_ACCESSIBLE_TARGET_PORT_IN_STANDBY_STATE,
        );
    }
    let rtpg = run(t, &h.f.a, 0, &RTPG_EXTENDED, Bytes::new()).await;
    assert_eq!((rtpg.data_in[8], rtpg.data_in[20]), (0x02, 0x00));
}

#[tokio::test]
async fn the_owner_serves_media_and_a_transition_stops_it_at_once() {
    let h = ha().await;
    let (t, a) = (&h.gw[0], &h.f.a);
    let data = pattern(2, 9);
    let w = run(t, a, 0, &write10(4, 2), data.clone()).await;
    assert_eq!(w.status, status::GOOD, "{w:?}");
    assert_eq!(read_back(t, a, 4, 2).await, data);

    h.views[0].set_local(AccessState::Transitioning);
    let _ua = run(t, a, 0, &TUR, Bytes::new()).await;
    let r = run(t, a, 0, &read10(4, 2), Bytes::new()).await;
    assert_check(
        &r,
        SenseKey::NotReady,
        asc::LOGICAL_UNIT_NOT_ACCESSIBLE_ASYMMETRIC_ACCESS_STATE_TRANSITION,
    );
}

#[tokio::test]
async fn draining_waits_for_media_commands_and_the_volume_comes_back_intact() {
    let h = ha().await;
    let (t, a) = (&h.gw[0], &h.f.a);
    let data = pattern(1, 3);
    assert_eq!(
        run(t, a, 0, &write10(7, 1), data.clone()).await.status,
        status::GOOD
    );
    let lun = t.get_lun(0).expect("lun");
    let identity = lun.identity_uuid();

    // A media command in flight holds the gate: the drain cannot finish before it does.
    let in_flight = lun.media.read().await;
    let drain = tokio::spawn({
        let t = t.clone();
        async move { t.drain_volumes().await }
    });
    tokio::task::yield_now().await;
    assert!(lun.has_volume(), "volume taken while a command still ran");
    drop(in_flight);
    drain.await.expect("drain task");
    assert!(!lun.has_volume());

    // Active but without a volume (the pool is being attached): transitioning.
    let r = run(t, a, 0, &read10(7, 1), Bytes::new()).await;
    assert_check(
        &r,
        SenseKey::NotReady,
        asc::LOGICAL_UNIT_NOT_ACCESSIBLE_ASYMMETRIC_ACCESS_STATE_TRANSITION,
    );
    // Capacity still answers from the shape.
    let rc = run(t, a, 0, &READ_CAPACITY16, Bytes::new()).await;
    assert_eq!(&rc.data_in[0..8], &(BLOCKS - 1).to_be_bytes());

    t.set_lun_volume(0, h.f.pool.volume("vol0").expect("volume"))
        .await
        .expect("volume back");
    assert_eq!(read_back(t, a, 7, 1).await, data);
    let same = t.get_lun(0).expect("lun");
    assert!(Arc::ptr_eq(&same, &lun), "the same LUN, not a new one");
    assert_eq!(same.identity_uuid(), identity);
}

#[tokio::test]
async fn a_pool_less_lun_takes_a_new_size_and_reports_the_capacity_change() {
    let h = ha().await;
    let (t, a) = (&h.gw[1], &h.f.a);
    let lun = t.get_lun(0).expect("lun");
    lun.set_shape_blocks(BLOCKS * 2);
    let r = run(t, a, 0, &READ_CAPACITY16, Bytes::new()).await;
    assert_check(&r, SenseKey::UnitAttention, asc::CAPACITY_DATA_HAS_CHANGED);
    let r = run(t, a, 0, &READ_CAPACITY16, Bytes::new()).await;
    assert_eq!(&r.data_in[0..8], &(BLOCKS * 2 - 1).to_be_bytes());
}

#[tokio::test]
async fn a_target_without_a_view_keeps_the_single_node_answers() {
    let f = fixture().await;
    let r = run(&f.target, &f.a, 0, &RTPG_EXTENDED, Bytes::new()).await;
    assert_eq!(r.status, status::GOOD);
    assert_eq!(r.data_in[8], 0x80, "PREF, active/optimized");
    assert_eq!(r.data_in[9], 0x01, "AO_SUP only");
    assert_eq!(r.data_in[5], 0, "implicit transition time 0");
    assert_eq!(status_of(&f.target, &f.a, &TUR).await, status::GOOD);
}

#[tokio::test]
async fn without_a_volatile_cache_every_gateway_reports_wce_0() {
    let h = ha().await;
    let vol = h.f.pool.volume("vol0").expect("volume");
    let caching = [0x1A, 0x08, 0x08, 0, 255, 0]; // MODE SENSE(6), DBD, Caching page
    for with_volume in [true, false] {
        let t = ScsiTarget::new(IQN);
        t.set_volatile_write_cache(false);
        t.set_alua(h.views[0].clone());
        if with_volume {
            t.add_lun(0, vol.clone(), false).expect("add lun");
        } else {
            let shape = LunShape {
                name: "vol0".into(),
                blocks: BLOCKS,
                block_size: BS,
                thin: true,
                identity: vol.uuid(),
            };
            t.add_pool_less_lun(0, shape, false).expect("add lun");
        }
        t.nexus_login(&h.f.a);
        let _ua = run(&t, &h.f.a, 0, &caching, Bytes::new()).await;
        let r = run(&t, &h.f.a, 0, &caching, Bytes::new()).await;
        assert_eq!(r.status, status::GOOD);
        assert_eq!(r.data_in[4], 0x08, "caching page");
        assert_eq!(r.data_in[6] & 0x04, 0, "WCE 0 (volume: {with_volume})");
    }
    // The default (a file pool's page cache): WCE 1.
    let r = run(&h.gw[0], &h.f.a, 0, &caching, Bytes::new()).await;
    assert_eq!(r.data_in[6] & 0x04, 0x04);
}

/// A write under way when the gateway loses the pool (here: the pool closes under it while
/// the group turns transitioning) fails with the transition sense hosts retry elsewhere,
/// not with a MEDIUM ERROR that would reach the application.
#[tokio::test]
async fn a_media_command_failing_after_the_state_changed_gets_the_state_sense() {
    let h = ha().await;
    let (t, a) = (h.gw[0].clone(), h.f.a.clone());
    let lun = t.get_lun(0).expect("lun");
    // Hold the COMPARE AND WRITE lock: the write stops there, past the ALUA check, holding
    // the media lock.
    let held = lun.atomic.write().await;
    let write = tokio::spawn({
        let (t, a) = (t.clone(), a.clone());
        async move { run(&t, &a, 0, &write10(0, 1), pattern(1, 5)).await }
    });
    let mut started = false;
    for _ in 0..10_000 {
        if lun.media.try_write().is_err() {
            started = true;
            break;
        }
        tokio::task::yield_now().await;
    }
    assert!(started, "the write never reached the medium");
    h.views[0].set_local(AccessState::Transitioning);
    h.f.pool.close().await.expect("close");
    drop(held);
    let r = write.await.expect("write task");
    assert_check(
        &r,
        SenseKey::NotReady,
        asc::LOGICAL_UNIT_NOT_ACCESSIBLE_ASYMMETRIC_ACCESS_STATE_TRANSITION,
    );
}

/// A gateway with two pools owned by different gateways: one target, LUN 0 in pool "a"
/// (owned here, gateway 1: the target's view), LUN 1 in pool "b" (owned by gateway 2: its
/// own view, a sibling). Each LUN reports its pool's states in REPORT TARGET PORT GROUPS
/// and is served or refused by them; a change of pool b's view raises ASYMMETRIC ACCESS
/// STATE CHANGED (the views share one change counter) and moves only LUN 1.
#[tokio::test]
async fn each_lun_reports_and_obeys_its_own_pools_alua_view() {
    let f = fixture().await;
    let t = &f.target;
    let a = &f.a;
    let view_a = AluaView::new(1, groups(1));
    let view_b = view_a.sibling(groups(2));
    t.set_alua(view_a.clone());
    let vol = f.pool.volume("vol0").expect("volume");
    let shape = LunShape {
        name: "b0".into(),
        blocks: vol.num_blocks(),
        block_size: vol.block_size(),
        thin: true,
        identity: uuid::Uuid::new_v4(),
    };
    t.add_pool_less_lun(1, shape, false).expect("pool-less lun");
    assert!(t.set_lun_alua(1, view_b.clone()));
    assert!(!t.set_lun_alua(1, view_b.clone()), "set once");
    assert!(!t.set_lun_alua(7, view_b.clone()), "no such LUN");
    // The unit attentions LUN 1's arrival raised, consumed.
    for lun in [0, 1] {
        for _ in 0..8 {
            let r = run(t, a, lun, &TUR, Bytes::new()).await;
            if r.status != status::CHECK_CONDITION || sense(&r).key != SenseKey::UnitAttention {
                break;
            }
        }
    }
    let states = |d: &[u8]| (d[8] & 0x0F, d[20] & 0x0F);
    let r = run(t, a, 0, &RTPG_EXTENDED, Bytes::new()).await;
    assert_eq!(
        states(&r.data_in),
        (0x00, 0x02),
        "pool a: gateway 1 A/O, 2 standby"
    );
    let r = run(t, a, 1, &RTPG_EXTENDED, Bytes::new()).await;
    assert_eq!(
        states(&r.data_in),
        (0x02, 0x00),
        "pool b: gateway 1 standby, 2 A/O"
    );
    let r = run(t, a, 0, &TUR, Bytes::new()).await;
    assert_eq!(r.status, status::GOOD, "{r:?}");
    let r = run(t, a, 1, &TUR, Bytes::new()).await;
    assert_check(
        &r,
        SenseKey::NotReady,
        asc::LOGICAL_UNIT_NOT_ACCESSIBLE_TARGET_PORT_IN_STANDBY_STATE,
    );
    // This gateway starts taking pool b over: its LUNs transition, pool a is untouched.
    view_b.set_local(AccessState::Transitioning);
    for lun in [0, 1] {
        let r = run(t, a, lun, &TUR, Bytes::new()).await;
        assert_check(
            &r,
            SenseKey::UnitAttention,
            asc::ASYMMETRIC_ACCESS_STATE_CHANGED,
        );
    }
    let r = run(t, a, 0, &TUR, Bytes::new()).await;
    assert_eq!(r.status, status::GOOD, "pool a untouched: {r:?}");
    let r = run(t, a, 1, &TUR, Bytes::new()).await;
    assert_check(
        &r,
        SenseKey::NotReady,
        asc::LOGICAL_UNIT_NOT_ACCESSIBLE_ASYMMETRIC_ACCESS_STATE_TRANSITION,
    );
    let r = run(t, a, 0, &RTPG_EXTENDED, Bytes::new()).await;
    assert_eq!(states(&r.data_in), (0x00, 0x02));
}
