//! The per-connection writer task.
//!
//! Every PDU a connection sends goes through one bounded channel to one task that owns the
//! socket's write half. StatSN, ExpCmdSN and MaxCmdSN are stamped here, at send time, so they
//! are assigned in exactly the order PDUs hit the wire even though commands complete
//! concurrently. Data segments are written straight from their `Bytes` (no copy into the
//! buffer for large payloads).

use std::sync::Arc;

use bytes::BytesMut;
use scsi_proto::iscsi::pdu::{Bhs, CodecConfig, Pdu, RESERVED_TAG};
use scsi_proto::iscsi::seq::StatSn;
use tokio::io::{AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::sync::mpsc;

use super::session::Session;

/// Messages to the writer task.
pub enum Out {
    /// Send a PDU (stamped with sequence numbers once a session is attached).
    Pdu(Pdu),
    /// Login is complete: stamp sequence numbers from now on and switch codec settings.
    Attach {
        /// The session whose CmdSN window supplies ExpCmdSN/MaxCmdSN.
        session: Arc<Session>,
        /// The connection's StatSN counter, continuing from login.
        stat_sn: StatSn,
        /// Full feature phase codec (digests, peer's MaxRecvDataSegmentLength).
        codec: CodecConfig,
    },
    /// Flush and shut the write half down; later messages are dropped.
    Close,
}

/// Sending side of a connection's writer.
#[derive(Clone)]
pub struct Writer {
    tx: mpsc::Sender<Out>,
}

/// Capacity of the writer channel: bounds memory held by PDUs waiting for the socket.
const QUEUE: usize = 256;

/// A write that makes no progress for this long means the initiator stopped reading; the
/// connection is dropped so a stuck peer cannot pin the reader (blocked on a full queue).
const WRITE_STALL: std::time::Duration = std::time::Duration::from_secs(30);

impl Writer {
    /// Spawns the writer task for `io`; the returned join handle ends when the connection's
    /// write side is closed or fails.
    pub fn spawn<W>(io: W, codec: CodecConfig) -> (Writer, tokio::task::JoinHandle<()>)
    where
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let (tx, rx) = mpsc::channel(QUEUE);
        let h = tokio::spawn(run(io, rx, codec));
        (Writer { tx }, h)
    }

    /// Queues a PDU; waits while the queue is full (back pressure). Returns false when the
    /// connection is gone.
    pub async fn send(&self, pdu: Pdu) -> bool {
        self.tx.send(Out::Pdu(pdu)).await.is_ok()
    }

    /// Queues a control message.
    pub async fn control(&self, msg: Out) -> bool {
        self.tx.send(msg).await.is_ok()
    }

    /// Whether the writer task has gone away.
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}

async fn run<W: AsyncWrite + Unpin>(io: W, mut rx: mpsc::Receiver<Out>, mut codec: CodecConfig) {
    let mut w = BufWriter::with_capacity(64 * 1024, io);
    let mut scratch = BytesMut::with_capacity(4096);
    let mut attached: Option<(Arc<Session>, StatSn)> = None;
    'outer: while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        while let Some(msg) = next.take() {
            match msg {
                Out::Pdu(mut pdu) => {
                    if let Some((session, stat_sn)) = attached.as_mut() {
                        stamp(&mut pdu.bhs, session, stat_sn);
                    }
                    let enc = match pdu.encode_parts(&codec, &mut scratch) {
                        Ok(e) => e,
                        Err(e) => {
                            // A bug in PDU construction; never send a malformed frame.
                            tracing::error!("dropping unencodable {:?}: {e}", pdu.bhs.opcode());
                            continue;
                        }
                    };
                    let res = async {
                        w.write_all(&enc.header).await?;
                        if !enc.data.is_empty() {
                            w.write_all(&enc.data).await?;
                        }
                        w.write_all(enc.trailer()).await
                    };
                    match tokio::time::timeout(WRITE_STALL, res).await {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => {
                            tracing::debug!("connection write failed: {e}");
                            break 'outer;
                        }
                        Err(_) => {
                            tracing::info!("initiator stopped reading for {WRITE_STALL:?}: dropping the connection");
                            break 'outer;
                        }
                    }
                }
                Out::Attach {
                    session,
                    stat_sn,
                    codec: c,
                } => {
                    codec = c;
                    attached = Some((session, stat_sn));
                }
                Out::Close => {
                    let _ = tokio::time::timeout(WRITE_STALL, async {
                        let _ = w.flush().await;
                        let _ = w.shutdown().await;
                    })
                    .await;
                    break 'outer;
                }
            }
            next = rx.try_recv().ok();
        }
        match tokio::time::timeout(WRITE_STALL, w.flush()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::debug!("connection flush failed: {e}");
                break;
            }
            Err(_) => {
                tracing::info!(
                    "initiator stopped reading for {WRITE_STALL:?}: dropping the connection"
                );
                break;
            }
        }
    }
    rx.close();
}

/// Fills StatSN / ExpCmdSN / MaxCmdSN. Status-bearing PDUs take a new StatSN; R2T, Data-In
/// without status, unsolicited NOP-In and Async Message carry the next one without using it.
fn stamp(bhs: &mut Bhs, session: &Session, stat_sn: &mut StatSn) {
    let (exp, max) = session.cmd_sns();
    macro_rules! set {
        ($h:expr, $sn:expr) => {{
            $h.stat_sn = $sn;
            $h.exp_cmd_sn = exp;
            $h.max_cmd_sn = max;
        }};
    }
    match bhs {
        Bhs::ScsiResponse(h) => set!(h, stat_sn.advance()),
        Bhs::TaskMgmtResponse(h) => set!(h, stat_sn.advance()),
        Bhs::TextResponse(h) => set!(h, stat_sn.advance()),
        Bhs::LogoutResponse(h) => set!(h, stat_sn.advance()),
        Bhs::Reject(h) => set!(h, stat_sn.advance()),
        Bhs::DataIn(h) => {
            let sn = if h.status.is_some() {
                stat_sn.advance()
            } else {
                stat_sn.peek()
            };
            set!(h, sn)
        }
        Bhs::NopIn(h) => {
            let sn = if h.itt != RESERVED_TAG {
                stat_sn.advance()
            } else {
                stat_sn.peek()
            };
            set!(h, sn)
        }
        Bhs::R2t(h) => set!(h, stat_sn.peek()),
        Bhs::AsyncMessage(h) => set!(h, stat_sn.advance()),
        Bhs::LoginResponse(h) => set!(h, stat_sn.advance()),
        _ => {}
    }
}
