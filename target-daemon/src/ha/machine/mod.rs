//! Ownership of an HA group's pool as a sans-I/O state machine.
//!
//! One [`Machine`] per gateway decides, from the results of the RADOS and RBD calls the
//! shell made for it and the time passed in, what the gateway does next: probe the lease,
//! take it, fence the previous owner, open the pool, serve, renew, step down. Like the
//! iSCSI connection machine it never reads a clock, never awaits and touches no socket:
//! every input carries `now`, what has to happen outside is queued as [`Action`]s
//! ([`Machine::poll_action`]), what happened is reported as [`Event`]s
//! ([`Machine::poll_event`], for logs and metrics), and [`Machine::poll_timeout`] says
//! when the shell must call [`Machine::handle_timeout`] at the latest.
//!
//! Roles: `Standby` → `Acquiring` (lock won) → `Fencing` (the previous owner's RBD lock
//! broken, which blocklists it) → `Opening` → `Active`; from any of the owning roles a
//! failed renew, a local deadline passed or a planned move leads through `Releasing` back
//! to `Standby`; a gateway that finds itself blocklisted goes through `Reconnecting` (a
//! fresh RADOS client) to `Standby`.
//!
//! Safety rests on the local deadline: an owner serves only until three quarters of a
//! lease after it *sent* its last successful renew. The OSD counts the lease from when it
//! processed that renew, which is later, so the owner stops before anybody else can take
//! the lease; a process frozen past the deadline stops at once when it runs again (its
//! first input carries a `now` past the deadline), and the new owner's blocklisting covers
//! the I/O it might have in flight at the OSDs. Calls run on two lanes, so a slow pool open
//! never delays a renew: the lease lane (probe, acquire, renew, release, reconnect) and the
//! pool lane (fence, open, close), each with at most one call outstanding.

#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

use super::lease::LeaseContent;

/// The gateway's role in its group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Not the owner: serves nothing but what a standby port group may answer.
    Standby,
    /// Trying to take the lease.
    Acquiring,
    /// Lease won; breaking the previous owner's RBD lock (blocklisting it).
    Fencing,
    /// Fenced; opening the pool.
    Opening,
    /// Owner: the pool is open and served, active/optimized.
    Active,
    /// Stepping down: I/O stopped, closing the pool and giving the lease back.
    Releasing,
    /// Found blocklisted: waiting for a fresh RADOS client.
    Reconnecting,
    /// Shut down.
    Stopped,
}

