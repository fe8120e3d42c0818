//! SCSI command dispatch: from a SCSI Command PDU (released by the CmdSN window) to a task
//! that collects its write data, respects task-attribute ordering, runs it on the device
//! server and sends the result. A quick command whose data is already here is first polled
//! once on the connection task and answered there if it completes; otherwise (and always for
//! commands that may run long) it continues as a spawned task registered in the session's
//! task table, where task management can abort it.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::sync::Arc;
use std::task::Poll;

use bytes::Bytes;
use scsi_proto::iscsi::pdu::{self, Bhs, Pdu, RejectReason, TaskAttribute};
use tokio::sync::{oneshot, watch};

use super::budget::{Grant, ReadGrant};
use super::conn::{header_of, Conn, DataError, PendingEntry, WriteData};
use super::datain::{self, CmdInfo, DataInLimits};
use super::r2t::{DataOutResult, PendingWrite};
use super::session::TaskHandle;
use super::writer::Writer;
use crate::scsi::{ScsiRequest, ScsiResponse, TaskAttr};

/// Ordering of tasks by attribute (SAM-5 8.6): a SIMPLE task waits for the last ORDERED task
/// before it; an ORDERED task waits for everything before it; HEAD OF QUEUE waits for nothing.
/// Tasks are registered in CmdSN order, so "before" is CmdSN order. Each task is represented
/// by a watch receiver whose sender the task holds until its future ends.
#[derive(Default)]
pub struct OrderState {
    last_ordered: Option<watch::Receiver<()>>,
    simple_since: Vec<watch::Receiver<()>>,
}

impl OrderState {
    /// Registers a new task and returns the tasks it must wait for.
    pub fn register(
        &mut self,
        attr: &TaskAttr,
        done: &watch::Receiver<()>,
    ) -> Vec<watch::Receiver<()>> {
        // Forget finished tasks (sender dropped) so the list stays bounded by running tasks.
        self.simple_since.retain(|r| r.has_changed().is_ok());
        if self
            .last_ordered
            .as_ref()
            .is_some_and(|r| r.has_changed().is_err())
        {
            self.last_ordered = None;
        }
        match attr {
            TaskAttr::HeadOfQueue => Vec::new(),
            TaskAttr::Ordered => {
                let mut wait: Vec<_> = std::mem::take(&mut self.simple_since);
                wait.extend(self.last_ordered.take());
                self.last_ordered = Some(done.clone());
                wait
            }
            _ => {
                self.simple_since.push(done.clone());
                self.last_ordered.iter().cloned().collect()
            }
        }
    }
}

/// Waits until every task in `list` has ended.
async fn wait_all(list: Vec<watch::Receiver<()>>) {
    for mut r in list {
        while r.changed().await.is_ok() {}
    }
}

/// Largest Data-Out one command may transfer (defined with the limits it bounds).
pub use crate::config::MAX_COMMAND_DATA;

/// Distinguishes task table entries that reuse an ITT.
static TASK_SERIAL: AtomicU64 = AtomicU64::new(1);

/// Where a task gets its Data-Out from.
enum DataSource {
    Ready(Bytes, Option<Grant>),
    Wait(oneshot::Receiver<Result<WriteData, DataError>>),
}

/// What a finished command has to report.
enum Outcome {
    /// Its Data-Out did not arrive as the protocol requires.
    DataPhaseError,
    /// The write buffer budget could not hold its data.
    TaskSetFull,
    /// The device server ran it; `r2ts` is the number of R2Ts its data took.
    Done { r2ts: u32, resp: ScsiResponse },
}

/// Sends a finished command's result.
async fn send_outcome(writer: &Writer, info: CmdInfo, outcome: Outcome, limits: DataInLimits) {
    writer.send_all(outcome_pdus(info, outcome, limits)).await;
}

