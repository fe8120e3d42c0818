//! The admin API server: newline-delimited JSON requests and responses (see [`proto`]) on a
//! Unix socket `<data-dir>/admin.sock` (mode 0600: only the daemon's user may manage it) and,
//! optionally, on a TCP address that requires a bearer token. Every request is executed by
//! the [`LunManager`](crate::lunmgr::LunManager).

pub mod proto;
pub mod socket;
mod stream;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use serde::Serialize;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::task::JoinHandle;

use crate::config::LimitsCfg;
use crate::ha::status::HaControl;
use crate::lunmgr::state::ChapRecord;
use crate::lunmgr::state::{GroupMember, ReplicaRecord, ReplicaRole};
use crate::lunmgr::{LunManager, MgrError, ObjectKind};
use crate::replica::service::Replication;
use crate::secret::Secret;
use proto::{
    ClosedSessions, Deleted, DeletedGroup, PoolCheck, Request, RequestLine, Response, RolledBack,
    Unmapped, MAX_REQUEST_LINE,
};

/// File name of the admin socket in the data directory.
pub const SOCKET_NAME: &str = "admin.sock";

/// How the admin API is exposed.
#[derive(Clone, Default)]
pub struct AdminOptions {
    /// Unix socket path (default `<data-dir>/admin.sock`).
    pub socket: Option<PathBuf>,
    /// Optional TCP listen address (requires `token`).
    pub tcp: Option<SocketAddr>,
    /// Bearer token for TCP clients.
    pub token: Option<Secret>,
    /// The HA coordinator (`ha.*` requests), on a gateway of an HA group.
    pub ha: Option<Arc<dyn HaControl>>,
    /// The replication service (`replica.*` relationship requests), when configured.
    pub replication: Option<Arc<Replication>>,
}

impl std::fmt::Debug for AdminOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminOptions")
            .field("socket", &self.socket)
            .field("tcp", &self.tcp)
            .field("token", &self.token)
            .field("ha", &self.ha.is_some())
            .finish()
    }
}

/// The running admin listeners.
pub struct AdminServer {
    socket: PathBuf,
    tcp_addr: Option<SocketAddr>,
    tasks: Vec<JoinHandle<()>>,
}

