//! LUNs: create, resize, set, delete, map and unmap, and the checks they share.

use serde::{Deserialize, Serialize};
use storage_core::{Guarantee, Pool, StorageError};

use super::state::{LunRecord, LunStatus, State};
use super::{
    human_bytes, naa_and_serial, now_unix, target_rec, LunManager, LunView, MappingView, MgrError,
    MgrResult, ObjectKind, UsedBy,
};
use crate::scsi::ScsiTarget;

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
    /// The pool to create the volume in (default: the first pool).
    #[serde(default)]
    pub pool: Option<String>,
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
        other => Err(MgrError::InvalidValue {
            what: "guarantee",
            value: format!("{other:?}"),
            reason: "use none or full".into(),
        }),
    }
}

pub(super) fn guarantee_str(g: Guarantee) -> &'static str {
    match g {
        Guarantee::None => "none",
        Guarantee::Full => "full",
    }
}

impl LunManager {
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
            pool: self.pool_name_of(rec),
        };
        let Ok(pool) = self.pool_named(&base.pool) else {
            // A standby gateway: what the owner last recorded.
            return match rec.geometry {
                Some(g) => LunView {
                    size_bytes: g.size_blocks * u64::from(g.block_size),
                    block_size: g.block_size,
                    guarantee: if g.thin { "none" } else { "full" }.into(),
                    ..base
                },
                None => base,
            };
        };
        match pool.volume_info(&rec.name) {
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
        if let Err(e) = self.lun_pool(&st, name)?.1.reconcile_space().await {
            tracing::warn!("space reconcile failed: {e}");
        }
        Ok(self.lun_view(&st, rec))
    }

    /// Creates a LUN (and maps it if asked). Checks everything before touching the pool.
    pub async fn lun_create(&self, req: LunCreate) -> MgrResult<LunView> {
        let mut st = self.lock().await;
        check_name(ObjectKind::Lun, &req.name)?;
        // LUN names are unique across the appliance, whichever pool holds them.
        if st.luns.contains_key(&req.name) {
            return Err(MgrError::AlreadyExists {
                kind: ObjectKind::Lun,
                name: req.name.clone(),
            });
        }
        let pool_name = req.pool.clone().unwrap_or_else(|| self.default_pool());
        let pool = self.pool_named(&pool_name)?;
        let guarantee = parse_guarantee(req.guarantee.as_deref().unwrap_or("none"))?;
        let block_size = req.block_size.unwrap_or(512);
        if block_size != 512 && block_size != 4096 {
            return Err(MgrError::InvalidValue {
                what: "block size",
                value: block_size.to_string(),
                reason: "use 512 or 4096".into(),
            });
        }
        check_size(req.size_bytes, block_size)?;
        let map_to = match &req.target {
            Some(t) => Some((t.clone(), free_lun_id(&st, t, req.lun_id)?)),
            None if req.lun_id.is_some() => {
                return Err(MgrError::NeedsArgument {
                    given: "--lun-id",
                    needs: "--target",
                    why: "",
                })
            }
            None => None,
        };
        let info = pool
            .create_volume(&req.name, req.size_bytes, block_size, guarantee)
            .await
            .map_err(self.in_pool(&pool_name))?;
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
                pool: pool_name.clone(),
                geometry: None,
            },
        );
        if let Some((t, id)) = map_to {
            self.map_locked(&mut st, &req.name, &t, id)?;
        }
        if let Err(e) = self.save(&st) {
            // Undo so that what the pool holds matches what the state says.
            self.unmap_everywhere(&mut st, &req.name);
            st.luns.remove(&req.name);
            let _ = pool.delete_volume(&req.name).await;
            return Err(e);
        }
        tracing::info!(lun = %req.name, pool = %pool_name, size = req.size_bytes, "LUN created");
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
        let (pool_name, pool) = self.lun_pool(&st, name)?;
        let info = pool.volume_info(name)?;
        check_size(size_bytes, info.block_size)?;
        if size_bytes < info.size_bytes && !allow_shrink {
            return Err(MgrError::ShrinkNotConfirmed {
                name: name.to_string(),
                from: human_bytes(info.size_bytes),
                to: human_bytes(size_bytes),
            });
        }
        pool.resize_volume(name, size_bytes, allow_shrink)
            .await
            .map_err(self.in_pool(&pool_name))?;
        for m in mappings_of(&st, name) {
            if let Some(t) = self.scsi_target(&m.target) {
                t.lun_resized(m.lun_id);
            }
        }
        // The records carry the size for gateways without the pool (`gateway.rs`).
        if let Err(e) = self.save(&st) {
            tracing::warn!(lun = %name, "resized, but the new size could not be recorded: {e}");
        }
        tracing::info!(lun = %name, size = size_bytes, "LUN resized");
        Ok(self.lun_view(&st, rec))
    }

    /// Changes guarantee, read-only flag or name.
    pub async fn lun_set(&self, req: LunSet) -> MgrResult<LunView> {
        let mut st = self.lock().await;
        online(lun_rec(&st, &req.name)?)?;
        super::replicas::check_set(&st, &req.name, req.read_only, req.rename.is_some())?;
        if let Some(g) = &req.guarantee {
            let g = parse_guarantee(g)?;
            let (pool_name, pool) = self.lun_pool(&st, &req.name)?;
            pool.set_guarantee(&req.name, g)
                .await
                .map_err(self.in_pool(&pool_name))?;
        }
        let mut name = req.name.clone();
        if let Some(new) = &req.rename {
            check_name(ObjectKind::Lun, new)?;
            if st.luns.contains_key(new) {
                return Err(MgrError::AlreadyExists {
                    kind: ObjectKind::Lun,
                    name: new.clone(),
                });
            }
            if let Some(job) = self.job_touching(&st, &name) {
                return Err(MgrError::InUse {
                    kind: ObjectKind::Lun,
                    name,
                    by: UsedBy::CloneJob(job),
                    hint: "cancel it or wait for it to end before renaming",
                });
            }
            self.lun_pool(&st, &name)?
                .1
                .rename_volume(&name, new)
                .await?;
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
            super::groups::rename_member(&mut st, &name, new);
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
                    self.attach_any(&st, &t, m.lun_id, &name);
                }
            }
        }
        self.save(&st)?;
        Ok(self.lun_view(&st, lun_rec(&st, &name)?))
    }

    /// Deletes a LUN, and with `recursive` its snapshots (without it, a LUN that has
    /// snapshots is refused, naming them, as `zfs destroy` without `-r` is). Refused while an
    /// initiator is logged in to a target exporting it, unless `force` (the LUN then
    /// disappears under the initiator, which gets REPORTED LUNS DATA HAS CHANGED). Clones of
    /// the LUN survive. Returns the snapshots deleted with it (`lun@snap`).
    pub async fn lun_delete(
        &self,
        name: &str,
        force: bool,
        recursive: bool,
    ) -> MgrResult<Vec<String>> {
        let mut st = self.lock().await;
        let rec = lun_rec(&st, name)?;
        online(rec)?;
        if let Some(job) = self.job_touching(&st, name) {
            return Err(MgrError::InUse {
                kind: ObjectKind::Lun,
                name: name.to_string(),
                by: UsedBy::CloneJob(job),
                hint: "cancel it first",
            });
        }
        if let Some(g) = super::groups::group_of(&st, name) {
            return Err(MgrError::InUse {
                kind: ObjectKind::Lun,
                name: name.to_string(),
                by: UsedBy::ConsistencyGroup(g),
                hint: "delete the consistency group first (`lunarctl cg delete`)",
            });
        }
        let busy = self.busy_targets(&st, name);
        if !busy.is_empty() && !force {
            return Err(MgrError::InUse {
                kind: ObjectKind::Lun,
                name: name.to_string(),
                by: UsedBy::Sessions(busy),
                hint: "unmap it first or pass --force",
            });
        }
        let (_, pool) = self.lun_pool(&st, name)?;
        let snapshots: Vec<String> = pool
            .snapshots(Some(name))
            .into_iter()
            .map(|s| format!("{}@{}", s.volume, s.name))
            .collect();
        if !snapshots.is_empty() && !recursive {
            return Err(MgrError::HasSnapshots {
                lun: name.to_string(),
                snapshots,
            });
        }
        self.unmap_everywhere(&mut st, name);
        match pool.delete_volume(name).await {
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
        tracing::info!(lun = %name, force, snapshots = ?snapshots, "LUN deleted");
        Ok(snapshots)
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
        let t = st.targets.get(target).ok_or_else(|| MgrError::NotFound {
            kind: ObjectKind::Target,
            name: target.to_string(),
        })?;
        let ids: Vec<u64> = t
            .luns
            .iter()
            .filter(|(_, n)| *n == name)
            .map(|(&i, _)| i)
            .collect();
        if ids.is_empty() {
            return Err(MgrError::NotMapped {
                lun: name.to_string(),
                target: target.to_string(),
            });
        }
        let sessions = self.session_count(t);
        if !force && sessions > 0 {
            return Err(MgrError::InUse {
                kind: ObjectKind::Target,
                name: target.to_string(),
                by: UsedBy::SessionCount(sessions),
                hint: "pass --force to unmap the LUN under them",
            });
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
        let t = self.scsi_target(target).ok_or_else(|| MgrError::NotFound {
            kind: ObjectKind::Target,
            name: target.to_string(),
        })?;
        let vol = self.lun_pool(st, name)?.1.volume(name)?;
        let ro = st.luns.get(name).is_some_and(|r| r.read_only);
        let identity = st.luns.get(name).map_or_else(|| vol.uuid(), |r| r.identity);
        t.add_lun_with_identity(id, vol, ro, identity)
            .map_err(|e| MgrError::Attach {
                lun: name.to_string(),
                target: target.to_string(),
                reason: format!("{e:#}"),
            })?;
        self.tag_alua(st, &t, id, name);
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
                        self.attach_any(st, &s, id, name);
                    }
                }
            }
        }
    }
}

