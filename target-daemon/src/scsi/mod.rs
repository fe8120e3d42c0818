//! The SCSI device server: LUN table per target, unit attentions, SCSI-2 reservations and
//! SPC/SBC command execution on storage-core volumes.
//!
//! Transports (the iSCSI front end today) are thin shells over this module, like LIO's
//! fabric modules: they hand over a CDB, its LUN, nexus and Data-Out, and get back status,
//! sense and Data-In. Everything SCSI is decided here: which commands exist, how CDB fields
//! are validated (via `scsi_proto::scsi`), what unit attention to report, what sense a
//! storage error becomes.

pub mod alua;
pub mod data_out;
pub mod lun;
pub mod pr;
mod sbc;
pub mod sense_map;
mod spc;
pub mod ua;
mod xcopy;

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use parking_lot::RwLock;
use scsi_proto::scsi::cdb::{self, Cdb, Command};
use scsi_proto::scsi::opcode;
use scsi_proto::scsi::sense::{asc, Sense, SenseFormat, SenseKey};
use storage_core::Volume;

pub use data_out::DataOut;
pub use lun::{Lun, LunShape};
pub use scsi_proto::scsi::sense;
/// SCSI status codes (SAM-5 5.3), scsi-proto's: `crate::scsi::status::GOOD` and
/// `scsi_proto::scsi::status::GOOD` are one constant.
pub use scsi_proto::scsi::status;

/// I_T nexus: who is talking through which port. SCSI state (UAs, reservations) keys on it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Nexus {
    /// Initiator name (IQN).
    pub initiator: String,
    /// 48-bit ISID.
    pub isid: u64,
    /// Target portal group tag (the relative target port).
    pub tpgt: u16,
}

/// Task attribute (SAM-5 8.6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TaskAttr {
    /// SIMPLE: may run in any order relative to other SIMPLE commands.
    Simple,
    /// ORDERED: runs after every older command and before every newer one.
    Ordered,
    /// HEAD OF QUEUE: runs before every queued command not yet started.
    HeadOfQueue,
    /// ACA: the only kind accepted while an auto contingent allegiance is in effect.
    Aca,
}

/// One command as a transport delivers it.
#[derive(Clone, Debug)]
pub struct ScsiRequest {
    /// The I_T nexus.
    pub nexus: Arc<Nexus>,
    /// Decoded LUN number.
    pub lun: u64,
    /// CDB (may be padded beyond the command's length).
    pub cdb: Bytes,
    /// All Data-Out the initiator sent, in the pieces it arrived in.
    pub data_out: DataOut,
    /// The initiator's Data-In allocation (EDTL for reads).
    pub expected_data_in: u32,
    /// Task attribute.
    pub attr: TaskAttr,
    /// Initiator task tag, for logs.
    pub tag: u32,
}

/// The outcome of a command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScsiResponse {
    /// SCSI status.
    pub status: u8,
    /// Sense data (fixed or descriptor format per D_SENSE) with CHECK CONDITION.
    pub sense: Option<Bytes>,
    /// Data-In, already limited to the CDB's allocation length; it may still exceed the
    /// transport's expected length (the transport truncates and reports the overflow).
    pub data_in: Bytes,
    /// The Data-Out length the command called for (SPDTL: transfer length x block size,
    /// parameter list length...), so the transport can compute write residuals; 0 for
    /// commands without Data-Out.
    pub data_out_used: u32,
}

impl ScsiResponse {
    /// GOOD with Data-In.
    pub fn good(data_in: Bytes) -> Self {
        Self {
            status: status::GOOD,
            sense: None,
            data_in,
            data_out_used: 0,
        }
    }

    /// A bare status without data or sense (e.g. RESERVATION CONFLICT, BUSY).
    pub fn status(status: u8) -> Self {
        Self {
            status,
            sense: None,
            data_in: Bytes::new(),
            data_out_used: 0,
        }
    }
}

/// CHECK CONDITION carrying `sense` in `format`. Transports use this for errors they detect
/// themselves (e.g. a Data-Out protocol violation → ABORTED COMMAND, DATA PHASE ERROR).
pub fn check_condition(sense: &Sense, format: SenseFormat) -> ScsiResponse {
    ScsiResponse {
        status: status::CHECK_CONDITION,
        sense: Some(Bytes::from(sense.encode(format))),
        data_in: Bytes::new(),
        data_out_used: 0,
    }
}

/// Aborts tasks for the device server, which does not own them: PERSISTENT RESERVE OUT
/// with PREEMPT AND ABORT aborts the tasks of the preempted I_T nexuses (SPC-4,
/// "preempting and aborting") and only the transport knows where those tasks run. The
/// transport registers one per target with [`ScsiTarget::set_task_aborter`].
pub trait TaskAborter: Send + Sync {
    /// Aborts every task addressed to `lun` by an I_T nexus that `preempted` contains, as
    /// ABORT TASK SET from each of those nexuses would (the tasks end without a response),
    /// and resolves once they are gone. `preempted` never contains the issuer's nexus, so
    /// the PREEMPT AND ABORT command (and every other task of its nexus) is left alone.
    fn abort_tasks<'a>(
        &'a self,
        lun: u64,
        preempted: &'a pr::Preempted,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>>;
}

/// A LUN appeared on, changed size on, or left a target. See [`LunObserver`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LunEvent {
    /// `lun` now serves `volume`.
    Attached {
        /// LUN number.
        lun: u64,
        /// Volume (= LUN) name.
        volume: String,
        /// Logical size in bytes.
        size_bytes: u64,
        /// Logical block size.
        block_size: u32,
    },
    /// `lun`'s volume now has `size_bytes`.
    Resized {
        /// LUN number.
        lun: u64,
        /// New logical size in bytes.
        size_bytes: u64,
    },
    /// `lun` is gone.
    Detached {
        /// LUN number.
        lun: u64,
    },
}

/// Learns when LUNs come and go on a target. The iSCSI front end needs no such help (it
/// asks the device server on every command), but fabrics that set something up per LUN do:
/// LIO needs a TCMU backstore and a fabric LUN link for each. Because LUN changes of every
/// kind (map, unmap, delete, clone completion, refresh) go through
/// [`ScsiTarget::add_lun_with_identity`] and [`ScsiTarget::remove_lun`], an observer sees
/// exactly what initiators see: a clone still being created never reaches it.
pub trait LunObserver: Send + Sync {
    /// Called after the change took effect on the device server, with no lock held. Must
    /// not block: queue the work.
    fn lun_event(&self, target: &str, event: LunEvent);
}

