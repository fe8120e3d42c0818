//! A throw-away Linux guest that drives `lunard` with the kernel's own iSCSI initiator.
//!
//! Most users reach Lunar through `iscsiadm` and `iscsi_tcp`, so the kernel-initiator tests
//! (`tests/tests/kernel_initiator.rs`) boot a Debian kernel under QEMU TCG (no KVM needed)
//! with an initramfs built by `tests/guest/build-initramfs.sh` from Debian packages (cached
//! under `~/.cache/lunar-guest`). This module owns the host side:
//!
//! - [`image`]: build (or reuse) the kernel and base initramfs;
//! - [`GuestLunard`]: `lunard` on a *fixed* loopback port whose portal advertises
//!   `10.0.2.2:PORT` (the host as QEMU's user network shows it to the guest), so SendTargets
//!   answers are reachable from inside the guest and a restart keeps the address the kernel
//!   initiator reconnects to;
//! - [`Guest`]: boot QEMU with a scenario script appended as a second (uncompressed) initramfs,
//!   collect the serial console, answer the guest's `WAIT` requests, enforce a time limit
//!   (QEMU is killed, never waited on forever), and parse the verdict lines.
//!
//! The guest protocol is documented in `tests/guest/lib.sh`.

use crate::config::PortalCfg;
use crate::daemon::{lunard_bin, parse_ready_line, scratch_dir, strip_ansi};
use crate::net;
use crate::process::{self, tail};
use anyhow::{anyhow, bail, Context, Result};
use std::fs::OpenOptions;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Prefix of every line the guest's test protocol prints on the serial console.
pub const MARKER: &str = "LUNAR-GUEST: ";

/// The QEMU binary the tests boot the guest with.
pub const QEMU: &str = "qemu-system-x86_64";

/// Address of the host as the guest sees it on QEMU's user-mode network.
pub const HOST_FROM_GUEST: &str = "10.0.2.2";

/// Kernel and base initramfs of the guest.
#[derive(Clone, Debug)]
pub struct Image {
    /// `vmlinuz` from the Debian kernel package.
    pub kernel: PathBuf,
    /// gzip'ed newc initramfs with busybox, open-iscsi, e2fsprogs, kmod and the modules.
    pub initrd: PathBuf,
}

/// Directory holding the guest build files (`tests/guest`).
pub fn guest_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("guest")
}

