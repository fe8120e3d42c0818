//! The LUN manager: runtime state of targets, LUNs, mappings, ACLs, CHAP, snapshots, clones
//! and clone jobs, persisted atomically in `<data-dir>/state.json`.
//!
//! The YAML configuration seeds a new data directory. From then on the persisted state is the
//! truth; at start-up targets and LUNs that the YAML names but the state does not know are
//! added (state is never silently dropped). Every administrative change goes through here:
//! the manager changes the pool, the device servers ([`ScsiTarget`], which raise the unit
//! attentions) and the iSCSI server ([`Exports`]), then persists the new state before
//! answering.
//!
//! Operations are serialized by one async mutex around the state: administrative calls are
//! rare and must observe each other's results; I/O never takes this lock.

pub mod clones;
pub mod divergence;
pub mod error;
pub mod exports;
pub mod state;
pub mod view;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};
use storage_core::{Guarantee, Pool, StorageError};

use crate::config::{ByteSize, Config, LunCfg};
use crate::fabric::Fabric;
use crate::iscsi::TargetEntry;
use crate::scsi::ScsiTarget;
pub use error::{human_bytes, MgrError, MgrResult};
pub use exports::{Exports, SessionView};
use state::{ChapRecord, LunRecord, LunStatus, State, TargetRecord, STATE_VERSION};
pub use view::*;

/// Seconds since the Unix epoch.
pub(crate) fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Parameters of `lun create`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LunCreate {
    /// LUN (and volume) name.
    pub name: String,
    /// Size in bytes (a multiple of the block size).
    pub size_bytes: u64,
    /// `none` (thin, default) or `full`.
    #[serde(default)]
    pub guarantee: Option<String>,
    /// 512 (default) or 4096.
    #[serde(default)]
    pub block_size: Option<u32>,
    /// Map into this target...
    #[serde(default)]
    pub target: Option<String>,
    /// ...at this LUN number (default: lowest free).
    #[serde(default)]
    pub lun_id: Option<u64>,
    /// Export write-protected.
    #[serde(default)]
    pub read_only: bool,
}

/// Parameters of `lun set`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct LunSet {
    /// LUN name.
    pub name: String,
    /// New guarantee.
    #[serde(default)]
    pub guarantee: Option<String>,
    /// New read-only flag (re-attaches the LUN in every target; initiators get a UA).
    #[serde(default)]
    pub read_only: Option<bool>,
    /// New name.
    #[serde(default)]
    pub rename: Option<String>,
}

/// Parses `none|full`.
pub fn parse_guarantee(s: &str) -> MgrResult<Guarantee> {
    match s {
        "none" | "thin" => Ok(Guarantee::None),
        "full" | "thick" => Ok(Guarantee::Full),
        other => Err(MgrError::Invalid(format!(
            "invalid guarantee {other:?}: use none or full"
        ))),
    }
}

fn guarantee_str(g: Guarantee) -> &'static str {
    match g {
        Guarantee::None => "none",
        Guarantee::Full => "full",
    }
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
    pool: Pool,
    data_dir: PathBuf,
    state: tokio::sync::Mutex<State>,
    /// Device servers by IQN (exported or waiting for a restart to be).
    scsi: RwLock<BTreeMap<String, Arc<ScsiTarget>>>,
    /// Targets the running iSCSI server does not know yet.
    pending: Mutex<std::collections::BTreeSet<String>>,
    exports: OnceLock<Arc<dyn Exports>>,
    /// Running jobs by job id.
    pub(crate) jobs: Mutex<HashMap<String, Arc<JobCtl>>>,
    /// The configuration lunard started with (for `config export`).
    config: Config,
}

impl LunManager {
    /// Loads `<data_dir>/state.json` (or seeds it from `config`), adds what the configuration
    /// names and the state lacks, cleans up clone jobs a crash interrupted, and builds the
    /// device servers. Returns the targets for the iSCSI server.
    pub async fn open(
        config: &Config,
        pool: Pool,
    ) -> anyhow::Result<(Arc<LunManager>, Vec<TargetEntry>)> {
        let data_dir = config.data_dir.clone();
        let loaded = state::load(&data_dir)?;
        let fresh = loaded.is_none();
        let mut st = loaded.unwrap_or_default();
        st.version = STATE_VERSION;
        seed_from_config(&mut st, config, &pool).await?;
        clones::recover_interrupted(&mut st, &pool).await;
        adopt_orphans(&mut st, &pool);
        state::save(&data_dir, &st)?;
        if fresh {
            tracing::info!(path = %state::state_path(&data_dir).display(), "state seeded from the configuration");
        }

        let mut scsi = BTreeMap::new();
        let mut entries = Vec::new();
        let chunk = pool.status().chunk_size;
        for t in st.targets.values() {
            let target = ScsiTarget::with_pr_store(
                &t.iqn,
                chunk,
                crate::scsi::pr::FileStore::for_data_dir(&data_dir),
            );
            for (&id, name) in &t.luns {
                attach(&pool, &st, &target, id, name);
            }
            scsi.insert(t.iqn.clone(), target.clone());
            entries.push(TargetEntry {
                cfg: t.to_cfg(),
                scsi: target,
            });
        }
        let mgr = Arc::new(LunManager {
            pool,
            data_dir,
            state: tokio::sync::Mutex::new(st),
            scsi: RwLock::new(scsi),
            pending: Mutex::new(Default::default()),
            exports: OnceLock::new(),
            jobs: Mutex::new(HashMap::new()),
            config: config.clone(),
        });
        mgr.spawn_space_watch();
        Ok((mgr, entries))
    }

