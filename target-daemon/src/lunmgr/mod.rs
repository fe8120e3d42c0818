//! The LUN manager: runtime state of targets, LUNs, mappings, ACLs, CHAP, snapshots, clones
//! and clone jobs, persisted atomically in `<data-dir>/state.json`.
//!
//! The YAML configuration seeds a new data directory. From then on the persisted state is the
//! truth; at start-up targets and LUNs that the YAML names but the state does not know are
//! added (state is never silently dropped). Every administrative change goes through here:
//! the manager changes the pool, the device servers ([`ScsiTarget`], which raise the unit
//! attentions) and the fabric front ends ([`Frontend`]: lunard's iSCSI server, LIO), then
//! persists the new state before answering. The manager knows no front end by name: the daemon
//! attaches them.
//!
//! Operations are serialized by one async mutex around the state: administrative calls are
//! rare and must observe each other's results; I/O never takes this lock.

pub mod clones;
pub mod divergence;
pub mod error;
mod export;
mod gateway;
pub mod groups;
pub use gateway::GatewayOpen;
mod luns;
mod pool;
#[cfg(test)]
mod pool_tests;
pub mod replicas;
pub mod replication;
mod seed;
mod snapshots;
pub mod state;
mod targets;
pub mod view;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use storage_core::Pool;

use crate::config::Config;
pub use crate::fabric::SessionView;
use crate::fabric::{Fabric, Frontend, TargetSpec};
use crate::scsi::ScsiTarget;
pub use error::{human_bytes, MgrError, MgrResult, ObjectKind, UsedBy};
use state::{State, TargetRecord, STATE_VERSION};
pub use view::*;

pub(crate) use luns::{attach, check_name, free_lun_id, lun_rec, mappings_of, online};
pub use luns::{parse_guarantee, LunCreate, LunSet};
use seed::{adopt_orphans, seed_from_config};
use targets::target_rec;

/// Seconds since the Unix epoch.
pub(crate) fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Seconds since the Unix epoch (for records other modules build).
pub fn now_unix_secs() -> u64 {
    now_unix()
}

/// Control block of a running clone/split job.
pub(crate) struct JobCtl {
    pub(crate) cancel: tokio::sync::watch::Sender<bool>,
    pub(crate) finished: tokio::sync::watch::Sender<bool>,
    pub(crate) done: std::sync::atomic::AtomicU64,
    pub(crate) total: std::sync::atomic::AtomicU64,
}

/// The LUN manager. Cheap to share (`Arc`).
pub struct LunManager {
    /// The pools by name, in configuration order (the first holds the LUNs that name no
    /// pool); a pool is `None` on a standby gateway of an HA group (see `gateway.rs`).
    pools: RwLock<Vec<pool::PoolSlot>>,
    /// The HA group's ALUA state, on a gateway: every target gets it, and errors name the
    /// owner from it.
    alua: Option<Arc<crate::scsi::alua::AluaView>>,
    /// On a gateway, the ALUA view of each pool (each pool is its own HA unit with its own
    /// owner): a LUN reports its pool's states, and a standby's errors name its pool's
    /// owner. Empty: `alua` decides for every pool.
    pool_alua: BTreeMap<String, Arc<crate::scsi::alua::AluaView>>,
    /// The reservation store of the targets a gateway builds (`None`: the data
    /// directory's `FileStore`).
    pr_store: Option<Arc<dyn crate::scsi::pr::PrStore>>,
    /// Whether the pool has a volatile write cache (the WCE new targets report).
    volatile_write_cache: bool,
    data_dir: PathBuf,
    state: tokio::sync::Mutex<State>,
    /// Device servers by IQN (exported or waiting for a restart to be).
    scsi: RwLock<BTreeMap<String, Arc<ScsiTarget>>>,
    /// Targets a running front end could not take up yet (applied at restart).
    pending: Mutex<std::collections::BTreeSet<String>>,
    /// The fabric front ends the daemon attached.
    frontends: RwLock<Vec<Arc<dyn Frontend>>>,
    /// Running jobs by job id.
    pub(crate) jobs: Mutex<HashMap<String, Arc<JobCtl>>>,
    /// The configuration lunard started with (for `config export`).
    config: Config,
    /// Where every change is saved: `state.json` of the data directory, or (a gateway of
    /// an HA group) the group's shared state object, see [`LunManager::set_state_store`].
    state_store: RwLock<Arc<dyn state::StateStore>>,
}

impl LunManager {
    /// Loads `<data_dir>/state.json` (or seeds it from `config`), adds what the configuration
    /// names and the state lacks, cleans up clone jobs a crash interrupted, and builds the
    /// device servers. Returns every target with its device server, for the daemon to hand to
    /// the front end of its fabric.
    pub async fn open(
        config: &Config,
        pool: Pool,
    ) -> anyhow::Result<(Arc<LunManager>, Vec<(TargetSpec, Arc<ScsiTarget>)>)> {
        LunManager::open_with_pools(config, vec![(config.default_pool_name(), pool)]).await
    }