/// Builds the guest image once per test process (the script itself caches across runs).
pub fn image() -> Result<Image> {
    static IMAGE: OnceLock<std::result::Result<Image, String>> = OnceLock::new();
    IMAGE
        .get_or_init(|| build_image().map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(|e| anyhow!(e))
}

fn build_image() -> Result<Image> {
    let script = guest_dir().join("build-initramfs.sh");
    let mut cmd = Command::new("bash");
    cmd.arg(&script);
    let out = process::run(&mut cmd, Duration::from_secs(1200))?.check()?;
    let field = |key: &str| {
        out.stdout
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .map(PathBuf::from)
            .ok_or_else(|| {
                anyhow!(
                    "{} printed no {key} line:\n{}",
                    script.display(),
                    out.stdout
                )
            })
    };
    Ok(Image {
        kernel: field("KERNEL=")?,
        initrd: field("INITRD=")?,
    })
}

/// Appends one file to a newc (SVR4 "new ASCII") cpio archive.
fn newc_entry(out: &mut Vec<u8>, ino: u32, name: &str, mode: u32, data: &[u8]) {
    let namesize = name.len() + 1;
    let header = format!(
        "070701{ino:08x}{mode:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{namesize:08x}{:08x}",
        0, // uid
        0, // gid
        1, // nlink
        0, // mtime
        data.len(),
        0, // devmajor
        0, // devminor
        0, // rdevmajor
        0, // rdevminor
        0, // check
    );
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    pad4(out);
    out.extend_from_slice(data);
    pad4(out);
}

fn pad4(out: &mut Vec<u8>) {
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

/// A file the host adds to the guest's root file system (path relative to `/`, without a
/// leading slash; its directories must exist in the base image or come earlier in the list).
pub struct GuestFile {
    /// Path in the guest, e.g. `usr/local/bin/lunard`.
    pub path: String,
    /// Permission bits (e.g. 0o755).
    pub mode: u32,
    /// Contents.
    pub data: Vec<u8>,
}

impl GuestFile {
    /// A directory at `path` (for files whose directories the base image lacks; list it
    /// before them).
    pub fn dir(path: &str) -> Self {
        GuestFile {
            path: path
                .trim_start_matches('/')
                .trim_end_matches('/')
                .to_string(),
            mode: 0o040755,
            data: Vec::new(),
        }
    }

    /// A host file (following symlinks) copied to `path` with `mode`.
    pub fn from_host(host: &Path, path: &str, mode: u32) -> Result<Self> {
        let data = std::fs::read(host).with_context(|| format!("reading {}", host.display()))?;
        Ok(GuestFile {
            path: path.trim_start_matches('/').to_string(),
            mode,
            data,
        })
    }
}

/// A host binary for the guest, with the shared libraries it loads (as `ldd` resolves them
/// on the host, which runs the same Debian release as the guest): the binary under
/// `guest_path`, each library under `lib/x86_64-linux-gnu/` (the loader under `lib64/`).
/// Debug information is stripped into a copy first when `strip` is available: the guest's
/// root file system lives in its RAM.
pub fn binary_with_libs(host: &Path, guest_path: &str) -> Result<Vec<GuestFile>> {
    binary_with_libs_from(host, guest_path, &[])
}

/// [`binary_with_libs`] for a binary (or shared object) whose libraries are looked up in
/// `lib_dirs` first (e.g. the library directories of unpacked Debian packages, see
/// [`DebianPackages`]), then on the host. Fails when `ldd` cannot resolve one.
pub fn binary_with_libs_from(
    host: &Path,
    guest_path: &str,
    lib_dirs: &[PathBuf],
) -> Result<Vec<GuestFile>> {
    let tmp = scratch_dir("lunar-guest-bin-")?;
    let stripped = tmp.path().join("bin");
    let ok = Command::new("strip")
        .arg("--strip-debug")
        .arg("-o")
        .arg(&stripped)
        .arg(host)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    let src = if ok { stripped.as_path() } else { host };
    let mut out = vec![GuestFile::from_host(src, guest_path, 0o755)?];
    let mut ldd = Command::new("ldd");
    ldd.arg(host);
    if !lib_dirs.is_empty() {
        let joined = std::env::join_paths(lib_dirs).context("library path")?;
        ldd.env("LD_LIBRARY_PATH", joined);
    }
    let ldd = ldd
        .output()
        .with_context(|| format!("ldd {}", host.display()))?;
    let text = String::from_utf8_lossy(&ldd.stdout).into_owned();
    if let Some(missing) = text.lines().find(|l| l.contains("not found")) {
        bail!("ldd {}: {}", host.display(), missing.trim());
    }
    for line in text.lines() {
        let path = if let Some((_, rhs)) = line.split_once("=>") {
            rhs.split_whitespace().next().unwrap_or("")
        } else {
            line.split_whitespace().next().unwrap_or("")
        };
        if !path.starts_with('/') {
            continue;
        }
        let name = Path::new(path)
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        let dest = if name.starts_with("ld-linux") {
            format!("lib64/{name}")
        } else {
            format!("lib/x86_64-linux-gnu/{name}")
        };
        out.push(GuestFile::from_host(Path::new(path), &dest, 0o755)?);
    }
    Ok(out)
}

/// Drops the later of files with the same guest path (binaries sharing libc, ...), keeping
/// the order otherwise.
pub fn dedup_files(files: Vec<GuestFile>) -> Vec<GuestFile> {
    let mut seen = std::collections::HashSet::new();
    files
        .into_iter()
        .filter(|f| seen.insert(f.path.clone()))
        .collect()
}

/// The guest cache directory of `build-initramfs.sh`: `$LUNAR_GUEST_CACHE`, else
/// `$XDG_CACHE_HOME/lunar-guest`, else `~/.cache/lunar-guest`.
pub fn guest_cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("LUNAR_GUEST_CACHE") {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(d).join("lunar-guest");
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/tmp".into());
    PathBuf::from(home).join(".cache").join("lunar-guest")
}

/// Debian packages fetched with `apt-get download` (kept in the guest cache's `debs/`, as
/// `build-initramfs.sh` does; nothing is installed on the host) and unpacked with
/// `dpkg-deb -x` into a temporary directory. For programs a single test adds to the guest
/// without changing the shared base image.
pub struct DebianPackages {
    root: tempfile::TempDir,
}

impl DebianPackages {
    /// Fetches (unless a `.deb` of the package is cached already) and unpacks `packages`.
    pub fn fetch(packages: &[&str]) -> Result<Self> {
        let debs = guest_cache_dir().join("debs");
        std::fs::create_dir_all(&debs)?;
        let cached = |p: &str| -> Option<PathBuf> {
            let prefix = format!("{p}_");
            let mut found: Vec<PathBuf> = std::fs::read_dir(&debs)
                .ok()?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|path| {
                    path.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".deb"))
                })
                .collect();
            found.sort();
            found.pop()
        };
        let missing: Vec<&str> = packages
            .iter()
            .copied()
            .filter(|p| cached(p).is_none())
            .collect();
        if !missing.is_empty() {
            let mut cmd = Command::new("apt-get");
            cmd.arg("download")
                .arg("-q")
                .args(&missing)
                .current_dir(&debs);
            process::run(&mut cmd, Duration::from_secs(600))?.check()?;
        }
        let root = scratch_dir("lunar-guest-debs-")?;
        for p in packages {
            let deb = cached(p).ok_or_else(|| anyhow!("apt-get download left no {p}_*.deb"))?;
            let mut cmd = Command::new("dpkg-deb");
            cmd.arg("-x").arg(&deb).arg(root.path());
            process::run(&mut cmd, Duration::from_secs(120))?.check()?;
        }
        Ok(Self { root })
    }

    /// A path inside the unpacked tree.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.root.path().join(rel.trim_start_matches('/'))
    }

    /// The unpacked library directories, for [`binary_with_libs_from`].
    pub fn lib_dirs(&self) -> Vec<PathBuf> {
        vec![
            self.path("lib/x86_64-linux-gnu"),
            self.path("usr/lib/x86_64-linux-gnu"),
        ]
    }
}