    /// Watches the pool's soft threshold; on every upward crossing every exported LUN raises
    /// THIN PROVISIONING SOFT THRESHOLD REACHED (38/07) once per I_T nexus. Driven by the
    /// pool's own watch channel (no polling interval that a quick rise and fall could slip
    /// through); stops when the pool closes or the manager is gone.
    fn spawn_space_watch(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        let mut rx = self.pool.soft_threshold_watch();
        tokio::spawn(async move {
            let mut was = *rx.borrow_and_update();
            if was {
                tracing::warn!("pool soft threshold already reached at start");
                if let Some(mgr) = weak.upgrade() {
                    for t in mgr.scsi.read().values() {
                        t.soft_threshold_reached();
                    }
                }
            }
            while rx.changed().await.is_ok() {
                let now = *rx.borrow_and_update();
                let Some(mgr) = weak.upgrade() else { return };
                if now && !was {
                    tracing::warn!("pool soft threshold reached: notifying initiators");
                    for t in mgr.scsi.read().values() {
                        t.soft_threshold_reached();
                    }
                } else if !now && was {
                    tracing::info!("pool usage back below the soft threshold");
                }
                was = now;
            }
        });
    }

    /// Connects the running iSCSI server (target-level changes, sessions).
    pub fn attach_exports(&self, exports: Arc<dyn Exports>) {
        let _ = self.exports.set(exports);
    }

