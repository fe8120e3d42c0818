//! `lunarctl`, the admin CLI shipped next to `lunard`, run against a [`Lunard`]'s admin
//! socket (`<data-dir>/admin.sock`).

use crate::process::{self, Output};
use crate::Lunard;
use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

/// Time limit for one `lunarctl` call.
pub const CTL_TIMEOUT: Duration = Duration::from_secs(120);

/// Runs `lunarctl` against one daemon.
#[derive(Clone, Debug)]
pub struct Lunarctl {
    bin: PathBuf,
    socket: PathBuf,
}

impl Lunarctl {
    /// `lunarctl` next to the `lunard` under test, talking to `d`'s admin socket.
    pub fn for_daemon(d: &Lunard) -> Result<Self> {
        let bin = crate::daemon::lunard_bin()?.with_file_name("lunarctl");
        if !bin.is_file() {
            bail!(
                "{} does not exist: build it with `cargo build --release --workspace --bins`",
                bin.display()
            );
        }
        Ok(Self {
            bin,
            socket: d.data_dir().join("admin.sock"),
        })
    }

    /// Path of the binary.
    pub fn bin(&self) -> &std::path::Path {
        &self.bin
    }

    /// `lunarctl --socket SOCK ARGS`; the exit status is not checked.
    pub fn run(&self, args: &[&str]) -> Result<Output> {
        let mut cmd = Command::new(&self.bin);
        cmd.arg("--socket").arg(&self.socket).args(args);
        process::run(&mut cmd, CTL_TIMEOUT)
    }

    /// `lunarctl --json ARGS`, which must succeed; its parsed output.
    pub fn json(&self, args: &[&str]) -> Result<Value> {
        let mut a = vec!["--json"];
        a.extend_from_slice(args);
        let out = self.run(&a)?.check()?;
        serde_json::from_str(&out.stdout)
            .with_context(|| format!("`{}` printed no JSON:\n{}", out.command, out.stdout))
    }

    /// `lunarctl ARGS`, which must fail with one line on stderr mentioning `needle`.
    pub fn fails_with(&self, args: &[&str], needle: &str) -> Result<String> {
        let out = self.run(args)?;
        if out.status.success() {
            bail!("`{}` should have failed:\n{}", out.command, out.stdout);
        }
        let line = out.stderr.trim_end().to_string();
        if line.contains('\n') || !line.starts_with("lunarctl: ") || !line.contains(needle) {
            return Err(anyhow!(
                "`{}`: expected one line `lunarctl: ...{needle}...`, got {line:?}",
                out.command
            ));
        }
        Ok(line)
    }
}
