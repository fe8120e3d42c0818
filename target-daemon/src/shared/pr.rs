//! Persistent reservations shared by the gateways of an HA group: one object per LUN
//! identity (`lunar.<group>.pr.<identity>`, the JSON of [`PrData`], the APTPL file's
//! format), saved by compare-and-swap on its version, and a notify carrying the saved
//! change ([`PrNotice`]) that every gateway acts on before it acknowledges.
//!
//! The device server does the read-decide-save loop (`scsi::pr::decide_shared`); this is
//! the store under it. One per gateway process, shared by all its targets.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use anyhow::Context;
use parking_lot::Mutex;

use super::objects::{Ack, DeferredNotifyFn, ObjError, VersionedObjects, WatchHandle};
use crate::scsi::pr::{
    NoticeDone, PrData, PrListener, PrNotice, PrStore, PrVersion, SharedPr, SharedPrError,
    VersionedPr, ABSENT,
};

type Listeners = Arc<Mutex<Vec<Weak<dyn PrListener>>>>;

/// Per LUN identity: how many LUNs of this gateway present it, and its watch.
type Watches = HashMap<uuid::Uuid, (usize, Box<dyn WatchHandle>)>;

/// Tells which clients of the cluster are live gateways of the group: a watcher of such a
/// client that did not acknowledge a change must hold its GOOD back; any other watcher
/// (a dead gateway's watch the OSD has not timed out yet, a fenced gateway, a client that
/// is no gateway) must not. See docs/decisions/0013.
pub trait LiveGateways: Send + Sync {
    /// The gateways' heartbeats now. Blocking.
    fn heartbeats(&self) -> anyhow::Result<Heartbeats>;
}

/// A snapshot of the gateways' heartbeats (the registry's records).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Heartbeats {
    /// Per gateway client (RADOS instance id): its last heartbeat (any counter that
    /// grows with every heartbeat; compared only with the same gateway's earlier one, so
    /// the gateways' clocks need not agree).
    pub beats: HashMap<u64, u64>,
    /// The clients of the gateways this one believes own the pools (one per pool, or
    /// fewer: pools may share an owner): live whatever their heartbeat, since an owner
    /// serves I/O until it loses the lease.
    pub owners: Vec<u64>,
}

impl Heartbeats {
    /// The clients among `late` that are live gateways: the owner, and every gateway
    /// that heartbeated since `before` was taken (a gateway heartbeats every 5 s; the
    /// notify rounds in between last longer than that).
    pub fn live_since(&self, before: &Heartbeats, late: &[u64]) -> Vec<u64> {
        late.iter()
            .copied()
            .filter(|c| {
                *c != 0
                    && (self.owners.contains(c)
                        || self
                            .beats
                            .get(c)
                            .is_some_and(|now| before.beats.get(c).is_none_or(|then| now > then)))
            })
            .collect()
    }
}

/// How many more times a change is announced when a live gateway did not acknowledge it
/// in time (a slow, not a dead, gateway) before the PR OUT gives up on it.
const RENOTIFY_ROUNDS: u32 = 2;

/// The reservation store of one gateway of an HA group.
pub struct SharedPrStore {
    objects: Arc<dyn VersionedObjects>,
    group: String,
    instance: uuid::Uuid,
    listeners: Listeners,
    /// One watch per LUN identity this gateway presents, with the number of LUNs
    /// presenting it; the watch ends with the last of them.
    watches: Mutex<Watches>,
    /// Per identity, the newest version this store delivered or published: the periodic
    /// check reloads an identity whose object moved past it.
    seen: Arc<Mutex<HashMap<uuid::Uuid, PrVersion>>>,
    /// Who the live gateways are (`None`: no watcher that timed out holds GOOD back).
    liveness: Mutex<Option<Arc<dyn LiveGateways>>>,
    notify_timeout: Duration,
}

impl std::fmt::Debug for SharedPrStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedPrStore")
            .field("group", &self.group)
            .field("instance", &self.instance)
            .finish_non_exhaustive()
    }
}

impl SharedPrStore {
    /// The store of group `group` over `objects` (the group's RADOS pool).
    pub fn new(objects: Arc<dyn VersionedObjects>, group: &str) -> Arc<Self> {
        Self::with_notify_timeout(objects, group, super::NOTIFY_TIMEOUT)
    }

