//! The ownership machine driven under a simulated clock against a simulated cluster: an
//! OSD that holds the lease lock (expiring it), the lease content with its version, the
//! image's RBD lock and the blocklist. Gateways are machines whose actions this file
//! performs on that cluster; a gateway can be killed (never driven again) or frozen (not
//! driven for a while, then driven with the time it wakes up at).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use super::*;

const LEASE: Duration = Duration::from_millis(3000);

fn timing() -> Timing {
    Timing { lease: LEASE }
}

/// The simulated cluster.
#[derive(Debug, Default)]
struct Cluster {
    /// Lease lock holder and when the OSD expires it.
    lock: Option<(String, Instant)>,
    content: LeaseContent,
    /// The lease object's version: bumped by every lock, renew, unlock and content write,
    /// as cls_lock and RADOS do.
    version: u64,
    /// When each gateway's probes were answered.
    probes: BTreeMap<String, Vec<Instant>>,
    /// The image's RBD exclusive lock holder.
    rbd_lock: Option<String>,
    blocklist: BTreeSet<String>,
    /// Writes that reached the image, by gateway.
    writes: Vec<String>,
    /// Lease lock calls refused because of the blocklist.
    refused: usize,
}

impl Cluster {
    fn holder(&mut self, now: Instant) -> Option<&str> {
        if self.lock.as_ref().is_some_and(|(_, exp)| now >= *exp) {
            self.lock = None;
        }
        self.lock.as_ref().map(|(h, _)| h.as_str())
    }
}

/// A gateway in the simulation.
#[derive(Debug)]
struct Gw {
    name: String,
    m: Machine,
    /// The shell's view: ALUA active and I/O allowed.
    serving: bool,
    pool_open: bool,
    /// Renew calls made.
    renews: usize,
    /// Every action performed, in order.
    log: Vec<Action>,
    /// Whether the cluster answers this gateway's calls (false: they fail with Other).
    reachable: bool,
    /// Every change of the machine's [`Access`], as seen after each input.
    accesses: Vec<Access>,
}

impl Gw {
    fn new(name: &str, now: Instant) -> Gw {
        Gw {
            name: name.into(),
            m: Machine::new(name, timing(), now),
            serving: false,
            pool_open: false,
            renews: 0,
            log: Vec::new(),
            reachable: true,
            accesses: Vec::new(),
        }
    }

    fn note_access(&mut self) {
        let a = self.m.access();
        if self.accesses.last() != Some(&a) {
            self.accesses.push(a);
        }
    }

    /// Performs the queued actions on the cluster at `now` (answers come at once) until
    /// none is left.
    fn drive(&mut self, c: &mut Cluster, now: Instant) {
        self.m.handle_timeout(now);
        self.note_access();
        while let Some(a) = self.m.poll_action() {
            self.note_access();
            self.log.push(a.clone());
            let blocked = c.blocklist.contains(&self.name);
            if !self.reachable && !matches!(a, Action::Serve { .. } | Action::StopIo) {
                match a {
                    Action::Release => self.m.handle_released(now),
                    Action::Close => {
                        self.pool_open = false;
                        self.m.handle_closed(now)
                    }
                    Action::Fence { .. } => self.m.handle_fenced(now, Err(other())),
                    Action::Open { .. } => self.m.handle_opened(now, Err(other())),
                    Action::Reconnect => self.m.handle_reconnected(now, Err("down".into())),
                    _ => self.m.handle_lease_failed(now, other()),
                }
                continue;
            }
            match a {
                Action::Probe => {
                    if blocked {
                        c.refused += 1;
                        self.m.handle_lease_failed(now, Failure::Blocklisted);
                        continue;
                    }
                    let held = c.holder(now).is_some();
                    let content = c.content.clone();
                    c.probes.entry(self.name.clone()).or_default().push(now);
                    self.m.handle_probed(
                        now,
                        Probe {
                            held,
                            content,
                            stamp: Some(c.version),
                        },
                    );
                }
                Action::Acquire => {
                    if blocked {
                        c.refused += 1;
                        self.m.handle_lease_failed(now, Failure::Blocklisted);
                    } else if c.holder(now).is_some() {
                        self.m.handle_lease_failed(now, Failure::Busy);
                    } else {
                        c.lock = Some((self.name.clone(), now + LEASE));
                        c.content = c.content.taken_by(&self.name);
                        c.version += 2;
                        self.m.handle_acquired(now, now, c.content.clone());
                    }
                }
                Action::Renew => {
                    self.renews += 1;
                    if blocked {
                        c.refused += 1;
                        self.m.handle_lease_failed(now, Failure::Blocklisted);
                    } else if c.holder(now) == Some(self.name.as_str()) {
                        c.lock = Some((self.name.clone(), now + LEASE));
                        c.version += 1;
                        self.m.handle_renewed(now, now, c.content.clone());
                    } else {
                        self.m.handle_lease_failed(now, Failure::Busy);
                    }
                }
                Action::Release => {
                    if !blocked && c.holder(now) == Some(self.name.as_str()) {
                        c.lock = None;
                        c.version += 1;
                    }
                    self.m.handle_released(now);
                }
                Action::Reconnect => {
                    // A fresh client is a new entity, not on the blocklist.
                    c.blocklist.remove(&self.name);
                    self.m.handle_reconnected(now, Ok(()));
                }
                Action::Fence { .. } => {
                    if blocked {
                        self.m.handle_fenced(now, Err(Failure::Blocklisted));
                        continue;
                    }
                    if let Some(old) = c.rbd_lock.take() {
                        if old != self.name {
                            c.blocklist.insert(old);
                        }
                    }
                    c.rbd_lock = Some(self.name.clone());
                    self.pool_open = true;
                    self.m.handle_fenced(now, Ok(()));
                }
                Action::Open { .. } => {
                    let r = if blocked {
                        Err(Failure::Blocklisted)
                    } else {
                        Ok(())
                    };
                    self.m.handle_opened(now, r);
                }
                Action::Close => {
                    if c.rbd_lock.as_deref() == Some(self.name.as_str()) && !blocked {
                        c.rbd_lock = None;
                    }
                    self.pool_open = false;
                    self.m.handle_closed(now);
                }
                Action::Serve { .. } => self.serving = true,
                Action::StopIo => self.serving = false,
            }
        }
        self.note_access();
    }

