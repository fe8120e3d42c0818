//! The versioned-object seam the shared stores are written against: whole-object reads
//! that return the object's version, writes that succeed only if the version did not move
//! (compare-and-swap), and watch/notify. RADOS provides exactly that
//! (`rados_write_op_assert_version`, `rados_watch2`/`rados_notify2`, see
//! [`super::rados`] behind the `ceph` feature); [`MemCluster`] provides it in memory so the
//! retry and reload logic is tested without a cluster.
//!
//! Everything here is blocking: callers run it on blocking threads.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

/// An object's content with its version (versions only grow; never 0 for an object
/// that exists).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Versioned {
    /// The whole object.
    pub data: Vec<u8>,
    /// Its version.
    pub version: u64,
}

/// Why an object operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ObjError {
    /// The object's version is not the expected one (or it exists when it was expected
    /// not to, or is gone when expected to exist): someone else wrote first.
    #[error("object {0} changed meanwhile (version conflict)")]
    Conflict(String),
    /// The cluster refused or could not be reached.
    #[error("{0:#}")]
    Io(#[from] anyhow::Error),
}

/// Called with the payload of every notify on a watched object, on a store thread; the
/// notifier is acknowledged when it returns.
pub type NotifyFn = Arc<dyn Fn(&[u8]) + Send + Sync>;

/// Called with the payload of every notify on a watched object, on a store thread, with
/// the [`Ack`] the notifier waits for: sent when the last holder drops it, so the work a
/// notice starts can run elsewhere (and the next notice be delivered) while the notifier
/// still waits for it to finish.
pub type DeferredNotifyFn = Arc<dyn Fn(&[u8], Ack) + Send + Sync>;

/// A notify's pending acknowledgement: sent when dropped (clones share it: sent when the
/// last clone goes).
#[derive(Clone)]
pub struct Ack(#[allow(dead_code)] Arc<AckOnDrop>);

/// Sends the acknowledgement when dropped.
struct AckOnDrop(Option<Box<dyn FnOnce() + Send + Sync>>);

impl Drop for AckOnDrop {
    fn drop(&mut self) {
        if let Some(send) = self.0.take() {
            send();
        }
    }
}

impl Ack {
    /// An acknowledgement that runs `send` when the last clone is dropped.
    pub fn new(send: impl FnOnce() + Send + Sync + 'static) -> Self {
        Self(Arc::new(AckOnDrop(Some(Box::new(send)))))
    }
}

impl std::fmt::Debug for Ack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Ack")
    }
}

/// What a notify found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NotifyReport {
    /// Watchers that acknowledged.
    pub acked: usize,
    /// Watchers that did not within the timeout (a dead or frozen gateway).
    pub timed_out: usize,
    /// The clients ([`VersionedObjects::instance`]) of the watchers that timed out.
    pub timed_out_clients: Vec<u64>,
}

/// Keeps a watch alive; dropping it ends the watch.
pub trait WatchHandle: Send + Sync {}

/// Versioned whole objects with watch/notify: RADOS, or [`MemClient`] in tests.
pub trait VersionedObjects: Send + Sync {
    /// The object `name` and its version; `None` when it does not exist.
    fn read(&self, name: &str) -> Result<Option<Versioned>, ObjError>;

    /// Replace the whole object if its version is `expected` (`None`: create it, it must
    /// not exist); returns the new version. [`ObjError::Conflict`] otherwise, with nothing
    /// written.
    fn write(&self, name: &str, data: &[u8], expected: Option<u64>) -> Result<u64, ObjError>;

    /// Send `payload` to every watcher of `name` (this client's own included) and wait
    /// until each acknowledged, or `timeout` passed.
    fn notify(
        &self,
        name: &str,
        payload: &[u8],
        timeout: Duration,
    ) -> Result<NotifyReport, ObjError>;

    /// Call `on_notify` for every notify on `name` until the handle is dropped; the
    /// notifier is acknowledged when the [`Ack`] is dropped. The object need not exist yet
    /// (it is created empty if needed, as RADOS requires).
    fn watch_deferred(
        &self,
        name: &str,
        on_notify: DeferredNotifyFn,
    ) -> Result<Box<dyn WatchHandle>, ObjError>;

