//! Daemon lifecycle: open the pool, build the targets, bind the portals, and shut down
//! cleanly (stop accepting, let in-flight commands finish, flush and close the pool).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use storage_core::{Pool, PoolOptions, StorageError};
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::iscsi::{Server, TargetEntry};
// --- admin (issue 4) ---
use crate::admin::{AdminOptions, AdminServer};
use crate::lunmgr::LunManager;
// --- end admin ---
use crate::scsi::ScsiTarget;

/// How long shutdown lets in-flight commands run before aborting them.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// A running daemon.
pub struct Daemon {
    pool: Pool,
    server: Arc<Server>,
    addrs: Vec<SocketAddr>,
    accept_tasks: Vec<JoinHandle<()>>,
    // --- admin (issue 4) ---
    lunmgr: Arc<LunManager>,
    admin: Option<AdminServer>,
    // --- end admin ---
}

impl Daemon {
    /// Opens (or creates) the pool, creates missing volumes, exports the targets and starts
    /// listening on every portal.
    pub async fn start(config: Config) -> anyhow::Result<Daemon> {
        // --- admin (issue 4) ---
        Daemon::start_with(config, AdminOptions::default()).await
    }

    /// As [`start`](Self::start), with the admin API exposed as `admin` says.
    pub async fn start_with(config: Config, admin: AdminOptions) -> anyhow::Result<Daemon> {
        // --- end admin ---
        let pool_path = if config.pool.path.is_absolute() {
            config.pool.path.clone()
        } else {
            config.data_dir.join(&config.pool.path)
        };
        std::fs::create_dir_all(&config.data_dir).with_context(|| {
            format!("cannot create data directory {}", config.data_dir.display())
        })?;
        let opts = PoolOptions {
            chunk_size: config.pool.chunk_size.0 as u32,
            capacity_bytes: config.pool.capacity.map(|c| c.0),
            soft_threshold_pct: config.pool.soft_threshold_pct,
        };
        let pool = Pool::open_or_create(&pool_path, &opts)
            .await
            .with_context(|| format!("cannot open pool at {}", pool_path.display()))?;
        tracing::info!(path = %pool_path.display(), "pool open");

        // Persistent reservations with APTPL live under <data dir>/pr (issue 5); set before
        // LUNs are attached so their saved state reloads.
        crate::scsi::pr::set_state_dir(config.data_dir.join("pr"))?;
        // --- admin (issue 4): the LUN manager's persisted state decides the targets ---
        let (lunmgr, targets) = match LunManager::open(&config, pool.clone()).await {
            Ok(t) => t,
            Err(e) => {
                let _ = pool.close().await;
                return Err(e);
            }
        };
        let server = Server::new(&config, targets);
        lunmgr.attach_exports(Arc::new(crate::lunmgr::exports::ServerExports(
            server.clone(),
        )));
        // --- end admin ---

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
                    let _ = pool.close().await;
                    return Err(anyhow::anyhow!(
                        "portals[{i}]: cannot listen on {}: {e}",
                        p.listen
                    ));
                }
            }
        }
        // --- admin (issue 4) ---
        let admin = match AdminServer::start(lunmgr.clone(), &config.data_dir, &admin) {
            Ok(a) => Some(a),
            Err(e) => {
                server.shutdown(Duration::from_secs(1)).await;
                let _ = pool.close().await;
                return Err(e);
            }
        };
        // --- end admin ---
        Ok(Daemon {
            pool,
            server,
            addrs,
            accept_tasks,
            lunmgr,
            admin,
        })
    }

    /// Addresses actually listened on (port 0 resolved).
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// The iSCSI server state.
    pub fn server(&self) -> &Arc<Server> {
        &self.server
    }

    /// The storage pool.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    // --- admin (issue 4) ---
    /// The LUN manager (runtime targets, LUNs, snapshots, clones).
    pub fn lunmgr(&self) -> &Arc<LunManager> {
        &self.lunmgr
    }

    /// The admin API listeners.
    pub fn admin(&self) -> Option<&AdminServer> {
        self.admin.as_ref()
    }
    // --- end admin ---

    /// Stops accepting, lets in-flight commands finish (or aborts them after
    /// [`SHUTDOWN_GRACE`]), closes every connection, then flushes and closes the pool.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        // --- admin (issue 4) ---
        if let Some(a) = self.admin {
            a.stop();
        }
        self.lunmgr.stop_jobs();
        // --- end admin ---
        self.server.shutdown(SHUTDOWN_GRACE).await;
        for t in self.accept_tasks {
            let _ = t.await;
        }
        self.pool.flush().await.context("flushing the pool")?;
        self.pool.close().await.context("closing the pool")?;
        Ok(())
    }
}

// --- admin (issue 4): superseded by LunManager::open; kept for the daemon helper ---
#[allow(dead_code)]
// --- end admin ---
/// Creates one device server per configured target and attaches its LUNs, creating volumes
/// that do not exist yet.
async fn build_targets(config: &Config, pool: &Pool) -> anyhow::Result<Vec<TargetEntry>> {
    let mut out = Vec::new();
    for (ti, t) in config.targets.iter().enumerate() {
        let scsi = ScsiTarget::new(&t.iqn);
        for (li, lun) in t.luns.iter().enumerate() {
            let field = format!("targets[{ti}].luns[{li}]");
            match pool.volume_info(&lun.volume) {
                Ok(info) => {
                    if info.size_bytes != lun.size.0 || info.block_size != lun.block_size {
                        tracing::warn!(
                            volume = %lun.volume,
                            "{field}: existing volume is {} bytes with {}-byte blocks; configuration says {} with {}-byte blocks; using the volume as it is",
                            info.size_bytes, info.block_size, lun.size.0, lun.block_size
                        );
                    }
                }
                Err(StorageError::NotFound(_)) => {
                    pool.create_volume(
                        &lun.volume,
                        lun.size.0,
                        lun.block_size,
                        lun.guarantee.into(),
                    )
                    .await
                    .with_context(|| format!("{field}: cannot create volume {:?}", lun.volume))?;
                    tracing::info!(volume = %lun.volume, size = %lun.size, "created volume");
                }
                Err(e) => return Err(anyhow::anyhow!("{field}: volume {:?}: {e}", lun.volume)),
            }
            let vol = pool
                .volume(&lun.volume)
                .with_context(|| format!("{field}: cannot open volume {:?}", lun.volume))?;
            scsi.add_lun(lun.id, vol, lun.read_only)
                .with_context(|| format!("{field}: cannot attach LUN {}", lun.id))?;
        }
        tracing::info!(target = %t.iqn, luns = t.luns.len(), "target exported");
        out.push(TargetEntry {
            cfg: t.clone(),
            scsi,
        });
    }
    Ok(out)
}
