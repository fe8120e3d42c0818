//! Logout: closing the session or a connection (RFC 7143 11.14/11.15).
//!
//! Commands already running finish (bounded wait) so their responses precede the Logout
//! Response; then the connection closes. With ErrorRecoveryLevel 0 nothing is retained, so
//! Time2Wait and Time2Retain are 0.

use std::time::Duration;

use scsi_proto::iscsi::pdu::{LogoutReason, LogoutResponse, LogoutResponseCode, Pdu};
use tokio::sync::watch;

use super::conn::Conn;

/// How long a logout waits for running commands before aborting them.
const LOGOUT_DRAIN: Duration = Duration::from_secs(10);

impl Conn {
    /// Performs a logout the machine accepted (`reason` for connection `cid`) and answers
    /// Logout Request `itt`.
    pub(super) async fn logout(&mut self, itt: u32, reason: LogoutReason, cid: u16) {
        let response = match reason {
            LogoutReason::CloseSession => {
                self.drain_tasks(None).await;
                self.logged_out = true;
                LogoutResponseCode::Closed
            }
            LogoutReason::CloseConnection if cid == self.cid => {
                self.drain_tasks(Some(self.conn_id)).await;
                self.logged_out = true;
                LogoutResponseCode::Closed
            }
            LogoutReason::CloseConnection => {
                let other = self.session.conns.lock().get(&cid).map(|c| c.close.clone());
                match other {
                    Some(close) => {
                        close.send_replace(true);
                        LogoutResponseCode::Closed
                    }
                    None => LogoutResponseCode::CidNotFound,
                }
            }
            LogoutReason::RemoveConnectionForRecovery => LogoutResponseCode::RecoveryNotSupported,
            // The machine rejects unknown reasons before they get here.
            LogoutReason::Other(_) => return,
        };
        tracing::info!(peer = %self.peer, reason = ?reason, "logout");
        crate::metrics::global().logout();
        let resp = LogoutResponse {
            response,
            itt,
            stat_sn: 0,
            exp_cmd_sn: 0,
            max_cmd_sn: 0,
            time2wait: 0,
            time2retain: 0,
        };
        let _ = self.writer.send(Pdu::header_only(resp)).await;
    }

    /// Waits for the running tasks of the session (or of connection `conn`) to finish.
    async fn drain_tasks(&mut self, conn: Option<u64>) {
        self.drop_pending_writes();
        let waits: Vec<watch::Receiver<()>> = self
            .session
            .tasks
            .lock()
            .values()
            .filter(|t| conn.is_none_or(|c| t.conn == c))
            .map(|t| t.done.clone())
            .collect();
        let all = async {
            for mut w in waits {
                while w.changed().await.is_ok() {}
            }
        };
        if tokio::time::timeout(LOGOUT_DRAIN, all).await.is_err() {
            tracing::warn!(peer = %self.peer, "logout: commands still running after {LOGOUT_DRAIN:?}; aborting them");
        }
    }
}
