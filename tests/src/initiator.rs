//! Thin wrappers over the initiator tools the tests drive (libiscsi utilities, qemu).

use crate::process::{self, Output};
use anyhow::Result;
use std::io::Read;
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
    run_qemu_io(image_opts, commands, false)
}

/// [`qemu_io`] opening the image read-only (`-r`): how a host reads a write-protected LUN
/// (a replica), which qemu refuses to open read-write.
pub fn qemu_io_read_only(image_opts: &str, commands: &[String]) -> Result<Output> {
    run_qemu_io(image_opts, commands, true)
}

fn run_qemu_io(image_opts: &str, commands: &[String], read_only: bool) -> Result<Output> {
    let mut cmd = Command::new("qemu-io");
    if read_only {
        cmd.arg("-r");
    }
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

/// A `qemu-io` process kept open on one LUN: one iSCSI session (one I_T nexus) that lives
/// across admin operations, so the test sees what a logged-in host sees (unit attentions,
/// `session list`). Commands are fed on stdin one at a time.
pub struct QemuIoSession {
    child: std::process::Child,
    stdin: Option<std::process::ChildStdin>,
    stdout: std::sync::Arc<std::sync::Mutex<String>>,
    stderr: std::sync::Arc<std::sync::Mutex<String>>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

impl QemuIoSession {
    /// Starts `qemu-io --image-opts OPTS` (it logs in while opening the image) and waits
    /// until it has printed its first prompt.
    pub fn open(image_opts: &str) -> Result<Self> {
        use std::process::Stdio;
        let mut child = Command::new("qemu-io")
            .arg("--image-opts")
            .arg(image_opts)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let stdin = child.stdin.take();
        let stdout = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let stderr = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let mut readers = Vec::new();
        for (pipe, buf) in [
            (
                child
                    .stdout
                    .take()
                    .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
                stdout.clone(),
            ),
            (
                child
                    .stderr
                    .take()
                    .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
                stderr.clone(),
            ),
        ] {
            let Some(mut pipe) = pipe else { continue };
            readers.push(std::thread::spawn(move || {
                let mut chunk = [0u8; 4096];
                while let Ok(n) = pipe.read(&mut chunk) {
                    if n == 0 {
                        break;
                    }
                    buf.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push_str(&String::from_utf8_lossy(&chunk[..n]));
                }
            }));
        }
        let mut s = Self {
            child,
            stdin,
            stdout,
            stderr,
            readers,
        };
        s.wait_stdout(|o| o.contains("qemu-io>"), Duration::from_secs(30))?;
        Ok(s)
    }

    /// Everything printed on stdout so far.
    pub fn stdout(&self) -> String {
        self.stdout
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Everything printed on stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Runs one qemu-io command and waits for the prompt after it; returns what the command
    /// printed on stdout. Fails if qemu-io reports a failed operation or mismatch.
    pub fn command(&mut self, line: &str) -> Result<String> {
        use std::io::Write;
        let before = self.stdout().len();
        let prompts = self.stdout().matches("qemu-io>").count();
        let stdin = self
            .stdin
            .as_mut()
            .ok_or_else(|| anyhow::anyhow!("qemu-io stdin closed"))?;
        writeln!(stdin, "{line}")?;
        stdin.flush()?;
        self.wait_stdout(|o| o.matches("qemu-io>").count() > prompts, COMMAND_TIMEOUT)?;
        let out = self.stdout()[before..].to_string();
        if out.contains("verification failed") || out.contains("failed:") {
            anyhow::bail!(
                "qemu-io `{line}` failed:\n{out}\n--- stderr\n{}",
                self.stderr()
            );
        }
        Ok(out)
    }

    fn wait_stdout(&mut self, done: impl Fn(&str) -> bool, limit: Duration) -> Result<()> {
        let deadline = std::time::Instant::now() + limit;
        loop {
            if done(&self.stdout()) {
                return Ok(());
            }
            if let Some(status) = self.child.try_wait()? {
                anyhow::bail!(
                    "qemu-io exited ({status}):\n{}\n--- stderr\n{}",
                    self.stdout(),
                    self.stderr()
                );
            }
            if std::time::Instant::now() >= deadline {
                anyhow::bail!(
                    "qemu-io did not answer within {limit:?}:\n{}\n--- stderr\n{}",
                    self.stdout(),
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Quits qemu-io (logging out) and returns (stdout, stderr).
    pub fn quit(mut self) -> Result<(String, String)> {
        drop(self.stdin.take());
        match process::wait_timeout(&mut self.child, Duration::from_secs(30))? {
            Some(_) => {}
            None => anyhow::bail!("qemu-io did not exit after its stdin closed"),
        }
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
        Ok((self.stdout(), self.stderr()))
    }
}

impl Drop for QemuIoSession {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = process::wait_timeout(&mut self.child, Duration::from_secs(5));
    }
}
