//! Data-path I/O backends, per device kind ([`Device`]).
//!
//! Files and block devices: io_uring (a small ring thread) with an automatic thread-pool
//! fallback. `LUNAR_IO_BACKEND=threads` forces the fallback. In front of either, I/O the page
//! cache can serve without blocking is done on the caller's thread (`nowait`;
//! `LUNAR_IO_NOWAIT=0` disables it).
//!
//! RBD images (feature `ceph`): librbd's asynchronous API, completions waking the waiting
//! task; no page cache, so nothing is served without a round trip to the OSDs.
//!
//! RBD images (feature `ceph`): librbd's asynchronous API, completions waking the caller's
//! task. There is no page cache to serve anything without a round trip to the OSDs.

mod nowait;
#[cfg(feature = "ceph")]
mod rbd;
mod threads;
mod uring;

use std::fs::File;
use std::mem::MaybeUninit;
use std::sync::Arc;

use bytes::Bytes;

use crate::device::Device;
use crate::{Result, StorageError};

/// The backend chosen for a pool.
enum Backend {
    Threads(threads::ThreadsIo),
    Uring(uring::UringIo),
}

/// A pool's data path.
pub(crate) enum DataIo {
    /// A file or block device: the non-blocking page-cache fast path, then the backend.
    File(FileIo),
    /// An RBD image: librbd aio.
    #[cfg(feature = "ceph")]
    Rbd(rbd::RbdIo),
}

/// The data path of a file or block device.
pub(crate) struct FileIo {
    file: Arc<File>,
    fast: nowait::NoWait,
    backend: Backend,
}

impl DataIo {
    /// The data path for `dev`; for files, io_uring unless disabled or unavailable.
    pub(crate) fn new(dev: &Device) -> DataIo {
        match dev {
            Device::File { file, .. } => DataIo::File(FileIo {
                file: file.clone(),
                fast: nowait::NoWait::new(file),
                backend: Backend::new(file.clone()),
            }),
            #[cfg(feature = "ceph")]
            Device::Rbd { image, .. } => DataIo::Rbd(rbd::RbdIo::new(image.clone())),
        }
    }

    /// Name of the backend in use.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            DataIo::File(f) => f.backend.name(),
            #[cfg(feature = "ceph")]
            DataIo::Rbd(_) => "librbd",
        }
    }

    /// Read exactly `len` bytes at `off`.
    pub(crate) async fn read(&self, off: u64, len: usize) -> Result<Vec<u8>> {
        #[cfg(feature = "ceph")]
        if let DataIo::Rbd(r) = self {
            return r.read(off, len).await;
        }
        let mut buf = Vec::with_capacity(len);
        self.read_into(off, &mut buf.spare_capacity_mut()[..len])
            .await?;
        // SAFETY: `read_into` returned Ok, so it initialised all `len` bytes.
        unsafe { buf.set_len(len) };
        Ok(buf)
    }

    /// Fill `buf` (which need not be initialised) from `off`; on `Ok` every byte of it is
    /// initialised. Reads land directly in the caller's buffer (no zero-fill, no second
    /// copy) when the page cache serves them; the rest comes from the backend and is copied.
    pub(crate) async fn read_into(&self, off: u64, buf: &mut [MaybeUninit<u8>]) -> Result<()> {
        match self {
            DataIo::File(f) => f.read_into(off, buf).await,
            #[cfg(feature = "ceph")]
            DataIo::Rbd(r) => r.read_into(off, buf).await,
        }
    }

    /// Write the buffers back to back starting at `off`.
    pub(crate) async fn write(&self, off: u64, bufs: Vec<Bytes>) -> Result<()> {
        match self {
            DataIo::File(f) => f.write(off, bufs).await,
            #[cfg(feature = "ceph")]
            DataIo::Rbd(r) => r.write(off, bufs).await,
        }
    }
}

impl FileIo {
    async fn read_into(&self, off: u64, buf: &mut [MaybeUninit<u8>]) -> Result<()> {
        let len = buf.len();
        let done = self.fast.read(&self.file, off, buf);
        if done == len {
            return Ok(());
        }
        let rest = self.backend.read(off + done as u64, len - done).await?;
        if rest.len() != len - done {
            return Err(io_err(
                "reading data",
                std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "short read"),
            ));
        }
        // SAFETY: `rest` holds exactly `len - done` initialised bytes and the destination
        // range `buf[done..]` is that long; the two cannot overlap (`rest` is our own Vec).
        unsafe {
            std::ptr::copy_nonoverlapping(
                rest.as_ptr(),
                buf[done..].as_mut_ptr().cast(),
                rest.len(),
            )
        };
        Ok(())
    }

    async fn write(&self, off: u64, bufs: Vec<Bytes>) -> Result<()> {
        let total: usize = bufs.iter().map(Bytes::len).sum();
        let done = self.fast.write(&self.file, off, &bufs);
        if done == total {
            return Ok(());
        }
        // Hand the backend what is left, without copying payload.
        let mut skip = done;
        let mut rest = Vec::with_capacity(bufs.len());
        for b in bufs {
            if skip >= b.len() {
                skip -= b.len();
                continue;
            }
            rest.push(b.slice(skip..));
            skip = 0;
        }
        self.backend.write(off + done as u64, rest).await
    }
}

impl Backend {
    fn new(file: Arc<File>) -> Backend {
        let forced = std::env::var("LUNAR_IO_BACKEND").unwrap_or_default();
        if forced != "threads" {
            match uring::UringIo::new(file.clone()) {
                Ok(u) => {
                    tracing::debug!("storage data path: io_uring");
                    return Backend::Uring(u);
                }
                Err(e) => {
                    tracing::info!("io_uring unavailable ({e}); using the thread-pool backend")
                }
            }
        }
        Backend::Threads(threads::ThreadsIo::new(file))
    }

    fn name(&self) -> &'static str {
        match self {
            Backend::Threads(_) => "threads",
            Backend::Uring(_) => "io_uring",
        }
    }

    async fn read(&self, off: u64, len: usize) -> Result<Vec<u8>> {
        match self {
            Backend::Threads(t) => t.read(off, len).await,
            Backend::Uring(u) => u.read(off, len).await,
        }
    }

    async fn write(&self, off: u64, bufs: Vec<Bytes>) -> Result<()> {
        match self {
            Backend::Threads(t) => t.write(off, bufs).await,
            Backend::Uring(u) => u.write(off, bufs).await,
        }
    }
}

pub(crate) fn io_err(context: &str, e: std::io::Error) -> StorageError {
    StorageError::io(context, e)
}
