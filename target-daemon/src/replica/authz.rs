//! What a paired peer may do here (decision 0024): the volumes it may name in a request
//! (`replication.peers[].volumes`, names or `*` patterns; none when absent), and the pool
//! space the volumes it replicates into may take (`replication.peers[].space_limit`).
//!
//! The pinned certificate says *who* connected (listener.rs); this module says *what* that
//! peer may touch. Every request kind names one local volume and is checked against the
//! allow-list before anything is read or created, so a peer cannot list, create, receive
//! into, prune or demote a volume it was not given. A refusal is logged with the peer's
//! name and counted in `lunar_replica_requests_refused_total{peer,reason}`.
//!
//! The space limit is measured with storage-core's accounting ([`Pool::footprint_bytes`]):
//! the chunks the peer's replica volumes own (snapshots included) plus what their
//! receives have staged. A receive is refused before its stream when the peer is at its
//! limit already, and the stream is read through [`Limited`], which never hands the
//! receive more bytes than the room left (a stream byte can allocate at most a byte), so
//! a transfer that would cross the limit stops there; the caller then drops its staging
//! and nothing of it stays.
//!
//! Several transfers of one peer share its limit: the room is the limit less the footprint
//! and less the bytes *every* receive of the peer was handed but has not applied yet (those
//! are not in the footprint), and each read computes that room, reads and counts what it
//! read under the peer's lock, as one step. Two concurrent streams therefore cannot both
//! spend the same room; together they overshoot the limit by at most one chunk per other
//! receive: a receive counts a record as applied once decoded, before its chunk is written
//! (and so in the footprint), and another's read in between counts that chunk in neither.

use std::collections::{BTreeMap, BTreeSet};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use parking_lot::Mutex;
use storage_core::stream::StreamProgress;
use storage_core::Pool;
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf, Take};

use super::link::Request;
use crate::config::ReplicationCfg;

/// Whether `name` matches `pattern`, where `*` matches any run of characters (possibly
/// empty) and every other character itself.
pub fn matches(pattern: &str, name: &str) -> bool {
    let p = pattern.as_bytes();
    let n = name.as_bytes();
    // Greedy match with backtracking to the last star: linear for one star, at most
    // len(pattern) * len(name) steps in all (both are at most 128 bytes).
    let (mut i, mut j) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while j < n.len() {
        if i < p.len() && p[i] == b'*' {
            star = Some((i, j));
            i += 1;
        } else if i < p.len() && p[i] == n[j] {
            i += 1;
            j += 1;
        } else if let Some((si, sj)) = star {
            i = si + 1;
            j = sj + 1;
            star = Some((si, sj + 1));
        } else {
            return false;
        }
    }
    p[i..].iter().all(|&c| c == b'*')
}

/// Room a receive may still fill: `limit` less what the peer uses now and what was read
/// from the stream but not applied yet.
pub fn room(limit: u64, used: u64, unapplied: u64) -> u64 {
    limit.saturating_sub(used.saturating_add(unapplied))
}

/// One peer's grants.
#[derive(Clone, Debug, Default)]
struct Grants {
    volumes: Vec<String>,
    space_limit: Option<u64>,
}

/// A request refused for a peer: answered as an error of `kind`.
#[derive(Debug)]
pub struct Refusal {
    /// Reply kind (`forbidden`, `space_limit`).
    pub kind: &'static str,
    /// For the operator of the sending side (shown in its `replica list`).
    pub message: String,
}

/// The peers' grants and what each has replicated into since this lunard started.
pub struct Authz {
    grants: BTreeMap<String, Grants>,
    /// Volumes each peer received into since start: counted in its space even before
    /// their relationship is visible to a concurrent transfer's start (only grows; a
    /// volume that is no longer the peer's counts nothing once it is gone, and over-counts
    /// at worst until the next restart).
    received: Mutex<BTreeMap<String, BTreeSet<String>>>,
    /// Per peer with a limit: its receives streaming now (see [`Flights`]).
    flights: Mutex<BTreeMap<String, Arc<Flights>>>,
}

/// A peer's receives streaming now, each with the bytes it was handed and its progress (what
/// it applied). The lock is held while a reader computes its room and reads, so the check
/// and the charge of a read are one step for all the peer's transfers.
#[derive(Default)]
struct Flights(Mutex<Vec<Arc<Flight>>>);

