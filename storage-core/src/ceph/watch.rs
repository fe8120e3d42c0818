//! Watches on RADOS objects: a callback per notify (acknowledged with its reply when it
//! returns), an error callback when the watch breaks, and a guard that unwatches on drop.

use std::cell::Cell;
use std::ffi::{c_int, c_void, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Duration;

use lunar_ceph_sys as sys;

use super::error::{check, cstring, CephError, Result};
use super::IoCtx;

/// One notify delivered to a watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    /// The notify's id (librados acknowledges it for the callback).
    pub notify_id: u64,
    /// The notifying client's instance id.
    pub notifier_id: u64,
    /// What the notifier sent.
    pub payload: Vec<u8>,
}

type NotifyFn = dyn Fn(&Notification) -> Vec<u8> + Send + Sync;
type DeferredFn = dyn Fn(&Notification, PendingAck) + Send + Sync;
type ErrorFn = dyn Fn(CephError) + Send + Sync;

/// How a watch answers its notifies.
enum OnNotify {
    /// The callback's return value is the acknowledgement, sent when it returns.
    Now(Box<NotifyFn>),
    /// The callback gets a [`PendingAck`] and acknowledges whenever (from any thread).
    Deferred(Box<DeferredFn>),
}

/// The acknowledgement a deferred watch callback owes its notifier
/// ([`IoCtx::watch_deferred`]): [`PendingAck::ack`] sends it with a reply; dropping it sends
/// an empty one. Until then the notifier waits (at most its notify timeout), while other
/// notifies to this client are delivered: the librados callback thread is free.
pub struct PendingAck {
    ioctx: IoCtx,
    oid: CString,
    notify_id: u64,
    cookie: u64,
    sent: bool,
}

impl std::fmt::Debug for PendingAck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingAck")
            .field("notify_id", &self.notify_id)
            .field("cookie", &self.cookie)
            .finish_non_exhaustive()
    }
}

impl PendingAck {
    /// Acknowledge with `reply`. Blocking only briefly (the ack is queued to the OSD).
    pub fn ack(mut self, reply: &[u8]) {
        self.send(reply);
    }

    fn send(&mut self, reply: &[u8]) {
        if std::mem::replace(&mut self.sent, true) {
            return;
        }
        let len = c_int::try_from(reply.len()).unwrap_or(0);
        // SAFETY: the IoCtx clone keeps the handle alive; `oid` and `reply` outlive the
        // call. Acknowledging after the watch is gone only fails (logged).
        let ret = unsafe {
            sys::rados_notify_ack(
                self.ioctx.ptr(),
                self.oid.as_ptr(),
                self.notify_id,
                self.cookie,
                reply.as_ptr().cast(),
                len,
            )
        };
        if ret < 0 {
            tracing::warn!(oid = ?self.oid, errno = -ret, "acknowledging a notify failed");
        }
    }
}

impl Drop for PendingAck {
    fn drop(&mut self) {
        self.send(&[]);
    }
}

/// What librados' callbacks get as their argument. Boxed, so its address is stable; freed
/// only after the watch is removed and librados' callback queue is flushed.
struct WatchCtx {
    ioctx: IoCtx,
    oid: CString,
    oid_text: String,
    on_notify: OnNotify,
    on_error: Box<ErrorFn>,
}

thread_local! {
    /// Set while this thread runs a watch callback: dropping a [`Watch`] there must not
    /// flush librados' callback queue (it would wait for itself).
    static IN_CALLBACK: Cell<bool> = const { Cell::new(false) };
}

/// A registered watch; dropping it unwatches (blocking briefly: it waits for callbacks
/// already queued to finish). If the error callback reported an error the watch is dead:
/// drop it and watch again (with [`IoCtx::watch`]; after a blocklist, from a new client).
pub struct Watch {
    ctx: *mut WatchCtx,
    cookie: u64,
}

// SAFETY: `Watch` only holds the context pointer to free it on drop (after unwatching) and
// to read the immutable `ioctx`/`oid`; the context's contents are Send + Sync.
unsafe impl Send for Watch {}
// SAFETY: as above; `&Watch` only allows `check`, which reads immutable fields.
unsafe impl Sync for Watch {}

impl std::fmt::Debug for Watch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watch")
            .field("oid", &self.ctx_ref().oid_text)
            .field("cookie", &self.cookie)
            .finish()
    }
}