    /// [`open`](Self::open) over several pools, by name, in configuration order (the first
    /// holds the LUNs that name no pool, and those of a state written before pools had
    /// names).
    pub async fn open_with_pools(
        config: &Config,
        pools: Vec<(String, Pool)>,
    ) -> anyhow::Result<(Arc<LunManager>, Vec<(TargetSpec, Arc<ScsiTarget>)>)> {
        let data_dir = config.data_dir.clone();
        let store: Arc<dyn state::StateStore> = Arc::new(state::FileStateStore::new(&data_dir));
        let loaded = store.load()?;
        let fresh = loaded.is_none();
        let mut st = loaded.unwrap_or_default();
        st.version = STATE_VERSION;
        let Some((first, _)) = pools.first() else {
            anyhow::bail!("no pool to serve");
        };
        seed::name_pools(&mut st, first);
        seed_from_config(&mut st, config, &pools).await?;
        for (name, pool) in &pools {
            clones::recover_interrupted(&mut st, name, pool).await;
        }
        for (name, pool) in &pools {
            adopt_orphans(&mut st, name, pool);
            gateway::fill_geometry(name, pool, &mut st);
        }
        store.save(&st)?;
        if fresh {
            tracing::info!(path = %state::state_path(&data_dir).display(), "state seeded from the configuration");
        }

        let slots = pools
            .iter()
            .map(|(name, pool)| pool::PoolSlot {
                name: name.clone(),
                pool: Some(pool.clone()),
            })
            .collect();
        let mgr = Arc::new(LunManager::new_empty(config, slots, st, None, None));
        let entries = {
            let st = mgr.lock().await;
            let chunk = mgr.chunk_size(&st);
            let mut entries = Vec::new();
            for t in st.targets.values() {
                let target = mgr.new_scsi_target(&t.iqn, chunk);
                for (&id, name) in &t.luns {
                    mgr.attach_any(&st, &target, id, name);
                }
                mgr.scsi.write().insert(t.iqn.clone(), target.clone());
                entries.push((t.to_spec(), target));
            }
            entries
        };
        for (name, pool) in &pools {
            mgr.spawn_space_watch(name, pool);
        }
        Ok((mgr, entries))
    }

    /// A manager with no device servers yet.
    fn new_empty(
        config: &Config,
        pools: Vec<pool::PoolSlot>,
        st: State,
        alua: Option<Arc<crate::scsi::alua::AluaView>>,
        pr_store: Option<Arc<dyn crate::scsi::pr::PrStore>>,
    ) -> LunManager {
        LunManager {
            pools: RwLock::new(pools),
            alua,
            pool_alua: BTreeMap::new(),
            pr_store,
            volatile_write_cache: true,
            data_dir: config.data_dir.clone(),
            state: tokio::sync::Mutex::new(st),
            scsi: RwLock::new(BTreeMap::new()),
            pending: Mutex::new(Default::default()),
            frontends: RwLock::new(Vec::new()),
            jobs: Mutex::new(HashMap::new()),
            config: config.clone(),
            state_store: RwLock::new(Arc::new(state::FileStateStore::new(&config.data_dir))),
        }
    }

    /// Watches pool `name`'s soft threshold; on every upward crossing every exported LUN of
    /// that pool raises THIN PROVISIONING SOFT THRESHOLD REACHED (38/07) once per I_T nexus
    /// (LUNs of the other pools are not affected: thresholds are per pool). Driven by the
    /// pool's own watch channel (no polling interval that a quick rise and fall could slip
    /// through); stops when the pool closes or the manager is gone.
    fn spawn_space_watch(self: &Arc<Self>, name: &str, pool: &Pool) {
        let weak = Arc::downgrade(self);
        let name = name.to_string();
        let mut rx = pool.soft_threshold_watch();
        tokio::spawn(async move {
            // Compare crossing counts, not states: the channel keeps only its latest value,
            // so a rise, fall and rise while this task was not scheduled reads as "reached,
            // still reached" but has a count one higher.
            let start = *rx.borrow_and_update();
            let mut seen = start;
            if start.reached {
                tracing::warn!(pool = %name, "pool soft threshold already reached at start");
                if let Some(mgr) = weak.upgrade() {
                    mgr.soft_threshold_reached(&name).await;
                }
            }
            while rx.changed().await.is_ok() {
                let now = *rx.borrow_and_update();
                let Some(mgr) = weak.upgrade() else { return };
                if now.crossings > seen.crossings {
                    // One unit attention per batch: SPC-4 keeps it pending per nexus until
                    // reported, and a crossing after it was reported raises it again.
                    tracing::warn!(
                        pool = %name,
                        crossings = now.crossings - seen.crossings,
                        "pool soft threshold reached: notifying initiators"
                    );
                    mgr.soft_threshold_reached(&name).await;
                } else if !now.reached && seen.reached {
                    tracing::info!(pool = %name, "pool usage back below the soft threshold");
                }
                seen = now;
            }
        });
    }

