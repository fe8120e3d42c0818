//! The reservation rules of SPC-4 5.13 as pure functions: a PERSISTENT RESERVE OUT applied
//! to a LUN's [`PrData`] changes it and says what else has to happen ([`Effects`]: unit
//! attentions, the registrations PREEMPT AND ABORT removed) or refuses ([`Refusal`]:
//! RESERVATION CONFLICT or a sense). No locks, clocks or files: the caller decides when the
//! new state takes effect (after it is persisted, see `super::PrState`).
//!
//! Every function is linear in the registrations (at most [`MAX_REGISTRATIONS`]) and the
//! TransportIDs of the request.

use std::collections::HashSet;

use scsi_proto::scsi::pr::{
    self as proto, out_sa, PrOutCdb, PrType, ProutParams, RegisterMoveParams, TransportId,
};
use scsi_proto::scsi::sense::{asc, AdditionalSense, Sense, SenseKey};
use serde::{Deserialize, Serialize};

use super::request::{Params, PrOutRequest};
use super::{Access, MAX_REGISTRATIONS};
use crate::scsi::Nexus;

/// One registration: an initiator port (name + ISID) through one target port, or through
/// every target port (ALL_TG_PT).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Registration {
    pub(super) initiator: String,
    pub(super) isid: u64,
    /// `None`: registered through all target ports.
    pub(super) tpgt: Option<u16>,
    pub(super) key: u64,
    /// The target port the registration came through (where unit attentions go for an
    /// ALL_TG_PT registration).
    #[serde(default)]
    pub(super) origin_tpgt: u16,
    /// This registration holds the reservation (unused for all-registrants types, where
    /// every registrant does).
    pub(super) holder: bool,
}

impl Registration {
    pub(super) fn matches(&self, n: &Nexus) -> bool {
        self.isid == n.isid
            && self.initiator == n.initiator
            && self.tpgt.is_none_or(|t| t == n.tpgt)
    }
}

/// The whole persistent reservation state of a LUN: what the rules act on and what a
/// [`PrStore`](super::PrStore) saves (its serde form is the APTPL file format).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrData {
    pub(super) generation: u32,
    pub(super) registrations: Vec<Registration>,
    /// Reservation type code, when reserved.
    pub(super) reservation: Option<u8>,
    pub(super) aptpl: bool,
}

impl PrData {
    pub(super) fn res_type(&self) -> Option<PrType> {
        self.reservation.and_then(PrType::from_u8)
    }
    pub(super) fn find(&self, n: &Nexus) -> Option<usize> {
        self.registrations.iter().position(|r| r.matches(n))
    }
    pub(super) fn bump(&mut self) {
        self.generation = self.generation.wrapping_add(1);
    }
    /// Whether `n` holds the reservation.
    pub(super) fn is_holder(&self, n: &Nexus) -> bool {
        match self.res_type() {
            None => false,
            Some(t) if t.all_registrants() => self.find(n).is_some(),
            Some(_) => self.registrations.iter().any(|r| r.holder && r.matches(n)),
        }
    }
    /// Remove the registrations `drop` selects (never `keep`); releases the reservation
    /// when its holder goes. Returns the removed registrations.
    pub(super) fn remove_where(
        &mut self,
        keep: Option<usize>,
        drop: impl Fn(&Registration) -> bool,
    ) -> Vec<Registration> {
        let mut removed = Vec::new();
        let mut idx = 0;
        self.registrations.retain(|r| {
            let k = Some(idx) == keep || !drop(r);
            idx += 1;
            if !k {
                removed.push(r.clone());
            }
            k
        });
        self.after_removal(&removed);
        removed
    }
    /// The reservation ends when its holder's registration goes (for the all-registrants
    /// types: when the last registration goes).
    pub(super) fn after_removal(&mut self, removed: &[Registration]) {
        let ends = match self.res_type() {
            Some(t) if t.all_registrants() => self.registrations.is_empty(),
            Some(_) => removed.iter().any(|r| r.holder),
            None => false,
        };
        if ends {
            self.reservation = None;
        }
    }

