//! Persistent reservations (SPC-4 5.13): PERSISTENT RESERVE IN/OUT, the reservation
//! conflict rules every other command is checked against, and APTPL persistence.
//!
//! Clusters (Windows Failover Clustering, VMware, Pacemaker's fence_scsi) fence nodes with
//! these: each node registers a key through every path, one node reserves the LUN
//! (typically Write Exclusive – Registrants Only) and a surviving node PREEMPTs a dead
//! node's key. State is per LUN (not per volume: a clone starts with none) and keyed on
//! the full I_T nexus (initiator name + ISID, target port group tag).
//!
//! Split by concern:
//! - [`request`] decodes a PERSISTENT RESERVE OUT without the state ([`PrOutRequest::parse`],
//!   on a blocking thread: a SPEC_I_PT list may hold a thousand TransportIDs);
//! - [`rules`] applies it to a copy of the state — pure functions returning the new state,
//!   the unit attentions and the preempted registrations;
//! - [`report`] encodes PERSISTENT RESERVE IN from the state;
//! - [`store`] keeps the state across restarts when the last REGISTER asked for APTPL: a
//!   [`PrStore`] per target (the [`FileStore`] under the data directory today), called on a
//!   blocking thread.
//!
//! [`PrState`] ties them together for one LUN. With a local store, a PERSISTENT RESERVE
//! OUT is *decided*
//! ([`PrState::decide`]) under the LUN's state lock, which every command of a reserved LUN
//! takes, so nothing slow happens there; the resulting [`Change`] is saved by its
//! [`Persist`] job and only then *committed* ([`PrState::commit`]): other nexuses never see,
//! and the issuer is never told GOOD about, a state that is not yet durable. A failed save
//! commits nothing. The device server (`spc.rs`) runs those steps in per-LUN turns.
//!
//! With a store shared by the gateways of an HA group ([`PrStore::shared`]) the decision
//! is made on the *latest shared* state instead of the local copy ([`decide_shared`]:
//! read, decide, compare-and-swap, again on a conflict, a bounded number of times), the
//! saved change is committed locally ([`PrState::commit_at`]) and then published to every
//! gateway, which installs it ([`PrState::install`]); PR IN and the conflict checks of
//! every other command use the local copy. A LUN whose shared state cannot be read
//! refuses media access ([`PrState::unreadable`], docs/decisions/0013).

mod report;
mod request;
mod rules;
mod store;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use scsi_proto::scsi::pr as proto;
use scsi_proto::scsi::sense::{asc, AdditionalSense, Sense, SenseKey};
use serde::{Deserialize, Serialize};

pub use request::PrOutRequest;
pub use rules::PrData;
pub(crate) use store::backoff;
pub use store::{
    FileStore, NoticeDone, PrListener, PrNotice, PrStore, PrVersion, SharedPr, SharedPrError,
    VersionedPr, ABSENT,
};

use super::Nexus;

/// Most registrations (I_T nexuses, or initiator ports for ALL_TG_PT) one LUN holds. A
/// REGISTER, REGISTER AND IGNORE EXISTING KEY, REGISTER AND MOVE or SPEC_I_PT list that would
/// go beyond it is refused with INSUFFICIENT REGISTRATION RESOURCES (55/04, SPC-4 5.13.7)
/// and changes nothing. Clusters register a few nexuses per node and path (a 64-node
/// cluster with 8 paths each is 512); the bound keeps every conflict check, READ FULL
/// STATUS and APTPL write small.
pub const MAX_REGISTRATIONS: usize = 1024;

/// Longest PERSISTENT RESERVE OUT parameter list accepted: the 28-byte SPEC_I_PT header
/// and a TransportID list naming [`MAX_REGISTRATIONS`] ports of the longest valid form
/// (about 250 KiB). Every service action's list fits; a longer PARAMETER LIST LENGTH is
/// refused (PARAMETER LIST LENGTH ERROR) before any of its data is transferred (see
/// [`data_out_len`]).
pub const MAX_PARAM_LEN: u32 = (28 + MAX_REGISTRATIONS * proto::MAX_TRANSPORT_ID_LEN) as u32;