impl AdminServer {
    /// Binds the Unix socket (and the TCP address if configured) and starts serving, within
    /// the admin limits of `limits`.
    pub fn start(
        mgr: Arc<LunManager>,
        data_dir: &Path,
        opts: &AdminOptions,
        limits: &LimitsCfg,
    ) -> anyhow::Result<AdminServer> {
        let socket = opts
            .socket
            .clone()
            .unwrap_or_else(|| data_dir.join(SOCKET_NAME));
        if opts.tcp.is_some() && opts.token.as_ref().is_none_or(Secret::is_empty) {
            anyhow::bail!("the admin TCP listener needs a bearer token (--admin-token-file)");
        }
        // Mode 0600 from the first instant, replacing a stale socket of a crashed run.
        let unix = socket::bind_private(&socket)?;
        let mut tasks = Vec::new();
        let m = mgr.clone();
        let ha = Controls::of(opts);
        let idle = std::time::Duration::from_secs(limits.admin_idle_timeout_secs);
        // The Unix socket is mode 0600: its clients are the daemon's own user, trusted with
        // full-size requests from the start.
        let local = ConnLimits {
            idle,
            unauthenticated_line: MAX_REQUEST_LINE,
        };
        // Capped too: a local script in a loop (or a wedged client per cron run) must not
        // pile up tasks and buffers without bound; the idle timeout frees silent ones.
        let local_slots = Arc::new(tokio::sync::Semaphore::new(
            limits.admin_max_local_connections as usize,
        ));
        tasks.push(tokio::spawn(async move {
            loop {
                match unix.accept().await {
                    Ok((s, _)) => {
                        let Ok(permit) = local_slots.clone().try_acquire_owned() else {
                            crate::metrics::global().limit_refusal("admin_local_connections");
                            tracing::warn!(
                                "admin socket client refused: too many admin socket connections"
                            );
                            tokio::spawn(refuse(s));
                            continue;
                        };
                        let m = m.clone();
                        let ha = ha.clone();
                        tokio::spawn(async move {
                            let _permit = permit;
                            let (r, w) = s.into_split();
                            serve_conn(m, ha, r, w, None, local).await;
                        });
                    }
                    Err(e) => {
                        tracing::warn!("admin socket accept failed: {e}");
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    }
                }
            }
        }));
        let mut tcp_addr = None;
        if let Some(addr) = opts.tcp {
            let std_l = std::net::TcpListener::bind(addr)
                .with_context(|| format!("cannot bind the admin TCP address {addr}"))?;
            std_l.set_nonblocking(true)?;
            let l = tokio::net::TcpListener::from_std(std_l)?;
            tcp_addr = Some(l.local_addr()?);
            let token: Arc<Secret> = Arc::new(opts.token.clone().unwrap_or_default());
            let remote = ConnLimits {
                idle,
                unauthenticated_line: usize::try_from(
                    limits.admin_max_unauthenticated_request_bytes.0,
                )
                .unwrap_or(MAX_REQUEST_LINE)
                .min(MAX_REQUEST_LINE),
            };
            let ha_tcp = Controls::of(opts);
            let slots = Arc::new(tokio::sync::Semaphore::new(
                limits.admin_max_connections as usize,
            ));
            tasks.push(tokio::spawn(async move {
                loop {
                    match l.accept().await {
                        Ok((s, peer)) => {
                            let Ok(permit) = slots.clone().try_acquire_owned() else {
                                // Told why, then closed: the refusal holds no task.
                                crate::metrics::global().limit_refusal("admin_connections");
                                tracing::warn!(%peer, "admin TCP client refused: too many admin connections");
                                tokio::spawn(refuse(s));
                                continue;
                            };
                            tracing::debug!(%peer, "admin TCP client");
                            let m = mgr.clone();
                            let ha = ha_tcp.clone();
                            let token = token.clone();
                            tokio::spawn(async move {
                                let _permit = permit;
                                let (r, w) = s.into_split();
                                serve_conn(m, ha, r, w, Some(token), remote).await;
                            });
                        }
                        Err(e) => {
                            tracing::warn!("admin TCP accept failed: {e}");
                            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                        }
                    }
                }
            }));
            tracing::info!(
                "admin API on tcp://{} (bearer token required)",
                tcp_addr.map(|a| a.to_string()).unwrap_or_default()
            );
        }
        tracing::info!(socket = %socket.display(), "admin API listening");
        Ok(AdminServer {
            socket,
            tcp_addr,
            tasks,
        })
    }

    /// The Unix socket path.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The bound TCP address, if any.
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.tcp_addr
    }

    /// Stops accepting and removes the socket file.
    pub fn stop(self) {
        for t in &self.tasks {
            t.abort();
        }
        let _ = std::fs::remove_file(&self.socket);
    }
}

/// Constant-time comparison, so response timing does not leak the token.
fn token_matches(given: &str, want: &str) -> bool {
    let (a, b) = (given.as_bytes(), want.as_bytes());
    let mut diff = a.len() ^ b.len();
    for (i, &x) in a.iter().enumerate() {
        diff |= usize::from(x ^ b.get(i % b.len().max(1)).copied().unwrap_or(0));
    }
    diff == 0
}

/// What one admin connection may cost.
#[derive(Clone, Copy, Debug)]
struct ConnLimits {
    /// Longest wait for the next whole request line; then the connection is closed.
    idle: std::time::Duration,
    /// Longest request line until a request has carried the right token (TCP).
    unauthenticated_line: usize,
}

/// Answers a client over the connection limit with one error line and closes.
async fn refuse<S: AsyncWrite + Unpin>(mut s: S) {
    let r = Response::err("busy", "too many admin connections; try again later");
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(1),
        write_response(&mut s, &r),
    )
    .await;
}

