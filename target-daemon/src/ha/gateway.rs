//! A lunard as a gateway of an HA group: the pieces the daemon wires instead of opening a
//! local pool.
//!
//! - a RADOS client for the group's shared state (the LUN manager's state, persistent
//!   reservations, the gateway registry), separate from the coordinator's: fencing
//!   blocklists the coordinator's client (the one that held the RBD lock), and the shared
//!   state must stay readable through that, so a fenced gateway comes back as a standby
//!   that still answers REPORT TARGET PORT GROUPS and PERSISTENT RESERVE IN;
//! - the ALUA view, the LUN manager started without a pool (every gateway starts as
//!   standby: start-up never waits for the pool), its state store and PR store in RADOS,
//!   and a reload whenever another gateway saves the state;
//! - the registry heartbeat (own record, and the peers' port groups for the ALUA views);
//! - one [`Coordinator`] per pool (each pool is its own HA unit: lease
//!   `lunar.<group>.<pool>.lease`, owner, epoch, RBD lock, planned move), whose
//!   [`PoolHost`] here is the LUN manager (that pool's LUNs) plus the pool's ALUA view: a
//!   LUN reports its pool's port group states, so one target can expose LUNs of pools
//!   owned by different gateways.

use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use parking_lot::Mutex;
use storage_core::ceph::{CephConfig, IoCtx, Rados};
use storage_core::{Pool, PoolOptions};
use tokio::task::JoinHandle;

use super::groups::Peer;
use super::liveness::{dead_after, heartbeat_every, Liveness};
use super::shell::{Access, BoxFuture, Coordinator, PoolHost, ShellConfig};
use crate::config::{Config, HaCfg};
use crate::fabric::TargetSpec;
use crate::lunmgr::GatewayOpen;
use crate::lunmgr::LunManager;
use crate::scsi::alua::{AccessState, AluaView, GroupState};
use crate::scsi::ScsiTarget;
use crate::shared::rados::RadosObjects;
use crate::shared::{GatewayRecord, GatewayRegistry, SharedPrStore, SharedStateStore};

/// How often a gateway compares the versions of its LUNs' reservation objects with the
/// newest it heard of (a backstop for a lost notice; one small read per LUN).
const PR_VERSION_CHECK: std::time::Duration = std::time::Duration::from_secs(10);

/// The LUN manager and one pool's ALUA view, as that pool's coordinator drives them.
struct GatewayHost {
    mgr: Arc<LunManager>,
    /// The pool this host attaches and detaches.
    pool: String,
    alua: Arc<AluaView>,
    me: String,
    port_group: u16,
    /// Every gateway of the group, this one included, with its liveness.
    peers: Mutex<Vec<Peer>>,
    access: Mutex<Access>,
}

impl GatewayHost {
    /// Applies the current access and peers to the ALUA view.
    fn apply(&self) {
        let access = self.access.lock().clone();
        let peers = self.peers.lock().clone();
        let groups = super::groups::group_states(&self.me, self.port_group, &access, &peers);
        self.alua.set_groups(groups);
    }

    fn set_peers(&self, peers: Vec<Peer>) {
        let changed = {
            let mut p = self.peers.lock();
            let changed = *p != peers;
            *p = peers;
            changed
        };
        if changed {
            self.apply();
        }
    }
}

impl PoolHost for GatewayHost {
    fn attach(&self, pool: Pool) -> BoxFuture<anyhow::Result<()>> {
        let mgr = self.mgr.clone();
        let name = self.pool.clone();
        Box::pin(async move {
            mgr.attach_pool(&name, pool)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))
        })
    }

    fn detach(&self) -> BoxFuture<Option<Pool>> {
        let mgr = self.mgr.clone();
        let name = self.pool.clone();
        Box::pin(async move {
            if !mgr.has_pool_named(&name) {
                return None;
            }
            match mgr.detach_pool(&name).await {
                Ok(p) => Some(p),
                Err(e) => {
                    tracing::warn!(pool = %name, "detaching the pool: {e}");
                    None
                }
            }
        })
    }

    fn set_access(&self, access: Access) {
        *self.access.lock() = access;
        self.apply();
    }

    fn set_serving_until(&self, until: Option<std::time::Instant>) {
        self.alua.set_serving_until(until);
    }
}

/// Who counts as a live gateway when a reservation change's notify timed out on some
/// watchers (ADR 0013): the gateways whose registry record advances (heartbeats) while
/// the change is announced, and the owners this gateway's ALUA views (one per pool) name
/// whatever their heartbeat.
struct PrLiveness {
    registry: Arc<GatewayRegistry>,
    views: Vec<Arc<AluaView>>,
}

