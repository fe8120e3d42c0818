//! The replication service of one lunard: its identity and peers, the listener's request
//! handler (the replica side), and one task per source relationship that runs the
//! [`Schedule`] machine's cycles: snapshot, increment from the newest common snapshot
//! (the first time: full, or from a clone's origin when the peer has it, see `base.rs`;
//! resumed with the receiver's token after a cut), retention on both sides.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use parking_lot::Mutex;
use storage_core::stream::{ResumeToken, StreamProgress};
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::sync::Notify;

use super::authz::Authz;
use super::bandwidth::Throttled;
use super::base;
use super::identity::{load_cert, Fingerprint, Identity};
use super::link::{
    read_line, write_line, DemoteMember, GroupCommitMember, Keep, Located, Reply, Request,
    SnapEntry, GROUP_PROTOCOL_VERSION, PROTOCOL_VERSION, SUPPORTED_VERSIONS,
};
use super::listener::{self, connect, ClientConn, Handler, ListenerCfg, ServerConn};
use super::progress::{LiveTransfer, TransferProgress};
use super::retention::{
    newest_common, newest_common_group, snapshot_name, to_delete, MemberSnaps, Snap,
};
use super::schedule::{Action, Phase, Schedule, Transfer};
use super::tls::{client_config, server_config, PeerSet};
use crate::config::ReplicationCfg;
use crate::lunmgr::replicas::GroupDemotion;
use crate::lunmgr::state::{GroupMember, ReplicaRecord, ReplicaRole, TransferRecord};
use crate::lunmgr::{LunManager, MgrError};

/// A trusted peer.
#[derive(Clone, Debug)]
struct Peer {
    address: Option<String>,
    fingerprint: Fingerprint,
}

/// A running source relationship.
struct Running {
    sched: Arc<Mutex<Schedule>>,
    wake: Arc<Notify>,
    task: tokio::task::JoinHandle<()>,
}

/// What `lunarctl replica list` shows of one relationship.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct RelationshipView {
    /// The persisted record.
    #[serde(flatten)]
    pub record: ReplicaRecord,
    /// `idle`, `transferring`, `paused`, `error`, `stopped`.
    pub state: String,
    /// Milliseconds since the source snapshot the replica has was taken (both sides; on
    /// the replica side read against this side's clock).
    pub lag_ms: Option<u64>,
    /// The last error, until a cycle succeeds.
    pub last_error: Option<String>,
    /// The transfer running now: bytes so far, total, rate, time left.
    pub transfer: Option<TransferProgress>,
}

/// One lunard's replication.
pub struct Replication {
    mgr: Arc<LunManager>,
    identity: Identity,
    peers: BTreeMap<String, Peer>,
    /// What each peer may do here (decision 0024).
    authz: Arc<Authz>,
    timeout: Duration,
    idle: Duration,
    running: Mutex<BTreeMap<String, Running>>,
    /// Transfers in flight, sent or received, by relationship.
    progress: Mutex<BTreeMap<String, Arc<LiveTransfer>>>,
    /// The relationships this side receives (their lag at scrape time: the metrics callback
    /// cannot wait for the LUN manager's lock). Refreshed when one changes.
    replica_side: Mutex<Vec<ReplicaRecord>>,
    /// Group members' receives staged to their stream's END, by volume, waiting for their
    /// group's `CommitGroup`. Kept in memory only: after a restart the pool still lists
    /// them (with a token at the end) but none counts as complete until the sender
    /// resumes it, which re-reads its END trailer (and costs nothing else).
    staged: Mutex<BTreeMap<String, StagedMember>>,
}

/// A group member's receive staged to its end on this side.
struct StagedMember {
    /// The member's relationship record here.
    relationship: String,
    /// Its pool.
    pool: String,
    /// The source snapshot staged.
    snapshot_uuid: uuid::Uuid,
    /// Stream bytes, kind and duration (the member's `last_transfer` once committed).
    bytes: u64,
    kind: String,
    duration_ms: u64,
    /// The handle the group commit consumes.
    receive: storage_core::Receive,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Replication {
    /// Loads the identity and peers of `cfg` (paths relative to `data_dir`), binds the
    /// listener if `listen` is set, and starts the source relationships' tasks. Returns
    /// the service and the listener's bound address.
    pub async fn start(
        mgr: Arc<LunManager>,
        cfg: &ReplicationCfg,
        data_dir: &Path,
        shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> anyhow::Result<(Arc<Replication>, Option<std::net::SocketAddr>)> {
        let abs = |p: &Path| {
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                data_dir.join(p)
            }
        };
        let identity = Identity::load(&abs(&cfg.identity.cert), &abs(&cfg.identity.key))
            .context("replication identity (create it with `lunarctl replica identity create`)")?;
        let mut peers = BTreeMap::new();
        for p in &cfg.peers {
            let fingerprint = match (&p.fingerprint, &p.certificate) {
                (Some(fp), _) => Fingerprint::parse(fp)
                    .map_err(|m| anyhow!("replication peer {}: {m}", p.name))?,
                (None, Some(c)) => Fingerprint::of(
                    &load_cert(&abs(c)).with_context(|| format!("replication peer {}", p.name))?,
                ),
                (None, None) => bail!("replication peer {}: no fingerprint or certificate", p.name),
            };
            peers.insert(
                p.name.clone(),
                Peer {
                    address: p.address.clone(),
                    fingerprint,
                },
            );
        }
        let svc = Arc::new(Replication {
            mgr,
            identity,
            peers,
            authz: Arc::new(Authz::new(cfg)),
            timeout: cfg.handshake_timeout.0,
            idle: cfg.idle_timeout.0,
            running: Mutex::new(BTreeMap::new()),
            progress: Mutex::new(BTreeMap::new()),
            replica_side: Mutex::new(Vec::new()),
            staged: Mutex::new(BTreeMap::new()),
        });
        for w in cfg.warnings() {
            tracing::warn!("{w}");
        }
        let mut bound = None;
        if let Some(addr) = cfg.listen {
            let set = PeerSet::new(svc.peers.iter().map(|(n, p)| (n.clone(), p.fingerprint)));
            let lcfg = ListenerCfg {
                tls: server_config(&svc.identity, set.clone())?,
                peers: set,
                max_connections: cfg.max_connections,
                handshake_timeout: cfg.handshake_timeout.0,
            };
            let l = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("replication listener on {addr}"))?;
            bound = listener::local_addr(&l);
            tracing::info!(addr = ?bound, fingerprint = %svc.identity.fingerprint(), "replication listener up");
            let handler: Arc<dyn Handler> = svc.clone();
            tokio::spawn(listener::run(l, lcfg, handler, shutdown));
        }
        for rec in svc.mgr.replica_records().await {
            if rec.role == ReplicaRole::Source {
                svc.spawn(&rec);
            }
        }
        svc.refresh_replica_side().await;
        let weak = Arc::downgrade(&svc);
        crate::metrics::global().set_replica_source(Arc::new(move || {
            weak.upgrade().map(|s| s.samples()).unwrap_or_default()
        }));
        Ok((svc, bound))
    }

    /// This lunard's fingerprint.
    pub fn fingerprint(&self) -> Fingerprint {
        self.identity.fingerprint()
    }

