//! Shared engine state behind a [`crate::Pool`]: metadata, allocator, journal buffer,
//! per-volume runtime locks.
//!
//! This module only holds state and the in-memory operations on it; the modules that do
//! durable work on it (`commit` for the journal, seals and checkpoints, `space`, `split`)
//! depend on it and not the other way round.
//!
//! Locking: `state` (a parking_lot RwLock) is held only for in-memory work, never across I/O
//! or an await. Per volume, `gate` orders I/O (shared) against snapshot/clone/rollback/delete/
//! resize (exclusive), and 64 stripe locks order the first write (copy-on-write) of a chunk
//! against reads, in-place writes and unmaps of that chunk.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use crate::alloc::Alloc;
use crate::codec::Enc;
use crate::commit_queue::CommitQueue;
use crate::io::DataIo;
use crate::journal::encode_rec;
use crate::layer::{LayerId, Meta, Rec, ViewId, ViewKind};
use crate::superblock::{Layout, Superblock};
use crate::{Guarantee, Result, StorageError};

pub(crate) const STRIPES: usize = 64;

/// Per-volume runtime locks (not persistent).
pub(crate) struct VolRt {
    /// Shared (`Arc`) so that [`PoolInner::write_gates`] can hand out owned guards for
    /// several volumes at once.
    pub(crate) gate: Arc<tokio::sync::RwLock<()>>,
    pub(crate) stripes: Vec<tokio::sync::RwLock<()>>,
    pub(crate) deleted: AtomicBool,
    /// Resolutions of deep chains below the volume's top (reads only).
    pub(crate) chain: crate::chaincache::ChainCache,
    /// Per stripe: LSN of the latest `Map` a first write logged there (see
    /// `Volume::write_chunk`).
    pub(crate) map_lsns: Vec<AtomicU64>,
}

impl VolRt {
    pub(crate) fn new() -> VolRt {
        VolRt {
            gate: Arc::new(tokio::sync::RwLock::new(())),
            stripes: (0..STRIPES).map(|_| tokio::sync::RwLock::new(())).collect(),
            deleted: AtomicBool::new(false),
            chain: crate::chaincache::ChainCache::new(),
            map_lsns: (0..STRIPES).map(|_| AtomicU64::new(0)).collect(),
        }
    }
    pub(crate) fn stripe(&self, index: u64) -> &tokio::sync::RwLock<()> {
        &self.stripes[self.stripe_no(index)]
    }
    /// Which stripe guards logical chunk `index`.
    pub(crate) fn stripe_no(&self, index: u64) -> usize {
        (index % STRIPES as u64) as usize
    }
    pub(crate) fn map_lsn(&self, index: u64) -> &AtomicU64 {
        &self.map_lsns[(index % STRIPES as u64) as usize]
    }
}

/// Take `l` shared. The uncontended case skips building the acquire future and spending
/// tokio's cooperative budget: a page-cache read is a few microseconds, and on a
/// multi-threaded runtime every budget-forced yield wakes an idle worker through its
/// eventfd, which cost 12 % of a 4 KiB read loop (perf, 2026-12-03). Fairness is kept:
/// while a writer waits, the semaphore has no free permits and this falls back to queueing.
pub(crate) async fn lock_shared(
    l: &tokio::sync::RwLock<()>,
) -> tokio::sync::RwLockReadGuard<'_, ()> {
    match l.try_read() {
        Ok(g) => g,
        Err(_) => l.read().await,
    }
}

/// Take `l` exclusively; see [`lock_shared`].
pub(crate) async fn lock_exclusive(
    l: &tokio::sync::RwLock<()>,
) -> tokio::sync::RwLockWriteGuard<'_, ()> {
    match l.try_write() {
        Ok(g) => g,
        Err(_) => l.write().await,
    }
}

