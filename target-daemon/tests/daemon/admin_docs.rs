//! Every `lunarctl` example in the docs is run by a test (issue 4):
//!
//! - `docs/operations.md`, `docs/admin-api.md`, `docs/hosts/vmware.md`: every ```` ```sh ````
//!   block runs here, in order, with `bash -euo pipefail`, against a live lunard; a failing
//!   command fails the test. `admin-api.md`'s blocks get a lunard with the TCP admin listener
//!   (the documented `127.0.0.1:9861` is replaced by the address it bound, and `admin.token`
//!   exists in the block's working directory); `vmware.md`'s get the datastore LUN and target
//!   the page assumes. `admin-api.md`'s JSON request is sent on the socket and must be
//!   answered as documented, and every op of its table must exist.
//! - `docs/getting-started.md`: its `sh` blocks are run by `tests/tests/getting_started.rs`
//!   (lunar-e2e, with the real binaries and libiscsi).
//! - Blocks that cannot run in a test carry a fence tag saying why, which
//!   [`every_cli_example_is_run_or_marked`] accepts: `sh setup` (package installs, builds),
//!   `sh kernel-initiator` (needs a Linux kernel initiator: the kernel-initiator suite),
//!   `sh esxi` (commands typed on an ESXi host).
//! - Every inline `` `lunarctl ...` `` in any doc must parse: `lunarctl` accepts its
//!   subcommand and flags (placeholders such as `NAME` stand for values); a span of only
//!   command words (`lunarctl lun create`) names a command, which must exist.
//! - `docs/fibre-channel.md` is left out: its examples need LIO (configfs, target_core_user,
//!   an FC HBA in target mode).

use crate::admin_support::*;
use std::path::{Path, PathBuf};

use lunar_test_kit::markdown::fenced_blocks;

/// The ```sh blocks of a Markdown text, in order.
fn sh_blocks(md: &str) -> Vec<String> {
    fenced_blocks(md)
        .into_iter()
        .filter(|(info, _)| info == "sh")
        .map(|(_, b)| b)
        .collect()
}

fn docs_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs")
}

fn read_doc(rel: &str) -> String {
    std::fs::read_to_string(docs_dir().join(rel)).unwrap_or_else(|e| panic!("docs/{rel}: {e}"))
}

