//! The `lunard` binary: readiness line, serving, clean exit on SIGTERM, configuration errors.

use std::process::Command;

use lunar_test_kit::initiator::Initiator;
use lunar_test_kit::lunard::LunardProcess;

fn lunard() -> Command {
    Command::new(env!("CARGO_BIN_EXE_lunard"))
}

#[tokio::test]
async fn starts_with_embedded_default_serves_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = LunardProcess::spawn_ready(
        lunard()
            .args(["--portal", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path()),
    );
    let saw_default = daemon
        .log_until_ready()
        .iter()
        .any(|l| l.contains("embedded default"));
    let addr = daemon.addr();
    assert!(saw_default, "lunard says it uses the embedded default");
    assert_ne!(addr.port(), 0);

    let mut c = Initiator::connect(addr, "iqn.2026-11.io.test:bin").await;
    assert!(c.login(None).await.ok());
    let names: Vec<String> = c
        .send_targets("All")
        .await
        .into_iter()
        .filter(|(k, _)| k == "TargetName")
        .map(|(_, v)| v)
        .collect();
    assert_eq!(names, vec!["iqn.2026-11.io.lunar:demo".to_string()]);
    drop(c);

    let status = daemon.terminate();
    assert_eq!(status.code(), Some(0), "clean exit on SIGTERM");
    assert!(
        dir.path().join("pool").exists(),
        "the pool lives in --data-dir"
    );
}

#[test]
fn configuration_errors_name_file_line_and_field() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bad.yaml");
    std::fs::write(
        &path,
        "portals:\n  - listen: 127.0.0.1:0\ntargets:\n  - iqn: iqn.2026-11.io.lunar:x\n    luns:\n      - id: 0\n        volume: v\n        size: 1MiB\n        block_size: 1000\n",
    )
    .expect("write config");
    let out = lunard()
        .arg("--config")
        .arg(&path)
        .output()
        .expect("run lunard");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    let want = format!("{}:9: targets[0].luns[0].block_size", path.display());
    assert!(err.contains(&want), "stderr was: {err}");

    std::fs::write(&path, "portals:\n  - listen: 127.0.0.1:0\n    bogus: 1\n")
        .expect("write config");
    let out = lunard()
        .arg("--config")
        .arg(&path)
        .output()
        .expect("run lunard");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("{}:3:", path.display())) && err.contains("bogus"),
        "stderr was: {err}"
    );
}

/// A token file others may read is refused before anything starts, like ssh refuses such a
/// private key: the message names the file and the fix. (The data directory is impossible,
/// so a lunard that wrongly accepted the token would fail later with another message.)
#[test]
fn a_token_file_others_may_read_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let token = dir.path().join("admin.token");
    std::fs::write(&token, "a-token-0123456789\n").expect("write token");
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let out = lunard()
        .args(["--portal", "127.0.0.1:0", "--no-metrics"])
        .args(["--data-dir", "/dev/null/impossible"])
        .args(["--admin-listen", "127.0.0.1:0", "--admin-token-file"])
        .arg(&token)
        .output()
        .expect("run lunard");
    let err = String::from_utf8_lossy(&out.stderr);
    let name = token.display();
    assert_eq!(out.status.code(), Some(2), "stderr was: {err}");
    assert_eq!(
        err.lines().last().unwrap_or_default(),
        format!(
            "lunard: --admin-token-file {name}: permissions 0644 are too open (the group or \
             others may read or replace the secret); run `chmod 600 {name}`"
        )
    );
    assert!(!err.contains("a-token-0123456789"), "{err}");
}

/// CHAP secrets never reach lunard's log, even at `--log-level trace`: not the configured
/// one (used by a successful and a failed CHAP login), not one set at run time with
/// `lunarctl chap set` (every admin request is logged at debug), not while `config export`
/// hands them to the operator (the export itself holds them, by design: it regenerates the
/// configuration).
#[tokio::test]
async fn chap_secrets_never_reach_the_log_at_trace_level() {
    use lunar_test_kit::lunard::parse_ready_addrs;
    use target_daemon::config::{ByteSize, ChapCfg, LunCfg, TargetCfg};
    const T: &str = "iqn.2026-12.io.lunar:secrets";
    const FIRST: &str = "first-secret-7f3a9c";
    const SECOND: &str = "second-secret-41be0d";
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let cfg = crate::support::local_config(&data, ByteSize::mib(256)).with_target(
        TargetCfg::iscsi(T)
            .with_lun(LunCfg::new(0, "v", ByteSize::mib(16)))
            .with_chap(ChapCfg::new("u1", FIRST)),
    );
    let conf = dir.path().join("lunar.yaml");
    std::fs::write(&conf, cfg.to_yaml().expect("yaml")).expect("write config");
    let log_path = dir.path().join("lunard.log");
    let mut child = lunard()
        .arg("--config")
        .arg(&conf)
        .args(["--log-level", "trace", "--no-metrics"])
        .stderr(std::fs::File::create(&log_path).expect("log file"))
        .spawn()
        .expect("spawn lunard");
    let log = || {
        lunar_test_kit::lunard::strip_ansi(&std::fs::read_to_string(&log_path).unwrap_or_default())
    };
    let mut addr = None;
    for _ in 0..3000 {
        addr = log().lines().find_map(parse_ready_addrs).map(|a| a[0]);
        if addr.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let Some(addr) = addr else {
        let _ = child.kill();
        panic!("lunard never became ready:\n{}", log());
    };

    let mut ok = Initiator::connect(addr, "iqn.2026-12.io.test:h").await;
    assert!(ok.login_chap(Some(T), "u1", FIRST).await.ok());
    let mut bad = Initiator::connect(addr, "iqn.2026-12.io.test:h").await;
    assert!(!bad.login_chap(Some(T), "u1", "wrong-secret-000").await.ok());
    drop((ok, bad));

    let socket = data.join("admin.sock");
    let secret_file = dir.path().join("s2");
    std::fs::write(&secret_file, format!("{SECOND}\n")).expect("secret file");
    let ctl = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_lunarctl"))
            .arg("--socket")
            .arg(&socket)
            .args(args)
            .output()
            .expect("run lunarctl")
    };
    let set = ctl(&["chap", "set", T, "--user", "u2", "--secret-file"]
        .iter()
        .copied()
        .chain([secret_file.to_str().expect("path")])
        .collect::<Vec<_>>());
    assert!(
        set.status.success(),
        "{}",
        String::from_utf8_lossy(&set.stderr)
    );
    let export = ctl(&["config", "export"]);
    assert!(export.status.success());
    assert!(
        String::from_utf8_lossy(&export.stdout).contains(SECOND),
        "the export regenerates the configuration, secret included"
    );

    // SAFETY: kill(2) on our own child, not reaped yet.
    let rc = unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    assert_eq!(rc, 0);
    let status = child.wait().expect("wait for lunard");
    assert_eq!(status.code(), Some(0));
    let text = log();
    assert!(
        text.contains("admin request") && text.contains("ChapSet"),
        "trace logging was on and logged the request:\n{text}"
    );
    for s in [FIRST, SECOND] {
        assert!(!text.contains(s), "secret {s} in the log:\n{text}");
    }
}
