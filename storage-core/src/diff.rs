//! Deltas between snapshots: which chunks differ, found from the layer tree.
//!
//! A snapshot is a frozen layer, and everything a later snapshot of the same line (a later
//! snapshot of the volume, or of a clone of it) changed since is an entry of some layer on
//! the path from the later snapshot's layer up to, not including, the earlier one's: a chunk
//! nobody wrote, unmapped or merged in between resolves through the earlier snapshot's layer
//! for both. So the delta is the union of the keys of the layers on that path, found in time
//! proportional to those entries, never to the volume size (no map is scanned whole, no data
//! is read). docs/decisions/0017-replication-engine.md.

use std::collections::HashMap;

use crate::engine::State;
use crate::layer::{LayerId, ViewId, ViewKind, HOLE};
use crate::{Pool, Result, StorageError};

/// Names a snapshot: `volume@snapshot`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SnapshotRef {
    /// Volume the snapshot belongs to.
    pub volume: String,
    /// Snapshot name.
    pub snapshot: String,
}

impl SnapshotRef {
    /// `volume@snapshot`.
    pub fn new(volume: impl Into<String>, snapshot: impl Into<String>) -> SnapshotRef {
        SnapshotRef {
            volume: volume.into(),
            snapshot: snapshot.into(),
        }
    }
}

impl std::fmt::Display for SnapshotRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}", self.volume, self.snapshot)
    }
}

/// One logical chunk whose contents differ between two snapshots.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkDelta {
    /// Logical chunk index.
    pub index: u64,
    /// Whether the chunk holds data in `to` (`false`: it reads as zeros there).
    pub data: bool,
}

/// What changed between two snapshots ([`Pool::snapshot_delta`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotDelta {
    /// The later snapshot.
    pub to: SnapshotRef,
    /// Its uuid.
    pub to_uuid: uuid::Uuid,
    /// The earlier snapshot; `None` for a full send (the delta from an all-zero volume).
    pub from: Option<SnapshotRef>,
    /// Its uuid.
    pub from_uuid: Option<uuid::Uuid>,
    /// Size of `to` in bytes.
    pub size_bytes: u64,
    /// Logical block size of `to`.
    pub block_size: u32,
    /// Chunk size of the pool.
    pub chunk_size: u32,
    /// Chunks that differ, ascending by index.
    pub changes: Vec<ChunkDelta>,
}

/// A run of blocks that changed between two snapshots (the changed-block API: what VMware
/// CBT's QueryChangedDiskAreas or `rbd diff` report).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChangedRange {
    /// First logical block.
    pub lba: u64,
    /// Number of blocks.
    pub blocks: u64,
    /// Whether the range holds data in the later snapshot (`false`: it reads as zeros).
    pub data: bool,
}

impl SnapshotDelta {
    /// Bytes of logical chunk `index` in `to` (the chunk size, less for a last chunk that
    /// the volume size cuts short).
    pub fn chunk_len(&self, index: u64) -> u32 {
        chunk_len(self.size_bytes, self.chunk_size, index)
    }

    /// The changes as block ranges: consecutive chunks with the same `data` flag merged,
    /// the last one cut at the end of the volume. Ascending, never overlapping.
    pub fn changed_ranges(&self) -> Vec<ChangedRange> {
        let bs = u64::from(self.block_size.max(1));
        let per_chunk = u64::from(self.chunk_size) / bs;
        let total = self.size_bytes / bs;
        let mut out: Vec<ChangedRange> = Vec::new();
        for c in &self.changes {
            let lba = c.index * per_chunk;
            if lba >= total {
                continue;
            }
            let blocks = per_chunk.min(total - lba);
            match out.last_mut() {
                Some(r) if r.data == c.data && r.lba + r.blocks == lba => r.blocks += blocks,
                _ => out.push(ChangedRange {
                    lba,
                    blocks,
                    data: c.data,
                }),
            }
        }
        out
    }
}