impl Role {
    /// Stable lower-case name (status output, logs).
    pub fn name(self) -> &'static str {
        match self {
            Role::Standby => "standby",
            Role::Acquiring => "acquiring",
            Role::Fencing => "fencing",
            Role::Opening => "opening",
            Role::Active => "active",
            Role::Releasing => "releasing",
            Role::Reconnecting => "reconnecting",
            Role::Stopped => "stopped",
        }
    }

    /// The value of the `lunar_ha_role` gauge: 0 standby, 1 taking over (acquiring,
    /// fencing, opening), 2 active, 3 releasing, 4 reconnecting, 5 stopped.
    pub fn gauge(self) -> i64 {
        match self {
            Role::Standby => 0,
            Role::Acquiring | Role::Fencing | Role::Opening => 1,
            Role::Active => 2,
            Role::Releasing => 3,
            Role::Reconnecting => 4,
            Role::Stopped => 5,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The lease's timing, all derived from its duration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    /// How long the OSD keeps the lock after a renew.
    pub lease: Duration,
}

impl Timing {
    /// The owner renews this long after it sent the last successful renew: a quarter of
    /// the lease (a third until 2026-12-07), so a renew may take up to half a lease
    /// (`serve_for - renew_every`, 1 s at the default 2 s) before the owner steps down,
    /// and a dead owner's lease expires between 3/4 of a lease and a lease after its death.
    pub fn renew_every(&self) -> Duration {
        self.lease / 4
    }
    /// The owner serves until this long after it sent the last successful renew: a
    /// quarter of the lease is left to stop before the OSD can let anybody else in.
    pub fn serve_for(&self) -> Duration {
        self.lease * 3 / 4
    }
    /// A renew that failed for a passing reason is retried this much later.
    pub fn retry_after(&self) -> Duration {
        self.lease / 12
    }
    /// A standby looks at the lease this often. The lease expires up to this much before
    /// a standby notices, so this was on the takeover's critical path: a sixth of the
    /// lease (0.33 s at the default 2 s) costs two small RADOS reads per standby per
    /// period. Near an expiry the standby looks faster
    /// ([`Timing::probe_near_expiry_every`]).
    pub fn probe_every(&self) -> Duration {
        self.lease / 6
    }
    /// Near the instant the lease would expire if its owner renewed no more, a standby
    /// looks this often (33 ms at the default 2 s lease) instead of every
    /// [`Timing::probe_every`], so it finds an expired lease within this much rather than
    /// up to a sixth of a lease later (see [`Machine::handle_probed`]). A live owner
    /// renews every quarter of a lease, long before that window opens (it opens only
    /// after the owner's own local deadline, [`Timing::serve_for`]), so the faster
    /// probes only run while an owner has stopped renewing: a dozen small reads per
    /// takeover.
    pub fn probe_near_expiry_every(&self) -> Duration {
        self.lease / 60
    }
    /// After fencing or opening the pool failed here, this gateway leaves the lease to the
    /// others this long before it tries again (the same failure would only repeat).
    pub fn retry_pool_after(&self) -> Duration {
        self.lease * 10
    }
    /// How long the others leave a released lease to the gateway a planned move named,
    /// before they take it themselves (the move's target may be down).
    pub fn move_grace(&self) -> Duration {
        self.lease * 2
    }
}

/// Something the shell must do; it reports the result through the matching `handle_*`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Lease lane: read the lease object (whether its lock is held, and the content).
    /// → [`Machine::handle_probed`] or [`Machine::handle_lease_failed`].
    Probe,
    /// Lease lane: take the lock (exclusive, with the lease's duration), then write
    /// [`LeaseContent::taken_by`] over the content, version-checked.
    /// → [`Machine::handle_acquired`] or [`Machine::handle_lease_failed`].
    Acquire,
    /// Lease lane: renew the lock, then read the content.
    /// → [`Machine::handle_renewed`] or [`Machine::handle_lease_failed`].
    Renew,
    /// Lease lane: give the lock back (unlock). → [`Machine::handle_released`].
    Release,
    /// Lease lane: drop the RADOS client and connect a fresh one (this one is
    /// blocklisted). → [`Machine::handle_reconnected`].
    Reconnect,
    /// Pool lane: break the previous owner's RBD exclusive lock (blocklisting it) and take
    /// the lock. → [`Machine::handle_fenced`].
    Fence {
        /// The epoch of this ownership.
        epoch: u64,
    },
    /// Pool lane: open the pool on the image and hand it to the LUN manager.
    /// → [`Machine::handle_opened`].
    Open {
        /// The epoch of this ownership.
        epoch: u64,
    },
    /// Pool lane: detach the pool from the LUN manager (waiting for in-flight I/O), close
    /// it and the image, releasing the RBD lock. → [`Machine::handle_closed`].
    Close,
    /// Start serving: ALUA active/optimized, media access allowed. Not answered.
    Serve {
        /// The epoch of this ownership.
        epoch: u64,
    },
    /// Stop media access at once: ALUA transitioning (standby follows with `Close`).
    /// Not answered. Always queued before anything else the same input causes.
    StopIo,
}

/// Why a lease-lane or pool-lane call failed, as far as the machine cares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Failure {
    /// Someone else holds the lock (or the lock is no longer ours).
    Busy,
    /// This client is blocklisted (EBLOCKLISTED / ESHUTDOWN): fenced by a new owner.
    Blocklisted,
    /// Anything else (timeouts, network, a version race that did not settle).
    Other(String),
}