    /// Whether an access of kind `access` by `n` conflicts with the reservation (SPC-4
    /// 5.13.1 tables): reads conflict only under the Exclusive Access types, writes under
    /// every type, unless `n` holds the reservation or, for registrants-only and
    /// all-registrants types, is registered.
    pub(super) fn conflicts(&self, n: &Nexus, access: Access) -> bool {
        let Some(t) = self.res_type() else {
            return false;
        };
        let allowed = self.is_holder(n) || (t.registrants_have_access() && self.find(n).is_some());
        !allowed && (access == Access::Write || t.exclusive_access())
    }

    /// Whether anything (a registration or a reservation) exists.
    pub(super) fn is_active(&self) -> bool {
        !self.registrations.is_empty() || self.reservation.is_some()
    }
}

/// Why a PERSISTENT RESERVE OUT failed.
pub(super) enum Refusal {
    Conflict,
    Check(Sense),
}

impl From<Sense> for Refusal {
    fn from(s: Sense) -> Self {
        Refusal::Check(s)
    }
}

/// Side effects of a successful PERSISTENT RESERVE OUT.
#[derive(Default)]
pub(super) struct Effects {
    /// Unit attentions: (who, condition).
    pub(super) uas: Vec<(Registration, AdditionalSense)>,
    /// PREEMPT AND ABORT: the removed registrations, whose nexuses' tasks are aborted.
    pub(super) abort: Vec<Registration>,
}

/// Apply a decoded PERSISTENT RESERVE OUT to `st` (from `nexus`). On a refusal `st` may be
/// partly changed: callers apply to a copy and keep it only on success. `ptpl_capable`:
/// whether a store can keep the state across power loss (else APTPL is refused).
pub(super) fn apply(
    st: &mut PrData,
    nexus: &Nexus,
    req: &PrOutRequest,
    ptpl_capable: bool,
) -> Result<Effects, Refusal> {
    let mut fx = Effects::default();
    let c = req.c;
    match &req.params {
        Params::Move(p) => register_and_move(st, nexus, p, ptpl_capable)?,
        Params::Basic { p, ids } => {
            let sa = c.sa;
            if p.spec_i_pt && sa != out_sa::REGISTER {
                // SPEC_I_PT belongs to REGISTER only (SPC-4 6.15.3).
                return Err(Sense::invalid_field_in_param(20, Some(3)).into());
            }
            if p.aptpl && !ptpl_capable {
                return Err(Sense::invalid_field_in_param(20, Some(0)).into());
            }
            match (sa, ids) {
                (out_sa::REGISTER, Some(ids)) => register_specified(st, nexus, p, ids)?,
                (out_sa::REGISTER | out_sa::REGISTER_AND_IGNORE_EXISTING_KEY, _) => {
                    register(st, nexus, p, sa == out_sa::REGISTER, &mut fx)?
                }
                (out_sa::RESERVE, _) => reserve(st, nexus, p, c)?,
                (out_sa::RELEASE, _) => release(st, nexus, p, c, &mut fx)?,
                (out_sa::CLEAR, _) => {
                    let me = registered_with(st, nexus, p.key)?;
                    let mine = st.registrations[me].clone();
                    for r in st.registrations.drain(..) {
                        if r != mine {
                            fx.uas.push((r, asc::RESERVATIONS_PREEMPTED));
                        }
                    }
                    st.reservation = None;
                    st.bump();
                }
                (sa, _) => {
                    // PREEMPT and PREEMPT AND ABORT change the state alike; PREEMPT AND
                    // ABORT also has the preempted nexuses' tasks aborted (by the
                    // device server's caller, through the transport).
                    let removed = preempt(st, nexus, p, c, &mut fx)?;
                    if sa == out_sa::PREEMPT_AND_ABORT {
                        fx.abort = removed;
                    }
                }
            }
        }
    }
    Ok(fx)
}

/// INSUFFICIENT REGISTRATION RESOURCES unless `count` registrations fit (SPC-4 5.13.7).
fn check_registration_room(count: usize) -> Result<(), Refusal> {
    if count > MAX_REGISTRATIONS {
        return Err(Sense::new(
            SenseKey::IllegalRequest,
            asc::INSUFFICIENT_REGISTRATION_RESOURCES,
        )
        .into());
    }
    Ok(())
}

