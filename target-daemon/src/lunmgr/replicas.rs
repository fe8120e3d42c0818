//! Replication relationships as the LUN manager keeps them (`State::replicas`): create,
//! list, pause/resume, delete, promote, the replica side's adoption and demotion, and the
//! reverse of a consistency group's relationship (its records on both sides). The
//! schedule, the transfers and the link are `crate::replica`'s; this file owns the records
//! and the rule that a replica LUN stays write-protected until promoted.
//!
//! A replica LUN is a LUN with `read_only` set (DATA PROTECT / WRITE PROTECTED to
//! initiators: the one read-only mechanism, see `replication.rs`); while a relationship
//! names it in the `replica` role, `lun set --read-only false` is refused and `replica
//! promote` is the way to make it writable.

use storage_core::Pool;

use super::state::{ConsistencyGroupRecord, GroupMember, ReplicaRecord, ReplicaRole, State};
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

    /// The old source of group relationship `name` becomes its replica (the reverse of a
    /// group's failover): every member is write-protected and rolled back to its copy of one
    /// group snapshot in one journal block (`Pool::rollback_group`: all members or none,
    /// later writes here are discarded), and the group's record turns into one replica
    /// record per member (`<name>.<member>`, as the replica side of `peer`'s relationship
    /// keeps them). `members` must name every member of the record once, with the peer's
    /// volume it has. A retry after a success answers the member records unchanged. On any
    /// refusal nothing changes: the group stays the source here.
    pub async fn replica_demote_group(
        &self,
        name: &str,
        peer: &str,
        members: &[GroupDemotion],
    ) -> MgrResult<Vec<ReplicaRecord>> {
        let mut st = self.lock().await;
        let pairs = |it: &mut dyn Iterator<Item = (String, String)>| {
            let mut v: Vec<(String, String)> = it.collect();
            v.sort();
            v
        };
        let asked = pairs(
            &mut members
                .iter()
                .map(|m| (m.volume.clone(), m.source_volume.clone())),
        );
        let Some(r) = st.replicas.get(name).cloned() else {
            // A retried reverse: the members were demoted by an earlier request.
            let done: Vec<ReplicaRecord> = group_member_records(&st, name).cloned().collect();
            let have = pairs(
                &mut done
                    .iter()
                    .map(|m| (m.volume.clone(), m.remote_volume.clone())),
            );
            if !done.is_empty()
                && have == asked
                && done
                    .iter()
                    .all(|m| m.role == ReplicaRole::Replica && m.peer == peer)
            {
                return Ok(done);
            }
            return Err(not_found(name));
        };
        if r.peer != peer || r.members.is_empty() || r.role != ReplicaRole::Source {
            return Err(invalid(
                "relationship",
                name,
                &format!(
                    "here it is the {} of {} with peer {}, not a consistency group's source with {peer}",
                    r.role.as_str(),
                    r.volume,
                    r.peer
                ),
            ));
        }
        let have = pairs(
            &mut r
                .members
                .iter()
                .map(|m| (m.volume.clone(), m.remote_volume.clone())),
        );
        if have != asked {
            return Err(invalid(
                "relationship",
                name,
                &format!(
                    "its members here are {have:?} (volume here, volume on the peer), the peer named {asked:?}"
                ),
            ));
        }
        // Every check before the first change.
        let mut pool = None;
        for m in members {
            self.snapshot_exists(&st, &m.volume, &m.common)?;
            let member = ReplicaRecord::member_name(name, &m.volume);
            check_name(ObjectKind::Relationship, &member)?;
            if st.replicas.contains_key(&member) {
                return Err(invalid(
                    "relationship",
                    &member,
                    "a relationship of that name exists here already",
                ));
            }
            let (pn, p) = self.lun_pool(&st, &m.volume)?;
            match &pool {
                Some((first, _)) if *first != pn => {
                    return Err(invalid(
                        "volume",
                        &m.volume,
                        &format!("it is in pool {pn}, the group's other members in {first}"),
                    ))
                }
                Some(_) => {}
                None => pool = Some((pn, p)),
            }
        }
        let Some((pool_name, pool)) = pool else {
            return Err(invalid(
                "relationship",
                name,
                "the demotion names no member",
            ));
        };
        // Write-protect every member first, so no write lands after the rollback.
        let was: Vec<bool> = members
            .iter()
            .map(|m| st.luns.get(&m.volume).is_some_and(|l| l.read_only))
            .collect();
        for m in members {
            self.set_read_only_locked(&mut st, &m.volume, true)?;
        }
        let rollback: Vec<(&str, &str)> = members
            .iter()
            .map(|m| (m.volume.as_str(), m.common.as_str()))
            .collect();
        if let Err(e) = pool.rollback_group(&rollback).await {
            for (m, ro) in members.iter().zip(was) {
                if let Err(e) = self.set_read_only_locked(&mut st, &m.volume, ro) {
                    tracing::warn!(relationship = %name, volume = %m.volume, error = %e, "restoring a member's read-only flag after a refused group rollback failed");
                }
            }
            return Err(self.in_pool(&pool_name)(e));
        }
        st.replicas.remove(name);
        let mut out = Vec::with_capacity(members.len());
        for m in &r.members {
            let rec = ReplicaRecord {
                name: ReplicaRecord::member_name(name, &m.volume),
                role: ReplicaRole::Replica,
                volume: m.volume.clone(),
                pool: r.pool.clone(),
                peer: peer.to_string(),
                remote_volume: m.remote_volume.clone(),
                every_secs: r.every_secs,
                keep_local: r.keep_local,
                keep_remote: r.keep_remote,
                bandwidth: None,
                paused: false,
                created_unix: r.created_unix,
                replicated_as_of_ms: None,
                last_transfer: None,
                group: Some(name.to_string()),
                members: Vec::new(),
            };
            st.replicas.insert(rec.name.clone(), rec.clone());
            out.push(rec);
        }
        self.save(&st)?;
        let common: Vec<&str> = members.iter().map(|m| m.common.as_str()).collect();
        tracing::info!(relationship = %name, ?common, members = out.len(), "consistency group demoted to replica: every member rolled back to the last common group snapshot, write-protected");
        Ok(out)
    }

    /// The promoted replica side of group relationship `name` becomes its source: its
    /// member records (`<name>.<member>`, all promoted) become one source record of a
    /// consistency group of the members here (the one whose members are exactly them, or
    /// a new one named `name`). With `apply` false only checks and returns the record it
    /// would make (what a reverse checks before it demotes the peer); with `apply` true
    /// also saves it.
    pub async fn replica_reverse_group(&self, name: &str, apply: bool) -> MgrResult<ReplicaRecord> {
        let mut st = self.lock().await;
        let (rec, new_cg) = self.reverse_plan(&st, name)?;
        if !apply {
            return Ok(rec);
        }
        if let Some(cg) = new_cg {
            tracing::info!(group = %cg.name, members = ?cg.members, "consistency group created for the reversed relationship");
            st.consistency_groups.insert(cg.name.clone(), cg);
        }
        let members: Vec<String> = group_member_records(&st, name)
            .map(|r| r.name.clone())
            .collect();
        for m in members {
            st.replicas.remove(&m);
        }
        st.replicas.insert(rec.name.clone(), rec.clone());
        self.save(&st)?;
        tracing::info!(relationship = %name, group = ?rec.group, "group relationship reversed: this side is the source");
        Ok(rec)
    }

    /// See [`Self::replica_reverse_group`]: the source record and, if none fits, the
    /// consistency group to create.
    fn reverse_plan(
        &self,
        st: &State,
        name: &str,
    ) -> MgrResult<(ReplicaRecord, Option<ConsistencyGroupRecord>)> {
        if let Some(r) = st.replicas.get(name) {
            return Err(invalid(
                "relationship",
                name,
                &format!(
                    "this side is its {}: reverse runs on the promoted replica side",
                    r.role.as_str()
                ),
            ));
        }
        let members: Vec<&ReplicaRecord> = group_member_records(st, name).collect();
        let Some(first) = members.first() else {
            return Err(not_found(name));
        };
        for m in &members {
            if m.role != ReplicaRole::Promoted {
                return Err(invalid(
                    "relationship",
                    name,
                    &format!(
                        "member {} is the {} here: promote the group first (`lunarctl replica promote {name}`)",
                        m.volume,
                        m.role.as_str()
                    ),
                ));
            }
            if m.peer != first.peer {
                return Err(invalid(
                    "relationship",
                    name,
                    &format!("its members name two peers ({} and {})", first.peer, m.peer),
                ));
            }
        }
        let mut pool: Option<String> = None;
        for m in &members {
            let p = self.pool_name_of(lun_rec(st, &m.volume)?);
            match &pool {
                Some(first) if *first != p => {
                    return Err(MgrError::CrossPool {
                        what: "consistency group",
                        lun: m.volume.clone(),
                        pool: p,
                        other: first.clone(),
                    })
                }
                Some(_) => {}
                None => pool = Some(p),
            }
        }
        let pool = pool.unwrap_or_default();
        let mut volumes: Vec<&str> = members.iter().map(|m| m.volume.as_str()).collect();
        volumes.sort_unstable();
        // The consistency group of exactly these LUNs, or a new one named after the
        // relationship (a LUN is a member of one group at most).
        let existing = st.consistency_groups.values().find(|g| {
            let mut v: Vec<&str> = g.members.iter().map(String::as_str).collect();
            v.sort_unstable();
            v == volumes
        });
        let (cg, new_cg) = match existing {
            Some(g) => (g.clone(), None),
            None => {
                for v in &volumes {
                    if let Some(g) = super::groups::group_of(st, v) {
                        return Err(invalid(
                            "relationship",
                            name,
                            &format!(
                                "member {v} is in consistency group {g}, which has other members than the relationship's ({volumes:?})"
                            ),
                        ));
                    }
                }
                check_name(ObjectKind::ConsistencyGroup, name)?;
                if st.consistency_groups.contains_key(name) {
                    return Err(invalid(
                        "relationship",
                        name,
                        &format!("a consistency group {name} with other members exists here"),
                    ));
                }
                let g = ConsistencyGroupRecord {
                    name: name.to_string(),
                    members: members.iter().map(|m| m.volume.clone()).collect(),
                    pool: pool.clone(),
                    created_unix: super::now_unix(),
                };
                (g.clone(), Some(g))
            }
        };
        let group_members = cg
            .members
            .iter()
            .filter_map(|v| members.iter().find(|m| &m.volume == v))
            .map(|m| GroupMember {
                volume: m.volume.clone(),
                remote_volume: m.remote_volume.clone(),
            })
            .collect();
        let rec = ReplicaRecord {
            name: name.to_string(),
            role: ReplicaRole::Source,
            volume: cg.name.clone(),
            pool,
            peer: first.peer.clone(),
            remote_volume: cg.name.clone(),
            every_secs: first.every_secs.clamp(1, MAX_EVERY_SECS),
            keep_local: first.keep_local.max(1),
            keep_remote: first.keep_remote.max(1),
            bandwidth: None,
            paused: false,
            created_unix: first.created_unix,
            replicated_as_of_ms: None,
            last_transfer: None,
            group: Some(cg.name.clone()),
            members: group_members,
        };
        Ok((rec, new_cg))
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

/// One member of a group's demotion (`replica_demote_group`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupDemotion {
    /// The member LUN here.
    pub volume: String,
    /// Its volume on the peer (the new source).
    pub source_volume: String,
    /// The group snapshot to roll back to (its name here).
    pub common: String,
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
