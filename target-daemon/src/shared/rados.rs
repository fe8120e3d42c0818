//! [`VersionedObjects`] over RADOS (`storage_core::ceph`): whole-object reads with the
//! object's version, `write_full` guarded by `assert_version` (or an exclusive create),
//! `rados_notify2` and `rados_watch2`.
//!
//! A watch that breaks (lost connection, OSD restart) is re-established in the background
//! and its callback is then called with an empty payload: "you may have missed notifies,
//! reload from the object". A blocklisted client cannot watch again: the HA coordinator
//! reconnects with a fresh client and builds new stores.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use storage_core::ceph::{CephError, Expect, IoCtx, Watch};

use super::objects::{
    Ack, DeferredNotifyFn, NotifyReport, ObjError, Versioned, VersionedObjects, WatchHandle,
};

/// How long a broken watch waits between attempts to watch again.
const REWATCH_PAUSE: Duration = Duration::from_secs(1);

/// The shared objects of a group in one RADOS pool (one gateway's client).
#[derive(Clone, Debug)]
pub struct RadosObjects {
    io: IoCtx,
}

impl RadosObjects {
    /// Objects in the pool `io` is opened on.
    pub fn new(io: IoCtx) -> Arc<Self> {
        Arc::new(Self { io })
    }
}

fn obj_error(e: CephError) -> ObjError {
    match e {
        CephError::Conflict { context } => ObjError::Conflict(context),
        e => ObjError::Io(anyhow::Error::new(e)),
    }
}

/// A watch that re-establishes itself: the current librados watch, replaced by the
/// re-watch thread after an error; dropping it ends both.
struct RadosWatch {
    slot: Arc<WatchSlot>,
}

struct WatchSlot {
    watch: Mutex<Option<Watch>>,
    /// Set when the handle is dropped: the re-watch thread stops.
    closed: std::sync::atomic::AtomicBool,
}

impl WatchHandle for RadosWatch {}

impl Drop for RadosWatch {
    fn drop(&mut self) {
        self.slot
            .closed
            .store(true, std::sync::atomic::Ordering::Release);
        // Take it out first: unwatching waits for queued callbacks, which must not find
        // the slot locked.
        let w = self.slot.watch.lock().take();
        drop(w);
    }
}

/// How long the OSD keeps a watch its client stopped confirming. librados confirms every
/// `objecter_tick_interval` (5 s), so twice that never drops a live gateway's watch, while
/// a dead gateway's stops delaying every notify (up to its timeout) after 10 s instead of
/// the cluster's 30 s.
const WATCH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Register a librados watch on `name` whose errors start a re-watch thread.
fn start_watch(
    io: &IoCtx,
    name: &str,
    on_notify: DeferredNotifyFn,
    slot: &Arc<WatchSlot>,
) -> Result<Watch, CephError> {
    let cb = on_notify.clone();
    let (io2, name2, weak) = (io.clone(), name.to_string(), Arc::downgrade(slot));
    io.watch_deferred(
        name,
        WATCH_TIMEOUT,
        move |n, pending| cb(&n.payload, Ack::new(move || drop(pending))),
        move |e| {
            tracing::warn!(object = %name2, error = %e, "watch broken; watching again");
            let (io, name, weak, on_notify) =
                (io2.clone(), name2.clone(), weak.clone(), on_notify.clone());
            // Not on the librados callback thread: re-watching there could wait for it.
            let spawned = super::threads::spawn("lunar-rewatch", move || {
                rewatch(&io, &name, &weak, on_notify)
            });
            if let Err(e) = spawned {
                tracing::error!(object = %name2, error = %e, "cannot start the re-watch thread");
            }
        },
    )
}

/// Watch `name` again until it works or the handle is gone, then tell the consumer to
/// reload (empty payload): notifies sent while the watch was down were missed.
fn rewatch(io: &IoCtx, name: &str, weak: &std::sync::Weak<WatchSlot>, on_notify: DeferredNotifyFn) {
    loop {
        let Some(slot) = weak.upgrade() else { return };
        if slot.closed.load(std::sync::atomic::Ordering::Acquire) {
            return;
        }
        let old = slot.watch.lock().take();
        drop(old);
        match start_watch(io, name, on_notify.clone(), &slot) {
            Ok(w) => {
                *slot.watch.lock() = Some(w);
                tracing::info!(object = %name, "watching again; reloading");
                on_notify(&[], Ack::new(|| {}));
                return;
            }
            Err(e) if e.is_blocklisted() => {
                tracing::error!(object = %name, error = %e, "blocklisted: no more notifies on this client");
                return;
            }
            Err(e) => {
                tracing::warn!(object = %name, error = %e, "cannot watch again yet");
                drop(slot);
                std::thread::sleep(REWATCH_PAUSE);
            }
        }
    }
}

