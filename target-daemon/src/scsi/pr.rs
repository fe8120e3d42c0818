//! Persistent reservations (SPC-4 5.13): PERSISTENT RESERVE IN/OUT, the reservation
//! conflict rules every other command is checked against, and APTPL persistence.
//!
//! Clusters (Windows Failover Clustering, VMware, Pacemaker's fence_scsi) fence nodes with
//! these: each node registers a key through every path, one node reserves the LUN
//! (typically Write Exclusive – Registrants Only) and a surviving node PREEMPTs a dead
//! node's key. State is per LUN (not per volume: a clone starts with none) and keyed on
//! the full I_T nexus (initiator name + ISID, target port group tag).
//!
//! When the last REGISTER asked for APTPL the state is written atomically (temp file,
//! fsync, rename) to `<state dir>/<LUN identity>.json` after every change and reloaded
//! when the LUN is attached again (daemon restart); see [`set_state_dir`].
//!
//! The device server classifies commands ([`Access`]) and calls [`PrState::conflicts`];
//! PERSISTENT RESERVE IN/OUT land in [`PrState::pr_in`] / [`PrState::pr_out`].
//!
//! The state sits behind the LUN's mutex, which every command of a reserved LUN takes, so
//! nothing slow may happen under it: a PERSISTENT RESERVE OUT is decoded first, without the
//! lock ([`PrOutRequest::parse`], on a blocking thread), the state change under the lock is
//! linear in the bounded registration count ([`MAX_REGISTRATIONS`]), and the APTPL write
//! ([`Persist`]) runs after the lock is released, on a blocking thread.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use scsi_proto::scsi::pr::{
    self as proto, in_sa, out_sa, Capabilities, FullStatusEntry, PrOutCdb, PrType, ProutParams,
    RegisterMoveParams, TransportId,
};
use scsi_proto::scsi::sense::{asc, AdditionalSense, Sense, SenseKey};
use serde::{Deserialize, Serialize};

use super::Nexus;

/// REGISTRATIONS PREEMPTED (2A/05).
const REGISTRATIONS_PREEMPTED: AdditionalSense = AdditionalSense::new(0x2A, 0x05);
/// INVALID RELEASE OF PERSISTENT RESERVATION (26/04).
const INVALID_RELEASE: AdditionalSense = AdditionalSense::new(0x26, 0x04);

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

static STATE_DIR: OnceLock<PathBuf> = OnceLock::new();

/// Where APTPL state files live (e.g. `<data dir>/pr`). Call once at start-up, before LUNs
/// are attached; without it APTPL is refused (REPORT CAPABILITIES says PTPL_C=0).
pub fn set_state_dir(dir: PathBuf) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    // Private to lunard's user (0700) whatever the umask, like the rest of the data directory.
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", dir.display()))?;
    if let Err(dir) = STATE_DIR.set(dir) {
        // A second daemon in the same process (tests): APTPL state stays in the first dir.
        tracing::warn!(ignored = %dir.display(), "persistent reservation state directory already set");
    }
    Ok(())
}

/// One registration: an initiator port (name + ISID) through one target port, or through
/// every target port (ALL_TG_PT).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Registration {
    initiator: String,
    isid: u64,
    /// `None`: registered through all target ports.
    tpgt: Option<u16>,
    key: u64,
    /// The target port the registration came through (where unit attentions go for an
    /// ALL_TG_PT registration).
    #[serde(default)]
    origin_tpgt: u16,
    /// This registration holds the reservation (unused for all-registrants types, where
    /// every registrant does).
    holder: bool,
}

impl Registration {
    fn matches(&self, n: &Nexus) -> bool {
        self.isid == n.isid
            && self.initiator == n.initiator
            && self.tpgt.is_none_or(|t| t == n.tpgt)
    }
}

/// The whole persistent reservation state of a LUN (also the APTPL file format).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Data {
    generation: u32,
    registrations: Vec<Registration>,
    /// Reservation type code, when reserved.
    reservation: Option<u8>,
    aptpl: bool,
}

