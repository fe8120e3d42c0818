//! Daemon lifecycle: open the pool, build the targets, bind the portals, and shut down
//! cleanly (stop accepting, let in-flight commands finish, flush and close the pool).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use std::os::unix::fs::DirBuilderExt;

use anyhow::Context;
use storage_core::{Pool, PoolOptions};
use tokio::task::JoinHandle;

use crate::admin::{AdminOptions, AdminServer};
use crate::config::Config;
use crate::iscsi::frontend::IscsiFrontend;
use crate::iscsi::{Server, TargetEntry};
use crate::lunmgr::LunManager;

/// A pool file created by an older lunard under a lax umask may be readable by other local
/// users (every LUN's data is in it): say so. Block devices are left to their udev rules.
fn warn_if_readable_by_others(pool_path: &std::path::Path) {
    use std::os::unix::fs::MetadataExt;
    let file = if pool_path.is_dir() {
        pool_path.join("pool.img")
    } else {
        pool_path.to_path_buf()
    };
    if let Ok(m) = std::fs::metadata(&file) {
        if m.is_file() && m.mode() & 0o077 != 0 {
            tracing::warn!(
                path = %file.display(),
                "the pool file has mode {:04o}: other local users may read the LUNs' data; \
                 run `chmod 600 {}`",
                m.mode() & 0o7777,
                file.display()
            );
        }
    }
}

/// How long shutdown lets in-flight commands run before aborting them.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// A running daemon.
pub struct Daemon {
    /// The local pools by name, in configuration order; empty on a gateway of an HA group
    /// (the coordinator opens and closes the pool as ownership moves).
    pools: Vec<(String, Pool)>,
    #[cfg(feature = "ceph")]
    gateway: Option<crate::ha::gateway::Gateway>,
    server: Arc<Server>,
    addrs: Vec<SocketAddr>,
    accept_tasks: Vec<JoinHandle<()>>,
    lunmgr: Arc<LunManager>,
    admin: Option<AdminServer>,
    lio: Arc<crate::lio::LioFabric>,
    /// The replication service, its listener's stop switch and bound address.
    replication: Option<(
        Arc<crate::replica::service::Replication>,
        tokio::sync::watch::Sender<bool>,
        Option<SocketAddr>,
    )>,
}

impl Daemon {
    /// Opens (or creates) the pool, creates missing volumes, exports the targets and starts
    /// listening on every portal.
    pub async fn start(config: Config) -> anyhow::Result<Daemon> {
        Daemon::start_with(config, AdminOptions::default()).await
    }

