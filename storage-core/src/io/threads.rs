//! Thread-pool backend: positional reads and writes on tokio's blocking pool.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use bytes::Bytes;

use super::io_err;
use crate::{Result, StorageError};

pub(crate) struct ThreadsIo {
    file: Arc<File>,
}

fn join_err(e: tokio::task::JoinError) -> StorageError {
    StorageError::io(
        "running a blocking I/O task",
        std::io::Error::other(e.to_string()),
    )
}

impl ThreadsIo {
    pub(crate) fn new(file: Arc<File>) -> Self {
        ThreadsIo { file }
    }

    pub(crate) async fn read(&self, off: u64, len: usize) -> Result<Vec<u8>> {
        let f = self.file.clone();
        tokio::task::spawn_blocking(move || {
            let mut buf = vec![0u8; len];
            f.read_exact_at(&mut buf, off)
                .map_err(|e| io_err("reading data", e))?;
            Ok(buf)
        })
        .await
        .map_err(join_err)?
    }

    pub(crate) async fn write(&self, off: u64, bufs: Vec<Bytes>) -> Result<()> {
        let f = self.file.clone();
        tokio::task::spawn_blocking(move || {
            let mut o = off;
            for b in &bufs {
                f.write_all_at(b, o)
                    .map_err(|e| io_err("writing data", e))?;
                o += b.len() as u64;
            }
            Ok(())
        })
        .await
        .map_err(join_err)?
    }
}
