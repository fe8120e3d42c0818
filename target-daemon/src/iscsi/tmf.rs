//! Task management functions (RFC 7143 11.5/11.6, SAM-5 7).
//!
//! Aborts are real: every task's future is aborted through its abort handle and the TMF
//! response is only sent once the aborted futures are gone, so no response for an aborted
//! task can follow the TMF response. LUN and target resets reach the tasks of every session
//! of the target, then let the device server establish its unit attentions. PERSISTENT
//! RESERVE OUT with PREEMPT AND ABORT reaches the tasks of the preempted nexuses through
//! [`PreemptAborter`], the device server's [`TaskAborter`].

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Weak};

use scsi_proto::iscsi::pdu::{self, Bhs, Pdu, TaskMgmtResponse, TmFunction, TmResponse};

use scsi_proto::iscsi::seq::{serial_in_window, serial_lt};

use super::conn::Conn;
use super::session::{abort_and_wait, Session, TaskHandle};
use super::Server;
use crate::scsi::pr::Preempted;
use crate::scsi::TaskAborter;

/// Removes from `session` the tasks matching `pred` and returns their handles.
fn take_tasks(
    session: &Session,
    mut pred: impl FnMut(u32, &TaskHandle) -> bool,
) -> Vec<TaskHandle> {
    let mut tasks = session.tasks.lock();
    let itts: Vec<u32> = tasks
        .iter()
        .filter(|(k, t)| pred(**k, t))
        .map(|(k, _)| *k)
        .collect();
    itts.into_iter().filter_map(|i| tasks.remove(&i)).collect()
}

/// The device server's [`TaskAborter`] for one target: PREEMPT AND ABORT takes the
/// preempted nexuses' tasks on the LUN out of their sessions' task tables, exactly as ABORT
/// TASK SET from each of those sessions would (so they send no response), aborts their
/// futures and waits until they are gone. The issuer's session is never among them (the
/// device server excludes its nexus), so the PREEMPT AND ABORT task cannot wait for itself.
pub(crate) struct PreemptAborter {
    /// Weak: the server owns the targets, whose device servers own this.
    server: Weak<Server>,
    iqn: String,
}

impl PreemptAborter {
    /// The aborter for the target named `iqn`.
    pub(crate) fn new(server: Weak<Server>, iqn: &str) -> Arc<Self> {
        Arc::new(Self {
            server,
            iqn: iqn.to_string(),
        })
    }
}

impl TaskAborter for PreemptAborter {
    fn abort_tasks<'a>(
        &'a self,
        lun: u64,
        preempted: &'a Preempted,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>> {
        Box::pin(async move {
            let Some(server) = self.server.upgrade() else {
                return;
            };
            let sessions: Vec<Arc<Session>> = server
                .sessions
                .of_target(&self.iqn)
                .into_iter()
                .filter(|s| preempted.contains(&s.nexus))
                .collect();
            let mut victims = Vec::new();
            for s in &sessions {
                victims.extend(take_tasks(s, |_, t| t.lun == lun));
            }
            tracing::info!(target = %self.iqn, lun, sessions = sessions.len(), n = victims.len(),
                "PREEMPT AND ABORT: aborting the preempted nexuses' tasks");
            abort_and_wait(victims).await;
            for s in &sessions {
                s.update_window();
            }
        })
    }
}

