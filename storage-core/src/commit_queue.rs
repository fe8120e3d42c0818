//! The queue between callers that need records durable (flushes, publishes that found the
//! journal full, close) and the commit thread that makes them so.
//!
//! Its own module so that the engine state can hold the queue while the commit thread
//! ([`crate::commit`]), which works on that state, depends on the engine and not the other
//! way round. The queue owns its locking protocol: callers only request, the commit thread
//! only takes batches, requeues and stops.

use std::time::Duration;

use parking_lot::{Condvar, Mutex};
use tokio::sync::oneshot;

use crate::{Result, StorageError};

/// One caller waiting: every record up to the LSN and every data write up to the count must
/// be durable before the sender is completed.
pub(crate) type Waiter = (u64, u64, oneshot::Sender<Result<()>>);

#[derive(Default)]
struct Queue {
    waiters: Vec<Waiter>,
    shutdown: bool,
    /// The commit thread has exited: requests fail at once instead of waiting forever.
    stopped: bool,
    /// Callers waiting for a checkpoint that begins after their request.
    ckpt_waiters: Vec<oneshot::Sender<Result<()>>>,
    /// Work is waiting that no caller waits for (a checkpoint a full journal half began).
    wake: bool,
}

/// What the commit thread takes from the queue for one commit.
pub(crate) struct Batch {
    /// Callers to complete once the commit covers them.
    pub(crate) waiters: Vec<Waiter>,
    /// The pool is closing: exit once no caller is left waiting.
    pub(crate) shutdown: bool,
    /// Callers waiting for a checkpoint (close, `Pool::checkpoint`, a publish that found
    /// the journal full): each is answered when a checkpoint whose half switch came after
    /// its request is durable, so it holds every record logged before the request.
    pub(crate) ckpt_waiters: Vec<oneshot::Sender<Result<()>>>,
}

/// Queue shared between flush callers and the commit thread.
#[derive(Default)]
pub(crate) struct CommitQueue {
    q: Mutex<Queue>,
    cv: Condvar,
}

impl CommitQueue {
    /// Ask for every record up to `lsn` and every data write up to `writes` to be durable.
    pub(crate) fn request(&self, lsn: u64, writes: u64) -> oneshot::Receiver<Result<()>> {
        let (tx, rx) = oneshot::channel();
        let mut q = self.q.lock();
        if q.stopped {
            let _ = tx.send(Err(StorageError::io(
                "committing metadata",
                std::io::Error::other("commit thread stopped"),
            )));
        } else {
            q.waiters.push((lsn, writes, tx));
            self.cv.notify_one();
        }
        rx
    }

    /// Ask for a checkpoint that begins after this call; the receiver completes once it is
    /// durable (everything logged and every data write completed before the call is then in
    /// its image or in blocks it made durable).
    pub(crate) fn request_checkpoint(&self) -> oneshot::Receiver<Result<()>> {
        let (tx, rx) = oneshot::channel();
        let mut q = self.q.lock();
        if q.stopped {
            let _ = tx.send(Err(StorageError::io(
                "writing a checkpoint",
                std::io::Error::other("commit thread stopped"),
            )));
        } else {
            q.ckpt_waiters.push(tx);
            self.cv.notify_one();
        }
        rx
    }

    /// Wake the commit thread for work no caller waits on: an append that found its journal
    /// half full switched halves, and the checkpoint that frees the old one is due; or a
    /// checkpoint finished, and what waited for the half it freed can go on.
    pub(crate) fn wake(&self) {
        self.q.lock().wake = true;
        self.cv.notify_one();
    }

    /// Tell the commit thread to exit once nobody waits any more.
    pub(crate) fn shutdown(&self) {
        self.q.lock().shutdown = true;
        self.cv.notify_all();
    }

    /// Commit thread: take the waiting callers, first waiting up to `idle` while there are
    /// none (buffered records are committed that often even without a request).
    pub(crate) fn next_batch(&self, idle: Duration) -> Batch {
        let mut q = self.q.lock();
        if q.waiters.is_empty() && !q.shutdown && !q.wake && q.ckpt_waiters.is_empty() {
            self.cv.wait_for(&mut q, idle);
        }
        q.wake = false;
        Batch {
            waiters: std::mem::take(&mut q.waiters),
            shutdown: q.shutdown,
            ckpt_waiters: std::mem::take(&mut q.ckpt_waiters),
        }
    }

    /// Commit thread, when the last commit could not cover its waiters because both journal
    /// halves are taken: wait (at most `limit`) for the checkpoint in flight to wake it, or
    /// for a new request, instead of committing again at once.
    pub(crate) fn wait_for_wake(&self, limit: Duration) {
        let mut q = self.q.lock();
        if !q.wake && q.ckpt_waiters.is_empty() {
            self.cv.wait_for(&mut q, limit);
        }
    }

    /// Commit thread: put back callers the last commit did not cover yet.
    pub(crate) fn requeue(&self, again: Vec<Waiter>) {
        if !again.is_empty() {
            self.q.lock().waiters.extend(again);
        }
    }

    /// Commit thread, exiting for good: later requests fail at once; returns the callers still
    /// waiting, for the thread to fail.
    pub(crate) fn stop(&self) -> (Vec<Waiter>, Vec<oneshot::Sender<Result<()>>>) {
        let mut q = self.q.lock();
        q.stopped = true;
        (
            std::mem::take(&mut q.waiters),
            std::mem::take(&mut q.ckpt_waiters),
        )
    }

    /// Commit thread, after a commit during shutdown: stop if nobody waits any more.
    pub(crate) fn stop_if_idle(&self) -> bool {
        let mut q = self.q.lock();
        if q.waiters.is_empty() && q.ckpt_waiters.is_empty() {
            q.stopped = true;
            true
        } else {
            false
        }
    }
}
