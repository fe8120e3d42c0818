//! The commit actor: one thread turns buffered metadata records into durable journal blocks.
//!
//! Order per commit (docs/storage-format.md): take the record buffer, fdatasync (data written
//! before those records were appended is now durable), write the journal block (or a full
//! checkpoint when the journal is full), fdatasync, then release the chunks those records
//! freed. All flush requests waiting at that moment complete together (group commit). Without
//! requests, buffered records are committed every second.

use std::os::unix::fs::FileExt;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::{Condvar, Mutex};
use tokio::sync::oneshot;

use crate::engine::PoolInner;
use crate::journal::{build_block, HEADER};
use crate::superblock::SB_SLOT;
use crate::{checkpoint, Result, StorageError};

type Waiter = (u64, u64, oneshot::Sender<Result<()>>);

#[derive(Default)]
struct Queue {
    waiters: Vec<Waiter>,
    shutdown: bool,
    /// The commit thread has exited: requests fail at once instead of waiting forever.
    stopped: bool,
    force_checkpoint: bool,
}

/// Queue shared between flush callers and the commit thread.
#[derive(Default)]
pub(crate) struct CommitShared {
    q: Mutex<Queue>,
    cv: Condvar,
}

impl CommitShared {
    /// Ask for everything up to `lsn` to be durable.
    /// Ask for every record up to `lsn` and every data write up to `writes` to be durable.
    pub fn request(&self, lsn: u64, writes: u64) -> oneshot::Receiver<Result<()>> {
        let (tx, rx) = oneshot::channel();
        let mut q = self.q.lock();
        if q.stopped {
            let _ = tx.send(Err(io(
                "committing metadata",
                std::io::Error::other("commit thread stopped"),
            )));
        } else {
            q.waiters.push((lsn, writes, tx));
            self.cv.notify_one();
        }
        rx
    }
    /// Ask for a checkpoint at the next commit (used by close).
    pub fn request_checkpoint(&self, lsn: u64, writes: u64) -> oneshot::Receiver<Result<()>> {
        self.q.lock().force_checkpoint = true;
        self.request(lsn, writes)
    }
    pub fn shutdown(&self) {
        self.q.lock().shutdown = true;
        self.cv.notify_all();
    }
}

fn io(context: &str, e: std::io::Error) -> StorageError {
    StorageError::io(context, e)
}

fn sync(inner: &PoolInner) -> Result<()> {
    inner
        .file
        .sync_data()
        .map_err(|e| io("syncing the pool", e))
}

/// One commit. Returns the durable LSN.
fn commit_once(inner: &PoolInner, force_ckpt: bool) -> Result<u64> {
    let writes = inner.data_writes.load(Ordering::Acquire);
    let (payload, nrecs, frees, end, ckpt) = {
        let mut st = inner.state.write();
        st.check_failed()?;
        if st.nrecs == 0 && !force_ckpt {
            let lsn = st.lsn;
            drop(st);
            if writes > inner.synced_writes.load(Ordering::Acquire) {
                if let Err(e) = sync(inner) {
                    inner.state.write().failed = Some(format!("data sync failed: {e}"));
                    return Err(e);
                }
                inner.synced_writes.fetch_max(writes, Ordering::AcqRel);
            }
            return Ok(lsn);
        }
        let payload = std::mem::take(&mut st.recs.buf);
        let nrecs = std::mem::replace(&mut st.nrecs, 0);
        let frees = std::mem::take(&mut st.pending);
        let sbs = inner.sb.lock();
        let block_len = (HEADER + payload.len()).div_ceil(4096) as u64 * 4096;
        let ckpt = if force_ckpt || sbs.journal_off + block_len > inner.layout.journal_len {
            Some(checkpoint::encode(&st.meta, &inner.uuid))
        } else {
            None
        };
        (payload, nrecs, frees, st.lsn, ckpt)
    };
    let started = std::time::Instant::now();
    let res = write_commit(inner, &payload, nrecs, ckpt);
    if res.is_ok() {
        inner.stats.commits.fetch_add(1, Ordering::Relaxed);
        let observer = inner.commit_observer.read().clone();
        if let Some(f) = observer {
            f(started.elapsed());
        }
    }
    let mut st = inner.state.write();
    if let Err(e) = &res {
        st.failed = Some(format!("metadata commit failed: {e}"));
        return res.map(|_| end);
    }
    for c in &frees {
        st.alloc.clear(*c);
    }
    st.pending_count -= frees.len() as u64;
    inner.durable_lsn.store(end, Ordering::Release);
    inner.synced_writes.fetch_max(writes, Ordering::AcqRel);
    Ok(end)
}

