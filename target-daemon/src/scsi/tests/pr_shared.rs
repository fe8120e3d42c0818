//! Persistent reservations shared by the gateways of an HA group: two `ScsiTarget`s (two
//! "gateways", each with its own connection and `SharedPrStore`) present the same LUN
//! identity; a PERSISTENT RESERVE OUT through either is decided on the latest shared state,
//! saved by compare-and-swap and published before GOOD.
//!
//! The scenarios take a connection factory, so they run on the in-memory cluster here and
//! against a real Ceph cluster in `shared::rados` (feature `ceph`).

use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;
use crate::scsi::pr::PrStore;
use crate::shared::objects::VersionedObjects;
use crate::shared::{MemCluster, SharedPrStore};

/// Opens one gateway's connection to the cluster.
pub(crate) type Connect<'a> = &'a (dyn Fn() -> Arc<dyn VersionedObjects> + Sync);

const IQN: &str = "iqn.2026-12.io.lunar:ha";

fn pr_out(sa: u8, pr_type: u8) -> [u8; 10] {
    [0x5F, sa, pr_type, 0, 0, 0, 0, 0, 24, 0]
}

fn keys_params(rk: u64, sark: u64) -> Bytes {
    let mut p = vec![0u8; 24];
    p[..8].copy_from_slice(&rk.to_be_bytes());
    p[8..16].copy_from_slice(&sark.to_be_bytes());
    Bytes::from(p)
}

const READ_KEYS: [u8; 10] = [0x5E, 0, 0, 0, 0, 0, 0, 0x20, 0, 0];
const TUR: [u8; 6] = [0; 6];

/// The keys and generation READ KEYS reports.
async fn read_keys(t: &ScsiTarget, n: &Arc<Nexus>) -> (u32, Vec<u64>) {
    let r = run(t, n, 0, &READ_KEYS, Bytes::new()).await;
    assert_eq!(r.status, status::GOOD, "READ KEYS: {r:?}");
    let d = &r.data_in;
    let gen = u32::from_be_bytes([d[0], d[1], d[2], d[3]]);
    let len = u32::from_be_bytes([d[4], d[5], d[6], d[7]]) as usize;
    let mut keys: Vec<u64> = d[8..8 + len]
        .chunks(8)
        .map(|c| u64::from_be_bytes(c.try_into().expect("8 bytes")))
        .collect();
    keys.sort_unstable();
    (gen, keys)
}

/// One gateway: a target named [`IQN`] with the shared LUN as LUN 0, its own store.
pub(crate) struct Gateway {
    pub(crate) target: Arc<ScsiTarget>,
    pub(crate) store: Arc<SharedPrStore>,
}

/// The volume and identity both gateways present (in HA both open the one RBD pool; here
/// both use one local pool).
pub(crate) struct Shared {
    _dir: tempfile::TempDir,
    pool: Pool,
    pub(crate) identity: uuid::Uuid,
    pub(crate) group: String,
}

impl Shared {
    pub(crate) async fn new(group: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let pool = Pool::create(
            &dir.path().join("pool"),
            &PoolOptions {
                capacity_bytes: Some(64 << 20),
                ..Default::default()
            },
        )
        .await
        .expect("create pool");
        pool.create_volume("vol0", BLOCKS * u64::from(BS), BS, Guarantee::None)
            .await
            .expect("create volume");
        Self {
            _dir: dir,
            pool,
            identity: uuid::Uuid::new_v4(),
            group: group.to_string(),
        }
    }

    /// A gateway over a new connection; `nexuses` log in to it.
    pub(crate) async fn gateway(&self, connect: Connect<'_>, nexuses: &[&Arc<Nexus>]) -> Gateway {
        self.gateway_on(SharedPrStore::new(connect(), &self.group), nexuses)
            .await
    }

    /// A gateway with the given store; `nexuses` log in to it.
    pub(crate) async fn gateway_on(
        &self,
        store: Arc<SharedPrStore>,
        nexuses: &[&Arc<Nexus>],
    ) -> Gateway {
        let target = ScsiTarget::with_pr_store(IQN, self.pool.status().chunk_size, store.clone());
        let volume = self.pool.volume("vol0").expect("volume");
        let identity = self.identity;
        let t = target.clone();
        // Attaching reads the shared store: blocking.
        tokio::task::spawn_blocking(move || t.add_lun_with_identity(0, volume, false, identity))
            .await
            .expect("attach task")
            .expect("add lun");
        for n in nexuses {
            target.nexus_login(n);
            settle(&target, n, 0).await;
        }
        Gateway { target, store }
    }
}

