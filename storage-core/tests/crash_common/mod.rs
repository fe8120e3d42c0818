//! Shared harness of the kill tests that re-execute their own test binary as a child
//! process (receive_crash, group_crash): the child's runtime, its spawn (every third one
//! under another boot id, so the reopen replays as after a power loss), the kill at a
//! chosen instant, the child's progress log and reading a volume back chunk by chunk.
//! One place, so the tests cannot drift apart in how they kill and what a kill means.
// Each test module uses part of it.
#![allow(dead_code)]

use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use storage_core::Pool;

/// The runtime a child runs its work on (two workers, as the parent's tests).
pub(crate) fn child_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("rt")
}

/// The command that re-executes this test binary running only the test `child_test` (its
/// module path, e.g. `crash::crash_child`); the caller adds the child's environment and
/// stdio. One place for how a child is started, so no kill test runs a different child.
pub(crate) fn child_command(child_test: &str) -> Command {
    let exe = std::env::current_exe().expect("exe");
    let mut cmd = Command::new(exe);
    cmd.args(["--exact", child_test, "--nocapture", "--test-threads=1"]);
    cmd
}

/// Every third attempt (`attempt % 3 == 2`) runs the child under a fresh `LUNAR_BOOT_ID`, so
/// the parent's reopen replays as after a power loss (only sealed journal blocks count, and
/// what was flushed or written with FUA must still be there). Returns whether it does.
pub(crate) fn reboot_every_third(cmd: &mut Command, attempt: u64) -> bool {
    let reboot = attempt % 3 == 2;
    if reboot {
        cmd.env("LUNAR_BOOT_ID", uuid::Uuid::new_v4().to_string());
    }
    reboot
}

/// Spawns [`child_command`] with `envs` set (the child test reads its work from them), its
/// output discarded, under [`reboot_every_third`].
pub(crate) fn spawn_child(child_test: &str, envs: &[(&str, &str)], attempt: u32) -> Child {
    let mut cmd = child_command(child_test);
    cmd.stdout(Stdio::null()).stderr(Stdio::null());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    reboot_every_third(&mut cmd, u64::from(attempt));
    cmd.spawn().expect("spawn child")
}

/// Lets `child` run for `wait`, then kills it with SIGKILL unless it has finished by then.
/// Returns whether it was killed and how it ended (reaped, so no zombie is left).
pub(crate) fn kill_after(child: &mut Child, wait: Duration) -> (bool, ExitStatus) {
    std::thread::sleep(wait);
    let killed = child.try_wait().expect("try_wait").is_none();
    if killed {
        child.kill().expect("kill");
    }
    (killed, child.wait().expect("wait"))
}

/// The child's progress log (`dir/progress`), opened for appending: a line is written only
/// after what it names was acknowledged, so the parent knows what must survive the kill.
pub(crate) fn progress_log(dir: &Path) -> std::fs::File {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("progress"))
        .expect("progress file")
}

/// Appends `line` and its newline to a progress log with one `write(2)`, so a kill leaves
/// the line whole or absent. `writeln!` writes a formatted line in pieces (a call per
/// piece): a kill between two left a line without its newline, the next child's first line
/// was glued to it, and the parent read an acknowledged name that never existed.
pub(crate) fn log_line(log: &mut impl Write, line: impl std::fmt::Display) {
    let s = format!("{line}\n");
    log.write_all(s.as_bytes()).expect("progress write");
}

/// The progress log's text (empty before the first child wrote to it).
pub(crate) fn progress_text(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("progress")).unwrap_or_default()
}

/// The first `chunks` chunks (of `chunk_size` bytes) of volume `vol`, one `Vec` each.
pub(crate) async fn volume_chunks(
    pool: &Pool,
    vol: &str,
    chunk_size: u64,
    chunks: u64,
) -> Vec<Vec<u8>> {
    let v = pool.volume(vol).expect("volume");
    let per = (chunk_size / 4096) as u32;
    let mut out = Vec::new();
    for i in 0..chunks {
        out.push(v.read(i * per as u64, per).await.expect("read").to_vec());
    }
    out
}