pub(crate) fn lun_rec<'a>(st: &'a State, name: &str) -> MgrResult<&'a LunRecord> {
    st.luns.get(name).ok_or_else(|| MgrError::NotFound {
        kind: ObjectKind::Lun,
        name: name.to_string(),
    })
}

pub(crate) fn online(rec: &LunRecord) -> MgrResult<()> {
    if rec.status == LunStatus::Creating {
        return Err(MgrError::StillCreating {
            name: rec.name.clone(),
        });
    }
    Ok(())
}

/// LUN names double as volume names: letters, digits, `-`, `_`, `.` (not leading); snapshot
/// and group names follow the same rule.
pub(crate) fn check_name(kind: ObjectKind, n: &str) -> MgrResult<()> {
    if n.is_empty() || n.len() > 128 {
        return Err(MgrError::invalid_name(
            kind,
            n,
            "must be 1 to 128 characters",
        ));
    }
    if !n
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        || n.starts_with('.')
    {
        return Err(MgrError::invalid_name(
            kind,
            n,
            "use letters, digits, '-', '_' and '.' (not leading)",
        ));
    }
    Ok(())
}

fn check_size(size: u64, block_size: u32) -> MgrResult<()> {
    if size == 0 {
        return Err(MgrError::InvalidValue {
            what: "size",
            value: "0".into(),
            reason: "must be greater than 0".into(),
        });
    }
    if !size.is_multiple_of(u64::from(block_size)) {
        return Err(MgrError::InvalidValue {
            what: "size",
            value: size.to_string(),
            reason: format!("not a multiple of the {block_size}-byte block size"),
        });
    }
    Ok(())
}

/// The requested LUN number if free, else the lowest free one.
pub(crate) fn free_lun_id(st: &State, target: &str, want: Option<u64>) -> MgrResult<u64> {
    let t = target_rec(st, target)?;
    match want {
        Some(id) if id > 16383 => Err(MgrError::InvalidValue {
            what: "LUN number",
            value: id.to_string(),
            reason: "out of range (0..=16383)".into(),
        }),
        Some(id) => match t.luns.get(&id) {
            Some(by) => Err(MgrError::LunNumberTaken {
                target: target.to_string(),
                lun_id: id,
                by: by.clone(),
            }),
            None => Ok(id),
        },
        None => (0..=16383u64)
            .find(|i| !t.luns.contains_key(i))
            .ok_or_else(|| MgrError::NoFreeLunNumber {
                target: target.to_string(),
            }),
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