/// One receive's stream as its peer's budget sees it.
struct Flight {
    /// Bytes handed to the receive (changed under the peer's [`Flights`] lock only).
    handed: AtomicU64,
    progress: Arc<StreamProgress>,
}

impl Flight {
    /// Handed but not applied yet: not in the footprint, still reserved from the limit.
    fn unapplied(&self) -> u64 {
        self.handed
            .load(Ordering::Relaxed)
            .saturating_sub(self.progress.bytes.load(Ordering::Relaxed))
    }
}

/// Bytes handed but not applied yet, over all of a peer's receives.
fn unapplied(flights: &[Arc<Flight>]) -> u64 {
    flights
        .iter()
        .fold(0u64, |sum, f| sum.saturating_add(f.unapplied()))
}

impl Authz {
    /// The grants of `cfg`'s peers.
    pub fn new(cfg: &ReplicationCfg) -> Authz {
        let grants = cfg
            .peers
            .iter()
            .map(|p| {
                (
                    p.name.clone(),
                    Grants {
                        volumes: p.volumes.clone().unwrap_or_default(),
                        space_limit: p.space_limit.map(|b| b.0),
                    },
                )
            })
            .collect();
        Authz {
            grants,
            received: Mutex::new(BTreeMap::new()),
            flights: Mutex::new(BTreeMap::new()),
        }
    }

    /// Whether `peer` may use local volume `volume`.
    pub fn may_use(&self, peer: &str, volume: &str) -> bool {
        self.grants
            .get(peer)
            .is_some_and(|g| g.volumes.iter().any(|p| matches(p, volume)))
    }

    /// Checks the volumes a request names (one, or a group commit's members); a refusal
    /// is logged and counted.
    pub fn check(&self, peer: &str, req: &Request) -> Result<(), Refusal> {
        let (op, volumes): (&str, Vec<&String>) = match req {
            Request::Status { volume, .. } => ("status", vec![volume]),
            Request::Receive { volume, .. } => ("receive", vec![volume]),
            Request::Prune { volume, .. } => ("prune", vec![volume]),
            Request::Demote { volume, .. } => ("demote", vec![volume]),
            Request::CommitGroup { members, .. } => {
                ("commit_group", members.iter().map(|m| &m.volume).collect())
            }
            Request::DemoteGroup { members, .. } => {
                ("demote_group", members.iter().map(|m| &m.volume).collect())
            }
        };
        match volumes.into_iter().find(|v| !self.may_use(peer, v)) {
            None => Ok(()),
            Some(volume) => Err(refuse(
                peer,
                "volume",
                "forbidden",
                format!(
                    "peer {peer} may not replicate into volume {volume} (the {op} request is \
                     refused: replication.peers[{peer}].volumes on this lunard does not list it)"
                ),
            )),
        }
    }

    /// The space limit of `peer`, if any.
    pub fn space_limit(&self, peer: &str) -> Option<u64> {
        self.grants.get(peer).and_then(|g| g.space_limit)
    }

    /// Records that `peer` receives into `volume` (before its stream is read).
    pub fn note_receive(&self, peer: &str, volume: &str) {
        self.received
            .lock()
            .entry(peer.to_string())
            .or_default()
            .insert(volume.to_string());
    }

    /// The volumes whose space counts against `peer`: `recorded` (its replica volumes
    /// in state.json) and every volume it received into since start.
    fn volumes_of(&self, peer: &str, recorded: &BTreeSet<String>) -> Vec<String> {
        let mut all = recorded.clone();
        if let Some(r) = self.received.lock().get(peer) {
            all.extend(r.iter().cloned());
        }
        all.into_iter().collect()
    }

    /// Bytes `peer`'s volumes take in `pool` now.
    pub fn used(&self, peer: &str, pool: &Pool, recorded: &BTreeSet<String>) -> u64 {
        let v = self.volumes_of(peer, recorded);
        let refs: Vec<&str> = v.iter().map(String::as_str).collect();
        pool.footprint_bytes(&refs)
    }

    /// The receives of `peer` streaming now.
    fn flights_of(&self, peer: &str) -> Arc<Flights> {
        self.flights
            .lock()
            .entry(peer.to_string())
            .or_default()
            .clone()
    }