fn write_commit(
    inner: &PoolInner,
    payload: &[u8],
    nrecs: u32,
    ckpt: Option<Vec<u8>>,
) -> Result<()> {
    // Data before mapping.
    sync(inner)?;
    let mut sbs = inner.sb.lock();
    let layout = inner.layout;
    match ckpt {
        None => {
            let block = build_block(&inner.uuid, sbs.next_seq, nrecs, payload);
            inner
                .file
                .write_all_at(&block, layout.journal_off + sbs.journal_off)
                .map_err(|e| io("writing the journal", e))?;
            sync(inner)?;
            sbs.journal_off += block.len() as u64;
            sbs.next_seq += 1;
        }
        Some(img) => {
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
            let slot = match sbs.sb.ckpt_slot {
                Some(0) => 1u8,
                _ => 0u8,
            };
            inner
                .file
                .write_all_at(&img, layout.ckpt_off[slot as usize])
                .map_err(|e| io("writing a checkpoint", e))?;
            sync(inner)?;
            let mut sb = sbs.sb.clone();
            sb.generation += 1;
            sb.ckpt_slot = Some(slot);
            sb.ckpt_bytes = img.len() as u64;
            sb.ckpt_crc = crc32c::crc32c(&img);
            sb.journal_seq = sbs.next_seq;
            let off = (sb.generation % 2) * SB_SLOT;
            inner
                .file
                .write_all_at(&sb.encode(), off)
                .map_err(|e| io("writing the superblock", e))?;
            sync(inner)?;
            sbs.sb = sb;
            sbs.journal_off = 0;
        }
    }
    Ok(())
}

/// Start the commit thread.
pub(crate) fn spawn(
    inner: Weak<PoolInner>,
    shared: Arc<CommitShared>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("lunar-commit".into())
        .spawn(move || run(inner, shared))
}

fn run(weak: Weak<PoolInner>, shared: Arc<CommitShared>) {
    loop {
        let (mut waiters, shutdown, force) = {
            let mut q = shared.q.lock();
            if q.waiters.is_empty() && !q.shutdown {
                shared.cv.wait_for(&mut q, Duration::from_secs(1));
            }
            let force = std::mem::replace(&mut q.force_checkpoint, false);
            (std::mem::take(&mut q.waiters), q.shutdown, force)
        };
        let Some(inner) = weak.upgrade() else {
            let mut q = shared.q.lock();
            q.stopped = true;
            waiters.append(&mut q.waiters);
            drop(q);
            for (_, _, tx) in waiters {
                let _ = tx.send(Err(io(
                    "committing metadata",
                    std::io::Error::other("pool dropped"),
                )));
            }
            return;
        };
        let res = commit_once(&inner, force);
        let durable = inner.durable_lsn.load(Ordering::Acquire);
        let synced = inner.synced_writes.load(Ordering::Acquire);
        drop(inner);
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
        if !again.is_empty() {
            shared.q.lock().waiters.extend(again);
        }
        if shutdown {
            let mut q = shared.q.lock();
            if q.waiters.is_empty() {
                q.stopped = true;
                return;
            }
        }
    }
}