impl Data {
    fn res_type(&self) -> Option<PrType> {
        self.reservation.and_then(PrType::from_u8)
    }
    fn find(&self, n: &Nexus) -> Option<usize> {
        self.registrations.iter().position(|r| r.matches(n))
    }
    fn bump(&mut self) {
        self.generation = self.generation.wrapping_add(1);
    }
    /// Whether `n` holds the reservation.
    fn is_holder(&self, n: &Nexus) -> bool {
        match self.res_type() {
            None => false,
            Some(t) if t.all_registrants() => self.find(n).is_some(),
            Some(_) => self.registrations.iter().any(|r| r.holder && r.matches(n)),
        }
    }
    /// Remove the registrations `drop` selects (never `keep`); releases the reservation
    /// when its holder goes. Returns the removed registrations.
    fn remove_where(
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
    fn after_removal(&mut self, removed: &[Registration]) {
        let ends = match self.res_type() {
            Some(t) if t.all_registrants() => self.registrations.is_empty(),
            Some(_) => removed.iter().any(|r| r.holder),
            None => false,
        };
        if ends {
            self.reservation = None;
        }
    }
}

/// Why a PERSISTENT RESERVE OUT failed.
enum Refusal {
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
struct Effects {
    /// Unit attentions: (who, condition).
    uas: Vec<(Registration, AdditionalSense)>,
    /// PREEMPT AND ABORT: the removed registrations, whose nexuses' tasks are aborted.
    abort: Vec<Registration>,
}

/// What a successful PERSISTENT RESERVE OUT asks of the device server besides its status.
#[derive(Debug, Default)]
pub struct PrOutEffects {
    /// Unit attentions to establish on this LUN: (nexus, code); never for the issuer.
    pub uas: Vec<(Nexus, AdditionalSense)>,
    /// PREEMPT AND ABORT: the preempted I_T nexuses, whose tasks on this LUN must be
    /// aborted before the command completes (SPC-4, "preempting and aborting").
    pub abort: Option<Preempted>,
    /// The APTPL write (or removal) this change calls for, to run without the state lock
    /// and before the command returns GOOD; `None` when no state directory is set.
    pub persist: Option<Persist>,
}

/// The APTPL state file update one PERSISTENT RESERVE OUT calls for: a snapshot of the
/// state taken under the lock, written later by [`Persist::write`]. Writes of one LUN must
/// run in the order their changes were made (the device server serializes PERSISTENT
/// RESERVE OUT per LUN for that).
#[derive(Debug)]
pub struct Persist {
    path: PathBuf,
    /// The state to save; `None`: remove the file (APTPL off or nothing registered).
    data: Option<Data>,
}

impl Persist {
    /// Write (temp file, fsync, rename, fsync of the directory) or remove the state file.
    /// Blocking: run it on a blocking thread. A failure is logged: the change has taken
    /// effect in memory either way.
    pub fn write(self) {
        let result = match &self.data {
            Some(d) => save(&self.path, d),
            None => match std::fs::remove_file(&self.path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            },
        };
        if let Err(e) = result {
            tracing::error!(path = %self.path.display(), error = %e, "cannot persist reservation state (APTPL)");
        }
    }
}

/// A decoded PERSISTENT RESERVE OUT: CDB fields and parameter list, checked as far as
/// they can be without the reservation state. Built by [`PrOutRequest::parse`] outside the
/// LUN's lock (a SPEC_I_PT list may hold hundreds of TransportIDs).
#[derive(Debug)]
pub struct PrOutRequest {
    c: PrOutCdb,
    params: Params,
}

#[derive(Debug)]
enum Params {
    Move(RegisterMoveParams),
    Basic {
        p: ProutParams,
        /// SPEC_I_PT: the TransportID list, or why it is invalid (reported only after
        /// the checks SPC-4 makes first).
        ids: Option<Result<Vec<TransportId>, Sense>>,
    },
}

impl PrOutRequest {
    /// Decode the service action and its parameter list (`params`: exactly PARAMETER
    /// LIST LENGTH bytes).
    pub fn parse(
        service_action: u16,
        scope: u8,
        pr_type: u8,
        params: &[u8],
    ) -> Result<Self, Sense> {
        let Ok(sa) = u8::try_from(service_action) else {
            return Err(Sense::invalid_field_in_cdb(1, Some(4)));
        };
        let c = PrOutCdb {
            sa,
            scope,
            type_code: pr_type,
            param_len: u32::try_from(params.len()).unwrap_or(u32::MAX),
        };
        let params = if sa == out_sa::REGISTER_AND_MOVE {
            Params::Move(RegisterMoveParams::parse(params)?)
        } else {
            let p = ProutParams::parse(params)?;
            let ids = (p.spec_i_pt && sa == out_sa::REGISTER).then(|| proto::spec_i_pt_ids(params));
            Params::Basic { p, ids }
        };
        Ok(Self { c, params })
    }
}

/// The I_T nexuses a PREEMPT AND ABORT preempted: initiator ports with the target port they
/// were registered through (any port for an ALL_TG_PT registration). The issuing nexus is
/// never part of it, even when one of the preempted registrations would cover it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Preempted {
    ports: Vec<Registration>,
    issuer: Nexus,
}

impl Preempted {
    /// Whether the tasks of `n` are to be aborted.
    pub fn contains(&self, n: &Nexus) -> bool {
        *n != self.issuer && self.ports.iter().any(|r| r.matches(n))
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

/// What a PERSISTENT RESERVE OUT did.
#[derive(Debug, PartialEq, Eq)]
pub enum PrOutcome {
    /// GOOD.
    Good,
    /// RESERVATION CONFLICT status.
    Conflict,
}

/// Persistent reservation state of one logical unit.
#[derive(Debug, Default)]
pub struct PrState {
    /// The LUN identity the APTPL file is named after (`None`: never persisted).
    identity: Option<uuid::Uuid>,
    d: Data,
}

fn persist_capable() -> bool {
    STATE_DIR.get().is_some()
}

impl PrState {
    /// State for the LUN identified by `identity` (its NAA identity); reloads the APTPL
    /// state saved for that identity, if any.
    pub fn for_lun(identity: uuid::Uuid) -> Self {
        let d = STATE_DIR
            .get()
            .and_then(|dir| load(&state_path(dir, identity)))
            .unwrap_or_default();
        if !d.registrations.is_empty() {
            tracing::info!(%identity, registrations = d.registrations.len(),
                reserved = d.reservation.is_some(), "persistent reservations restored (APTPL)");
        }
        Self {
            identity: Some(identity),
            d,
        }
    }

    /// Whether anything (a registration or a reservation) exists.
    pub fn is_active(&self) -> bool {
        !self.d.registrations.is_empty() || self.d.reservation.is_some()
    }

    /// Whether a reservation is held (SCSI-2 RESERVE/RELEASE then conflict).
    pub fn is_reserved(&self) -> bool {
        self.d.reservation.is_some()
    }

    /// Whether an access of kind `access` by `n` conflicts with the reservation (SPC-4
    /// 5.13.1 tables): reads conflict only under the Exclusive Access types, writes under
    /// every type, unless `n` holds the reservation or, for registrants-only and
    /// all-registrants types, is registered.
    pub fn conflicts(&self, n: &Nexus, access: Access) -> bool {
        let Some(t) = self.d.res_type() else {
            return false;
        };
        let allowed =
            self.d.is_holder(n) || (t.registrants_have_access() && self.d.find(n).is_some());
        !allowed && (access == Access::Write || t.exclusive_access())
    }

    /// PERSISTENT RESERVE IN parameter data (before allocation-length truncation).
    pub fn pr_in(&self, service_action: u16) -> Vec<u8> {
        let st = &self.d;
        match u8::try_from(service_action).unwrap_or(u8::MAX) {
            in_sa::READ_KEYS => {
                let keys: Vec<u64> = st.registrations.iter().map(|r| r.key).collect();
                proto::encode_read_keys(st.generation, &keys)
            }
            in_sa::READ_RESERVATION => {
                let r = st.res_type().map(|t| {
                    let key = if t.all_registrants() {
                        0
                    } else {
                        st.registrations
                            .iter()
                            .find(|r| r.holder)
                            .map_or(0, |r| r.key)
                    };
                    (key, t)
                });
                proto::encode_read_reservation(st.generation, r)
            }
            in_sa::REPORT_CAPABILITIES => proto::encode_report_capabilities(Capabilities {
                spec_i_pt: true,
                all_tg_pt: true,
                ptpl_capable: persist_capable(),
                ptpl_active: st.aptpl,
            }),
            in_sa::READ_FULL_STATUS => {
                let t = st.res_type();
                let entries: Vec<FullStatusEntry> = st
                    .registrations
                    .iter()
                    .map(|r| FullStatusEntry {
                        key: r.key,
                        all_tg_pt: r.tpgt.is_none(),
                        holder: t.filter(|t| t.all_registrants() || r.holder),
                        relative_port: r.tpgt.map_or(0, |p| p.max(1)),
                        transport_id: TransportId {
                            name: r.initiator.clone(),
                            isid: Some(r.isid),
                        },
                    })
                    .collect();
                proto::encode_read_full_status(st.generation, &entries)
            }
            // The CDB decoder only lets the four service actions above through.
            _ => proto::encode_read_keys(st.generation, &[]),
        }
    }

    /// Execute a decoded PERSISTENT RESERVE OUT. `effects` collects what the device
    /// server still has to do on success: unit attentions to establish on this LUN (never
    /// for `n` itself), for PREEMPT AND ABORT the nexuses whose tasks to abort, and the
    /// APTPL write. Linear in the number of registrations and TransportIDs.
    pub fn pr_out(
        &mut self,
        n: &Nexus,
        req: &PrOutRequest,
        effects: &mut PrOutEffects,
    ) -> Result<PrOutcome, Sense> {
        match self.apply(n, req) {
            Ok(fx) => {
                for (r, code) in fx.uas {
                    let who = Nexus {
                        initiator: r.initiator,
                        isid: r.isid,
                        tpgt: r.tpgt.unwrap_or(r.origin_tpgt),
                    };
                    if who != *n {
                        effects.uas.push((who, code));
                    }
                }
                if !fx.abort.is_empty() {
                    effects.abort = Some(Preempted {
                        ports: fx.abort,
                        issuer: n.clone(),
                    });
                }
                effects.persist = self.persist_job();
                Ok(PrOutcome::Good)
            }
            Err(Refusal::Conflict) => Ok(PrOutcome::Conflict),
            Err(Refusal::Check(s)) => Err(s),
        }
    }

    /// The state file update for the current state (`None` without a state directory).
    fn persist_job(&self) -> Option<Persist> {
        let st = &self.d;
        let (Some(dir), Some(identity)) = (STATE_DIR.get(), self.identity) else {
            return None;
        };
        Some(Persist {
            path: state_path(dir, identity),
            data: (st.aptpl && !st.registrations.is_empty()).then(|| st.clone()),
        })
    }

    fn apply(&mut self, nexus: &Nexus, req: &PrOutRequest) -> Result<Effects, Refusal> {
        let st = &mut self.d;
        let mut fx = Effects::default();
        let c = req.c;
        match &req.params {
            Params::Move(p) => register_and_move(st, nexus, p)?,
            Params::Basic { p, ids } => {
                let sa = c.sa;
                if p.spec_i_pt && sa != out_sa::REGISTER {
                    // SPEC_I_PT belongs to REGISTER only (SPC-4 6.15.3).
                    return Err(Sense::invalid_field_in_param(20, Some(3)).into());
                }
                if p.aptpl && !persist_capable() {
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

fn register_and_move(st: &mut Data, nexus: &Nexus, p: &RegisterMoveParams) -> Result<(), Refusal> {
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
    if p.aptpl && !persist_capable() {
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
    st: &mut Data,
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
fn registered_with(st: &Data, nexus: &Nexus, key: u64) -> Result<usize, Refusal> {
    match st.find(nexus) {
        Some(i) if st.registrations[i].key == key => Ok(i),
        _ => Err(Refusal::Conflict),
    }
}

fn register(
    st: &mut Data,
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

fn reserve(st: &mut Data, nexus: &Nexus, p: &ProutParams, c: PrOutCdb) -> Result<(), Refusal> {
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
    st: &mut Data,
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
        return Err(Sense::new(SenseKey::IllegalRequest, INVALID_RELEASE).into());
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
    st: &mut Data,
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
        fx.uas.push((r.clone(), REGISTRATIONS_PREEMPTED));
    }
    st.bump();
    Ok(removed)
}

fn state_path(dir: &Path, identity: uuid::Uuid) -> PathBuf {
    dir.join(format!("{identity}.json"))
}

fn load(path: &Path) -> Option<Data> {
    let text = match std::fs::read(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            tracing::error!(path = %path.display(), error = %e, "cannot read reservation state");
            return None;
        }
    };
    match serde_json::from_slice::<Data>(&text) {
        Ok(st) if st.aptpl => Some(st),
        Ok(_) => None,
        Err(e) => {
            tracing::error!(path = %path.display(), error = %e, "ignoring corrupt reservation state");
            None
        }
    }
}

/// Atomic replace: temp file, fsync, rename, fsync of the directory.
fn save(path: &Path, st: &Data) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let json = serde_json::to_vec_pretty(st).map_err(std::io::Error::other)?;
    let tmp = path.with_extension("json.tmp");
    {
        // Mode 0600 from creation (never readable by others, whatever the umask); set again
        // on the descriptor for a temporary file an older lunard left with another mode.
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        f.write_all(&json)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use scsi_proto::scsi::sense::FieldPointer;

    fn nx(i: &str, isid: u64, tpgt: u16) -> Nexus {
        Nexus {
            initiator: i.into(),
            isid,
            tpgt,
        }
    }

    fn params(key: u64, sa_key: u64) -> Vec<u8> {
        let mut p = vec![0u8; 24];
        p[0..8].copy_from_slice(&key.to_be_bytes());
        p[8..16].copy_from_slice(&sa_key.to_be_bytes());
        p
    }

    fn run(
        r: &mut PrState,
        n: &Nexus,
        sa: u8,
        t: u8,
        p: &[u8],
    ) -> (Result<PrOutcome, Sense>, Vec<(Nexus, AdditionalSense)>) {
        let (res, fx) = run_fx(r, n, sa, t, p);
        (res, fx.uas)
    }

    fn run_fx(
        r: &mut PrState,
        n: &Nexus,
        sa: u8,
        t: u8,
        p: &[u8],
    ) -> (Result<PrOutcome, Sense>, PrOutEffects) {
        let mut fx = PrOutEffects::default();
        let res =
            PrOutRequest::parse(u16::from(sa), 0, t, p).and_then(|req| r.pr_out(n, &req, &mut fx));
        (res, fx)
    }

    fn ok(
        r: &mut PrState,
        n: &Nexus,
        sa: u8,
        t: u8,
        key: u64,
        sa_key: u64,
    ) -> Vec<(Nexus, AdditionalSense)> {
        let (res, uas) = run(r, n, sa, t, &params(key, sa_key));
        assert_eq!(res, Ok(PrOutcome::Good), "service action {sa}");
        uas
    }

    fn conflict(r: &mut PrState, n: &Nexus, sa: u8, t: u8, key: u64, sa_key: u64) {
        let (res, _) = run(r, n, sa, t, &params(key, sa_key));
        assert_eq!(res, Ok(PrOutcome::Conflict), "service action {sa}");
    }

    #[test]
    fn access_table_per_type() {
        // (type, registered i2 read, write, unregistered i2 read, write) per SPC-4.
        let table = [
            (3u8, false, false, false, false),
            (1, true, false, true, false),
            (6, true, true, false, false),
            (5, true, true, true, false),
            (8, true, true, false, false),
            (7, true, true, true, false),
        ];
        let a = nx("iqn.a", 1, 1);
        let b = nx("iqn.b", 2, 1);
        for (t, rr, rw, ur, uw) in table {
            let mut r = PrState::default();
            ok(
                &mut r,
                &a,
                out_sa::REGISTER_AND_IGNORE_EXISTING_KEY,
                0,
                0,
                10,
            );
            ok(
                &mut r,
                &b,
                out_sa::REGISTER_AND_IGNORE_EXISTING_KEY,
                0,
                0,
                20,
            );
            ok(&mut r, &a, out_sa::RESERVE, t, 10, 0);
            assert!(!r.conflicts(&a, Access::Read) && !r.conflicts(&a, Access::Write));
            assert_eq!(!r.conflicts(&b, Access::Read), rr, "type {t}");
            assert_eq!(!r.conflicts(&b, Access::Write), rw, "type {t}");
            ok(&mut r, &b, out_sa::REGISTER, 0, 20, 0);
            assert_eq!(!r.conflicts(&b, Access::Read), ur, "type {t}");
            assert_eq!(!r.conflicts(&b, Access::Write), uw, "type {t}");
            ok(&mut r, &a, out_sa::RELEASE, t, 10, 0);
            assert!(!r.conflicts(&b, Access::Write));
        }
    }

    #[test]
    fn register_rules_and_generation() {
        let mut r = PrState::default();
        let a = nx("iqn.a", 1, 1);
        conflict(&mut r, &a, out_sa::REGISTER, 0, 5, 6); // unregistered, non-zero key
        ok(&mut r, &a, out_sa::REGISTER, 0, 0, 6);
        conflict(&mut r, &a, out_sa::REGISTER, 0, 7, 8); // wrong key
        ok(&mut r, &a, out_sa::REGISTER, 0, 6, 8);
        conflict(&mut r, &a, out_sa::RESERVE, 1, 6, 0);
        assert_eq!(r.d.generation, 2);
        ok(&mut r, &a, out_sa::RESERVE, 1, 8, 0);
        assert_eq!(r.d.generation, 2, "RESERVE does not bump the generation");
        ok(&mut r, &a, out_sa::RESERVE, 1, 8, 0);
        conflict(&mut r, &a, out_sa::RESERVE, 3, 8, 0);
        let (res, _) = run(&mut r, &a, out_sa::RELEASE, 3, &params(8, 0));
        assert!(res.is_err(), "RELEASE with another type: INVALID RELEASE");
        // Unregistering the holder releases the reservation.
        ok(&mut r, &a, out_sa::REGISTER, 0, 8, 0);
        assert!(!r.is_reserved() && !r.is_active());
        // Bad lengths and unsupported bits.
        let (res, _) = run(&mut r, &a, out_sa::REGISTER, 0, &params(0, 1)[..20]);
        assert!(res.is_err());
        let mut p = params(0, 1);
        p[20] = 0x08;
        assert!(
            run(&mut r, &a, out_sa::REGISTER, 0, &p).0.is_err(),
            "SPEC_I_PT without its TransportID list"
        );
    }

    /// REGISTER with SPEC_I_PT and a TransportID list after the basic parameters.
    fn spec_params(sa_key: u64, ids: &[TransportId]) -> Vec<u8> {
        let mut p = params(0, sa_key);
        p[20] = 0x08;
        let list: Vec<u8> = ids.iter().flat_map(TransportId::encode).collect();
        p.extend_from_slice(&(list.len() as u32).to_be_bytes());
        p.extend_from_slice(&list);
        p
    }

    #[test]
    fn spec_i_pt_registers_the_named_ports_all_or_nothing() {
        let mut r = PrState::default();
        let a = nx("iqn.a", 1, 1);
        let b = nx("iqn.b", 2, 1);
        let c = nx("iqn.c", 3, 1);
        let port = |n: &Nexus| TransportId {
            name: n.initiator.clone(),
            isid: Some(n.isid),
        };
        // A whole device (no ISID) is refused, and so is a list naming the same port twice.
        let device = TransportId {
            name: "iqn.b".into(),
            isid: None,
        };
        assert!(run(
            &mut r,
            &a,
            out_sa::REGISTER,
            0,
            &spec_params(0xA, &[device])
        )
        .0
        .is_err());
        assert!(run(
            &mut r,
            &a,
            out_sa::REGISTER,
            0,
            &spec_params(0xA, &[port(&b), port(&b)])
        )
        .0
        .is_err());
        assert!(
            r.d.registrations.is_empty(),
            "a refused list registers nothing"
        );
        // A registers itself and B in one command.
        let (res, _) = run(
            &mut r,
            &a,
            out_sa::REGISTER,
            0,
            &spec_params(0xA, &[port(&b)]),
        );
        assert!(res.is_ok(), "{res:?}");
        assert_eq!(r.d.registrations.len(), 2);
        // B holds the key now: it may reserve with it without registering itself.
        ok(&mut r, &b, out_sa::RESERVE, 5, 0xA, 0);
        assert!(r.conflicts(&c, Access::Write));
        // A registered issuer, or a list naming a registered port, changes nothing.
        assert!(run(
            &mut r,
            &a,
            out_sa::REGISTER,
            0,
            &spec_params(0xB, &[port(&c)])
        )
        .0
        .is_err());
        assert!(run(
            &mut r,
            &c,
            out_sa::REGISTER,
            0,
            &spec_params(0xC, &[port(&b)])
        )
        .0
        .is_err());
        assert_eq!(r.d.registrations.len(), 2);
        // SPEC_I_PT is for REGISTER only.
        let p = spec_params(0xC, &[port(&a)]);
        assert!(
            run(&mut r, &c, out_sa::REGISTER_AND_IGNORE_EXISTING_KEY, 0, &p)
                .0
                .is_err()
        );
    }

    /// `count` distinct initiator ports.
    fn ports(count: usize) -> Vec<TransportId> {
        (0..count)
            .map(|i| TransportId {
                name: format!("iqn.2026-12.test:host{i}"),
                isid: Some(0x4000_0000_0000 | i as u64),
            })
            .collect()
    }

    fn assert_sense(res: Result<PrOutcome, Sense>, code: AdditionalSense) -> Sense {
        let s = res.expect_err("CHECK CONDITION");
        assert_eq!((s.key, s.code), (SenseKey::IllegalRequest, code), "{s:?}");
        s
    }

    #[test]
    fn spec_i_pt_lists_up_to_the_registration_limit() {
        let a = nx("iqn.a", 1, 1);
        let full = ports(MAX_REGISTRATIONS - 1);
        // One too many: INSUFFICIENT REGISTRATION RESOURCES, nothing registered.
        let mut r = PrState::default();
        let mut over = full.clone();
        over.push(TransportId {
            name: "iqn.one-more".into(),
            isid: Some(7),
        });
        let (res, _) = run(&mut r, &a, out_sa::REGISTER, 0, &spec_params(0xA, &over));
        assert_sense(res, asc::INSUFFICIENT_REGISTRATION_RESOURCES);
        assert!(r.d.registrations.is_empty() && r.d.generation == 0);
        // A repeated port at the far end of a long list is still found, with the
        // TransportID list's field pointer, and the list stays all or nothing.
        let mut dup = full.clone();
        let last = dup.len() - 1;
        dup[last] = dup[0].clone();
        let (res, _) = run(&mut r, &a, out_sa::REGISTER, 0, &spec_params(0xA, &dup));
        let s = assert_sense(res, asc::INVALID_FIELD_IN_PARAMETER_LIST);
        assert_eq!(
            s.field,
            Some(FieldPointer::param(28, None)),
            "points at the TransportID list"
        );
        assert!(r.d.registrations.is_empty());
        // So is a list naming the issuer itself.
        let mut me = full[..10].to_vec();
        me.push(TransportId {
            name: a.initiator.clone(),
            isid: Some(a.isid),
        });
        let (res, _) = run(&mut r, &a, out_sa::REGISTER, 0, &spec_params(0xA, &me));
        assert_sense(res, asc::INVALID_FIELD_IN_PARAMETER_LIST);
        assert!(r.d.registrations.is_empty());
        // Exactly the limit: every port registered.
        let (res, _) = run(&mut r, &a, out_sa::REGISTER, 0, &spec_params(0xA, &full));
        assert_eq!(res, Ok(PrOutcome::Good));
        assert_eq!(r.d.registrations.len(), MAX_REGISTRATIONS);
        let last = &full[full.len() - 1];
        assert!(r
            .d
            .find(&nx(&last.name, last.isid.unwrap_or_default(), 1))
            .is_some());
        // Full: B cannot register even alone. With room made (A and three ports
        // unregister), a list naming a registered port at its end is refused, and one of
        // new ports fills the room again.
        let b = nx("iqn.b", 2, 1);
        let fresh = |i: u64| TransportId {
            name: "iqn.fresh".into(),
            isid: Some(i),
        };
        let (res, _) = run(&mut r, &b, out_sa::REGISTER, 0, &spec_params(0xB, &[]));
        assert_sense(res, asc::INSUFFICIENT_REGISTRATION_RESOURCES);
        ok(&mut r, &a, out_sa::REGISTER, 0, 0xA, 0);
        for p in &full[..3] {
            ok(
                &mut r,
                &nx(&p.name, p.isid.unwrap_or_default(), 1),
                out_sa::REGISTER,
                0,
                0xA,
                0,
            );
        }
        let taken = [fresh(1), fresh(2), full[full.len() - 1].clone()];
        let (res, _) = run(&mut r, &b, out_sa::REGISTER, 0, &spec_params(0xB, &taken));
        assert_sense(res, asc::INVALID_FIELD_IN_PARAMETER_LIST);
        assert_eq!(r.d.registrations.len(), MAX_REGISTRATIONS - 4);
        let new = [fresh(1), fresh(2), fresh(3)];
        let (res, _) = run(&mut r, &b, out_sa::REGISTER, 0, &spec_params(0xB, &new));
        assert_eq!(res, Ok(PrOutcome::Good));
        assert_eq!(r.d.registrations.len(), MAX_REGISTRATIONS);
    }

    #[test]
    fn registrations_stop_at_the_limit() {
        let mut r = PrState::default();
        for i in 0..MAX_REGISTRATIONS {
            ok(
                &mut r,
                &nx("iqn.h", i as u64, 1),
                out_sa::REGISTER,
                0,
                0,
                i as u64 + 1,
            );
        }
        let generation = r.d.generation;
        let newcomer = nx("iqn.new", 1, 1);
        for sa in [out_sa::REGISTER, out_sa::REGISTER_AND_IGNORE_EXISTING_KEY] {
            let (res, uas) = run(&mut r, &newcomer, sa, 0, &params(0, 0x99));
            assert_sense(res, asc::INSUFFICIENT_REGISTRATION_RESOURCES);
            assert!(uas.is_empty());
        }
        assert_eq!(r.d.registrations.len(), MAX_REGISTRATIONS);
        assert_eq!(
            r.d.generation, generation,
            "a refused REGISTER changes nothing"
        );
        // Registered nexuses still change their keys, and REGISTER AND MOVE to a new
        // nexus needs room unless it unregisters the source.
        let h0 = nx("iqn.h", 0, 1);
        ok(&mut r, &h0, out_sa::REGISTER, 0, 1, 0x10);
        ok(&mut r, &h0, out_sa::RESERVE, 1, 0x10, 0);
        let tid = TransportId {
            name: "iqn.dest".into(),
            isid: Some(3),
        }
        .encode();
        let mv = |unreg: bool| {
            let mut p = params(0x10, 0xD);
            p[17] = if unreg { 0x02 } else { 0 };
            p[18..20].copy_from_slice(&1u16.to_be_bytes());
            p[20..24].copy_from_slice(&(tid.len() as u32).to_be_bytes());
            p.extend_from_slice(&tid);
            p
        };
        let (res, _) = run(&mut r, &h0, out_sa::REGISTER_AND_MOVE, 1, &mv(false));
        assert_sense(res, asc::INSUFFICIENT_REGISTRATION_RESOURCES);
        assert!(r.d.is_holder(&h0));
        let (res, _) = run(&mut r, &h0, out_sa::REGISTER_AND_MOVE, 1, &mv(true));
        assert_eq!(res, Ok(PrOutcome::Good));
        assert!(r.d.is_holder(&nx("iqn.dest", 3, 1)));
        assert_eq!(r.d.registrations.len(), MAX_REGISTRATIONS);
        // Unregistering makes room again.
        ok(&mut r, &nx("iqn.h", 5, 1), out_sa::REGISTER, 0, 6, 0);
        ok(&mut r, &newcomer, out_sa::REGISTER, 0, 0, 0x99);
    }

    #[test]
    fn parameter_lists_beyond_the_limit_take_no_data() {
        assert_eq!(data_out_len(24), 24);
        assert_eq!(data_out_len(MAX_PARAM_LEN), MAX_PARAM_LEN);
        assert_eq!(data_out_len(MAX_PARAM_LEN + 1), 0);
        assert_eq!(data_out_len(u32::MAX), 0);
        // The longest valid list fits: the limit's worth of the longest TransportIDs.
        let longest = TransportId {
            name: "n".repeat(proto::MAX_ISCSI_NAME_LEN),
            isid: Some(1),
        };
        assert_eq!(longest.encode().len(), proto::MAX_TRANSPORT_ID_LEN);
        let p = spec_params(0xA, &vec![longest; MAX_REGISTRATIONS]);
        assert_eq!(p.len(), MAX_PARAM_LEN as usize);
    }

    #[test]
    fn preempt_moves_the_reservation_and_reports() {
        let mut r = PrState::default();
        let a = nx("iqn.a", 1, 1);
        let b = nx("iqn.b", 2, 1);
        ok(&mut r, &a, out_sa::REGISTER, 0, 0, 0xA);
        ok(&mut r, &b, out_sa::REGISTER, 0, 0, 0xB);
        ok(&mut r, &a, out_sa::RESERVE, 5, 0xA, 0);
        assert!(r.conflicts(&nx("iqn.c", 3, 1), Access::Write));
        conflict(&mut r, &b, out_sa::PREEMPT, 5, 0xB, 0xC);
        let uas = ok(&mut r, &b, out_sa::PREEMPT_AND_ABORT, 5, 0xB, 0xA);
        assert_eq!(uas, vec![(a.clone(), REGISTRATIONS_PREEMPTED)]);
        assert!(r.d.is_holder(&b));
        assert!(r.conflicts(&a, Access::Write));
        ok(&mut r, &a, out_sa::REGISTER, 0, 0, 0xA);
        let uas = ok(&mut r, &b, out_sa::CLEAR, 0, 0xB, 0);
        assert_eq!(uas, vec![(a.clone(), asc::RESERVATIONS_PREEMPTED)]);
        assert!(!r.conflicts(&a, Access::Write));
        assert!(!r.is_active());
    }

    #[test]
    fn preempt_and_abort_names_the_preempted_nexuses() {
        let mut r = PrState::default();
        let a = nx("iqn.a", 1, 1);
        let b = nx("iqn.b", 2, 1);
        let all_tg_pt = |key, sa_key| {
            let mut p = params(key, sa_key);
            p[20] = 0x04;
            p
        };
        let preempt_and_abort = |r: &mut PrState, sa_key| {
            let (res, fx) = run_fx(r, &b, out_sa::PREEMPT_AND_ABORT, 5, &params(0xB, sa_key));
            assert_eq!(res, Ok(PrOutcome::Good));
            fx.abort.expect("preempted nexuses")
        };
        ok(&mut r, &a, out_sa::REGISTER, 0, 0, 0xA);
        ok(&mut r, &b, out_sa::REGISTER, 0, 0, 0xB);
        ok(&mut r, &a, out_sa::RESERVE, 5, 0xA, 0);
        // PREEMPT names nobody to abort, nor does a refused PREEMPT AND ABORT.
        let (res, fx) = run_fx(&mut r, &b, out_sa::PREEMPT, 5, &params(0xB, 0xA));
        assert_eq!(res, Ok(PrOutcome::Good));
        assert!(fx.abort.is_none());
        ok(&mut r, &a, out_sa::REGISTER, 0, 0, 0xA);
        let (res, fx) = run_fx(&mut r, &b, out_sa::PREEMPT_AND_ABORT, 5, &params(0xB, 0xC));
        assert_eq!(res, Ok(PrOutcome::Conflict));
        assert!(fx.abort.is_none());
        // A registered through port 1: that nexus only.
        let p = preempt_and_abort(&mut r, 0xA);
        assert!(p.contains(&a));
        assert!(!p.contains(&b), "never the issuer");
        assert!(!p.contains(&nx("iqn.a", 1, 2)), "another target port");
        assert!(!p.contains(&nx("iqn.a", 3, 1)), "another ISID");
        assert!(!p.contains(&nx("iqn.c", 1, 1)));
        // An ALL_TG_PT registration: A's nexuses through every target port.
        assert_eq!(
            run(&mut r, &a, out_sa::REGISTER, 0, &all_tg_pt(0, 0xA)).0,
            Ok(PrOutcome::Good)
        );
        let p = preempt_and_abort(&mut r, 0xA);
        assert!(p.contains(&a) && p.contains(&nx("iqn.a", 1, 2)) && !p.contains(&b));
        // A preempted registration that also covers the issuer's nexus (B's port through
        // port 2 registered ALL_TG_PT): the issuer's tasks are still not aborted.
        let b2 = nx("iqn.b", 2, 2);
        assert_eq!(
            run(&mut r, &b2, out_sa::REGISTER, 0, &all_tg_pt(0, 0xD)).0,
            Ok(PrOutcome::Good)
        );
        let p = preempt_and_abort(&mut r, 0xD);
        assert!(p.contains(&b2) && !p.contains(&b));
    }

    #[test]
    fn all_tg_pt_covers_every_port() {
        let mut r = PrState::default();
        let a1 = nx("iqn.a", 1, 1);
        let a2 = nx("iqn.a", 1, 2);
        let mut p = params(0, 0xA);
        p[20] = 0x04;
        assert_eq!(
            run(&mut r, &a1, out_sa::REGISTER, 0, &p).0,
            Ok(PrOutcome::Good)
        );
        assert_eq!(r.d.find(&a2), Some(0));
        ok(&mut r, &a2, out_sa::RESERVE, 7, 0xA, 0);
        assert!(!r.conflicts(&a1, Access::Write));
        assert!(
            r.conflicts(&nx("iqn.a", 9, 1), Access::Write),
            "other ISID = other port"
        );
        let full = r.pr_in(u16::from(in_sa::READ_FULL_STATUS));
        assert_eq!(full[8 + 12], 0x03, "ALL_TG_PT + R_HOLDER");
        let caps = r.pr_in(u16::from(in_sa::REPORT_CAPABILITIES));
        assert_eq!(caps[2] & 0x0C, 0x0C, "ATP_C=1, SIP_C=1");
    }

    #[test]
    fn register_and_move_hands_over() {
        let mut r = PrState::default();
        let a = nx("iqn.a", 1, 1);
        ok(&mut r, &a, out_sa::REGISTER, 0, 0, 0xA);
        ok(&mut r, &a, out_sa::RESERVE, 1, 0xA, 0);
        let tid = TransportId {
            name: "iqn.b".into(),
            isid: Some(2),
        }
        .encode();
        let mut p = params(0xA, 0xB);
        p[17] = 0x02;
        p[18..20].copy_from_slice(&1u16.to_be_bytes());
        p[20..24].copy_from_slice(&(tid.len() as u32).to_be_bytes());
        p.extend_from_slice(&tid);
        assert_eq!(
            run(&mut r, &a, out_sa::REGISTER_AND_MOVE, 1, &p).0,
            Ok(PrOutcome::Good)
        );
        assert!(r.d.is_holder(&nx("iqn.b", 2, 1)));
        assert!(r.d.find(&a).is_none(), "UNREG dropped the source");
        let res = r.pr_in(u16::from(in_sa::READ_RESERVATION));
        assert_eq!(&res[8..16], &0xBu64.to_be_bytes());
    }

    #[test]
    fn state_file_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.json");
        let st = Data {
            generation: 4,
            registrations: vec![Registration {
                initiator: "iqn.a".into(),
                isid: 1,
                tpgt: None,
                key: 9,
                origin_tpgt: 1,
                holder: true,
            }],
            reservation: Some(5),
            aptpl: true,
        };
        save(&path, &st).unwrap();
        let back = load(&path).unwrap();
        assert_eq!(back.registrations, st.registrations);
        assert_eq!(back.res_type(), Some(PrType::WriteExclusiveRegistrantsOnly));
        std::fs::write(&path, b"{not json").unwrap();
        assert!(load(&path).is_none());
    }
}
