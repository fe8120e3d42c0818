//! The LUN manager switching between owner and standby with a local pool: detach and
//! attach (data, identity and reservations held), a standby built from another gateway's
//! state, operations refused with the owner named, and reloads of a changed state.

use std::sync::Arc;

use bytes::Bytes;
use parking_lot::Mutex;
use scsi_proto::scsi::sense::{asc, Sense, SenseKey};
use storage_core::{Pool, PoolOptions};

use super::GatewayOpen;
use crate::config::{ByteSize, Config, TargetCfg};
use crate::fabric::{Fabric, Frontend, FrontendError, SessionView, TargetSpec};
use crate::lunmgr::{state, LunCreate, LunManager, MgrError};
use crate::scsi::alua::{AccessState, AluaView, GroupState};
use crate::scsi::{status, Nexus, ScsiRequest, ScsiResponse, ScsiTarget, TaskAttr};

const IQN: &str = "iqn.2024-01.org.lunar:ha";
const IQN2: &str = "iqn.2024-01.org.lunar:ha2";
const MIB: u64 = 1 << 20;

fn view(local: u16, owner: u16) -> Arc<AluaView> {
    AluaView::new(
        local,
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
            .collect(),
    )
}

fn config(dir: &std::path::Path) -> Config {
    Config::local(ByteSize::mib(64))
        .with_data_dir(dir)
        .with_target(TargetCfg::iscsi(IQN))
}

async fn pool_in(dir: &std::path::Path) -> Pool {
    Pool::open_or_create(
        &dir.join("pool"),
        &PoolOptions {
            capacity_bytes: Some(64 << 20),
            ..Default::default()
        },
    )
    .await
    .expect("pool")
}

fn lun(name: &str, target: &str, id: u64) -> LunCreate {
    LunCreate {
        name: name.into(),
        size_bytes: 4 * MIB,
        guarantee: None,
        block_size: None,
        target: Some(target.into()),
        lun_id: Some(id),
        read_only: false,
        pool: None,
    }
}

fn nexus() -> Arc<Nexus> {
    Arc::new(Nexus {
        initiator: "iqn.1994-05.com.example:host1".into(),
        isid: 1,
        tpgt: 1,
    })
}

async fn run(t: &ScsiTarget, n: &Arc<Nexus>, cdb: &[u8], data_out: Bytes) -> ScsiResponse {
    t.execute(ScsiRequest {
        nexus: n.clone(),
        lun: 0,
        cdb: Bytes::copy_from_slice(cdb),
        data_out: data_out.into(),
        expected_data_in: 1 << 20,
        attr: TaskAttr::Simple,
        tag: 1,
    })
    .await
}

/// Runs `cdb` until it answers something other than a unit attention (bounded).
async fn run_settled(t: &ScsiTarget, n: &Arc<Nexus>, cdb: &[u8], data_out: Bytes) -> ScsiResponse {
    for _ in 0..8 {
        let r = run(t, n, cdb, data_out.clone()).await;
        let ua = r
            .sense
            .as_ref()
            .and_then(|s| Sense::decode(s))
            .is_some_and(|s| s.key == SenseKey::UnitAttention);
        if !ua {
            return r;
        }
    }
    panic!("{cdb:02x?} keeps reporting unit attentions");
}

fn sense_of(r: &ScsiResponse) -> (SenseKey, scsi_proto::scsi::sense::AdditionalSense) {
    let s = Sense::decode(r.sense.as_ref().expect("sense")).expect("decodable sense");
    (s.key, s.code)
}

fn write10(lba: u32) -> [u8; 10] {
    let mut c = [0u8; 10];
    c[0] = 0x2A;
    c[2..6].copy_from_slice(&lba.to_be_bytes());
    c[8] = 1;
    c
}

fn read10(lba: u32) -> [u8; 10] {
    let mut c = write10(lba);
    c[0] = 0x28;
    c
}

const READ_KEYS: [u8; 10] = [0x5E, 0, 0, 0, 0, 0, 0, 1, 0, 0];
const READ_CAPACITY16: [u8; 16] = [0x9E, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 32, 0, 0];

fn register(key: u64) -> ([u8; 10], Bytes) {
    let mut p = vec![0u8; 24];
    p[8..16].copy_from_slice(&key.to_be_bytes());
    ([0x5F, 0, 0, 0, 0, 0, 0, 0, 24, 0], Bytes::from(p))
}

