//! Login phase glue: drives scsi-proto's login state machine with a policy backed by the
//! configuration (targets, ACLs, CHAP secrets) and the session table, then creates, reinstates
//! or joins the session.

use std::net::SocketAddr;
use std::sync::Arc;

use scsi_proto::iscsi::chap::{ChapConfig, ChapCredential};
use scsi_proto::iscsi::login::{
    ExistingSession, JoinDecision, LoginConnection, LoginIdentity, LoginOutcome, LoginPolicy,
    LoginStep, TargetInfo,
};
use scsi_proto::iscsi::negotiate::{DigestPolicy, SessionParams, SessionType, TargetSettings};
use scsi_proto::iscsi::pdu::Bhs;
use scsi_proto::iscsi::seq::StatSn;
use scsi_proto::iscsi::status::LoginStatus;
use tokio::io::AsyncRead;
use tokio::sync::watch;

use super::framing::{FrameReader, ReadError};
use super::session::{next_conn_id, ConnHandle, Session, MAX_CONNECTIONS};
use super::writer::{CmdSnSource, Out, Writer};
use super::{PortalInfo, Server};
use crate::config::{ChapCfg, DigestCfg, IscsiCfg};

/// A successful login.
pub struct LoginDone {
    /// The session the connection belongs to.
    pub session: Arc<Session>,
    /// Connection ID chosen by the initiator.
    pub cid: u16,
    /// Unique id of this connection.
    pub conn_id: u64,
    /// Turns true when the connection must close (reinstatement, reset).
    pub close_rx: watch::Receiver<bool>,
    /// Negotiated parameters.
    pub params: SessionParams,
}

/// Our negotiation settings from the configuration.
pub fn target_settings(c: &IscsiCfg) -> TargetSettings {
    let digest = |d: DigestCfg| match d {
        DigestCfg::Disabled => DigestPolicy::Disabled,
        DigestCfg::Allowed => DigestPolicy::Allowed,
        DigestCfg::Required => DigestPolicy::Required,
    };
    TargetSettings {
        max_recv_data_segment_length: c.max_recv_data_segment_length,
        max_burst_length: c.max_burst_length,
        first_burst_length: c.first_burst_length,
        immediate_data: c.immediate_data,
        initial_r2t: c.initial_r2t,
        max_outstanding_r2t: c.max_outstanding_r2t,
        max_connections: MAX_CONNECTIONS,
        default_time2wait: 0,
        // ErrorRecoveryLevel 0: nothing is retained after a connection is lost.
        default_time2retain: 0,
        header_digest: digest(c.header_digest),
        data_digest: digest(c.data_digest),
        queue_depth: c.cmdsn_window,
    }
}

fn chap_config(c: &ChapCfg) -> ChapConfig {
    ChapConfig {
        initiator: ChapCredential {
            username: c.username.clone(),
            secret: c.secret.expose().as_bytes().to_vec(),
        },
        mutual: c.mutual.as_ref().map(|m| ChapCredential {
            username: m.username.clone(),
            secret: m.secret.expose().as_bytes().to_vec(),
        }),
    }
}

/// The login policy: answers the state machine's questions from configuration and state.
struct Policy<'a> {
    server: &'a Server,
    /// IQN of the configured target this login named, for metrics labels (only names that
    /// exist in the configuration, so hostile logins cannot grow label sets).
    target_seen: parking_lot::Mutex<Option<String>>,
}

