//! Space figures: info records, and the reconcile pass that computes unique/shared and
//! reclaims garbage (chunks of ghost layers that no view can see any more).
//!
//! `mapped` and `reserved` per view and pool used/free/reserved are maintained exactly on
//! every change. `unique` (what deleting a view would free) needs to know who else sees each
//! chunk; it is recomputed by [`reconcile`] and reported with the time it was computed.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use crate::engine::{PoolInner, State};
use crate::layer::{Rec, ViewId, ViewKind, HOLE};
use crate::{Guarantee, SnapshotInfo, VolumeInfo};

pub(crate) fn empty_info() -> VolumeInfo {
    VolumeInfo {
        name: String::new(),
        uuid: uuid::Uuid::nil(),
        size_bytes: 0,
        block_size: 512,
        guarantee: Guarantee::None,
        mapped_bytes: 0,
        unique_bytes: 0,
        shared_bytes: 0,
        reserved_bytes: 0,
        origin: None,
        created_unix: 0,
        space_exact: false,
        space_reconciled_at: 0,
        snapshots: 0,
    }
}

pub(crate) fn volume_info(st: &State, id: ViewId) -> Option<VolumeInfo> {
    let v = st.meta.views.get(&id)?;
    let ViewKind::Volume { guarantee, .. } = v.kind else {
        return None;
    };
    let cs = st.meta.chunk_size;
    // Between reconciles `unique` is as of the last pass while `mapped` is current: a volume
    // that unmapped, shrank or rolled back since may map less than it then held alone.
    // Clamp so that unique <= mapped and shared = mapped - unique hold at every instant.
    let unique = v.unique.min(v.mapped);
    Some(VolumeInfo {
        name: v.name.clone(),
        uuid: v.uuid,
        size_bytes: v.size,
        block_size: v.block_size,
        guarantee,
        mapped_bytes: v.mapped * cs,
        unique_bytes: unique * cs,
        shared_bytes: v.mapped.saturating_sub(unique) * cs,
        reserved_bytes: v.reserved * cs,
        origin: v.origin.clone(),
        created_unix: v.created,
        space_exact: !st.space_dirty,
        space_reconciled_at: st.reconciled_at,
        snapshots: st.meta.snapshots_of(id).len(),
    })
}

pub(crate) fn snapshot_info(st: &State, id: ViewId) -> Option<SnapshotInfo> {
    let v = st.meta.views.get(&id)?;
    let ViewKind::Snapshot { volume, .. } = v.kind else {
        return None;
    };
    let cs = st.meta.chunk_size;
    Some(SnapshotInfo {
        volume: st
            .meta
            .views
            .get(&volume)
            .map(|x| x.name.clone())
            .unwrap_or_default(),
        name: v.name.clone(),
        uuid: v.uuid,
        size_bytes: v.size,
        mapped_bytes: v.mapped * cs,
        unique_bytes: v.unique * cs,
        shared_bytes: v.mapped.saturating_sub(v.unique) * cs,
        created_unix: v.created,
        space_exact: !st.space_dirty,
        space_reconciled_at: st.reconciled_at,
    })
}

/// Entries scanned per shared-lock hold, so writers never wait long for the reconcile pass.
const SCAN_BATCH: usize = 4096;

/// Count, for one layer's data entries, which are seen by exactly one view (unique to it)
/// and which by none (garbage: `(layer, index, phys)`). The entries are copied out first and
/// examined in batches, each under a short shared lock; entries that changed meanwhile are
/// skipped (the pass is then marked inexact by the caller's LSN check).
fn scan_layer(
    inner: &PoolInner,
    lid: u64,
    unique: &mut HashMap<ViewId, u64>,
    garbage: &mut Vec<(u64, u64, u64)>,
) {
    let entries: Vec<(u64, u64)> = {
        let st = inner.state.read();
        let Some(l) = st.meta.layers.get(&lid) else {
            return;
        };
        l.map
            .iter()
            .filter(|(_, &p)| p != HOLE)
            .map(|(&i, &p)| (i, p))
            .collect()
    };
    let mut viewers = Vec::with_capacity(2);
    for batch in entries.chunks(SCAN_BATCH) {
        let st = inner.state.read();
        let Some(l) = st.meta.layers.get(&lid) else {
            return;
        };
        for &(i, p) in batch {
            if l.map.get(&i) != Some(&p) {
                continue;
            }
            viewers.clear();
            st.meta.viewers(lid, i, 2, &mut viewers);
            match viewers.len() {
                0 => garbage.push((lid, i, p)),
                1 => *unique.entry(viewers[0]).or_default() += 1,
                _ => {}
            }
        }
    }
}

/// Recompute unique figures and reclaim garbage. The scan takes the state lock shared, one
/// layer at a time, so I/O keeps flowing; if anything changed meanwhile the figures are
/// stored but not marked exact (the next pass will be).
pub(crate) fn reconcile(inner: &PoolInner) {
    let (start_lsn, layer_ids) = {
        let st = inner.state.read();
        if st.failed.is_some() {
            return;
        }
        (st.lsn, st.meta.layers.keys().copied().collect::<Vec<_>>())
    };
    let mut unique = HashMap::new();
    let mut garbage = Vec::new();
    for lid in layer_ids {
        scan_layer(inner, lid, &mut unique, &mut garbage);
    }
    let mut st = inner.state.write();
    let consistent = st.lsn == start_lsn;
    let mut reclaimed = 0;
    let mut viewers = Vec::new();
    for (layer, index, phys) in garbage {
        // Re-validate under the exclusive lock: still there, still seen by nobody.
        if st.meta.layers.get(&layer).and_then(|l| l.map.get(&index)) != Some(&phys) {
            continue;
        }
        viewers.clear();
        st.meta.viewers(layer, index, 1, &mut viewers);
        if !viewers.is_empty() {
            continue;
        }
        if let Err(e) = st.log(Rec::Clear { layer, index }) {
            tracing::error!("reclaiming garbage failed: {e}");
            return;
        }
        reclaimed += 1;
    }
    let ids: Vec<ViewId> = st.meta.views.keys().copied().collect();
    for id in ids {
        let u = unique.get(&id).copied().unwrap_or(0);
        if let Some(v) = st.meta.views.get_mut(&id) {
            v.unique = u;
        }
    }
    // Reclaimed garbage was seen by nobody, so it does not change any unique figure.
    st.space_dirty = !consistent;
    st.reconciled_at = crate::clock::now_unix();
    if reclaimed > 0 {
        tracing::info!(
            chunks = reclaimed,
            "reclaimed garbage chunks hidden from every view"
        );
    }
}

/// Background task: reconcile every 5 s while something changed.
pub(crate) fn spawn_reconciler(weak: Weak<PoolInner>) {
    let Ok(handle) = tokio::runtime::Handle::try_current() else {
        return;
    };
    handle.spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(5)).await;
            let Some(inner): Option<Arc<PoolInner>> = weak.upgrade() else {
                return;
            };
            if inner.closed.load(std::sync::atomic::Ordering::Acquire) {
                return;
            }
            if inner.state.read().space_dirty {
                let i = inner.clone();
                let _ = tokio::task::spawn_blocking(move || reconcile(&i)).await;
            }
        }
    });
}
