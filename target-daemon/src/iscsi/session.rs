//! Sessions and the session table.
//!
//! A session is keyed by (initiator name, ISID, TSIH). It owns what outlives a single
//! connection: the CmdSN window, the task table (so task management can find and abort tasks),
//! the ordering barrier for ORDERED tasks and the I_T nexus the SCSI device server keys on.
//! Session reinstatement (a new leading login with the same initiator and ISID) closes the old
//! session and aborts its tasks before the new one is registered.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::sync::Arc;

use parking_lot::Mutex;
use scsi_proto::iscsi::login::ExistingSession;
use scsi_proto::iscsi::negotiate::SessionType;
use scsi_proto::iscsi::pdu::Pdu;
use scsi_proto::iscsi::seq::CmdWindow;
use tokio::sync::watch;

use super::writer::CmdSnSource;
use super::TargetEntry;
use crate::scsi::Nexus;

/// The MaxConnections the target offers: one connection per session (ErrorRecoveryLevel 0,
/// no multiple connections per session; multipathing uses sessions).
pub const MAX_CONNECTIONS: u16 = 1;

/// Most data a session may hold in commands queued behind a CmdSN gap.
///
/// With MaxConnections=1 (all lunard negotiates) commands arrive in CmdSN order over one TCP
/// connection, so a gap means a broken or hostile initiator (or a PDU dropped for a digest
/// error, after which ErrorRecoveryLevel 0 leaves the initiator to recover the session).
/// Waiting a little for the gap to fill costs nothing and is what RFC 7143 asks; holding a
/// window of immediate data per session, across thousands of sessions, is a way to exhaust
/// memory. So the data of queued commands is capped per session by this constant and, all
/// sessions together, charged against the write buffer budget (it is WRITE data the daemon
/// holds for initiators); past either, the connection is closed, which ends the session and
/// frees it. 1 MiB holds four 256 KiB immediate-data WRITEs or hundreds of small commands.
pub const MAX_GAP_BYTES: u64 = 1 << 20;

/// A PDU in the CmdSN window and, while it waits for a gap, the buffer its data holds.
pub struct Queued {
    /// The command (or NOP-Out, text, task management, logout request).
    pub pdu: Pdu,
    /// The accounting of its data while it waits for a gap.
    pub held: Option<GapCharge>,
}

/// The data of one command queued behind a CmdSN gap, counted in its session's
/// [`MAX_GAP_BYTES`] and in the write buffer budget until the command leaves the window.
pub struct GapCharge {
    bytes: u64,
    session: Arc<AtomicU64>,
    _grant: super::budget::Grant,
}

impl Drop for GapCharge {
    fn drop(&mut self) {
        self.session.fetch_sub(self.bytes, AtomicOrdering::AcqRel);
    }
}

/// Why a command could not be held for a CmdSN gap.
#[derive(Debug, thiserror::Error)]
pub enum GapError {
    /// The session already holds [`MAX_GAP_BYTES`].
    #[error(
        "commands waiting for a CmdSN gap would hold {0} bytes, over the {MAX_GAP_BYTES} a session may hold"
    )]
    SessionCap(u64),
    /// The daemon-wide write buffer budget is full.
    #[error("write buffer budget exhausted by commands waiting for a CmdSN gap")]
    Budget,
}

/// One running SCSI task, as the task table sees it.
pub struct TaskHandle {
    /// LUN the task addresses.
    pub lun: u64,
    /// CmdSN of the command (for ABORT TASK's RefCmdSN and ABORT TASK SET ordering).
    pub cmd_sn: u32,
    /// Aborts the task's future.
    pub abort: super::inline_task::InlineAbort,
    /// Resolves (sender dropped) once the task's future is gone, finished or aborted.
    pub done: watch::Receiver<()>,
    /// Connection (unique id, not CID) the task belongs to.
    pub conn: u64,
    /// Unique task number, so a finishing task never removes a newer task reusing its ITT.
    pub serial: u64,
}

/// Handle to one connection of a session, used to close it from elsewhere.
pub struct ConnHandle {
    /// Unique connection id (a reinstated connection reuses the CID but not this).
    pub id: u64,
    /// Initiator's address.
    pub peer: std::net::SocketAddr,
    /// Portal address the initiator connected to.
    pub local: std::net::SocketAddr,
    /// Setting this to true asks the connection to close.
    pub close: watch::Sender<bool>,
}