impl Policy<'_> {
    /// Counts a refused login (and a CHAP failure as a security event) in the metrics.
    fn count_failure(&self, status: LoginStatus) {
        let m = crate::metrics::global();
        let reason = match status {
            LoginStatus::AuthenticationFailure => "auth",
            LoginStatus::AuthorizationFailure => "forbidden",
            LoginStatus::NotFound | LoginStatus::TargetRemoved => "not_found",
            LoginStatus::UnsupportedVersion => "version",
            LoginStatus::InitiatorError
            | LoginStatus::MissingParameter
            | LoginStatus::InvalidDuringLogin => "negotiation",
            LoginStatus::TooManyConnections
            | LoginStatus::CannotIncludeInSession
            | LoginStatus::SessionDoesNotExist
            | LoginStatus::SessionTypeNotSupported => "session",
            _ => "other",
        };
        m.login(false, reason);
        if status == LoginStatus::AuthenticationFailure {
            let t = self.target_seen.lock().clone();
            m.chap_failure(t.as_deref().unwrap_or("discovery"));
        }
    }
}

impl LoginPolicy for Policy<'_> {
    fn target(&self, target_name: &str) -> Option<TargetInfo> {
        self.server.target(target_name).map(|t| {
            *self.target_seen.lock() = Some(t.cfg.iqn.clone());
            TargetInfo {
                alias: t.cfg.alias.clone(),
                chap: t.cfg.chap.as_ref().map(chap_config),
            }
        })
    }

    fn initiator_allowed(&self, target_name: &str, initiator_name: &str) -> bool {
        self.server
            .target(target_name)
            .is_some_and(|t| t.allows(initiator_name))
    }

    fn discovery_chap(&self) -> Option<ChapConfig> {
        self.server.discovery_chap.as_ref().map(chap_config)
    }

    fn allocate_tsih(&self) -> Option<u16> {
        self.server.sessions.allocate_tsih()
    }

    fn session(&self, tsih: u16, cid: u16) -> Option<ExistingSession> {
        self.server.sessions.get(tsih).map(|s| s.existing(cid))
    }
}

/// The identity a completed login claims, for checking it against the session it joins.
fn identity(outcome: &LoginOutcome) -> LoginIdentity<'_> {
    LoginIdentity {
        session_type: outcome.session_type,
        initiator_name: &outcome.initiator_name,
        isid: outcome.isid,
        target_name: match outcome.session_type {
            SessionType::Normal => outcome.target_name.as_deref(),
            SessionType::Discovery => None,
        },
    }
}

