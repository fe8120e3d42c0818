//! A running transfer as `lunarctl replica list` and the metrics show it: bytes moved so
//! far out of the stream's length, the rate and the time left.
//!
//! The sender knows the stream's exact length before the first byte
//! (`PreparedSend::stream_bytes`); the receiver learns only the number of changed chunks
//! from the header, so on that side the time left is estimated from the chunks applied.
//! The rate is the average since the transfer began: a transfer is throttled to a steady
//! `--bandwidth` or limited by the link, and an average does not jump with each buffer.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use storage_core::stream::StreamProgress;

/// One transfer in flight.
#[derive(Debug)]
pub struct LiveTransfer {
    /// The stream's counters, advanced by the sending or receiving task.
    pub progress: Arc<StreamProgress>,
    /// The stream's length in bytes (sending side).
    pub total_bytes: Option<u64>,
    /// The snapshot sent (sending side).
    pub snapshot: Option<String>,
    /// `full`, `increment` or `clone` (sending side).
    pub kind: Option<String>,
    started: Instant,
}

/// What `replica list` shows of a transfer in flight.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct TransferProgress {
    /// The snapshot being sent (source side).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
    /// `full`, `increment` or `clone` (source side).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Stream bytes sent (or received) so far.
    pub bytes: u64,
    /// The stream's length (source side).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_bytes: Option<u64>,
    /// Since the transfer began.
    pub elapsed_ms: u64,
    /// Average rate since it began, bytes per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_bytes_per_sec: Option<f64>,
    /// Estimated time left.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eta_ms: Option<u64>,
}

impl LiveTransfer {
    /// A transfer starting now.
    pub fn new(
        progress: Arc<StreamProgress>,
        total_bytes: Option<u64>,
        snapshot: Option<String>,
        kind: Option<String>,
    ) -> LiveTransfer {
        LiveTransfer {
            progress,
            total_bytes,
            snapshot,
            kind,
            started: Instant::now(),
        }
    }

    /// Its figures now.
    pub fn view(&self) -> TransferProgress {
        let bytes = self.progress.bytes.load(Ordering::Relaxed);
        let elapsed_ms = self.started.elapsed().as_millis() as u64;
        let (rate, eta) = estimate(
            bytes,
            self.total_bytes,
            self.progress.fraction(),
            elapsed_ms,
        );
        TransferProgress {
            snapshot: self.snapshot.clone(),
            kind: self.kind.clone(),
            bytes,
            total_bytes: self.total_bytes,
            elapsed_ms,
            rate_bytes_per_sec: rate,
            eta_ms: eta,
        }
    }
}

/// Rate (bytes per second) and time left (ms) of a transfer that moved `bytes` in
/// `elapsed_ms`: from the bytes left when the length `total` is known, else from
/// `fraction`, the share of changed chunks done. `None` while nothing can be said (nothing
/// moved yet, no time elapsed).
pub fn estimate(
    bytes: u64,
    total: Option<u64>,
    fraction: f64,
    elapsed_ms: u64,
) -> (Option<f64>, Option<u64>) {
    if elapsed_ms == 0 || bytes == 0 {
        return (None, None);
    }
    let rate = bytes as f64 * 1000.0 / elapsed_ms as f64;
    let eta = match total {
        Some(t) => Some((t.saturating_sub(bytes) as f64 / rate * 1000.0) as u64),
        None if fraction >= 1.0 => Some(0),
        None if fraction > 0.0 => Some((elapsed_ms as f64 * (1.0 - fraction) / fraction) as u64),
        None => None,
    };
    (Some(rate), eta)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_and_time_left() {
        // 10 MB of 40 MB in 2 s: 5 MB/s, 6 s left.
        assert_eq!(
            estimate(10_000_000, Some(40_000_000), 0.0, 2000),
            (Some(5_000_000.0), Some(6000))
        );
        // Done: nothing left.
        assert_eq!(estimate(40, Some(40), 1.0, 10), (Some(4000.0), Some(0)));
        // The receiving side: a quarter of the chunks in 1 s leaves 3 s.
        assert_eq!(estimate(1000, None, 0.25, 1000), (Some(1000.0), Some(3000)));
        assert_eq!(estimate(1000, None, 0.0, 1000), (Some(1000.0), None));
        // Nothing moved or no time: no figures rather than infinities.
        assert_eq!(estimate(0, Some(40), 0.0, 1000), (None, None));
        assert_eq!(estimate(10, Some(40), 0.0, 0), (None, None));
    }

    #[test]
    fn the_view_reads_the_counters() {
        let p = Arc::new(StreamProgress::default());
        let t = LiveTransfer::new(p.clone(), Some(100), Some("repl-1".into()), None);
        assert_eq!(t.view().bytes, 0);
        assert_eq!(t.view().eta_ms, None);
        p.bytes.store(60, Ordering::Relaxed);
        let v = t.view();
        assert_eq!((v.bytes, v.total_bytes), (60, Some(100)));
        assert_eq!(v.snapshot.as_deref(), Some("repl-1"));
    }
}