    /// One write from an initiator at `now`: served only when the shell serves, the
    /// machine's deadline allows it, and the cluster does not refuse the client.
    fn write(&self, c: &mut Cluster, now: Instant) -> bool {
        if !(self.serving && self.m.may_serve(now)) {
            return false;
        }
        if c.blocklist.contains(&self.name) {
            return false;
        }
        c.writes.push(self.name.clone());
        true
    }

    fn events(&mut self) -> Vec<Event> {
        std::iter::from_fn(|| self.m.poll_event()).collect()
    }

    fn roles(&mut self) -> Vec<Role> {
        self.events()
            .into_iter()
            .filter_map(|e| match e {
                Event::Role { to, .. } => Some(to),
                _ => None,
            })
            .collect()
    }
}

fn other() -> Failure {
    Failure::Other("timed out".into())
}

/// The simulation: a clock and the gateways that are alive (not killed, not frozen).
struct Sim {
    now: Instant,
    c: Cluster,
    gws: BTreeMap<String, Gw>,
    /// Gateways not driven (killed or frozen).
    asleep: BTreeSet<String>,
}

impl Sim {
    fn new(names: &[&str]) -> Sim {
        let now = Instant::now();
        let gws = names
            .iter()
            .map(|n| (n.to_string(), Gw::new(n, now)))
            .collect();
        Sim {
            now,
            c: Cluster::default(),
            gws,
            asleep: BTreeSet::new(),
        }
    }

    fn gw(&mut self, name: &str) -> &mut Gw {
        self.gws.get_mut(name).expect("gateway of the test")
    }

    /// A write through `name` now.
    fn write(&mut self, name: &str) -> bool {
        let now = self.now;
        let g = self.gws.get(name).expect("gateway of the test");
        g.write(&mut self.c, now)
    }

    /// Drives one gateway now, asleep or not.
    fn drive_one(&mut self, name: &str) {
        let now = self.now;
        let g = self.gws.get_mut(name).expect("gateway of the test");
        g.drive(&mut self.c, now);
    }

    /// Drives every awake gateway at the current time, in name order.
    fn drive(&mut self) {
        for (name, gw) in self.gws.iter_mut() {
            if !self.asleep.contains(name) {
                gw.drive(&mut self.c, self.now);
            }
        }
    }

    /// Advances the clock to `until`, stopping at every time an awake gateway asked for.
    fn run_for(&mut self, d: Duration) {
        let until = self.now + d;
        self.drive();
        loop {
            let next = self
                .gws
                .iter()
                .filter(|(n, _)| !self.asleep.contains(*n))
                .filter_map(|(_, g)| g.m.poll_timeout())
                .filter(|t| *t > self.now)
                .min();
            match next {
                Some(t) if t <= until => {
                    self.now = t;
                    self.drive();
                }
                _ => break,
            }
        }
        self.now = until;
        self.drive();
    }

    fn active(&self) -> Vec<&str> {
        self.gws
            .values()
            .filter(|g| g.m.role() == Role::Active)
            .map(|g| g.name.as_str())
            .collect()
    }
}

