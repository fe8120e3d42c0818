//! Targets, ACLs, CHAP and sessions: the target-level changes the fabric front ends apply.

use std::collections::BTreeMap;

use super::state::{ChapRecord, State, TargetRecord};
use super::{
    LunManager, MappingLun, MgrError, MgrResult, ObjectKind, SessionView, TargetView, UsedBy,
};
use crate::fabric::Fabric;

impl LunManager {
    /// Records what the front end did with a change to `iqn`: a refusal marks the target
    /// pending (the running front end serves an older spec until a restart applies the
    /// state), a success clears such a mark (every push carries the target's whole spec, so
    /// the front end is up to date again). Without the clearing a refusal's mark stayed for
    /// the life of the process: `pending_restart` went on asking for a restart that nothing
    /// needed, and a deleted target's mark carried over to a new target of the same name.
    pub(super) fn frontend_took(&self, iqn: &str, r: Result<(), crate::fabric::FrontendError>) {
        match r {
            Ok(()) => {
                self.pending.lock().remove(iqn);
            }
            Err(e) => {
                tracing::warn!(target = iqn, "{e}");
                self.pending.lock().insert(iqn.to_string());
            }
        }
    }

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
            sessions: self.session_count(t),
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
            MgrError::invalid_name(ObjectKind::Target, name, format!("{e} ({fabric})"))
        })?;
        if st.targets.keys().any(|k| k.eq_ignore_ascii_case(iqn)) {
            return Err(MgrError::AlreadyExists {
                kind: ObjectKind::Target,
                name: iqn.to_string(),
            });
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
        // Built as the state's targets are (the group's ALUA view and reservation store,
        // the pool's write-cache truth); on a standby the chunk size comes from the records.
        let scsi = self.new_scsi_target(iqn, self.chunk_size(&st));
        st.targets.insert(iqn.to_string(), rec.clone());
        if let Err(e) = self.save(&st) {
            // Not on disk and not in the front end: not in memory either.
            st.targets.remove(iqn);
            return Err(e);
        }
        self.scsi.write().insert(iqn.to_string(), scsi.clone());
        if let Some(f) = self.frontend(fabric) {
            self.frontend_took(iqn, f.add_target(rec.to_spec(), scsi));
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
        let rec = target_rec(&st, iqn)?;
        let fabric = rec.fabric;
        let n = self.session_count(rec);
        if n > 0 && !force {
            return Err(MgrError::InUse {
                kind: ObjectKind::Target,
                name: iqn.to_string(),
                by: UsedBy::SessionCount(n),
                hint: "pass --force to close them",
            });
        }
        let Some(removed) = st.targets.remove(iqn) else {
            return Ok(());
        };
        if let Err(e) = self.save(&st) {
            // The front end still serves it: keep it listed (and saved by the next change).
            st.targets.insert(iqn.to_string(), removed);
            return Err(e);
        }
        if let Some(f) = self.frontend(fabric) {
            self.frontend_took(iqn, f.remove_target(iqn));
        }
        if let Some(t) = self.scsi.write().remove(iqn) {
            for id in t.luns() {
                let _ = t.remove_lun(id);
            }
        }
        Ok(())
    }

    /// Applies a change to a target's access settings and pushes it to its front end.
    async fn change_access(
        &self,
        iqn: &str,
        f: impl FnOnce(&mut TargetRecord) -> MgrResult<()>,
    ) -> MgrResult<TargetView> {
        let mut st = self.lock().await;
        let mut rec = target_rec(&st, iqn)?.clone();
        f(&mut rec)?;
        let before = st.targets.insert(iqn.to_string(), rec.clone());
        if let Err(e) = self.save(&st) {
            // The front end never saw the change: an ACL removal kept here would reach disk
            // with the next change while the initiator is still admitted.
            if let Some(before) = before {
                st.targets.insert(iqn.to_string(), before);
            }
            return Err(e);
        }
        if let Some(f) = self.frontend(rec.fabric) {
            self.frontend_took(iqn, f.update_target(rec.to_spec()));
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
            let fabric = t.fabric;
            let initiator = fabric.canonical_name(&initiator).map_err(|e| {
                MgrError::invalid_name(ObjectKind::Initiator, &initiator, format!("{e} ({fabric})"))
            })?;
            if t.initiators
                .iter()
                .any(|i| i.eq_ignore_ascii_case(&initiator))
            {
                return Err(MgrError::AlreadyAllowed {
                    initiator,
                    target: t.iqn.clone(),
                });
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
                return Err(MgrError::NotAllowed {
                    initiator,
                    target: t.iqn.clone(),
                });
            }
            Ok(())
        })
        .await
    }

    /// Requires CHAP (with optional mutual CHAP) for a target.
    pub async fn chap_set(&self, iqn: &str, chap: ChapRecord) -> MgrResult<TargetView> {
        for (what, s) in [
            ("CHAP secret", Some(&chap.secret)),
            ("mutual CHAP secret", chap.mutual_secret.as_ref()),
        ] {
            if let Some(s) = s {
                if s.len() < 12 || s.len() > 255 {
                    return Err(MgrError::InvalidValue {
                        what,
                        value: format!("of {} bytes", s.len()),
                        reason: "must be 12 to 255 bytes long".into(),
                    });
                }
            }
        }
        if chap.username.is_empty() {
            return Err(MgrError::InvalidValue {
                what: "CHAP user name",
                value: "\"\"".into(),
                reason: "must not be empty".into(),
            });
        }
        if chap.mutual_username.is_some() != chap.mutual_secret.is_some() {
            return Err(MgrError::NeedsArgument {
                given: "mutual CHAP",
                needs: "both a user name and a secret",
                why: "",
            });
        }
        self.change_access(iqn, move |t| {
            if t.fabric.is_lio() {
                return Err(MgrError::NotOnFabric {
                    feature: "CHAP",
                    target: t.iqn.clone(),
                    fabric: t.fabric,
                });
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
        Ok(st
            .targets
            .values()
            .filter(|t| target.is_none_or(|n| n == t.iqn))
            .flat_map(|t| {
                self.frontend(t.fabric)
                    .map(|f| f.sessions(&t.iqn))
                    .unwrap_or_default()
            })
            .collect())
    }

    /// Closes the sessions of a target; returns how many.
    pub async fn session_close(&self, target: &str) -> MgrResult<usize> {
        let st = self.lock().await;
        let fabric = target_rec(&st, target)?.fabric;
        Ok(self
            .frontend(fabric)
            .map_or(0, |f| f.close_sessions(target)))
    }
}

pub(super) fn target_rec<'a>(st: &'a State, iqn: &str) -> MgrResult<&'a TargetRecord> {
    st.targets.get(iqn).ok_or_else(|| MgrError::NotFound {
        kind: ObjectKind::Target,
        name: iqn.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use crate::config::{ByteSize, Config, TargetCfg};
    use crate::fabric::{Fabric, Frontend, FrontendError, SessionView, TargetSpec};
    use crate::lunmgr::LunManager;
    use crate::scsi::ScsiTarget;
    use storage_core::{Pool, PoolOptions};

    const IQN: &str = "iqn.2024-01.org.lunar:t1";
    const INIT: &str = "iqn.1994-05.com.example:host1";

    /// A change whose `state.json` save fails must leave nothing changed in memory either:
    /// the running front end never saw it, so a target list (and the next successful save)
    /// must not show it as done — an ACL removal reported as failed while the manager holds
    /// it as applied would later reach disk with the initiator still admitted meanwhile.
    #[tokio::test]
    async fn a_change_whose_save_fails_is_not_kept_in_memory() {
        let d = tempfile::tempdir().unwrap();
        let cfg = Config::local(ByteSize::mib(64))
            .with_data_dir(d.path())
            .with_target(TargetCfg::iscsi(IQN));
        let pool = Pool::open_or_create(
            &d.path().join("pool"),
            &PoolOptions {
                capacity_bytes: Some(64 << 20),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        let (mgr, _) = LunManager::open(&cfg, pool.clone()).await.unwrap();
        mgr.acl_add(IQN, INIT).await.unwrap();
        // A directory where the temporary state file goes: every save fails (even as root).
        let blocker = d.path().join(".state.json.tmp");
        std::fs::create_dir(&blocker).unwrap();

        assert!(mgr.acl_remove(IQN, INIT).await.is_err());
        assert!(mgr
            .target_create("iqn.2024-01.org.lunar:t2", Fabric::Iscsi, None, false)
            .await
            .is_err());
        assert!(mgr.target_delete(IQN, false).await.is_err());
        let list = mgr.target_list().await;
        assert_eq!(list.len(), 1, "{list:?}");
        assert_eq!(list[0].initiators, vec![INIT.to_string()]);

        std::fs::remove_dir(&blocker).unwrap();
        mgr.chap_clear(IQN).await.unwrap();
        let saved = crate::lunmgr::state::load(d.path()).unwrap().unwrap();
        assert_eq!(saved.targets.len(), 1);
        assert_eq!(saved.targets[IQN].initiators, vec![INIT.to_string()]);
        pool.close().await.unwrap();
    }

    /// A front end that refuses every change while `fail` is set.
    #[derive(Default)]
    struct Flaky {
        fail: std::sync::atomic::AtomicBool,
    }

    impl Flaky {
        fn result(&self, name: &str) -> Result<(), FrontendError> {
            if self.fail.load(std::sync::atomic::Ordering::SeqCst) {
                return Err(FrontendError {
                    fabric: Fabric::Iscsi,
                    target: name.to_string(),
                    reason: "refused for the test".into(),
                });
            }
            Ok(())
        }
    }

    impl Frontend for Flaky {
        fn fabrics(&self) -> &'static [Fabric] {
            &[Fabric::Iscsi]
        }
        fn add_target(&self, spec: TargetSpec, _: Arc<ScsiTarget>) -> Result<(), FrontendError> {
            self.result(&spec.name)
        }
        fn remove_target(&self, name: &str) -> Result<(), FrontendError> {
            self.result(name)
        }
        fn update_target(&self, spec: TargetSpec) -> Result<(), FrontendError> {
            self.result(&spec.name)
        }
        fn sessions(&self, _: &str) -> Vec<SessionView> {
            Vec::new()
        }
        fn close_sessions(&self, _: &str) -> usize {
            0
        }
    }

    /// `pending_restart` says whether the running front end serves an older spec than the
    /// state: a change it refused sets it, the next change it takes up clears it, and a
    /// deleted target's mark does not carry over to a new target of the same name. Before,
    /// the mark was never cleared: both checks after a success failed.
    #[tokio::test]
    async fn pending_restart_clears_once_the_front_end_takes_a_change() {
        let d = tempfile::tempdir().unwrap();
        let cfg = Config::local(ByteSize::mib(64)).with_data_dir(d.path());
        let pool = Pool::open_or_create(
            &d.path().join("pool"),
            &PoolOptions {
                capacity_bytes: Some(64 << 20),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        let (mgr, _) = LunManager::open(&cfg, pool.clone()).await.unwrap();
        let fe = Arc::new(Flaky::default());
        mgr.attach_frontend(fe.clone());
        let fail = |on: bool| fe.fail.store(on, std::sync::atomic::Ordering::SeqCst);
        let v = mgr
            .target_create(IQN, Fabric::Iscsi, None, false)
            .await
            .unwrap();
        assert!(!v.pending_restart);
        fail(true);
        assert!(mgr.acl_add(IQN, INIT).await.unwrap().pending_restart);
        fail(false);
        let v = mgr
            .acl_add(IQN, "iqn.1994-05.com.example:host2")
            .await
            .unwrap();
        assert!(!v.pending_restart, "the front end took the whole spec");
        assert!(!mgr.target_list().await[0].pending_restart);

        fail(true);
        mgr.target_delete(IQN, false).await.unwrap();
        fail(false);
        let v = mgr
            .target_create(IQN, Fabric::Iscsi, None, false)
            .await
            .unwrap();
        assert!(!v.pending_restart, "the old target's mark carried over");
        pool.close().await.unwrap();
    }
}
