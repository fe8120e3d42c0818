//! Finding, opening and signalling the UIO devices `target_core_user` creates.
//!
//! Each enabled `user_N/NAME` backstore appears as `/dev/uioM`; sysfs names it
//! `tcm-user/<hba>/<NAME>/<dev_config>` (`tcm-user/<hba>/<NAME>` without a dev_config) in
//! `/sys/class/uio/uioM/name` and gives the size of its one mapping (mailbox, ring, data)
//! in `maps/map0/size`. Reading 4 bytes from the device waits for the kernel's "interrupt"
//! (new commands; the value is an event count, so none is lost); writing 4 bytes tells
//! the kernel that completions are in the ring. The roots are parameters so tests can
//! lay out a fake sysfs tree.

use std::fs::{File, OpenOptions};
use std::future::Future;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;

use anyhow::Context;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

use super::device::Doorbell;
use super::mem::SharedMem;

/// Where sysfs lists UIO devices.
pub const SYSFS_UIO: &str = "/sys/class/uio";
/// Where the device nodes are.
pub const DEV_ROOT: &str = "/dev";

/// The parts of a TCMU UIO name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TcmuName {
    /// The `user_N` HBA number.
    pub hba: u32,
    /// The backstore (configfs directory) name.
    pub device: String,
    /// The backstore's `dev_config` string, if set.
    pub config: Option<String>,
}

/// Parses `tcm-user/<hba>/<name>[/<dev_config>]` (dev_config may itself contain `/`).
pub fn parse_name(s: &str) -> Option<TcmuName> {
    let mut parts = s.trim_end_matches('\n').splitn(4, '/');
    if parts.next()? != "tcm-user" {
        return None;
    }
    let hba = parts.next()?.parse().ok()?;
    let device = parts.next()?;
    if device.is_empty() {
        return None;
    }
    Some(TcmuName {
        hba,
        device: device.to_string(),
        config: parts.next().map(str::to_string),
    })
}

/// One TCMU UIO device found in sysfs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UioInfo {
    /// `uioM`.
    pub uio: String,
    /// Its name, parsed.
    pub name: TcmuName,
    /// Size of map 0 (mailbox + ring + data area).
    pub map_size: usize,
    /// The device node to open.
    pub dev_path: PathBuf,
}

fn parse_size(s: &str) -> Option<usize> {
    let s = s.trim();
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => usize::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    }
}

/// Every TCMU device under `sysfs_root` (normally [`SYSFS_UIO`]), device nodes under
/// `dev_root` (normally [`DEV_ROOT`]). Other UIO devices are skipped; a missing
/// `sysfs_root` means none.
pub fn list(sysfs_root: &Path, dev_root: &Path) -> anyhow::Result<Vec<UioInfo>> {
    let rd = match std::fs::read_dir(sysfs_root) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", sysfs_root.display())),
    };
    let mut out = Vec::new();
    for ent in rd {
        let ent = ent.with_context(|| format!("reading {}", sysfs_root.display()))?;
        let uio = ent.file_name().to_string_lossy().into_owned();
        let dir = ent.path();
        let Ok(raw) = std::fs::read_to_string(dir.join("name")) else {
            continue;
        };
        let Some(name) = parse_name(&raw) else {
            continue;
        };
        let size_path = dir.join("maps/map0/size");
        let size = std::fs::read_to_string(&size_path)
            .with_context(|| format!("reading {}", size_path.display()))?;
        let map_size = parse_size(&size)
            .with_context(|| format!("{}: bad size {size:?}", size_path.display()))?;
        out.push(UioInfo {
            dev_path: dev_root.join(&uio),
            uio,
            name,
            map_size,
        });
    }
    out.sort_by(|a, b| a.uio.cmp(&b.uio));
    Ok(out)
}

/// The TCMU device of backstore `device` (its configfs name), if the kernel has one.
pub fn find(sysfs_root: &Path, dev_root: &Path, device: &str) -> anyhow::Result<Option<UioInfo>> {
    Ok(list(sysfs_root, dev_root)?
        .into_iter()
        .find(|u| u.name.device == device))
}

/// An open, mapped TCMU device, ready for [`super::spawn`].
pub struct UioDevice {
    info: UioInfo,
    fd: OwnedFd,
    mem: Arc<SharedMem>,
}

impl UioDevice {
    /// Opens the device node read/write (non-blocking, for the doorbell) and maps its
    /// region shared.
    pub fn open(info: UioInfo) -> anyhow::Result<Self> {
        let file: File = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(&info.dev_path)
            .with_context(|| format!("opening {}", info.dev_path.display()))?;
        let fd: OwnedFd = file.into();
        let mem = SharedMem::map(fd.as_fd(), info.map_size).with_context(|| {
            format!(
                "mapping {} ({} bytes)",
                info.dev_path.display(),
                info.map_size
            )
        })?;
        Ok(Self {
            info,
            fd,
            mem: Arc::new(mem),
        })
    }

