//! The appliance's pools by name, which pool a LUN lives in, pool figures and the pool
//! consistency check.
//!
//! A lunard serves the pools its configuration lists (`pools:`, or the `pool:` shorthand
//! for one named `default`). The names are fixed at start; each pool is open here or, on a
//! standby gateway of an HA group, not. Every LUN record names its pool (a state written
//! before pools had names names none: that is the first pool), and every operation on a
//! LUN, its snapshots and its clones goes to that pool alone: a clone shares chunks with
//! its origin, so it can only live where its origin lives.

use storage_core::{Pool, StorageError};

use crate::scsi::alua::AluaView;

use super::state::{LunRecord, State};
use super::{lun_rec, LunManager, MgrError, MgrResult, ObjectKind, PoolView};

/// One pool of the appliance: its name and the pool when it is open here.
#[derive(Clone)]
pub(crate) struct PoolSlot {
    /// The configured name.
    pub(crate) name: String,
    /// The open pool; `None` on a standby gateway.
    pub(crate) pool: Option<Pool>,
}

impl LunManager {
    /// The first pool (where LUNs that name no pool live; the one pool of a lunard that
    /// serves one), or [`MgrError::NotOwner`] on a standby gateway (naming the owner).
    pub fn pool(&self) -> MgrResult<Pool> {
        let first = self.pools.read().first().cloned();
        match first {
            Some(PoolSlot { pool: Some(p), .. }) => Ok(p),
            Some(PoolSlot { name, .. }) => Err(self.not_owner(&name)),
            None => Err(self.not_owner("")),
        }
    }

    /// A standby's refusal for pool `name`, naming that pool's owner.
    fn not_owner(&self, name: &str) -> MgrError {
        MgrError::NotOwner {
            owner: self.alua_of_pool(name).and_then(|v| v.owner()),
        }
    }

    /// The ALUA view of pool `name` on a gateway (its own, else the gateway's one view).
    pub(crate) fn alua_of_pool(&self, name: &str) -> Option<&std::sync::Arc<AluaView>> {
        self.pool_alua.get(name).or(self.alua.as_ref())
    }

    /// The pool named `name`: [`MgrError::NotFound`] (kind pool) if there is none,
    /// [`MgrError::NotOwner`] if it is not open here.
    pub fn pool_named(&self, name: &str) -> MgrResult<Pool> {
        let slot = self.pools.read().iter().find(|s| s.name == name).cloned();
        match slot {
            None => Err(MgrError::NotFound {
                kind: ObjectKind::Pool,
                name: name.to_string(),
            }),
            Some(PoolSlot { pool: Some(p), .. }) => Ok(p),
            Some(PoolSlot { pool: None, .. }) => Err(self.not_owner(name)),
        }
    }

    /// Checks that `name` is a pool of this appliance.
    pub(crate) fn known_pool(&self, name: &str) -> MgrResult<()> {
        if self.pools.read().iter().any(|s| s.name == name) {
            Ok(())
        } else {
            Err(MgrError::NotFound {
                kind: ObjectKind::Pool,
                name: name.to_string(),
            })
        }
    }

    /// The names of the pools, in configuration order.
    pub fn pool_names(&self) -> Vec<String> {
        self.pools.read().iter().map(|s| s.name.clone()).collect()
    }

    /// The pools open here, with their names.
    pub fn open_pools(&self) -> Vec<(String, Pool)> {
        self.pools
            .read()
            .iter()
            .filter_map(|s| s.pool.clone().map(|p| (s.name.clone(), p)))
            .collect()
    }

    /// The first pool's name (LUNs that name no pool are there).
    pub fn default_pool(&self) -> String {
        self.pools
            .read()
            .first()
            .map(|s| s.name.clone())
            .unwrap_or_else(|| crate::config::DEFAULT_POOL_NAME.to_string())
    }

    /// The name of the pool `rec` lives in (a record from before pools had names: the
    /// first pool).
    pub(crate) fn pool_name_of(&self, rec: &LunRecord) -> String {
        if rec.pool.is_empty() {
            self.default_pool()
        } else {
            rec.pool.clone()
        }
    }

    /// The pool LUN `lun` lives in, with its name.
    pub(crate) fn lun_pool(&self, st: &State, lun: &str) -> MgrResult<(String, Pool)> {
        let name = self.pool_name_of(lun_rec(st, lun)?);
        let pool = self.pool_named(&name)?;
        Ok((name, pool))
    }

    /// A storage error of pool `pool`, named when the appliance has several pools (with
    /// one, the message stays as it always was).
    pub(crate) fn in_pool(&self, pool: &str) -> impl Fn(StorageError) -> MgrError + '_ {
        let several = self.pools.read().len() > 1;
        let pool = pool.to_string();
        move |e| {
            if several {
                MgrError::InPool {
                    pool: pool.clone(),
                    source: e,
                }
            } else {
                MgrError::Storage(e)
            }
        }
    }

    /// Figures of pool `name`, or of every pool (configuration order) when `None`.
    pub fn pool_status(&self, name: Option<&str>) -> MgrResult<Vec<PoolView>> {
        let names = match name {
            Some(n) => {
                self.known_pool(n)?;
                vec![n.to_string()]
            }
            None => self.pool_names(),
        };
        names
            .into_iter()
            .map(|n| {
                let pool = self.pool_named(&n)?;
                let s = pool.status();
                Ok(PoolView {
                    name: n,
                    uuid: s.uuid.to_string(),
                    capacity_bytes: s.capacity_bytes,
                    used_bytes: s.used_bytes,
                    free_bytes: s.free_bytes,
                    reserved_bytes: s.reserved_bytes,
                    chunk_size: s.chunk_size,
                    soft_threshold_pct: s.soft_threshold_pct,
                    soft_threshold_reached: s.soft_threshold_reached,
                    volumes: s.volumes,
                    snapshots: s.snapshots,
                    io_backend: pool.io_backend().into(),
                })
            })
            .collect()
    }

    /// Runs the consistency check of pool `name` (default: the first); returns (clean,
    /// errors, leaked chunks).
    pub async fn pool_check(&self, name: Option<&str>) -> MgrResult<(bool, Vec<String>, u64)> {
        let _st = self.lock().await;
        let name = name.map_or_else(|| self.default_pool(), str::to_string);
        let r = self
            .pool_named(&name)?
            .check()
            .await
            .map_err(self.in_pool(&name))?;
        Ok((r.is_clean(), r.errors.clone(), r.leaked_chunks))
    }
}
