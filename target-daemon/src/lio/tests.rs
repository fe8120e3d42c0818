//! The LIO front end end to end without a kernel: the LUN manager and its device servers,
//! the worker writing a configfs tree in a temporary directory, and a simulated TCMU kernel
//! per backstore (`tcmu::sim`) through which real SCSI commands reach the pool.

use std::collections::HashMap;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use storage_core::Pool;

use super::configfs::tests::tree;
use super::{LioFabric, RingOpener};
use crate::config::{ByteSize, Config, LunCfg, TargetCfg};
use crate::fabric::Fabric;
use crate::lunmgr::clones::CloneCreate;
use crate::lunmgr::LunManager;
use crate::scsi::{status, ScsiTarget};
use crate::tcmu::ring::cap;
use crate::tcmu::sim::{Data, Sim};
use crate::tcmu::DeviceHandle;

const WWPN: &str = "naa.5001405000000001";

/// Opens a simulated kernel for every backstore and keeps it for the test to drive.
#[derive(Default)]
struct SimOpener {
    sims: Mutex<HashMap<String, Sim>>,
    opened: Mutex<Vec<String>>,
}

impl RingOpener for SimOpener {
    fn open<'a>(
        &'a self,
        backstore: &'a str,
        scsi: Arc<ScsiTarget>,
        lun: u64,
    ) -> Pin<Box<dyn Future<Output = anyhow::Result<DeviceHandle>> + Send + 'a>> {
        Box::pin(async move {
            let sim = Sim::new(cap::OOOC | cap::READ_LEN, 64 << 10, 1 << 20);
            let h = crate::tcmu::spawn_with(
                sim.dev_mem.clone(),
                sim.bell.clone(),
                backstore,
                scsi,
                lun,
            )?;
            self.sims.lock().insert(backstore.to_string(), sim);
            self.opened.lock().push(backstore.to_string());
            Ok(h)
        })
    }
}

fn config(dir: &Path) -> Config {
    let mut cfg = Config::local(ByteSize::mib(256))
        .with_data_dir(dir)
        .with_target(
            TargetCfg::lio(Fabric::Loopback, "50:01:40:50:00:00:00:01").with_lun(LunCfg::new(
                0,
                "fc0",
                ByteSize::mib(16),
            )),
        );
    cfg.lio.configfs = dir.join("cfg");
    assert_eq!(cfg.validate(), Ok(()));
    cfg
}

async fn until(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..500 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}");
}

fn exists(dir: &Path, rel: &str) -> bool {
    dir.join("cfg/target").join(rel).symlink_metadata().is_ok()
}

struct Running {
    mgr: Arc<LunManager>,
    lio: Arc<LioFabric>,
    opener: Arc<SimOpener>,
    pool: Pool,
}

async fn start(dir: &Path) -> Running {
    let cfg = config(dir);
    std::fs::create_dir_all(dir.join("cfg/target/core")).unwrap();
    let pool = Pool::open_or_create(&dir.join("pool"), &pool_opts())
        .await
        .unwrap();
    let (mgr, targets) = LunManager::open(&cfg, pool.clone()).await.unwrap();
    let opener = Arc::new(SimOpener::default());
    let lio = LioFabric::start_with(&cfg.lio, opener.clone());
    for t in targets {
        assert!(t.0.fabric.is_lio());
        lio.add(t.0, t.1);
    }
    lio.sweep();
    mgr.attach_frontend(lio.clone());
    Running {
        mgr,
        lio,
        opener,
        pool,
    }
}

fn pool_opts() -> storage_core::PoolOptions {
    storage_core::PoolOptions {
        capacity_bytes: Some(256 << 20),
        ..Default::default()
    }
}

