//! Starting and stopping `lunard` for a test.
//!
//! Every [`Lunard`] gets its own data directory (a temp dir unless the test passes one, e.g.
//! to restart on the same data) and its own loopback port, so tests run in parallel. Its
//! stdout and stderr go to a log file; when a test panics while a daemon is alive, the tail of
//! that log is printed so the failure can be diagnosed from CI output alone.

use crate::net;
use crate::process::{self, tail};
use anyhow::{anyhow, bail, Context, Result};
use std::fs::{File, OpenOptions};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The ready line, its parsing and colour stripping are the test kit's (the daemon's own
/// tests read the same line).
pub use lunar_test_kit::lunard::{parse_ready_addrs, strip_ansi, READY_MARKER};

/// Environment variable naming the `lunard` binary to test (overrides discovery).
pub const BIN_ENV: &str = "LUNARD_BIN";

/// How a test wants `lunard` started.
#[derive(Clone, Debug)]
pub struct LunardOptions {
    /// YAML configuration; written to a file and passed with `--config`. `None` runs the
    /// embedded default target.
    pub config_yaml: Option<String>,
    /// Data directory to use (kept after the daemon stops). `None` uses a fresh temp dir.
    pub data_dir: Option<PathBuf>,
    /// Additional command-line arguments.
    pub extra_args: Vec<String>,
    /// How many loopback portals to ask for with `--portal 127.0.0.1:0` (default 1). lunard
    /// gives every `--portal` TPGT 1, so two are two portals of one portal group (one SCSI
    /// target port): a second path to the same LUN, e.g. for libiscsi's MultipathIO suite.
    /// 0 passes no `--portal`, so the `portals:` of `config_yaml` apply (give them port 0,
    /// and `tpgt`s of your choice, to get distinct portal groups).
    pub portals: usize,
    /// How long to wait for the ready line.
    pub ready_timeout: Duration,
}

impl Default for LunardOptions {
    fn default() -> Self {
        Self {
            config_yaml: None,
            data_dir: None,
            extra_args: Vec::new(),
            portals: 1,
            ready_timeout: Duration::from_secs(60),
        }
    }
}

/// A running `lunard`.
pub struct Lunard {
    child: Option<Child>,
    bin: PathBuf,
    opts: LunardOptions,
    /// Owns the scratch directory (log, config, and the data dir unless the test gave one).
    scratch: tempfile::TempDir,
    data_dir: PathBuf,
    log_path: PathBuf,
    /// Bound portal addresses, in the order of the ready line (never empty once started).
    addrs: Vec<SocketAddr>,
    /// How many times this handle has started the daemon (restarts append to the same log).
    starts: u32,
}

impl Lunard {
    /// Starts `lunard` with the embedded default target (`iqn.2026-11.io.lunar:demo`).
    pub fn start() -> Result<Self> {
        Self::start_with(LunardOptions::default())
    }

    /// Starts `lunard` as described by `opts` and waits until it is ready.
    pub fn start_with(opts: LunardOptions) -> Result<Self> {
        let bin = lunard_bin()?;
        let scratch = scratch_dir("lunard-")?;
        let data_dir = match &opts.data_dir {
            Some(d) => d.clone(),
            None => scratch.path().join("data"),
        };
        std::fs::create_dir_all(&data_dir)
            .with_context(|| format!("creating data dir {}", data_dir.display()))?;
        let log_path = scratch.path().join("lunard.log");
        let mut me = Self {
            child: None,
            bin,
            opts,
            scratch,
            data_dir,
            log_path,
            addrs: vec![SocketAddr::from(([127, 0, 0, 1], 0))],
            starts: 0,
        };
        me.spawn_ready()?;
        Ok(me)
    }