impl crate::shared::pr::LiveGateways for PrLiveness {
    fn heartbeats(&self) -> anyhow::Result<crate::shared::pr::Heartbeats> {
        let records = self
            .registry
            .list()
            .context("reading the gateway registry")?;
        let owners: Vec<String> = self.views.iter().filter_map(|v| v.owner()).collect();
        Ok(crate::shared::pr::Heartbeats {
            beats: records
                .iter()
                .filter(|r| r.instance != 0)
                .map(|r| (r.instance, r.last_seen_unix))
                .collect(),
            owners: records
                .iter()
                .filter(|r| r.instance != 0 && owners.contains(&r.name))
                .map(|r| r.instance)
                .collect(),
        })
    }
}

/// A running gateway's HA parts.
pub struct Gateway {
    /// The coordinators, one per pool, in configuration order.
    pub coordinators: Vec<(String, Arc<Coordinator>)>,
    /// Status and planned moves of every pool (what the admin API asks).
    pub control: Arc<super::status::PerPool>,
    hosts: Vec<Arc<GatewayHost>>,
    registry: Arc<GatewayRegistry>,
    /// The registry record's portals, filled in once the portals listen.
    portals: Arc<Mutex<Vec<String>>>,
    /// Wakes the heartbeat early (the portals changed).
    beat: Arc<tokio::sync::Notify>,
    tasks: Vec<JoinHandle<()>>,
    /// Held for the stores' watches; dropped (off the workers) at shutdown.
    shared: Option<(Rados, IoCtx)>,
    _state_store: Arc<SharedStateStore>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("coordinators", &self.coordinators)
            .finish()
    }
}

