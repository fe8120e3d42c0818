//! Running external commands with a time limit and capturing their output.

use anyhow::{bail, Context, Result};
use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Output of a finished command.
#[derive(Debug)]
pub struct Output {
    /// The command line, for messages.
    pub command: String,
    /// Exit status.
    pub status: ExitStatus,
    /// Standard output, lossily decoded.
    pub stdout: String,
    /// Standard error, lossily decoded.
    pub stderr: String,
    /// The command was killed because it exceeded its time limit.
    pub timed_out: bool,
}

impl Output {
    /// Fails with the command line and both streams unless the command exited 0.
    pub fn check(self) -> Result<Self> {
        if !self.status.success() {
            bail!(
                "`{}` failed ({}):\n--- stdout\n{}\n--- stderr\n{}",
                self.command,
                self.status,
                tail(&self.stdout, 8000),
                tail(&self.stderr, 8000)
            );
        }
        Ok(self)
    }

    /// stdout followed by stderr.
    pub fn combined(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

/// Returns at most the last `max` bytes of `s` (on a char boundary).
pub fn tail(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut start = s.len() - max;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}

/// Renders a command line for messages.
pub fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        s.push(' ');
        s.push_str(&arg.to_string_lossy());
    }
    s
}

/// Runs `cmd` to completion, killing it after `timeout` (an error). stdin is closed.
pub fn run(cmd: &mut Command, timeout: Duration) -> Result<Output> {
    let out = run_capture(cmd, timeout)?;
    if out.timed_out {
        bail!(
            "`{}` did not finish within {timeout:?}; killed it.\n--- stdout\n{}\n--- stderr\n{}",
            out.command,
            tail(&out.stdout, 8000),
            tail(&out.stderr, 8000)
        );
    }
    Ok(out)
}

/// Like [`run`], but a timeout is not an error: the child is killed and whatever it printed
/// is returned with `timed_out` set (to diagnose where a long run hung).
pub fn run_capture(cmd: &mut Command, timeout: Duration) -> Result<Output> {
    let command = describe(cmd);
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start `{command}`"))?;
    // Drain both pipes on threads so a chatty child never blocks on a full pipe.
    let out = drain(child.stdout.take());
    let err = drain(child.stderr.take());
    let (status, timed_out) = match wait_timeout_no_kill(&mut child, timeout)
        .with_context(|| format!("waiting for `{command}`"))?
    {
        Some(status) => (status, false),
        None => {
            let _ = child.kill();
            (child.wait()?, true)
        }
    };
    let stdout = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    Ok(Output {
        command,
        status,
        stdout,
        stderr,
        timed_out,
    })
}

/// Runs `cmd` in `dir` (see [`run`]).
pub fn run_in(dir: &Path, cmd: &mut Command, timeout: Duration) -> Result<Output> {
    run(cmd.current_dir(dir), timeout)
}

fn drain<R: Read + Send + 'static>(pipe: Option<R>) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut p) = pipe {
            let _ = p.read_to_end(&mut buf);
        }
        String::from_utf8_lossy(&buf).into_owned()
    })
}

/// Waits for `child` up to `timeout`; on timeout kills it and returns `None`.
pub fn wait_timeout(child: &mut Child, timeout: Duration) -> Result<Option<ExitStatus>> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Sends `signal` to process `pid` (no-op if it is gone).
pub fn signal(pid: u32, signal: libc::c_int) {
    if let Ok(pid) = libc::pid_t::try_from(pid) {
        // SAFETY: kill(2) has no memory-safety preconditions; a stale pid only yields ESRCH.
        unsafe {
            libc::kill(pid, signal);
        }
    }
}

/// Stops `child` gracefully: SIGTERM, wait up to `grace`, then SIGKILL. Returns the exit
/// status and whether the graceful stop worked.
pub fn terminate(child: &mut Child, grace: Duration) -> Result<(ExitStatus, bool)> {
    if let Some(status) = child.try_wait()? {
        return Ok((status, true));
    }
    signal(child.id(), libc::SIGTERM);
    if let Some(status) = wait_timeout_no_kill(child, grace)? {
        return Ok((status, true));
    }
    let _ = child.kill();
    Ok((child.wait()?, false))
}

fn wait_timeout_no_kill(child: &mut Child, timeout: Duration) -> Result<Option<ExitStatus>> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