/// A reservation change saved through another target or gateway of the HA group: the
/// LUNs presented under its identity install the new state (if newer than theirs), raise
/// its unit attentions for the nexuses logged in here (with those of changes this gateway
/// missed, see `PrState::account`), and have the preempted nexuses' tasks aborted — all
/// before the publisher is acknowledged. The issuing target itself did all that when it
/// committed, so it ignores its own notice.
impl pr::PrListener for ScsiTarget {
    fn pr_changed(&self, identity: uuid::Uuid, notice: &pr::PrNotice, done: &pr::NoticeDone) {
        let own = self
            .pr_store
            .as_ref()
            .and_then(|s| s.shared())
            .is_some_and(|s| s.instance() == notice.origin);
        if own && notice.target == self.name {
            return;
        }
        let state = pr::VersionedPr {
            data: notice.data.clone(),
            version: notice.version,
        };
        let announced: Vec<(Nexus, sense::AdditionalSense)> = notice
            .uas
            .iter()
            .map(|(n, a, q)| (n.clone(), sense::AdditionalSense::new(*a, *q)))
            .collect();
        for lun in self.luns_with_identity(identity) {
            let owed =
                lun.pr_install_notice(&state, notice.base, &announced, notice.issuer.as_ref());
            tracing::debug!(target = %self.name, lun = lun.id, %identity, version = notice.version, unit_attentions = owed.len(), "reservation change from another gateway");
            for (nexus, code) in owed {
                self.uas.establish(&nexus, lun.id, code);
            }
            if let Some(preempted) = &notice.abort {
                self.abort_in_background(lun.id, preempted, done);
            }
        }
    }

    fn pr_reloaded(&self, identity: uuid::Uuid, latest: &pr::VersionedPr) {
        for lun in self.luns_with_identity(identity) {
            let missed = lun.pr_resync(latest);
            if !missed.is_empty() {
                tracing::info!(target = %self.name, lun = lun.id, %identity, version = latest.version, unit_attentions = missed.len(), "reservation changes missed here; unit attentions derived");
            }
            for (nexus, code) in missed {
                self.uas.establish(&nexus, lun.id, code);
            }
        }
    }

    fn pr_unreadable(&self, identity: uuid::Uuid, why: &str) {
        for lun in self.luns_with_identity(identity) {
            lun.pr_mark_unreadable(why);
        }
    }
}

/// Has `aborter` abort the tasks of the `preempted` nexuses on `lun` of `target` and waits
/// (at most [`PREEMPT_ABORT_WAIT`]) until they are gone.
async fn abort_with(
    aborter: Option<Arc<dyn TaskAborter>>,
    target: &str,
    lun: u64,
    preempted: &pr::Preempted,
) {
    let Some(aborter) = aborter else {
        return;
    };
    let wait = tokio::time::timeout(PREEMPT_ABORT_WAIT, aborter.abort_tasks(lun, preempted));
    if wait.await.is_err() {
        tracing::warn!(%target, lun, "PREEMPT AND ABORT: aborted tasks still running after {}s", PREEMPT_ABORT_WAIT.as_secs());
    }
}

/// How often taking the volumes away logs the LUN it is still waiting for.
const DRAIN_WARN_EVERY: Duration = Duration::from_secs(5);

/// How long PREEMPT AND ABORT waits for the aborted tasks to be gone before it completes
/// anyway (the state change has taken effect and the aborts were requested).
const PREEMPT_ABORT_WAIT: Duration = Duration::from_secs(10);

/// One per target (IQN): its LUN map and per-nexus state.
pub struct ScsiTarget {
    name: String,
    luns: RwLock<BTreeMap<u64, Arc<Lun>>>,
    uas: Arc<ua::UnitAttentions>,
    chunk_size: u32,
    /// Where the LUNs' persistent reservation state is kept across restarts (APTPL);
    /// `None`: APTPL is refused.
    pr_store: Option<Arc<dyn pr::PrStore>>,
    /// TPGTs of the portal groups the target is exported through (REPORT TARGET PORT
    /// GROUPS lists them all); empty until the transport says (see `set_port_groups`).
    port_groups: RwLock<Vec<u16>>,
    /// Set by the transport: aborts the tasks of nexuses preempted by PREEMPT AND ABORT.
    task_aborter: RwLock<Option<Arc<dyn TaskAborter>>>,
    /// Set by fabrics that act per LUN (LIO).
    observer: RwLock<Option<Arc<dyn LunObserver>>>,
    /// The HA group's ALUA state (set once by the daemon of a gateway); `None`: a single
    /// Lunar, every path active/optimized.
    alua: std::sync::OnceLock<Arc<alua::AluaView>>,
    /// The view generation the ASYMMETRIC ACCESS STATE CHANGED unit attentions were raised
    /// for: read without a lock on every command, written under `alua_raise` after the
    /// unit attentions are queued, so a command that sees it current knows they are.
    alua_seen: std::sync::atomic::AtomicU64,
    alua_raise: parking_lot::Mutex<()>,
    /// The runtime the target was built on: a change published through a shared
    /// reservation store arrives on a store thread, which runs PREEMPT AND ABORT's aborts
    /// on it (`None` outside a runtime: only the state changes).
    runtime: Option<tokio::runtime::Handle>,
    /// Whether the store has a volatile write cache (see `Lun::volatile_cache`); LUNs
    /// attached from now on follow it.
    volatile_cache: std::sync::atomic::AtomicBool,
}

impl ScsiTarget {
    /// A target with no LUNs.
    pub fn new(name: &str) -> Arc<Self> {
        Self::with_chunk_size(name, storage_core::DEFAULT_CHUNK_SIZE)
    }

    /// A target whose LUNs live on a pool with `chunk_size`-byte chunks (PoolStatus::
    /// chunk_size): the chunk is the OPTIMAL UNMAP GRANULARITY reported in the Block Limits
    /// page (capped at 1 MiB), the unit the store can actually free.
    pub fn with_chunk_size(name: &str, chunk_size: u32) -> Arc<Self> {
        Self::build(name, chunk_size, None)
    }

    /// Like [`ScsiTarget::with_chunk_size`], with the store its LUNs keep APTPL persistent
    /// reservation state in (reloaded when a LUN is attached). The daemon gives each target
    /// the [`pr::FileStore`] of its data directory.
    pub fn with_pr_store(name: &str, chunk_size: u32, store: Arc<dyn pr::PrStore>) -> Arc<Self> {
        Self::build(name, chunk_size, Some(store))
    }

