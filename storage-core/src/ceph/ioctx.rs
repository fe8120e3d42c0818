//! A RADOS pool context: versioned whole-object reads and writes, cls_lock exclusive locks
//! and notify (watches are in `watch.rs`).

use std::ffi::{c_char, c_int};
use std::ptr;
use std::sync::Arc;
use std::time::Duration;

use lunar_ceph_sys as sys;

use super::error::{check, cstring, CephError, Result};
use super::Rados;

/// Owns the `rados_ioctx_t`; keeps the cluster connection alive.
struct IoCtxHandle {
    ptr: sys::rados_ioctx_t,
    pool: String,
    rados: Rados,
}

// SAFETY: librados I/O contexts may be used from several threads at once (operations go
// through the Objecter, which locks). The one piece of per-context mutable state that is not
// safe to share, the "last object version", is never read: versions come from each
// operation's own completion (rados_aio_get_version). The namespace and other setters that
// would race are not exposed.
unsafe impl Send for IoCtxHandle {}
// SAFETY: as above.
unsafe impl Sync for IoCtxHandle {}

impl Drop for IoCtxHandle {
    fn drop(&mut self) {
        // SAFETY: created by rados_ioctx_create, destroyed once, when no clone, watch or
        // image uses it (they hold the Arc); the cluster (`rados`) is still connected.
        unsafe { sys::rados_ioctx_destroy(self.ptr) };
    }
}

/// A RADOS pool context. Cheap to clone.
#[derive(Clone)]
pub struct IoCtx {
    inner: Arc<IoCtxHandle>,
}

impl std::fmt::Debug for IoCtx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IoCtx")
            .field("pool", &self.inner.pool)
            .finish()
    }
}

/// An object's whole content and its version (RADOS' user version, bumped by every write).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectData {
    /// The object's bytes.
    pub data: Vec<u8>,
    /// The version to pass to [`Expect::Version`] to overwrite exactly this content.
    pub version: u64,
}

/// What a versioned write expects of the object (a compare-and-swap on its version).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// The object must not exist (exclusive create).
    Absent,
    /// The object must exist at exactly this version.
    Version(u64),
    /// No expectation: overwrite or create.
    Any,
}

/// One holder of a cls_lock lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Locker {
    /// The holder's entity name, `client.<instance id>`.
    pub client: String,
    /// The cookie the holder locked with.
    pub cookie: String,
    /// The holder's address (what [`Rados::blocklist_add`] takes).
    pub addr: String,
}

/// The state of a cls_lock lock on an object.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LockInfo {
    /// Whether the lock is exclusive (false: shared, or nobody holds it).
    pub exclusive: bool,
    /// The lock's tag (empty for exclusive locks).
    pub tag: String,
    /// Who holds it; empty when nobody does (or the holder's duration expired).
    pub lockers: Vec<Locker>,
}

/// One watcher's acknowledgement of a notify.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotifyAck {
    /// The watcher's client instance id (`client.<id>`).
    pub notifier_id: u64,
    /// The watch's cookie (handle) in that client.
    pub cookie: u64,
    /// What the watcher's callback replied.
    pub payload: Vec<u8>,
}

/// The outcome of [`IoCtx::notify`]: who acknowledged and who did not within the timeout.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NotifyResult {
    /// Watchers that acknowledged.
    pub acks: Vec<NotifyAck>,
    /// Watchers (client instance id, cookie) that did not acknowledge in time.
    pub timeouts: Vec<(u64, u64)>,
}

impl NotifyResult {
    /// Whether every watcher acknowledged.
    pub fn all_acked(&self) -> bool {
        self.timeouts.is_empty()
    }
}

impl Rados {
    /// A context for RADOS pool `pool`.
    pub fn ioctx(&self, pool: &str) -> Result<IoCtx> {
        IoCtx::new(self.clone(), pool)
    }
}

