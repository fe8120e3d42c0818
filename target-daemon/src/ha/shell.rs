//! The async shell around the ownership machine: it performs the machine's actions with
//! real RADOS and RBD calls, feeds their outcomes and the time back, and applies what
//! ownership means to the rest of the daemon through a [`PoolHost`] (the LUN manager and
//! the ALUA view in lunard; a recorder in tests).
//!
//! One task owns the [`Machine`]. Lease-lane calls (probe, acquire, renew, release,
//! reconnect) and pool-lane calls (fence, open, close) run as their own tasks, blocking
//! librados calls on the blocking pool, and report back on one channel; the machine allows
//! at most one call per lane, so a slow pool open never delays a renew, and the task keeps
//! its timers (the local deadline above all) while calls are out.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use storage_core::ceph::{CephConfig, CephError, Expect, IoCtx, Rados, RbdImage};
use storage_core::{Pool, PoolOptions, StorageError};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::cluster::{failure, LeaseClient};
use super::lease::LeaseContent;
use super::machine::{Action, Event, Failure, Machine, Probe, Role, Snapshot, Timing};
use super::status::{GatewayStatus, HaControl, HaError, HaStatus, MoveAccepted};
use crate::config::HaCfg;

/// A boxed future, for the [`PoolHost`] calls that wait.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// What ALUA access this gateway reports (the machine decides it, see [`Access`]).
pub use super::machine::Access;

/// What the coordinator does to the rest of the daemon.
pub trait PoolHost: Send + Sync + 'static {
    /// Hands the freshly opened pool to the LUN manager (LUNs get their volumes).
    fn attach(&self, pool: Pool) -> BoxFuture<anyhow::Result<()>>;
    /// Takes the pool back from the LUN manager after in-flight commands finished;
    /// `None` when it had none.
    fn detach(&self) -> BoxFuture<Option<Pool>>;
    /// Sets the local port group's ALUA access state. Called synchronously on the
    /// coordinator task: must not block.
    fn set_access(&self, access: Access);
    /// Publishes until when this gateway may serve media commands (the lease's local
    /// deadline while serving; `None` otherwise), checked per command so that a coordinator
    /// that did not run in time (a frozen process resumed) cannot leave I/O admitted past
    /// it. Called synchronously on the coordinator task: must not block.
    fn set_serving_until(&self, until: Option<Instant>);
}

/// Where the coordinator's calls go: the group's configuration and the pool to open.
#[derive(Clone, Debug)]
pub struct ShellConfig {
    /// The `ha:` section.
    pub ha: HaCfg,
    /// The pool this coordinator owns or not (its lease is `lunar.<group>.<pool>.lease`);
    /// a gateway runs one coordinator per pool.
    pub pool_name: String,
    /// The gateway the configuration prefers for the pool (`pools[].prefer`).
    pub prefer: Option<String>,
    /// RBD image holding the pool.
    pub image: String,
    /// Pool options for creating the pool (its capacity is the image size).
    pub pool: PoolOptions,
    /// Size of the image when the first owner creates it.
    pub capacity: u64,
    /// This gateway's iSCSI portals (for the registry).
    pub portals: Vec<String>,
}

/// One RADOS client instance and what hangs off it; replaced as a whole after a fence.
#[derive(Clone)]
struct Conn {
    rados: Rados,
    ioctx: IoCtx,
    lease: LeaseClient,
}

fn connect(cfg: &HaCfg, pool: &str) -> Result<Conn, CephError> {
    let c = CephConfig {
        conf: cfg.ceph.conf.clone(),
        client: cfg.ceph.client.clone(),
    };
    // An OSD operation that hangs must end well within a few leases: the lanes wait for it.
    let op_timeout = (cfg.lease.0.as_secs() * 2).max(2).to_string();
    let rados = Rados::connect_with(
        &c,
        &[
            ("rados_osd_op_timeout", op_timeout.as_str()),
            ("rados_mon_op_timeout", op_timeout.as_str()),
        ],
    )?;
    let ioctx = rados.ioctx(&cfg.ceph.pool)?;
    let lease = LeaseClient::new(ioctx.clone(), &cfg.group, pool, &cfg.gateway, cfg.lease.0);
    Ok(Conn {
        rados,
        ioctx,
        lease,
    })
}

