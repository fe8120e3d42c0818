//! The iSCSI front end (RFC 7143): portals, connections, login, sessions and the full feature
//! phase. Protocol decisions that need no I/O (PDU codec, negotiation, CHAP, the CmdSN window)
//! live in `scsi_proto::iscsi`; this module owns sockets, tasks, timers and the session table,
//! and hands SCSI commands to the device server in [`crate::scsi`].

pub mod admission;
pub mod budget;
pub mod cmd;
pub mod conn;
pub mod framing;
pub mod frontend;
pub mod inline_task;
pub mod login;
pub mod logout;
pub mod machine;
pub mod order;
pub mod portal;
pub mod session;
pub mod tmf;
pub mod writer;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use tokio::sync::{mpsc, watch};

use crate::config::{ChapCfg, Config, IscsiCfg, TargetCfg};
use crate::scsi::ScsiTarget;
use session::SessionTable;

/// A configured target as the front end sees it: its configuration and its device server.
pub struct TargetEntry {
    /// The target's configuration (name, alias, ACL, CHAP).
    pub cfg: TargetCfg,
    /// The SCSI device server holding the target's LUNs.
    pub scsi: Arc<ScsiTarget>,
}

impl TargetEntry {
    /// Whether `initiator` may log in to (and discover) this target.
    pub fn allows(&self, initiator: &str) -> bool {
        self.cfg.allow_any
            || self
                .cfg
                .initiators
                .iter()
                .any(|i| i.eq_ignore_ascii_case(initiator))
    }
}

/// A portal as reported in SendTargets: the address initiators should use and its group tag.
#[derive(Clone, Debug)]
pub struct PortalInfo {
    /// Address actually bound (after port 0 resolution).
    pub local: SocketAddr,
    /// Address to advertise (NAT), if different from `local`.
    pub advertise: Option<SocketAddr>,
    /// Target portal group tag.
    pub tpgt: u16,
}

impl PortalInfo {
    /// `TargetAddress` value: `ip:port,tpgt` with IPv6 in brackets. A wildcard listen address
    /// is replaced by the address the initiator connected to (`conn_local`).
    pub fn target_address(&self, conn_local: SocketAddr) -> String {
        let addr = match self.advertise {
            Some(a) => a,
            None if self.local.ip().is_unspecified() => conn_local,
            None => self.local,
        };
        format!("{addr},{}", self.tpgt)
    }
}

/// Targets by lowercase IQN plus their listing order.
#[derive(Default)]
struct TargetTable {
    map: HashMap<String, Arc<TargetEntry>>,
    order: Vec<String>,
}

impl TargetTable {
    fn insert(&mut self, e: Arc<TargetEntry>) {
        let key = e.cfg.iqn.to_ascii_lowercase();
        if self.map.insert(key.clone(), e).is_none() {
            self.order.push(key);
        }
    }
}

/// State shared by every portal and connection.
pub struct Server {
    /// Exported targets; replaced at run time by the admin API.
    targets: RwLock<TargetTable>,
    /// CHAP for discovery sessions.
    pub(crate) discovery_chap: Option<ChapCfg>,
    /// Protocol tunables.
    pub(crate) tunables: IscsiCfg,
    /// Live sessions.
    pub(crate) sessions: SessionTable,
    /// Connection limits (total, per address, logging in).
    pub(crate) admission: Arc<admission::Admission>,
    /// The WRITE data all connections may buffer together.
    pub(crate) write_budget: Arc<budget::WriteBudget>,
    /// The Data-In all connections may hold together, and one connection's share of it.
    pub(crate) read_budget: Arc<budget::ReadBudget>,
    /// Bound portals (filled as listeners come up).
    portals: Mutex<Vec<PortalInfo>>,
    /// TPGTs of the configured (and bound) portals, ascending: every target is exported
    /// through all of them, so each device server reports them all as target port groups.
    port_groups: Mutex<Vec<u16>>,
    /// Flips to true when the daemon shuts down.
    shutdown_tx: watch::Sender<bool>,
    /// Every connection task holds a clone; shutdown waits until all are dropped.
    conn_guard: Mutex<Option<mpsc::Sender<()>>>,
    conn_done: tokio::sync::Mutex<mpsc::Receiver<()>>,
    /// The server itself, for the task aborters handed to the device servers.
    this: Weak<Server>,
}