impl IoCtx {
    /// Watch `oid` (which must exist). `on_notify` runs on a librados thread for every
    /// notify; what it returns is the acknowledgement's payload. It should be quick (hand
    /// the work to a channel): notifies to this client are delivered one at a time.
    /// `on_error` runs when the watch breaks (e.g. `ENOTCONN` after a lost connection,
    /// `ESHUTDOWN` when blocklisted); the watch is then dead.
    pub fn watch<N, E>(&self, oid: &str, on_notify: N, on_error: E) -> Result<Watch>
    where
        N: Fn(&Notification) -> Vec<u8> + Send + Sync + 'static,
        E: Fn(CephError) + Send + Sync + 'static,
    {
        self.watch_inner(
            oid,
            None,
            OnNotify::Now(Box::new(on_notify)),
            Box::new(on_error),
        )
    }

    /// As [`IoCtx::watch_with_timeout`], but `on_notify` acknowledges when it likes: it gets
    /// the notify's [`PendingAck`] and may hand it (and the work) to another thread, so a
    /// slow notice does not hold up the ones behind it on librados' callback thread while
    /// its notifier still waits for the work to be done.
    pub fn watch_deferred<N, E>(
        &self,
        oid: &str,
        timeout: Duration,
        on_notify: N,
        on_error: E,
    ) -> Result<Watch>
    where
        N: Fn(&Notification, PendingAck) + Send + Sync + 'static,
        E: Fn(CephError) + Send + Sync + 'static,
    {
        let secs = u32::try_from(timeout.as_secs()).unwrap_or(u32::MAX).max(1);
        self.watch_inner(
            oid,
            Some(secs),
            OnNotify::Deferred(Box::new(on_notify)),
            Box::new(on_error),
        )
    }

    /// As [`IoCtx::watch`], but the OSD drops the watch when this client has not confirmed
    /// it for `timeout` (whole seconds, at least 1) instead of the cluster's
    /// `osd_client_watch_timeout` (30 s): a dead watcher then stops delaying every notify
    /// (which waits for its acknowledgement until the notify's own timeout) sooner.
    pub fn watch_with_timeout<N, E>(
        &self,
        oid: &str,
        timeout: Duration,
        on_notify: N,
        on_error: E,
    ) -> Result<Watch>
    where
        N: Fn(&Notification) -> Vec<u8> + Send + Sync + 'static,
        E: Fn(CephError) + Send + Sync + 'static,
    {
        let secs = u32::try_from(timeout.as_secs()).unwrap_or(u32::MAX).max(1);
        self.watch_inner(
            oid,
            Some(secs),
            OnNotify::Now(Box::new(on_notify)),
            Box::new(on_error),
        )
    }

    fn watch_inner(
        &self,
        oid: &str,
        timeout_secs: Option<u32>,
        on_notify: OnNotify,
        on_error: Box<ErrorFn>,
    ) -> Result<Watch> {
        let ctx = Box::into_raw(Box::new(WatchCtx {
            ioctx: self.clone(),
            oid: cstring("object name", oid)?,
            oid_text: oid.to_string(),
            on_notify,
            on_error,
        }));
        let mut cookie: u64 = 0;
        // SAFETY: live context; `ctx` stays allocated (and unmoved) until Watch::drop has
        // unwatched and flushed the callbacks, or is freed right below if watching failed
        // (then librados never calls back with it).
        let ret = unsafe {
            match timeout_secs {
                None => sys::rados_watch2(
                    self.ptr(),
                    (*ctx).oid.as_ptr(),
                    &mut cookie,
                    Some(notify_cb),
                    Some(error_cb),
                    ctx.cast::<c_void>(),
                ),
                Some(t) => sys::rados_watch3(
                    self.ptr(),
                    (*ctx).oid.as_ptr(),
                    &mut cookie,
                    Some(notify_cb),
                    Some(error_cb),
                    t,
                    ctx.cast::<c_void>(),
                ),
            }
        };
        if ret < 0 {
            // SAFETY: the watch was not registered, so nothing else holds `ctx`.
            drop(unsafe { Box::from_raw(ctx) });
            return Err(CephError::os(
                format!("watching object {oid} in pool {}", self.pool()),
                ret,
            ));
        }
        Ok(Watch { ctx, cookie })
    }
}

impl Watch {
    fn ctx_ref(&self) -> &WatchCtx {
        // SAFETY: `ctx` is valid for the Watch's whole life (freed only in drop).
        unsafe { &*self.ctx }
    }

    /// The watch's cookie (handle), as notifies' acknowledgements list it.
    pub fn cookie(&self) -> u64 {
        self.cookie
    }

