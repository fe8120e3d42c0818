//! Journal appends and the commit actor.
//!
//! Records reach the file in two steps (docs/storage-format.md, "Transaction model"):
//! [`append_locked`] writes buffered records as a *tentative* block to the page cache — the
//! write path does it before acknowledging a first write or unmap, so a killed process loses
//! no acknowledged mapping — and the commit thread makes blocks durable: append what is still
//! buffered, fdatasync (data written before its records were appended becomes durable with
//! them), write a seal covering the blocks so far, fdatasync, then release the chunks those
//! records freed; when no data write is pending, the first fdatasync is skipped. All flush
//! requests waiting at that moment complete together (group commit). The journal is two
//! halves: when the active one is full (or a checkpoint is asked for) appends move to the
//! other ([`switch_half`]) and the commit thread writes a checkpoint of everything before the
//! switch without the journal lock, so first writes and unmaps go on publishing meanwhile
//! (docs/decisions/0021-double-buffered-journal.md). Without requests, buffered records are
//! committed every second. Publishes share the newest block while it fits one page
//! ([`append_locked`]).
//!
//! The durability methods callers wait on (`PoolInner::publish`, `wait_durable`, `flush`)
//! are here too, beside the thread they talk to through [`CommitQueue`]: this module builds
//! on the engine state ([`crate::engine`]), never the other way round.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use crate::commit_queue::CommitQueue;
use crate::engine::{CkptStart, PoolInner, SbState, Sealer};
use crate::journal::{block_len, build_block, OpenBlock};
use crate::superblock::{Seal, Superblock, SB_SLOT, SEAL_OFF};
use crate::{checkpoint, Result, StorageError};

fn io(context: &str, e: std::io::Error) -> StorageError {
    StorageError::io(context, e)
}

fn sync(inner: &PoolInner) -> Result<()> {
    inner.stats.syncs.fetch_add(1, Ordering::Relaxed);
    inner.dev.flush().map_err(|e| io("syncing the pool", e))
}

/// The durability side of the engine: what a caller waits for before acknowledging.
impl PoolInner {
    /// Make sure the records up to `lsn` are written to the journal (not necessarily durable)
    /// before the caller acknowledges the I/O that logged them. A process kill keeps the page
    /// cache: data written in place survives it, so the mappings of first writes and unmaps
    /// must survive it too, or a SYNCHRONIZE CACHE answered by the restarted process would
    /// "succeed" over writes whose mappings died with this one (docs/testing-kernel.md).
    /// Concurrent callers share one block: whoever holds the journal lock appends every
    /// buffered record.
    pub(crate) async fn publish(self: &Arc<Self>, lsn: u64) -> Result<()> {
        for _ in 0..4 {
            if self.published_lsn.load(Ordering::Acquire) >= lsn {
                return Ok(());
            }
            let mut guard = self.sb.clone().lock_owned().await;
            if self.published_lsn.load(Ordering::Acquire) >= lsn {
                return Ok(());
            }
            let inner = self.clone();
            // The append owns the journal lock until its write is done, even if this future
            // is dropped meanwhile: an abandoned write of the open block landing after a later
            // version of it would take records back out.
            let appended = if self.dev.prefers_large_io() {
                // RBD: an asynchronous write, whose completion wakes this task; a blocking
                // librbd call would cost two more thread hand-offs (to the blocking pool and
                // back) on every first write's acknowledgement.
                tokio::spawn(async move { append_async(&inner, &mut guard).await }).await
            } else {
                tokio::task::spawn_blocking(move || append_locked(&inner, &mut guard, false)).await
            }
            .map_err(|e| {
                StorageError::io(
                    "appending to the journal",
                    std::io::Error::other(e.to_string()),
                )
            })??;
            if !appended {
                // Both journal halves are taken (a checkpoint is still freeing the other one)
                // or the records fit no half: a checkpoint (which also makes the records
                // durable) is the way to get them on disk.
                break;
            }
        }
        if self.published_lsn.load(Ordering::Acquire) >= lsn {
            return Ok(());
        }
        let rx = self.commit.request_checkpoint();
        match rx.await {
            Ok(r) => r,
            Err(_) => Err(StorageError::io(
                "committing metadata",
                std::io::Error::other("commit thread stopped"),
            )),
        }
    }

    /// Wait until the records up to `lsn` are durable (no data sync is asked for).
    pub(crate) async fn wait_durable(&self, lsn: u64) -> Result<()> {
        if self.durable_lsn.load(Ordering::Acquire) >= lsn {
            return Ok(());
        }
        match self.commit.request(lsn, 0).await {
            Ok(r) => r,
            Err(_) => Err(StorageError::io(
                "committing metadata",
                std::io::Error::other("commit thread stopped"),
            )),
        }
    }

    /// The shape of an operation that changes several volumes at one instant (group
    /// snapshot, group receive commit): their I/O gates held together
    /// ([`PoolInner::write_gates`]), then under one hold of the metadata write lock `change`
    /// makes every check before it logs its first record (an error leaves nothing logged),
    /// so the records land in one journal block; then the gates go and the records are made
    /// durable.
    pub(crate) async fn change_together<T>(
        &self,
        volumes: &[crate::layer::ViewId],
        change: impl FnOnce(&mut crate::engine::State) -> Result<T>,
    ) -> Result<T> {
        let gates = self.write_gates(volumes).await;
        let out = {
            let mut st = self.state.write();
            st.check_failed()?;
            change(&mut st)?
        };
        drop(gates);
        self.flush().await?;
        Ok(out)
    }

    /// Make every record appended so far durable (group commit).
    pub(crate) async fn flush(&self) -> Result<()> {
        let target = {
            let st = self.state.read();
            st.check_failed()?;
            st.lsn
        };
        let dtarget = self.data_writes.load(Ordering::Acquire);
        if self.durable_lsn.load(Ordering::Acquire) >= target
            && self.synced_writes.load(Ordering::Acquire) >= dtarget
        {
            return Ok(());
        }
        let rx = self.commit.request(target, dtarget);
        match rx.await {
            Ok(r) => r,
            Err(_) => Err(StorageError::io(
                "committing metadata",
                std::io::Error::other("commit thread stopped"),
            )),
        }
    }
}

/// Put the pool into the failed state (every later operation reports it) and return `e`.
fn fail<T>(inner: &PoolInner, what: &str, e: StorageError) -> Result<T> {
    inner.state.write().failed = Some(format!("{what}: {e}"));
    Err(e)
}