    fn build(name: &str, chunk_size: u32, pr_store: Option<Arc<dyn pr::PrStore>>) -> Arc<Self> {
        let target = Arc::new(Self {
            name: name.to_string(),
            luns: RwLock::new(BTreeMap::new()),
            uas: Default::default(),
            chunk_size,
            pr_store,
            port_groups: RwLock::new(Vec::new()),
            task_aborter: RwLock::new(None),
            observer: RwLock::new(None),
            alua: std::sync::OnceLock::new(),
            alua_seen: std::sync::atomic::AtomicU64::new(0),
            alua_raise: parking_lot::Mutex::new(()),
            runtime: tokio::runtime::Handle::try_current().ok(),
            volatile_cache: std::sync::atomic::AtomicBool::new(true),
        });
        if let Some(shared) = target.pr_store.as_ref().and_then(|s| s.shared()) {
            // Weak: the store (shared by every target of the gateway) must not keep a
            // removed target alive.
            let me: std::sync::Weak<dyn pr::PrListener> =
                Arc::downgrade(&(target.clone() as Arc<dyn pr::PrListener>));
            shared.listen(me);
        }
        target
    }

    /// The target's name (IQN).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Records the portal group tags (TPGTs) the target is exported through; REPORT TARGET
    /// PORT GROUPS then reports one target port group per tag. Set by the transport (the
    /// iSCSI server) when targets and portals are configured.
    pub fn set_port_groups(&self, tpgts: &[u16]) {
        let mut v = tpgts.to_vec();
        v.sort_unstable();
        v.dedup();
        *self.port_groups.write() = v;
    }

    /// Makes the target a gateway's: REPORT TARGET PORT GROUPS lists the view's groups, VPD
    /// 83h reports the local group, commands are refused as the local state requires, and
    /// every change of the view raises ASYMMETRIC ACCESS STATE CHANGED (see `alua.rs`). Set
    /// once, before the target is exported; a second view is ignored (logged).
    pub fn set_alua(&self, view: Arc<alua::AluaView>) {
        let generation = view.generation();
        if self.alua.set(view).is_err() {
            tracing::error!(target = %self.name, "ALUA view set twice; keeping the first");
            return;
        }
        // The state the target starts in is not a change its nexuses missed.
        self.alua_seen
            .store(generation, std::sync::atomic::Ordering::Release);
    }