/// Bytes of chunk `index` of a volume of `size` bytes.
pub(crate) fn chunk_len(size: u64, chunk_size: u32, index: u64) -> u32 {
    let cs = u64::from(chunk_size);
    let start = index.saturating_mul(cs);
    size.saturating_sub(start).min(cs) as u32
}

/// (view id, layer, size) of `volume@snapshot`.
pub(crate) fn find_snapshot(st: &State, r: &SnapshotRef) -> Result<(ViewId, LayerId, u64)> {
    let vol = st
        .meta
        .find_volume(&r.volume)
        .ok_or_else(|| StorageError::NotFound(format!("volume '{}' not found", r.volume)))?;
    let id = st
        .meta
        .find_snapshot(vol, &r.snapshot)
        .ok_or_else(|| StorageError::NotFound(format!("snapshot '{r}' not found")))?;
    let v = st
        .meta
        .views
        .get(&id)
        .ok_or_else(|| StorageError::NotFound(format!("snapshot '{r}' not found")))?;
    match v.kind {
        ViewKind::Snapshot { layer, .. } => Ok((id, layer, v.size)),
        _ => Err(StorageError::NotFound(format!("snapshot '{r}' not found"))),
    }
}

/// The entries of the layers from `top` up to (excluding) `stop`, each index with the entry
/// nearest `top` (what `top` resolves to within the path). `stop = None` walks to the root.
/// `None` when `stop` is not an ancestor of `top`.
fn path_entries(st: &State, top: LayerId, stop: Option<LayerId>) -> Option<HashMap<u64, u64>> {
    let mut seen: HashMap<u64, u64> = HashMap::new();
    let mut cur = Some(top);
    while let Some(id) = cur {
        if Some(id) == stop {
            return Some(seen);
        }
        let l = st.meta.layers.get(&id)?;
        seen.reserve(l.map.len());
        for (&i, &e) in &l.map {
            seen.entry(i).or_insert(e);
        }
        cur = l.parent;
    }
    stop.is_none().then_some(seen)
}

