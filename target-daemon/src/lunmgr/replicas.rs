//! Replication relationships as the LUN manager keeps them (`State::replicas`): create,
//! list, pause/resume, delete, promote, and the replica side's adoption and demotion. The
//! schedule, the transfers and the link are `crate::replica`'s; this file owns the records
//! and the rule that a replica LUN stays write-protected until promoted.
//!
//! A replica LUN is a LUN with `read_only` set (DATA PROTECT / WRITE PROTECTED to
//! initiators: the one read-only mechanism, see `replication.rs`); while a relationship
//! names it in the `replica` role, `lun set --read-only false` is refused and `replica
//! promote` is the way to make it writable.

use storage_core::Pool;

use super::state::{GroupMember, ReplicaRecord, ReplicaRole, State};
use super::{check_name, lun_rec, mappings_of, LunManager, MgrError, MgrResult, ObjectKind};

/// Longest schedule interval (a week).
pub const MAX_EVERY_SECS: u64 = 7 * 24 * 3600;

fn not_found(name: &str) -> MgrError {
    MgrError::NotFound {
        kind: ObjectKind::Relationship,
        name: name.to_string(),
    }
}

fn invalid(what: &'static str, value: impl std::fmt::Display, reason: &str) -> MgrError {
    MgrError::InvalidValue {
        what,
        value: value.to_string(),
        reason: reason.to_string(),
    }
}

/// The relationship `name`, if `st` has it.
fn rel<'a>(st: &'a State, name: &str) -> MgrResult<&'a ReplicaRecord> {
    st.replicas.get(name).ok_or_else(|| not_found(name))
}

/// The replica-role relationship that write-protects `volume`, if any.
pub(crate) fn protecting(st: &State, volume: &str) -> Option<String> {
    st.replicas
        .values()
        .find(|r| r.role == ReplicaRole::Replica && r.volume == volume)
        .map(|r| r.name.clone())
}

/// What `lun set` may not do to a LUN in a relationship: make a replica writable (promote
/// it instead), or rename it (the relationship names it).
pub(crate) fn check_set(
    st: &State,
    name: &str,
    read_only: Option<bool>,
    rename: bool,
) -> MgrResult<()> {
    if let (Some(false), Some(r)) = (read_only, protecting(st, name)) {
        return Err(invalid(
            "read-only",
            "false",
            &format!(
                "{name} is the replica of relationship {r:?}: it stays write-protected \
                 until `lunarctl replica promote {r}`"
            ),
        ));
    }
    if let (true, Some(r)) = (
        rename,
        st.replicas.values().find(|r| r.volumes().contains(&name)),
    ) {
        return Err(invalid(
            "rename",
            name,
            &format!(
                "relationship {:?} replicates it: delete the relationship first",
                r.name
            ),
        ));
    }
    Ok(())
}

impl LunManager {
    /// Creates a relationship on the source side (`role` must be `Source`): the LUN must
    /// exist and be in no other relationship.
    pub async fn replica_create(&self, mut rec: ReplicaRecord) -> MgrResult<ReplicaRecord> {
        let mut st = self.lock().await;
        check_name(ObjectKind::Relationship, &rec.name)?;
        if st.replicas.contains_key(&rec.name) {
            return Err(MgrError::AlreadyExists {
                kind: ObjectKind::Relationship,
                name: rec.name,
            });
        }
        match rec.group.clone() {
            Some(g) => group_members(&st, &mut rec, &g)?,
            None => {
                let lun = lun_rec(&st, &rec.volume)?;
                rec.pool = self.pool_name_of(lun);
                rec.members.clear();
                check_name(ObjectKind::Lun, &rec.remote_volume)?;
            }
        }
        for v in rec.volumes() {
            if let Some(other) = st.replicas.values().find(|r| r.volumes().contains(&v)) {
                return Err(invalid(
                    "volume",
                    v,
                    &format!("it is already in relationship {:?}", other.name),
                ));
            }
        }
        crate::config::check_peer_name(&rec.peer).map_err(|m| invalid("peer", &rec.peer, &m))?;
        if rec.every_secs == 0 || rec.every_secs > MAX_EVERY_SECS {
            return Err(invalid("schedule", rec.every_secs, "must be 1s to 7 days"));
        }
        if rec.keep_local == 0 || rec.keep_remote == 0 {
            return Err(invalid(
                "keep",
                format!("{}/{}", rec.keep_local, rec.keep_remote),
                "each side keeps at least one snapshot: the base of the next increment",
            ));
        }
        if rec.bandwidth == Some(0) {
            return Err(invalid(
                "bandwidth",
                0,
                "must be positive (omit it for no limit)",
            ));
        }
        rec.role = ReplicaRole::Source;
        st.replicas.insert(rec.name.clone(), rec.clone());
        self.save(&st)?;
        tracing::info!(relationship = %rec.name, volume = %rec.volume, peer = %rec.peer, "replication relationship created");
        Ok(rec)
    }

    /// Every relationship on this side.
    pub async fn replica_records(&self) -> Vec<ReplicaRecord> {
        self.lock().await.replicas.values().cloned().collect()
    }

