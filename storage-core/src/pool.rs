//! The pool: public entry point owning the engine.

use std::path::Path;

use crate::{
    CheckReport, Guarantee, PoolOptions, PoolStatus, Result, SnapshotInfo, SplitJob, StorageError,
    Volume, VolumeInfo,
};

fn not_ready() -> StorageError {
    StorageError::InvalidArgument("storage engine not available in this build yet".into())
}

/// A storage pool. Cheap to clone; all clones share one engine.
#[derive(Clone)]
pub struct Pool {
    _private: std::sync::Arc<()>,
}

impl Pool {
    /// Create a new pool at `path` (directory, file or block device).
    pub async fn create(_path: &Path, _opts: &PoolOptions) -> Result<Pool> {
        Err(not_ready())
    }
    /// Open an existing pool.
    pub async fn open(_path: &Path) -> Result<Pool> {
        Err(not_ready())
    }
    /// Open the pool at `path`, creating it if nothing is there.
    pub async fn open_or_create(_path: &Path, _opts: &PoolOptions) -> Result<Pool> {
        Err(not_ready())
    }
    /// Pool-wide figures.
    pub fn status(&self) -> PoolStatus {
        unreachable_status()
    }
    /// Create a volume.
    pub async fn create_volume(
        &self,
        _name: &str,
        _size_bytes: u64,
        _block_size: u32,
        _guarantee: Guarantee,
    ) -> Result<VolumeInfo> {
        Err(not_ready())
    }
    /// I/O handle for a volume.
    pub fn volume(&self, name: &str) -> Result<Volume> {
        Err(StorageError::NotFound(format!("volume '{name}' not found")))
    }
    /// Info about one volume.
    pub fn volume_info(&self, name: &str) -> Result<VolumeInfo> {
        Err(StorageError::NotFound(format!("volume '{name}' not found")))
    }
    /// All volumes.
    pub fn volumes(&self) -> Vec<VolumeInfo> {
        Vec::new()
    }
    /// Grow, or shrink when `allow_shrink`.
    pub async fn resize_volume(
        &self,
        _name: &str,
        _new_size_bytes: u64,
        _allow_shrink: bool,
    ) -> Result<VolumeInfo> {
        Err(not_ready())
    }
    /// Delete a volume (its snapshots and clones stay valid).
    pub async fn delete_volume(&self, _name: &str) -> Result<()> {
        Err(not_ready())
    }
    /// Rename a volume.
    pub async fn rename_volume(&self, _old: &str, _new: &str) -> Result<()> {
        Err(not_ready())
    }
    /// Change the space guarantee.
    pub async fn set_guarantee(&self, _name: &str, _g: Guarantee) -> Result<()> {
        Err(not_ready())
    }
    /// Take a snapshot.
    pub async fn snapshot(&self, _volume: &str, _snap: &str) -> Result<SnapshotInfo> {
        Err(not_ready())
    }
    /// Snapshot several volumes at one instant.
    pub async fn snapshot_group(&self, _pairs: &[(&str, &str)]) -> Result<Vec<SnapshotInfo>> {
        Err(not_ready())
    }
    /// List snapshots, of one volume or all.
    pub fn snapshots(&self, _volume: Option<&str>) -> Vec<SnapshotInfo> {
        Vec::new()
    }
    /// Delete a snapshot.
    pub async fn delete_snapshot(&self, _volume: &str, _snap: &str) -> Result<()> {
        Err(not_ready())
    }
    /// Roll a volume back to a snapshot.
    pub async fn rollback(&self, _volume: &str, _snap: &str) -> Result<()> {
        Err(not_ready())
    }
    /// Clone "vol" or "vol@snap".
    pub async fn clone_volume(
        &self,
        _source: &str,
        _name: &str,
        _guarantee: Option<Guarantee>,
    ) -> Result<VolumeInfo> {
        Err(not_ready())
    }
    /// Start splitting a clone from its origin.
    pub fn start_split(&self, _name: &str) -> Result<SplitJob> {
        Err(not_ready())
    }
    /// Make everything acknowledged so far durable.
    pub async fn flush(&self) -> Result<()> {
        Err(not_ready())
    }
    /// Verify every invariant.
    pub async fn check(&self) -> Result<CheckReport> {
        Err(not_ready())
    }
    /// Flush and stop background work.
    pub async fn close(&self) -> Result<()> {
        Err(not_ready())
    }
}

fn unreachable_status() -> PoolStatus {
    PoolStatus {
        uuid: uuid::Uuid::nil(),
        capacity_bytes: 0,
        used_bytes: 0,
        free_bytes: 0,
        pending_free_bytes: 0,
        reserved_bytes: 0,
        chunk_size: crate::DEFAULT_CHUNK_SIZE,
        soft_threshold_pct: None,
        soft_threshold_reached: false,
        volumes: 0,
        snapshots: 0,
        layers: 0,
    }
}
