//! Wall-clock time for the timestamps the pool records (view creation, space reconciliation).
//!
//! Its own module so that the pool's administrative operations and space accounting both read
//! the clock the same way without one depending on the other.

/// Seconds since the Unix epoch; 0 if the clock reads before it (a timestamp is informative,
/// never a reason to fail an operation).
pub(crate) fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