/// A lock held shared or exclusively, whichever the caller needed (released on drop; the
/// guards are only held, never read).
pub(crate) enum StripeGuard<'a> {
    Shared(#[allow(dead_code)] tokio::sync::RwLockReadGuard<'a, ()>),
    Exclusive(#[allow(dead_code)] tokio::sync::RwLockWriteGuard<'a, ()>),
}

/// Why an allocation failed.
pub(crate) enum AllocFail {
    NoSpace,
    /// Only chunks freed by a not-yet-durable transaction are free: commit, then retry.
    NeedCommit,
}

/// Mutable in-memory state.
pub(crate) struct State {
    pub(crate) meta: Meta,
    pub(crate) alloc: Alloc,
    /// Encoded records not yet handed to the committer.
    pub(crate) recs: Enc,
    pub(crate) nrecs: u32,
    /// Records appended so far (log sequence number).
    pub(crate) lsn: u64,
    /// Chunks freed by the buffered records.
    pub(crate) pending: Vec<u64>,
    /// All freed chunks not yet released to the allocator (buffered + committing).
    pub(crate) pending_count: u64,
    /// Chunks allocated for writes not yet mapped, per volume.
    pub(crate) inflight: HashMap<ViewId, u64>,
    pub(crate) inflight_thin: u64,
    pub(crate) inflight_total: u64,
    pub(crate) space_dirty: bool,
    pub(crate) reconciled_at: u64,
    /// What the reconcile pass must re-examine since it last ran ([`crate::changes`]).
    pub(crate) changes: crate::changes::Changes,
    pub(crate) failed: Option<String>,
    /// Soft threshold in per cent of capacity (used + reserved), if configured.
    pub(crate) soft_pct: Option<u8>,
    /// Current soft-threshold state and count of upward crossings, for subscribers.
    pub(crate) threshold: tokio::sync::watch::Sender<crate::types::SoftThreshold>,
}

impl State {
    pub(crate) fn new(meta: Meta, alloc: Alloc, soft_pct: Option<u8>) -> State {
        let (threshold, _) = tokio::sync::watch::channel(crate::types::SoftThreshold::default());
        let mut st = State {
            meta,
            alloc,
            recs: Enc::default(),
            nrecs: 0,
            lsn: 0,
            pending: Vec::new(),
            pending_count: 0,
            inflight: HashMap::new(),
            inflight_thin: 0,
            inflight_total: 0,
            space_dirty: true,
            reconciled_at: 0,
            changes: crate::changes::Changes::new(),
            failed: None,
            soft_pct,
            threshold,
        };
        st.update_threshold();
        st
    }

    /// Whether used + reserved space has reached the soft threshold.
    pub(crate) fn threshold_reached(&self) -> bool {
        self.soft_pct.is_some_and(|p| {
            (self.meta.used + self.meta.reserved) * 100 >= self.alloc.total() * p as u64
        })
    }

    fn update_threshold(&mut self) {
        let reached = self.threshold_reached();
        self.threshold.send_if_modified(|v| {
            if v.reached == reached {
                return false;
            }
            if reached {
                // Counted so a subscriber that sleeps through a rise, fall and rise still
                // sees two crossings (the channel keeps only the latest value).
                v.crossings += 1;
            }
            v.reached = reached;
            true
        });
    }

    pub(crate) fn check_failed(&self) -> Result<()> {
        match &self.failed {
            Some(m) => Err(StorageError::io(
                "using the pool",
                std::io::Error::other(m.clone()),
            )),
            None => Ok(()),
        }
    }

    /// Apply a record to the metadata and append it to the journal buffer.
    pub(crate) fn log(&mut self, rec: Rec) -> Result<()> {
        let mut freed = Vec::new();
        self.changes.note(&self.meta, &rec);
        let nlayers = self.meta.layers.len();
        self.meta.applying_lsn = self.lsn + 1;
        self.meta
            .apply(&rec, &mut freed)
            .map_err(|e| StorageError::Corrupt(format!("internal metadata inconsistency: {e}")))?;
        if self.meta.layers.len() != nlayers {
            // A clear that collected layers (a merge moves entries between layers).
            self.changes.structural = true;
        }
        self.pending_count += freed.len() as u64;
        self.pending.extend(freed);
        encode_rec(&mut self.recs, &rec);
        self.nrecs += 1;
        self.lsn += 1;
        self.space_dirty = true;
        if self.soft_pct.is_some() {
            self.update_threshold();
        }
        Ok(())
    }

    /// Chunks not used, not reserved and not promised to thin in-flight writes. Chunks waiting
    /// for a commit count as available (a commit releases them).
    pub(crate) fn available(&self) -> u64 {
        self.alloc
            .total()
            .saturating_sub(self.meta.used + self.meta.reserved + self.inflight_thin)
    }

    /// Check that `chunks` more can be reserved.
    pub(crate) fn need(&self, chunks: u64) -> Result<()> {
        let avail = self.available();
        if chunks > avail {
            let cs = self.meta.chunk_size;
            return Err(StorageError::GuaranteeUnavailable {
                needed_bytes: chunks * cs,
                available_bytes: avail * cs,
            });
        }
        Ok(())
    }

    /// Allocate a chunk for a first write of `view`.
    pub(crate) fn allocate(
        &mut self,
        view: ViewId,
        full: bool,
    ) -> std::result::Result<u64, AllocFail> {
        if !full && self.available() < 1 {
            return Err(AllocFail::NoSpace);
        }
        match self.alloc.allocate() {
            Some(c) => {
                *self.inflight.entry(view).or_default() += 1;
                self.inflight_total += 1;
                if !full {
                    self.inflight_thin += 1;
                }
                Ok(c)
            }
            None if self.pending_count > 0 => Err(AllocFail::NeedCommit),
            None => Err(AllocFail::NoSpace),
        }
    }

    /// An allocation is finished (mapped or abandoned).
    pub(crate) fn allocation_done(&mut self, view: ViewId, full: bool, abandoned: Option<u64>) {
        if let Some(n) = self.inflight.get_mut(&view) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.inflight.remove(&view);
            }
        }
        self.inflight_total = self.inflight_total.saturating_sub(1);
        if !full {
            self.inflight_thin = self.inflight_thin.saturating_sub(1);
        }
        if let Some(c) = abandoned {
            self.alloc.clear(c);
        }
    }

    /// (top layer, size, block size, full) of a live volume.
    pub(crate) fn volume(&self, id: ViewId) -> Result<(u64, u64, u32, bool)> {
        match self.meta.views.get(&id) {
            Some(v) => match v.kind {
                ViewKind::Volume { top, guarantee } => {
                    Ok((top, v.size, v.block_size, guarantee == Guarantee::Full))
                }
                ViewKind::Snapshot { .. } => Err(StorageError::ReadOnly(format!(
                    "'{}' is a snapshot",
                    v.name
                ))),
                ViewKind::Staging { .. } => Err(StorageError::NotFound(format!(
                    "'{}' is a receive in progress, not a volume",
                    v.name
                ))),
            },
            None => Err(StorageError::NotFound("volume not found (deleted)".into())),
        }
    }
}