/// The Data-Out a PERSISTENT RESERVE OUT with PARAMETER LIST LENGTH `param_len` takes: all
/// of it, or nothing when the command will be refused for its length anyway (so a 4 GiB
/// PARAMETER LIST LENGTH buffers nothing).
pub fn data_out_len(param_len: u32) -> u32 {
    if param_len > MAX_PARAM_LEN {
        0
    } else {
        param_len
    }
}

/// The I_T nexuses a PREEMPT AND ABORT preempted: initiator ports with the target port they
/// were registered through (any port for an ALL_TG_PT registration). The issuing nexus is
/// never part of it, even when one of the preempted registrations would cover it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Preempted {
    ports: Vec<rules::Registration>,
    issuer: Nexus,
}

impl Preempted {
    /// Whether the tasks of `n` are to be aborted.
    pub fn contains(&self, n: &Nexus) -> bool {
        *n != self.issuer && self.ports.iter().any(|r| r.matches(n))
    }
}

/// What a PERSISTENT RESERVE OUT decided, before anything changed.
#[derive(Debug)]
pub enum Decision {
    /// RESERVATION CONFLICT; nothing changes.
    Conflict,
    /// GOOD once the change is persisted (if it has to be) and committed.
    Change(Change),
}

/// A decided PERSISTENT RESERVE OUT: the LUN's next state and what comes with it, not yet
/// in effect.
#[derive(Debug)]
pub struct Change {
    next: PrData,
    issuer: Arc<Nexus>,
    uas: Vec<(Nexus, AdditionalSense)>,
    abort: Option<Preempted>,
    persist: Option<Persist>,
}

impl Change {
    /// What the gateways of an HA group are told about this change once it is saved as
    /// `version` (decided on the state saved as `base`) through `target` of the store
    /// instance `origin`.
    pub fn notice(
        &self,
        origin: uuid::Uuid,
        target: &str,
        version: PrVersion,
        base: PrVersion,
    ) -> PrNotice {
        PrNotice {
            origin,
            target: target.to_string(),
            version,
            base,
            issuer: Some((*self.issuer).clone()),
            data: self.next.clone(),
            uas: self
                .uas
                .iter()
                .map(|(n, code)| (n.clone(), code.asc, code.ascq))
                .collect(),
            abort: self.abort.clone(),
        }
    }

    /// The store update this change needs before it may be committed (`None` when the
    /// LUN has no store). Taken once, to run on a blocking thread.
    pub fn take_persist(&mut self) -> Option<Persist> {
        self.persist.take()
    }
}

/// What a committed PERSISTENT RESERVE OUT asks of the device server besides GOOD.
#[derive(Debug, Default)]
pub struct PrOutEffects {
    /// Unit attentions to establish on this LUN: (nexus, code); never for the issuer.
    pub uas: Vec<(Nexus, AdditionalSense)>,
    /// PREEMPT AND ABORT: the preempted I_T nexuses, whose tasks on this LUN must be
    /// aborted before the command completes (SPC-4, "preempting and aborting").
    pub abort: Option<Preempted>,
}

/// The store update one PERSISTENT RESERVE OUT calls for: a snapshot of the next state,
/// saved by [`Persist::write`] before the change is committed. Writes of one LUN run in the
/// order their changes were decided (the device server takes PERSISTENT RESERVE OUT turns
/// per LUN for that).
#[derive(Debug)]
pub struct Persist {
    store: Arc<dyn PrStore>,
    identity: uuid::Uuid,
    /// The state to save; `None`: forget it (APTPL off or nothing registered).
    data: Option<PrData>,
}

impl Persist {
    /// Save (or remove) the state. Blocking: run it on a blocking thread.
    pub fn write(&self) -> anyhow::Result<()> {
        self.store.save(self.identity, self.data.as_ref())
    }
}

/// How a command touches the medium, for conflict checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Reads or otherwise observes the medium: conflicts only under Exclusive Access types.
    Read,
    /// Modifies the medium or its parameters: conflicts under every type.
    Write,
}

/// What a PERSISTENT RESERVE OUT did, for the unit tests' decide-and-commit shortcut
/// (`PrState::pr_out`); the device server works with [`Decision`].
#[cfg(test)]
#[derive(Debug, PartialEq, Eq)]
pub enum PrOutcome {
    /// GOOD.
    Good,
    /// RESERVATION CONFLICT status.
    Conflict,
}