/// The PDUs reporting a finished command's result.
fn outcome_pdus(mut info: CmdInfo, outcome: Outcome, limits: DataInLimits) -> Vec<Pdu> {
    match outcome {
        Outcome::DataPhaseError => {
            // DATA PHASE ERROR: the data did not arrive as the protocol requires.
            let sense = datain::fixed_sense(datain::ABORTED_COMMAND, 0x4b, 0x00);
            info.read = false;
            datain::result_pdus(
                &info,
                datain::CHECK_CONDITION,
                Some(sense),
                Bytes::new(),
                0,
                limits,
            )
        }
        Outcome::TaskSetFull => {
            info.read = false;
            datain::result_pdus(
                &info,
                crate::scsi::status::TASK_SET_FULL,
                None,
                Bytes::new(),
                0,
                limits,
            )
        }
        Outcome::Done { r2ts, resp } => {
            info.r2t_count = r2ts;
            datain::result_pdus(
                &info,
                resp.status,
                resp.sense,
                resp.data_in,
                resp.data_out_used,
                limits,
            )
        }
    }
}

/// Inline results batched on the connection task are written once this many PDUs or data
/// bytes are waiting, even if more commands are buffered.
const OUT_BATCH_PDUS: usize = 64;
const OUT_BATCH_BYTES: usize = 256 * 1024;

/// Largest expected transfer of a command that may run inline on the connection task: the
/// copy into or out of the page cache then stays in the microseconds, and larger transfers
/// amortise a task spawn anyway.
const INLINE_MAX_BYTES: u32 = 128 * 1024;

