//! Space figures: info records, and the reconcile pass that computes unique/shared and
//! reclaims garbage (chunks of ghost layers that no view can see any more).
//!
//! `mapped` and `reserved` per view and pool used/free/reserved are maintained exactly on
//! every change. `unique` (what deleting a view would free) needs to know who else sees each
//! chunk; it is recomputed by [`reconcile`] and reported with the time it was computed.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use crate::changes::{seen, Seen};
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

/// Entries scanned per shared-lock hold, so writers never wait long for the reconcile pass,
/// and changed entries re-examined per exclusive hold in the incremental pass.
const SCAN_BATCH: usize = 4096;

/// Count, for one layer's data entries, which are seen by exactly one view (unique to it)
/// and which by none (garbage: `(layer, index, phys)`). The entries are copied out first and
/// examined in batches, each under a short shared lock. An entry changed since the pass
/// began is noted in [`crate::changes::Changes`] and left to the incremental step; it is
/// recorded in `skipped` so that step knows this pass did not count it.
fn scan_layer(
    inner: &PoolInner,
    lid: u64,
    unique: &mut HashMap<ViewId, u64>,
    garbage: &mut Vec<(u64, u64, u64)>,
    skipped: &mut Vec<(u64, u64)>,
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
            if st.changes.noted.contains_key(&(lid, i)) || l.map.get(&i) != Some(&p) {
                skipped.push((lid, i));
                continue;
            }
            match seen(&st.meta, lid, i, &mut viewers) {
                Seen::Garbage(p) => garbage.push((lid, i, p)),
                Seen::Unique(v) => *unique.entry(v).or_default() += 1,
                Seen::NotUnique => {}
            }
        }
    }
}

/// The full pass: recount every data entry of every layer (after a structural change, and
/// once after open). Returns `false` if another structural change came meanwhile (the
/// figures are then stored but the next pass is full again).
fn full_pass(inner: &PoolInner) -> bool {
    let layer_ids = {
        let mut st = inner.state.write();
        if st.failed.is_some() {
            return false;
        }
        st.changes.structural = false;
        st.changes.noted.clear();
        st.meta.layers.keys().copied().collect::<Vec<_>>()
    };
    let mut unique = HashMap::new();
    let mut garbage = Vec::new();
    let mut skipped = Vec::new();
    for lid in layer_ids {
        scan_layer(inner, lid, &mut unique, &mut garbage, &mut skipped);
    }
    let mut st = inner.state.write();
    let consistent = !st.changes.structural;
    let ids: Vec<ViewId> = st.meta.views.keys().copied().collect();
    for id in ids {
        let u = unique.get(&id).copied().unwrap_or(0);
        if let Some(v) = st.meta.views.get_mut(&id) {
            v.unique = u;
        }
    }
    if !consistent {
        return false;
    }
    // Entries this pass did not count were noted when they changed; their noted view is
    // what was counted before *this* pass, so make it "none" for the incremental step.
    for k in skipped {
        if let Some(was) = st.changes.noted.get_mut(&k) {
            *was = None;
        }
    }
    // Garbage is re-examined with the changed entries (under the exclusive lock).
    for (layer, index, _) in garbage {
        st.changes.noted.entry((layer, index)).or_insert(None);
    }
    true
}

/// The incremental step: re-examine the changed entries, a batch per exclusive hold, move
/// each one's count from the view it was counted unique to before to the one it is unique
/// to now, and reclaim entries no view sees. Returns the number reclaimed.
fn incremental(inner: &PoolInner) -> Option<u64> {
    let mut reclaimed = 0;
    let mut viewers = Vec::with_capacity(2);
    loop {
        let mut st = inner.state.write();
        if st.failed.is_some() || st.changes.structural {
            return None;
        }
        let keys: Vec<(u64, u64)> = st.changes.noted.keys().take(SCAN_BATCH).copied().collect();
        if keys.is_empty() {
            return Some(reclaimed);
        }
        let mut garbage = Vec::new();
        for k in keys {
            let was = st.changes.noted.remove(&k).flatten();
            let now = seen(&st.meta, k.0, k.1, &mut viewers);
            if was != now.unique_to() {
                if let Some(v) = was.and_then(|v| st.meta.views.get_mut(&v)) {
                    v.unique = v.unique.saturating_sub(1);
                }
                if let Some(v) = now.unique_to().and_then(|v| st.meta.views.get_mut(&v)) {
                    v.unique += 1;
                }
            }
            if let Seen::Garbage(_) = now {
                garbage.push(k);
            }
        }
        // Reclaimed garbage was seen by nobody, so it does not change any unique figure
        // (the Clear notes the entry again; the next batch finds it gone).
        for (layer, index) in garbage {
            if let Err(e) = st.log(Rec::Clear { layer, index }) {
                tracing::error!("reclaiming garbage failed: {e}");
                return None;
            }
            reclaimed += 1;
        }
    }
}

