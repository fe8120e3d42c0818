//! The LUN manager on a gateway of an HA group: running with or without the pool, and
//! switching at run time.
//!
//! Every gateway exports every LUN, but only the owner of the pool (the holder of the lease,
//! see `ha/`) has it open. A standby builds its LUNs from the records alone: identity, name,
//! read-only flag and the [`LunGeometry`] the owner keeps in each record (refreshed from the
//! pool at every save), so hosts see the same device on every path while media access is
//! refused with the standby sense (`scsi/alua.rs`). Three entry points move a gateway
//! between the two:
//!
//! - [`LunManager::attach_pool`] (standby → owner): opens every LUN's volume and hands it to
//!   the LUN that already exists, which keeps its identity, reservations, mode parameters
//!   and pending unit attentions;
//! - [`LunManager::detach_pool`] (owner → standby): stops clone jobs, waits for the media
//!   commands in flight on every LUN, drops the volumes and flushes the pool, which it
//!   returns for the caller to close (before it releases the RBD lock);
//! - [`LunManager::reload_state`] (any gateway): applies a state another gateway wrote —
//!   targets, LUNs and ACLs appear, change and disappear in the device servers and front
//!   ends, as the admin operations would have done here.
//!
//! Operations that need the pool fail on a standby with [`MgrError::NotOwner`], naming the
//! owner from the ALUA view.

use std::collections::BTreeMap;
use std::sync::Arc;

use storage_core::{Guarantee, Pool};

use super::state::{LunGeometry, LunStatus, State, TargetRecord, STATE_VERSION};
use super::{attach, clones, seed, state, LunManager, MgrError, MgrResult};
use crate::config::Config;
use crate::fabric::TargetSpec;
use crate::scsi::alua::AluaView;
use crate::scsi::{pr::PrStore, LunShape, ScsiTarget};

/// How a gateway's LUN manager starts ([`LunManager::open_gateway`]).
pub struct GatewayOpen {
    /// The pool, on the owner; `None` on a standby.
    pub pool: Option<Pool>,
    /// The state to start from (the shared one); `None`: loaded from the data directory as
    /// [`LunManager::open`] does.
    pub state: Option<State>,
    /// The group's ALUA view, shared with the HA coordinator; every target gets it (the
    /// first pool's, with several pools).
    pub alua: Arc<AluaView>,
    /// With several pools, each pool's view (siblings of `alua`, see
    /// [`AluaView::sibling`]): every LUN gets its pool's. Empty: `alua` for every LUN.
    pub pool_alua: Vec<(String, Arc<AluaView>)>,
    /// Where the targets keep persistent reservations; `None`: the data directory's
    /// `FileStore`, as without HA.
    pub pr_store: Option<Arc<dyn PrStore>>,
    /// Whether the pool has a volatile write cache (`Pool::volatile_write_cache`): false for
    /// a pool on an RBD image, so every gateway, with the pool or without, reports WCE=0.
    pub volatile_write_cache: bool,
}

/// Records the geometry of every online LUN of pool `name` as the pool has it now (what a
/// standby presents).
pub(crate) fn fill_geometry(name: &str, pool: &Pool, st: &mut State) {
    let chunk_size = pool.status().chunk_size;
    for rec in st.luns.values_mut() {
        if rec.status != LunStatus::Online || (rec.pool != name && !rec.pool.is_empty()) {
            continue;
        }
        match pool.volume_info(&rec.name) {
            Ok(i) if i.block_size > 0 => {
                rec.geometry = Some(LunGeometry {
                    size_blocks: i.size_bytes / u64::from(i.block_size),
                    block_size: i.block_size,
                    thin: i.guarantee == Guarantee::None,
                    chunk_size,
                });
            }
            Ok(_) | Err(_) => {}
        }
    }
}

