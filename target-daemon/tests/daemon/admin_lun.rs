//! `lunarctl lun ...` against an in-process lunard: life cycle and error handling.

use crate::admin_support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lun_create_list_show_delete() {
    let dir = tempfile::tempdir().unwrap();
    let d = start(dir.path(), ByteSize::gib(1)).await;
    let p = dir.path();

    let v = ctl_json(
        p,
        &[
            "lun",
            "create",
            "db",
            "--size",
            "64M",
            "--block-size",
            "4096",
            "--target",
            TARGET,
            "--lun-id",
            "3",
        ],
    )
    .await;
    assert_eq!(v["name"], "db");
    assert_eq!(v["size_bytes"], 64 << 20);
    assert_eq!(v["block_size"], 4096);
    assert_eq!(v["state"], "online");
    let naa = v["naa"].as_str().unwrap().to_string();
    assert!(naa.starts_with("naa.6") && naa.len() == 36, "{naa}");
    assert_eq!(reported_luns(&d), vec![3]);

    ctl_json(p, &["lun", "create", "logs", "--size", "8M"]).await;
    let list = ctl_json(p, &["lun", "list"]).await;
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["db", "logs"]);

    // Human output has a header and one row per LUN.
    let human = ctl(p, &["lun", "list"]).await;
    assert_eq!(human.code, 0);
    assert!(human.stdout.lines().next().unwrap().starts_with("NAME"));
    assert_eq!(human.stdout.lines().count(), 3);

    fill(&d, "db", 2, 7).await;
    let show = ctl_json(p, &["lun", "show", "db"]).await;
    assert_eq!(show["mapped_bytes"], 2 << 20);
    assert_eq!(show["unique_bytes"], 2 << 20);
    assert_eq!(show["naa"], naa.as_str());
    assert_eq!(show["mappings"][0]["lun_id"], 3);

    let r = ctl_json(p, &["lun", "resize", "db", "--size", "128M"]).await;
    assert_eq!(r["size_bytes"], 128 << 20);
    ctl(p, &["lun", "resize", "db", "--size", "32M"])
        .await
        .fails_with("--shrink");

    ctl_json(p, &["lun", "delete", "db"]).await;
    assert!(reported_luns(&d).is_empty());
    ctl(p, &["lun", "show", "db"]).await.fails_with("not found");
    ctl_json(p, &["lun", "delete", "logs"]).await;
    assert_eq!(d.pool().expect("local pool").status().used_bytes, 0);
    d.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lun_errors_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = start(dir.path(), ByteSize::mib(256)).await;
    let p = dir.path();
    ctl_json(
        p,
        &[
            "lun", "create", "a", "--size", "16M", "--target", TARGET, "--lun-id", "0",
        ],
    )
    .await;
    let before_list = ctl_json(p, &["lun", "list"]).await;
    let before_pool = ctl_json(p, &["pool", "status"]).await;

    ctl(p, &["lun", "create", "a", "--size", "16M"])
        .await
        .fails_with("already exists");
    ctl(p, &["lun", "create", "b", "--size", "ten"])
        .await
        .fails_with("invalid size");
    ctl(p, &["lun", "create", "b", "--size", "0"])
        .await
        .fails_with("greater than 0");
    ctl(p, &["lun", "create", "b", "--size", "1000"])
        .await
        .fails_with("multiple of the 512-byte block size");
    ctl(
        p,
        &["lun", "create", "b", "--size", "1M", "--block-size", "1024"],
    )
    .await
    .fails_with("512 or 4096");
    ctl(
        p,
        &["lun", "create", "b", "--size", "1M", "--guarantee", "maybe"],
    )
    .await
    .fails_with("none or full");
    ctl(p, &["lun", "create", "bad/name", "--size", "1M"])
        .await
        .fails_with("invalid LUN name");
    ctl(
        p,
        &[
            "lun", "create", "b", "--size", "1M", "--target", TARGET, "--lun-id", "0",
        ],
    )
    .await
    .fails_with("already used");
    ctl(
        p,
        &[
            "lun",
            "create",
            "b",
            "--size",
            "1M",
            "--target",
            "iqn.2026-11.io.lunar:nope",
        ],
    )
    .await
    .fails_with("not found");
    ctl(
        p,
        &[
            "lun",
            "create",
            "big",
            "--size",
            "1G",
            "--guarantee",
            "full",
        ],
    )
    .await
    .fails_with("space guarantee cannot be met");
    ctl(p, &["lun", "show", "nope"])
        .await
        .fails_with("LUN \"nope\" not found");
    ctl(p, &["lun", "delete", "nope"])
        .await
        .fails_with("not found");
    ctl(p, &["lun", "map", "nope", "--target", TARGET])
        .await
        .fails_with("not found");
    ctl(p, &["snapshot", "create", "a"])
        .await
        .fails_with("LUN@SNAPSHOT");
    ctl(
        p,
        &["clone", "create", "--source", "a@nosnap", "--name", "c"],
    )
    .await
    .fails_with("not found");
    ctl(
        p,
        &[
            "clone", "create", "--source", "a", "--name", "c", "--mode", "deep",
        ],
    )
    .await
    .fails_with("linked or full");
    ctl(p, &["clone", "create", "--source", "a", "--name", "a"])
        .await
        .fails_with("already exists");
    ctl(p, &["target", "create", "not-an-iqn"])
        .await
        .fails_with("invalid target name");
    ctl_stdin(
        p,
        &["chap", "set", TARGET, "--user", "u", "--secret-file", "-"],
        "short\n",
    )
    .await
    .fails_with("12 to 255");

    assert_eq!(ctl_json(p, &["lun", "list"]).await, before_list);
    let after_pool = ctl_json(p, &["pool", "status"]).await;
    assert_eq!(after_pool["used_bytes"], before_pool["used_bytes"]);
    assert_eq!(after_pool["reserved_bytes"], before_pool["reserved_bytes"]);
    assert_eq!(after_pool["volumes"], before_pool["volumes"]);
    assert_eq!(reported_luns(&d), vec![0]);

    // No daemon at all: one-line error, non-zero exit.
    let gone = tempfile::tempdir().unwrap();
    ctl(gone.path(), &["lun", "list"])
        .await
        .fails_with("cannot connect to lunard");
    d.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lun_in_use_needs_force() {
    let dir = tempfile::tempdir().unwrap();
    let d = start(dir.path(), ByteSize::mib(256)).await;
    let p = dir.path();
    ctl_json(
        p,
        &["lun", "create", "a", "--size", "16M", "--target", TARGET],
    )
    .await;
    let addr = d.local_addrs()[0];
    let mut ini = common_login(addr).await;
    let sessions = ctl_json(p, &["session", "list"]).await;
    assert_eq!(sessions.as_array().unwrap().len(), 1);
    ctl(p, &["lun", "delete", "a"]).await.fails_with("in use");
    assert_eq!(reported_luns(&d), vec![0]);
    ctl_json(p, &["lun", "delete", "a", "--force"]).await;
    assert!(reported_luns(&d).is_empty());
    let _ = ini.logout().await;
    d.shutdown().await.unwrap();
}