/// The owner, with one LUN "d0" mapped as LUN 0 of `IQN`.
async fn owner(dir: &std::path::Path) -> (Arc<LunManager>, Pool, Arc<AluaView>) {
    let pool = pool_in(dir).await;
    let alua = view(1, 1);
    let (mgr, _) = LunManager::open_gateway(
        &config(dir),
        GatewayOpen {
            pool: Some(pool.clone()),
            state: None,
            alua: alua.clone(),
            pool_alua: Vec::new(),
            pr_store: None,
            volatile_write_cache: true,
        },
    )
    .await
    .expect("open owner");
    mgr.lun_create(lun("d0", IQN, 0)).await.expect("create d0");
    (mgr, pool, alua)
}

#[tokio::test]
async fn attach_after_detach_keeps_data_identity_and_reservations() {
    let d = tempfile::tempdir().expect("tempdir");
    let (mgr, pool, alua) = owner(d.path()).await;
    let t = mgr.scsi_target(IQN).expect("target");
    let n = nexus();
    t.nexus_login(&n);
    let data = Bytes::from(vec![0x5A; 512]);
    let w = run_settled(&t, &n, &write10(3), data.clone()).await;
    assert_eq!(w.status, status::GOOD, "{w:?}");
    let (cdb, params) = register(0x1234);
    assert_eq!(run(&t, &n, &cdb, params).await.status, status::GOOD);
    let naa = t.lun_naa(0).expect("naa");
    let before = t.get_lun(0).expect("lun");
    // Every save replaces state.json (a rename): its inode tells whether one happened.
    let inode = || {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(d.path().join(state::STATE_FILE))
            .expect("state.json")
            .ino()
    };
    let saved = inode();

    // Owner → standby.
    alua.set_local(AccessState::Transitioning);
    let detached = mgr.detach_pool("default").await.expect("detach");
    alua.set_groups(vec![]);
    alua.set_local(AccessState::Standby);
    assert!(!mgr.has_pool());
    // What /metrics reads its pool figures from: nothing on a standby.
    assert!(mgr.open_pools().is_empty());
    let r = run_settled(&t, &n, &read10(3), Bytes::new()).await;
    assert_eq!(
        sense_of(&r),
        (
            SenseKey::NotReady,
            asc::LOGICAL_UNIT_NOT_ACCESSIBLE_TARGET_PORT_IN_STANDBY_STATE
        )
    );
    assert_eq!(t.lun_naa(0), Some(naa), "the LUN stays, same identity");
    let keys = run_settled(&t, &n, &READ_KEYS, Bytes::new()).await;
    assert_eq!(&keys.data_in[8..16], &0x1234u64.to_be_bytes());
    let e = mgr
        .lun_create(lun("d1", IQN, 1))
        .await
        .expect_err("no pool on a standby");
    assert_eq!(e.kind(), "not_owner");

    // Standby → owner again.
    mgr.attach_pool("default", detached).await.expect("attach");
    alua.set_local(AccessState::ActiveOptimized);
    // The owner's /metrics shows the pool it owns, under its name.
    let open = mgr.open_pools();
    assert_eq!(open.len(), 1);
    assert_eq!(open[0].0, "default");
    let text = crate::metrics::global().render(&open);
    assert!(
        text.contains("lunar_pool_capacity_bytes{pool=\"default\"}"),
        "{text}"
    );
    let r = run_settled(&t, &n, &read10(3), Bytes::new()).await;
    assert_eq!(r.status, status::GOOD, "{r:?}");
    assert_eq!(r.data_in, data, "data intact");
    let after = t.get_lun(0).expect("lun");
    assert!(Arc::ptr_eq(&before, &after), "the same LUN object");
    assert_eq!(t.lun_naa(0), Some(naa));
    let keys = run_settled(&t, &n, &READ_KEYS, Bytes::new()).await;
    assert_eq!(&keys.data_in[8..16], &0x1234u64.to_be_bytes(), "PR held");
    assert_eq!(
        inode(),
        saved,
        "nothing changed: detach and attach saved nothing"
    );
    mgr.lun_create(lun("d1", IQN, 1))
        .await
        .expect("create works on the owner again");
    assert_ne!(inode(), saved, "a change is saved");
    pool.close().await.expect("close");
}

