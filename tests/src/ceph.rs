//! The Ceph cluster the HA tests run against.
//!
//! Tests that need Ceph find a running cluster through `LUNAR_CEPH_CONF` (the path of its
//! `ceph.conf`, client `admin`; `tests/scripts/ceph.sh start BASE_DIR [PORT]` starts a
//! single-node one on loopback and prints that line). Without it they skip with a loud
//! notice, except when `LUNAR_REQUIRE_CEPH=1` (CI), where a missing cluster is a failure: CI
//! must never pass by skipping. Every test uses its own names ([`unique_name`]) for the RBD
//! image and the HA group, so tests run in parallel on one cluster and a rerun never meets
//! the leftovers of an earlier one; [`Scratch`] removes them when the test ends.

use crate::process;
use anyhow::{bail, Result};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Environment variable naming the cluster's `ceph.conf`.
pub const CONF_ENV: &str = "LUNAR_CEPH_CONF";

/// Environment variable that turns "no cluster → skip" into "no cluster → fail".
pub const REQUIRE_ENV: &str = "LUNAR_REQUIRE_CEPH";

/// The RADOS pool the tests use for the image and the shared objects (`ceph.sh` creates it).
pub const POOL: &str = "rbd";

/// A reachable test cluster.
#[derive(Clone, Debug)]
pub struct Cluster {
    conf: PathBuf,
}

/// Whether a missing cluster fails tests instead of skipping them.
pub fn required() -> bool {
    std::env::var(REQUIRE_ENV).is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"))
}

/// The cluster named by `LUNAR_CEPH_CONF`, or `None` after a loud skip notice (a panic
/// when `LUNAR_REQUIRE_CEPH=1`, or when the variable names a file that does not exist).
pub fn cluster(test: &str) -> Option<Cluster> {
    let Some(conf) = std::env::var_os(CONF_ENV).filter(|v| !v.is_empty()) else {
        let msg = format!(
            "{test}: needs a Ceph cluster: set {CONF_ENV}=<ceph.conf> \
             (`tests/scripts/ceph.sh start /tmp/lunar-ceph` starts one and prints it)"
        );
        if required() {
            panic!("{msg}; {REQUIRE_ENV}=1 so this is a failure, not a skip");
        }
        eprintln!();
        eprintln!("!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!");
        eprintln!("!!! SKIPPED {msg}");
        eprintln!("!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!");
        return None;
    };
    let conf = PathBuf::from(conf);
    assert!(
        conf.is_file(),
        "{test}: {CONF_ENV}={} is not a file",
        conf.display()
    );
    Some(Cluster { conf })
}

/// Skips the calling test (returns from it) unless a Ceph cluster is configured; binds the
/// [`Cluster`] to `$name`.
#[macro_export]
macro_rules! require_ceph {
    ($name:ident) => {
        let Some($name) = $crate::ceph::cluster(concat!(module_path!(), ":", line!())) else {
            return;
        };
    };
}

/// A name no other test, process or earlier run uses: `<prefix>-<pid>-<seconds>-<n>`, in the
/// character set HA group and gateway names allow (`[A-Za-z0-9_-]`).
pub fn unique_name(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    format!(
        "{prefix}-{}-{}-{}",
        std::process::id(),
        secs % 1_000_000,
        N.fetch_add(1, Ordering::Relaxed)
    )
}

impl Cluster {
    /// Path of the cluster's `ceph.conf`.
    pub fn conf(&self) -> &Path {
        &self.conf
    }

    /// `TOOL -c CONF ARGS` (`rbd`, `rados`, `ceph`), which must succeed; its stdout.
    pub fn cli(&self, tool: &str, args: &[&str]) -> Result<String> {
        let mut cmd = Command::new(tool);
        cmd.arg("-c").arg(&self.conf).args(args);
        Ok(process::run(&mut cmd, Duration::from_secs(60))?
            .check()?
            .stdout)
    }

    /// Names of the objects in `pool` starting with `prefix`.
    pub fn objects(&self, pool: &str, prefix: &str) -> Result<Vec<String>> {
        Ok(self
            .cli("rados", &["-p", pool, "ls"])?
            .lines()
            .filter(|o| o.starts_with(prefix))
            .map(str::to_string)
            .collect())
    }

    /// Whether the RBD image `image` exists in `pool`.
    pub fn image_exists(&self, pool: &str, image: &str) -> Result<bool> {
        Ok(self
            .cli("rbd", &["-p", pool, "ls"])?
            .lines()
            .any(|l| l == image))
    }

    /// The clients the monitors blocklist now (address lines of `ceph osd blocklist ls`).
    pub fn blocklist(&self) -> Result<Vec<String>> {
        let mut cmd = Command::new("ceph");
        cmd.arg("-c")
            .arg(&self.conf)
            .args(["osd", "blocklist", "ls"]);
        let out = process::run(&mut cmd, Duration::from_secs(60))?;
        if !out.status.success() {
            bail!("ceph osd blocklist ls: {}", out.combined());
        }
        // The entries are on stdout, the "listed N entries" summary on stderr.
        Ok(out
            .stdout
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect())
    }

