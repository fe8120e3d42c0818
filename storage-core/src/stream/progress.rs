//! Live figures of one transfer, shared with whoever reports progress (admin API, metrics).

use std::sync::atomic::{AtomicU64, Ordering};

/// Counters a send or receive advances as it goes. All figures are monotonic within one
/// transfer; read them at any time from another task.
#[derive(Debug, Default)]
pub struct StreamProgress {
    /// Stream bytes written or read.
    pub bytes: AtomicU64,
    /// Records written or applied.
    pub records: AtomicU64,
    /// Changed chunks the stream carries (known once the header is out or in).
    pub changes_total: AtomicU64,
    /// Changed chunks written or applied so far.
    pub changes_done: AtomicU64,
}

impl StreamProgress {
    pub(crate) fn begin(&self, changes: u64) {
        self.changes_total.store(changes, Ordering::Relaxed);
    }

    /// Fraction done, 0.0..=1.0 (1.0 for a stream with no changes).
    pub fn fraction(&self) -> f64 {
        let total = self.changes_total.load(Ordering::Relaxed);
        if total == 0 {
            return 1.0;
        }
        self.changes_done.load(Ordering::Relaxed) as f64 / total as f64
    }
}
