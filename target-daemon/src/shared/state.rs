//! The LUN manager's state shared by the gateways of an HA group: object
//! `lunar.<group>.state` holds what `state.json` holds for a single lunard (LUNs with their
//! geometry, targets, ACLs, CHAP secrets, groups, clone jobs), in the same JSON.
//!
//! Every save is a compare-and-swap on the version the manager's [`State`] was loaded or
//! last saved as ([`State::store_version`]): a gateway whose state is stale gets
//! [`StateError::Conflict`] and changes nothing, rather than overwriting another gateway's
//! change. After a save the other gateways are notified (the payload names the new version
//! and the saving instance) and reload ([`SharedStateStore::watch`]).
//!
//! Secrets: the object holds CHAP secrets like `state.json` does; who may read it is
//! decided by the Ceph client's capabilities on the pool (docs/ha.md), the local
//! `state.json` rules (mode 0600) still apply to the data directory.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use super::objects::{NotifyFn, ObjError, VersionedObjects, WatchHandle};
use crate::lunmgr::state::{decode, encode, State, StateError, StateStore};

/// What a save tells the other gateways.
#[derive(Debug, Serialize, Deserialize)]
struct StateNotice {
    /// The store instance that saved.
    origin: uuid::Uuid,
    /// The version it saved.
    version: u64,
}

/// The shared state store of one gateway.
pub struct SharedStateStore {
    objects: Arc<dyn VersionedObjects>,
    name: String,
    instance: uuid::Uuid,
    watch: Mutex<Option<Box<dyn WatchHandle>>>,
    notify_timeout: Duration,
    /// Whether a save returns before the other gateways acknowledged its notice.
    background_notify: std::sync::atomic::AtomicBool,
}