/// A nexus through the port group (TPGT) of gateway `gw`.
pub(crate) fn host(name: &str, isid: u64, gw: u16) -> Arc<Nexus> {
    Arc::new(Nexus {
        initiator: format!("iqn.2026-12.test:{name}"),
        isid,
        tpgt: gw,
    })
}

/// REGISTER through one gateway, RESERVE through the other: the first gateway enforces
/// the reservation at once (the change was published before GOOD), and both report the
/// same keys and generation.
pub(crate) async fn reserve_through_one_conflicts_on_the_other(connect: Connect<'_>, group: &str) {
    let sh = Shared::new(group).await;
    let (a1, b2) = (host("a", 1, 1), host("b", 2, 2));
    let gw1 = sh.gateway(connect, &[&a1]).await;
    let gw2 = sh.gateway(connect, &[&b2]).await;
    let ok = |r: ScsiResponse| assert_eq!(r.status, status::GOOD, "{r:?}");
    ok(run(&gw1.target, &a1, 0, &pr_out(0, 0), keys_params(0, 0xA1)).await);
    ok(run(&gw2.target, &b2, 0, &pr_out(0, 0), keys_params(0, 0xB2)).await);
    // B reserves Write Exclusive through gateway 2.
    ok(run(&gw2.target, &b2, 0, &pr_out(1, 1), keys_params(0xB2, 0)).await);
    let r = run(&gw1.target, &a1, 0, &write10(0, 1), pattern(1, 1)).await;
    assert_eq!(
        r.status,
        status::RESERVATION_CONFLICT,
        "A through gw1: {r:?}"
    );
    // A's own RESERVE through gateway 1 conflicts with B's on the shared state.
    let r = run(&gw1.target, &a1, 0, &pr_out(1, 1), keys_params(0xA1, 0)).await;
    assert_eq!(r.status, status::RESERVATION_CONFLICT, "{r:?}");
    ok(run(&gw2.target, &b2, 0, &write10(0, 1), pattern(1, 2)).await);
    let k1 = read_keys(&gw1.target, &a1).await;
    assert_eq!(k1.1, vec![0xA1, 0xB2]);
    assert_eq!(read_keys(&gw2.target, &b2).await, k1);
    // A PREEMPT through gateway 1 removes B: B hears it on gateway 2 (unit attention),
    // then conflicts.
    ok(run(&gw1.target, &a1, 0, &pr_out(4, 1), keys_params(0xA1, 0xB2)).await);
    let r = run(&gw2.target, &b2, 0, &TUR, Bytes::new()).await;
    assert_check(&r, SenseKey::UnitAttention, asc::REGISTRATIONS_PREEMPTED);
    let r = run(&gw2.target, &b2, 0, &write10(0, 1), pattern(1, 3)).await;
    assert_eq!(r.status, status::RESERVATION_CONFLICT, "{r:?}");
    ok(run(&gw1.target, &a1, 0, &write10(0, 1), pattern(1, 4)).await);
    assert_eq!(read_keys(&gw2.target, &b2).await.1, vec![0xA1]);
}

/// The state survives its gateways: a target dropped and built again (a restarted or
/// failed-over gateway, with a new connection) finds every registration and the
/// reservation.
pub(crate) async fn state_survives_recreating_the_target(connect: Connect<'_>, group: &str) {
    let sh = Shared::new(group).await;
    let (a1, b1) = (host("a", 1, 1), host("b", 2, 1));
    let gw = sh.gateway(connect, &[&a1, &b1]).await;
    let ok = |r: ScsiResponse| assert_eq!(r.status, status::GOOD, "{r:?}");
    ok(run(&gw.target, &a1, 0, &pr_out(0, 0), keys_params(0, 0xA)).await);
    ok(run(&gw.target, &b1, 0, &pr_out(0, 0), keys_params(0, 0xB)).await);
    ok(run(&gw.target, &a1, 0, &pr_out(1, 5), keys_params(0xA, 0)).await);
    let before = read_keys(&gw.target, &a1).await;
    drop(gw);
    let a2 = host("a", 1, 2);
    let again = sh.gateway(connect, &[&a1, &b1, &a2]).await;
    assert_eq!(read_keys(&again.target, &a1).await, before);
    // WERO held by A: B (registered) writes, an unregistered nexus does not.
    ok(run(&again.target, &b1, 0, &write10(0, 1), pattern(1, 5)).await);
    let r = run(&again.target, &a2, 0, &write10(0, 1), pattern(1, 6)).await;
    assert_eq!(r.status, status::RESERVATION_CONFLICT, "{r:?}");
}

