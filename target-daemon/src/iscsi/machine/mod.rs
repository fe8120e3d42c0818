//! The full feature phase of one iSCSI connection as a sans-I/O state machine.
//!
//! [`Connection`] owns the per-connection protocol state (write data collection and R2Ts,
//! the NOP ping timer, the text exchange) and decides what every received PDU means. It
//! never reads a clock, never spawns, never awaits and touches no socket: time comes in as
//! an argument (`handle_pdu(now, ..)`, `handle_timeout(now)`), the session's shared state
//! (CmdSN window, task table, write buffer budget, the target list for SendTargets) is
//! reached through the small [`Host`] trait, and what has to happen outside is queued as
//! [`Action`]s the async shell (`conn.rs`) takes with [`Connection::poll_action`]: send these
//! PDUs, run this SCSI command, hand a write its data, perform this task management function
//! or logout. The tests drive it PDU by PDU under a simulated clock (`tests.rs`).
//!
//! Nothing here imports tokio or the rest of the daemon, so the whole tree could move to
//! scsi-proto (see docs/decisions/0009-connection-state-machine.md).

pub mod datain;
pub mod nop;
pub mod r2t;
pub mod text;
mod writes;

#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use scsi_proto::iscsi::pdu::{
    self, Bhs, CodecConfig, LogoutReason, Pdu, RejectReason, TaskAttribute,
};
use scsi_proto::iscsi::seq::WindowError;
use scsi_proto::iscsi::text::TextWriter;
use scsi_proto::scsi::sense::{asc, Sense, SenseKey};

use datain::{CmdInfo, DataInLimits};
use nop::{PingTimer, Pinger};
use r2t::WriteParams;
use text::{TextExchange, TextReply};
use writes::Writes;
pub use writes::{DataError, WriteData};

/// Largest expected transfer of a command that may run inline on the connection task: the
/// copy into or out of the page cache then stays in the microseconds, and larger transfers
/// amortise a task spawn anyway.
const INLINE_MAX_BYTES: u32 = 128 * 1024;

/// What the connection needs from the rest of the daemon: the session's CmdSN window and
/// task table, the device server's view of a CDB, the write buffer budget and the target
/// list. The async shell implements it over the session; tests implement it in memory.
pub trait Host {
    /// A reservation in the write buffer budget, returned when dropped.
    type Grant;
    /// Whether immediate commands, which bypass the CmdSN window, are at their bound.
    fn immediate_limit_reached(&self) -> bool;
    /// Puts a CmdSN-carrying PDU into the session's CmdSN window.
    fn admit(&mut self, pdu: Pdu) -> Admission;
    /// The next PDU the window releases in CmdSN order.
    fn release(&mut self) -> Option<Pdu>;
    /// Whether a task with this ITT is running in the session.
    fn task_exists(&self, itt: u32) -> bool;
    /// Data-Out the CDB asks for (SPDTL), when the device server knows it.
    fn data_out_len(&self, lun: u64, cdb: &[u8]) -> Option<u32>;
    /// Reserves `bytes` of the write buffer budget, if that much is free.
    fn try_reserve(&mut self, bytes: u64) -> Option<Self::Grant>;
    /// A write was refused for want of budget while its data comes unasked (it ends in
    /// TASK SET FULL): for the refusal count.
    fn write_refused(&mut self, itt: u32, want: u32);
    /// Whether a write waits for budget: the shell retries (`budget_freed`) when some returns.
    fn watch_budget(&mut self, waiting: bool);
    /// Appends the SendTargets answer for `value` ("All", a name, or "" for the session's).
    fn send_targets(&self, value: &str, out: &mut TextWriter);
}

/// What the CmdSN window did with a PDU.
#[derive(Debug)]
pub enum Admission {
    /// Queued (in order or behind a gap).
    Admitted,
    /// Outside the window or a duplicate: dropped silently (RFC 7143 3.2.2.1). The reason
    /// is carried as the window reports it, so a flood of stale CmdSNs costs no allocation.
    Dropped(WindowError),
    /// Holding it would break a limit: the connection must close.
    Close(String),
}