impl Server {
    /// Builds the server for `targets` with the protocol settings of `config`.
    pub fn new(config: &Config, targets: Vec<TargetEntry>) -> Arc<Server> {
        let (shutdown_tx, _) = watch::channel(false);
        let (guard_tx, guard_rx) = mpsc::channel(1);
        let mut port_groups: Vec<u16> = config.portals.iter().map(|p| p.tpgt).collect();
        port_groups.sort_unstable();
        port_groups.dedup();
        let mut table = TargetTable::default();
        for t in targets {
            t.scsi.set_port_groups(&port_groups);
            table.insert(Arc::new(t));
        }
        let server = Arc::new_cyclic(|this: &Weak<Server>| Server {
            targets: RwLock::new(table),
            discovery_chap: config.discovery.chap.clone(),
            tunables: config.iscsi.clone(),
            sessions: SessionTable::default(),
            admission: admission::Admission::new(&config.limits),
            write_budget: budget::WriteBudget::new(
                config.limits.write_buffer_bytes.0,
                config.limits.write_buffer_share(),
            ),
            read_budget: budget::ReadBudget::new(
                config.limits.read_buffer_bytes.0,
                config.limits.read_buffer_bytes_per_connection.0,
            ),
            portals: Mutex::new(Vec::new()),
            port_groups: Mutex::new(port_groups),
            shutdown_tx,
            conn_guard: Mutex::new(Some(guard_tx)),
            conn_done: tokio::sync::Mutex::new(guard_rx),
            this: this.clone(),
        });
        for t in server.targets() {
            t.scsi.set_task_aborter(server.task_aborter(&t.cfg.iqn));
        }
        server
    }

    /// The device server's [`crate::scsi::TaskAborter`] for the target named `iqn`.
    fn task_aborter(&self, iqn: &str) -> Arc<tmf::PreemptAborter> {
        tmf::PreemptAborter::new(self.this.clone(), iqn)
    }

    /// The target named `iqn` (case-insensitive, as iSCSI names are).
    pub fn target(&self, iqn: &str) -> Option<Arc<TargetEntry>> {
        self.targets
            .read()
            .map
            .get(&iqn.to_ascii_lowercase())
            .cloned()
    }

    /// Targets in configuration (then creation) order.
    pub fn targets(&self) -> Vec<Arc<TargetEntry>> {
        let t = self.targets.read();
        t.order
            .iter()
            .filter_map(|k| t.map.get(k).cloned())
            .collect()
    }

    /// Exports a new target; new logins and SendTargets see it at once.
    pub fn add_target(&self, entry: TargetEntry) -> anyhow::Result<()> {
        scsi_proto::iscsi::names::validate(&entry.cfg.iqn)
            .map_err(|e| anyhow::anyhow!("{:?}: {e}", entry.cfg.iqn))?;
        let mut t = self.targets.write();
        if t.map.contains_key(&entry.cfg.iqn.to_ascii_lowercase()) {
            anyhow::bail!("target {} already exists", entry.cfg.iqn);
        }
        entry.scsi.set_port_groups(&self.port_groups.lock());
        let aborter = self.task_aborter(&entry.cfg.iqn);
        entry.scsi.set_task_aborter(aborter);
        t.insert(Arc::new(entry));
        Ok(())
    }

    /// Stops exporting a target and closes its sessions (their tasks are aborted). Returns
    /// the removed entry (its device server still holds the LUNs).
    pub async fn remove_target(&self, iqn: &str) -> anyhow::Result<Arc<TargetEntry>> {
        let removed = {
            let mut t = self.targets.write();
            let key = iqn.to_ascii_lowercase();
            let Some(e) = t.map.remove(&key) else {
                anyhow::bail!("target {iqn} not found");
            };
            t.order.retain(|k| *k != key);
            e
        };
        self.close_sessions(iqn).await;
        Ok(removed)
    }

    /// Replaces a target's access control and CHAP settings. New logins and SendTargets use
    /// them at once; existing sessions are left alone (close them with
    /// [`Server::close_sessions`] to enforce the change).
    pub fn set_target_access(
        &self,
        iqn: &str,
        allow_any: bool,
        initiators: Vec<String>,
        chap: Option<ChapCfg>,
    ) -> anyhow::Result<()> {
        for i in &initiators {
            scsi_proto::iscsi::names::validate(i).map_err(|e| anyhow::anyhow!("{i:?}: {e}"))?;
        }
        let mut t = self.targets.write();
        let key = iqn.to_ascii_lowercase();
        let Some(old) = t.map.get(&key) else {
            anyhow::bail!("target {iqn} not found");
        };
        let mut cfg = old.cfg.clone();
        cfg.allow_any = allow_any;
        cfg.initiators = initiators;
        cfg.chap = chap;
        let entry = Arc::new(TargetEntry {
            cfg,
            scsi: old.scsi.clone(),
        });
        t.map.insert(key, entry);
        Ok(())
    }