/// Append every buffered record to the journal as a tentative block (page cache; durable
/// once a seal covers it). The caller holds the journal lock. Returns `false`, taking
/// nothing, when the records do not fit the journal (a checkpoint is due).
///
/// The newest block stays *open* while it fits one page: later records join it and the page
/// is rewritten in place, same sequence number, instead of each publish taking a fresh 4 KiB
/// block for a 25-byte record (a queue-depth-1 writer of fresh chunks used to fill the
/// journal, and force a checkpoint of the whole metadata, 160 times sooner). Rewriting is
/// safe because the block is not sealed yet, each version holds the previous one's records
/// plus more, and a one-page write lands in the page cache whole or not at all even when the
/// writer is killed (the kernel checks for a fatal signal only between pages). With `close`
/// (the commit thread, before it seals) the open block is closed: the cursor moves past it,
/// so the seal covers it and nothing rewrites it again.
pub(crate) fn append_locked(inner: &PoolInner, sbs: &mut SbState, close: bool) -> Result<bool> {
    let appended = match prepare_append(inner, sbs)? {
        Append::Full => return Ok(false),
        Append::Nothing => true,
        Append::Block(b) => {
            if let Err(e) = inner.dev.write_at(&b.block, b.at) {
                return fail(inner, "journal append failed", io("writing the journal", e));
            }
            b.written(inner, sbs);
            true
        }
    };
    if close {
        close_open(sbs);
    }
    Ok(appended)
}

/// [`append_locked`] without closing the open block, writing the block with an asynchronous
/// device write (RBD's aio) instead of a blocking one. The caller holds the journal lock
/// until this returns, dropped or not (see [`PoolInner::publish`]).
async fn append_async(inner: &PoolInner, sbs: &mut SbState) -> Result<bool> {
    match prepare_append(inner, sbs)? {
        Append::Full => Ok(false),
        Append::Nothing => Ok(true),
        Append::Block(mut b) => {
            let block = bytes::Bytes::from(std::mem::take(&mut b.block));
            if let Err(e) = inner.io.write(b.at, vec![block]).await {
                return fail(inner, "journal append failed", e);
            }
            b.written(inner, sbs);
            Ok(true)
        }
    }
}

/// What an append has to do, decided under the journal lock.
enum Append {
    /// Nothing is buffered.
    Nothing,
    /// The records do not fit the journal: a checkpoint is due.
    Full,
    /// Write this block.
    Block(BlockWrite),
}

/// A journal block to write, and what becomes true once it is written.
struct BlockWrite {
    block: Vec<u8>,
    /// Device offset.
    at: u64,
    frees: Vec<u64>,
    /// The LSN the block covers.
    end: u64,
}

impl BlockWrite {
    /// The block is written: its frees wait for the seal, its records are published.
    fn written(self, inner: &PoolInner, sbs: &mut SbState) {
        sbs.unsealed_frees.extend(self.frees);
        inner.published_lsn.fetch_max(self.end, Ordering::AcqRel);
    }
}

/// Take the buffered records into the open block (or a new one) and build the block to
/// write; see [`append_locked`]. When the active journal half is full and the other one is
/// free, the append switches halves first ([`switch_half`]) and leaves the checkpoint that
/// frees the old half to the commit thread, woken here: the append itself never waits for a
/// checkpoint unless the other half is still being freed (a whole half filled during one).
fn prepare_append(inner: &PoolInner, sbs: &mut SbState) -> Result<Append> {
    let open_len = sbs.open.as_ref().map_or(0, |o| o.records.len());
    let half_len = inner.layout.journal_half_len();
    let (joins, switch, payload, nrecs, frees, end, next_id) = {
        let mut st = inner.state.write();
        st.check_failed()?;
        if st.nrecs == 0 {
            return Ok(Append::Nothing);
        }
        let joins = open_len > 0 && block_len(open_len + st.recs.buf.len()) <= PAGE;
        let (at, len) = if joins {
            (sbs.journal_off, block_len(open_len + st.recs.buf.len()))
        } else {
            (
                sbs.journal_off + open_block_len(sbs),
                block_len(st.recs.buf.len()),
            )
        };
        let switch = at + len > half_len;
        if switch
            && (sbs.ckpt_busy || block_len(st.recs.buf.len()) > half_len || bench_locked(inner))
        {
            return Ok(Append::Full);
        }
        let payload = std::mem::take(&mut st.recs.buf);
        let nrecs = std::mem::replace(&mut st.nrecs, 0);
        let frees = std::mem::take(&mut st.pending);
        (
            joins && !switch,
            switch,
            payload,
            nrecs,
            frees,
            st.lsn,
            st.meta.next_id,
        )
    };
    if switch {
        let start = switch_half(inner, sbs, next_id);
        sbs.ckpt_due = Some(start);
        inner.commit.wake();
    } else if !joins {
        close_open(sbs);
    }
    // The checkpoint replica applies every record the journal receives (see `SbState::backlog`).
    sbs.backlog.extend_from_slice(&payload);
    let open = sbs.open.get_or_insert_with(OpenBlock::default);
    open.records.extend_from_slice(&payload);
    open.nrecs += nrecs;
    let block = build_block(
        &inner.uuid,
        &sbs.boot,
        sbs.next_seq,
        open.nrecs,
        &open.records,
    );
    Ok(Append::Block(BlockWrite {
        block,
        at: inner.layout.journal_half_off(sbs.half) + sbs.journal_off,
        frees,
        end,
    }))
}

/// Benchmarks only: checkpoints run the way they did before this journal was
/// double-buffered (the journal lock held throughout), so one run measures both.
#[cfg(feature = "bench-internals")]
fn bench_locked(inner: &PoolInner) -> bool {
    inner.full_capture.load(Ordering::Acquire) || inner.ckpt_hold_journal.load(Ordering::Acquire)
}

#[cfg(not(feature = "bench-internals"))]
fn bench_locked(_: &PoolInner) -> bool {
    false
}

/// Move appends to the other journal half (the caller holds the journal lock and has made
/// sure that half is free: no checkpoint is in flight). The open block is closed, so every
/// record appended so far is in a block below the new half's first sequence number `N`;
/// what the replica has not applied of them, the chunks they freed and their LSN go to the
/// returned checkpoint, which images the state up to `N` while later records go to the new
/// half. Replay, until that checkpoint's superblock lands, reads the old half and goes on at
/// offset 0 of the new one (docs/storage-format.md, "Journal"). O(1) apart from moving the
/// backlog's buffer.
fn switch_half(inner: &PoolInner, sbs: &mut SbState, next_id: u64) -> CkptStart {
    close_open(sbs);
    let start = CkptStart {
        sb: sbs.sb.clone(),
        seq: sbs.next_seq,
        half: 1 - sbs.half,
        backlog: std::mem::take(&mut sbs.backlog),
        frees: std::mem::take(&mut sbs.unsealed_frees),
        end: inner.published_lsn.load(Ordering::Acquire),
        next_id,
        #[cfg(feature = "bench-internals")]
        capture: None,
    };
    sbs.half = start.half;
    sbs.journal_off = 0;
    sbs.ckpt_busy = true;
    start
}

/// One page: an open block is rewritten only while it fits one.
const PAGE: u64 = crate::journal::BLOCK_ALIGN as u64;

