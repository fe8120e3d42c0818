//! SPC-4 primary commands: TEST UNIT READY, INQUIRY, MODE SENSE/SELECT, REQUEST SENSE,
//! REPORT LUNS, REPORT SUPPORTED OPERATION CODES/TMFS, RESERVE/RELEASE, START STOP UNIT.

use bytes::Bytes;
use scsi_proto::scsi::cdb::{ModeSenseCdb, RsocCdb};
use scsi_proto::scsi::inquiry::StandardInquiry;
use scsi_proto::scsi::sense::{asc, Sense, SenseFormat, SenseKey};
use scsi_proto::scsi::vpd::{self, VpdContext};
use scsi_proto::scsi::{mode, rsoc};

use std::sync::Arc;

use super::lun::Lun;
use super::pr;
use super::ua::UnitAttentions;
use super::{status, truncated, Ctx, ScsiResponse};

impl Ctx<'_> {
    /// REQUEST SENSE: a pending unit attention is returned (and cleared) as parameter data;
    /// otherwise NO SENSE. Autosense means there is never deferred error sense to return.
    pub(super) fn request_sense(&self, desc: bool, alloc_len: u32) -> ScsiResponse {
        let format = if desc {
            SenseFormat::Descriptor
        } else {
            SenseFormat::Fixed
        };
        let sense = match self.target.uas.take(&self.req.nexus, self.req.lun) {
            Some(ua) => Sense::unit_attention(ua),
            None => Sense::new(SenseKey::NoSense, asc::NO_ADDITIONAL_SENSE),
        };
        ScsiResponse::good(truncated(sense.encode(format), alloc_len))
    }

    pub(super) fn inquiry(
        &self,
        evpd: bool,
        page: u8,
        alloc_len: u32,
    ) -> Result<ScsiResponse, Sense> {
        let data = if evpd {
            let port = self.target.relative_port(&self.req.nexus);
            let identity = self.lun.identity(&self.target.name, port);
            let ctx = VpdContext {
                identity: &identity,
                limits: self.lun.limits,
                provisioning: self.lun.provisioning,
            };
            vpd::render(page, &ctx)?
        } else {
            // TPGS=01b: implicit ALUA, REPORT TARGET PORT GROUPS supported (scsi::alua).
            StandardInquiry {
                tpgs: scsi_proto::scsi::inquiry::Tpgs::Implicit,
                ..Default::default()
            }
            .encode()
        };
        Ok(ScsiResponse::good(truncated(data, alloc_len)))
    }

    pub(super) fn mode_sense(&self, m: &ModeSenseCdb) -> Result<ScsiResponse, Sense> {
        let data = mode::mode_sense(m, &self.lun.mode(), &self.lun.mode_context())?;
        Ok(ScsiResponse::good(truncated(data, m.alloc_len)))
    }

    /// MODE SELECT: apply changeable parameters; other nexuses get MODE PARAMETERS CHANGED.
    pub(super) fn mode_select(&self, ten: bool, param_len: u32) -> Result<ScsiResponse, Sense> {
        let want = param_len as usize;
        if self.req.data_out.len() < want {
            return Err(Sense::parameter_list_length_error());
        }
        let data_out = self.req.data_out.contiguous();
        let data = &data_out[..want];
        let next = mode::mode_select(ten, data, &self.lun.mode(), &self.lun.mode_context())?;
        if self.lun.set_mode(next) {
            tracing::info!(
                lun = self.req.lun,
                wce = next.wce,
                d_sense = next.d_sense,
                "mode parameters changed"
            );
            self.target.uas.establish_lun(
                self.req.lun,
                asc::MODE_PARAMETERS_CHANGED,
                Some(&self.req.nexus),
            );
        }
        Ok(ScsiResponse::good(Bytes::new()))
    }

    pub(super) fn report_luns(&self, select_report: u8, alloc_len: u32) -> ScsiResponse {
        // Reporting the inventory clears the "it changed" condition on every LUN of this
        // nexus, so initiators rescan once rather than once per LUN.
        self.target
            .uas
            .clear_all_luns(&self.req.nexus, asc::REPORTED_LUNS_DATA_HAS_CHANGED);
        ScsiResponse::good(truncated(self.target.report_luns(select_report), alloc_len))
    }

    pub(super) fn report_supported_opcodes(&self, r: &RsocCdb) -> Result<ScsiResponse, Sense> {
        Ok(ScsiResponse::good(truncated(rsoc::encode(r)?, r.alloc_len)))
    }

    pub(super) fn report_supported_tmfs(&self, repd: bool, alloc_len: u32) -> ScsiResponse {
        ScsiResponse::good(truncated(
            rsoc::SupportedTmfs::default().encode(repd),
            alloc_len,
        ))
    }

    /// PERSISTENT RESERVE IN: READ KEYS, READ RESERVATION, REPORT CAPABILITIES, READ FULL
    /// STATUS, from the LUN's local copy. With a shared store whose state could not be
    /// read, it is read again first (on a blocking thread); while it stays unreadable the
    /// answer is NOT READY 04/03 — an empty key list would be a lie a cluster acts on.
    pub(super) async fn persistent_reserve_in(
        &self,
        service_action: u16,
        alloc_len: u32,
    ) -> Result<ScsiResponse, Sense> {
        let retry = {
            let st = self.lun.pr.lock();
            st.unreadable().and(st.shared_store())
        };
        if let Some((store, identity)) = retry {
            let lun = Arc::clone(self.lun);
            let reread = tokio::task::spawn_blocking(move || {
                let shared = store.shared()?;
                match shared.load_latest(identity) {
                    Ok(v) => {
                        lun.pr_install(&v);
                        tracing::info!(%identity, "shared reservation state readable again");
                    }
                    Err(e) => {
                        tracing::warn!(%identity, error = format!("{e:#}"), "shared reservation state still unreadable");
                    }
                }
                Some(())
            });
            if let Err(e) = reread.await {
                tracing::error!(error = %e, "shared reservation state read did not finish");
            }
        }
        let st = self.lun.pr.lock();
        if st.unreadable().is_some() {
            return Err(pr::unreadable_sense());
        }
        Ok(ScsiResponse::good(truncated(
            st.pr_in(service_action),
            alloc_len,
        )))
    }

    /// PERSISTENT RESERVE OUT; registrants that lose their registration or reservation get
    /// RESERVATIONS PREEMPTED / RELEASED unit attentions, and PREEMPT AND ABORT has the
    /// preempted nexuses' tasks on the LUN aborted (through the transport) before GOOD.
    ///
    /// Nothing slow runs on the async worker or under the LUN's reservation lock, which
    /// every command of a reserved LUN takes: the parameter list is decoded on a blocking
    /// thread, the change is decided under the lock in time linear in the bounded number
    /// of registrations, and the store write runs on a blocking thread after the lock is
    /// released; the change is committed only once it is saved. PERSISTENT RESERVE OUTs
    /// of one LUN take turns (`Lun::pr_order`) from their decision until their commit, so
    /// each decides on the committed state, saves land in the order of the changes, and
    /// GOOD means the change is durable. A failed save commits nothing and answers HARDWARE
    /// ERROR, INTERNAL TARGET FAILURE (44/00). The turn goes with the write, so an aborted
    /// command still finishes its write and commit before the next one.
    pub(super) async fn persistent_reserve_out(
        &self,
        service_action: u16,
        scope: u8,
        pr_type: u8,
        param_len: u32,
    ) -> Result<ScsiResponse, Sense> {
        if param_len > pr::MAX_PARAM_LEN {
            // Longer than any list the registration limit leaves room for; the transport
            // transferred none of it (`pr::data_out_len`).
            return Err(Sense::parameter_list_length_error());
        }
        let want = param_len as usize;
        if self.req.data_out.len() < want {
            return Err(Sense::parameter_list_length_error());
        }
        let params = self.req.data_out.contiguous().slice(..want);
        let request = tokio::task::spawn_blocking(move || {
            pr::PrOutRequest::parse(service_action, scope, pr_type, &params)
        })
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "PERSISTENT RESERVE OUT decoding failed");
            Sense::new(SenseKey::HardwareError, asc::INTERNAL_TARGET_FAILURE)
        })??;
        let turn = self.lun.pr_order.clone().lock_owned().await;
        let shared = self.lun.pr.lock().shared_store();
        if let Some((store, identity)) = shared {
            return self
                .persistent_reserve_out_shared(store, identity, request, turn)
                .await;
        }
        let decision = self.lun.pr.lock().decide(&self.req.nexus, &request)?;
        let mut change = match decision {
            pr::Decision::Conflict => {
                return Ok(ScsiResponse::status(status::RESERVATION_CONFLICT))
            }
            pr::Decision::Change(c) => c,
        };
        let effects = match change.take_persist() {
            None => {
                let fx = commit_pr_change(self.lun, &self.target.uas, self.req.lun, change);
                drop(turn);
                fx
            }
            Some(job) => {
                // Save first, commit after: the state others see and the issuer is told
                // about is the durable one. Commit and turn go with the write, so a command
                // aborted meanwhile still commits what it wrote before the next one runs.
                let lun = Arc::clone(self.lun);
                let uas = Arc::clone(&self.target.uas);
                let lun_id = self.req.lun;
                let done = tokio::task::spawn_blocking(move || {
                    let written = job.write();
                    let fx = written.map(|()| commit_pr_change(&lun, &uas, lun_id, change));
                    drop(turn);
                    fx
                })
                .await;
                match done {
                    Ok(Ok(fx)) => fx,
                    Ok(Err(e)) => {
                        // Nothing changed: the initiator may retry, and no one acts on a
                        // reservation a restart would forget.
                        tracing::error!(lun = self.req.lun, error = format!("{e:#}"), "cannot persist reservation state (APTPL); PERSISTENT RESERVE OUT refused");
                        return Err(Sense::new(
                            SenseKey::HardwareError,
                            asc::INTERNAL_TARGET_FAILURE,
                        ));
                    }
                    Err(e) => {
                        tracing::error!(lun = self.req.lun, error = %e, "reservation state write did not finish");
                        return Err(Sense::new(
                            SenseKey::HardwareError,
                            asc::INTERNAL_TARGET_FAILURE,
                        ));
                    }
                }
            }
        };
        if let Some(preempted) = effects.abort {
            // PREEMPT AND ABORT: the preempted nexuses' tasks are gone before GOOD.
            self.target.abort_preempted(self.req.lun, &preempted).await;
        }
        Ok(ScsiResponse::good(Bytes::new()))
    }

    /// PERSISTENT RESERVE OUT on a LUN whose state the gateways of an HA group share: on a
    /// blocking thread (with the LUN's turn), decide on the latest shared state and save by
    /// compare-and-swap ([`pr::decide_shared`], retried on a conflict), commit locally,
    /// then publish the change and wait until every gateway acted on it (or a dead one
    /// timed out) — only then GOOD, so the owner's I/O checks see it first. A failed
    /// publish answers HARDWARE ERROR: the change is saved and in effect here, but a
    /// gateway may not enforce it yet, and the initiator must not rely on it.
    async fn persistent_reserve_out_shared(
        &self,
        store: Arc<dyn pr::PrStore>,
        identity: uuid::Uuid,
        request: pr::PrOutRequest,
        turn: tokio::sync::OwnedMutexGuard<()>,
    ) -> Result<ScsiResponse, Sense> {
        let lun = Arc::clone(self.lun);
        let uas = Arc::clone(&self.target.uas);
        let lun_id = self.req.lun;
        let nexus = self.req.nexus.clone();
        let target = self.target.name().to_string();
        let done = tokio::task::spawn_blocking(move || {
            let Some(shared) = store.shared() else {
                return Err(Sense::new(SenseKey::HardwareError, asc::INTERNAL_TARGET_FAILURE));
            };
            let (change, version, base) =
                match pr::decide_shared(&*lun, shared, identity, &nexus, &request)? {
                    pr::SharedDecision::Conflict => return Ok(None),
                    pr::SharedDecision::Saved {
                        change,
                        version,
                        base,
                    } => (*change, version, base),
                };
            let notice = change.notice(shared.instance(), &target, version, base.version);
            let fx = commit_shared_pr_change(&lun, &uas, lun_id, change, version, &base);
            // Saved and committed here: the next PERSISTENT RESERVE OUT of the LUN may
            // decide (on the latest shared state, which has this change) while this one
            // waits for the other gateways. PR OUTs of a LUN then overlap in their
            // notifies instead of queueing behind each other's (seconds, while a dead
            // gateway's watch lingers); each still answers only after its own notice was
            // acknowledged, and a gateway installs only states newer than its own.
            drop(turn);
            if let Err(e) = shared.publish(identity, &notice) {
                tracing::error!(lun = lun_id, %identity, version, error = format!("{e:#}"), "reservation change saved but not published to the other gateways");
                return Err(Sense::new(SenseKey::HardwareError, asc::INTERNAL_TARGET_FAILURE));
            }
            Ok(Some(fx))
        })
        .await;
        let effects = match done {
            Ok(Ok(Some(fx))) => fx,
            Ok(Ok(None)) => return Ok(ScsiResponse::status(status::RESERVATION_CONFLICT)),
            Ok(Err(sense)) => return Err(sense),
            Err(e) => {
                tracing::error!(lun = self.req.lun, error = %e, "shared reservation update did not finish");
                return Err(Sense::new(
                    SenseKey::HardwareError,
                    asc::INTERNAL_TARGET_FAILURE,
                ));
            }
        };
        if let Some(preempted) = effects.abort {
            self.target.abort_preempted(self.req.lun, &preempted).await;
        }
        Ok(ScsiResponse::good(Bytes::new()))
    }

    /// RESERVE(6)/(10): SCSI-2 logical unit reservation.
    pub(super) fn reserve(&self) -> Result<ScsiResponse, Sense> {
        if let Some(r) = self.scsi2_under_persistent_reservation() {
            return Ok(r);
        }
        if self.lun.reserve(&self.req.nexus) {
            Ok(ScsiResponse::good(Bytes::new()))
        } else {
            Ok(ScsiResponse::status(status::RESERVATION_CONFLICT))
        }
    }

    /// RELEASE(6)/(10): releases only the caller's own reservation; GOOD either way.
    pub(super) fn release(&self) -> ScsiResponse {
        if let Some(r) = self.scsi2_under_persistent_reservation() {
            return r;
        }
        self.lun.release(&self.req.nexus);
        ScsiResponse::good(Bytes::new())
    }

    /// RESERVE/RELEASE while a persistent reservation is held (SPC-4 5.13.3, CRH=1 in
    /// REPORT CAPABILITIES): from the reservation holder, or from any registrant under a
    /// registrants-only or all-registrants type, GOOD with no effect on either
    /// reservation; from anyone else RESERVATION CONFLICT. `None`: no persistent
    /// reservation, SPC-2 rules apply.
    fn scsi2_under_persistent_reservation(&self) -> Option<ScsiResponse> {
        let pr = self.lun.pr.lock();
        if !pr.is_reserved() {
            return None;
        }
        // `conflicts(.., Write)` is false exactly for the holder and, under the
        // registrants-only / all-registrants types, for every registrant.
        Some(if pr.conflicts(&self.req.nexus, pr::Access::Write) {
            ScsiResponse::status(status::RESERVATION_CONFLICT)
        } else {
            ScsiResponse::good(Bytes::new())
        })
    }

    /// START STOP UNIT on a non-removable medium: load/eject is invalid; start/stop is
    /// accepted (stopping flushes the write cache unless NO_FLUSH) and the unit stays ready.
    pub(super) async fn start_stop_unit(
        &self,
        loej: bool,
        start: bool,
        no_flush: bool,
    ) -> Result<ScsiResponse, Sense> {
        if loej {
            return Err(Sense::invalid_field_in_cdb(4, Some(1)));
        }
        if !start && !no_flush {
            self.vol()?.flush().await.map_err(|e| {
                super::sense_map::storage_error(&e, super::sense_map::Access::Write)
            })?;
        }
        Ok(ScsiResponse::good(Bytes::new()))
    }
}

