//! The iSCSI server as a [`Frontend`] of the LUN manager: target-level changes made through
//! the admin API reach the running [`Server`] here, and its sessions are reported in the
//! fabric-neutral [`SessionView`].

use std::sync::Arc;

use super::{Server, TargetEntry};
use crate::config::{ChapCfg, Credential, TargetCfg};
use crate::fabric::{ChapSpec, Fabric, Frontend, FrontendError, SessionView, TargetSpec};
use crate::scsi::ScsiTarget;

/// [`Frontend`] backed by the running iSCSI [`Server`].
pub struct IscsiFrontend(pub Arc<Server>);

impl TargetEntry {
    /// The entry of a target the LUN manager exports over iSCSI.
    pub fn from_spec(spec: TargetSpec, scsi: Arc<ScsiTarget>) -> TargetEntry {
        TargetEntry {
            cfg: TargetCfg {
                iqn: spec.name,
                fabric: spec.fabric,
                alias: spec.alias,
                allow_any: spec.allow_any,
                initiators: spec.initiators,
                chap: spec.chap.as_ref().map(chap_cfg),
                luns: Vec::new(),
            },
            scsi,
        }
    }
}

fn chap_cfg(c: &ChapSpec) -> ChapCfg {
    ChapCfg {
        username: c.username.clone(),
        secret: c.secret.clone(),
        mutual: c.mutual.as_ref().map(|(u, s)| Credential {
            username: u.clone(),
            secret: s.clone(),
        }),
    }
}

fn refused(target: &str, e: anyhow::Error) -> FrontendError {
    FrontendError {
        fabric: Fabric::Iscsi,
        target: target.to_string(),
        reason: format!("{e:#}"),
    }
}

impl Frontend for IscsiFrontend {
    fn fabrics(&self) -> &'static [Fabric] {
        &[Fabric::Iscsi]
    }

    fn add_target(&self, spec: TargetSpec, scsi: Arc<ScsiTarget>) -> Result<(), FrontendError> {
        let name = spec.name.clone();
        self.0
            .add_target(TargetEntry::from_spec(spec, scsi))
            .map_err(|e| refused(&name, e))
    }

    fn remove_target(&self, name: &str) -> Result<(), FrontendError> {
        if self.0.target(name).is_none() {
            return Ok(());
        }
        let server = self.0.clone();
        let name = name.to_string();
        // Closing sessions waits for their tasks; do not hold the admin caller on it.
        tokio::spawn(async move {
            if let Err(e) = server.remove_target(&name).await {
                tracing::warn!(target = %name, "removing the target from the iSCSI server: {e:#}");
            }
        });
        Ok(())
    }

    fn update_target(&self, spec: TargetSpec) -> Result<(), FrontendError> {
        self.0
            .set_target_access(
                &spec.name,
                spec.allow_any,
                spec.initiators,
                spec.chap.as_ref().map(chap_cfg),
            )
            .map_err(|e| refused(&spec.name, e))
    }

    fn sessions(&self, name: &str) -> Vec<SessionView> {
        self.0
            .session_list()
            .into_iter()
            .filter(|s| {
                s.target
                    .as_deref()
                    .is_some_and(|t| t.eq_ignore_ascii_case(name))
            })
            .map(|s| SessionView {
                tsih: s.tsih,
                initiator: s.initiator,
                isid: s.isid,
                target: s.target,
                luns: s.luns,
                connections: s.connections,
                since_unix: s.since_unix,
                tasks: s.tasks,
            })
            .collect()
    }

    fn close_sessions(&self, name: &str) -> usize {
        let n = self.sessions(name).len();
        let server = self.0.clone();
        let name = name.to_string();
        tokio::spawn(async move {
            server.close_sessions(&name).await;
        });
        n
    }
}
