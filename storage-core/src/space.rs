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
    let unique = v.unique.min(v.mapped.max(v.unique));
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

/// Compute `unique` for every view from the layer maps. Returns the garbage entries
/// (data no view can reach).
pub(crate) fn compute_unique(st: &State) -> (HashMap<ViewId, u64>, Vec<(u64, u64)>) {
    let mut unique: HashMap<ViewId, u64> = HashMap::new();
    let mut garbage = Vec::new();
    let mut viewers = Vec::with_capacity(2);
    for (&lid, l) in &st.meta.layers {
        for (&i, &p) in &l.map {
            if p == HOLE {
                continue;
            }
            viewers.clear();
            st.meta.viewers(lid, i, 2, &mut viewers);
            match viewers.len() {
                0 => garbage.push((lid, i)),
                1 => *unique.entry(viewers[0]).or_default() += 1,
                _ => {}
            }
        }
    }
    (unique, garbage)
}

/// Recompute unique figures and reclaim garbage. Holds the state lock for the pass.
pub(crate) fn reconcile(inner: &PoolInner) {
    let mut st = inner.state.write();
    if st.failed.is_some() {
        return;
    }
    let (unique, garbage) = compute_unique(&st);
    let n = garbage.len();
    for (layer, index) in garbage {
        // Only layers without a live writer can hold garbage (ghosts, or beyond a view's end).
        if let Err(e) = st.log(Rec::Clear { layer, index }) {
            tracing::error!("reclaiming garbage failed: {e}");
            return;
        }
    }
    let (unique, _) = if n > 0 {
        compute_unique(&st)
    } else {
        (unique, Vec::new())
    };
    let ids: Vec<ViewId> = st.meta.views.keys().copied().collect();
    for id in ids {
        let u = unique.get(&id).copied().unwrap_or(0);
        if let Some(v) = st.meta.views.get_mut(&id) {
            v.unique = u;
        }
    }
    st.space_dirty = false;
    st.reconciled_at = crate::pool::now_unix();
    if n > 0 {
        tracing::info!(
            chunks = n,
            "reclaimed garbage chunks hidden from every view"
        );
    }
}

/// Background task: reconcile every 2 s while something changed.
pub(crate) fn spawn_reconciler(weak: Weak<PoolInner>) {
    let Ok(handle) = tokio::runtime::Handle::try_current() else {
        return;
    };
    handle.spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(2)).await;
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