#[test]
fn a_standby_takes_a_free_lease_fences_opens_and_serves() {
    let mut s = Sim::new(&["gw1"]);
    s.run_for(Duration::from_millis(1));
    let g = s.gw("gw1");
    assert_eq!(g.m.role(), Role::Active);
    assert_eq!(
        g.log,
        vec![
            Action::Probe,
            Action::Acquire,
            Action::Fence { epoch: 1 },
            Action::Open { epoch: 1 },
            Action::Serve { epoch: 1 },
        ]
    );
    assert_eq!(
        g.roles(),
        vec![Role::Acquiring, Role::Fencing, Role::Opening, Role::Active]
    );
    assert!(g.serving && g.pool_open);
    assert_eq!(s.c.content.owner.as_deref(), Some("gw1"));
    assert_eq!(s.c.rbd_lock.as_deref(), Some("gw1"));
}

#[test]
fn the_owner_renews_every_quarter_of_the_lease_and_keeps_serving() {
    let mut s = Sim::new(&["gw1"]);
    s.run_for(Duration::from_millis(1));
    let t0 = s.now;
    s.run_for(LEASE * 10);
    let g = s.gw("gw1");
    assert_eq!(g.m.role(), Role::Active);
    // 30 s / 0.75 s.
    assert_eq!(g.renews, 40);
    let now = s.now;
    let g = s.gw("gw1");
    assert!(g.m.may_serve(now));
    let snap = g.m.snapshot(now);
    assert!(snap
        .since_renew
        .is_some_and(|d| d < LEASE / 4 + Duration::from_millis(2)));
    assert_eq!(snap.epoch, 1);
    assert!(t0 < now);
    let evs = g.events();
    assert_eq!(
        evs.iter()
            .filter(|e| matches!(e, Event::Renewed { .. }))
            .count(),
        40
    );
}

#[test]
fn a_failing_renew_is_retried_and_io_stops_at_the_local_deadline() {
    let mut s = Sim::new(&["gw1"]);
    s.run_for(Duration::from_millis(1));
    let won = s.now - Duration::from_millis(1);
    s.gw("gw1").reachable = false;
    s.gw("gw1").log.clear();
    let _ = s.gw("gw1").events();
    // Just before the deadline (3/4 of the lease after the acquire was sent) it serves.
    s.run_for(LEASE * 3 / 4 - Duration::from_millis(2));
    let now = s.now;
    assert!(s.gw("gw1").m.may_serve(now));
    assert!(s.write("gw1"));
    // Retries every lease/12 after the first renew at lease/4 failed.
    let renews = s
        .gw("gw1")
        .log
        .iter()
        .filter(|a| **a == Action::Renew)
        .count();
    assert_eq!(renews, 6, "at 0.75, 1, 1.25, 1.5, 1.75 and 2 s");
    s.run_for(Duration::from_millis(1));
    let now = s.now;
    assert_eq!(now, won + LEASE * 3 / 4);
    let g = s.gw("gw1");
    assert!(!g.m.may_serve(now));
    assert!(!g.serving);
    let after: Vec<_> = g
        .log
        .iter()
        .skip_while(|a| **a == Action::Renew)
        .cloned()
        .collect();
    assert_eq!(after, vec![Action::StopIo, Action::Close, Action::Release]);
    assert_eq!(g.m.role(), Role::Standby);
    assert_eq!(g.roles(), vec![Role::Releasing, Role::Standby]);
    // And the OSD still held the lease for it: stopping came before anyone could take it.
    assert!(s
        .c
        .lock
        .as_ref()
        .is_some_and(|(h, exp)| h == "gw1" && *exp > now));
}

#[test]
fn a_lost_lease_stops_io_at_once_and_gives_nothing_back() {
    let mut s = Sim::new(&["gw1"]);
    s.run_for(Duration::from_millis(1));
    // Someone removed the lock (an operator, or it expired at a slow OSD).
    s.c.lock = Some(("intruder".into(), s.now + LEASE * 100));
    s.gw("gw1").log.clear();
    s.run_for(LEASE / 3);
    let g = s.gw("gw1");
    assert_eq!(g.log, vec![Action::Renew, Action::StopIo, Action::Close]);
    assert_eq!(g.m.role(), Role::Standby);
    assert!(!g.serving);
    assert_eq!(s.c.lock.as_ref().map(|l| l.0.as_str()), Some("intruder"));
}