impl IoCtx {
    fn new(rados: Rados, pool: &str) -> Result<IoCtx> {
        let p = cstring("pool name", pool)?;
        let mut ptr: sys::rados_ioctx_t = ptr::null_mut();
        // SAFETY: connected cluster handle (kept alive by `rados`, moved into the handle),
        // valid out-pointer, NUL-terminated pool name.
        let ret = unsafe { sys::rados_ioctx_create(rados.ptr(), p.as_ptr(), &mut ptr) };
        check(ret, || format!("opening RADOS pool {pool}"))?;
        Ok(IoCtx {
            inner: Arc::new(IoCtxHandle {
                ptr,
                pool: pool.to_string(),
                rados,
            }),
        })
    }

    pub(super) fn ptr(&self) -> sys::rados_ioctx_t {
        self.inner.ptr
    }

    /// The pool's name.
    pub fn pool(&self) -> &str {
        &self.inner.pool
    }

    /// The connection this context belongs to.
    pub fn rados(&self) -> &Rados {
        &self.inner.rados
    }

    /// Read the whole object and its version; `None` when it does not exist. The size and
    /// the data come from one atomic operation.
    pub fn read(&self, oid: &str) -> Result<Option<ObjectData>> {
        let o = cstring("object name", oid)?;
        let ctx = || format!("reading object {oid} in pool {}", self.pool());
        let mut cap: usize = 64 * 1024;
        loop {
            let mut buf: Vec<u8> = Vec::with_capacity(cap);
            let mut size: u64 = 0;
            let mut mtime: libc::time_t = 0;
            let mut stat_rval: c_int = 0;
            let mut bytes_read: usize = 0;
            let mut read_rval: c_int = 0;
            let op = ReadOp::new();
            // SAFETY: `op` is a live read op; every out-pointer points to a local that lives
            // until after the operation completed below (we wait for it), and `buf` has
            // `cap` bytes of capacity for librados to write into.
            unsafe {
                sys::rados_read_op_stat(op.0, &mut size, &mut mtime, &mut stat_rval);
                sys::rados_read_op_read(
                    op.0,
                    0,
                    cap,
                    buf.as_mut_ptr().cast(),
                    &mut bytes_read,
                    &mut read_rval,
                );
            }
            // SAFETY: `op` and `o` are live; `run` waits for the completion, so the
            // out-pointers above are written before they go out of scope.
            let (ret, version) = unsafe {
                run(&ctx, |c| {
                    sys::rados_aio_read_op_operate(op.0, self.ptr(), c, o.as_ptr(), 0)
                })?
            };
            if ret == -libc::ENOENT {
                return Ok(None);
            }
            if ret < 0 {
                return Err(CephError::os(ctx(), ret));
            }
            if stat_rval < 0 {
                return Err(CephError::os(ctx(), stat_rval));
            }
            let size = usize::try_from(size)
                .map_err(|_| CephError::Invalid(format!("{}: object too large", ctx())))?;
            if size > cap {
                cap = size;
                continue;
            }
            if read_rval < 0 {
                return Err(CephError::os(ctx(), read_rval));
            }
            if bytes_read > cap {
                return Err(CephError::Invalid(format!(
                    "{}: read overran its buffer",
                    ctx()
                )));
            }
            // SAFETY: librados wrote `bytes_read` (<= capacity) bytes into `buf`.
            unsafe { buf.set_len(bytes_read) };
            return Ok(Some(ObjectData { data: buf, version }));
        }
    }

