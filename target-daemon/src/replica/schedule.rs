//! When a relationship's next cycle is due, and what its state and lag are: a sans-I/O
//! machine (time comes in as milliseconds since the Unix epoch; no clock, no I/O), driven
//! by the relationship's task and unit-tested under a simulated clock.
//!
//! Cadence is fixed to the schedule, not to the end of the last transfer: a cycle starts
//! `every` after the previous one *started*, and at once if that moment has passed (a
//! transfer longer than the interval is followed immediately by the next, never by two).
//! So with transfers shorter than the interval the replica's data is never older than two
//! intervals, the RPO the alert rule checks. A failed cycle is retried after a backoff
//! (1 s doubling, capped at the interval and at one minute), so a short cut costs seconds,
//! and the receiver's resume point makes the retry continue where the cut left off.

/// Milliseconds since the Unix epoch.
pub type Millis = u64;

/// The longest wait between retries of a failing relationship.
pub const MAX_BACKOFF_MS: Millis = 60_000;

/// What the relationship is doing, as `lunarctl replica list` and `lunar_replica_state`
/// show it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Waiting for the next cycle.
    Idle,
    /// A cycle (snapshot, transfer, retention) is running.
    Transferring,
    /// Paused by the operator: no cycle starts.
    Paused,
    /// The last cycle failed; a retry is scheduled.
    Error,
    /// No longer replicating (promoted, or the replica side of a relationship).
    Stopped,
}

impl Phase {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Idle => "idle",
            Phase::Transferring => "transferring",
            Phase::Paused => "paused",
            Phase::Error => "error",
            Phase::Stopped => "stopped",
        }
    }

    /// The value of `lunar_replica_state` (0 idle, 1 transferring, 2 paused, 3 error,
    /// 4 stopped).
    pub fn gauge(self) -> i64 {
        match self {
            Phase::Idle => 0,
            Phase::Transferring => 1,
            Phase::Paused => 2,
            Phase::Error => 3,
            Phase::Stopped => 4,
        }
    }
}

/// What the driver must do now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Run one cycle: snapshot, send, retention.
    StartCycle,
}

/// A cycle's result, as the driver reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transfer {
    /// Creation time of the source snapshot the replica now has (its data is as of then).
    pub snapshot_unix_ms: Millis,
    /// Bytes sent.
    pub bytes: u64,
    /// How long the transfer took.
    pub duration_ms: Millis,
}

/// One relationship's schedule.
#[derive(Clone, Debug)]
pub struct Schedule {
    every_ms: Millis,
    phase: Phase,
    /// When the next cycle may start (Idle/Error).
    next_due: Millis,
    /// When the running cycle started.
    started: Option<Millis>,
    /// Source time of the data the replica has (lag is measured from it).
    replicated_as_of: Option<Millis>,
    /// When the relationship began (lag before the first transfer).
    created: Millis,
    failures: u32,
    last_error: Option<String>,
    last_transfer: Option<Transfer>,
    /// Paused while a cycle ran: becomes Paused when it ends.
    pause_requested: bool,
}

impl Schedule {
    /// A relationship created at `created` (its first cycle is due at once), replicated up
    /// to `replicated_as_of` if it already was (after a restart), paused if it was.
    pub fn new(
        every_ms: Millis,
        created: Millis,
        replicated_as_of: Option<Millis>,
        paused: bool,
        now: Millis,
    ) -> Schedule {
        Schedule {
            every_ms: every_ms.max(1),
            phase: if paused { Phase::Paused } else { Phase::Idle },
            next_due: now,
            started: None,
            replicated_as_of,
            created,
            failures: 0,
            last_error: None,
            last_transfer: None,
            pause_requested: false,
        }
    }

    /// The current phase.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// The schedule interval.
    pub fn every_ms(&self) -> Millis {
        self.every_ms
    }

    /// The last error, until a cycle succeeds.
    pub fn last_error(&self) -> Option<&str> {
        self.last_error.as_deref()
    }

    /// The last successful transfer.
    pub fn last_transfer(&self) -> Option<&Transfer> {
        self.last_transfer.as_ref()
    }

    /// Source time of the data the replica has.
    pub fn replicated_as_of(&self) -> Option<Millis> {
        self.replicated_as_of
    }