#[tokio::test]
async fn a_standby_presents_the_owners_luns_and_names_the_owner() {
    let od = tempfile::tempdir().expect("tempdir");
    let (owner_mgr, pool, _) = owner(od.path()).await;
    let owner_t = owner_mgr.scsi_target(IQN).expect("target");
    let shared = state::load(od.path()).expect("load").expect("saved state");
    let g = shared.luns["d0"].geometry.expect("geometry recorded");
    assert_eq!(
        (g.size_blocks, g.block_size, g.thin),
        (4 * MIB / 512, 512, true)
    );

    let sd = tempfile::tempdir().expect("tempdir");
    let (standby, entries) = LunManager::open_gateway(
        &config(sd.path()),
        GatewayOpen {
            pool: None,
            state: Some(shared),
            alua: view(2, 1),
            pool_alua: Vec::new(),
            pr_store: None,
            volatile_write_cache: true,
        },
    )
    .await
    .expect("open standby");
    assert_eq!(entries.len(), 1);
    let t = standby.scsi_target(IQN).expect("target");
    assert_eq!(
        t.lun_naa(0),
        owner_t.lun_naa(0),
        "same NAA on both gateways"
    );
    let n = nexus();
    t.nexus_login(&n);
    let rc = run_settled(&t, &n, &READ_CAPACITY16, Bytes::new()).await;
    assert_eq!(rc.status, status::GOOD);
    assert_eq!(&rc.data_in[0..8], &(4 * MIB / 512 - 1).to_be_bytes());

    let clone = crate::lunmgr::clones::CloneCreate {
        source: "d0".into(),
        name: "c0".into(),
        mode: None,
        target: None,
        lun_id: None,
        guarantee: None,
        copy_acl: false,
        read_only: None,
        pool: None,
    };
    for e in [
        standby
            .lun_create(lun("x", IQN, 1))
            .await
            .expect_err("create"),
        standby.pool_status(None).expect_err("pool status"),
        standby.clone_create(clone).await.expect_err("clone"),
        standby
            .snapshot_create("d0", "s")
            .await
            .expect_err("snapshot"),
    ] {
        assert!(
            matches!(&e, MgrError::NotOwner { owner: Some(o) } if o == "gw1"),
            "{e:?}"
        );
        assert!(e.to_string().contains("gw1"), "{e}");
    }
    assert!(
        standby.clone_list(false).await.expect("jobs").is_empty(),
        "a refused clone leaves no job behind"
    );
    let views = standby.lun_list().await;
    assert_eq!(views[0].size_bytes, 4 * MIB, "sizes from the records");
    let yaml = standby.export_yaml().await.expect("config export");
    assert!(
        yaml.contains("volume: d0"),
        "the standby exports the LUNs too:\n{yaml}"
    );
    pool.close().await.expect("close");
}

/// Records what a front end was asked to do.
#[derive(Default)]
struct Recorder(Mutex<Vec<String>>);

impl Frontend for Recorder {
    fn fabrics(&self) -> &'static [Fabric] {
        &[Fabric::Iscsi]
    }
    fn add_target(&self, spec: TargetSpec, _scsi: Arc<ScsiTarget>) -> Result<(), FrontendError> {
        self.0.lock().push(format!("add {}", spec.name));
        Ok(())
    }
    fn remove_target(&self, name: &str) -> Result<(), FrontendError> {
        self.0.lock().push(format!("remove {name}"));
        Ok(())
    }
    fn update_target(&self, spec: TargetSpec) -> Result<(), FrontendError> {
        self.0
            .lock()
            .push(format!("update {} {:?}", spec.name, spec.initiators));
        Ok(())
    }
    fn sessions(&self, _name: &str) -> Vec<SessionView> {
        Vec::new()
    }
    fn close_sessions(&self, _name: &str) -> usize {
        0
    }
}