    /// Replace the object's content if it is as `expect`ed; returns the new version. A
    /// failed expectation is [`CephError::Conflict`] (nothing was written).
    pub fn write_full(&self, oid: &str, data: &[u8], expect: Expect) -> Result<u64> {
        let o = cstring("object name", oid)?;
        let ctx = || format!("writing object {oid} in pool {} ({expect:?})", self.pool());
        let op = WriteOp::new();
        // SAFETY: `op` is a live write op; `data` outlives the synchronous wait in `run`
        // (librados copies it into the op's bufferlist in any case).
        unsafe {
            match expect {
                Expect::Absent => sys::rados_write_op_create(
                    op.0,
                    sys::LIBRADOS_CREATE_EXCLUSIVE as c_int,
                    ptr::null(),
                ),
                Expect::Version(v) => sys::rados_write_op_assert_version(op.0, v),
                Expect::Any => {}
            }
            sys::rados_write_op_write_full(op.0, data.as_ptr().cast(), data.len());
        }
        // SAFETY: live op, context and name; null mtime means "now".
        let (ret, version) = unsafe {
            run(&ctx, |c| {
                sys::rados_aio_write_op_operate(op.0, self.ptr(), c, o.as_ptr(), ptr::null_mut(), 0)
            })?
        };
        match (expect, -ret) {
            (_, 0) => Ok(version),
            (Expect::Absent, libc::EEXIST) => Err(CephError::Conflict { context: ctx() }),
            // assert_version: -ERANGE when the object is newer, -EOVERFLOW when older,
            // -ENOENT when it is gone.
            (Expect::Version(_), libc::ERANGE | libc::EOVERFLOW | libc::ENOENT) => {
                Err(CephError::Conflict { context: ctx() })
            }
            _ => Err(CephError::os(ctx(), ret)),
        }
    }

    /// Remove the object; `false` when it did not exist.
    pub fn remove(&self, oid: &str) -> Result<bool> {
        let o = cstring("object name", oid)?;
        // SAFETY: live context, NUL-terminated name.
        let ret = unsafe { sys::rados_remove(self.ptr(), o.as_ptr()) };
        match ret {
            0 => Ok(true),
            r if r == -libc::ENOENT => Ok(false),
            r => Err(CephError::os(
                format!("removing object {oid} in pool {}", self.pool()),
                r,
            )),
        }
    }

    /// Take (or, with `renew`, extend) the exclusive cls_lock `name` on `oid` as
    /// (this client, `cookie`). With a `duration` the OSD drops the lock when it was not
    /// renewed within it (the HA lease); `None` holds it until unlocked or broken.
    ///
    /// `renew = false`: [`CephError::Busy`] if another (client, cookie) holds it, `EEXIST`
    /// (as [`CephError::Os`]) if this one already does. `renew = true` (librados'
    /// MUST_RENEW): extends our own hold and never takes a lock we do not hold:
    /// [`CephError::NotHeld`] if our hold is gone (expired, broken, unlocked), whether the
    /// lock is free or someone else took it meanwhile.
    pub fn lock_exclusive(
        &self,
        oid: &str,
        name: &str,
        cookie: &str,
        desc: &str,
        duration: Option<Duration>,
        renew: bool,
    ) -> Result<()> {
        let o = cstring("object name", oid)?;
        let n = cstring("lock name", name)?;
        let c = cstring("lock cookie", cookie)?;
        let d = cstring("lock description", desc)?;
        let mut tv = duration.map(|d| libc::timeval {
            tv_sec: libc::time_t::try_from(d.as_secs()).unwrap_or(libc::time_t::MAX),
            tv_usec: libc::suseconds_t::from(d.subsec_micros() as i32),
        });
        let tvp = tv
            .as_mut()
            .map_or(ptr::null_mut(), |t| t as *mut libc::timeval);
        let flags = if renew {
            sys::LIBRADOS_LOCK_FLAG_MUST_RENEW as u8
        } else {
            0
        };
        let what = if renew { "renewing" } else { "taking" };
        let ctx = || format!("{what} lock {name} on object {oid} (cookie {cookie})");
        // SAFETY: live context; NUL-terminated strings and `tv` live across the call.
        let ret = unsafe {
            sys::rados_lock_exclusive(
                self.ptr(),
                o.as_ptr(),
                n.as_ptr(),
                c.as_ptr(),
                d.as_ptr(),
                tvp,
                flags,
            )
        };
        match -ret {
            0 => Ok(()),
            libc::EBUSY => Err(CephError::Busy { context: ctx() }),
            libc::ENOENT if renew => Err(CephError::NotHeld { context: ctx() }),
            _ => Err(CephError::os(ctx(), ret)),
        }
    }