    /// Like [`SharedPrStore::new`], waiting at most `timeout` for the other gateways'
    /// acknowledgements.
    pub fn with_notify_timeout(
        objects: Arc<dyn VersionedObjects>,
        group: &str,
        timeout: Duration,
    ) -> Arc<Self> {
        Arc::new(Self {
            objects,
            group: group.to_string(),
            instance: uuid::Uuid::new_v4(),
            listeners: Default::default(),
            watches: Mutex::new(HashMap::new()),
            seen: Default::default(),
            liveness: Mutex::new(None),
            notify_timeout: timeout,
        })
    }

    fn name(&self, identity: uuid::Uuid) -> String {
        super::names::pr(&self.group, identity)
    }

    /// Who the live gateways are, for deciding whether a watcher that did not
    /// acknowledge a change holds its GOOD back (the gateway registry, on a gateway).
    pub fn set_liveness(&self, live: Arc<dyn LiveGateways>) {
        *self.liveness.lock() = Some(live);
    }

    /// The identities watched now.
    pub fn watched(&self) -> Vec<uuid::Uuid> {
        self.watches.lock().keys().copied().collect()
    }

    /// Read the latest state of `identity` and hand it to every listener as a reload
    /// (notices may have been missed). Blocking.
    pub fn reload(&self, identity: uuid::Uuid) {
        reload(
            self.objects.as_ref(),
            &self.name(identity),
            identity,
            &self.listeners,
            &self.seen,
        );
    }

    /// [`reload`](Self::reload) every watched identity: a gateway taking the pool over
    /// does this before it serves I/O, so its reservation checks use the latest state
    /// even if a change's notice never came (its issuer died between save and notify).
    pub fn reload_all(&self) {
        for identity in self.watched() {
            self.reload(identity);
        }
    }

    /// Reload the identities whose object's version moved past the newest this store
    /// heard of (a notice was missed). One small read per watched LUN. Blocking.
    pub fn check_versions(&self) {
        for identity in self.watched() {
            let name = self.name(identity);
            let version = match self.objects.read(&name) {
                Ok(v) => v.map_or(ABSENT, |v| v.version),
                Err(e) => {
                    tracing::warn!(%identity, error = %e, "periodic reservation version check failed");
                    continue;
                }
            };
            let known = self.seen.lock().get(&identity).copied().unwrap_or(ABSENT);
            if version > known {
                tracing::info!(%identity, version, known, "reservation state moved without a notice; reloading");
                self.reload(identity);
            }
        }
    }

    /// Run [`check_versions`](Self::check_versions) every `every` on a thread of its own,
    /// as long as the store lives: the backstop for notices missed without a watch error.
    pub fn start_version_checks(self: &Arc<Self>, every: Duration) -> std::io::Result<()> {
        let weak = Arc::downgrade(self);
        std::thread::Builder::new()
            .name("lunar-pr-check".into())
            .spawn(move || loop {
                std::thread::sleep(every);
                let _busy = super::threads::busy();
                let Some(store) = weak.upgrade() else { return };
                store.check_versions();
            })
            .map(drop)
    }

    /// The gateways' heartbeats, if this store knows where to read them; `Err` when they
    /// cannot be read (then every gateway counts as live).
    fn heartbeats(&self) -> Option<anyhow::Result<Heartbeats>> {
        let live = self.liveness.lock().clone();
        live.map(|l| l.heartbeats())
    }
}

/// Read the latest state of `identity` (object `name`) and hand it to the listeners as a
/// reload, or tell them it is unreadable.
fn reload(
    objects: &dyn VersionedObjects,
    name: &str,
    identity: uuid::Uuid,
    listeners: &Listeners,
    seen: &Mutex<HashMap<uuid::Uuid, PrVersion>>,
) {
    let latest = objects.read(name).map_err(obj_error).and_then(|o| match o {
        None => Ok(VersionedPr::default()),
        Some(v) => Ok(VersionedPr {
            data: decode(name, &v.data)?,
            version: v.version,
        }),
    });
    let live: Vec<Arc<dyn PrListener>> =
        listeners.lock().iter().filter_map(Weak::upgrade).collect();
    match latest {
        Ok(v) => {
            bump_seen(seen, identity, v.version);
            for l in live {
                l.pr_reloaded(identity, &v);
            }
        }
        Err(e) => {
            tracing::error!(%identity, error = format!("{e:#}"), "cannot reload the shared reservation state");
            let why = format!("{e:#}");
            for l in live {
                l.pr_unreadable(identity, &why);
            }
        }
    }
}

