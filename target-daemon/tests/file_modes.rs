//! What lunard creates is private to its user whatever the umask (outside systemd, whose
//! `UMask=0077` hid the opposite): the data directory and the reservation directory 0700;
//! the pool file, `state.json` (CHAP secrets), reservation files and the admin socket 0600.
//!
//! The umask is per process and this test sets it, so this file holds this one test: its
//! binary runs nothing else that creates files at the same time.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use target_daemon::config::{ByteSize, ChapCfg, Config, LunCfg, TargetCfg};
use target_daemon::scsi::pr::{Decision, FileStore, PrOutRequest, PrState};
use target_daemon::scsi::Nexus;

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o7777
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lunard_creates_its_files_private_under_umask_022() {
    // SAFETY: umask(2) cannot fail; nothing else in this process creates files yet.
    unsafe { libc::umask(0o022) };
    let top = tempfile::tempdir().unwrap();
    let data = top.path().join("data");
    let cfg = Config::local(ByteSize::mib(64))
        .with_data_dir(&data)
        .with_target(
            TargetCfg::iscsi("iqn.2026-11.io.lunar:modes")
                .with_chap(ChapCfg::new("u", "a-chap-secret-1"))
                .with_lun(LunCfg::new(0, "v", ByteSize::mib(8))),
        );
    assert_eq!(cfg.validate(), Ok(()));
    let d = target_daemon::daemon::Daemon::start(cfg)
        .await
        .expect("daemon starts");

    // A persistent reservation with APTPL writes its state file under <data>/pr.
    let identity = uuid::Uuid::new_v4();
    // The store the daemon gives its targets.
    let pr = PrState::for_lun(identity, Some(FileStore::for_data_dir(&data)));
    let mut params = vec![0u8; 24];
    params[8..16].copy_from_slice(&7u64.to_be_bytes()); // SERVICE ACTION RESERVATION KEY
    params[20] = 1; // APTPL
    let nexus = Nexus {
        initiator: "iqn.2026-11.test:modes".into(),
        isid: 1,
        tpgt: 1,
    };
    let req = PrOutRequest::parse(0, 0, 0, &params).expect("REGISTER parameter list");
    let Ok(Decision::Change(mut change)) = pr.decide(&nexus, &req) else {
        panic!("REGISTER with APTPL");
    };
    // The device server writes the state file off its lock; here it is written in place.
    change
        .take_persist()
        .expect("an APTPL registration is persisted")
        .write()
        .expect("state file written");

    let expected = [
        ("data directory", data.clone(), 0o700),
        ("pool file", data.join("pool"), 0o600),
        ("state.json", data.join("state.json"), 0o600),
        ("admin socket", data.join("admin.sock"), 0o600),
        ("reservation directory", data.join("pr"), 0o700),
        (
            "reservation file",
            data.join("pr").join(format!("{identity}.json")),
            0o600,
        ),
    ];
    let got: Vec<String> = expected
        .iter()
        .map(|(what, p, _)| format!("{what} {:04o}", mode(p)))
        .collect();
    let want: Vec<String> = expected
        .iter()
        .map(|(what, _, m)| format!("{what} {m:04o}"))
        .collect();
    assert_eq!(got, want);
    // Nothing else appeared beside them (the socket's private directory is gone).
    let mut names: Vec<String> = std::fs::read_dir(&data)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["admin.sock", "pool", "pr", "state.json"]);
    d.shutdown().await.unwrap();
}
