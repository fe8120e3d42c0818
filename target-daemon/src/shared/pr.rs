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

use super::objects::{NotifyFn, ObjError, VersionedObjects, WatchHandle};
use crate::scsi::pr::{
    PrData, PrListener, PrNotice, PrStore, PrVersion, SharedPr, SharedPrError, VersionedPr, ABSENT,
};

type Listeners = Arc<Mutex<Vec<Weak<dyn PrListener>>>>;

/// The reservation store of one gateway of an HA group.
pub struct SharedPrStore {
    objects: Arc<dyn VersionedObjects>,
    group: String,
    instance: uuid::Uuid,
    listeners: Listeners,
    /// One watch per LUN identity this gateway presents (kept while the store lives).
    watches: Mutex<HashMap<uuid::Uuid, Box<dyn WatchHandle>>>,
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
            notify_timeout: timeout,
        })
    }

    fn name(&self, identity: uuid::Uuid) -> String {
        super::names::pr(&self.group, identity)
    }
}

/// Decodes a stored state; an empty object (created by a watch before any save) is none.
fn decode(name: &str, data: &[u8]) -> Result<PrData, SharedPrError> {
    if data.is_empty() {
        return Ok(PrData::default());
    }
    serde_json::from_slice(data).map_err(|e| SharedPrError::Corrupt(format!("{name}: {e}")))
}

/// A notice carrying just the latest stored state (after a watch break), from no
/// instance (every target installs it if newer).
fn resync_notice(objects: &dyn VersionedObjects, name: &str) -> Result<PrNotice, SharedPrError> {
    let (data, version) = match objects.read(name).map_err(obj_error)? {
        None => (PrData::default(), ABSENT),
        Some(v) => (decode(name, &v.data)?, v.version),
    };
    Ok(PrNotice {
        origin: uuid::Uuid::nil(),
        target: String::new(),
        version,
        data,
        uas: Vec::new(),
        abort: None,
    })
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
        if watches.contains_key(&identity) {
            return Ok(());
        }
        let name = self.name(identity);
        let listeners = self.listeners.clone();
        let (objects, object) = (self.objects.clone(), name.clone());
        let on_notify: NotifyFn = Arc::new(move |payload: &[u8]| {
            let notice: PrNotice = if payload.is_empty() {
                // The watch was re-established: notices may have been missed. Install the
                // latest state (unit attentions and aborts of missed changes are lost; the
                // state, which I/O is checked against, is not).
                match resync_notice(objects.as_ref(), &object) {
                    Ok(n) => n,
                    Err(e) => {
                        tracing::error!(%identity, error = format!("{e:#}"), "cannot reload the shared reservation state after a watch break");
                        return;
                    }
                }
            } else {
                match serde_json::from_slice(payload) {
                    Ok(n) => n,
                    Err(e) => {
                        tracing::error!(%identity, error = %e, "undecodable reservation change notice ignored");
                        return;
                    }
                }
            };
            let live: Vec<Arc<dyn PrListener>> =
                listeners.lock().iter().filter_map(Weak::upgrade).collect();
            for l in live {
                l.pr_changed(identity, &notice);
            }
        });
        let handle = self.objects.watch(&name, on_notify).map_err(obj_error)?;
        watches.insert(identity, handle);
        Ok(())
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
        let report = self
            .objects
            .notify(&name, &payload, self.notify_timeout)
            .with_context(|| format!("notifying the gateways of {name}"))?;
        if report.timed_out > 0 {
            tracing::warn!(%identity, version = notice.version, acked = report.acked, timed_out = report.timed_out,
                "gateways did not acknowledge a reservation change (dead or frozen: they reload when back)");
        }
        Ok(())
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