/// Reads request lines until EOF; one response line per request. A request line must arrive
/// whole within `limits.idle` of the previous answer (so neither a silent client nor one
/// trickling bytes holds the connection), and may be at most
/// `limits.unauthenticated_line` bytes until the connection has shown the token, so an
/// unauthenticated client costs a few KiB, not a megabyte.
async fn serve_conn<R, W>(
    mgr: Arc<LunManager>,
    ha: Controls,
    r: R,
    mut w: W,
    token: Option<Arc<Secret>>,
    limits: ConnLimits,
) where
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send,
{
    let mut r = BufReader::new(r);
    let mut line = Vec::new();
    let mut authenticated = token.is_none();
    loop {
        line.clear();
        let max_line = if authenticated {
            MAX_REQUEST_LINE
        } else {
            limits.unauthenticated_line
        };
        // Bounded read: never buffer more than max_line + 1 bytes.
        let mut bounded = (&mut r).take(max_line as u64 + 1);
        let read = bounded.read_until(b'\n', &mut line);
        let n = match tokio::time::timeout(limits.idle, read).await {
            Ok(Ok(n)) => n,
            Ok(Err(e)) => {
                tracing::debug!("admin connection read error: {e}");
                return;
            }
            Err(_) => {
                crate::metrics::global().limit_refusal("admin_idle_timeout");
                tracing::debug!(
                    "admin connection closed: no whole request within {}s",
                    limits.idle.as_secs()
                );
                return;
            }
        };
        if n == 0 {
            return;
        }
        let resp = if line.len() > max_line {
            crate::metrics::global().limit_refusal("admin_request_size");
            let r = Response::err(
                "bad_request",
                format!("request longer than {max_line} bytes"),
            );
            let _ = write_response(&mut w, &r).await;
            return;
        } else if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        } else {
            match serde_json::from_slice::<RequestLine>(&line) {
                Err(e) => Response::err("bad_request", format!("invalid request: {e}")),
                Ok(req) => {
                    let authorized = match &token {
                        None => true,
                        Some(want) => req
                            .token
                            .as_ref()
                            .is_some_and(|g| token_matches(g.expose(), want.expose())),
                    };
                    if authorized {
                        authenticated = true;
                        match req.request {
                            // Byte-stream mode: the connection carries one stream and ends.
                            Request::ReplicaSend {
                                volume,
                                snapshot,
                                from,
                                resume,
                            } => {
                                let args = stream::SendArgs {
                                    volume,
                                    snapshot,
                                    from,
                                    resume,
                                };
                                stream::serve_send(&mgr, args, &mut w, limits.idle).await;
                                return;
                            }
                            Request::ReplicaReceive { volume, pool } => {
                                stream::serve_receive(
                                    &mgr,
                                    pool,
                                    volume,
                                    &mut r,
                                    &mut w,
                                    limits.idle,
                                )
                                .await;
                                return;
                            }
                            r @ (Request::HaStatus | Request::HaMove { .. }) => {
                                dispatch_ha(ha.ha.clone(), r).await
                            }
                            r @ (Request::ReplicaCreate(_)
                            | Request::ReplicaList
                            | Request::ReplicaPause { .. }
                            | Request::ReplicaResume { .. }
                            | Request::ReplicaSync { .. }
                            | Request::ReplicaDelete { .. }
                            | Request::ReplicaPromote { .. }
                            | Request::ReplicaReverse { .. }
                            | Request::ReplicaIdentity) => {
                                dispatch_replication(ha.replication.clone(), r).await
                            }
                            r => dispatch(&mgr, r).await,
                        }
                    } else {
                        Response::err("unauthorized", "missing or wrong bearer token")
                    }
                }
            }
        };
        if write_response(&mut w, &resp).await.is_err() {
            return;
        }
    }
}

async fn write_response<W: AsyncWrite + Unpin>(w: &mut W, r: &Response) -> std::io::Result<()> {
    let mut out = serde_json::to_vec(r).map_err(std::io::Error::other)?;
    out.push(b'\n');
    w.write_all(&out).await?;
    w.flush().await
}

fn reply<T: Serialize>(r: Result<T, MgrError>) -> Response {
    match r {
        Ok(v) => match serde_json::to_value(v) {
            Ok(v) => Response::ok(v),
            Err(e) => Response::err("internal", format!("cannot encode the result: {e}")),
        },
        Err(e) => Response::mgr_err(&e),
    }
}

/// The daemon's controllers the admin API reaches besides the LUN manager.
#[derive(Clone)]
struct Controls {
    ha: Option<Arc<dyn HaControl>>,
    replication: Option<Arc<Replication>>,
}

impl Controls {
    fn of(opts: &AdminOptions) -> Controls {
        Controls {
            ha: opts.ha.clone(),
            replication: opts.replication.clone(),
        }
    }
}

fn anyhow_err(e: anyhow::Error) -> Response {
    match e.downcast_ref::<MgrError>() {
        Some(m) => Response::mgr_err(m),
        None => Response::err("invalid", format!("{e:#}")),
    }
}

fn encode_or<T: Serialize>(r: anyhow::Result<T>) -> Response {
    match r {
        Ok(v) => encode(&v),
        Err(e) => anyhow_err(e),
    }
}

