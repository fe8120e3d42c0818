//! The threads the shared stores start on their own (unwatching, watching again, sending a
//! notice, checking versions), counted so lunard can wait for them before it exits.
//!
//! They call into librados. A process that exits while one of them is inside librados runs
//! the C++ library's static destructors under it, which can abort the process: a clean stop
//! (SIGTERM) of a gateway ended once with SIGABRT, and the LUN manager's last drop, at the
//! end of `main`, is exactly when PR watches start their unwatch threads. lunard calls
//! [`wait_idle`] after its runtime is gone.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Threads started by [`spawn`] still running, plus [`busy`] sections open.
static RUNNING: AtomicUsize = AtomicUsize::new(0);

/// One counted thread or section; uncounted when dropped (also by a panic, and when the
/// thread could not be started and its closure is dropped unrun).
pub struct Busy(());

impl Drop for Busy {
    fn drop(&mut self) {
        RUNNING.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Counts a section of a long-lived thread that calls into librados.
pub fn busy() -> Busy {
    RUNNING.fetch_add(1, Ordering::AcqRel);
    Busy(())
}

/// Starts a named, counted thread.
pub fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> std::io::Result<()> {
    let counted = busy();
    std::thread::Builder::new()
        .name(name.to_string())
        .spawn(move || {
            let _counted = counted;
            f()
        })
        .map(drop)
}

/// Waits until no counted thread or section runs, at most `limit`; whether they all ended.
pub fn wait_idle(limit: Duration) -> bool {
    let until = Instant::now() + limit;
    loop {
        if RUNNING.load(Ordering::Acquire) == 0 {
            return true;
        }
        if Instant::now() >= until {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// How many counted threads and sections run now.
pub fn running() -> usize {
    RUNNING.load(Ordering::Acquire)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Other tests of this binary start counted threads too, so these only assert what holds
    // whatever they do: a counted thread or section that runs keeps the process not idle.

    #[test]
    fn a_running_spawned_thread_keeps_the_process_not_idle() {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        spawn("lunar-test-busy", move || {
            let _ = rx.recv();
        })
        .expect("spawn");
        assert!(
            !wait_idle(Duration::from_millis(20)),
            "the thread still runs"
        );
        drop(tx);
    }

    #[test]
    fn an_open_busy_section_keeps_the_process_not_idle() {
        let b = busy();
        assert!(running() >= 1);
        assert!(!wait_idle(Duration::from_millis(20)));
        drop(b);
    }
}
