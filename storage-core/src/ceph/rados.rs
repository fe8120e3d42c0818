//! The cluster connection: one librados client instance (`client.<instance id>` at one
//! address), which is the unit Ceph blocklists. (Pool contexts, `Rados::ioctx`, are in
//! `ioctx.rs`, which depends on this module and not the other way round.)

use std::ffi::{c_char, CStr};
use std::path::PathBuf;
use std::ptr;
use std::sync::Arc;
use std::time::Duration;

use lunar_ceph_sys as sys;

use super::error::{check, cstring, CephError, Result};

/// Where the cluster is and who we are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CephConfig {
    /// Path of ceph.conf (monitors, and a keyring when the cluster uses cephx).
    pub conf: PathBuf,
    /// The client id without the `client.` prefix, e.g. `admin`.
    pub client: String,
}

/// Owns the `rados_t`; shut down when the last [`Rados`] clone (and every [`IoCtx`](super::IoCtx) and
/// image, which hold one) is dropped.
struct ClusterHandle {
    ptr: sys::rados_t,
}

// SAFETY: a librados cluster handle may be used from any thread and concurrently: the C API
// is a thin layer over librados::RadosClient, which locks its own state.
unsafe impl Send for ClusterHandle {}
// SAFETY: as above.
unsafe impl Sync for ClusterHandle {}

impl Drop for ClusterHandle {
    fn drop(&mut self) {
        // SAFETY: `ptr` came from rados_create and is shut down exactly once, here, when no
        // IoCtx or image (which hold a Rados clone) uses it any more.
        unsafe { sys::rados_shutdown(self.ptr) };
    }
}

/// A connected RADOS client. Cheap to clone; every clone is the same client instance (the
/// same address, fenced together).
#[derive(Clone)]
pub struct Rados {
    inner: Arc<ClusterHandle>,
    client: Arc<str>,
}

impl std::fmt::Debug for Rados {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rados")
            .field("client", &self.client)
            .field("instance_id", &self.instance_id())
            .finish()
    }
}

impl Rados {
    /// Connect (blocking) with `rbd_cache = false`, `rbd_skip_partial_discard = false` and
    /// a 30 s bound on finding the monitors. Operations have no timeout unless
    /// `rados_osd_op_timeout` / `rbd`-side options are set with [`Rados::connect_with`].
    pub fn connect(cfg: &CephConfig) -> Result<Rados> {
        Rados::connect_with(cfg, &[])
    }

    /// As [`Rados::connect`], then set each `(option, value)` before connecting (e.g.
    /// `("rados_osd_op_timeout", "5")` so an operation fails instead of waiting forever for
    /// an OSD). `rbd_cache` cannot be turned back on: Lunar's durability relies on it off.
    pub fn connect_with(cfg: &CephConfig, options: &[(&str, &str)]) -> Result<Rados> {
        let ctx = || {
            format!(
                "connecting to Ceph as client.{} ({})",
                cfg.client,
                cfg.conf.display()
            )
        };
        let id = cstring("client id", &cfg.client)?;
        let conf = cfg
            .conf
            .to_str()
            .ok_or_else(|| CephError::Invalid(format!("{}: not UTF-8", cfg.conf.display())))?;
        let conf = cstring("ceph.conf path", conf)?;
        let mut ptr: sys::rados_t = ptr::null_mut();
        // SAFETY: `ptr` is a valid out-pointer and `id` a NUL-terminated string that lives
        // across the call.
        check(unsafe { sys::rados_create(&mut ptr, id.as_ptr()) }, ctx)?;
        // From here on the handle is shut down on every error path by the guard's Drop
        // (rados_shutdown also frees a handle that never connected).
        let handle = ClusterHandle { ptr };
        // SAFETY: `handle.ptr` is a live, unconnected handle; `conf` is NUL-terminated.
        let ret = unsafe { sys::rados_conf_read_file(handle.ptr, conf.as_ptr()) };
        check(ret, || format!("{}: reading {}", ctx(), cfg.conf.display()))?;
        set_option(&handle, "client_mount_timeout", "30")?;
        for (k, v) in options {
            if *k == "rbd_cache" {
                return Err(CephError::Invalid(
                    "rbd_cache is forced off (acknowledged writes must be on the OSDs)".into(),
                ));
            }
            set_option(&handle, k, v)?;
        }
        set_option(&handle, "rbd_cache", "false")?;
        // A discard zeroes what it covers even when it is smaller than an object or not
        // aligned to the discard granularity (librbd otherwise skips such parts silently).
        set_option(&handle, "rbd_skip_partial_discard", "false")?;
        // rbd_disable_zero_copy_writes stays at its default (true: librbd copies write
        // payloads). With zero-copy on, 16.2.15 never completes a write that fails before it
        // is sent (e.g. after the exclusive lock was broken): the completion stays blocked
        // waiting for the user buffer's release, and the writer hangs instead of seeing
        // ESHUTDOWN (tests/ceph.rs breaking_the_image_lock_fences_the_old_owner).
        // SAFETY: configured, unconnected handle.
        check(unsafe { sys::rados_connect(handle.ptr) }, ctx)?;
        Ok(Rados {
            inner: Arc::new(handle),
            client: Arc::from(cfg.client.as_str()),
        })
    }

