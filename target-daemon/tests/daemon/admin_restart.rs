//! Persistence: everything the admin API changes survives a restart, and a `kill -9` in the
//! middle of a full-clone copy leaves no half clone behind.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::admin_support::*;
use serde_json::Value;

const T2: &str = "iqn.2026-11.io.lunar:restart";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn state_survives_restart() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    let d = start(p, ByteSize::gib(1)).await;
    ctl_json(
        p,
        &[
            "lun", "create", "a", "--size", "16M", "--target", TARGET, "--lun-id", "2",
        ],
    )
    .await;
    ctl_json(
        p,
        &[
            "lun",
            "create",
            "b",
            "--size",
            "8M",
            "--block-size",
            "4096",
            "--guarantee",
            "full",
            "--read-only",
        ],
    )
    .await;
    fill(&d, "a", 2, 4).await;
    ctl_json(p, &["snapshot", "create", "a@before"]).await;
    ctl_json(p, &["snapshot", "create", "--group", "grp", "a", "b"]).await;
    ctl_json(p, &["target", "create", T2]).await;
    ctl_json(p, &["acl", "add", T2, "iqn.1994-05.com.example:host1"]).await;
    let secrets = tempfile::tempdir().unwrap();
    let (chap, mutual) = (secrets.path().join("alice"), secrets.path().join("tgt"));
    private_file(&chap, "0123456789abcdef\n");
    private_file(&mutual, "fedcba9876543210\n");
    ctl_json(
        p,
        &[
            "chap",
            "set",
            T2,
            "--user",
            "alice",
            "--secret-file",
            chap.to_str().unwrap(),
            "--mutual-user",
            "tgt",
            "--mutual-secret-file",
            mutual.to_str().unwrap(),
        ],
    )
    .await;
    ctl_json(
        p,
        &[
            "clone",
            "create",
            "--source",
            "a@before",
            "--name",
            "a-clone",
            "--target",
            T2,
            "--lun-id",
            "7",
            "--copy-acl",
        ],
    )
    .await;
    ctl_json(
        p,
        &[
            "clone", "create", "--source", "a", "--name", "a-full", "--mode", "full", "--wait",
        ],
    )
    .await;
    ctl_json(p, &["lun", "map", "b", "--target", T2]).await;
    let data = read(&d, "a-clone", 2).await;

    let luns = ctl_json(p, &["lun", "list"]).await;
    let targets = ctl_json(p, &["target", "list"]).await;
    let snaps = ctl_json(p, &["snapshot", "list"]).await;
    let jobs = ctl_json(p, &["clone", "list"]).await;
    // The YAML export of the live state is valid configuration.
    let exported = ctl(p, &["config", "export"]).await;
    assert_eq!(exported.code, 0, "{}", exported.stderr);
    let reparsed = target_daemon::config::Config::from_yaml_str(&exported.stdout, "export.yaml")
        .unwrap_or_else(|e| panic!("exported YAML does not load: {e}\n{}", exported.stdout));
    assert_eq!(reparsed.targets.len(), 2);
    d.shutdown().await.unwrap();
    assert!(!socket(p).exists(), "socket removed at shutdown");

    let d = start(p, ByteSize::gib(1)).await;
    assert_eq!(
        ctl_json(p, &["lun", "list"]).await,
        luns,
        "LUNs, NAA ids, mappings"
    );
    assert_eq!(
        ctl_json(p, &["target", "list"]).await,
        targets,
        "targets, ACLs, CHAP"
    );
    assert_eq!(ctl_json(p, &["snapshot", "list"]).await, snaps);
    assert_eq!(ctl_json(p, &["clone", "list"]).await, jobs);
    assert_eq!(read(&d, "a-clone", 2).await, data);
    let t2 = d
        .server()
        .target(T2)
        .expect("runtime-created target exported after restart");
    assert_eq!(t2.scsi.luns(), vec![0, 7]);
    assert_eq!(
        t2.cfg.initiators,
        vec!["iqn.1994-05.com.example:host1".to_string()]
    );
    assert_eq!(
        t2.cfg.chap.as_ref().map(|c| c.username.as_str()),
        Some("alice")
    );
    // The secrets as read from their files (the trailing newline dropped), kept across it.
    let chap = t2.cfg.chap.as_ref().unwrap();
    assert_eq!(chap.secret.expose(), "0123456789abcdef");
    let m = chap.mutual.as_ref().unwrap();
    assert_eq!(m.secret.expose(), "fedcba9876543210");
    assert_eq!(reported_luns(&d), vec![2]);
    // --copy-acl: the clone's target got the source target's "allow any".
    assert!(t2.cfg.allow_any);
    d.shutdown().await.unwrap();
}

fn write_config(dir: &Path) -> std::path::PathBuf {
    let cfg = dir.join("lunar.yaml");
    std::fs::write(&cfg, admin_config(dir, ByteSize::gib(2)).to_yaml().unwrap()).unwrap();
    cfg
}

fn spawn_lunard(cfg: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_lunard"))
        .arg("--config")
        .arg(cfg)
        .arg("--log-level")
        .arg("warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn lunard")
}

/// Waits until the admin socket answers (bounded: a hang fails the test).
async fn wait_ready(dir: &Path) {
    for _ in 0..600 {
        if ctl(dir, &["pool", "status"]).await.code == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("lunard did not come up");
}

fn job_of<'a>(jobs: &'a Value, dest: &str) -> &'a Value {
    jobs.as_array()
        .unwrap()
        .iter()
        .rev()
        .find(|j| j["destination"] == dest)
        .expect("job listed")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_mid_copy_reports_failed_and_removes_half_clone() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    let cfg = write_config(p);
    // Seed data in-process, then hand the data directory to the real binary.
    {
        let c = target_daemon::config::Config::load(&cfg).unwrap();
        let d = target_daemon::daemon::Daemon::start(c).await.unwrap();
        ctl_json(
            p,
            &["lun", "create", "big", "--size", "512M", "--target", TARGET],
        )
        .await;
        fill(&d, "big", 256, 5).await;
        d.shutdown().await.unwrap();
    }
    let mut child = spawn_lunard(&cfg);
    wait_ready(p).await;
    let used = ctl_json(p, &["pool", "status"]).await["used_bytes"].clone();
    ctl_json(
        p,
        &[
            "clone", "create", "--source", "big", "--name", "half", "--mode", "full", "--target",
            TARGET,
        ],
    )
    .await;
    let pid = child.id() as libc::pid_t;
    // SAFETY: plain kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    let _ = child.wait();

    let mut child = spawn_lunard(&cfg);
    wait_ready(p).await;
    let jobs = ctl_json(p, &["clone", "list"]).await;
    let job = job_of(&jobs, "half");
    if job["state"] == "completed" {
        eprintln!("copy finished before SIGKILL; crash path not exercised");
    } else {
        assert_eq!(job["state"], "failed", "{job}");
        assert!(
            job["error"].as_str().unwrap().contains("interrupted"),
            "{job}"
        );
        ctl(p, &["lun", "show", "half"])
            .await
            .fails_with("not found");
        let luns = ctl_json(p, &["lun", "list"]).await;
        assert_eq!(luns.as_array().unwrap().len(), 1, "{luns}");
        assert_eq!(ctl_json(p, &["pool", "status"]).await["used_bytes"], used);
        assert_eq!(ctl_json(p, &["pool", "check"]).await["clean"], true);
    }
    // SAFETY: as above; SIGTERM for a clean stop.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let st = child.wait().unwrap();
    assert!(st.success(), "lunard exit {st:?}");
}