fn bump_seen(seen: &Mutex<HashMap<uuid::Uuid, PrVersion>>, identity: uuid::Uuid, v: PrVersion) {
    let mut s = seen.lock();
    let e = s.entry(identity).or_insert(ABSENT);
    *e = (*e).max(v);
}

/// Decodes a stored state; an empty object (created by a watch before any save) is none.
fn decode(name: &str, data: &[u8]) -> Result<PrData, SharedPrError> {
    if data.is_empty() {
        return Ok(PrData::default());
    }
    serde_json::from_slice(data).map_err(|e| SharedPrError::Corrupt(format!("{name}: {e}")))
}

fn obj_error(e: ObjError) -> SharedPrError {
    match e {
        ObjError::Conflict(_) => SharedPrError::Conflict,
        ObjError::Io(e) => SharedPrError::Unavailable(e),
    }
}

impl PrStore for SharedPrStore {
    fn load(&self, identity: uuid::Uuid) -> anyhow::Result<Option<PrData>> {
        let v = self.load_latest(identity)?;
        Ok((v.data != PrData::default()).then_some(v.data))
    }

    fn save(&self, identity: uuid::Uuid, _: Option<&PrData>) -> anyhow::Result<()> {
        anyhow::bail!(
            "the shared reservation state of {identity} is only saved by compare-and-swap"
        )
    }

    fn shared(&self) -> Option<&dyn SharedPr> {
        Some(self)
    }
}

impl SharedPr for SharedPrStore {
    fn watch(&self, identity: uuid::Uuid) -> Result<(), SharedPrError> {
        let mut watches = self.watches.lock();
        if let Some((count, _)) = watches.get_mut(&identity) {
            *count += 1;
            return Ok(());
        }
        let name = self.name(identity);
        let listeners = self.listeners.clone();
        let seen = self.seen.clone();
        let (objects, object) = (self.objects.clone(), name.clone());
        let on_notify: DeferredNotifyFn = Arc::new(move |payload: &[u8], ack: Ack| {
            if payload.is_empty() {
                // The watch was re-established: notices may have been missed. The
                // listeners install the latest state and derive the unit attentions of
                // what they missed.
                drop(ack);
                reload(objects.as_ref(), &object, identity, &listeners, &seen);
                return;
            }
            let notice: PrNotice = match serde_json::from_slice(payload) {
                Ok(n) => n,
                Err(e) => {
                    tracing::error!(%identity, error = %e, "undecodable reservation change notice ignored");
                    return;
                }
            };
            bump_seen(&seen, identity, notice.version);
            let done = NoticeDone::new(ack);
            let live: Vec<Arc<dyn PrListener>> =
                listeners.lock().iter().filter_map(Weak::upgrade).collect();
            for l in live {
                l.pr_changed(identity, &notice, &done);
            }
        });
        let handle = self
            .objects
            .watch_deferred(&name, on_notify)
            .map_err(obj_error)?;
        watches.insert(identity, (1, handle));
        Ok(())
    }

    fn unwatch(&self, identity: uuid::Uuid) {
        let gone = {
            let mut watches = self.watches.lock();
            match watches.get_mut(&identity) {
                Some((count, _)) if *count > 1 => {
                    *count -= 1;
                    None
                }
                Some(_) => watches.remove(&identity).map(|(_, h)| h),
                None => None,
            }
        };
        self.seen.lock().remove(&identity);
        if let Some(handle) = gone {
            // Unwatching waits for queued notices (a RADOS round trip): not on the
            // caller's thread, which may be an async worker or a notice's own.
            let spawned = super::threads::spawn("lunar-pr-unwatch", move || drop(handle));
            if let Err(e) = spawned {
                tracing::warn!(%identity, error = %e, "cannot start the unwatch thread; watch kept");
            }
        }
    }