    fn samples(&self) -> Vec<crate::metrics::ReplicaSample> {
        let now = now_ms();
        let progress = self.progress.lock();
        let bytes = |name: &str| {
            progress
                .get(name)
                .map(|t| t.progress.bytes.load(Ordering::Relaxed))
        };
        let size = |name: &str| progress.get(name).and_then(|t| t.total_bytes);
        let mut out: Vec<_> = self
            .running
            .lock()
            .iter()
            .map(|(name, r)| {
                let s = r.sched.lock();
                crate::metrics::ReplicaSample {
                    relationship: name.clone(),
                    lag_seconds: Some(s.lag_ms(now) as f64 / 1000.0),
                    schedule_seconds: s.every_ms() as f64 / 1000.0,
                    state: s.phase().gauge(),
                    last_transfer_seconds: s.last_transfer().map(|t| t.duration_ms as f64 / 1000.0),
                    transfer_bytes: bytes(name),
                    transfer_size_bytes: size(name),
                }
            })
            .collect();
        // The replica side: the lag an operator at the DR site watches (it keeps growing
        // when the source is gone), and the transfer being received.
        for r in self.replica_side.lock().iter() {
            if out.iter().any(|s| s.relationship == r.name) {
                continue;
            }
            out.push(crate::metrics::ReplicaSample {
                relationship: r.name.clone(),
                lag_seconds: r
                    .replicated_as_of_ms
                    .map(|t| now.saturating_sub(t) as f64 / 1000.0),
                schedule_seconds: r.every_secs as f64,
                state: if progress.contains_key(&r.name) {
                    Phase::Transferring.gauge()
                } else {
                    Phase::Stopped.gauge()
                },
                last_transfer_seconds: r
                    .last_transfer
                    .as_ref()
                    .map(|t| t.duration_ms as f64 / 1000.0),
                transfer_bytes: bytes(&r.name),
                transfer_size_bytes: None,
            });
        }
        out
    }

    /// Reloads the relationships this side receives (see `replica_side`).
    async fn refresh_replica_side(&self) {
        let recs: Vec<ReplicaRecord> = self
            .mgr
            .replica_records()
            .await
            .into_iter()
            .filter(|r| r.role == ReplicaRole::Replica)
            .collect();
        *self.replica_side.lock() = recs;
    }

    /// The volumes `peer` replicates into this side.
    async fn replicated_from(&self, peer: &str) -> Vec<String> {
        self.mgr
            .replica_records()
            .await
            .into_iter()
            .filter(|r| r.role == ReplicaRole::Replica && r.peer == peer)
            .map(|r| r.volume)
            .collect()
    }

    fn spawn(self: &Arc<Self>, rec: &ReplicaRecord) {
        let sched = Arc::new(Mutex::new(Schedule::new(
            rec.every_secs.saturating_mul(1000),
            rec.created_unix.saturating_mul(1000),
            rec.replicated_as_of_ms,
            rec.paused,
            now_ms(),
        )));
        let wake = Arc::new(Notify::new());
        let me = self.clone();
        let name = rec.name.clone();
        let (s2, w2) = (sched.clone(), wake.clone());
        let task = tokio::spawn(async move { me.drive(name, s2, w2).await });
        if let Some(old) = self
            .running
            .lock()
            .insert(rec.name.clone(), Running { sched, wake, task })
        {
            old.task.abort();
        }
    }

    /// The relationship's task: polls the schedule, runs cycles, sleeps until the next.
    async fn drive(self: Arc<Self>, name: String, sched: Arc<Mutex<Schedule>>, wake: Arc<Notify>) {
        loop {
            let now = now_ms();
            let (action, due) = {
                let mut s = sched.lock();
                (s.poll(now), s.poll_timeout())
            };
            if action == Some(Action::StartCycle) {
                let t0 = Instant::now();
                let r = self.cycle(&name).await;
                let end = now_ms();
                match r {
                    Ok(t) => {
                        crate::metrics::global().replica_transfer(&name, t.bytes, t0.elapsed());
                        sched.lock().cycle_done(end, t);
                    }
                    Err(e) => {
                        let msg = format!("{e:#}");
                        tracing::warn!(relationship = %name, error = %msg, "replication cycle failed; will retry");
                        crate::metrics::global().replica_error(&name);
                        sched.lock().cycle_failed(end, msg);
                    }
                }
                continue;
            }
            let sleep = due.map_or(Duration::from_secs(3600), |d| {
                Duration::from_millis(d.saturating_sub(now).max(1))
            });
            tokio::select! {
                _ = tokio::time::sleep(sleep) => {}
                _ = wake.notified() => {}
            }
        }
    }

    fn client(&self, peer: &str) -> anyhow::Result<(String, Arc<rustls::ClientConfig>)> {
        let p = self
            .peers
            .get(peer)
            .ok_or_else(|| anyhow!("peer {peer:?} is not in replication.peers"))?;
        let addr = p
            .address
            .clone()
            .ok_or_else(|| anyhow!("peer {peer:?} has no address in replication.peers"))?;
        Ok((addr, client_config(&self.identity, peer, p.fingerprint)?))
    }

    /// One request/reply exchange on a new connection.
    async fn ask(
        &self,
        peer: &str,
        req: &Request,
    ) -> anyhow::Result<(
        Reply,
        BufReader<tokio::io::ReadHalf<ClientConn>>,
        tokio::io::WriteHalf<ClientConn>,
    )> {
        let (addr, tls) = self.client(peer)?;
        let conn = connect(&addr, tls, self.timeout).await?;
        let (rd, mut wr) = tokio::io::split(conn);
        let mut rd = BufReader::new(rd);
        write_line(&mut wr, req)
            .await
            .context("sending the request")?;
        let reply: Reply = tokio::time::timeout(self.idle, read_line(&mut rd))
            .await
            .map_err(|_| anyhow!("peer {peer} did not answer within {:?}", self.idle))??;
        if let Reply::Error { kind, message, .. } = &reply {
            bail!("peer {peer} refused ({kind}): {message}");
        }
        Ok((reply, rd, wr))
    }

    /// What the peer holds of relationship `name`'s remote volume (its `Status` answer),
    /// and where it holds the snapshot `origin` if asked.
    async fn peer_status(
        &self,
        name: &str,
        rec: &ReplicaRecord,
        origin: Option<uuid::Uuid>,
    ) -> anyhow::Result<PeerStatus> {
        let (reply, _, _) = self
            .ask(
                &rec.peer,
                &Request::Status {
                    version: version_for(rec),
                    relationship: name.into(),
                    volume: rec.remote_volume.clone(),
                    origin,
                },
            )
            .await?;
        let Reply::Status {
            exists,
            snapshots,
            resume_token,
            origin,
        } = reply
        else {
            bail!("peer {} answered Status with something else", rec.peer);
        };
        Ok(PeerStatus {
            exists,
            snapshots,
            resume_token,
            origin,
        })
    }

