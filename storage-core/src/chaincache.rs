//! Per-volume resolved index of the layers below a volume's top.
//!
//! A read probes the volume's top layer, then each ancestor until one has an entry, so
//! without help a clone 32 generations deep pays 32 probes per read (about 12 ns each
//! here). What the ancestors of a given top resolve to cannot change while that top stays
//! the volume's top: first writes and unmaps go to the top (a leaf), and merges and reclaim
//! keep what every view sees. A snapshot or rollback gives the volume a new top, so entries
//! are tagged with the top; they are also tagged with [`Meta::epoch`], which every record
//! but a leaf's mapping change moves, so a future record that broke the rule above would
//! cost cache misses, not wrong data. A read that had to walk at least [`MIN_WALK`]
//! ancestors stores its answer here, and the next read of that chunk costs the top probe
//! plus one probe here, at any depth.
//!
//! This is the "resolved index" of docs/decisions/0001-clone-engine.md, built lazily per
//! volume instead of eagerly per frozen layer: an eager flattened map per frozen layer
//! costs O(entries x generations) memory, this costs at most one entry per chunk the
//! volume has read through a deep chain, capped at [`MAX_ENTRIES`] per volume.
//!
//! Concurrency: sharded by chunk index so reads of different chunks rarely meet; callers
//! hold the state lock shared, so `meta` and its epoch cannot change during a lookup.

use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::Mutex;

use crate::chunkmap::ChunkMap;
use crate::layer::{LayerId, Meta, HOLE};

/// Shards per volume (a power of two).
const SHARDS: usize = 64;

/// Walks shorter than this many ancestor probes are not worth an entry.
pub(crate) const MIN_WALK: usize = 2;

/// Entries per volume, at most (16 MiB of keys and values at 16 bytes each, plus table
/// overhead). Past it, deep reads walk again; nothing is evicted.
pub(crate) const MAX_ENTRIES: usize = 1 << 20;

struct Shard {
    top: LayerId,
    epoch: u64,
    map: ChunkMap,
}

/// See the module documentation.
pub(crate) struct ChainCache {
    shards: Vec<Mutex<Shard>>,
    entries: AtomicUsize,
}

impl ChainCache {
    pub(crate) fn new() -> ChainCache {
        ChainCache {
            shards: (0..SHARDS)
                .map(|_| {
                    Mutex::new(Shard {
                        top: 0,
                        epoch: 0,
                        map: ChunkMap::default(),
                    })
                })
                .collect(),
            entries: AtomicUsize::new(0),
        }
    }

    /// What `index` of the volume whose top is `top` reads: `Some(phys)` or `None` for
    /// zeros. Always equal to `meta.resolve(top, index)`.
    pub(crate) fn resolve(&self, meta: &Meta, top: LayerId, index: u64) -> Option<u64> {
        let l = meta.layers.get(&top)?;
        if let Some(&e) = l.map.get(&index) {
            return (e != HOLE).then_some(e);
        }
        let parent = l.parent?;
        // A walk of one ancestor is never cached (`MIN_WALK`): probe it without the shard
        // lock (clones of a gold snapshot read this way).
        let p = meta.layers.get(&parent)?;
        if p.parent.is_none() {
            return p.map.get(&index).copied().filter(|&e| e != HOLE);
        }
        let mut shard = self.shards[(index as usize) & (SHARDS - 1)].lock();
        let current = shard.top == top && shard.epoch == meta.epoch;
        if current {
            if let Some(&e) = shard.map.get(&index) {
                return (e != HOLE).then_some(e);
            }
        }
        let (found, probes) = meta.resolve_counting(parent, index);
        if probes >= MIN_WALK {
            if !current {
                // Stale: another top (rollback, split) or the tree changed. Drop the old
                // table's memory with its entries.
                self.entries.fetch_sub(shard.map.len(), Ordering::Relaxed);
                shard.map = ChunkMap::default();
                shard.top = top;
                shard.epoch = meta.epoch;
            }
            if self.entries.load(Ordering::Relaxed) < MAX_ENTRIES {
                shard.map.insert(index, found.unwrap_or(HOLE));
                self.entries.fetch_add(1, Ordering::Relaxed);
            }
        }
        found
    }