static CONN_ID: AtomicU64 = AtomicU64::new(1);

/// A fresh unique connection id.
pub fn next_conn_id() -> u64 {
    CONN_ID.fetch_add(1, AtomicOrdering::Relaxed)
}

/// An iSCSI session.
pub struct Session {
    /// Target-assigned session handle.
    pub tsih: u16,
    /// Initiator session ID (48 bits).
    pub isid: u64,
    /// InitiatorName.
    pub initiator: String,
    /// The target, `None` for discovery sessions.
    pub target: Option<Arc<TargetEntry>>,
    /// I_T nexus for the SCSI layer.
    pub nexus: Arc<Nexus>,
    /// CmdSN window; holds commands that arrived ahead of a gap.
    pub window: Mutex<CmdWindow<Queued>>,
    /// Data bytes of the commands the window holds for a gap (see [`GapCharge`]).
    gap_bytes: Arc<AtomicU64>,
    /// Configured window size (depth when idle).
    pub window_size: u32,
    /// Running tasks by ITT.
    pub tasks: Mutex<HashMap<u32, TaskHandle>>,
    /// Ordering state for ORDERED / SIMPLE task attributes.
    pub ordering: Mutex<super::order::OrderState>,
    /// Connections by CID.
    pub conns: Mutex<HashMap<u16, ConnHandle>>,
    /// When the session was created.
    pub since: std::time::SystemTime,
    closed: watch::Sender<bool>,
}

/// What an administrator sees of a session.
#[derive(Clone, Debug, serde::Serialize)]
pub struct SessionInfo {
    /// Target session handle.
    pub tsih: u16,
    /// Initiator name.
    pub initiator: String,
    /// ISID as 12 hex digits.
    pub isid: String,
    /// Target name, `None` for discovery sessions.
    pub target: Option<String>,
    /// LUNs the session can reach.
    pub luns: Vec<u64>,
    /// Connections: (CID, initiator address, portal address).
    pub connections: Vec<(u16, String, String)>,
    /// Creation time, seconds since the Unix epoch.
    pub since_unix: u64,
    /// Commands running now.
    pub tasks: usize,
}

impl Session {
    /// A new session; `cmd_sn` is the leading login's CmdSN (the first ExpCmdSN).
    pub fn new(
        tsih: u16,
        isid: u64,
        initiator: String,
        target: Option<Arc<TargetEntry>>,
        tpgt: u16,
        cmd_sn: u32,
        window_size: u32,
    ) -> Arc<Session> {
        let nexus = Arc::new(Nexus {
            initiator: initiator.clone(),
            isid,
            tpgt,
        });
        Arc::new(Session {
            tsih,
            isid,
            initiator,
            target,
            nexus,
            window: Mutex::new(CmdWindow::new_managed(cmd_sn, window_size)),
            window_size,
            gap_bytes: Arc::new(AtomicU64::new(0)),
            tasks: Mutex::new(HashMap::new()),
            ordering: Mutex::new(super::order::OrderState::default()),
            conns: Mutex::new(HashMap::new()),
            since: std::time::SystemTime::now(),
            closed: watch::channel(false).0,
        })
    }

    /// What a login naming this session by TSIH sees of it (for
    /// [`ExistingSession::admits`]); `cid` is the login's connection ID.
    pub fn existing(&self, cid: u16) -> ExistingSession {
        let conns = self.conns.lock();
        ExistingSession {
            session_type: if self.target.is_some() {
                SessionType::Normal
            } else {
                SessionType::Discovery
            },
            initiator_name: self.initiator.clone(),
            isid: self.isid,
            target_name: self.target.as_ref().map(|t| t.cfg.iqn.clone()),
            has_cid: conns.contains_key(&cid),
            connections: u32::try_from(conns.len()).unwrap_or(u32::MAX),
            max_connections: u32::from(MAX_CONNECTIONS),
        }
    }