/// A newc archive holding `/scenario/run.sh` and `/scenario/env`.
pub fn scenario_archive(script: &str, env: &[(&str, String)]) -> Vec<u8> {
    scenario_archive_with(script, env, &[])
}

/// [`scenario_archive`] plus `files`.
pub fn scenario_archive_with(script: &str, env: &[(&str, String)], files: &[GuestFile]) -> Vec<u8> {
    let mut env_text = String::new();
    for (k, v) in env {
        // Single-quoted shell values; a quote inside is closed, escaped and reopened.
        env_text.push_str(&format!("{k}='{}'\n", v.replace('\'', r"'\''")));
    }
    let mut out = Vec::new();
    newc_entry(&mut out, 1, "scenario", 0o040755, &[]);
    newc_entry(&mut out, 2, "scenario/run.sh", 0o100644, script.as_bytes());
    newc_entry(&mut out, 3, "scenario/env", 0o100644, env_text.as_bytes());
    for (i, f) in files.iter().enumerate() {
        newc_entry(
            &mut out,
            4 + i as u32,
            &f.path,
            // A type in `mode` (a directory) is kept; otherwise it is a regular file.
            if f.mode & 0o170000 != 0 {
                f.mode
            } else {
                0o100000 | (f.mode & 0o7777)
            },
            &f.data,
        );
    }
    newc_entry(&mut out, 0, "TRAILER!!!", 0, &[]);
    out
}