    /// The relationship `name`.
    pub async fn replica_record(&self, name: &str) -> MgrResult<ReplicaRecord> {
        rel(&*self.lock().await, name).cloned()
    }

    /// Changes relationship `name` with `f` and saves it.
    pub async fn replica_update(
        &self,
        name: &str,
        f: impl FnOnce(&mut ReplicaRecord),
    ) -> MgrResult<ReplicaRecord> {
        let mut st = self.lock().await;
        let r = st.replicas.get_mut(name).ok_or_else(|| not_found(name))?;
        f(r);
        let out = r.clone();
        self.save(&st)?;
        Ok(out)
    }

    /// Deletes relationship `name` (volumes and snapshots stay; a replica LUN stays
    /// write-protected until `lun set --read-only false`).
    /// On the replica side, `name` may be a consistency group's relationship: every
    /// member's record goes (the first is returned).
    pub async fn replica_delete(&self, name: &str) -> MgrResult<ReplicaRecord> {
        let mut st = self.lock().await;
        let mut out = None;
        for n in targets(&st, name)? {
            if let Some(r) = st.replicas.remove(&n) {
                out.get_or_insert(r);
            }
        }
        let r = out.ok_or_else(|| not_found(name))?;
        self.save(&st)?;
        tracing::info!(relationship = %name, "replication relationship deleted");
        Ok(r)
    }

    /// The replica-side records of group relationship `name` (one per member volume).
    pub async fn replica_group_members(&self, name: &str) -> Vec<ReplicaRecord> {
        let st = self.lock().await;
        group_member_records(&st, name).cloned().collect()
    }

    /// The replica side records a relationship a peer replicates into `volume` (first
    /// transfer), or checks that an existing one is the same peer's and takes the
    /// schedule and keep counts the source states now (0: not stated, kept as they were).
    pub async fn replica_adopt(&self, rec: ReplicaRecord) -> MgrResult<()> {
        let mut st = self.lock().await;
        if let Some(r) = st.replicas.get_mut(&rec.name) {
            if r.peer != rec.peer || r.volume != rec.volume {
                return Err(invalid(
                    "relationship",
                    &rec.name,
                    &format!(
                        "here it replicates {} with peer {}, not {} with {}",
                        r.volume, r.peer, rec.volume, rec.peer
                    ),
                ));
            }
            if r.role != ReplicaRole::Replica {
                return Err(invalid(
                    "relationship",
                    &rec.name,
                    &format!(
                        "this side is its {}: it does not receive (reverse it first)",
                        r.role.as_str()
                    ),
                ));
            }
            let before = r.clone();
            r.every_secs = rec.every_secs;
            if rec.keep_local != 0 {
                r.keep_local = rec.keep_local;
            }
            if rec.keep_remote != 0 {
                r.keep_remote = rec.keep_remote;
            }
            if *r != before {
                self.save(&st)?;
            }
            return Ok(());
        }
        if let Some(other) = st
            .replicas
            .values()
            .find(|r| r.volumes().contains(&rec.volume.as_str()))
        {
            return Err(invalid(
                "volume",
                &rec.volume,
                &format!("it is already in relationship {:?}", other.name),
            ));
        }
        check_name(ObjectKind::Relationship, &rec.name)?;
        check_name(ObjectKind::Lun, &rec.volume)?;
        st.replicas.insert(rec.name.clone(), rec);
        self.save(&st)
    }

    /// Promotes the replica of relationship `name`: it stops receiving and its LUN
    /// becomes writable (disaster recovery). Its snapshots stay: `reverse` later finds the
    /// newest one the old source still has.
    ///
    /// On the replica side of a consistency group's relationship, `name` is the group's
    /// relationship and every member is promoted (they hold the same group instant: the
    /// members' receives are committed together); the first member's record is returned.
    pub async fn replica_promote(&self, name: &str) -> MgrResult<ReplicaRecord> {
        let mut st = self.lock().await;
        let mut first = None;
        for n in targets(&st, name)? {
            let r = self.promote_locked(&mut st, &n).await?;
            first.get_or_insert(r);
        }
        first.ok_or_else(|| not_found(name))
    }

    async fn promote_locked(&self, st: &mut State, name: &str) -> MgrResult<ReplicaRecord> {
        let r = rel(st, name)?.clone();
        if r.role != ReplicaRole::Replica {
            return Err(invalid(
                "relationship",
                name,
                &format!(
                    "this side is its {}: only a replica is promoted",
                    r.role.as_str()
                ),
            ));
        }
        let (_, pool) = self.lun_pool(st, &r.volume)?;
        if stream_pending(&pool, &r.volume) {
            tracing::warn!(relationship = %name, volume = %r.volume, "promoting with an interrupted transfer staged: it is dropped (the replica keeps its last complete snapshot)");
            let _ = storage_core::stream::abort_pending(&pool, &r.volume).await;
        }
        self.set_read_only_locked(st, &r.volume, false)?;
        let out = {
            let rec = st.replicas.get_mut(name).ok_or_else(|| not_found(name))?;
            rec.role = ReplicaRole::Promoted;
            rec.clone()
        };
        self.save(st)?;
        tracing::info!(relationship = %name, volume = %r.volume, "replica promoted: writable");
        Ok(out)
    }