    /// One cycle of source relationship `name`.
    async fn cycle(&self, name: &str) -> anyhow::Result<Transfer> {
        let rec = self.mgr.replica_record(name).await?;
        if !rec.members.is_empty() {
            return self.cycle_group(name, rec).await;
        }
        let (_, pool) = self.mgr.replica_pool(&rec.volume).await?;
        let origin = base::clone_origin(&pool, &rec.volume);
        let PeerStatus {
            exists,
            snapshots: remote,
            resume_token,
            origin: located,
        } = self
            .peer_status(name, &rec, origin.as_ref().map(|o| o.uuid))
            .await?;
        let local: Vec<_> = pool.snapshots(Some(&rec.volume));
        let local_pairs: Vec<(String, uuid::Uuid)> =
            local.iter().map(|s| (s.name.clone(), s.uuid)).collect();
        let remote_uuids: Vec<uuid::Uuid> = remote.iter().map(|s| s.uuid).collect();
        let common = newest_common(&local_pairs, &remote_uuids);
        if exists && common.is_none() && resume_token.is_none() {
            bail!(
                "{}@{} exists but shares no snapshot with {}: replicating into it would need a full copy over its data (delete it on the peer, or choose another --remote-volume)",
                rec.remote_volume, rec.peer, rec.volume
            );
        }
        // Resume an interrupted transfer: the peer's token names its snapshot and base by
        // uuid. Otherwise (or when this side no longer has them) take a new snapshot.
        let resumed = resume_token
            .as_deref()
            .and_then(|t| match t.parse::<ResumeToken>() {
                Ok(tok) => base::resumed(&tok, &local_pairs, origin.as_ref()),
                Err(e) => {
                    tracing::warn!(relationship = %name, error = %e, "the peer's resume token does not parse: sending anew");
                    None
                }
            });
        if resume_token.is_some() && resumed.is_none() {
            tracing::warn!(relationship = %name, "the peer holds an interrupted transfer of a snapshot this side no longer has: sending a new one (if the peer refuses it, abort its staged receive there: lunarctl replica receive-abort)");
        }
        let (snap, from, token, as_of_ms) = match resumed {
            Some((snap, from)) => {
                let taken_ms = local
                    .iter()
                    .find(|s| s.name == snap)
                    .map_or(0, |s| s.created_unix.saturating_mul(1000));
                (snap, from, resume_token.clone(), taken_ms)
            }
            None => {
                let taken: Vec<String> = local.iter().map(|s| s.name.clone()).collect();
                let n = snapshot_name(now_ms() / 1000, &taken);
                // The snapshot holds every write acknowledged before this instant: the
                // replica's data will be as of then (the lag, to the millisecond).
                let taken_ms = now_ms();
                self.mgr.snapshot_create(&rec.volume, &n).await?;
                let from = match &common {
                    Some(c) => Some(c.0.clone()),
                    None if origin.is_some() => {
                        match base::first_base(origin.as_ref(), located.as_ref()) {
                            Ok(o) => {
                                tracing::info!(relationship = %name, origin = %o.base_ref(), "a clone: its first transfer is an increment from its origin, which the peer holds");
                                Some(o.base_ref())
                            }
                            Err(why) => {
                                tracing::info!(relationship = %name, reason = %why, "a clone sent in full");
                                None
                            }
                        }
                    }
                    None => None,
                };
                (n, from, None, taken_ms)
            }
        };
        let out = self
            .send_one(name, &rec, &snap, from, token, as_of_ms, common.is_none())
            .await?;
        let (to_uuid, duration) = (out.to_uuid, out.duration);
        let plan_kind = out.kind.clone();
        let sent = &out;
        tracing::debug!(relationship = %name, received = out.received, "peer confirmed the transfer");
        let t = Transfer {
            snapshot_unix_ms: as_of_ms,
            bytes: sent.bytes,
            duration_ms: duration.as_millis() as u64,
        };
        self.mgr
            .replica_update(name, |r| {
                r.replicated_as_of_ms =
                    Some(t.snapshot_unix_ms.max(r.replicated_as_of_ms.unwrap_or(0)));
                r.last_transfer = Some(TransferRecord {
                    snapshot: snap.clone(),
                    bytes: sent.bytes,
                    duration_ms: t.duration_ms,
                    finished_unix: now_ms() / 1000,
                    kind: plan_kind.clone(),
                });
            })
            .await?;
        tracing::info!(relationship = %name, snapshot = %snap, bytes = sent.bytes, ?duration, "replication transfer done");
        // Retention, here then there; failures are logged and retried next cycle.
        if let Err(e) = self.prune_local(&rec, to_uuid).await {
            tracing::warn!(relationship = %name, error = %format!("{e:#}"), "local retention failed");
        }
        if let Err(e) = self
            .ask(
                &rec.peer,
                &Request::Prune {
                    version: PROTOCOL_VERSION,
                    relationship: name.into(),
                    volume: rec.remote_volume.clone(),
                    keep: rec.keep_remote,
                    common: to_uuid,
                    also_keep: base::clone_origins_of(&pool, &rec.volume)
                        .into_iter()
                        .map(|(_, u)| u)
                        .collect(),
                },
            )
            .await
        {
            tracing::warn!(relationship = %name, error = %format!("{e:#}"), "remote retention failed");
        }
        Ok(t)
    }

    /// One cycle of a consistency group's relationship `name` (decision 0027): one group
    /// snapshot of every member at one instant (or, when the peer holds staged receives of
    /// an earlier cycle's group snapshot that did not commit, that snapshot again); every
    /// member's stream sent on its own connection and staged on the peer without a commit;
    /// then one `CommitGroup` request that makes every member's snapshot visible in one
    /// journal block there. A failure anywhere before the commit leaves every member at
    /// the previous common snapshot on the peer; the next cycle resumes the staged ones.
    async fn cycle_group(&self, name: &str, rec: ReplicaRecord) -> anyhow::Result<Transfer> {
        let views: Vec<ReplicaRecord> = rec.members.iter().map(|m| member_view(&rec, m)).collect();
        let (_, pool) = self.mgr.replica_pool(&views[0].volume).await?;
        // What the peer holds of every member.
        let mut members = Vec::with_capacity(views.len());
        for v in &views {
            let origin = base::clone_origin(&pool, &v.volume);
            let status = self
                .peer_status(&v.name, v, origin.as_ref().map(|o| o.uuid))
                .await
                .with_context(|| format!("member {}", v.volume))?;
            let local: Vec<(String, uuid::Uuid)> = pool
                .snapshots(Some(&v.volume))
                .into_iter()
                .map(|s| (s.name, s.uuid))
                .collect();
            let token = status
                .resume_token
                .as_deref()
                .and_then(|t| t.parse::<ResumeToken>().ok())
                .and_then(|t| base::resumed(&t, &local, origin.as_ref()));
            members.push((origin, status, local, token));
        }
        // Resume the group snapshot an earlier cycle staged if every member still has it
        // here; otherwise take a new one.
        let resumable = members.iter().find_map(|(_, _, _, t)| {
            t.as_ref().map(|(snap, _)| snap.clone()).filter(|snap| {
                members
                    .iter()
                    .all(|(_, _, l, _)| l.iter().any(|(n, _)| n == snap))
            })
        });
        let (snap, as_of_ms) = match resumable {
            Some(snap) => {
                let taken_ms = pool
                    .snapshots(Some(&views[0].volume))
                    .into_iter()
                    .find(|s| s.name == snap)
                    .map_or(0, |s| s.created_unix.saturating_mul(1000));
                tracing::info!(relationship = %name, snapshot = %snap, "resuming the group snapshot staged on the peer");
                (snap, taken_ms)
            }
            None => {
                let taken: Vec<String> = members
                    .iter()
                    .flat_map(|(_, _, l, _)| l.iter().map(|(n, _)| n.clone()))
                    .collect();
                let n = snapshot_name(now_ms() / 1000, &taken);
                let taken_ms = now_ms();
                // One instant for every member (`Pool::snapshot_group`).
                self.mgr.cg_snapshot(&rec.volume, &n).await?;
                (n, taken_ms)
            }
        };
        // Every member's stream, staged on the peer.
        let mut commit = Vec::with_capacity(views.len());
        let (mut bytes, mut kinds) = (0u64, Vec::new());
        let t0 = Instant::now();
        for (v, (origin, status, local, token)) in views.iter().zip(&members) {
            let remote: Vec<uuid::Uuid> = status.snapshots.iter().map(|s| s.uuid).collect();
            let common = newest_common(local, &remote);
            let (from, token) = match token {
                Some((s, from)) if *s == snap => (from.clone(), status.resume_token.clone()),
                _ => {
                    if status.resume_token.is_some() {
                        bail!(
                            "{}@{} holds an interrupted transfer of another snapshot than the group's {snap}: abort it there (lunarctl replica receive-abort --volume {})",
                            v.remote_volume, rec.peer, v.remote_volume
                        );
                    }
                    if status.exists && common.is_none() {
                        bail!(
                            "{}@{} exists but shares no snapshot with {}: replicating into it would need a full copy over its data (delete it on the peer, or map the member to another remote volume)",
                            v.remote_volume, rec.peer, v.volume
                        );
                    }
                    let from = match &common {
                        Some(c) => Some(c.0.clone()),
                        None => base::first_base(origin.as_ref(), status.origin.as_ref())
                            .ok()
                            .map(|o| o.base_ref()),
                    };
                    (from, None)
                }
            };
            let out = self
                .send_one(name, v, &snap, from, token, as_of_ms, common.is_none())
                .await
                .with_context(|| format!("member {}", v.volume))?;
            bytes += out.bytes;
            kinds.push(out.kind.clone());
            commit.push(GroupCommitMember {
                relationship: v.name.clone(),
                volume: v.remote_volume.clone(),
                snapshot_uuid: out.to_uuid,
            });
        }
        // All staged: one commit for all members there.
        let (reply, _, _) = self
            .ask(
                &rec.peer,
                &Request::CommitGroup {
                    version: GROUP_PROTOCOL_VERSION,
                    relationship: name.into(),
                    members: commit.clone(),
                    as_of_ms,
                },
            )
            .await
            .context("committing the group on the peer")?;
        if !matches!(reply, Reply::CommittedGroup { .. }) {
            bail!(
                "peer {} answered the group commit with something else",
                rec.peer
            );
        }
        let duration = t0.elapsed();
        let kind = if kinds.iter().all(|k| *k == kinds[0]) {
            kinds[0].clone()
        } else {
            "mixed".to_string()
        };
        let t = Transfer {
            snapshot_unix_ms: as_of_ms,
            bytes,
            duration_ms: duration.as_millis() as u64,
        };
        self.mgr
            .replica_update(name, |r| {
                r.replicated_as_of_ms =
                    Some(t.snapshot_unix_ms.max(r.replicated_as_of_ms.unwrap_or(0)));
                r.last_transfer = Some(TransferRecord {
                    snapshot: snap.clone(),
                    bytes,
                    duration_ms: t.duration_ms,
                    finished_unix: now_ms() / 1000,
                    kind: kind.clone(),
                });
            })
            .await?;
        tracing::info!(relationship = %name, snapshot = %snap, members = views.len(), bytes, ?duration, "group replication committed");
        // Retention: here a `repl-` snapshot goes only when it goes on every member; there
        // each member keeps the same count from the same group snapshot.
        if let Err(e) = self.prune_group_local(&rec, &commit).await {
            tracing::warn!(relationship = %name, error = %format!("{e:#}"), "local retention failed");
        }
        for (v, c) in views.iter().zip(&commit) {
            if let Err(e) = self
                .ask(
                    &rec.peer,
                    &Request::Prune {
                        version: GROUP_PROTOCOL_VERSION,
                        relationship: v.name.clone(),
                        volume: v.remote_volume.clone(),
                        keep: rec.keep_remote,
                        common: c.snapshot_uuid,
                        also_keep: base::clone_origins_of(&pool, &v.volume)
                            .into_iter()
                            .map(|(_, u)| u)
                            .collect(),
                    },
                )
                .await
            {
                tracing::warn!(relationship = %name, member = %v.volume, error = %format!("{e:#}"), "remote retention failed");
            }
        }
        Ok(t)
    }