fn write10(lba: u32, blocks: u16) -> Vec<u8> {
    let mut c = vec![0x2A, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    c[2..6].copy_from_slice(&lba.to_be_bytes());
    c[7..9].copy_from_slice(&blocks.to_be_bytes());
    c
}

#[tokio::test]
async fn luns_come_and_go_through_configfs_and_the_ring() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let r = start(dir).await;
    let bs0 = "lunar_5001405000000001_0";
    let tpg = format!("loopback/{WWPN}/tpgt_1");
    until("LUN 0 linked", || {
        exists(dir, &format!("{tpg}/lun/lun_0/{bs0}"))
    })
    .await;
    assert!(exists(dir, &format!("core/user_0/{bs0}/enable")));
    let control =
        std::fs::read_to_string(dir.join(format!("cfg/target/core/user_0/{bs0}/control"))).unwrap();
    assert_eq!(
        control,
        "dev_config=lunar/fc0,dev_size=16777216,hw_block_size=512,max_data_area_mb=64"
    );
    // tcm_loop has no node ACLs (its attrib/ has no generate_node_acls): nothing written.
    assert!(!exists(dir, &format!("{tpg}/attrib")));
    // The loopback nexus is named after the target's WWPN with its last byte flipped.
    assert_eq!(
        std::fs::read_to_string(dir.join(format!("cfg/target/{tpg}/nexus"))).unwrap(),
        "naa.50014050000000fe"
    );

    // A WRITE through the simulated kernel's ring lands in the volume.
    let mut sim = r.opener.sims.lock().remove(bs0).expect("ring opened");
    let data: Vec<u8> = (0..4096u32).map(|i| (i * 7 % 251) as u8).collect();
    sim.submit(&write10(8, 8), Data::Out(data.clone(), vec![1000, 0]));
    sim.irq();
    let done = sim.collect(1).await;
    assert_eq!(done[0].status, status::GOOD);
    let vol = r.pool.volume("fc0").unwrap();
    assert_eq!(&vol.read(8, 8).await.unwrap()[..], &data[..]);

    // A full clone mapped as LUN 1 appears once complete, with a backstore of its own.
    let job = r
        .mgr
        .clone_create(CloneCreate {
            source: "fc0".into(),
            name: "fc0c".into(),
            mode: Some("full".into()),
            target: Some(WWPN.into()),
            lun_id: Some(1),
            guarantee: None,
            copy_acl: false,
            read_only: None,
            pool: None,
        })
        .await
        .unwrap();
    let bs1 = "lunar_5001405000000001_1";
    until("LUN 1 linked", || {
        exists(dir, &format!("{tpg}/lun/lun_1/{bs1}"))
    })
    .await;
    let jobs = r.mgr.clone_list(false).await.unwrap();
    let j = jobs.iter().find(|j| j.id == job.id).unwrap();
    assert_eq!(j.state, "completed", "linked before the clone completed");
    // Every ring opened for LUN 1 was opened after the clone completed: the clone's
    // backstore is only created from the device server's attach event.
    assert_eq!(
        *r.opener.opened.lock(),
        vec![bs0.to_string(), bs1.to_string()]
    );
    let mut csim = r.opener.sims.lock().remove(bs1).unwrap();
    csim.submit(&[0x28, 0, 0, 0, 0, 8, 0, 0, 8, 0], Data::In(4096, vec![]));
    csim.irq();
    let done = csim.collect(1).await;
    assert_eq!(done[0].status, status::GOOD);
    assert_eq!(done[0].data, data, "the clone holds the source's data");

    // Unmapping LUN 0 removes its link and its backstore; LUN 1 stays.
    r.mgr.lun_unmap("fc0", WWPN, true).await.unwrap();
    until("LUN 0 gone", || !exists(dir, &format!("{tpg}/lun/lun_0"))).await;
    until("backstore 0 gone", || {
        !exists(dir, &format!("core/user_0/{bs0}"))
    })
    .await;
    assert!(exists(dir, &format!("{tpg}/lun/lun_1/{bs1}")));

    // A resize reaches LIO's dev_size.
    r.mgr.lun_resize("fc0c", 32 << 20, false).await.unwrap();
    until("dev_size", || {
        std::fs::read_to_string(dir.join(format!("cfg/target/core/user_0/{bs1}/attrib/dev_size")))
            .is_ok_and(|s| s == "33554432")
    })
    .await;

    // Shutdown removes everything lunard created.
    r.lio.shutdown().await;
    let left = tree(&dir.join("cfg"));
    assert_eq!(
        left,
        vec![
            "target/",
            "target/core/",
            "target/core/user_0/",
            "target/loopback/"
        ],
        "configfs after shutdown"
    );
    drop(sim);
    drop(csim);
    r.pool.close().await.unwrap();
}

