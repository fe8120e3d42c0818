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
    /// An RBD image. The connection runs with `rbd_cache = false`, so a completed write is
    /// on the OSDs; `flush` is still called wherever the file path syncs. Nothing here
    /// keeps another client out: the caller holds the image's exclusive lock.
    #[cfg(feature = "ceph")]
    Rbd {
        image: crate::ceph::RbdImage,
        /// What logs and errors call it (`rbd:<image>`).
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

    /// An RBD image.
    #[cfg(feature = "ceph")]
    pub(crate) fn rbd(image: crate::ceph::RbdImage) -> Device {
        let name = format!("rbd:{}", image.name());
        Device::Rbd { image, name }
    }

    /// What logs and error messages call the device.
    pub(crate) fn name(&self) -> &str {
        match self {
            Device::File { name, .. } => name,
            #[cfg(feature = "ceph")]
            Device::Rbd { name, .. } => name,
        }
    }

    /// Whether a completed write can still be lost by a power loss (it sits in a volatile
    /// cache until `flush`): true for the page cache, false for RBD without its cache. SCSI
    /// reports this as the WCE bit; replay trusts tentative journal blocks of another boot
    /// only on a device without one.
    pub(crate) fn volatile_cache(&self) -> bool {
        match self {
            Device::File { .. } => true,
            #[cfg(feature = "ceph")]
            Device::Rbd { .. } => false,
        }
    }

    /// Whether each block (512 or 4096 bytes, aligned) of a read or write is applied whole,
    /// whatever runs concurrently on the same blocks, without the pool ordering them: true
    /// for RBD (a block never straddles a RADOS object, and an object's operations apply
    /// whole and in order); false for the page cache, whose copies run on several threads.
    pub(crate) fn atomic_blocks(&self) -> bool {
        match self {
            Device::File { .. } => false,
            #[cfg(feature = "ceph")]
            Device::Rbd { .. } => true,
        }
    }

    /// Whether each operation costs a round trip that dwarfs its size (RBD: a network
    /// request per operation), so that the pool should merge physically adjacent chunk
    /// pieces into one request. False for files: the page cache serves pieces in
    /// microseconds, and the file path stays as it was measured.
    pub(crate) fn prefers_large_io(&self) -> bool {
        match self {
            Device::File { .. } => false,
            #[cfg(feature = "ceph")]
            Device::Rbd { .. } => true,
        }
    }

    /// Length of the device in bytes.
    pub(crate) fn len(&self) -> std::io::Result<u64> {
        match self {
            Device::File { file, .. } => (&**file).seek(SeekFrom::End(0)),
            #[cfg(feature = "ceph")]
            Device::Rbd { image, .. } => image.size().map_err(ceph_io),
        }
    }

    /// Fill `buf` from `off`; a read past the end is an error.
    pub(crate) fn read_at(&self, buf: &mut [u8], off: u64) -> std::io::Result<()> {
        match self {
            Device::File { file, .. } => file.read_exact_at(buf, off),
            #[cfg(feature = "ceph")]
            Device::Rbd { image, .. } => image.read_at(off, buf).map_err(ceph_io),
        }
    }

    /// Read into `buf` from `off` until it is full or the device ends; returns the bytes read.
    pub(crate) fn read_upto(&self, buf: &mut [u8], off: u64) -> std::io::Result<usize> {
        match self {
            Device::File { file, .. } => {
                let mut n = 0;
                while n < buf.len() {
                    match file.read_at(&mut buf[n..], off + n as u64) {
                        Ok(0) => break,
                        Ok(k) => n += k,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e),
                    }
                }
                Ok(n)
            }
            #[cfg(feature = "ceph")]
            Device::Rbd { image, .. } => {
                // librbd refuses reads past the end instead of returning short.
                let size = image.size().map_err(ceph_io)?;
                let n = usize::try_from(size.saturating_sub(off))
                    .unwrap_or(usize::MAX)
                    .min(buf.len());
                image.read_at(off, &mut buf[..n]).map_err(ceph_io)?;
                Ok(n)
            }
        }
    }

    /// Write all of `buf` at `off`.
    pub(crate) fn write_at(&self, buf: &[u8], off: u64) -> std::io::Result<()> {
        match self {
            Device::File { file, .. } => file.write_all_at(buf, off),
            #[cfg(feature = "ceph")]
            Device::Rbd { image, .. } => image.write_at(off, buf).map_err(ceph_io),
        }
    }

    /// Make every write completed so far durable (`fdatasync`; `rbd_flush`).
    pub(crate) fn flush(&self) -> std::io::Result<()> {
        match self {
            Device::File { file, .. } => file.sync_data(),
            #[cfg(feature = "ceph")]
            Device::Rbd { image, .. } => image.flush_sync().map_err(ceph_io),
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
            #[cfg(feature = "ceph")]
            Device::Rbd { .. } => {}
        }
    }
}

/// A Ceph error as an I/O error that keeps the errno (`ESHUTDOWN` says the client was
/// blocklisted) and the context.
#[cfg(feature = "ceph")]
pub(crate) fn ceph_io(e: crate::ceph::CephError) -> std::io::Error {
    let kind = e.errno().map_or(std::io::ErrorKind::Other, |n| {
        std::io::Error::from_raw_os_error(n).kind()
    });
    std::io::Error::new(kind, e)
}