impl SharedStateStore {
    /// The state of group `group` in `objects`.
    pub fn new(objects: Arc<dyn VersionedObjects>, group: &str) -> Arc<Self> {
        Arc::new(Self {
            objects,
            name: super::names::state(group),
            instance: uuid::Uuid::new_v4(),
            watch: Mutex::new(None),
            notify_timeout: super::NOTIFY_TIMEOUT,
            background_notify: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Let saves return before the other gateways acknowledged the notice (it is sent on a
    /// thread of its own). The state needs no acknowledged notice to be correct (the CAS
    /// guards the data; a gateway that reloads late only shows the change late), and a dead
    /// gateway's watch would otherwise hold every save, the new owner's first one during a
    /// takeover included, for the whole notify timeout.
    pub fn notify_in_background(&self, yes: bool) {
        self.background_notify
            .store(yes, std::sync::atomic::Ordering::Relaxed);
    }

    /// Call `on_change(version)` (on a store thread; must not block: queue the reload)
    /// whenever another gateway saved the state. The consumer then [`load`]s it and
    /// applies it to the LUN manager (`LunManager::reload_state`), keeping its
    /// `store_version`. Replaces an earlier watch.
    ///
    /// [`load`]: StateStore::load
    pub fn watch(&self, on_change: Arc<dyn Fn(u64) + Send + Sync>) -> Result<(), StateError> {
        let me = self.instance;
        let name = self.name.clone();
        let cb: NotifyFn = Arc::new(move |payload: &[u8]| {
            if payload.is_empty() {
                // The watch was re-established: reload, notifies may have been missed.
                on_change(0);
                return;
            }
            match serde_json::from_slice::<StateNotice>(payload) {
                Ok(n) if n.origin == me => {}
                Ok(n) => on_change(n.version),
                Err(e) => {
                    // Reload anyway: whatever changed, the object has the truth.
                    tracing::warn!(object = %name, error = %e, "undecodable state notice; reloading");
                    on_change(0);
                }
            }
        });
        let handle = self
            .objects
            .watch(&self.name, cb)
            .map_err(|e| self.error(e))?;
        *self.watch.lock() = Some(handle);
        Ok(())
    }

    fn error(&self, e: ObjError) -> StateError {
        match e {
            ObjError::Conflict(_) => StateError::Conflict {
                object: self.name.clone(),
            },
            ObjError::Io(e) => StateError::Shared {
                object: self.name.clone(),
                message: format!("{e:#}"),
            },
        }
    }

    /// The version to compare against when saving a state never stored (`store_version`
    /// 0): none if the object does not exist, its version if it is still empty (a watch
    /// created it); a conflict if another gateway stored a state first.
    fn first_save_expectation(&self) -> Result<Option<u64>, StateError> {
        match self.objects.read(&self.name).map_err(|e| self.error(e))? {
            None => Ok(None),
            Some(v) if v.data.is_empty() => Ok(Some(v.version)),
            Some(v) => {
                // A corrupt object is reported as such, not as a conflict.
                decode(&self.name, &v.data)?;
                Err(StateError::Conflict {
                    object: self.name.clone(),
                })
            }
        }
    }
}

impl StateStore for SharedStateStore {
    fn load(&self) -> Result<Option<State>, StateError> {
        let Some(v) = self.objects.read(&self.name).map_err(|e| self.error(e))? else {
            return Ok(None);
        };
        if v.data.is_empty() {
            return Ok(None);
        }
        let st = decode(&self.name, &v.data)?;
        st.store_version.set(v.version);
        Ok(Some(st))
    }

    fn save(&self, st: &State) -> Result<(), StateError> {
        let body = encode(st)?;
        let expected = match st.store_version.get() {
            0 => self.first_save_expectation()?,
            v => Some(v),
        };
        let version = self
            .objects
            .write(&self.name, &body, expected)
            .map_err(|e| self.error(e))?;
        st.store_version.set(version);
        let notice = StateNotice {
            origin: self.instance,
            version,
        };
        let payload = serde_json::to_vec(&notice).unwrap_or_default();
        let (objects, name, timeout) =
            (self.objects.clone(), self.name.clone(), self.notify_timeout);
        let send = move || match objects.notify(&name, &payload, timeout) {
            Ok(r) if r.timed_out > 0 => {
                tracing::warn!(object = %name, version, timed_out = r.timed_out, "gateways did not acknowledge a state change (they reload when back)")
            }
            Ok(_) => {}
            // Saved: a gateway that missed it finds out at its next save (a conflict
            // makes it reload) or its next notify.
            Err(e) => {
                tracing::warn!(object = %name, version, error = %e, "state saved but the other gateways were not notified")
            }
        };
        if self
            .background_notify
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            let spawned = super::threads::spawn("lunar-state-notify", send);
            if let Err(e) = spawned {
                tracing::warn!(object = %self.name, version, error = %e, "state saved but the notify thread could not start");
            }
        } else {
            send();
        }
        Ok(())
    }

    fn describe(&self) -> String {
        format!("RADOS object {}", self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lunmgr::state::{LunRecord, LunStatus, STATE_VERSION};
    use crate::shared::MemCluster;

    fn lun(name: &str) -> LunRecord {
        LunRecord {
            name: name.into(),
            identity: uuid::Uuid::new_v4(),
            read_only: false,
            status: LunStatus::Online,
            origin: None,
            clone_mode: None,
            created_unix: 1,
            pool: String::new(),
            geometry: None,
        }
    }

    /// Two gateways: the first seeds the state, the second loads it, both change it; the
    /// one whose copy is stale gets a conflict and writes nothing, and saves again once
    /// it reloaded. Each save notifies the other gateway only.
    #[test]
    fn saves_are_compare_and_swap_and_notify_the_other_gateways() {
        let cluster = MemCluster::new();
        let (a, b) = (
            SharedStateStore::new(cluster.client(), "g"),
            SharedStateStore::new(cluster.client(), "g"),
        );
        let heard_a = Arc::new(Mutex::new(Vec::new()));
        let heard_b = Arc::new(Mutex::new(Vec::new()));
        let h = heard_a.clone();
        a.watch(Arc::new(move |v| h.lock().push(v)))
            .expect("watch a");
        let h = heard_b.clone();
        b.watch(Arc::new(move |v| h.lock().push(v)))
            .expect("watch b");

        assert!(a.load().expect("load").is_none());
        let mut sa = State {
            version: STATE_VERSION,
            ..Default::default()
        };
        sa.luns.insert("one".into(), lun("one"));
        a.save(&sa).expect("first save");
        let first = sa.store_version.get();
        assert_eq!(*heard_b.lock(), vec![first]);
        // A second "first" save (another gateway seeding too) is a conflict.
        let seed_b = State::default();
        assert!(matches!(b.save(&seed_b), Err(StateError::Conflict { .. })));

        let mut sb = b.load().expect("load").expect("state");
        assert_eq!(sb.store_version.get(), sa.store_version.get());
        sb.luns.insert("two".into(), lun("two"));
        b.save(&sb).expect("b saves");
        assert_eq!(*heard_a.lock(), vec![sb.store_version.get()]);
        assert_eq!(*heard_b.lock(), vec![first], "no notice of its own saves");

        // A's copy is stale now: its change is refused, the stored state keeps B's LUN.
        sa.luns.insert("three".into(), lun("three"));
        assert!(matches!(a.save(&sa), Err(StateError::Conflict { .. })));
        let mut sa = a.load().expect("load").expect("state");
        assert!(sa.luns.contains_key("two") && !sa.luns.contains_key("three"));
        sa.luns.insert("three".into(), lun("three"));
        a.save(&sa).expect("a saves after reloading");
        let last = b.load().expect("load").expect("state");
        assert_eq!(
            last.luns.keys().collect::<Vec<_>>(),
            vec!["one", "three", "two"]
        );
    }

    /// The LUN manager saves every change through its state store: with a shared one, a
    /// change lands in the group's object, another gateway sees it, and a change made on a
    /// stale state is refused (kind `busy`) and not kept in memory.
    #[tokio::test]
    async fn the_lun_manager_saves_through_a_shared_store_and_refuses_stale_changes() {
        use crate::config::{ByteSize, Config};
        use crate::fabric::Fabric;
        use crate::lunmgr::LunManager;
        use storage_core::{Pool, PoolOptions};

        let d = tempfile::tempdir().expect("tempdir");
        let cfg = Config::local(ByteSize::mib(64)).with_data_dir(d.path());
        let pool = Pool::open_or_create(
            &d.path().join("pool"),
            &PoolOptions {
                capacity_bytes: Some(64 << 20),
                ..Default::default()
            },
        )
        .await
        .expect("pool");
        let (mgr, _) = LunManager::open(&cfg, pool.clone()).await.expect("open");
        let cluster = MemCluster::new();
        let mine = SharedStateStore::new(cluster.client(), "g");
        let other = SharedStateStore::new(cluster.client(), "g");
        mgr.set_state_store(mine);
        let t1 = "iqn.2026-12.io.lunar:t1";
        mgr.target_create(t1, Fabric::Iscsi, None, false)
            .await
            .expect("create t1");
        let mut st = other.load().expect("load").expect("state");
        assert!(st.targets.contains_key(t1), "the change is in the object");
        // The other gateway changes the state; this manager has not reloaded.
        st.next_job += 1;
        other.save(&st).expect("other saves");
        let t2 = "iqn.2026-12.io.lunar:t2";
        let e = mgr
            .target_create(t2, Fabric::Iscsi, None, false)
            .await
            .expect_err("a stale state must not be saved");
        assert_eq!(e.kind(), "busy", "{e}");
        assert!(
            mgr.target_list().await.iter().all(|t| t.iqn != t2),
            "the refused change is not kept"
        );
        let stored = other.load().expect("load").expect("state");
        assert!(!stored.targets.contains_key(t2));
        assert_eq!(
            stored.next_job, st.next_job,
            "the other gateway's change stands"
        );
        pool.close().await.expect("close");
    }

    /// A corrupt object is a clear error naming it, never a panic or an empty state.
    #[test]
    fn a_corrupt_state_object_is_refused_with_its_name() {
        let cluster = MemCluster::new();
        let a = SharedStateStore::new(cluster.client(), "g");
        cluster.put_raw("lunar.g.state", b"{not json");
        match a.load() {
            Err(StateError::Corrupt { path, .. }) => assert_eq!(path, "lunar.g.state"),
            other => panic!("expected a corrupt-state error, got {other:?}"),
        }
        // Nor may a first save overwrite it.
        assert!(matches!(
            a.save(&State::default()),
            Err(StateError::Corrupt { .. })
        ));
        assert_eq!(
            cluster.get_raw("lunar.g.state").map(|v| v.data),
            Some(b"{not json".to_vec())
        );
    }
}