fn register_and_move(
    st: &mut PrData,
    nexus: &Nexus,
    p: &RegisterMoveParams,
    ptpl_capable: bool,
) -> Result<(), Refusal> {
    let me = registered_with(st, nexus, p.key)?;
    let Some(t) = st.res_type() else {
        return Err(Refusal::Conflict);
    };
    if t.all_registrants() || !st.registrations[me].holder {
        return Err(Refusal::Conflict);
    }
    if p.sa_key == 0 {
        return Err(Sense::invalid_field_in_param(8, None).into());
    }
    if p.aptpl && !ptpl_capable {
        return Err(Sense::invalid_field_in_param(17, Some(0)).into());
    }
    let Some(isid) = p.transport_id.isid else {
        // An I_T nexus needs the initiator port, not just the device name.
        return Err(Sense::invalid_field_in_param(24, Some(7)).into());
    };
    let dest = Nexus {
        initiator: p.transport_id.name.clone(),
        isid,
        tpgt: p.relative_port,
    };
    if st.registrations[me].matches(&dest) {
        return Err(Sense::invalid_field_in_param(18, None).into());
    }
    let found = st.find(&dest);
    if found.is_none() {
        // The destination's registration is new; with UNREG the source's goes.
        check_registration_room(st.registrations.len() + 1 - usize::from(p.unreg))?;
    }
    st.registrations[me].holder = false;
    match found {
        Some(i) => {
            st.registrations[i].key = p.sa_key;
            st.registrations[i].holder = true;
        }
        None => st.registrations.push(Registration {
            initiator: dest.initiator,
            isid: dest.isid,
            tpgt: Some(dest.tpgt),
            key: p.sa_key,
            origin_tpgt: p.relative_port,
            holder: true,
        }),
    }
    if p.unreg {
        st.registrations.remove(me);
    }
    st.aptpl = p.aptpl;
    st.bump();
    Ok(())
}

/// REGISTER with SPEC_I_PT (SPC-4 5.13.7): an unregistered I_T nexus registers itself and
/// every initiator port its TransportIDs name, all with the SERVICE ACTION RESERVATION KEY,
/// through the port the command came in on (every port with ALL_TG_PT). All or nothing: a
/// registered issuer, a TransportID without an ISID (a whole initiator device, not a port),
/// one naming an already registered or a repeated I_T nexus, a zero key, or more
/// registrations than [`MAX_REGISTRATIONS`] changes nothing. Linear: the duplicate checks
/// use hash sets of the ports already registered and of those named so far.
fn register_specified(
    st: &mut PrData,
    nexus: &Nexus,
    p: &ProutParams,
    ids: &Result<Vec<TransportId>, Sense>,
) -> Result<(), Refusal> {
    if st.find(nexus).is_some() {
        return Err(Sense::invalid_field_in_param(20, Some(3)).into());
    }
    if p.key != 0 {
        return Err(Refusal::Conflict);
    }
    if p.sa_key == 0 {
        return Err(Sense::invalid_field_in_param(8, None).into());
    }
    let ids = ids.as_ref().map_err(|s| Refusal::Check(s.clone()))?;
    check_registration_room(st.registrations.len() + 1 + ids.len())?;
    let tpgt = if p.all_tg_pt { None } else { Some(nexus.tpgt) };
    // Initiator ports registered through the receiving port (or through every port): a
    // TransportID naming one of them names a registered I_T nexus.
    let registered: HashSet<(&str, u64)> = st
        .registrations
        .iter()
        .filter(|r| r.tpgt.is_none_or(|t| t == nexus.tpgt))
        .map(|r| (r.initiator.as_str(), r.isid))
        .collect();
    // The ports this command registers so far, the issuer first.
    let mut named: HashSet<(&str, u64)> = HashSet::with_capacity(ids.len() + 1);
    named.insert((nexus.initiator.as_str(), nexus.isid));
    for id in ids {
        let Some(isid) = id.isid else {
            return Err(Sense::invalid_field_in_param(28, Some(7)).into());
        };
        let port = (id.name.as_str(), isid);
        if registered.contains(&port) || !named.insert(port) {
            return Err(Sense::invalid_field_in_param(28, None).into());
        }
    }
    let new: Vec<Registration> = std::iter::once((nexus.initiator.clone(), nexus.isid))
        .chain(
            ids.iter()
                .map(|id| (id.name.clone(), id.isid.unwrap_or_default())),
        )
        .map(|(initiator, isid)| Registration {
            initiator,
            isid,
            tpgt,
            key: p.sa_key,
            origin_tpgt: nexus.tpgt,
            holder: false,
        })
        .collect();
    st.registrations.extend(new);
    if p.aptpl {
        st.aptpl = true;
    }
    st.bump();
    Ok(())
}

