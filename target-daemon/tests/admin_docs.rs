//! Runs every ```sh block of docs/operations.md, in order, against a live lunard, so the
//! documented commands keep working.

mod admin_support;

use admin_support::*;

/// The ```sh blocks of a Markdown text, in order.
fn sh_blocks(md: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur: Option<String> = None;
    for line in md.lines() {
        match &mut cur {
            None if line.trim_start() == "```sh" => cur = Some(String::new()),
            Some(b) if line.trim_start() == "```" => {
                out.push(std::mem::take(b));
                cur = None;
            }
            Some(b) => {
                b.push_str(line);
                b.push('\n');
            }
            None => {}
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn operations_guide_examples_run() {
    let md = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docs/operations.md"
    ))
    .expect("docs/operations.md");
    let blocks = sh_blocks(&md);
    assert!(
        blocks.len() >= 8,
        "expected the guide's examples, found {}",
        blocks.len()
    );
    let dir = tempfile::tempdir().unwrap();
    let d = start(dir.path(), "100GiB").await;
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_lunarctl"))
        .parent()
        .unwrap()
        .to_path_buf();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    for (i, b) in blocks.iter().enumerate() {
        let out = tokio::process::Command::new("bash")
            .arg("-euo")
            .arg("pipefail")
            .arg("-c")
            .arg(b)
            .env("PATH", &path)
            .env("LUNAR_SOCKET", socket(dir.path()))
            .output()
            .await
            .expect("bash");
        assert!(
            out.status.success(),
            "block {i} failed:\n{b}\nstdout:\n{}\nstderr:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
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