#[test]
fn a_frozen_owner_serves_nothing_when_it_resumes_and_comes_back_as_standby() {
    let mut s = Sim::new(&["gw1", "gw2"]);
    s.run_for(Duration::from_millis(1));
    assert_eq!(s.active(), vec!["gw1"]);
    s.run_for(LEASE);
    // SIGSTOP gw1.
    s.asleep.insert("gw1".into());
    let frozen_at = s.now;
    s.run_for(LEASE * 3);
    assert_eq!(s.gw("gw2").m.role(), Role::Active);
    assert_eq!(s.gw("gw2").m.epoch(), 2);
    // gw2 fenced gw1 before opening the pool.
    assert!(s.c.blocklist.contains("gw1"));
    let takeover = s.gw("gw2").events().into_iter().find_map(|e| match e {
        Event::TookOver { epoch, .. } => Some(epoch),
        _ => None,
    });
    assert_eq!(takeover, Some(2));
    // SIGCONT: a command reaches gw1 before its HA task runs: the deadline refuses it.
    let now = s.now;
    assert!(now > frozen_at + LEASE);
    assert!(!s.gw("gw1").m.may_serve(now));
    assert!(!s.write("gw1"));
    s.gw("gw1").log.clear();
    s.asleep.clear();
    s.drive_one("gw1");
    let g = s.gw("gw1");
    // The very first thing it does is stop I/O.
    assert_eq!(g.log.first(), Some(&Action::StopIo));
    assert!(!g.serving);
    s.run_for(LEASE);
    let g = s.gw("gw1");
    assert_eq!(g.m.role(), Role::Standby);
    assert!(g.log.contains(&Action::Reconnect), "{:?}", g.log);
    assert!(g.events().contains(&Event::Fenced));
    assert!(s.c.writes.iter().all(|w| w != "gw1"));
    assert_eq!(s.active(), vec!["gw2"]);
    assert_eq!(s.c.content.epoch, 2);
}

/// A machine that took a free lease at `now` and serves, with the content it wrote.
fn active_machine(now: Instant) -> (Machine, LeaseContent) {
    let mut m = Machine::new("gw1", timing(), now);
    m.handle_timeout(now);
    assert_eq!(m.poll_action(), Some(Action::Probe));
    m.handle_probed(
        now,
        Probe {
            held: false,
            content: LeaseContent::default(),
            stamp: None,
        },
    );
    assert_eq!(m.poll_action(), Some(Action::Acquire));
    let c = LeaseContent::default().taken_by("gw1");
    m.handle_acquired(now, now, c.clone());
    assert_eq!(m.poll_action(), Some(Action::Fence { epoch: 1 }));
    m.handle_fenced(now, Ok(()));
    assert_eq!(m.poll_action(), Some(Action::Open { epoch: 1 }));
    m.handle_opened(now, Ok(()));
    assert_eq!(m.poll_action(), Some(Action::Serve { epoch: 1 }));
    (m, c)
}

#[test]
fn a_renew_answered_after_the_deadline_does_not_resume_service() {
    let t0 = Instant::now();
    let (mut m, c) = active_machine(t0);
    let sent = m.poll_timeout().expect("renew due");
    assert_eq!(sent, t0 + LEASE / 4);
    m.handle_timeout(sent);
    assert_eq!(m.poll_action(), Some(Action::Renew));
    // The process is frozen with the renew in flight; the (successful) answer is read
    // when it resumes, long after the deadline the previous renew set.
    let late = t0 + LEASE * 2;
    m.handle_renewed(late, sent, c);
    assert!(!m.may_serve(late));
    assert_eq!(m.poll_action(), Some(Action::StopIo));
    assert_eq!(m.poll_action(), Some(Action::Close));
    assert_eq!(m.role(), Role::Releasing);
}

#[test]
fn two_standbys_racing_for_the_lease_give_one_owner() {
    let mut s = Sim::new(&["gw1", "gw2"]);
    // Both probe the free lease at the same instant, then both try to take it.
    let now = s.now;
    for name in ["gw1", "gw2"] {
        let g = s.gw(name);
        g.m.handle_timeout(now);
        assert_eq!(g.m.poll_action(), Some(Action::Probe));
        g.m.handle_probed(
            now,
            Probe {
                held: false,
                content: LeaseContent::default(),
                stamp: None,
            },
        );
        assert_eq!(g.m.poll_action(), Some(Action::Acquire));
        g.log.push(Action::Acquire);
    }
    // The OSD serialises the two lock calls: gw2's arrives first.
    s.c.lock = Some(("gw2".into(), now + LEASE));
    s.c.content = s.c.content.taken_by("gw2");
    let content = s.c.content.clone();
    s.gw("gw2").m.handle_acquired(now, now, content);
    s.gw("gw1").m.handle_lease_failed(now, Failure::Busy);
    s.run_for(LEASE * 5);
    assert_eq!(s.active(), vec!["gw2"]);
    assert_eq!(s.gw("gw1").m.role(), Role::Standby);
    assert_eq!(s.c.content.epoch, 1);
    assert!(s.c.blocklist.is_empty());
    let roles = s.gw("gw1").roles();
    assert_eq!(roles, vec![Role::Acquiring, Role::Standby]);
}

