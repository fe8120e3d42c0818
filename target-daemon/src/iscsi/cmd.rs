//! SCSI command dispatch: from a SCSI Command PDU (released by the CmdSN window) to a task
//! that collects its write data, respects task-attribute ordering, runs it on the device
//! server and sends the result. A quick command whose data is already here is first polled
//! once on the connection task and answered there if it completes; otherwise (and always for
//! commands that may run long) it continues as a task registered in the session's task table,
//! where task management can abort it, run by the storage completion that wakes it
//! (`inline_task.rs`).

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::sync::Arc;
use std::task::Poll;

use bytes::Bytes;
use scsi_proto::iscsi::pdu::{Pdu, TaskAttribute};
use scsi_proto::scsi::sense::{asc, Sense, SenseKey};
use tokio::sync::{oneshot, watch};

use super::budget::{Grant, ReadGrant};
use super::conn::{Conn, DataResult};
use super::inline_task::InlineTask;
use super::machine::datain::{self, CmdInfo, DataInLimits};
use super::machine::{Command, CommandData, DataError};
use super::order::wait_all;
use super::session::TaskHandle;
use super::writer::Writer;
use crate::scsi::{DataOut, ScsiRequest, ScsiResponse, TaskAttr};

/// Distinguishes task table entries that reuse an ITT.
static TASK_SERIAL: AtomicU64 = AtomicU64::new(1);

/// Where a task gets its Data-Out from.
enum DataSource {
    Ready(Vec<Bytes>, Option<Grant>),
    Wait(oneshot::Receiver<DataResult>),
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
            let sense =
                datain::fixed_sense(Sense::new(SenseKey::AbortedCommand, asc::DATA_PHASE_ERROR));
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
            datain::result_pdus(&info, datain::TASK_SET_FULL, None, Bytes::new(), 0, limits)
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

fn task_attr(a: TaskAttribute) -> TaskAttr {
    match a {
        TaskAttribute::Ordered => TaskAttr::Ordered,
        TaskAttribute::HeadOfQueue => TaskAttr::HeadOfQueue,
        TaskAttribute::Aca => TaskAttr::Aca,
        _ => TaskAttr::Simple,
    }
}

impl Conn {
    /// Runs a SCSI command the machine released: polled once here when it may run inline,
    /// otherwise (or when it has to wait) as its own task in the session's task table.
    pub(super) async fn execute(&mut self, cmd: Command<Grant>) {
        let Some(target) = self.session.target.clone() else {
            return;
        };
        let Command {
            info,
            lun,
            cdb,
            attr,
            cmd_sn,
            expected_data_in,
            data,
            may_run_inline,
        } = cmd;
        let itt = info.itt;
        let attr = task_attr(attr);
        let source = match data {
            CommandData::Ready(b, g) => DataSource::Ready(b, g),
            CommandData::Pending => {
                let (tx, rx) = oneshot::channel();
                self.data_tx.insert(itt, tx);
                DataSource::Wait(rx)
            }
        };
        let (done_tx, done_rx) = watch::channel(());
        let barrier = self.session.ordering.lock().register(&attr, &done_rx);
        let session = self.session.clone();
        let writer = self.writer.clone();
        let limits = self.machine.params().datain;
        let serial = TASK_SERIAL.fetch_add(1, AtomicOrdering::Relaxed);
        let nexus = self.session.nexus.clone();
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
                data_out: DataOut::from_parts(data_out),
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
                return;
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
        // Run by whoever wakes it when that is a storage completion thread: the response is
        // written from librbd's completion, without waking a tokio worker (`inline_task`).
        // In the task table before its first poll, which may already finish it.
        let task = InlineTask::new(task);
        self.session.tasks.lock().insert(
            itt,
            TaskHandle {
                lun,
                cmd_sn,
                abort: task.abort_handle(),
                done: done_rx,
                conn: self.conn_id,
                serial,
            },
        );
        self.session.update_window();
        task.start();
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