/// Puts a PERSISTENT RESERVE OUT saved in the shared store as `version` into effect on
/// this LUN (unless a newer state is already installed) with its unit attentions.
fn commit_shared_pr_change(
    lun: &Lun,
    uas: &UnitAttentions,
    lun_id: u64,
    change: pr::Change,
    version: pr::PrVersion,
    base: &pr::VersionedPr,
) -> pr::PrOutEffects {
    let mut fx = {
        let mut state = lun.pr.lock();
        let fx = state.commit_at(change, version, base);
        lun.pr_active
            .store(state.is_active(), std::sync::atomic::Ordering::Release);
        fx
    };
    for (nexus, code) in fx.uas.drain(..) {
        uas.establish(&nexus, lun_id, code);
    }
    fx
}

/// Puts a decided (and, with a store, saved) PERSISTENT RESERVE OUT into effect: the new
/// state and its unit attentions together, with nothing between them that could be
/// cancelled. Returns what is left to do (PREEMPT AND ABORT's aborts).
fn commit_pr_change(
    lun: &Lun,
    uas: &UnitAttentions,
    lun_id: u64,
    change: pr::Change,
) -> pr::PrOutEffects {
    let mut fx = {
        let mut state = lun.pr.lock();
        let fx = state.commit(change);
        lun.pr_active
            .store(state.is_active(), std::sync::atomic::Ordering::Release);
        fx
    };
    for (nexus, code) in fx.uas.drain(..) {
        uas.establish(&nexus, lun_id, code);
    }
    fx
}