    fn load_latest(&self, identity: uuid::Uuid) -> Result<VersionedPr, SharedPrError> {
        let name = self.name(identity);
        match self.objects.read(&name).map_err(obj_error)? {
            None => Ok(VersionedPr {
                data: PrData::default(),
                version: ABSENT,
            }),
            Some(v) => Ok(VersionedPr {
                data: decode(&name, &v.data)?,
                version: v.version,
            }),
        }
    }

    fn save_if(
        &self,
        identity: uuid::Uuid,
        data: &PrData,
        expected: PrVersion,
    ) -> Result<PrVersion, SharedPrError> {
        let name = self.name(identity);
        let body = serde_json::to_vec(data)
            .context("encoding the reservation state")
            .map_err(SharedPrError::Unavailable)?;
        let expected = (expected != ABSENT).then_some(expected);
        self.objects
            .write(&name, &body, expected)
            .map_err(obj_error)
    }

    fn publish(&self, identity: uuid::Uuid, notice: &PrNotice) -> anyhow::Result<()> {
        let name = self.name(identity);
        let payload = serde_json::to_vec(notice).context("encoding the change notice")?;
        bump_seen(&self.seen, identity, notice.version);
        // Who heartbeated before the notify: a watcher that then times out is a live
        // gateway's only if its gateway heartbeats again meanwhile (or owns the pool).
        let before = self.heartbeats();
        for round in 0..=RENOTIFY_ROUNDS {
            let report = self
                .objects
                .notify(&name, &payload, self.notify_timeout)
                .with_context(|| format!("notifying the gateways of {name}"))?;
            if report.timed_out_clients.is_empty() {
                return Ok(());
            }
            let late = &report.timed_out_clients;
            let live = match (&before, &self.heartbeats()) {
                (None, _) | (_, None) => Vec::new(),
                (Some(Ok(before)), Some(Ok(now))) => now.live_since(before, late),
                (Some(Err(e)), _) | (_, Some(Err(e))) => {
                    // Nobody can tell who is alive: every late watcher holds GOOD back.
                    tracing::warn!(
                        error = format!("{e:#}"),
                        "cannot read the gateways' heartbeats"
                    );
                    late.clone()
                }
            };
            if live.is_empty() {
                tracing::warn!(%identity, version = notice.version, acked = report.acked, timed_out = ?report.timed_out_clients,
                    "watchers of no live gateway did not acknowledge a reservation change (dead: they reload when back)");
                return Ok(());
            }
            // A live gateway did not confirm: it may serve I/O on the old state. Tell
            // everyone again (a repeated notice changes nothing where it was applied).
            tracing::warn!(%identity, version = notice.version, round, live = ?live,
                "a live gateway did not acknowledge a reservation change; announcing it again");
        }
        anyhow::bail!(
            "a live gateway did not acknowledge the change of {name} after {} notifies",
            RENOTIFY_ROUNDS + 1
        )
    }

    fn listen(&self, listener: Weak<dyn PrListener>) {
        let mut l = self.listeners.lock();
        l.retain(|w| w.strong_count() > 0);
        l.push(listener);
    }

    fn instance(&self) -> uuid::Uuid {
        self.instance
    }
}

#[cfg(test)]
mod tests {
    use super::Heartbeats;

    /// A late watcher is a live gateway's when its gateway heartbeated since the notify
    /// began, or owns the pool; one whose heartbeat stood still (dead) or that is in no
    /// record (no gateway) is not.
    #[test]
    fn only_gateways_that_heartbeat_or_own_the_pool_are_live() {
        let before = Heartbeats {
            beats: [(1, 100), (2, 100), (3, 100)].into_iter().collect(),
            owners: Vec::new(),
        };
        let now = Heartbeats {
            beats: [(1, 105), (2, 100), (3, 100), (4, 7)].into_iter().collect(),
            owners: vec![3],
        };
        assert_eq!(now.live_since(&before, &[1, 2, 3, 4, 5, 0]), vec![1, 3, 4]);
        // Two pools owned by two gateways, neither heartbeating in between: both live.
        let two = Heartbeats {
            owners: vec![2, 3],
            ..now.clone()
        };
        assert_eq!(two.live_since(&before, &[2, 3, 5]), vec![2, 3]);
    }
}