impl Pool {
    /// What changed from snapshot `from` to snapshot `to`, ascending by chunk index.
    ///
    /// `from` must be an ancestor of `to` in the layer tree: an earlier snapshot of the same
    /// volume, the origin snapshot of a clone `to` belongs to, or an earlier snapshot of that
    /// origin; otherwise (another line, a later snapshot, a rollback or split between them)
    /// the error is [`StorageError::NotAncestor`] and the caller sends `to` in full. `None`
    /// lists every chunk `to` holds data in (a full send).
    ///
    /// Cost: proportional to the entries of the layers between the two snapshots (for a
    /// full send, of all of `to`'s layers), never to the volume size. Chunks rewritten with
    /// the same physical chunk they had in `from` (none in practice) are left out. The
    /// metadata lock is held shared while the layers are walked.
    pub fn snapshot_delta(
        &self,
        from: Option<&SnapshotRef>,
        to: &SnapshotRef,
    ) -> Result<SnapshotDelta> {
        self.inner.check_open()?;
        let st = self.inner.state.read();
        let (to_id, to_layer, to_size) = find_snapshot(&st, to)?;
        let tv = st
            .meta
            .views
            .get(&to_id)
            .ok_or_else(|| StorageError::NotFound(format!("snapshot '{to}' not found")))?;
        let to_n = st.meta.chunks(to_size);
        let mut changes: Vec<ChunkDelta>;
        let mut from_uuid = None;
        match from {
            None => {
                let entries = path_entries(&st, to_layer, None).ok_or_else(|| {
                    StorageError::Corrupt(format!("snapshot '{to}': broken layer chain"))
                })?;
                changes = entries
                    .into_iter()
                    .filter(|&(i, e)| i < to_n && e != HOLE)
                    .map(|(index, _)| ChunkDelta { index, data: true })
                    .collect();
            }
            Some(f) => {
                let (from_id, from_layer, from_size) = find_snapshot(&st, f)?;
                from_uuid = st.meta.views.get(&from_id).map(|v| v.uuid);
                let entries = path_entries(&st, to_layer, Some(from_layer)).ok_or_else(|| {
                    StorageError::NotAncestor(format!(
                        "snapshot '{f}' is not an ancestor of '{to}' (another volume's, a later \
                         one, or separated by a rollback or split): send '{to}' in full"
                    ))
                })?;
                let from_n = st.meta.chunks(from_size);
                // What `from` reads at `i`: nothing beyond its own end.
                let from_res = |i: u64| {
                    if i < from_n {
                        st.meta.resolve(from_layer, i)
                    } else {
                        None
                    }
                };
                changes = Vec::with_capacity(entries.len());
                for (&i, &e) in &entries {
                    if i >= to_n {
                        continue;
                    }
                    let now = (e != HOLE).then_some(e);
                    if now != from_res(i) {
                        changes.push(ChunkDelta {
                            index: i,
                            data: now.is_some(),
                        });
                    }
                }
                // A range `to` grew into reads zeros in `from`; what `from`'s layers hold
                // there (from before a shrink) shows through in `to` unless the path hides
                // it, which a grow does. Checked all the same: only when `to` is larger,
                // over the entries of `from`'s layers in the grown range.
                if to_n > from_n {
                    let mut extra = std::collections::BTreeSet::new();
                    let mut cur = Some(from_layer);
                    while let Some(id) = cur {
                        let Some(l) = st.meta.layers.get(&id) else {
                            break;
                        };
                        extra.extend(
                            l.map
                                .keys()
                                .copied()
                                .filter(|&i| i >= from_n && i < to_n && !entries.contains_key(&i)),
                        );
                        cur = l.parent;
                    }
                    for i in extra {
                        if st.meta.resolve(from_layer, i).is_some() {
                            changes.push(ChunkDelta {
                                index: i,
                                data: true,
                            });
                        }
                    }
                }
            }
        }
        changes.sort_unstable_by_key(|c| c.index);
        Ok(SnapshotDelta {
            to: to.clone(),
            to_uuid: tv.uuid,
            from: from.cloned(),
            from_uuid,
            size_bytes: to_size,
            block_size: tv.block_size,
            chunk_size: self.inner.layout.chunk_size as u32,
            changes,
        })
    }

    /// Reads chunk `index` of snapshot `snap`: the chunk size, shorter for a last chunk the
    /// volume size cuts short; zeros where the snapshot holds no data. Fails with `NotFound`
    /// if the snapshot is gone (also when it is deleted while the chunk is read: the read is
    /// checked against the metadata afterwards, so freed and reused space is never returned
    /// as the snapshot's).
    pub async fn read_snapshot_chunk(
        &self,
        snap: &SnapshotRef,
        index: u64,
    ) -> Result<bytes::Bytes> {
        self.inner.check_open()?;
        let cs = self.inner.layout.chunk_size;
        let (id, layer, size, phys) = {
            let st = self.inner.state.read();
            let (id, layer, size) = find_snapshot(&st, snap)?;
            if index >= st.meta.chunks(size) {
                return Err(StorageError::InvalidArgument(format!(
                    "chunk {index} is beyond the end of snapshot '{snap}' ({size} bytes)"
                )));
            }
            (id, layer, size, st.meta.resolve(layer, index))
        };
        let len = chunk_len(size, cs as u32, index) as usize;
        let Some(p) = phys else {
            return Ok(self.inner.zero_chunk.slice(..len));
        };
        let mut data = self
            .inner
            .io
            .read(self.inner.layout.chunk_offset(p), cs as usize)
            .await?;
        // The snapshot holds its chunks for as long as it exists; the same view still
        // resolving to the same chunk means nothing freed it meanwhile.
        let st = self.inner.state.read();
        let still = st.meta.views.get(&id).is_some_and(|v| v.layer() == layer)
            && st.meta.resolve(layer, index) == Some(p);
        if !still {
            return Err(StorageError::NotFound(format!(
                "snapshot '{snap}' was deleted while it was read"
            )));
        }
        data.truncate(len);
        Ok(bytes::Bytes::from(data))
    }
}
