//! Consistency groups as administrative objects (`lunarctl cg`): a named set of LUNs of one
//! pool whose group snapshots are taken at one instant (`Pool::snapshot_group`: one journal
//! block, every member's I/O gate held at once), so a database spread over a data LUN and a
//! log LUN gets a snapshot set it can recover from. Kept in `state.json`
//! (`State::consistency_groups`). A LUN is a member of at most one group, and a member LUN
//! cannot be deleted while its group exists. docs/decisions/0027-consistency-groups.md.
//!
//! The older `snapshot create --group NAME LUN...` (a one-off set of snapshots, recorded in
//! `State::groups` under the snapshot name) stays; a group snapshot of a consistency group
//! goes through it, so `snapshot list` names the set.

use serde::{Deserialize, Serialize};

use super::state::{ConsistencyGroupRecord, State};
use super::{
    check_name, lun_rec, now_unix, LunManager, MgrError, MgrResult, ObjectKind, SnapshotView,
    UsedBy,
};

/// A consistency group as the admin API reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsistencyGroupView {
    /// Group name.
    pub name: String,
    /// Member LUNs.
    pub members: Vec<String>,
    /// The members' pool.
    pub pool: String,
    /// Creation time, seconds since the Unix epoch.
    pub created_unix: u64,
}

impl From<&ConsistencyGroupRecord> for ConsistencyGroupView {
    fn from(r: &ConsistencyGroupRecord) -> Self {
        Self {
            name: r.name.clone(),
            members: r.members.clone(),
            pool: r.pool.clone(),
            created_unix: r.created_unix,
        }
    }
}

/// The consistency group `lun` is a member of, if any.
pub(crate) fn group_of(st: &State, lun: &str) -> Option<String> {
    st.consistency_groups
        .values()
        .find(|g| g.members.iter().any(|m| m == lun))
        .map(|g| g.name.clone())
}

/// A LUN renamed from `old` to `new` stays a member under its new name.
pub(crate) fn rename_member(st: &mut State, old: &str, new: &str) {
    for g in st.consistency_groups.values_mut() {
        for m in g.members.iter_mut() {
            if m == old {
                *m = new.to_string();
            }
        }
    }
}

fn not_found(name: &str) -> MgrError {
    MgrError::NotFound {
        kind: ObjectKind::ConsistencyGroup,
        name: name.to_string(),
    }
}

fn invalid(name: &str, reason: String) -> MgrError {
    MgrError::InvalidValue {
        what: "consistency group",
        value: format!("{name:?}"),
        reason,
    }
}

/// The group's record, or the typed not-found error.
pub(crate) fn group_rec<'a>(st: &'a State, name: &str) -> MgrResult<&'a ConsistencyGroupRecord> {
    st.consistency_groups
        .get(name)
        .ok_or_else(|| not_found(name))
}

impl LunManager {
    /// Creates consistency group `name` of `luns` (at least one, each once, all in one
    /// pool — one instant is one commit of one pool — and none a member of another group).
    pub async fn cg_create(&self, name: &str, luns: &[String]) -> MgrResult<ConsistencyGroupView> {
        let mut st = self.lock().await;
        check_name(ObjectKind::ConsistencyGroup, name)?;
        if st.consistency_groups.contains_key(name) {
            return Err(MgrError::AlreadyExists {
                kind: ObjectKind::ConsistencyGroup,
                name: name.to_string(),
            });
        }
        let Some(first) = luns.first() else {
            return Err(invalid(
                name,
                "a consistency group needs at least one LUN".into(),
            ));
        };
        let pool = self.pool_name_of(lun_rec(&st, first)?);
        let mut seen = std::collections::BTreeSet::new();
        for l in luns {
            let rec = lun_rec(&st, l)?;
            if !seen.insert(l) {
                return Err(invalid(name, format!("LUN {l:?} is listed twice")));
            }
            let other = self.pool_name_of(rec);
            if other != pool {
                return Err(MgrError::CrossPool {
                    what: "consistency group",
                    lun: l.clone(),
                    pool: other,
                    other: pool,
                });
            }
            if let Some(g) = group_of(&st, l) {
                return Err(MgrError::InUse {
                    kind: ObjectKind::Lun,
                    name: l.clone(),
                    by: UsedBy::ConsistencyGroup(g),
                    hint: "a LUN is a member of one consistency group at most",
                });
            }
        }
        let rec = ConsistencyGroupRecord {
            name: name.to_string(),
            members: luns.to_vec(),
            pool,
            created_unix: now_unix(),
        };
        let view = ConsistencyGroupView::from(&rec);
        st.consistency_groups.insert(name.to_string(), rec);
        self.save(&st)?;
        tracing::info!(group = name, members = ?luns, "consistency group created");
        Ok(view)
    }