    /// Local retention of a group relationship: the `repl-` snapshots each member would
    /// delete beyond `keep_local` (never the newest common one), deleted only where every
    /// member would delete that snapshot, so a group instant goes from all members or none.
    async fn prune_group_local(
        &self,
        rec: &ReplicaRecord,
        common: &[GroupCommitMember],
    ) -> anyhow::Result<Vec<String>> {
        let (_, pool) = self.mgr.replica_pool(&rec.members[0].volume).await?;
        let mut doomed: Option<std::collections::BTreeSet<String>> = None;
        for (m, c) in rec.members.iter().zip(common) {
            let origins = base::clone_origins_of(&pool, &m.volume);
            let snaps: Vec<Snap> = pool
                .snapshots(Some(&m.volume))
                .into_iter()
                .map(|s| Snap {
                    pinned: origins.iter().any(|(_, u)| *u == s.uuid),
                    name: s.name,
                    uuid: s.uuid,
                })
                .collect();
            let mine: std::collections::BTreeSet<String> =
                to_delete(&snaps, rec.keep_local, Some(c.snapshot_uuid))
                    .into_iter()
                    .collect();
            doomed = Some(match doomed {
                None => mine,
                Some(d) => d.intersection(&mine).cloned().collect(),
            });
        }
        let doomed = doomed.unwrap_or_default();
        for n in &doomed {
            for m in &rec.members {
                if let Err(e) = self.mgr.snapshot_delete(&m.volume, n).await {
                    tracing::info!(volume = %m.volume, snapshot = %n, error = %e, "retention kept a snapshot it could not delete");
                }
            }
        }
        Ok(doomed.into_iter().collect())
    }

    /// Sends `rec.volume@snap` (from `from`, resumed at `token`) to the peer's
    /// `rec.remote_volume`, its progress shown under relationship `name`. `rec` is a
    /// single LUN's relationship, or a member of a group's (`member_view`), whose stream
    /// the peer stages without committing it. `common_none`: the volumes share no snapshot
    /// (a clone's origin that cannot be the base is then sent in full).
    #[allow(clippy::too_many_arguments)]
    async fn send_one(
        &self,
        name: &str,
        rec: &ReplicaRecord,
        snap: &str,
        from: Option<String>,
        token: Option<String>,
        as_of_ms: u64,
        common_none: bool,
    ) -> anyhow::Result<SentOne> {
        let snap = snap.to_string();
        let (_, pool) = self.mgr.replica_pool(&rec.volume).await?;
        let (prepared, plan) = match self
            .mgr
            .replica_prepare_send(&rec.volume, &snap, from.as_deref(), token.as_deref())
            .await
        {
            Ok(p) => p,
            // A clone's origin that is no ancestor after all (the origin volume renamed and
            // another took its name): the first transfer goes in full.
            Err(e) if common_none && token.is_none() && from.is_some() => {
                tracing::warn!(relationship = %name, error = %e, "the clone's origin cannot be its base: sending in full");
                self.mgr
                    .replica_prepare_send(&rec.volume, &snap, None, None)
                    .await?
            }
            Err(e) => return Err(e.into()),
        };
        let total_bytes = prepared.stream_bytes()?;
        let to_uuid = pool
            .snapshots(Some(&rec.volume))
            .into_iter()
            .find(|s| s.name == snap)
            .map(|s| s.uuid)
            .ok_or_else(|| anyhow!("{}@{snap} disappeared", rec.volume))?;
        tracing::info!(relationship = %name, kind = %plan.kind, to = %plan.to, from = ?plan.from, start = plan.start_index, "replication transfer starting");
        let (reply, mut rd, wr) = self
            .ask(
                &rec.peer,
                &Request::Receive {
                    version: version_for(rec),
                    relationship: rec.name.clone(),
                    volume: rec.remote_volume.clone(),
                    source_volume: rec.volume.clone(),
                    every_secs: rec.every_secs,
                    keep: Some(Keep {
                        source: rec.keep_local,
                        replica: rec.keep_remote,
                    }),
                    as_of_ms: Some(as_of_ms),
                    stage_only: rec.group.is_some(),
                    group: rec.group.clone(),
                },
            )
            .await?;
        if !matches!(reply, Reply::Ready) {
            bail!("peer {} is not ready to receive", rec.peer);
        }
        let progress = Arc::new(StreamProgress::default());
        self.progress.lock().insert(
            name.to_string(),
            Arc::new(LiveTransfer::new(
                progress.clone(),
                Some(total_bytes),
                Some(snap.clone()),
                Some(plan.kind.clone()),
            )),
        );
        let t0 = Instant::now();
        let mut w = Throttled::new(wr, rec.bandwidth);
        let send = watchdog(self.idle, &progress, async {
            let s = prepared.write_to(&mut w, &progress).await?;
            w.flush().await?;
            anyhow::Ok(s)
        });
        // The reply is read while the stream goes out: a peer that stops the transfer (its
        // space limit, decision 0024) says why before it closes, and that reason, not a
        // broken pipe, is what the cycle reports.
        let (sent, reply) = send_and_confirm(send, &mut rd, self.idle).await;
        self.progress.lock().remove(name);
        if let Some(Ok(Reply::Error { kind, message, .. })) = &reply {
            bail!("peer {} could not receive ({kind}): {message}", rec.peer)
        }
        let sent = sent?;
        let reply: Reply =
            reply.ok_or_else(|| anyhow!("peer {} did not confirm the transfer", rec.peer))??;
        let bytes = match reply {
            Reply::Received { bytes, .. } => bytes,
            Reply::Error { kind, message, .. } => {
                bail!("peer {} could not receive ({kind}): {message}", rec.peer)
            }
            _ => bail!("peer {} answered the stream with something else", rec.peer),
        };
        Ok(SentOne {
            bytes: sent.bytes,
            received: bytes,
            kind: plan.kind,
            to_uuid,
            duration: t0.elapsed(),
        })
    }

