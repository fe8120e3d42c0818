//! One iSCSI connection's async shell: the framed read loop around the sans-I/O
//! [`Connection`] machine.
//!
//! The shell only moves bytes and runs what the machine asks for: it reads PDUs
//! ([`FrameReader`]), hands them to the machine with the current time, and performs the
//! machine's [`Action`]s — writing PDUs through the connection's [`Writer`], running SCSI
//! commands on the device server (`cmd.rs`), task management (`tmf.rs`) and logout
//! (`logout.rs`). Timers, shutdown and session close signals are its too. A SCSI command runs
//! inline on this task when it completes without waiting (a read the page cache serves) and
//! as a spawned task otherwise, so one slow command never blocks the rest.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use scsi_proto::iscsi::pdu::{Bhs, CodecConfig, Pdu, PduError, RejectReason};
use scsi_proto::iscsi::text::TextWriter;
use tokio::io::AsyncRead;
use tokio::net::TcpStream;
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;

use super::budget::{ConnReads, ConnWrites, Grant, ReadGrant, Waiter};
use super::framing::{FrameReader, ReadError};
use super::machine::{
    Action, Admission, Close, ConnParams, Connection, DataError, Host, WriteData,
};
use super::session::{Queued, Session};
use super::writer::{Out, Writer};
use super::{PortalInfo, Server};

/// What a write command's task receives from the connection: its data or why none comes.
pub(crate) type DataResult = Result<WriteData<Grant>, DataError>;

/// Whether a connection waits for write buffer budget, and the signal that some came back.
pub(crate) struct BudgetWatch {
    /// Changes whenever write buffer budget is returned.
    freed: watch::Receiver<u64>,
    /// Set while a pending write waits for budget: retry when `freed` changes.
    waiting: Option<Waiter>,
    /// This connection's share of the write buffer budget: its writes reserve through it.
    share: Arc<ConnWrites>,
}

/// Full feature phase state of one connection: the machine and what the shell keeps for it.
pub struct Conn {
    pub(super) server: Arc<Server>,
    pub(super) peer: SocketAddr,
    local: SocketAddr,
    pub(super) writer: Writer,
    pub(super) session: Arc<Session>,
    pub(super) cid: u16,
    pub(super) conn_id: u64,
    /// The protocol state machine.
    pub(super) machine: Connection<Grant>,
    /// Write commands collecting data: where their data goes once complete.
    pub(super) data_tx: HashMap<u32, oneshot::Sender<DataResult>>,
    budget: BudgetWatch,
    /// Set once a logout has been answered: the connection closes after flushing.
    pub(super) logged_out: bool,
    /// Results of commands completed inline, not yet written. They go out in one vectored
    /// write when no further PDU is buffered (the reader is about to wait for the socket), when
    /// the batch is large, or before anything else this task sends; at queue depth 32 this
    /// saves most of a `writev` per command, at queue depth 1 it delays nothing.
    pub(super) out: Vec<Pdu>,
    /// Data bytes in `out`.
    pub(super) out_bytes: usize,
    /// The read buffer reservations of the results in `out`, returned once they are written.
    pub(super) out_held: Vec<ReadGrant>,
    /// This connection's share of the read buffer budget.
    pub(super) reads: Arc<ConnReads>,
}

/// The machine's view of the session, the budget and the target list.
struct SessionHost<'a> {
    server: &'a Server,
    session: &'a Arc<Session>,
    local: SocketAddr,
    budget: &'a mut BudgetWatch,
}

