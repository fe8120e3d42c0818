//! The copy manager: EXTENDED COPY (LID1) and RECEIVE COPY RESULTS (SPC-4 6.4, 6.18).
//!
//! VMware's "full copy" (VAAI XCOPY) lands here: clone a VM or Storage-vMotion it between
//! datastores on Lunar and the host sends descriptors instead of data. The copy runs inside
//! the pool: never-written source ranges become unmapped destination ranges (the copy of a
//! thin VMDK costs only what the VMDK holds), and written ranges are read and written
//! chunk-sized piece by piece without crossing the network.
//!
//! Chunk *sharing* between unrelated volumes, which would make a full copy free, is what the
//! layered clone engine cannot express: every chunk has exactly one owner (ADR 0001; see
//! ADR 0006 for why XCOPY copies instead).
//!
//! Security (CVE-2020-28374 was LIO resolving designators across every LUN it had): a
//! target descriptor is resolved only among the LUNs of the target the issuing session is
//! logged in to, which its ACL admitted it to, and only LUNs presented to initiators (a clone
//! still being created is not attached, so it cannot be named).

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use parking_lot::Mutex;
use scsi_proto::scsi::cdb::check_lba_range;
use scsi_proto::scsi::sense::{asc, Sense, SenseKey};
use scsi_proto::scsi::xcopy::{
    self, rcr, BlockSegment, CopyLimits, CopyList, CopyState, CopyStatus, ListIdUsage,
    TargetDescriptor,
};

use super::sbc::{read_err, write_err};
use super::{status, truncated, Ctx, Lun, Nexus, ScsiResponse, ScsiTarget};
use storage_core::Volume;

/// Copies whose status a LUN remembers for RECEIVE COPY RESULTS; older finished ones are
/// forgotten first, so an initiator that never asks cannot grow the log.
const RETAINED_COPIES: usize = 64;

/// Largest piece read and written at once: bounded memory per copy, whatever the segment.
const PIECE_BYTES: u64 = 4 << 20;

/// One copy the LUN's copy manager ran or is running, for RECEIVE COPY RESULTS.
#[derive(Clone, Debug)]
struct CopyRecord {
    initiator: String,
    isid: u64,
    list_id: u8,
    retain: bool,
    status: CopyStatus,
    /// SCSI status and sense data the copy ended with, when it failed.
    failure: Option<(u8, Vec<u8>)>,
}

impl CopyRecord {
    fn is(&self, nexus: &Nexus, list_id: u8) -> bool {
        self.list_id == list_id && self.isid == nexus.isid && self.initiator == nexus.initiator
    }
}

/// Per-LUN copy log: copies in progress (their list identifiers are taken) and the
/// retained results of finished ones.
#[derive(Default)]
pub(crate) struct CopyLog {
    records: Mutex<Vec<CopyRecord>>,
    /// Tests: called with the piece number before each piece a copy of this copy manager
    /// moves (before its access check), to change reservations mid-segment.
    #[cfg(test)]
    pub(super) piece_hook: Mutex<Option<PieceHook>>,
}

/// See `CopyLog::piece_hook`.
#[cfg(test)]
pub(super) type PieceHook = Box<dyn FnMut(u64) + Send>;

impl CopyLog {
    /// Runs the test hook, if any, for piece `k` of a segment.
    fn before_piece(&self, _k: u64) {
        #[cfg(test)]
        if let Some(h) = self.piece_hook.lock().as_mut() {
            h(_k);
        }
    }

    /// Claim `list_id` for `nexus`: fails while a copy with the same identifier from the
    /// same I_T nexus is still running (SPC-4: OPERATION IN PROGRESS).
    fn begin(&self, nexus: &Nexus, list_id: u8, retain: bool) -> Result<(), Sense> {
        let mut r = self.records.lock();
        if r.iter()
            .any(|c| c.is(nexus, list_id) && c.status.state == CopyState::InProgress)
        {
            return Err(Sense::new(
                SenseKey::IllegalRequest,
                xcopy::OPERATION_IN_PROGRESS,
            ));
        }
        r.retain(|c| !c.is(nexus, list_id));
        if r.len() >= RETAINED_COPIES {
            if let Some(i) = r
                .iter()
                .position(|c| c.status.state != CopyState::InProgress)
            {
                r.remove(i);
            }
        }
        r.push(CopyRecord {
            initiator: nexus.initiator.clone(),
            isid: nexus.isid,
            list_id,
            retain,
            status: CopyStatus {
                state: CopyState::InProgress,
                segments_processed: 0,
                bytes: 0,
            },
            failure: None,
        });
        Ok(())
    }