    /// Entries held (for tests and memory figures).
    pub(crate) fn len(&self) -> usize {
        self.entries.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layer::Rec;

    fn apply(m: &mut Meta, rec: Rec) {
        let mut freed = Vec::new();
        m.apply(&rec, &mut freed).expect("apply");
    }

    fn create(m: &mut Meta, view: u64, layer: u64) {
        apply(
            m,
            Rec::CreateVolume {
                view,
                layer,
                name: format!("v{view}"),
                uuid: uuid::Uuid::nil(),
                size: 1 << 30,
                block_size: 512,
                full: false,
                created: 0,
            },
        );
    }

    fn clone_live(m: &mut Meta, vol: u64) -> (u64, u64, u64) {
        let (new_top, view, layer) = (m.new_id(), m.new_id(), m.new_id());
        apply(
            m,
            Rec::CloneLive {
                vol,
                new_top,
                view,
                layer,
                name: format!("c{view}"),
                uuid: uuid::Uuid::nil(),
                full: false,
                created: 0,
                origin: String::new(),
            },
        );
        (new_top, view, layer)
    }

    /// A chain of clones of clones: the cache answers exactly what the walk answers, before
    /// and after writes to the top (no epoch change) and structural changes (epoch change).
    #[test]
    fn agrees_with_the_walk_through_changes() {
        let mut m = Meta::new(65536);
        let v = m.new_id();
        let l = m.new_id();
        create(&mut m, v, l);
        let mut phys = 0u64;
        let mut next = || {
            phys += 1;
            phys
        };
        for i in 0..64 {
            apply(
                &mut m,
                Rec::Map {
                    layer: l,
                    index: i,
                    phys: next(),
                },
            );
        }
        // Ten generations, each writing a few chunks of its own and punching a hole.
        let (mut view, mut top) = (v, l);
        let mut views = vec![(v, l)];
        for g in 0..10u64 {
            let (_, cv, cl) = clone_live(&mut m, view);
            apply(
                &mut m,
                Rec::Map {
                    layer: cl,
                    index: g * 3,
                    phys: next(),
                },
            );
            apply(
                &mut m,
                Rec::Hole {
                    layer: cl,
                    index: g * 3 + 1,
                },
            );
            view = cv;
            top = cl;
            views.push((cv, cl));
        }
        let cache = ChainCache::new();
        let check = |m: &Meta, cache: &ChainCache, top: u64| {
            for i in 0..80 {
                assert_eq!(cache.resolve(m, top, i), m.resolve(top, i), "index {i}");
            }
        };
        check(&m, &cache, top);
        assert!(cache.len() > 0, "a deep chain is cached");
        check(&m, &cache, top); // now from the cache
                                // A write to the top: no epoch change, the top probe answers first.
        let e = m.epoch;
        apply(
            &mut m,
            Rec::Map {
                layer: top,
                index: 5,
                phys: next(),
            },
        );
        assert_eq!(m.epoch, e, "a leaf write keeps the epoch");
        check(&m, &cache, top);
        // Delete a middle volume: its top is freed, ghosts merge; the epoch moves and the
        // cache follows.
        let (mid, _) = views[5];
        apply(&mut m, Rec::DeleteView { view: mid });
        assert_ne!(m.epoch, e);
        check(&m, &cache, top);
        // Delete the origin volume too.
        apply(&mut m, Rec::DeleteView { view: v });
        check(&m, &cache, top);
    }

    #[test]
    fn shallow_reads_are_not_cached() {
        let mut m = Meta::new(65536);
        let v = m.new_id();
        let l = m.new_id();
        create(&mut m, v, l);
        apply(
            &mut m,
            Rec::Map {
                layer: l,
                index: 1,
                phys: 9,
            },
        );
        let (top, _, _) = clone_live(&mut m, v);
        let cache = ChainCache::new();
        assert_eq!(cache.resolve(&m, top, 1), Some(9));
        assert_eq!(cache.resolve(&m, top, 2), None);
        assert_eq!(
            cache.len(),
            0,
            "one ancestor probe is cheaper than an entry"
        );
    }
}