    /// How long ago the OSD last confirmed the watch, or the error that broke it.
    pub fn check(&self) -> Result<Duration> {
        let c = self.ctx_ref();
        // SAFETY: live context, cookie of a registered watch.
        let ms = check(
            unsafe { sys::rados_watch_check(c.ioctx.ptr(), self.cookie) },
            || format!("checking the watch on object {}", c.oid_text),
        )?;
        Ok(Duration::from_millis(u64::try_from(ms).unwrap_or(0)))
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let (io, cluster) = {
            let c = self.ctx_ref();
            (c.ioctx.ptr(), c.ioctx.rados().ptr())
        };
        // SAFETY: registered watch on a live context (the context owns an IoCtx clone).
        let ret = unsafe { sys::rados_unwatch2(io, self.cookie) };
        if ret < 0 {
            tracing::debug!(errno = -ret, oid = %self.ctx_ref().oid_text, "unwatch failed (watch already broken)");
        }
        if IN_CALLBACK.with(Cell::get) {
            // Flushing from a callback would wait for itself. Leak the (small) context: a
            // callback still queued may use it, so it must not be freed.
            tracing::warn!(oid = %self.ctx_ref().oid_text, "watch dropped inside a watch callback: its context is leaked");
            return;
        }
        // SAFETY: live cluster handle; after this returns no callback for our (removed)
        // watch is running or queued, so the context can be freed.
        unsafe { sys::rados_watch_flush(cluster) };
        // SAFETY: allocated by Box::into_raw in `watch`, freed once, no longer referenced.
        drop(unsafe { Box::from_raw(self.ctx) });
    }
}

/// librados' notify callback: run the user's callback, then acknowledge with its reply.
unsafe extern "C" fn notify_cb(
    arg: *mut c_void,
    notify_id: u64,
    handle: u64,
    notifier_id: u64,
    data: *mut c_void,
    data_len: usize,
) {
    // SAFETY: `arg` is the WatchCtx registered with this watch, alive until the watch is
    // removed and callbacks flushed (Watch::drop), which cannot happen while we run.
    let ctx = unsafe { &*arg.cast::<WatchCtx>() };
    let payload = if data.is_null() || data_len == 0 {
        Vec::new()
    } else {
        // SAFETY: librados passes `data_len` readable bytes at `data` for this call.
        unsafe { std::slice::from_raw_parts(data.cast::<u8>(), data_len) }.to_vec()
    };
    let n = Notification {
        notify_id,
        notifier_id,
        payload,
    };
    let on_notify = match &ctx.on_notify {
        OnNotify::Now(f) => f,
        OnNotify::Deferred(f) => {
            let pending = PendingAck {
                ioctx: ctx.ioctx.clone(),
                oid: ctx.oid.clone(),
                notify_id,
                cookie: handle,
                sent: false,
            };
            IN_CALLBACK.with(|f| f.set(true));
            // A panic drops the PendingAck (an empty acknowledgement) and must not unwind
            // into C.
            if catch_unwind(AssertUnwindSafe(|| f(&n, pending))).is_err() {
                tracing::error!(oid = %ctx.oid_text, "watch callback panicked");
            }
            IN_CALLBACK.with(|f| f.set(false));
            return;
        }
    };
    IN_CALLBACK.with(|f| f.set(true));
    // A panic must not unwind into C (that aborts): it becomes an empty reply.
    let reply = catch_unwind(AssertUnwindSafe(|| on_notify(&n))).unwrap_or_else(|_| {
        tracing::error!(oid = %ctx.oid_text, "watch callback panicked");
        Vec::new()
    });
    IN_CALLBACK.with(|f| f.set(false));
    let len = c_int::try_from(reply.len()).unwrap_or(0);
    // SAFETY: live context and name (owned by ctx); `reply` outlives the call.
    let ret = unsafe {
        sys::rados_notify_ack(
            ctx.ioctx.ptr(),
            ctx.oid.as_ptr(),
            notify_id,
            handle,
            reply.as_ptr().cast(),
            len,
        )
    };
    if ret < 0 {
        tracing::warn!(oid = %ctx.oid_text, errno = -ret, "acknowledging a notify failed");
    }
}

/// librados' watch error callback.
unsafe extern "C" fn error_cb(arg: *mut c_void, _cookie: u64, err: c_int) {
    // SAFETY: as in notify_cb.
    let ctx = unsafe { &*arg.cast::<WatchCtx>() };
    let e = CephError::os(
        format!(
            "watch on object {} in pool {}",
            ctx.oid_text,
            ctx.ioctx.pool()
        ),
        err,
    );
    IN_CALLBACK.with(|f| f.set(true));
    if catch_unwind(AssertUnwindSafe(|| (ctx.on_error)(e))).is_err() {
        tracing::error!(oid = %ctx.oid_text, "watch error callback panicked");
    }
    IN_CALLBACK.with(|f| f.set(false));
}