#[tokio::test]
async fn reload_state_applies_another_gateways_changes() {
    let od = tempfile::tempdir().expect("tempdir");
    let (owner_mgr, pool, _) = owner(od.path()).await;
    let sd = tempfile::tempdir().expect("tempdir");
    let (standby, _) = LunManager::open_gateway(
        &config(sd.path()),
        GatewayOpen {
            pool: None,
            state: state::load(od.path()).expect("load"),
            alua: view(2, 1),
            pool_alua: Vec::new(),
            pr_store: None,
            volatile_write_cache: true,
        },
    )
    .await
    .expect("open standby");
    let rec = Arc::new(Recorder::default());
    standby.attach_frontend(rec.clone());
    let n = nexus();
    let t = standby.scsi_target(IQN).expect("target");
    t.nexus_login(&n);
    let _ = run_settled(&t, &n, &READ_CAPACITY16, Bytes::new()).await;
    let naa0 = t.lun_naa(0);

    // On the owner: a new target with a LUN, an ACL, a resize.
    owner_mgr
        .target_create(IQN2, Fabric::Iscsi, None, false)
        .await
        .expect("target");
    owner_mgr.lun_create(lun("d1", IQN2, 0)).await.expect("d1");
    owner_mgr
        .acl_add(IQN, "iqn.1994-05.com.example:host1")
        .await
        .expect("acl");
    owner_mgr
        .lun_resize("d0", 8 * MIB, false)
        .await
        .expect("resize");
    standby
        .reload_state(state::load(od.path()).expect("load").expect("state"))
        .await
        .expect("reload");

    let t2 = standby.scsi_target(IQN2).expect("new target built");
    assert_eq!(t2.luns(), vec![0]);
    assert_eq!(
        t2.lun_naa(0),
        owner_mgr.scsi_target(IQN2).and_then(|t| t.lun_naa(0))
    );
    assert_eq!(t.lun_naa(0), naa0, "unchanged LUN kept");
    let rc = run(&t, &n, &READ_CAPACITY16, Bytes::new()).await;
    assert_eq!(
        sense_of(&rc),
        (SenseKey::UnitAttention, asc::CAPACITY_DATA_HAS_CHANGED)
    );
    let rc = run(&t, &n, &READ_CAPACITY16, Bytes::new()).await;
    assert_eq!(&rc.data_in[0..8], &(8 * MIB / 512 - 1).to_be_bytes());
    {
        let calls = rec.0.lock().clone();
        assert!(calls.contains(&format!("add {IQN2}")), "{calls:?}");
        assert!(
            calls
                .iter()
                .any(|c| c.starts_with(&format!("update {IQN} ")) && c.contains("host1")),
            "{calls:?}"
        );
    }

    // The owner unmaps d0 and deletes the new target.
    owner_mgr.lun_unmap("d0", IQN, true).await.expect("unmap");
    owner_mgr.target_delete(IQN2, true).await.expect("delete");
    standby
        .reload_state(state::load(od.path()).expect("load").expect("state"))
        .await
        .expect("reload");
    assert!(standby.scsi_target(IQN2).is_none());
    assert!(t.luns().is_empty(), "unmapped LUN withdrawn");
    assert!(rec.0.lock().contains(&format!("remove {IQN2}")));
    pool.close().await.expect("close");
}

/// Every gateway of a new group starts standby with an empty shared state: the first one to
/// attach the pool creates what the YAML names and hands the targets to its front end.
#[tokio::test]
async fn the_first_attach_seeds_the_configuration() {
    use crate::config::LunCfg;
    let d = tempfile::tempdir().expect("tempdir");
    let cfg = Config::local(ByteSize::mib(64))
        .with_data_dir(d.path())
        .with_target(TargetCfg::iscsi(IQN).with_lun(LunCfg::new(0, "y0", ByteSize::mib(4))));
    let alua = view(1, 2);
    let (mgr, entries) = LunManager::open_gateway(
        &cfg,
        GatewayOpen {
            pool: None,
            state: Some(state::State::default()),
            alua: alua.clone(),
            pool_alua: Vec::new(),
            pr_store: None,
            volatile_write_cache: true,
        },
    )
    .await
    .expect("open standby");
    assert!(entries.is_empty(), "nothing before the owner seeds");
    let rec = Arc::new(Recorder::default());
    mgr.attach_frontend(rec.clone());

    let pool = pool_in(d.path()).await;
    mgr.attach_pool("default", pool.clone())
        .await
        .expect("attach");
    alua.set_groups(vec![GroupState {
        id: 1,
        gateway: "gw1".into(),
        state: AccessState::ActiveOptimized,
    }]);
    assert!(rec.0.lock().contains(&format!("add {IQN}")));
    let t = mgr.scsi_target(IQN).expect("target built");
    let n = nexus();
    t.nexus_login(&n);
    let data = Bytes::from(vec![7u8; 512]);
    let w = run_settled(&t, &n, &write10(0), data.clone()).await;
    assert_eq!(w.status, status::GOOD, "{w:?}");
    assert_eq!(run(&t, &n, &read10(0), Bytes::new()).await.data_in, data);
    let saved = state::load(d.path()).expect("load").expect("saved");
    assert!(saved.luns["y0"].geometry.is_some());
    assert_eq!(
        saved.targets[IQN].luns.get(&0).map(String::as_str),
        Some("y0")
    );
    pool.close().await.expect("close");
}

