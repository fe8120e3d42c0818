//! `docs/getting-started.md` works as written.
//!
//! Its ```` ```sh ```` blocks run literally, in order, in a scratch directory, against the
//! lunard and lunarctl under test: a `cargo` shell function maps
//! `cargo run --release --bin NAME [-- ARGS]` to the built binary, lunard additionally gets
//! `--portal 127.0.0.1:0 --no-metrics` (so parallel tests never fight over 3260 or 9860), and
//! `iscsi://127.0.0.1` in the blocks becomes `iscsi://127.0.0.1:PORT` with the port lunard
//! reported. Blocks marked `sh setup` (package installs, rustup, git clone) are not run.
//! Blocks marked `sh kernel-initiator` need a kernel initiator and are the kernel-initiator
//! suite's scenario 1; this test checks that scenario's guest scripts still run their
//! `iscsiadm` commands.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use lunar_e2e::daemon::{lunard_bin, parse_ready_addrs, READY_MARKER};
use lunar_e2e::process::run_in;
use lunar_e2e::{require_tools, DEFAULT_TARGET_IQN};
use lunar_test_kit::markdown::fenced_blocks;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The shim every runnable block is prefixed with.
fn shim(bin_dir: &Path) -> String {
    format!(
        r#"BIN_DIR='{}'
cargo() {{
  if [ "$#" -lt 4 ] || [ "$1 $2 $3" != "run --release --bin" ]; then
    echo "getting_started.rs: unexpected cargo invocation: cargo $*" >&2; return 97
  fi
  local bin=$4; shift 4
  if [ "$#" -gt 0 ] && [ "$1" = "--" ]; then shift; fi
  if [ "$bin" = lunard ]; then
    exec "$BIN_DIR/lunard" "$@" --portal 127.0.0.1:0 --no-metrics
  fi
  "$BIN_DIR/$bin" "$@"
}}
"#,
        bin_dir.display()
    )
}

struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn getting_started_commands_run() {
    require_tools!("iscsi-ls", "iscsi-inq");
    let md = std::fs::read_to_string(repo().join("docs/getting-started.md"))
        .expect("docs/getting-started.md");
    let blocks = fenced_blocks(&md);
    let run_blocks: Vec<&String> = blocks
        .iter()
        .filter(|(i, _)| i == "sh")
        .map(|(_, b)| b)
        .collect();
    assert_eq!(
        run_blocks.len(),
        2,
        "expected the start block and the check block: {blocks:?}"
    );
    for (info, _) in &blocks {
        assert!(
            ["sh", "sh setup", "sh kernel-initiator"].contains(&info.as_str()),
            "block `{info}` is neither run nor marked as covered elsewhere"
        );
    }
    assert!(
        md.contains(&format!("    {READY_MARKER}127.0.0.1:3260")),
        "the doc's ready line must be what lunard prints"
    );

    let lunard = lunard_bin().expect("lunard binary");
    let bin_dir = lunard.parent().expect("bin dir").to_path_buf();
    let work = tempfile::tempdir().expect("tempdir");
    let prelude = shim(&bin_dir);

    // Step 1: the start block, in the background, until the ready line.
    let log_path = work.path().join("lunard.log");
    let log = std::fs::File::create(&log_path).expect("log");
    let child = Command::new("bash")
        .arg("-euo")
        .arg("pipefail")
        .arg("-c")
        .arg(format!("{prelude}{}", run_blocks[0]))
        .current_dir(work.path())
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::from(log.try_clone().expect("log")))
        .stderr(Stdio::from(log))
        .spawn()
        .expect("start block");
    let mut daemon = Daemon(child);
    let deadline = Instant::now() + Duration::from_secs(60);
    let addr = loop {
        let text = std::fs::read_to_string(&log_path).unwrap_or_default();
        if let Some(a) = parse_ready_addrs(&text).and_then(|a| a.first().copied()) {
            break a;
        }
        if let Ok(Some(st)) = daemon.0.try_wait() {
            panic!("the start block exited ({st}):\n{text}");
        }
        assert!(Instant::now() < deadline, "lunard not ready:\n{text}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(addr.ip().is_loopback(), "{addr}");
    // The embedded default's data directory is ./lunar-data, as the doc says.
    assert!(
        work.path().join("lunar-data/admin.sock").exists(),
        "no ./lunar-data/admin.sock"
    );

    // Step 2: the check block, with the ephemeral port in the iscsi:// URLs.
    let block = run_blocks[1].replace("iscsi://127.0.0.1", &format!("iscsi://{addr}"));
    let out = run_in(
        work.path(),
        Command::new("bash")
            .arg("-euo")
            .arg("pipefail")
            .arg("-c")
            .arg(format!("{prelude}{block}")),
        Duration::from_secs(120),
    )
    .expect("check block");
    let text = out.combined();
    assert!(out.status.success(), "check block failed:\n{block}\n{text}");
    for want in [
        format!("Target:{DEFAULT_TARGET_IQN}"),
        "Lun:0".to_string(),
        "DIRECT_ACCESS".to_string(),
        "LUNAR".to_string(),
    ] {
        assert!(text.contains(&want), "`{want}` missing from:\n{text}");
    }
    // lunarctl lun list names the demo LUN with its 1 GiB size; pool status answers.
    let demo = text
        .lines()
        .find(|l| l.split_whitespace().next() == Some("demo"))
        .unwrap_or_else(|| panic!("no `demo` row in lunarctl lun list:\n{text}"));
    assert!(
        demo.contains(" 1 GiB ") && demo.contains(&format!("{DEFAULT_TARGET_IQN}/0")),
        "{demo}"
    );
    assert!(
        text.to_ascii_lowercase().contains("capacity"),
        "pool status:\n{text}"
    );
    if let Ok(Some(st)) = daemon.0.try_wait() {
        panic!("lunard died during the checks ({st})");
    }
    drop(daemon);
}

/// The kernel-initiator blocks' `iscsiadm` commands are what scenario 1 runs (with the
/// guest's `$PORTAL` and `$IQN` for the doc's address and target).
#[test]
fn kernel_initiator_blocks_match_scenario_one() {
    let md = std::fs::read_to_string(repo().join("docs/getting-started.md"))
        .expect("docs/getting-started.md");
    let guest = ["tests/guest/lib.sh", "tests/guest/scenarios/basic.sh"]
        .iter()
        .map(|p| std::fs::read_to_string(repo().join(p)).expect("guest script"))
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        guest.contains("mkfs.ext4") && guest.contains("e2fsck -fn"),
        "scenario 1 no longer makes and checks a filesystem"
    );
    let mut checked = 0;
    for (info, body) in fenced_blocks(&md) {
        if info != "sh kernel-initiator" {
            continue;
        }
        for line in body.lines().filter(|l| l.starts_with("iscsiadm ")) {
            let normalized = line
                .replace("-p 127.0.0.1", "-p \"$PORTAL\"")
                .replace(&format!("-T {DEFAULT_TARGET_IQN}"), "-T \"$IQN\"");
            assert!(
                guest.contains(normalized.trim()),
                "scenario 1 does not run `{line}` (looked for `{normalized}`)"
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 3, "discovery, login and logout");
}