/// Bring unique figures up to date and reclaim garbage: a full pass after a structural
/// change (or at first), then the incremental step over the entries changed since. The
/// full pass takes the state lock shared, one batch at a time; the incremental step takes
/// it exclusively for a batch of changed entries at a time. Figures are marked exact when
/// nothing is left to examine.
pub(crate) fn reconcile(inner: &PoolInner) {
    if inner.state.read().changes.structural && !full_pass(inner) {
        let mut st = inner.state.write();
        st.reconciled_at = crate::clock::now_unix();
        return;
    }
    let Some(reclaimed) = incremental(inner) else {
        return;
    };
    let mut st = inner.state.write();
    st.space_dirty = st.changes.structural || !st.changes.noted.is_empty();
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

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use crate::Guarantee;

    const CS: u64 = 65536;

    /// After a full pass, I/O notes only the entries it touched (and their ancestors' entries
    /// at the same index), and the incremental pass that follows leaves figures that `check`
    /// recomputes from scratch and finds exact: through first writes into shared chunks,
    /// overwrites, unmaps of shared and owned data, in a volume, its clones and below a
    /// snapshot.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn incremental_passes_keep_unique_figures_exact() {
        use rand::{Rng, SeedableRng};
        let dir = tempfile::tempdir().expect("tempdir");
        let pool = crate::testutil::pool_with_volume(dir.path(), CS as u32, 128 * CS).await;
        let v = pool.volume("v").expect("v");
        for i in 0..128u64 {
            v.write(i * (CS / 4096), Bytes::from(vec![1u8; 4096]), false)
                .await
                .expect("write");
        }
        pool.snapshot("v", "s").await.expect("snapshot");
        pool.clone_volume("v@s", "c1", None).await.expect("clone");
        pool.clone_volume("v", "c2", Some(Guarantee::None))
            .await
            .expect("live clone");
        let names = ["v", "c1", "c2"];
        let mut rng = rand::rngs::StdRng::seed_from_u64(17);
        pool.reconcile_space().await.expect("full pass");
        assert!(pool.volume_info("v").expect("info").space_exact);
        for round in 0..20 {
            let touched = rng.gen_range(1..12u64);
            for _ in 0..touched {
                let vol = pool.volume(names[rng.gen_range(0..3)]).expect("volume");
                let lba = rng.gen_range(0..128u64) * (CS / 4096) + rng.gen_range(0..16);
                if rng.gen_bool(0.3) {
                    vol.unmap(lba, 1 + rng.gen_range(0..32))
                        .await
                        .expect("unmap");
                } else {
                    vol.write(lba, Bytes::from(vec![round as u8; 4096]), false)
                        .await
                        .expect("write");
                }
            }
            {
                let st = pool.inner.state.read();
                assert!(
                    !st.changes.structural,
                    "round {round}: I/O forced a full pass"
                );
                // An unmap of up to 32 blocks touches at most two chunks; each noted entry
                // brings at most its ancestors' (depth 3 here).
                assert!(
                    st.changes.noted.len() as u64 <= touched * 2 * 3,
                    "round {round}: {} entries noted for {touched} operations",
                    st.changes.noted.len()
                );
            }
            pool.reconcile_space().await.expect("incremental pass");
            for n in names {
                assert!(pool.volume_info(n).expect("info").space_exact, "{n}");
            }
            let report = pool.check().await.expect("check");
            assert!(report.is_clean(), "round {round}: {:?}", report.errors);
        }
        pool.close().await.expect("close");
    }
}
