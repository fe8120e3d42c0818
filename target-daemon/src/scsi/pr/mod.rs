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
//! [`PrState`] ties them together for one LUN. A PERSISTENT RESERVE OUT is *decided*
//! ([`PrState::decide`]) under the LUN's state lock, which every command of a reserved LUN
//! takes, so nothing slow happens there; the resulting [`Change`] is saved by its
//! [`Persist`] job and only then *committed* ([`PrState::commit`]): other nexuses never see,
//! and the issuer is never told GOOD about, a state that is not yet durable. A failed save
//! commits nothing. The device server (`spc.rs`) runs those steps in per-LUN turns.

mod report;
mod request;
mod rules;
mod store;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use scsi_proto::scsi::pr as proto;
use scsi_proto::scsi::sense::{AdditionalSense, Sense};

pub use request::PrOutRequest;
pub use rules::PrData;
pub use store::{FileStore, PrStore};

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
#[derive(Clone, Debug, PartialEq, Eq)]
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
    uas: Vec<(Nexus, AdditionalSense)>,
    abort: Option<Preempted>,
    persist: Option<Persist>,
}

impl Change {
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
}

impl PrState {
    /// State for the LUN identified by `identity` (its NAA identity), reloaded from `store`
    /// if it holds APTPL state for that identity. Blocking (reads the store). A store that
    /// cannot be read is logged and the LUN starts without reservations rather than not at
    /// all.
    pub fn for_lun(identity: uuid::Uuid, store: Option<Arc<dyn PrStore>>) -> Self {
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
        }
    }

    /// Whether anything (a registration or a reservation) exists.
    pub fn is_active(&self) -> bool {
        self.d.is_active()
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
        let mut next = self.d.clone();
        let fx = match rules::apply(&mut next, n, req, self.store.is_some()) {
            Ok(fx) => fx,
            Err(rules::Refusal::Conflict) => return Ok(Decision::Conflict),
            Err(rules::Refusal::Check(s)) => return Err(s),
        };
        let uas = fx
            .uas
            .into_iter()
            .map(|(r, code)| {
                let who = Nexus {
                    initiator: r.initiator,
                    isid: r.isid,
                    tpgt: r.tpgt.unwrap_or(r.origin_tpgt),
                };
                (who, code)
            })
            .filter(|(who, _)| who != n)
            .collect();
        let abort = (!fx.abort.is_empty()).then(|| Preempted {
            ports: fx.abort,
            issuer: n.clone(),
        });
        let persist = match (&self.store, self.identity) {
            (Some(store), Some(identity)) => Some(Persist {
                store: store.clone(),
                identity,
                data: (next.aptpl && !next.registrations.is_empty()).then(|| next.clone()),
            }),
            _ => None,
        };
        Ok(Decision::Change(Change {
            next,
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