    fn progress(&self, nexus: &Nexus, list_id: u8, segments: u16, bytes: u64) {
        if let Some(c) = self
            .records
            .lock()
            .iter_mut()
            .find(|c| c.is(nexus, list_id) && c.status.state == CopyState::InProgress)
        {
            c.status.segments_processed = segments;
            c.status.bytes = bytes;
        }
    }

    fn finish(&self, nexus: &Nexus, list_id: u8, failure: Option<(u8, Vec<u8>)>) {
        let mut r = self.records.lock();
        let Some(i) = r
            .iter()
            .position(|c| c.is(nexus, list_id) && c.status.state == CopyState::InProgress)
        else {
            return;
        };
        if !r[i].retain {
            r.remove(i);
            return;
        }
        r[i].status.state = if failure.is_some() {
            CopyState::Failed
        } else {
            CopyState::Completed
        };
        r[i].failure = failure;
    }

    fn find(&self, nexus: &Nexus, list_id: u8) -> Option<CopyRecord> {
        self.records
            .lock()
            .iter()
            .find(|c| c.is(nexus, list_id) && c.retain)
            .cloned()
    }
}

/// Ends an in-progress copy record as failed (TASK ABORTED) if the command is dropped.
struct AbortGuard<'a> {
    log: &'a CopyLog,
    nexus: &'a Nexus,
    list_id: u8,
    armed: bool,
}

impl Drop for AbortGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.log.finish(
                self.nexus,
                self.list_id,
                Some((status::TASK_ABORTED, Vec::new())),
            );
        }
    }
}

impl ScsiTarget {
    /// The LUN of this target whose NAA designator is `naa`.
    fn lun_by_naa(&self, naa: &[u8; 16]) -> Option<Arc<Lun>> {
        self.luns.read().values().find(|l| &l.naa() == naa).cloned()
    }
}

/// Where a segment reads or writes: the LUN a target descriptor resolved to.
type Resolved = Vec<Option<Arc<Lun>>>;