/// Persistent reservation state of one logical unit, with the store that keeps it.
#[derive(Debug, Default)]
pub struct PrState {
    /// The LUN identity the state is saved under (`None`: never persisted).
    identity: Option<uuid::Uuid>,
    /// Where APTPL state goes; `None`: APTPL is refused (REPORT CAPABILITIES: PTPL_C=0).
    store: Option<Arc<dyn PrStore>>,
    d: PrData,
    /// Shared store: the version `d` was saved as ([`ABSENT`] with a local store).
    version: PrVersion,
    /// Shared store: why the state could not be read. Until it can, nobody knows who is
    /// registered, so media access is refused (NOT READY) rather than allowed to a
    /// nexus that may have been preempted through another gateway.
    unreadable: Option<String>,
    /// Shared store: the version up to which this gateway's nexuses got the unit
    /// attentions of every change (from notices, its own changes, or derived).
    uas_version: PrVersion,
    /// Shared store: the state as of `uas_version` while a newer one was installed without
    /// its unit attentions (read by a PERSISTENT RESERVE OUT or IN before its notice came,
    /// or whose notice never comes); the missed unit attentions are derived from it.
    uas_base: Option<PrData>,
    /// Shared store: the watch this LUN holds on its state (ended with the LUN).
    watching: Option<Watching>,
}

/// A LUN's hold on the shared store's watch of its identity: when the LUN goes, so does
/// the watch (once no other LUN of this gateway presents the identity).
#[derive(Debug)]
struct Watching {
    store: Arc<dyn PrStore>,
    identity: uuid::Uuid,
}

impl Drop for Watching {
    fn drop(&mut self) {
        if let Some(shared) = self.store.shared() {
            shared.unwatch(self.identity);
        }
    }
}

/// The nexus a registration's unit attentions go to: its own, or for an ALL_TG_PT
/// registration the one it was made through.
fn ua_nexus(r: &rules::Registration) -> Nexus {
    Nexus {
        initiator: r.initiator.clone(),
        isid: r.isid,
        tpgt: r.tpgt.unwrap_or(r.origin_tpgt),
    }
}

/// Most reads-decide-saves one PERSISTENT RESERVE OUT makes on a shared store before it
/// gives up (HARDWARE ERROR, nothing changed): every retry means another gateway's
/// change went in, so this only ends a command under a storm of PR OUTs, never one alone.
pub const MAX_SHARED_ATTEMPTS: u32 = 16;

/// NOT READY, LOGICAL UNIT NOT READY, MANUAL INTERVENTION REQUIRED (04/03): what media
/// access (and PERSISTENT RESERVE IN) answers while the shared reservation state is
/// unreadable — an administrator has to repair or remove the object.
pub const UNREADABLE_STATE: AdditionalSense = AdditionalSense::new(0x04, 0x03);

/// The sense for a LUN whose shared reservation state is unreadable.
pub fn unreadable_sense() -> Sense {
    Sense::new(SenseKey::NotReady, UNREADABLE_STATE)
}

/// HARDWARE ERROR, INTERNAL TARGET FAILURE: the state could not be saved; nothing changed.
fn store_failure() -> Sense {
    Sense::new(SenseKey::HardwareError, asc::INTERNAL_TARGET_FAILURE)
}

/// What [`decide_shared`] needs of a LUN (the device server's `Lun`): its local copy of the
/// reservation state, refreshed from every shared read. A trait, so that this module needs
/// nothing of `lun.rs`, which builds on it.
pub trait SharedPrHolder {
    /// Install a shared state newer than the local copy; whether it was newer.
    fn pr_install(&self, v: &VersionedPr) -> bool;
    /// The shared state cannot be read (`why`): refuse media access until it can.
    fn pr_mark_unreadable(&self, why: &str);
    /// Decide `req` from `n` on `base` (see [`PrState::decide_on`]).
    fn pr_decide_on(&self, base: &PrData, n: &Nexus, req: &PrOutRequest)
        -> Result<Decision, Sense>;
}

/// A PERSISTENT RESERVE OUT decided on the latest shared state and saved there.
#[derive(Debug)]
pub enum SharedDecision {
    /// RESERVATION CONFLICT (on the latest state); nothing changed.
    Conflict,
    /// Saved as `version`: commit it locally ([`PrState::commit_at`]), publish it, GOOD.
    Saved {
        /// The decided change.
        change: Box<Change>,
        /// The version it was saved as.
        version: PrVersion,
        /// The state it was decided on.
        base: VersionedPr,
    },
}

