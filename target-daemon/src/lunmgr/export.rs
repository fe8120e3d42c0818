//! `config export`: the running configuration with its targets and mapped LUNs replaced by
//! the live ones, written through the configuration's own serde schema (so the export and the
//! parser cannot drift apart).

use crate::config::{ByteSize, ChapCfg, Credential, LunCfg, TargetCfg};

use super::state::{ChapRecord, TargetRecord};
use super::{LunManager, MgrResult};

impl LunManager {
    /// The configuration lunard runs with, its targets and mapped LUNs replaced by the live
    /// ones, as YAML, so a configuration file can be regenerated from the live state.
    pub async fn export_yaml(&self) -> MgrResult<String> {
        let st = self.lock().await;
        let mut cfg = self.config.clone();
        cfg.targets = st
            .targets
            .values()
            .map(|t| {
                let mut tc = target_cfg(t);
                tc.luns = t
                    .luns
                    .iter()
                    .filter_map(|(&id, name)| {
                        let rec = st.luns.get(name);
                        // Without the pool (a standby gateway): what the owner recorded.
                        let pool_name = rec.map(|r| self.pool_name_of(r));
                        let pool = pool_name.as_deref().map(|n| self.pool_named(n));
                        let (size, block_size, guarantee) =
                            match pool.unwrap_or_else(|| self.pool()) {
                                Ok(pool) => {
                                    let i = pool.volume_info(name).ok()?;
                                    (i.size_bytes, i.block_size, i.guarantee)
                                }
                                Err(_) => {
                                    let g = rec?.geometry?;
                                    let guarantee = if g.thin {
                                        storage_core::Guarantee::None
                                    } else {
                                        storage_core::Guarantee::Full
                                    };
                                    (
                                        g.size_blocks * u64::from(g.block_size),
                                        g.block_size,
                                        guarantee,
                                    )
                                }
                            };
                        Some(LunCfg {
                            id,
                            volume: name.clone(),
                            size: ByteSize(size),
                            block_size,
                            guarantee: guarantee.into(),
                            read_only: rec.is_some_and(|r| r.read_only),
                            // Named when there is a choice; the first pool is the default.
                            pool: pool_name.filter(|n| *n != self.default_pool()),
                        })
                    })
                    .collect();
                tc
            })
            .collect();
        Ok(cfg.export_yaml()?)
    }
}

/// A target record in the configuration's form, without its LUNs.
fn target_cfg(t: &TargetRecord) -> TargetCfg {
    TargetCfg {
        iqn: t.iqn.clone(),
        fabric: t.fabric,
        alias: t.alias.clone(),
        allow_any: t.allow_any,
        // The configuration refuses a list next to allow_any (it would be moot).
        initiators: if t.allow_any {
            Vec::new()
        } else {
            t.initiators.clone()
        },
        chap: t.chap.as_ref().map(chap_cfg),
        luns: Vec::new(),
    }
}

fn chap_cfg(c: &ChapRecord) -> ChapCfg {
    ChapCfg {
        username: c.username.clone(),
        secret: c.secret.clone(),
        mutual: match (&c.mutual_username, &c.mutual_secret) {
            (Some(u), Some(s)) => Some(Credential {
                username: u.clone(),
                secret: s.clone(),
            }),
            _ => None,
        },
    }
}