    /// Release our (this client, `cookie`) hold of lock `name`; [`CephError::NotHeld`] if we
    /// do not hold it (it expired or was broken).
    pub fn unlock(&self, oid: &str, name: &str, cookie: &str) -> Result<()> {
        let o = cstring("object name", oid)?;
        let n = cstring("lock name", name)?;
        let c = cstring("lock cookie", cookie)?;
        let ctx = || format!("unlocking {name} on object {oid} (cookie {cookie})");
        // SAFETY: live context; NUL-terminated strings live across the call.
        let ret = unsafe { sys::rados_unlock(self.ptr(), o.as_ptr(), n.as_ptr(), c.as_ptr()) };
        match -ret {
            0 => Ok(()),
            libc::ENOENT => Err(CephError::NotHeld { context: ctx() }),
            _ => Err(CephError::os(ctx(), ret)),
        }
    }

    /// Remove another holder's hold of lock `name` (the holder as [`Locker`] shows it).
    /// This does not blocklist the holder: fence it with [`Rados::blocklist_add`].
    pub fn break_lock(&self, oid: &str, name: &str, client: &str, cookie: &str) -> Result<()> {
        let o = cstring("object name", oid)?;
        let n = cstring("lock name", name)?;
        let cl = cstring("lock client", client)?;
        let c = cstring("lock cookie", cookie)?;
        let ctx =
            || format!("breaking lock {name} on object {oid} held by {client} (cookie {cookie})");
        // SAFETY: live context; NUL-terminated strings live across the call.
        let ret = unsafe {
            sys::rados_break_lock(self.ptr(), o.as_ptr(), n.as_ptr(), cl.as_ptr(), c.as_ptr())
        };
        match -ret {
            0 => Ok(()),
            libc::ENOENT => Err(CephError::NotHeld { context: ctx() }),
            _ => Err(CephError::os(ctx(), ret)),
        }
    }

    /// Who holds lock `name` on `oid` (expired holds are not listed). An absent object or
    /// lock is an empty [`LockInfo`].
    pub fn list_lockers(&self, oid: &str, name: &str) -> Result<LockInfo> {
        let o = cstring("object name", oid)?;
        let n = cstring("lock name", name)?;
        let ctx = || format!("listing holders of lock {name} on object {oid}");
        let (mut tag_len, mut clients_len, mut cookies_len, mut addrs_len) =
            (256usize, 1024usize, 1024usize, 1024usize);
        for _ in 0..8 {
            let mut tag = vec![0u8; tag_len];
            let mut clients = vec![0u8; clients_len];
            let mut cookies = vec![0u8; cookies_len];
            let mut addrs = vec![0u8; addrs_len];
            let mut exclusive: c_int = 0;
            // SAFETY: live context; each buffer is as long as the length passed with it,
            // and librados writes at most that much (or reports -ERANGE with the sizes it
            // needs).
            let ret = unsafe {
                sys::rados_list_lockers(
                    self.ptr(),
                    o.as_ptr(),
                    n.as_ptr(),
                    &mut exclusive,
                    tag.as_mut_ptr().cast(),
                    &mut tag_len,
                    clients.as_mut_ptr().cast(),
                    &mut clients_len,
                    cookies.as_mut_ptr().cast(),
                    &mut cookies_len,
                    addrs.as_mut_ptr().cast(),
                    &mut addrs_len,
                )
            };
            if ret == -(libc::ERANGE as isize) {
                continue; // the lengths now say what is needed
            }
            if ret == -(libc::ENOENT as isize) {
                return Ok(LockInfo::default());
            }
            if ret < 0 {
                return Err(CephError::os(ctx(), ret as i64));
            }
            let count = ret as usize;
            let clients = split_nul(&clients, clients_len, count);
            let cookies = split_nul(&cookies, cookies_len, count);
            let addrs = split_nul(&addrs, addrs_len, count);
            if clients.len() != count || cookies.len() != count || addrs.len() != count {
                return Err(CephError::Invalid(format!(
                    "{}: malformed locker list",
                    ctx()
                )));
            }
            let tag = split_nul(&tag, tag_len, 1)
                .into_iter()
                .next()
                .unwrap_or_default();
            let lockers = clients
                .into_iter()
                .zip(cookies)
                .zip(addrs)
                .map(|((client, cookie), addr)| Locker {
                    client,
                    cookie,
                    addr,
                })
                .collect();
            return Ok(LockInfo {
                exclusive: exclusive != 0 && count > 0,
                tag,
                lockers,
            });
        }
        Err(CephError::Invalid(format!(
            "{}: locker list keeps growing",
            ctx()
        )))
    }