/// What a lane's call reports back to the coordinator task.
enum Done {
    Probed(Result<Probe, Failure>),
    Acquired(Result<(Instant, LeaseContent), Failure>),
    Renewed(Result<(Instant, LeaseContent), Failure>),
    /// The lease was given back (`Ok`), or releasing found this client blocklisted.
    Released(Result<(), Failure>),
    Reconnected(Result<Conn, String>),
    Fenced(Result<(RbdImage, bool), Failure>),
    Opened(Result<Pool, Failure>),
    Closed,
}

/// What the coordinator task is asked from outside.
enum Cmd {
    Shutdown(oneshot::Sender<()>),
}

/// The state readers see (status, move requests) without asking the task.
struct Shared {
    cfg: ShellConfig,
    snapshot: Mutex<(Snapshot, Instant)>,
    conn: Mutex<Option<Conn>>,
    /// Why the last takeover attempt failed (fencing or opening the pool).
    last_error: Mutex<Option<String>>,
}

/// A running HA coordinator: status and planned moves for the admin API, and shutdown.
pub struct Coordinator {
    shared: Arc<Shared>,
    registry: Mutex<Option<Arc<crate::shared::GatewayRegistry>>>,
    /// The ALUA view whose states `status` shows per gateway.
    alua: Mutex<Option<Arc<crate::scsi::alua::AluaView>>>,
    cmds: mpsc::UnboundedSender<Cmd>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for Coordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coordinator")
            .field("group", &self.shared.cfg.ha.group)
            .field("gateway", &self.shared.cfg.ha.gateway)
            .finish()
    }
}

impl Coordinator {
    /// Starts the coordinator as standby. It connects to the cluster in the background, so
    /// lunard's start-up never waits for Ceph or for the pool.
    pub fn start(cfg: ShellConfig, host: Arc<dyn PoolHost>) -> Arc<Coordinator> {
        let now = Instant::now();
        let timing = Timing {
            lease: cfg.ha.lease.0,
        };
        let machine =
            Machine::new(cfg.ha.gateway.clone(), timing, now).with_prefer(cfg.prefer.clone());
        let snap = machine.snapshot(now);
        let shared = Arc::new(Shared {
            cfg,
            snapshot: Mutex::new((snap, now)),
            conn: Mutex::new(None),
            last_error: Mutex::new(None),
        });
        let (cmds, cmd_rx) = mpsc::unbounded_channel();
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        let access = machine.access();
        host.set_access(access.clone());
        let task = Task {
            shared: shared.clone(),
            m: machine,
            host,
            done_tx,
            image: None,
            image_ours: false,
            pool: None,
            applied: access,
            applied_until: None,
            stopping: None,
        };
        let handle = tokio::spawn(task.run(cmd_rx, done_rx));
        Arc::new(Coordinator {
            shared,
            registry: Mutex::new(None),
            alua: Mutex::new(None),
            cmds,
            task: Mutex::new(Some(handle)),
        })
    }

    /// The machine's view as of its last step.
    pub fn snapshot(&self) -> Snapshot {
        let (snap, at) = self.shared.snapshot.lock().clone();
        let aged = at.elapsed();
        Snapshot {
            since_renew: snap.since_renew.map(|d| d + aged),
            serving_left: snap.serving_left.map(|d| d.saturating_sub(aged)),
            ..snap
        }
    }

    /// Steps down if owner (stops I/O, closes the pool, releases the lease) and stops.
    pub async fn shutdown(&self) {
        let (tx, rx) = oneshot::channel();
        if self.cmds.send(Cmd::Shutdown(tx)).is_ok() {
            let _ = rx.await;
        }
        let task = self.task.lock().take();
        if let Some(t) = task {
            let _ = t.await;
        }
    }
}