/// `lunard` for the guest: listens on `127.0.0.1:PORT`, advertises `10.0.2.2:PORT`, and keeps
/// the port across restarts.
pub struct GuestLunard {
    child: Option<Child>,
    bin: PathBuf,
    scratch: tempfile::TempDir,
    config_path: PathBuf,
    data_dir: PathBuf,
    log_path: PathBuf,
    port: u16,
}

impl GuestLunard {
    /// Starts lunard with `yaml_for(port)` as its configuration; `yaml_for` gets the port
    /// and must put `listen: 127.0.0.1:PORT` / `advertise: 10.0.2.2:PORT` in the portal (see
    /// [`guest_portal`]). Retries with another port when the chosen one was taken meanwhile.
    pub fn start(yaml_for: impl Fn(u16) -> String) -> Result<Self> {
        let bin = lunard_bin()?;
        let scratch = scratch_dir("lunard-guest-")?;
        let data_dir = scratch.path().join("data");
        std::fs::create_dir_all(&data_dir)?;
        let mut me = Self {
            child: None,
            bin,
            config_path: scratch.path().join("lunard.yaml"),
            log_path: scratch.path().join("lunard.log"),
            scratch,
            data_dir,
            port: 0,
        };
        let mut last = None;
        for _ in 0..5 {
            me.port = net::free_loopback_port()?;
            std::fs::write(&me.config_path, yaml_for(me.port))?;
            match me.spawn_ready() {
                Ok(()) => return Ok(me),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| anyhow!("lunard did not start")))
    }

