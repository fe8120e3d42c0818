//! The gateway registry of an HA group (`lunar.<group>.gateways`): every gateway's name,
//! ALUA target port group, iSCSI portals and when it last said so. Each gateway upserts
//! its own record (a compare-and-swap, retried on a conflict with another gateway's
//! upsert); every gateway reads the list to answer REPORT TARGET PORT GROUPS the same way
//! and for `lunarctl ha status`.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::objects::{ObjError, VersionedObjects};

/// Most compare-and-swap attempts of one upsert: each failed one means another gateway
/// upserted meanwhile, which only N gateways starting at once cause.
pub const MAX_ATTEMPTS: u32 = 16;

/// One gateway as the registry knows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewayRecord {
    /// Gateway name (`ha.gateway`), unique in the group.
    pub name: String,
    /// ALUA target port group id = relative target port id (`ha.port_group`), unique in
    /// the group.
    pub port_group: u16,
    /// iSCSI portals (`address:port`) hosts reach it through.
    #[serde(default)]
    pub portals: Vec<String>,
    /// When it last upserted its record, seconds since the Unix epoch.
    pub last_seen_unix: u64,
    /// The RADOS instance id of its shared-state client (0: unknown), as notify reports
    /// name its watchers: tells a live gateway's watch from a dead one's.
    #[serde(default)]
    pub instance: u64,
}

/// The object's content.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Registry {
    #[serde(default)]
    gateways: BTreeMap<String, GatewayRecord>,
}

/// Why the registry could not be read or changed.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The object does not decode.
    #[error("gateway registry {object} is corrupt: {message}")]
    Corrupt {
        /// Object name.
        object: String,
        /// Parser message.
        message: String,
    },
    /// Another gateway already uses this port group.
    #[error("port group {port_group} is already used by gateway {other} in {object}; every gateway needs its own ha.port_group")]
    PortGroupTaken {
        /// Object name.
        object: String,
        /// The contested port group.
        port_group: u16,
        /// The gateway that has it.
        other: String,
    },
    /// The compare-and-swap kept failing.
    #[error("gateway registry {object} kept changing; gave up after {MAX_ATTEMPTS} attempts")]
    Contended {
        /// Object name.
        object: String,
    },
    /// The cluster failed.
    #[error("gateway registry {object}: {message}")]
    Io {
        /// Object name.
        object: String,
        /// What failed.
        message: String,
    },
}

/// The registry of one group.
pub struct GatewayRegistry {
    objects: Arc<dyn VersionedObjects>,
    name: String,
}

impl GatewayRegistry {
    /// The registry of group `group` in `objects`.
    pub fn new(objects: Arc<dyn VersionedObjects>, group: &str) -> Self {
        Self {
            objects,
            name: super::names::gateways(group),
        }
    }

    fn io(&self, e: ObjError) -> RegistryError {
        RegistryError::Io {
            object: self.name.clone(),
            message: e.to_string(),
        }
    }

    fn read(&self) -> Result<(Registry, Option<u64>), RegistryError> {
        match self.objects.read(&self.name).map_err(|e| self.io(e))? {
            None => Ok((Registry::default(), None)),
            Some(v) if v.data.is_empty() => Ok((Registry::default(), Some(v.version))),
            Some(v) => {
                let r = serde_json::from_slice(&v.data).map_err(|e| RegistryError::Corrupt {
                    object: self.name.clone(),
                    message: e.to_string(),
                })?;
                Ok((r, Some(v.version)))
            }
        }
    }

    /// Every gateway of the group, by port group.
    pub fn list(&self) -> Result<Vec<GatewayRecord>, RegistryError> {
        let (r, _) = self.read()?;
        let mut v: Vec<GatewayRecord> = r.gateways.into_values().collect();
        v.sort_by_key(|g| g.port_group);
        Ok(v)
    }