/// Why the connection must close.
#[derive(Debug, thiserror::Error)]
pub enum Close {
    /// A limit would be exceeded (commands held for a CmdSN gap).
    #[error("{0}")]
    Limit(String),
    /// Nothing arrived within the NOP timeout after a ping.
    #[error("no answer to NOP-In ping")]
    NopTimeout,
}

/// Something the shell has to do, in the order the machine queued it.
#[derive(Debug)]
pub enum Action<G> {
    /// Send one PDU.
    Send(Pdu),
    /// Send these PDUs back to back (one round of R2Ts).
    SendAll(Vec<Pdu>),
    /// A command result the machine produced itself (an error status); it follows the
    /// results batched before it.
    Result(Vec<Pdu>),
    /// Send a Reject carrying `header`, the offending PDU's BHS.
    Reject {
        /// The reason code.
        reason: RejectReason,
        /// The rejected header.
        header: Bytes,
        /// What was wrong, for the log.
        why: &'static str,
    },
    /// Run a SCSI command on the device server.
    Execute(Command<G>),
    /// A write's Data-Out is complete (or failed): hand it to the command.
    WriteData {
        /// The command's ITT.
        itt: u32,
        /// The data, or why it will not come.
        result: Result<WriteData<G>, DataError>,
    },
    /// Perform a task management function (it reaches the session's and other sessions'
    /// task tables) and answer it.
    TaskMgmt(Pdu),
    /// Perform a logout (`reason` for connection `cid`) and answer it.
    Logout {
        /// ITT of the Logout Request.
        itt: u32,
        /// What the initiator asks for.
        reason: LogoutReason,
        /// The connection to close.
        cid: u16,
    },
}

/// A SCSI command ready to run.
#[derive(Debug)]
pub struct Command<G> {
    /// What the response needs.
    pub info: CmdInfo,
    /// LUN (u64::MAX when the LUN field does not decode: the device server answers it).
    pub lun: u64,
    /// The whole CDB.
    pub cdb: Bytes,
    /// Task attribute.
    pub attr: TaskAttribute,
    /// CmdSN (for ABORT TASK's RefCmdSN).
    pub cmd_sn: u32,
    /// Data-In the initiator expects.
    pub expected_data_in: u32,
    /// Its Data-Out.
    pub data: CommandData<G>,
    /// Whether it may be polled once on the connection task (bounded and quick).
    pub may_run_inline: bool,
}

/// Where a command's Data-Out comes from.
#[derive(Debug)]
pub enum CommandData<G> {
    /// All here (possibly empty), with the budget reservation covering it.
    Ready(Vec<Bytes>, Option<G>),
    /// Still arriving: an [`Action::WriteData`] for the command's ITT follows.
    Pending,
}

/// Negotiated and configured settings of one connection.
#[derive(Clone, Copy, Debug)]
pub struct ConnParams {
    /// Whether the session is a discovery session (no SCSI commands).
    pub discovery: bool,
    /// Data transfer settings for writes.
    pub write: WriteParams,
    /// Data-In splitting.
    pub datain: DataInLimits,
    /// ImmediateData.
    pub immediate_data: bool,
    /// The initiator's MaxRecvDataSegmentLength.
    pub max_send_segment: u32,
    /// Ping after this long without receiving anything (`None`: never).
    pub nop_interval: Option<Duration>,
    /// Drop the connection when a ping is unanswered this long.
    pub nop_timeout: Duration,
    /// Largest Data-Out one command may transfer, whatever the CDB says: a backstop above
    /// anything the device server accepts, so one command cannot claim unbounded memory
    /// (the daemon passes `config::MAX_COMMAND_DATA`, defined with the limits it bounds).
    pub max_command_data: u32,
}

impl ConnParams {
    /// From the negotiated parameters' codec view and the rest of the settings.
    pub fn new(
        discovery: bool,
        params: &scsi_proto::iscsi::negotiate::SessionParams,
        nop_interval: Option<Duration>,
        nop_timeout: Duration,
        max_command_data: u32,
    ) -> ConnParams {
        let codec: CodecConfig = params.codec();
        ConnParams {
            discovery,
            write: WriteParams {
                first_burst: params.first_burst_length,
                max_burst: params.max_burst_length,
                max_outstanding_r2t: params.max_outstanding_r2t,
                initial_r2t: params.initial_r2t,
            },
            datain: DataInLimits {
                max_segment: params.max_send_data_segment_length,
                max_burst: params.max_burst_length,
            },
            immediate_data: params.immediate_data,
            max_send_segment: codec.max_send_data_segment_length,
            nop_interval,
            nop_timeout,
            max_command_data,
        }
    }
}