impl HaControl for Coordinator {
    fn status(&self) -> HaStatus {
        let s = self.snapshot();
        let cfg = &self.shared.cfg.ha;
        let lease = match (s.role, s.lease_held) {
            (Role::Fencing | Role::Opening | Role::Active, _) => "held by this gateway",
            (_, true) => "held",
            (_, false) => "free",
        };
        HaStatus {
            group: cfg.group.clone(),
            pool: self.shared.cfg.pool_name.clone(),
            pools: Vec::new(),
            gateway: cfg.gateway.clone(),
            port_group: cfg.port_group,
            role: s.role.name().to_string(),
            epoch: s.epoch,
            owner: s.owner.clone(),
            preferred: s.preferred,
            lease: lease.to_string(),
            lease_ms: u64::try_from(cfg.lease.0.as_millis()).unwrap_or(u64::MAX),
            since_renew_ms: s.since_renew.map(ms),
            serving_left_ms: s.serving_left.map(ms),
            gateways: self.gateways(s.owner.as_deref()),
            last_error: self.shared.last_error.lock().clone(),
        }
    }

    fn move_to(&self, pool: Option<&str>, to: &str) -> Result<MoveAccepted, HaError> {
        let mine = &self.shared.cfg.pool_name;
        if pool.is_some_and(|p| p != mine) {
            return Err(HaError::UnknownPool(pool.unwrap_or_default().to_string()));
        }
        let conn = self.shared.conn.lock().clone();
        let conn = conn.ok_or_else(|| {
            HaError::Cluster("not connected to the Ceph cluster yet; try again".into())
        })?;
        let known = self.gateways(None);
        if !known.is_empty() && !known.iter().any(|g| g.name == to) {
            return Err(HaError::UnknownGateway(to.to_string()));
        }
        let (cur, _) = conn
            .lease
            .read()
            .map_err(|e| HaError::Cluster(e.to_string()))?;
        if cur.owner.as_deref() == Some(to) {
            return Err(HaError::AlreadyOwner(to.to_string()));
        }
        let written = conn
            .lease
            .update(|c| c.moved_to(to))
            .map_err(|e| HaError::Cluster(e.to_string()))?;
        tracing::info!(pool = %mine, to, from = ?written.owner, epoch = written.epoch, "planned move requested");
        Ok(MoveAccepted {
            pool: mine.clone(),
            to: to.to_string(),
            from: written.owner,
            epoch: written.epoch,
        })
    }
}

impl Coordinator {
    /// Where `status` and `move_to` read the group's gateways from.
    pub fn set_gateways_source(&self, registry: Arc<crate::shared::GatewayRegistry>) {
        *self.registry.lock() = Some(registry);
    }

    /// The ALUA view `status` reads each gateway's reported state from.
    pub fn set_alua_source(&self, view: Arc<crate::scsi::alua::AluaView>) {
        *self.alua.lock() = Some(view);
    }