    /// Closes every session logged in to `iqn` (tasks aborted, connections dropped); returns
    /// how many were closed.
    pub async fn close_sessions(&self, iqn: &str) -> usize {
        let list = self.sessions.of_target(iqn);
        for s in &list {
            self.sessions.remove(s);
            s.close().await;
        }
        list.len()
    }

    /// A snapshot of every live session, for status and administration.
    pub fn session_list(&self) -> Vec<session::SessionInfo> {
        self.sessions.all().iter().map(|s| s.info()).collect()
    }

    /// Appends the SendTargets answer for `value` to `out`: "All" lists every target whose
    /// ACL admits `initiator`, a name lists that target if it does, "" lists the session's
    /// own target (`own`). Each target comes with every portal's address as seen from
    /// `conn_local`, the address the initiator connected to.
    pub(crate) fn send_targets(
        &self,
        initiator: &str,
        own: Option<&Arc<TargetEntry>>,
        conn_local: SocketAddr,
        value: &str,
        out: &mut scsi_proto::iscsi::text::TextWriter,
    ) {
        let portals = self.portals();
        let wanted: Vec<_> = match value {
            "All" => self
                .targets()
                .into_iter()
                .filter(|t| t.allows(initiator))
                .collect(),
            "" => own.into_iter().cloned().collect(),
            name => self
                .target(name)
                .filter(|t| t.allows(initiator))
                .into_iter()
                .collect(),
        };
        if wanted.is_empty() && !matches!(value, "All" | "") {
            // An unknown or hidden target: answer nothing rather than reveal it.
            return;
        }
        for t in wanted {
            out.push("TargetName", &t.cfg.iqn);
            for p in &portals {
                out.push("TargetAddress", &p.target_address(conn_local));
            }
        }
    }

    /// Portals currently serving.
    pub fn portals(&self) -> Vec<PortalInfo> {
        self.portals.lock().clone()
    }

    /// Bytes of WRITE data reserved in the write buffer budget now (also the
    /// `lunar_iscsi_write_buffer_bytes` gauge, which is process-wide).
    pub fn write_buffer_used(&self) -> u64 {
        self.write_budget.used()
    }

    /// iSCSI connections open now, logging in or logged in.
    pub fn connection_count(&self) -> u32 {
        self.admission.connections()
    }

    /// Number of live sessions.
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// Binds a portal and starts accepting on it; returns the bound address and the accept
    /// loop's task (it ends on shutdown).
    pub fn listen(
        self: &Arc<Self>,
        cfg: &crate::config::PortalCfg,
    ) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
        let (listener, info) = portal::bind(cfg)?;
        let addr = info.local;
        self.portals.lock().push(info.clone());
        // A portal outside the configuration (tests bind their own): its group joins the set.
        let groups = {
            let mut g = self.port_groups.lock();
            match g.binary_search(&cfg.tpgt) {
                Ok(_) => None,
                Err(at) => {
                    g.insert(at, cfg.tpgt);
                    Some(g.clone())
                }
            }
        };
        if let Some(groups) = groups {
            for t in self.targets() {
                t.scsi.set_port_groups(&groups);
            }
        }
        Ok((
            addr,
            tokio::spawn(portal::serve(self.clone(), listener, info)),
        ))
    }

    /// A receiver that turns true on shutdown.
    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown_tx.subscribe()
    }

    /// Whether shutdown has started.
    pub fn is_shutting_down(&self) -> bool {
        *self.shutdown_tx.borrow()
    }

    /// A token a connection holds while alive; `None` once shutdown has begun.
    pub(crate) fn conn_token(&self) -> Option<mpsc::Sender<()>> {
        self.conn_guard.lock().clone()
    }

    /// Stops accepting, tells every connection to finish its in-flight commands and close,
    /// and waits (at most `grace`, then connections abort their remaining tasks) until all
    /// connections are gone.
    pub async fn shutdown(&self, grace: Duration) {
        self.shutdown_tx.send_replace(true);
        self.conn_guard.lock().take();
        let mut rx = self.conn_done.lock().await;
        // recv() returns None once every token is dropped. Connections bound their own
        // drain by `grace`; the extra second covers the final socket close.
        let _ = tokio::time::timeout(grace + Duration::from_secs(1), async {
            while rx.recv().await.is_some() {}
        })
        .await;
    }
}