/// A change that needs no pool (the read-only flag) works on a standby and re-presents the
/// LUN pool-less; it must not leave the LUN withdrawn.
#[tokio::test]
async fn read_only_set_on_a_standby_keeps_the_lun() {
    let od = tempfile::tempdir().expect("tempdir");
    let (_owner, pool, _) = owner(od.path()).await;
    let sd = tempfile::tempdir().expect("tempdir");
    let (standby, _) = LunManager::open_gateway(
        &config(sd.path()),
        GatewayOpen {
            pool: None,
            state: state::load(od.path()).expect("load"),
            alua: view(2, 1),
            pool_alua: Vec::new(),
            pr_store: None,
            volatile_write_cache: true,
        },
    )
    .await
    .expect("open standby");
    standby
        .lun_set(crate::lunmgr::LunSet {
            name: "d0".into(),
            read_only: Some(true),
            ..Default::default()
        })
        .await
        .expect("read-only on a standby");
    let t = standby.scsi_target(IQN).expect("target");
    let lun = t.get_lun(0).expect("the LUN is still presented");
    assert!(lun.read_only);
    pool.close().await.expect("close");
}

/// A target created through the admin API on a gateway is built like the ones the state
/// brings: with the group's ALUA view (TPGS, REPORT TARGET PORT GROUPS, the standby senses)
/// and the pool's write-cache truth. Before, `target_create` built it as a single-node
/// target, so its LUNs reported no port groups and WCE=1 on an RBD pool until a restart.
#[tokio::test]
async fn a_target_created_on_a_gateway_has_the_groups_alua_view() {
    let d = tempfile::tempdir().expect("tempdir");
    let pool = pool_in(d.path()).await;
    let alua = view(1, 1);
    let (mgr, _) = LunManager::open_gateway(
        &config(d.path()),
        GatewayOpen {
            pool: Some(pool.clone()),
            state: None,
            alua: alua.clone(),
            pool_alua: Vec::new(),
            pr_store: None,
            volatile_write_cache: false,
        },
    )
    .await
    .expect("open owner");
    let iqn = "iqn.2026-12.org.lunar:made-later";
    mgr.target_create(iqn, Fabric::Iscsi, None, true)
        .await
        .expect("target create");
    let t = mgr.scsi_target(iqn).expect("the device server exists");
    let got = t.alua().expect("the target has the group's ALUA view");
    assert!(Arc::ptr_eq(got, &alua));
    assert!(
        !t.volatile_write_cache(),
        "WCE follows the pool (RBD: no volatile cache)"
    );
    pool.close().await.expect("close");
}

/// `cdb` to LUN `lun`, until it answers something other than a unit attention.
async fn run_lun(
    t: &ScsiTarget,
    n: &Arc<Nexus>,
    lun: u64,
    cdb: &[u8],
    data: Bytes,
) -> ScsiResponse {
    for _ in 0..8 {
        let r = t
            .execute(ScsiRequest {
                nexus: n.clone(),
                lun,
                cdb: Bytes::copy_from_slice(cdb),
                data_out: data.clone().into(),
                expected_data_in: 1 << 20,
                attr: TaskAttr::Simple,
                tag: 1,
            })
            .await;
        let ua = r
            .sense
            .as_ref()
            .and_then(|s| Sense::decode(s))
            .is_some_and(|s| s.key == SenseKey::UnitAttention);
        if !ua {
            return r;
        }
    }
    panic!("LUN {lun}: {cdb:02x?} keeps reporting unit attentions");
}