    /// A snapshot for status displays.
    pub fn info(&self) -> SessionInfo {
        let mut connections: Vec<(u16, String, String)> = self
            .conns
            .lock()
            .iter()
            .map(|(cid, c)| (*cid, c.peer.to_string(), c.local.to_string()))
            .collect();
        connections.sort();
        SessionInfo {
            tsih: self.tsih,
            initiator: self.initiator.clone(),
            isid: format!("{:012x}", self.isid),
            target: self.target.as_ref().map(|t| t.cfg.iqn.clone()),
            luns: self
                .target
                .as_ref()
                .map(|t| t.scsi.luns())
                .unwrap_or_default(),
            connections,
            since_unix: self
                .since
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            tasks: self.tasks.lock().len(),
        }
    }

    /// The target name for metrics labels ("discovery" for discovery sessions).
    pub fn target_label(&self) -> &str {
        self.target
            .as_ref()
            .map(|t| t.cfg.iqn.as_str())
            .unwrap_or("discovery")
    }

    /// Whether this is a discovery session.
    pub fn is_discovery(&self) -> bool {
        self.target.is_none()
    }

    /// Accounts `bytes` of data of a command that will wait in the window for a CmdSN gap
    /// (see [`MAX_GAP_BYTES`]).
    pub fn hold_for_gap(
        &self,
        bytes: u64,
        budget: &Arc<super::budget::WriteBudget>,
    ) -> Result<GapCharge, GapError> {
        let before = self.gap_bytes.fetch_add(bytes, AtomicOrdering::AcqRel);
        let over = before.saturating_add(bytes);
        if over > MAX_GAP_BYTES {
            self.gap_bytes.fetch_sub(bytes, AtomicOrdering::AcqRel);
            return Err(GapError::SessionCap(over));
        }
        let Some(grant) = budget.try_reserve(bytes) else {
            self.gap_bytes.fetch_sub(bytes, AtomicOrdering::AcqRel);
            return Err(GapError::Budget);
        };
        Ok(GapCharge {
            bytes,
            session: self.gap_bytes.clone(),
            _grant: grant,
        })
    }

    /// (ExpCmdSN, MaxCmdSN) for an outgoing PDU.
    pub fn cmd_sns(&self) -> (u32, u32) {
        let w = self.window.lock();
        (w.exp_cmd_sn(), w.max_cmd_sn())
    }

    /// Re-derives the window depth from the number of running tasks, so MaxCmdSN only opens
    /// up as tasks finish: the initiator can never have more than the window outstanding.
    pub fn update_window(&self) {
        let running = self.tasks.lock().len() as u32;
        let depth = self.window_size.saturating_sub(running).max(1);
        self.window.lock().set_depth(depth);
    }

    /// A receiver that turns true when the session is closed (reinstated, logged out, reset).
    pub fn closed_signal(&self) -> watch::Receiver<bool> {
        self.closed.subscribe()
    }

    /// Aborts every task of the session and waits until their futures are gone.
    pub async fn abort_all_tasks(&self) {
        let handles: Vec<TaskHandle> = self.tasks.lock().drain().map(|(_, t)| t).collect();
        abort_and_wait(handles).await;
        self.update_window();
    }

    /// Closes the session: asks every connection to close, aborts all tasks and tells the SCSI
    /// layer that the nexus is gone. Later calls do nothing.
    pub async fn close(&self) {
        // Idempotent: a reinstated session is closed by the new login and again when its
        // last connection winds down; only the first call may touch the nexus, which the new
        // session shares.
        if self.closed.send_replace(true) {
            return;
        }
        crate::metrics::global().session_delta(self.target_label(), &self.initiator, false, -1);
        for c in self.conns.lock().values() {
            c.close.send_replace(true);
        }
        self.abort_all_tasks().await;
        self.window.lock().drain();
        if let Some(t) = &self.target {
            t.scsi.nexus_logout(&self.nexus);
        }
    }
}

impl CmdSnSource for Session {
    fn cmd_sns(&self) -> (u32, u32) {
        Session::cmd_sns(self)
    }
}

/// Aborts the given tasks and waits until each one's future has been dropped, so no response
/// for them can be queued afterwards.
pub async fn abort_and_wait(handles: Vec<TaskHandle>) {
    for h in &handles {
        h.abort.abort();
    }
    for mut h in handles {
        // Err means the sender is gone: the task has finished or been dropped.
        while h.done.changed().await.is_ok() {}
    }
}

