//! RBD images: asynchronous I/O through librbd's aio calls whose completion callbacks
//! complete tokio oneshots (no tokio worker ever blocks on the cluster), synchronous I/O for
//! the metadata commit thread, and librbd's exclusive lock for fencing.
//!
//! Cancellation safety: everything librbd reads or writes during an aio (the data buffers,
//! the iovec array, compare-and-write's mismatch offset) is owned by a heap context that the
//! completion callback frees. A future dropped before completion only drops the receiving
//! end; librbd still writes into memory that is alive, and the callback frees it.

use std::ffi::{c_char, c_int, c_void, CStr};
use std::future::Future;
use std::mem::MaybeUninit;
use std::ptr;
use std::sync::Arc;

use bytes::Bytes;
use lunar_ceph_sys as sys;
use parking_lot::{Condvar, Mutex};
use tokio::sync::oneshot;

use super::error::{check, cstring, CephError, Result};
use super::IoCtx;

/// librbd rejects more iovecs than this in one call.
const IOV_MAX: usize = 1024;
/// Largest synchronous call (librbd's sync calls return the byte count as an int).
const SYNC_CHUNK: usize = 64 << 20;
/// Largest single asynchronous read or write (librbd reports the byte count of an aio in
/// an `ssize_t`, and a bigger buffer than this is a caller's bug, not a request to serve).
const MAX_AIO: usize = 1 << 30;

/// Counts the aio operations librbd still owns, so closing the image waits for them.
#[derive(Default)]
struct InFlight {
    count: Mutex<usize>,
    idle: Condvar,
}

impl InFlight {
    fn start(&self) {
        *self.count.lock() += 1;
    }
    fn done(&self) {
        let mut n = self.count.lock();
        *n = n.saturating_sub(1);
        if *n == 0 {
            self.idle.notify_all();
        }
    }
    fn wait_idle(&self) {
        let mut n = self.count.lock();
        while *n > 0 {
            self.idle.wait(&mut n);
        }
    }
}

/// Owns the `rbd_image_t`; closed when the last [`RbdImage`] clone is dropped.
struct ImageHandle {
    ptr: sys::rbd_image_t,
    name: String,
    inflight: Arc<InFlight>,
    /// Keeps the pool context (and so the cluster connection) alive while the image is open;
    /// dropped by hand after the close (`Drop`), on whichever thread closes.
    ioctx: std::mem::ManuallyDrop<IoCtx>,
}

// SAFETY: librbd image handles are thread-safe: aio and synchronous calls may be issued
// concurrently from any thread (librbd serialises internally with its own locks). Only
// rbd_close must not race with other calls, and it runs in Drop, when nothing else can
// reach the handle.
unsafe impl Send for ImageHandle {}
// SAFETY: as above.
unsafe impl Sync for ImageHandle {}

impl ImageHandle {
    /// Waits for the in-flight aio, then closes the image.
    fn close(&self) {
        // Completions still pending refer to the image inside librbd; let them finish.
        self.inflight.wait_idle();
        // SAFETY: opened by rbd_open, closed once, no operation in flight.
        let ret = unsafe { sys::rbd_close(self.ptr) };
        if ret < 0 {
            tracing::warn!(image = %self.name, errno = -ret, "closing RBD image failed");
        }
    }
}

impl Drop for ImageHandle {
    fn drop(&mut self) {
        // SAFETY: taken exactly once, here; nothing reads the field afterwards.
        let ioctx = unsafe { std::mem::ManuallyDrop::take(&mut self.ioctx) };
        if !crate::completion::on_completion_thread() {
            self.close();
            drop(ioctx);
            return;
        }
        // The last clone went away inside a librbd completion (a task run on librbd's
        // completion thread dropped it): that completion may be this image's own, still
        // counted in flight, and librbd's thread must not close an image (nor shut down the
        // cluster connection, should the pool context be its last user) from its own
        // callback. The close, and the pool context with it, move to a thread of their own.
        // Not dropped here if the thread cannot start (that drop would come back here).
        let handle = std::mem::ManuallyDrop::new(ImageHandle {
            ptr: self.ptr,
            name: std::mem::take(&mut self.name),
            inflight: self.inflight.clone(),
            ioctx: std::mem::ManuallyDrop::new(ioctx),
        });
        let spawned = std::thread::Builder::new()
            .name("lunar-rbd-close".into())
            .spawn(move || drop(std::mem::ManuallyDrop::into_inner(handle)));
        if let Err(e) = spawned {
            // Leaking the image (librbd's memory for it) beats a deadlock.
            tracing::error!("cannot start a thread to close an RBD image: {e}; leaving it open");
        }
    }
}