/// Decide a PERSISTENT RESERVE OUT from `n` on the latest state of `lun` in the shared
/// `store` and save it there by compare-and-swap, again on the newer state when another
/// gateway saved first, at most [`MAX_SHARED_ATTEMPTS`] times. Every state read refreshes
/// the LUN's local copy ([`SharedPrHolder::pr_install`]). Blocking: run it on a blocking thread; it
/// takes the LUN's state lock only to decide.
///
/// Errors: NOT READY 04/03 when the shared state is corrupt (the LUN then refuses media
/// access), HARDWARE ERROR 44/00 when the store fails or the conflicts do not end; nothing
/// changed in either case.
pub fn decide_shared(
    lun: &dyn SharedPrHolder,
    store: &dyn SharedPr,
    identity: uuid::Uuid,
    n: &Nexus,
    req: &PrOutRequest,
) -> Result<SharedDecision, Sense> {
    for attempt in 0..MAX_SHARED_ATTEMPTS {
        let latest = match store.load_latest(identity) {
            Ok(v) => v,
            Err(SharedPrError::Corrupt(why)) => {
                tracing::error!(%identity, error = %why, "shared reservation state is corrupt; media access refused until it is repaired");
                lun.pr_mark_unreadable(&why);
                return Err(unreadable_sense());
            }
            Err(e) => {
                tracing::error!(%identity, error = format!("{e:#}"), "cannot read the shared reservation state; PERSISTENT RESERVE OUT refused");
                return Err(store_failure());
            }
        };
        lun.pr_install(&latest);
        let decision = lun.pr_decide_on(&latest.data, n, req)?;
        let change = match decision {
            Decision::Conflict => return Ok(SharedDecision::Conflict),
            Decision::Change(c) => c,
        };
        match store.save_if(identity, &change.next, latest.version) {
            Ok(version) => {
                return Ok(SharedDecision::Saved {
                    change: Box::new(change),
                    version,
                    base: latest,
                })
            }
            Err(SharedPrError::Conflict) => {
                tracing::debug!(%identity, attempt, "reservation state changed through another gateway; deciding again");
                store::backoff(attempt);
            }
            Err(e) => {
                tracing::error!(%identity, error = format!("{e:#}"), "cannot save the shared reservation state; PERSISTENT RESERVE OUT refused");
                return Err(store_failure());
            }
        }
    }
    tracing::error!(%identity, attempts = MAX_SHARED_ATTEMPTS, "reservation state kept changing through other gateways; PERSISTENT RESERVE OUT refused");
    Err(store_failure())
}

impl PrState {
    /// State for the LUN identified by `identity` (its NAA identity), reloaded from `store`
    /// if it holds APTPL state for that identity. Blocking (reads the store). A local store
    /// that cannot be read is logged and the LUN starts without reservations rather than
    /// not at all; a shared one leaves the LUN refusing media access until it can be read
    /// (see [`PrState::unreadable`]).
    pub fn for_lun(identity: uuid::Uuid, store: Option<Arc<dyn PrStore>>) -> Self {
        if let Some(shared) = store.as_ref().and_then(|s| s.shared()) {
            let mut st = Self {
                identity: Some(identity),
                store: store.clone(),
                ..Self::default()
            };
            // Watch first: a change saved between the read and the watch would be missed.
            let watched = shared.watch(identity);
            if watched.is_ok() {
                st.watching = store.clone().map(|store| Watching { store, identity });
            }
            match watched.and_then(|()| shared.load_latest(identity)) {
                Ok(v) => {
                    if !v.data.registrations.is_empty() {
                        tracing::info!(%identity, registrations = v.data.registrations.len(),
                            reserved = v.data.reservation.is_some(), version = v.version,
                            "persistent reservations loaded from the shared store");
                    }
                    st.d = v.data;
                    st.version = v.version;
                    st.uas_version = v.version;
                }
                Err(e) => {
                    tracing::error!(%identity, error = format!("{e:#}"), "shared reservation state unreadable; media access refused until it can be read");
                    st.unreadable = Some(format!("{e:#}"));
                }
            }
            return st;
        }
        let d = match store.as_ref().map(|s| s.load(identity)) {
            Some(Ok(Some(d))) => d,
            Some(Err(e)) => {
                tracing::error!(%identity, error = format!("{e:#}"), "ignoring unreadable reservation state");
                PrData::default()
            }
            _ => PrData::default(),
        };
        if !d.registrations.is_empty() {
            tracing::info!(%identity, registrations = d.registrations.len(),
                reserved = d.reservation.is_some(), "persistent reservations restored (APTPL)");
        }
        Self {
            identity: Some(identity),
            store,
            d,
            ..Self::default()
        }
    }