    /// The group's gateways from the registry; empty when it cannot be read.
    fn gateways(&self, owner: Option<&str>) -> Vec<GatewayStatus> {
        let reg = self.registry.lock().clone();
        let view = self.alua.lock().clone();
        reg.map(|r| super::status::gateway_statuses(&r, owner, view.as_deref()))
            .unwrap_or_default()
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The coordinator task's state.
struct Task {
    shared: Arc<Shared>,
    m: Machine,
    host: Arc<dyn PoolHost>,
    done_tx: mpsc::UnboundedSender<Done>,
    /// The image, open and RBD-locked, from fencing until closed.
    image: Option<RbdImage>,
    /// Whether lunard created that image (only then may an image without a pool be
    /// formatted).
    image_ours: bool,
    /// The pool while open (also held by the LUN manager).
    pool: Option<Pool>,
    /// The access last applied to the ALUA view.
    applied: Access,
    /// The serving deadline last published ([`PoolHost::set_serving_until`]).
    applied_until: Option<Instant>,
    stopping: Option<oneshot::Sender<()>>,
}

impl Task {
    async fn run(
        mut self,
        mut cmds: mpsc::UnboundedReceiver<Cmd>,
        mut done: mpsc::UnboundedReceiver<Done>,
    ) {
        // There is no client at first: the machine's first probe connects (see `perform`).
        loop {
            self.step();
            if self.m.role() == Role::Stopped {
                break;
            }
            let deadline = self
                .m
                .poll_timeout()
                .map(tokio::time::Instant::from_std)
                .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                Some(d) = done.recv() => self.feed(d),
                _ = tokio::time::sleep_until(deadline) => self.m.handle_timeout(Instant::now()),
                c = cmds.recv() => match c {
                    Some(Cmd::Shutdown(tx)) => {
                        self.stopping = Some(tx);
                        self.m.shutdown(Instant::now());
                    }
                    None => self.m.shutdown(Instant::now()),
                },
            }
        }
        if let Some(tx) = self.stopping.take() {
            let _ = tx.send(());
        }
        // Drop the client off the async workers (shutting librados down blocks).
        let conn = self.shared.conn.lock().take();
        let image = self.image.take();
        let _ = tokio::task::spawn_blocking(move || drop((image, conn))).await;
    }

    /// Performs every queued action and reports every event.
    fn step(&mut self) {
        while let Some(a) = self.m.poll_action() {
            self.perform(a);
        }
        while let Some(e) = self.m.poll_event() {
            self.observe(e);
        }
        self.apply_access();
        let now = Instant::now();
        let snap = self.m.snapshot(now);
        *self.shared.snapshot.lock() = (snap, now);
    }

    /// Applies the machine's [`Access`] to the host when it changed.
    fn apply_access(&mut self) {
        // A new deadline goes out before the access that needs it, and a cleared one after
        // the access that stops serving, so an active state is never seen without one.
        let until = self.m.serving_until();
        if until.is_some() && until != self.applied_until {
            self.applied_until = until;
            self.host.set_serving_until(until);
        }
        let access = self.m.access();
        if access != self.applied {
            self.applied = access.clone();
            self.host.set_access(access);
        }
        if until.is_none() && self.applied_until.is_some() {
            self.applied_until = None;
            self.host.set_serving_until(None);
        }
    }

    fn observe(&mut self, e: Event) {
        let metrics = crate::metrics::global();
        let pool = self.shared.cfg.pool_name.as_str();
        match e {
            Event::Role {
                from,
                to,
                epoch,
                reason,
            } => {
                metrics.ha_state(pool, to.gauge(), epoch);
                let g = &self.shared.cfg.ha.gateway;
                match to {
                    Role::Releasing | Role::Reconnecting => {
                        tracing::warn!(gateway = %g, %pool, %from, %to, epoch, reason, "HA role change")
                    }
                    _ => {
                        tracing::info!(gateway = %g, %pool, %from, %to, epoch, reason, "HA role change")
                    }
                }
            }
            Event::Renewed { took } => metrics.ha_renewed(pool, took),
            Event::TookOver { epoch, duration } => {
                metrics.ha_took_over(pool, duration);
                tracing::info!(
                    gateway = %self.shared.cfg.ha.gateway,
                    %pool,
                    epoch,
                    lease_won_to_active_ms = ms(duration),
                    "took over the pool"
                );
            }
            Event::Fenced => {
                metrics.ha_fenced(pool);
                tracing::warn!(
                    gateway = %self.shared.cfg.ha.gateway,
                    %pool,
                    "this gateway was fenced (blocklisted) by a new owner; reconnecting as standby"
                );
            }
        }
    }

    fn perform(&mut self, a: Action) {
        tracing::trace!(?a, "HA action");
        let conn = self.shared.conn.lock().clone();
        let tx = self.done_tx.clone();
        match a {
            Action::Probe => match conn {
                // No client yet (start-up, or a failed reconnect): connecting is the probe.
                None => self.reconnect(),
                Some(c) => blocking(tx, move || Done::Probed(c.lease.probe())),
            },
            Action::Acquire => match conn {
                None => self.fail_lease(Done::Acquired(Err(not_connected()))),
                Some(c) => blocking(tx, move || Done::Acquired(c.lease.acquire())),
            },
            Action::Renew => match conn {
                None => self.fail_lease(Done::Renewed(Err(not_connected()))),
                Some(c) => blocking(tx, move || Done::Renewed(c.lease.renew())),
            },
            Action::Release => match conn {
                None => self.fail_lease(Done::Released(Ok(()))),
                Some(c) => blocking(tx, move || match c.lease.release() {
                    Ok(()) => Done::Released(Ok(())),
                    Err(e) if failure(&e) == Failure::Blocklisted => {
                        Done::Released(Err(Failure::Blocklisted))
                    }
                    Err(e) => {
                        // The OSD expires it anyway.
                        tracing::warn!("releasing the lease: {e}");
                        Done::Released(Ok(()))
                    }
                }),
            },
            Action::Reconnect => self.reconnect(),
            Action::Fence { epoch } => match conn {
                None => self.fail_lease(Done::Fenced(Err(not_connected()))),
                Some(c) => {
                    let image = self.shared.cfg.image.clone();
                    let group = self.shared.cfg.ha.group.clone();
                    let capacity = self.shared.cfg.capacity;
                    blocking(tx, move || {
                        Done::Fenced(fence(&c.ioctx, &group, &image, capacity, epoch))
                    })
                }
            },
            Action::Open { epoch } => {
                let ours = self.image_ours;
                let Some(image) = self.image.clone() else {
                    let _ = tx.send(Done::Opened(Err(Failure::Other(
                        "no image after fencing".into(),
                    ))));
                    return;
                };
                let opts = self.shared.cfg.pool.clone();
                let host = self.host.clone();
                tokio::spawn(async move {
                    let r = open(image, ours, &opts, host.as_ref(), epoch).await;
                    let _ = tx.send(Done::Opened(r));
                });
            }
            Action::Close => {
                let host = self.host.clone();
                let pool = self.pool.take();
                let image = self.image.take();
                tokio::spawn(async move {
                    close(host.as_ref(), pool, image).await;
                    let _ = tx.send(Done::Closed);
                });
            }
            // Applied at once (before any later action of the same step, e.g. the `Close`
            // that follows a `StopIo`): the machine's access is already the new one.
            Action::Serve { .. } | Action::StopIo => self.apply_access(),
        }
    }

    /// Keeps the last pool-lane failure for `lunarctl ha status` (cleared by a success).
    fn note<T>(&self, r: &Result<T, Failure>) {
        let msg = match r {
            Ok(_) => None,
            Err(Failure::Other(m)) => Some(m.clone()),
            Err(f) => Some(format!("{f:?}")),
        };
        if let Some(m) = &msg {
            tracing::error!(gateway = %self.shared.cfg.ha.gateway, pool = %self.shared.cfg.pool_name, "cannot take the pool over: {m}");
        }
        *self.shared.last_error.lock() = msg;
    }

    fn fail_lease(&self, d: Done) {
        let _ = self.done_tx.send(d);
    }

    fn reconnect(&mut self) {
        let old = self.shared.conn.lock().take();
        let cfg = self.shared.cfg.ha.clone();
        let pool = self.shared.cfg.pool_name.clone();
        blocking(self.done_tx.clone(), move || {
            // The old client is blocklisted (or never was): shut it down first.
            drop(old);
            Done::Reconnected(connect(&cfg, &pool).map_err(|e| e.to_string()))
        });
    }

    fn feed(&mut self, d: Done) {
        let now = Instant::now();
        match d {
            Done::Probed(Ok(p)) => self.m.handle_probed(now, p),
            Done::Probed(Err(f)) => self.m.handle_lease_failed(now, f),
            Done::Acquired(Ok((sent, c))) => self.m.handle_acquired(now, sent, c),
            Done::Acquired(Err(f)) => self.m.handle_lease_failed(now, f),
            Done::Renewed(Ok((sent, c))) => self.m.handle_renewed(now, sent, c),
            Done::Renewed(Err(f)) => {
                tracing::debug!(?f, "lease renew failed");
                self.m.handle_lease_failed(now, f)
            }
            Done::Released(Ok(())) => self.m.handle_released(now),
            Done::Released(Err(f)) => self.m.handle_lease_failed(now, f),
            Done::Reconnected(r) => {
                let r = match r {
                    Ok(c) => {
                        tracing::info!(
                            gateway = %self.shared.cfg.ha.gateway,
                            client = %c.rados.instance_name(),
                            "connected to the Ceph cluster"
                        );
                        *self.shared.conn.lock() = Some(c);
                        Ok(())
                    }
                    Err(e) => {
                        tracing::warn!("cannot connect to the Ceph cluster: {e}");
                        Err(e)
                    }
                };
                if self.m.role() == Role::Standby {
                    // Connected for the probe the machine asked for: probe now, or report
                    // the probe failed (it retries a third of a lease later).
                    let conn = self.shared.conn.lock().clone();
                    match (r, conn) {
                        (Ok(()), Some(c)) => {
                            blocking(self.done_tx.clone(), move || Done::Probed(c.lease.probe()))
                        }
                        (r, _) => self
                            .m
                            .handle_lease_failed(now, Failure::Other(r.err().unwrap_or_default())),
                    }
                } else {
                    self.m.handle_reconnected(now, r);
                }
            }
            Done::Fenced(r) => {
                self.note(&r);
                let r = r.map(|(image, ours)| {
                    self.image = Some(image);
                    self.image_ours = ours;
                });
                self.m.handle_fenced(now, r)
            }
            Done::Opened(r) => {
                self.note(&r);
                let r = r.map(|pool| {
                    self.pool = Some(pool);
                });
                self.m.handle_opened(now, r)
            }
            Done::Closed => {
                self.m.handle_closed(now);
            }
        }
    }
}

fn not_connected() -> Failure {
    Failure::Other("not connected to the Ceph cluster".into())
}

/// Runs a blocking call on the blocking pool and reports its outcome.
fn blocking(tx: mpsc::UnboundedSender<Done>, f: impl FnOnce() -> Done + Send + 'static) {
    tokio::task::spawn_blocking(move || {
        let _ = tx.send(f());
    });
}

/// The RADOS object recording that lunard created image `image` for group `group`: only
/// such an image may be formatted when it holds no pool (anything else may be another
/// system's disk).
pub fn created_marker(group: &str, image: &str) -> String {
    format!("lunar.{group}.created.{image}")
}

/// Fencing: open the image (creating it on the group's first takeover, after recording
/// that lunard creates it), break every other client's exclusive lock (librbd blocklists
/// them), take the lock ourselves. Also says whether lunard created the image.
fn fence(
    ioctx: &IoCtx,
    group: &str,
    name: &str,
    capacity: u64,
    epoch: u64,
) -> Result<(RbdImage, bool), Failure> {
    let marker = created_marker(group, name);
    let image = match RbdImage::open(ioctx, name) {
        Ok(i) => i,
        Err(e) if e.errno() == Some(libc::ENOENT) => {
            tracing::info!(image = name, capacity, "creating the group's RBD image");
            // The marker first: an image whose creation it does not record is never
            // formatted, so a crash between the two leaves a marker, not a foreign image.
            match ioctx.write_full(&marker, name.as_bytes(), Expect::Any) {
                Ok(_) => {}
                Err(e) => return Err(failure(&e)),
            }
            match RbdImage::create(ioctx, name, capacity) {
                Ok(()) => {}
                Err(e) if e.errno() == Some(libc::EEXIST) => {
                    // Someone else created it meanwhile: not ours.
                    let _ = ioctx.remove(&marker);
                }
                Err(e) => return Err(failure(&e)),
            }
            RbdImage::open(ioctx, name).map_err(|e| failure(&e))?
        }
        Err(e) => return Err(failure(&e)),
    };
    let ours = ioctx
        .read(&marker)
        .map_err(|e| failure(&e))?
        .is_some_and(|d| d.data == name.as_bytes());
    let owners = image.lock_get_owners().map_err(|e| failure(&e))?;
    for o in &owners {
        tracing::warn!(epoch, owner = %o, image = name, "fencing the previous owner: breaking its lock (blocklists it)");
        match image.lock_break(o) {
            Ok(()) => {}
            Err(e) if e.errno() == Some(libc::ENOENT) => {}
            Err(e) => return Err(failure(&e)),
        }
    }
    image.lock_acquire_exclusive().map_err(|e| failure(&e))?;
    tracing::info!(
        epoch,
        image = name,
        fenced = owners.len(),
        "RBD exclusive lock taken"
    );
    Ok((image, ours))
}

/// Opens the pool on the image (creating it in an empty image) and attaches it.
async fn open(
    image: RbdImage,
    ours: bool,
    opts: &PoolOptions,
    host: &dyn PoolHost,
    epoch: u64,
) -> Result<Pool, Failure> {
    let pool = match Pool::open_rbd(image.clone()).await {
        Ok(p) => p,
        Err(StorageError::NotAPool(why)) if !ours => {
            return Err(Failure::Other(format!(
                "RBD image {} holds no Lunar pool ({why}) and was not created by lunard: \
                 refusing to format it (it may be another system's disk); name an image \
                 that does not exist yet in pool.rbd.image",
                image.name()
            )));
        }
        Err(StorageError::NotAPool(why)) => {
            tracing::info!(epoch, %why, "the image lunard created holds no pool yet: creating one");
            let create = PoolOptions {
                capacity_bytes: None,
                ..opts.clone()
            };
            Pool::create_rbd(image, &create)
                .await
                .map_err(|e| storage_failure(&e))?
        }
        Err(e) => return Err(storage_failure(&e)),
    };
    if let Err(e) = host.attach(pool.clone()).await {
        let _ = pool.close().await;
        return Err(Failure::Other(format!("attaching the pool: {e:#}")));
    }
    tracing::info!(epoch, "pool open and attached");
    Ok(pool)
}

fn storage_failure(e: &StorageError) -> Failure {
    // The image's errors come as an io::Error carrying the CephError (or at least its errno).
    let io = std::error::Error::source(e).and_then(|s| s.downcast_ref::<std::io::Error>());
    let ceph = io
        .and_then(std::io::Error::get_ref)
        .and_then(|r| r.downcast_ref::<CephError>());
    let errno = io.and_then(std::io::Error::raw_os_error);
    let blocklisted = ceph.is_some_and(CephError::is_blocklisted)
        || errno.is_some_and(|n| n == libc::ESHUTDOWN || n == storage_core::ceph::EBLOCKLISTED);
    if blocklisted {
        Failure::Blocklisted
    } else {
        Failure::Other(e.to_string())
    }
}

/// Detaches and closes the pool, then gives the RBD lock back and closes the image.
async fn close(host: &dyn PoolHost, pool: Option<Pool>, image: Option<RbdImage>) {
    let detached = host.detach().await;
    for p in detached.iter().chain(pool.iter()) {
        if let Err(e) = p.close().await {
            tracing::warn!("closing the pool: {e}");
        }
    }
    drop((detached, pool));
    if let Some(image) = image {
        let _ = tokio::task::spawn_blocking(move || {
            if let Err(e) = image.lock_release() {
                tracing::debug!("releasing the RBD lock: {e}");
            }
            drop(image);
        })
        .await;
    }
}