/// Kills the owner gw1 of a two-gateway group `offset` into a period of its renews and
/// runs until gw2 serves: (when the OSD expired gw1's lease, when gw2 served, the
/// simulation), the time gw2 served found to within `STEP`.
fn kill_owner(offset: Duration) -> (Instant, Instant, Sim) {
    let mut s = Sim::new(&["gw1", "gw2"]);
    s.run_for(Duration::from_millis(1));
    assert_eq!(s.active(), vec!["gw1"]);
    s.run_for(LEASE * 2 + offset);
    // kill -9 gw1: its last renew was at most lease/4 ago.
    s.asleep.insert("gw1".into());
    let killed = s.now;
    let expires = s.c.lock.as_ref().map(|l| l.1).expect("held");
    while s.gw("gw2").m.role() != Role::Active {
        assert!(s.now < killed + LEASE * 3, "no takeover");
        s.run_for(STEP);
    }
    let served = s.now;
    (expires, served, s)
}

const STEP: Duration = Duration::from_millis(5);

#[test]
fn after_a_kill_the_standby_takes_over_once_the_osd_expired_the_lease() {
    let (expires, served, mut s) = kill_owner(Duration::ZERO);
    assert!(served >= expires);
    let took = s.gw("gw2").events().into_iter().find_map(|e| match e {
        Event::TookOver { epoch, .. } => Some(epoch),
        _ => None,
    });
    assert_eq!(took, Some(2));
    assert!(s.c.blocklist.contains("gw1"));
    assert_eq!(s.c.rbd_lock.as_deref(), Some("gw2"));
}

#[test]
fn a_standby_finds_a_dead_owners_lease_expired_within_a_sixtieth_of_a_lease() {
    // Whatever the phase of the kill against the owner's renews and the standby's probes,
    // the standby, probing fast near the expiry the last renew it saw implies, takes the
    // lease within one fast probe interval of the OSD expiring it (instead of up to a
    // sixth of a lease), and never before.
    let fast = timing().probe_near_expiry_every();
    assert_eq!(fast, Duration::from_millis(50));
    let mut worst = Duration::ZERO;
    for ms in (0..1000).step_by(37) {
        let (expires, served, s) = kill_owner(Duration::from_millis(ms));
        assert!(served >= expires, "kill at +{ms} ms: served before expiry");
        // The fast probes start only once the dead owner's own local deadline has
        // passed (it would have stopped serving by then, had it been alive but cut off).
        let renewed = expires - LEASE;
        let probes = &s.c.probes["gw2"];
        let first_fast = probes
            .windows(2)
            .find(|w| w[1] - w[0] < timing().probe_every() - STEP)
            .map(|w| w[1]);
        assert!(
            first_fast.is_some_and(|f| f >= renewed + timing().serve_for()),
            "kill at +{ms} ms: fast probes from {:?} after the last renew",
            first_fast.map(|f| f - renewed)
        );
        let late = served - expires;
        assert!(
            late <= fast + STEP,
            "kill at +{ms} ms: {late:?} after expiry"
        );
        worst = worst.max(late);
    }
    assert!(worst > Duration::ZERO);
}

#[test]
fn while_the_owner_renews_a_standby_probes_at_the_normal_pace() {
    let mut s = Sim::new(&["gw1", "gw2"]);
    s.run_for(Duration::from_millis(1));
    let before = s.c.probes["gw2"].len();
    s.run_for(LEASE * 10);
    let probes = s.c.probes["gw2"].len() - before;
    // Every sixth of a lease, never the fast pace.
    assert!((59..=61).contains(&probes), "{probes} probes in 10 leases");
    assert_eq!(s.active(), vec!["gw1"]);
}

#[test]
fn a_lease_held_past_the_expected_expiry_falls_back_to_the_normal_pace() {
    // The OSD keeps the lock longer than the last renew implies (its clock runs slow):
    // the standby probes fast only for a while, then at the normal pace.
    let mut s = Sim::new(&["gw1", "gw2"]);
    s.run_for(Duration::from_millis(1));
    s.run_for(LEASE);
    s.asleep.insert("gw1".into());
    if let Some(l) = s.c.lock.as_mut() {
        l.1 += LEASE * 10;
    }
    s.run_for(LEASE * 2);
    let before = s.c.probes["gw2"].len();
    s.run_for(LEASE * 5);
    let later = s.c.probes["gw2"].len() - before;
    assert!((29..=31).contains(&later), "{later} probes in 5 leases");
    assert_eq!(s.gw("gw2").m.role(), Role::Standby);
}

#[test]
fn a_planned_move_hands_over_and_the_old_owner_waits() {
    let mut s = Sim::new(&["gw1", "gw2"]);
    s.run_for(Duration::from_millis(1));
    assert_eq!(s.active(), vec!["gw1"]);
    s.run_for(LEASE);
    s.gw("gw1").log.clear();
    s.c.content = s.c.content.moved_to("gw2");
    s.run_for(LEASE / 3);
    let g1 = s.gw("gw1");
    assert_eq!(
        g1.log,
        vec![
            Action::Renew,
            Action::StopIo,
            Action::Close,
            Action::Release
        ]
    );
    s.run_for(LEASE);
    assert_eq!(s.active(), vec!["gw2"]);
    assert_eq!(s.c.content.epoch, 2);
    assert_eq!(s.c.content.preferred, None);
    // A clean hand-over fences nobody.
    assert!(s.c.blocklist.is_empty());
    assert!(!s.gw("gw1").log.contains(&Action::Acquire));
    s.run_for(LEASE * 5);
    assert_eq!(s.active(), vec!["gw2"]);
}