    pub(super) fn ptr(&self) -> sys::rados_t {
        self.inner.ptr
    }

    /// The client id this connection was made with (e.g. `admin`).
    pub fn client_id(&self) -> &str {
        &self.client
    }

    /// This client instance's global id: lockers and watchers show it as `client.<id>`.
    pub fn instance_id(&self) -> u64 {
        // SAFETY: connected handle, alive while `self` is.
        unsafe { sys::rados_get_instance_id(self.ptr()) }
    }

    /// The entity name lockers show for this instance: `client.<instance id>`.
    pub fn instance_name(&self) -> String {
        format!("client.{}", self.instance_id())
    }

    /// This client instance's address(es), as `rados_getaddrs` gives them (for example
    /// `[v2:127.0.0.1:0/2754013498]`) — what [`Rados::blocklist_add`] takes.
    pub fn addrs(&self) -> Result<String> {
        let mut out: *mut c_char = ptr::null_mut();
        // SAFETY: connected handle and a valid out-pointer.
        check(unsafe { sys::rados_getaddrs(self.ptr(), &mut out) }, || {
            "getting this client's address".to_string()
        })?;
        if out.is_null() {
            return Err(CephError::Invalid(
                "rados_getaddrs returned no address".into(),
            ));
        }
        // SAFETY: on success `out` is a NUL-terminated string librados allocated with
        // strdup; we copy it, then free it exactly once with free().
        let s = unsafe { CStr::from_ptr(out) }
            .to_string_lossy()
            .into_owned();
        // SAFETY: as above; `out` is not used after this.
        unsafe { libc::free(out.cast()) };
        Ok(s)
    }

    /// Blocklist a client address (fencing: its OSD operations fail with `ESHUTDOWN` from
    /// then on) for `expire` (rounded down to seconds; zero means the cluster's default,
    /// one hour). Waits until the OSD map with the entry is current here.
    pub fn blocklist_add(&self, addr: &str, expire: Duration) -> Result<()> {
        let a = cstring("client address", addr)?;
        let secs = u32::try_from(expire.as_secs()).unwrap_or(u32::MAX);
        // SAFETY: connected handle; `a` is NUL-terminated and outlives the call. The C
        // prototype takes `char *` but only reads the string.
        let ret = unsafe { sys::rados_blocklist_add(self.ptr(), a.as_ptr().cast_mut(), secs) };
        check(ret, || format!("blocklisting {addr}"))?;
        self.wait_for_latest_osdmap()
    }

    /// The value of configuration option `key` for this connection (e.g. `rbd_cache`).
    pub fn conf_get(&self, key: &str) -> Result<String> {
        let k = cstring("option name", key)?;
        let mut buf = vec![0u8; 256];
        loop {
            // SAFETY: live handle; `buf` is writable for `buf.len()` bytes, which librados
            // does not exceed (it reports -ENAMETOOLONG instead).
            let ret = unsafe {
                sys::rados_conf_get(self.ptr(), k.as_ptr(), buf.as_mut_ptr().cast(), buf.len())
            };
            if ret == -libc::ENAMETOOLONG && buf.len() < 1 << 20 {
                buf.resize(buf.len() * 4, 0);
                continue;
            }
            check(ret, || format!("reading Ceph option {key}"))?;
            let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
            return Ok(String::from_utf8_lossy(&buf[..end]).into_owned());
        }
    }

    /// Block until this client has the cluster's newest OSD map (e.g. after a blocklist).
    pub fn wait_for_latest_osdmap(&self) -> Result<()> {
        // SAFETY: connected handle.
        let ret = unsafe { sys::rados_wait_for_latest_osdmap(self.ptr()) };
        check(ret, || "waiting for the latest OSD map".to_string())?;
        Ok(())
    }
}

fn set_option(h: &ClusterHandle, key: &str, value: &str) -> Result<()> {
    let k = cstring("option name", key)?;
    let v = cstring("option value", value)?;
    // SAFETY: live handle, NUL-terminated strings that outlive the call.
    let ret = unsafe { sys::rados_conf_set(h.ptr, k.as_ptr(), v.as_ptr()) };
    check(ret, || format!("setting Ceph option {key} = {value}"))?;
    Ok(())
}