    /// Notify the watchers of `oid` with `payload` and wait (blocking) until every watcher
    /// acknowledged or `timeout` passed. Watchers that did not answer in time are listed in
    /// [`NotifyResult::timeouts`] (that is not an error: the caller decides).
    pub fn notify(&self, oid: &str, payload: &[u8], timeout: Duration) -> Result<NotifyResult> {
        let o = cstring("object name", oid)?;
        let ctx = || {
            format!(
                "notifying the watchers of object {oid} in pool {}",
                self.pool()
            )
        };
        let len = c_int::try_from(payload.len())
            .map_err(|_| CephError::Invalid(format!("{}: payload too large", ctx())))?;
        let ms = u64::try_from(timeout.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        let mut reply: *mut c_char = ptr::null_mut();
        let mut reply_len: usize = 0;
        // SAFETY: live context; name and payload outlive the (synchronous) call; the reply
        // out-pointers are valid.
        let ret = unsafe {
            sys::rados_notify2(
                self.ptr(),
                o.as_ptr(),
                payload.as_ptr().cast(),
                len,
                ms,
                &mut reply,
                &mut reply_len,
            )
        };
        let parsed =
            if reply.is_null() {
                None
            } else {
                // SAFETY: librados returned a buffer of `reply_len` bytes; we copy it out and
                // free it exactly once with rados_buffer_free.
                let bytes =
                    unsafe { std::slice::from_raw_parts(reply.cast::<u8>(), reply_len) }.to_vec();
                // SAFETY: as above; not used afterwards.
                unsafe { sys::rados_buffer_free(reply) };
                Some(parse_notify_reply(&bytes).ok_or_else(|| {
                    CephError::Invalid(format!("{}: malformed notify reply", ctx()))
                })?)
            };
        match (ret, parsed) {
            (0, Some(r)) => Ok(r),
            (0, None) => Ok(NotifyResult::default()),
            (r, Some(res)) if r == -libc::ETIMEDOUT => Ok(res),
            (r, _) => Err(CephError::os(ctx(), r)),
        }
    }
}

/// `count` NUL-terminated strings from the first `len` bytes of `buf`.
fn split_nul(buf: &[u8], len: usize, count: usize) -> Vec<String> {
    let buf = &buf[..len.min(buf.len())];
    buf.split(|b| *b == 0)
        .take(count)
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect()
}

/// Decode librados' notify reply: le32 n, n × (le64 gid, le64 cookie, le32 len, payload),
/// le32 m, m × (le64 gid, le64 cookie).
pub(super) fn parse_notify_reply(b: &[u8]) -> Option<NotifyResult> {
    struct Cur<'a>(&'a [u8]);
    impl<'a> Cur<'a> {
        fn take(&mut self, n: usize) -> Option<&'a [u8]> {
            if self.0.len() < n {
                return None;
            }
            let (a, rest) = self.0.split_at(n);
            self.0 = rest;
            Some(a)
        }
        fn u32(&mut self) -> Option<u32> {
            Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
        }
        fn u64(&mut self) -> Option<u64> {
            Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
        }
    }
    let mut c = Cur(b);
    let n = c.u32()?;
    let mut acks = Vec::new();
    for _ in 0..n {
        let notifier_id = c.u64()?;
        let cookie = c.u64()?;
        let len = c.u32()? as usize;
        let payload = c.take(len)?.to_vec();
        acks.push(NotifyAck {
            notifier_id,
            cookie,
            payload,
        });
    }
    let m = c.u32()?;
    let mut timeouts = Vec::new();
    for _ in 0..m {
        timeouts.push((c.u64()?, c.u64()?));
    }
    Some(NotifyResult { acks, timeouts })
}