/// An open RBD image. Cheap to clone; the image closes when the last clone is dropped
/// (which waits for its in-flight aio and blocks: drop it off the async workers if you can).
#[derive(Clone)]
pub struct RbdImage {
    inner: Arc<ImageHandle>,
}

impl std::fmt::Debug for RbdImage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RbdImage")
            .field("pool", &self.inner.ioctx.pool())
            .field("name", &self.inner.name)
            .finish()
    }
}

/// What an aio owns until its completion callback runs.
struct AioCtx<T> {
    tx: oneshot::Sender<(isize, T)>,
    keep: T,
    inflight: Arc<InFlight>,
}

/// librbd's completion callback for an `AioCtx<T>`.
unsafe extern "C" fn aio_done<T: Send + 'static>(c: sys::rbd_completion_t, arg: *mut c_void) {
    // SAFETY: `arg` is the Box<AioCtx<T>> leaked in `submit` for this completion; librbd
    // calls back exactly once, after it stopped using the memory the context owns.
    let ctx = unsafe { Box::from_raw(arg.cast::<AioCtx<T>>()) };
    // SAFETY: `c` is this operation's completion, complete now; released exactly once here.
    let ret = unsafe {
        let r = sys::rbd_aio_get_return_value(c);
        sys::rbd_aio_release(c);
        r
    };
    let AioCtx { tx, keep, inflight } = *ctx;
    // A dropped future (receiver gone) just drops `keep` here. The wake-up is marked as a
    // storage completion: the woken task may run right here (`crate::completion`).
    crate::completion::completing(|| {
        let _ = tx.send((ret as isize, keep));
    });
    inflight.done();
}

/// Buffers of a write: the payload and the iovecs pointing into it.
struct WriteBufs {
    _bufs: Vec<Bytes>,
    iovs: Vec<libc::iovec>,
}

// SAFETY: the iovecs only point into the `Bytes` owned alongside them (immutable, shared
// memory that is Send + Sync); nothing writes through them.
unsafe impl Send for WriteBufs {}

/// What compare-and-write owns until completion.
struct CmpWrite {
    cmp: Bytes,
    data: Bytes,
    mismatch: u64,
}

impl RbdImage {
    /// Create image `name` of `size` bytes in `ioctx`'s pool with Ceph's default features
    /// (layering, exclusive-lock, object-map, fast-diff, deep-flatten) and 4 MiB objects.
    pub fn create(ioctx: &IoCtx, name: &str, size: u64) -> Result<()> {
        let n = cstring("image name", name)?;
        let mut order: c_int = 0;
        // SAFETY: live pool context, NUL-terminated name, valid out-pointer.
        let ret = unsafe {
            sys::rbd_create2(
                ioctx.ptr(),
                n.as_ptr(),
                size,
                u64::from(sys::RBD_FEATURES_DEFAULT),
                &mut order,
            )
        };
        check(ret, || {
            format!("creating RBD image {}/{name} ({size} bytes)", ioctx.pool())
        })?;
        Ok(())
    }

    /// Remove image `name` (it must not be open anywhere).
    pub fn remove(ioctx: &IoCtx, name: &str) -> Result<()> {
        let n = cstring("image name", name)?;
        // SAFETY: live pool context, NUL-terminated name.
        check(unsafe { sys::rbd_remove(ioctx.ptr(), n.as_ptr()) }, || {
            format!("removing RBD image {}/{name}", ioctx.pool())
        })?;
        Ok(())
    }