    fn spawn_ready(&mut self) -> Result<()> {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)?;
        let log_start = log.metadata().map(|m| m.len()).unwrap_or(0);
        let mut cmd = Command::new(&self.bin);
        cmd.arg("--config")
            .arg(&self.config_path)
            .arg("--data-dir")
            .arg(&self.data_dir)
            .env("NO_COLOR", "1")
            .env(
                "RUST_LOG",
                std::env::var("LUNARD_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log));
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot start {}", process::describe(&cmd)))?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let all = std::fs::read(&self.log_path).unwrap_or_default();
            let fresh = String::from_utf8_lossy(all.get(log_start as usize..).unwrap_or(&[]));
            if let Some(addr) = parse_ready_line(&fresh) {
                if addr.port() != self.port {
                    bail!("lunard listens on {addr}, configured port {}", self.port);
                }
                if !net::wait_accepting(addr, Duration::from_secs(10)) {
                    bail!("lunard reported {addr} but does not accept connections");
                }
                return Ok(());
            }
            let child = self.child.as_mut().ok_or_else(|| anyhow!("no child"))?;
            if let Some(status) = child.try_wait()? {
                self.child = None;
                bail!(
                    "lunard exited before becoming ready ({status})\n{}",
                    tail(&self.log(), 4000)
                );
            }
            if Instant::now() >= deadline {
                self.kill();
                bail!("lunard not ready after 60 s\n{}", tail(&self.log(), 4000));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = process::terminate(&mut child, Duration::from_secs(10));
        }
    }

    /// Process id of the running daemon (for the HA tests' SIGKILL / SIGSTOP).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The loopback portal address.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// The portal as the guest reaches it: `10.0.2.2:PORT`.
    pub fn guest_portal(&self) -> String {
        format!("{HOST_FROM_GUEST}:{}", self.port)
    }

    /// Everything lunard logged (all starts).
    pub fn log(&self) -> String {
        strip_ansi(&String::from_utf8_lossy(
            &std::fs::read(&self.log_path).unwrap_or_default(),
        ))
    }

    /// SIGTERM (must exit 0 within 20 s), then start again on the same port and data dir.
    pub fn restart(&mut self) -> Result<()> {
        let mut child = self
            .child
            .take()
            .ok_or_else(|| anyhow!("lunard is not running"))?;
        let (status, graceful) = process::terminate(&mut child, Duration::from_secs(20))?;
        if !graceful || !status.success() {
            bail!(
                "lunard did not stop cleanly on SIGTERM ({status}, graceful={graceful})\n{}",
                tail(&self.log(), 4000)
            );
        }
        self.respawn()
    }

    /// SIGKILL (a crash: nothing flushed by the daemon itself), then start again on the same
    /// port and data dir.
    pub fn crash_restart(&mut self) -> Result<()> {
        let mut child = self
            .child
            .take()
            .ok_or_else(|| anyhow!("lunard is not running"))?;
        child.kill().context("SIGKILL lunard")?;
        child.wait().context("reaping lunard")?;
        self.respawn()
    }

    fn respawn(&mut self) -> Result<()> {
        // The old listener is closed; the port is normally free at once (SO_REUSEADDR), but
        // retry a few times in case the kernel still holds it.
        let mut last = None;
        for _ in 0..20 {
            match self.spawn_ready() {
                Ok(()) => return Ok(()),
                Err(e) => last = Some(e),
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        Err(last.unwrap_or_else(|| anyhow!("lunard did not restart")))
    }

    /// Fails if lunard died.
    pub fn check_alive(&mut self) -> Result<()> {
        let child = self
            .child
            .as_mut()
            .ok_or_else(|| anyhow!("lunard is not running"))?;
        if let Some(status) = child.try_wait()? {
            bail!("lunard died ({status})\n{}", tail(&self.log(), 8000));
        }
        Ok(())
    }

    /// Data directory (pool, and the admin socket `admin.sock` when lunard has one).
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The `lunard` binary in use (`lunarctl` is looked up next to it).
    pub fn bin(&self) -> &Path {
        &self.bin
    }

    /// Scratch directory (config, log, data).
    pub fn scratch(&self) -> &Path {
        self.scratch.path()
    }
}

impl Drop for GuestLunard {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!(
                "--- lunard log ({}):\n{}\n--- end of lunard log",
                self.log_path.display(),
                tail(&self.log(), 12000)
            );
        }
    }
}

/// A guest-facing portal on `port`: listening on loopback, advertising the address the
/// guest reaches the host by.
pub fn guest_portal(port: u16) -> PortalCfg {
    let host: std::net::IpAddr = HOST_FROM_GUEST
        .parse()
        .unwrap_or_else(|e| panic!("HOST_FROM_GUEST {HOST_FROM_GUEST}: {e}"));
    PortalCfg::new(SocketAddr::from(([127, 0, 0, 1], port)))
        .with_advertise(SocketAddr::new(host, port))
}

/// Outcome of one guest run.
#[derive(Debug, Default)]
pub struct Transcript {
    /// The whole serial console.
    pub console: String,
    /// `PASS` names in order.
    pub passed: Vec<String>,
    /// `FAIL` lines (name and reason).
    pub failed: Vec<String>,
    /// `INFO` lines without the prefix.
    pub info: Vec<String>,
    /// Exit status from `DONE`, if the guest got that far.
    pub done: Option<i32>,
    /// Seconds from QEMU start to `BOOTED`.
    pub boot_secs: Option<f64>,
    /// Seconds from QEMU start to `DONE` (or the end).
    pub total_secs: f64,
}

impl Transcript {
    fn parse(console: String, boot_secs: Option<f64>, total_secs: f64) -> Self {
        let mut t = Transcript {
            boot_secs,
            total_secs,
            ..Default::default()
        };
        for line in console.lines() {
            let Some(rest) = line.find(MARKER).map(|i| &line[i + MARKER.len()..]) else {
                continue;
            };
            let rest = rest.trim_end_matches('\r');
            if let Some(n) = rest.strip_prefix("PASS ") {
                t.passed.push(n.trim().to_string());
            } else if let Some(f) = rest.strip_prefix("FAIL ") {
                t.failed.push(f.to_string());
            } else if let Some(i) = rest.strip_prefix("INFO ") {
                t.info.push(i.to_string());
            } else if let Some(d) = rest.strip_prefix("DONE ") {
                t.done = d.trim().parse().ok();
            }
        }
        t.console = console;
        t
    }