/// What happened, for logs and metrics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// The role changed.
    Role {
        /// Previous role.
        from: Role,
        /// New role.
        to: Role,
        /// Epoch of the ownership concerned (the last one seen when standby).
        epoch: u64,
        /// Why, in a few words.
        reason: &'static str,
    },
    /// A renew succeeded.
    Renewed {
        /// From sending the renew to having its answer (and the content read after it):
        /// what the local deadline must leave room for (`lunar_ha_renew_seconds`).
        took: Duration,
    },
    /// A takeover completed: from lease won to serving.
    TookOver {
        /// The new epoch.
        epoch: u64,
        /// Lease won → active.
        duration: Duration,
    },
    /// This gateway found itself blocklisted.
    Fenced,
}

/// What this gateway tells hosts through ALUA, as far as the lease decides it: the state of
/// its own port group and what it knows of the owner's. The shell applies it to the ALUA
/// view whenever it changes ([`Machine::access`]); the gateway registry adds which of the
/// other gateways are alive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Access {
    /// Owner, serving: active/optimized, media access served.
    Active {
        /// The ownership's epoch.
        epoch: u64,
    },
    /// Taking the pool over (lease being taken, previous owner being fenced, pool being
    /// opened): the previous owner's group is transitioning (no longer active, not yet
    /// standby); this gateway's stays standby until it serves (see `ha::groups`).
    TakingOver {
        /// The owner this gateway takes the pool from, as last seen (not itself).
        from: Option<String>,
    },
    /// Giving the pool up, or fenced and reconnecting: this group is transitioning, media
    /// access stops at once.
    Transitioning,
    /// Standby (02/04/0B).
    Standby {
        /// The owner as last seen in the lease object (never this gateway).
        owner: Option<String>,
        /// Whether the owner's lease lock was held at the last probe. Once the OSD expired
        /// it (or the owner released it) the owner is no longer active/optimized: its
        /// group is reported transitioning until a new owner serves.
        lease_held: bool,
    },
}

/// What a standby learned from reading the lease object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Probe {
    /// Whether the lock is currently held (by anybody; the OSD drops expired holders).
    pub held: bool,
    /// The content.
    pub content: LeaseContent,
    /// The lease object's version. cls_lock rewrites the lock's record at every lock and
    /// renew, so this changes whenever the owner renews: a standby learns when the last
    /// renew happened, hence when the lease expires if it was the last one. `None` when
    /// unknown (no object yet).
    pub stamp: Option<u64>,
}

/// A point-in-time view of the machine, for `lunarctl ha status`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    /// Own role.
    pub role: Role,
    /// Epoch of the current ownership as last seen.
    pub epoch: u64,
    /// Owner as last seen in the lease object.
    pub owner: Option<String>,
    /// Pending planned move as last seen.
    pub preferred: Option<String>,
    /// Whether the lease lock was held when last looked at (always true while owning).
    pub lease_held: bool,
    /// Since the last successful renew was sent (owning roles only).
    pub since_renew: Option<Duration>,
    /// Time left until the local deadline (owning roles only).
    pub serving_left: Option<Duration>,
}

/// Why the owner steps down.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum StepDown {
    Deadline,
    Lost,
    Blocklisted,
    Moved,
    PoolFailed,
    Shutdown,
}