    /// Open image `name` (blocking). Refused ([`CephError::Invalid`]) when a pool or image
    /// configuration override turns `rbd_cache` back on for it: with a write-back cache a
    /// completed write would not be on the OSDs, and Lunar reports WCE=0 for RBD pools.
    pub fn open(ioctx: &IoCtx, name: &str) -> Result<RbdImage> {
        let n = cstring("image name", name)?;
        let mut ptr: sys::rbd_image_t = ptr::null_mut();
        // SAFETY: live pool context, NUL-terminated name, valid out-pointer, no snapshot.
        let ret = unsafe { sys::rbd_open(ioctx.ptr(), n.as_ptr(), &mut ptr, ptr::null()) };
        check(ret, || format!("opening RBD image {}/{name}", ioctx.pool()))?;
        let image = RbdImage {
            inner: Arc::new(ImageHandle {
                ptr,
                name: name.to_string(),
                inflight: Arc::default(),
                ioctx: std::mem::ManuallyDrop::new(ioctx.clone()),
            }),
        };
        // Dropping `image` on the error paths closes it.
        match image.effective_option("rbd_cache")?.as_deref() {
            Some("false") => Ok(image),
            other => Err(CephError::Invalid(format!(
                "{}: rbd_cache is {other:?} (a pool or image config override?); Lunar needs it \
                 false (remove the override: rbd config image/pool rm ... rbd_cache)",
                image.ctx("opening")
            ))),
        }
    }

    /// The value librbd applies to this image for option `name`, after the client's
    /// configuration and any pool or image overrides; `None` if librbd has no such option.
    fn effective_option(&self, name: &str) -> Result<Option<String>> {
        let mut cap: c_int = 256;
        for _ in 0..4 {
            let len = usize::try_from(cap).unwrap_or(0);
            let empty = sys::rbd_config_option_t {
                name: ptr::null_mut(),
                value: ptr::null_mut(),
                source: 0,
            };
            let mut opts = vec![empty; len];
            let mut n = cap;
            // SAFETY: open image; `opts` has room for `n` entries, which librbd fills with
            // strings it allocates (freed below with rbd_config_image_list_cleanup).
            let ret = unsafe { sys::rbd_config_image_list(self.ptr(), opts.as_mut_ptr(), &mut n) };
            if ret == -libc::ERANGE {
                cap = n.max(cap * 2);
                continue;
            }
            check(ret, || self.ctx("listing the image's configuration"))?;
            let count = usize::try_from(n).unwrap_or(0).min(len);
            let value = opts[..count].iter().find_map(|o| {
                if o.name.is_null() || o.value.is_null() {
                    return None;
                }
                // SAFETY: non-null entries are NUL-terminated strings from librbd, alive
                // until the cleanup below.
                let (k, v) = unsafe { (CStr::from_ptr(o.name), CStr::from_ptr(o.value)) };
                (k.to_bytes() == name.as_bytes()).then(|| v.to_string_lossy().into_owned())
            });
            // SAFETY: frees exactly the `n` entries librbd filled in, once.
            unsafe { sys::rbd_config_image_list_cleanup(opts.as_mut_ptr(), n) };
            return Ok(value);
        }
        Err(CephError::Invalid(self.ctx(
            "listing the image's configuration: the list keeps growing",
        )))
    }

    fn ptr(&self) -> sys::rbd_image_t {
        self.inner.ptr
    }