impl Ctx<'_> {
    /// EXTENDED COPY (LID1): decode the list, then run its segments in order.
    pub(super) async fn extended_copy(&self, param_len: u32) -> Result<ScsiResponse, Sense> {
        let limits = CopyLimits::for_block_size(self.lun.block_size());
        let len = param_len as usize;
        if self.req.data_out.len() < len {
            return Err(Sense::parameter_list_length_error());
        }
        let Some(list) = xcopy::parse(&self.req.data_out.contiguous()[..len], &limits)? else {
            return Ok(ScsiResponse::good(Bytes::new()));
        };
        let nexus = &self.req.nexus;
        let tracked = list.usage != ListIdUsage::None;
        if tracked {
            self.lun
                .copies
                .begin(nexus, list.list_id, list.usage == ListIdUsage::Retain)?;
        }
        // A task aborted mid-copy (ABORT TASK, LUN RESET, session loss) drops this future:
        // the guard still ends the record, as failed, so the list identifier is not held
        // forever and RECEIVE COPY RESULTS does not report a copy that is not running.
        let mut guard = AbortGuard {
            log: &self.lun.copies,
            nexus,
            list_id: list.list_id,
            armed: tracked,
        };
        let started = Instant::now();
        let outcome = self.run_copy(&list).await;
        let (resp, failure) = match outcome {
            Ok(r) if r.status == status::GOOD => (Ok(r), None),
            Ok(r) => {
                let status = r.status;
                (Ok(r), Some((status, Vec::new())))
            }
            Err(sense) => {
                let bytes = sense.encode(self.lun.sense_format());
                (Err(sense), Some((status::CHECK_CONDITION, bytes)))
            }
        };
        guard.armed = false;
        if tracked {
            self.lun.copies.finish(nexus, list.list_id, failure.clone());
        }
        tracing::info!(
            lun = self.req.lun,
            initiator = %nexus.initiator,
            list_id = list.list_id,
            segments = list.segments.len(),
            failed = failure.is_some(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "extended copy"
        );
        resp
    }

    async fn run_copy(&self, list: &CopyList) -> Result<ScsiResponse, Sense> {
        let resolved = self.resolve_targets(&list.targets)?;
        let mut bytes = 0u64;
        for (i, seg) in list.segments.iter().enumerate() {
            let r = self.copy_segment(&resolved, seg).await?;
            if r.status != status::GOOD {
                return Ok(r);
            }
            bytes += u64::from(seg.blocks) * u64::from(self.lun.block_size());
            if list.usage != ListIdUsage::None {
                let done = u16::try_from(i + 1).unwrap_or(u16::MAX);
                self.lun
                    .copies
                    .progress(&self.req.nexus, list.list_id, done, bytes);
            }
        }
        Ok(ScsiResponse::good(Bytes::new()))
    }

    /// Resolve every target descriptor before moving any data: a list naming a LUN this
    /// session cannot reach fails whole, with nothing copied.
    fn resolve_targets(&self, targets: &[TargetDescriptor]) -> Result<Resolved, Sense> {
        let mut out = Vec::with_capacity(targets.len());
        for t in targets {
            let lun = t.naa().and_then(|naa| self.target.lun_by_naa(&naa));
            let Some(lun) = lun else {
                tracing::info!(
                    initiator = %self.req.nexus.initiator,
                    designator = ?t.designator,
                    "EXTENDED COPY names a logical unit this session cannot reach"
                );
                return Err(xcopy::copy_aborted(xcopy::UNREACHABLE_COPY_TARGET));
            };
            if t.block_size != 0 && t.block_size != lun.block_size() {
                return Err(xcopy::copy_aborted(asc::NO_ADDITIONAL_SENSE));
            }
            out.push(Some(lun));
        }
        Ok(out)
    }

    async fn copy_segment(
        &self,
        resolved: &Resolved,
        seg: &BlockSegment,
    ) -> Result<ScsiResponse, Sense> {
        let unreachable = || xcopy::copy_aborted(xcopy::COPY_TARGET_DEVICE_NOT_REACHABLE);
        let src = resolved
            .get(usize::from(seg.source))
            .and_then(Option::as_ref)
            .ok_or_else(unreachable)?;
        let dst = resolved
            .get(usize::from(seg.destination))
            .and_then(Option::as_ref)
            .ok_or_else(unreachable)?;
        let nexus = &self.req.nexus;
        let conflict = || ScsiResponse::status(status::RESERVATION_CONFLICT);
        if access_lost(src, dst, nexus) {
            return Ok(conflict());
        }
        if dst.read_only {
            return Err(Sense::new(SenseKey::DataProtect, asc::WRITE_PROTECTED));
        }
        // A LUN without its volume (the pool is being detached) cannot take part.
        let (Some(src_vol), Some(dst_vol)) = (src.volume(), dst.volume()) else {
            return Err(unreachable());
        };
        let bs = src.block_size();
        if bs != dst.block_size() {
            return Err(xcopy::copy_aborted(asc::NO_ADDITIONAL_SENSE));
        }
        let blocks = u64::from(seg.blocks);
        check_lba_range(seg.source_lba, blocks, src.num_blocks())
            .map_err(|_| xcopy::segment_out_of_range())?;
        check_lba_range(seg.destination_lba, blocks, dst.num_blocks())
            .map_err(|_| xcopy::segment_out_of_range())?;
        if blocks == 0 {
            return Ok(ScsiResponse::good(Bytes::new()));
        }
        let piece = (PIECE_BYTES / u64::from(bs)).max(1);
        let overlapping_forward = Arc::ptr_eq(src, dst)
            && seg.destination_lba > seg.source_lba
            && seg.destination_lba < seg.source_lba + blocks;
        let fua = dst.write_through();
        if overlapping_forward {
            // Copying forward onto itself: go from the end so no piece reads what an
            // earlier piece of this segment already overwrote.
            let mut end = blocks;
            let mut k = 0;
            while end > 0 {
                self.lun.copies.before_piece(k);
                k += 1;
                if access_lost(src, dst, nexus) {
                    return Ok(conflict());
                }
                let n = end.min(piece);
                let from = end - n;
                copy_piece(
                    &src_vol,
                    dst,
                    &dst_vol,
                    seg.source_lba + from,
                    seg.destination_lba + from,
                    n,
                    fua,
                )
                .await?;
                end = from;
            }
            return Ok(ScsiResponse::good(Bytes::new()));
        }
        // Plan the pieces from the source's allocation map, then copy with one read ahead:
        // the next written piece is read while the current one is written.
        let mut plan = Vec::new();
        let mut done = 0u64;
        while done < blocks {
            let (mapped, run) = src_vol
                .block_status(seg.source_lba + done)
                .map_err(read_err)?;
            let n = run.clamp(1, piece).min(blocks - done);
            plan.push((mapped, done, n));
            done += n;
        }
        let mut ahead: Option<Bytes> = None;
        for (k, &(mapped, off, n)) in plan.iter().enumerate() {
            self.lun.copies.before_piece(k as u64);
            if access_lost(src, dst, nexus) {
                // Preempted (or another nexus reserved) mid-segment: stop here. A piece
                // read ahead is dropped unwritten.
                return Ok(conflict());
            }
            let dst_lba = seg.destination_lba + off;
            if !mapped {
                // Never written (or unmapped) at the source: the destination gives its
                // blocks back too instead of storing zeros.
                let _shared = dst.atomic.read().await;
                dst_vol.unmap(dst_lba, n).await.map_err(write_err)?;
                continue;
            }
            let data = match ahead.take() {
                Some(d) => d,
                None => read_piece(&src_vol, seg.source_lba + off, n).await?,
            };
            let write = async {
                let _shared = dst.atomic.read().await;
                dst_vol.write(dst_lba, data, fua).await.map_err(write_err)
            };
            match plan[k + 1..].iter().find(|p| p.0) {
                Some(&(_, next, m)) => {
                    let (w, r) =
                        tokio::join!(write, read_piece(&src_vol, seg.source_lba + next, m));
                    w?;
                    ahead = Some(r?);
                }
                None => write.await?,
            }
        }
        Ok(ScsiResponse::good(Bytes::new()))
    }

    /// RECEIVE COPY RESULTS (LID1).
    pub(super) fn receive_copy_results(
        &self,
        service_action: u16,
        list_id: u8,
        alloc_len: u32,
    ) -> Result<ScsiResponse, Sense> {
        if service_action == rcr::OPERATING_PARAMETERS {
            let limits = CopyLimits::for_block_size(self.lun.block_size());
            return Ok(ScsiResponse::good(truncated(
                xcopy::operating_parameters(&limits),
                alloc_len,
            )));
        }
        let Some(rec) = self.lun.copies.find(&self.req.nexus, list_id) else {
            return Err(Sense::invalid_field_in_cdb(2, Some(7)));
        };
        let data = match service_action {
            rcr::COPY_STATUS => rec.status.encode(),
            rcr::RECEIVE_DATA => xcopy::receive_data(),
            _ => xcopy::failed_segment_details(
                rec.failure
                    .as_ref()
                    .map(|(s, sense)| (*s, sense.as_slice())),
            ),
        };
        Ok(ScsiResponse::good(truncated(data, alloc_len)))
    }
}

