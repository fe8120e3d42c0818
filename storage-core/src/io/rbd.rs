//! RBD backend of the data path: librbd's aio calls, whose completion callbacks wake the
//! waiting task (`storage_core::ceph::RbdImage`), so no tokio worker blocks on the cluster
//! and any number of I/Os are in flight at once. There is no page cache in front: a read
//! goes to the OSDs (librbd's own cache is off, so that a completed write is durable and the
//! device can honestly report no volatile write cache).

use std::mem::MaybeUninit;

use bytes::Bytes;

use crate::ceph::RbdImage;
use crate::device::ceph_io;
use crate::{Result, StorageError};

pub(crate) struct RbdIo {
    image: RbdImage,
}

impl RbdIo {
    pub(crate) fn new(image: RbdImage) -> RbdIo {
        RbdIo { image }
    }

    /// Read `len` bytes at `off` into a fresh buffer (librbd fills it, no copy).
    pub(crate) async fn read(&self, off: u64, len: usize) -> Result<Vec<u8>> {
        self.image
            .read(off, len)
            .await
            .map_err(|e| StorageError::io("reading data", ceph_io(e)))
    }

    /// Fill `buf` from `off` (one copy: a borrowed buffer cannot be handed to an aio that
    /// might outlive a dropped future).
    pub(crate) async fn read_into(&self, off: u64, buf: &mut [MaybeUninit<u8>]) -> Result<()> {
        self.image
            .read_into(off, buf)
            .await
            .map_err(|e| StorageError::io("reading data", ceph_io(e)))
    }

    /// Write the buffers back to back at `off` (no copy: librbd gets iovecs over them).
    pub(crate) async fn write(&self, off: u64, bufs: Vec<Bytes>) -> Result<()> {
        self.image
            .writev(off, bufs)
            .await
            .map_err(|e| StorageError::io("writing data", ceph_io(e)))
    }
}