/// A librados write op, released on drop.
struct WriteOp(sys::rados_write_op_t);
impl WriteOp {
    fn new() -> WriteOp {
        // SAFETY: no preconditions; returns a fresh op (librados aborts on allocation
        // failure rather than returning null).
        WriteOp(unsafe { sys::rados_create_write_op() })
    }
}
impl Drop for WriteOp {
    fn drop(&mut self) {
        // SAFETY: created above, released once, after any operate on it completed.
        unsafe { sys::rados_release_write_op(self.0) };
    }
}

/// A librados read op, released on drop.
struct ReadOp(sys::rados_read_op_t);
impl ReadOp {
    fn new() -> ReadOp {
        // SAFETY: as for WriteOp::new.
        ReadOp(unsafe { sys::rados_create_read_op() })
    }
}
impl Drop for ReadOp {
    fn drop(&mut self) {
        // SAFETY: created above, released once, after any operate on it completed.
        unsafe { sys::rados_release_read_op(self.0) };
    }
}

/// Run one librados aio operation to completion (blocking) and return its return value and
/// the object version it produced or read.
///
/// # Safety
/// `submit` must start an operation on the completion it is given whose pointers stay valid
/// until this function returns (it waits for the completion).
unsafe fn run(
    ctx: &dyn Fn() -> String,
    submit: impl FnOnce(sys::rados_completion_t) -> c_int,
) -> Result<(c_int, u64)> {
    let mut c: sys::rados_completion_t = ptr::null_mut();
    // SAFETY: valid out-pointer; no callbacks (we wait instead).
    let ret = unsafe { sys::rados_aio_create_completion2(ptr::null_mut(), None, &mut c) };
    check(ret, ctx)?;
    let started = submit(c);
    if started < 0 {
        // SAFETY: the operation was not queued, so nothing else refers to `c`.
        unsafe { sys::rados_aio_release(c) };
        return Err(CephError::os(ctx(), started));
    }
    // SAFETY: `c` is live and the operation queued; after the wait it is complete, and is
    // released exactly once.
    unsafe {
        sys::rados_aio_wait_for_complete(c);
        let ret = sys::rados_aio_get_return_value(c);
        let version = sys::rados_aio_get_version(c);
        sys::rados_aio_release(c);
        Ok((ret, version))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notify_reply_decodes_acks_and_timeouts() {
        let mut b = Vec::new();
        b.extend_from_slice(&2u32.to_le_bytes());
        for (gid, cookie, p) in [(4100u64, 7u64, &b"ok"[..]), (4200, 9, &b""[..])] {
            b.extend_from_slice(&gid.to_le_bytes());
            b.extend_from_slice(&cookie.to_le_bytes());
            b.extend_from_slice(&(p.len() as u32).to_le_bytes());
            b.extend_from_slice(p);
        }
        b.extend_from_slice(&1u32.to_le_bytes());
        b.extend_from_slice(&4300u64.to_le_bytes());
        b.extend_from_slice(&11u64.to_le_bytes());
        let r = parse_notify_reply(&b).expect("well-formed");
        assert_eq!(r.acks.len(), 2);
        assert_eq!(
            r.acks[0],
            NotifyAck {
                notifier_id: 4100,
                cookie: 7,
                payload: b"ok".to_vec()
            }
        );
        assert_eq!(r.acks[1].payload, b"");
        assert_eq!(r.timeouts, vec![(4300, 11)]);
        assert!(!r.all_acked());
    }

    #[test]
    fn truncated_notify_reply_is_rejected_not_a_panic() {
        let mut b = Vec::new();
        b.extend_from_slice(&1u32.to_le_bytes());
        b.extend_from_slice(&4100u64.to_le_bytes());
        b.extend_from_slice(&7u64.to_le_bytes());
        b.extend_from_slice(&100u32.to_le_bytes()); // claims 100 payload bytes, has none
        assert!(parse_notify_reply(&b).is_none());
        assert!(parse_notify_reply(&[1, 0]).is_none());
    }

    #[test]
    fn nul_separated_lists_split() {
        assert_eq!(
            split_nul(b"client.1\0client.2\0", 18, 2),
            vec!["client.1", "client.2"]
        );
        assert_eq!(split_nul(b"a\0", 2, 1), vec!["a"]);
    }
}