    async fn prune_local(
        &self,
        rec: &ReplicaRecord,
        common: uuid::Uuid,
    ) -> anyhow::Result<Vec<String>> {
        prune(&self.mgr, &rec.volume, rec.keep_local, common, &[]).await
    }

    // ---- operator requests ----

    /// `replica create` (source side): records and starts it.
    pub async fn create(self: &Arc<Self>, rec: ReplicaRecord) -> anyhow::Result<ReplicaRecord> {
        if !self.peers.contains_key(&rec.peer) {
            bail!("peer {:?} is not in replication.peers", rec.peer);
        }
        let rec = self.mgr.replica_create(rec).await?;
        self.spawn(&rec);
        Ok(rec)
    }

    /// `replica list`.
    pub async fn list(&self) -> Vec<RelationshipView> {
        let now = now_ms();
        let recs = self.mgr.replica_records().await;
        let running = self.running.lock();
        let progress = self.progress.lock();
        recs.into_iter()
            .map(|record| {
                let r = running.get(&record.name).map(|r| r.sched.lock().clone());
                let transfer = progress.get(&record.name).map(|t| t.view());
                let replica = record.role == ReplicaRole::Replica;
                RelationshipView {
                    state: match &r {
                        Some(s) => s.phase().as_str(),
                        None if record.role == ReplicaRole::Source => "stopped",
                        None if replica && transfer.is_some() => "receiving",
                        None => record.role.as_str(),
                    }
                    .to_string(),
                    lag_ms: match &r {
                        Some(s) => Some(s.lag_ms(now)),
                        None if replica => {
                            record.replicated_as_of_ms.map(|t| now.saturating_sub(t))
                        }
                        None => None,
                    },
                    last_error: r.as_ref().and_then(|s| s.last_error().map(str::to_string)),
                    transfer,
                    record,
                }
            })
            .collect()
    }

    /// `replica pause` / `resume`.
    pub async fn set_paused(&self, name: &str, paused: bool) -> anyhow::Result<ReplicaRecord> {
        let rec = self.mgr.replica_update(name, |r| r.paused = paused).await?;
        if let Some(r) = self.running.lock().get(name) {
            if paused {
                r.sched.lock().pause();
            } else {
                r.sched.lock().resume(now_ms());
            }
            r.wake.notify_one();
        }
        Ok(rec)
    }

    /// `replica sync`: a cycle now.
    pub fn sync(&self, name: &str) -> anyhow::Result<()> {
        let running = self.running.lock();
        let r = running.get(name).ok_or_else(|| {
            anyhow!("relationship {name:?} is not a running source relationship here")
        })?;
        r.sched.lock().trigger(now_ms());
        r.wake.notify_one();
        Ok(())
    }

    /// Stops every relationship task (lunard shutting down; a transfer cut here resumes
    /// at the next start).
    pub fn stop_all(&self) {
        for (_, r) in std::mem::take(&mut *self.running.lock()) {
            r.task.abort();
        }
    }

    fn stop(&self, name: &str) {
        if let Some(r) = self.running.lock().remove(name) {
            r.task.abort();
        }
    }

    /// `replica delete`.
    pub async fn delete(&self, name: &str) -> anyhow::Result<ReplicaRecord> {
        self.stop(name);
        let r = self.mgr.replica_delete(name).await?;
        self.refresh_replica_side().await;
        Ok(r)
    }

    /// `replica promote` (replica side).
    pub async fn promote(&self, name: &str) -> anyhow::Result<ReplicaRecord> {
        // A group member staged for a commit that will not come now: its handle goes, so
        // the promotion drops the staging (the member keeps its last group snapshot).
        let members = self.mgr.replica_group_members(name).await;
        self.staged.lock().retain(|_, s| {
            s.relationship != name && !members.iter().any(|m| m.name == s.relationship)
        });
        let r = self.mgr.replica_promote(name).await?;
        self.refresh_replica_side().await;
        Ok(r)
    }

    /// `replica reverse` (on the promoted side, once the old source is back): the old
    /// source rolls back to the newest common snapshot and becomes the replica; this side
    /// becomes the source and sends increments from there.
    pub async fn reverse(self: &Arc<Self>, name: &str) -> anyhow::Result<ReplicaRecord> {
        if !self.mgr.replica_group_members(name).await.is_empty() {
            return self.reverse_group(name).await;
        }
        let rec = self.mgr.replica_record(name).await?;
        if !rec.members.is_empty() {
            bail!(
                "relationship {name:?} is the source of consistency group {} here: reverse runs on the promoted replica side",
                rec.volume
            );
        }
        if let Some(g) = &rec.group {
            bail!(
                "{name:?} is one member of group relationship {g:?}: reverse the whole group (`lunarctl replica reverse {g}`)"
            );
        }
        if rec.role != ReplicaRole::Promoted {
            bail!(
                "relationship {name:?} is the {} here: reverse runs on the promoted replica",
                rec.role.as_str()
            );
        }
        let (_, pool) = self.mgr.replica_pool(&rec.volume).await?;
        let remote = self.peer_status(name, &rec, None).await?.snapshots;
        let local: Vec<(String, uuid::Uuid)> = pool
            .snapshots(Some(&rec.volume))
            .into_iter()
            .map(|s| (s.name, s.uuid))
            .collect();
        let remote_uuids: Vec<uuid::Uuid> = remote.iter().map(|s| s.uuid).collect();
        let (_, uuid) = newest_common(&local, &remote_uuids).ok_or_else(|| {
            anyhow!(
                "{} and {}@{} share no snapshot: a reverse would need a full copy",
                rec.volume,
                rec.remote_volume,
                rec.peer
            )
        })?;
        let remote_name = remote
            .iter()
            .find(|s| s.uuid == uuid)
            .map(|s| s.name.clone())
            .ok_or_else(|| anyhow!("common snapshot vanished"))?;
        self.ask(
            &rec.peer,
            &Request::Demote {
                version: PROTOCOL_VERSION,
                relationship: name.into(),
                volume: rec.remote_volume.clone(),
                source_volume: rec.volume.clone(),
                common: remote_name.clone(),
            },
        )
        .await?;
        let rec = self
            .mgr
            .replica_update(name, |r| {
                r.role = ReplicaRole::Source;
                r.paused = false;
                r.replicated_as_of_ms = None;
            })
            .await?;
        tracing::info!(relationship = %name, common = %remote_name, "replication reversed: this side is the source");
        self.spawn(&rec);
        Ok(rec)
    }