/// `PATH` with the `lunarctl` under test first.
fn path_with_lunarctl() -> String {
    let bin = Path::new(env!("CARGO_BIN_EXE_lunarctl"))
        .parent()
        .unwrap()
        .to_path_buf();
    format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

/// Runs each block with bash in `cwd`, `$LUNAR_SOCKET` pointing at `dir`'s admin socket.
async fn run_blocks(doc: &str, blocks: &[String], dir: &Path, cwd: &Path) {
    let path = path_with_lunarctl();
    for (i, b) in blocks.iter().enumerate() {
        let out = tokio::process::Command::new("bash")
            .arg("-euo")
            .arg("pipefail")
            .arg("-c")
            .arg(b)
            .current_dir(cwd)
            .env("PATH", &path)
            .env("LUNAR_SOCKET", socket(dir))
            .env_remove("LUNAR_TOKEN")
            .output()
            .await
            .expect("bash");
        assert!(
            out.status.success(),
            "{doc}: block {i} failed:\n{b}\nstdout:\n{}\nstderr:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn operations_guide_examples_run() {
    let blocks = sh_blocks(&read_doc("operations.md"));
    assert!(
        blocks.len() >= 8,
        "expected the guide's examples, found {}",
        blocks.len()
    );
    let dir = tempfile::tempdir().unwrap();
    let d = start(dir.path(), ByteSize::gib(100)).await;
    run_blocks("docs/operations.md", &blocks, dir.path(), dir.path()).await;
    // The guide's clean-up leaves the production LUNs and the dev clone.
    let luns = ctl_json(dir.path(), &["lun", "list"]).await;
    let names: Vec<&str> = luns
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"pgdata") && names.contains(&"pgdata-dev"),
        "{names:?}"
    );
    assert!(!names.contains(&"web1-boot"));
    let exported = std::fs::read_to_string("/tmp/lunar-exported.yaml").expect("exported config");
    target_daemon::config::Config::from_yaml_str(&exported, "exported")
        .expect("exported config loads");
    d.shutdown().await.unwrap();
}

/// The address `docs/admin-api.md` shows for the TCP admin listener.
const DOC_TCP: &str = "127.0.0.1:9861";
const TOKEN: &str = "doc-example-token-0123456789";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn admin_api_examples_run() {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let md = read_doc("admin-api.md");
    let dir = tempfile::tempdir().unwrap();
    let cfg = target_daemon::config::Config::local(ByteSize::gib(100)).with_data_dir(dir.path());
    let d = target_daemon::daemon::Daemon::start_with(
        cfg,
        target_daemon::admin::AdminOptions {
            socket: None,
            tcp: Some("127.0.0.1:0".parse().unwrap()),
            token: Some(TOKEN.into()),
            ..Default::default()
        },
    )
    .await
    .expect("daemon starts");
    let tcp = d.admin().unwrap().tcp_addr().unwrap().to_string();

    // The lunarctl examples, over TCP with the token file.
    let blocks: Vec<String> = sh_blocks(&md)
        .into_iter()
        .map(|b| b.replace(DOC_TCP, &tcp))
        .collect();
    assert!(!blocks.is_empty(), "admin-api.md has no sh examples");
    let cwd = tempfile::tempdir().unwrap();
    private_file(&cwd.path().join("admin.token"), &format!("{TOKEN}\n"));
    run_blocks("docs/admin-api.md", &blocks, dir.path(), cwd.path()).await;

    // The JSON examples: the documented request, answered as documented; sent twice, the
    // second answer is the documented error line, exactly.
    let json: Vec<String> = fenced_blocks(&md)
        .into_iter()
        .filter(|(info, _)| info == "json")
        .map(|(_, b)| b)
        .collect();
    assert_eq!(json.len(), 2, "admin-api.md: request and response examples");
    let request: serde_json::Value =
        serde_json::from_str(json[0].trim()).expect("the documented request is JSON");
    let name = request["args"]["name"]
        .as_str()
        .expect("request names a LUN");
    let responses: Vec<&str> = json[1].lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(responses.len(), 2, "{responses:?}");
    let documented_err: serde_json::Value =
        serde_json::from_str(responses[1]).expect("the documented error is JSON");
    let s = tokio::net::UnixStream::connect(socket(dir.path()))
        .await
        .expect("admin socket");
    let mut conn = BufReader::new(s);
    async fn ask(conn: &mut BufReader<tokio::net::UnixStream>, req: String) -> serde_json::Value {
        conn.get_mut()
            .write_all(format!("{req}\n").as_bytes())
            .await
            .unwrap();
        let mut line = String::new();
        conn.read_line(&mut line).await.unwrap();
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("bad answer {e}: {line}"))
    }
    let ok = ask(&mut conn, request.to_string()).await;
    assert!(
        responses[0].starts_with(r#"{"ok": true, "result": "#),
        "{}",
        responses[0]
    );
    assert_eq!(ok["ok"], true, "{ok}");
    assert_eq!(ok["result"]["name"], name, "{ok}");
    assert_eq!(
        ok["result"]["size_bytes"], request["args"]["size_bytes"],
        "{ok}"
    );
    assert_eq!(
        ok["result"]["guarantee"], request["args"]["guarantee"],
        "{ok}"
    );
    let again = ask(&mut conn, request.to_string()).await;
    assert_eq!(again, documented_err, "the documented error answer");

    // Every op of the table exists (a known op with missing arguments is not "unknown").
    let ops: Vec<String> = md
        .lines()
        .filter(|l| l.starts_with("| `"))
        .flat_map(|l| {
            let cell = l.split('|').nth(1).unwrap_or_default();
            cell.split('`')
                .enumerate()
                .filter(|(i, _)| i % 2 == 1)
                .map(|(_, s)| s.to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(ops.len() >= 30, "ops table: {ops:?}");
    for op in &ops {
        let a = ask(
            &mut conn,
            serde_json::json!({"op": op, "args": {}}).to_string(),
        )
        .await;
        let msg = a["error"]["message"].as_str().unwrap_or_default();
        assert!(
            !msg.contains("unknown variant"),
            "docs/admin-api.md lists op {op:?}, which lunard does not know: {a}"
        );
    }
    d.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn vmware_guide_examples_run() {
    let blocks = sh_blocks(&read_doc("hosts/vmware.md"));
    assert!(!blocks.is_empty(), "vmware.md has no sh examples");
    let dir = tempfile::tempdir().unwrap();
    let d = start(dir.path(), ByteSize::gib(100)).await;
    // What the page assumes: a datastore LUN vmfs01 on a target for the ESXi hosts.
    let p = dir.path();
    ctl_json(p, &["target", "create", "iqn.2026-11.io.lunar:esx"]).await;
    ctl_json(
        p,
        &[
            "lun",
            "create",
            "vmfs01",
            "--size",
            "1G",
            "--target",
            "iqn.2026-11.io.lunar:esx",
            "--lun-id",
            "0",
        ],
    )
    .await;
    run_blocks("docs/hosts/vmware.md", &blocks, p, p).await;
    let c = ctl_json(p, &["lun", "show", "vmfs01-test"]).await;
    assert_eq!(c["origin"], "vmfs01", "{c}");
    d.shutdown().await.unwrap();
}

/// Markdown files of the docs (recursively) and the README, relative to the repository.
fn all_docs() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "md") {
                out.push(p);
            }
        }
    }
    let mut out = vec![docs_dir().join("../README.md")];
    walk(&docs_dir(), &mut out);
    out.sort();
    out
}

/// Docs whose ```sh blocks a test runs: this file, or getting_started.rs (lunar-e2e).
const RUN: &[&str] = &[
    "operations.md",
    "admin-api.md",
    "hosts/vmware.md",
    "getting-started.md",
];
/// Fence tags of blocks no test can run, with the reason.
const MARKED: &[(&str, &str)] = &[
    ("sh setup", "installs packages or builds"),
    ("sh kernel-initiator", "needs a Linux kernel initiator"),
    ("sh esxi", "typed on an ESXi host"),
    (
        "sh ceph",
        "needs a Ceph cluster and HA gateways (tests/tests/ha.rs runs them)",
    ),
    (
        "sh replication",
        "needs two paired lunards (tests/tests/replication.rs and replication_link.rs run them)",
    ),
];
/// Needs LIO (configfs, target_core_user, an FC HBA in target mode).
const EXCLUDED: &str = "fibre-channel.md";

/// Inline `lunarctl ...` code spans of a Markdown text, outside fenced blocks.
fn inline_examples(md: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut fenced = false;
    for line in md.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            continue;
        }
        for (i, span) in line.split('`').enumerate() {
            if i % 2 == 1 && span.starts_with("lunarctl ") {
                out.push(span.to_string());
            }
        }
    }
    out
}

