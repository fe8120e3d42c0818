//! Thin wrappers over the initiator tools the tests drive (libiscsi utilities, qemu).

use crate::process::{self, Output};
use anyhow::Result;
use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

/// Time limit for one initiator command; generous so a slow CI machine never flakes, but
/// bounded so a hung target fails the test instead of hanging CI.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(300);

/// CHAP settings for libiscsi: the initiator's credential goes in the URL
/// (`iscsi://user%secret@host/...`); mutual CHAP (the target's credential the initiator
/// expects) goes in `LIBISCSI_CHAP_TARGET_USERNAME` / `LIBISCSI_CHAP_TARGET_PASSWORD`.
#[derive(Clone, Debug, Default)]
pub struct Auth {
    /// Initiator CHAP name and secret.
    pub chap: Option<(String, String)>,
    /// Target CHAP name and secret the initiator demands back (mutual CHAP).
    pub mutual: Option<(String, String)>,
}

impl Auth {
    /// One-way CHAP.
    pub fn chap(user: &str, secret: &str) -> Self {
        Self {
            chap: Some((user.into(), secret.into())),
            mutual: None,
        }
    }

    /// One-way CHAP plus mutual CHAP.
    pub fn mutual(user: &str, secret: &str, t_user: &str, t_secret: &str) -> Self {
        Self {
            chap: Some((user.into(), secret.into())),
            mutual: Some((t_user.into(), t_secret.into())),
        }
    }

    fn apply(&self, cmd: &mut Command) {
        // Never let the caller's environment leak credentials into a test.
        for var in [
            "LIBISCSI_CHAP_USERNAME",
            "LIBISCSI_CHAP_PASSWORD",
            "LIBISCSI_CHAP_TARGET_USERNAME",
            "LIBISCSI_CHAP_TARGET_PASSWORD",
        ] {
            cmd.env_remove(var);
        }
        if let Some((u, s)) = &self.mutual {
            cmd.env("LIBISCSI_CHAP_TARGET_USERNAME", u)
                .env("LIBISCSI_CHAP_TARGET_PASSWORD", s);
        }
    }
}

/// `iscsi://[user%secret@]ADDR[/IQN/LUN]`.
pub fn url(addr: SocketAddr, target: Option<(&str, u64)>, auth: &Auth) -> String {
    let cred = match &auth.chap {
        Some((u, s)) => format!("{u}%{s}@"),
        None => String::new(),
    };
    match target {
        Some((iqn, lun)) => format!("iscsi://{cred}{addr}/{iqn}/{lun}"),
        None => format!("iscsi://{cred}{addr}"),
    }
}

/// Runs a libiscsi utility (`iscsi-ls`, `iscsi-inq`, ...) as `initiator` (None: the tool's
/// default name). Does not check the exit status.
pub fn libiscsi(
    tool: &str,
    args: &[&str],
    url: &str,
    initiator: Option<&str>,
    auth: &Auth,
) -> Result<Output> {
    let mut cmd = Command::new(tool);
    if let Some(i) = initiator {
        cmd.arg("-i").arg(i);
    }
    cmd.args(args).arg(url);
    auth.apply(&mut cmd);
    process::run(&mut cmd, COMMAND_TIMEOUT)
}

/// qemu `--image-opts` string for a raw window `[offset, offset+size)` of a LUN, logging in
/// as `initiator` (each qemu process then is its own I_T nexus).
pub fn qemu_image_opts(
    addr: SocketAddr,
    iqn: &str,
    lun: u64,
    initiator: &str,
    window: Option<(u64, u64)>,
) -> String {
    let mut s = String::from("driver=raw");
    if let Some((offset, size)) = window {
        s.push_str(&format!(",offset={offset},size={size}"));
    }
    s.push_str(&format!(
        ",file.driver=iscsi,file.transport=tcp,file.portal={addr},file.target={iqn},\
         file.lun={lun},file.initiator-name={initiator}"
    ));
    s
}

/// Runs `qemu-io --image-opts OPTS -c CMD...`; fails unless it exits 0 and reports no
/// failed operation or pattern mismatch.
pub fn qemu_io(image_opts: &str, commands: &[String]) -> Result<Output> {
    let mut cmd = Command::new("qemu-io");
    cmd.arg("--image-opts");
    for c in commands {
        cmd.arg("-c").arg(c);
    }
    cmd.arg(image_opts);
    let out = process::run(&mut cmd, COMMAND_TIMEOUT)?.check()?;
    let text = out.combined();
    if text.contains("verification failed") || text.contains("failed:") {
        anyhow::bail!(
            "`{}` reported a failure:\n{}",
            out.command,
            process::tail(&text, 4000)
        );
    }
    Ok(out)
}