    /// `replica reverse` of a consistency group's relationship (on the side that promoted
    /// its members): the newest group snapshot every member has on both sides is the
    /// common point; the old source rolls every member back to it in one journal block and
    /// keeps them as replicas (`DemoteGroup`, all members or none); then this side's member
    /// records become one source record of the group and its task sends group increments
    /// from there. Everything this side needs is checked before the peer changes, so a
    /// refusal leaves both sides as they were.
    async fn reverse_group(self: &Arc<Self>, name: &str) -> anyhow::Result<ReplicaRecord> {
        let plan = self.mgr.replica_reverse_group(name, false).await?;
        let views: Vec<ReplicaRecord> =
            plan.members.iter().map(|m| member_view(&plan, m)).collect();
        let (_, pool) = self.mgr.replica_pool(&plan.members[0].volume).await?;
        let mut members = Vec::with_capacity(views.len());
        for v in &views {
            let status = self.peer_status(&v.name, v, None).await.with_context(|| {
                format!(
                    "asking {} for the snapshots of {} (the old source must be up and reachable for a reverse; nothing changed)",
                    plan.peer, v.remote_volume
                )
            })?;
            if !status.exists {
                bail!(
                    "{}@{} does not exist: a reverse needs the old source's members (nothing changed)",
                    v.remote_volume,
                    plan.peer
                );
            }
            members.push(MemberSnaps {
                local: pool
                    .snapshots(Some(&v.volume))
                    .into_iter()
                    .map(|s| (s.name, s.uuid))
                    .collect(),
                remote: status
                    .snapshots
                    .into_iter()
                    .map(|s| (s.name, s.uuid))
                    .collect(),
            });
        }
        let (here, there) = newest_common_group(&members).ok_or_else(|| {
            anyhow!(
                "the members of {name:?} share no group snapshot with {} (one every member has on both sides): a reverse would need a full copy (nothing changed)",
                plan.peer
            )
        })?;
        self.ask(
            &plan.peer,
            &Request::DemoteGroup {
                version: GROUP_PROTOCOL_VERSION,
                relationship: name.into(),
                members: plan
                    .members
                    .iter()
                    .map(|m| DemoteMember {
                        volume: m.remote_volume.clone(),
                        source_volume: m.volume.clone(),
                        common: there.clone(),
                    })
                    .collect(),
            },
        )
        .await
        .with_context(|| {
            format!(
                "demoting the group's members on {} (nothing changed on either side: the group stays promoted here)",
                plan.peer
            )
        })?;
        let rec = self
            .mgr
            .replica_reverse_group(name, true)
            .await
            .map_err(|e| {
                // Not the bare manager error: the admin reply would drop this context.
                anyhow!(
                    "{} holds the group as its replica now, but this side could not become its source ({e}): fix the cause and run the reverse again",
                    plan.peer
                )
            })?;
        self.refresh_replica_side().await;
        tracing::info!(relationship = %name, common = %here, peer_common = %there, members = rec.members.len(), "group replication reversed: this side is the source");
        self.spawn(&rec);
        Ok(rec)
    }

    // ---- the replica side: requests from peers ----

    async fn answer(
        self: &Arc<Self>,
        peer: &str,
        req: Request,
        rd: &mut BufReader<tokio::io::ReadHalf<ServerConn>>,
        wr: &mut tokio::io::WriteHalf<ServerConn>,
    ) -> Result<Reply, MgrErrorReply> {
        if !SUPPORTED_VERSIONS.contains(&req.version()) {
            return Err(MgrErrorReply::new(
                "protocol",
                format!(
                    "replication protocol {}..={} here, {} there: upgrade the older lunard",
                    SUPPORTED_VERSIONS.start(),
                    SUPPORTED_VERSIONS.end(),
                    req.version()
                ),
            ));
        }
        if req.version() < req.needs_version() {
            return Err(MgrErrorReply::new(
                "protocol",
                format!(
                    "a consistency group's request needs replication protocol {}, the peer sent {}",
                    req.needs_version(),
                    req.version()
                ),
            ));
        }
        self.authz
            .check(peer, &req)
            .map_err(|r| MgrErrorReply::new(r.kind, r.message))?;
        match req {
            Request::Status {
                relationship,
                volume,
                origin,
                ..
            } => {
                self.check_peer(&relationship, peer, &volume).await?;
                let (_, pool) = self.mgr.replica_pool(&volume).await?;
                let exists = pool.volume_info(&volume).is_ok();
                let origin = match origin {
                    Some(u) => base::locate(&pool, &self.replicated_from(peer).await, u),
                    None => None,
                };
                let snapshots = pool
                    .snapshots(Some(&volume))
                    .into_iter()
                    .map(|s| SnapEntry {
                        name: s.name,
                        uuid: s.uuid,
                        created_unix: s.created_unix,
                    })
                    .collect();
                let resume_token = storage_core::stream::pending_receives(&pool)
                    .into_iter()
                    .find(|p| p.volume == volume)
                    .map(|p| p.token.to_string());
                Ok(Reply::Status {
                    exists,
                    snapshots,
                    resume_token,
                    origin,
                })
            }
            Request::Receive {
                relationship,
                volume,
                source_volume,
                every_secs,
                keep,
                as_of_ms,
                stage_only,
                group,
                ..
            } => {
                // No record yet: this is the relationship's first transfer here, and a
                // refusal at the space limit drops the record it creates below.
                let first = self
                    .check_peer(&relationship, peer, &volume)
                    .await?
                    .is_none();
                // A new stream into a volume replaces what was staged there (the same
                // snapshot resumed, or another one the receive refuses by itself).
                self.staged.lock().remove(&volume);
                let (_, pool) = self.mgr.replica_pool(&volume).await?;
                let recorded = self.peer_volumes(peer).await;
                let guard = self
                    .authz
                    .admit(peer, &volume, pool.clone(), recorded.clone())
                    .map_err(|r| MgrErrorReply::new(r.kind, r.message))?;
                let stopped = guard.exceeded_flag();
                // Seen from here: this side keeps what the source calls remote. A peer that
                // does not say leaves them 0 (unknown).
                self.mgr
                    .replica_adopt(ReplicaRecord {
                        name: relationship.clone(),
                        role: ReplicaRole::Replica,
                        volume: volume.clone(),
                        pool: String::new(),
                        peer: peer.to_string(),
                        remote_volume: source_volume,
                        every_secs,
                        keep_local: keep.map_or(0, |k| k.replica),
                        keep_remote: keep.map_or(0, |k| k.source),
                        bandwidth: None,
                        paused: false,
                        created_unix: now_ms() / 1000,
                        replicated_as_of_ms: None,
                        last_transfer: None,
                        group: group.clone(),
                        members: Vec::new(),
                    })
                    .await?;
                // The first receive of a relationship creates its record here: the replica
                // side's metrics show it (and the transfer below) from now, not only after.
                self.refresh_replica_side().await;
                write_line(wr, &Reply::Ready)
                    .await
                    .map_err(|e| MgrErrorReply::new("io", e.to_string()))?;
                // A clone stream may only be based on what this peer replicates here.
                let origins = self.replicated_from(peer).await;
                let progress = Arc::new(StreamProgress::default());
                self.progress.lock().insert(
                    relationship.clone(),
                    Arc::new(LiveTransfer::new(progress.clone(), None, None, None)),
                );
                let t0 = Instant::now();
                let stream = guard.reader(&mut *rd, progress.clone());
                let r = watchdog(self.idle, &progress, async {
                    Ok(if stage_only {
                        self.mgr
                            .replica_receive_staged(&volume, Some(origins), stream, &progress)
                            .await
                            .map(Got::Staged)
                    } else {
                        self.mgr
                            .replica_receive(None, &volume, Some(origins), stream, &progress)
                            .await
                            .map(Got::Committed)
                    })
                })
                .await;
                self.progress.lock().remove(&relationship);
                if stopped.load(Ordering::Relaxed) {
                    // Stopped at the space limit: drop what was staged, keep nothing.
                    let aborted = self.mgr.replica_receive_abort(None, &volume).await;
                    if let Err(e) = &aborted {
                        tracing::warn!(%peer, %volume, error = %e, "dropping a receive stopped at the space limit failed");
                    }
                    // The relationship's first transfer, refused with nothing kept: the
                    // record it created goes too, so a refused peer leaves no trace here
                    // (kept while its staging could not be dropped, to be resumed or
                    // aborted through it).
                    if first && aborted.is_ok() {
                        match self.mgr.replica_delete(&relationship).await {
                            Ok(_) => {
                                tracing::info!(%peer, %volume, relationship = %relationship, "first transfer refused at the space limit: its relationship record is dropped");
                                self.refresh_replica_side().await;
                            }
                            Err(e) => {
                                tracing::warn!(%peer, %volume, relationship = %relationship, error = %e, "dropping the record of a relationship refused at its first transfer failed");
                            }
                        }
                    }
                    let used = self.authz.used(peer, &pool, &recorded);
                    let limit = self.authz.space_limit(peer);
                    let r = super::authz::stopped(peer, &volume, limit, used);
                    return Err(MgrErrorReply::new(r.kind, r.message));
                }
                let got = match r {
                    Ok(Ok(g)) => g,
                    Ok(Err(e)) => return Err(e.into()),
                    Err(e) => return Err(MgrErrorReply::new("timeout", format!("{e:#}"))),
                };
                let got = match got {
                    Got::Committed(g) => g,
                    Got::Staged((pool, st)) => {
                        crate::metrics::global().replica_transfer(
                            &relationship,
                            st.bytes,
                            t0.elapsed(),
                        );
                        let spec = st.receive.spec();
                        let reply = Reply::Received {
                            snapshot: spec.snapshot.clone(),
                            kind: st.kind.as_str().to_string(),
                            bytes: st.bytes,
                        };
                        let member = StagedMember {
                            relationship: relationship.clone(),
                            pool,
                            snapshot_uuid: spec.snapshot_uuid,
                            bytes: st.bytes,
                            kind: st.kind.as_str().to_string(),
                            duration_ms: t0.elapsed().as_millis() as u64,
                            receive: st.receive,
                        };
                        self.staged.lock().insert(volume.clone(), member);
                        tracing::info!(%peer, relationship = %relationship, %volume, "group member staged; waiting for the group commit");
                        return Ok(reply);
                    }
                };
                crate::metrics::global().replica_transfer(&relationship, got.bytes, t0.elapsed());
                let _ = self
                    .mgr
                    .replica_update(&relationship, |r| {
                        // The source's snapshot time (an older peer does not say: the
                        // receive's end, which understates the lag by the transfer time).
                        r.replicated_as_of_ms = Some(as_of_ms.unwrap_or_else(now_ms));
                        r.last_transfer = Some(TransferRecord {
                            snapshot: got.snapshot.clone(),
                            bytes: got.bytes,
                            duration_ms: t0.elapsed().as_millis() as u64,
                            finished_unix: now_ms() / 1000,
                            kind: got.kind.clone(),
                        });
                    })
                    .await;
                self.refresh_replica_side().await;
                Ok(Reply::Received {
                    snapshot: got.snapshot,
                    kind: got.kind,
                    bytes: got.bytes,
                })
            }
            Request::CommitGroup {
                relationship,
                members,
                as_of_ms,
                ..
            } => {
                self.commit_group(peer, &relationship, members, as_of_ms)
                    .await
            }
            Request::Prune {
                relationship,
                volume,
                keep,
                common,
                also_keep,
                ..
            } => {
                let r = self.check_peer(&relationship, peer, &volume).await?;
                if r.is_none_or(|r| r.role != ReplicaRole::Replica) {
                    return Err(MgrErrorReply::new(
                        "invalid",
                        format!("{volume} is not a replica of relationship {relationship} here"),
                    ));
                }
                let deleted = prune(&self.mgr, &volume, keep, common, &also_keep)
                    .await
                    .map_err(|e| MgrErrorReply::new("internal", format!("{e:#}")))?;
                Ok(Reply::Pruned { deleted })
            }
            Request::Demote {
                relationship,
                volume,
                source_volume,
                common,
                ..
            } => {
                let r = self.check_peer(&relationship, peer, &volume).await?;
                if r.is_none() {
                    return Err(MgrErrorReply::new(
                        "not_found",
                        format!("no relationship {relationship} here"),
                    ));
                }
                self.stop(&relationship);
                self.mgr
                    .replica_demote(&relationship, peer, &volume, &source_volume, &common)
                    .await?;
                self.refresh_replica_side().await;
                Ok(Reply::Demoted)
            }
            Request::DemoteGroup {
                relationship,
                members,
                ..
            } => {
                if members.is_empty() {
                    return Err(MgrErrorReply::new(
                        "invalid",
                        format!("group {relationship}: a demotion names at least one member"),
                    ));
                }
                // The group's sender stops for the rollback; it starts again if this side
                // stays the source (a refusal changes nothing).
                self.stop(&relationship);
                let specs: Vec<GroupDemotion> = members
                    .into_iter()
                    .map(|m| GroupDemotion {
                        volume: m.volume,
                        source_volume: m.source_volume,
                        common: m.common,
                    })
                    .collect();
                let r = self
                    .mgr
                    .replica_demote_group(&relationship, peer, &specs)
                    .await;
                if let Err(e) = r {
                    if let Ok(rec) = self.mgr.replica_record(&relationship).await {
                        if rec.role == ReplicaRole::Source {
                            self.spawn(&rec);
                        }
                    }
                    return Err(e.into());
                }
                self.refresh_replica_side().await;
                Ok(Reply::Demoted)
            }
        }
    }