/// The full feature phase state of one connection.
pub struct Connection<G> {
    params: ConnParams,
    writes: Writes<G>,
    pinger: Pinger,
    text: TextExchange,
    actions: VecDeque<Action<G>>,
}

impl<G> Connection<G> {
    /// A connection that has just logged in at `now`.
    pub fn new(params: ConnParams, now: Instant) -> Self {
        Connection {
            params,
            writes: Writes::default(),
            pinger: Pinger::new(params.nop_interval, params.nop_timeout, now),
            text: TextExchange::default(),
            actions: VecDeque::with_capacity(8),
        }
    }

    /// The settings the connection runs with.
    pub fn params(&self) -> &ConnParams {
        &self.params
    }

    /// The next thing to do, in order.
    pub fn poll_action(&mut self) -> Option<Action<G>> {
        self.actions.pop_front()
    }

    /// When [`Self::handle_timeout`] must run next; `None` when no timer is armed.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.pinger.deadline()
    }

    /// The timer fired: pings an idle initiator; an unanswered ping closes the connection.
    pub fn handle_timeout(&mut self, now: Instant) -> Result<(), Close> {
        match self.pinger.on_timer(now) {
            PingTimer::Idle => Ok(()),
            PingTimer::Ping(p) => {
                self.actions.push_back(Action::Send(p));
                Ok(())
            }
            PingTimer::Dead => Err(Close::NopTimeout),
        }
    }

    /// A PDU that failed to decode but leaves the stream in sync (a data digest error, say):
    /// the initiator is alive, and the PDU is rejected when the decoder says how.
    pub fn handle_bad_pdu(&mut self, now: Instant, reject: Option<(RejectReason, Bytes)>) {
        self.pinger.received(now);
        if let Some((reason, header)) = reject {
            self.actions.push_back(Action::Reject {
                reason,
                header,
                why: "undecodable PDU",
            });
        }
    }

    /// Handles one received PDU. A PDU that carries a CmdSN goes into the session's window;
    /// when it was admitted (`Ok(true)`) the shell then calls [`Self::dispatch_released`]
    /// until it returns false, doing the actions after each call (a command's task must be
    /// registered before the next command's ITT is checked). A PDU the window dropped or
    /// that was rejected releases nothing, so the shell skips that (and the window update).
    pub fn handle_pdu<H: Host<Grant = G>>(
        &mut self,
        now: Instant,
        pdu: Pdu,
        host: &mut H,
    ) -> Result<bool, Close> {
        self.pinger.received(now);
        match &pdu.bhs {
            Bhs::DataOut(_) => {
                self.data_out(pdu, host);
                Ok(false)
            }
            Bhs::NopOut(h) if h.itt == pdu::RESERVED_TAG => {
                // Answer to our ping (carries no new CmdSN).
                self.pinger.answered(h.ttt);
                Ok(false)
            }
            Bhs::NopOut(_)
            | Bhs::ScsiCommand(_)
            | Bhs::TaskMgmtRequest(_)
            | Bhs::TextRequest(_)
            | Bhs::LogoutRequest(_) => {
                if pdu.bhs.is_immediate()
                    && matches!(pdu.bhs, Bhs::ScsiCommand(_))
                    && host.immediate_limit_reached()
                {
                    self.reject(
                        RejectReason::ImmediateCommandReject,
                        &pdu,
                        "too many immediate commands",
                    );
                    return Ok(false);
                }
                match host.admit(pdu) {
                    Admission::Admitted => Ok(true),
                    Admission::Dropped(_) => Ok(false),
                    Admission::Close(why) => Err(Close::Limit(why)),
                }
            }
            Bhs::Snack(_) => {
                // ErrorRecoveryLevel 0: SNACK is not supported.
                self.reject(RejectReason::CommandNotSupported, &pdu, "SNACK");
                Ok(false)
            }
            _ => {
                // A Login Request after login, or a target opcode sent by the initiator.
                self.reject(RejectReason::ProtocolError, &pdu, "unexpected opcode");
                Ok(false)
            }
        }
    }

    /// Takes the next PDU the CmdSN window releases and acts on it; false when none is ready.
    pub fn dispatch_released<H: Host<Grant = G>>(&mut self, host: &mut H) -> bool {
        let Some(pdu) = host.release() else {
            return false;
        };
        match &pdu.bhs {
            Bhs::ScsiCommand(_) => self.scsi_command(pdu, host),
            Bhs::NopOut(h) => {
                let echo = nop::echo(h, &pdu.data, self.params.max_send_segment);
                self.actions.push_back(Action::Send(echo));
            }
            Bhs::TaskMgmtRequest(_) if self.params.discovery => self.reject(
                RejectReason::ProtocolError,
                &pdu,
                "TMF in a discovery session",
            ),
            Bhs::TaskMgmtRequest(_) => self.actions.push_back(Action::TaskMgmt(pdu)),
            Bhs::TextRequest(h) => {
                let max = self.params.max_send_segment;
                match self
                    .text
                    .request(h, &pdu.data, max, |v, out| host.send_targets(v, out))
                {
                    TextReply::Respond(p) => self.actions.push_back(Action::Send(p)),
                    TextReply::Reject(reason, why) => self.reject(reason, &pdu, why),
                }
            }
            Bhs::LogoutRequest(h) => match h.reason {
                LogoutReason::Other(_) => {
                    self.reject(RejectReason::InvalidPduField, &pdu, "unknown logout reason")
                }
                reason => self.actions.push_back(Action::Logout {
                    itt: h.itt,
                    reason,
                    cid: h.cid,
                }),
            },
            _ => {}
        }
        true
    }

    /// Budget came back: writes waiting for it may solicit their data now.
    pub fn budget_freed<H: Host<Grant = G>>(&mut self, host: &mut H) {
        self.issue_r2ts(host);
    }

    /// The command `itt` is gone (aborted, or its connection task dropped it): forget its
    /// write data collection; its reservation returns to the budget.
    pub fn forget_write(&mut self, itt: u32) {
        self.writes.remove(itt);
    }

    /// Forgets every write still collecting data (logout, shutdown, connection end).
    pub fn forget_writes(&mut self) {
        self.writes.clear();
    }

    /// ITTs of the writes still collecting data.
    pub fn pending_writes(&self) -> impl Iterator<Item = u32> + '_ {
        self.writes.itts()
    }

    fn reject(&mut self, reason: RejectReason, pdu: &Pdu, why: &'static str) {
        self.actions.push_back(Action::Reject {
            reason,
            header: header_of(pdu),
            why,
        });
    }

    /// Starts a SCSI command that the window released.
    fn scsi_command<H: Host<Grant = G>>(&mut self, pdu: Pdu, host: &mut H) {
        let Bhs::ScsiCommand(cmd) = &pdu.bhs else {
            return;
        };
        if self.params.discovery {
            return self.reject(
                RejectReason::ProtocolError,
                &pdu,
                "SCSI command in a discovery session",
            );
        }
        let itt = cmd.itt;
        if itt == pdu::RESERVED_TAG || self.writes.contains(itt) || host.task_exists(itt) {
            return self.reject(RejectReason::ProtocolError, &pdu, "ITT in use or reserved");
        }
        if !pdu.data.is_empty() && (!cmd.write || !self.params.immediate_data) {
            return self.reject(
                RejectReason::ProtocolError,
                &pdu,
                "unexpected immediate data",
            );
        }
        let lun = pdu::lun_from_wire(cmd.lun).unwrap_or(u64::MAX);
        let cdb = cmd.full_cdb();
        let edtl = cmd.expected_data_transfer_length;
        let spdtl = if cmd.write {
            host.data_out_len(lun, &cdb)
        } else {
            None
        };
        let info = CmdInfo {
            itt,
            lun_raw: cmd.lun,
            edtl,
            read: cmd.read,
            write: cmd.write,
            spdtl,
            r2t_count: 0,
        };
        // When the CDB wants more Data-Out than EDTL, only EDTL bytes are transferred and the
        // device server processes what arrived (FCP-4 9.4.2 a); the overflow is reported in
        // the residual (`datain::result_pdus`).
        let want = if cmd.write {
            spdtl.unwrap_or(edtl).min(edtl)
        } else {
            0
        };
        if want > self.params.max_command_data {
            // Far beyond the device server's MAXIMUM TRANSFER LENGTH: refuse before buffering
            // anything (INVALID FIELD IN CDB), so one command cannot claim unbounded memory.
            let sense = datain::fixed_sense(Sense::new(
                SenseKey::IllegalRequest,
                asc::INVALID_FIELD_IN_CDB,
            ));
            let info = CmdInfo {
                read: false,
                ..info
            };
            self.actions.push_back(Action::Result(datain::result_pdus(
                &info,
                datain::CHECK_CONDITION,
                Some(sense),
                Bytes::new(),
                0,
                self.params.datain,
            )));
            return;
        }
        let data = if cmd.write && edtl > 0 {
            match self
                .writes
                .start(cmd, want, pdu.data.clone(), &self.params.write, host)
            {
                Ok(writes::Start::Ready(data, grant)) => CommandData::Ready(data, grant),
                Ok(writes::Start::Pending) => CommandData::Pending,
                Ok(writes::Start::TaskSetFull) => {
                    let info = CmdInfo {
                        read: false,
                        ..info
                    };
                    self.actions
                        .push_back(Action::Result(task_set_full(&info, self.params.datain)));
                    return;
                }
                Err(why) => return self.reject(RejectReason::ProtocolError, &pdu, why),
            }
        } else {
            CommandData::Ready(Vec::new(), None)
        };
        let pending = matches!(data, CommandData::Pending);
        let may_run_inline = !pending && edtl <= INLINE_MAX_BYTES && inline_opcode(&cdb);
        self.actions.push_back(Action::Execute(Command {
            info,
            lun,
            cdb,
            attr: cmd.attr,
            cmd_sn: cmd.cmd_sn,
            expected_data_in: if cmd.read { edtl } else { 0 },
            data,
            may_run_inline,
        }));
        if pending {
            self.issue_r2ts(host);
        }
    }

    /// Routes a Data-Out PDU to its write.
    fn data_out<H: Host<Grant = G>>(&mut self, pdu: Pdu, host: &mut H) {
        let Bhs::DataOut(h) = &pdu.bhs else { return };
        if let Some((itt, result)) = self.writes.data_out(h, pdu.data) {
            self.actions.push_back(Action::WriteData { itt, result });
        }
        self.issue_r2ts(host);
    }

    fn issue_r2ts<H: Host<Grant = G>>(&mut self, host: &mut H) {
        let r2ts = self.writes.issue_r2ts(&self.params.write, host);
        if !r2ts.is_empty() {
            // All R2Ts of this round in one vectored write.
            self.actions.push_back(Action::SendAll(r2ts));
        }
    }
}

