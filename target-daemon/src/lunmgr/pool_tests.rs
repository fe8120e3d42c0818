//! The LUN manager over several pools: which pool a LUN, its snapshots and clones live in,
//! what crosses pools (refused), space per pool, and a state.json from before pools had
//! names.

use std::sync::Arc;

use storage_core::{Pool, PoolOptions};

use crate::config::{ByteSize, Config, LunCfg, TargetCfg};
use crate::lunmgr::clones::CloneCreate;
use crate::lunmgr::{LunCreate, LunManager, MgrError};

const IQN: &str = "iqn.2026-11.io.lunar:mp";
const MIB: u64 = 1 << 20;

async fn open_pool(dir: &std::path::Path, name: &str, mib: u64) -> Pool {
    Pool::open_or_create(
        &dir.join(format!("pool-{name}")),
        &PoolOptions {
            capacity_bytes: Some(mib * MIB),
            ..Default::default()
        },
    )
    .await
    .expect("pool")
}

struct Two {
    _dir: tempfile::TempDir,
    cfg: Config,
    mgr: Arc<LunManager>,
    fast: Pool,
    bulk: Pool,
}

async fn two_pools() -> Two {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = Config::local(ByteSize::mib(64))
        .with_data_dir(dir.path())
        .with_pools(&[("fast", ByteSize::mib(64)), ("bulk", ByteSize::mib(64))])
        .with_target(
            TargetCfg::iscsi(IQN)
                .with_lun(LunCfg::new(0, "f0", ByteSize::mib(4)))
                .with_lun(LunCfg::new(1, "b0", ByteSize::mib(4)).in_pool("bulk")),
        );
    let fast = open_pool(dir.path(), "fast", 64).await;
    let bulk = open_pool(dir.path(), "bulk", 64).await;
    let (mgr, _) = LunManager::open_with_pools(
        &cfg,
        vec![("fast".into(), fast.clone()), ("bulk".into(), bulk.clone())],
    )
    .await
    .expect("open");
    Two {
        _dir: dir,
        cfg,
        mgr,
        fast,
        bulk,
    }
}

fn create(name: &str, pool: Option<&str>, mib: u64) -> LunCreate {
    LunCreate {
        name: name.into(),
        size_bytes: mib * MIB,
        guarantee: None,
        block_size: None,
        target: None,
        lun_id: None,
        read_only: false,
        pool: pool.map(Into::into),
    }
}

fn clone_of(source: &str, name: &str, pool: Option<&str>) -> CloneCreate {
    CloneCreate {
        source: source.into(),
        name: name.into(),
        mode: None,
        target: None,
        lun_id: None,
        guarantee: None,
        copy_acl: false,
        read_only: None,
        pool: pool.map(Into::into),
    }
}

#[tokio::test]
async fn luns_live_in_the_pool_they_name() {
    let t = two_pools().await;
    // The configuration's LUNs: f0 in the first pool (no pool named), b0 in bulk.
    assert!(t.fast.volume_info("f0").is_ok());
    assert!(t.bulk.volume_info("b0").is_ok());
    assert!(t.fast.volume_info("b0").is_err());
    let v = t
        .mgr
        .lun_create(create("x", Some("bulk"), 2))
        .await
        .unwrap();
    assert_eq!(v.pool, "bulk");
    assert!(t.bulk.volume_info("x").is_ok());
    let v = t.mgr.lun_create(create("y", None, 2)).await.unwrap();
    assert_eq!(v.pool, "fast");
    // Names are unique across the appliance.
    let e = t
        .mgr
        .lun_create(create("x", Some("fast"), 2))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), "already_exists", "{e}");
    let e = t
        .mgr
        .lun_create(create("z", Some("nope"), 2))
        .await
        .unwrap_err();
    assert_eq!(e.to_string(), "pool \"nope\" not found");
    let list = t.mgr.lun_list().await;
    let pool_of = |n: &str| list.iter().find(|l| l.name == n).map(|l| l.pool.clone());
    assert_eq!(pool_of("b0").as_deref(), Some("bulk"));
    assert_eq!(pool_of("f0").as_deref(), Some("fast"));
    // Deleting and resizing go to the LUN's pool.
    t.mgr.lun_resize("x", 3 * MIB, false).await.unwrap();
    assert_eq!(t.bulk.volume_info("x").unwrap().size_bytes, 3 * MIB);
    t.mgr.lun_delete("x", false, false).await.unwrap();
    assert!(t.bulk.volume_info("x").is_err());
    let st = t.mgr.pool_status(None).unwrap();
    let names: Vec<_> = st.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["fast", "bulk"]);
    assert_eq!(st[1].volumes, 1);
    assert_eq!(t.mgr.pool_status(Some("bulk")).unwrap()[0].volumes, 1);
    assert!(t.mgr.pool_status(Some("nope")).unwrap_err().is_not_found());
    assert!(t.mgr.pool_check(Some("bulk")).await.unwrap().0);
    let _ = t.cfg;
}