    /// Refuses a receive of `peer` that starts at or over its limit (counting what its
    /// other transfers in flight were handed and have not applied yet); otherwise the guard
    /// the stream is read through (no limit: a guard that never stops it).
    pub fn admit(
        self: &Arc<Self>,
        peer: &str,
        volume: &str,
        pool: Pool,
        recorded: BTreeSet<String>,
    ) -> Result<Guard, Refusal> {
        self.note_receive(peer, volume);
        let Some(limit) = self.space_limit(peer) else {
            return Ok(Guard {
                inner: None,
                exceeded: Arc::new(AtomicBool::new(false)),
            });
        };
        let flights = self.flights_of(peer);
        let used = {
            let in_flight = flights.0.lock();
            self.used(peer, &pool, &recorded)
                .saturating_add(unapplied(&in_flight))
        };
        if used >= limit {
            return Err(refuse(
                peer,
                "space_limit",
                "space_limit",
                limit_message(peer, volume, limit, used),
            ));
        }
        Ok(Guard {
            inner: Some(GuardInner {
                authz: self.clone(),
                peer: peer.to_string(),
                pool,
                recorded,
                limit,
                flights,
            }),
            exceeded: Arc::new(AtomicBool::new(false)),
        })
    }
}

fn limit_message(peer: &str, volume: &str, limit: u64, used: u64) -> String {
    format!(
        "peer {peer} may not use more than {limit} bytes of this lunard's pool \
         (replication.peers[{peer}].space_limit) and its volumes use {used}: the transfer \
         into {volume} is refused (raise the limit, or delete replica snapshots there)"
    )
}

fn refuse(peer: &str, reason: &str, kind: &'static str, message: String) -> Refusal {
    tracing::warn!(%peer, reason, "replication request refused: {message}");
    crate::metrics::global().replica_request_refused(peer, reason);
    Refusal { kind, message }
}

struct GuardInner {
    authz: Arc<Authz>,
    peer: String,
    pool: Pool,
    recorded: BTreeSet<String>,
    limit: u64,
    flights: Arc<Flights>,
}

/// A receive's space check, made before every read of its stream.
pub struct Guard {
    inner: Option<GuardInner>,
    exceeded: Arc<AtomicBool>,
}

impl Guard {
    /// `r` read through this guard; `progress` is the receive's (what it applied). The
    /// reader counts against its peer's budget until it is dropped.
    pub fn reader<R: AsyncRead + Unpin>(self, r: R, progress: Arc<StreamProgress>) -> Limited<R> {
        let flight = Arc::new(Flight {
            handed: AtomicU64::new(0),
            progress,
        });
        if let Some(g) = &self.inner {
            g.flights.0.lock().push(flight.clone());
        }
        Limited {
            inner: r.take(u64::MAX),
            guard: self.inner,
            exceeded: self.exceeded,
            flight,
        }
    }

    /// A flag that turns true when the guard stopped the stream.
    pub fn exceeded_flag(&self) -> Arc<AtomicBool> {
        self.exceeded.clone()
    }
}

/// The refusal of a receive its guard stopped (the caller dropped its staging).
pub fn stopped(peer: &str, volume: &str, limit: Option<u64>, used: u64) -> Refusal {
    refuse(
        peer,
        "space_limit",
        "space_limit",
        format!(
            "{} (the transfer was stopped when it reached the limit; nothing of it was kept)",
            limit_message(peer, volume, limit.unwrap_or(0), used)
        ),
    )
}

/// A stream reader that hands out at most the room left under the peer's space limit.
pub struct Limited<R> {
    inner: Take<R>,
    guard: Option<GuardInner>,
    exceeded: Arc<AtomicBool>,
    /// What this receive was handed and applied (listed in its peer's flights while a
    /// limit applies).
    flight: Arc<Flight>,
}