    /// `CommitGroup`: every member's receive staged to its end (in this process) is
    /// committed in one journal block; a member that is not staged (never sent, cut, or
    /// staged before a restart and not resumed since) refuses the whole commit and nothing
    /// changes.
    async fn commit_group(
        &self,
        peer: &str,
        group: &str,
        members: Vec<GroupCommitMember>,
        as_of_ms: u64,
    ) -> Result<Reply, MgrErrorReply> {
        if members.is_empty() {
            return Err(MgrErrorReply::new(
                "invalid",
                format!("group {group}: a commit names at least one member"),
            ));
        }
        for m in &members {
            let r = self.check_peer(&m.relationship, peer, &m.volume).await?;
            if r.is_none_or(|r| r.role != ReplicaRole::Replica || r.group.as_deref() != Some(group))
            {
                return Err(MgrErrorReply::new(
                    "invalid",
                    format!(
                        "{} is not a replica member of group relationship {group} here",
                        m.volume
                    ),
                ));
            }
        }
        let taken = {
            let mut staged = self.staged.lock();
            let mut taken: Vec<StagedMember> = Vec::with_capacity(members.len());
            let mut missing = None;
            for m in &members {
                match staged.remove(&m.volume) {
                    Some(s)
                        if s.relationship == m.relationship
                            && s.snapshot_uuid == m.snapshot_uuid
                            && taken.first().is_none_or(|f| f.pool == s.pool) =>
                    {
                        taken.push(s)
                    }
                    Some(s) => {
                        staged.insert(m.volume.clone(), s);
                        missing = Some(m);
                        break;
                    }
                    None => {
                        missing = Some(m);
                        break;
                    }
                }
            }
            if let Some(m) = missing {
                for s in taken {
                    staged.insert(s.receive.spec().volume.clone(), s);
                }
                return Err(MgrErrorReply::new(
                    "not_staged",
                    format!(
                        "group {group}: member {} has no complete staged receive of snapshot {} here (nothing committed; the next cycle resends or resumes it)",
                        m.volume, m.snapshot_uuid
                    ),
                ));
            }
            taken
        };
        let pool = taken[0].pool.clone();
        let done: Vec<(String, u64, String, u64)> = taken
            .iter()
            .map(|s| {
                (
                    s.relationship.clone(),
                    s.bytes,
                    s.kind.clone(),
                    s.duration_ms,
                )
            })
            .collect();
        let snaps = self
            .mgr
            .replica_commit_group(&pool, taken.into_iter().map(|s| s.receive).collect())
            .await?;
        for ((rel, bytes, kind, duration_ms), snap) in done.into_iter().zip(&snaps) {
            let updated = self
                .mgr
                .replica_update(&rel, |r| {
                    r.replicated_as_of_ms = Some(as_of_ms);
                    r.last_transfer = Some(TransferRecord {
                        snapshot: snap.name.clone(),
                        bytes,
                        duration_ms,
                        finished_unix: now_ms() / 1000,
                        kind,
                    });
                })
                .await;
            if let Err(e) = updated {
                // Committed all the same: only the record's lag and last transfer are stale.
                tracing::warn!(%peer, group, relationship = %rel, error = %e, "recording a committed group member's transfer failed");
            }
        }
        self.refresh_replica_side().await;
        tracing::info!(%peer, group, members = snaps.len(), "replicated group committed: every member at the new group snapshot");
        Ok(Reply::CommittedGroup {
            snapshots: snaps.into_iter().map(|s| s.name).collect(),
        })
    }