/// Commands that may run inline on the connection task: data transfers and the usual
/// bounded, quick queries. Commands whose work grows with a range they name (WRITE SAME,
/// UNMAP, VERIFY, EXTENDED COPY, ...) always run as their own task, so a long one never
/// holds up the connection's other commands or its task management.
fn inline_opcode(op: Option<&u8>) -> bool {
    use scsi_proto::scsi::opcode::*;
    matches!(
        op.copied(),
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

fn task_attr(a: TaskAttribute) -> TaskAttr {
    match a {
        TaskAttribute::Ordered => TaskAttr::Ordered,
        TaskAttribute::HeadOfQueue => TaskAttr::HeadOfQueue,
        TaskAttribute::Aca => TaskAttr::Aca,
        _ => TaskAttr::Simple,
    }
}

impl Conn {
    /// Starts a SCSI command.
    pub(crate) async fn scsi_command(&mut self, pdu: Pdu) -> anyhow::Result<()> {
        let Bhs::ScsiCommand(cmd) = &pdu.bhs else {
            return Ok(());
        };
        let Some(target) = self.session.target.clone() else {
            // Discovery sessions carry no SCSI commands.
            self.reject(RejectReason::ProtocolError, header_of(&pdu))
                .await;
            return Ok(());
        };
        let itt = cmd.itt;
        if itt == pdu::RESERVED_TAG
            || self.pending.contains_key(&itt)
            || self.session.tasks.lock().contains_key(&itt)
        {
            self.reject(RejectReason::ProtocolError, header_of(&pdu))
                .await;
            return Ok(());
        }
        if !pdu.data.is_empty() && (!cmd.write || !self.immediate_data) {
            self.reject(RejectReason::ProtocolError, header_of(&pdu))
                .await;
            return Ok(());
        }
        let lun = pdu::lun_from_wire(cmd.lun).unwrap_or(u64::MAX);
        let cdb = cmd.full_cdb();
        let edtl = cmd.expected_data_transfer_length;
        let spdtl = if cmd.write {
            target.scsi.data_out_len(lun, &cdb)
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
        let attr = task_attr(cmd.attr);

        // When the CDB wants more Data-Out than EDTL, only EDTL bytes are transferred and the
        // device server processes what arrived (FCP-4 9.4.2 a); the overflow is reported in
        // the residual by `datain::send_result`.
        let want = if cmd.write {
            spdtl.unwrap_or(edtl).min(edtl)
        } else {
            0
        };
        if want > MAX_COMMAND_DATA {
            // Far beyond the device server's MAXIMUM TRANSFER LENGTH: refuse before buffering
            // anything (INVALID FIELD IN CDB), so one command cannot claim unbounded memory.
            let sense = datain::fixed_sense(datain::ILLEGAL_REQUEST, 0x24, 0x00);
            let info = CmdInfo {
                read: false,
                ..info
            };
            let w = self.writer.clone();
            let limits = self.datain_limits;
            datain::send_result(
                &w,
                &info,
                datain::CHECK_CONDITION,
                Some(sense),
                Bytes::new(),
                0,
                limits,
            )
            .await;
            return Ok(());
        }

        // Data source. A write reserves all the data it keeps in the write buffer budget
        // before any is solicited (see `budget.rs`); the connection's writes get budget in
        // arrival order.
        let mut new_pending = None;
        let source = if cmd.write && edtl > 0 {
            let new_write = |want: u32, params: &super::r2t::WriteParams| {
                PendingWrite::new(
                    itt,
                    cmd.lun,
                    edtl,
                    want,
                    pdu.data.clone(),
                    cmd.final_bit,
                    params,
                )
            };
            let mut pw = match new_write(want, &self.write_params) {
                Ok(pw) => pw,
                Err(why) => {
                    tracing::debug!(peer = %self.peer, "rejecting command: {why}");
                    self.reject(RejectReason::ProtocolError, header_of(&pdu))
                        .await;
                    return Ok(());
                }
            };
            // An aborted write must not hold the queue (or be granted budget).
            self.purge_pending();
            let queue_free = !self.pending.values().any(PendingEntry::waits_for_budget);
            let grant = if want > 0 && queue_free {
                self.server.write_budget.try_reserve(u64::from(want))
            } else {
                None
            };
            let mut refused = false;
            if want > 0 && grant.is_none() && pw.has_unsolicited() {
                // Data is coming that the target did not ask for and cannot hold: take it
                // in without keeping it (a write that keeps nothing), then TASK SET FULL.
                refused = true;
                crate::metrics::global().limit_refusal("write_buffer");
                tracing::debug!(peer = %self.peer, itt, want, "write buffer budget exhausted: TASK SET FULL");
                match new_write(0, &self.write_params) {
                    Ok(p) => pw = p,
                    Err(why) => {
                        tracing::debug!(peer = %self.peer, "rejecting command: {why}");
                        self.reject(RejectReason::ProtocolError, header_of(&pdu))
                            .await;
                        return Ok(());
                    }
                }
            }
            if refused && pw.is_complete() {
                self.flush_out().await;
                let info = CmdInfo {
                    read: false,
                    ..info
                };
                send_outcome(&self.writer, info, Outcome::TaskSetFull, self.datain_limits).await;
                return Ok(());
            }
            if pw.is_complete() {
                DataSource::Ready(pw.take_data(), grant)
            } else {
                let (tx, rx) = oneshot::channel();
                new_pending = Some((pw, tx, grant, refused));
                DataSource::Wait(rx)
            }
        } else {
            DataSource::Ready(Bytes::new(), None)
        };

        let (done_tx, done_rx) = watch::channel(());
        let barrier = self.session.ordering.lock().register(&attr, &done_rx);
        let session = self.session.clone();
        let writer = self.writer.clone();
        let limits = self.datain_limits;
        let serial = TASK_SERIAL.fetch_add(1, AtomicOrdering::Relaxed);
        let nexus = self.session.nexus.clone();
        let expected_data_in = if cmd.read { edtl } else { 0 };
        let may_run_inline =
            new_pending.is_none() && edtl <= INLINE_MAX_BYTES && inline_opcode(cdb.first());
        // The Data-In a READ will allocate, reserved in the read buffer budget before it
        // runs (see `budget.rs`) and held until its Data-In is written.
        let read_want = target.scsi.data_in_len(lun, &cdb).unwrap_or(0);
        let reads = self.reads.clone();
        // The command up to its outcome and the read buffer it holds; sending the outcome
        // (then returning the buffer) is left to the caller, which knows whether the task
        // was in the task table (and so may have been aborted).
        let exec = async move {
            wait_all(barrier).await;
            // `_grant` holds the data's budget until the device server is done with it.
            let (data_out, r2ts, _grant) = match source {
                DataSource::Ready(b, g) => (b, 0, g),
                DataSource::Wait(rx) => match rx.await {
                    Ok(Ok(w)) => (w.data, w.r2ts, w.grant),
                    Ok(Err(DataError::NoBuffer)) => return Some((Outcome::TaskSetFull, None)),
                    Ok(Err(DataError::Protocol(why))) => {
                        tracing::debug!(itt, "write data error: {why}");
                        return Some((Outcome::DataPhaseError, None));
                    }
                    // Aborted or connection gone: no response.
                    Err(_) => return None,
                },
            };
            let req = ScsiRequest {
                nexus,
                lun,
                cdb,
                data_out,
                expected_data_in,
                attr,
                tag: itt,
            };
            // Waits here, in the command's own task (a command that has to wait is never
            // finished inline), while the connection's share or the whole budget is taken.
            let mut held: Option<ReadGrant> = if read_want > 0 {
                Some(reads.reserve(u64::from(read_want)).await)
            } else {
                None
            };
            let resp = target.scsi.execute(req).await;
            // Count what the answer really holds (a READ's buffer, or any other command's
            // data, which was not reserved ahead).
            let answer = resp.data_in.len() as u64;
            match held.as_mut() {
                Some(g) => g.resize(answer),
                None if answer > 0 => held = Some(reads.charge(answer)),
                None => {}
            }
            Some((Outcome::Done { r2ts, resp }, held))
        };
        let mut exec = Box::pin(exec);
        if may_run_inline {
            // Poll once on this task: a command that completes without waiting (a read the
            // page cache serves, INQUIRY, ...) is answered right here, saving a task spawn
            // per command and letting its result join the batch in `Conn::out` (one writev
            // for everything completed from one read). It never enters the task table, and
            // nothing can abort it: task management for this session is handled on this
            // task, after it, and a reset from elsewhere finds it already completed, exactly
            // as if it had finished just before the reset arrived.
            let polled = std::future::poll_fn(|cx| Poll::Ready(exec.as_mut().poll(cx))).await;
            if let Poll::Ready(outcome) = polled {
                if let Some((o, held)) = outcome {
                    let pdus = outcome_pdus(info, o, limits);
                    self.out_bytes += pdus.iter().map(|p| p.data.len()).sum::<usize>();
                    self.out.extend(pdus);
                    self.out_held.extend(held);
                    if self.out.len() >= OUT_BATCH_PDUS || self.out_bytes >= OUT_BATCH_BYTES {
                        self.flush_out().await;
                    }
                }
                drop(done_tx);
                return Ok(());
            }
            // It has to wait (for storage, for an earlier ORDERED task...): continue it as its
            // own task. Wakers it registered for this task are replaced when the spawned
            // task polls it.
        }
        let task = async move {
            let _done = done_tx;
            // `_held` returns the read buffer once the result is written (or dropped).
            let Some((outcome, _held)) = exec.await else {
                return;
            };
            if !remove_task(&session, itt, serial) {
                // A task management function took the task while it was finishing: it
                // counts as aborted, so no response may go out (the TMF answers for it).
                return;
            }
            send_outcome(&writer, info, outcome, limits).await;
        };
        {
            let mut tasks = self.session.tasks.lock();
            let handle = tokio::spawn(task);
            tasks.insert(
                itt,
                TaskHandle {
                    lun,
                    cmd_sn: cmd.cmd_sn,
                    abort: handle.abort_handle(),
                    done: done_rx,
                    conn: self.conn_id,
                    serial,
                },
            );
        }
        self.session.update_window();
        if let Some((pw, tx, grant, refused)) = new_pending {
            self.pending_seq += 1;
            self.pending.insert(
                itt,
                PendingEntry {
                    pw,
                    data_tx: tx,
                    seq: self.pending_seq,
                    grant,
                    refused,
                },
            );
            self.issue_r2ts().await;
        }
        Ok(())
    }

    /// Routes a Data-Out PDU to its pending write.
    pub(crate) async fn data_out(&mut self, pdu: Pdu) {
        let Bhs::DataOut(h) = &pdu.bhs else { return };
        let itt = h.itt;
        let Some(entry) = self.pending.get_mut(&itt) else {
            // The task completed, failed or was aborted; late data is dropped (ERL 0).
            tracing::trace!(peer = %self.peer, itt, "Data-Out for no pending write");
            return;
        };
        let verdict = if entry.data_tx.is_closed() {
            Some(Err("task aborted"))
        } else {
            match entry.pw.on_data_out(h, pdu.data.clone()) {
                DataOutResult::Invalid(why) => Some(Err(why)),
                DataOutResult::Accepted if entry.pw.is_complete() => Some(Ok(())),
                DataOutResult::Accepted => None,
            }
        };
        if let Some(v) = verdict {
            if let Some(mut e) = self.pending.remove(&itt) {
                let msg = match v {
                    Ok(()) if e.refused => Err(DataError::NoBuffer),
                    Ok(()) => Ok(WriteData {
                        data: e.pw.take_data(),
                        r2ts: e.pw.r2t_count,
                        grant: e.grant.take(),
                    }),
                    Err(why) => {
                        tracing::debug!(peer = %self.peer, itt, "bad Data-Out: {why}");
                        Err(DataError::Protocol(why))
                    }
                };
                let _ = e.data_tx.send(msg);
            }
        }
        self.issue_r2ts().await;
    }

    /// Sends the R2Ts pending writes may have now, oldest write first. A write solicits
    /// nothing until it holds a grant for all its data; grants go in arrival order, so a
    /// write that does not fit keeps the later ones of this connection waiting too (a
    /// later write granted first could be an ORDERED task's successor waiting on it).
    pub(crate) async fn issue_r2ts(&mut self) {
        self.purge_pending();
        if !self.pending.values().any(PendingEntry::waits_for_budget) {
            self.budget_waiting = None;
        } else if self.budget_waiting.is_none() {
            // Registered before the attempts below (see `WriteBudget::waiter`).
            self.budget_waiting = Some(self.server.write_budget.waiter());
        }
        if self.pending.is_empty() {
            return;
        }
        // Seen now: budget returned from here on wakes the connection again.
        self.budget_freed.borrow_and_update();
        let mut order: Vec<(u64, u32)> = self.pending.iter().map(|(k, e)| (e.seq, *k)).collect();
        order.sort_unstable();
        let mut out = Vec::new();
        let params = self.write_params;
        let mut blocked = false;
        for (_, itt) in order {
            let Some(e) = self.pending.get_mut(&itt) else {
                continue;
            };
            if e.waits_for_budget() {
                if blocked {
                    continue;
                }
                match self.server.write_budget.try_reserve(u64::from(e.pw.want())) {
                    Some(g) => e.grant = Some(g),
                    None => {
                        blocked = true;
                        continue;
                    }
                }
            }
            if e.refused || !e.pw.needs_r2t() {
                continue;
            }
            let next_ttt = &mut self.next_ttt;
            out.extend(e.pw.next_r2ts(&params, || {
                let t = *next_ttt;
                *next_ttt = next_ttt.wrapping_add(1);
                if *next_ttt == pdu::RESERVED_TAG {
                    *next_ttt = 1;
                }
                t
            }));
        }
        if !blocked {
            self.budget_waiting = None;
        }
        // All R2Ts of this round in one vectored write: the reader task pays one syscall per
        // round instead of one per R2T.
        if !out.is_empty() {
            self.writer
                .send_all(out.into_iter().map(Pdu::header_only))
                .await;
        }
    }

    /// Drops pending writes whose task is gone (aborted); their grants return to the
    /// budget.
    pub(crate) fn purge_pending(&mut self) {
        self.pending.retain(|_, e| !e.data_tx.is_closed());
    }
}

/// Removes the task table entry for `itt` if it still belongs to this task. Returns false
/// when the entry is already gone: an abort (TMF, reset, connection or session end) took
/// it, and the abort may not have stopped the future yet (it runs on another worker and
/// has no await point left before its response), so the task must send nothing. Taking
/// the entry under the table lock is what decides between "completed" and "aborted".
fn remove_task(session: &Arc<super::session::Session>, itt: u32, serial: u64) -> bool {
    let ours = {
        let mut tasks = session.tasks.lock();
        let ours = tasks.get(&itt).is_some_and(|t| t.serial == serial);
        if ours {
            tasks.remove(&itt);
        }
        ours
    };
    session.update_window();
    ours
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn ordered_waits_for_earlier_simple_and_blocks_later() {
        let mut st = OrderState::default();
        let (a_tx, a_rx) = watch::channel(());
        let (b_tx, b_rx) = watch::channel(());
        let (_c_tx, c_rx) = watch::channel(());
        assert!(st.register(&TaskAttr::Simple, &a_rx).is_empty());
        let w = st.register(&TaskAttr::Ordered, &b_rx);
        assert_eq!(w.len(), 1, "ordered waits for the simple task before it");
        let w2 = st.register(&TaskAttr::Simple, &c_rx);
        assert_eq!(w2.len(), 1, "simple waits for the ordered task before it");
        assert!(st.register(&TaskAttr::HeadOfQueue, &c_rx).is_empty());
        drop(a_tx);
        wait_all(w).await;
        drop(b_tx);
        wait_all(w2).await;
    }
}