/// PERSISTENT RESERVE OUTs racing through both gateways (REGISTERs of distinct nexuses,
/// each followed by a key change) lose nothing: every registration is there with its
/// final key, on both gateways, with one generation step per change.
pub(crate) async fn racing_pr_outs_lose_no_registration(
    connect: Connect<'_>,
    group: &str,
    per_gateway: u64,
) {
    let sh = Shared::new(group).await;
    let hosts: Vec<Arc<Nexus>> = (0..2 * per_gateway)
        .map(|i| host(&format!("h{i}"), i + 1, (i % 2) as u16 + 1))
        .collect();
    let on = |gw: u16| -> Vec<&Arc<Nexus>> { hosts.iter().filter(|n| n.tpgt == gw).collect() };
    let gw1 = sh.gateway(connect, &on(1)).await;
    let gw2 = sh.gateway(connect, &on(2)).await;
    let started = std::time::Instant::now();
    let tasks: Vec<_> = hosts
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let t = if n.tpgt == 1 {
                gw1.target.clone()
            } else {
                gw2.target.clone()
            };
            let n = n.clone();
            let key = 0x1000 + i as u64;
            tokio::spawn(async move {
                for (rk, sark) in [(0, key), (key, key + 0x10000)] {
                    let r = run(&t, &n, 0, &pr_out(0, 0), keys_params(rk, sark)).await;
                    assert_eq!(r.status, status::GOOD, "{}: {r:?}", n.initiator);
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("PR OUT task");
    }
    let took = started.elapsed();
    // A figure, not an assertion.
    eprintln!(
        "{} racing PERSISTENT RESERVE OUTs through 2 gateways: {took:?} ({:?} each on average)",
        2 * hosts.len(),
        took / (2 * hosts.len() as u32)
    );
    let want: Vec<u64> = (0..hosts.len() as u64).map(|i| 0x11000 + i).collect();
    let (gen1, keys1) = read_keys(&gw1.target, &hosts[0]).await;
    assert_eq!(keys1, want);
    assert_eq!(gen1 as usize, 2 * hosts.len(), "one generation per change");
    assert_eq!(read_keys(&gw2.target, &hosts[1]).await, (gen1, keys1));
}

/// Records the aborts the device server asks of the transport.
#[derive(Default)]
struct RecordingAborter {
    calls: parking_lot::Mutex<Vec<(u64, crate::scsi::pr::Preempted)>>,
}

impl crate::scsi::TaskAborter for RecordingAborter {
    fn abort_tasks<'a>(
        &'a self,
        lun: u64,
        preempted: &'a crate::scsi::pr::Preempted,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'a>> {
        self.calls.lock().push((lun, preempted.clone()));
        Box::pin(async {})
    }
}

/// PREEMPT AND ABORT through one gateway aborts the preempted nexus's tasks on the other
/// gateway (where it does its I/O) before GOOD, and only there: the issuing gateway's
/// transport is asked too (the nexus might be logged in there), never for the issuer.
pub(crate) async fn preempt_and_abort_reaches_the_other_gateway(connect: Connect<'_>, group: &str) {
    let sh = Shared::new(group).await;
    let (a1, b2) = (host("a", 1, 1), host("b", 2, 2));
    let gw1 = sh.gateway(connect, &[&a1]).await;
    let gw2 = sh.gateway(connect, &[&b2]).await;
    let (ab1, ab2) = (
        Arc::new(RecordingAborter::default()),
        Arc::new(RecordingAborter::default()),
    );
    gw1.target.set_task_aborter(ab1.clone());
    gw2.target.set_task_aborter(ab2.clone());
    let ok = |r: ScsiResponse| assert_eq!(r.status, status::GOOD, "{r:?}");
    ok(run(&gw1.target, &a1, 0, &pr_out(0, 0), keys_params(0, 0xA1)).await);
    ok(run(&gw2.target, &b2, 0, &pr_out(0, 0), keys_params(0, 0xB2)).await);
    ok(run(&gw1.target, &a1, 0, &pr_out(1, 1), keys_params(0xA1, 0)).await);
    assert!(ab1.calls.lock().is_empty() && ab2.calls.lock().is_empty());
    // B preempts A's reservation and registration, with abort, through gateway 2.
    ok(run(&gw2.target, &b2, 0, &pr_out(5, 1), keys_params(0xB2, 0xA1)).await);
    let calls = ab1.calls.lock().clone();
    assert_eq!(calls.len(), 1, "gateway 1 aborted A's tasks before GOOD");
    assert_eq!(calls[0].0, 0);
    assert!(calls[0].1.contains(&a1) && !calls[0].1.contains(&b2));
    let calls = ab2.calls.lock().clone();
    assert_eq!(calls.len(), 1);
    assert!(calls[0].1.contains(&a1) && !calls[0].1.contains(&b2));
    let r = run(&gw1.target, &a1, 0, &TUR, Bytes::new()).await;
    assert_check(&r, SenseKey::UnitAttention, asc::REGISTRATIONS_PREEMPTED);
    let r = run(&gw1.target, &a1, 0, &write10(0, 1), pattern(1, 8)).await;
    assert_eq!(r.status, status::RESERVATION_CONFLICT, "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mem_preempt_and_abort_reaches_the_other_gateway() {
    let cluster = MemCluster::new();
    let connect = move || cluster.client() as Arc<dyn VersionedObjects>;
    preempt_and_abort_reaches_the_other_gateway(&connect, "g").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mem_reserve_through_one_conflicts_on_the_other() {
    let cluster = MemCluster::new();
    let connect = move || cluster.client() as Arc<dyn VersionedObjects>;
    reserve_through_one_conflicts_on_the_other(&connect, "g").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mem_state_survives_recreating_the_target() {
    let cluster = MemCluster::new();
    let connect = move || cluster.client() as Arc<dyn VersionedObjects>;
    state_survives_recreating_the_target(&connect, "g").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mem_racing_pr_outs_lose_no_registration() {
    let cluster = MemCluster::new();
    let connect = move || cluster.client() as Arc<dyn VersionedObjects>;
    racing_pr_outs_lose_no_registration(&connect, "g", 8).await;
}

/// A connection whose writes report a conflict a number of times before going through
/// (another gateway always a step ahead), counting the attempts.
struct Contended {
    inner: Arc<dyn VersionedObjects>,
    conflicts_left: AtomicUsize,
    writes: AtomicUsize,
}

impl VersionedObjects for Contended {
    fn read(
        &self,
        name: &str,
    ) -> Result<Option<crate::shared::objects::Versioned>, crate::shared::objects::ObjError> {
        self.inner.read(name)
    }
    fn write(
        &self,
        name: &str,
        data: &[u8],
        expected: Option<u64>,
    ) -> Result<u64, crate::shared::objects::ObjError> {
        self.writes.fetch_add(1, Ordering::SeqCst);
        let left = self.conflicts_left.load(Ordering::SeqCst);
        if left > 0 {
            self.conflicts_left.store(left - 1, Ordering::SeqCst);
            return Err(crate::shared::objects::ObjError::Conflict(name.into()));
        }
        self.inner.write(name, data, expected)
    }
    fn notify(
        &self,
        name: &str,
        payload: &[u8],
        timeout: std::time::Duration,
    ) -> Result<crate::shared::objects::NotifyReport, crate::shared::objects::ObjError> {
        self.inner.notify(name, payload, timeout)
    }
    fn watch_deferred(
        &self,
        name: &str,
        on_notify: crate::shared::objects::DeferredNotifyFn,
    ) -> Result<Box<dyn crate::shared::objects::WatchHandle>, crate::shared::objects::ObjError>
    {
        self.inner.watch_deferred(name, on_notify)
    }
}

/// A few conflicts are retried on the newer state and the command succeeds; a storm that
/// never ends gives up after the bound with HARDWARE ERROR and changes nothing — no hang.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflicts_are_retried_a_bounded_number_of_times() {
    let cluster = MemCluster::new();
    let contended = Arc::new(Contended {
        inner: cluster.client(),
        conflicts_left: AtomicUsize::new(3),
        writes: AtomicUsize::new(0),
    });
    let c = contended.clone();
    let connect = move || c.clone() as Arc<dyn VersionedObjects>;
    let sh = Shared::new("g").await;
    let a = host("a", 1, 1);
    let gw = sh.gateway(&connect, &[&a]).await;
    let r = run(&gw.target, &a, 0, &pr_out(0, 0), keys_params(0, 0xA)).await;
    assert_eq!(r.status, status::GOOD, "{r:?}");
    assert_eq!(
        contended.writes.load(Ordering::SeqCst),
        4,
        "3 conflicts + 1"
    );
    contended.conflicts_left.store(usize::MAX, Ordering::SeqCst);
    contended.writes.store(0, Ordering::SeqCst);
    let r = run(&gw.target, &a, 0, &pr_out(0, 0), keys_params(0xA, 0xB)).await;
    assert_check(&r, SenseKey::HardwareError, asc::INTERNAL_TARGET_FAILURE);
    assert_eq!(
        contended.writes.load(Ordering::SeqCst),
        crate::scsi::pr::MAX_SHARED_ATTEMPTS as usize
    );
    assert_eq!(
        read_keys(&gw.target, &a).await.1,
        vec![0xA],
        "nothing changed"
    );
}

/// An unreadable shared state: the LUN refuses media access and PERSISTENT RESERVE IN
/// (NOT READY, MANUAL INTERVENTION REQUIRED) instead of running without the reservations
/// it cannot see; a PERSISTENT RESERVE OUT changes nothing; once an administrator removed
/// (or repaired) the object the next PERSISTENT RESERVE IN reads it again and I/O resumes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_shared_state_refuses_media_access_until_repaired() {
    let cluster = MemCluster::new();
    let sh = Shared::new("g").await;
    let object = crate::shared::names::pr("g", sh.identity);
    cluster.put_raw(&object, b"{\"generation\": \"garbage");
    let c = cluster.clone();
    let connect = move || c.client() as Arc<dyn VersionedObjects>;
    let a = host("a", 1, 1);
    let gw = {
        // Not `Shared::gateway`: its settle step expects TEST UNIT READY to pass.
        let store = SharedPrStore::new(connect(), "g");
        let target = ScsiTarget::with_pr_store(IQN, sh.pool.status().chunk_size, store.clone());
        let volume = sh.pool.volume("vol0").expect("volume");
        let id = sh.identity;
        let t = target.clone();
        tokio::task::spawn_blocking(move || t.add_lun_with_identity(0, volume, false, id))
            .await
            .expect("attach task")
            .expect("add lun");
        target.nexus_login(&a);
        let r = run(&target, &a, 0, &TUR, Bytes::new()).await;
        assert_check(
            &r,
            SenseKey::UnitAttention,
            asc::POWER_ON_RESET_OR_BUS_DEVICE_RESET_OCCURRED,
        );
        Gateway { target, store }
    };
    let not_ready = crate::scsi::pr::UNREADABLE_STATE;
    for cdb in [&read10(0, 1)[..], &write10(0, 1)[..], &READ_KEYS[..]] {
        let r = run(&gw.target, &a, 0, cdb, Bytes::new()).await;
        assert_check(&r, SenseKey::NotReady, not_ready);
    }
    // Reporting commands still work.
    let r = run(&gw.target, &a, 0, &[0x12, 0, 0, 0, 36, 0], Bytes::new()).await;
    assert_eq!(r.status, status::GOOD, "INQUIRY: {r:?}");
    let r = run(&gw.target, &a, 0, &pr_out(0, 0), keys_params(0, 0xA)).await;
    assert_check(&r, SenseKey::NotReady, not_ready);
    assert_eq!(
        cluster.get_raw(&object).map(|v| v.data),
        Some(b"{\"generation\": \"garbage".to_vec()),
        "the corrupt object is left for the administrator"
    );
    cluster.remove(&object);
    assert_eq!(read_keys(&gw.target, &a).await, (0, vec![]));
    let r = run(&gw.target, &a, 0, &write10(0, 1), pattern(1, 7)).await;
    assert_eq!(r.status, status::GOOD, "{r:?}");
    let r = run(&gw.target, &a, 0, &pr_out(0, 0), keys_params(0, 0xA)).await;
    assert_eq!(r.status, status::GOOD, "{r:?}");
    assert!(gw.store.shared().is_some());
}

/// A gateway that does not answer (dead or frozen) does not hold up a PERSISTENT RESERVE
/// OUT through another one: the notify times out, the change stands, and the silent
/// gateway has the new state once it answers again (here: at its next reload).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_gateway_does_not_block_a_pr_out() {
    let cluster = MemCluster::new();
    let silent = cluster.client();
    let c = cluster.clone();
    let s = silent.clone();
    let first = std::sync::atomic::AtomicBool::new(true);
    let connect = move || {
        if first.swap(false, Ordering::SeqCst) {
            c.client() as Arc<dyn VersionedObjects>
        } else {
            s.clone() as Arc<dyn VersionedObjects>
        }
    };
    let sh = Shared::new("g").await;
    let (a1, b2) = (host("a", 1, 1), host("b", 2, 2));
    let gw1 = sh.gateway(&connect, &[&a1]).await;
    let gw2 = sh.gateway(&connect, &[&b2]).await;
    silent.set_unresponsive(true);
    let r = run(&gw1.target, &a1, 0, &pr_out(0, 0), keys_params(0, 0xA)).await;
    assert_eq!(r.status, status::GOOD, "{r:?}");
    assert_eq!(
        gw1.store
            .shared()
            .expect("shared")
            .load_latest(sh.identity)
            .expect("load")
            .data,
        gw2.store
            .shared()
            .expect("shared")
            .load_latest(sh.identity)
            .expect("load")
            .data
    );
    silent.set_unresponsive(false);
    // Gateway 2 missed the notice; its next PERSISTENT RESERVE OUT decides on the latest
    // state anyway (A is registered there, so B's RESERVE WE-RO lets A write).
    let r = run(&gw2.target, &b2, 0, &pr_out(0, 0), keys_params(0, 0xB)).await;
    assert_eq!(r.status, status::GOOD, "{r:?}");
    assert_eq!(read_keys(&gw2.target, &b2).await.1, vec![0xA, 0xB]);
    assert_eq!(read_keys(&gw1.target, &a1).await.1, vec![0xA, 0xB]);
}

/// How a gateway comes to reload the state in [`a_change_without_notice_is_enforced_after_reload`].
pub(crate) enum Reload {
    /// It takes the pool over (`ScsiTarget::reload_reservations`).
    Takeover,
    /// Its periodic version check notices the object moved.
    VersionCheck,
    /// Its watch was re-established (`run` simulates it).
    Rewatch(Box<dyn Fn() + Send + Sync>),
}

/// Waits (bounded) until `nexus`'s next TEST UNIT READY through `t` reports `code`.
async fn wait_for_ua(
    t: &ScsiTarget,
    n: &Arc<Nexus>,
    code: scsi_proto::scsi::sense::AdditionalSense,
) {
    for _ in 0..400 {
        let r = run(t, n, 0, &TUR, Bytes::new()).await;
        if r.status == status::CHECK_CONDITION {
            assert_check(&r, SenseKey::UnitAttention, code);
            return;
        }
        assert_eq!(r.status, status::GOOD, "{r:?}");
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    panic!("no unit attention {code:?} for {} within 10 s", n.initiator);
}

/// A change saved by compare-and-swap whose notice never came (its gateway died between
/// the two): the other gateway's I/O checks enforce it once it reloads — when it takes
/// the pool over, when its periodic version check sees the object moved, or when its watch
/// is re-established — and the nexus it preempted there gets REGISTRATIONS PREEMPTED.
pub(crate) async fn a_change_without_notice_is_enforced_after_reload(
    connect: Connect<'_>,
    group: &str,
    reload: Reload,
) {
    let sh = Shared::new(group).await;
    let (a1, b2) = (host("a", 1, 1), host("b", 2, 2));
    let gw1 = sh.gateway(connect, &[&a1]).await;
    let gw2 = sh.gateway(connect, &[&b2]).await;
    let ok = |r: ScsiResponse| assert_eq!(r.status, status::GOOD, "{r:?}");
    ok(run(&gw1.target, &a1, 0, &pr_out(0, 0), keys_params(0, 0xA)).await);
    ok(run(&gw2.target, &b2, 0, &pr_out(0, 0), keys_params(0, 0xB)).await);
    ok(run(&gw2.target, &b2, 0, &pr_out(1, 1), keys_params(0xB, 0)).await);
    // "A preempts B" as a dying gateway saves it: compare-and-swap, no notify.
    let raw = connect();
    let name = crate::shared::names::pr(group, sh.identity);
    let cur = raw.read(&name).expect("read").expect("object");
    let mut st: serde_json::Value = serde_json::from_slice(&cur.data).expect("json");
    let regs = st["registrations"].as_array_mut().expect("registrations");
    regs.retain(|r| r["key"] != 0xB);
    regs[0]["holder"] = serde_json::Value::Bool(true);
    st["generation"] = (st["generation"].as_u64().expect("generation") + 1).into();
    let body = serde_json::to_vec(&st).expect("encode");
    raw.write(&name, &body, Some(cur.version)).expect("cas");
    // Gateway 2 still works on its copy: B, preempted, still writes there.
    ok(run(&gw2.target, &b2, 0, &write10(0, 1), pattern(1, 1)).await);
    match reload {
        Reload::Takeover => {
            let t = gw2.target.clone();
            tokio::task::spawn_blocking(move || t.reload_reservations())
                .await
                .expect("reload");
        }
        Reload::VersionCheck => gw2
            .store
            .start_version_checks(std::time::Duration::from_millis(20))
            .expect("version checks"),
        Reload::Rewatch(f) => tokio::task::spawn_blocking(f).await.expect("rewatch"),
    }
    wait_for_ua(&gw2.target, &b2, asc::REGISTRATIONS_PREEMPTED).await;
    let r = run(&gw2.target, &b2, 0, &write10(0, 1), pattern(1, 2)).await;
    assert_eq!(r.status, status::RESERVATION_CONFLICT, "{r:?}");
    assert_eq!(read_keys(&gw2.target, &b2).await.1, vec![0xA]);
}

/// Holds PREEMPT AND ABORT's aborts until released, saying when one started.
#[derive(Default)]
struct HeldAborter {
    started: tokio::sync::Notify,
    release: tokio::sync::Notify,
}

impl crate::scsi::TaskAborter for HeldAborter {
    fn abort_tasks<'a>(
        &'a self,
        _lun: u64,
        _preempted: &'a crate::scsi::pr::Preempted,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'a>> {
        Box::pin(async move {
            self.started.notify_one();
            self.release.notified().await;
        })
    }
}

/// A PREEMPT AND ABORT through gateway 2 whose aborts on gateway 1 take long holds its own
/// GOOD until they are done, but not the other changes of the LUN: a REGISTER through
/// gateway 2 meanwhile is decided, announced to gateway 1 and answered.
pub(crate) async fn a_slow_abort_holds_only_its_own_good(connect: Connect<'_>, group: &str) {
    let sh = Shared::new(group).await;
    let (a1, b2, c2) = (host("a", 1, 1), host("b", 2, 2), host("c", 3, 2));
    let gw1 = sh.gateway(connect, &[&a1]).await;
    let gw2 = sh.gateway(connect, &[&b2, &c2]).await;
    let held = Arc::new(HeldAborter::default());
    gw1.target.set_task_aborter(held.clone());
    let ok = |r: ScsiResponse| assert_eq!(r.status, status::GOOD, "{r:?}");
    ok(run(&gw1.target, &a1, 0, &pr_out(0, 0), keys_params(0, 0xA)).await);
    ok(run(&gw1.target, &a1, 0, &pr_out(1, 1), keys_params(0xA, 0)).await);
    ok(run(&gw2.target, &b2, 0, &pr_out(0, 0), keys_params(0, 0xB)).await);
    let (t2, b) = (gw2.target.clone(), b2.clone());
    let preempt =
        tokio::spawn(async move { run(&t2, &b, 0, &pr_out(5, 1), keys_params(0xB, 0xA)).await });
    let bound = std::time::Duration::from_secs(10);
    tokio::time::timeout(bound, held.started.notified())
        .await
        .expect("gateway 1 started aborting A's tasks");
    let r = tokio::time::timeout(
        bound,
        run(&gw2.target, &c2, 0, &pr_out(0, 0), keys_params(0, 0xC)),
    )
    .await
    .expect("a REGISTER is not held up by another change's aborts");
    ok(r);
    assert!(
        !preempt.is_finished(),
        "PREEMPT AND ABORT answered before gateway 1's aborts were done"
    );
    held.release.notify_one();
    ok(preempt.await.expect("preempt task"));
    assert_eq!(read_keys(&gw2.target, &c2).await.1, vec![0xB, 0xC]);
}

/// Heartbeats as a test sets them: clients in the set heartbeat on every look.
pub(crate) struct StaticLive(pub(crate) parking_lot::Mutex<Vec<u64>>, AtomicUsize);

impl crate::shared::pr::LiveGateways for StaticLive {
    fn heartbeats(&self) -> anyhow::Result<crate::shared::pr::Heartbeats> {
        let beat = self.1.fetch_add(1, Ordering::SeqCst) as u64;
        Ok(crate::shared::pr::Heartbeats {
            beats: self.0.lock().iter().map(|c| (*c, beat)).collect(),
            owners: Vec::new(),
        })
    }
}

/// A watcher that never acknowledges: when it is no live gateway's (a dead gateway's
/// watch the OSD has not dropped yet), a PERSISTENT RESERVE OUT answers GOOD after the
/// notify timeout; when it is a live gateway's, GOOD is held back and the command ends
/// with HARDWARE ERROR (the change stands here, but that gateway may not enforce it).
pub(crate) async fn a_watcher_that_never_acks(connect: Connect<'_>, group: &str) {
    let sh = Shared::new(group).await;
    let store =
        SharedPrStore::with_notify_timeout(connect(), group, std::time::Duration::from_millis(500));
    let live = Arc::new(StaticLive(
        parking_lot::Mutex::new(Vec::new()),
        AtomicUsize::new(0),
    ));
    store.set_liveness(live.clone());
    let a = host("a", 1, 1);
    let gw = sh.gateway_on(store, &[&a]).await;
    let stuck = connect();
    let held = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let h = held.clone();
    let name = crate::shared::names::pr(group, sh.identity);
    let watch = stuck
        .watch_deferred(&name, Arc::new(move |_: &[u8], ack| h.lock().push(ack)))
        .expect("watch");
    let r = run(&gw.target, &a, 0, &pr_out(0, 0), keys_params(0, 0xA)).await;
    assert_eq!(
        r.status,
        status::GOOD,
        "a dead watcher holds nothing back: {r:?}"
    );
    live.0.lock().push(stuck.instance());
    let r = run(&gw.target, &a, 0, &pr_out(0, 0), keys_params(0xA, 0xB)).await;
    assert_check(&r, SenseKey::HardwareError, asc::INTERNAL_TARGET_FAILURE);
    drop(watch);
    held.lock().clear();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mem_a_change_without_notice_is_enforced_after_takeover() {
    let cluster = MemCluster::new();
    let connect = move || cluster.client() as Arc<dyn VersionedObjects>;
    a_change_without_notice_is_enforced_after_reload(&connect, "g", Reload::Takeover).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mem_a_change_without_notice_is_enforced_after_a_version_check() {
    let cluster = MemCluster::new();
    let connect = move || cluster.client() as Arc<dyn VersionedObjects>;
    a_change_without_notice_is_enforced_after_reload(&connect, "g", Reload::VersionCheck).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mem_a_change_without_notice_is_enforced_after_a_rewatch() {
    let cluster = MemCluster::new();
    let clients = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let (c, cl) = (cluster.clone(), clients.clone());
    let connect = move || {
        let client = c.client();
        cl.lock().push(client.clone());
        client as Arc<dyn VersionedObjects>
    };
    // The second connection is gateway 2's.
    let cl = clients.clone();
    let rewatch = Box::new(move || cl.lock()[1].rewatched());
    a_change_without_notice_is_enforced_after_reload(&connect, "g", Reload::Rewatch(rewatch)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mem_a_slow_abort_holds_only_its_own_good() {
    let cluster = MemCluster::new();
    let connect = move || cluster.client() as Arc<dyn VersionedObjects>;
    a_slow_abort_holds_only_its_own_good(&connect, "g").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mem_a_watcher_that_never_acks() {
    let cluster = MemCluster::new();
    let connect = move || cluster.client() as Arc<dyn VersionedObjects>;
    a_watcher_that_never_acks(&connect, "g").await;
}

/// A LUN's watch on its shared state ends with the LUN (and only with the last LUN of the
/// gateway presenting that identity).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watch_ends_with_the_last_lun_presenting_the_identity() {
    let cluster = MemCluster::new();
    let c = cluster.clone();
    let connect = move || c.client() as Arc<dyn VersionedObjects>;
    let sh = Shared::new("g").await;
    let name = crate::shared::names::pr("g", sh.identity);
    let a = host("a", 1, 1);
    let gw = sh.gateway(&connect, &[&a]).await;
    // The same identity as LUN 1 too (one watch for both).
    let (t, volume, id) = (
        gw.target.clone(),
        sh.pool.volume("vol0").expect("volume"),
        sh.identity,
    );
    tokio::task::spawn_blocking(move || t.add_lun_with_identity(1, volume, false, id))
        .await
        .expect("attach task")
        .expect("add lun 1");
    assert_eq!(cluster.watchers(&name), 1);
    gw.target.remove_lun(0).expect("remove LUN 0");
    assert_eq!(cluster.watchers(&name), 1, "LUN 1 still presents it");
    gw.target.remove_lun(1).expect("remove LUN 1");
    // Unwatching runs on a thread of its own: wait for it, with a bound.
    for _ in 0..400 {
        if cluster.watchers(&name) == 0 {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    panic!(
        "the watch outlived the LUNs: {} left",
        cluster.watchers(&name)
    );
}