/// What [`Gateway::start`] gives the daemon to wire in.
pub struct Started {
    /// The gateway's HA parts.
    pub gateway: Gateway,
    /// The LUN manager (standby: no pool).
    pub lunmgr: Arc<LunManager>,
    /// The targets to hand to the front ends.
    pub targets: Vec<(TargetSpec, Arc<ScsiTarget>)>,
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn connect_shared(ha: &HaCfg) -> anyhow::Result<(Rados, IoCtx)> {
    let cfg = CephConfig {
        conf: ha.ceph.conf.clone(),
        client: ha.ceph.client.clone(),
    };
    let rados =
        Rados::connect_with(&cfg, &[("rados_osd_op_timeout", "30")]).with_context(|| {
            format!(
                "ha.ceph: cannot connect to the cluster of {}",
                ha.ceph.conf.display()
            )
        })?;
    let io = rados
        .ioctx(&ha.ceph.pool)
        .with_context(|| format!("ha.ceph.pool: cannot open RADOS pool {}", ha.ceph.pool))?;
    Ok((rados, io))
}

impl Gateway {
    /// Connects to the group's shared state and starts as standby; the coordinator takes
    /// the pool over in the background when the lease is free.
    pub async fn start(config: &Config) -> anyhow::Result<Started> {
        let ha = config
            .ha
            .clone()
            .context("a gateway needs the ha: section")?;
        // Every pool is in an RBD image, with a capacity (validated).
        let mut pools = Vec::new();
        for p in config.pool_cfgs() {
            let name = p.name.clone().unwrap_or_else(|| config.default_pool_name());
            let rbd = p
                .rbd
                .clone()
                .with_context(|| format!("pool {name}: a gateway needs rbd.image"))?;
            let capacity = p
                .capacity
                .with_context(|| format!("pool {name}: capacity is required with rbd"))?
                .0;
            pools.push((name, p, rbd, capacity));
        }
        let h = ha.clone();
        let (rados, io) = tokio::task::spawn_blocking(move || connect_shared(&h))
            .await
            .context("connecting to Ceph")??;
        let objects = RadosObjects::new(io.clone());
        let registry = Arc::new(GatewayRegistry::new(objects.clone(), &ha.group));
        let state_store = SharedStateStore::new(objects.clone(), &ha.group);
        // A takeover saves the state at once; a dead gateway's watch must not hold it.
        state_store.notify_in_background(true);
        let pr_store = SharedPrStore::new(objects.clone(), &ha.group);
        // A PR change's GOOD waits for live gateways only (the registry says who), and a
        // notice lost without a watch error is caught by the periodic version check.
        if let Err(e) = pr_store.start_version_checks(PR_VERSION_CHECK) {
            tracing::warn!("ha: cannot start the reservation version checks: {e}");
        }
        let instance = crate::shared::VersionedObjects::instance(objects.as_ref());
        let me = GatewayRecord {
            name: ha.gateway.clone(),
            port_group: ha.port_group,
            portals: Vec::new(),
            last_seen_unix: now_unix(),
            instance,
        };
        // Watch before loading: a save by another gateway in between is then a queued
        // notice, applied once the LUN manager exists.
        let (notices, notice_rx) = tokio::sync::mpsc::unbounded_channel::<u64>();
        state_store
            .watch(Arc::new(move |v| {
                let _ = notices.send(v);
            }))
            .context("ha: watching the group's shared state")?;
        let (reg, ss) = (registry.clone(), state_store.clone());
        let (peers, state) = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
            reg.upsert(&me).context("ha: registering this gateway")?;
            let peers = reg.list().context("ha: reading the gateway registry")?;
            let state = crate::lunmgr::state::StateStore::load(ss.as_ref())
                .context("ha: reading the group's shared state")?;
            Ok((peers, state))
        })
        .await
        .context("reading the group's state")??;
        // Nobody is dead before this gateway saw their heartbeat stop (see liveness.rs).
        let mut liveness = Liveness::new(dead_after(ha.lease.0));
        liveness.observe(
            Instant::now(),
            peers.iter().map(|r| (r.name.as_str(), r.last_seen_unix)),
        );
        let peers: Vec<Peer> = peers
            .into_iter()
            .map(|r| Peer {
                name: r.name,
                port_group: r.port_group,
                alive: true,
            })
            .collect();
        let groups: Vec<GroupState> = peers
            .iter()
            .map(|p| GroupState {
                id: p.port_group,
                gateway: p.name.clone(),
                state: AccessState::Standby,
            })
            .collect();
        // One view per pool, sharing their change counter; the first is the targets'.
        let alua = AluaView::new(ha.port_group, groups.clone());
        let views: Vec<(String, Arc<AluaView>)> = pools
            .iter()
            .enumerate()
            .map(|(i, (name, ..))| {
                let v = if i == 0 {
                    alua.clone()
                } else {
                    alua.sibling(groups.clone())
                };
                (name.clone(), v)
            })
            .collect();
        pr_store.set_liveness(Arc::new(PrLiveness {
            registry: registry.clone(),
            views: views.iter().map(|(_, v)| v.clone()).collect(),
        }));
        let (lunmgr, targets) = LunManager::open_gateway(
            config,
            GatewayOpen {
                pool: None,
                state: Some(state.unwrap_or_default()),
                alua: alua.clone(),
                pool_alua: if views.len() > 1 {
                    views.clone()
                } else {
                    Vec::new()
                },
                pr_store: Some(pr_store),
                // RBD: a completed write is on the OSDs (rbd_cache is off), WCE=0.
                volatile_write_cache: false,
            },
        )
        .await?;
        lunmgr.set_state_store(state_store.clone());

        let hosts: Vec<Arc<GatewayHost>> = views
            .iter()
            .map(|(name, view)| {
                Arc::new(GatewayHost {
                    mgr: lunmgr.clone(),
                    pool: name.clone(),
                    alua: view.clone(),
                    me: ha.gateway.clone(),
                    port_group: ha.port_group,
                    peers: Mutex::new(peers.clone()),
                    access: Mutex::new(Access::Standby {
                        owner: None,
                        lease_held: false,
                    }),
                })
            })
            .collect();
        let mut tasks = Vec::new();
        tasks.push(reload_state(notice_rx, state_store.clone(), lunmgr.clone()));
        let portals = Arc::new(Mutex::new(Vec::new()));
        let beat = Arc::new(tokio::sync::Notify::new());
        tasks.push(heartbeat(
            registry.clone(),
            hosts.clone(),
            ha.clone(),
            portals.clone(),
            beat.clone(),
            instance,
            liveness,
        ));
        let mut coordinators = Vec::new();
        for ((name, pool_cfg, rbd, capacity), host) in pools.into_iter().zip(&hosts) {
            let shell = ShellConfig {
                ha: ha.clone(),
                pool_name: name.clone(),
                prefer: pool_cfg.prefer.clone(),
                image: rbd.image,
                pool: PoolOptions {
                    chunk_size: pool_cfg.chunk_size.0 as u32,
                    capacity_bytes: None,
                    soft_threshold_pct: pool_cfg.soft_threshold_pct,
                },
                capacity,
                portals: Vec::new(),
            };
            let coordinator = Coordinator::start(shell, host.clone());
            coordinator.set_gateways_source(registry.clone());
            coordinator.set_alua_source(host.alua.clone());
            coordinators.push((name, coordinator));
        }
        let control = Arc::new(super::status::PerPool {
            pools: coordinators
                .iter()
                .map(|(n, c)| (n.clone(), c.clone() as Arc<dyn super::status::HaControl>))
                .collect(),
        });
        Ok(Started {
            gateway: Gateway {
                coordinators,
                control,
                hosts,
                registry,
                portals,
                beat,
                tasks,
                shared: Some((rados, io)),
                _state_store: state_store,
            },
            lunmgr,
            targets,
        })
    }

    /// The portals hosts reach this gateway through (for the registry).
    pub fn set_portals(&self, portals: Vec<String>) {
        *self.portals.lock() = portals;
        self.beat.notify_one();
    }

    /// Steps down if owner and stops the background tasks.
    pub async fn shutdown(mut self) {
        // Every pool steps down at once (each waits for its own in-flight I/O).
        let steps: Vec<JoinHandle<()>> = self
            .coordinators
            .iter()
            .map(|(_, c)| {
                let c = c.clone();
                tokio::spawn(async move { c.shutdown().await })
            })
            .collect();
        for s in steps {
            let _ = s.await;
        }
        for t in self.tasks.drain(..) {
            t.abort();
        }
        let shared = self.shared.take();
        let _ = (self.hosts, self.registry, self.control);
        let _ = tokio::task::spawn_blocking(move || drop(shared)).await;
    }
}