#[test]
fn every_cli_example_is_run_or_marked() {
    let mut problems = Vec::new();
    let mut inline = Vec::new();
    for doc in all_docs() {
        let rel = doc
            .strip_prefix(docs_dir())
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_else(|_| "README.md".into());
        if rel == EXCLUDED {
            continue;
        }
        let md = std::fs::read_to_string(&doc).unwrap();
        for (info, body) in fenced_blocks(&md) {
            if !body.contains("lunarctl") {
                continue;
            }
            let run = info == "sh" && RUN.contains(&rel.as_str());
            if !run && !MARKED.iter().any(|(tag, _)| *tag == info) {
                problems.push(format!(
                    "{rel}: a ```{info} block with lunarctl that no test runs (make it ```sh in a \
                     doc the tests run, or tag it with one of {MARKED:?}):\n{body}"
                ));
            }
        }
        for line in md.lines() {
            if line.starts_with("    ") && line.trim_start().starts_with("lunarctl") {
                problems.push(format!(
                    "{rel}: indented code block with lunarctl (use a fenced ```sh block): {line}"
                ));
            }
        }
        inline.extend(inline_examples(&md).into_iter().map(|s| (rel.clone(), s)));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n\n"));

    // Inline examples parse: lunarctl gets past argument parsing to connecting.
    assert!(inline.len() >= 15, "inline examples: {inline:?}");
    let scratch = tempfile::tempdir().unwrap();
    let nowhere = scratch.path().join("no-such.sock");
    for (rel, span) in &inline {
        let mut args: Vec<String> = Vec::new();
        let mut words = span.split_whitespace().skip(1);
        while let Some(a) = words.next() {
            // The example's own socket path is a placeholder: ours replaces it.
            if a == "--socket" {
                words.next();
                continue;
            }
            args.push(a.trim_matches(|c| c == '\'' || c == '"').to_string());
        }
        // `lunarctl lun create` in prose names a command: it must exist (`--help` works).
        if args.len() <= 2 && args.iter().all(|a| !a.starts_with('-')) {
            let help = std::process::Command::new(env!("CARGO_BIN_EXE_lunarctl"))
                .args(&args)
                .arg("--help")
                .output()
                .unwrap();
            assert!(
                help.status.success(),
                "{rel}: `{span}` names no lunarctl command:\n{}",
                String::from_utf8_lossy(&help.stderr)
            );
            continue;
        }
        // Each example in a directory of its own, so an offline command's files (an
        // identity created) do not meet the next example.
        let cwd = tempfile::tempdir().unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_lunarctl"))
            .args(&args)
            .arg("--socket")
            .arg(&nowhere)
            .current_dir(cwd.path())
            .env_remove("LUNAR_SOCKET")
            .env("LUNAR_TOKEN", "x")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        let tcp = args.iter().any(|a| a == "--tcp");
        let reached = if tcp {
            // `--tcp HOST:PORT` with a placeholder address: parsed, then refused as an address.
            err.starts_with("lunarctl: ")
        } else {
            err.starts_with("lunarctl: cannot connect") || err.contains(&*nowhere.to_string_lossy())
        };
        // A command that needs no lunard (`lunarctl replica identity create`) simply runs,
        // in the scratch directory, and succeeds.
        let offline = out.status.success();
        assert!(
            (reached || offline) && out.status.code() != Some(2),
            "{rel}: `{span}` is not a valid lunarctl command line ({}):\n{err}",
            out.status
        );
    }
}