    /// Panics with the console tail unless the guest finished with status 0, reported no
    /// failure and passed every check in `required`.
    pub fn assert_passed(&self, required: &[&str]) {
        let ok = self.failed.is_empty()
            && self.done == Some(0)
            && required.iter().all(|r| self.passed.iter().any(|p| p == r));
        if !ok {
            let missing: Vec<_> = required
                .iter()
                .filter(|r| !self.passed.iter().any(|p| p == *r))
                .collect();
            panic!(
                "guest scenario failed: done={:?} failures={:?} missing checks={missing:?}\n\
                 --- guest console (tail)\n{}",
                self.done,
                self.failed,
                tail(&self.console, 20000)
            );
        }
    }

    /// `INFO` lines starting with `key `, without the key.
    pub fn info_values(&self, key: &str) -> Vec<&str> {
        self.info
            .iter()
            .filter_map(|i| i.strip_prefix(key).and_then(|r| r.strip_prefix(' ')))
            .collect()
    }
}

/// A booted guest running one scenario.
pub struct Guest {
    child: Child,
    stdin: Option<ChildStdin>,
    console: Arc<Mutex<String>>,
    reader: Option<std::thread::JoinHandle<()>>,
    started: Instant,
    deadline: Instant,
    boot_secs: Option<f64>,
    _scratch: tempfile::TempDir,
}

impl Guest {
    /// Boots the guest with `script` (a file under `tests/guest/scenarios`, sourced after
    /// `tests/guest/lib.sh`) and `env`. The whole run is limited to `limit`.
    pub fn boot(script: &str, env: &[(&str, String)], limit: Duration) -> Result<Self> {
        Self::boot_with(script, env, &[], 512, limit)
    }