/// Whether two states persist as the same document (nothing to save).
fn same_persisted(a: &State, b: &State) -> bool {
    match (serde_json::to_vec(a), serde_json::to_vec(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// The chunk size a pool-less target reports (UNMAP granularity): the pool's as recorded.
fn recorded_chunk_size(st: &State) -> u32 {
    st.luns
        .values()
        .filter_map(|r| r.geometry.map(|g| g.chunk_size))
        .find(|&c| c > 0)
        .unwrap_or(storage_core::DEFAULT_CHUNK_SIZE)
}

/// What the fabric front ends apply of a target record (everything but its LUN map).
fn access_of(t: &TargetRecord) -> TargetSpec {
    t.to_spec()
}

impl LunManager {
    /// Opens the LUN manager of a gateway: like [`LunManager::open`], with every target
    /// using the group's ALUA view. With a pool (the owner) the state is seeded and
    /// recovered as at any start; without one (a standby) the LUNs are built from the
    /// records and nothing is written.
    pub async fn open_gateway(
        config: &Config,
        open: GatewayOpen,
    ) -> anyhow::Result<(Arc<LunManager>, Vec<(TargetSpec, Arc<ScsiTarget>)>)> {
        let GatewayOpen {
            pool,
            state: given,
            alua,
            pool_alua,
            pr_store,
            volatile_write_cache,
        } = open;
        let data_dir = config.data_dir.clone();
        let mut st = match given {
            Some(s) => s,
            None => state::load(&data_dir)?.unwrap_or_default(),
        };
        st.version = STATE_VERSION;
        // The pool given (an owner, in tests) is the configuration's first; on a gateway
        // every pool starts pool-less and is attached when its lease is won.
        let name = config.default_pool_name();
        seed::name_pools(&mut st, &name);
        if let Some(pool) = &pool {
            let pools = [(name.clone(), pool.clone())];
            seed::seed_from_config(&mut st, config, &pools).await?;
            clones::recover_interrupted(&mut st, &name, pool).await;
            seed::adopt_orphans(&mut st, &name, pool);
            fill_geometry(&name, pool, &mut st);
            state::save(&data_dir, &st)?;
        }
        let slots = config
            .pool_cfgs()
            .iter()
            .enumerate()
            .map(|(i, p)| super::pool::PoolSlot {
                name: p.name.clone().unwrap_or_else(|| name.clone()),
                pool: if i == 0 { pool.clone() } else { None },
            })
            .collect();
        let mut mgr = LunManager::new_empty(config, slots, st, Some(alua), pr_store);
        mgr.volatile_write_cache = volatile_write_cache;
        mgr.pool_alua = pool_alua.into_iter().collect();
        let mgr = Arc::new(mgr);
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
        if let Some(pool) = &pool {
            mgr.spawn_space_watch(&name, pool);
        }
        Ok((mgr, entries))
    }

    /// The chunk size new targets report: the first pool's, else the one the records carry.
    pub(crate) fn chunk_size(&self, st: &State) -> u32 {
        match self.pool() {
            Ok(p) => p.status().chunk_size,
            Err(_) => recorded_chunk_size(st),
        }
    }

    /// A device server for target `iqn`, with the manager's reservation store and, on a
    /// gateway, the ALUA view.
    pub(crate) fn new_scsi_target(&self, iqn: &str, chunk_size: u32) -> Arc<ScsiTarget> {
        let store = self
            .pr_store
            .clone()
            .unwrap_or_else(|| crate::scsi::pr::FileStore::for_data_dir(&self.data_dir));
        let t = ScsiTarget::with_pr_store(iqn, chunk_size, store);
        t.set_volatile_write_cache(self.volatile_write_cache);
        if let Some(v) = &self.alua {
            t.set_alua(v.clone());
        }
        t
    }

    /// Attaches `name` as `id` on `target`: with its volume when its pool is open here,
    /// else from its record (see [`attach_pool_less`]).
    pub(crate) fn attach_any(&self, st: &State, target: &ScsiTarget, id: u64, name: &str) {
        let pool = st
            .luns
            .get(name)
            .and_then(|r| self.pool_named(&self.pool_name_of(r)).ok());
        match pool {
            Some(p) => attach(&p, st, target, id, name),
            None => attach_pool_less(st, target, id, name),
        }
        self.tag_alua(st, target, id, name);
    }

    /// Gives LUN `id` (named `name`) of `target` its pool's ALUA view, on a gateway with a
    /// view per pool.
    pub(crate) fn tag_alua(&self, st: &State, target: &ScsiTarget, id: u64, name: &str) {
        if self.pool_alua.is_empty() {
            return;
        }
        let Some(rec) = st.luns.get(name) else {
            return;
        };
        if let Some(v) = self.pool_alua.get(&self.pool_name_of(rec)) {
            target.set_lun_alua(id, v.clone());
        }
    }

    /// Whether pool `name` is open here.
    pub fn has_pool_named(&self, name: &str) -> bool {
        self.pools
            .read()
            .iter()
            .any(|s| s.name == name && s.pool.is_some())
    }

    /// The LUN numbers of `target` (mapped as `map`) whose LUN lives in pool `name`.
    fn luns_of_pool(&self, st: &State, map: &BTreeMap<u64, String>, name: &str) -> Vec<u64> {
        map.iter()
            .filter(|(_, lun)| {
                st.luns
                    .get(lun.as_str())
                    .is_some_and(|r| self.pool_name_of(r) == name)
            })
            .map(|(&id, _)| id)
            .collect()
    }

    /// Standby → owner: the pool is open here now (the caller holds the lease and the RBD
    /// lock). As at any start, the previous owner's interrupted clone jobs are cleaned up,
    /// volumes without a record adopted and what the YAML names but the state lacks
    /// created (on a new group this is where the configured targets and LUNs come into
    /// being). Every exported LUN then gets its volume (keeping identity, reservations and
    /// unit attentions; a LUN whose volume is missing is withdrawn), targets and mappings
    /// the seeding added are built and handed to the front ends, and the state (with the
    /// LUNs' geometry) is saved. Set the ALUA state active/optimized after this.
    pub async fn attach_pool(self: &Arc<Self>, name: &str, pool: Pool) -> MgrResult<()> {
        let mut st = self.lock().await;
        self.known_pool(name)?;
        if self.has_pool_named(name) {
            return Err(MgrError::InvalidValue {
                what: "pool",
                value: name.to_string(),
                reason: "this pool is already attached to this gateway".into(),
            });
        }
        let before = st.clone();
        let name = name.to_string();
        seed::name_pools(&mut st, &self.default_pool());
        clones::recover_interrupted(&mut st, &name, &pool).await;
        seed::adopt_orphans(&mut st, &name, &pool);
        let pools = [(name.clone(), pool.clone())];
        if let Err(e) = seed::seed_from_config(&mut st, &self.config, &pools).await {
            // The pool is still served: the takeover must not fail on a YAML LUN that
            // cannot be created (e.g. no space); the administrator sees why.
            tracing::error!("pool attached, but the configuration could not be applied: {e:#}");
        }
        if let Some(slot) = self.pools.write().iter_mut().find(|s| s.name == name) {
            slot.pool = Some(pool.clone());
        }
        let targets: Vec<(String, Arc<ScsiTarget>)> = self
            .scsi
            .read()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (iqn, t) in targets {
            let map = st
                .targets
                .get(&iqn)
                .map(|r| r.luns.clone())
                .unwrap_or_default();
            let ours = self.luns_of_pool(&st, &map, &name);
            for id in t.luns() {
                // The LUNs of the gateway's other pools stay as they are.
                if map.contains_key(&id) && !ours.contains(&id) {
                    continue;
                }
                let gave = match map.get(&id) {
                    None => false,
                    Some(name) => match give_volume(&pool, &st, &t, id, name).await {
                        Ok(gave) => gave,
                        Err(e) => {
                            tracing::error!(target = %iqn, lun_id = id, lun = %name, "cannot attach the volume: {e}; LUN withdrawn");
                            false
                        }
                    },
                };
                if !gave {
                    let _ = t.remove_lun(id);
                }
            }
        }
        // What the seeding and recovery changed, and the LUNs withdrawn above (attached
        // again with their volume if they can be).
        self.sync_targets(&before, &st);
        // A takeover of a running group changes nothing in the state: not saving then
        // keeps the shared store's write (and its notify round) off the takeover's path.
        fill_geometry(&name, &pool, &mut st);
        let mut conflicts = 0;
        while !same_persisted(&before, &st) {
            match self.save(&st) {
                Ok(()) => break,
                // Another gateway saved the shared state since this one last loaded it (it
                // took another pool of the group over at the same time): seed again over
                // its state, or what this takeover added (the LUNs of this pool the
                // configuration names) would be lost with the next reload.
                Err(MgrError::State(state::StateError::Conflict { .. })) if conflicts < 8 => {
                    conflicts += 1;
                    let fresh = match self.state_store().load() {
                        Ok(Some(f)) => f,
                        Ok(None) => State::default(),
                        Err(e) => {
                            tracing::warn!(
                                "pool attached, but the state could not be reloaded: {e}"
                            );
                            break;
                        }
                    };
                    tracing::info!(pool = %name, conflicts, "the shared state changed during the takeover: seeding again over it");
                    let old = std::mem::replace(&mut *st, fresh);
                    st.version = STATE_VERSION;
                    seed::name_pools(&mut st, &self.default_pool());
                    // The configuration first: a volume the first round created is taken
                    // up (and mapped) as the configuration says, not adopted unmapped.
                    if let Err(e) = seed::seed_from_config(&mut st, &self.config, &pools).await {
                        tracing::error!(
                            "pool attached, but the configuration could not be applied: {e:#}"
                        );
                    }
                    clones::recover_interrupted(&mut st, &name, &pool).await;
                    seed::adopt_orphans(&mut st, &name, &pool);
                    fill_geometry(&name, &pool, &mut st);
                    self.sync_targets(&old, &st);
                }
                Err(e) => {
                    tracing::warn!("pool attached, but the state could not be saved: {e}");
                    break;
                }
            }
        }
        self.spawn_space_watch(&name, &pool);
        self.reload_reservations().await;
        tracing::info!(pool = %name, "pool attached: this gateway serves its media access");
        Ok(())
    }

    /// Reloads every LUN's shared reservation state (see `ScsiTarget::reload_reservations`)
    /// before this gateway serves I/O: a change whose issuer died between its save and its
    /// notify is in the store but in no gateway's copy.
    async fn reload_reservations(&self) {
        let targets: Vec<Arc<ScsiTarget>> = self.scsi.read().values().cloned().collect();
        let done = tokio::task::spawn_blocking(move || {
            for t in targets {
                t.reload_reservations();
            }
        })
        .await;
        if let Err(e) = done {
            tracing::error!("reloading the reservation state did not finish: {e}");
        }
    }

    /// Owner → standby: cancels the clone and split jobs and waits for them to end, takes
    /// the LUNs' geometry into its records (in memory), waits on every LUN for the media commands in flight (new ones
    /// are refused: set the ALUA state transitioning first) and drops the volumes. The
    /// LUNs stay, pool-less, with their identity, reservations and unit attentions.
    /// Returns the pool, which nothing here uses any more: the caller closes it
    /// (`pool.close().await` commits and checkpoints; a fenced owner's close fails, and
    /// that is fine: its acknowledged writes are on the OSDs) and only then releases the
    /// RBD lock. Fails only if no pool is attached ([`MgrError::NotOwner`]).
    pub async fn detach_pool(&self, name: &str) -> MgrResult<Pool> {
        let mut st = loop {
            // Jobs end by taking the state lock (to record how they ended), so they are
            // stopped before it is taken; one started meanwhile means another round. Only
            // the jobs of this pool (by their destination LUN): the others keep running.
            let ids = self.job_ids_of_pool(name).await;
            let jobs: Vec<Arc<super::JobCtl>> = {
                let all = self.jobs.lock();
                ids.iter().filter_map(|id| all.get(id).cloned()).collect()
            };
            for j in &jobs {
                j.cancel.send_replace(true);
            }
            for j in jobs {
                let mut rx = j.finished.subscribe();
                while !*rx.borrow_and_update() {
                    if rx.changed().await.is_err() {
                        break;
                    }
                }
            }
            let st = self.lock().await;
            let running: Vec<String> = self.jobs.lock().keys().cloned().collect();
            if !running.iter().any(|j| self.job_in_pool(&st, j, name)) {
                break st;
            }
        };
        let pool = self.pool_named(name)?;
        // Nothing to save: every change of a LUN's geometry was saved when it was made
        // (`save` records it), and a fenced owner could not write anyway. The in-memory
        // records get it too, for what this gateway presents and compares from now on.
        fill_geometry(name, &pool, &mut st);
        let targets: Vec<(String, Arc<ScsiTarget>)> = self
            .scsi
            .read()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (iqn, t) in targets {
            let map = st
                .targets
                .get(&iqn)
                .map(|r| r.luns.clone())
                .unwrap_or_default();
            let ids = self.luns_of_pool(&st, &map, name);
            t.drain_lun_volumes(&ids).await;
        }
        if let Some(slot) = self.pools.write().iter_mut().find(|s| s.name == name) {
            slot.pool = None;
        }
        tracing::info!(pool = %name, "pool detached: this gateway is standby for it");
        Ok(pool)
    }

    /// The ids of the running jobs whose destination LUN lives in pool `name`.
    async fn job_ids_of_pool(&self, name: &str) -> Vec<String> {
        let st = self.lock().await;
        let running: Vec<String> = self.jobs.lock().keys().cloned().collect();
        running
            .into_iter()
            .filter(|j| self.job_in_pool(&st, j, name))
            .collect()
    }

    /// Whether job `id` writes into pool `name` (a job not in the state counts as in
    /// every pool: it is waited for).
    fn job_in_pool(&self, st: &State, id: &str, name: &str) -> bool {
        match st.clone_jobs.iter().find(|j| j.id == id) {
            None => true,
            Some(j) => st
                .luns
                .get(&j.destination)
                .is_none_or(|r| self.pool_name_of(r) == name),
        }
    }

    /// Applies a state another gateway wrote (the shared state changed): targets that
    /// appeared are built and handed to their front end, those that disappeared are
    /// withdrawn, changed access settings are pushed to the front end, and every target's
    /// LUN map is made to match (a LUN whose identity, name or read-only flag changed is
    /// re-attached; a new size is presented, raising CAPACITY DATA HAS CHANGED). Nothing is
    /// saved: the state came from the store.
    pub async fn reload_state(&self, new: State) -> MgrResult<()> {
        let mut st = self.lock().await;
        let mut new = new;
        seed::name_pools(&mut new, &self.default_pool());
        self.sync_targets(&st, &new);
        // The whole state, its store version included (the next save checks it).
        *st = new;
        Ok(())
    }

    /// Makes the device servers and front ends, which follow `before`, follow `after`.
    fn sync_targets(&self, before: &State, after: &State) {
        let chunk = self.chunk_size(after);
        // Targets gone, or moved to another fabric (withdrawn here, added back below).
        let gone: Vec<&TargetRecord> = before
            .targets
            .values()
            .filter(|t| {
                after
                    .targets
                    .get(&t.iqn)
                    .is_none_or(|n| n.fabric != t.fabric)
            })
            .collect();
        for t in gone {
            if let Some(f) = self.frontend(t.fabric) {
                self.frontend_took(&t.iqn, f.remove_target(&t.iqn));
            }
            if let Some(s) = self.scsi.write().remove(&t.iqn) {
                for id in s.luns() {
                    let _ = s.remove_lun(id);
                }
            }
            tracing::info!(target = %t.iqn, "target removed");
        }
        for t in after.targets.values() {
            let existing = self.scsi_target(&t.iqn);
            let s = existing
                .clone()
                .unwrap_or_else(|| self.new_scsi_target(&t.iqn, chunk));
            sync_luns(after, &s, &t.luns, |st, target, id, name| {
                self.attach_any(st, target, id, name)
            });
            match existing {
                None => {
                    self.scsi.write().insert(t.iqn.clone(), s.clone());
                    if let Some(f) = self.frontend(t.fabric) {
                        self.frontend_took(&t.iqn, f.add_target(t.to_spec(), s));
                    }
                    tracing::info!(target = %t.iqn, "target added");
                }
                Some(_) => {
                    let was = before.targets.get(&t.iqn).map(access_of);
                    if was.as_ref() != Some(&access_of(t)) {
                        if let Some(f) = self.frontend(t.fabric) {
                            self.frontend_took(&t.iqn, f.update_target(t.to_spec()));
                        }
                    }
                }
            }
        }
    }
}

/// Makes `target`'s LUNs match `map` (LUN number → LUN name) as `st` describes them:
/// LUNs not in the map are removed, LUNs whose identity, name or read-only flag differ
/// from their record are re-attached, a pool-less LUN takes its record's new size, and
/// missing ones are attached with `attach`.
fn sync_luns(
    st: &State,
    target: &ScsiTarget,
    map: &BTreeMap<u64, String>,
    attach: impl Fn(&State, &ScsiTarget, u64, &str),
) {
    for id in target.luns() {
        let Some(lun) = target.get_lun(id) else {
            continue;
        };
        let rec = map
            .get(&id)
            .and_then(|name| st.luns.get(name))
            .filter(|r| r.status == LunStatus::Online);
        let same = rec.is_some_and(|r| {
            r.identity == lun.identity_uuid()
                && r.name == lun.name()
                && r.read_only == lun.read_only
        });
        if !same {
            let _ = target.remove_lun(id);
            continue;
        }
        if let Some(g) = rec.and_then(|r| r.geometry) {
            if !lun.has_volume() && g.size_blocks != lun.num_blocks() {
                lun.set_shape_blocks(g.size_blocks);
                target.lun_resized(id);
            }
        }
    }
    let have = target.luns();
    for (&id, name) in map {
        if !have.contains(&id) {
            attach(st, target, id, name);
        }
    }
}

/// Hands `name`'s volume to the existing LUN `id` of `target`, if it is still the same LUN
/// (same identity as its record); `Ok(false)`: it is not, re-attach it instead.
async fn give_volume(
    pool: &Pool,
    st: &State,
    target: &ScsiTarget,
    id: u64,
    name: &str,
) -> anyhow::Result<bool> {
    let (Some(rec), Some(lun)) = (st.luns.get(name), target.get_lun(id)) else {
        return Ok(false);
    };
    if rec.status != LunStatus::Online
        || rec.identity != lun.identity_uuid()
        || rec.read_only != lun.read_only
    {
        return Ok(false);
    }
    let volume = pool.volume(name)?;
    target.set_lun_volume(id, volume).await?;
    Ok(true)
}

/// Attaches `name` as `id` on `target` without a volume, from its record: a standby's LUN.
/// A LUN still being created, or whose record has no geometry yet (a state written before
/// the owner recorded it), is not exported.
pub(crate) fn attach_pool_less(st: &State, target: &ScsiTarget, id: u64, name: &str) {
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
    let Some(g) = rec.geometry else {
        tracing::warn!(
            target = target.name(),
            lun_id = id,
            lun = name,
            "the LUN's record has no geometry yet (the owner records it at its next save); not exported"
        );
        return;
    };
    let shape = LunShape {
        name: name.to_string(),
        blocks: g.size_blocks,
        block_size: g.block_size,
        thin: g.thin,
        identity: rec.identity,
    };
    if let Err(e) = target.add_pool_less_lun(id, shape, rec.read_only) {
        tracing::error!(
            target = target.name(),
            lun_id = id,
            lun = name,
            "cannot attach: {e:#}"
        );
    }
}

#[cfg(test)]
#[path = "gateway_tests.rs"]
mod tests;
