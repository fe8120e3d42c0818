//! Snapshots and consistency groups.

use super::state::GroupRecord;
use super::{
    check_name, lun_rec, now_unix, online, LunManager, MgrError, MgrResult, ObjectKind,
    SnapshotView, UsedBy,
};

impl LunManager {
    /// Snapshot `lun@snap`.
    pub async fn snapshot_create(&self, lun: &str, snap: &str) -> MgrResult<SnapshotView> {
        let st = self.lock().await;
        online(lun_rec(&st, lun)?)?;
        check_name(ObjectKind::Snapshot, snap)?;
        if self.snapshot_exists(&st, lun, snap).is_ok() {
            return Err(MgrError::AlreadyExists {
                kind: ObjectKind::Snapshot,
                name: format!("{lun}@{snap}"),
            });
        }
        let (pool_name, pool) = self.lun_pool(&st, lun)?;
        let s = pool
            .snapshot(lun, snap)
            .await
            .map_err(self.in_pool(&pool_name))?;
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
        check_name(ObjectKind::Group, group)?;
        if luns.is_empty() {
            return Err(MgrError::InvalidValue {
                what: "group",
                value: format!("{group:?}"),
                reason: "a consistency group needs at least one LUN".into(),
            });
        }
        if st.groups.contains_key(group) {
            return Err(MgrError::AlreadyExists {
                kind: ObjectKind::Group,
                name: group.to_string(),
            });
        }
        let mut seen = std::collections::BTreeSet::new();
        for l in luns {
            online(lun_rec(&st, l)?)?;
            if !seen.insert(l) {
                return Err(MgrError::InvalidValue {
                    what: "group",
                    value: format!("{group:?}"),
                    reason: format!("LUN {l:?} is listed twice"),
                });
            }
        }
        // One instant is one commit of one pool: a group stays within a pool.
        let (pool_name, pool) = self.lun_pool(&st, &luns[0])?;
        for l in &luns[1..] {
            let other = self.pool_name_of(lun_rec(&st, l)?);
            if other != pool_name {
                return Err(MgrError::CrossPool {
                    what: "snapshot group",
                    lun: l.clone(),
                    pool: other,
                    other: pool_name,
                });
            }
        }
        let pairs: Vec<(&str, &str)> = luns.iter().map(|l| (l.as_str(), group)).collect();
        let snaps = pool
            .snapshot_group(&pairs)
            .await
            .map_err(self.in_pool(&pool_name))?;
        st.groups.insert(
            group.to_string(),
            GroupRecord {
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
        let pools = match lun {
            Some(l) => vec![self.lun_pool(&st, l)?],
            // Every pool open here; a standby with none: refused (naming the owner).
            None => match self.open_pools() {
                open if open.is_empty() => vec![(String::new(), self.pool()?)],
                open => open,
            },
        };
        Ok(pools
            .into_iter()
            .flat_map(|(name, pool)| {
                pool.snapshots(lun)
                    .into_iter()
                    .map(move |s| (name.clone(), s))
            })
            // A volume of this pool that is a LUN of this pool (not a same-named one of
            // another pool).
            .filter(|(name, s)| {
                st.luns
                    .get(&s.volume)
                    .is_some_and(|r| name.is_empty() || self.pool_name_of(r) == *name)
            })
            .map(|(_, s)| s)
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
        self.snapshot_exists(&st, lun, snap)?;
        let full = format!("{lun}@{snap}");
        if let Some(j) = st
            .clone_jobs
            .iter()
            .find(|j| !j.state.is_final() && j.source == full)
        {
            return Err(MgrError::InUse {
                kind: ObjectKind::Snapshot,
                name: full,
                by: UsedBy::CloneJob(j.id.clone()),
                hint: "cancel it or wait for it to end",
            });
        }
        let (pool_name, pool) = self.lun_pool(&st, lun)?;
        pool.delete_snapshot(lun, snap)
            .await
            .map_err(self.in_pool(&pool_name))?;
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
                .ok_or_else(|| MgrError::NotFound {
                    kind: ObjectKind::Group,
                    name: group.to_string(),
                })?
                .members
                .clone()
        };
        for m in members {
            match self.snapshot_delete(&m, group).await {
                Ok(()) => {}
                Err(e) if e.is_not_found() => {}
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
        self.snapshot_exists(&st, lun, snap)?;
        let busy = self.busy_targets(&st, lun);
        if !busy.is_empty() && !force {
            return Err(MgrError::InUse {
                kind: ObjectKind::Lun,
                name: lun.to_string(),
                by: UsedBy::Sessions(busy),
                hint: "log them out or pass --force",
            });
        }
        let (pool_name, pool) = self.lun_pool(&st, lun)?;
        pool.rollback(lun, snap)
            .await
            .map_err(self.in_pool(&pool_name))?;
        tracing::info!(lun, snap, "rolled back");
        Ok(())
    }

    /// `Ok` if `lun` has a snapshot `snap`, else the typed not-found error naming `lun@snap`.
    pub(crate) fn snapshot_exists(
        &self,
        st: &super::state::State,
        lun: &str,
        snap: &str,
    ) -> MgrResult<()> {
        if self
            .lun_pool(st, lun)?
            .1
            .snapshots(Some(lun))
            .iter()
            .any(|s| s.name == snap)
        {
            Ok(())
        } else {
            Err(MgrError::NotFound {
                kind: ObjectKind::Snapshot,
                name: format!("{lun}@{snap}"),
            })
        }
    }
}