    /// How old the replica's data is at `now`: since the source snapshot it last received
    /// (before any, since the relationship began).
    pub fn lag_ms(&self, now: Millis) -> Millis {
        now.saturating_sub(self.replicated_as_of.unwrap_or(self.created))
    }

    /// What to do at `now`.
    pub fn poll(&mut self, now: Millis) -> Option<Action> {
        match self.phase {
            Phase::Idle | Phase::Error if now >= self.next_due => {
                self.phase = Phase::Transferring;
                self.started = Some(now);
                Some(Action::StartCycle)
            }
            _ => None,
        }
    }

    /// When [`poll`](Self::poll) next has something to do (None: not until an input).
    pub fn poll_timeout(&self) -> Option<Millis> {
        match self.phase {
            Phase::Idle | Phase::Error => Some(self.next_due),
            _ => None,
        }
    }

    /// The running cycle succeeded at `now`.
    pub fn cycle_done(&mut self, now: Millis, t: Transfer) {
        if self.phase != Phase::Transferring {
            return;
        }
        let started = self.started.take().unwrap_or(now);
        self.replicated_as_of = Some(
            self.replicated_as_of
                .map_or(t.snapshot_unix_ms, |p| p.max(t.snapshot_unix_ms)),
        );
        self.last_transfer = Some(t);
        self.failures = 0;
        self.last_error = None;
        self.next_due = started.saturating_add(self.every_ms);
        self.phase = self.after_cycle(Phase::Idle);
    }

    /// The running cycle failed at `now` with `error`; retried after a backoff.
    pub fn cycle_failed(&mut self, now: Millis, error: String) {
        if self.phase != Phase::Transferring {
            return;
        }
        self.started = None;
        self.failures = self.failures.saturating_add(1);
        self.last_error = Some(error);
        self.next_due = now.saturating_add(self.backoff_ms());
        self.phase = self.after_cycle(Phase::Error);
    }

    /// The wait before the next retry: 1 s doubling per consecutive failure, capped at the
    /// interval and at [`MAX_BACKOFF_MS`].
    pub fn backoff_ms(&self) -> Millis {
        let exp = self.failures.saturating_sub(1).min(16);
        (1000u64 << exp).min(self.every_ms).min(MAX_BACKOFF_MS)
    }

    fn after_cycle(&mut self, next: Phase) -> Phase {
        if self.pause_requested {
            self.pause_requested = false;
            Phase::Paused
        } else {
            next
        }
    }

    /// Pause: no new cycle starts (a running one finishes first).
    pub fn pause(&mut self) {
        match self.phase {
            Phase::Transferring => self.pause_requested = true,
            Phase::Idle | Phase::Error => self.phase = Phase::Paused,
            Phase::Paused | Phase::Stopped => {}
        }
    }

    /// Resume at `now`: the next cycle is due at once.
    pub fn resume(&mut self, now: Millis) {
        self.pause_requested = false;
        if self.phase == Phase::Paused {
            self.phase = Phase::Idle;
            self.next_due = now;
        }
    }

    /// Stop for good (promoted, deleted).
    pub fn stop(&mut self) {
        self.phase = Phase::Stopped;
        self.pause_requested = false;
    }