#[test]
fn a_move_to_a_gateway_that_is_down_falls_back() {
    let mut s = Sim::new(&["gw1", "gw2"]);
    s.run_for(Duration::from_millis(1));
    s.run_for(LEASE);
    s.c.content = s.c.content.moved_to("gw9");
    // gw1 sees the move at its next renew, a quarter of a lease later, and releases.
    s.run_for(LEASE / 4);
    assert_eq!(s.gw("gw1").m.role(), Role::Standby);
    let released = s.now;
    // Within the grace nobody takes the lease reserved for gw9.
    let grace = s_grace();
    s.run_for(grace - Duration::from_millis(10));
    assert!(s.active().is_empty());
    assert!(s.c.lock.is_none());
    s.run_for(LEASE);
    let active = s.active();
    assert_eq!(active.len(), 1, "{active:?}");
    assert!(s.now - released <= s_grace() + LEASE);
    assert_eq!(s.c.content.epoch, 2);
    assert_eq!(s.c.content.preferred, None);
}

fn s_grace() -> Duration {
    timing().move_grace()
}

#[test]
fn blocklisted_while_fencing_reconnects_and_becomes_standby() {
    let mut s = Sim::new(&["gw1"]);
    s.c.blocklist.insert("gw1".into());
    let now = s.now;
    let g = s.gw("gw1");
    g.m.handle_timeout(now);
    assert_eq!(g.m.poll_action(), Some(Action::Probe));
    g.m.handle_probed(
        now,
        Probe {
            held: false,
            content: LeaseContent::default(),
            stamp: None,
        },
    );
    assert_eq!(g.m.poll_action(), Some(Action::Acquire));
    g.m.handle_acquired(now, now, LeaseContent::default().taken_by("gw1"));
    assert_eq!(g.m.poll_action(), Some(Action::Fence { epoch: 1 }));
    g.m.handle_fenced(now, Err(Failure::Blocklisted));
    assert_eq!(g.m.poll_action(), Some(Action::Close));
    g.m.handle_closed(now);
    assert_eq!(g.m.role(), Role::Reconnecting);
    assert_eq!(g.m.poll_action(), Some(Action::Reconnect));
    g.m.handle_reconnected(now, Ok(()));
    assert_eq!(g.m.role(), Role::Standby);
    assert!(g.events().contains(&Event::Fenced));
}

#[test]
fn an_open_that_fails_releases_the_lease() {
    let now = Instant::now();
    let mut m = Machine::new("gw1", timing(), now);
    m.handle_timeout(now);
    assert_eq!(m.poll_action(), Some(Action::Probe));
    m.handle_probed(
        now,
        Probe {
            held: false,
            content: LeaseContent::default(),
            stamp: None,
        },
    );
    assert_eq!(m.poll_action(), Some(Action::Acquire));
    m.handle_acquired(now, now, LeaseContent::default().taken_by("gw1"));
    assert_eq!(m.poll_action(), Some(Action::Fence { epoch: 1 }));
    m.handle_fenced(now, Ok(()));
    assert_eq!(m.poll_action(), Some(Action::Open { epoch: 1 }));
    m.handle_opened(now, Err(Failure::Other("journal replay failed".into())));
    assert_eq!(m.poll_action(), Some(Action::Close));
    m.handle_closed(now);
    assert_eq!(m.poll_action(), Some(Action::Release));
    m.handle_released(now);
    assert_eq!(m.role(), Role::Standby);
    assert_eq!(m.poll_action(), None);
    // The same failure would repeat: the others get ten leases to take over first.
    m.handle_timeout(now + LEASE * 10 - Duration::from_millis(1));
    assert_eq!(m.poll_action(), None);
    m.handle_timeout(now + LEASE * 10);
    assert_eq!(m.poll_action(), Some(Action::Probe));
}

#[test]
fn an_acquire_answered_after_the_deadline_gives_the_lease_back() {
    let now = Instant::now();
    let mut m = Machine::new("gw1", timing(), now);
    m.handle_timeout(now);
    assert_eq!(m.poll_action(), Some(Action::Probe));
    m.handle_probed(
        now,
        Probe {
            held: false,
            content: LeaseContent::default(),
            stamp: None,
        },
    );
    assert_eq!(m.poll_action(), Some(Action::Acquire));
    let late = now + LEASE;
    m.handle_acquired(late, now, LeaseContent::default().taken_by("gw1"));
    assert_eq!(m.poll_action(), Some(Action::Release));
    assert!(!m.may_serve(late));
    m.handle_released(late);
    assert_eq!(m.role(), Role::Standby);
}

