//! docs/configuration.md cannot drift from the code: every configuration field and every
//! `lunard` flag must be documented there, and the shipped example must parse.

use std::collections::BTreeSet;
use std::process::Command;

use target_daemon::config::Config;

const DOC: &str = include_str!("../../../docs/configuration.md");
const EXAMPLE: &str = include_str!("../../../deploy/lunar.example.yaml");

/// Field names of every struct reachable from `Config`, read from its pretty `Debug` output
/// (`name: value` lines), so a new field shows up here without anyone listing it.
fn field_names(cfg: &Config) -> BTreeSet<String> {
    format!("{cfg:#?}")
        .lines()
        .filter_map(|l| {
            let t = l.trim_start();
            let (name, _) = t.split_once(": ")?;
            let ok = !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c == '_' || c.is_ascii_digit());
            ok.then(|| name.to_string())
        })
        .collect()
}

#[test]
fn every_config_field_is_documented() {
    let cfg = Config::from_yaml_str(EXAMPLE, "deploy/lunar.example.yaml")
        .unwrap_or_else(|e| panic!("the shipped example must parse: {e}"));
    let fields = field_names(&cfg);
    assert!(
        fields.len() > 30,
        "suspiciously few fields found: {fields:?}"
    );
    let missing: Vec<_> = fields
        .iter()
        .filter(|f| !DOC.contains(&format!("`{f}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "fields missing from docs/configuration.md: {missing:?}"
    );
    // The example shows every field too (an Option left out would hide a field above).
    let missing_ex: Vec<_> = fields
        .iter()
        .filter(|f| !EXAMPLE.contains(&format!("{f}:")))
        .collect();
    assert!(
        missing_ex.is_empty(),
        "fields missing from deploy/lunar.example.yaml: {missing_ex:?}"
    );
}

#[test]
fn every_lunard_flag_is_documented() {
    let out = Command::new(env!("CARGO_BIN_EXE_lunard"))
        .arg("--help")
        .output()
        .expect("run lunard --help");
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    let flags: BTreeSet<&str> = help
        .split_whitespace()
        .filter_map(|w| {
            let w = w.trim_end_matches(',');
            let name = w.strip_prefix("--")?;
            let name = name.split('=').next()?;
            (!name.is_empty() && name.chars().all(|c| c.is_ascii_lowercase() || c == '-'))
                .then_some(w.split('=').next().unwrap_or(w))
        })
        .collect();
    assert!(
        flags.contains("--config") && flags.contains("--portal"),
        "{help}"
    );
    let missing: Vec<_> = flags
        .iter()
        .filter(|f| !DOC.contains(&format!("`{f}")))
        .collect();
    assert!(
        missing.is_empty(),
        "lunard flags missing from docs/configuration.md: {missing:?}"
    );
}

#[test]
fn completions_and_man_page_come_from_the_cli_definition() {
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_lunard"))
            .args(args)
            .output()
            .expect("run lunard");
        assert!(out.status.success(), "lunard {args:?} failed");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let man = run(&["--generate-man"]);
    assert!(man.contains(".TH lunard 8"), "{man}");
    let bash = run(&["--generate-completions", "bash"]);
    let zsh = run(&["--generate-completions", "zsh"]);
    for flag in [
        "--config",
        "--data-dir",
        "--portal",
        "--metrics",
        "--admin-listen",
    ] {
        assert!(
            man.contains(&flag.replace('-', "\\-")),
            "man page lacks {flag}"
        );
        assert!(bash.contains(flag), "bash completion lacks {flag}");
        assert!(zsh.contains(flag), "zsh completion lacks {flag}");
    }
}