    /// The volumes of `peer`'s replica relationships here (what its space limit covers).
    async fn peer_volumes(&self, peer: &str) -> std::collections::BTreeSet<String> {
        self.mgr
            .replica_records()
            .await
            .into_iter()
            .filter(|r| r.role == ReplicaRole::Replica && r.peer == peer)
            .map(|r| r.volume)
            .collect()
    }

    /// The relationship `name` here, which must be `peer`'s and about `volume` if it exists.
    async fn check_peer(
        &self,
        name: &str,
        peer: &str,
        volume: &str,
    ) -> Result<Option<ReplicaRecord>, MgrErrorReply> {
        match self.mgr.replica_record(name).await {
            Ok(r) if r.peer != peer || r.volume != volume => Err(MgrErrorReply::new(
                "invalid",
                format!(
                    "relationship {name} here is {} with peer {}, not {volume} with {peer}",
                    r.volume, r.peer
                ),
            )),
            Ok(r) => Ok(Some(r)),
            Err(_) => Ok(None),
        }
    }
}

/// Deletes the `repl-` snapshots of `volume` beyond `keep`, never the one with uuid
/// `common`, nor one a clone was made from (kept until the clone goes), nor one in
/// `also_keep` (the source's clone origins: the base of their replicas' first transfer).
async fn prune(
    mgr: &LunManager,
    volume: &str,
    keep: u32,
    common: uuid::Uuid,
    also_keep: &[uuid::Uuid],
) -> anyhow::Result<Vec<String>> {
    let (_, pool) = mgr.replica_pool(volume).await?;
    let origins = base::clone_origins_of(&pool, volume);
    let snaps: Vec<Snap> = pool
        .snapshots(Some(volume))
        .into_iter()
        .map(|s| Snap {
            pinned: also_keep.contains(&s.uuid) || origins.iter().any(|(_, u)| *u == s.uuid),
            name: s.name,
            uuid: s.uuid,
        })
        .collect();
    let mut deleted = Vec::new();
    for n in to_delete(&snaps, keep, Some(common)) {
        match mgr.snapshot_delete(volume, &n).await {
            Ok(()) => deleted.push(n),
            Err(e) => {
                tracing::info!(volume, snapshot = %n, error = %e, "retention kept a snapshot it could not delete")
            }
        }
    }
    Ok(deleted)
}

/// Runs `fut`, failing it when `progress.bytes` stands still for `idle`.
async fn watchdog<T>(
    idle: Duration,
    progress: &StreamProgress,
    fut: impl Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    tokio::pin!(fut);
    let mut last = progress.bytes.load(Ordering::Relaxed);
    loop {
        tokio::select! {
            r = &mut fut => return r,
            _ = tokio::time::sleep(idle) => {
                let now = progress.bytes.load(Ordering::Relaxed);
                if now == last {
                    bail!("the transfer moved no byte for {idle:?}: abandoned (it resumes at the next cycle)");
                }
                last = now;
            }
        }
    }
}

/// Runs `send` (the stream going out) while reading the peer's reply line from `rd`;
/// returns the send's result (or an error if the peer answered first with an error) and
/// the reply (`None`: none within the confirmation timeout).
async fn send_and_confirm<S, R>(
    send: impl Future<Output = anyhow::Result<S>>,
    rd: &mut R,
    idle: Duration,
) -> (
    anyhow::Result<S>,
    Option<Result<Reply, super::link::LineError>>,
)
where
    R: tokio::io::AsyncBufRead + Unpin,
{
    tokio::pin!(send);
    let confirm = read_line::<_, Reply>(rd);
    tokio::pin!(confirm);
    tokio::select! {
        s = &mut send => {
            let r = tokio::time::timeout(idle.max(Duration::from_secs(60)), &mut confirm).await;
            (s, r.ok())
        }
        r = &mut confirm => {
            if matches!(r, Ok(Reply::Error { .. })) {
                return (Err(anyhow!("the peer refused the stream")), Some(r));
            }
            (send.await, Some(r))
        }
    }
}

/// An error answered to a peer.
#[derive(Debug)]
struct MgrErrorReply {
    kind: String,
    message: String,
    resume: Option<String>,
}

impl MgrErrorReply {
    fn new(kind: &str, message: String) -> Self {
        MgrErrorReply {
            kind: kind.into(),
            message,
            resume: None,
        }
    }
}

impl From<MgrError> for MgrErrorReply {
    fn from(e: MgrError) -> Self {
        let resume = match &e {
            MgrError::Stream { resume, .. } => resume.as_ref().map(ToString::to_string),
            _ => None,
        };
        MgrErrorReply {
            kind: e.kind().to_string(),
            message: e.to_string(),
            resume,
        }
    }
}

impl Handler for Replication {
    fn serve(
        self: Arc<Self>,
        peer: String,
        conn: ServerConn,
        deadline: Duration,
    ) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        Box::pin(async move {
            let (rd, mut wr) = tokio::io::split(conn);
            let mut rd = BufReader::new(rd);
            let req: Request = match tokio::time::timeout(deadline, read_line(&mut rd)).await {
                Ok(Ok(r)) => r,
                Ok(Err(e)) => {
                    tracing::warn!(%peer, error = %e, "replication request refused");
                    crate::metrics::global().replica_link_refused("bad_request");
                    let _ = write_line(
                        &mut wr,
                        &Reply::Error {
                            kind: "protocol".into(),
                            message: e.to_string(),
                            resume_token: None,
                        },
                    )
                    .await;
                    return;
                }
                Err(_) => {
                    crate::metrics::global().replica_link_refused("timeout");
                    return;
                }
            };
            let reply = match self.answer(&peer, req, &mut rd, &mut wr).await {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(%peer, kind = %e.kind, error = %e.message, "replication request failed");
                    Reply::Error {
                        kind: e.kind,
                        message: e.message,
                        resume_token: e.resume,
                    }
                }
            };
            let _ = write_line(&mut wr, &reply).await;
            let _ = wr.shutdown().await;
        })
    }
}

/// Member `m` of group relationship `rec` as a relationship of its own: the record the
/// peer keeps for it (`<relationship>.<remote volume>`), its volumes here and there.
fn member_view(rec: &ReplicaRecord, m: &GroupMember) -> ReplicaRecord {
    ReplicaRecord {
        name: ReplicaRecord::member_name(&rec.name, &m.remote_volume),
        volume: m.volume.clone(),
        remote_volume: m.remote_volume.clone(),
        group: Some(rec.name.clone()),
        members: Vec::new(),
        ..rec.clone()
    }
}

/// What a `Receive` request's stream became here.
enum Got {
    /// Committed (a single LUN's relationship).
    Committed(crate::lunmgr::replication::Received),
    /// Staged for a group commit, in the named pool.
    Staged((String, storage_core::stream::StagedReceive)),
}

/// What [`Replication::send_one`] moved.
struct SentOne {
    /// Stream bytes sent.
    bytes: u64,
    /// Stream bytes the peer says it read.
    received: u64,
    /// `full`, `increment` or `clone`.
    kind: String,
    /// The sent snapshot's uuid.
    to_uuid: uuid::Uuid,
    /// How long the transfer took.
    duration: Duration,
}

/// The version a relationship's requests carry: a group's need the group protocol (an
/// older peer refuses them clearly instead of committing one member alone).
fn version_for(rec: &ReplicaRecord) -> u32 {
    if rec.group.is_some() {
        GROUP_PROTOCOL_VERSION
    } else {
        PROTOCOL_VERSION
    }
}

/// A peer's `Status` answer about a relationship's remote volume.
struct PeerStatus {
    /// Whether the volume exists there.
    exists: bool,
    /// Its snapshots.
    snapshots: Vec<SnapEntry>,
    /// A staged receive's resume token.
    resume_token: Option<String>,
    /// Where the peer holds the origin snapshot asked about.
    origin: Option<Located>,
}