impl VersionedObjects for RadosObjects {
    fn read(&self, name: &str) -> Result<Option<Versioned>, ObjError> {
        let o = self.io.read(name).map_err(obj_error)?;
        Ok(o.map(|d| Versioned {
            data: d.data,
            version: d.version,
        }))
    }

    fn write(&self, name: &str, data: &[u8], expected: Option<u64>) -> Result<u64, ObjError> {
        let expect = expected.map_or(Expect::Absent, Expect::Version);
        self.io.write_full(name, data, expect).map_err(obj_error)
    }

    fn notify(
        &self,
        name: &str,
        payload: &[u8],
        timeout: Duration,
    ) -> Result<NotifyReport, ObjError> {
        // The OSD counts the notify timeout in whole seconds, and 0 means its default
        // (30 s): round up, to at least one second.
        let secs = timeout.as_secs() + u64::from(timeout.subsec_nanos() > 0);
        let timeout = Duration::from_secs(secs.max(1));
        let r = self.io.notify(name, payload, timeout).map_err(obj_error)?;
        Ok(NotifyReport {
            acked: r.acks.len(),
            timed_out: r.timeouts.len(),
            timed_out_clients: r.timeouts.iter().map(|(gid, _)| *gid).collect(),
        })
    }

    fn instance(&self) -> u64 {
        self.io.rados().instance_id()
    }

    fn watch_deferred(
        &self,
        name: &str,
        on_notify: DeferredNotifyFn,
    ) -> Result<Box<dyn WatchHandle>, ObjError> {
        // RADOS watches need the object: create it empty if nobody saved it yet (an empty
        // object reads as "nothing saved" in every store).
        match self.io.write_full(name, &[], Expect::Absent) {
            Ok(_) | Err(CephError::Conflict { .. }) => {}
            Err(e) => return Err(obj_error(e)),
        }
        let slot = Arc::new(WatchSlot {
            watch: Mutex::new(None),
            closed: std::sync::atomic::AtomicBool::new(false),
        });
        let w = start_watch(&self.io, name, on_notify, &slot).map_err(obj_error)?;
        *slot.watch.lock() = Some(w);
        Ok(Box::new(RadosWatch { slot }))
    }
}