/// The index of `nexus`'s registration if its key is `key`; RESERVATION CONFLICT otherwise.
fn registered_with(st: &PrData, nexus: &Nexus, key: u64) -> Result<usize, Refusal> {
    match st.find(nexus) {
        Some(i) if st.registrations[i].key == key => Ok(i),
        _ => Err(Refusal::Conflict),
    }
}

fn register(
    st: &mut PrData,
    nexus: &Nexus,
    p: &ProutParams,
    check_key: bool,
    fx: &mut Effects,
) -> Result<(), Refusal> {
    match st.find(nexus) {
        None => {
            if check_key && p.key != 0 {
                return Err(Refusal::Conflict);
            }
            if p.sa_key == 0 {
                return Ok(());
            }
            check_registration_room(st.registrations.len() + 1)?;
            st.registrations.push(Registration {
                initiator: nexus.initiator.clone(),
                isid: nexus.isid,
                tpgt: if p.all_tg_pt { None } else { Some(nexus.tpgt) },
                key: p.sa_key,
                origin_tpgt: nexus.tpgt,
                holder: false,
            });
        }
        Some(i) => {
            if check_key && p.key != st.registrations[i].key {
                return Err(Refusal::Conflict);
            }
            if p.sa_key == 0 {
                let before = st.res_type();
                let r = st.registrations.remove(i);
                st.after_removal(std::slice::from_ref(&r));
                // The holder of a registrants-only reservation left: the others learn the
                // reservation is gone (SPC-4 5.13.11.2.2).
                if r.holder
                    && st.reservation.is_none()
                    && before.is_some_and(|t| t.registrants_have_access())
                {
                    for o in &st.registrations {
                        fx.uas.push((o.clone(), asc::RESERVATIONS_RELEASED));
                    }
                }
            } else {
                st.registrations[i].key = p.sa_key;
            }
        }
    }
    st.aptpl = p.aptpl;
    st.bump();
    Ok(())
}

fn reserve(st: &mut PrData, nexus: &Nexus, p: &ProutParams, c: PrOutCdb) -> Result<(), Refusal> {
    let me = registered_with(st, nexus, p.key)?;
    let t = c.reservation_type()?;
    match st.res_type() {
        Some(cur) => {
            if st.is_holder(nexus) && cur == t {
                Ok(())
            } else {
                Err(Refusal::Conflict)
            }
        }
        None => {
            st.reservation = Some(t.code());
            st.registrations[me].holder = true;
            Ok(())
        }
    }
}

fn release(
    st: &mut PrData,
    nexus: &Nexus,
    p: &ProutParams,
    c: PrOutCdb,
    fx: &mut Effects,
) -> Result<(), Refusal> {
    let me = registered_with(st, nexus, p.key)?;
    let Some(cur) = st.res_type() else {
        return Ok(());
    };
    if !st.is_holder(nexus) {
        return Ok(());
    }
    if c.scope != proto::LU_SCOPE || c.type_code != cur.code() {
        return Err(Sense::new(
            SenseKey::IllegalRequest,
            asc::INVALID_RELEASE_OF_PERSISTENT_RESERVATION,
        )
        .into());
    }
    st.reservation = None;
    for r in st.registrations.iter_mut() {
        r.holder = false;
    }
    if cur.registrants_have_access() {
        for (i, r) in st.registrations.iter().enumerate() {
            if i != me {
                fx.uas.push((r.clone(), asc::RESERVATIONS_RELEASED));
            }
        }
    }
    Ok(())
}

