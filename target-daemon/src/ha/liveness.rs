//! Which gateways of the group are alive, from their heartbeats in the gateway registry.
//!
//! Every gateway rewrites its registry record (`last_seen_unix`) every [`heartbeat_every`]
//! and reads everybody's records at the same time. A gateway whose record has not changed
//! for [`dead_after`] is dead: it is reported unavailable in REPORT TARGET PORT GROUPS
//! (decision 0012) and `lunarctl ha status` says so. A record that changes again brings the
//! gateway back (standby).
//!
//! Ages are measured on the observer's own monotonic clock, from when it *saw* a record
//! change, not from the wall-clock time written in it: the gateways' clocks need not
//! agree, and a clock step on one host neither kills nor revives anybody. The price is
//! that an observer that has just started gives every record it has never seen change the
//! full bound before calling it dead.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// How often a gateway rewrites its registry record: once a lease, between 1 s (the
/// record's timestamp has whole seconds, so every beat changes it) and 5 s. One
/// compare-and-swap of one small object per gateway per period: cheap next to the lease's
/// renew every lease/4, and not on the lease's critical path.
pub fn heartbeat_every(lease: Duration) -> Duration {
    lease.clamp(Duration::from_secs(1), Duration::from_secs(5))
}

/// How long a record may stay unchanged before its gateway counts as dead: four
/// heartbeats (8 s at the default 2 s lease), so one or two slow or failed registry
/// writes (a busy cluster, a compare-and-swap retried) do not flap a live gateway.
pub fn dead_after(lease: Duration) -> Duration {
    heartbeat_every(lease) * 4
}

/// What one observer knows of one gateway's heartbeat.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Seen {
    /// The record's heartbeat value when last read.
    beat: u64,
    /// When the observer first read that value.
    since: Instant,
}

/// The liveness of a group's gateways as one observer sees them.
#[derive(Clone, Debug)]
pub struct Liveness {
    dead_after: Duration,
    seen: BTreeMap<String, Seen>,
}

impl Liveness {
    /// An observer that calls a gateway dead after `dead_after` without a new heartbeat.
    pub fn new(dead_after: Duration) -> Liveness {
        Liveness {
            dead_after,
            seen: BTreeMap::new(),
        }
    }

    /// The registry as read at `now`: each gateway's name and heartbeat value
    /// (`last_seen_unix`). Gateways no longer listed are forgotten.
    pub fn observe<'a>(&mut self, now: Instant, records: impl IntoIterator<Item = (&'a str, u64)>) {
        let mut next = BTreeMap::new();
        for (name, beat) in records {
            let seen = match self.seen.remove(name) {
                Some(s) if s.beat == beat => s,
                _ => Seen { beat, since: now },
            };
            next.insert(name.to_string(), seen);
        }
        self.seen = next;
    }

    /// Whether `name` is alive at `now`: its heartbeat changed less than the bound ago.
    /// A gateway never observed is not alive.
    pub fn alive(&self, name: &str, now: Instant) -> bool {
        self.seen
            .get(name)
            .is_some_and(|s| now.saturating_duration_since(s.since) < self.dead_after)
    }

    /// How long ago (at `now`) `name`'s heartbeat was last seen to change.
    pub fn silent_for(&self, name: &str, now: Instant) -> Option<Duration> {
        self.seen
            .get(name)
            .map(|s| now.saturating_duration_since(s.since))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOUND: Duration = Duration::from_secs(12);

    #[test]
    fn a_gateway_whose_heartbeat_stops_dies_after_the_bound_and_comes_back_when_it_beats() {
        let t0 = Instant::now();
        let mut l = Liveness::new(BOUND);
        l.observe(t0, [("gw1", 100), ("gw2", 100)]);
        let s = Duration::from_secs(3);
        // gw1 beats every 3 s, gw2 stops after its first beat.
        for i in 1..=4u64 {
            l.observe(t0 + s * i as u32, [("gw1", 100 + 3 * i), ("gw2", 100)]);
        }
        let t = t0 + s * 4;
        assert!(l.alive("gw1", t));
        // 12 s without a change: dead exactly at the bound, alive just before it.
        assert!(!l.alive("gw2", t));
        assert!(l.alive("gw2", t - Duration::from_millis(1)));
        assert_eq!(l.silent_for("gw2", t), Some(BOUND));
        // It beats again: alive at once.
        l.observe(t + s, [("gw1", 115), ("gw2", 115)]);
        assert!(l.alive("gw2", t + s));
        assert!(!l.alive("gw3", t + s), "never seen: not alive");
    }

    #[test]
    fn a_gateway_removed_from_the_registry_is_forgotten() {
        let t0 = Instant::now();
        let mut l = Liveness::new(BOUND);
        l.observe(t0, [("gw1", 1), ("gw2", 1)]);
        l.observe(t0, [("gw1", 1)]);
        assert_eq!(l.silent_for("gw2", t0), None);
        // Listed again later with the same value: a new sighting, the bound starts over.
        l.observe(t0 + BOUND, [("gw1", 1), ("gw2", 1)]);
        assert!(l.alive("gw2", t0 + BOUND));
    }

    #[test]
    fn the_periods_follow_the_lease_within_bounds() {
        let s = Duration::from_secs;
        assert_eq!(heartbeat_every(s(3)), s(3));
        assert_eq!(dead_after(s(3)), s(12));
        assert_eq!(heartbeat_every(Duration::from_millis(500)), s(1));
        assert_eq!(heartbeat_every(s(60)), s(5));
        assert_eq!(dead_after(s(60)), s(20));
    }
}