#[tokio::test]
async fn a_restart_reuses_its_backstores_and_sweeps_unclaimed_ones() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    // What a killed lunard left: its LUN 0 (enabled backstore, link) and a backstore of a
    // LUN that no longer exists, linked as LUN 9; plus a backstore that is not lunard's.
    let core = dir.join("cfg/target/core/user_0");
    let tpg = dir.join(format!("cfg/target/loopback/{WWPN}/tpgt_1"));
    for b in [
        "lunar_5001405000000001_0",
        "lunar_5001405000000001_9",
        "other_disk",
    ] {
        std::fs::create_dir_all(core.join(b)).unwrap();
        std::fs::write(core.join(b).join("enable"), "1").unwrap();
    }
    for (lun, b) in [
        (0, "lunar_5001405000000001_0"),
        (9, "lunar_5001405000000001_9"),
    ] {
        let l = tpg.join(format!("lun/lun_{lun}"));
        std::fs::create_dir_all(&l).unwrap();
        std::os::unix::fs::symlink(core.join(b), l.join(b)).unwrap();
    }
    let r = start(dir).await;
    until("stale LUN 9 swept", || !tpg.join("lun/lun_9").exists()).await;
    until("stale backstore swept", || {
        !core.join("lunar_5001405000000001_9").exists()
    })
    .await;
    until("LUN 0 served", || {
        r.opener
            .opened
            .lock()
            .contains(&"lunar_5001405000000001_0".to_string())
    })
    .await;
    // Re-attached, not recreated: the ring was reset (blocked around it) instead.
    let action = core.join("lunar_5001405000000001_0/action");
    assert_eq!(
        std::fs::read_to_string(action.join("reset_ring")).unwrap(),
        "1"
    );
    assert_eq!(
        std::fs::read_to_string(action.join("block_dev")).unwrap(),
        "0"
    );
    assert!(!core.join("lunar_5001405000000001_0/control").exists());
    assert!(core.join("other_disk").exists(), "not lunard's: untouched");
    r.lio.shutdown().await;
    assert!(core.join("other_disk").exists());
    assert!(!core.join("lunar_5001405000000001_0").exists());
    r.pool.close().await.unwrap();
}

#[tokio::test]
async fn without_lio_the_targets_wait_and_nothing_is_written() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let cfg = config(dir);
    // No <configfs>/target/core: LIO is not there.
    std::fs::create_dir_all(dir.join("cfg")).unwrap();
    let pool = Pool::open_or_create(&dir.join("pool"), &pool_opts())
        .await
        .unwrap();
    let (mgr, targets) = LunManager::open(&cfg, pool.clone()).await.unwrap();
    let opener = Arc::new(SimOpener::default());
    let lio = LioFabric::start_with(&cfg.lio, opener.clone());
    for t in targets {
        lio.add(t.0, t.1);
    }
    lio.sweep();
    mgr.attach_frontend(lio.clone());
    lio.shutdown().await;
    assert!(tree(&dir.join("cfg")).is_empty());
    assert!(opener.opened.lock().is_empty());
    // The target is still known to the manager (exported at a start where LIO exists).
    assert_eq!(mgr.target_list().await.len(), 1);
    pool.close().await.unwrap();
}