/// A gateway with two pools, each its own HA unit: detaching pool b (its owner moved to
/// gw2) leaves pool a's LUN serving and b's LUN standby under b's own view, a standby's
/// refusal for b names b's owner, and attaching b again serves its data; a pool is
/// attached or detached by name only.
#[tokio::test]
async fn two_pools_attach_and_detach_one_at_a_time() {
    let d = tempfile::tempdir().expect("tempdir");
    let cfg = Config::local(ByteSize::mib(64))
        .with_pools(&[("a", ByteSize::mib(64)), ("b", ByteSize::mib(64))])
        .with_data_dir(d.path())
        .with_target(TargetCfg::iscsi(IQN));
    let opts = PoolOptions {
        capacity_bytes: Some(64 << 20),
        ..Default::default()
    };
    let pool_a = Pool::open_or_create(&d.path().join("pool-a"), &opts)
        .await
        .expect("pool a");
    let pool_b = Pool::open_or_create(&d.path().join("pool-b"), &opts)
        .await
        .expect("pool b");
    let view_a = view(1, 1);
    let view_b = view_a.sibling(view(1, 1).groups());
    let (mgr, _) = LunManager::open_gateway(
        &cfg,
        GatewayOpen {
            pool: Some(pool_a.clone()),
            state: None,
            alua: view_a.clone(),
            pool_alua: vec![("a".into(), view_a.clone()), ("b".into(), view_b.clone())],
            pr_store: None,
            volatile_write_cache: true,
        },
    )
    .await
    .expect("open");
    assert!(!mgr.has_pool_named("b"));
    mgr.attach_pool("b", pool_b).await.expect("attach b");
    mgr.lun_create(lun("x0", IQN, 0)).await.expect("x0 in a");
    mgr.lun_create(LunCreate {
        pool: Some("b".into()),
        ..lun("y0", IQN, 1)
    })
    .await
    .expect("y0 in b");
    let t = mgr.scsi_target(IQN).expect("target");
    let n = nexus();
    t.nexus_login(&n);
    let (da, db) = (Bytes::from(vec![0xA1; 512]), Bytes::from(vec![0xB2; 512]));
    assert_eq!(
        run_lun(&t, &n, 0, &write10(5), da.clone()).await.status,
        status::GOOD
    );
    assert_eq!(
        run_lun(&t, &n, 1, &write10(5), db.clone()).await.status,
        status::GOOD
    );

    // Pool b moves to gw2: this gateway detaches b alone.
    view_b.set_local(AccessState::Transitioning);
    let detached = mgr.detach_pool("b").await.expect("detach b");
    view_b.set_groups(view(1, 2).groups());
    assert!(mgr.has_pool_named("a") && !mgr.has_pool_named("b"));
    let open: Vec<String> = mgr.open_pools().into_iter().map(|(n, _)| n).collect();
    assert_eq!(open, ["a"]);
    let r = run_lun(&t, &n, 0, &read10(5), Bytes::new()).await;
    assert_eq!(
        (r.status, r.data_in.clone()),
        (status::GOOD, da.clone()),
        "pool a serves"
    );
    let r = run_lun(&t, &n, 1, &read10(5), Bytes::new()).await;
    assert_eq!(
        sense_of(&r),
        (
            SenseKey::NotReady,
            asc::LOGICAL_UNIT_NOT_ACCESSIBLE_TARGET_PORT_IN_STANDBY_STATE
        ),
        "pool b's LUN is standby here"
    );
    let e = mgr
        .lun_create(LunCreate {
            pool: Some("b".into()),
            ..lun("y1", IQN, 2)
        })
        .await
        .expect_err("b is not open here");
    assert!(
        matches!(&e, MgrError::NotOwner { owner: Some(o) } if o == "gw2"),
        "{e:?}"
    );
    mgr.lun_create(lun("x1", IQN, 3))
        .await
        .expect("a still takes LUNs");
    assert!(mgr.detach_pool("nope").await.is_err());

    // b comes back: its LUN serves its data again.
    mgr.attach_pool("b", detached)
        .await
        .expect("attach b again");
    view_b.set_groups(view(1, 1).groups());
    let r = run_lun(&t, &n, 1, &read10(5), Bytes::new()).await;
    assert_eq!(
        (r.status, r.data_in.clone()),
        (status::GOOD, db),
        "pool b serves again"
    );
    assert!(
        mgr.attach_pool("a", pool_a).await.is_err(),
        "a is attached already"
    );

    // Owning b but not a (the first pool): listing snapshots still works, on b.
    let _a = mgr.detach_pool("a").await.expect("detach a");
    assert!(mgr.snapshot_list(None).await.is_ok());
}