/// Superblock and journal cursor, behind the journal lock: tentative appends (write path
/// and commit thread) and checkpoints (commit thread) take it; seals and fdatasyncs do not.
pub(crate) struct SbState {
    pub(crate) sb: Superblock,
    /// Offset of the journal's end within the active half.
    pub(crate) journal_off: u64,
    pub(crate) next_seq: u64,
    /// The journal half appends go to. Equal to the superblock's half except while a
    /// checkpoint of everything before the switch is being written (`ckpt_busy`); only then
    /// is the other half still needed by replay.
    pub(crate) half: u8,
    /// A checkpoint has switched halves and its superblock is not written yet: no second
    /// switch (the half it left is what replay would start from).
    pub(crate) ckpt_busy: bool,
    /// A switch made by an append that found its half full, for the commit thread to write.
    pub(crate) ckpt_due: Option<CkptStart>,
    /// Chunks freed by records in written but not yet sealed blocks (reusable after the seal).
    pub(crate) unsealed_frees: Vec<u64>,
    /// Boot id stamped into tentative blocks.
    pub(crate) boot: uuid::Uuid,
    /// The block at `journal_off` (sequence `next_seq`) while records may still join it.
    pub(crate) open: Option<crate::journal::OpenBlock>,
    /// Encoded records written to the journal (or taken by a checkpoint) that the checkpoint
    /// replica ([`PoolInner::replica`]) has not applied yet, in log order. Appends add to it
    /// under this lock; the commit thread drains it into the replica once a commit.
    pub(crate) backlog: Vec<u8>,
}

/// Steps of writing a checkpoint, where tests may stop the checkpoint thread
/// (`PoolInner::ckpt_hook`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CkptStep {
    /// The checkpoint thread has its switch and has not imaged anything yet.
    Started,
    /// The image is written to the inactive slot, not synced.
    ImageWritten,
    /// The image is synced; the superblock is not written.
    ImageSynced,
    /// The superblock naming the image and the new half is written, not synced.
    SuperblockWritten,
    /// The superblock is synced; the old half is not released yet.
    SuperblockSynced,
}

/// Test hook for checkpoint steps.
#[cfg(test)]
pub(crate) type CkptHook = std::sync::Arc<dyn Fn(CkptStep) + Send + Sync>;

