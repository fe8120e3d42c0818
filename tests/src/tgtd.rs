//! A private `tgtd` (Linux SCSI target framework) instance: the baseline Lunar is compared with.
//!
//! Each instance gets its own management socket (`-C N`, tgtd's "control port", a Unix socket
//! `/var/run/tgtd/socket.N`), its own loopback portal, and one target whose LUN 1 is backed by
//! a sparse file on tmpfs (`/dev/shm`) so storage speed does not distort comparisons. LUN 0 of
//! a tgtd target is its RAID-controller pseudo device.

use crate::daemon::{open_log, scratch_dir};
use crate::net;
use crate::process::{self, tail};
use anyhow::{bail, Context, Result};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// IQN of the baseline target.
pub const TGTD_IQN: &str = "iqn.2026-11.io.lunar:tgtd-baseline";

/// LUN number of the disk in the baseline target.
pub const TGTD_LUN: u64 = 1;

/// A running `tgtd` with one file-backed disk LUN.
pub struct Tgtd {
    child: Option<Child>,
    scratch: tempfile::TempDir,
    backing: tempfile::NamedTempFile,
    control_port: u16,
    addr: SocketAddr,
}

impl Tgtd {
    /// Starts `tgtd` on a free loopback port with a `size_bytes` sparse tmpfs-backed LUN.
    /// Needs root (tgtd creates its socket under /var/run/tgtd).
    pub fn start(size_bytes: u64) -> Result<Self> {
        let scratch = scratch_dir("tgtd-")?;
        let backing_dir = if Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            scratch.path().to_path_buf()
        };
        let backing = tempfile::Builder::new()
            .prefix("lunar-e2e-tgtd-")
            .suffix(".img")
            .tempfile_in(&backing_dir)
            .context("creating the tgtd backing file")?;
        backing
            .as_file()
            .set_len(size_bytes)
            .context("sizing the tgtd backing file")?;
        let port = net::free_loopback_port()?;
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
        let control_port = free_control_port(port);
        let log_path = scratch.path().join("tgtd.log");
        let log = open_log(&log_path)?;
        let tgtd = crate::tools::find("tgtd").context("tgtd not found (Debian package tgt)")?;
        let child = Command::new(tgtd)
            .arg("-f")
            .arg("-C")
            .arg(control_port.to_string())
            .arg("--iscsi")
            .arg(format!("portal={addr}"))
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .spawn()
            .context("starting tgtd")?;
        let mut me = Self {
            child: Some(child),
            scratch,
            backing,
            control_port,
            addr,
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while !net::accepts(addr) {
            let exited = match me.child.as_mut() {
                Some(c) => c.try_wait()?,
                None => None,
            };
            if let Some(status) = exited {
                bail!(
                    "tgtd exited ({status}) before listening on {addr}\n{}",
                    tail(&me.log(), 8000)
                );
            }
            if std::time::Instant::now() >= deadline {
                bail!("tgtd did not listen on {addr}\n{}", tail(&me.log(), 8000));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        me.configure()
            .with_context(|| format!("configuring tgtd\n{}", tail(&me.log(), 8000)))?;
        Ok(me)
    }

    fn configure(&mut self) -> Result<()> {
        let backing = self.backing.path().to_string_lossy().into_owned();
        self.tgtadm(&[
            "--op", "new", "--mode", "target", "--tid", "1", "-T", TGTD_IQN,
        ])?;
        self.tgtadm(&[
            "--op",
            "new",
            "--mode",
            "logicalunit",
            "--tid",
            "1",
            "--lun",
            "1",
            "-b",
            &backing,
        ])?;
        self.tgtadm(&[
            "--op", "bind", "--mode", "target", "--tid", "1", "-I", "ALL",
        ])?;
        Ok(())
    }

    /// Runs `tgtadm -C <control port> --lld iscsi ARGS`.
    pub fn tgtadm(&self, args: &[&str]) -> Result<String> {
        let tgtadm = crate::tools::find("tgtadm").context("tgtadm not found (package tgt)")?;
        let mut cmd = Command::new(tgtadm);
        cmd.arg("-C")
            .arg(self.control_port.to_string())
            .args(["--lld", "iscsi"])
            .args(args);
        Ok(process::run(&mut cmd, Duration::from_secs(30))?
            .check()?
            .stdout)
    }

    /// Portal address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// URL of the disk LUN.
    pub fn lun_url(&self) -> String {
        format!("iscsi://{}/{TGTD_IQN}/{TGTD_LUN}", self.addr)
    }

    /// tgtd's log.
    pub fn log(&self) -> String {
        std::fs::read(self.scratch.path().join("tgtd.log"))
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }
}

impl Drop for Tgtd {
    fn drop(&mut self) {
        // tgtd ignores SIGTERM and refuses `--op delete --mode system` while targets exist;
        // its state is disposable (a scratch file), so SIGKILL it.
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        for suffix in ["", ".lock"] {
            let _ =
                std::fs::remove_file(format!("{SOCKET_DIR}/socket.{}{suffix}", self.control_port));
        }
    }
}

/// Where tgtd puts its management sockets.
const SOCKET_DIR: &str = "/var/run/tgtd";

/// A tgtd control port (1..=32767, a Unix socket name suffix) no other instance uses,
/// derived from the unique TCP port so parallel tests do not collide.
fn free_control_port(tcp_port: u16) -> u16 {
    let mut n = 1 + tcp_port % 32000;
    while Path::new(&format!("{SOCKET_DIR}/socket.{n}")).exists() && n < 32767 {
        n += 1;
    }
    n
}