    /// The old source of relationship `name` becomes its replica (the reverse of a
    /// failover): `volume` is rolled back to `common` (the newest snapshot both sides
    /// have; later writes here are discarded), write-protected, and the record turns
    /// into the replica side of `peer`'s relationship.
    pub async fn replica_demote(
        &self,
        name: &str,
        peer: &str,
        volume: &str,
        remote_volume: &str,
        common: &str,
    ) -> MgrResult<ReplicaRecord> {
        let mut st = self.lock().await;
        let r = rel(&st, name)?.clone();
        if r.peer != peer || r.volume != volume {
            return Err(invalid(
                "relationship",
                name,
                &format!("here it is {} with peer {}", r.volume, r.peer),
            ));
        }
        if r.role == ReplicaRole::Replica {
            return Ok(r);
        }
        self.snapshot_exists(&st, volume, common)?;
        let (pool_name, pool) = self.lun_pool(&st, volume)?;
        self.set_read_only_locked(&mut st, volume, true)?;
        pool.rollback(volume, common)
            .await
            .map_err(self.in_pool(&pool_name))?;
        let out = {
            let rec = st.replicas.get_mut(name).ok_or_else(|| not_found(name))?;
            rec.role = ReplicaRole::Replica;
            rec.remote_volume = remote_volume.to_string();
            rec.paused = false;
            rec.clone()
        };
        self.save(&st)?;
        tracing::info!(relationship = %name, volume, common, "demoted to replica: rolled back to the last common snapshot, write-protected");
        Ok(out)
    }

    /// Sets `volume`'s LUN read-only flag and re-attaches its mappings so the device
    /// servers apply it.
    fn set_read_only_locked(&self, st: &mut State, volume: &str, ro: bool) -> MgrResult<()> {
        lun_rec(st, volume)?;
        if let Some(rec) = st.luns.get_mut(volume) {
            rec.read_only = ro;
        }
        for m in mappings_of(st, volume) {
            if let Some(t) = self.scsi_target(&m.target) {
                let _ = t.remove_lun(m.lun_id);
                self.attach_any(st, &t, m.lun_id, volume);
            }
        }
        Ok(())
    }

    /// The pool and name of `volume`'s pool.
    pub async fn replica_pool(&self, volume: &str) -> MgrResult<(String, Pool)> {
        let st = self.lock().await;
        if st.luns.contains_key(volume) {
            return self.lun_pool(&st, volume);
        }
        let name = self.default_pool();
        let pool = self.pool_named(&name)?;
        Ok((name, pool))
    }
}

/// Fills `rec` (a source relationship of consistency group `g`) with the group's members
/// and their remote volumes (the member's name unless `rec.members` maps it), and the
/// group's pool.
fn group_members(st: &State, rec: &mut ReplicaRecord, g: &str) -> MgrResult<()> {
    let cg = super::groups::group_rec(st, g)?;
    for m in &rec.members {
        if !cg.members.contains(&m.volume) {
            return Err(invalid(
                "map",
                format!("{}={}", m.volume, m.remote_volume),
                &format!("{} is not a member of consistency group {g}", m.volume),
            ));
        }
    }
    let mut members = Vec::with_capacity(cg.members.len());
    let mut remotes = std::collections::BTreeSet::new();
    for v in &cg.members {
        let remote = rec
            .members
            .iter()
            .find(|m| &m.volume == v)
            .map_or_else(|| v.clone(), |m| m.remote_volume.clone());
        check_name(ObjectKind::Lun, &remote)?;
        check_name(
            ObjectKind::Relationship,
            &ReplicaRecord::member_name(&rec.name, &remote),
        )?;
        if !remotes.insert(remote.clone()) {
            return Err(invalid(
                "map",
                &remote,
                "two members would replicate into the same remote volume",
            ));
        }
        members.push(GroupMember {
            volume: v.clone(),
            remote_volume: remote,
        });
    }
    rec.pool = cg.pool.clone();
    rec.volume = g.to_string();
    rec.remote_volume = g.to_string();
    rec.members = members;
    Ok(())
}

/// The replica-side member records of group relationship `name`.
fn group_member_records<'a>(
    st: &'a State,
    name: &'a str,
) -> impl Iterator<Item = &'a ReplicaRecord> + 'a {
    st.replicas
        .values()
        .filter(move |r| r.role != ReplicaRole::Source && r.group.as_deref() == Some(name))
}

/// The records an operation on relationship `name` acts on: its own, or on the replica
/// side of a group relationship, its members'.
fn targets(st: &State, name: &str) -> MgrResult<Vec<String>> {
    if st.replicas.contains_key(name) {
        return Ok(vec![name.to_string()]);
    }
    let members: Vec<String> = group_member_records(st, name)
        .map(|r| r.name.clone())
        .collect();
    if members.is_empty() {
        return Err(not_found(name));
    }
    Ok(members)
}

fn stream_pending(pool: &Pool, volume: &str) -> bool {
    storage_core::stream::pending_receives(pool)
        .iter()
        .any(|p| p.volume == volume)
}