    /// Whether the LUNs' store has a volatile write cache: `true` (the default) for a pool
    /// on a file or block device (page cache: WCE=1, changeable, SYNCHRONIZE CACHE needed),
    /// `false` for a pool on an RBD image (WCE=0 and fixed: every write is on the OSDs when
    /// it completes). Applies to LUNs attached afterwards: set it before adding LUNs.
    pub fn set_volatile_write_cache(&self, volatile: bool) {
        self.volatile_cache
            .store(volatile, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether LUNs attached from now on report a volatile write cache (see
    /// [`ScsiTarget::set_volatile_write_cache`]).
    pub fn volatile_write_cache(&self) -> bool {
        self.volatile_cache
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The ALUA view, on a gateway.
    pub fn alua(&self) -> Option<&Arc<alua::AluaView>> {
        self.alua.get()
    }

    /// Makes `view` the ALUA view of LUN `lun` (its pool's, on a gateway with several
    /// pools: a sibling of the target's view, see [`alua::AluaView::sibling`]). Set once per
    /// LUN, right after it is attached; `false` if there is no such LUN or it has a view.
    pub fn set_lun_alua(&self, lun: u64, view: Arc<alua::AluaView>) -> bool {
        self.lun(lun).is_some_and(|l| l.alua.set(view).is_ok())
    }

    /// The ALUA view that decides for `lun`: its pool's, else the target's.
    pub fn alua_of<'a>(&'a self, lun: Option<&'a Lun>) -> Option<&'a Arc<alua::AluaView>> {
        lun.and_then(|l| l.alua.get()).or_else(|| self.alua.get())
    }

    /// The relative target port (= target port group) a nexus reaches the LUNs through:
    /// the gateway's group in an HA group, else the nexus's TPGT (0 reported as 1).
    fn relative_port(&self, nexus: &Nexus) -> u16 {
        match self.alua.get() {
            Some(v) => v.local(),
            None => nexus.tpgt.max(1),
        }
    }

    /// Raises ASYMMETRIC ACCESS STATE CHANGED on every LUN for every nexus if the view
    /// changed since the last time (SPC-4 5.16.2.5). One atomic load when nothing changed.
    fn raise_alua_change(&self, view: &alua::AluaView) {
        use std::sync::atomic::Ordering;
        if self.alua_seen.load(Ordering::Acquire) == view.generation() {
            return;
        }
        let _turn = self.alua_raise.lock();
        let generation = view.generation();
        if self.alua_seen.load(Ordering::Acquire) == generation {
            return;
        }
        self.uas
            .establish_luns(&self.luns(), asc::ASYMMETRIC_ACCESS_STATE_CHANGED, None);
        self.alua_seen.store(generation, Ordering::Release);
    }

    /// The TPGTs set by [`ScsiTarget::set_port_groups`], ascending (empty: unknown).
    pub fn port_groups(&self) -> Vec<u16> {
        self.port_groups.read().clone()
    }

    /// Registers the transport's [`TaskAborter`] (replacing any earlier one). Without one,
    /// PREEMPT AND ABORT only changes the reservation state, like PREEMPT.
    pub fn set_task_aborter(&self, aborter: Arc<dyn TaskAborter>) {
        *self.task_aborter.write() = Some(aborter);
    }

    /// Registers the fabric's [`LunObserver`]. It hears of changes from now on; the LUNs
    /// already there are in [`ScsiTarget::attached_luns`] (read it after registering, and
    /// ignore an `Attached` event for a LUN already handled, so none slips between).
    pub fn set_lun_observer(&self, observer: Arc<dyn LunObserver>) {
        *self.observer.write() = Some(observer);
    }

    /// An `Attached` event for every LUN the target has now.
    pub fn attached_luns(&self) -> Vec<LunEvent> {
        self.luns
            .read()
            .values()
            .map(|l| attached_event(l))
            .collect()
    }

    /// Drops the observer (the fabric stopped exporting this target).
    pub fn clear_lun_observer(&self) {
        *self.observer.write() = None;
    }

    fn notify(&self, event: LunEvent) {
        let obs = self.observer.read().clone();
        if let Some(o) = obs {
            o.lun_event(&self.name, event);
        }
    }

    /// The volume behind `lun` changed size: tells the observer (initiators learn it from
    /// CAPACITY DATA HAS CHANGED, which the LUN raises on its own).
    pub fn lun_resized(&self, lun: u64) {
        if let Some(l) = self.lun(lun) {
            self.notify(LunEvent::Resized {
                lun,
                size_bytes: l.num_blocks() * u64::from(l.block_size()),
            });
        }
    }

    /// PREEMPT AND ABORT: has the transport abort the preempted nexuses' tasks on `lun`
    /// and waits (at most [`PREEMPT_ABORT_WAIT`]) until they are gone.
    async fn abort_preempted(&self, lun: u64, preempted: &pr::Preempted) {
        let aborter = self.task_aborter.read().clone();
        abort_with(aborter, &self.name, lun, preempted).await;
    }

    /// A PREEMPT AND ABORT made through another gateway: the aborts run on the target's
    /// runtime, not on the store's notice thread (which would hold up every other notice
    /// meanwhile); the notice's acknowledgement (`done`) waits for them, because the
    /// issuer's GOOD must mean the preempted nexuses' tasks are gone here too (SPC-4,
    /// PREEMPT AND ABORT: the tasks are aborted before the command completes). Without a
    /// runtime only the state changes.
    fn abort_in_background(&self, lun: u64, preempted: &pr::Preempted, done: &pr::NoticeDone) {
        let Some(rt) = &self.runtime else {
            return;
        };
        let aborter = self.task_aborter.read().clone();
        let (name, preempted, done) = (self.name.clone(), preempted.clone(), done.clone());
        rt.spawn(async move {
            abort_with(aborter, &name, lun, &preempted).await;
            drop(done);
        });
    }

    /// Reload the reservation state of every LUN kept in a shared store from the store
    /// and establish the unit attentions of changes this gateway missed: a gateway taking
    /// the pool over calls this before it serves I/O, so its conflict checks do not run on
    /// a copy a lost notice left stale. A LUN whose state cannot be read refuses media
    /// access until it can (ADR 0013). Blocking.
    pub fn reload_reservations(&self) {
        let luns: Vec<Arc<Lun>> = self.luns.read().values().cloned().collect();
        for lun in luns {
            let Some((store, identity)) = lun.pr.lock().shared_store() else {
                continue;
            };
            let Some(shared) = store.shared() else {
                continue;
            };
            match shared.load_latest(identity) {
                Ok(v) => {
                    for (nexus, code) in lun.pr_resync(&v) {
                        self.uas.establish(&nexus, lun.id, code);
                    }
                }
                Err(e) => {
                    tracing::error!(target = %self.name, lun = lun.id, %identity, error = format!("{e:#}"), "cannot reload the shared reservation state; media access refused until it can be read");
                    lun.pr_mark_unreadable(&format!("{e:#}"));
                }
            }
        }
    }

    /// The LUNs presented under `identity` (normally at most one per target).
    fn luns_with_identity(&self, identity: uuid::Uuid) -> Vec<Arc<Lun>> {
        self.luns
            .read()
            .values()
            .filter(|l| l.identity_uuid() == identity)
            .cloned()
            .collect()
    }

    /// Attach a volume as `lun`. Logged-in nexuses get POWER ON/RESET on the new LUN and
    /// REPORTED LUNS DATA HAS CHANGED on the others.
    pub fn add_lun(&self, lun: u64, volume: Volume, read_only: bool) -> anyhow::Result<()> {
        let identity = volume.uuid();
        self.add_lun_with_identity(lun, volume, read_only, identity)
    }

    /// Attach a volume as `lun` under a SCSI identity of its own (the UUID the NAA id and
    /// unit serial derive from): a refreshed clone keeps the identity hosts know it by,
    /// although its volume is a new one.
    pub fn add_lun_with_identity(
        &self,
        lun: u64,
        volume: Volume,
        read_only: bool,
        identity: uuid::Uuid,
    ) -> anyhow::Result<()> {
        if scsi_proto::scsi::report_luns::encode_lun(lun).is_none() {
            anyhow::bail!("LUN {lun} cannot be addressed (LUN numbers go up to 16383)");
        }
        let block_size = volume.block_size();
        if block_size == 0 || !block_size.is_power_of_two() {
            anyhow::bail!(
                "volume {:?} has an unusable block size {block_size}",
                volume.name()
            );
        }
        self.insert_lun(lun, read_only, |pr_store| {
            Lun::with_identity(lun, volume, read_only, self.chunk_size, identity, pr_store)
        })
    }

    /// Attach a LUN without a volume (a standby gateway of an HA group): INQUIRY, VPD,
    /// READ CAPACITY, REPORT LUNS and persistent reservations work from `shape`; media
    /// access is refused until [`ScsiTarget::set_lun_volume`]. Same unit attentions and
    /// events as [`ScsiTarget::add_lun_with_identity`].
    pub fn add_pool_less_lun(
        &self,
        lun: u64,
        shape: LunShape,
        read_only: bool,
    ) -> anyhow::Result<()> {
        if scsi_proto::scsi::report_luns::encode_lun(lun).is_none() {
            anyhow::bail!("LUN {lun} cannot be addressed (LUN numbers go up to 16383)");
        }
        if shape.block_size == 0 || !shape.block_size.is_power_of_two() {
            anyhow::bail!(
                "LUN {:?} has an unusable block size {} (its record lacks the geometry?)",
                shape.name,
                shape.block_size
            );
        }
        self.insert_lun(lun, read_only, |pr_store| {
            Lun::pool_less(lun, shape, read_only, self.chunk_size, pr_store)
        })
    }

    /// Gives `lun` its volume (the pool was attached); see [`Lun::set_volume`].
    pub async fn set_lun_volume(&self, lun: u64, volume: Volume) -> anyhow::Result<()> {
        let Some(l) = self.lun(lun) else {
            anyhow::bail!("LUN {lun} does not exist on target {}", self.name);
        };
        if volume.block_size() != l.block_size() {
            anyhow::bail!(
                "volume {:?} has {}-byte blocks, LUN {lun} presents {}-byte blocks",
                volume.name(),
                volume.block_size(),
                l.block_size()
            );
        }
        let before = l.num_blocks();
        l.set_volume(volume).await;
        if l.num_blocks() != before {
            self.lun_resized(lun);
        }
        Ok(())
    }

    /// Takes the volumes away from every LUN, each once its media commands have finished
    /// (see [`Lun::drain_volume`]). The LUNs stay, with their identity, reservations and
    /// unit attentions.
    pub async fn drain_volumes(&self) {
        let ids = self.luns();
        self.drain_lun_volumes(&ids).await;
    }

    /// [`ScsiTarget::drain_volumes`] for the LUNs numbered `ids` only (the LUNs of one
    /// pool, on a gateway whose other pools stay served).
    pub async fn drain_lun_volumes(&self, ids: &[u64]) {
        let luns: Vec<Arc<Lun>> = {
            let map = self.luns.read();
            ids.iter().filter_map(|id| map.get(id).cloned()).collect()
        };
        for l in luns {
            // Commands end on their own (a fenced gateway's I/O fails at once); one that
            // does not is named in the log rather than waited on silently.
            let drain = l.drain_volume();
            tokio::pin!(drain);
            let mut waited = 0u64;
            loop {
                tokio::select! {
                    _ = &mut drain => break,
                    () = tokio::time::sleep(DRAIN_WARN_EVERY) => {
                        waited += DRAIN_WARN_EVERY.as_secs();
                        tracing::warn!(target = %self.name, lun = l.id, waited_secs = waited, "detaching the pool: media commands still running on the LUN");
                    }
                }
            }
        }
    }

    /// The LUN numbered `lun`.
    pub fn get_lun(&self, lun: u64) -> Option<Arc<Lun>> {
        self.lun(lun)
    }

    fn insert_lun(
        &self,
        lun: u64,
        read_only: bool,
        make: impl FnOnce(Option<Arc<dyn pr::PrStore>>) -> Lun,
    ) -> anyhow::Result<()> {
        let others = {
            let mut luns = self.luns.write();
            if luns.contains_key(&lun) {
                anyhow::bail!("LUN {lun} already exists on target {}", self.name);
            }
            let others: Vec<u64> = luns.keys().copied().collect();
            let mut entry = make(self.pr_store.clone());
            entry.set_volatile_cache(
                self.volatile_cache
                    .load(std::sync::atomic::Ordering::Relaxed),
            );
            let name = entry.name();
            entry.metrics = Some(Arc::new(
                crate::metrics::global().lun(&self.name, lun, &name),
            ));
            let entry = Arc::new(entry);
            luns.insert(lun, entry.clone());
            (others, entry)
        };
        let (others, entry) = others;
        self.notify(attached_event(&entry));
        self.uas
            .establish_lun(lun, asc::POWER_ON_RESET_OR_BUS_DEVICE_RESET_OCCURRED, None);
        self.uas
            .establish_luns(&others, asc::REPORTED_LUNS_DATA_HAS_CHANGED, None);
        tracing::info!(target = %self.name, lun, read_only, "LUN attached");
        Ok(())
    }

    /// Detach `lun`; the remaining LUNs report REPORTED LUNS DATA HAS CHANGED.
    pub fn remove_lun(&self, lun: u64) -> anyhow::Result<()> {
        let remaining = {
            let mut luns = self.luns.write();
            let Some(gone) = luns.remove(&lun) else {
                anyhow::bail!("LUN {lun} does not exist on target {}", self.name);
            };
            crate::metrics::global().remove_lun(&self.name, lun, &gone.name());
            luns.keys().copied().collect::<Vec<_>>()
        };
        self.uas.remove_lun(lun);
        self.uas
            .establish_luns(&remaining, asc::REPORTED_LUNS_DATA_HAS_CHANGED, None);
        self.notify(LunEvent::Detached { lun });
        tracing::info!(target = %self.name, lun, "LUN detached");
        Ok(())
    }

    /// LUN numbers, ascending.
    pub fn luns(&self) -> Vec<u64> {
        self.luns.read().keys().copied().collect()
    }

    /// The NAA designator `lun` reports in VPD page 83h (what hosts identify the disk by).
    pub fn lun_naa(&self, lun: u64) -> Option<[u8; 16]> {
        self.lun(lun).map(|l| l.naa())
    }

    fn lun(&self, lun: u64) -> Option<Arc<Lun>> {
        self.luns.read().get(&lun).cloned()
    }

    /// Bytes of Data-Out a transport should collect for a command before executing it:
    /// transfer length x block size for writes, the parameter list length for MODE SELECT,
    /// UNMAP, ... `None` means "all the initiator sends" (COMPARE AND WRITE, WRITE SAME).
    /// `Some(0)` when the command will fail without using any data: the LUN does not exist,
    /// the CDB does not decode, or the transfer exceeds the Block Limits the LUN advertises
    /// (the device server then answers INVALID FIELD IN CDB, see
    /// `sbc::exceeds_transfer_limits`), so a transport never buffers data for a
    /// command the device server refuses for its size.
    pub fn data_out_len(&self, lun: u64, cdb: &[u8]) -> Option<u32> {
        let Some(l) = self.lun(lun) else {
            return Some(0);
        };
        let Ok(c) = cdb::parse(cdb) else {
            return Some(0);
        };
        if sbc::exceeds_transfer_limits(&l.limits, &c.command) {
            return Some(0);
        }
        if self.alua_refusal(Some(&*l), &c.command).is_some() {
            return Some(0);
        }
        match c.command {
            // COMPARE AND WRITE and WRITE SAME need exactly 2 x NUMBER OF LOGICAL BLOCKS and
            // one block of Data-Out: take all the initiator sends (EDTL) so the device
            // server refuses a mismatch instead of acting on a prefix of it (NUMBER OF
            // LOGICAL BLOCKS 0 with Data-Out is an initiator that meant 256, the one-byte
            // field wrapped).
            Command::CompareAndWrite { .. } | Command::WriteSame { ndob: false, .. } => {
                return None
            }
            // A parameter list too long to accept is refused without transferring it.
            Command::PersistentReserveOut { param_len, .. } => {
                return Some(pr::data_out_len(param_len))
            }
            _ => {}
        }
        u32::try_from(c.command.data_out_len(l.block_size())).ok()
    }

    /// Bytes of Data-In the device server will allocate for a READ (transfer length x block
    /// size, whatever the transport's expected length), so a transport can reserve buffer
    /// for it before executing. `None` for every other command: their answers are small, a
    /// transport counts them once they exist. `Some(0)` when the READ will fail before
    /// reading (no such LUN, over the Block Limits).
    pub fn data_in_len(&self, lun: u64, cdb: &[u8]) -> Option<u32> {
        if !matches!(
            cdb.first().copied(),
            Some(opcode::READ_6 | opcode::READ_10 | opcode::READ_12 | opcode::READ_16)
        ) {
            return None;
        }
        let Some(l) = self.lun(lun) else {
            return Some(0);
        };
        let Ok(c) = cdb::parse(cdb) else {
            return Some(0);
        };
        match c.command {
            Command::Read { .. } if self.alua_refusal(Some(&*l), &c.command).is_some() => Some(0),
            Command::Read { range, .. } if !sbc::exceeds_transfer_limits(&l.limits, &c.command) => {
                let bytes = u64::from(range.blocks) * u64::from(l.block_size());
                Some(u32::try_from(bytes).unwrap_or(u32::MAX))
            }
            _ => Some(0),
        }
    }

    /// A nexus logged in: POWER ON, RESET, OR BUS DEVICE RESET OCCURRED on every LUN.
    pub fn nexus_login(&self, nexus: &Nexus) {
        self.uas.login(nexus, &self.luns());
    }

    /// A nexus went away: drop its unit attentions and the SCSI-2 reservations it held.
    pub fn nexus_logout(&self, nexus: &Nexus) {
        self.uas.logout(nexus);
        for l in self.luns.read().values() {
            if l.holds_reservation(nexus) {
                l.clear_reservation();
            }
        }
    }

    /// LOGICAL UNIT RESET: release the SCSI-2 reservation and establish BUS DEVICE RESET
    /// FUNCTION OCCURRED for every nexus, the issuer included (SAM-5 6.3.3; multipath
    /// initiators such as libiscsi's MultipathIO.Reset expect it on every path). Aborting
    /// the tasks is the transport's job.
    pub fn lun_reset(&self, lun: u64, issuer: &Nexus) {
        if let Some(l) = self.lun(lun) {
            l.clear_reservation();
            self.uas
                .establish_lun(lun, asc::BUS_DEVICE_RESET_FUNCTION_OCCURRED, None);
            tracing::info!(target = %self.name, lun, initiator = %issuer.initiator, "logical unit reset");
        }
    }

    /// TARGET (WARM/COLD) RESET: release every SCSI-2 reservation and establish BUS DEVICE
    /// RESET FUNCTION OCCURRED on every LUN for the *other* nexuses: the issuer knows it
    /// reset the target (and initiators that keep using the same session after a target
    /// reset, like libiscsi's Reserve6 suite, expect no UA of their own).
    pub fn target_reset(&self, issuer: &Nexus) {
        let luns = self.luns();
        for l in self.luns.read().values() {
            l.clear_reservation();
        }
        self.uas
            .establish_luns(&luns, asc::BUS_DEVICE_RESET_FUNCTION_OCCURRED, Some(issuer));
        tracing::info!(target = %self.name, initiator = %issuer.initiator, "target reset");
    }

    /// The pool crossed its soft space threshold: every nexus gets THIN PROVISIONING SOFT
    /// THRESHOLD REACHED (38/07) on every LUN, the standard early warning that lets
    /// initiators (and their administrators) act before writes start failing with 27/07.
    pub fn soft_threshold_reached(&self) {
        self.soft_threshold_reached_on(&self.luns());
    }

    /// As [`soft_threshold_reached`](Self::soft_threshold_reached), on `luns` only: the
    /// LUNs of the pool that crossed it (thresholds are per pool).
    pub fn soft_threshold_reached_on(&self, luns: &[u64]) {
        if luns.is_empty() {
            return;
        }
        self.uas
            .establish_luns(luns, asc::THIN_PROVISIONING_SOFT_THRESHOLD_REACHED, None);
        tracing::warn!(target = %self.name, ?luns, "thin provisioning soft threshold reached");
    }

    /// Execute one command.
    pub async fn execute(&self, req: ScsiRequest) -> ScsiResponse {
        let Some(m) = self.lun(req.lun).and_then(|l| l.metrics.clone()) else {
            return self.execute_command(req).await;
        };
        let op = req.cdb.first().copied().unwrap_or(0);
        let kind = crate::metrics::CommandKind::of_opcode(op);
        let _in_flight = m.start();
        let started = std::time::Instant::now();
        let r = self.execute_command(req).await;
        // Bytes count only for commands that succeeded: a failed write moved nothing.
        let ok = r.status == status::GOOD || r.status == status::CONDITION_MET;
        let bytes = match kind {
            crate::metrics::CommandKind::Read if ok => r.data_in.len() as u64,
            crate::metrics::CommandKind::Write if ok => u64::from(r.data_out_used),
            _ => 0,
        };
        m.record(kind, bytes, started.elapsed());
        if let Some(key) = r.sense.as_deref().and_then(crate::metrics::sense_key_of) {
            m.error(key);
        }
        if matches!(
            op,
            opcode::SYNCHRONIZE_CACHE_10 | opcode::SYNCHRONIZE_CACHE_16
        ) {
            crate::metrics::global().flush();
        }
        r
    }

    /// Executes one command (the body of [`ScsiTarget::execute`], without metrics).
    async fn execute_command(&self, req: ScsiRequest) -> ScsiResponse {
        let Some(lun) = self.lun(req.lun) else {
            return self.execute_no_lun(&req);
        };
        let format = lun.sense_format();
        let parsed = match cdb::parse(&req.cdb) {
            Ok(c) => c,
            Err(sense) => {
                tracing::debug!(tag = req.tag, lun = req.lun, opcode = req.cdb.first().copied(), %sense, "CDB rejected");
                // A pending unit attention is reported before a CDB error (SAM-5 5.14).
                let exempt = matches!(
                    req.cdb.first().copied(),
                    Some(opcode::INQUIRY | opcode::REPORT_LUNS | opcode::REQUEST_SENSE)
                );
                if !exempt {
                    if let Some(ua) = self.uas.take(&req.nexus, req.lun) {
                        return check_condition(&Sense::unit_attention(ua), format);
                    }
                }
                return check_condition(&sense, format);
            }
        };
        let data_out_len =
            u32::try_from(parsed.command.data_out_len(lun.block_size())).unwrap_or(u32::MAX);
        tracing::trace!(tag = req.tag, lun = req.lun, cdb = ?&req.cdb[..], command = ?parsed.command, "execute");

        if lun.capacity_changed() {
            self.uas
                .establish_lun(req.lun, asc::CAPACITY_DATA_HAS_CHANGED, None);
        }

        if let Some(view) = self.alua.get() {
            self.raise_alua_change(view);
        }

        // Unit attention: INQUIRY, REPORT LUNS and REQUEST SENSE proceed; everything else
        // reports (and clears) the oldest pending condition.
        match parsed.command {
            Command::Inquiry { .. } | Command::ReportLuns { .. } | Command::RequestSense { .. } => {
            }
            _ => {
                if let Some(ua) = self.uas.take(&req.nexus, req.lun) {
                    let mut r = check_condition(&Sense::unit_attention(ua), format);
                    r.data_out_used = data_out_len;
                    return r;
                }
            }
        }

        // A gateway whose group is not active answers only what its state allows.
        if let Some(code) = self.alua_refusal(Some(&*lun), &parsed.command) {
            let mut r = check_condition(&Sense::new(SenseKey::NotReady, code), format);
            r.data_out_used = data_out_len;
            return r;
        }

        // SCSI-2 reservation held by another nexus.
        if lun.reserved_by_other(&req.nexus) && !allowed_under_reservation(&parsed.command) {
            let mut r = ScsiResponse::status(status::RESERVATION_CONFLICT);
            r.data_out_used = data_out_len;
            return r;
        }

        // Persistent reservation held by someone else (or, with a shared store, unknown:
        // then nobody may touch the medium, see docs/decisions/0013).
        if lun.pr_active.load(std::sync::atomic::Ordering::Acquire) {
            if let Some(access) = pr_access(&parsed.command) {
                let refusal = {
                    let pr = lun.pr.lock();
                    if pr.unreadable().is_some() {
                        Some(check_condition(&pr::unreadable_sense(), format))
                    } else if pr.conflicts(&req.nexus, access) {
                        Some(ScsiResponse::status(status::RESERVATION_CONFLICT))
                    } else {
                        None
                    }
                };
                if let Some(mut r) = refusal {
                    r.data_out_used = data_out_len;
                    return r;
                }
            }
        }

        // Media commands hold the LUN's media lock while they run, so taking the volume away
        // (the pool is detached) waits for them; without a volume they are refused.
        let media = if uses_media(&parsed.command) {
            Some(lun.media.read().await)
        } else {
            None
        };
        let volume = match &media {
            None => None,
            Some(guard) => match guard.as_ref() {
                Some(v) => Some(v),
                None => {
                    let state = self
                        .alua_of(Some(&*lun))
                        .map_or(alua::AccessState::Transitioning, |v| v.local_state());
                    let sense = Sense::new(SenseKey::NotReady, alua::no_volume_sense(state));
                    let mut r = check_condition(&sense, format);
                    r.data_out_used = data_out_len;
                    return r;
                }
            },
        };
        let ctx = Ctx {
            target: self,
            lun: &lun,
            req: &req,
            cdb: &parsed,
            volume,
        };
        let mut resp = match ctx.dispatch().await {
            Ok(r) => r,
            Err(sense) => {
                tracing::debug!(
                    tag = req.tag,
                    lun = req.lun,
                    cmd = parsed.info.name,
                    command = ?parsed.command,
                    %sense,
                    "command failed"
                );
                // A media command that failed while this gateway left the active state
                // (it lost the pool: fenced, or the pool is being detached) failed because
                // of that, not because of the medium: hosts get the state's NOT READY
                // sense, retry, and find the new owner.
                let sense = match self.alua_refusal(Some(&*lun), &parsed.command) {
                    Some(code) if uses_media(&parsed.command) => {
                        Sense::new(SenseKey::NotReady, code)
                    }
                    _ => sense,
                };
                check_condition(&sense, lun.sense_format())
            }
        };
        resp.data_out_used = data_out_len;
        resp
    }

    /// Commands addressed to a LUN that does not exist (SPC-4 4.6.? / SAM-5 5.9.?):
    /// INQUIRY answers with peripheral qualifier 011b, REPORT LUNS and REQUEST SENSE work,
    /// everything else is LOGICAL UNIT NOT SUPPORTED.
    fn execute_no_lun(&self, req: &ScsiRequest) -> ScsiResponse {
        let not_supported = Sense::lun_not_supported();
        match cdb::parse(&req.cdb) {
            Ok(Cdb {
                command:
                    Command::Inquiry {
                        evpd: false,
                        alloc_len,
                        ..
                    },
                ..
            }) => {
                let inq = scsi_proto::scsi::inquiry::StandardInquiry {
                    peripheral: scsi_proto::scsi::inquiry::NO_LUN_PERIPHERAL,
                    ..Default::default()
                };
                ScsiResponse::good(truncated(inq.encode(), alloc_len))
            }
            Ok(Cdb {
                command:
                    Command::ReportLuns {
                        select_report,
                        alloc_len,
                    },
                ..
            }) => ScsiResponse::good(truncated(self.report_luns(select_report), alloc_len)),
            Ok(Cdb {
                command: Command::RequestSense { desc, alloc_len },
                ..
            }) => {
                let format = if desc {
                    SenseFormat::Descriptor
                } else {
                    SenseFormat::Fixed
                };
                ScsiResponse::good(truncated(not_supported.encode(format), alloc_len))
            }
            _ => check_condition(&not_supported, SenseFormat::Fixed),
        }
    }

    /// The NOT READY additional sense `command` is refused with in the local ALUA state
    /// (`None`: it runs; always `None` without an HA group).
    fn alua_refusal(
        &self,
        lun: Option<&Lun>,
        command: &Command,
    ) -> Option<scsi_proto::scsi::sense::AdditionalSense> {
        let view = self.alua_of(lun)?;
        alua::refusal(view.serving_state(), command)
    }

    fn report_luns(&self, select_report: u8) -> Vec<u8> {
        scsi_proto::scsi::report_luns::encode(&self.luns(), select_report)
    }
}

/// How a command is checked against a persistent reservation (SPC-4 5.12.1): `None` for
/// commands allowed whatever the reservation (they carry their own rules or only report
/// device state).
fn pr_access(c: &Command) -> Option<pr::Access> {
    match c {
        Command::Inquiry { .. }
        | Command::ReportLuns { .. }
        | Command::RequestSense { .. }
        | Command::TestUnitReady
        | Command::ReadCapacity10
        | Command::ReadCapacity16 { .. }
        | Command::ReportSupportedOpcodes(_)
        | Command::ReportSupportedTmfs { .. }
        | Command::ReportTargetPortGroups { .. }
        | Command::ReceiveCopyResults { .. }
        | Command::PersistentReserveIn { .. }
        | Command::PersistentReserveOut { .. }
        | Command::Reserve
        | Command::Release => None,
        Command::Read { .. }
        | Command::Verify { .. }
        | Command::PreFetch { .. }
        | Command::GetLbaStatus { .. }
        | Command::ReadDefectData { .. }
        | Command::ModeSense(_)
        | Command::PreventAllowMediumRemoval { .. } => Some(pr::Access::Read),
        Command::Write { .. }
        | Command::WriteAndVerify { .. }
        | Command::WriteSame { .. }
        | Command::Unmap { .. }
        | Command::CompareAndWrite { .. }
        | Command::OrWrite { .. }
        | Command::ModeSelect { .. }
        | Command::SynchronizeCache { .. }
        | Command::ExtendedCopy { .. }
        | Command::StartStopUnit { .. } => Some(pr::Access::Write),
    }
}

/// Commands that read or write the medium, and so need the volume (see `Lun::media`).
fn uses_media(c: &Command) -> bool {
    matches!(
        c,
        Command::Read { .. }
            | Command::Write { .. }
            | Command::WriteAndVerify { .. }
            | Command::Verify { .. }
            | Command::SynchronizeCache { .. }
            | Command::OrWrite { .. }
            | Command::CompareAndWrite { .. }
            | Command::WriteSame { .. }
            | Command::Unmap { .. }
            | Command::GetLbaStatus { .. }
            | Command::ExtendedCopy { .. }
            | Command::StartStopUnit { .. }
    )
}

/// Commands another nexus may still run while a SCSI-2 reservation is held (SPC-2 5.5.1).
fn allowed_under_reservation(c: &Command) -> bool {
    matches!(
        c,
        Command::Inquiry { .. }
            | Command::ReportLuns { .. }
            | Command::RequestSense { .. }
            | Command::Release
            | Command::ReportSupportedOpcodes(_)
            | Command::ReportSupportedTmfs { .. }
            | Command::ReportTargetPortGroups { .. }
    ) || matches!(c, Command::PreventAllowMediumRemoval { prevent: 0 })
}

/// Limit parameter data to the allocation length.
fn truncated(data: Vec<u8>, alloc_len: u32) -> Bytes {
    Bytes::from(scsi_proto::scsi::truncate_to_alloc(data, alloc_len))
}

/// Everything a command handler needs.
struct Ctx<'a> {
    target: &'a ScsiTarget,
    lun: &'a Arc<Lun>,
    req: &'a ScsiRequest,
    cdb: &'a Cdb,
    /// The LUN's volume, for media commands (see `uses_media`), borrowed from the media
    /// guard `execute_command` holds while the command runs.
    volume: Option<&'a Volume>,
}

impl Ctx<'_> {
    async fn dispatch(&self) -> Result<ScsiResponse, Sense> {
        match &self.cdb.command {
            Command::TestUnitReady => Ok(ScsiResponse::good(Bytes::new())),
            Command::RequestSense { desc, alloc_len } => Ok(self.request_sense(*desc, *alloc_len)),
            Command::Inquiry {
                evpd,
                page,
                alloc_len,
            } => self.inquiry(*evpd, *page, *alloc_len),
            Command::ModeSense(m) => self.mode_sense(m),
            Command::ModeSelect { ten, param_len, .. } => self.mode_select(*ten, *param_len),
            Command::Reserve => self.reserve(),
            Command::Release => Ok(self.release()),
            Command::StartStopUnit {
                loej,
                start,
                no_flush,
                ..
            } => self.start_stop_unit(*loej, *start, *no_flush).await,
            Command::PreventAllowMediumRemoval { .. } => Ok(ScsiResponse::good(Bytes::new())),
            Command::ReportLuns {
                select_report,
                alloc_len,
            } => Ok(self.report_luns(*select_report, *alloc_len)),
            Command::ReportSupportedOpcodes(r) => self.report_supported_opcodes(r),
            Command::ReportTargetPortGroups {
                extended,
                alloc_len,
            } => Ok(alua::report_target_port_groups(
                &self.req.nexus,
                &self.target.port_groups(),
                self.target.alua_of(Some(&**self.lun)).map(|v| &**v),
                *extended,
                *alloc_len,
            )),
            Command::ReportSupportedTmfs { repd, alloc_len } => {
                Ok(self.report_supported_tmfs(*repd, *alloc_len))
            }
            Command::ReadCapacity10 => Ok(self.read_capacity10()),
            Command::ReadCapacity16 { alloc_len } => Ok(self.read_capacity16(*alloc_len)),
            Command::Read { range, fua, .. } => self.read(*range, *fua).await,
            Command::Write { range, fua, .. } => self.write(*range, *fua).await,
            Command::WriteAndVerify { range, .. } => self.write(*range, true).await,
            Command::Verify { range, bytchk, .. } => self.verify(*range, *bytchk).await,
            Command::PreFetch { range, .. } => self.pre_fetch(*range),
            Command::SynchronizeCache { range, .. } => self.synchronize_cache(*range).await,
            Command::OrWrite { range, fua } => self.or_write(*range, *fua).await,
            Command::PersistentReserveIn {
                service_action,
                alloc_len,
            } => {
                self.persistent_reserve_in(*service_action, *alloc_len)
                    .await
            }
            Command::PersistentReserveOut {
                service_action,
                scope,
                pr_type,
                param_len,
            } => {
                self.persistent_reserve_out(*service_action, *scope, *pr_type, *param_len)
                    .await
            }
            Command::ReadDefectData {
                twelve,
                flags,
                alloc_len,
            } => Ok(self.read_defect_data(*twelve, *flags, *alloc_len)),
            Command::CompareAndWrite { lba, blocks, fua } => {
                self.compare_and_write(*lba, *blocks, *fua).await
            }
            Command::WriteSame { range, unmap, ndob } => {
                self.write_same(*range, *unmap, *ndob).await
            }
            Command::Unmap { param_len } => self.unmap(*param_len).await,
            Command::GetLbaStatus { lba, alloc_len } => self.get_lba_status(*lba, *alloc_len),
            Command::ExtendedCopy { param_len } => self.extended_copy(*param_len).await,
            Command::ReceiveCopyResults {
                service_action,
                list_id,
                alloc_len,
            } => self.receive_copy_results(*service_action, *list_id, *alloc_len),
        }
    }

    /// The volume of a media command. Always there (`execute_command` refuses media
    /// commands without one); a handler reached otherwise gets NOT READY, not a panic.
    fn vol(&self) -> Result<&Volume, Sense> {
        self.volume.ok_or_else(|| {
            Sense::new(
                SenseKey::NotReady,
                asc::LOGICAL_UNIT_NOT_ACCESSIBLE_ASYMMETRIC_ACCESS_STATE_TRANSITION,
            )
        })
    }

    /// The sense for a write refused because the LUN is read-only.
    fn check_writable(&self) -> Result<(), Sense> {
        if self.lun.read_only {
            return Err(Sense::new(SenseKey::DataProtect, asc::WRITE_PROTECTED));
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests;

fn attached_event(l: &Lun) -> LunEvent {
    LunEvent::Attached {
        lun: l.id,
        volume: l.name(),
        size_bytes: l.num_blocks() * u64::from(l.block_size()),
        block_size: l.block_size(),
    }
}