    /// The image's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    fn ctx(&self, what: &str) -> String {
        format!(
            "{what} on RBD image {}/{}",
            self.inner.ioctx.pool(),
            self.inner.name
        )
    }

    /// The image's size in bytes.
    pub fn size(&self) -> Result<u64> {
        let mut size = 0u64;
        // SAFETY: open image, valid out-pointer.
        check(unsafe { sys::rbd_get_size(self.ptr(), &mut size) }, || {
            self.ctx("getting the size")
        })?;
        Ok(size)
    }

    /// Grow or shrink the image to `size` bytes (blocking).
    pub fn resize(&self, size: u64) -> Result<()> {
        // SAFETY: open image.
        check(unsafe { sys::rbd_resize(self.ptr(), size) }, || {
            self.ctx(&format!("resizing to {size}"))
        })?;
        Ok(())
    }

    /// Start one aio: box `keep`, let `prepare` derive the raw pointers librbd needs from
    /// the boxed (address-stable) `keep`, then `start` the operation with a completion whose
    /// callback sends `(return value, keep)` back. Returns the receiver to await.
    ///
    /// # Safety
    /// `start` must issue exactly one librbd aio on the given completion (or fail without
    /// using it) and may only hand librbd pointers produced by `prepare`. Those point into
    /// `keep` after it was boxed (its fields and their heap buffers), so they stay valid
    /// until the completion callback frees the box.
    unsafe fn submit<T, P>(
        &self,
        what: &str,
        keep: T,
        prepare: impl FnOnce(&mut T) -> P,
        start: impl FnOnce(sys::rbd_image_t, P, sys::rbd_completion_t) -> c_int,
    ) -> Result<oneshot::Receiver<(isize, T)>>
    where
        T: Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let mut boxed = Box::new(AioCtx {
            tx,
            keep,
            inflight: self.inner.inflight.clone(),
        });
        let pointers = prepare(&mut boxed.keep);
        let arg = Box::into_raw(boxed);
        let mut c: sys::rbd_completion_t = ptr::null_mut();
        // SAFETY: valid out-pointer; the callback matches rbd_callback_t and `arg` is the
        // context it expects.
        let ret =
            unsafe { sys::rbd_aio_create_completion(arg.cast(), Some(aio_done::<T>), &mut c) };
        if ret < 0 {
            // SAFETY: no completion exists, nothing else refers to `arg`.
            drop(unsafe { Box::from_raw(arg) });
            return Err(CephError::os(self.ctx(what), ret));
        }
        self.inner.inflight.start();
        let ret = start(self.ptr(), pointers, c);
        if ret < 0 {
            // librbd validates its arguments before queueing and returns an error without
            // ever calling back; the completion and context are still ours.
            // SAFETY: as just said; each is released exactly once.
            unsafe {
                sys::rbd_aio_release(c);
                drop(Box::from_raw(arg));
            }
            self.inner.inflight.done();
            return Err(CephError::os(self.ctx(what), ret));
        }
        Ok(rx)
    }

    /// Wait for an aio's result.
    async fn finish<T>(&self, what: &str, rx: oneshot::Receiver<(isize, T)>) -> Result<(isize, T)> {
        let (ret, keep) = rx
            .await
            .map_err(|_| CephError::Invalid(format!("{}: completion lost", self.ctx(what))))?;
        if ret < 0 {
            return Err(CephError::os(self.ctx(what), ret as i64));
        }
        Ok((ret, keep))
    }

    /// Read exactly `len` bytes at `off` (asynchronously; librbd reads into a buffer the
    /// operation owns, which becomes the result).
    pub fn read(
        &self,
        off: u64,
        len: usize,
    ) -> impl Future<Output = Result<Vec<u8>>> + Send + 'static {
        let this = self.clone();
        async move {
            if len == 0 {
                return Ok(Vec::new());
            }
            let what = format!("reading {len} bytes at {off}");
            if len > MAX_AIO {
                return Err(CephError::Invalid(format!(
                    "{}: larger than {MAX_AIO} bytes",
                    this.ctx(&what)
                )));
            }
            let buf: Vec<u8> = Vec::with_capacity(len);
            // SAFETY: rbd_aio_read writes at most `len` bytes at the pointer, which points to
            // the boxed Vec's heap buffer of `len` bytes capacity (owned by the context until
            // the callback).
            let rx = unsafe {
                this.submit(
                    &what,
                    buf,
                    |b| b.as_mut_ptr(),
                    |img, p, c| sys::rbd_aio_read(img, off, len, p.cast::<c_char>(), c),
                )?
            };
            let (ret, mut buf) = this.finish(&what, rx).await?;
            if ret as usize != len {
                return Err(CephError::Invalid(format!(
                    "{}: short read ({ret} bytes)",
                    this.ctx(&what)
                )));
            }
            // SAFETY: librbd reported `len` bytes read into the buffer (its capacity).
            unsafe { buf.set_len(len) };
            Ok(buf)
        }
    }

    /// Fill `buf` (which need not be initialised) from `off`. The data lands in a buffer the
    /// operation owns and is copied into `buf` (a borrowed buffer cannot outlive a dropped
    /// future); use [`RbdImage::read`] to avoid the copy.
    pub async fn read_into(&self, off: u64, buf: &mut [MaybeUninit<u8>]) -> Result<()> {
        let data = self.read(off, buf.len()).await?;
        // SAFETY: `data` holds exactly buf.len() initialised bytes; the regions are distinct.
        unsafe {
            ptr::copy_nonoverlapping(data.as_ptr(), buf.as_mut_ptr().cast::<u8>(), data.len())
        };
        Ok(())
    }

    /// Write the buffers back to back at `off` without gathering them first: librbd gets
    /// iovecs over the `Bytes`, which the operation keeps alive until librbd completes.
    /// (librbd itself copies the payload into its messages: its zero-copy mode is left off,
    /// see `Rados::connect_with`.)
    pub fn writev(
        &self,
        off: u64,
        bufs: Vec<Bytes>,
    ) -> impl Future<Output = Result<()>> + Send + 'static {
        let this = self.clone();
        async move {
            let mut bufs: Vec<Bytes> = bufs.into_iter().filter(|b| !b.is_empty()).collect();
            let total: usize = bufs.iter().map(Bytes::len).sum();
            if total == 0 {
                return Ok(());
            }
            if total > MAX_AIO {
                let what = format!("writing {total} bytes at {off}");
                return Err(CephError::Invalid(format!(
                    "{}: larger than {MAX_AIO} bytes",
                    this.ctx(&what)
                )));
            }
            if bufs.len() > IOV_MAX {
                // Rare: more pieces than one librbd call takes. One copy beats failing.
                let mut all = Vec::with_capacity(total);
                bufs.iter().for_each(|b| all.extend_from_slice(b));
                bufs = vec![Bytes::from(all)];
            }
            let iovs = bufs
                .iter()
                .map(|b| libc::iovec {
                    iov_base: b.as_ptr().cast_mut().cast(),
                    iov_len: b.len(),
                })
                .collect();
            let what = format!("writing {total} bytes at {off}");
            // SAFETY: the iovecs point into the Bytes owned by the same context, which
            // librbd only reads; the iovec array itself is the boxed Vec's heap buffer. Both
            // live until the completion callback.
            let rx = unsafe {
                this.submit(
                    &what,
                    WriteBufs { _bufs: bufs, iovs },
                    |w| (w.iovs.as_ptr(), w.iovs.len() as c_int),
                    |img, (iov, n), c| sys::rbd_aio_writev(img, iov, n, off, c),
                )?
            };
            let (ret, _) = this.finish(&what, rx).await?;
            if ret as usize != total && ret != 0 {
                return Err(CephError::Invalid(format!(
                    "{}: short write ({ret} bytes)",
                    this.ctx(&what)
                )));
            }
            Ok(())
        }
    }

    /// Discard (deallocate) `len` bytes at `off`; they read back as zeroes.
    pub fn discard(&self, off: u64, len: u64) -> impl Future<Output = Result<()>> + Send + 'static {
        let this = self.clone();
        async move {
            let what = format!("discarding {len} bytes at {off}");
            // SAFETY: no pointers involved.
            let rx = unsafe {
                this.submit(
                    &what,
                    (),
                    |_| (),
                    |img, (), c| sys::rbd_aio_discard(img, off, len, c),
                )?
            };
            this.finish(&what, rx).await.map(|_| ())
        }
    }

    /// Flush: every write completed before this call is durable when it returns (with
    /// `rbd_cache = false` a completed write already is; this is the barrier regardless).
    pub fn flush(&self) -> impl Future<Output = Result<()>> + Send + 'static {
        let this = self.clone();
        async move {
            // SAFETY: no pointers involved.
            let rx = unsafe {
                this.submit(
                    "flushing",
                    (),
                    |_| (),
                    |img, (), c| sys::rbd_aio_flush(img, c),
                )?
            };
            this.finish("flushing", rx).await.map(|_| ())
        }
    }

    /// Atomically write `data` at `off` if the image holds `cmp` there (same length, at
    /// most one 512-byte-aligned sector range within one object); otherwise nothing is
    /// written and the error is [`CephError::Mismatch`] with the offset of the first
    /// differing byte relative to `off`.
    pub fn compare_and_write(
        &self,
        off: u64,
        cmp: Bytes,
        data: Bytes,
    ) -> impl Future<Output = Result<()>> + Send + 'static {
        let this = self.clone();
        async move {
            let len = data.len();
            let what = format!("compare-and-write of {len} bytes at {off}");
            if cmp.len() != len {
                return Err(CephError::Invalid(format!(
                    "{}: compare buffer is {} bytes",
                    this.ctx(&what),
                    cmp.len()
                )));
            }
            // SAFETY: the pointers are into the Bytes and the u64 owned by the boxed
            // context (stable until the callback); librbd reads the buffers and writes the
            // mismatch offset.
            let rx = unsafe {
                this.submit(
                    &what,
                    CmpWrite {
                        cmp,
                        data,
                        mismatch: 0,
                    },
                    |k| (k.cmp.as_ptr(), k.data.as_ptr(), &mut k.mismatch as *mut u64),
                    |img, (cmpp, datap, mis), c| {
                        sys::rbd_aio_compare_and_write(
                            img,
                            off,
                            len,
                            cmpp.cast(),
                            datap.cast(),
                            c,
                            mis,
                            0,
                        ) as c_int
                    },
                )?
            };
            let (ret, keep) = rx
                .await
                .map_err(|_| CephError::Invalid(format!("{}: completion lost", this.ctx(&what))))?;
            if ret == -(libc::EILSEQ as isize) {
                return Err(CephError::Mismatch {
                    context: this.ctx(&what),
                    offset: keep.mismatch,
                });
            }
            if ret < 0 {
                return Err(CephError::os(this.ctx(&what), ret as i64));
            }
            Ok(())
        }
    }

    /// Read exactly `buf.len()` bytes at `off`, blocking (the metadata commit thread).
    pub fn read_at(&self, off: u64, buf: &mut [u8]) -> Result<()> {
        let mut done = 0usize;
        while done < buf.len() {
            let n = (buf.len() - done).min(SYNC_CHUNK);
            let at = off + done as u64;
            // SAFETY: open image; librbd writes at most `n` bytes into buf[done..done + n].
            let ret = unsafe { sys::rbd_read(self.ptr(), at, n, buf[done..].as_mut_ptr().cast()) };
            if ret < 0 {
                return Err(CephError::os(
                    self.ctx(&format!("reading {n} bytes at {at}")),
                    ret as i64,
                ));
            }
            if ret == 0 {
                return Err(CephError::Invalid(
                    self.ctx(&format!("short read at {at} (past the end?)")),
                ));
            }
            done += ret as usize;
        }
        Ok(())
    }

    /// Write `buf` at `off`, blocking; it is on the OSDs when this returns.
    pub fn write_at(&self, off: u64, buf: &[u8]) -> Result<()> {
        let mut done = 0usize;
        while done < buf.len() {
            let n = (buf.len() - done).min(SYNC_CHUNK);
            let at = off + done as u64;
            // SAFETY: open image; librbd reads `n` bytes from buf[done..].
            let ret = unsafe { sys::rbd_write(self.ptr(), at, n, buf[done..].as_ptr().cast()) };
            if ret < 0 {
                return Err(CephError::os(
                    self.ctx(&format!("writing {n} bytes at {at}")),
                    ret as i64,
                ));
            }
            if ret == 0 {
                return Err(CephError::Invalid(
                    self.ctx(&format!("short write at {at}")),
                ));
            }
            done += ret as usize;
        }
        Ok(())
    }

    /// Flush, blocking.
    pub fn flush_sync(&self) -> Result<()> {
        // SAFETY: open image.
        check(unsafe { sys::rbd_flush(self.ptr()) }, || {
            self.ctx("flushing")
        })?;
        Ok(())
    }

    /// Take librbd's exclusive lock and keep it (no transparent hand-over to other clients
    /// that write). Fails (e.g. `EROFS`/`EBUSY`) while another live client holds it: break
    /// that lock first ([`RbdImage::lock_break`]).
    pub fn lock_acquire_exclusive(&self) -> Result<()> {
        // SAFETY: open image.
        let ret = unsafe { sys::rbd_lock_acquire(self.ptr(), sys::RBD_LOCK_MODE_EXCLUSIVE) };
        check(ret, || self.ctx("acquiring the exclusive lock"))?;
        Ok(())
    }

    /// Release the exclusive lock we hold.
    pub fn lock_release(&self) -> Result<()> {
        // SAFETY: open image.
        check(unsafe { sys::rbd_lock_release(self.ptr()) }, || {
            self.ctx("releasing the exclusive lock")
        })?;
        Ok(())
    }

    /// Whether this client holds the image's exclusive lock.
    pub fn is_lock_owner(&self) -> Result<bool> {
        let mut owner: c_int = 0;
        // SAFETY: open image, valid out-pointer.
        let ret = unsafe { sys::rbd_is_exclusive_lock_owner(self.ptr(), &mut owner) };
        check(ret, || self.ctx("asking for the lock owner"))?;
        Ok(owner != 0)
    }

    /// The clients holding the image's lock, as librbd names them (what
    /// [`RbdImage::lock_break`] takes). Empty when nobody does.
    pub fn lock_get_owners(&self) -> Result<Vec<String>> {
        let mut cap: usize = 4;
        for _ in 0..8 {
            let mut owners: Vec<*mut c_char> = vec![ptr::null_mut(); cap];
            let mut n = cap;
            let mut mode: sys::rbd_lock_mode_t = sys::RBD_LOCK_MODE_EXCLUSIVE;
            // SAFETY: open image; `owners` has room for `n` pointers, which librbd fills with
            // strings it allocates (freed below with rbd_lock_get_owners_cleanup).
            let ret = unsafe {
                sys::rbd_lock_get_owners(self.ptr(), &mut mode, owners.as_mut_ptr(), &mut n)
            };
            if ret == -libc::ERANGE {
                cap = n.max(cap * 2);
                continue;
            }
            if ret == -libc::ENOENT {
                return Ok(Vec::new());
            }
            check(ret, || self.ctx("listing the lock owners"))?;
            let n = n.min(cap);
            let names = owners[..n]
                .iter()
                .filter(|p| !p.is_null())
                // SAFETY: non-null entries are NUL-terminated strings from librbd.
                .map(|p| unsafe { CStr::from_ptr(*p) }.to_string_lossy().into_owned())
                .collect();
            // SAFETY: frees exactly the `n` strings librbd returned, once.
            unsafe { sys::rbd_lock_get_owners_cleanup(owners.as_mut_ptr(), n) };
            return Ok(names);
        }
        Err(CephError::Invalid(
            self.ctx("listing the lock owners: the list keeps growing"),
        ))
    }

    /// Break `owner`'s exclusive lock. librbd blocklists the owner's client first
    /// (`rbd_blocklist_on_break_lock`, on by default): its later writes fail with
    /// `ESHUTDOWN`. Then take the lock with [`RbdImage::lock_acquire_exclusive`].
    pub fn lock_break(&self, owner: &str) -> Result<()> {
        let o = cstring("lock owner", owner)?;
        // SAFETY: open image, NUL-terminated owner string.
        let ret =
            unsafe { sys::rbd_lock_break(self.ptr(), sys::RBD_LOCK_MODE_EXCLUSIVE, o.as_ptr()) };
        check(ret, || self.ctx(&format!("breaking the lock of {owner}")))?;
        Ok(())
    }
}