    /// What sysfs said about it.
    pub fn info(&self) -> &UioInfo {
        &self.info
    }

    /// Splits into the mapping and the doorbell (registers the fd with the current tokio
    /// runtime).
    pub fn into_parts(self) -> anyhow::Result<(Arc<SharedMem>, UioDoorbell)> {
        let db = UioDoorbell::new(self.fd)
            .with_context(|| format!("polling {}", self.info.dev_path.display()))?;
        Ok((self.mem, db))
    }
}

/// The UIO fd as a [`Doorbell`]: readiness through epoll, 4-byte reads and writes.
pub struct UioDoorbell {
    fd: AsyncFd<OwnedFd>,
}

impl UioDoorbell {
    /// Wraps a non-blocking UIO (or compatible) fd.
    pub fn new(fd: OwnedFd) -> io::Result<Self> {
        Ok(Self {
            // SAFETY: the AsyncFd owns the OwnedFd, which stays open and keeps returning the
            // same descriptor from as_raw_fd until the AsyncFd is dropped.
            fd: unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }?,
        })
    }
}

fn read4(fd: &OwnedFd) -> io::Result<u32> {
    let mut v = 0u32;
    // SAFETY: reads at most 4 bytes into a local u32 through a valid fd.
    let n = unsafe { libc::read(fd.as_raw_fd(), (&mut v as *mut u32).cast(), 4) };
    match n {
        4 => Ok(v),
        n if n < 0 => Err(io::Error::last_os_error()),
        // UIO reads are all or nothing; EOF means the device went away.
        _ => Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "short read from the UIO device",
        )),
    }
}

impl Doorbell for UioDoorbell {
    fn wait(&self) -> Pin<Box<dyn Future<Output = io::Result<()>> + Send + '_>> {
        Box::pin(async move {
            loop {
                let mut guard = self.fd.readable().await?;
                match guard.try_io(|fd| read4(fd.get_ref())) {
                    Ok(Ok(_count)) => return Ok(()),
                    Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Ok(Err(e)) => return Err(e),
                    Err(_would_block) => continue,
                }
            }
        })
    }

    fn kick(&self) -> io::Result<()> {
        let v: u32 = 0;
        // SAFETY: writes 4 bytes from a local u32 through a valid fd.
        let n = unsafe { libc::write(self.fd.get_ref().as_raw_fd(), (&v as *const u32).cast(), 4) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(
            parse_name("tcm-user/3/lun0/lunard/pool/vol0\n"),
            Some(TcmuName {
                hba: 3,
                device: "lun0".into(),
                config: Some("lunard/pool/vol0".into())
            })
        );
        assert_eq!(
            parse_name("tcm-user/1/x"),
            Some(TcmuName {
                hba: 1,
                device: "x".into(),
                config: None
            })
        );
        assert_eq!(parse_name("uio_pci_generic"), None);
        assert_eq!(parse_name("tcm-user/x/y/z"), None);
        assert_eq!(parse_name("tcm-user/1//z"), None);
    }

    #[test]
    fn discovery_in_a_fake_sysfs() {
        let d = tempfile::tempdir().unwrap();
        let mk = |uio: &str, name: &str, size: &str| {
            let p = d.path().join("sys").join(uio);
            std::fs::create_dir_all(p.join("maps/map0")).unwrap();
            std::fs::write(p.join("name"), name).unwrap();
            std::fs::write(p.join("maps/map0/size"), size).unwrap();
        };
        mk("uio0", "some_other_driver\n", "0x1000\n");
        mk("uio1", "tcm-user/1/alpha/lunard/alpha\n", "0x40800000\n");
        mk("uio2", "tcm-user/1/beta\n", "8192\n");
        let sys = d.path().join("sys");
        let dev = d.path().join("dev");
        let all = list(&sys, &dev).unwrap();
        assert_eq!(all.len(), 2);
        let a = find(&sys, &dev, "alpha").unwrap().unwrap();
        assert_eq!(a.uio, "uio1");
        assert_eq!(a.map_size, 0x4080_0000);
        assert_eq!(a.dev_path, dev.join("uio1"));
        assert_eq!(a.name.config.as_deref(), Some("lunard/alpha"));
        assert_eq!(find(&sys, &dev, "beta").unwrap().unwrap().map_size, 8192);
        assert!(find(&sys, &dev, "gamma").unwrap().is_none());
        assert!(list(&d.path().join("nope"), &dev).unwrap().is_empty());
        // Opening a missing node is an error with the path in it.
        let err = UioDevice::open(a).err().unwrap();
        assert!(format!("{err:#}").contains("uio1"));
    }
}
