//! Command tasks that run on the thread that completes their storage I/O.
//!
//! A SCSI command that has to wait for storage runs as its own task. Spawned on tokio, every
//! I/O it waits for costs a hand-off: librbd's completion thread wakes the task, tokio wakes
//! an idle worker (a futex wake-up and a context switch), and the worker builds the response
//! and writes it. On a host whose CPUs are busy (the OSD, the initiator, other clients) each
//! hand-off is a wait for a CPU, and it is one more than a plain librbd client pays
//! (docs/performance.md, "Pools on RBD images"). An [`InlineTask`] is polled by whoever wakes
//! it when that is a storage completion thread
//! ([`storage_core::completion::on_completion_thread`]): the response is built and written
//! (one non-blocking `writev`) right where librbd delivered the data. Any other wake-up
//! (the writer's lock, a full socket, a timer, an ordering barrier) goes to a tokio worker as
//! before, and so does a wake-up that arrives while this thread is already running an inline
//! task (no recursion).
//!
//! Abort: [`InlineAbort::abort`] drops the future at once, or, if another thread is polling
//! it at that moment, as soon as that poll returns; either way the future is gone without
//! being polled again, as with tokio's abort handle. A panic in the future ends the task (it
//! is dropped and logged) instead of unwinding into librbd's thread.

use std::cell::Cell;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::task::{Context, Poll, Wake, Waker};

use parking_lot::Mutex;

type BoxFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

thread_local! {
    /// Set while this thread polls an inline task on a completion thread: a wake-up arriving
    /// meanwhile (the task released a lock another task waits for) is scheduled, not run
    /// nested.
    static POLLING_INLINE: Cell<bool> = const { Cell::new(false) };
}

/// A task polled by the thread that wakes it when that thread is a storage completion thread.
pub struct InlineTask {
    state: Mutex<State>,
    /// Where wake-ups that cannot run inline go, and the runtime context (I/O driver, timers)
    /// an inline poll enters.
    runtime: tokio::runtime::Handle,
}

struct State {
    /// The future, `None` once finished or aborted, and while a poll has it out.
    fut: Option<BoxFuture>,
    /// A thread is polling the future (it holds it outside the lock).
    running: bool,
    /// Woken while running: poll again before giving the future back.
    notified: bool,
    /// A poll is queued on the runtime.
    scheduled: bool,
    /// Aborted: drop the future instead of polling it again.
    aborted: bool,
}

/// Aborts an [`InlineTask`] (the task table keeps one per running command).
#[derive(Clone)]
pub struct InlineAbort(Weak<InlineTask>);

impl InlineAbort {
    /// Drops the task's future now, or right after a poll in progress on another thread.
    pub fn abort(&self) {
        let Some(task) = self.0.upgrade() else {
            return;
        };
        let fut = {
            let mut st = task.state.lock();
            st.aborted = true;
            st.fut.take()
        };
        // Outside the lock: dropping the future runs its destructors (which may wake tasks).
        drop(fut);
    }
}