impl<R> Drop for Limited<R> {
    /// The transfer is over: what it applied is in the footprint (or dropped with its
    /// staging), and what it was handed no longer reserves room.
    fn drop(&mut self) {
        if let Some(g) = &self.guard {
            g.flights.0.lock().retain(|f| !Arc::ptr_eq(f, &self.flight));
        }
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for Limited<R> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let me = self.get_mut();
        let Some(g) = &me.guard else {
            return Pin::new(&mut me.inner).poll_read(cx, buf);
        };
        // Check and charge in one step for all the peer's transfers: the room is computed,
        // the read made (a poll, which does not block) and its bytes counted under the
        // peer's lock, so a concurrent transfer's read sees them reserved.
        let in_flight = g.flights.0.lock();
        let used = g.authz.used(&g.peer, &g.pool, &g.recorded);
        // A receive decodes and applies everything it was handed before it reads again, but
        // for a record split by the read boundary; the peer's other receives may hold more.
        let left = room(g.limit, used, unapplied(&in_flight));
        if left == 0 {
            me.exceeded.store(true, Ordering::Relaxed);
            return Poll::Ready(Err(std::io::Error::other(format!(
                "the space limit of peer {} is reached",
                g.peer
            ))));
        }
        me.inner.set_limit(left);
        let before = buf.filled().len();
        let r = Pin::new(&mut me.inner).poll_read(cx, buf);
        me.flight
            .handed
            .fetch_add((buf.filled().len() - before) as u64, Ordering::Relaxed);
        drop(in_flight);
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_names() {
        assert!(matches("prod", "prod"));
        assert!(!matches("prod", "prod2"));
        assert!(!matches("prod", "pro"));
        assert!(matches("prod-*", "prod-db"));
        assert!(matches("prod-*", "prod-"));
        assert!(!matches("prod-*", "prod"));
        assert!(!matches("prod-*", "test-prod-db"));
        assert!(matches("*", "anything"));
        assert!(matches("*-db", "prod-db"));
        assert!(!matches("*-db", "prod-db2"));
        assert!(matches("a*b*c", "axxbyyc"));
        assert!(matches("a*b*c", "abc"));
        assert!(!matches("a*b*c", "axxbyy"));
        assert!(matches("a**", "a"));
        assert!(matches("*a*a*a*", "aaa"));
        assert!(!matches("*a*a*a*", "aa"));
        // Backtracking: the first star must give back what the later literal needs.
        assert!(matches("*ab", "aab"));
        assert!(matches("v*.1", "vol.1.1"));
        // Case matters, as in LUN names.
        assert!(!matches("Prod", "prod"));
        assert!(!matches("", "x"));
    }

    #[test]
    fn room_is_what_is_left_and_never_wraps() {
        assert_eq!(room(100, 30, 20), 50);
        assert_eq!(room(100, 100, 0), 0);
        assert_eq!(room(100, 90, 20), 0);
        assert_eq!(room(100, u64::MAX, 1), 0);
        assert_eq!(room(u64::MAX, 0, 0), u64::MAX);
    }

    fn authz(volumes: Option<Vec<&str>>, limit: Option<u64>) -> Authz {
        let yaml = "peers:\n  - name: site-a\n    fingerprint: \"ab:cd:00:11:22:33:44:55:66:77:88:99:aa:bb:cc:dd:ee:ff:00:11:22:33:44:55:66:77:88:99:aa:bb:cc:dd\"\n";
        let mut cfg: ReplicationCfg = serde_yaml::from_str(yaml).unwrap();
        cfg.peers[0].volumes = volumes.map(|v| v.into_iter().map(String::from).collect());
        cfg.peers[0].space_limit = limit.map(crate::config::ByteSize);
        Authz::new(&cfg)
    }

    /// Reads `r` with 64 KiB reads until it fails (the limit) or ends: the bytes handed.
    async fn read_some<R: AsyncRead + Unpin>(r: &mut R, reads: usize) -> (u64, bool) {
        let mut buf = vec![0u8; 64 * 1024];
        let mut got = 0;
        for _ in 0..reads {
            match r.read(&mut buf).await {
                Ok(0) => return (got, false),
                Ok(n) => got += n as u64,
                Err(_) => return (got, true),
            }
        }
        (got, false)
    }

    /// Two transfers of one peer streaming at once, neither having applied what it read
    /// (so nothing of it is in the footprint yet): between them they are handed the limit
    /// and no more, where each alone would have been handed all of it; a third is refused
    /// at its start; and the room one held comes back when it ends.
    #[tokio::test]
    async fn concurrent_receives_of_a_peer_share_its_limit() {
        const LIMIT: u64 = 1 << 20;
        let dir = tempfile::tempdir().expect("tempdir");
        let opts = storage_core::PoolOptions {
            chunk_size: 64 * 1024,
            capacity_bytes: Some(64 << 20),
            soft_threshold_pct: None,
        };
        let pool = Pool::create(dir.path(), &opts).await.expect("pool");
        let a = Arc::new(authz(Some(vec!["*"]), Some(LIMIT)));
        let admit = |v: &str| a.admit("site-a", v, pool.clone(), BTreeSet::new());
        let (g1, g2) = (
            admit("v1").expect("first admitted"),
            admit("v2").expect("second admitted"),
        );
        let (f1, f2) = (g1.exceeded_flag(), g2.exceeded_flag());
        let src = vec![7u8; 4 * LIMIT as usize];
        let mut r1 = g1.reader(&src[..], Arc::new(StreamProgress::default()));
        let mut r2 = g2.reader(&src[..], Arc::new(StreamProgress::default()));
        // Interleaved: each takes a few reads in turn until both are stopped.
        let (mut got1, mut got2) = (0, 0);
        let (mut stop1, mut stop2) = (false, false);
        while !(stop1 && stop2) {
            if !stop1 {
                let (n, s) = read_some(&mut r1, 3).await;
                (got1, stop1) = (got1 + n, s);
            }
            if !stop2 {
                let (n, s) = read_some(&mut r2, 3).await;
                (got2, stop2) = (got2 + n, s);
            }
        }
        assert_eq!(
            got1 + got2,
            LIMIT,
            "handed {got1} + {got2} under a {LIMIT} limit"
        );
        assert!(got1 > 0 && got2 > 0, "both streamed: {got1}, {got2}");
        assert!(f1.load(Ordering::Relaxed) && f2.load(Ordering::Relaxed));
        let e = admit("v3")
            .err()
            .expect("a third transfer is refused at its start");
        assert_eq!(e.kind, "space_limit");
        // The first transfer ends (its staging dropped): its reservation goes with it.
        drop(r1);
        let (n, stopped) = read_some(&mut r2, 1000).await;
        assert!(stopped, "the second is stopped at the limit again");
        assert_eq!(n, got1, "the second gets the room the first held");
    }

    fn status(volume: &str) -> Request {
        Request::Status {
            version: 1,
            relationship: "r".into(),
            volume: volume.into(),
            origin: None,
        }
    }

    #[test]
    fn requests_name_only_granted_volumes() {
        let a = authz(Some(vec!["prod-*", "db"]), None);
        assert!(a.check("site-a", &status("prod-1")).is_ok());
        assert!(a.check("site-a", &status("db")).is_ok());
        let e = a.check("site-a", &status("secret")).unwrap_err();
        assert_eq!(e.kind, "forbidden");
        assert!(
            e.message
                .contains("peer site-a may not replicate into volume secret"),
            "{}",
            e.message
        );
        // Another peer (not configured) gets nothing; nor does a peer without volumes.
        assert!(a.check("site-z", &status("db")).is_err());
        assert!(authz(None, None).check("site-a", &status("db")).is_err());
        assert!(authz(Some(vec![]), None)
            .check("site-a", &status("db"))
            .is_err());
        // A group commit is refused when any one member is not granted.
        let commit = |vols: &[&str]| Request::CommitGroup {
            version: 2,
            relationship: "g".into(),
            members: vols
                .iter()
                .map(|v| super::super::link::GroupCommitMember {
                    relationship: format!("g.{v}"),
                    volume: (*v).into(),
                    snapshot_uuid: uuid::Uuid::nil(),
                })
                .collect(),
            as_of_ms: 0,
        };
        assert!(a.check("site-a", &commit(&["prod-1", "db"])).is_ok());
        let e = a
            .check("site-a", &commit(&["prod-1", "secret", "db"]))
            .unwrap_err();
        assert!(e.message.contains("volume secret"), "{}", e.message);
        let demote = Request::Demote {
            version: 1,
            relationship: "r".into(),
            volume: "other".into(),
            source_volume: "db".into(),
            common: "s".into(),
        };
        assert!(
            a.check("site-a", &demote).is_err(),
            "the local volume counts"
        );
        // A group's demotion names every member's local volume: one not granted refuses it.
        let demote_group = |vols: &[&str]| Request::DemoteGroup {
            version: 2,
            relationship: "g".into(),
            members: vols
                .iter()
                .map(|v| super::super::link::DemoteMember {
                    volume: (*v).into(),
                    source_volume: "elsewhere".into(),
                    common: "s".into(),
                })
                .collect(),
        };
        assert!(a.check("site-a", &demote_group(&["prod-1", "db"])).is_ok());
        let e = a
            .check("site-a", &demote_group(&["db", "secret"]))
            .unwrap_err();
        assert!(e.message.contains("volume secret"), "{}", e.message);
    }
}
