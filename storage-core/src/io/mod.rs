//! Data-path I/O backends: io_uring (a small ring thread) with an automatic thread-pool
//! fallback. `LUNAR_IO_BACKEND=threads` forces the fallback.

mod threads;
mod uring;

use std::fs::File;
use std::sync::Arc;

use bytes::Bytes;

use crate::{Result, StorageError};

/// The backend chosen for a pool.
pub(crate) enum DataIo {
    Threads(threads::ThreadsIo),
    Uring(uring::UringIo),
}

impl DataIo {
    /// Pick io_uring unless disabled or unavailable.
    pub fn new(file: Arc<File>) -> DataIo {
        let forced = std::env::var("LUNAR_IO_BACKEND").unwrap_or_default();
        if forced != "threads" {
            match uring::UringIo::new(file.clone()) {
                Ok(u) => {
                    tracing::debug!("storage data path: io_uring");
                    return DataIo::Uring(u);
                }
                Err(e) => {
                    tracing::info!("io_uring unavailable ({e}); using the thread-pool backend")
                }
            }
        }
        DataIo::Threads(threads::ThreadsIo::new(file))
    }

    /// Name of the backend in use.
    pub fn name(&self) -> &'static str {
        match self {
            DataIo::Threads(_) => "threads",
            DataIo::Uring(_) => "io_uring",
        }
    }

    /// Read exactly `len` bytes at `off`.
    pub async fn read(&self, off: u64, len: usize) -> Result<Vec<u8>> {
        match self {
            DataIo::Threads(t) => t.read(off, len).await,
            DataIo::Uring(u) => u.read(off, len).await,
        }
    }

    /// Write the buffers back to back starting at `off`.
    pub async fn write(&self, off: u64, bufs: Vec<Bytes>) -> Result<()> {
        match self {
            DataIo::Threads(t) => t.write(off, bufs).await,
            DataIo::Uring(u) => u.write(off, bufs).await,
        }
    }
}

pub(crate) fn io_err(context: &str, e: std::io::Error) -> StorageError {
    StorageError::io(context, e)
}