impl InlineTask {
    /// A task for `fut`, not polled yet ([`InlineTask::start`]). The runtime must be the
    /// caller's.
    pub fn new<F>(fut: F) -> Arc<InlineTask>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        Arc::new(InlineTask {
            state: Mutex::new(State {
                fut: Some(Box::pin(fut)),
                running: false,
                notified: false,
                scheduled: false,
                aborted: false,
            }),
            runtime: tokio::runtime::Handle::current(),
        })
    }

    /// The handle that aborts this task.
    pub fn abort_handle(self: &Arc<Self>) -> InlineAbort {
        InlineAbort(Arc::downgrade(self))
    }

    /// Polls the task for the first time, here; from then on whoever wakes it does.
    pub fn start(self: Arc<Self>) {
        self.run();
    }

    /// [`InlineTask::new`] and [`InlineTask::start`] at once.
    #[cfg(test)]
    fn spawn<F>(fut: F) -> InlineAbort
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let task = InlineTask::new(fut);
        let abort = task.abort_handle();
        task.start();
        abort
    }

    /// Polls the future until it is pending without a wake-up in between, finishes, or is
    /// aborted. A wake-up during a poll on another thread is left to that thread.
    fn run(self: &Arc<Self>) {
        let mut fut = {
            let mut st = self.state.lock();
            if st.running {
                st.notified = true;
                return;
            }
            let Some(fut) = st.fut.take() else {
                return;
            };
            st.running = true;
            st.notified = false;
            fut
        };
        let waker = Waker::from(self.clone());
        let mut cx = Context::from_waker(&waker);
        loop {
            let polled = std::panic::catch_unwind(AssertUnwindSafe(|| fut.as_mut().poll(&mut cx)));
            let finished = match polled {
                Ok(Poll::Ready(())) => true,
                Ok(Poll::Pending) => false,
                Err(_) => {
                    tracing::error!("a SCSI command task panicked; it is dropped");
                    true
                }
            };
            let mut st = self.state.lock();
            if finished || st.aborted {
                st.running = false;
                drop(st);
                drop(fut);
                return;
            }
            if st.notified {
                st.notified = false;
                continue;
            }
            st.running = false;
            st.fut = Some(fut);
            return;
        }
    }

    /// Queues a poll on a tokio worker (once, however often it is woken before it runs).
    fn schedule(self: Arc<Self>) {
        {
            let mut st = self.state.lock();
            if st.running {
                // The thread polling it polls again before it lets go.
                st.notified = true;
                return;
            }
            if st.scheduled || st.fut.is_none() {
                return;
            }
            st.scheduled = true;
        }
        let runtime = self.runtime.clone();
        runtime.spawn(async move {
            self.state.lock().scheduled = false;
            self.run();
        });
    }

    /// Polls right here, on a storage completion thread, inside the runtime's context.
    fn run_inline(self: Arc<Self>) {
        struct Clear;
        impl Drop for Clear {
            fn drop(&mut self) {
                POLLING_INLINE.with(|p| p.set(false));
            }
        }
        POLLING_INLINE.with(|p| p.set(true));
        let _clear = Clear;
        let _entered = match tokio::runtime::Handle::try_current() {
            Ok(_) => None,
            Err(_) => Some(self.runtime.enter()),
        };
        self.run();
    }
}