impl Conn {
    /// Performs a Task Management Function Request and answers it (the machine rejects
    /// one in a discovery session before it gets here).
    pub(super) async fn task_mgmt(&mut self, pdu: Pdu) {
        let Bhs::TaskMgmtRequest(h) = &pdu.bhs else {
            return;
        };
        let Some(target) = self.session.target.clone() else {
            return;
        };
        crate::metrics::global().tmf(match h.function {
            TmFunction::AbortTask => "abort_task",
            TmFunction::AbortTaskSet => "abort_task_set",
            TmFunction::ClearAca => "clear_aca",
            TmFunction::ClearTaskSet => "clear_task_set",
            TmFunction::LogicalUnitReset => "lun_reset",
            TmFunction::TargetWarmReset => "target_warm_reset",
            TmFunction::TargetColdReset => "target_cold_reset",
            TmFunction::TaskReassign => "task_reassign",
            TmFunction::Other(_) => "other",
        });
        let lun = pdu::lun_from_wire(h.lun);
        let lun_exists = lun.is_some_and(|l| target.scsi.luns().contains(&l));
        let mut cold_reset = false;
        let response = match h.function {
            TmFunction::AbortTask => {
                let rtt = h.referenced_task_tag;
                let victims = take_tasks(&self.session, |itt, t| itt == rtt && Some(t.lun) == lun);
                if victims.is_empty() {
                    // RFC 7143 11.5.1 b/c: a task we never saw whose RefCmdSN is still inside
                    // the window (and before this request) counts as received and aborted;
                    // otherwise it already completed (or never existed): "task does not exist".
                    let (exp, max) = self.session.cmd_sns();
                    if serial_in_window(h.ref_cmd_sn, exp, max) && serial_lt(h.ref_cmd_sn, h.cmd_sn)
                    {
                        TmResponse::Complete
                    } else {
                        TmResponse::TaskDoesNotExist
                    }
                } else {
                    tracing::info!(peer = %self.peer, itt = rtt, "ABORT TASK");
                    abort_and_wait(victims).await;
                    TmResponse::Complete
                }
            }
            TmFunction::AbortTaskSet | TmFunction::ClearTaskSet if !lun_exists => {
                TmResponse::LunDoesNotExist
            }
            TmFunction::AbortTaskSet => {
                let l = lun;
                let victims = take_tasks(&self.session, |_, t| Some(t.lun) == l);
                tracing::info!(peer = %self.peer, lun = ?lun, n = victims.len(), "ABORT TASK SET");
                abort_and_wait(victims).await;
                TmResponse::Complete
            }
            TmFunction::ClearTaskSet => {
                // Shared task set: clears the LUN's tasks of every nexus.
                let l = lun;
                let mut victims = Vec::new();
                for s in self.server.sessions.of_target(&target.cfg.iqn) {
                    victims.extend(take_tasks(&s, |_, t| Some(t.lun) == l));
                }
                tracing::info!(peer = %self.peer, lun = ?lun, n = victims.len(), "CLEAR TASK SET");
                abort_and_wait(victims).await;
                TmResponse::Complete
            }
            TmFunction::LogicalUnitReset => match lun {
                Some(l) if lun_exists => {
                    let mut victims = Vec::new();
                    for s in self.server.sessions.of_target(&target.cfg.iqn) {
                        victims.extend(take_tasks(&s, |_, t| t.lun == l));
                    }
                    tracing::info!(peer = %self.peer, lun = l, n = victims.len(), "LOGICAL UNIT RESET");
                    abort_and_wait(victims).await;
                    target.scsi.lun_reset(l, &self.session.nexus);
                    TmResponse::Complete
                }
                _ => TmResponse::LunDoesNotExist,
            },
            TmFunction::TargetWarmReset | TmFunction::TargetColdReset => {
                let mut victims = Vec::new();
                for s in self.server.sessions.of_target(&target.cfg.iqn) {
                    victims.extend(take_tasks(&s, |_, _| true));
                }
                tracing::info!(peer = %self.peer, n = victims.len(), function = ?h.function, "TARGET RESET");
                abort_and_wait(victims).await;
                target.scsi.target_reset(&self.session.nexus);
                cold_reset = h.function == TmFunction::TargetColdReset;
                TmResponse::Complete
            }
            TmFunction::ClearAca => TmResponse::NotSupported,
            TmFunction::TaskReassign => TmResponse::ReassignmentNotSupported,
            TmFunction::Other(_) => TmResponse::NotSupported,
        };
        self.purge();
        for s in self.server.sessions.of_target(&target.cfg.iqn) {
            s.update_window();
        }
        let resp = TaskMgmtResponse {
            response,
            itt: h.itt,
            stat_sn: 0,
            exp_cmd_sn: 0,
            max_cmd_sn: 0,
        };
        let _ = self.writer.send(Pdu::header_only(resp)).await;
        if cold_reset {
            // A cold reset also drops every connection of the target, this one included,
            // after the response.
            for s in self.server.sessions.of_target(&target.cfg.iqn) {
                self.server.sessions.remove(&s);
                s.close().await;
            }
        }
    }
}