    /// Whether anything (a registration or a reservation) exists, or the shared state is
    /// unreadable: either way every command has to look at the state.
    pub fn is_active(&self) -> bool {
        self.d.is_active() || self.unreadable.is_some()
    }

    /// Why the shared state could not be read (then media access and PERSISTENT RESERVE
    /// IN answer [`unreadable_sense`]); `None` normally.
    pub fn unreadable(&self) -> Option<&str> {
        self.unreadable.as_deref()
    }

    /// The shared store, if the LUN's state lives in one.
    pub fn shared_store(&self) -> Option<(Arc<dyn PrStore>, uuid::Uuid)> {
        match (&self.store, self.identity) {
            (Some(s), Some(id)) if s.shared().is_some() => Some((s.clone(), id)),
            _ => None,
        }
    }

    /// The version of the local copy ([`ABSENT`] with a local store).
    pub fn version(&self) -> PrVersion {
        self.version
    }

    /// Install a state read from (or published through) the shared store if it is newer
    /// than the local copy (versions only grow); an unreadable state becomes readable.
    /// Returns whether it was installed.
    pub fn install(&mut self, v: &VersionedPr) -> bool {
        let newer = v.version > self.version || self.unreadable.is_some();
        if newer {
            if self.uas_base.is_none() && v.version > self.uas_version {
                // The first state whose unit attentions are not known yet.
                self.uas_base = Some(std::mem::take(&mut self.d));
            }
            self.d = v.data.clone();
            self.version = v.version;
            self.unreadable = None;
        }
        newer
    }

    /// Install the latest shared state read after notices may have been missed (the watch
    /// was re-established, the periodic version check found a newer version, or this
    /// gateway takes the pool over) and return the unit attentions of the changes not
    /// accounted for yet, derived from the states ([`rules::missed_unit_attentions`]).
    pub fn resync(&mut self, v: &VersionedPr) -> Vec<(Nexus, AdditionalSense)> {
        self.install(v);
        if self.version <= self.uas_version {
            return Vec::new();
        }
        let old = self.uas_base.take().unwrap_or_default();
        self.uas_version = self.version;
        rules::missed_unit_attentions(&old, &self.d)
            .iter()
            .map(|(r, code)| (ua_nexus(r), *code))
            .collect()
    }

    /// Account for the change saved as `version`, decided on `base` (whose state is
    /// `base_data` when known) and announced with the unit attentions `uas` (by `issuer`),
    /// after installing its state: returns the unit attentions still owed here — `uas`
    /// unless they were already accounted for (the change's state was read and its unit
    /// attentions derived before its notice came), plus those of changes between the
    /// last accounted one and `base` that this gateway never heard of (derived, see
    /// [`PrState::resync`]; never for `issuer` or a nexus `uas` names).
    pub fn account(
        &mut self,
        version: PrVersion,
        base: PrVersion,
        base_data: Option<&PrData>,
        new_data: &PrData,
        uas: &[(Nexus, AdditionalSense)],
        issuer: Option<&Nexus>,
    ) -> Vec<(Nexus, AdditionalSense)> {
        if version <= self.uas_version {
            return Vec::new();
        }
        let mut out = uas.to_vec();
        if base != self.uas_version {
            let old = self.uas_base.take().unwrap_or_else(|| self.d.clone());
            let upto = base_data.unwrap_or(new_data);
            for (r, code) in rules::missed_unit_attentions(&old, upto) {
                let who = ua_nexus(&r);
                if Some(&who) != issuer && !uas.iter().any(|(n, _)| *n == who) {
                    out.push((who, code));
                }
            }
        }
        self.uas_version = version;
        self.uas_base = (self.version > version).then(|| new_data.clone());
        out
    }

    /// Record that the shared state is unreadable (`why`): media access is refused.
    pub fn mark_unreadable(&mut self, why: &str) {
        self.unreadable = Some(why.to_string());
    }