/// A shared store where another gateway saves (a target of its own) just before this
/// gateway's first save, as when two gateways take two pools of a group over at once.
struct RacyStore {
    inner: Mutex<(Option<state::State>, u64)>,
    raced: std::sync::atomic::AtomicBool,
}

impl state::StateStore for RacyStore {
    fn load(&self) -> Result<Option<state::State>, state::StateError> {
        let g = self.inner.lock();
        Ok(g.0.clone().inspect(|s| s.store_version.set(g.1)))
    }

    fn save(&self, st: &state::State) -> Result<(), state::StateError> {
        let mut g = self.inner.lock();
        if !self.raced.swap(true, std::sync::atomic::Ordering::SeqCst) {
            let mut other = g.0.clone().unwrap_or_default();
            other.targets.insert(
                IQN2.into(),
                state::TargetRecord {
                    iqn: IQN2.into(),
                    fabric: Fabric::Iscsi,
                    alias: None,
                    allow_any: true,
                    initiators: Vec::new(),
                    chap: None,
                    luns: Default::default(),
                },
            );
            g.0 = Some(other);
            g.1 += 1;
        }
        if st.store_version.get() != g.1 {
            return Err(state::StateError::Conflict {
                object: "racy".into(),
            });
        }
        g.1 += 1;
        g.0 = Some(st.clone());
        st.store_version.set(g.1);
        Ok(())
    }

    fn describe(&self) -> String {
        "racy".into()
    }
}

/// Two gateways take two pools over at once: the other one's save lands first, this
/// one's is refused as a conflict. The takeover seeds again over the other's state, so the
/// shared state ends with both the other's change and this pool's configured LUN, mapped
/// (before, the LUN was in this gateway's memory only, and gone at the next reload).
#[tokio::test]
async fn a_takeover_whose_save_conflicts_seeds_again_over_the_newer_state() {
    let d = tempfile::tempdir().expect("tempdir");
    let cfg = Config::local(ByteSize::mib(64))
        .with_pools(&[("a", ByteSize::mib(64)), ("b", ByteSize::mib(64))])
        .with_data_dir(d.path())
        .with_target(
            TargetCfg::iscsi(IQN)
                .with_lun(crate::config::LunCfg::new(0, "a0", ByteSize::mib(4)).in_pool("a"))
                .with_lun(crate::config::LunCfg::new(1, "b0", ByteSize::mib(4)).in_pool("b")),
        );
    let pool_b = Pool::open_or_create(
        &d.path().join("pool-b"),
        &PoolOptions {
            capacity_bytes: Some(64 << 20),
            ..Default::default()
        },
    )
    .await
    .expect("pool b");
    let view_a = view(1, 2);
    let (mgr, _) = LunManager::open_gateway(
        &cfg,
        GatewayOpen {
            pool: None,
            state: Some(state::State::default()),
            alua: view_a.clone(),
            pool_alua: vec![
                ("a".into(), view_a.clone()),
                ("b".into(), view_a.sibling(vec![])),
            ],
            pr_store: None,
            volatile_write_cache: true,
        },
    )
    .await
    .expect("open standby");
    let store = Arc::new(RacyStore {
        inner: Mutex::new((None, 0)),
        raced: false.into(),
    });
    mgr.set_state_store(store.clone());
    mgr.attach_pool("b", pool_b).await.expect("attach b");
    let saved = store.inner.lock().0.clone().expect("saved");
    assert!(
        saved.targets.contains_key(IQN2),
        "the other gateway's change stays"
    );
    assert_eq!(
        saved
            .targets
            .get(IQN)
            .and_then(|t| t.luns.get(&1))
            .map(String::as_str),
        Some("b0"),
        "b0 is mapped in the shared state"
    );
    assert_eq!(saved.luns.get("b0").map(|r| r.pool.as_str()), Some("b"));
    assert!(mgr.scsi_target(IQN).is_some_and(|t| t.luns() == [1]));
}