    /// The pool.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    pub(crate) async fn lock(&self) -> tokio::sync::MutexGuard<'_, State> {
        self.state.lock().await
    }

    pub(crate) fn save(&self, st: &State) -> MgrResult<()> {
        state::save(&self.data_dir, st).map_err(MgrError::from)
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

    fn session_count(&self, iqn: &str) -> usize {
        self.exports.get().map_or(0, |e| e.sessions(iqn).len())
    }

    /// Targets (with live sessions) that export `lun`.
    fn busy_targets(&self, st: &State, lun: &str) -> Vec<String> {
        st.targets
            .values()
            .filter(|t| t.luns.values().any(|n| n == lun))
            .filter(|t| self.session_count(&t.iqn) > 0)
            .map(|t| t.iqn.clone())
            .collect()
    }

    // ----- pool -------------------------------------------------------------------------

    /// Pool figures.
    pub fn pool_status(&self) -> PoolView {
        let s = self.pool.status();
        PoolView {
            uuid: s.uuid.to_string(),
            capacity_bytes: s.capacity_bytes,
            used_bytes: s.used_bytes,
            free_bytes: s.free_bytes,
            reserved_bytes: s.reserved_bytes,
            chunk_size: s.chunk_size,
            soft_threshold_pct: s.soft_threshold_pct,
            soft_threshold_reached: s.soft_threshold_reached,
            volumes: s.volumes,
            snapshots: s.snapshots,
            io_backend: self.pool.io_backend().into(),
        }
    }

    /// Runs the pool's consistency check; returns (clean, errors, leaked chunks).
    pub async fn pool_check(&self) -> MgrResult<(bool, Vec<String>, u64)> {
        let _st = self.lock().await;
        let r = self.pool.check().await?;
        Ok((r.is_clean(), r.errors.clone(), r.leaked_chunks))
    }

    // ----- LUNs ---------------------------------------------------------------------------

    pub(crate) fn lun_view_of(&self, st: &State, rec: &LunRecord) -> LunView {
        self.lun_view(st, rec)
    }

    fn lun_view(&self, st: &State, rec: &LunRecord) -> LunView {
        let (naa, serial) = naa_and_serial(rec.identity);
        let mappings = mappings_of(st, &rec.name);
        let base = LunView {
            name: rec.name.clone(),
            state: match rec.status {
                LunStatus::Online => "online".into(),
                LunStatus::Creating => "creating".into(),
            },
            size_bytes: 0,
            block_size: 0,
            guarantee: "none".into(),
            mapped_bytes: 0,
            unique_bytes: 0,
            shared_bytes: 0,
            reserved_bytes: 0,
            naa,
            serial,
            read_only: rec.read_only,
            origin: rec.origin.clone(),
            clone_mode: rec.clone_mode.map(|m| m.as_str().to_string()),
            mappings,
            snapshots: 0,
            created_unix: rec.created_unix,
        };
        match self.pool.volume_info(&rec.name) {
            Ok(i) => LunView {
                size_bytes: i.size_bytes,
                block_size: i.block_size,
                guarantee: guarantee_str(i.guarantee).into(),
                mapped_bytes: i.mapped_bytes,
                unique_bytes: i.unique_bytes,
                shared_bytes: i.shared_bytes,
                reserved_bytes: i.reserved_bytes,
                snapshots: i.snapshots,
                ..base
            },
            Err(_) => LunView {
                state: "missing".into(),
                ..base
            },
        }
    }

    /// Every LUN (clones being created included, shown as `creating`).
    pub async fn lun_list(&self) -> Vec<LunView> {
        let st = self.lock().await;
        st.luns.values().map(|r| self.lun_view(&st, r)).collect()
    }

    /// One LUN. Space figures are reconciled first so unique/shared are exact.
    pub async fn lun_show(&self, name: &str) -> MgrResult<LunView> {
        let st = self.lock().await;
        let rec = lun_rec(&st, name)?;
        if let Err(e) = self.pool.reconcile_space().await {
            tracing::warn!("space reconcile failed: {e}");
        }
        Ok(self.lun_view(&st, rec))
    }

    /// Creates a LUN (and maps it if asked). Checks everything before touching the pool.
    pub async fn lun_create(&self, req: LunCreate) -> MgrResult<LunView> {
        let mut st = self.lock().await;
        check_name(&req.name)?;
        if st.luns.contains_key(&req.name) {
            return Err(MgrError::AlreadyExists(format!(
                "LUN {:?} already exists",
                req.name
            )));
        }
        let guarantee = parse_guarantee(req.guarantee.as_deref().unwrap_or("none"))?;
        let block_size = req.block_size.unwrap_or(512);
        if block_size != 512 && block_size != 4096 {
            return Err(MgrError::Invalid(format!(
                "invalid block size {block_size}: use 512 or 4096"
            )));
        }
        check_size(req.size_bytes, block_size)?;
        let map_to = match &req.target {
            Some(t) => Some((t.clone(), free_lun_id(&st, t, req.lun_id)?)),
            None if req.lun_id.is_some() => {
                return Err(MgrError::Invalid("--lun-id needs --target".into()))
            }
            None => None,
        };
        let info = self
            .pool
            .create_volume(&req.name, req.size_bytes, block_size, guarantee)
            .await?;
        st.luns.insert(
            req.name.clone(),
            LunRecord {
                name: req.name.clone(),
                identity: info.uuid,
                read_only: req.read_only,
                status: LunStatus::Online,
                origin: None,
                clone_mode: None,
                created_unix: now_unix(),
            },
        );
        if let Some((t, id)) = map_to {
            self.map_locked(&mut st, &req.name, &t, id)?;
        }
        if let Err(e) = self.save(&st) {
            // Undo so that what the pool holds matches what the state says.
            self.unmap_everywhere(&mut st, &req.name);
            st.luns.remove(&req.name);
            let _ = self.pool.delete_volume(&req.name).await;
            return Err(e);
        }
        tracing::info!(lun = %req.name, size = req.size_bytes, "LUN created");
        Ok(self.lun_view(&st, lun_rec(&st, &req.name)?))
    }

    /// Resizes a LUN. Shrinking needs `allow_shrink` (data past the new end is lost).
    /// Initiators see CAPACITY DATA HAS CHANGED on their next command.
    pub async fn lun_resize(
        &self,
        name: &str,
        size_bytes: u64,
        allow_shrink: bool,
    ) -> MgrResult<LunView> {
        let st = self.lock().await;
        let rec = lun_rec(&st, name)?;
        online(rec)?;
        let info = self.pool.volume_info(name)?;
        check_size(size_bytes, info.block_size)?;
        if size_bytes < info.size_bytes && !allow_shrink {
            return Err(MgrError::Invalid(format!(
                "shrinking {name:?} from {} to {} loses data: pass --shrink to confirm",
                human_bytes(info.size_bytes),
                human_bytes(size_bytes)
            )));
        }
        self.pool
            .resize_volume(name, size_bytes, allow_shrink)
            .await?;
        for m in mappings_of(&st, name) {
            if let Some(t) = self.scsi_target(&m.target) {
                t.lun_resized(m.lun_id);
            }
        }
        tracing::info!(lun = %name, size = size_bytes, "LUN resized");
        Ok(self.lun_view(&st, rec))
    }

    /// Changes guarantee, read-only flag or name.
    pub async fn lun_set(&self, req: LunSet) -> MgrResult<LunView> {
        let mut st = self.lock().await;
        online(lun_rec(&st, &req.name)?)?;
        if let Some(g) = &req.guarantee {
            let g = parse_guarantee(g)?;
            self.pool.set_guarantee(&req.name, g).await?;
        }
        let mut name = req.name.clone();
        if let Some(new) = &req.rename {
            check_name(new)?;
            if st.luns.contains_key(new) {
                return Err(MgrError::AlreadyExists(format!(
                    "LUN {new:?} already exists"
                )));
            }
            if self.job_touching(&st, &name).is_some() {
                return Err(MgrError::Busy(format!(
                    "LUN {name:?} is part of a running clone job"
                )));
            }
            self.pool.rename_volume(&name, new).await?;
            if let Some(mut rec) = st.luns.remove(&name) {
                rec.name = new.clone();
                st.luns.insert(new.clone(), rec);
            }
            for t in st.targets.values_mut() {
                for n in t.luns.values_mut() {
                    if *n == name {
                        *n = new.clone();
                    }
                }
            }
            for g in st.groups.values_mut() {
                for m in g.members.iter_mut() {
                    if *m == name {
                        *m = new.clone();
                    }
                }
            }
            name = new.clone();
        }
        if let Some(ro) = req.read_only {
            if let Some(rec) = st.luns.get_mut(&name) {
                rec.read_only = ro;
            }
        }
        if req.rename.is_some() || req.read_only.is_some() {
            // Re-attach so the device servers pick up the new volume handle / flag.
            for m in mappings_of(&st, &name) {
                if let Some(t) = self.scsi_target(&m.target) {
                    let _ = t.remove_lun(m.lun_id);
                    attach(&self.pool, &st, &t, m.lun_id, &name);
                }
            }
        }
        self.save(&st)?;
        Ok(self.lun_view(&st, lun_rec(&st, &name)?))
    }

    /// Deletes a LUN and its snapshots. Refused while an initiator is logged in to a target
    /// exporting it, unless `force` (the LUN then disappears under the initiator, which gets
    /// REPORTED LUNS DATA HAS CHANGED). Clones of the LUN survive.
    pub async fn lun_delete(&self, name: &str, force: bool) -> MgrResult<()> {
        let mut st = self.lock().await;
        let rec = lun_rec(&st, name)?;
        if rec.status == LunStatus::Creating {
            return Err(MgrError::Busy(format!(
                "LUN {name:?} is a clone still being created: use `clone cancel {name}`"
            )));
        }
        if let Some(job) = self.job_touching(&st, name) {
            return Err(MgrError::Busy(format!(
                "LUN {name:?} is used by running clone job {job}: cancel it first"
            )));
        }
        let busy = self.busy_targets(&st, name);
        if !busy.is_empty() && !force {
            return Err(MgrError::Busy(format!(
                "LUN {name:?} is in use (sessions logged in to {}): unmap it first or pass --force",
                busy.join(", ")
            )));
        }
        self.unmap_everywhere(&mut st, name);
        match self.pool.delete_volume(name).await {
            Ok(()) | Err(StorageError::NotFound(_)) => {}
            Err(e) => {
                // Put the mappings back: nothing changed.
                self.reload_mappings(&st);
                return Err(e.into());
            }
        }
        st.luns.remove(name);
        for g in st.groups.values_mut() {
            g.members.retain(|m| m != name);
        }
        st.groups.retain(|_, g| !g.members.is_empty());
        self.save(&st)?;
        tracing::info!(lun = %name, force, "LUN deleted");
        Ok(())
    }

    /// Maps a LUN into a target (lowest free LUN number unless given).
    pub async fn lun_map(
        &self,
        name: &str,
        target: &str,
        lun_id: Option<u64>,
    ) -> MgrResult<MappingView> {
        let mut st = self.lock().await;
        online(lun_rec(&st, name)?)?;
        let id = free_lun_id(&st, target, lun_id)?;
        self.map_locked(&mut st, name, target, id)?;
        if let Err(e) = self.save(&st) {
            self.unmap_locked(&mut st, target, id);
            return Err(e);
        }
        Ok(MappingView {
            target: target.into(),
            lun_id: id,
        })
    }

    /// Removes a LUN from a target (all its mappings there, or only `lun_id`).
    pub async fn lun_unmap(&self, name: &str, target: &str, force: bool) -> MgrResult<()> {
        let mut st = self.lock().await;
        lun_rec(&st, name)?;
        let t = st
            .targets
            .get(target)
            .ok_or_else(|| MgrError::NotFound(format!("target {target:?} not found")))?;
        let ids: Vec<u64> = t
            .luns
            .iter()
            .filter(|(_, n)| *n == name)
            .map(|(&i, _)| i)
            .collect();
        if ids.is_empty() {
            return Err(MgrError::NotFound(format!(
                "LUN {name:?} is not mapped in target {target:?}"
            )));
        }
        if !force && self.session_count(target) > 0 {
            return Err(MgrError::Busy(format!(
                "target {target:?} has logged-in sessions: pass --force to unmap {name:?} under them"
            )));
        }
        for id in ids {
            self.unmap_locked(&mut st, target, id);
        }
        self.save(&st)?;
        Ok(())
    }

    pub(crate) fn map_locked(
        &self,
        st: &mut State,
        name: &str,
        target: &str,
        id: u64,
    ) -> MgrResult<()> {
        let t = self
            .scsi_target(target)
            .ok_or_else(|| MgrError::NotFound(format!("target {target:?} not found")))?;
        let vol = self.pool.volume(name)?;
        let ro = st.luns.get(name).is_some_and(|r| r.read_only);
        let identity = st.luns.get(name).map_or_else(|| vol.uuid(), |r| r.identity);
        t.add_lun_with_identity(id, vol, ro, identity)
            .map_err(|e| MgrError::Invalid(e.to_string()))?;
        if let Some(rec) = st.targets.get_mut(target) {
            rec.luns.insert(id, name.to_string());
        }
        tracing::info!(lun = %name, target, lun_id = id, "LUN mapped");
        Ok(())
    }

    fn unmap_locked(&self, st: &mut State, target: &str, id: u64) {
        if let Some(t) = self.scsi_target(target) {
            let _ = t.remove_lun(id);
        }
        if let Some(rec) = st.targets.get_mut(target) {
            rec.luns.remove(&id);
        }
    }

    pub(crate) fn unmap_everywhere(&self, st: &mut State, name: &str) {
        for m in mappings_of(st, name) {
            self.unmap_locked(st, &m.target, m.lun_id);
        }
    }

    /// Re-attaches every mapping in `st` that the device servers lack (undo path).
    pub(crate) fn reload_mappings(&self, st: &State) {
        for t in st.targets.values() {
            if let Some(s) = self.scsi_target(&t.iqn) {
                let have = s.luns();
                for (&id, name) in &t.luns {
                    if !have.contains(&id) {
                        attach(&self.pool, st, &s, id, name);
                    }
                }
            }
        }
    }

    // ----- snapshots --------------------------------------------------------------------

    /// Snapshot `lun@snap`.
    pub async fn snapshot_create(&self, lun: &str, snap: &str) -> MgrResult<SnapshotView> {
        let st = self.lock().await;
        online(lun_rec(&st, lun)?)?;
        check_name(snap)?;
        let s = self.pool.snapshot(lun, snap).await?;
        Ok(SnapshotView {
            lun: s.volume,
            name: s.name,
            size_bytes: s.size_bytes,
            mapped_bytes: s.mapped_bytes,
            unique_bytes: s.unique_bytes,
            group: None,
            created_unix: s.created_unix,
        })
    }

    /// Consistency group: one snapshot named `group` on every LUN, all at one instant.
    pub async fn snapshot_group(
        &self,
        group: &str,
        luns: &[String],
    ) -> MgrResult<Vec<SnapshotView>> {
        let mut st = self.lock().await;
        check_name(group)?;
        if luns.is_empty() {
            return Err(MgrError::Invalid(
                "a consistency group needs at least one LUN".into(),
            ));
        }
        if st.groups.contains_key(group) {
            return Err(MgrError::AlreadyExists(format!(
                "group {group:?} already exists"
            )));
        }
        let mut seen = std::collections::BTreeSet::new();
        for l in luns {
            online(lun_rec(&st, l)?)?;
            if !seen.insert(l) {
                return Err(MgrError::Invalid(format!("LUN {l:?} listed twice")));
            }
        }
        let pairs: Vec<(&str, &str)> = luns.iter().map(|l| (l.as_str(), group)).collect();
        let snaps = self.pool.snapshot_group(&pairs).await?;
        st.groups.insert(
            group.to_string(),
            state::GroupRecord {
                name: group.to_string(),
                members: luns.to_vec(),
                created_unix: now_unix(),
            },
        );
        self.save(&st)?;
        Ok(snaps
            .into_iter()
            .map(|s| SnapshotView {
                lun: s.volume,
                name: s.name,
                size_bytes: s.size_bytes,
                mapped_bytes: s.mapped_bytes,
                unique_bytes: s.unique_bytes,
                group: Some(group.to_string()),
                created_unix: s.created_unix,
            })
            .collect())
    }

    /// Snapshots of one LUN or of all.
    pub async fn snapshot_list(&self, lun: Option<&str>) -> MgrResult<Vec<SnapshotView>> {
        let st = self.lock().await;
        if let Some(l) = lun {
            lun_rec(&st, l)?;
        }
        Ok(self
            .pool
            .snapshots(lun)
            .into_iter()
            .filter(|s| st.luns.contains_key(&s.volume))
            .map(|s| {
                let group = st
                    .groups
                    .get(&s.name)
                    .filter(|g| g.members.contains(&s.volume))
                    .map(|g| g.name.clone());
                SnapshotView {
                    lun: s.volume,
                    name: s.name,
                    size_bytes: s.size_bytes,
                    mapped_bytes: s.mapped_bytes,
                    unique_bytes: s.unique_bytes,
                    group,
                    created_unix: s.created_unix,
                }
            })
            .collect())
    }

    /// Deletes `lun@snap` (clones made from it survive).
    pub async fn snapshot_delete(&self, lun: &str, snap: &str) -> MgrResult<()> {
        let mut st = self.lock().await;
        lun_rec(&st, lun)?;
        if st
            .clone_jobs
            .iter()
            .any(|j| !j.state.is_final() && j.source == format!("{lun}@{snap}"))
        {
            return Err(MgrError::Busy(format!(
                "snapshot {lun}@{snap} is the source of a running clone job"
            )));
        }
        self.pool.delete_snapshot(lun, snap).await?;
        if let Some(g) = st.groups.get_mut(snap) {
            g.members.retain(|m| m != lun);
        }
        st.groups.retain(|_, g| !g.members.is_empty());
        self.save(&st)?;
        Ok(())
    }

    /// Deletes every snapshot of a consistency group.
    pub async fn snapshot_group_delete(&self, group: &str) -> MgrResult<()> {
        let members = {
            let st = self.lock().await;
            st.groups
                .get(group)
                .ok_or_else(|| MgrError::NotFound(format!("group {group:?} not found")))?
                .members
                .clone()
        };
        for m in members {
            match self.snapshot_delete(&m, group).await {
                Ok(()) | Err(MgrError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        let mut st = self.lock().await;
        st.groups.remove(group);
        self.save(&st)
    }

    /// Rolls `lun` back to `snap`. Refused while initiators are logged in to a target
    /// exporting it unless `force` (their cached data would be silently wrong).
    pub async fn snapshot_rollback(&self, lun: &str, snap: &str, force: bool) -> MgrResult<()> {
        let st = self.lock().await;
        online(lun_rec(&st, lun)?)?;
        let busy = self.busy_targets(&st, lun);
        if !busy.is_empty() && !force {
            return Err(MgrError::Busy(format!(
                "LUN {lun:?} is in use (sessions logged in to {}): log them out or pass --force",
                busy.join(", ")
            )));
        }
        self.pool.rollback(lun, snap).await?;
        tracing::info!(lun, snap, "rolled back");
        Ok(())
    }

    // ----- targets, ACLs, CHAP, sessions ----------------------------------------------------

    fn target_view(&self, t: &TargetRecord) -> TargetView {
        TargetView {
            iqn: t.iqn.clone(),
            fabric: t.fabric,
            alias: t.alias.clone(),
            allow_any: t.allow_any,
            initiators: t.initiators.clone(),
            chap_username: t.chap.as_ref().map(|c| c.username.clone()),
            mutual_chap: t.chap.as_ref().is_some_and(|c| c.mutual_username.is_some()),
            luns: t
                .luns
                .iter()
                .map(|(&lun_id, name)| MappingLun {
                    lun_id,
                    name: name.clone(),
                })
                .collect(),
            sessions: self.session_count(&t.iqn),
            pending_restart: self.pending.lock().contains(&t.iqn),
        }
    }

    /// Creates a target (no LUNs, no initiators unless `allow_any`).
    pub async fn target_create(
        &self,
        name: &str,
        fabric: Fabric,
        alias: Option<String>,
        allow_any: bool,
    ) -> MgrResult<TargetView> {
        let mut st = self.lock().await;
        let iqn = &fabric.canonical_name(name).map_err(|e| {
            MgrError::Invalid(format!("invalid target name for fabric {fabric}: {e}"))
        })?;
        if st.targets.keys().any(|k| k.eq_ignore_ascii_case(iqn)) {
            return Err(MgrError::AlreadyExists(format!(
                "target {iqn:?} already exists"
            )));
        }
        let rec = TargetRecord {
            iqn: iqn.to_string(),
            fabric,
            alias,
            allow_any,
            initiators: Vec::new(),
            chap: None,
            luns: BTreeMap::new(),
        };
        let scsi = ScsiTarget::with_pr_store(
            iqn,
            self.pool.status().chunk_size,
            crate::scsi::pr::FileStore::for_data_dir(&self.data_dir),
        );
        st.targets.insert(iqn.to_string(), rec.clone());
        self.save(&st)?;
        self.scsi.write().insert(iqn.to_string(), scsi.clone());
        if let Some(e) = self.exports.get() {
            if let Err(msg) = e.add_target(rec.to_cfg(), scsi) {
                tracing::warn!(target = iqn, "{msg}");
                self.pending.lock().insert(iqn.to_string());
            }
        }
        Ok(self.target_view(&rec))
    }

    /// All targets.
    pub async fn target_list(&self) -> Vec<TargetView> {
        let st = self.lock().await;
        st.targets.values().map(|t| self.target_view(t)).collect()
    }

    /// Deletes a target (its LUNs stay, unmapped). Refused with sessions unless `force`
    /// (which closes them).
    pub async fn target_delete(&self, iqn: &str, force: bool) -> MgrResult<()> {
        let mut st = self.lock().await;
        target_rec(&st, iqn)?;
        let n = self.session_count(iqn);
        if n > 0 && !force {
            return Err(MgrError::Busy(format!(
                "target {iqn:?} has {n} logged-in session(s): pass --force to close them"
            )));
        }
        st.targets.remove(iqn);
        self.save(&st)?;
        if let Some(e) = self.exports.get() {
            if let Err(msg) = e.remove_target(iqn) {
                tracing::warn!(target = iqn, "{msg}");
                self.pending.lock().insert(iqn.to_string());
            }
        }
        if let Some(t) = self.scsi.write().remove(iqn) {
            for id in t.luns() {
                let _ = t.remove_lun(id);
            }
        }
        Ok(())
    }

    /// Applies a change to a target's access settings and pushes it to the iSCSI server.
    async fn change_access(
        &self,
        iqn: &str,
        f: impl FnOnce(&mut TargetRecord) -> MgrResult<()>,
    ) -> MgrResult<TargetView> {
        let mut st = self.lock().await;
        let mut rec = target_rec(&st, iqn)?.clone();
        f(&mut rec)?;
        st.targets.insert(iqn.to_string(), rec.clone());
        self.save(&st)?;
        if let Some(e) = self.exports.get() {
            if let Err(msg) = e.set_access(rec.to_cfg()) {
                tracing::warn!(target = iqn, "{msg}");
                self.pending.lock().insert(iqn.to_string());
            }
        }
        Ok(self.target_view(&rec))
    }

    /// Allows an initiator (or `*` for any).
    pub async fn acl_add(&self, iqn: &str, initiator: &str) -> MgrResult<TargetView> {
        let initiator = initiator.to_string();
        self.change_access(iqn, move |t| {
            if initiator == "*" {
                t.allow_any = true;
                return Ok(());
            }
            let initiator = t.fabric.canonical_name(&initiator).map_err(|e| {
                MgrError::Invalid(format!(
                    "invalid initiator name for fabric {}: {e}",
                    t.fabric
                ))
            })?;
            if t.initiators
                .iter()
                .any(|i| i.eq_ignore_ascii_case(&initiator))
            {
                return Err(MgrError::AlreadyExists(format!(
                    "initiator {initiator:?} is already allowed on {:?}",
                    t.iqn
                )));
            }
            t.initiators.push(initiator);
            Ok(())
        })
        .await
    }

    /// Removes an initiator (or `*`: no longer allow any).
    pub async fn acl_remove(&self, iqn: &str, initiator: &str) -> MgrResult<TargetView> {
        let initiator = initiator.to_string();
        self.change_access(iqn, move |t| {
            if initiator == "*" {
                t.allow_any = false;
                return Ok(());
            }
            let before = t.initiators.len();
            let fabric = t.fabric;
            t.initiators.retain(|i| !fabric.same_name(i, &initiator));
            if t.initiators.len() == before {
                return Err(MgrError::NotFound(format!(
                    "initiator {initiator:?} is not in the ACL of {:?}",
                    t.iqn
                )));
            }
            Ok(())
        })
        .await
    }

    /// Requires CHAP (with optional mutual CHAP) for a target.
    pub async fn chap_set(&self, iqn: &str, chap: ChapRecord) -> MgrResult<TargetView> {
        for (what, s) in [
            ("secret", Some(&chap.secret)),
            ("mutual secret", chap.mutual_secret.as_ref()),
        ] {
            if let Some(s) = s {
                if s.len() < 12 || s.len() > 255 {
                    return Err(MgrError::Invalid(format!(
                        "CHAP {what} must be 12 to 255 bytes long, got {}",
                        s.len()
                    )));
                }
            }
        }
        if chap.username.is_empty() {
            return Err(MgrError::Invalid("CHAP user name must not be empty".into()));
        }
        if chap.mutual_username.is_some() != chap.mutual_secret.is_some() {
            return Err(MgrError::Invalid(
                "mutual CHAP needs both a user name and a secret".into(),
            ));
        }
        self.change_access(iqn, move |t| {
            if t.fabric.is_lio() {
                return Err(MgrError::Invalid(format!(
                    "CHAP is an iSCSI login feature; {:?} is a {} target",
                    t.iqn, t.fabric
                )));
            }
            t.chap = Some(chap);
            Ok(())
        })
        .await
    }

    /// Stops requiring CHAP.
    pub async fn chap_clear(&self, iqn: &str) -> MgrResult<TargetView> {
        self.change_access(iqn, |t| {
            t.chap = None;
            Ok(())
        })
        .await
    }

    /// Live sessions (of one target or all).
    pub async fn session_list(&self, target: Option<&str>) -> MgrResult<Vec<SessionView>> {
        let st = self.lock().await;
        if let Some(t) = target {
            target_rec(&st, t)?;
        }
        let Some(e) = self.exports.get() else {
            return Ok(Vec::new());
        };
        Ok(st
            .targets
            .keys()
            .filter(|k| target.is_none_or(|t| t == k.as_str()))
            .flat_map(|k| e.sessions(k))
            .collect())
    }

    /// Closes the sessions of a target; returns how many.
    pub async fn session_close(&self, target: &str) -> MgrResult<usize> {
        let st = self.lock().await;
        target_rec(&st, target)?;
        Ok(self.exports.get().map_or(0, |e| e.close_sessions(target)))
    }

    // ----- config export ----------------------------------------------------------------

    /// The configuration lunard runs with, its targets and mapped LUNs replaced by the live
    /// ones, as YAML (through the configuration's own serde schema), so a configuration file
    /// can be regenerated from the live state.
    pub async fn export_yaml(&self) -> MgrResult<String> {
        let st = self.lock().await;
        let mut cfg = self.config.clone();
        cfg.targets = st
            .targets
            .values()
            .map(|t| {
                let mut tc = t.to_cfg();
                // The configuration refuses a list next to allow_any (it would be moot).
                if tc.allow_any {
                    tc.initiators.clear();
                }
                tc.luns = t
                    .luns
                    .iter()
                    .filter_map(|(&id, name)| {
                        let info = self.pool.volume_info(name).ok()?;
                        Some(LunCfg {
                            id,
                            volume: name.clone(),
                            size: ByteSize(info.size_bytes),
                            block_size: info.block_size,
                            guarantee: info.guarantee.into(),
                            read_only: st.luns.get(name).is_some_and(|r| r.read_only),
                        })
                    })
                    .collect();
                tc
            })
            .collect();
        cfg.export_yaml()
            .map_err(|e| MgrError::Internal(format!("config export: {e}")))
    }

    /// Stops running clone jobs (their clones are cleaned up at the next start, as after a
    /// crash) — called at shutdown.
    pub fn stop_jobs(&self) {
        for j in self.jobs.lock().values() {
            j.cancel.send_replace(true);
        }
    }
}

pub(crate) fn lun_rec<'a>(st: &'a State, name: &str) -> MgrResult<&'a LunRecord> {
    st.luns
        .get(name)
        .ok_or_else(|| MgrError::NotFound(format!("LUN {name:?} not found")))
}

fn target_rec<'a>(st: &'a State, iqn: &str) -> MgrResult<&'a TargetRecord> {
    st.targets
        .get(iqn)
        .ok_or_else(|| MgrError::NotFound(format!("target {iqn:?} not found")))
}