/// Reloads the LUN manager's state whenever another gateway saved it (a notice on `rx`).
fn reload_state(
    mut rx: tokio::sync::mpsc::UnboundedReceiver<u64>,
    store: Arc<SharedStateStore>,
    mgr: Arc<LunManager>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        while rx.recv().await.is_some() {
            // Several notices queued: one reload covers them.
            while rx.try_recv().is_ok() {}
            let s = store.clone();
            let loaded = tokio::task::spawn_blocking(move || {
                crate::lunmgr::state::StateStore::load(s.as_ref())
            })
            .await;
            match loaded {
                Ok(Ok(Some(state))) => {
                    if let Err(e) = mgr.reload_state(state).await {
                        tracing::warn!("applying the group's shared state: {e}");
                    }
                }
                Ok(Ok(None)) => {}
                Ok(Err(e)) => tracing::warn!("reloading the group's shared state: {e}"),
                Err(e) => tracing::warn!("reloading the group's shared state: {e}"),
            }
        }
    })
}

/// Rewrites this gateway's registry record and rereads the group every
/// [`heartbeat_every`] (the lease, within 1..5 s); the peers whose heartbeat stopped for
/// [`dead_after`] are reported unavailable (see liveness.rs).
fn heartbeat(
    registry: Arc<GatewayRegistry>,
    hosts: Vec<Arc<GatewayHost>>,
    ha: HaCfg,
    portals: Arc<Mutex<Vec<String>>>,
    beat: Arc<tokio::sync::Notify>,
    ha_instance: u64,
    mut liveness: Liveness,
) -> JoinHandle<()> {
    let every = heartbeat_every(ha.lease.0);
    tokio::spawn(async move {
        loop {
            let rec = GatewayRecord {
                name: ha.gateway.clone(),
                port_group: ha.port_group,
                portals: portals.lock().clone(),
                last_seen_unix: now_unix(),
                instance: ha_instance,
            };
            let reg = registry.clone();
            let r = tokio::task::spawn_blocking(move || {
                reg.upsert(&rec)?;
                reg.list()
            })
            .await;
            let now = Instant::now();
            match r {
                Ok(Ok(list)) => {
                    liveness.observe(
                        now,
                        list.iter().map(|r| (r.name.as_str(), r.last_seen_unix)),
                    );
                    let peers = peers_of(&list, &liveness, &ha.gateway, now);
                    for host in &hosts {
                        host.set_peers(peers.clone());
                    }
                }
                Ok(Err(e)) => tracing::warn!("ha: gateway registry heartbeat: {e}"),
                Err(e) => tracing::warn!("ha: gateway registry heartbeat: {e}"),
            }
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = beat.notified() => {}
            }
        }
    })
}

/// The registry's gateways with their liveness at `now` (this gateway is always alive).
fn peers_of(list: &[GatewayRecord], liveness: &Liveness, me: &str, now: Instant) -> Vec<Peer> {
    list.iter()
        .map(|r| {
            let alive = r.name == me || liveness.alive(&r.name, now);
            Peer {
                name: r.name.clone(),
                port_group: r.port_group,
                alive,
            }
        })
        .collect()
}
