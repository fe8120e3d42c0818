//! Shared helpers of the admin tests: an in-process lunard and a `lunarctl` runner.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use serde_json::Value;
pub(crate) use target_daemon::config::ByteSize;
use target_daemon::config::{Config, TargetCfg};

use crate::support::{local_config, start_config};
use target_daemon::daemon::Daemon;

pub(crate) const TARGET: &str = "iqn.2026-11.io.lunar:admin";

/// Starts lunard in-process on `dir` (pool capacity `capacity`, one empty target).
pub(crate) async fn start(dir: &Path, capacity: ByteSize) -> Daemon {
    start_config(admin_config(dir, capacity)).await
}

/// The configuration [`start`] uses: [`local_config`] with the empty target [`TARGET`].
pub(crate) fn admin_config(dir: &Path, capacity: ByteSize) -> Config {
    local_config(dir, capacity).with_target(TargetCfg::iscsi(TARGET))
}

pub(crate) fn socket(dir: &Path) -> PathBuf {
    dir.join("admin.sock")
}

/// Output of one `lunarctl` run.
#[derive(Debug)]
pub(crate) struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    /// The `--json` result; panics (test failure) with the error line otherwise.
    pub(crate) fn json(&self) -> Value {
        assert_eq!(self.code, 0, "lunarctl failed: {}", self.stderr);
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("bad JSON {e}: {}", self.stdout))
    }

    /// Asserts failure with one line naming `needle`.
    pub(crate) fn fails_with(&self, needle: &str) {
        assert_ne!(self.code, 0, "expected failure, got {}", self.stdout);
        let line = self.stderr.trim_end();
        assert!(!line.contains('\n'), "error must be one line: {line:?}");
        assert!(line.starts_with("lunarctl: "), "{line:?}");
        assert!(line.contains(needle), "{line:?} should mention {needle:?}");
    }
}

/// Runs `lunarctl --socket <dir>/admin.sock ARGS`.
pub(crate) async fn ctl(dir: &Path, args: &[&str]) -> Out {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_lunarctl"))
        .arg("--socket")
        .arg(socket(dir))
        .args(args)
        .output()
        .await
        .expect("run lunarctl");
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs `lunarctl --socket <dir>/admin.sock ARGS` with `input` on its standard input.
pub(crate) async fn ctl_stdin(dir: &Path, args: &[&str], input: &str) -> Out {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_lunarctl"))
        .arg("--socket")
        .arg(socket(dir))
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run lunarctl");
    let mut stdin = child.stdin.take().expect("stdin");
    // lunarctl may exit (an error) without reading: a broken pipe here is not a failure.
    let _ = stdin.write_all(input.as_bytes()).await;
    drop(stdin);
    let out = child.wait_with_output().await.expect("lunarctl output");
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Writes `text` to a new file `path` only its owner may read (mode 0600), as a token or
/// secret file must be.
pub(crate) fn private_file(path: &Path, text: &str) {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .expect("create private file");
    f.set_permissions(std::fs::Permissions::from_mode(0o600))
        .expect("chmod 600");
    f.write_all(text.as_bytes()).expect("write private file");
}

/// `lunarctl --json ARGS`, which must succeed.
pub(crate) async fn ctl_json(dir: &Path, args: &[&str]) -> Value {
    let mut a = vec!["--json"];
    a.extend_from_slice(args);
    ctl(dir, &a).await.json()
}

/// Deterministic test data (the kit's one pattern).
pub(crate) use lunar_test_kit::pattern;

/// Writes `mib` MiB of pattern data (seed) at the start of volume `name`.
pub(crate) async fn fill(d: &Daemon, name: &str, mib: usize, seed: u8) {
    let v = d.pool().expect("local pool").volume(name).expect("volume");
    let bs = v.block_size() as usize;
    for i in 0..mib {
        let data = bytes::Bytes::from(pattern(1 << 20, seed.wrapping_add(i as u8)));
        v.write((i * (1 << 20) / bs) as u64, data, false)
            .await
            .expect("write");
    }
    v.flush().await.expect("flush");
}

/// Reads `mib` MiB from the start of volume `name`.
pub(crate) async fn read(d: &Daemon, name: &str, mib: usize) -> Vec<u8> {
    let v = d.pool().expect("local pool").volume(name).expect("volume");
    let bs = v.block_size() as usize;
    let mut out = Vec::with_capacity(mib << 20);
    for i in 0..mib {
        let b = v
            .read((i * (1 << 20) / bs) as u64, ((1 << 20) / bs) as u32)
            .await
            .expect("read");
        out.extend_from_slice(&b);
    }
    out
}

/// The NAA id LUN `lun` of the target reports in VPD page 83h, as `naa.` + 32 hex digits
/// (the form `lun show` prints).
pub(crate) fn device_naa(d: &Daemon, lun: u64) -> String {
    let naa = d
        .server()
        .target(TARGET)
        .expect("target")
        .scsi
        .lun_naa(lun)
        .expect("lun");
    let hex: String = naa.iter().map(|b| format!("{b:02x}")).collect();
    format!("naa.{hex}")
}

/// LUN numbers the target presents (what REPORT LUNS returns).
pub(crate) fn reported_luns(d: &Daemon) -> Vec<u64> {
    d.server().target(TARGET).expect("target").scsi.luns()
}
