//! Volume I/O handle.

use bytes::Bytes;

use crate::{Result, StorageError, VolumeInfo};

/// Cheap-to-clone I/O handle for one volume.
#[derive(Clone)]
pub struct Volume {
    _private: std::sync::Arc<()>,
}

fn gone() -> StorageError {
    StorageError::NotFound("volume not found".into())
}

impl Volume {
    /// Current name.
    pub fn name(&self) -> String {
        String::new()
    }
    /// Stable identity.
    pub fn uuid(&self) -> uuid::Uuid {
        uuid::Uuid::nil()
    }
    /// Logical block size.
    pub fn block_size(&self) -> u32 {
        512
    }
    /// Current number of logical blocks.
    pub fn num_blocks(&self) -> u64 {
        0
    }
    /// Current figures.
    pub fn info(&self) -> VolumeInfo {
        VolumeInfo {
            name: String::new(),
            uuid: uuid::Uuid::nil(),
            size_bytes: 0,
            block_size: 512,
            guarantee: crate::Guarantee::None,
            mapped_bytes: 0,
            unique_bytes: 0,
            shared_bytes: 0,
            reserved_bytes: 0,
            origin: None,
            created_unix: 0,
            space_exact: true,
            space_reconciled_at: 0,
            snapshots: 0,
        }
    }
    /// Read `blocks` blocks at `lba`.
    pub async fn read(&self, _lba: u64, _blocks: u32) -> Result<Bytes> {
        Err(gone())
    }
    /// Write `data` (a whole number of blocks) at `lba`.
    pub async fn write(&self, _lba: u64, _data: Bytes, _fua: bool) -> Result<()> {
        Err(gone())
    }
    /// Gather-write.
    pub async fn write_vectored(&self, _lba: u64, _bufs: Vec<Bytes>, _fua: bool) -> Result<()> {
        Err(gone())
    }
    /// Zero a range; `unmap` allows deallocation.
    pub async fn write_zeroes(&self, _lba: u64, _blocks: u64, _unmap: bool) -> Result<()> {
        Err(gone())
    }
    /// Deallocate a range; it reads back as zeros.
    pub async fn unmap(&self, _lba: u64, _blocks: u64) -> Result<()> {
        Err(gone())
    }
    /// Make acknowledged writes durable.
    pub async fn flush(&self) -> Result<()> {
        Err(gone())
    }
    /// Whether `lba` is mapped and how many blocks from it share that state.
    pub fn block_status(&self, _lba: u64) -> Result<(bool, u64)> {
        Err(gone())
    }
}