    /// [`watch_deferred`](Self::watch_deferred), acknowledging when `on_notify` returns.
    fn watch(&self, name: &str, on_notify: NotifyFn) -> Result<Box<dyn WatchHandle>, ObjError> {
        self.watch_deferred(
            name,
            Arc::new(move |payload: &[u8], ack: Ack| {
                on_notify(payload);
                drop(ack);
            }),
        )
    }

    /// This client's id as notify reports name watchers ([`NotifyReport::timed_out_clients`]):
    /// the RADOS instance id; 0 when unknown.
    fn instance(&self) -> u64 {
        0
    }
}

/// An in-memory "cluster" for tests: objects with versions and watchers. Every
/// [`MemCluster::client`] is one gateway's connection; a notify reaches every client's
/// watchers, synchronously, except those of a client made unresponsive
/// ([`MemClient::set_unresponsive`]), which count as timed out.
#[derive(Clone, Default)]
pub struct MemCluster {
    inner: Arc<MemInner>,
}

/// (watch id, client id, callback).
type MemWatcher = (u64, u64, DeferredNotifyFn);

#[derive(Default)]
struct MemInner {
    objects: Mutex<HashMap<String, Versioned>>,
    /// Object name → its watchers.
    watchers: Mutex<HashMap<String, Vec<MemWatcher>>>,
    /// Clients that do not answer notifies.
    unresponsive: Mutex<std::collections::HashSet<u64>>,
    next_version: AtomicU64,
    next_id: AtomicU64,
}

impl MemCluster {
    /// An empty cluster.
    pub fn new() -> Self {
        Self::default()
    }

    /// A new connection to the cluster (one gateway).
    pub fn client(&self) -> Arc<MemClient> {
        Arc::new(MemClient {
            cluster: self.clone(),
            id: self.inner.next_id.fetch_add(1, Ordering::Relaxed) + 1,
        })
    }

    /// Overwrite `name` behind everyone's back (e.g. with garbage), bumping its version.
    pub fn put_raw(&self, name: &str, data: &[u8]) {
        let version = self.bump();
        self.inner.objects.lock().insert(
            name.to_string(),
            Versioned {
                data: data.to_vec(),
                version,
            },
        );
    }

    /// Remove `name` (an administrator's `rados rm`).
    pub fn remove(&self, name: &str) {
        self.inner.objects.lock().remove(name);
    }

    /// How many watches `name` has.
    pub fn watchers(&self, name: &str) -> usize {
        self.inner.watchers.lock().get(name).map_or(0, Vec::len)
    }

    /// The raw content of `name`.
    pub fn get_raw(&self, name: &str) -> Option<Versioned> {
        self.inner.objects.lock().get(name).cloned()
    }

    fn bump(&self) -> u64 {
        self.inner.next_version.fetch_add(1, Ordering::Relaxed) + 1
    }
}

/// One connection to a [`MemCluster`].
pub struct MemClient {
    cluster: MemCluster,
    id: u64,
}

impl MemClient {
    /// As after a watch break and re-watch: every watcher of this client gets an empty
    /// notice ("you may have missed notices, reload").
    pub fn rewatched(&self) {
        let mine: Vec<DeferredNotifyFn> = self
            .cluster
            .inner
            .watchers
            .lock()
            .values()
            .flatten()
            .filter(|(_, client, _)| *client == self.id)
            .map(|(_, _, cb)| cb.clone())
            .collect();
        for cb in mine {
            cb(&[], Ack::new(|| {}));
        }
    }

    /// Make this client's watchers stop acknowledging (a frozen or dead gateway): notifies
    /// count them as timed out and do not call them.
    pub fn set_unresponsive(&self, yes: bool) {
        let mut set = self.cluster.inner.unresponsive.lock();
        if yes {
            set.insert(self.id);
        } else {
            set.remove(&self.id);
        }
    }
}

struct MemWatch {
    cluster: MemCluster,
    name: String,
    watch: u64,
}

impl WatchHandle for MemWatch {}

impl Drop for MemWatch {
    fn drop(&mut self) {
        if let Some(v) = self.cluster.inner.watchers.lock().get_mut(&self.name) {
            v.retain(|(w, _, _)| *w != self.watch);
        }
    }
}