/// TASK SET FULL for a write the budget could not hold.
fn task_set_full(info: &CmdInfo, limits: DataInLimits) -> Vec<Pdu> {
    datain::result_pdus(info, datain::TASK_SET_FULL, None, Bytes::new(), 0, limits)
}

/// Commands that may run inline on the connection task: data transfers and the usual
/// bounded, quick queries. Commands whose work grows with a range they name (WRITE SAME,
/// UNMAP, VERIFY, EXTENDED COPY, ...) always run as their own task, so a long one never
/// holds up the connection's other commands or its task management.
fn inline_opcode(cdb: &[u8]) -> bool {
    use scsi_proto::scsi::opcode::*;
    matches!(
        cdb.first().copied(),
        Some(
            READ_6
                | READ_10
                | READ_12
                | READ_16
                | WRITE_6
                | WRITE_10
                | WRITE_12
                | WRITE_16
                | TEST_UNIT_READY
                | INQUIRY
                | READ_CAPACITY_10
                | MODE_SENSE_6
                | MODE_SENSE_10
                | REPORT_LUNS
                | REQUEST_SENSE
        )
    )
}

/// The 48-byte BHS of a PDU, re-encoded, for the Reject data segment.
pub fn header_of(pdu: &Pdu) -> Bytes {
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
        _ => Bytes::from_static(&[0u8; pdu::BHS_LEN]),
    }
}