/// Against a real cluster: `LUNAR_CEPH_CONF` names its ceph.conf (client `admin`; RADOS
/// pool `LUNAR_CEPH_POOL`, default `rbd`). Without it the tests say loudly that they were
/// skipped, or fail when `LUNAR_REQUIRE_CEPH=1` (CI). Every test uses its own group name,
/// so its objects are its own; it removes them when it passes.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::lunmgr::state::{State, StateError, StateStore, STATE_VERSION};
    use crate::scsi::tests::pr_shared;
    use crate::shared::{GatewayRecord, GatewayRegistry, SharedStateStore};
    use storage_core::ceph::{CephConfig, Rados};

    /// The cluster's configuration, or `None` (skip) when there is none.
    fn cluster() -> Option<(CephConfig, String)> {
        let conf = std::env::var_os("LUNAR_CEPH_CONF").filter(|c| !c.is_empty());
        let Some(conf) = conf else {
            assert!(
                std::env::var("LUNAR_REQUIRE_CEPH").as_deref() != Ok("1"),
                "LUNAR_REQUIRE_CEPH=1 but LUNAR_CEPH_CONF is not set"
            );
            // Straight to the process's stderr, past the harness's capture: a skip is seen.
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr(),
                "\n*** SKIPPED shared::rados tests: no Ceph cluster (run tests/scripts/ceph.sh \
                 start DIR and export LUNAR_CEPH_CONF) ***\n"
            );
            return None;
        };
        let pool = std::env::var("LUNAR_CEPH_POOL").unwrap_or_else(|_| "rbd".into());
        Some((
            CephConfig {
                conf: conf.into(),
                client: "admin".into(),
            },
            pool,
        ))
    }

    /// A new client (one "gateway").
    fn connect(cfg: &CephConfig, pool: &str) -> IoCtx {
        let rados = Rados::connect(cfg).expect("connect to the test cluster");
        rados.ioctx(pool).expect("open the test pool")
    }

    /// A fresh group name for `test`, as a guard that removes every `lunar.<group>.*`
    /// object when dropped (also when the test fails: a long CI run must not fill the
    /// throwaway cluster with PR, state and registry objects).
    fn group(test: &str) -> TestGroup {
        TestGroup(format!("t-{test}-{}", uuid::Uuid::new_v4().simple()))
    }

    /// See [`group`]; derefs to the group name.
    struct TestGroup(String);

    impl std::ops::Deref for TestGroup {
        type Target = str;
        fn deref(&self) -> &str {
            &self.0
        }
    }

    impl Drop for TestGroup {
        fn drop(&mut self) {
            let Some((cfg, pool)) = cluster() else { return };
            let prefix = format!("lunar.{}.", self.0);
            // Objects are listed with the `rados` tool (the bindings have no listing).
            let out = std::process::Command::new("rados")
                .arg("-c")
                .arg(&cfg.conf)
                .args(["-p", &pool, "ls"])
                .output();
            let names: Vec<String> = match out {
                Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .filter(|l| l.starts_with(&prefix))
                    .map(str::to_string)
                    .collect(),
                other => {
                    eprintln!("cleanup of {prefix}*: rados ls: {other:?}");
                    return;
                }
            };
            if names.is_empty() {
                return;
            }
            // The test's stores may still watch (their tasks outlive the test body), and a
            // watch that breaks re-creates its object: blocklist the watchers (for a
            // minute; only this test's clients watch its unique names) before removing.
            let cli = |tool: &str, args: &[&str]| {
                std::process::Command::new(tool)
                    .arg("-c")
                    .arg(&cfg.conf)
                    .args(args)
                    .output()
                    .ok()
                    .filter(|o| o.status.success())
                    .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            };
            let mut watchers: Vec<String> = names
                .iter()
                .filter_map(|n| cli("rados", &["-p", &pool, "listwatchers", n]))
                .flat_map(|out| {
                    out.split_whitespace()
                        .filter_map(|w| w.strip_prefix("watcher="))
                        .map(str::to_string)
                        .collect::<Vec<_>>()
                })
                .collect();
            watchers.sort();
            watchers.dedup();
            for w in &watchers {
                if cli("ceph", &["osd", "blocklist", "add", w, "60"]).is_none() {
                    eprintln!("cleanup of {prefix}*: could not blocklist watcher {w}");
                }
            }
            let io = connect(&cfg, &pool);
            if !watchers.is_empty() {
                // Removal must not race the OSDs' learning of the blocklist.
                let _ = io.rados().wait_for_latest_osdmap();
            }
            cleanup(&io, &names);
        }
    }

    /// A group whose objects are removed on drop leaves nothing behind.
    #[test]
    fn rados_test_groups_leave_no_objects() {
        let Some((cfg, pool)) = cluster() else { return };
        let io = connect(&cfg, &pool);
        let g = group("cleanup");
        let names = [
            crate::shared::names::state(&g),
            crate::shared::names::gateways(&g),
            format!("lunar.{}.pr.{}", &*g, uuid::Uuid::new_v4()),
        ];
        for n in &names {
            io.write_full(n, b"x", storage_core::ceph::Expect::Any)
                .expect("write");
        }
        drop(g);
        for n in &names {
            assert!(io.read(n).expect("read").is_none(), "{n} left behind");
        }
    }

    /// Removes every object of `group` whose name we know.
    fn cleanup(io: &IoCtx, names: &[String]) {
        for n in names {
            let _ = io.remove(n);
        }
    }

    fn gateway_factory(
        cfg: CephConfig,
        pool: String,
    ) -> impl Fn() -> Arc<dyn VersionedObjects> + Sync {
        move || RadosObjects::new(connect(&cfg, &pool)) as Arc<dyn VersionedObjects>
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn rados_reserve_through_one_conflicts_on_the_other() {
        let Some((cfg, pool)) = cluster() else { return };
        let g = group("reserve");
        let connect = gateway_factory(cfg.clone(), pool.clone());
        pr_shared::reserve_through_one_conflicts_on_the_other(&connect, &g).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn rados_preempt_and_abort_reaches_the_other_gateway() {
        let Some((cfg, pool)) = cluster() else { return };
        let g = group("abort");
        let connect = gateway_factory(cfg.clone(), pool.clone());
        pr_shared::preempt_and_abort_reaches_the_other_gateway(&connect, &g).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn rados_state_survives_recreating_the_target() {
        let Some((cfg, pool)) = cluster() else { return };
        let g = group("survive");
        let connect = gateway_factory(cfg.clone(), pool.clone());
        pr_shared::state_survives_recreating_the_target(&connect, &g).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn rados_racing_pr_outs_lose_no_registration() {
        let Some((cfg, pool)) = cluster() else { return };
        let g = group("race");
        let connect = gateway_factory(cfg.clone(), pool.clone());
        pr_shared::racing_pr_outs_lose_no_registration(&connect, &g, 4).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn rados_a_change_without_notice_is_enforced_after_takeover() {
        let Some((cfg, pool)) = cluster() else { return };
        let g = group("takeover");
        let connect = gateway_factory(cfg.clone(), pool.clone());
        pr_shared::a_change_without_notice_is_enforced_after_reload(
            &connect,
            &g,
            pr_shared::Reload::Takeover,
        )
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn rados_a_change_without_notice_is_enforced_after_a_version_check() {
        let Some((cfg, pool)) = cluster() else { return };
        let g = group("vcheck");
        let connect = gateway_factory(cfg.clone(), pool.clone());
        pr_shared::a_change_without_notice_is_enforced_after_reload(
            &connect,
            &g,
            pr_shared::Reload::VersionCheck,
        )
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn rados_a_slow_abort_holds_only_its_own_good() {
        let Some((cfg, pool)) = cluster() else { return };
        let g = group("slowabort");
        let connect = gateway_factory(cfg.clone(), pool.clone());
        pr_shared::a_slow_abort_holds_only_its_own_good(&connect, &g).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn rados_a_watcher_that_never_acks() {
        let Some((cfg, pool)) = cluster() else { return };
        let g = group("neverack");
        let connect = gateway_factory(cfg.clone(), pool.clone());
        pr_shared::a_watcher_that_never_acks(&connect, &g).await;
    }

    /// A gateway that does not acknowledge (its watch callback is stuck) delays a PR OUT
    /// by at most the notify timeout: the PR OUT answers GOOD and the change stands.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn rados_a_gateway_that_does_not_ack_does_not_block_a_pr_out() {
        let Some((cfg, pool)) = cluster() else { return };
        let g = group("noack");
        let sh = pr_shared::Shared::new(&g).await;
        let stuck = RadosObjects::new(connect(&cfg, &pool));
        let name = crate::shared::names::pr(&g, sh.identity);
        let (cfg2, pool2) = (cfg.clone(), pool.clone());
        let store = tokio::task::spawn_blocking(move || {
            crate::shared::SharedPrStore::with_notify_timeout(
                RadosObjects::new(connect(&cfg2, &pool2)),
                &g,
                Duration::from_secs(1),
            )
        })
        .await
        .expect("connect");
        let a = pr_shared::host("a", 1, 1);
        let gw = sh.gateway_on(store, &[&a]).await;
        let watch = stuck
            .watch(
                &name,
                Arc::new(|_: &[u8]| std::thread::sleep(Duration::from_secs(4))),
            )
            .expect("watch");
        let mut p = vec![0u8; 24];
        p[8..16].copy_from_slice(&0xAu64.to_be_bytes());
        let started = std::time::Instant::now();
        let r = crate::scsi::tests::run_cmd(
            &gw.target,
            &a,
            &[0x5F, 0, 0, 0, 0, 0, 0, 0, 24, 0],
            bytes::Bytes::from(p),
        )
        .await;
        eprintln!("PR OUT with a silent watcher: {:?}", started.elapsed());
        assert_eq!(r.status, crate::scsi::status::GOOD, "{r:?}");
        let io = connect(&cfg, &pool);
        let stored = io.read(&name).expect("read").expect("object");
        assert!(!stored.data.is_empty(), "the registration is saved");
        drop(watch);
        cleanup(&io, &[name]);
    }

    /// Versioned writes on RADOS: create-exclusive, compare-and-swap, conflicts; a notify
    /// reaches the other client's watch and is acknowledged.
    #[test]
    fn rados_objects_are_versioned_and_notified() {
        let Some((cfg, pool)) = cluster() else { return };
        let name = format!("{}.obj", &*group("objects"));
        let (a, b) = (
            RadosObjects::new(connect(&cfg, &pool)),
            RadosObjects::new(connect(&cfg, &pool)),
        );
        assert!(a.read(&name).expect("read").is_none());
        let v1 = a.write(&name, b"one", None).expect("create");
        assert!(matches!(
            b.write(&name, b"x", None),
            Err(ObjError::Conflict(_))
        ));
        let v2 = b.write(&name, b"two", Some(v1)).expect("cas");
        assert!(matches!(
            a.write(&name, b"three", Some(v1)),
            Err(ObjError::Conflict(_))
        ));
        assert_eq!(
            a.read(&name).expect("read"),
            Some(Versioned {
                data: b"two".to_vec(),
                version: v2
            })
        );
        let heard = Arc::new(Mutex::new(Vec::new()));
        let h = heard.clone();
        let w = b
            .watch(&name, Arc::new(move |p: &[u8]| h.lock().push(p.to_vec())))
            .expect("watch");
        let r = a
            .notify(&name, b"hello", Duration::from_secs(5))
            .expect("notify");
        assert_eq!((r.acked, r.timed_out), (1, 0));
        assert_eq!(*heard.lock(), vec![b"hello".to_vec()]);
        drop(w);
        cleanup(&a.io, &[name]);
    }

    /// The LUN manager's state on RADOS: compare-and-swap between two gateways, the other
    /// one notified, a corrupt object refused by name.
    #[test]
    fn rados_state_store_is_compare_and_swap() {
        let Some((cfg, pool)) = cluster() else { return };
        let g = group("state");
        let (a, b) = (
            SharedStateStore::new(RadosObjects::new(connect(&cfg, &pool)), &g),
            SharedStateStore::new(RadosObjects::new(connect(&cfg, &pool)), &g),
        );
        let heard = Arc::new(Mutex::new(Vec::new()));
        let h = heard.clone();
        b.watch(Arc::new(move |v| h.lock().push(v))).expect("watch");
        assert!(b.load().expect("load").is_none(), "a fresh (empty) object");
        let sa = State {
            version: STATE_VERSION,
            next_job: 1,
            ..Default::default()
        };
        a.save(&sa).expect("seed");
        assert_eq!(*heard.lock(), vec![sa.store_version.get()]);
        let sb = b.load().expect("load").expect("state");
        assert_eq!(sb.next_job, 1);
        let mut sb2 = sb.clone();
        sb2.next_job = 2;
        b.save(&sb2).expect("b saves");
        let mut stale = sa.clone();
        stale.next_job = 3;
        assert!(matches!(a.save(&stale), Err(StateError::Conflict { .. })));
        assert_eq!(a.load().expect("load").expect("state").next_job, 2);
        let io = connect(&cfg, &pool);
        let name = crate::shared::names::state(&g);
        io.write_full(&name, b"{corrupt", Expect::Any)
            .expect("corrupt it");
        assert!(matches!(a.load(), Err(StateError::Corrupt { .. })));
        cleanup(&io, &[name]);
    }

    #[test]
    fn rados_gateway_registry() {
        let Some((cfg, pool)) = cluster() else { return };
        let g = group("gateways");
        let rec = |name: &str, pg: u16| GatewayRecord {
            name: name.into(),
            port_group: pg,
            portals: vec![format!("127.0.0.1:{}", 3260 + pg)],
            last_seen_unix: 5,
            instance: 0,
        };
        let threads: Vec<_> = (1..=3u16)
            .map(|i| {
                let reg = GatewayRegistry::new(RadosObjects::new(connect(&cfg, &pool)), &g);
                let r = rec(&format!("gw{i}"), i);
                std::thread::spawn(move || reg.upsert(&r).expect("upsert"))
            })
            .collect();
        for t in threads {
            t.join().expect("thread");
        }
        let reg = GatewayRegistry::new(RadosObjects::new(connect(&cfg, &pool)), &g);
        assert_eq!(
            reg.list().expect("list"),
            vec![rec("gw1", 1), rec("gw2", 2), rec("gw3", 3)]
        );
        cleanup(&connect(&cfg, &pool), &[crate::shared::names::gateways(&g)]);
    }
}
