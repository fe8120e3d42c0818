//! `lunard` YAML configurations written by tests (ACL and CHAP scenarios).
//!
//! Mirrors the schema in `target-daemon/src/config.rs` (which parses strictly, so a field
//! this crate gets wrong fails loudly at daemon start rather than being ignored). The data dir
//! and portal come from `--data-dir` / `--portal` flags the harness passes.

use serde::Serialize;

/// A whole configuration file.
#[derive(Clone, Debug, Serialize)]
pub struct Config {
    /// Pool settings.
    pub pool: Pool,
    /// Portals (the harness overrides them with `--portal 127.0.0.1:0`).
    pub portals: Vec<Portal>,
    /// Discovery-session authentication.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub discovery: Option<Discovery>,
    /// Exported targets.
    pub targets: Vec<Target>,
}

/// Pool settings.
#[derive(Clone, Debug, Serialize)]
pub struct Pool {
    /// Pool path relative to the data dir.
    pub path: String,
    /// Thin-provisioning chunk.
    pub chunk_size: String,
    /// Capacity of the pool file.
    pub capacity: String,
}

/// A listen address.
#[derive(Clone, Debug, Serialize)]
pub struct Portal {
    /// `ADDR:PORT`.
    pub listen: String,
}

/// Discovery settings.
#[derive(Clone, Debug, Serialize)]
pub struct Discovery {
    /// CHAP required for SendTargets sessions.
    pub chap: Chap,
}

/// CHAP credentials; `mutual` is what the target answers with.
#[derive(Clone, Debug, Serialize)]
pub struct Chap {
    /// Name the initiator sends.
    pub username: String,
    /// Secret the initiator must know (12..=255 bytes).
    pub secret: String,
    /// Target's credentials for mutual CHAP.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mutual: Option<Credential>,
}

/// One direction's CHAP credentials.
#[derive(Clone, Debug, Serialize)]
pub struct Credential {
    /// CHAP name.
    pub username: String,
    /// CHAP secret.
    pub secret: String,
}

/// One target.
#[derive(Clone, Debug, Serialize)]
pub struct Target {
    /// Target IQN.
    pub iqn: String,
    /// Any initiator may log in.
    pub allow_any: bool,
    /// Allowed initiators when `allow_any` is false.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub initiators: Vec<String>,
    /// CHAP for normal sessions.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chap: Option<Chap>,
    /// Logical units.
    pub luns: Vec<Lun>,
}

/// One LUN.
#[derive(Clone, Debug, Serialize)]
pub struct Lun {
    /// LUN number.
    pub id: u64,
    /// Volume name in the pool.
    pub volume: String,
    /// Size, e.g. `1GiB`.
    pub size: String,
    /// Export read-only.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub read_only: bool,
}

impl Config {
    /// One target `iqn` open to any initiator, with a 1 GiB thin LUN 0 named after it.
    pub fn single_target(iqn: &str) -> Self {
        Self {
            pool: Pool {
                path: "pool".into(),
                chunk_size: "64KiB".into(),
                capacity: "8GiB".into(),
            },
            portals: vec![Portal {
                listen: "127.0.0.1:0".into(),
            }],
            discovery: None,
            targets: vec![Target {
                iqn: iqn.into(),
                allow_any: true,
                initiators: Vec::new(),
                chap: None,
                luns: vec![Lun {
                    id: 0,
                    volume: "lun0".into(),
                    size: "1GiB".into(),
                    read_only: false,
                }],
            }],
        }
    }

    /// Restricts the first target to `initiators` (ACL).
    pub fn with_acl(mut self, initiators: &[&str]) -> Self {
        if let Some(t) = self.targets.first_mut() {
            t.allow_any = false;
            t.initiators = initiators.iter().map(|s| s.to_string()).collect();
        }
        self
    }

    /// Requires CHAP on the first target, optionally mutual.
    pub fn with_chap(mut self, user: &str, secret: &str, mutual: Option<(&str, &str)>) -> Self {
        if let Some(t) = self.targets.first_mut() {
            t.chap = Some(Chap {
                username: user.into(),
                secret: secret.into(),
                mutual: mutual.map(|(u, s)| Credential {
                    username: u.into(),
                    secret: s.into(),
                }),
            });
        }
        self
    }

    /// Exports every LUN of the first target read-only.
    pub fn read_only(mut self) -> Self {
        if let Some(t) = self.targets.first_mut() {
            for l in &mut t.luns {
                l.read_only = true;
            }
        }
        self
    }

    /// Renders the YAML text.
    pub fn to_yaml(&self) -> String {
        // Serializing plain structs of strings/bools/ints cannot fail.
        serde_yaml::to_string(self).unwrap_or_else(|e| panic!("config serialization: {e}"))
    }
}