#[tokio::test]
async fn snapshots_and_clones_stay_in_their_pool() {
    let t = two_pools().await;
    t.mgr.snapshot_create("b0", "s1").await.unwrap();
    assert_eq!(t.bulk.snapshots(Some("b0")).len(), 1);
    assert_eq!(t.mgr.snapshot_list(None).await.unwrap().len(), 1);
    let j = t
        .mgr
        .clone_create(clone_of("b0@s1", "bc", None))
        .await
        .unwrap();
    assert_eq!(j.state, "completed");
    assert!(t.bulk.volume_info("bc").is_ok());
    assert!(t.fast.volume_info("bc").is_err());
    assert_eq!(t.mgr.lun_show("bc").await.unwrap().pool, "bulk");
    // Naming the source's own pool is fine.
    t.mgr
        .clone_create(clone_of("b0", "bc2", Some("bulk")))
        .await
        .unwrap();
    // Another pool is refused, naming both pools; nothing is left behind.
    let e = t
        .mgr
        .clone_create(clone_of("b0", "cross", Some("fast")))
        .await
        .unwrap_err();
    assert!(matches!(e, MgrError::CrossPool { .. }), "{e:?}");
    assert_eq!(e.kind(), "invalid");
    let msg = e.to_string();
    assert!(
        msg.contains("\"bulk\"") && msg.contains("\"fast\"") && msg.contains("clone create"),
        "{msg}"
    );
    assert!(t.mgr.lun_show("cross").await.is_err());
    assert!(t.fast.volume_info("cross").is_err() && t.bulk.volume_info("cross").is_err());
    // A consistency group spans one pool only.
    let e = t
        .mgr
        .snapshot_group("g", &["f0".into(), "b0".into()])
        .await
        .unwrap_err();
    assert!(matches!(e, MgrError::CrossPool { .. }), "{e:?}");
    assert!(t.fast.snapshots(Some("f0")).is_empty());
    // So does a consistency group object, refused with both pools named.
    let e = t
        .mgr
        .cg_create("db", &["f0".into(), "b0".into()])
        .await
        .unwrap_err();
    assert!(matches!(e, MgrError::CrossPool { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(
        msg.contains("consistency group") && msg.contains("\"bulk\"") && msg.contains("\"fast\""),
        "{msg}"
    );
    assert!(t.mgr.cg_list().await.expect("list").is_empty());
    // clone refresh from a LUN of another pool is refused too.
    let e = t
        .mgr
        .clone_refresh("bc", Some("f0"), false)
        .await
        .unwrap_err();
    assert!(matches!(e, MgrError::CrossPool { .. }), "{e:?}");
}

/// A full pool names itself in the error, and the other pool keeps working.
#[tokio::test]
async fn a_full_pool_does_not_stop_the_other() {
    let t = two_pools().await;
    t.mgr
        .lun_create(LunCreate {
            guarantee: Some("full".into()),
            ..create("big", Some("fast"), 48)
        })
        .await
        .unwrap();
    let e = t
        .mgr
        .lun_create(LunCreate {
            guarantee: Some("full".into()),
            ..create("more", Some("fast"), 16)
        })
        .await
        .unwrap_err();
    assert_eq!(e.kind(), "no_space", "{e}");
    assert!(e.to_string().starts_with("pool \"fast\": "), "{e}");
    t.mgr
        .lun_create(LunCreate {
            guarantee: Some("full".into()),
            ..create("more", Some("bulk"), 16)
        })
        .await
        .unwrap();
}

/// A state.json written before LUN records named a pool opens unchanged: every LUN is in
/// the first pool, and the next save names it.
#[tokio::test]
async fn a_state_from_before_pools_had_names_opens_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let old = serde_json::json!({
        "version": 1,
        "luns": {
            "old0": {
                "name": "old0",
                "identity": "6f1c2d4e-0000-4000-8000-000000000001",
                "read_only": false,
                "status": "online",
                "created_unix": 5
            }
        },
        "targets": {
            IQN: {
                "iqn": IQN,
                "alias": null,
                "allow_any": true,
                "initiators": [],
                "chap": null,
                "luns": {"0": "old0"}
            }
        },
        "groups": {},
        "clone_jobs": [],
        "next_job": 0
    });
    std::fs::write(
        dir.path().join("state.json"),
        serde_json::to_vec_pretty(&old).unwrap(),
    )
    .unwrap();
    let cfg = Config::local(ByteSize::mib(64)).with_data_dir(dir.path());
    let pool = open_pool(dir.path(), "x", 64).await;
    pool.create_volume("old0", 4 * MIB, 512, storage_core::Guarantee::None)
        .await
        .unwrap();
    let (mgr, targets) = LunManager::open(&cfg, pool.clone()).await.unwrap();
    assert_eq!(targets.len(), 1);
    assert_eq!(targets[0].1.luns(), vec![0]);
    let v = mgr.lun_show("old0").await.unwrap();
    assert_eq!(v.pool, "default");
    assert_eq!(v.size_bytes, 4 * MIB);
    assert_eq!(
        v.naa,
        crate::lunmgr::naa_and_serial("6f1c2d4e-0000-4000-8000-000000000001".parse().unwrap()).0
    );
    let saved = crate::lunmgr::state::load(dir.path()).unwrap().unwrap();
    assert_eq!(saved.luns["old0"].pool, "default");
    pool.close().await.unwrap();
}

/// `config export` of an appliance with several pools names the pool of every LUN that is
/// not in the first one, and reads back as the same pools and placements.
#[tokio::test]
async fn config_export_keeps_the_pools() {
    let t = two_pools().await;
    let text = t.mgr.export_yaml().await.unwrap();
    let back =
        Config::from_yaml_str(&text, "exported.yaml").unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(back.pools, t.cfg.pools, "{text}");
    let luns = &back.targets[0].luns;
    let pool_of = |v: &str| luns.iter().find(|l| l.volume == v).map(|l| l.pool.clone());
    assert_eq!(pool_of("b0"), Some(Some("bulk".into())), "{text}");
    assert_eq!(pool_of("f0"), Some(None), "{text}");
}
