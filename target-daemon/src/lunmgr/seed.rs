//! Start-up: what the YAML configuration names and the state lacks, and pool volumes the
//! state does not know.

use std::collections::BTreeMap;

use storage_core::{Pool, StorageError};

use super::divergence;
use super::state::{self, ChapRecord, LunRecord, LunStatus, State, TargetRecord};
use crate::config::Config;

/// Gives every LUN record that names no pool (a state written before lunard served
/// several pools) the first pool, `first`: where its volume has always been.
pub(super) fn name_pools(st: &mut State, first: &str) {
    for rec in st.luns.values_mut() {
        if rec.pool.is_empty() {
            rec.pool = first.to_string();
        }
    }
}

/// Adds the targets and LUNs the configuration names and the state lacks; each LUN's
/// volume is created in the pool its entry names (default: the first configured pool).
/// `pools` are the pools open here; a LUN of another pool is left for its owner.
pub(super) async fn seed_from_config(
    st: &mut State,
    config: &Config,
    pools: &[(String, Pool)],
) -> anyhow::Result<()> {
    use anyhow::Context;
    divergence::warn_divergences(st, config);
    for (ti, t) in config.targets.iter().enumerate() {
        // Validated by Config::validate; WWPNs are stored in the fabric's spelling.
        let fabric = t.fabric;
        let name = fabric
            .canonical_name(&t.iqn)
            .map_err(|e| anyhow::anyhow!("targets[{ti}].iqn: {e}"))?;
        let new_target = !st.targets.contains_key(&name);
        if new_target {
            let initiators = t
                .initiators
                .iter()
                .map(|i| fabric.canonical_name(i))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| anyhow::anyhow!("targets[{ti}].initiators: {e}"))?;
            st.targets.insert(
                name.clone(),
                TargetRecord {
                    iqn: name.clone(),
                    fabric,
                    alias: t.alias.clone(),
                    allow_any: t.allow_any,
                    initiators,
                    chap: t.chap.as_ref().map(ChapRecord::from_cfg),
                    luns: BTreeMap::new(),
                },
            );
            tracing::info!(target = %name, %fabric, "target added from the configuration");
        }
        for (li, l) in t.luns.iter().enumerate() {
            if st.luns.contains_key(&l.volume) && !new_target {
                continue; // the state decides where a known LUN is mapped
            }
            let field = format!("targets[{ti}].luns[{li}]");
            let pool_name = l.pool.clone().unwrap_or_else(|| config.default_pool_name());
            if let Some(rec) = st.luns.get(&l.volume) {
                if !rec.pool.is_empty() && rec.pool != pool_name {
                    tracing::warn!(
                        "{field}: volume {:?} is in pool {:?} in the saved state, the \
                         configuration says {pool_name:?}; keeping the saved state",
                        l.volume,
                        rec.pool
                    );
                    continue;
                }
            }
            let Some((_, pool)) = pools.iter().find(|(n, _)| *n == pool_name) else {
                tracing::warn!("{field}: pool {pool_name:?} is not open here; LUN left out");
                continue;
            };
            let info = match pool.volume_info(&l.volume) {
                Ok(i) => i,
                Err(StorageError::NotFound(_)) => {
                    let i = pool
                        .create_volume(&l.volume, l.size.0, l.block_size, l.guarantee.into())
                        .await
                        .with_context(|| format!("{field}: cannot create volume {:?}", l.volume))?;
                    tracing::info!(volume = %l.volume, size = %l.size, "created volume");
                    i
                }
                Err(e) => return Err(anyhow::anyhow!("{field}: volume {:?}: {e}", l.volume)),
            };
            st.luns
                .entry(l.volume.clone())
                .or_insert_with(|| LunRecord {
                    name: l.volume.clone(),
                    identity: info.uuid,
                    read_only: l.read_only,
                    status: LunStatus::Online,
                    origin: info.origin.clone(),
                    clone_mode: None,
                    created_unix: info.created_unix,
                    pool: pool_name.clone(),
                    geometry: None,
                });
            if let Some(rec) = st.targets.get_mut(&name) {
                match rec.luns.get(&l.id) {
                    None => {
                        rec.luns.insert(l.id, l.volume.clone());
                    }
                    Some(other) if *other != l.volume => tracing::warn!(
                        "{field}: LUN {} of {} is {other:?} in the saved state; keeping it",
                        l.id,
                        t.iqn
                    ),
                    Some(_) => {}
                }
            }
        }
    }
    Ok(())
}

/// Volumes of pool `name` without a LUN record (e.g. created just before a crash) become
/// unmapped LUNs, so nothing in the pool is invisible to the administrator. A volume whose
/// name a LUN of another pool already has (LUN names are unique across the appliance) is
/// only reported.
pub(super) fn adopt_orphans(st: &mut State, name: &str, pool: &Pool) {
    for v in pool.volumes() {
        if let Some(rec) = st.luns.get(&v.name) {
            if rec.pool != name {
                tracing::warn!(volume = %v.name, pool = name, other = %rec.pool, "volume of pool {name:?} has the name of a LUN of pool {:?}: not adopted", rec.pool);
            }
        } else {
            tracing::warn!(volume = %v.name, "volume without a LUN record: adopted as an unmapped LUN");
            st.luns.insert(
                v.name.clone(),
                LunRecord {
                    name: v.name.clone(),
                    identity: v.uuid,
                    read_only: false,
                    status: LunStatus::Online,
                    origin: v.origin.clone(),
                    clone_mode: v.origin.as_ref().map(|_| state::CloneMode::Linked),
                    created_unix: v.created_unix,
                    pool: name.to_string(),
                    geometry: None,
                },
            );
        }
    }
}