/// On-disk length of the open block (0 if none).
fn open_block_len(sbs: &SbState) -> u64 {
    sbs.open.as_ref().map_or(0, |o| block_len(o.records.len()))
}

/// Close the open block, if any: its last version is in the file; move the cursor past it.
pub(crate) fn close_open(sbs: &mut SbState) {
    if let Some(o) = sbs.open.take() {
        sbs.journal_off += block_len(o.records.len());
        sbs.next_seq += 1;
    }
}

/// Chunks freed by now-durable records become allocatable; flushes up to `end` may return.
fn release(inner: &PoolInner, frees: &[u64], end: u64, writes: u64) {
    let mut st = inner.state.write();
    for c in frees {
        st.alloc.clear(*c);
    }
    st.pending_count -= frees.len() as u64;
    inner.durable_lsn.fetch_max(end, Ordering::AcqRel);
    inner.synced_writes.fetch_max(writes, Ordering::AcqRel);
}

/// Write the next seal slot and fdatasync: journal blocks below `seq` are durable. The caller
/// has made the data those blocks map durable, and has either synced the blocks too or lets
/// this sync cover them.
pub(crate) fn write_seal(
    dev: &crate::device::Device,
    uuid: &uuid::Uuid,
    sealer: &mut Sealer,
    seq: u64,
) -> Result<()> {
    let seal = Seal {
        generation: sealer.seal.generation + 1,
        seq,
    };
    dev.write_at(&seal.encode(uuid), SEAL_OFF[(seal.generation % 2) as usize])
        .map_err(|e| io("writing the seal", e))?;
    dev.flush().map_err(|e| io("syncing the seal", e))?;
    sealer.seal = seal;
    sealer.durable_seq = sealer.durable_seq.max(seq);
    Ok(())
}

/// Callers waiting for a checkpoint ([`CommitQueue::request_checkpoint`]).
type CkptWaiters = Vec<tokio::sync::oneshot::Sender<Result<()>>>;

/// The commit thread's own state between commits.
#[derive(Default)]
struct Committer {
    /// Callers waiting for a checkpoint that has not begun yet.
    forced: CkptWaiters,
    /// The checkpoint thread writing the checkpoint in flight, if any.
    ckpt: Option<std::thread::JoinHandle<()>>,
}

impl Committer {
    /// Wait for the checkpoint thread, if one is running (close, or a pool dropped).
    fn join_checkpoint(&mut self) {
        if let Some(h) = self.ckpt.take() {
            let _ = h.join();
        }
    }
}

/// One commit: append what is buffered, fdatasync (the data every record refers to was
/// written before the record was appended, so data and blocks are durable together), then
/// seal the blocks written so far. Chunks freed by them are released after the seal. When
/// a checkpoint is due (an append switched halves, the half is full, or one is asked for)
/// it is handed to a thread of its own ([`checkpoint_thread`]) and the blocks of the new
/// half are sealed meanwhile, so flushes do not wait for it
/// (docs/decisions/0029-checkpoint-thread.md).
fn commit_once(inner: &Arc<PoolInner>, me: &mut Committer) -> Result<()> {
    let writes = inner.data_writes.load(Ordering::Acquire);
    let mut sbs = inner.sb.blocking_lock();
    let fits = append_locked(inner, &mut sbs, true)?;
    let started = std::time::Instant::now();
    // Callers that asked for a checkpoint ride on the one that switches here, never on one
    // that switched before they asked (its image may lack their records).
    let mut riders = Vec::new();
    // While a checkpoint is in flight the half it left is still what replay starts from: no
    // second switch. Callers that need one wait for it to finish (it wakes this thread).
    if sbs.ckpt_due.is_none() && !sbs.ckpt_busy && (!me.forced.is_empty() || !fits) {
        riders = std::mem::take(&mut me.forced);
        if !fits || bench_locked(inner) {
            // The buffered records fit no journal half (a huge unmap between two appends):
            // the image takes them, with the journal lock held throughout.
            let r = checkpoint_locked(inner, &mut sbs, writes);
            drop(sbs);
            if r.is_ok() {
                committed(inner, started);
            }
            answer(riders, &r);
            return r;
        }
        let next_id = inner.state.read().meta.next_id;
        let start = switch_half(inner, &mut sbs, next_id);
        sbs.ckpt_due = Some(start);
    }
    if let Some(start) = sbs.ckpt_due.take() {
        // Records buffered since the switch go to the new half; if they do not fit it, the
        // next commit finds the journal full again.
        if let Err(e) = append_locked(inner, &mut sbs, true) {
            let e = io(
                "appending to the journal",
                std::io::Error::other(e.to_string()),
            );
            answer(
                riders,
                &Err(io(
                    "appending to the journal",
                    std::io::Error::other(e.to_string()),
                )),
            );
            return Err(e);
        }
        drop(sbs);
        // The image is encoded and written, and synced twice, on the checkpoint thread,
        // without the journal lock: first writes and unmaps append to the new half, and
        // this thread seals its blocks, meanwhile.
        me.join_checkpoint();
        let worker = inner.clone();
        let spawned = std::thread::Builder::new()
            .name("lunar-checkpoint".into())
            .spawn(move || checkpoint_thread(&worker, start, riders, writes, started));
        match spawned {
            Ok(h) => me.ckpt = Some(h),
            Err(e) => return fail(inner, "starting the checkpoint thread", io("spawn", e)),
        }
        if bench_inline(inner) {
            me.join_checkpoint();
        }
        sbs = inner.sb.blocking_lock();
    }
    let seal_to = sbs.next_seq;
    // Written only under the journal lock, which this holds.
    let end = inner.published_lsn.load(Ordering::Acquire);
    let frees = std::mem::take(&mut sbs.unsealed_frees);
    // The replica follows the journal: taken in log order under the journal lock, applied
    // after it is released (the replica lock, taken first, keeps the order). While a
    // checkpoint is in flight the replica must first take the records below its switch and
    // be imaged: the records since stay in the backlog until it is done
    // (docs/decisions/0021-double-buffered-journal.md, "Consequences").
    if !sbs.ckpt_busy {
        let backlog = std::mem::take(&mut sbs.backlog);
        let mut replica = inner.replica.lock();
        drop(sbs);
        if let Err(e) = apply_backlog(&mut replica, &backlog) {
            return fail(inner, "checkpoint replica", e);
        }
    } else {
        drop(sbs);
    }
    let mut sealer = inner.sealer.lock();
    let need_seal = seal_to > sealer.durable_seq;
    let synced = inner.synced_writes.load(Ordering::Acquire);
    // Every record maps data whose write completed (and was counted) before the record was
    // logged, so before the append above. If no data write has completed since the last
    // sync, that data is durable already and the seal's own fdatasync can make the blocks
    // durable with it: one sync instead of two (an admin operation on an idle pool). A
    // power loss may then keep the seal without its newest blocks; replay ends before them
    // and `open::recover` pulls the seal back to the replayed end before anything else is
    // written (docs/storage-format.md, "Seal").
    //
    // During a checkpoint the seal also covers the old half's blocks below the switch
    // (written before it, so this sync covers them too): replay from the old superblock
    // reads them and goes on into the new half, so "every block below the seal is durable"
    // holds whichever superblock a crash leaves.
    let data_pending = inner.data_writes.load(Ordering::Acquire) > synced;
    let need_sync = (need_seal && data_pending) || writes > synced;
    if need_sync {
        if let Err(e) = sync(inner) {
            return fail(inner, "data sync failed", e);
        }
    }
    if need_seal {
        inner.stats.syncs.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = write_seal(&inner.dev, &inner.uuid, &mut sealer, seal_to) {
            return fail(inner, "metadata commit failed", e);
        }
    }
    drop(sealer);
    release(inner, &frees, end, writes);
    if need_seal {
        committed(inner, started);
    }
    Ok(())
}

