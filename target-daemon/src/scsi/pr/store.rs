//! Where a LUN's persistent reservation state survives a restart (APTPL, SPC-4 5.13.4):
//! the [`PrStore`] a target is built with — the [`FileStore`] under the data directory for
//! a single lunard — and where the gateways of an HA group share it ([`SharedPr`], the
//! store's [`PrStore::shared`] side: RADOS in production, see `crate::shared`).
//!
//! A local store only keeps APTPL state and is written after the change was decided on the
//! LUN's own copy. A shared store keeps ALL the state (registrations must survive a
//! failover to another gateway) under a version: a PERSISTENT RESERVE OUT through any
//! gateway reads the latest state, decides on it, and saves it only if the version did not
//! move meanwhile (else it decides again), then tells the other gateways
//! ([`SharedPr::publish`]), which reload it ([`PrListener`]) before it answers GOOD.
//!
//! Stores are blocking: the device server calls them on a blocking thread, never on an
//! async worker or under the LUN's reservation lock.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;

use serde::{Deserialize, Serialize};

use super::rules::PrData;
use super::Preempted;
use crate::scsi::Nexus;

/// Keeps each LUN's reservation state (keyed by the LUN identity) across restarts.
pub trait PrStore: Send + Sync + std::fmt::Debug {
    /// The state saved for the LUN `identity`, if any. Blocking; called when the LUN is
    /// attached.
    fn load(&self, identity: uuid::Uuid) -> anyhow::Result<Option<PrData>>;

    /// Replace the state saved for `identity` (`None`: forget it). Blocking; the state is
    /// durable when it returns `Ok`, since PERSISTENT RESERVE OUT answers GOOD only then.
    fn save(&self, identity: uuid::Uuid, data: Option<&PrData>) -> anyhow::Result<()>;

    /// The versioned side of a store shared by the gateways of an HA group; `None` (every
    /// local store): [`load`](Self::load) and [`save`](Self::save) are all there is, and
    /// only APTPL state is kept.
    fn shared(&self) -> Option<&dyn SharedPr> {
        None
    }
}

/// Version of a shared reservation state; [`ABSENT`] when nothing was ever saved.
pub type PrVersion = u64;

/// The version of a state never saved (no object yet).
pub const ABSENT: PrVersion = 0;

/// Why a shared store could not read or write a LUN's state.
#[derive(Debug, thiserror::Error)]
pub enum SharedPrError {
    /// The version moved since it was read: another gateway changed the state first.
    #[error("the reservation state changed meanwhile (version conflict)")]
    Conflict,
    /// The stored state does not decode: nobody can tell who is registered.
    #[error("the shared reservation state is corrupt: {0}")]
    Corrupt(String),
    /// The store could not be reached or refused the operation.
    #[error(transparent)]
    Unavailable(#[from] anyhow::Error),
}

/// The whole state of a LUN as a shared store holds it, with its version.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VersionedPr {
    /// The state (empty when none was ever saved).
    pub data: PrData,
    /// Its version ([`ABSENT`]: none was ever saved).
    pub version: PrVersion,
}

/// A reservation store shared by the gateways of an HA group: versioned state per LUN
/// identity, compare-and-swap saves, and change notices every gateway acts on.
pub trait SharedPr: Send + Sync {
    /// Start delivering change notices for `identity` to the listeners. Called before the
    /// first [`load_latest`](Self::load_latest), so no change slips between; counted: every
    /// call is matched by one [`unwatch`](Self::unwatch).
    fn watch(&self, identity: uuid::Uuid) -> Result<(), SharedPrError>;

    /// A LUN presenting `identity` is gone: when it was the last one here, the watch ends.
    /// Never blocks.
    fn unwatch(&self, identity: uuid::Uuid);

    /// The latest saved state of `identity`. Blocking.
    fn load_latest(&self, identity: uuid::Uuid) -> Result<VersionedPr, SharedPrError>;

    /// Save `data` for `identity` if the stored version is still `expected`; returns the new
    /// version, or [`SharedPrError::Conflict`] when another gateway saved first (nothing
    /// changed). Durable on every gateway's view when it returns `Ok`. Blocking.
    fn save_if(
        &self,
        identity: uuid::Uuid,
        data: &PrData,
        expected: PrVersion,
    ) -> Result<PrVersion, SharedPrError>;

    /// Tell every gateway (this one included) about a saved change and wait until they have
    /// acted on it, or until a bounded timeout for a gateway that does not answer (a dead
    /// one: it reloads the state when it comes back). Blocking.
    fn publish(&self, identity: uuid::Uuid, notice: &PrNotice) -> anyhow::Result<()>;

    /// Who hears of the notices (each target of this gateway registers itself once).
    fn listen(&self, listener: std::sync::Weak<dyn PrListener>);

    /// This store instance (one per gateway process): notices it published carry it, so the
    /// issuing target does not act twice on its own change.
    fn instance(&self) -> uuid::Uuid;
}

/// A target of this gateway that holds LUNs whose state a shared store keeps.
pub trait PrListener: Send + Sync {
    /// The state of `identity` changed through some gateway: install it, establish the
    /// unit attentions, abort the preempted tasks. Called on a store thread, which must
    /// not wait: slow work (PREEMPT AND ABORT's aborts) runs elsewhere holding a clone of
    /// `done`; the publisher is acknowledged when the last clone is dropped.
    fn pr_changed(&self, identity: uuid::Uuid, notice: &PrNotice, done: &NoticeDone);

