//! The seam between the LUN manager and the fabric front ends: what must change in the
//! running servers when a target is created or deleted, or its access control changes.
//!
//! LUN changes need no help from here: the manager owns each target's [`ScsiTarget`] and
//! adds/removes LUNs on it directly (which raises the unit attentions, and tells a fabric
//! that acts per LUN through its [`crate::scsi::LunObserver`]).

use std::sync::Arc;

use crate::config::TargetCfg;
use crate::iscsi::Server;
use crate::scsi::ScsiTarget;

/// One logged-in session, as `session list` shows it.
pub type SessionView = crate::iscsi::session::SessionInfo;

/// What the running iSCSI server must do for target-level changes.
pub trait Exports: Send + Sync {
    /// Start exporting a new target.
    fn add_target(&self, cfg: TargetCfg, scsi: Arc<ScsiTarget>) -> Result<(), String>;
    /// Stop exporting a target and close its sessions.
    fn remove_target(&self, iqn: &str) -> Result<(), String>;
    /// Replace a target's ACL and CHAP settings (new logins see them).
    fn set_access(&self, cfg: TargetCfg) -> Result<(), String>;
    /// Sessions logged in to `iqn`.
    fn sessions(&self, iqn: &str) -> Vec<SessionView>;
    /// Asks every connection of every session of `iqn` to close; returns the session count.
    fn close_sessions(&self, iqn: &str) -> usize;
}

/// [`Exports`] backed by the running iSCSI [`Server`].
pub struct ServerExports(pub Arc<Server>);

impl Exports for ServerExports {
    fn add_target(&self, cfg: TargetCfg, scsi: Arc<ScsiTarget>) -> Result<(), String> {
        self.0
            .add_target(crate::iscsi::TargetEntry { cfg, scsi })
            .map_err(|e| format!("{e:#}"))
    }

    fn remove_target(&self, iqn: &str) -> Result<(), String> {
        if self.0.target(iqn).is_none() {
            return Ok(());
        }
        let server = self.0.clone();
        let iqn = iqn.to_string();
        // Closing sessions waits for their tasks; do not hold the admin caller on it.
        tokio::spawn(async move {
            if let Err(e) = server.remove_target(&iqn).await {
                tracing::warn!(target = %iqn, "removing the target from the iSCSI server: {e:#}");
            }
        });
        Ok(())
    }

    fn set_access(&self, cfg: TargetCfg) -> Result<(), String> {
        self.0
            .set_target_access(&cfg.iqn, cfg.allow_any, cfg.initiators, cfg.chap)
            .map_err(|e| format!("{e:#}"))
    }

    fn sessions(&self, iqn: &str) -> Vec<SessionView> {
        self.0
            .session_list()
            .into_iter()
            .filter(|s| {
                s.target
                    .as_deref()
                    .is_some_and(|t| t.eq_ignore_ascii_case(iqn))
            })
            .collect()
    }

    fn close_sessions(&self, iqn: &str) -> usize {
        let n = self.sessions(iqn).len();
        let server = self.0.clone();
        let iqn = iqn.to_string();
        tokio::spawn(async move {
            server.close_sessions(&iqn).await;
        });
        n
    }
}

/// Routes each target to the front end of its fabric: iSCSI targets to lunard's iSCSI
/// server, `qla2xxx` and `loopback` targets to the LIO front end.
pub struct FabricExports {
    /// The iSCSI server.
    pub iscsi: ServerExports,
    /// The LIO/TCMU front end.
    pub lio: Arc<crate::lio::LioFabric>,
}

impl Exports for FabricExports {
    fn add_target(&self, cfg: TargetCfg, scsi: Arc<ScsiTarget>) -> Result<(), String> {
        if cfg.fabric.is_lio() {
            self.lio.add_target(cfg, scsi)
        } else {
            self.iscsi.add_target(cfg, scsi)
        }
    }

    fn remove_target(&self, iqn: &str) -> Result<(), String> {
        if self.lio.has_target(iqn) {
            self.lio.remove_target(iqn)
        } else {
            self.iscsi.remove_target(iqn)
        }
    }

    fn set_access(&self, cfg: TargetCfg) -> Result<(), String> {
        if cfg.fabric.is_lio() {
            self.lio.set_access(cfg)
        } else {
            self.iscsi.set_access(cfg)
        }
    }

    fn sessions(&self, iqn: &str) -> Vec<SessionView> {
        if self.lio.has_target(iqn) {
            self.lio.sessions(iqn)
        } else {
            self.iscsi.sessions(iqn)
        }
    }

    fn close_sessions(&self, iqn: &str) -> usize {
        if self.lio.has_target(iqn) {
            self.lio.close_sessions(iqn)
        } else {
            self.iscsi.close_sessions(iqn)
        }
    }
}