/// Complete the callers that waited for a checkpoint.
fn answer(waiters: CkptWaiters, r: &Result<()>) {
    for tx in waiters {
        let _ = tx.send(match r {
            Ok(()) => Ok(()),
            Err(e) => Err(io(
                "writing a checkpoint",
                std::io::Error::other(e.to_string()),
            )),
        });
    }
}

/// The checkpoint thread: image the state below the switch and write it
/// ([`write_checkpoint`]), then, under the journal lock, make the checkpoint the pool's
/// starting point ([`checkpointed`]), answer the callers that waited for it and wake the
/// commit thread (a switch refused meanwhile, records that waited for a free half, and the
/// backlog the replica held back can go on).
fn checkpoint_thread(
    inner: &PoolInner,
    mut start: CkptStart,
    riders: CkptWaiters,
    writes: u64,
    started: std::time::Instant,
) {
    hook(inner, Step::Started);
    let r = write_checkpoint(inner, &mut start).map(|sb| {
        let mut sbs = inner.sb.blocking_lock();
        checkpointed(inner, &mut sbs, start, sb, writes);
        drop(sbs);
        committed(inner, started);
    });
    answer(riders, &r);
    inner.commit.wake();
}

/// Benchmarks only: the commit thread waits for the checkpoints it starts, as before they
/// had a thread of their own.
#[cfg(feature = "bench-internals")]
fn bench_inline(inner: &PoolInner) -> bool {
    inner.ckpt_inline.load(Ordering::Acquire)
}

#[cfg(not(feature = "bench-internals"))]
fn bench_inline(_: &PoolInner) -> bool {
    false
}

use crate::engine::CkptStep as Step;

/// Tests only: run the checkpoint hook at a step of writing a checkpoint.
#[cfg(test)]
fn hook(inner: &PoolInner, step: Step) {
    let h = inner.ckpt_hook.lock().clone();
    if let Some(h) = h {
        h(step);
    }
}

#[cfg(not(test))]
#[inline(always)]
fn hook(_: &PoolInner, _: Step) {}

/// Count a metadata commit and tell the observer its duration.
fn committed(inner: &PoolInner, started: std::time::Instant) {
    inner.stats.commits.fetch_add(1, Ordering::Relaxed);
    let observer = inner.commit_observer.read().clone();
    if let Some(f) = observer {
        f(started.elapsed());
    }
}

/// Apply journalled records (encoded, back to back) to the checkpoint replica, as open
/// replays them. A record that does not apply means the replica and the live metadata have
/// diverged: an internal error that fails the pool rather than write a wrong image.
pub(crate) fn apply_backlog(replica: &mut crate::layer::Meta, backlog: &[u8]) -> Result<()> {
    let mut d = crate::codec::Dec::new(backlog, "checkpoint backlog");
    let mut freed = Vec::new();
    while d.remaining() > 0 {
        let rec = crate::journal::decode_rec(&mut d)?;
        replica.apply(&rec, &mut freed).map_err(|e| {
            StorageError::Corrupt(format!(
                "internal: a record does not apply to the replica: {e}"
            ))
        })?;
        freed.clear();
    }
    Ok(())
}

/// Write a checkpoint of the whole metadata (every record appended or buffered so far) with
/// the journal lock held throughout, so nothing is appended meanwhile: the path for buffered
/// records that fit no journal half (the image takes them), and the benchmarks' "before".
/// The journal moves to the other half like any checkpoint ([`switch_half`]).
///
/// The image is encoded from the replica, not the live metadata: under the metadata lock
/// this only takes the buffered records (O(records since the last append)), so reads and
/// writes never wait for a copy of the maps (153 ms at 8 M mapped chunks when the live maps
/// were copied out).
pub(crate) fn checkpoint_locked(inner: &PoolInner, sbs: &mut SbState, writes: u64) -> Result<()> {
    #[cfg(feature = "bench-internals")]
    let legacy = inner.full_capture.load(Ordering::Acquire);
    #[cfg(feature = "bench-internals")]
    let mut legacy_capture = None;
    let (buffered, frees, end, next_id) = {
        let mut st = inner.state.write();
        st.check_failed()?;
        #[cfg(feature = "bench-internals")]
        if legacy {
            legacy_capture = Some(checkpoint::capture(&st.meta, &inner.uuid));
        }
        let buffered = std::mem::take(&mut st.recs.buf);
        st.nrecs = 0;
        let frees = std::mem::take(&mut st.pending);
        (buffered, frees, st.lsn, st.meta.next_id)
    };
    // Records logged from here on are not in the image and go to the new half (the journal
    // lock, held throughout, keeps them out of the old one).
    let mut start = switch_half(inner, sbs, next_id);
    start.backlog.extend_from_slice(&buffered);
    start.frees.extend(frees);
    start.end = end;
    #[cfg(feature = "bench-internals")]
    {
        start.capture = legacy_capture;
    }
    let sb = write_checkpoint(inner, &mut start)?;
    checkpointed(inner, sbs, start, sb, writes);
    Ok(())
}

