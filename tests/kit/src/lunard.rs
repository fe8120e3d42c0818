//! Starting a `lunard` process and knowing when it serves; the name of the demo target
//! many tests log in to.
//!
//! lunard logs `lunard ready: listening on ADDR, ADDR, ...` once its portals accept logins
//! (one address per portal, in configuration order; port 0 in the configuration becomes the
//! port the kernel chose). Tests start it on `127.0.0.1:0` and read the address from that
//! line, so any number of daemons run side by side.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The line `lunard` logs once its portals accept logins, followed by the bound addresses.
pub const READY_MARKER: &str = "lunard ready: listening on ";

/// How long a daemon may take to become ready before the test fails (a hang, not a timing
/// check: a loaded CI machine starts one in well under a second).
pub const READY_LIMIT: Duration = Duration::from_secs(60);

/// The demo target most I/O tests log in to (lunard's embedded default serves it too; the
/// daemon tests' `support::demo_config` builds it).
pub const DEMO_IQN: &str = "iqn.2026-11.io.lunar:demo";

/// Every address in the first `lunard ready: listening on ADDR, ADDR, ...` line of `log`:
/// the addresses up to the first token that is not one (`target=...`, the end of a JSON
/// string). `None` without a ready line naming at least one address.
pub fn parse_ready_addrs(log: &str) -> Option<Vec<SocketAddr>> {
    log.lines().find_map(|line| {
        let line = strip_ansi(line);
        let rest = &line[line.find(READY_MARKER)? + READY_MARKER.len()..];
        let addrs: Vec<SocketAddr> = rest
            .split(|c: char| c.is_whitespace() || c == ',' || c == '"')
            .filter(|t| !t.is_empty())
            .map_while(|t| t.parse().ok())
            .collect();
        (!addrs.is_empty()).then_some(addrs)
    })
}

/// Removes ANSI colour escape sequences (tracing colours its output by default).
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' && chars.peek() == Some(&'[') {
            chars.next();
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// A `lunard` process that has logged its ready line. Killed (SIGKILL) and reaped when
/// dropped, so a failing test never leaves one behind holding the test's output pipes.
pub struct LunardProcess {
    child: Child,
    addrs: Vec<SocketAddr>,
    until_ready: Vec<String>,
    /// The last [`TAIL_LINES`] lines lunard logged after its ready line, so a test whose
    /// daemon ended badly can say what it said last.
    tail: Arc<Mutex<VecDeque<String>>>,
}

/// How many of lunard's last log lines a [`LunardProcess`] keeps.
pub const TAIL_LINES: usize = 200;

impl LunardProcess {
    /// Spawns `cmd` with its standard error piped and waits (at most [`READY_LIMIT`]) for
    /// the ready line; panics (fails the test) if it never comes. Standard error keeps being
    /// drained afterwards, so the daemon never blocks on a full pipe.
    pub fn spawn_ready(cmd: &mut Command) -> LunardProcess {
        let mut child = cmd.stderr(Stdio::piped()).spawn().expect("spawn lunard");
        let stderr = child.stderr.take().expect("lunard's stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut p = LunardProcess {
            child,
            addrs: Vec::new(),
            until_ready: Vec::new(),
            tail: Arc::new(Mutex::new(VecDeque::with_capacity(TAIL_LINES))),
        };
        p.addrs = p.wait_ready(&rx);
        let tail = p.tail.clone();
        std::thread::spawn(move || {
            while let Ok(line) = rx.recv() {
                let mut t = tail.lock().unwrap_or_else(|e| e.into_inner());
                if t.len() == TAIL_LINES {
                    t.pop_front();
                }
                t.push_back(line);
            }
        });
        p
    }

    fn wait_ready(&mut self, rx: &Receiver<String>) -> Vec<SocketAddr> {
        loop {
            let line = rx.recv_timeout(READY_LIMIT).unwrap_or_else(|_| {
                panic!(
                    "lunard never became ready; it said:\n{}",
                    self.until_ready.join("\n")
                )
            });
            let addrs = parse_ready_addrs(&line);
            self.until_ready.push(line);
            if let Some(addrs) = addrs {
                return addrs;
            }
        }
    }

    /// The first portal's address.
    pub fn addr(&self) -> SocketAddr {
        self.addrs[0]
    }

    /// Every portal's address, in configuration order.
    pub fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// What lunard logged up to and including its ready line.
    pub fn log_until_ready(&self) -> &[String] {
        &self.until_ready
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What lunard logged last (at most [`TAIL_LINES`] lines after its ready line).
    pub fn log_tail(&self) -> String {
        let t = self.tail.lock().unwrap_or_else(|e| e.into_inner());
        t.iter().cloned().collect::<Vec<_>>().join("\n")
    }

    /// SIGTERM (a clean stop) and the exit status. A stop that did not succeed prints
    /// lunard's last log lines to the test's output, since that is where the cause is.
    pub fn terminate(mut self) -> ExitStatus {
        // SAFETY: kill(2) on our own child, which has not been reaped yet (we hold it).
        let rc = unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        assert_eq!(rc, 0, "SIGTERM to lunard");
        let status = self.child.wait().expect("wait for lunard");
        if !status.success() {
            // The drain thread may still hold the last lines for a moment after the exit.
            std::thread::sleep(Duration::from_millis(200));
            eprintln!(
                "lunard ended with {status:?} after SIGTERM; its last lines:\n{}",
                self.log_tail()
            );
        }
        status
    }

    /// SIGKILL (no chance to clean up) and reap.
    pub fn kill(self) {
        drop(self);
    }
}

impl Drop for LunardProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_line_with_colours_and_several_portals() {
        let log = "starting\n\u{1b}[32mINFO\u{1b}[0m lunard ready: listening on \
                   127.0.0.1:3260, [::1]:3261 target=x\n";
        assert_eq!(
            parse_ready_addrs(log),
            Some(vec![
                "127.0.0.1:3260".parse().unwrap(),
                "[::1]:3261".parse().unwrap()
            ])
        );
        assert_eq!(
            parse_ready_addrs("lunard ready: listening on nothing"),
            None
        );
    }
}