/// A checkpoint of everything logged before a journal half switch: what the switch took
/// under the journal lock, for the commit thread to image and write without it
/// (docs/decisions/0021-double-buffered-journal.md).
pub(crate) struct CkptStart {
    /// The superblock when the switch happened (the checkpoint writes its successor).
    pub(crate) sb: Superblock,
    /// First sequence number of the new half: the image holds every block below it.
    pub(crate) seq: u64,
    /// The half appends moved to, where replay will start once the superblock says so.
    pub(crate) half: u8,
    /// Records of the blocks below `seq` the replica had not applied yet (log order), plus,
    /// on the locked path, the buffered records the image takes.
    pub(crate) backlog: Vec<u8>,
    /// Chunks freed by the records the image holds (reusable once it is durable).
    pub(crate) frees: Vec<u64>,
    /// LSN of the last record the image holds.
    pub(crate) end: u64,
    /// The live metadata's id counter at the switch (ids taken by operations that failed
    /// before logging are past it; the image keeps them used).
    pub(crate) next_id: u64,
    /// Benchmarks: the live maps copied out under the metadata lock (the pre-0015 way).
    #[cfg(feature = "bench-internals")]
    pub(crate) capture: Option<crate::checkpoint::Capture>,
}

/// Seal state, used by the commit thread only (and open).
pub(crate) struct Sealer {
    /// The newest seal slot written (or read at open).
    pub(crate) seal: crate::superblock::Seal,
    /// Journal blocks below this sequence number are durable (seal or checkpoint).
    pub(crate) durable_seq: u64,
}

/// Everything a pool shares between handles.
pub(crate) struct PoolInner {
    /// The device, for the metadata path (open, commit thread).
    pub(crate) dev: Arc<crate::device::Device>,
    pub(crate) io: DataIo,
    pub(crate) layout: Layout,
    pub(crate) uuid: uuid::Uuid,
    pub(crate) state: parking_lot::RwLock<State>,
    /// The journal lock (async so that write-path appends can wait on it without blocking a
    /// runtime thread; the commit thread uses `blocking_lock`).
    pub(crate) sb: Arc<tokio::sync::Mutex<SbState>>,
    pub(crate) sealer: parking_lot::Mutex<Sealer>,
    /// The checkpoint replica: a second copy of the metadata, kept by replaying the records
    /// the journal receives ([`SbState::backlog`]), as open replays them. A checkpoint images
    /// it instead of the live metadata, so the live metadata lock is held only to take the
    /// buffered records (O(records since the last append), not O(mapped chunks)); see
    /// docs/decisions/0015-checkpoint-replica.md. Used by the commit thread only; taken
    /// after the journal lock, never before it.
    pub(crate) replica: parking_lot::Mutex<Meta>,
    /// Benchmarks only: image the live metadata under its lock, as checkpoints did before
    /// the replica, to measure the stall that removed.
    #[cfg(feature = "bench-internals")]
    pub(crate) full_capture: AtomicBool,
    /// Benchmarks only: hold the journal lock for the whole checkpoint, as checkpoints did
    /// before the journal was double-buffered (docs/decisions/0021-double-buffered-journal.md).
    #[cfg(feature = "bench-internals")]
    pub(crate) ckpt_hold_journal: AtomicBool,
    /// Benchmarks only: the commit thread waits for each checkpoint it starts, sealing
    /// nothing meanwhile, as before checkpoints had a thread of their own
    /// (docs/decisions/0029-checkpoint-thread.md).
    #[cfg(feature = "bench-internals")]
    pub(crate) ckpt_inline: AtomicBool,
    /// Tests only: called by the checkpoint thread at each step of writing a checkpoint,
    /// so a test can stop it there and copy the pool file as a kill would leave it.
    #[cfg(test)]
    pub(crate) ckpt_hook: parking_lot::Mutex<Option<CkptHook>>,
    pub(crate) durable_lsn: AtomicU64,
    /// Records up to this LSN are in the file (page cache at least), so they survive a kill
    /// of this process; `durable_lsn` says which also survive a power loss.
    pub(crate) published_lsn: AtomicU64,
    /// Data writes completed so far (in-place overwrites change no metadata but still need
    /// an fdatasync before a flush may return).
    pub(crate) data_writes: AtomicU64,
    /// Value of `data_writes` covered by the last completed fdatasync.
    pub(crate) synced_writes: AtomicU64,
    pub(crate) commit: Arc<CommitQueue>,
    pub(crate) vols: parking_lot::Mutex<HashMap<ViewId, Arc<VolRt>>>,
    /// Staging views a [`crate::Receive`] handle is applying right now (one handle each),
    /// with the resume point its last completed flush made durable: the journal's record is
    /// applied to `meta` before the flush returns, and a status read in between must not
    /// promise a resume point a crash would lose.
    pub(crate) receiving: parking_lot::Mutex<HashMap<ViewId, u64>>,
    pub(crate) closed: AtomicBool,
    pub(crate) zero_chunk: bytes::Bytes,
    /// What logs call the pool (its path, or `rbd:<image>`).
    pub(crate) name: String,
    /// Cumulative activity counters for operators ([`crate::PoolStats`]).
    pub(crate) stats: Stats,
    /// Told each metadata commit's duration (lunard feeds a histogram with it).
    pub(crate) commit_observer: parking_lot::RwLock<Option<CommitObserver>>,
}

