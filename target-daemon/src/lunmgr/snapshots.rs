//! Snapshots and consistency groups.

use super::*;

impl LunManager {
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
}