/// Image the state a half switch captured and make it the pool's starting point: the
/// replica applies the switch's backlog (it is then, record for record, the live metadata
/// at the switch: the state open would rebuild from the previous image and the journal
/// below the switch) and is encoded; the image goes to the inactive slot, fdatasync (data
/// before mapping: everything the image maps was written before its record was logged),
/// then the superblock naming the image, the new half and its first sequence number,
/// fdatasync. A crash anywhere before the superblock lands leaves the previous superblock,
/// whose replay reads the old half and goes on into the new one. Needs no journal lock.
fn write_checkpoint(inner: &PoolInner, start: &mut CkptStart) -> Result<Superblock> {
    let backlog = std::mem::take(&mut start.backlog);
    let img = {
        let mut replica = inner.replica.lock();
        if let Err(e) = apply_backlog(&mut replica, &backlog) {
            return fail(inner, "checkpoint replica", e);
        }
        drop(backlog);
        // An operation that failed after taking ids logged nothing; the live counter is past
        // them and so is the image, as when it was encoded from the live metadata.
        replica.next_id = replica.next_id.max(start.next_id);
        #[cfg(feature = "bench-internals")]
        if let Some(c) = start.capture.take() {
            c.encode()
        } else {
            checkpoint::encode(&replica, &inner.uuid)
        }
        #[cfg(not(feature = "bench-internals"))]
        checkpoint::encode(&replica, &inner.uuid)
    };
    let layout = inner.layout;
    let res = (|| -> Result<Superblock> {
        if img.len() as u64 > layout.ckpt_len {
            return Err(io(
                "writing a checkpoint",
                std::io::Error::other(format!(
                    "metadata image of {} bytes exceeds the checkpoint area of {} bytes",
                    img.len(),
                    layout.ckpt_len
                )),
            ));
        }
        let slot = match start.sb.ckpt_slot {
            Some(0) => 1u8,
            _ => 0u8,
        };
        inner
            .dev
            .write_at(&img, layout.ckpt_off[slot as usize])
            .map_err(|e| io("writing a checkpoint", e))?;
        hook(inner, Step::ImageWritten);
        sync(inner)?;
        hook(inner, Step::ImageSynced);
        let mut sb = start.sb.clone();
        sb.generation += 1;
        sb.version = crate::superblock::FORMAT_VERSION;
        sb.ckpt_slot = Some(slot);
        sb.ckpt_bytes = img.len() as u64;
        sb.ckpt_crc = crc32c::crc32c(&img);
        sb.journal_seq = start.seq;
        sb.journal_half = start.half;
        let off = (sb.generation % 2) * SB_SLOT;
        inner
            .dev
            .write_at(&sb.encode(), off)
            .map_err(|e| io("writing the superblock", e))?;
        hook(inner, Step::SuperblockWritten);
        sync(inner)?;
        hook(inner, Step::SuperblockSynced);
        Ok(sb)
    })();
    match res {
        Ok(sb) => Ok(sb),
        Err(e) => fail(inner, "metadata commit failed", e),
    }
}

/// A checkpoint's superblock is durable (the caller holds the journal lock): the old half is
/// free for the next switch, the blocks below the switch are durable, and the chunks their
/// records freed become allocatable.
fn checkpointed(
    inner: &PoolInner,
    sbs: &mut SbState,
    start: CkptStart,
    sb: Superblock,
    writes: u64,
) {
    sbs.sb = sb;
    sbs.ckpt_busy = false;
    inner.published_lsn.fetch_max(start.end, Ordering::AcqRel);
    {
        let mut sealer = inner.sealer.lock();
        sealer.durable_seq = sealer.durable_seq.max(start.seq);
    }
    release(inner, &start.frees, start.end, writes);
}

/// Start the commit thread.
pub(crate) fn spawn(
    inner: Weak<PoolInner>,
    queue: Arc<CommitQueue>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("lunar-commit".into())
        .spawn(move || run(inner, queue))
}