impl Wake for InlineTask {
    fn wake(self: Arc<Self>) {
        if storage_core::completion::on_completion_thread() && !POLLING_INLINE.with(Cell::get) {
            self.run_inline();
        } else {
            self.schedule();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::sync::{oneshot, watch};

    /// Counts polls and drops of a future waiting on a oneshot.
    struct Probe {
        polls: Arc<AtomicUsize>,
        _dropped: watch::Sender<()>,
    }

    fn probe() -> (Probe, Arc<AtomicUsize>, watch::Receiver<()>) {
        let polls = Arc::new(AtomicUsize::new(0));
        let (tx, rx) = watch::channel(());
        (
            Probe {
                polls: polls.clone(),
                _dropped: tx,
            },
            polls,
            rx,
        )
    }

    async fn gone(mut rx: watch::Receiver<()>) {
        while rx.changed().await.is_ok() {}
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_completion_thread_runs_the_task_itself() {
        let (tx, rx) = oneshot::channel::<u32>();
        let (ran_on_tx, ran_on_rx) = oneshot::channel();
        InlineTask::spawn(async move {
            let v = rx.await.unwrap_or(0);
            let _ = ran_on_tx.send((v, std::thread::current().id()));
        });
        // A plain thread marked like librbd's completion callback.
        let completer = std::thread::spawn(move || {
            storage_core::completion::completing(|| {
                let _ = tx.send(7);
            });
            std::thread::current().id()
        });
        let completer = tokio::task::spawn_blocking(move || completer.join())
            .await
            .unwrap_or_else(|_| panic!("join"))
            .unwrap_or_else(|_| panic!("completer panicked"));
        let (v, ran_on) = ran_on_rx.await.unwrap_or_else(|_| panic!("task never ran"));
        assert_eq!(v, 7);
        assert_eq!(ran_on, completer, "the task ran on the completing thread");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn other_wake_ups_go_to_the_runtime() {
        let (tx, rx) = oneshot::channel::<u32>();
        let (ran_on_tx, ran_on_rx) = oneshot::channel();
        InlineTask::spawn(async move {
            let v = rx.await.unwrap_or(0);
            let _ = ran_on_tx.send((v, std::thread::current().id()));
        });
        let waker_thread = std::thread::spawn(move || {
            let _ = tx.send(3);
            std::thread::current().id()
        })
        .join()
        .unwrap_or_else(|_| panic!("waker panicked"));
        let (v, ran_on) = ran_on_rx.await.unwrap_or_else(|_| panic!("task never ran"));
        assert_eq!(v, 3);
        assert_ne!(
            ran_on, waker_thread,
            "an unmarked thread does not run the task"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn abort_drops_a_waiting_future_and_it_never_runs_again() {
        let (tx, rx) = oneshot::channel::<u32>();
        let (p, polls, dropped) = probe();
        let abort = InlineTask::spawn(async move {
            // The whole probe, not just the field used (its drop is what the test waits for).
            let p = p;
            p.polls.fetch_add(1, Ordering::SeqCst);
            let _ = rx.await;
            p.polls.fetch_add(1, Ordering::SeqCst);
        });
        assert_eq!(polls.load(Ordering::SeqCst), 1);
        abort.abort();
        gone(dropped).await;
        // The storage completion arrives after the abort: nothing is polled.
        std::thread::spawn(move || storage_core::completion::completing(|| tx.send(1)))
            .join()
            .unwrap_or_else(|_| panic!("completer panicked"))
            .expect_err("the receiver is gone with the aborted future");
        assert_eq!(polls.load(Ordering::SeqCst), 1);
        // Aborting again, or after the task is gone, is harmless.
        abort.abort();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn abort_during_a_poll_drops_the_future_when_the_poll_returns() {
        let (enter_tx, enter_rx) = std::sync::mpsc::channel::<()>();
        let (leave_tx, leave_rx) = std::sync::mpsc::channel::<()>();
        let (wake_tx, wake_rx) = oneshot::channel::<()>();
        let (p, polls, dropped) = probe();
        let abort = InlineTask::spawn(async move {
            let p = p;
            let _ = wake_rx.await;
            p.polls.fetch_add(1, Ordering::SeqCst);
            // Inside a poll on the completion thread: let the test abort now.
            let _ = enter_tx.send(());
            let _ = leave_rx.recv();
            // Never completes by itself.
            std::future::pending::<()>().await;
        });
        let completer =
            std::thread::spawn(move || storage_core::completion::completing(|| wake_tx.send(())));
        tokio::task::spawn_blocking(move || enter_rx.recv())
            .await
            .unwrap_or_else(|_| panic!("join"))
            .unwrap_or_else(|_| panic!("never polled"));
        abort.abort();
        let _ = leave_tx.send(());
        gone(dropped).await;
        assert_eq!(polls.load(Ordering::SeqCst), 1);
        let _ = completer.join();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_panicking_task_is_dropped_without_unwinding_into_the_completer() {
        let (tx, rx) = oneshot::channel::<u32>();
        let (p, _polls, dropped) = probe();
        InlineTask::spawn(async move {
            let _p = p;
            if rx.await.is_ok() {
                panic!("command task bug");
            }
        });
        let completer =
            std::thread::spawn(move || storage_core::completion::completing(|| tx.send(1)));
        assert!(
            completer.join().is_ok(),
            "the completing thread did not unwind"
        );
        gone(dropped).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_wake_up_inside_an_inline_poll_is_scheduled_not_nested() {
        // Task B waits for a lock task A holds; A runs inline on the completion thread and
        // releases the lock there: B must run on the runtime, not inside A's poll.
        let lock = Arc::new(tokio::sync::Mutex::new(()));
        let guard = lock.clone().lock_owned().await;
        let (b_tx, b_rx) = oneshot::channel();
        let l = lock.clone();
        InlineTask::spawn(async move {
            let _g = l.lock().await;
            let _ = b_tx.send(std::thread::current().id());
        });
        let (a_go_tx, a_go_rx) = oneshot::channel::<()>();
        InlineTask::spawn(async move {
            let _ = a_go_rx.await;
            drop(guard);
        });
        let completer = std::thread::spawn(move || {
            storage_core::completion::completing(|| a_go_tx.send(()))
                .unwrap_or_else(|_| panic!("A is gone"));
            std::thread::current().id()
        })
        .join()
        .unwrap_or_else(|_| panic!("completer panicked"));
        let b_ran_on = b_rx.await.unwrap_or_else(|_| panic!("B never ran"));
        assert_ne!(b_ran_on, completer);
    }
}
