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
