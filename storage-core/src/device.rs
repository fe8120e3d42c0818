//! The device a pool lives on, as the metadata path sees it.
//!
//! A pool is one linear byte space (superblocks, seals, journal, checkpoints, chunks; see
//! docs/storage-format.md) on one device: a file or block device read and written through the
//! page cache, or (feature `ceph`) an RBD image read and written through librbd. Open,
//! replay and the commit thread only need positional synchronous reads and writes, a flush
//! that makes every completed write durable, and the device's length; this module gives them
//! exactly that, so nothing above it knows which kind of device it is on. The data path has
//! its own asynchronous backends per device kind ([`crate::io::DataIo`]).

use std::fs::File;
use std::io::{Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::sync::Arc;

/// A pool's device.
pub(crate) enum Device {
    /// A pool file or block device, buffered by the page cache: a write that returned is
    /// only durable after `fdatasync`.
    File {
        file: Arc<File>,
        /// What logs and errors call it (the path).
        name: String,
    },
}

impl Device {
    /// A file or block device opened by the caller.
    pub(crate) fn file(file: File, name: String) -> Device {
        Device::File {
            file: Arc::new(file),
            name,
        }
    }

    /// What logs and error messages call the device.
    pub(crate) fn name(&self) -> &str {
        match self {
            Device::File { name, .. } => name,
        }
    }

    /// Whether a completed write can still be lost by a power loss (it sits in a volatile
    /// cache until `flush`): true for the page cache, false for RBD without its cache. SCSI
    /// reports this as the WCE bit; replay trusts tentative journal blocks of another boot
    /// only on a device without one.
    pub(crate) fn volatile_cache(&self) -> bool {
        match self {
            Device::File { .. } => true,
        }
    }

    /// Length of the device in bytes.
    pub(crate) fn len(&self) -> std::io::Result<u64> {
        match self {
            Device::File { file, .. } => (&**file).seek(SeekFrom::End(0)),
        }
    }

    /// Fill `buf` from `off`; a read past the end is an error.
    pub(crate) fn read_at(&self, buf: &mut [u8], off: u64) -> std::io::Result<()> {
        let n = self.read_upto(buf, off)?;
        if n < buf.len() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "failed to fill whole buffer",
            ));
        }
        Ok(())
    }

    /// Read into `buf` from `off` until it is full or the device ends; returns the bytes read.
    pub(crate) fn read_upto(&self, buf: &mut [u8], off: u64) -> std::io::Result<usize> {
        let mut n = 0;
        while n < buf.len() {
            let r = match self {
                Device::File { file, .. } => file.read_at(&mut buf[n..], off + n as u64),
            };
            match r {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(n)
    }

    /// Write all of `buf` at `off`.
    pub(crate) fn write_at(&self, buf: &[u8], off: u64) -> std::io::Result<()> {
        match self {
            Device::File { file, .. } => file.write_all_at(buf, off),
        }
    }

    /// Make every write completed so far durable (`fdatasync`; `rbd_flush`).
    pub(crate) fn flush(&self) -> std::io::Result<()> {
        match self {
            Device::File { file, .. } => file.sync_data(),
        }
    }

    /// Release what keeps other processes out (the `flock` of a pool file). An RBD image's
    /// exclusive lock belongs to whoever took it before opening the pool.
    pub(crate) fn unlock(&self) {
        match self {
            Device::File { file, .. } => {
                use std::os::unix::io::AsRawFd;
                // SAFETY: flock on a valid open descriptor has no memory-safety preconditions.
                unsafe {
                    libc::flock(file.as_raw_fd(), libc::LOCK_UN);
                }
            }
        }
    }
}