/// PREEMPT (and the state change of PREEMPT AND ABORT); returns the removed registrations.
fn preempt(
    st: &mut PrData,
    nexus: &Nexus,
    p: &ProutParams,
    c: PrOutCdb,
    fx: &mut Effects,
) -> Result<Vec<Registration>, Refusal> {
    let me = registered_with(st, nexus, p.key)?;
    let removed = match st.res_type() {
        None => {
            if p.sa_key == 0 {
                return Err(Sense::invalid_field_in_param(8, None).into());
            }
            let key = p.sa_key;
            st.remove_where(Some(me), |r| r.key == key)
        }
        Some(cur) if cur.all_registrants() => {
            if p.sa_key == 0 {
                let t = c.reservation_type()?;
                let removed = st.remove_where(Some(me), |_| true);
                st.reservation = Some(t.code());
                for r in st.registrations.iter_mut() {
                    r.holder = true;
                }
                removed
            } else {
                let key = p.sa_key;
                let removed = st.remove_where(Some(me), |r| r.key == key);
                if removed.is_empty() {
                    return Err(Refusal::Conflict);
                }
                removed
            }
        }
        Some(cur) => {
            let holder_key = st.registrations.iter().find(|r| r.holder).map(|r| r.key);
            if Some(p.sa_key) == holder_key {
                let t = c.reservation_type()?;
                let key = p.sa_key;
                let removed = st.remove_where(Some(me), |r| r.key == key);
                let me = st.find(nexus).unwrap_or(0);
                for r in st.registrations.iter_mut() {
                    r.holder = false;
                }
                if let Some(r) = st.registrations.get_mut(me) {
                    r.holder = true;
                }
                st.reservation = Some(t.code());
                if t != cur {
                    for (i, r) in st.registrations.iter().enumerate() {
                        if i != me {
                            fx.uas.push((r.clone(), asc::RESERVATIONS_RELEASED));
                        }
                    }
                }
                removed
            } else {
                if p.sa_key == 0 {
                    return Err(Sense::invalid_field_in_param(8, None).into());
                }
                let key = p.sa_key;
                let removed = st.remove_where(Some(me), |r| r.key == key);
                if removed.is_empty() {
                    return Err(Refusal::Conflict);
                }
                removed
            }
        }
    };
    if removed.is_empty() && st.reservation.is_none() {
        return Err(Refusal::Conflict);
    }
    for r in &removed {
        fx.uas.push((r.clone(), asc::REGISTRATIONS_PREEMPTED));
    }
    st.bump();
    Ok(removed)
}

/// The unit attentions SPC-4 prescribes for the changes that turned `old` into `new`, as
/// far as they can be told from the two states alone: for a gateway that missed the
/// changes' notices (its watch was down, or the issuer died between its save and its
/// notify). Per registration of `old`:
/// - gone from `new`: REGISTRATIONS PREEMPTED (PREEMPT, PREEMPT AND ABORT), or
///   RESERVATIONS PREEMPTED when nothing at all is left (CLEAR);
/// - still there, and a registrants-only or all-registrants reservation is gone:
///   RESERVATIONS RELEASED (RELEASE, or its holder unregistered), except for the holder
///   that released it;
/// - still there, and the reservation's type changed: RESERVATIONS RELEASED (PREEMPT of the
///   holder with another type), except for the new holder.
///
/// What cannot be told: who issued the changes (a registration an initiator removed
/// itself through another gateway reads as preempted; such unit attentions go to the
/// nexus the registration was made through, which is logged in at that other gateway, so
/// they normally reach no one), a CLEAR followed by new registrations (reads as PREEMPT),
/// changes that undid each other between the two states (none), and PREEMPT AND ABORT's
/// aborts (a preempted registration looks the same after PREEMPT).
pub(super) fn missed_unit_attentions(
    old: &PrData,
    new: &PrData,
) -> Vec<(Registration, AdditionalSense)> {
    let same_port = |a: &Registration, b: &Registration| {
        a.initiator == b.initiator && a.isid == b.isid && a.tpgt == b.tpgt
    };
    let cleared = !new.is_active();
    let (was, is) = (old.res_type(), new.res_type());
    let mut out = Vec::new();
    for r in &old.registrations {
        let Some(now) = new.registrations.iter().find(|n| same_port(n, r)) else {
            let code = if cleared {
                asc::RESERVATIONS_PREEMPTED
            } else {
                asc::REGISTRATIONS_PREEMPTED
            };
            out.push((r.clone(), code));
            continue;
        };
        let released = match (was, is) {
            (Some(t), None) => t.registrants_have_access() && (t.all_registrants() || !r.holder),
            (Some(t), Some(u)) if t != u => u.all_registrants() || !now.holder,
            _ => false,
        };
        if released {
            out.push((now.clone(), asc::RESERVATIONS_RELEASED));
        }
    }
    out
}