    /// Whether a reservation is held (SCSI-2 RESERVE/RELEASE then conflict).
    pub fn is_reserved(&self) -> bool {
        self.d.reservation.is_some()
    }

    /// Whether an access of kind `access` by `n` conflicts with the reservation (SPC-4
    /// 5.13.1 tables).
    pub fn conflicts(&self, n: &Nexus, access: Access) -> bool {
        self.d.conflicts(n, access)
    }

    /// PERSISTENT RESERVE IN parameter data (before allocation-length truncation).
    pub fn pr_in(&self, service_action: u16) -> Vec<u8> {
        report::pr_in(&self.d, service_action, self.store.is_some())
    }

    /// Decide a decoded PERSISTENT RESERVE OUT from `n` without changing anything: a
    /// conflict, a sense, or the [`Change`] to persist and then [`commit`](Self::commit).
    /// Linear in the number of registrations and TransportIDs.
    pub fn decide(&self, n: &Nexus, req: &PrOutRequest) -> Result<Decision, Sense> {
        self.decide_on(&self.d, n, req)
    }

    /// [`decide`](Self::decide) on `base` instead of the local copy (the latest shared
    /// state). With a shared store the change carries no [`Persist`] job: it is saved by
    /// compare-and-swap ([`decide_shared`]).
    pub fn decide_on(
        &self,
        base: &PrData,
        n: &Nexus,
        req: &PrOutRequest,
    ) -> Result<Decision, Sense> {
        let mut next = base.clone();
        let fx = match rules::apply(&mut next, n, req, self.store.is_some()) {
            Ok(fx) => fx,
            Err(rules::Refusal::Conflict) => return Ok(Decision::Conflict),
            Err(rules::Refusal::Check(s)) => return Err(s),
        };
        let uas = fx
            .uas
            .iter()
            .map(|(r, code)| (ua_nexus(r), *code))
            .filter(|(who, _)| who != n)
            .collect();
        let abort = (!fx.abort.is_empty()).then(|| Preempted {
            ports: fx.abort,
            issuer: n.clone(),
        });
        let persist = match (&self.store, self.identity) {
            (Some(store), _) if store.shared().is_some() => None,
            (Some(store), Some(identity)) => Some(Persist {
                store: store.clone(),
                identity,
                data: (next.aptpl && !next.registrations.is_empty()).then(|| next.clone()),
            }),
            _ => None,
        };
        Ok(Decision::Change(Change {
            next,
            issuer: Arc::new(n.clone()),
            uas,
            abort,
            persist,
        }))
    }

    /// Put a decided change into effect (after its [`Persist`] job succeeded); returns the
    /// unit attentions and aborts the device server still owes.
    pub fn commit(&mut self, change: Change) -> PrOutEffects {
        self.d = change.next;
        PrOutEffects {
            uas: change.uas,
            abort: change.abort,
        }
    }

    /// Commit a change saved in the shared store as `version`, decided on `base`: its
    /// state is installed unless a newer one already was (another gateway's change,
    /// published before this one was committed); its unit attentions and aborts are owed
    /// either way, with those of changes before `base` this gateway missed
    /// ([`PrState::account`]).
    pub fn commit_at(
        &mut self,
        change: Change,
        version: PrVersion,
        base: &VersionedPr,
    ) -> PrOutEffects {
        self.install(&VersionedPr {
            data: change.next.clone(),
            version,
        });
        let mut uas = self.account(
            version,
            base.version,
            Some(&base.data),
            &change.next,
            &change.uas,
            Some(&change.issuer),
        );
        if uas.is_empty() {
            // Already accounted for: a reload read this very change between its save and
            // this commit (and derived its unit attentions); its own are exact, give them
            // too (a unit attention queued twice is queued once).
            uas = change.uas;
        }
        PrOutEffects {
            uas,
            abort: change.abort,
        }
    }

    /// Decide and commit at once, without persisting (unit tests of the rules).
    #[cfg(test)]
    pub fn pr_out(
        &mut self,
        n: &Nexus,
        req: &PrOutRequest,
        effects: &mut PrOutEffects,
    ) -> Result<PrOutcome, Sense> {
        match self.decide(n, req)? {
            Decision::Conflict => Ok(PrOutcome::Conflict),
            Decision::Change(c) => {
                *effects = self.commit(c);
                Ok(PrOutcome::Good)
            }
        }
    }
}