impl Host for SessionHost<'_> {
    type Grant = Grant;

    fn immediate_limit_reached(&self) -> bool {
        // Immediate commands bypass the window; bound them by the task table.
        let running = self.session.tasks.lock().len() as u32;
        running >= self.session.window_size.saturating_mul(2)
    }

    fn admit(&mut self, pdu: Pdu) -> Admission {
        let cmd_sn = pdu.bhs.cmd_sn().unwrap_or(0);
        let immediate = pdu.bhs.is_immediate();
        // A command ahead of ExpCmdSN waits in the window for the gap to fill; its data is
        // accounted while it waits, within limits (see `session::MAX_GAP_BYTES`). One window
        // lock for both the gap test and the admission (per PDU).
        let mut window = self.session.window.lock();
        let held = if !immediate && !pdu.data.is_empty() && cmd_sn != window.exp_cmd_sn() {
            match self
                .session
                .hold_for_gap(pdu.data.len() as u64, &self.server.write_budget)
            {
                Ok(c) => Some(c),
                Err(e) => {
                    drop(window);
                    crate::metrics::global().limit_refusal("cmdsn_gap");
                    return Admission::Close(e.to_string());
                }
            }
        } else {
            None
        };
        match window.admit(cmd_sn, immediate, Queued { pdu, held }) {
            Ok(()) => Admission::Admitted,
            Err((why, q)) => {
                tracing::debug!(opcode = ?q.pdu.bhs.opcode(), "dropping command: {why}");
                Admission::Dropped(why)
            }
        }
    }

    fn release(&mut self) -> Option<Pdu> {
        // Out of the window: its data is now the command's, which accounts it (a write
        // reserves it in the write buffer budget) as any other; the gap charge drops here.
        let Queued { pdu, held } = self.session.window.lock().pop_ready()?;
        drop(held);
        Some(pdu)
    }

    fn task_exists(&self, itt: u32) -> bool {
        self.session.tasks.lock().contains_key(&itt)
    }

    fn data_out_len(&self, lun: u64, cdb: &[u8]) -> Option<u32> {
        self.session.target.as_ref()?.scsi.data_out_len(lun, cdb)
    }

    fn try_reserve(&mut self, bytes: u64) -> Option<Grant> {
        self.budget.share.try_reserve(bytes)
    }

    fn write_refused(&mut self, itt: u32, want: u32) {
        crate::metrics::global().limit_refusal("write_buffer");
        tracing::debug!(itt, want, "write buffer budget exhausted: TASK SET FULL");
    }

    fn watch_budget(&mut self, waiting: bool) {
        if !waiting {
            self.budget.waiting = None;
            return;
        }
        if self.budget.waiting.is_none() {
            // Registered before the attempts that follow (see `WriteBudget::waiter`).
            self.budget.waiting = Some(self.server.write_budget.waiter());
        }
        // Seen now: budget returned from here on wakes the connection again.
        self.budget.freed.borrow_and_update();
    }

    fn send_targets(&self, value: &str, out: &mut TextWriter) {
        self.server.send_targets(
            &self.session.initiator,
            self.session.target.as_ref(),
            self.local,
            value,
            out,
        );
    }
}

/// Serves one accepted TCP connection to the end.
pub async fn serve(
    server: Arc<Server>,
    stream: TcpStream,
    portal: PortalInfo,
    mut slot: super::admission::ConnSlot,
) {
    let Some(_token) = server.conn_token() else {
        return;
    };
    let peer = stream.peer_addr().ok();
    let local = stream.local_addr().ok();
    let (Some(peer), Some(local)) = (peer, local) else {
        return;
    };
    let _ = stream.set_nodelay(true);
    let (rd, wr) = stream.into_split();
    let writer = Writer::new(wr, CodecConfig::default());
    let mut reader = FrameReader::new(rd);

    let login_timeout = Duration::from_secs(server.tunables.login_timeout_secs);
    let login = tokio::time::timeout(
        login_timeout,
        super::login::run(&server, &portal, (peer, local), &mut reader, &writer),
    );
    let mut shutdown = server.shutdown_signal();
    let outcome = tokio::select! {
        r = login => match r {
            Ok(Ok(Some(done))) => Some(done),
            Ok(Ok(None)) => None,
            Ok(Err(e)) => {
                tracing::info!(%peer, "login failed: {e}");
                None
            }
            Err(_) => {
                crate::metrics::global().limit_refusal("iscsi_login_timeout");
                tracing::info!(%peer, "login timed out after {}s", login_timeout.as_secs());
                None
            }
        },
        _ = signalled(&mut shutdown) => None,
    };
    let Some(done) = outcome else {
        close_writer(&writer).await;
        return;
    };
    slot.logged_in();

    let close_rx = done.close_rx.clone();
    let p = &done.params;
    reader.set_config(p.codec());
    let tunables = &server.tunables;
    let params = ConnParams::new(
        done.session.is_discovery(),
        p,
        (tunables.nop_interval_secs > 0).then(|| Duration::from_secs(tunables.nop_interval_secs)),
        Duration::from_secs(tunables.nop_timeout_secs.max(1)),
        crate::config::MAX_COMMAND_DATA,
    );
    let mut conn = Conn {
        server: server.clone(),
        local,
        peer,
        writer: writer.clone(),
        session: done.session.clone(),
        cid: done.cid,
        conn_id: done.conn_id,
        machine: Connection::new(params, now()),
        data_tx: HashMap::new(),
        budget: BudgetWatch {
            freed: server.write_budget.subscribe(),
            waiting: None,
            share: server.write_budget.connection(),
        },
        logged_out: false,
        out: Vec::new(),
        out_bytes: 0,
        out_held: Vec::new(),
        reads: server.read_budget.connection(),
    };
    tracing::info!(
        %peer,
        initiator = %done.session.initiator,
        target = done.session.target.as_ref().map(|t| t.cfg.iqn.as_str()).unwrap_or("(discovery)"),
        tsih = done.session.tsih,
        cid = done.cid,
        "login complete"
    );
    conn.run(&mut reader, close_rx).await;
    conn.finish().await;
    close_writer(&writer).await;
}