#[test]
fn a_slow_pool_open_does_not_delay_renews() {
    let now = Instant::now();
    let mut m = Machine::new("gw1", timing(), now);
    m.handle_timeout(now);
    assert_eq!(m.poll_action(), Some(Action::Probe));
    m.handle_probed(
        now,
        Probe {
            held: false,
            content: LeaseContent::default(),
            stamp: None,
        },
    );
    assert_eq!(m.poll_action(), Some(Action::Acquire));
    let c = LeaseContent::default().taken_by("gw1");
    m.handle_acquired(now, now, c.clone());
    assert_eq!(m.poll_action(), Some(Action::Fence { epoch: 1 }));
    m.handle_fenced(now, Ok(()));
    assert_eq!(m.poll_action(), Some(Action::Open { epoch: 1 }));
    // Journal replay takes two leases; renews go on meanwhile.
    let mut t = now;
    for _ in 0..8 {
        t = m.poll_timeout().expect("a renew is due");
        m.handle_timeout(t);
        assert_eq!(m.poll_action(), Some(Action::Renew));
        m.handle_renewed(t, t, c.clone());
        assert_eq!(m.role(), Role::Opening);
    }
    assert_eq!(t, now + LEASE * 2);
    m.handle_opened(t, Ok(()));
    assert_eq!(m.poll_action(), Some(Action::Serve { epoch: 1 }));
    assert!(m.may_serve(t));
    let took = std::iter::from_fn(|| m.poll_event()).find_map(|e| match e {
        Event::TookOver { duration, .. } => Some(duration),
        _ => None,
    });
    assert_eq!(took, Some(LEASE * 2));
}

#[test]
fn shutdown_of_the_owner_stops_io_closes_and_releases() {
    let mut s = Sim::new(&["gw1"]);
    s.run_for(Duration::from_millis(1));
    let now = s.now;
    let g = s.gw("gw1");
    g.log.clear();
    g.m.shutdown(now);
    s.drive_one("gw1");
    let g = s.gw("gw1");
    assert_eq!(g.log, vec![Action::StopIo, Action::Close, Action::Release]);
    assert_eq!(g.m.role(), Role::Stopped);
    assert!(s.c.lock.is_none());
}

#[test]
fn a_standby_that_cannot_reach_the_cluster_keeps_probing_and_never_serves() {
    let mut s = Sim::new(&["gw1"]);
    s.gw("gw1").reachable = false;
    s.run_for(LEASE * 3);
    let g = s.gw("gw1");
    assert_eq!(g.m.role(), Role::Standby);
    assert!(g.log.iter().all(|a| *a == Action::Probe));
    // One at start, then one every probe interval.
    let every = timing().probe_every().as_millis();
    assert_eq!(g.log.len() as u128, 1 + (LEASE * 3).as_millis() / every);
}

#[test]
fn a_release_refused_as_blocklisted_reconnects() {
    let t0 = Instant::now();
    let (mut m, _) = active_machine(t0);
    // Frozen past the deadline; the new owner blocklisted this client meanwhile.
    let late = t0 + LEASE * 3;
    m.handle_timeout(late);
    assert_eq!(m.poll_action(), Some(Action::StopIo));
    assert_eq!(m.poll_action(), Some(Action::Close));
    m.handle_closed(late);
    assert_eq!(m.poll_action(), Some(Action::Release));
    m.handle_lease_failed(late, Failure::Blocklisted);
    assert_eq!(m.role(), Role::Reconnecting);
    assert_eq!(m.poll_action(), Some(Action::Reconnect));
    m.handle_reconnected(late, Ok(()));
    assert_eq!(m.role(), Role::Standby);
    assert!(std::iter::from_fn(|| m.poll_event()).any(|e| e == Event::Fenced));
}

/// Runs the simulation in `step`s until `until`, recording every change of `name`'s
/// [`Access`] (as seen after each input) and when the first change came.
fn accesses(
    s: &mut Sim,
    name: &str,
    until: Instant,
    step: Duration,
) -> (Vec<Access>, Option<Instant>) {
    s.gw(name).accesses = vec![s.gw(name).m.access()];
    let mut first_change = None;
    while s.now < until {
        s.run_for(step);
        if first_change.is_none() && s.gw(name).accesses.len() > 1 {
            first_change = Some(s.now);
        }
    }
    (s.gw(name).accesses.clone(), first_change)
}

