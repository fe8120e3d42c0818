//! [`VersionedObjects`] over RADOS (`storage_core::ceph`): whole-object reads with the
//! object's version, `write_full` guarded by `assert_version` (or an exclusive create),
//! `rados_notify2` and `rados_watch2`.
//!
//! A watch that breaks (lost connection, OSD restart) is re-established in the background
//! and its callback is then called with an empty payload: "you may have missed notifies,
//! reload from the object". A blocklisted client cannot watch again: the HA coordinator
//! reconnects with a fresh client and builds new stores.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use storage_core::ceph::{CephError, Expect, IoCtx, Watch};

use super::objects::{NotifyFn, NotifyReport, ObjError, Versioned, VersionedObjects, WatchHandle};

/// How long a broken watch waits between attempts to watch again.
const REWATCH_PAUSE: Duration = Duration::from_secs(1);

/// The shared objects of a group in one RADOS pool (one gateway's client).
#[derive(Clone, Debug)]
pub struct RadosObjects {
    io: IoCtx,
}

impl RadosObjects {
    /// Objects in the pool `io` is opened on.
    pub fn new(io: IoCtx) -> Arc<Self> {
        Arc::new(Self { io })
    }
}

fn obj_error(e: CephError) -> ObjError {
    match e {
        CephError::Conflict { context } => ObjError::Conflict(context),
        e => ObjError::Io(anyhow::Error::new(e)),
    }
}

/// A watch that re-establishes itself: the current librados watch, replaced by the
/// re-watch thread after an error; dropping it ends both.
struct RadosWatch {
    slot: Arc<WatchSlot>,
}

struct WatchSlot {
    watch: Mutex<Option<Watch>>,
    /// Set when the handle is dropped: the re-watch thread stops.
    closed: std::sync::atomic::AtomicBool,
}

impl WatchHandle for RadosWatch {}

impl Drop for RadosWatch {
    fn drop(&mut self) {
        self.slot
            .closed
            .store(true, std::sync::atomic::Ordering::Release);
        // Take it out first: unwatching waits for queued callbacks, which must not find
        // the slot locked.
        let w = self.slot.watch.lock().take();
        drop(w);
    }
}

/// Register a librados watch on `name` whose errors start a re-watch thread.
fn start_watch(
    io: &IoCtx,
    name: &str,
    on_notify: NotifyFn,
    slot: &Arc<WatchSlot>,
) -> Result<Watch, CephError> {
    let cb = on_notify.clone();
    let (io2, name2, weak) = (io.clone(), name.to_string(), Arc::downgrade(slot));
    io.watch(
        name,
        move |n| {
            cb(&n.payload);
            Vec::new()
        },
        move |e| {
            tracing::warn!(object = %name2, error = %e, "watch broken; watching again");
            let (io, name, weak, on_notify) =
                (io2.clone(), name2.clone(), weak.clone(), on_notify.clone());
            // Not on the librados callback thread: re-watching there could wait for it.
            let spawned = std::thread::Builder::new()
                .name("lunar-rewatch".into())
                .spawn(move || rewatch(&io, &name, &weak, on_notify));
            if let Err(e) = spawned {
                tracing::error!(object = %name2, error = %e, "cannot start the re-watch thread");
            }
        },
    )
}

/// Watch `name` again until it works or the handle is gone, then tell the consumer to
/// reload (empty payload): notifies sent while the watch was down were missed.
fn rewatch(io: &IoCtx, name: &str, weak: &std::sync::Weak<WatchSlot>, on_notify: NotifyFn) {
    loop {
        let Some(slot) = weak.upgrade() else { return };
        if slot.closed.load(std::sync::atomic::Ordering::Acquire) {
            return;
        }
        let old = slot.watch.lock().take();
        drop(old);
        match start_watch(io, name, on_notify.clone(), &slot) {
            Ok(w) => {
                *slot.watch.lock() = Some(w);
                tracing::info!(object = %name, "watching again; reloading");
                on_notify(&[]);
                return;
            }
            Err(e) if e.is_blocklisted() => {
                tracing::error!(object = %name, error = %e, "blocklisted: no more notifies on this client");
                return;
            }
            Err(e) => {
                tracing::warn!(object = %name, error = %e, "cannot watch again yet");
                drop(slot);
                std::thread::sleep(REWATCH_PAUSE);
            }
        }
    }
}

impl VersionedObjects for RadosObjects {
    fn read(&self, name: &str) -> Result<Option<Versioned>, ObjError> {
        let o = self.io.read(name).map_err(obj_error)?;
        Ok(o.map(|d| Versioned {
            data: d.data,
            version: d.version,
        }))
    }

    fn write(&self, name: &str, data: &[u8], expected: Option<u64>) -> Result<u64, ObjError> {
        let expect = expected.map_or(Expect::Absent, Expect::Version);
        self.io.write_full(name, data, expect).map_err(obj_error)
    }

    fn notify(
        &self,
        name: &str,
        payload: &[u8],
        timeout: Duration,
    ) -> Result<NotifyReport, ObjError> {
        let r = self.io.notify(name, payload, timeout).map_err(obj_error)?;
        Ok(NotifyReport {
            acked: r.acks.len(),
            timed_out: r.timeouts.len(),
        })
    }

    fn watch(&self, name: &str, on_notify: NotifyFn) -> Result<Box<dyn WatchHandle>, ObjError> {
        // RADOS watches need the object: create it empty if nobody saved it yet (an empty
        // object reads as "nothing saved" in every store).
        match self.io.write_full(name, &[], Expect::Absent) {
            Ok(_) | Err(CephError::Conflict { .. }) => {}
            Err(e) => return Err(obj_error(e)),
        }
        let slot = Arc::new(WatchSlot {
            watch: Mutex::new(None),
            closed: std::sync::atomic::AtomicBool::new(false),
        });
        let w = start_watch(&self.io, name, on_notify, &slot).map_err(obj_error)?;
        *slot.watch.lock() = Some(w);
        Ok(Box::new(RadosWatch { slot }))
    }
}