pub(crate) fn online(rec: &LunRecord) -> MgrResult<()> {
    if rec.status == LunStatus::Creating {
        return Err(MgrError::Busy(format!(
            "LUN {:?} is a clone still being created",
            rec.name
        )));
    }
    Ok(())
}

/// LUN names double as volume names: letters, digits, `-`, `_`, `.` (not leading).
pub(crate) fn check_name(n: &str) -> MgrResult<()> {
    if n.is_empty() || n.len() > 128 {
        return Err(MgrError::Invalid(format!(
            "invalid name {n:?}: must be 1 to 128 characters"
        )));
    }
    if !n
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        || n.starts_with('.')
    {
        return Err(MgrError::Invalid(format!(
            "invalid name {n:?}: use letters, digits, '-', '_' and '.' (not leading)"
        )));
    }
    Ok(())
}

fn check_size(size: u64, block_size: u32) -> MgrResult<()> {
    if size == 0 {
        return Err(MgrError::Invalid("size must be greater than 0".into()));
    }
    if !size.is_multiple_of(u64::from(block_size)) {
        return Err(MgrError::Invalid(format!(
            "size {size} is not a multiple of the {block_size}-byte block size"
        )));
    }
    Ok(())
}

/// The requested LUN number if free, else the lowest free one.
pub(crate) fn free_lun_id(st: &State, target: &str, want: Option<u64>) -> MgrResult<u64> {
    let t = st
        .targets
        .get(target)
        .ok_or_else(|| MgrError::NotFound(format!("target {target:?} not found")))?;
    match want {
        Some(id) if id > 16383 => Err(MgrError::Invalid(format!(
            "LUN number {id} is out of range (0..=16383)"
        ))),
        Some(id) if t.luns.contains_key(&id) => Err(MgrError::AlreadyExists(format!(
            "LUN number {id} of target {target:?} is already used by {:?}",
            t.luns[&id]
        ))),
        Some(id) => Ok(id),
        None => (0..=16383u64)
            .find(|i| !t.luns.contains_key(i))
            .ok_or_else(|| MgrError::NoSpace(format!("target {target:?} has no free LUN number"))),
    }
}