    /// Every consistency group, by name.
    pub async fn cg_list(&self) -> MgrResult<Vec<ConsistencyGroupView>> {
        let st = self.lock().await;
        Ok(st
            .consistency_groups
            .values()
            .map(ConsistencyGroupView::from)
            .collect())
    }

    /// Deletes consistency group `name` (its LUNs and snapshots stay).
    pub async fn cg_delete(&self, name: &str) -> MgrResult<()> {
        let mut st = self.lock().await;
        group_rec(&st, name)?;
        // A relationship replicating the group names it and its members.
        if let Some(r) = st.replicas.values().find(|r| {
            r.role != super::state::ReplicaRole::Replica
                && !r.members.is_empty()
                && r.group.as_deref() == Some(name)
        }) {
            return Err(invalid(
                name,
                format!(
                    "replication relationship {} replicates it: delete the relationship first",
                    r.name
                ),
            ));
        }
        st.consistency_groups.remove(name);
        self.save(&st)?;
        tracing::info!(group = name, "consistency group deleted");
        Ok(())
    }

    /// Snapshots every member of consistency group `name` as `snap`, at one instant.
    pub async fn cg_snapshot(&self, name: &str, snap: &str) -> MgrResult<Vec<SnapshotView>> {
        let members = {
            let st = self.lock().await;
            group_rec(&st, name)?.members.clone()
        };
        self.snapshot_group(snap, &members).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lunmgr::LunCreate;

    async fn mgr(dir: &std::path::Path) -> std::sync::Arc<LunManager> {
        let cfg = crate::config::Config::local(crate::config::ByteSize::mib(64)).with_data_dir(dir);
        let pool = storage_core::Pool::open_or_create(
            &dir.join("pool.img"),
            &storage_core::PoolOptions {
                capacity_bytes: Some(64 << 20),
                ..Default::default()
            },
        )
        .await
        .expect("pool");
        LunManager::open(&cfg, pool).await.expect("open").0
    }

    async fn lun(m: &LunManager, name: &str) {
        m.lun_create(LunCreate {
            name: name.into(),
            size_bytes: 1 << 20,
            guarantee: None,
            block_size: None,
            target: None,
            lun_id: None,
            read_only: false,
            pool: None,
        })
        .await
        .expect("lun");
    }

    #[tokio::test]
    async fn groups_are_created_listed_snapshotted_persisted_and_deleted() {
        let dir = tempfile::tempdir().expect("tmp");
        let m = mgr(dir.path()).await;
        for l in ["data", "log", "other"] {
            lun(&m, l).await;
        }
        let g = m
            .cg_create("db", &["data".into(), "log".into()])
            .await
            .expect("create");
        assert_eq!(g.members, ["data", "log"]);
        // Refusals name what is wrong.
        let e = m.cg_create("db", &["other".into()]).await.expect_err("dup");
        assert!(matches!(e, MgrError::AlreadyExists { .. }), "{e}");
        let e = m.cg_create("x", &[]).await.expect_err("empty");
        assert!(e.to_string().contains("at least one LUN"), "{e}");
        let e = m
            .cg_create("x", &["other".into(), "other".into()])
            .await
            .expect_err("twice");
        assert!(e.to_string().contains("listed twice"), "{e}");
        let e = m
            .cg_create("x", &["other".into(), "log".into()])
            .await
            .expect_err("in another group");
        assert!(e.to_string().contains("consistency group db"), "{e}");
        let e = m
            .cg_create("x", &["nope".into()])
            .await
            .expect_err("no LUN");
        assert!(e.is_not_found(), "{e}");
        let e = m.lun_delete("log", false, true).await.expect_err("member");
        assert!(e.to_string().contains("consistency group db"), "{e}");
        let snaps = m.cg_snapshot("db", "s1").await.expect("snapshot");
        assert_eq!(snaps.len(), 2);
        assert!(snaps.iter().all(|s| s.name == "s1"));
        assert!(m.cg_snapshot("nope", "s2").await.is_err());
        let listed = m.snapshot_list(Some("log")).await.expect("list");
        assert_eq!(listed[0].group.as_deref(), Some("s1"));
        // Saved like the rest of the state.
        let saved: State = serde_json::from_slice(
            &std::fs::read(dir.path().join(crate::lunmgr::state::STATE_FILE)).expect("read"),
        )
        .expect("state.json");
        assert_eq!(
            saved
                .consistency_groups
                .values()
                .map(ConsistencyGroupView::from)
                .collect::<Vec<_>>(),
            vec![g.clone()]
        );
        assert_eq!(m.cg_list().await.expect("list"), vec![g]);
        m.cg_delete("db").await.expect("delete");
        assert!(m.cg_list().await.expect("list").is_empty());
        assert!(m.cg_delete("db").await.expect_err("gone").is_not_found());
        // Snapshots and LUNs stay; the LUN can go now.
        assert_eq!(m.snapshot_list(Some("data")).await.expect("list").len(), 1);
        m.lun_delete("log", false, true)
            .await
            .expect("delete member");
    }

    #[tokio::test]
    async fn a_group_relationship_takes_the_members_and_their_mapped_names() {
        use crate::lunmgr::state::{GroupMember, ReplicaRecord, ReplicaRole};
        let dir = tempfile::tempdir().expect("tmp");
        let m = mgr(dir.path()).await;
        for l in ["data", "log", "other"] {
            lun(&m, l).await;
        }
        m.cg_create("db", &["data".into(), "log".into()])
            .await
            .expect("create");
        let rec =
            |name: &str, volume: &str, group: Option<&str>, map: &[(&str, &str)]| ReplicaRecord {
                name: name.into(),
                role: ReplicaRole::Source,
                volume: volume.into(),
                pool: String::new(),
                peer: "site-b".into(),
                remote_volume: volume.into(),
                every_secs: 60,
                keep_local: 2,
                keep_remote: 2,
                bandwidth: None,
                paused: false,
                created_unix: 0,
                replicated_as_of_ms: None,
                last_transfer: None,
                group: group.map(str::to_string),
                members: map
                    .iter()
                    .map(|(v, r)| GroupMember {
                        volume: (*v).into(),
                        remote_volume: (*r).into(),
                    })
                    .collect(),
            };
        let e = m
            .replica_create(rec("g", "", Some("db"), &[("other", "x")]))
            .await
            .expect_err("map of a non-member");
        assert!(e.to_string().contains("not a member"), "{e}");
        let e = m
            .replica_create(rec("g", "", Some("db"), &[("log", "data")]))
            .await
            .expect_err("two members into one volume");
        assert!(e.to_string().contains("same remote volume"), "{e}");
        let g = m
            .replica_create(rec("g", "", Some("db"), &[("log", "log-dr")]))
            .await
            .expect("group relationship");
        assert_eq!(g.volume, "db");
        assert_eq!(
            g.members,
            vec![
                GroupMember {
                    volume: "data".into(),
                    remote_volume: "data".into()
                },
                GroupMember {
                    volume: "log".into(),
                    remote_volume: "log-dr".into()
                },
            ]
        );
        // A member is in no other relationship; the group stays while replicated.
        let e = m
            .replica_create(rec("r2", "log", None, &[]))
            .await
            .expect_err("member twice");
        assert!(e.to_string().contains("relationship \"g\""), "{e}");
        let e = m.cg_delete("db").await.expect_err("replicated group");
        assert!(e.to_string().contains("relationship g"), "{e}");
        m.replica_create(rec("r3", "other", None, &[]))
            .await
            .expect("a LUN outside the group");
        m.replica_delete("g").await.expect("delete");
        m.cg_delete("db").await.expect("the group can go now");
    }

    #[tokio::test]
    async fn a_group_is_demoted_whole_or_not_at_all_and_its_promoted_members_reverse_into_one_source(
    ) {
        use crate::lunmgr::replicas::GroupDemotion;
        use crate::lunmgr::state::{ReplicaRecord, ReplicaRole};
        let dir = tempfile::tempdir().expect("tmp");
        let m = mgr(dir.path()).await;
        for l in ["data", "log"] {
            lun(&m, l).await;
        }
        m.cg_create("db", &["data".into(), "log".into()])
            .await
            .expect("create");
        m.replica_create(ReplicaRecord {
            name: "g".into(),
            role: ReplicaRole::Source,
            volume: String::new(),
            pool: String::new(),
            peer: "site-b".into(),
            remote_volume: String::new(),
            every_secs: 60,
            keep_local: 3,
            keep_remote: 4,
            bandwidth: None,
            paused: false,
            created_unix: 0,
            replicated_as_of_ms: None,
            last_transfer: None,
            group: Some("db".into()),
            members: Vec::new(),
        })
        .await
        .expect("group relationship");
        m.cg_snapshot("db", "s1").await.expect("group snapshot");
        m.snapshot_create("data", "s2").await.expect("data@s2");
        let demote = |common: &str, vols: &[&str]| -> Vec<GroupDemotion> {
            vols.iter()
                .map(|v| GroupDemotion {
                    volume: (*v).into(),
                    source_volume: (*v).into(),
                    common: common.into(),
                })
                .collect()
        };
        let unchanged = || async {
            let g = m.replica_record("g").await.expect("still there");
            assert_eq!(g.role, ReplicaRole::Source);
            assert!(m.replica_group_members("g").await.is_empty());
            assert!(m.lun_list().await.iter().all(|l| !l.read_only));
        };
        // log has no s2: neither member is demoted (data is not rolled back alone).
        let e = m
            .replica_demote_group("g", "site-b", &demote("s2", &["data", "log"]))
            .await
            .expect_err("a member without the snapshot");
        assert!(e.to_string().contains("log@s2"), "{e}");
        unchanged().await;
        // The peer must name every member, and be the relationship's peer.
        let e = m
            .replica_demote_group("g", "site-b", &demote("s1", &["data"]))
            .await
            .expect_err("a member missing");
        assert!(e.to_string().contains("members here"), "{e}");
        m.replica_demote_group("g", "site-z", &demote("s1", &["data", "log"]))
            .await
            .expect_err("another peer");
        unchanged().await;
        // All members at once: one replica record per member, write-protected.
        let recs = m
            .replica_demote_group("g", "site-b", &demote("s1", &["log", "data"]))
            .await
            .expect("demote");
        assert_eq!(recs.len(), 2);
        assert!(m.replica_record("g").await.is_err());
        for v in ["data", "log"] {
            let r = m.replica_record(&format!("g.{v}")).await.expect("member");
            assert_eq!(
                (r.role, r.group.as_deref(), r.peer.as_str()),
                (ReplicaRole::Replica, Some("g"), "site-b")
            );
        }
        assert!(m.lun_list().await.iter().all(|l| l.read_only));
        // A retried request (the reverse run again) answers the same records.
        let again = m
            .replica_demote_group("g", "site-b", &demote("s1", &["data", "log"]))
            .await
            .expect("retry");
        assert_eq!(again.len(), 2);

        // The other way: not while the members are replicas; once promoted, the members
        // become one source record of the consistency group of exactly these LUNs.
        let e = m
            .replica_reverse_group("g", false)
            .await
            .expect_err("not promoted");
        assert!(e.to_string().contains("promote the group first"), "{e}");
        m.replica_promote("g").await.expect("promote");
        let plan = m.replica_reverse_group("g", false).await.expect("plan");
        assert_eq!(plan.group.as_deref(), Some("db"));
        assert!(m.replica_record("g").await.is_err(), "a plan saves nothing");
        // Without that group, one named after the relationship is made.
        m.cg_delete("db")
            .await
            .expect("no source relationship names it now");
        let rec = m.replica_reverse_group("g", true).await.expect("reverse");
        assert_eq!(
            (rec.role, rec.group.as_deref(), rec.volume.as_str()),
            (ReplicaRole::Source, Some("g"), "g")
        );
        assert_eq!(rec.volumes(), ["data", "log"]);
        assert_eq!((rec.keep_local, rec.keep_remote), (3, 4));
        assert!(m.replica_group_members("g").await.is_empty());
        let cgs = m.cg_list().await.expect("list");
        assert_eq!(cgs.len(), 1);
        assert_eq!(cgs[0].members, ["data", "log"]);
        // The source side refuses a reverse.
        let e = m
            .replica_reverse_group("g", false)
            .await
            .expect_err("source");
        assert!(e.to_string().contains("promoted replica"), "{e}");
    }
}