/// Runs the login phase on a fresh connection. `Ok(None)`: the initiator went away or login
/// failed in an orderly way (the failure response has been sent).
pub async fn run<R: AsyncRead + Unpin>(
    server: &Arc<Server>,
    portal: &PortalInfo,
    (peer, local): (SocketAddr, SocketAddr),
    reader: &mut FrameReader<R>,
    writer: &Writer,
) -> anyhow::Result<Option<LoginDone>> {
    let mut machine = LoginConnection::new(
        target_settings(&server.tunables),
        portal.tpgt,
        rand::random(),
    );
    let policy = Policy {
        server,
        target_seen: parking_lot::Mutex::new(None),
    };
    loop {
        let pdu = match reader.next().await {
            Ok(p) => p,
            Err(ReadError::Eof) => return Ok(None),
            Err(e) => return Err(anyhow::anyhow!("during login: {e}")),
        };
        if !matches!(pdu.bhs, Bhs::LoginRequest(_)) {
            return Err(anyhow::anyhow!(
                "{:?} PDU received before login completed",
                pdu.bhs.opcode()
            ));
        }
        match machine.handle(&pdu, &policy) {
            LoginStep::Respond(resp) => {
                if !writer.send(resp).await {
                    return Ok(None);
                }
            }
            LoginStep::Fail { response, failure } => {
                tracing::info!("login refused: {failure}");
                policy.count_failure(failure.status);
                let _ = writer.send(response).await;
                return Ok(None);
            }
            LoginStep::Complete { response, outcome } => {
                crate::metrics::global().login(true, "ok");
                let target = match (&outcome.session_type, &outcome.target_name) {
                    (SessionType::Normal, Some(name)) => match server.target(name) {
                        Some(t) => Some(t),
                        None => return Err(anyhow::anyhow!("target {name} vanished during login")),
                    },
                    _ => None,
                };
                let conn_id = next_conn_id();
                let (close_tx, close_rx) = watch::channel(false);
                let session = if outcome.leading {
                    // Session reinstatement: same initiator + ISID (TSIH 0) replaces the old
                    // session, whose tasks are aborted first.
                    let target_name = target.as_ref().map(|t| t.cfg.iqn.as_str());
                    for old in server.sessions.find_for_reinstatement(
                        &outcome.initiator_name,
                        outcome.isid,
                        target_name,
                    ) {
                        tracing::info!(initiator = %outcome.initiator_name, tsih = old.tsih, "session reinstatement: closing the old session");
                        server.sessions.remove(&old);
                        old.close().await;
                    }
                    let s = Session::new(
                        outcome.tsih,
                        outcome.isid,
                        outcome.initiator_name.clone(),
                        target.clone(),
                        portal.tpgt,
                        outcome.cmd_sn,
                        server.tunables.cmdsn_window,
                    );
                    s.conns.lock().insert(
                        outcome.cid,
                        ConnHandle {
                            id: conn_id,
                            peer,
                            local,
                            close: close_tx,
                        },
                    );
                    server.sessions.insert(s.clone());
                    if let Some(t) = &target {
                        t.scsi.nexus_login(&s.nexus);
                    }
                    crate::metrics::global().session_delta(
                        s.target_label(),
                        &s.initiator,
                        false,
                        1,
                    );
                    s
                } else {
                    // The state machine checked the join; the table may have changed since
                    // (the session ended and its TSIH went to another), so the connection is
                    // attached only to a session that still admits this identity.
                    let Some(s) = server.sessions.get(outcome.tsih).filter(|s| {
                        s.existing(outcome.cid).admits(&identity(&outcome)) == JoinDecision::Allowed
                    }) else {
                        return Err(anyhow::anyhow!(
                            "session {} ended during login",
                            outcome.tsih
                        ));
                    };
                    // Connection reinstatement: the new connection takes over the CID; the
                    // old one is told to close and aborts its tasks.
                    let old = s.conns.lock().insert(
                        outcome.cid,
                        ConnHandle {
                            id: conn_id,
                            peer,
                            local,
                            close: close_tx,
                        },
                    );
                    if let Some(old) = old {
                        tracing::info!(
                            cid = outcome.cid,
                            tsih = s.tsih,
                            "connection reinstatement"
                        );
                        old.close.send_replace(true);
                        let victims: Vec<_> = {
                            let mut tasks = s.tasks.lock();
                            let itts: Vec<u32> = tasks
                                .iter()
                                .filter(|(_, t)| t.conn == old.id)
                                .map(|(k, _)| *k)
                                .collect();
                            itts.into_iter().filter_map(|i| tasks.remove(&i)).collect()
                        };
                        super::session::abort_and_wait(victims).await;
                        s.update_window();
                    }
                    s
                };
                let params = outcome.params.clone();
                if !writer.send(response).await {
                    // The initiator went away at the last moment: undo the registration.
                    let last = {
                        let mut conns = session.conns.lock();
                        if conns.get(&outcome.cid).is_some_and(|c| c.id == conn_id) {
                            conns.remove(&outcome.cid);
                        }
                        conns.is_empty()
                    };
                    if last {
                        server.sessions.remove(&session);
                        session.close().await;
                    }
                    return Ok(None);
                }
                crate::metrics::global().session_delta(
                    session.target_label(),
                    &session.initiator,
                    true,
                    1,
                );
                writer
                    .control(Out::Attach {
                        session: session.clone() as Arc<dyn CmdSnSource>,
                        stat_sn: StatSn::new(outcome.stat_sn),
                        codec: params.codec(),
                    })
                    .await;
                return Ok(Some(LoginDone {
                    session,
                    cid: outcome.cid,
                    conn_id,
                    close_rx,
                    params,
                }));
            }
        }
    }
}