/// Callback for metadata commit durations.
pub(crate) type CommitObserver = Arc<dyn Fn(std::time::Duration) + Send + Sync>;

/// Cumulative counters; relaxed atomics, read without locks.
#[derive(Default)]
pub(crate) struct Stats {
    pub(crate) cow_ops: AtomicU64,
    pub(crate) cow_bytes: AtomicU64,
    pub(crate) commits: AtomicU64,
    pub(crate) syncs: AtomicU64,
}

impl PoolInner {
    pub(crate) fn rt(&self, id: ViewId) -> Arc<VolRt> {
        self.vols
            .lock()
            .entry(id)
            .or_insert_with(|| Arc::new(VolRt::new()))
            .clone()
    }

    /// Takes the I/O gates of several volumes for writing, all held together until the
    /// guards drop: for an operation that must change its members at one instant (group
    /// snapshot, group receive commit). The one place the multi-gate lock order is defined:
    /// ascending view id, each id once, so two such operations over overlapping members
    /// cannot deadlock.
    pub(crate) async fn write_gates(
        &self,
        ids: &[ViewId],
    ) -> Vec<tokio::sync::OwnedRwLockWriteGuard<()>> {
        let mut order = ids.to_vec();
        order.sort_unstable();
        order.dedup();
        let mut gates = Vec::with_capacity(order.len());
        for id in order {
            let gate = Arc::clone(&self.rt(id).gate);
            gates.push(gate.write_owned().await);
        }
        gates
    }

    pub(crate) fn check_open(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            return Err(StorageError::io(
                "using the pool",
                std::io::Error::other("pool is closed"),
            ));
        }
        Ok(())
    }

    /// Write data chunks; counted so that a later flush knows an fdatasync is due.
    pub(crate) async fn write_data(&self, off: u64, bufs: Vec<bytes::Bytes>) -> Result<()> {
        self.io.write(off, bufs).await?;
        self.data_writes.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }

    /// The tail of a chunk's first write, shared by a volume's first write
    /// (`Volume::write_chunk`) and a received chunk (`Receive::put_chunk`): `body` goes to
    /// the chunk `phys` that `view` just allocated, and only then is it mapped at `index` of
    /// `layer` by a `Map` record (data before mapping). A failed data write gives the chunk
    /// back; a view that `still_there` says is gone by then (deleted meanwhile) gets it back
    /// too and the write fails with `gone()`. Returns the LSN of the `Map`, which the caller
    /// publishes (or leaves to its next save) before acknowledging.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn publish_first_write(
        &self,
        view: ViewId,
        full: bool,
        layer: LayerId,
        index: u64,
        phys: u64,
        body: Vec<bytes::Bytes>,
        still_there: impl FnOnce(&State) -> bool,
        gone: impl FnOnce() -> StorageError,
    ) -> Result<u64> {
        if let Err(e) = self.write_data(self.layout.chunk_offset(phys), body).await {
            self.state.write().allocation_done(view, full, Some(phys));
            return Err(e);
        }
        let mut st = self.state.write();
        st.allocation_done(view, full, None);
        if !still_there(&st) {
            st.alloc.clear(phys);
            return Err(gone());
        }
        st.log(Rec::Map { layer, index, phys })?;
        Ok(st.lsn)
    }
}

impl Drop for PoolInner {
    fn drop(&mut self) {
        self.commit.shutdown();
    }
}