/// Flushes and shuts the write half down, waiting at most 5 s (a sender stuck on a full
/// socket holds the writer; dropping the last handle closes the socket anyway).
async fn close_writer(writer: &Writer) {
    let _ = tokio::time::timeout(Duration::from_secs(5), writer.control(Out::Close)).await;
}

/// The machine's view of this connection's session (a macro so the borrows stay disjoint
/// from `self.machine`).
macro_rules! host {
    ($self:ident) => {
        &mut SessionHost {
            server: &$self.server,
            session: &$self.session,
            local: $self.local,
            budget: &mut $self.budget,
        }
    };
}

impl Conn {
    /// The full feature phase loop.
    async fn run<R: AsyncRead + Unpin>(
        &mut self,
        reader: &mut FrameReader<R>,
        mut close_rx: watch::Receiver<bool>,
    ) {
        let mut shutdown = self.server.shutdown_signal();
        let mut session_closed = self.session.closed_signal();
        loop {
            if self.logged_out || self.writer.is_closed() {
                return;
            }
            if !self.out.is_empty() && !reader.has_buffered_pdu() {
                self.flush_out().await;
            }
            // Disabled pings: a far deadline (re-armed on every loop iteration anyway).
            let deadline = self
                .machine
                .poll_timeout()
                .map(Instant::from_std)
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                r = reader.next() => match r {
                    Ok(pdu) => {
                        if let Err(e) = self.handle(pdu).await {
                            tracing::warn!(peer = %self.peer, "closing connection: {e}");
                            return;
                        }
                    }
                    Err(ReadError::Pdu(e)) if !e.is_fatal() => {
                        if matches!(e, PduError::DataDigest { .. }) {
                            crate::metrics::global().digest_error("data");
                        }
                        tracing::debug!(peer = %self.peer, "rejecting PDU: {e}");
                        let reject = e.reject_reason().zip(e.rejected_header().cloned());
                        self.machine.handle_bad_pdu(now(), reject);
                        self.perform().await;
                    }
                    Err(ReadError::Eof) => {
                        tracing::debug!(peer = %self.peer, "connection closed by initiator");
                        return;
                    }
                    Err(e) => {
                        if matches!(e, ReadError::Pdu(PduError::HeaderDigest { .. })) {
                            crate::metrics::global().digest_error("header");
                        }
                        tracing::info!(peer = %self.peer, "closing connection: {e}");
                        return;
                    }
                },
                _ = self.budget.freed.changed(), if self.budget.waiting.is_some() => {
                    // Budget came back: a write waiting for it may now solicit its data.
                    self.flush_out().await;
                    self.purge();
                    self.machine.budget_freed(host!(self));
                    self.perform().await;
                }
                _ = signalled(&mut close_rx) => {
                    tracing::info!(peer = %self.peer, "connection closed by session reinstatement or reset");
                    return;
                }
                _ = signalled(&mut session_closed) => return,
                _ = signalled(&mut shutdown) => {
                    self.flush_out().await;
                    self.drain_for_shutdown().await;
                    return;
                }
                _ = tokio::time::sleep_until(deadline) => {
                    self.flush_out().await;
                    if let Err(e) = self.machine.handle_timeout(now()) {
                        crate::metrics::global().nop_timeout();
                        tracing::info!(peer = %self.peer, "{e}: dropping connection");
                        return;
                    }
                    self.perform().await;
                }
            }
        }
    }

    /// Writes the batched results of inline commands.
    pub(super) async fn flush_out(&mut self) {
        if self.out.is_empty() {
            return;
        }
        self.out_bytes = 0;
        let batch = std::mem::take(&mut self.out);
        self.writer.send_all(batch).await;
        self.out_held.clear();
    }

    /// Hands one received PDU to the machine and performs what it asks for. An error
    /// closes the connection.
    async fn handle(&mut self, pdu: Pdu) -> Result<(), Close> {
        if !matches!(pdu.bhs, Bhs::ScsiCommand(_)) {
            // Whatever this PDU makes us send (a TMF or logout response, an R2T, a NOP-In)
            // follows the results of the commands before it.
            self.flush_out().await;
        }
        // Writes whose task is gone must not take Data-Out or budget.
        self.purge();
        let admitted = self.machine.handle_pdu(now(), pdu, host!(self))?;
        self.perform().await;
        if admitted {
            // One released PDU at a time: a command's task is in the task table before the
            // next command's ITT is checked.
            while self.machine.dispatch_released(host!(self)) {
                self.perform().await;
            }
            // The window is managed: MaxCmdSN moves only here and when tasks finish.
            self.session.update_window();
        }
        Ok(())
    }

    /// Performs the machine's queued actions, in order.
    async fn perform(&mut self) {
        while let Some(action) = self.machine.poll_action() {
            match action {
                Action::Send(p) => {
                    let _ = self.writer.send(p).await;
                }
                Action::SendAll(ps) => {
                    self.writer.send_all(ps).await;
                }
                Action::Result(ps) => {
                    self.flush_out().await;
                    self.writer.send_all(ps).await;
                }
                Action::Reject {
                    reason,
                    header,
                    why,
                } => {
                    tracing::debug!(peer = %self.peer, "reject: {why}");
                    crate::metrics::global().pdu_rejected(reject_word(reason));
                    let _ = self.writer.send(Pdu::reject(reason, header, 0, 0, 0)).await;
                }
                Action::Execute(cmd) => self.execute(cmd).await,
                Action::WriteData { itt, result } => {
                    if let Some(tx) = self.data_tx.remove(&itt) {
                        let _ = tx.send(result);
                    }
                }
                Action::TaskMgmt(pdu) => {
                    self.task_mgmt(pdu).await;
                    self.purge();
                }
                Action::Logout { itt, reason, cid } => self.logout(itt, reason, cid).await,
            }
        }
    }

    /// Forgets the writes whose task is gone (aborted); their grants return to the budget.
    pub(super) fn purge(&mut self) {
        let machine = &mut self.machine;
        self.data_tx.retain(|itt, tx| {
            let open = !tx.is_closed();
            if !open {
                machine.forget_write(*itt);
            }
            open
        });
    }

    /// Drops every write still collecting data.
    pub(super) fn drop_pending_writes(&mut self) {
        self.data_tx.clear();
        self.machine.forget_writes();
    }

    /// Waits (bounded) for this connection's running tasks to finish on shutdown, so their
    /// responses go out; whatever is still running after the grace period is aborted.
    async fn drain_for_shutdown(&mut self) {
        self.drop_pending_writes();
        let waits: Vec<watch::Receiver<()>> = self
            .session
            .tasks
            .lock()
            .values()
            .filter(|t| t.conn == self.conn_id)
            .map(|t| t.done.clone())
            .collect();
        let all = async {
            for mut w in waits {
                while w.changed().await.is_ok() {}
            }
        };
        if tokio::time::timeout(Duration::from_secs(10), all)
            .await
            .is_err()
        {
            tracing::warn!(peer = %self.peer, "shutdown: aborting commands still running after 10s");
        }
    }

    /// Leaves the session: this connection's tasks are aborted; with no connection left
    /// the session ends (ErrorRecoveryLevel 0 keeps no state for reconnects).
    async fn finish(&mut self) {
        self.flush_out().await;
        self.drop_pending_writes();
        let mine: Vec<_> = {
            let mut tasks = self.session.tasks.lock();
            let itts: Vec<u32> = tasks
                .iter()
                .filter(|(_, t)| t.conn == self.conn_id)
                .map(|(k, _)| *k)
                .collect();
            itts.into_iter().filter_map(|i| tasks.remove(&i)).collect()
        };
        super::session::abort_and_wait(mine).await;
        crate::metrics::global().session_delta(
            self.session.target_label(),
            &self.session.initiator,
            true,
            -1,
        );
        let last = {
            let mut conns = self.session.conns.lock();
            // A reinstated connection has already replaced our entry under the same CID.
            if conns.get(&self.cid).is_some_and(|c| c.id == self.conn_id) {
                conns.remove(&self.cid);
            }
            conns.is_empty()
        };
        if last {
            self.server.sessions.remove(&self.session);
            self.session.close().await;
            tracing::info!(peer = %self.peer, tsih = self.session.tsih, "session closed");
        }
    }
}

/// Fixed metrics word for a Reject reason.
fn reject_word(r: RejectReason) -> &'static str {
    match r {
        RejectReason::DataDigestError => "data_digest",
        RejectReason::SnackReject => "snack_reject",
        RejectReason::ProtocolError => "protocol_error",
        RejectReason::CommandNotSupported => "command_not_supported",
        RejectReason::ImmediateCommandReject => "immediate_command_reject",
        RejectReason::TaskInProgress => "task_in_progress",
        RejectReason::InvalidDataAck => "invalid_data_ack",
        RejectReason::InvalidPduField => "invalid_pdu_field",
        RejectReason::LongOperationReject => "long_operation_reject",
        RejectReason::NegotiationReset => "negotiation_reset",
        RejectReason::WaitingForLogout => "waiting_for_logout",
        RejectReason::Other(_) => "other",
    }
}

/// The current time, as the machine is given it.
fn now() -> std::time::Instant {
    std::time::Instant::now()
}

/// Resolves once the flag turns true (or its sender is gone).
pub(crate) async fn signalled(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|v| *v).await;
}
