//! The pool space a set of volumes takes, their snapshots and staged receives included:
//! what a replication peer's space limit is measured against (decision 0024).
//!
//! Every chunk is owned by exactly one layer, so the footprint is the sum of `owned` over
//! the layers the volumes reach: each volume's top and the layers above it (its
//! snapshots, and ghosts of deleted ones that it still reads through), and each staged
//! receive into one of them with the layers above it. The walk up stops at a layer that
//! belongs to a volume outside the set (the origin of a clone stream, unless that origin
//! is in the set too): that space is the origin's. A layer reached twice counts once.
//! Local clones of the volumes' snapshots hang below, not above, and are not counted.

use std::collections::BTreeSet;

use crate::engine::State;
use crate::layer::{LayerId, ViewId, ViewKind};
use crate::Pool;

impl Pool {
    /// Bytes of the chunks owned by the layers of `volumes` (live volumes that do not
    /// exist count nothing) and of the receives staged into them. Exact at the moment it
    /// is read (it takes the pool's state lock for reading).
    pub fn footprint_bytes(&self, volumes: &[&str]) -> u64 {
        let st = self.inner.state.read();
        footprint(&st, volumes) * st.meta.chunk_size
    }
}

/// Chunks owned by the layers `volumes` reach (see the module comment).
fn footprint(st: &State, volumes: &[&str]) -> u64 {
    let m = &st.meta;
    let names: BTreeSet<&str> = volumes.iter().copied().collect();
    let vol_ids: BTreeSet<ViewId> = m
        .views
        .iter()
        .filter(|(_, v)| v.is_volume() && names.contains(v.name.as_str()))
        .map(|(&id, _)| id)
        .collect();
    // Whether layer `l` may be counted: a ghost, or a view of one of the volumes.
    let ours = |l: LayerId| -> bool {
        let Some(view) = m.layers.get(&l).and_then(|x| x.view) else {
            return true;
        };
        match m.views.get(&view).map(|v| v.kind) {
            Some(ViewKind::Snapshot { volume, .. }) => vol_ids.contains(&volume),
            Some(ViewKind::Volume { .. }) => vol_ids.contains(&view),
            Some(ViewKind::Staging { .. }) => m
                .staging
                .get(&view)
                .is_some_and(|s| names.contains(s.spec.volume.as_str())),
            None => true,
        }
    };
    let mut starts: Vec<LayerId> = vol_ids
        .iter()
        .filter_map(|id| m.views.get(id).map(|v| v.layer()))
        .collect();
    starts.extend(
        m.staging
            .iter()
            .filter(|(_, s)| names.contains(s.spec.volume.as_str()))
            .filter_map(|(id, _)| m.views.get(id).map(|v| v.layer())),
    );
    let mut seen = BTreeSet::new();
    let mut total = 0u64;
    for start in starts {
        let mut cur = Some(start);
        while let Some(l) = cur {
            if !ours(l) || !seen.insert(l) {
                break;
            }
            let layer = m.layers.get(&l);
            total += layer.map_or(0, |x| x.owned);
            cur = layer.and_then(|x| x.parent);
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use crate::testutil::pool_with_volume;
    use crate::Guarantee;

    const CS: u64 = 64 << 10;

    /// Writes `chunks` chunks of `byte` at chunk `at` of `vol`.
    async fn put(pool: &crate::Pool, vol: &str, at: u64, chunks: u64, byte: u8) {
        let data = Bytes::from(vec![byte; (chunks * CS) as usize]);
        let lba = at * CS / 4096;
        pool.volume(vol)
            .unwrap()
            .write(lba, data, false)
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn footprint_counts_snapshots_and_not_local_clones_nor_others() {
        let d = tempfile::tempdir().unwrap();
        let pool = pool_with_volume(d.path(), CS as u32, 16 * CS).await;
        pool.create_volume("other", 16 * CS, 4096, Guarantee::None)
            .await
            .unwrap();
        put(&pool, "v", 0, 2, 1).await;
        pool.snapshot("v", "s1").await.unwrap();
        // An overwrite after the snapshot takes a new chunk; the snapshot keeps the old.
        put(&pool, "v", 0, 1, 2).await;
        put(&pool, "other", 0, 4, 3).await;
        assert_eq!(pool.footprint_bytes(&["v"]), 3 * CS);
        assert_eq!(pool.footprint_bytes(&["other"]), 4 * CS);
        assert_eq!(pool.footprint_bytes(&["v", "other", "v"]), 7 * CS);
        assert_eq!(pool.footprint_bytes(&["missing"]), 0);
        // A clone of v's snapshot writes into its own layer, below the snapshot: not v's.
        pool.clone_volume("v@s1", "c", None).await.unwrap();
        put(&pool, "c", 0, 1, 4).await;
        assert_eq!(pool.footprint_bytes(&["v"]), 3 * CS);
        assert_eq!(pool.footprint_bytes(&["c"]), CS, "c stops at v's snapshot");
        assert_eq!(pool.footprint_bytes(&["v", "c"]), 4 * CS);
        // Deleting the snapshot leaves a ghost that v and c still read through: it stays
        // v's, counted once.
        pool.delete_snapshot("v", "s1").await.unwrap();
        assert_eq!(pool.footprint_bytes(&["v", "c"]), 4 * CS);
        assert_eq!(pool.status().used_bytes, 8 * CS);
    }
}