    /// The addresses of the clients watching `image` (`rbd status`).
    pub fn image_watchers(&self, pool: &str, image: &str) -> Result<Vec<String>> {
        let out = self.cli("rbd", &["-p", pool, "status", "--format", "json", image])?;
        let v: serde_json::Value = serde_json::from_str(&out)?;
        Ok(v["watchers"]
            .as_array()
            .map(|w| {
                w.iter()
                    .filter_map(|x| x["address"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default())
    }

    /// The addresses of the clients watching object `oid` (`rados listwatchers`).
    pub fn object_watchers(&self, pool: &str, oid: &str) -> Result<Vec<String>> {
        Ok(self
            .cli("rados", &["-p", pool, "listwatchers", oid])?
            .split_whitespace()
            .filter_map(|w| w.strip_prefix("watcher="))
            .map(str::to_string)
            .collect())
    }

    /// Removes `image` and every `lunar.<group>.*` object: the cleanup of one test, run
    /// after its gateways are gone. A killed gateway's watches would linger until the OSD
    /// times them out (and `rbd rm` refuses an image while it is watched): the clients
    /// still watching are blocklisted first, for a minute (the OSDs drop a blocklisted
    /// client's watches at once; only this test's dead processes watch its unique names).
    /// Best effort; what fails is printed, not raised (a test's verdict is already decided
    /// when it runs).
    pub fn remove_group(&self, pool: &str, group: &str, image: &str) {
        let prefix = format!("lunar.{group}.");
        let objs = match self.objects(pool, &prefix) {
            Ok(objs) => objs,
            Err(e) => {
                eprintln!("ceph cleanup: listing {prefix}*: {e:#}");
                Vec::new()
            }
        };
        let image_there = matches!(self.image_exists(pool, image), Ok(true));
        let mut watchers: Vec<String> = objs
            .iter()
            .filter_map(|o| self.object_watchers(pool, o).ok())
            .flatten()
            .collect();
        if image_there {
            watchers.extend(self.image_watchers(pool, image).unwrap_or_default());
        }
        watchers.sort();
        watchers.dedup();
        for w in &watchers {
            if let Err(e) = self.cli("ceph", &["osd", "blocklist", "add", w, "60"]) {
                eprintln!("ceph cleanup: blocklisting lingering watcher {w}: {e:#}");
            }
        }
        for o in &objs {
            if let Err(e) = self.cli("rados", &["-p", pool, "rm", o]) {
                eprintln!("ceph cleanup: rados rm {o}: {e:#}");
            }
        }
        if image_there {
            // The OSDs apply the blocklist with their next map: retry briefly.
            for _ in 0..20 {
                if self
                    .cli("rbd", &["-p", pool, "rm", "--no-progress", image])
                    .is_ok()
                {
                    return;
                }
                std::thread::sleep(Duration::from_millis(500));
            }
            eprintln!("ceph cleanup: image {pool}/{image} could not be removed; left in place");
        }
    }

    /// Whether anything of group `group` (its image, `lunar.<group>.*`) is left.
    pub fn group_leftovers(&self, pool: &str, group: &str, image: &str) -> Result<Vec<String>> {
        let mut left = self.objects(pool, &format!("lunar.{group}."))?;
        if self.image_exists(pool, image)? {
            left.push(format!("image {image}"));
        }
        Ok(left)
    }
}

/// The RBD image and HA group one test owns, removed from the cluster when dropped (also
/// when the test fails), after the gateways using them are gone (drop them first).
pub struct Scratch {
    /// The cluster.
    pub cluster: Cluster,
    /// HA group name (also the prefix of its RADOS objects `lunar.<group>.*`).
    pub group: String,
    /// RBD image holding the group's pool.
    pub image: String,
    /// The images of the group's other pools (removed too).
    pub more_images: Vec<String>,
    /// Keep everything (for a post-mortem): `LUNAR_CEPH_KEEP=1`.
    keep: bool,
}

impl Scratch {
    /// Fresh names for a test called `test` (short; it is part of the names).
    pub fn new(cluster: &Cluster, test: &str) -> Self {
        let group = unique_name(test);
        Scratch {
            cluster: cluster.clone(),
            image: format!("{group}-pool"),
            more_images: Vec::new(),
            group,
            keep: std::env::var("LUNAR_CEPH_KEEP").is_ok_and(|v| v == "1"),
        }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if self.keep {
            eprintln!(
                "LUNAR_CEPH_KEEP=1: leaving {POOL}/{} and lunar.{}.*",
                self.image, self.group
            );
            return;
        }
        self.cluster.remove_group(POOL, &self.group, &self.image);
        for image in &self.more_images {
            self.cluster.remove_group(POOL, &self.group, image);
        }
    }
}