    /// Insert or replace `rec` (keyed by its name). Refused when another gateway has its
    /// port group.
    pub fn upsert(&self, rec: &GatewayRecord) -> Result<(), RegistryError> {
        self.change(|r| {
            if let Some(other) = r
                .gateways
                .values()
                .find(|g| g.port_group == rec.port_group && g.name != rec.name)
            {
                return Err(RegistryError::PortGroupTaken {
                    object: self.name.clone(),
                    port_group: rec.port_group,
                    other: other.name.clone(),
                });
            }
            r.gateways.insert(rec.name.clone(), rec.clone());
            Ok(())
        })
    }

    /// Remove the gateway `name` (decommissioned); no error if it is not there.
    pub fn remove(&self, name: &str) -> Result<(), RegistryError> {
        self.change(|r| {
            r.gateways.remove(name);
            Ok(())
        })
    }

    /// Read, change, compare-and-swap; again on a conflict, at most [`MAX_ATTEMPTS`] times.
    fn change(
        &self,
        f: impl Fn(&mut Registry) -> Result<(), RegistryError>,
    ) -> Result<(), RegistryError> {
        for attempt in 0..MAX_ATTEMPTS {
            let (mut r, version) = self.read()?;
            f(&mut r)?;
            let body = serde_json::to_vec_pretty(&r).map_err(|e| RegistryError::Io {
                object: self.name.clone(),
                message: e.to_string(),
            })?;
            match self.objects.write(&self.name, &body, version) {
                Ok(_) => return Ok(()),
                Err(ObjError::Conflict(_)) => crate::scsi::pr::backoff(attempt),
                Err(e) => return Err(self.io(e)),
            }
        }
        Err(RegistryError::Contended {
            object: self.name.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shared::MemCluster;

    fn rec(name: &str, pg: u16, seen: u64) -> GatewayRecord {
        GatewayRecord {
            name: name.into(),
            port_group: pg,
            portals: vec![format!("127.0.0.1:{}", 3260 + pg)],
            last_seen_unix: seen,
            instance: 0,
        }
    }

    #[test]
    fn gateways_upsert_their_records_and_everyone_lists_them() {
        let cluster = MemCluster::new();
        let (a, b) = (
            GatewayRegistry::new(cluster.client(), "g"),
            GatewayRegistry::new(cluster.client(), "g"),
        );
        assert!(a.list().expect("list").is_empty());
        b.upsert(&rec("gw2", 2, 1)).expect("gw2");
        a.upsert(&rec("gw1", 1, 1)).expect("gw1");
        a.upsert(&rec("gw1", 1, 7)).expect("gw1 again");
        assert_eq!(
            b.list().expect("list"),
            vec![rec("gw1", 1, 7), rec("gw2", 2, 1)]
        );
        match a.upsert(&rec("gw3", 2, 1)) {
            Err(RegistryError::PortGroupTaken { other, .. }) => assert_eq!(other, "gw2"),
            other => panic!("expected PortGroupTaken, got {other:?}"),
        }
        b.remove("gw2").expect("remove");
        assert_eq!(a.list().expect("list"), vec![rec("gw1", 1, 7)]);
    }

    /// Many gateways upserting at once from threads: every record is there afterwards.
    #[test]
    fn concurrent_upserts_lose_no_gateway() {
        let cluster = MemCluster::new();
        let threads: Vec<_> = (1..=4u16)
            .map(|i| {
                let reg = GatewayRegistry::new(cluster.client(), "g");
                std::thread::spawn(move || {
                    for seen in 0..10 {
                        reg.upsert(&rec(&format!("gw{i}"), i, seen))
                            .expect("upsert");
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("thread");
        }
        let all = GatewayRegistry::new(cluster.client(), "g")
            .list()
            .expect("list");
        assert_eq!(all.len(), 4);
        assert!(all.iter().all(|g| g.last_seen_unix == 9));
    }

    #[test]
    fn a_corrupt_registry_is_a_clear_error() {
        let cluster = MemCluster::new();
        cluster.put_raw("lunar.g.gateways", b"\xff\x00");
        let reg = GatewayRegistry::new(cluster.client(), "g");
        assert!(matches!(reg.list(), Err(RegistryError::Corrupt { .. })));
        assert!(matches!(
            reg.upsert(&rec("gw1", 1, 1)),
            Err(RegistryError::Corrupt { .. })
        ));
    }
}