fn run(weak: Weak<PoolInner>, queue: Arc<CommitQueue>) {
    let mut me = Committer::default();
    loop {
        let batch = queue.next_batch(Duration::from_secs(1));
        let mut waiters = batch.waiters;
        me.forced.extend(batch.ckpt_waiters);
        if me.ckpt.as_ref().is_some_and(|h| h.is_finished()) {
            me.join_checkpoint();
        }
        let Some(inner) = weak.upgrade() else {
            me.join_checkpoint();
            let (mut left, ckpt) = queue.stop();
            waiters.append(&mut left);
            me.forced.extend(ckpt);
            for (_, _, tx) in waiters {
                let _ = tx.send(Err(io(
                    "committing metadata",
                    std::io::Error::other("pool dropped"),
                )));
            }
            let gone = Err(io(
                "writing a checkpoint",
                std::io::Error::other("pool dropped"),
            ));
            answer(std::mem::take(&mut me.forced), &gone);
            return;
        };
        let before = inner.durable_lsn.load(Ordering::Acquire);
        let res = commit_once(&inner, &mut me);
        let durable = inner.durable_lsn.load(Ordering::Acquire);
        let synced = inner.synced_writes.load(Ordering::Acquire);
        let busy = me.ckpt.as_ref().is_some_and(|h| !h.is_finished());
        drop(inner);
        if let Err(e) = &res {
            let failed = Err(io(
                "committing metadata",
                std::io::Error::other(e.to_string()),
            ));
            answer(std::mem::take(&mut me.forced), &failed);
        }
        let mut again = Vec::new();
        for (t, w, tx) in waiters.drain(..) {
            match &res {
                Err(e) => {
                    let _ = tx.send(Err(io(
                        "committing metadata",
                        std::io::Error::other(e.to_string()),
                    )));
                }
                Ok(_) if t <= durable && w <= synced => {
                    let _ = tx.send(Ok(()));
                }
                Ok(_) => again.push((t, w, tx)),
            }
        }
        let stuck = !again.is_empty() && durable == before;
        queue.requeue(again);
        if (stuck || !me.forced.is_empty()) && busy {
            // What is left waits for the checkpoint in flight (both journal halves are
            // taken, or a checkpoint is asked for): it wakes this thread when it is done.
            queue.wait_for_wake(Duration::from_millis(50));
        }
        if batch.shutdown && me.forced.is_empty() && queue.stop_if_idle() {
            me.join_checkpoint();
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::Pool;
    use bytes::Bytes;
    use std::sync::atomic::Ordering;

    const CS: u64 = 65536;

    async fn pool_with_volume(dir: &std::path::Path) -> Pool {
        crate::testutil::pool_with_volume(dir, CS as u32, 256 * CS).await
    }

    /// One first write at a time, each published before it returns: the records share the
    /// open block instead of taking a 4 KiB block each.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn queue_depth_one_first_writes_share_journal_pages() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pool = pool_with_volume(dir.path()).await;
        let v = pool.volume("v").expect("v");
        let before = pool.inner.sb.lock().await.journal_off;
        for i in 0..100u64 {
            v.write(i * (CS / 4096), Bytes::from(vec![i as u8; 4096]), false)
                .await
                .expect("write");
        }
        let used = pool.inner.sb.lock().await.journal_off - before;
        // 100 records of 25 bytes fit one page; the commit thread's once-a-second commit may
        // close a block or two meanwhile.
        assert!(
            used <= 3 * 4096,
            "100 first writes took {used} bytes of journal"
        );
        pool.close().await.expect("close");
        let pool = Pool::open(dir.path()).await.expect("reopen");
        let v = pool.volume("v").expect("v");
        for i in 0..100u64 {
            let got = v.read(i * (CS / 4096), 1).await.expect("read");
            assert!(got.iter().all(|&b| b == i as u8), "chunk {i}");
        }
        pool.close().await.expect("close");
    }

    /// A checkpoint taken while a block is open (here the first block after the previous
    /// checkpoint, at journal offset 0) closes it, so the restarted journal's sequence is
    /// above it and replay never applies its records on top of the image.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_checkpoint_closes_the_open_block() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pool = pool_with_volume(dir.path()).await;
        pool.close().await.expect("close");
        let pool = Pool::open(dir.path()).await.expect("reopen");
        let v = pool.volume("v").expect("v");
        v.write(0, Bytes::from(vec![7u8; 4096]), false)
            .await
            .expect("write");
        {
            let sbs = pool.inner.sb.lock().await;
            assert!(sbs.open.is_some(), "the write's record is in an open block");
            assert_eq!(sbs.journal_off, 0, "at the start of the journal");
        }
        // A checkpoint straight away, as when the journal is full (the commit thread then
        // checkpoints without closing the block first).
        let inner = pool.inner.clone();
        tokio::task::spawn_blocking(move || {
            let mut sbs = inner.sb.blocking_lock();
            let seq = sbs.next_seq;
            let writes = inner.data_writes.load(Ordering::Acquire);
            super::checkpoint_locked(&inner, &mut sbs, writes).expect("checkpoint");
            assert!(sbs.open.is_none(), "the checkpoint closed the open block");
            assert!(
                sbs.sb.journal_seq > seq,
                "the journal restarts above the open block"
            );
            assert_eq!((sbs.journal_off, sbs.next_seq), (0, sbs.sb.journal_seq));
        })
        .await
        .expect("checkpoint task");
        pool.close().await.expect("close");
        let pool = Pool::open(dir.path()).await.expect("reopen");
        let got = pool.volume("v").expect("v").read(0, 1).await.expect("read");
        assert!(got.iter().all(|&b| b == 7));
        assert!(pool.check().await.expect("check").is_clean());
        pool.close().await.expect("close");
    }

    /// Copy of the pool file as a process kill would leave it (the page cache survives).
    fn killed_copy(from: &std::path::Path) -> tempfile::TempDir {
        let to = tempfile::tempdir().expect("tempdir");
        std::fs::copy(
            from.join(crate::open::POOL_FILE),
            to.path().join(crate::open::POOL_FILE),
        )
        .expect("copy the pool file");
        to
    }

    async fn expect_blocks(pool: &Pool, want: &[(u64, u8)]) {
        let v = pool.volume("v").expect("v");
        for &(lba, byte) in want {
            let got = v.read(lba, 1).await.expect("read");
            assert!(
                got.iter().all(|&b| b == byte),
                "block {lba}: want {byte}, got {}",
                got[0]
            );
        }
    }

    /// The state the checkpoint-kill tests start from: a pool whose volume `v` has its first
    /// 40 chunks written with 1s (so the old journal half holds first writes), with the
    /// blocks expected back, which each test extends with what it does during the
    /// checkpoint.
    async fn pool_before_a_checkpoint(
        dir: &std::path::Path,
    ) -> (Pool, crate::Volume, Vec<(u64, u8)>) {
        let pool = pool_with_volume(dir).await;
        let v = pool.volume("v").expect("v");
        let chunk = CS / 4096;
        let mut want = Vec::new();
        for i in 0..40u64 {
            v.write(i * chunk, Bytes::from(vec![1u8; 4096]), false)
                .await
                .expect("write");
            want.push((i * chunk, 1u8));
        }
        (pool, v, want)
    }

    /// A process killed while a checkpoint is being written, after first writes, unmaps and
    /// a snapshot went to the new journal half: open replays the old half from the previous
    /// superblock and goes on into the new one, so every acknowledged operation survives;
    /// it then checkpoints at open (the journal spanned both halves) and the pool works on,
    /// through more writes, a reopen, and the interrupted checkpoint completing on the
    /// original handle.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_kill_during_a_checkpoint_keeps_what_the_new_half_got() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (pool, v, mut want) = pool_before_a_checkpoint(dir.path()).await;
        let chunk = CS / 4096;
        // The switch a checkpoint makes, without the checkpoint finishing (its superblock is
        // never written): the replica takes the old half's records, as the checkpoint would.
        let inner = pool.inner.clone();
        let (start, old_half) = tokio::task::spawn_blocking(move || {
            let mut sbs = inner.sb.blocking_lock();
            let old_half = sbs.half;
            let next_id = inner.state.read().meta.next_id;
            let mut start = super::switch_half(&inner, &mut sbs, next_id);
            let backlog = std::mem::take(&mut start.backlog);
            super::apply_backlog(&mut inner.replica.lock(), &backlog).expect("replica");
            (start, old_half)
        })
        .await
        .expect("switch");
        assert_ne!(start.half, old_half);
        // Acknowledged during the checkpoint: first writes, overwrites of chunks mapped
        // before the switch, unmaps and a snapshot, all in the new half.
        for i in 40..80u64 {
            v.write(i * chunk, Bytes::from(vec![2u8; 4096]), false)
                .await
                .expect("write");
            want.push((i * chunk, 2u8));
        }
        pool.snapshot("v", "s").await.expect("snapshot");
        for i in 0..10u64 {
            v.unmap(i * chunk, chunk).await.expect("unmap");
            want[i as usize].1 = 0;
        }
        for i in 10..20u64 {
            v.write(i * chunk, Bytes::from(vec![3u8; 4096]), false)
                .await
                .expect("write");
            want[i as usize].1 = 3;
        }
        {
            let sbs = pool.inner.sb.lock().await;
            assert_eq!(sbs.half, start.half, "appends went to the new half");
            assert!(sbs.journal_off > 0);
            assert_eq!(
                sbs.sb.journal_half, old_half,
                "the superblock still names the old half"
            );
        }
        let copy = killed_copy(dir.path());
        {
            let l = crate::open::open(copy.path()).expect("load the killed copy");
            assert!(l.spans, "replay went on into the new half");
            assert_eq!(l.journal_half, start.half);
        }
        let reopened = Pool::open(copy.path()).await.expect("open the killed copy");
        expect_blocks(&reopened, &want).await;
        assert!(reopened.check().await.expect("check").is_clean());
        assert!(
            reopened.snapshots(Some("v")).iter().any(|s| s.name == "s"),
            "the snapshot survived"
        );
        {
            let sbs = reopened.inner.sb.lock().await;
            assert_eq!(
                (sbs.half, sbs.sb.journal_half, sbs.journal_off),
                (old_half, old_half, 0),
                "open checkpointed and restarted the journal in the freed half"
            );
        }
        let rv = reopened.volume("v").expect("v");
        for i in 80..90u64 {
            rv.write(i * chunk, Bytes::from(vec![4u8; 4096]), false)
                .await
                .expect("write");
        }
        let copy2 = killed_copy(copy.path());
        reopened.close().await.expect("close");
        let mut want2 = want.clone();
        want2.extend((80..90u64).map(|i| (i * chunk, 4u8)));
        for d in [copy.path(), copy2.path()] {
            let p = Pool::open(d).await.expect("reopen");
            expect_blocks(&p, &want2).await;
            assert!(p.check().await.expect("check").is_clean());
            p.close().await.expect("close");
        }
        // The original finishes its checkpoint; everything is still there after a reopen.
        pool.inner.sb.lock().await.ckpt_due = Some(start);
        pool.checkpoint().await.expect("checkpoint");
        pool.close().await.expect("close");
        let p = Pool::open(dir.path()).await.expect("reopen the original");
        expect_blocks(&p, &want).await;
        assert!(p.check().await.expect("check").is_clean());
        p.close().await.expect("close");
    }

    /// The checkpoint runs on a thread of its own: stopped at each of its steps, the commit
    /// thread still seals the new half's blocks (a flush returns, and replay of a copy then
    /// finds no unsealed block), and a kill there (the pool file copied as it stands) loses
    /// nothing acknowledged: the copy opens from the old superblock through both halves, or
    /// from the new one, with `check` clean; so does the original once the checkpoint ends.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn kills_at_every_step_of_the_checkpoint_thread_lose_nothing() {
        use crate::engine::CkptStep;
        use std::sync::atomic::AtomicBool;
        use std::sync::{mpsc, Mutex};
        let steps = [
            CkptStep::Started,
            CkptStep::ImageWritten,
            CkptStep::ImageSynced,
            CkptStep::SuperblockWritten,
            CkptStep::SuperblockSynced,
        ];
        for step in steps {
            let dir = tempfile::tempdir().expect("tempdir");
            let (pool, v, mut want) = pool_before_a_checkpoint(dir.path()).await;
            let chunk = CS / 4096;
            let (reached_tx, reached_rx) = mpsc::channel::<()>();
            let (go_tx, go_rx) = mpsc::channel::<()>();
            let reached_tx = Mutex::new(reached_tx);
            let go_rx = Mutex::new(go_rx);
            let fired = AtomicBool::new(false);
            *pool.inner.ckpt_hook.lock() = Some(std::sync::Arc::new(move |s| {
                if s == step && !fired.swap(true, Ordering::AcqRel) {
                    let _ = reached_tx.lock().expect("hook").send(());
                    let _ = go_rx.lock().expect("hook").recv();
                }
            }));
            let p = pool.clone();
            let ckpt = tokio::spawn(async move { p.checkpoint().await });
            tokio::task::spawn_blocking(move || {
                reached_rx
                    .recv_timeout(std::time::Duration::from_secs(60))
                    .expect("the checkpoint thread reaches the step")
            })
            .await
            .expect("wait");
            // While it is stopped: first writes, FUA overwrites, unmaps, a snapshot, and
            // flushes, which the commit thread answers by sealing the new half.
            for i in 40..60u64 {
                v.write(i * chunk, Bytes::from(vec![2u8; 4096]), false)
                    .await
                    .expect("write");
                want.push((i * chunk, 2u8));
            }
            for i in 0..5u64 {
                v.write(i * chunk, Bytes::from(vec![3u8; 4096]), true)
                    .await
                    .expect("FUA write during the checkpoint");
                want[i as usize].1 = 3;
            }
            pool.snapshot("v", "s").await.expect("snapshot");
            for i in 5..10u64 {
                v.unmap(i * chunk, chunk).await.expect("unmap");
                want[i as usize].1 = 0;
            }
            pool.flush().await.expect("flush during the checkpoint");
            assert!(
                !ckpt.is_finished(),
                "{step:?}: the checkpoint is still stopped"
            );
            let copy = killed_copy(dir.path());
            {
                let l = crate::open::open(copy.path()).expect("load the killed copy");
                assert!(
                    !l.unsealed,
                    "{step:?}: the flush sealed every block written during the checkpoint"
                );
                let old_sb = matches!(
                    step,
                    CkptStep::Started | CkptStep::ImageWritten | CkptStep::ImageSynced
                );
                if old_sb {
                    assert!(
                        l.spans,
                        "{step:?}: replay from the old superblock spans both halves"
                    );
                }
            }
            pool.inner.ckpt_hook.lock().take();
            go_tx.send(()).expect("release the checkpoint thread");
            ckpt.await.expect("checkpoint task").expect("checkpoint");
            let reopened = Pool::open(copy.path()).await.expect("open the killed copy");
            expect_blocks(&reopened, &want).await;
            assert!(
                reopened.check().await.expect("check").is_clean(),
                "{step:?}: check after the kill"
            );
            assert!(reopened.snapshots(Some("v")).iter().any(|s| s.name == "s"));
            reopened.close().await.expect("close");
            pool.close().await.expect("close");
            let p = Pool::open(dir.path()).await.expect("reopen the original");
            expect_blocks(&p, &want).await;
            assert!(p.check().await.expect("check").is_clean());
            p.close().await.expect("close");
        }
    }

    /// Appends that fill a journal half move to the other one and leave the checkpoint to
    /// the commit thread: no first write waits for it, the superblock follows, and the pool
    /// reopens with everything (many switches, kills simulated between them).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_half_switches_without_waiting_for_the_checkpoint() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pool = crate::testutil::pool_with_volume(dir.path(), 4096, 8 << 20).await;
        let v = pool.volume("v").expect("v");
        let half = pool.inner.layout.journal_half_len();
        let mut switches = 0;
        let mut last_half = pool.inner.sb.lock().await.half;
        let mut want = vec![0u8; 2048];
        let mut copies = Vec::new();
        let mut rng = 7u64;
        // Unmap and rewrite blocks so that every write is a first write (a Map record) and
        // every unmap frees a chunk: the journal fills while the pool stays small.
        for n in 0..400_000u64 {
            rng = rng
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let b = (rng >> 33) % 2048;
            if want[b as usize] != 0 && n % 3 == 0 {
                v.unmap(b, 1).await.expect("unmap");
                want[b as usize] = 0;
            } else {
                let byte = (n % 250 + 1) as u8;
                v.unmap(b, 1).await.expect("unmap");
                v.write(b, Bytes::from(vec![byte; 4096]), false)
                    .await
                    .expect("write");
                want[b as usize] = byte;
            }
            if n % 16 == 0 {
                // A commit closes the open block: blocks of one page or so.
                pool.flush().await.expect("flush");
            }
            let h = pool.inner.sb.lock().await.half;
            if h != last_half {
                switches += 1;
                last_half = h;
                copies.push((killed_copy(dir.path()), want.clone()));
            }
            if switches >= 4 {
                break;
            }
        }
        assert!(
            switches >= 4,
            "the journal ({half} bytes a half) switched {switches} times"
        );
        pool.close().await.expect("close");
        copies.push((killed_copy(dir.path()), want.clone()));
        for (d, want) in &copies {
            let p = Pool::open(d.path()).await.expect("reopen");
            let w: Vec<(u64, u8)> = (0..2048u64).map(|b| (b, want[b as usize])).collect();
            expect_blocks(&p, &w).await;
            assert!(p.check().await.expect("check").is_clean());
            p.close().await.expect("close");
        }
    }

    /// The image the replica would give right now (replica plus the records it has not
    /// applied yet) and the image of the live metadata, taken under the journal and
    /// metadata locks so nothing changes between the two.
    fn images(pool: &Pool) -> (Vec<u8>, Vec<u8>) {
        let inner = &pool.inner;
        let sbs = inner.sb.blocking_lock();
        let st = inner.state.read();
        let mut replica = inner.replica.lock().clone();
        super::apply_backlog(&mut replica, &sbs.backlog).expect("backlog applies");
        super::apply_backlog(&mut replica, &st.recs.buf).expect("buffered records apply");
        replica.next_id = replica.next_id.max(st.meta.next_id);
        (
            crate::checkpoint::encode(&replica, &inner.uuid),
            crate::checkpoint::encode(&st.meta, &inner.uuid),
        )
    }

    /// The checkpoint replica, fed only the journalled records, stays byte for byte the
    /// live metadata through every kind of record: first writes, unmaps, snapshots, clones
    /// of snapshots and of live volumes, deletes that merge layers, rollbacks, resizes,
    /// renames, guarantees, a split's detach, reclaimed garbage, receives (staged, resumed
    /// after reopen, committed, aborted); and across checkpoints
    /// taken in between and a reopen.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_replica_is_the_live_metadata_record_for_record() {
        use crate::Guarantee;
        use rand::{Rng, SeedableRng};
        let dir = tempfile::tempdir().expect("tempdir");
        let mut pool = pool_with_volume(dir.path()).await;
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x5ca1);
        let blocks = 256 * CS / 4096;
        let mut vols = vec!["v".to_string()];
        let mut snaps: Vec<(String, String)> = Vec::new();
        let mut compared = 0;
        for step in 0..400u32 {
            let v = vols[rng.gen_range(0..vols.len())].clone();
            let r = match rng.gen_range(0..22) {
                0..=8 => {
                    let vol = pool.volume(&v).expect("volume");
                    let lba = rng.gen_range(0..vol.num_blocks().min(blocks));
                    vol.write(lba, Bytes::from(vec![step as u8; 4096]), false)
                        .await
                        .map(|_| ())
                }
                9 | 10 => {
                    let vol = pool.volume(&v).expect("volume");
                    let n = vol.num_blocks();
                    let lba = rng.gen_range(0..n);
                    vol.unmap(lba, rng.gen_range(1..64).min(n - lba)).await
                }
                11 => {
                    let s = format!("s{step}");
                    let r = pool.snapshot(&v, &s).await.map(|_| ());
                    if r.is_ok() {
                        snaps.push((v.clone(), s));
                    }
                    r
                }
                12 if !snaps.is_empty() => {
                    let (sv, s) = snaps[rng.gen_range(0..snaps.len())].clone();
                    let name = format!("c{step}");
                    let r = pool.clone_volume(&format!("{sv}@{s}"), &name, None).await;
                    if r.is_ok() {
                        vols.push(name);
                    }
                    r.map(|_| ())
                }
                13 => {
                    let name = format!("l{step}");
                    let g = rng.gen_bool(0.3).then_some(Guarantee::Full);
                    let r = pool.clone_volume(&v, &name, g).await;
                    if r.is_ok() {
                        vols.push(name);
                    }
                    r.map(|_| ())
                }
                14 if !snaps.is_empty() => {
                    let (sv, s) = snaps.remove(rng.gen_range(0..snaps.len()));
                    pool.delete_snapshot(&sv, &s).await
                }
                15 if vols.len() > 1 => {
                    let i = rng.gen_range(1..vols.len());
                    let name = vols.remove(i);
                    snaps.retain(|(sv, _)| *sv != name);
                    pool.delete_volume(&name).await
                }
                16 => {
                    let mine: Vec<_> = snaps.iter().filter(|(sv, _)| *sv == v).collect();
                    if let Some((_, s)) = mine.first() {
                        let s = s.clone();
                        pool.rollback(&v, &s).await
                    } else {
                        Ok(())
                    }
                }
                17 => {
                    let size = rng.gen_range(64..=256u64) * CS;
                    pool.resize_volume(&v, size, true).await.map(|_| ())
                }
                18 => {
                    if rng.gen_bool(0.5) {
                        let g = if rng.gen_bool(0.5) {
                            Guarantee::Full
                        } else {
                            Guarantee::None
                        };
                        pool.set_guarantee(&v, g).await
                    } else if v != "v" {
                        match pool.start_split(&v) {
                            Ok(job) => job.wait().await,
                            Err(e) => Err(e),
                        }
                    } else {
                        pool.reconcile_space().await
                    }
                }
                20 => {
                    // A receive: committed as a new volume, or left staged.
                    let name = format!("r{step}");
                    let spec = crate::ReceiveSpec {
                        volume: name.clone(),
                        base: crate::ReceiveBase::New,
                        snapshot: "rs".into(),
                        snapshot_uuid: uuid::Uuid::new_v4(),
                        size_bytes: 8 * CS,
                        block_size: 4096,
                    };
                    match pool.receive_begin(spec).await {
                        Ok(mut rx) => {
                            let r = async {
                                rx.put_chunk(1, Bytes::from(vec![step as u8 | 1; CS as usize]))
                                    .await?;
                                rx.put_hole(2).await?;
                                rx.save_progress().await?;
                                rx.put_chunk(5, Bytes::from(vec![7u8; CS as usize])).await
                            }
                            .await;
                            if r.is_ok() && rng.gen_bool(0.5) {
                                let c = rx.commit().await;
                                if c.is_ok() {
                                    vols.push(name);
                                }
                                c.map(|_| ())
                            } else {
                                r
                            }
                        }
                        Err(e) => Err(e),
                    }
                }
                21 => {
                    for r in pool.receives() {
                        pool.receive_abort(&r.spec.volume).await.expect("abort");
                    }
                    Ok(())
                }
                _ => {
                    if rng.gen_range(0..4) == 0 {
                        pool.checkpoint().await
                    } else {
                        pool.flush().await
                    }
                }
            };
            // Operations may fail for good reasons (no space, a shrink below what a
            // snapshot needs); a failure must not leave the replica behind either.
            let _ = r;
            if step % 7 == 0 {
                let p = pool.clone();
                let (replica, live) = tokio::task::spawn_blocking(move || images(&p))
                    .await
                    .expect("images");
                assert!(replica == live, "step {step}: the replica diverged");
                compared += 1;
            }
            if step == 200 {
                pool.close().await.expect("close");
                pool = Pool::open(dir.path()).await.expect("reopen");
            }
        }
        assert!(compared > 50);
        let p = pool.clone();
        let (replica, live) = tokio::task::spawn_blocking(move || images(&p))
            .await
            .expect("images");
        assert!(replica == live, "the replica diverged at the end");
        assert!(pool.check().await.expect("check").is_clean());
        pool.close().await.expect("close");
    }
}
