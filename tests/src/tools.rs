//! Locating the external tools the end-to-end tests drive.
//!
//! A test that needs a tool which is truly absent skips, loudly, unless the environment
//! variable `LUNAR_E2E_STRICT=1` is set (as `tests/run-all.sh` does after installing the
//! packages), in which case the absence is a failure: CI must never pass by skipping.

use std::path::{Path, PathBuf};

/// Environment variable that turns "tool missing → skip" into "tool missing → fail".
pub const STRICT_ENV: &str = "LUNAR_E2E_STRICT";

/// Finds an executable named `name` on `PATH` (plus the sbin directories, where `tgtd` lives
/// and which a non-root `PATH` often lacks).
pub fn find(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let extra = ["/usr/sbin", "/sbin", "/usr/local/sbin"].map(PathBuf::from);
    std::env::split_paths(&path)
        .chain(extra)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Whether missing tools fail tests instead of skipping them.
pub fn strict() -> bool {
    std::env::var(STRICT_ENV).is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"))
}

/// Returns `true` when every tool in `names` is present. Otherwise prints a loud skip notice
/// naming the missing tools and the Debian packages that provide them and returns `false` —
/// or panics in strict mode.
pub fn available(test: &str, names: &[&str]) -> bool {
    let missing: Vec<&str> = names
        .iter()
        .copied()
        .filter(|n| find(n).is_none())
        .collect();
    if missing.is_empty() {
        return true;
    }
    let packages: Vec<&str> = missing.iter().map(|n| debian_package(n)).collect();
    let msg = format!(
        "{test}: required tool(s) {missing:?} not found (Debian packages {packages:?}; \
         `bash tests/run-all.sh` installs them)"
    );
    if strict() {
        panic!("{msg}; {STRICT_ENV}=1 so this is a failure, not a skip");
    }
    eprintln!();
    eprintln!("!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!");
    eprintln!("!!! SKIPPED {msg}");
    eprintln!("!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!");
    false
}

/// The Debian package that ships a tool, for skip messages.
pub fn debian_package(tool: &str) -> &'static str {
    match tool {
        "iscsi-ls"
        | "iscsi-inq"
        | "iscsi-test-cu"
        | "iscsi-perf"
        | "iscsi-readcapacity16"
        | "iscsi-swp"
        | "iscsi-dd" => "libiscsi-bin",
        "tgtd" | "tgtadm" => "tgt",
        "qemu-img" | "qemu-io" => "qemu-utils (+ qemu-block-extra for iscsi://)",
        "sg_inq" | "sg_readcap" => "sg3-utils",
        "fio" => "fio",
        "prometheus" | "promtool" => "prometheus",
        "qemu-system-x86_64" => "qemu-system-x86",
        "systemd-analyze" => "systemd",
        _ => "unknown",
    }
}

/// Skips the calling test (returns from it) unless all the named tools are present.
#[macro_export]
macro_rules! require_tools {
    ($($tool:expr),+ $(,)?) => {
        if !$crate::tools::available(
            concat!(module_path!(), ":", line!()),
            &[$($tool),+],
        ) {
            return;
        }
    };
}