    /// Ask for a cycle at `now` (`lunarctl replica sync`), unless paused or stopped.
    pub fn trigger(&mut self, now: Millis) {
        if matches!(self.phase, Phase::Idle | Phase::Error) {
            self.next_due = self.next_due.min(now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Millis = 60_000;

    fn done(s: &mut Schedule, now: Millis, snap: Millis) {
        s.cycle_done(
            now,
            Transfer {
                snapshot_unix_ms: snap,
                bytes: 1,
                duration_ms: now - snap,
            },
        );
    }

    /// Steady load, transfers shorter than the interval: cycles start every interval and
    /// the lag never exceeds two intervals (the RPO goal).
    #[test]
    fn steady_schedule_keeps_lag_within_two_intervals() {
        let mut s = Schedule::new(MIN, 0, None, false, 0);
        let mut now = 0;
        let mut starts = Vec::new();
        let mut worst = 0;
        for i in 0..50u64 {
            let due = s.poll_timeout().unwrap();
            assert!(due >= now);
            // Look at the lag just before the cycle runs: its worst moment.
            now = due;
            worst = worst.max(s.lag_ms(now));
            assert_eq!(s.poll(now), Some(Action::StartCycle));
            assert_eq!(s.poll(now), None, "one cycle at a time");
            starts.push(now);
            let snap = now; // the snapshot is taken as the cycle starts
            now += 20_000 + (i % 7) * 5_000; // transfer of 20..50 s
            worst = worst.max(s.lag_ms(now));
            done(&mut s, now, snap);
            assert_eq!(s.phase(), Phase::Idle);
        }
        for w in starts.windows(2) {
            assert_eq!(w[1] - w[0], MIN, "cadence follows the schedule");
        }
        assert!(worst <= 2 * MIN, "lag reached {worst} ms");
    }

    /// A transfer longer than the interval is followed at once by the next, not by a
    /// burst of missed ones.
    #[test]
    fn overrun_starts_next_cycle_immediately_once() {
        let mut s = Schedule::new(MIN, 0, None, false, 0);
        assert_eq!(s.poll(0), Some(Action::StartCycle));
        done(&mut s, 150_000, 0);
        assert_eq!(s.poll_timeout(), Some(MIN));
        assert_eq!(s.poll(150_000), Some(Action::StartCycle));
        done(&mut s, 160_000, 150_000);
        assert_eq!(s.poll_timeout(), Some(210_000));
        assert_eq!(s.poll(200_000), None);
    }

    #[test]
    fn failures_back_off_and_success_clears_the_error() {
        let mut s = Schedule::new(MIN, 0, None, false, 0);
        let mut now = 0;
        let mut waits = Vec::new();
        for _ in 0..9 {
            assert_eq!(s.poll(now), Some(Action::StartCycle));
            s.cycle_failed(now, "peer unreachable".into());
            assert_eq!(s.phase(), Phase::Error);
            assert_eq!(s.last_error(), Some("peer unreachable"));
            let due = s.poll_timeout().unwrap();
            waits.push(due - now);
            assert_eq!(s.poll(due - 1), None);
            now = due;
        }
        assert_eq!(&waits[..4], &[1000, 2000, 4000, 8000]);
        assert!(waits.iter().all(|&w| w <= MIN));
        assert_eq!(*waits.last().unwrap(), MIN);
        assert_eq!(s.poll(now), Some(Action::StartCycle));
        done(&mut s, now + 10, now);
        assert_eq!(s.phase(), Phase::Idle);
        assert_eq!(s.last_error(), None);
        assert_eq!(s.backoff_ms(), 1000);
    }

    #[test]
    fn pause_waits_for_the_running_cycle_and_resume_runs_at_once() {
        let mut s = Schedule::new(MIN, 0, None, false, 0);
        assert_eq!(s.poll(0), Some(Action::StartCycle));
        s.pause();
        assert_eq!(s.phase(), Phase::Transferring);
        done(&mut s, 5_000, 0);
        assert_eq!(s.phase(), Phase::Paused);
        assert_eq!(s.poll(10 * MIN), None);
        assert_eq!(s.poll_timeout(), None);
        assert_eq!(s.lag_ms(10 * MIN), 10 * MIN, "lag grows while paused");
        s.resume(10 * MIN);
        assert_eq!(s.poll(10 * MIN), Some(Action::StartCycle));
        s.stop();
        assert_eq!(s.poll(100 * MIN), None);
        s.resume(100 * MIN);
        assert_eq!(
            s.phase(),
            Phase::Stopped,
            "resume does not restart a stopped relationship"
        );
    }

    #[test]
    fn restart_keeps_replicated_time_and_pause() {
        let s = Schedule::new(MIN, 0, Some(30_000), true, 100_000);
        assert_eq!(s.phase(), Phase::Paused);
        assert_eq!(s.lag_ms(100_000), 70_000);
        let mut s = Schedule::new(MIN, 0, Some(30_000), false, 100_000);
        assert_eq!(
            s.poll(100_000),
            Some(Action::StartCycle),
            "first cycle at once after a start"
        );
        // An older snapshot's report never moves the replicated time back.
        done(&mut s, 100_500, 10_000);
        assert_eq!(s.replicated_as_of(), Some(30_000));
    }

    #[test]
    fn trigger_brings_the_next_cycle_forward() {
        let mut s = Schedule::new(MIN, 0, None, false, 0);
        assert_eq!(s.poll(0), Some(Action::StartCycle));
        done(&mut s, 1_000, 0);
        s.trigger(2_000);
        assert_eq!(s.poll(2_000), Some(Action::StartCycle));
    }
}