fn pr_conflict(lun: &Lun, nexus: &Nexus, access: super::pr::Access) -> bool {
    lun.pr_active.load(std::sync::atomic::Ordering::Acquire)
        && lun.pr.lock().conflicts(nexus, access)
}

/// Whether `nexus` may no longer read `src` or write `dst`: a SPC-2 reservation of another
/// nexus on either, or a persistent reservation it conflicts with (source as a read,
/// destination as a write). Checked before a segment and again before every piece of it,
/// so a nexus preempted or reserved out mid-segment moves at most the piece under way.
fn access_lost(src: &Lun, dst: &Lun, nexus: &Nexus) -> bool {
    src.reserved_by_other(nexus)
        || dst.reserved_by_other(nexus)
        || pr_conflict(src, nexus, super::pr::Access::Read)
        || pr_conflict(dst, nexus, super::pr::Access::Write)
}

async fn read_piece(src: &Volume, lba: u64, blocks: u64) -> Result<Bytes, Sense> {
    let n = u32::try_from(blocks).map_err(|_| Sense::invalid_field_in_param(0, None))?;
    src.read(lba, n).await.map_err(read_err)
}

/// Read `blocks` blocks at `src_lba` and write them at `dst_lba`, atomically with respect to
/// COMPARE AND WRITE on the destination (the same lock ordinary writes take).
async fn copy_piece(
    src: &Volume,
    dst: &Lun,
    dst_vol: &Volume,
    src_lba: u64,
    dst_lba: u64,
    blocks: u64,
    fua: bool,
) -> Result<(), Sense> {
    let data = read_piece(src, src_lba, blocks).await?;
    let _shared = dst.atomic.read().await;
    dst_vol.write(dst_lba, data, fua).await.map_err(write_err)
}