/// A group relationship's `map` (`member=remote`) as members; checks that a relationship
/// names one LUN or one group, not both or neither.
fn replica_map(c: &proto::ReplicaCreate) -> anyhow::Result<Vec<GroupMember>> {
    match (&c.group, c.volume.is_empty()) {
        (Some(_), false) => anyhow::bail!("give --volume or --group, not both"),
        (None, true) => {
            anyhow::bail!("give the LUN to replicate (--volume) or a consistency group (--group)")
        }
        (None, false) if !c.map.is_empty() => {
            anyhow::bail!(
                "--map renames a consistency group's members: use --remote-volume for one LUN"
            )
        }
        (Some(_), true) if c.remote_volume.is_some() => {
            anyhow::bail!("--remote-volume names one LUN's replica: map a group's members with --map MEMBER=REMOTE")
        }
        _ => {}
    }
    c.map
        .iter()
        .map(|m| {
            let (v, r) = m
                .split_once('=')
                .ok_or_else(|| anyhow::anyhow!("--map {m:?}: expected MEMBER=REMOTE-VOLUME"))?;
            Ok(GroupMember {
                volume: v.to_string(),
                remote_volume: r.to_string(),
            })
        })
        .collect()
}

/// Executes a `replica.*` relationship request on the replication service.
pub async fn dispatch_replication(repl: Option<Arc<Replication>>, req: Request) -> Response {
    tracing::debug!(?req, "admin request");
    let Some(repl) = repl else {
        return Response::err(
            "not_configured",
            "replication is not configured on this lunard (no replication: section; see docs/replication.md)",
        );
    };
    match req {
        Request::ReplicaCreate(c) => {
            let members = match replica_map(&c) {
                Ok(m) => m,
                Err(e) => return anyhow_err(e),
            };
            let rec = ReplicaRecord {
                remote_volume: c.remote_volume.unwrap_or_else(|| c.volume.clone()),
                name: c.name,
                role: ReplicaRole::Source,
                volume: c.volume,
                pool: String::new(),
                peer: c.peer,
                every_secs: c.every_secs,
                keep_local: c.keep_local,
                keep_remote: c.keep_remote,
                bandwidth: c.bandwidth,
                paused: false,
                created_unix: crate::lunmgr::now_unix_secs(),
                replicated_as_of_ms: None,
                last_transfer: None,
                group: c.group,
                members,
            };
            encode_or(repl.create(rec).await)
        }
        Request::ReplicaList => encode(&repl.list().await),
        Request::ReplicaPause { name } => encode_or(repl.set_paused(&name, true).await),
        Request::ReplicaResume { name } => encode_or(repl.set_paused(&name, false).await),
        Request::ReplicaSync { name } => {
            encode_or(repl.sync(&name).map(|()| serde_json::json!({"sync": name})))
        }
        Request::ReplicaDelete { name } => encode_or(repl.delete(&name).await),
        Request::ReplicaPromote { name } => encode_or(repl.promote(&name).await),
        Request::ReplicaReverse { name } => encode_or(repl.reverse(&name).await),
        Request::ReplicaIdentity => {
            encode(&serde_json::json!({"fingerprint": repl.fingerprint().to_string()}))
        }
        _ => Response::err("internal", "not a replica request"),
    }
}

/// Executes an `ha.*` request on the HA coordinator, off the async workers (it reads and
/// writes RADOS objects).
pub async fn dispatch_ha(ha: Option<Arc<dyn HaControl>>, req: Request) -> Response {
    tracing::debug!(?req, "admin request");
    let Some(ha) = ha else {
        return Response::err(
            "not_ha",
            "this lunard is not a gateway of an HA group (no ha: section in its configuration)",
        );
    };
    let done = tokio::task::spawn_blocking(move || match req {
        Request::HaMove { pool, to } => match ha.move_to(pool.as_deref(), &to) {
            Ok(m) => encode(&m),
            Err(e) => Response::err(e.kind(), e.to_string()),
        },
        _ => encode(&ha.status()),
    })
    .await;
    done.unwrap_or_else(|e| Response::err("internal", format!("the HA request failed: {e}")))
}

fn encode<T: Serialize>(v: &T) -> Response {
    match serde_json::to_value(v) {
        Ok(v) => Response::ok(v),
        Err(e) => internal(&e),
    }
}

fn internal(e: &serde_json::Error) -> Response {
    Response::err("internal", format!("cannot encode the result: {e}"))
}

