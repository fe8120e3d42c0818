//! The connection's writes still collecting Data-Out: budget before any R2T, R2T rounds
//! oldest write first, Data-Out routed by ITT, and the finished data handed on.

use std::collections::HashMap;

use bytes::Bytes;
use scsi_proto::iscsi::pdu::{DataOut, Pdu, ScsiCommand, RESERVED_TAG};

use super::r2t::{DataOutResult, PendingWrite, WriteParams};
use super::Host;

/// A write command's data, handed to the command.
#[derive(Debug)]
pub struct WriteData<G> {
    /// Exactly the bytes the device server gets, in the pieces they arrived in (see
    /// [`PendingWrite::take_data`]).
    pub data: Vec<Bytes>,
    /// R2Ts the data took (the command's ExpDataSN).
    pub r2ts: u32,
    /// The budget reservation covering `data`; held until the command completes.
    pub grant: Option<G>,
}

/// Why a write command's data will not come.
#[derive(Debug, PartialEq, Eq)]
pub enum DataError {
    /// The Data-Out broke the protocol.
    Protocol(&'static str),
    /// The write buffer budget could not cover the command: TASK SET FULL.
    NoBuffer,
}

/// How a new write starts.
pub(super) enum Start<G> {
    /// All its data is here.
    Ready(Vec<Bytes>, Option<G>),
    /// Data is still to come.
    Pending,
    /// The budget cannot hold it and its data has all arrived unasked: TASK SET FULL now.
    TaskSetFull,
}

/// A write command still receiving data.
struct Entry<G> {
    pw: PendingWrite,
    /// Order of arrival: budget is granted to a connection's writes in this order.
    seq: u64,
    /// The budget reservation for the write's data; `None` while it waits for one (no R2T
    /// goes out until then) or when it needs none.
    grant: Option<G>,
    /// The budget could not cover the write and the initiator sends data unasked: that data
    /// is consumed without being kept, then the command ends with TASK SET FULL.
    refused: bool,
}

impl<G> Entry<G> {
    /// Whether the write waits for budget before it may solicit its data.
    fn waits_for_budget(&self) -> bool {
        !self.refused && self.grant.is_none() && self.pw.want() > 0
    }
}

/// The writes of one connection that are still collecting data, by ITT.
pub(super) struct Writes<G> {
    pending: HashMap<u32, Entry<G>>,
    seq: u64,
    next_ttt: u32,
    /// Reused for the arrival order of each R2T round.
    order: Vec<(u64, u32)>,
}

impl<G> Default for Writes<G> {
    fn default() -> Self {
        Writes {
            pending: HashMap::new(),
            seq: 0,
            next_ttt: 1,
            order: Vec::new(),
        }
    }
}

impl<G> Writes<G> {
    pub(super) fn contains(&self, itt: u32) -> bool {
        self.pending.contains_key(&itt)
    }

    pub(super) fn remove(&mut self, itt: u32) {
        self.pending.remove(&itt);
    }

    pub(super) fn clear(&mut self) {
        self.pending.clear();
    }

    pub(super) fn itts(&self) -> impl Iterator<Item = u32> + '_ {
        self.pending.keys().copied()
    }

    /// Starts collecting the data of write `cmd` (`want` bytes kept, `immediate` arrived
    /// with it). A write reserves all the data it keeps in the write buffer budget before
    /// any is solicited; the connection's writes get budget in arrival order.
    pub(super) fn start<H: Host<Grant = G>>(
        &mut self,
        cmd: &ScsiCommand,
        want: u32,
        immediate: Bytes,
        params: &WriteParams,
        host: &mut H,
    ) -> Result<Start<G>, &'static str> {
        let edtl = cmd.expected_data_transfer_length;
        let new_write = |want: u32, immediate: Bytes| {
            PendingWrite::new(
                cmd.itt,
                cmd.lun,
                edtl,
                want,
                immediate,
                cmd.final_bit,
                params,
            )
        };
        let mut pw = new_write(want, immediate.clone())?;
        let queue_free = !self.pending.values().any(Entry::waits_for_budget);
        let grant = if want > 0 && queue_free {
            host.try_reserve(u64::from(want))
        } else {
            None
        };
        let mut refused = false;
        if want > 0 && grant.is_none() && pw.has_unsolicited() {
            // Data is coming that the target did not ask for and cannot hold: take it in
            // without keeping it (a write that keeps nothing), then TASK SET FULL.
            refused = true;
            host.write_refused(cmd.itt, want);
            pw = new_write(0, immediate)?;
        }
        if refused && pw.is_complete() {
            return Ok(Start::TaskSetFull);
        }
        if pw.is_complete() {
            return Ok(Start::Ready(pw.take_data(), grant));
        }
        self.seq += 1;
        self.pending.insert(
            cmd.itt,
            Entry {
                pw,
                seq: self.seq,
                grant,
                refused,
            },
        );
        Ok(Start::Pending)
    }

    /// Feeds a Data-Out PDU; returns the write's outcome once its data is complete or
    /// broken. Data for no pending write (completed, failed or aborted) is dropped (ERL 0).
    pub(super) fn data_out(
        &mut self,
        h: &DataOut,
        data: Bytes,
    ) -> Option<(u32, Result<WriteData<G>, DataError>)> {
        let itt = h.itt;
        let entry = self.pending.get_mut(&itt)?;
        let verdict = match entry.pw.on_data_out(h, data) {
            DataOutResult::Invalid(why) => Err(why),
            DataOutResult::Accepted if entry.pw.is_complete() => Ok(()),
            DataOutResult::Accepted => return None,
        };
        let mut e = self.pending.remove(&itt)?;
        let result = match verdict {
            Ok(()) if e.refused => Err(DataError::NoBuffer),
            Ok(()) => Ok(WriteData {
                data: e.pw.take_data(),
                r2ts: e.pw.r2t_count,
                grant: e.grant.take(),
            }),
            Err(why) => {
                tracing::debug!(itt, "bad Data-Out: {why}");
                Err(DataError::Protocol(why))
            }
        };
        Some((itt, result))
    }

    /// The R2Ts pending writes may send now, oldest write first. A write solicits nothing
    /// until it holds a grant for all its data; grants go in arrival order, so a write that
    /// does not fit keeps the later ones of this connection waiting too (a later write
    /// granted first could be an ORDERED task's successor waiting on it).
    pub(super) fn issue_r2ts<H: Host<Grant = G>>(
        &mut self,
        params: &WriteParams,
        host: &mut H,
    ) -> Vec<Pdu> {
        let waiting = self.pending.values().any(Entry::waits_for_budget);
        // Registered before the attempts below, so budget returned meanwhile is not missed.
        host.watch_budget(waiting);
        let mut out = Vec::new();
        if self.pending.is_empty() {
            return out;
        }
        self.order.clear();
        self.order
            .extend(self.pending.iter().map(|(k, e)| (e.seq, *k)));
        self.order.sort_unstable();
        let mut blocked = false;
        for &(_, itt) in &self.order {
            let Some(e) = self.pending.get_mut(&itt) else {
                continue;
            };
            if e.waits_for_budget() {
                if blocked {
                    continue;
                }
                match host.try_reserve(u64::from(e.pw.want())) {
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
            let r2ts = e.pw.next_r2ts(params, || {
                let t = *next_ttt;
                *next_ttt = next_ttt.wrapping_add(1);
                if *next_ttt == RESERVED_TAG {
                    *next_ttt = 1;
                }
                t
            });
            out.extend(r2ts.into_iter().map(Pdu::header_only));
        }
        if waiting && !blocked {
            host.watch_budget(false);
        }
        out
    }
}
