//! `lunarctl`'s shell completions and man page come from its CLI definition and name its
//! subcommands, and `deploy/install.sh` puts every file where `docs/install.md` and the
//! systemd unit say (run into a temporary `DESTDIR` with the binaries under test).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

const SUBCOMMANDS: &[&str] = &[
    "pool", "lun", "snapshot", "clone", "target", "acl", "chap", "session", "config",
];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn lunarctl(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_lunarctl"))
        .args(args)
        .output()
        .expect("run lunarctl");
    assert!(
        out.status.success(),
        "lunarctl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `shell -n FILE` (syntax check without running) when that shell is installed.
fn syntax_ok(shell: &str, text: &str) -> Option<bool> {
    let dir = tempfile::tempdir().ok()?;
    let f = dir.path().join("script");
    std::fs::write(&f, text).ok()?;
    let out = Command::new(shell).arg("-n").arg(&f).output().ok()?;
    if !out.status.success() {
        eprintln!("{shell} -n: {}", String::from_utf8_lossy(&out.stderr));
    }
    Some(out.status.success())
}

#[test]
fn lunarctl_completions_and_man_page_name_every_subcommand() {
    let man = lunarctl(&["--generate-man"]);
    assert!(man.contains(".TH lunarctl 8"), "man page header: {man}");
    assert!(man.contains("\\-\\-socket"), "man page lacks --socket");
    for shell in ["bash", "zsh", "fish"] {
        let text = lunarctl(&["--generate-completions", shell]);
        assert!(
            text.len() > 1000,
            "{shell} completion is too short:\n{text}"
        );
        for sub in SUBCOMMANDS {
            assert!(
                text.contains(sub),
                "{shell} completion does not offer `{sub}`"
            );
        }
        // fish spells long options `-l socket`.
        let socket = if shell == "fish" {
            "-l socket"
        } else {
            "--socket"
        };
        assert!(text.contains(socket), "{shell} completion lacks --socket");
        if let Some(ok) = syntax_ok(shell, &text) {
            assert!(ok, "{shell} rejects lunarctl's {shell} completion");
        }
    }
    for sub in SUBCOMMANDS {
        assert!(man.contains(sub), "man page lacks `{sub}`");
    }
    // A subcommand that does not exist is not offered: the check above can fail.
    assert!(!lunarctl(&["--generate-completions", "bash"]).contains("frobnicate"));
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o7777
}

fn run_install(root: &Path, prefix: Option<&str>) -> String {
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_lunarctl"))
        .parent()
        .expect("bin dir")
        .to_path_buf();
    let mut cmd = Command::new("bash");
    cmd.arg(repo().join("deploy/install.sh"))
        .env("DESTDIR", root)
        .env("LUNAR_BIN_DIR", &bin_dir)
        .env_remove("PREFIX");
    if let Some(p) = prefix {
        cmd.env("PREFIX", p);
    }
    let out = cmd.output().expect("run install.sh");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "install.sh failed:\n{text}");
    text
}

/// Absolute paths in the "where" column of docs/install.md's table.
fn documented_paths() -> Vec<String> {
    let md = std::fs::read_to_string(repo().join("docs/install.md")).expect("docs/install.md");
    md.lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| what"))
        .flat_map(|l| {
            l.split('`')
                .enumerate()
                .filter(|(i, s)| i % 2 == 1 && s.starts_with('/'))
                .map(|(_, s)| s.to_string())
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn install_script_stages_every_documented_file() {
    let root = tempfile::tempdir().expect("tempdir");
    let r = root.path();
    run_install(r, None);
    let under = |p: &str| r.join(p.trim_start_matches('/'));

    let paths = documented_paths();
    assert!(paths.len() >= 10, "table paths: {paths:?}");
    for p in &paths {
        assert!(
            under(p).exists(),
            "docs/install.md names {p}, install.sh did not install it"
        );
    }

    // The unit's paths exist in the staged root.
    let unit = std::fs::read_to_string(under("/etc/systemd/system/lunard.service")).expect("unit");
    let exec = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("ExecStart");
    let words: Vec<&str> = exec.split_whitespace().collect();
    assert_eq!(words[0], "/usr/local/bin/lunard");
    let arg = |flag: &str| {
        words
            .iter()
            .position(|w| *w == flag)
            .and_then(|i| words.get(i + 1))
            .copied()
            .unwrap_or_else(|| panic!("ExecStart lacks {flag}: {exec}"))
    };
    let config = under(arg("--config"));
    let data = under(arg("--data-dir"));
    assert_eq!(mode(&under(words[0])), 0o755);
    assert_eq!(mode(&config), 0o600, "the config holds CHAP secrets");
    assert_eq!(mode(&data), 0o700);
    for w in unit
        .lines()
        .filter_map(|l| l.strip_prefix("ReadWritePaths="))
    {
        assert!(under(w).is_dir(), "ReadWritePaths={w} not created");
    }
    let doc = unit
        .lines()
        .find_map(|l| l.strip_prefix("Documentation=file://"))
        .expect("Documentation=");
    assert!(
        under(doc).is_file(),
        "the unit's Documentation= {doc} is not installed"
    );
    // The installed configuration is one lunard accepts.
    target_daemon::config::Config::load(&config).expect("installed lunar.yaml loads");
    // The staged binaries are the ones under test and run.
    let out = Command::new(under("/usr/local/bin/lunarctl"))
        .arg("--help")
        .output()
        .expect("staged lunarctl");
    assert!(out.status.success());
    let man = std::fs::read_to_string(under("/usr/local/share/man/man8/lunarctl.8")).expect("man");
    assert!(man.contains(".TH lunarctl 8"));

    // Re-running keeps an edited configuration.
    std::fs::write(&config, "# edited by the admin\n").expect("edit config");
    run_install(r, None);
    assert_eq!(
        std::fs::read_to_string(&config).expect("config"),
        "# edited by the admin\n"
    );
}

#[test]
fn install_script_honours_prefix() {
    let root = tempfile::tempdir().expect("tempdir");
    let r = root.path();
    run_install(r, Some("/usr"));
    assert!(r.join("usr/bin/lunard").is_file());
    assert!(r.join("usr/bin/lunarctl").is_file());
    assert!(r.join("usr/share/man/man8/lunard.8").is_file());
    assert!(!r.join("usr/local/bin/lunard").exists());
    let unit = std::fs::read_to_string(r.join("etc/systemd/system/lunard.service")).expect("unit");
    assert!(
        unit.contains("ExecStart=/usr/bin/lunard "),
        "unit does not start the prefixed binary:\n{unit}"
    );
}

#[test]
fn install_script_refuses_a_missing_binary() {
    let root = tempfile::tempdir().expect("tempdir");
    let empty = tempfile::tempdir().expect("tempdir");
    let out = Command::new("bash")
        .arg(repo().join("deploy/install.sh"))
        .env("DESTDIR", root.path())
        .env("LUNAR_BIN_DIR", empty.path())
        .output()
        .expect("run install.sh");
    assert!(
        !out.status.success(),
        "install.sh succeeded without binaries"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing"));
    assert!(!root.path().join("usr/local/bin").exists());
}
