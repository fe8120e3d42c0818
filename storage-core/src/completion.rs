//! Storage completion threads: the moments when a storage backend's own thread (librbd's
//! completion callback) wakes a task waiting for an I/O.
//!
//! A task woken there would normally be handed to a tokio worker: a futex wake-up and a
//! context switch before it runs, which on a busy host is a wait for a CPU per I/O. A caller
//! whose task is short and never blocks (the iSCSI front end answering a command: build the
//! response, one `writev`) can instead ask [`on_completion_thread`] from its waker and run the
//! task right there. Only the wake itself is marked: the backend holds none of its own locks
//! while it is, and nothing it does afterwards depends on the woken task's progress.
//!
//! What a task run on a completion thread must not do: block on anything that waits for a
//! storage completion (that thread is the one that would deliver it). Storage-core's own
//! hazard, closing an RBD image from inside its completion, is handled where the image closes
//! (`ceph::rbd`).

use std::cell::Cell;

thread_local! {
    /// Set while a storage completion on this thread is waking its waiter.
    static COMPLETING: Cell<bool> = const { Cell::new(false) };
}

/// Whether this thread is a storage backend's completion thread, inside the wake-up of a
/// task waiting for an I/O: a waker called now may run the task here.
pub fn on_completion_thread() -> bool {
    COMPLETING.with(Cell::get)
}

/// Runs `f` (the wake-up of an I/O's waiter) marked as a storage completion. For storage
/// backends, and for tests of a waker that acts on the mark: the caller promises what the
/// module documentation says (none of its locks held, nothing it does afterwards waits for
/// the woken task).
pub fn completing<R>(f: impl FnOnce() -> R) -> R {
    struct Reset(bool);
    impl Drop for Reset {
        fn drop(&mut self) {
            COMPLETING.with(|c| c.set(self.0));
        }
    }
    let _reset = Reset(COMPLETING.with(|c| c.replace(true)));
    f()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_only_the_wake_up() {
        assert!(!on_completion_thread());
        let inside = completing(on_completion_thread);
        assert!(inside);
        assert!(!on_completion_thread());
        // Nested marks restore the outer one.
        completing(|| {
            completing(|| {});
            assert!(on_completion_thread());
        });
        assert!(!on_completion_thread());
        // Unwinding out of the wake-up clears the mark.
        let _ = std::panic::catch_unwind(|| completing(|| panic!("boom")));
        assert!(!on_completion_thread());
    }
}