    /// Notices of `identity` may have been missed (the watch was re-established, the
    /// periodic version check found a newer version, or the gateway takes the pool over):
    /// `latest` is what the store holds now. Install it and establish the unit attentions
    /// of the changes not heard of. Called on a store thread.
    fn pr_reloaded(&self, identity: uuid::Uuid, latest: &VersionedPr);

    /// The state of `identity` could not be read when reloading (`why`).
    fn pr_unreadable(&self, identity: uuid::Uuid, why: &str);
}

/// The pending acknowledgement of a change notice: whoever still works on the notice
/// holds a clone; the publisher hears back when the last one is dropped.
#[derive(Clone)]
pub struct NoticeDone(#[allow(dead_code)] Option<Arc<dyn Send + Sync>>);

impl NoticeDone {
    /// Acknowledges by dropping `ack` (when the last clone goes).
    pub fn new(ack: impl Send + Sync + 'static) -> Self {
        Self(Some(Arc::new(ack)))
    }

    /// Nothing to acknowledge.
    pub fn none() -> Self {
        Self(None)
    }
}

impl std::fmt::Debug for NoticeDone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NoticeDone")
    }
}

/// What a saved change tells the other gateways: the state (so they install it without a
/// read of their own), and what comes with the change for nexuses they may hold.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrNotice {
    /// The store instance that published it ([`SharedPr::instance`]).
    pub origin: uuid::Uuid,
    /// The target the PERSISTENT RESERVE OUT came through (on `origin`).
    pub target: String,
    /// The saved state's version.
    pub version: PrVersion,
    /// The version of the state the change was decided on: a gateway whose last
    /// accounted version is older missed changes in between.
    #[serde(default)]
    pub base: PrVersion,
    /// The nexus that issued the change (gets none of its unit attentions).
    #[serde(default)]
    pub issuer: Option<Nexus>,
    /// The saved state.
    pub data: PrData,
    /// Unit attentions: (nexus, ASC, ASCQ); never for the issuing nexus.
    #[serde(default)]
    pub uas: Vec<(Nexus, u8, u8)>,
    /// PREEMPT AND ABORT: the preempted nexuses, whose tasks on the LUN are aborted.
    #[serde(default)]
    pub abort: Option<Preempted>,
}

/// One JSON file per LUN identity in a directory (`<data dir>/pr/<identity>.json`),
/// replaced atomically (temp file, fsync, rename, fsync of the directory) and removed
/// durably (the directory is synced after the unlink too). The directory is created
/// private (0700) on the first save.
#[derive(Debug)]
pub struct FileStore {
    dir: PathBuf,
}

impl FileStore {
    /// A store in `dir`.
    pub fn new(dir: PathBuf) -> Self {
        Self { dir }
    }

    /// The store of a data directory (`<data_dir>/pr`), ready to hand to a target.
    pub fn for_data_dir(data_dir: &Path) -> Arc<dyn PrStore> {
        Arc::new(Self::new(data_dir.join("pr")))
    }

    fn path(&self, identity: uuid::Uuid) -> PathBuf {
        self.dir.join(format!("{identity}.json"))
    }
}

impl PrStore for FileStore {
    fn load(&self, identity: uuid::Uuid) -> anyhow::Result<Option<PrData>> {
        let path = self.path(identity);
        let text = match std::fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        let st: PrData = serde_json::from_slice(&text)
            .with_context(|| format!("corrupt reservation state {}", path.display()))?;
        Ok(st.aptpl.then_some(st))
    }

    fn save(&self, identity: uuid::Uuid, data: Option<&PrData>) -> anyhow::Result<()> {
        let path = self.path(identity);
        match data {
            Some(d) => {
                create_private_dir(&self.dir)?;
                save(&path, d).with_context(|| format!("cannot write {}", path.display()))
            }
            None => match std::fs::remove_file(&path) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(e).with_context(|| format!("cannot remove {}", path.display())),
                // The removal is durable only once the directory is synced: without it a
                // power loss after GOOD could bring the forgotten APTPL state back.
                Ok(()) => sync_dir(&self.dir)
                    .with_context(|| format!("cannot sync {}", self.dir.display())),
            },
        }
    }
}

/// Private to lunard's user (0700) whatever the umask, like the rest of the data directory.
fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create {}", dir.display()))
}

/// Atomic replace: temp file, fsync, rename, fsync of the directory.
fn save(path: &Path, st: &PrData) -> std::io::Result<()> {
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
        sync_dir(dir)?;
    }
    Ok(())
}

/// Makes the latest rename or removal in `dir` durable.
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Wait a little before compare-and-swap attempt `attempt + 1`, so gateways that keep
/// colliding spread apart: a random delay below 2^attempt ms (at most 64 ms).
pub(crate) fn backoff(attempt: u32) {
    let cap = 1u64 << attempt.min(6);
    std::thread::sleep(std::time::Duration::from_millis(
        rand::random::<u64>() % cap,
    ));
}