/// The first of a list of pool views (`pool.status`, `pool.show`: one pool).
fn first_pool(
    mut v: Vec<crate::lunmgr::PoolView>,
) -> crate::lunmgr::MgrResult<crate::lunmgr::PoolView> {
    if v.is_empty() {
        return Err(crate::lunmgr::MgrError::NotFound {
            kind: crate::lunmgr::ObjectKind::Pool,
            name: String::new(),
        });
    }
    Ok(v.swap_remove(0))
}

/// Executes one request.
pub async fn dispatch(mgr: &Arc<LunManager>, mut req: Request) -> Response {
    tracing::debug!(?req, "admin request");
    canonical_targets(mgr, &mut req);
    match req {
        Request::PoolStatus => reply(mgr.pool_status(None).and_then(first_pool)),
        Request::PoolList => reply(mgr.pool_status(None)),
        Request::PoolShow { name } => reply(mgr.pool_status(Some(&name)).and_then(first_pool)),
        Request::PoolCheck | Request::PoolCheckNamed { .. } => {
            let name = match &req {
                Request::PoolCheckNamed { name } => Some(name.as_str()),
                _ => None,
            };
            reply(
                mgr.pool_check(name)
                    .await
                    .map(|(clean, errors, leaked)| PoolCheck {
                        clean,
                        errors,
                        leaked_chunks: leaked,
                    }),
            )
        }
        Request::LunCreate(c) => reply(mgr.lun_create(c).await),
        Request::LunList => reply(Ok(mgr.lun_list().await)),
        Request::LunShow { name } => reply(mgr.lun_show(&name).await),
        Request::LunResize {
            name,
            size_bytes,
            shrink,
        } => reply(mgr.lun_resize(&name, size_bytes, shrink).await),
        Request::LunSet(s) => reply(mgr.lun_set(s).await),
        Request::LunDelete {
            name,
            force,
            recursive,
        } => reply(
            mgr.lun_delete(&name, force, recursive)
                .await
                .map(|snapshots| Deleted {
                    deleted: name,
                    snapshots,
                }),
        ),
        Request::LunMap {
            name,
            target,
            lun_id,
        } => reply(mgr.lun_map(&name, &target, lun_id).await),
        Request::LunUnmap {
            name,
            target,
            force,
        } => reply(
            mgr.lun_unmap(&name, &target, force)
                .await
                .map(|()| Unmapped {
                    unmapped: name,
                    target,
                }),
        ),
        Request::SnapshotCreate { lun, name } => reply(mgr.snapshot_create(&lun, &name).await),
        Request::SnapshotGroup { group, luns } => reply(mgr.snapshot_group(&group, &luns).await),
        Request::SnapshotList { lun } => reply(mgr.snapshot_list(lun.as_deref()).await),
        Request::SnapshotDelete { lun, name } => {
            reply(mgr.snapshot_delete(&lun, &name).await.map(|()| Deleted {
                deleted: format!("{lun}@{name}"),
                snapshots: Vec::new(),
            }))
        }
        Request::SnapshotGroupDelete { group } => reply(
            mgr.snapshot_group_delete(&group)
                .await
                .map(|()| DeletedGroup {
                    deleted_group: group,
                }),
        ),
        Request::CgCreate { name, luns } => reply(mgr.cg_create(&name, &luns).await),
        Request::CgList => reply(mgr.cg_list().await),
        Request::CgDelete { name } => reply(mgr.cg_delete(&name).await.map(|()| Deleted {
            deleted: name,
            snapshots: Vec::new(),
        })),
        Request::CgSnapshot { name, snapshot } => reply(mgr.cg_snapshot(&name, &snapshot).await),
        Request::SnapshotRollback { lun, name, force } => reply(
            mgr.snapshot_rollback(&lun, &name, force)
                .await
                .map(|()| RolledBack {
                    rolled_back: lun,
                    snapshot: name,
                }),
        ),
        Request::CloneCreate(c) => reply(mgr.clone_create(c).await),
        Request::CloneList { purge } => reply(mgr.clone_list(purge).await),
        Request::CloneCancel { name } => reply(mgr.clone_cancel(&name).await),
        Request::CloneSplit { name } => reply(mgr.clone_split(&name).await),
        Request::CloneRefresh {
            name,
            source,
            force,
        } => reply(mgr.clone_refresh(&name, source.as_deref(), force).await),
        Request::TargetCreate {
            iqn,
            fabric,
            alias,
            allow_any,
        } => {
            let fabric = fabric.as_deref().unwrap_or("iscsi");
            match crate::fabric::Fabric::parse(fabric) {
                Ok(f) => reply(mgr.target_create(&iqn, f, alias, allow_any).await),
                Err(_) => reply::<()>(Err(MgrError::InvalidValue {
                    what: "fabric",
                    value: format!("{fabric:?}"),
                    reason: format!("use {}", crate::fabric::EXPECTED_FABRICS),
                })),
            }
        }
        Request::TargetList => reply(Ok(mgr.target_list().await)),
        Request::TargetDelete { iqn, force } => {
            reply(mgr.target_delete(&iqn, force).await.map(|()| Deleted {
                deleted: iqn,
                snapshots: Vec::new(),
            }))
        }
        Request::AclAdd { target, initiator } => reply(mgr.acl_add(&target, &initiator).await),
        Request::AclRemove { target, initiator } => {
            reply(mgr.acl_remove(&target, &initiator).await)
        }
        Request::AclList { target } => {
            let all = mgr.target_list().await;
            reply(
                all.into_iter()
                    .find(|t| t.iqn == target)
                    .ok_or(MgrError::NotFound {
                        kind: ObjectKind::Target,
                        name: target,
                    }),
            )
        }
        Request::ChapSet {
            target,
            username,
            secret,
            mutual_username,
            mutual_secret,
        } => reply(
            mgr.chap_set(
                &target,
                ChapRecord {
                    username,
                    secret,
                    mutual_username,
                    mutual_secret,
                },
            )
            .await,
        ),
        Request::ChapClear { target } => reply(mgr.chap_clear(&target).await),
        Request::SessionList { target } => reply(mgr.session_list(target.as_deref()).await),
        Request::SessionClose { target } => reply(
            mgr.session_close(&target)
                .await
                .map(|n| ClosedSessions { closed_sessions: n }),
        ),
        Request::ConfigExport => reply(mgr.export_yaml().await),
        Request::SnapshotDiff { lun, from, to } => {
            reply(mgr.snapshot_diff(&lun, from.as_deref(), &to).await)
        }
        Request::ReplicaReceiveStatus { pool } => {
            reply(mgr.replica_receive_status(pool.as_deref()))
        }
        Request::ReplicaReceiveAbort { volume, pool } => reply(
            mgr.replica_receive_abort(pool.as_deref(), &volume)
                .await
                .map(|()| Deleted {
                    deleted: format!("staged receive of {volume}"),
                    snapshots: Vec::new(),
                }),
        ),
        Request::ReplicaSend { .. } | Request::ReplicaReceive { .. } => Response::err(
            "bad_request",
            "replica.send and replica.receive carry a byte stream: send them as the request \
             of an admin connection (lunarctl replica send / receive)",
        ),
        r @ (Request::HaStatus | Request::HaMove { .. }) => dispatch_ha(None, r).await,
        r @ (Request::ReplicaCreate(_)
        | Request::ReplicaList
        | Request::ReplicaPause { .. }
        | Request::ReplicaResume { .. }
        | Request::ReplicaSync { .. }
        | Request::ReplicaDelete { .. }
        | Request::ReplicaPromote { .. }
        | Request::ReplicaReverse { .. }
        | Request::ReplicaIdentity) => dispatch_replication(None, r).await,
    }
}

/// Target names in requests become the stored spelling: a WWPN may be typed as
/// `naa.21000024ff314c48` or `21:00:00:24:ff:31:4c:48` for the same FC target.
fn canonical_targets(mgr: &LunManager, req: &mut Request) {
    let fix = |t: &mut String| *t = mgr.target_key(t);
    match req {
        Request::LunMap { target, .. }
        | Request::LunUnmap { target, .. }
        | Request::AclAdd { target, .. }
        | Request::AclRemove { target, .. }
        | Request::AclList { target }
        | Request::ChapSet { target, .. }
        | Request::ChapClear { target }
        | Request::SessionClose { target } => fix(target),
        Request::TargetDelete { iqn, .. } => fix(iqn),
        Request::SessionList { target: Some(t) } => fix(t),
        Request::LunCreate(c) => {
            if let Some(t) = c.target.as_mut() {
                fix(t)
            }
        }
        Request::CloneCreate(c) => {
            if let Some(t) = c.target.as_mut() {
                fix(t)
            }
        }
        _ => {}
    }
}