    /// As [`start`](Self::start), with the admin API exposed as `admin` says.
    pub async fn start_with(config: Config, admin: AdminOptions) -> anyhow::Result<Daemon> {
        if config.ha.is_some() {
            return Daemon::start_gateway(config, admin).await;
        }
        // The data directory holds the CHAP secrets (state.json), the pools and the admin
        // socket: created private to lunard's user (0700) whatever the umask. An existing
        // directory keeps its mode (each file in it is private by itself).
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&config.data_dir)
            .with_context(|| {
                format!("cannot create data directory {}", config.data_dir.display())
            })?;
        let mut pools: Vec<(String, Pool)> = Vec::new();
        for cfg in config.pool_cfgs() {
            let name = cfg.name.clone().unwrap_or_default();
            match open_pool(&config, &cfg).await {
                Ok(p) => pools.push((name, p)),
                Err(e) => {
                    close_pools(pools).await;
                    return Err(e);
                }
            }
        }
        let (lunmgr, targets) = match LunManager::open_with_pools(&config, pools.clone()).await {
            Ok(t) => t,
            Err(e) => {
                close_pools(pools).await;
                return Err(e);
            }
        };
        Daemon::serve(&config, admin, pools, lunmgr, targets).await
    }

    /// A gateway of an HA group: starts as standby over the group's shared state (never
    /// waiting for the pool); the coordinator opens the pool when it owns the group.
    #[cfg(feature = "ceph")]
    async fn start_gateway(config: Config, mut admin: AdminOptions) -> anyhow::Result<Daemon> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&config.data_dir)
            .with_context(|| {
                format!("cannot create data directory {}", config.data_dir.display())
            })?;
        let started = crate::ha::gateway::Gateway::start(&config).await?;
        admin.ha = Some(started.gateway.control.clone());
        let gateway = started.gateway;
        match Daemon::serve(&config, admin, Vec::new(), started.lunmgr, started.targets).await {
            Ok(mut d) => {
                gateway.set_portals(d.addrs.iter().map(|a| a.to_string()).collect());
                d.gateway = Some(gateway);
                Ok(d)
            }
            Err(e) => {
                gateway.shutdown().await;
                Err(e)
            }
        }
    }

    /// Without Ceph support there are no HA gateways.
    #[cfg(not(feature = "ceph"))]
    async fn start_gateway(_config: Config, _admin: AdminOptions) -> anyhow::Result<Daemon> {
        anyhow::bail!(
            "ha: this lunard was built without Ceph support (cargo feature `ceph`), so it \
             cannot be a gateway of an HA group"
        )
    }

    /// Exports the targets on the front ends, listens on the portals and starts the admin
    /// API; closes `pools` if any of that fails.
    async fn serve(
        config: &Config,
        mut admin: AdminOptions,
        pools: Vec<(String, Pool)>,
        lunmgr: Arc<LunManager>,
        targets: Vec<(crate::fabric::TargetSpec, Arc<crate::scsi::ScsiTarget>)>,
    ) -> anyhow::Result<Daemon> {
        let close = close_pools;
        // iSCSI targets go to lunard's own server; Fibre Channel and loopback targets to
        // LIO through TCMU.
        let (lio_targets, targets): (Vec<_>, Vec<_>) = targets
            .into_iter()
            .partition(|(spec, _)| spec.fabric.is_lio());
        let targets = targets
            .into_iter()
            .map(|(spec, scsi)| TargetEntry::from_spec(spec, scsi))
            .collect();
        let server = Server::new(config, targets);
        let lio = crate::lio::LioFabric::start(&config.lio);
        for (spec, scsi) in lio_targets {
            lio.add(spec, scsi);
        }
        lio.sweep();
        lunmgr.attach_frontend(Arc::new(IscsiFrontend(server.clone())));
        lunmgr.attach_frontend(lio.clone());

        let mut addrs = Vec::new();
        let mut accept_tasks = Vec::new();
        for (i, p) in config.portals.iter().enumerate() {
            match server.listen(p) {
                Ok((addr, task)) => {
                    addrs.push(addr);
                    accept_tasks.push(task);
                }
                Err(e) => {
                    server.shutdown(Duration::from_secs(1)).await;
                    lio.shutdown().await;
                    close(pools).await;
                    return Err(anyhow::anyhow!(
                        "portals[{i}]: cannot listen on {}: {e}",
                        p.listen
                    ));
                }
            }
        }
        let replication = match &config.replication {
            None => None,
            Some(rc) => {
                let (tx, rx) = tokio::sync::watch::channel(false);
                match crate::replica::service::Replication::start(
                    lunmgr.clone(),
                    rc,
                    &config.data_dir,
                    rx,
                )
                .await
                {
                    Ok((svc, addr)) => {
                        admin.replication = Some(svc.clone());
                        Some((svc, tx, addr))
                    }
                    Err(e) => {
                        server.shutdown(Duration::from_secs(1)).await;
                        lio.shutdown().await;
                        close(pools).await;
                        return Err(e.context("replication"));
                    }
                }
            }
        };
        let admin =
            match AdminServer::start(lunmgr.clone(), &config.data_dir, &admin, &config.limits) {
                Ok(a) => Some(a),
                Err(e) => {
                    server.shutdown(Duration::from_secs(1)).await;
                    lio.shutdown().await;
                    close(pools).await;
                    return Err(e);
                }
            };
        Ok(Daemon {
            pools,
            #[cfg(feature = "ceph")]
            gateway: None,
            server,
            addrs,
            accept_tasks,
            lunmgr,
            admin,
            lio,
            replication,
        })
    }

    /// Where the replication listener listens (port 0 resolved), when it does.
    pub fn replication_addr(&self) -> Option<SocketAddr> {
        self.replication.as_ref().and_then(|r| r.2)
    }

    /// The replication service, when configured.
    pub fn replication(&self) -> Option<&Arc<crate::replica::service::Replication>> {
        self.replication.as_ref().map(|r| &r.0)
    }

    /// Addresses actually listened on (port 0 resolved).
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// The iSCSI server state.
    pub fn server(&self) -> &Arc<Server> {
        &self.server
    }

    /// The first local storage pool (the one pool of a lunard that serves one); `None` on
    /// a gateway of an HA group, whose pool comes and goes with ownership (see
    /// [`LunManager`]).
    pub fn pool(&self) -> Option<&Pool> {
        self.pools.first().map(|(_, p)| p)
    }

    /// The local storage pools with their names, in configuration order (empty on a
    /// gateway of an HA group).
    pub fn pools(&self) -> &[(String, Pool)] {
        &self.pools
    }

    /// The local pool named `name`.
    pub fn pool_named(&self, name: &str) -> Option<&Pool> {
        self.pools.iter().find(|(n, _)| n == name).map(|(_, p)| p)
    }

    /// The HA coordinators (one per pool, by name), on a gateway of an HA group.
    #[cfg(feature = "ceph")]
    pub fn ha(&self) -> Option<&[(String, Arc<crate::ha::shell::Coordinator>)]> {
        self.gateway.as_ref().map(|g| g.coordinators.as_slice())
    }

    /// The LUN manager (runtime targets, LUNs, snapshots, clones).
    pub fn lunmgr(&self) -> &Arc<LunManager> {
        &self.lunmgr
    }

    /// The admin API listeners.
    pub fn admin(&self) -> Option<&AdminServer> {
        self.admin.as_ref()
    }

    /// Stops accepting, lets in-flight commands finish (or aborts them after
    /// [`SHUTDOWN_GRACE`]), closes every connection, then flushes and closes the pool.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        if let Some(a) = self.admin {
            a.stop();
        }
        if let Some((svc, stop, _)) = &self.replication {
            let _ = stop.send(true);
            svc.stop_all();
        }
        // An owner steps down first (stops I/O, detaches and closes the pool, releases the
        // RBD lock and the lease), so a standby takes over without waiting for the lease
        // to expire.
        #[cfg(feature = "ceph")]
        if let Some(g) = self.gateway {
            g.shutdown().await;
        }
        self.lunmgr.stop_jobs();
        self.server.shutdown(SHUTDOWN_GRACE).await;
        // Hosts on LIO fabrics see their LUNs go before the pool closes under them.
        self.lio.shutdown().await;
        for t in self.accept_tasks {
            let _ = t.await;
        }
        // Every pool is flushed and closed, even after another one failed to.
        let mut first_err = None;
        for (name, pool) in self.pools {
            let r = match pool.flush().await {
                Ok(()) => pool.close().await.context("closing the pool"),
                Err(e) => Err(anyhow::Error::from(e).context("flushing the pool")),
            };
            if let Err(e) = r {
                tracing::error!(pool = %name, "{e:#}");
                first_err.get_or_insert(e.context(format!("pool {name:?}")));
            }
        }
        first_err.map_or(Ok(()), Err)
    }
}

/// Opens (or creates) the file or block-device pool `cfg` describes.
async fn open_pool(config: &Config, cfg: &crate::config::PoolCfg) -> anyhow::Result<Pool> {
    let pool_path = config.pool_path(cfg);
    let opts = PoolOptions {
        chunk_size: cfg.chunk_size.0 as u32,
        capacity_bytes: cfg.capacity.map(|c| c.0),
        soft_threshold_pct: cfg.soft_threshold_pct,
    };
    // Named when there is a choice (the message of a single pool stays as it was).
    let named = cfg.name.as_ref().filter(|_| !config.pools.is_empty());
    let pool = Pool::open_or_create(&pool_path, &opts)
        .await
        .with_context(|| match named {
            None => format!("cannot open pool at {}", pool_path.display()),
            Some(n) => format!("cannot open pool {n:?} at {}", pool_path.display()),
        })?;
    tracing::info!(pool = cfg.name.as_deref().unwrap_or_default(), path = %pool_path.display(), "pool open");
    warn_if_readable_by_others(&pool_path);
    Ok(pool)
}

/// Closes pools a failed start opened.
async fn close_pools(pools: Vec<(String, Pool)>) {
    for (_, p) in pools {
        let _ = p.close().await;
    }
}