use lunar_test_kit::initiator as common;

async fn common_login(addr: std::net::SocketAddr) -> common::Initiator {
    let mut i = common::Initiator::connect(addr, "iqn.2026-11.test:admin-ini").await;
    let r = i.login(Some(TARGET)).await;
    assert!(r.ok(), "login: {r:?}");
    i
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn runtime_target_acl_and_chap_apply_to_new_logins() {
    let dir = tempfile::tempdir().unwrap();
    let d = start(dir.path(), ByteSize::mib(256)).await;
    let p = dir.path();
    let t = "iqn.2026-11.io.lunar:runtime";
    let host = "iqn.2026-11.test:admin-ini";
    ctl_json(p, &["target", "create", t]).await;
    ctl_json(p, &["lun", "create", "r", "--size", "8M", "--target", t]).await;
    let addr = d.local_addrs()[0];

    // No ACL entry yet: refused.
    let mut i = common::Initiator::connect(addr, host).await;
    assert!(!i.login(Some(t)).await.ok());
    ctl_json(p, &["acl", "add", t, host]).await;
    let mut i = common::Initiator::connect(addr, host).await;
    assert!(i.login(Some(t)).await.ok(), "allowed after acl add");
    let s = ctl_json(p, &["session", "list", "--target", t]).await;
    assert_eq!(s[0]["initiator"], host);
    let _ = i.logout().await;

    // CHAP required: a login without CHAP fails, with the secret it works.
    let secret = tempfile::tempdir().unwrap();
    let secret = secret.path().join("u1.chap");
    private_file(&secret, "0123456789abcd\n");
    ctl_json(
        p,
        &[
            "chap",
            "set",
            t,
            "--user",
            "u1",
            "--secret-file",
            secret.to_str().unwrap(),
        ],
    )
    .await;
    let mut i = common::Initiator::connect(addr, host).await;
    assert!(!i.login(Some(t)).await.ok());
    let mut i = common::Initiator::connect(addr, host).await;
    assert!(i.login_chap(Some(t), "u1", "0123456789abcd").await.ok());
    let _ = i.logout().await;
    ctl_json(p, &["chap", "clear", t]).await;
    ctl_json(p, &["acl", "remove", t, host]).await;
    let mut i = common::Initiator::connect(addr, host).await;
    assert!(!i.login(Some(t)).await.ok(), "refused after acl remove");

    ctl_json(p, &["target", "delete", t]).await;
    assert!(d.server().target(t).is_none());
    // The LUN survives, unmapped.
    let l = ctl_json(p, &["lun", "show", "r"]).await;
    assert!(l["mappings"].as_array().unwrap().is_empty());
    d.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tcp_admin_requires_the_token() {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let cfg = target_daemon::config::Config::local(ByteSize::mib(256)).with_data_dir(dir.path());
    let refused = target_daemon::daemon::Daemon::start_with(
        cfg.clone(),
        target_daemon::admin::AdminOptions {
            socket: None,
            tcp: Some("127.0.0.1:0".parse().unwrap()),
            token: None,
            ..Default::default()
        },
    )
    .await;
    assert!(
        refused.is_err(),
        "TCP admin without a token must be refused"
    );
    let d = target_daemon::daemon::Daemon::start_with(
        cfg,
        target_daemon::admin::AdminOptions {
            socket: None,
            tcp: Some("127.0.0.1:0".parse().unwrap()),
            token: Some("s3cret-token".into()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let addr = d.admin().unwrap().tcp_addr().unwrap();
    let s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (r, mut w) = s.into_split();
    let mut r = BufReader::new(r);
    let mut line = String::new();
    for (req, ok) in [
        (r#"{"op":"pool.status"}"#, false),
        (r#"{"op":"pool.status","token":"wrong"}"#, false),
        (r#"{"op":"pool.status","token":"s3cret-token"}"#, true),
        (r#"{"op":"no.such.op","token":"s3cret-token"}"#, false),
        ("not json", false),
    ] {
        w.write_all(format!("{req}\n").as_bytes()).await.unwrap();
        line.clear();
        r.read_line(&mut line).await.unwrap();
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["ok"], ok, "{req} -> {line}");
    }
    // lunarctl over TCP with a token file only its owner may read.
    let tf = dir.path().join("token");
    private_file(&tf, "s3cret-token\n");
    let lunarctl_tcp = || async {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_lunarctl"))
            .args(["--tcp", &addr.to_string(), "--token-file"])
            .arg(&tf)
            .args(["--json", "lun", "list"])
            .env_remove("LUNAR_TOKEN")
            .output()
            .await
            .unwrap()
    };
    let out = lunarctl_tcp().await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Readable by others: refused like ssh refuses such a key, naming the file and the fix.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&tf, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = lunarctl_tcp().await;
    let err = String::from_utf8_lossy(&out.stderr);
    let name = tf.display();
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(
        err.trim_end(),
        format!(
            "lunarctl: --token-file {name}: permissions 0644 are too open (the group or others \
             may read or replace the secret); run `chmod 600 {name}`"
        )
    );
    d.shutdown().await.unwrap();
}

/// `lunarctl --json chap set TARGET --user u EXTRA`, with `input` on standard input.
async fn chap_set(dir: &std::path::Path, extra: &[&str], input: &str) -> Out {
    let mut a = vec!["--json", "chap", "set", TARGET, "--user", "u"];
    a.extend_from_slice(extra);
    ctl_stdin(dir, &a, input).await
}

/// The secret stored by `lunarctl chap set` for `target`, from `state.json`.
fn stored_chap(dir: &std::path::Path, target: &str) -> serde_json::Value {
    let st: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("state.json")).unwrap()).unwrap();
    st["targets"][target]["chap"].clone()
}

/// `chap set` reads its secrets from files or standard input (not from the command line,
/// where `ps` shows them); `--secret` still works but warns.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn chap_secrets_come_from_a_file_or_stdin() {
    let dir = tempfile::tempdir().unwrap();
    let d = start(dir.path(), ByteSize::mib(256)).await;
    let p = dir.path();
    let files = tempfile::tempdir().unwrap();
    let (file, mutual) = (files.path().join("s"), files.path().join("m"));
    private_file(&file, "from-a-file-secret\n");
    private_file(&mutual, "the-target-secret\n");

    // From a file; one trailing newline dropped.
    let o = chap_set(p, &["--secret-file", file.to_str().unwrap()], "").await;
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert_eq!(o.stderr, "", "no warning for a secret file");
    assert_eq!(stored_chap(p, TARGET)["secret"], "from-a-file-secret");

    // From standard input (CRLF is one newline; inner spaces are kept), mutual from a file.
    let o = chap_set(
        p,
        &[
            "--secret-file",
            "-",
            "--mutual-user",
            "tgt",
            "--mutual-secret-file",
            mutual.to_str().unwrap(),
        ],
        "a secret on stdin\r\n",
    )
    .await;
    assert_eq!(o.code, 0, "{}", o.stderr);
    let c = stored_chap(p, TARGET);
    assert_eq!(c["secret"], "a secret on stdin");
    assert_eq!(c["mutual_username"], "tgt");
    assert_eq!(c["mutual_secret"], "the-target-secret");

    // Only one trailing newline is dropped: the rest is part of the secret.
    let o = chap_set(p, &["--secret-file", "-"], "two-newlines-12\n\n").await;
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert_eq!(stored_chap(p, TARGET)["secret"], "two-newlines-12\n");

    // Errors: both from stdin, an empty secret, a missing file; the state is unchanged.
    chap_set(
        p,
        &[
            "--secret-file",
            "-",
            "--mutual-user",
            "t",
            "--mutual-secret-file",
            "-",
        ],
        "x\n",
    )
    .await
    .fails_with("cannot both read standard input");
    chap_set(p, &["--secret-file", "-"], "\n")
        .await
        .fails_with("--secret-file -: the secret is empty");
    let missing = files.path().join("missing");
    chap_set(p, &["--secret-file", missing.to_str().unwrap()], "")
        .await
        .fails_with(&format!("--secret-file {}", missing.display()));
    assert_eq!(stored_chap(p, TARGET)["secret"], "two-newlines-12\n");

    // Neither flag: a usage error.
    let o = chap_set(p, &[], "").await;
    assert_eq!(o.code, 2, "{}", o.stderr);
    assert!(o.stderr.contains("--secret-file"), "{}", o.stderr);

    // The old --secret still works, with a warning on stderr.
    let o = chap_set(p, &["--secret", "on-the-command-line"], "").await;
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(
        o.stderr.starts_with(
            "lunarctl: warning: --secret puts the secret in the process list, where every \
             local user can read it; use --secret-file FILE"
        ),
        "{}",
        o.stderr
    );
    assert_eq!(stored_chap(p, TARGET)["secret"], "on-the-command-line");

    // `config export -o` writes the secrets: the file becomes private, an existing one too.
    use std::os::unix::fs::PermissionsExt;
    let exported = files.path().join("exported.yaml");
    std::fs::write(&exported, "old").unwrap();
    std::fs::set_permissions(&exported, std::fs::Permissions::from_mode(0o644)).unwrap();
    let o = ctl(p, &["config", "export", "-o", exported.to_str().unwrap()]).await;
    assert_eq!(o.code, 0, "{}", o.stderr);
    let mode = std::fs::metadata(&exported).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o600, "exported configuration mode {mode:04o}");
    assert!(std::fs::read_to_string(&exported)
        .unwrap()
        .contains("on-the-command-line"));
    d.shutdown().await.unwrap();
}

/// One request line on the admin socket; the answer as JSON.
async fn ask(dir: &std::path::Path, req: serde_json::Value) -> serde_json::Value {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let s = tokio::net::UnixStream::connect(socket(dir))
        .await
        .expect("admin socket");
    let mut conn = BufReader::new(s);
    conn.get_mut()
        .write_all(format!("{req}\n").as_bytes())
        .await
        .unwrap();
    let mut line = String::new();
    conn.read_line(&mut line).await.unwrap();
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("bad answer {e}: {line}"))
}

/// Issue 15: `snapshot delete demo@nosuch` said "not found not found"; `lun delete demo`
/// deleted the LUN's snapshots without a word. Errors name their object once, as data too;
/// a LUN with snapshots is deleted only with `--recursive`, which says what went.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn delete_errors_name_their_objects_and_snapshots_need_recursive() {
    let dir = tempfile::tempdir().unwrap();
    let d = start(dir.path(), ByteSize::mib(256)).await;
    let p = dir.path();
    ctl_json(p, &["lun", "create", "demo", "--size", "16M"]).await;

    let e = ctl(p, &["snapshot", "delete", "demo@nosuch"]).await;
    e.fails_with("not found");
    assert_eq!(
        e.stderr.trim_end(),
        "lunarctl: snapshot \"demo@nosuch\" not found"
    );
    let a = ask(
        p,
        serde_json::json!({"op": "snapshot.delete", "args": {"lun": "demo", "name": "nosuch"}}),
    )
    .await;
    assert_eq!(a["error"]["kind"], "not_found", "{a}");
    assert_eq!(a["error"]["object"], "snapshot", "{a}");
    assert_eq!(a["error"]["name"], "demo@nosuch", "{a}");

    ctl_json(p, &["snapshot", "create", "demo@a"]).await;
    ctl_json(p, &["snapshot", "create", "demo@b"]).await;
    ctl(p, &["snapshot", "create", "demo@a"])
        .await
        .fails_with("snapshot \"demo@a\" already exists");
    let refused = ctl(p, &["lun", "delete", "demo"]).await;
    refused.fails_with("demo@a, demo@b");
    refused.fails_with("--recursive");
    let a = ask(
        p,
        serde_json::json!({"op": "lun.delete", "args": {"name": "demo"}}),
    )
    .await;
    assert_eq!(a["error"]["kind"], "invalid", "{a}");
    assert_eq!(a["error"]["object"], "lun", "{a}");
    assert_eq!(
        a["error"]["snapshots"],
        serde_json::json!(["demo@a", "demo@b"]),
        "{a}"
    );
    // Refused means nothing changed.
    assert_eq!(ctl_json(p, &["lun", "show", "demo"]).await["snapshots"], 2);

    let gone = ctl(p, &["lun", "delete", "-r", "demo"]).await;
    assert_eq!(gone.code, 0, "{}", gone.stderr);
    assert_eq!(
        gone.stdout,
        "deleted demo and its 2 snapshots: demo@a, demo@b\n"
    );
    ctl(p, &["lun", "show", "demo"])
        .await
        .fails_with("LUN \"demo\" not found");
    assert_eq!(
        ctl_json(p, &["snapshot", "list"]).await,
        serde_json::json!([])
    );
    // Without snapshots no flag is needed, and the answer is as before.
    ctl_json(p, &["lun", "create", "plain", "--size", "16M"]).await;
    let plain = ctl(p, &["lun", "delete", "plain"]).await;
    assert_eq!(plain.stdout, "deleted plain\n", "{}", plain.stderr);
    d.shutdown().await.unwrap();
}

/// Issue 15: `lunarctl pool status | head -3` panicked with a backtrace. A reader that
/// went away ends lunarctl quietly. The pipe's read end is closed before lunarctl starts,
/// so its first write always meets EPIPE.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_closed_stdout_ends_lunarctl_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let d = start(dir.path(), ByteSize::mib(256)).await;
    for args in [&["pool", "status"][..], &["--json", "lun", "list"][..]] {
        let (reader, writer) = std::io::pipe().expect("pipe");
        drop(reader);
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_lunarctl"))
            .arg("--socket")
            .arg(socket(dir.path()))
            .args(args)
            .stdout(writer)
            .stderr(std::process::Stdio::piped())
            // Not `output()`, which would replace the closed pipe with a fresh one.
            .spawn()
            .expect("run lunarctl")
            .wait_with_output()
            .await
            .expect("lunarctl exits");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert!(err.is_empty(), "{args:?}: {err}");
        assert_eq!(out.status.code(), Some(0), "{args:?}: {err}");
    }
    d.shutdown().await.unwrap();
}

/// Issue 15: after `cargo run --bin lunard` (embedded default, data in `./lunar-data`),
/// `lunarctl pool status` needed `--socket lunar-data/admin.sock`. With no socket named,
/// lunarctl finds that one when the system's is absent, and says which paths it tried.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lunarctl_finds_the_embedded_default_socket() {
    const SYSTEM: &str = "/var/lib/lunar/admin.sock";
    if std::path::Path::new(SYSTEM).exists() {
        eprintln!("skipped: {SYSTEM} exists on this machine and comes first");
        return;
    }
    let run = |cwd: std::path::PathBuf| async move {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_lunarctl"))
            .args(["--json", "pool", "status"])
            .current_dir(cwd)
            .env_remove("LUNAR_SOCKET")
            .output()
            .await
            .expect("run lunarctl")
    };
    let empty = tempfile::tempdir().unwrap();
    let out = run(empty.path().to_path_buf()).await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0));
    assert!(
        err.contains(SYSTEM) && err.contains("lunar-data/admin.sock"),
        "the error names the paths tried: {err}"
    );

    let work = tempfile::tempdir().unwrap();
    let d = start(&work.path().join("lunar-data"), ByteSize::mib(256)).await;
    let out = run(work.path().to_path_buf()).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert!(v["capacity_bytes"].as_u64().is_some_and(|c| c > 0), "{v}");
    d.shutdown().await.unwrap();
}