pub(crate) fn mappings_of(st: &State, name: &str) -> Vec<MappingView> {
    st.targets
        .values()
        .flat_map(|t| {
            t.luns
                .iter()
                .filter(|(_, n)| *n == name)
                .map(|(&lun_id, _)| MappingView {
                    target: t.iqn.clone(),
                    lun_id,
                })
        })
        .collect()
}

/// Attaches `name` as `id` on `target` if the LUN is online and its volume exists.
pub(crate) fn attach(pool: &Pool, st: &State, target: &ScsiTarget, id: u64, name: &str) {
    let Some(rec) = st.luns.get(name) else {
        tracing::warn!(
            target = target.name(),
            lun_id = id,
            lun = name,
            "mapping names an unknown LUN; not exported"
        );
        return;
    };
    if rec.status != LunStatus::Online {
        return;
    }
    match pool.volume(name) {
        Ok(v) => {
            if let Err(e) = target.add_lun_with_identity(id, v, rec.read_only, rec.identity) {
                tracing::error!(
                    target = target.name(),
                    lun_id = id,
                    lun = name,
                    "cannot attach: {e:#}"
                );
            }
        }
        Err(e) => tracing::error!(
            target = target.name(),
            lun_id = id,
            lun = name,
            "volume unavailable: {e}"
        ),
    }
}