    fn spawn_ready(&mut self) -> Result<()> {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .with_context(|| format!("opening {}", self.log_path.display()))?;
        let log_start = log.metadata().map(|m| m.len()).unwrap_or(0);
        self.starts += 1;
        let mut cmd = Command::new(&self.bin);
        if let Some(yaml) = &self.opts.config_yaml {
            let config_path = self.scratch.path().join("lunard.yaml");
            std::fs::write(&config_path, yaml)
                .with_context(|| format!("writing {}", config_path.display()))?;
            cmd.arg("--config").arg(&config_path);
        }
        // Port 0: lunard binds a free port and reports it in its ready line, so parallel tests
        // never race for ports.
        cmd.arg("--data-dir").arg(&self.data_dir);
        for _ in 0..self.opts.portals {
            cmd.arg("--portal").arg("127.0.0.1:0");
        }
        cmd.args(&self.opts.extra_args)
            .env("NO_COLOR", "1")
            .env("RUST_BACKTRACE", "1")
            .env(
                "RUST_LOG",
                std::env::var("LUNARD_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log));
        let command = process::describe(&cmd);
        append_log(
            &self.log_path,
            &format!("=== e2e: start #{}: {command}\n", self.starts),
        );
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot start `{command}`"))?;
        self.child = Some(child);
        match self.wait_ready(log_start) {
            Ok(addrs) => {
                self.addrs = addrs;
                Ok(())
            }
            Err(e) => {
                if let Some(mut child) = self.child.take() {
                    let _ = process::terminate(&mut child, Duration::from_secs(5));
                }
                bail!(
                    "{e:#}\n--- lunard log ({})\n{}",
                    self.log_path.display(),
                    tail(&self.log(), 16000)
                )
            }
        }
    }

    /// Waits for the ready line of this start and returns the addresses it reports.
    fn wait_ready(&mut self, log_start: u64) -> Result<Vec<SocketAddr>> {
        let deadline = Instant::now() + self.opts.ready_timeout;
        loop {
            let log = self.log_bytes();
            let fresh = String::from_utf8_lossy(log.get(log_start as usize..).unwrap_or(&[]));
            if let Some(addrs) = parse_ready_addrs(&fresh) {
                if self.opts.portals > 0 && addrs.len() != self.opts.portals {
                    bail!(
                        "lunard reported {} portal(s) ({addrs:?}) for {} --portal flags",
                        addrs.len(),
                        self.opts.portals
                    );
                }
                for &addr in &addrs {
                    if !net::wait_accepting(addr, Duration::from_secs(10)) {
                        bail!("lunard reported {addr} but it does not accept connections");
                    }
                }
                return Ok(addrs);
            }
            let child = self.child.as_mut().ok_or_else(|| anyhow!("no child"))?;
            if let Some(status) = child.try_wait()? {
                bail!("lunard exited before becoming ready ({status})");
            }
            if Instant::now() >= deadline {
                bail!(
                    "lunard not ready after {:?} (no `{READY_MARKER}ADDR` line)",
                    self.opts.ready_timeout
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Address of the (first) iSCSI portal.
    pub fn addr(&self) -> SocketAddr {
        self.addrs[0]
    }

    /// Addresses of every portal, in the order lunard reported them (configuration order).
    pub fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// Portal URL for discovery: `iscsi://127.0.0.1:PORT`.
    pub fn portal_url(&self) -> String {
        format!("iscsi://{}", self.addr())
    }

    /// URL of a LUN of a target: `iscsi://127.0.0.1:PORT/IQN/LUN`.
    pub fn lun_url(&self, iqn: &str, lun: u64) -> String {
        format!("iscsi://{}/{iqn}/{lun}", self.addr())
    }

    /// URL of a LUN through portal `portal` (index into [`Lunard::addrs`]); `None` if the
    /// daemon has fewer portals.
    pub fn lun_url_via(&self, portal: usize, iqn: &str, lun: u64) -> Option<String> {
        let addr = self.addrs.get(portal)?;
        Some(format!("iscsi://{addr}/{iqn}/{lun}"))
    }

    /// URL of LUN 0 of the embedded default target.
    pub fn default_lun_url(&self) -> String {
        self.lun_url(crate::DEFAULT_TARGET_IQN, 0)
    }

    /// Data directory (survives [`Lunard::stop`]; reused by [`Lunard::restart`]).
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Everything the daemon has logged so far (all starts of this handle).
    pub fn log(&self) -> String {
        strip_ansi(&String::from_utf8_lossy(&self.log_bytes()))
    }

    fn log_bytes(&self) -> Vec<u8> {
        std::fs::read(&self.log_path).unwrap_or_default()
    }

    /// Process id of the running daemon.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Stops the daemon with SIGTERM; fails if it needed SIGKILL after 20 s or exited with a
    /// failure status (a graceful stop is part of the product).
    pub fn stop(&mut self) -> Result<ExitStatus> {
        let mut child = self
            .child
            .take()
            .ok_or_else(|| anyhow!("lunard is not running"))?;
        let (status, graceful) = process::terminate(&mut child, Duration::from_secs(20))?;
        append_log(&self.log_path, &format!("=== e2e: stopped: {status}\n"));
        if !graceful {
            bail!(
                "lunard ignored SIGTERM for 20 s and was killed\n{}",
                tail(&self.log(), 8000)
            );
        }
        if !status.success() {
            bail!(
                "lunard exited with {status} after SIGTERM\n{}",
                tail(&self.log(), 8000)
            );
        }
        Ok(status)
    }

    /// Kills the daemon with SIGKILL (no chance to clean up: a crash) and reaps it;
    /// [`restart`](Self::restart) starts it again on the same data dir.
    pub fn kill9(&mut self) -> Result<()> {
        let mut child = self
            .child
            .take()
            .ok_or_else(|| anyhow!("lunard is not running"))?;
        child.kill().context("SIGKILL lunard")?;
        let status = child.wait().context("reaping lunard")?;
        append_log(
            &self.log_path,
            &format!("=== e2e: killed (SIGKILL): {status}\n"),
        );
        Ok(())
    }

    /// Stops the daemon (SIGTERM) and starts it again on the same data dir and configuration.
    /// The portal port may change.
    pub fn restart(&mut self) -> Result<()> {
        if self.child.is_some() {
            self.stop()?;
        }
        self.spawn_ready()
    }

    /// Replaces the configuration the next [`restart`](Self::restart) starts with.
    pub fn set_config_yaml(&mut self, yaml: String) {
        self.opts.config_yaml = Some(yaml);
    }

    /// Fails if the daemon has exited (e.g. crashed during the test).
    pub fn check_alive(&mut self) -> Result<()> {
        let child = self
            .child
            .as_mut()
            .ok_or_else(|| anyhow!("lunard is not running"))?;
        if let Some(status) = child.try_wait()? {
            bail!("lunard died ({status})\n{}", tail(&self.log(), 16000));
        }
        Ok(())
    }
}

impl Drop for Lunard {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = process::terminate(&mut child, Duration::from_secs(10));
        }
        if std::thread::panicking() {
            eprintln!(
                "--- lunard log (last 16 KiB of {}):\n{}\n--- end of lunard log",
                self.log_path.display(),
                tail(&self.log(), 16000)
            );
        }
    }
}

fn append_log(path: &Path, line: &str) {
    use std::io::Write;
    if let Ok(mut f) = OpenOptions::new().create(true).append(true).open(path) {
        let _ = f.write_all(line.as_bytes());
    }
}

/// Finds the (first) address in a `lunard ready: listening on ADDR, ...` line.
pub fn parse_ready_line(log: &str) -> Option<SocketAddr> {
    parse_ready_addrs(log).map(|a| a[0])
}

/// A scratch directory for one daemon instance, under `LUNAR_E2E_TMPDIR` if set.
pub fn scratch_dir(prefix: &str) -> Result<tempfile::TempDir> {
    let mut b = tempfile::Builder::new();
    b.prefix(prefix);
    match std::env::var_os("LUNAR_E2E_TMPDIR") {
        Some(dir) => b.tempdir_in(dir),
        None => b.tempdir(),
    }
    .context("creating a scratch directory")
}

/// Locates the `lunard` binary to test, building it if it is missing.
///
/// Order: `$LUNARD_BIN`; `lunard` next to the test executable's profile directory (so
/// `cargo test --release` tests the release build); otherwise it runs
/// `cargo build -p target-daemon --bin lunard` for that profile once per test binary (with
/// `--features ceph`, and `lunarctl` too, when `LUNAR_CEPH_CONF` names a cluster).
pub fn lunard_bin() -> Result<PathBuf> {
    static BIN: OnceLock<std::result::Result<PathBuf, String>> = OnceLock::new();
    BIN.get_or_init(|| find_or_build_lunard().map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(|e| anyhow!(e))
}

fn find_or_build_lunard() -> Result<PathBuf> {
    if let Some(bin) = std::env::var_os(BIN_ENV) {
        let bin = PathBuf::from(bin);
        if !bin.is_file() {
            bail!("${BIN_ENV} = {} is not a file", bin.display());
        }
        return Ok(bin);
    }
    let exe = std::env::current_exe().context("locating the test executable")?;
    // target/<profile>/deps/<test-binary>
    let profile_dir = exe
        .parent()
        .filter(|d| d.ends_with("deps"))
        .and_then(Path::parent)
        .map(Path::to_path_buf);
    if let Some(dir) = &profile_dir {
        let candidate = dir.join("lunard");
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .ok_or_else(|| anyhow!("no workspace root"))?
        .to_path_buf();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let (target_dir, profile) = match &profile_dir {
        Some(dir) => (
            dir.parent().map(Path::to_path_buf),
            dir.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "debug".into()),
        ),
        None => (None, "debug".into()),
    };
    let cargo_profile = if profile == "debug" {
        "dev".to_string()
    } else {
        profile.clone()
    };
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&workspace)
        .args([
            "build",
            "-p",
            "target-daemon",
            "--bin",
            "lunard",
            "--profile",
        ])
        .arg(&cargo_profile);
    if let Some(t) = &target_dir {
        cmd.arg("--target-dir").arg(t);
    }
    // With a Ceph cluster to test against, build the gateway support (librados/librbd) in:
    // the HA tests need it, and the rest does not mind.
    if std::env::var_os(crate::ceph::CONF_ENV).is_some_and(|v| !v.is_empty()) {
        cmd.args(["--features", "ceph", "--bin", "lunarctl"]);
    }
    eprintln!(
        "lunar-e2e: lunard not built yet; running `{}`",
        process::describe(&cmd)
    );
    let out = process::run(&mut cmd, Duration::from_secs(1800))?.check()?;
    drop(out);
    let built = match &target_dir {
        Some(t) => t.join(&profile).join("lunard"),
        None => workspace.join("target").join(&profile).join("lunard"),
    };
    if !built.is_file() {
        bail!(
            "cargo build succeeded but {} does not exist",
            built.display()
        );
    }
    Ok(built)
}

/// Opens (creating) a file for appending; used for logs of helper daemons.
pub fn open_log(path: &Path) -> Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_line_parsing() {
        let log = "\u{1b}[2m2026-11-22T03:00:00Z\u{1b}[0m \u{1b}[32m INFO\u{1b}[0m lunard: lunard ready: listening on 127.0.0.1:40123 target=iqn.x\n";
        assert_eq!(
            parse_ready_line(log),
            Some("127.0.0.1:40123".parse().unwrap())
        );
        assert_eq!(parse_ready_line("lunard starting\n"), None);
        assert_eq!(
            parse_ready_line("x lunard ready: listening on [::1]:3260, 127.0.0.1:3261"),
            Some("[::1]:3260".parse().unwrap())
        );
        assert_eq!(
            parse_ready_addrs(
                "x lunard ready: listening on [::1]:3260, 127.0.0.1:3261 target=iqn.x:y\n"
            ),
            Some(vec![
                "[::1]:3260".parse().unwrap(),
                "127.0.0.1:3261".parse().unwrap()
            ])
        );
        assert_eq!(
            parse_ready_addrs(
                r#"{"message":"lunard ready: listening on 127.0.0.1:1, 127.0.0.1:2"}"#
            ),
            Some(vec![
                "127.0.0.1:1".parse().unwrap(),
                "127.0.0.1:2".parse().unwrap()
            ])
        );
        assert_eq!(
            parse_ready_addrs("lunard ready: listening on nothing"),
            None
        );
    }

    #[test]
    fn ansi_stripping() {
        assert_eq!(strip_ansi("\u{1b}[1;31mred\u{1b}[0m plain"), "red plain");
    }
}