impl VersionedObjects for MemClient {
    fn read(&self, name: &str) -> Result<Option<Versioned>, ObjError> {
        Ok(self.cluster.inner.objects.lock().get(name).cloned())
    }

    fn write(&self, name: &str, data: &[u8], expected: Option<u64>) -> Result<u64, ObjError> {
        let mut objects = self.cluster.inner.objects.lock();
        let current = objects.get(name).map(|o| o.version);
        if current != expected {
            return Err(ObjError::Conflict(name.to_string()));
        }
        let version = self.cluster.bump();
        objects.insert(
            name.to_string(),
            Versioned {
                data: data.to_vec(),
                version,
            },
        );
        Ok(version)
    }

    fn notify(
        &self,
        name: &str,
        payload: &[u8],
        timeout: Duration,
    ) -> Result<NotifyReport, ObjError> {
        let watchers = self
            .cluster
            .inner
            .watchers
            .lock()
            .get(name)
            .cloned()
            .unwrap_or_default();
        let mut report = NotifyReport::default();
        // Every watcher gets the notice first (in turn, like librados' one callback thread
        // per client), then the acknowledgements are awaited until the deadline.
        let (tx, rx) = std::sync::mpsc::channel::<u64>();
        let mut waiting = std::collections::HashMap::new();
        for (watch, client, cb) in watchers {
            if self.cluster.inner.unresponsive.lock().contains(&client) {
                report.timed_out += 1;
                report.timed_out_clients.push(client);
                continue;
            }
            waiting.insert(watch, client);
            let tx = tx.clone();
            cb(
                payload,
                Ack::new(move || {
                    let _ = tx.send(watch);
                }),
            );
        }
        drop(tx);
        let deadline = std::time::Instant::now() + timeout;
        while !waiting.is_empty() {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match rx.recv_timeout(left) {
                Ok(watch) => {
                    if waiting.remove(&watch).is_some() {
                        report.acked += 1;
                    }
                }
                Err(_) => break,
            }
        }
        for (_, client) in waiting {
            report.timed_out += 1;
            report.timed_out_clients.push(client);
        }
        Ok(report)
    }

    fn instance(&self) -> u64 {
        self.id
    }

    fn watch_deferred(
        &self,
        name: &str,
        on_notify: DeferredNotifyFn,
    ) -> Result<Box<dyn WatchHandle>, ObjError> {
        let watch = self.cluster.inner.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        self.cluster
            .inner
            .watchers
            .lock()
            .entry(name.to_string())
            .or_default()
            .push((watch, self.id, on_notify));
        Ok(Box::new(MemWatch {
            cluster: self.cluster.clone(),
            name: name.to_string(),
            watch,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_are_version_checked_and_notifies_reach_responsive_watchers() {
        let cluster = MemCluster::new();
        let (a, b) = (cluster.client(), cluster.client());
        assert!(a.read("o").expect("read").is_none());
        let v1 = a.write("o", b"one", None).expect("create");
        assert!(matches!(
            b.write("o", b"x", None),
            Err(ObjError::Conflict(_))
        ));
        let v2 = b.write("o", b"two", Some(v1)).expect("cas");
        assert!(v2 > v1);
        assert!(matches!(
            a.write("o", b"three", Some(v1)),
            Err(ObjError::Conflict(_))
        ));
        assert_eq!(
            a.read("o").expect("read"),
            Some(Versioned {
                data: b"two".to_vec(),
                version: v2
            })
        );
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        let wa = a.watch("o", Arc::new(move |p| s.lock().push(p.to_vec())));
        let s = seen.clone();
        let _wb = b.watch("o", Arc::new(move |p| s.lock().push(p.to_vec())));
        b.set_unresponsive(true);
        let r = a
            .notify("o", b"hi", Duration::from_secs(1))
            .expect("notify");
        assert_eq!((r.acked, r.timed_out), (1, 1));
        assert_eq!(r.timed_out_clients, vec![b.instance()]);
        drop(wa);
        b.set_unresponsive(false);
        let r = a
            .notify("o", b"again", Duration::from_secs(1))
            .expect("notify");
        assert_eq!((r.acked, r.timed_out), (1, 0));
        assert_eq!(*seen.lock(), vec![b"hi".to_vec(), b"again".to_vec()]);
    }
}