/// Adds the targets and LUNs the configuration names and the state lacks.
async fn seed_from_config(st: &mut State, config: &Config, pool: &Pool) -> anyhow::Result<()> {
    use anyhow::Context;
    divergence::warn_divergences(st, config);
    for (ti, t) in config.targets.iter().enumerate() {
        // Validated by Config::validate; WWPNs are stored in the fabric's spelling.
        let fabric = t.fabric;
        let name = fabric
            .canonical_name(&t.iqn)
            .map_err(|e| anyhow::anyhow!("targets[{ti}].iqn: {e}"))?;
        let new_target = !st.targets.contains_key(&name);
        if new_target {
            let initiators = t
                .initiators
                .iter()
                .map(|i| fabric.canonical_name(i))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| anyhow::anyhow!("targets[{ti}].initiators: {e}"))?;
            st.targets.insert(
                name.clone(),
                TargetRecord {
                    iqn: name.clone(),
                    fabric,
                    alias: t.alias.clone(),
                    allow_any: t.allow_any,
                    initiators,
                    chap: t.chap.as_ref().map(ChapRecord::from_cfg),
                    luns: BTreeMap::new(),
                },
            );
            tracing::info!(target = %name, %fabric, "target added from the configuration");
        }
        for (li, l) in t.luns.iter().enumerate() {
            if st.luns.contains_key(&l.volume) && !new_target {
                continue; // the state decides where a known LUN is mapped
            }
            let field = format!("targets[{ti}].luns[{li}]");
            let info = match pool.volume_info(&l.volume) {
                Ok(i) => i,
                Err(StorageError::NotFound(_)) => {
                    let i = pool
                        .create_volume(&l.volume, l.size.0, l.block_size, l.guarantee.into())
                        .await
                        .with_context(|| format!("{field}: cannot create volume {:?}", l.volume))?;
                    tracing::info!(volume = %l.volume, size = %l.size, "created volume");
                    i
                }
                Err(e) => return Err(anyhow::anyhow!("{field}: volume {:?}: {e}", l.volume)),
            };
            st.luns
                .entry(l.volume.clone())
                .or_insert_with(|| LunRecord {
                    name: l.volume.clone(),
                    identity: info.uuid,
                    read_only: l.read_only,
                    status: LunStatus::Online,
                    origin: info.origin.clone(),
                    clone_mode: None,
                    created_unix: info.created_unix,
                });
            if let Some(rec) = st.targets.get_mut(&name) {
                match rec.luns.get(&l.id) {
                    None => {
                        rec.luns.insert(l.id, l.volume.clone());
                    }
                    Some(other) if *other != l.volume => tracing::warn!(
                        "{field}: LUN {} of {} is {other:?} in the saved state; keeping it",
                        l.id,
                        t.iqn
                    ),
                    Some(_) => {}
                }
            }
        }
    }
    Ok(())
}

/// Pool volumes without a LUN record (e.g. created just before a crash) become unmapped
/// LUNs, so nothing in the pool is invisible to the administrator.
fn adopt_orphans(st: &mut State, pool: &Pool) {
    for v in pool.volumes() {
        if !st.luns.contains_key(&v.name) {
            tracing::warn!(volume = %v.name, "volume without a LUN record: adopted as an unmapped LUN");
            st.luns.insert(
                v.name.clone(),
                LunRecord {
                    name: v.name.clone(),
                    identity: v.uuid,
                    read_only: false,
                    status: LunStatus::Online,
                    origin: v.origin.clone(),
                    clone_mode: v.origin.as_ref().map(|_| state::CloneMode::Linked),
                    created_unix: v.created_unix,
                },
            );
        }
    }
}