/// All live sessions, for reinstatement, connection joins and cross-session LUN resets.
#[derive(Default)]
pub struct SessionTable {
    sessions: Mutex<HashMap<u16, Arc<Session>>>,
}

impl SessionTable {
    /// A fresh, random nonzero TSIH not used by a live session; `None` if all 65535 are
    /// taken. Random rather than sequential so that a TSIH says nothing about other
    /// sessions (defence in depth: a join is only admitted to the initiator's own session
    /// anyway, see `ExistingSession::admits`).
    pub fn allocate_tsih(&self) -> Option<u16> {
        let map = self.sessions.lock();
        if map.len() >= usize::from(u16::MAX) {
            return None;
        }
        // A random start, then the first free one from there: bounded work however full.
        let start: u16 = rand::random();
        (0..=u16::MAX)
            .map(|i| start.wrapping_add(i))
            .find(|t| *t != 0 && !map.contains_key(t))
    }

    /// Registers a session.
    pub fn insert(&self, s: Arc<Session>) {
        self.sessions.lock().insert(s.tsih, s);
    }

    /// Removes a session if it is still the registered one for its TSIH.
    pub fn remove(&self, s: &Arc<Session>) {
        let mut map = self.sessions.lock();
        if map.get(&s.tsih).is_some_and(|x| Arc::ptr_eq(x, s)) {
            map.remove(&s.tsih);
        }
    }

    /// The session with this TSIH.
    pub fn get(&self, tsih: u16) -> Option<Arc<Session>> {
        self.sessions.lock().get(&tsih).cloned()
    }

    /// Sessions of `initiator` with `isid` to the same target (or discovery): candidates for
    /// reinstatement.
    pub fn find_for_reinstatement(
        &self,
        initiator: &str,
        isid: u64,
        target: Option<&str>,
    ) -> Vec<Arc<Session>> {
        self.sessions
            .lock()
            .values()
            .filter(|s| {
                s.isid == isid
                    && s.initiator.eq_ignore_ascii_case(initiator)
                    && match (&s.target, target) {
                        (Some(t), Some(n)) => t.cfg.iqn.eq_ignore_ascii_case(n),
                        (None, None) => true,
                        _ => false,
                    }
            })
            .cloned()
            .collect()
    }

    /// Every session logged in to the target named `iqn`.
    pub fn of_target(&self, iqn: &str) -> Vec<Arc<Session>> {
        self.sessions
            .lock()
            .values()
            .filter(|s| {
                s.target
                    .as_ref()
                    .is_some_and(|t| t.cfg.iqn.eq_ignore_ascii_case(iqn))
            })
            .cloned()
            .collect()
    }

    /// Every live session.
    pub fn all(&self) -> Vec<Arc<Session>> {
        self.sessions.lock().values().cloned().collect()
    }

    /// Number of live sessions.
    pub fn len(&self) -> usize {
        self.sessions.lock().len()
    }

    /// Whether there are no sessions.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::iscsi::budget::WriteBudget;

    /// Data held for a CmdSN gap is capped per session and charged to the write buffer
    /// budget; both come back when the commands leave the window.
    #[test]
    fn data_held_for_a_gap_is_capped_per_session_and_budgeted() {
        let s = Session::new(1, 1, "iqn.x".into(), None, 1, 0, 64);
        let budget = WriteBudget::new(4 << 20, 4 << 20);
        let q = 400 << 10;
        let a = s.hold_for_gap(q, &budget).expect("fits");
        let b = s.hold_for_gap(q, &budget).expect("fits");
        assert!(matches!(
            s.hold_for_gap(q, &budget),
            Err(GapError::SessionCap(_))
        ));
        assert_eq!(budget.used(), 2 * q, "a refusal takes nothing");
        drop(a);
        let c = s.hold_for_gap(q, &budget).expect("room again");
        let other = Session::new(2, 2, "iqn.y".into(), None, 1, 0, 64);
        let _hog = budget
            .try_reserve((4 << 20) - 2 * q)
            .expect("fills the budget");
        assert!(matches!(
            other.hold_for_gap(1, &budget),
            Err(GapError::Budget)
        ));
        drop((b, c));
        assert_eq!(budget.used(), (4 << 20) - 2 * q);
        assert!(other.hold_for_gap(q, &budget).is_ok());
    }
}
