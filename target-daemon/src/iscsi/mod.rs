//! The iSCSI front end (RFC 7143): portals, connections, login, sessions and the full feature
//! phase. Protocol decisions that need no I/O (PDU codec, negotiation, CHAP, the CmdSN window)
//! live in `scsi_proto::iscsi`; this module owns sockets, tasks, timers and the session table,
//! and hands SCSI commands to the device server in [`crate::scsi`].

pub mod cmd;
pub mod conn;
pub mod datain;
pub mod login;
pub mod logout;
pub mod nop;
pub mod portal;
pub mod r2t;
pub mod session;
pub mod text;
pub mod tmf;
pub mod writer;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
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

/// State shared by every portal and connection.
pub struct Server {
    /// Targets by lowercase IQN.
    targets: HashMap<String, Arc<TargetEntry>>,
    /// Target names in configuration order (SendTargets lists them in this order).
    target_order: Vec<String>,
    /// CHAP for discovery sessions.
    pub(crate) discovery_chap: Option<ChapCfg>,
    /// Protocol tunables.
    pub(crate) tunables: IscsiCfg,
    /// Live sessions.
    pub(crate) sessions: SessionTable,
    /// Bound portals (filled as listeners come up).
    portals: Mutex<Vec<PortalInfo>>,
    /// Flips to true when the daemon shuts down.
    shutdown_tx: watch::Sender<bool>,
    /// Every connection task holds a clone; shutdown waits until all are dropped.
    conn_guard: Mutex<Option<mpsc::Sender<()>>>,
    conn_done: tokio::sync::Mutex<mpsc::Receiver<()>>,
}

impl Server {
    /// Builds the server for `targets` with the protocol settings of `config`.
    pub fn new(config: &Config, targets: Vec<TargetEntry>) -> Arc<Server> {
        let (shutdown_tx, _) = watch::channel(false);
        let (guard_tx, guard_rx) = mpsc::channel(1);
        let mut map = HashMap::new();
        let mut order = Vec::new();
        for t in targets {
            let key = t.cfg.iqn.to_ascii_lowercase();
            order.push(key.clone());
            map.insert(key, Arc::new(t));
        }
        Arc::new(Server {
            targets: map,
            target_order: order,
            discovery_chap: config.discovery.chap.clone(),
            tunables: config.iscsi.clone(),
            sessions: SessionTable::default(),
            portals: Mutex::new(Vec::new()),
            shutdown_tx,
            conn_guard: Mutex::new(Some(guard_tx)),
            conn_done: tokio::sync::Mutex::new(guard_rx),
        })
    }

    /// The target named `iqn` (case-insensitive, as iSCSI names are).
    pub fn target(&self, iqn: &str) -> Option<&Arc<TargetEntry>> {
        self.targets.get(&iqn.to_ascii_lowercase())
    }

    /// Targets in configuration order.
    pub fn targets(&self) -> impl Iterator<Item = &Arc<TargetEntry>> {
        self.target_order.iter().filter_map(|k| self.targets.get(k))
    }

    /// Portals currently serving.
    pub fn portals(&self) -> Vec<PortalInfo> {
        self.portals.lock().clone()
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
