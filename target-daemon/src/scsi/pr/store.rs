//! Where a LUN's persistent reservation state survives a restart (APTPL, SPC-4 5.13.4):
//! the [`PrStore`] a target is built with. Today the [`FileStore`] under the data
//! directory; a shared store (RADOS, for an HA pair) implements the same trait.
//!
//! Stores are blocking: the device server calls them on a blocking thread, never on an
//! async worker or under the LUN's reservation lock.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;

use super::rules::PrData;

/// Keeps each LUN's reservation state (keyed by the LUN identity) across restarts.
pub trait PrStore: Send + Sync + std::fmt::Debug {
    /// The state saved for the LUN `identity`, if any. Blocking; called when the LUN is
    /// attached.
    fn load(&self, identity: uuid::Uuid) -> anyhow::Result<Option<PrData>>;

    /// Replace the state saved for `identity` (`None`: forget it). Blocking; the state is
    /// durable when it returns `Ok`, since PERSISTENT RESERVE OUT answers GOOD only then.
    fn save(&self, identity: uuid::Uuid, data: Option<&PrData>) -> anyhow::Result<()>;
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