#[test]
fn after_a_kill_the_standby_reports_the_owner_active_only_until_its_lease_expired() {
    let mut s = Sim::new(&["gw1", "gw2"]);
    s.run_for(Duration::from_millis(1));
    assert_eq!(s.active(), vec!["gw1"]);
    s.run_for(LEASE * 2);
    assert_eq!(s.gw("gw1").m.access(), Access::Active { epoch: 1 });
    let held = Access::Standby {
        owner: Some("gw1".into()),
        lease_held: true,
    };
    assert_eq!(s.gw("gw2").m.access(), held);
    s.asleep.insert("gw1".into());
    let expires = s.c.lock.as_ref().map(|l| l.1).expect("held");
    let step = Duration::from_millis(10);
    let end = s.now + LEASE * 3;
    let (states, stopped) = accesses(&mut s, "gw2", end, step);
    assert_eq!(
        states,
        vec![
            held,
            Access::TakingOver {
                from: Some("gw1".into())
            },
            Access::Active { epoch: 2 },
        ]
    );
    // The owner stops being reported active at the standby's first probe after the OSD
    // expired its lease: never before, at most a probe interval after.
    let stopped = stopped.expect("a change");
    assert!(stopped >= expires);
    assert!(stopped <= expires + timing().probe_every() + step);
}

#[test]
fn a_released_lease_shows_the_old_owner_transitioning_until_a_new_owner_serves() {
    let mut s = Sim::new(&["gw1", "gw2"]);
    s.run_for(Duration::from_millis(1));
    s.run_for(LEASE);
    // A move to a gateway that is down: gw1 releases, gw2 leaves the lease to gw9 for the
    // grace, then takes it.
    s.c.content = s.c.content.moved_to("gw9");
    s.run_for(LEASE / 3);
    assert_eq!(s.gw("gw1").m.role(), Role::Standby);
    // The old owner never names itself as the owner another group should show.
    assert_eq!(
        s.gw("gw1").m.access(),
        Access::Standby {
            owner: None,
            lease_held: false
        }
    );
    // gw1 goes away after releasing, so gw2 is the one to take over after the grace.
    s.asleep.insert("gw1".into());
    s.run_for(LEASE / 3);
    let gone = Access::Standby {
        owner: Some("gw1".into()),
        lease_held: false,
    };
    assert_eq!(s.gw("gw2").m.access(), gone);
    let end = s.now + s_grace() + LEASE;
    let (states, _) = accesses(&mut s, "gw2", end, Duration::from_millis(10));
    assert_eq!(
        states,
        vec![
            gone,
            Access::TakingOver {
                from: Some("gw1".into())
            },
            Access::Active { epoch: 2 },
        ]
    );
}

#[test]
fn an_owner_past_its_deadline_reports_transitioning_then_standby_never_active() {
    let mut s = Sim::new(&["gw1"]);
    s.run_for(Duration::from_millis(1));
    s.run_for(LEASE);
    assert_eq!(s.gw("gw1").m.access(), Access::Active { epoch: 1 });
    // The cluster stops answering: renews fail until the local deadline passes.
    s.gw("gw1").reachable = false;
    let end = s.now + LEASE * 2;
    let (states, _) = accesses(&mut s, "gw1", end, Duration::from_millis(10));
    assert_eq!(states[0], Access::Active { epoch: 1 });
    assert!(
        states[1..]
            .iter()
            .all(|a| !matches!(a, Access::Active { .. })),
        "{states:?}"
    );
    assert!(states.contains(&Access::Transitioning), "{states:?}");
    assert!(
        matches!(states.last(), Some(Access::Standby { .. })),
        "{states:?}"
    );
}

/// `pools[].prefer`: a free lease is left to the preferred gateway for the move grace
/// (gw1 probes first, in name order, yet gw2 takes the pool), but not once the preferred
/// gateway was the owner and died: the takeover then waits for nobody.
#[test]
fn a_free_lease_is_left_to_the_preferred_gateway_unless_it_was_the_last_owner() {
    let mut s = Sim::new(&["gw1", "gw2"]);
    let now = s.now;
    for name in ["gw1", "gw2"] {
        s.gw(name).m = Machine::new(name, timing(), now).with_prefer(Some("gw2".into()));
    }
    s.run_for(LEASE);
    assert_eq!(s.active(), vec!["gw2"]);
    assert_eq!(s.c.content.epoch, 1);
    // kill -9 gw2: gw1 takes over within the lease's expiry, not the move grace on top.
    s.asleep.insert("gw2".into());
    let killed = s.now;
    while s.gw("gw1").m.role() != Role::Active {
        s.run_for(LEASE / 6);
        assert!(
            s.now < killed + LEASE * 2,
            "the takeover waited for the dead preferred gateway"
        );
    }
    assert_eq!(s.c.content.epoch, 2);
}

/// A preferred gateway that is down does not keep the pool unserved: the others take it
/// after the move grace.
#[test]
fn a_preferred_gateway_that_is_down_delays_the_first_owner_by_the_move_grace_only() {
    let mut s = Sim::new(&["gw1"]);
    let now = s.now;
    s.gw("gw1").m = Machine::new("gw1", timing(), now).with_prefer(Some("gw9".into()));
    s.run_for(s_grace() - Duration::from_millis(10));
    assert!(s.active().is_empty());
    s.run_for(LEASE);
    assert_eq!(s.active(), vec!["gw1"]);
}
