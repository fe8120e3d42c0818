//! One iSCSI connection: the framed reader, login, and the full feature phase loop.
//!
//! The reader task owns all per-connection protocol state (pending write data, text
//! continuation, NOP pings) so none of it needs a lock; responses go through the connection's
//! [`Writer`]. A SCSI command runs inline on this task when it completes without waiting
//! (a read the page cache serves) and as a spawned task otherwise, so one slow command never
//! blocks the rest (see `cmd.rs`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use scsi_proto::iscsi::pdu::{self, Bhs, CodecConfig, Pdu, PduError, RejectReason};
use scsi_proto::iscsi::text::TextAssembler;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::net::TcpStream;
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;

use super::budget::{ConnReads, Grant, ReadGrant};
use super::datain::DataInLimits;
use super::nop::NopState;
use super::r2t::{PendingWrite, WriteParams};
use super::session::Session;
use super::text::TextState;
use super::writer::{Out, Writer};
use super::{PortalInfo, Server};

/// Why reading the next PDU failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The peer closed the connection.
    #[error("connection closed by peer")]
    Eof,
    /// Socket error.
    #[error("read error: {0}")]
    Io(#[from] std::io::Error),
    /// The PDU could not be decoded.
    #[error("{0}")]
    Pdu(#[from] PduError),
}

/// Reads whole PDUs from a byte stream with scsi-proto's decoder. Cancel safe: partial input
/// stays in the buffer.
pub struct FrameReader<R> {
    io: R,
    buf: BytesMut,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// Wraps a read half.
    pub fn new(io: R) -> Self {
        FrameReader {
            io,
            buf: BytesMut::with_capacity(64 * 1024),
        }
    }

    /// Whether a whole PDU (or a decode error) is already buffered, so [`Self::next`] will
    /// not wait for the socket.
    pub fn has_buffered_pdu(&self, codec: &CodecConfig) -> bool {
        // `frame_len` knows the length once the header is in, before the rest has arrived.
        match pdu::frame_len(&self.buf, codec) {
            Ok(Some(total)) => self.buf.len() >= total,
            Ok(None) => false,
            Err(_) => true,
        }
    }

    /// The next PDU. Memory is bounded by one PDU: the decoder refuses a data segment longer
    /// than `codec.max_recv_data_segment_length` as soon as the header is in.
    pub async fn next(&mut self, codec: &CodecConfig) -> Result<Pdu, ReadError> {
        loop {
            if let Some(p) = pdu::decode(&mut self.buf, codec)? {
                return Ok(p);
            }
            if self.buf.capacity() - self.buf.len() < 16 * 1024 {
                self.buf.reserve(64 * 1024);
            }
            let n = self.io.read_buf(&mut self.buf).await?;
            if n == 0 {
                return Err(ReadError::Eof);
            }
        }
    }
}

/// A write command's data, handed from the reader to the command's task.
pub(crate) struct WriteData {
    pub data: Bytes,
    /// R2Ts the data took.
    pub r2ts: u32,
    /// The budget reservation covering `data`; held until the command completes.
    pub grant: Option<Grant>,
}

/// Why a write command's data will not come.
#[derive(Debug)]
pub(crate) enum DataError {
    /// The Data-Out broke the protocol.
    Protocol(&'static str),
    /// The write buffer budget could not cover the command: TASK SET FULL.
    NoBuffer,
}

/// A write command still receiving data.
pub(crate) struct PendingEntry {
    pub pw: PendingWrite,
    pub data_tx: oneshot::Sender<Result<WriteData, DataError>>,
    /// Order of arrival: budget is granted to a connection's writes in this order.
    pub seq: u64,
    /// The budget reservation for the write's data; `None` while it waits for one (no R2T
    /// goes out until then) or when it needs none.
    pub grant: Option<Grant>,
    /// The budget could not cover the write and the initiator sends data unasked: that data
    /// is consumed without being kept, then the command ends with TASK SET FULL.
    pub refused: bool,
}

impl PendingEntry {
    /// Whether the write waits for budget before it may solicit its data.
    pub fn waits_for_budget(&self) -> bool {
        !self.refused && self.grant.is_none() && self.pw.want() > 0
    }
}

/// Full feature phase state of one connection.
pub struct Conn {
    pub(crate) server: Arc<Server>,
    pub(crate) local: SocketAddr,
    pub(crate) peer: SocketAddr,
    pub(crate) writer: Writer,
    pub(crate) codec: CodecConfig,
    pub(crate) session: Arc<Session>,
    pub(crate) cid: u16,
    pub(crate) conn_id: u64,
    pub(crate) write_params: WriteParams,
    pub(crate) datain_limits: DataInLimits,
    pub(crate) immediate_data: bool,
    pub(crate) pending: HashMap<u32, PendingEntry>,
    pub(crate) pending_seq: u64,
    /// Changes whenever write buffer budget is returned (see [`Conn::issue_r2ts`]).
    pub(crate) budget_freed: watch::Receiver<u64>,
    /// Set while a pending write waits for budget: retry when `budget_freed` changes.
    pub(crate) budget_waiting: Option<super::budget::Waiter>,
    pub(crate) next_ttt: u32,
    pub(crate) text: TextState,
    pub(crate) text_in: TextAssembler,
    pub(crate) nop: NopState,
    /// Set once a logout has been answered: the connection closes after flushing.
    pub(crate) logged_out: bool,
    /// Results of commands completed inline, not yet written. They go out in one vectored
    /// write when no further PDU is buffered (the reader is about to wait for the socket), when
    /// the batch is large, or before anything else this task sends; at queue depth 32 this
    /// saves most of a `writev` per command, at queue depth 1 it delays nothing.
    pub(crate) out: Vec<Pdu>,
    /// Data bytes in `out`.
    pub(crate) out_bytes: usize,
    /// The read buffer reservations of the results in `out`, returned once they are written.
    pub(crate) out_held: Vec<ReadGrant>,
    /// This connection's share of the read buffer budget.
    pub(crate) reads: Arc<ConnReads>,
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
    let mut conn = Conn {
        server: server.clone(),
        local,
        peer,
        writer: writer.clone(),
        codec: p.codec(),
        session: done.session.clone(),
        cid: done.cid,
        conn_id: done.conn_id,
        write_params: WriteParams {
            first_burst: p.first_burst_length,
            max_burst: p.max_burst_length,
            max_outstanding_r2t: p.max_outstanding_r2t,
            initial_r2t: p.initial_r2t,
        },
        datain_limits: DataInLimits {
            max_segment: p.max_send_data_segment_length,
            max_burst: p.max_burst_length,
        },
        immediate_data: p.immediate_data,
        pending: HashMap::new(),
        pending_seq: 0,
        budget_freed: server.write_budget.subscribe(),
        budget_waiting: None,
        next_ttt: 1,
        text: TextState::default(),
        text_in: TextAssembler::new(),
        nop: NopState::new(&server.tunables),
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
            if !self.out.is_empty() && !reader.has_buffered_pdu(&self.codec) {
                self.flush_out().await;
            }
            let deadline = self.nop.next_deadline();
            tokio::select! {
                r = reader.next(&self.codec) => match r {
                    Ok(pdu) => {
                        self.nop.received();
                        if let Err(e) = self.handle(pdu).await {
                            tracing::warn!(peer = %self.peer, "closing connection: {e}");
                            return;
                        }
                    }
                    Err(ReadError::Pdu(e)) if !e.is_fatal() => {
                        self.nop.received();
                        if matches!(e, PduError::DataDigest { .. }) {
                            crate::metrics::global().digest_error("data");
                        }
                        tracing::debug!(peer = %self.peer, "rejecting PDU: {e}");
                        if let (Some(reason), Some(hdr)) = (e.reject_reason(), e.rejected_header()) {
                            self.reject(reason, hdr.clone()).await;
                        }
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
                _ = self.budget_freed.changed(), if self.budget_waiting.is_some() => {
                    // Budget came back: a write waiting for it may now solicit its data.
                    self.flush_out().await;
                    self.issue_r2ts().await;
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
                    if !self.nop.on_timer(&self.writer).await {
                        crate::metrics::global().nop_timeout();
                        tracing::info!(peer = %self.peer, "no answer to NOP-In ping: dropping connection");
                        return;
                    }
                }
            }
        }
    }

    /// Writes the batched results of inline commands.
    pub(crate) async fn flush_out(&mut self) {
        if self.out.is_empty() {
            return;
        }
        self.out_bytes = 0;
        let batch = std::mem::take(&mut self.out);
        self.writer.send_all(batch).await;
        self.out_held.clear();
    }

    /// Dispatches one received PDU. An error closes the connection.
    async fn handle(&mut self, pdu: Pdu) -> anyhow::Result<()> {
        if !matches!(pdu.bhs, Bhs::ScsiCommand(_)) {
            // Whatever this PDU makes us send (a TMF or logout response, an R2T, a NOP-In)
            // follows the results of the commands before it.
            self.flush_out().await;
        }
        match &pdu.bhs {
            Bhs::DataOut(_) => {
                self.data_out(pdu).await;
                Ok(())
            }
            Bhs::NopOut(h) if h.itt == pdu::RESERVED_TAG => {
                // Answer to our ping (I bit set, carries no new CmdSN).
                self.nop.answered(h.ttt);
                Ok(())
            }
            Bhs::NopOut(_)
            | Bhs::ScsiCommand(_)
            | Bhs::TaskMgmtRequest(_)
            | Bhs::TextRequest(_)
            | Bhs::LogoutRequest(_) => {
                let cmd_sn = pdu.bhs.cmd_sn().unwrap_or(0);
                let immediate = pdu.bhs.is_immediate();
                if immediate && matches!(pdu.bhs, Bhs::ScsiCommand(_)) {
                    // Immediate commands bypass the window; bound them by the task table.
                    let running = self.session.tasks.lock().len() as u32;
                    if running >= self.session.window_size.saturating_mul(2) {
                        let hdr = header_of(&pdu);
                        self.reject(RejectReason::ImmediateCommandReject, hdr).await;
                        return Ok(());
                    }
                }
                // A command ahead of ExpCmdSN waits in the window for the gap to fill; its data
                // is accounted while it waits, within limits (see `session::MAX_GAP_BYTES`).
                // One window lock for both the gap test and the admission (per PDU).
                let admitted = {
                    let mut window = self.session.window.lock();
                    let held =
                        if !immediate && !pdu.data.is_empty() && cmd_sn != window.exp_cmd_sn() {
                            match self
                                .session
                                .hold_for_gap(pdu.data.len() as u64, &self.server.write_budget)
                            {
                                Ok(c) => Some(c),
                                Err(e) => {
                                    drop(window);
                                    crate::metrics::global().limit_refusal("cmdsn_gap");
                                    return Err(anyhow::anyhow!("{e}"));
                                }
                            }
                        } else {
                            None
                        };
                    window.admit(cmd_sn, immediate, super::session::Queued { pdu, held })
                };
                if let Err((why, q)) = admitted {
                    tracing::debug!(peer = %self.peer, opcode = ?q.pdu.bhs.opcode(), "dropping command: {why}");
                    return Ok(());
                }
                loop {
                    let next = self.session.window.lock().pop_ready();
                    let Some(super::session::Queued { pdu, held }) = next else {
                        break;
                    };
                    // Out of the window: its data is now the command's, which accounts it
                    // (a write reserves it in the write buffer budget) as any other.
                    drop(held);
                    self.dispatch(pdu).await?;
                }
                // The window is managed: MaxCmdSN moves only here and when tasks finish.
                self.session.update_window();
                Ok(())
            }
            Bhs::Snack(_) => {
                // ErrorRecoveryLevel 0: SNACK is not supported.
                let hdr = header_of(&pdu);
                self.reject(RejectReason::CommandNotSupported, hdr).await;
                Ok(())
            }
            Bhs::LoginRequest(_) => {
                let hdr = header_of(&pdu);
                self.reject(RejectReason::ProtocolError, hdr).await;
                Ok(())
            }
            _ => {
                // A target opcode sent by the initiator.
                let hdr = header_of(&pdu);
                self.reject(RejectReason::ProtocolError, hdr).await;
                Ok(())
            }
        }
    }

    /// Executes a command that the CmdSN window released, in CmdSN order.
    async fn dispatch(&mut self, pdu: Pdu) -> anyhow::Result<()> {
        match &pdu.bhs {
            Bhs::ScsiCommand(_) => self.scsi_command(pdu).await,
            Bhs::NopOut(_) => {
                self.nop_out(pdu).await;
                Ok(())
            }
            Bhs::TaskMgmtRequest(_) => {
                self.task_mgmt(pdu).await;
                Ok(())
            }
            Bhs::TextRequest(_) => self.text_request(pdu).await,
            Bhs::LogoutRequest(_) => {
                self.logout(pdu).await;
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Sends a Reject carrying the offending header.
    pub(crate) async fn reject(&self, reason: RejectReason, header: Bytes) {
        crate::metrics::global().pdu_rejected(reject_word(reason));
        let (exp, max) = self.session.cmd_sns();
        let _ = self
            .writer
            .send(Pdu::reject(reason, header, 0, exp, max))
            .await;
    }

    /// Waits (bounded) for this connection's running tasks to finish on shutdown, so their
    /// responses go out; whatever is still running after the grace period is aborted.
    async fn drain_for_shutdown(&mut self) {
        self.pending.clear();
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
        self.pending.clear();
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

/// The 48-byte BHS of a PDU, re-encoded, for the Reject data segment.
pub(crate) fn header_of(pdu: &Pdu) -> Bytes {
    let mut scratch = BytesMut::new();
    let bare = Pdu::header_only(pdu.bhs.clone());
    match bare.encode_parts(&CodecConfig::default(), &mut scratch) {
        Ok(e) if e.header.len() >= pdu::BHS_LEN => {
            let mut h = BytesMut::from(&e.header[..pdu::BHS_LEN]);
            // Restore the original DataSegmentLength (the copy was encoded without data).
            let dsl = (pdu.data.len() as u32).to_be_bytes();
            h[5..8].copy_from_slice(&dsl[1..]);
            h.freeze()
        }
        Ok(_) => Bytes::from_static(&[0u8; pdu::BHS_LEN]),
        Err(_) => Bytes::from_static(&[0u8; pdu::BHS_LEN]),
    }
}

/// The current time as the NOP timer sees it.
pub(crate) fn now() -> Instant {
    Instant::now()
}

/// Resolves once the flag turns true (or its sender is gone).
pub(crate) async fn signalled(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|v| *v).await;
}

#[cfg(test)]
mod frame_reader_tests {
    use super::*;

    /// A PDU whose header has arrived but not its data segment is not "buffered": the
    /// connection must flush its batched results before it waits for the rest.
    #[test]
    fn a_pdu_is_buffered_only_once_all_of_it_is_in() {
        let codec = CodecConfig::default();
        let mut r = FrameReader::new(tokio::io::empty());
        assert!(!r.has_buffered_pdu(&codec), "nothing in");
        // A 48-byte header announcing a 100-byte data segment (opcode 0: NOP-Out).
        let mut bhs = [0u8; 48];
        bhs[0] = 0x40;
        bhs[7] = 100;
        r.buf.extend_from_slice(&bhs);
        assert!(!r.has_buffered_pdu(&codec), "header only");
        r.buf.extend_from_slice(&[0u8; 60]);
        assert!(!r.has_buffered_pdu(&codec), "part of the data segment");
        r.buf.extend_from_slice(&[0u8; 40]);
        assert!(r.has_buffered_pdu(&codec), "the whole PDU");
    }
}
