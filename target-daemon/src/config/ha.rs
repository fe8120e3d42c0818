//! The `ha:` section (this lunard is a gateway of an HA group over Ceph RBD) and
//! `pool.rbd` (the pool lives in an RBD image), with their checks.
//!
//! The two go together: an HA group is one pool in one RBD image served by several
//! gateways, and the image is reached through the group's Ceph connection. Durations are
//! written as people write them (`3s`, `1500ms`) and read by [`DurationCfg`].

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// This gateway's place in an HA group (see docs/configuration.md, `ha`).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HaCfg {
    /// Group name; the group's RADOS objects are `lunar.<group>.*`.
    pub group: String,
    /// This gateway's name, unique in the group.
    pub gateway: String,
    /// ALUA target port group id of this gateway (also its relative target port id),
    /// unique in the group, 1..=65535.
    pub port_group: u16,
    /// How to reach the Ceph cluster.
    #[serde(default)]
    pub ceph: CephCfg,
    /// Lease duration: the OSD expires an owner that has not renewed for this long.
    #[serde(default = "default_lease")]
    pub lease: DurationCfg,
}

/// The Ceph connection of an HA group.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CephCfg {
    /// ceph.conf to read (monitors, auth).
    #[serde(default = "default_ceph_conf")]
    pub conf: PathBuf,
    /// RADOS client name without the `client.` prefix.
    #[serde(default = "default_ceph_client")]
    pub client: String,
    /// RADOS pool holding the group's objects and the pool's RBD image.
    #[serde(default = "default_ceph_pool")]
    pub pool: String,
}

impl Default for CephCfg {
    fn default() -> Self {
        CephCfg {
            conf: default_ceph_conf(),
            client: default_ceph_client(),
            pool: default_ceph_pool(),
        }
    }
}

fn default_ceph_conf() -> PathBuf {
    PathBuf::from("/etc/ceph/ceph.conf")
}
fn default_ceph_client() -> String {
    "admin".into()
}
fn default_ceph_pool() -> String {
    "rbd".into()
}
/// 2 s (3 s until 2026-12-07; decision 0023): a dead owner is replaced 2-3.2 s after its
/// death on a loaded host, in time for a Linux host's path failover (3 s, docs/ha.md), and
/// a renew may still take up to a second (half a lease) before the owner steps down.
fn default_lease() -> DurationCfg {
    DurationCfg(Duration::from_secs(2))
}

/// A pool in an RBD image (`pool.rbd`).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RbdPoolCfg {
    /// Image name in `ha.ceph.pool`; created by the first owner (size `pool.capacity`).
    pub image: String,
}

/// Shortest lease accepted: below it a renew every quarter of the lease competes with
/// ordinary OSD latency.
pub const MIN_LEASE: Duration = Duration::from_millis(500);
/// Longest lease accepted: a failover waits up to one lease.
pub const MAX_LEASE: Duration = Duration::from_secs(60);

/// A duration written `3s`, `1500ms` or as a plain number of seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct DurationCfg(pub Duration);

impl DurationCfg {
    /// Parses `"3s"`, `"1500ms"`, `"3"` (seconds).
    pub fn parse(s: &str) -> Result<DurationCfg, String> {
        let t = s.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let n: u64 = num.parse().map_err(|_| {
            format!("invalid duration {s:?}: expected a whole number with ms or s, such as 3s")
        })?;
        match unit.trim() {
            "" | "s" => Ok(DurationCfg(Duration::from_secs(n))),
            "ms" => Ok(DurationCfg(Duration::from_millis(n))),
            other => Err(format!(
                "invalid duration unit {other:?} in {s:?}: use ms or s"
            )),
        }
    }
}

impl fmt::Display for DurationCfg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        if ms.is_multiple_of(1000) {
            write!(f, "{}s", ms / 1000)
        } else {
            write!(f, "{ms}ms")
        }
    }
}

impl Serialize for DurationCfg {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for DurationCfg {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = DurationCfg;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration such as 3s or 1500ms")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<DurationCfg, E> {
                Ok(DurationCfg(Duration::from_secs(v)))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<DurationCfg, E> {
                u64::try_from(v)
                    .map(|v| DurationCfg(Duration::from_secs(v)))
                    .map_err(|_| E::custom("a duration cannot be negative"))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<DurationCfg, E> {
                DurationCfg::parse(v).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// Group and gateway names become parts of RADOS object names and metric labels: keep
/// them to a portable alphabet.
pub(super) fn check_name(n: &str) -> Result<(), String> {
    if n.is_empty() || n.len() > 64 {
        return Err("must be 1 to 64 characters".into());
    }
    if !n
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
    {
        return Err(format!("{n:?}: use letters, digits, '-' and '_'"));
    }
    Ok(())
}

impl HaCfg {
    /// Checks of the section alone; the field path is relative to `ha`.
    pub(super) fn validate(&self) -> Result<(), (String, String)> {
        check_name(&self.group).map_err(|m| ("group".to_string(), m))?;
        check_name(&self.gateway).map_err(|m| ("gateway".to_string(), m))?;
        if self.port_group == 0 {
            return Err((
                "port_group".into(),
                "must be between 1 and 65535 (it is also the relative target port \
                 identifier, and relative target port 0 is reserved in SCSI)"
                    .into(),
            ));
        }
        if self.ceph.client.is_empty() || self.ceph.client.starts_with("client.") {
            return Err((
                "ceph.client".into(),
                "give the client name without the \"client.\" prefix, e.g. admin".into(),
            ));
        }
        if self.ceph.pool.is_empty() {
            return Err(("ceph.pool".into(), "must name a RADOS pool".into()));
        }
        if self.ceph.conf.as_os_str().is_empty() {
            return Err(("ceph.conf".into(), "must name a ceph.conf file".into()));
        }
        if !(MIN_LEASE..=MAX_LEASE).contains(&self.lease.0) {
            return Err((
                "lease".into(),
                format!(
                    "must be between {} and {}, got {}",
                    DurationCfg(MIN_LEASE),
                    DurationCfg(MAX_LEASE),
                    self.lease
                ),
            ));
        }
        Ok(())
    }
}

impl RbdPoolCfg {
    /// Checks of `pool.rbd` alone; the field path is relative to it.
    pub(super) fn validate(&self) -> Result<(), (String, String)> {
        let i = &self.image;
        if i.is_empty() || i.len() > 96 || i.contains('/') || i.contains('@') {
            return Err((
                "image".into(),
                "must be 1 to 96 characters without '/' or '@'".into(),
            ));
        }
        if i.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err((
                "image".into(),
                "must not contain spaces or control characters".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_and_print_back() {
        assert_eq!(
            DurationCfg::parse("3s"),
            Ok(DurationCfg(Duration::from_secs(3)))
        );
        assert_eq!(
            DurationCfg::parse("1500ms"),
            Ok(DurationCfg(Duration::from_millis(1500)))
        );
        assert_eq!(
            DurationCfg::parse("7"),
            Ok(DurationCfg(Duration::from_secs(7)))
        );
        assert!(DurationCfg::parse("3m").is_err());
        assert!(DurationCfg::parse("s").is_err());
        assert!(DurationCfg::parse("-1s").is_err());
        for s in ["3s", "1500ms", "60s"] {
            assert_eq!(
                DurationCfg::parse(s).map(|d| d.to_string()),
                Ok(s.to_string())
            );
        }
    }
}