    /// [`boot`](Self::boot) with extra `files` in the guest's root and `mem_mib` of RAM.
    pub fn boot_with(
        script: &str,
        env: &[(&str, String)],
        files: &[GuestFile],
        mem_mib: u32,
        limit: Duration,
    ) -> Result<Self> {
        let image = image()?;
        let script_path = guest_dir().join("scenarios").join(script);
        let text = std::fs::read_to_string(&script_path)
            .with_context(|| format!("reading {}", script_path.display()))?;
        let scratch = scratch_dir("lunar-guest-")?;
        // Base initramfs (gzip) + zero padding to a 4-byte boundary (the kernel skips zeros
        // between archives and wants newc headers aligned) + the uncompressed scenario archive.
        let mut initrd = std::fs::read(&image.initrd)
            .with_context(|| format!("reading {}", image.initrd.display()))?;
        pad4(&mut initrd);
        initrd.extend_from_slice(&scenario_archive_with(&text, env, files));
        let initrd_path = scratch.path().join("initrd.img");
        std::fs::write(&initrd_path, &initrd)?;
        let mut cmd = Command::new(QEMU);
        let mem = mem_mib.to_string();
        cmd.args([
            "-accel",
            "tcg",
            "-cpu",
            "max",
            "-m",
            mem.as_str(),
            "-smp",
            "1",
        ])
        .args(["-display", "none", "-monitor", "none", "-serial", "stdio"])
        .args(["-no-reboot", "-nodefaults"])
        .arg("-kernel")
        .arg(&image.kernel)
        .arg("-initrd")
        .arg(&initrd_path)
        // `no_timer_check`: under TCG on a loaded host the kernel's boot-time check that
        // the timer interrupt reaches the IO-APIC can miss its window and panic ("IO-APIC +
        // timer doesn't work"; seen once in six HA guest runs at load 16 on two cores).
        .args([
            "-append",
            "console=ttyS0 panic=-1 loglevel=4 nokaslr tsc=unstable no_timer_check",
        ])
        .args(["-netdev", "user,id=n0,net=10.0.2.0/24,host=10.0.2.2"])
        .args(["-device", "e1000,netdev=n0"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let started = Instant::now();
        let mut child = cmd
            .spawn()
            .with_context(|| format!("cannot start {}", process::describe(&cmd)))?;
        let console = Arc::new(Mutex::new(String::new()));
        let mut readers = Vec::new();
        for stream in [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let console = console.clone();
            let echo = std::env::var_os("LUNAR_GUEST_ECHO").is_some();
            readers.push(std::thread::spawn(move || {
                let mut r = BufReader::new(stream);
                let mut buf = Vec::new();
                while let Ok(n) = r.read_until(b'\n', &mut buf) {
                    if n == 0 {
                        break;
                    }
                    let line = String::from_utf8_lossy(&buf).into_owned();
                    if echo {
                        eprint!("guest| {line}");
                    }
                    if let Ok(mut c) = console.lock() {
                        c.push_str(&line);
                    }
                    buf.clear();
                }
            }));
        }
        let stdin = child.stdin.take();
        // One joiner thread for both readers keeps the struct simple.
        let reader = std::thread::spawn(move || {
            for r in readers {
                let _ = r.join();
            }
        });
        Ok(Self {
            child,
            stdin,
            console,
            reader: Some(reader),
            started,
            deadline: started + limit,
            boot_secs: None,
            _scratch: scratch,
        })
    }

    fn console(&self) -> String {
        self.console.lock().map(|c| c.clone()).unwrap_or_default()
    }

    /// Records the boot time the first time the `BOOTED` line is seen.
    fn note_boot(&mut self) {
        if self.boot_secs.is_none() && self.console().contains(&format!("{MARKER}BOOTED")) {
            self.boot_secs = Some(self.started.elapsed().as_secs_f64());
        }
    }

    /// Waits until the console shows `LUNAR-GUEST: <what>` (or the guest ends / time runs out).
    pub fn wait_for(&mut self, what: &str) -> Result<()> {
        let needle = format!("{MARKER}{what}");
        loop {
            self.note_boot();
            let console = self.console();
            if console.contains(&needle) {
                return Ok(());
            }
            if console.contains(&format!("{MARKER}DONE")) {
                bail!(
                    "guest finished without `{what}`\n--- console (tail)\n{}",
                    tail(&console, 12000)
                );
            }
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "QEMU exited ({status}) before `{what}`\n--- console (tail)\n{}",
                    tail(&console, 12000)
                );
            }
            if Instant::now() >= self.deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                bail!(
                    "guest time limit reached waiting for `{what}` (QEMU killed)\n--- console (tail)\n{}",
                    tail(&console, 12000)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Answers a `WAIT <token>` request of the guest.
    pub fn send(&mut self, token: &str) -> Result<()> {
        let stdin = self
            .stdin
            .as_mut()
            .ok_or_else(|| anyhow!("guest console input closed"))?;
        stdin.write_all(format!("{token}\n").as_bytes())?;
        stdin.flush()?;
        Ok(())
    }

    /// Waits for the guest to finish (power off) within the time limit; QEMU is killed when
    /// the limit passes. Returns the parsed transcript (never fails on the guest's verdicts:
    /// check them with [`Transcript::assert_passed`]).
    pub fn finish(mut self) -> Result<Transcript> {
        let mut killed = false;
        loop {
            self.note_boot();
            if self.child.try_wait()?.is_some() {
                break;
            }
            if Instant::now() >= self.deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                killed = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        drop(self.stdin.take());
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        self.note_boot();
        let console = self.console();
        let t = Transcript::parse(
            console,
            self.boot_secs,
            self.started.elapsed().as_secs_f64(),
        );
        if killed {
            bail!(
                "guest time limit reached (QEMU killed)\n--- console (tail)\n{}",
                tail(&t.console, 12000)
            );
        }
        Ok(t)
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