impl StepDown {
    fn reason(self) -> &'static str {
        match self {
            StepDown::Deadline => "local deadline passed without a renew",
            StepDown::Lost => "lease lost",
            StepDown::Blocklisted => "blocklisted by a new owner",
            StepDown::Moved => "planned move",
            StepDown::PoolFailed => "fencing or opening the pool failed",
            StepDown::Shutdown => "shutdown",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LeaseOp {
    Probe,
    Acquire,
    Renew,
    Release,
    Reconnect,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PoolOp {
    Fence,
    Open,
    Close,
}

/// The ownership state machine of one gateway (see the module documentation).
#[derive(Debug)]
pub struct Machine {
    me: String,
    timing: Timing,
    role: Role,
    /// Last content seen (probe, acquire or renew).
    content: LeaseContent,
    lease_held: bool,
    lease_op: Option<LeaseOp>,
    pool_op: Option<PoolOp>,
    /// Next probe (standby) or renew (owning), or reconnect attempt.
    next_lease_op: Instant,
    /// Owning roles: when the last successful renew (or the acquire) was sent.
    renew_sent: Option<Instant>,
    /// Owning roles: serve no I/O from this instant on.
    deadline: Option<Instant>,
    /// When the lease was won, for the takeover duration.
    won_at: Option<Instant>,
    /// Whether `Serve` was queued without a `StopIo` after it.
    serving: bool,
    /// Whether the pool may be open (or the RBD lock held): a `Close` is owed.
    pool_open: bool,
    /// Releasing: whether the lock must still be given back.
    owe_release: bool,
    /// Releasing: where to go when done.
    after_release: Role,
    /// Standby: since when the lease is free but reserved for another gateway.
    reserved_since: Option<Instant>,
    /// Standby: the lease object's version at the last probe that found the lock held,
    /// and when a probe first saw that version (the renew it records was processed by
    /// then, and after the probe before it).
    renew_seen: Option<(u64, Instant)>,
    /// Taking over: the owner the lease is being taken from (last seen when the lease
    /// was found free).
    taking_from: Option<String>,
    /// Releasing: the pool could not be fenced or opened here; back off before retrying.
    pool_failed: bool,
    /// The gateway the configuration prefers for this pool (`pools[].prefer`): a free
    /// lease is left to it as after a planned move, unless it was the last owner (then it
    /// is presumably dead, and waiting for it would only lengthen the takeover).
    prefer: Option<String>,
    actions: VecDeque<Action>,
    events: VecDeque<Event>,
}

impl Machine {
    /// A gateway named `me` starting as standby at `now`; it probes at once.
    pub fn new(me: impl Into<String>, timing: Timing, now: Instant) -> Machine {
        Machine {
            me: me.into(),
            timing,
            role: Role::Standby,
            content: LeaseContent::default(),
            lease_held: false,
            lease_op: None,
            pool_op: None,
            next_lease_op: now,
            renew_sent: None,
            deadline: None,
            won_at: None,
            serving: false,
            pool_open: false,
            owe_release: false,
            after_release: Role::Standby,
            reserved_since: None,
            renew_seen: None,
            taking_from: None,
            pool_failed: false,
            prefer: None,
            actions: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    /// The gateway the configuration prefers for this pool (see `prefer`).
    pub fn with_prefer(mut self, prefer: Option<String>) -> Machine {
        self.prefer = prefer;
        self
    }

    /// The gateway a free lease is reserved for, if it is another one: the target of a
    /// planned move, else the preferred gateway unless it was the last owner.
    fn reserved_for_other(&self) -> bool {
        let for_whom = match &self.content.preferred {
            Some(p) => Some(p),
            None => self
                .prefer
                .as_ref()
                .filter(|p| self.content.owner.as_ref() != Some(*p)),
        };
        for_whom.is_some_and(|p| *p != self.me)
    }

    /// The current role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The epoch of the current ownership as last seen.
    pub fn epoch(&self) -> u64 {
        self.content.epoch
    }

    /// Whether media access may be served at `now`: active, and before the local deadline.
    /// The shell's I/O gate asks this (through the deadline it publishes) per command.
    pub fn may_serve(&self, now: Instant) -> bool {
        self.role == Role::Active && self.serving && self.deadline.is_some_and(|d| now < d)
    }

    /// What hosts should be told through ALUA now (see [`Access`]).
    pub fn access(&self) -> Access {
        match self.role {
            Role::Active if self.serving => Access::Active {
                epoch: self.content.epoch,
            },
            Role::Acquiring | Role::Fencing | Role::Opening | Role::Active => Access::TakingOver {
                from: self.taking_from.clone(),
            },
            Role::Releasing | Role::Reconnecting => Access::Transitioning,
            Role::Standby | Role::Stopped => Access::Standby {
                owner: self.content.owner.clone().filter(|o| *o != self.me),
                lease_held: self.lease_held,
            },
        }
    }

    /// The instant until which media access may be served, while serving.
    pub fn serving_until(&self) -> Option<Instant> {
        if self.role == Role::Active && self.serving {
            self.deadline
        } else {
            None
        }
    }

    /// The next action for the shell.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// The next event for logs and metrics.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When the shell must call [`Machine::handle_timeout`] at the latest.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut t: Option<Instant> = None;
        let mut at = |i: Instant| t = Some(t.map_or(i, |t| t.min(i)));
        if self.owning() {
            if let Some(d) = self.deadline {
                at(d);
            }
        }
        if self.lease_op.is_none()
            && matches!(
                self.role,
                Role::Standby | Role::Fencing | Role::Opening | Role::Active | Role::Reconnecting
            )
        {
            at(self.next_lease_op);
        }
        if let Some(r) = self.reserved_since {
            at(r + self.timing.move_grace());
        }
        t
    }

    /// A view for status output.
    pub fn snapshot(&self, now: Instant) -> Snapshot {
        let owning = self.owning();
        Snapshot {
            role: self.role,
            epoch: self.content.epoch,
            owner: self.content.owner.clone(),
            preferred: self.content.preferred.clone(),
            lease_held: self.lease_held,
            since_renew: self
                .renew_sent
                .filter(|_| owning)
                .map(|s| now.saturating_duration_since(s)),
            serving_left: self
                .deadline
                .filter(|_| owning)
                .map(|d| d.saturating_duration_since(now)),
        }
    }

    /// Time passed: deadlines, renews and probes that are due.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.pump(now);
    }

    /// The lease object as a probe read it.
    pub fn handle_probed(&mut self, now: Instant, probe: Probe) {
        if self.lease_op == Some(LeaseOp::Probe) {
            self.lease_op = None;
        }
        self.lease_held = probe.held;
        self.content = probe.content;
        if self.role != Role::Standby {
            self.pump(now);
            return;
        }
        self.renew_seen = match (probe.held, probe.stamp, self.renew_seen) {
            (true, Some(v), Some((seen, at))) if seen == v => Some((v, at)),
            (true, Some(v), _) => Some((v, now)),
            _ => None,
        };
        self.next_lease_op = self.next_probe(now);
        if probe.held {
            self.reserved_since = None;
        } else {
            let reserved_for_other = self.reserved_for_other();
            let grace_over = match self.reserved_since {
                None if reserved_for_other => {
                    self.reserved_since = Some(now);
                    false
                }
                Some(since) if reserved_for_other => now >= since + self.timing.move_grace(),
                _ => true,
            };
            if grace_over {
                self.reserved_since = None;
                self.taking_from = self.content.owner.clone().filter(|o| *o != self.me);
                self.lease_op = Some(LeaseOp::Acquire);
                self.actions.push_back(Action::Acquire);
                self.set_role(Role::Acquiring, "lease free");
            }
        }
        self.pump(now);
    }

    /// When a standby probes next. Normally a sixth of a lease from now. But if the owner
    /// stopped renewing, the OSD expires the lease one lease after the last renew it
    /// processed, which happened after the probe before the one that first saw the
    /// object's current version and before that one: from about a sixth of a lease before
    /// `seen + lease` on, the standby probes every [`Timing::probe_near_expiry_every`]
    /// until it finds the lease free (or a new version: the owner renewed after all). A
    /// probe past `seen + lease + probe_every` that still finds the same renew (an OSD
    /// clock running slow) falls back to the normal pace. Only timing: the OSD alone
    /// decides when the lock is free.
    fn next_probe(&self, now: Instant) -> Instant {
        let every = self.timing.probe_every();
        let normal = now + every;
        let Some((_, seen)) = self.renew_seen else {
            return normal;
        };
        let expires = seen + self.timing.lease;
        let fast = self.timing.probe_near_expiry_every();
        if now >= expires + every {
            return normal;
        }
        let from = expires.checked_sub(every + fast).unwrap_or(seen);
        normal.min(from.max(now + fast))
    }

    /// The lock was won at `sent` (when the lock call was sent) and `content` written.
    pub fn handle_acquired(&mut self, now: Instant, sent: Instant, content: LeaseContent) {
        if self.lease_op == Some(LeaseOp::Acquire) {
            self.lease_op = None;
        }
        self.lease_held = true;
        self.content = content;
        if self.role != Role::Acquiring {
            // Stepping down or shut down while acquiring: give it back.
            self.owe_release = true;
            self.pump(now);
            return;
        }
        self.renew_sent = Some(sent);
        self.deadline = Some(sent + self.timing.serve_for());
        self.next_lease_op = sent + self.timing.renew_every();
        self.won_at = Some(now);
        if now >= sent + self.timing.serve_for() {
            // The answer took so long that the lease may be gone again.
            self.owe_release = true;
            self.step_down(now, StepDown::Deadline);
            return;
        }
        self.set_role(Role::Fencing, "lease won");
        self.pool_open = true;
        self.pool_op = Some(PoolOp::Fence);
        self.actions.push_back(Action::Fence {
            epoch: self.content.epoch,
        });
        self.pump(now);
    }

    /// A renew sent at `sent` succeeded; `content` is the lease object read after it.
    pub fn handle_renewed(&mut self, now: Instant, sent: Instant, content: LeaseContent) {
        if self.lease_op == Some(LeaseOp::Renew) {
            self.lease_op = None;
        }
        if !self.owning() {
            // Late answer after stepping down: the lock may be ours again; give it back
            // unless we already have.
            if self.role == Role::Releasing {
                self.owe_release = true;
            }
            self.pump(now);
            return;
        }
        // Check the old deadline against now before extending it: a renew whose answer
        // comes after the deadline does not undo having passed it.
        if self.deadline.is_some_and(|d| now >= d) {
            self.owe_release = true;
            self.step_down(now, StepDown::Deadline);
            return;
        }
        self.events.push_back(Event::Renewed {
            took: now.saturating_duration_since(sent),
        });
        let ours = content.owner.as_deref() == Some(self.me.as_str())
            && content.epoch == self.content.epoch;
        let moving = content.preferred.as_deref().is_some_and(|p| p != self.me);
        self.content = content;
        if !ours {
            self.step_down(now, StepDown::Lost);
            return;
        }
        let serve_until = sent + self.timing.serve_for();
        if self.deadline.is_none_or(|d| serve_until > d) {
            self.renew_sent = Some(sent);
            self.deadline = Some(serve_until);
            self.next_lease_op = sent + self.timing.renew_every();
        }
        if moving {
            self.owe_release = true;
            self.step_down(now, StepDown::Moved);
            return;
        }
        self.pump(now);
    }

    /// A probe, acquire or renew failed.
    pub fn handle_lease_failed(&mut self, now: Instant, failure: Failure) {
        let op = self.lease_op.take();
        if failure == Failure::Blocklisted {
            self.blocklisted(now);
            return;
        }
        match (op, self.role) {
            (Some(LeaseOp::Acquire), Role::Acquiring) => {
                self.next_lease_op = now + self.timing.probe_every();
                let why = if failure == Failure::Busy {
                    "another gateway won the lease"
                } else {
                    "acquiring failed"
                };
                self.set_role(Role::Standby, why);
            }
            (Some(LeaseOp::Renew), _) if self.owning() => {
                if failure == Failure::Busy {
                    self.step_down(now, StepDown::Lost);
                    return;
                }
                self.next_lease_op = now + self.timing.retry_after();
            }
            (Some(LeaseOp::Probe), Role::Standby) => {
                self.next_lease_op = now + self.timing.probe_every();
            }
            _ => {}
        }
        self.pump(now);
    }

    /// The lock was given back (or giving it back failed: the OSD expires it anyway).
    pub fn handle_released(&mut self, now: Instant) {
        if self.lease_op == Some(LeaseOp::Release) {
            self.lease_op = None;
        }
        self.lease_held = false;
        self.pump(now);
    }

    /// A fresh RADOS client is connected (`Ok`) or connecting failed.
    pub fn handle_reconnected(&mut self, now: Instant, result: Result<(), String>) {
        if self.lease_op == Some(LeaseOp::Reconnect) {
            self.lease_op = None;
        }
        if self.role != Role::Reconnecting {
            self.pump(now);
            return;
        }
        match result {
            Ok(()) => {
                self.next_lease_op = now;
                self.set_role(Role::Standby, "reconnected");
            }
            Err(_) => self.next_lease_op = now + self.timing.probe_every(),
        }
        self.pump(now);
    }

    /// Fencing ended: the RBD lock is ours (`Ok`), or it failed.
    pub fn handle_fenced(&mut self, now: Instant, result: Result<(), Failure>) {
        if self.pool_op == Some(PoolOp::Fence) {
            self.pool_op = None;
        }
        self.pool_done(now, result, Role::Fencing, |m, now| {
            m.set_role(Role::Opening, "previous owner fenced");
            m.pool_op = Some(PoolOp::Open);
            m.actions.push_back(Action::Open {
                epoch: m.content.epoch,
            });
            m.pump(now);
        });
    }

    /// Opening the pool ended.
    pub fn handle_opened(&mut self, now: Instant, result: Result<(), Failure>) {
        if self.pool_op == Some(PoolOp::Open) {
            self.pool_op = None;
        }
        self.pool_done(now, result, Role::Opening, |m, now| {
            m.serving = true;
            let epoch = m.content.epoch;
            m.actions.push_back(Action::Serve { epoch });
            m.set_role(Role::Active, "pool open");
            if let Some(won) = m.won_at.take() {
                m.events.push_back(Event::TookOver {
                    epoch,
                    duration: now.saturating_duration_since(won),
                });
            }
            m.pump(now);
        });
    }

    /// The pool is closed and detached (the shell closes whatever it can; a failure
    /// leaves nothing more to do here).
    pub fn handle_closed(&mut self, now: Instant) {
        if self.pool_op == Some(PoolOp::Close) {
            self.pool_op = None;
        }
        self.pool_open = false;
        self.pump(now);
    }

    /// Shut down: an owner steps down (stops I/O, closes, releases); others stop.
    pub fn shutdown(&mut self, now: Instant) {
        match self.role {
            Role::Stopped => {}
            Role::Acquiring | Role::Fencing | Role::Opening | Role::Active => {
                self.owe_release = true;
                self.step_down(now, StepDown::Shutdown);
            }
            Role::Releasing => {
                self.after_release = Role::Stopped;
                self.pump(now);
            }
            Role::Standby | Role::Reconnecting => {
                self.set_role(Role::Stopped, StepDown::Shutdown.reason());
            }
        }
    }

    fn owning(&self) -> bool {
        matches!(self.role, Role::Fencing | Role::Opening | Role::Active)
    }

    /// Common end of a pool-lane call in role `expect`.
    fn pool_done(
        &mut self,
        now: Instant,
        result: Result<(), Failure>,
        expect: Role,
        next: impl FnOnce(&mut Machine, Instant),
    ) {
        if self.role != expect {
            self.pump(now);
            return;
        }
        if self.deadline.is_some_and(|d| now >= d) {
            self.owe_release = true;
            self.step_down(now, StepDown::Deadline);
            return;
        }
        match result {
            Ok(()) => next(self, now),
            Err(Failure::Blocklisted) => self.blocklisted(now),
            Err(_) => {
                self.owe_release = true;
                self.step_down(now, StepDown::PoolFailed);
            }
        }
    }

    fn blocklisted(&mut self, now: Instant) {
        self.events.push_back(Event::Fenced);
        self.lease_held = false;
        self.owe_release = false;
        match self.role {
            Role::Fencing | Role::Opening | Role::Active | Role::Releasing => {
                self.after_release = Role::Reconnecting;
                self.step_down(now, StepDown::Blocklisted);
            }
            Role::Standby | Role::Acquiring => {
                self.set_role(Role::Reconnecting, StepDown::Blocklisted.reason());
                self.pump(now);
            }
            Role::Reconnecting | Role::Stopped => self.pump(now),
        }
    }

    /// Leaves an owning role: I/O stops first, then the pool closes and the lease goes
    /// back (`owe_release`), then the role becomes `after_release`.
    fn step_down(&mut self, now: Instant, why: StepDown) {
        if self.serving {
            self.serving = false;
            self.actions.push_front(Action::StopIo);
        }
        self.won_at = None;
        self.reserved_since = None;
        match why {
            StepDown::Blocklisted => self.after_release = Role::Reconnecting,
            StepDown::Shutdown => self.after_release = Role::Stopped,
            StepDown::Lost => {
                self.owe_release = false;
                self.lease_held = false;
            }
            _ => {}
        }
        if why == StepDown::PoolFailed {
            self.pool_failed = true;
        }
        if why == StepDown::Moved {
            // Leave the lease to the preferred gateway for a while.
            self.reserved_since = Some(now);
        }
        if self.role != Role::Releasing {
            self.set_role(Role::Releasing, why.reason());
        }
        self.renew_sent = None;
        self.deadline = None;
        self.pump(now);
    }

    /// Queues whatever is due at `now` on the free lanes.
    fn pump(&mut self, now: Instant) {
        if self.owning() && self.deadline.is_some_and(|d| now >= d) {
            self.owe_release = true;
            self.step_down(now, StepDown::Deadline);
            return;
        }
        match self.role {
            Role::Standby => {
                if self.lease_op.is_none() && now >= self.next_lease_op {
                    self.lease_op = Some(LeaseOp::Probe);
                    self.actions.push_back(Action::Probe);
                }
            }
            Role::Fencing | Role::Opening | Role::Active => {
                if self.lease_op.is_none() && now >= self.next_lease_op {
                    self.lease_op = Some(LeaseOp::Renew);
                    self.actions.push_back(Action::Renew);
                }
            }
            Role::Releasing => {
                if self.pool_open && self.pool_op.is_none() {
                    self.pool_op = Some(PoolOp::Close);
                    self.actions.push_back(Action::Close);
                }
                let blocklisted = self.after_release == Role::Reconnecting;
                if self.owe_release && !blocklisted && !self.pool_open && self.lease_op.is_none() {
                    self.owe_release = false;
                    self.lease_op = Some(LeaseOp::Release);
                    self.actions.push_back(Action::Release);
                }
                if !self.pool_open
                    && self.pool_op.is_none()
                    && self.lease_op.is_none()
                    && (!self.owe_release || blocklisted)
                {
                    let to = std::mem::replace(&mut self.after_release, Role::Standby);
                    self.owe_release = false;
                    self.next_lease_op = now + self.timing.probe_every();
                    if std::mem::take(&mut self.pool_failed) {
                        self.next_lease_op = now + self.timing.retry_pool_after();
                    }
                    if to == Role::Reconnecting {
                        self.next_lease_op = now;
                    }
                    self.set_role(to, "stepped down");
                    self.pump(now);
                }
            }
            Role::Reconnecting => {
                if self.lease_op.is_none() && now >= self.next_lease_op {
                    self.lease_op = Some(LeaseOp::Reconnect);
                    self.actions.push_back(Action::Reconnect);
                }
            }
            Role::Acquiring | Role::Stopped => {}
        }
    }

    fn set_role(&mut self, to: Role, reason: &'static str) {
        let from = std::mem::replace(&mut self.role, to);
        if from != to {
            self.events.push_back(Event::Role {
                from,
                to,
                epoch: self.content.epoch,
                reason,
            });
        }
    }
}