    /// Raises the soft-threshold unit attention on every exported LUN of pool `name`.
    async fn soft_threshold_reached(&self, name: &str) {
        let st = self.lock().await;
        for t in st.targets.values() {
            let Some(target) = self.scsi_target(&t.iqn) else {
                continue;
            };
            let ids: Vec<u64> = t
                .luns
                .iter()
                .filter(|(_, lun)| {
                    st.luns
                        .get(*lun)
                        .is_some_and(|r| self.pool_name_of(r) == name)
                })
                .map(|(&id, _)| id)
                .collect();
            target.soft_threshold_reached_on(&ids);
        }
    }

    /// Connects a running front end: target-level changes and session queries for its
    /// fabrics go to it from now on.
    pub fn attach_frontend(&self, frontend: Arc<dyn Frontend>) {
        self.frontends.write().push(frontend);
    }

    /// The front end serving `fabric`, if one is attached.
    fn frontend(&self, fabric: Fabric) -> Option<Arc<dyn Frontend>> {
        self.frontends
            .read()
            .iter()
            .find(|f| f.fabrics().contains(&fabric))
            .cloned()
    }

    /// Whether the pool is open here (a single Lunar, or the owner of an HA group).
    pub fn has_pool(&self) -> bool {
        self.pools.read().first().is_some_and(|s| s.pool.is_some())
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    pub(crate) async fn lock(&self) -> tokio::sync::MutexGuard<'_, State> {
        self.state.lock().await
    }

    /// Saves `st` (the state under the manager's lock) to the state store: a
    /// compare-and-swap on a shared store, which refuses it (`StateError::Conflict`) when
    /// another gateway changed the state since `st` was loaded. Blocking, like today's
    /// file write: the state is small and administrative calls are rare.
    /// Every LUN record's geometry is refreshed from the pool first (so standby gateways,
    /// which have no pool, present the LUNs as they are; see `gateway.rs`).
    pub(crate) fn save(&self, st: &State) -> MgrResult<()> {
        let store = self.state_store.read().clone();
        let pools = self.open_pools();
        if pools.is_empty() {
            return store.save(st).map_err(MgrError::from);
        }
        let mut copy = st.clone();
        for (name, p) in &pools {
            gateway::fill_geometry(name, p, &mut copy);
        }
        store.save(&copy).map_err(MgrError::from)?;
        // The version the save produced belongs to the state under the lock.
        st.store_version.set(copy.store_version.get());
        Ok(())
    }

    /// Keep the state in `store` from now on (an HA gateway: the group's shared state
    /// object) instead of `state.json`. The state the manager holds must derive from
    /// `store`'s current version (loaded from it, or reloaded with
    /// [`reload_state`](Self::reload_state)-like code that keeps
    /// `State::store_version`), or the next save is refused as a conflict.
    pub fn set_state_store(&self, store: Arc<dyn state::StateStore>) {
        *self.state_store.write() = store;
    }

    /// The state store changes are saved to.
    pub fn state_store(&self) -> Arc<dyn state::StateStore> {
        self.state_store.read().clone()
    }

    /// The stored name of the target `name` denotes: `name` itself when a target has it,
    /// else the target with the same WWPN however it was spelled (`naa.` or colon form).
    pub fn target_key(&self, name: &str) -> String {
        let map = self.scsi.read();
        if map.contains_key(name) {
            return name.to_string();
        }
        if let Ok(w) = crate::fabric::parse_wwpn(name) {
            if let Some(k) = map
                .keys()
                .find(|k| crate::fabric::parse_wwpn(k).is_ok_and(|x| x == w))
            {
                return k.clone();
            }
        }
        name.to_string()
    }

    pub(crate) fn scsi_target(&self, iqn: &str) -> Option<Arc<ScsiTarget>> {
        self.scsi.read().get(iqn).cloned()
    }

    fn session_count(&self, t: &TargetRecord) -> usize {
        self.frontend(t.fabric)
            .map_or(0, |f| f.sessions(&t.iqn).len())
    }

    /// Targets (with live sessions) that export `lun`.
    fn busy_targets(&self, st: &State, lun: &str) -> Vec<String> {
        st.targets
            .values()
            .filter(|t| t.luns.values().any(|n| n == lun))
            .filter(|t| self.session_count(t) > 0)
            .map(|t| t.iqn.clone())
            .collect()
    }

    /// Stops running clone jobs (their clones are cleaned up at the next start, as after a
    /// crash) — called at shutdown.
    pub fn stop_jobs(&self) {
        for j in self.jobs.lock().values() {
            j.cancel.send_replace(true);
        }
    }
}
