//! The layer tree: Model B "layered ownership" (docs/decisions/0001-clone-engine.md).
//!
//! Every physical chunk is owned by exactly one layer. A live volume writes into its private
//! top (leaf) layer; a snapshot freezes the top; a clone is a new leaf under a frozen layer.
//! Reads resolve the top first, then ancestors. Layers without a view are "ghosts": with no
//! children they are freed (cascading upward), with one child they are merged into it, with
//! several they stay until children go.
//!
//! All mutations go through [`Meta::apply`] with a [`Rec`] so that the live path and journal
//! replay run the same deterministic code.

use std::collections::BTreeMap;

use crate::chunkmap::ChunkMap;

use crate::{Guarantee, ReceiveBase, ReceiveSpec};

/// Layer identifier (never reused).
pub(crate) type LayerId = u64;
/// View identifier (volume or snapshot, never reused).
pub(crate) type ViewId = u64;
/// Map value meaning "explicitly unmapped here" (hides ancestor data).
pub(crate) const HOLE: u64 = u64::MAX;

/// One layer of the tree.
#[derive(Clone, Debug, Default)]
pub(crate) struct Layer {
    pub(crate) parent: Option<LayerId>,
    pub(crate) children: Vec<LayerId>,
    pub(crate) view: Option<ViewId>,
    pub(crate) frozen: bool,
    /// Logical chunk index -> physical chunk, or [`HOLE`].
    pub(crate) map: ChunkMap,
    /// Number of data (non-hole) entries: chunks this layer owns.
    pub(crate) owned: u64,
    /// Not persisted: LSN of the newest record that merged a parent layer into this one (0
    /// when none did since the pool was opened; replayed records are durable before the pool
    /// serves). Until that record is durable, a crash undoes the merge and brings back a view
    /// (a deleted snapshot or clone, a volume before its rollback) that shares the merged
    /// chunks, so an in-place write into this layer waits for it first (`Volume::write_chunk`).
    pub(crate) merged_lsn: u64,
}

/// What a view is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ViewKind {
    /// A live, writable volume whose top leaf layer is `top`.
    Volume { top: LayerId, guarantee: Guarantee },
    /// A read-only snapshot of volume `volume`, attached to frozen layer `layer`.
    Snapshot { layer: LayerId, volume: ViewId },
    /// A receive in progress (docs/decisions/0017-replication-engine.md): hidden, writable
    /// leaf `layer` under the base snapshot's layer (or a root), holding what was received
    /// so far. Its spec and resume point are in [`Meta::staging`]. Not a volume nor a
    /// snapshot: listed by neither, but its chunks count in the pool like any layer's.
    Staging { layer: LayerId },
}

/// What a staging view receives, beside its [`View`] (name = replica volume, uuid = the
/// sender's snapshot uuid, size and block size of the snapshot).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Staged {
    pub(crate) spec: ReceiveSpec,
    /// Durable resume point (the last `ReceiveProgress`).
    pub(crate) next_index: u64,
}

/// A user-visible name over a layer.
#[derive(Clone, Debug)]
pub(crate) struct View {
    pub(crate) name: String,
    pub(crate) uuid: uuid::Uuid,
    pub(crate) size: u64,
    pub(crate) block_size: u32,
    pub(crate) created: u64,
    pub(crate) origin: Option<String>,
    pub(crate) kind: ViewKind,
    /// Derived and maintained: logical chunks below the size that resolve to data.
    pub(crate) mapped: u64,
    /// Derived and maintained: `chunks(size) - owned(top)` for full volumes, else 0.
    pub(crate) reserved: u64,
    /// Reconciled: chunks reachable only through this view.
    pub(crate) unique: u64,
}

impl View {
    pub(crate) fn layer(&self) -> LayerId {
        match self.kind {
            ViewKind::Volume { top, .. } => top,
            ViewKind::Snapshot { layer, .. } | ViewKind::Staging { layer } => layer,
        }
    }
    pub(crate) fn is_volume(&self) -> bool {
        matches!(self.kind, ViewKind::Volume { .. })
    }
}

/// A journalled metadata operation. IDs and physical chunks are chosen by the live path and
/// recorded so replay is deterministic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Rec {
    CreateVolume {
        view: ViewId,
        layer: LayerId,
        name: String,
        uuid: uuid::Uuid,
        size: u64,
        block_size: u32,
        full: bool,
        created: u64,
    },
    /// Map data chunk `phys` at `index` of `layer`.
    Map {
        layer: LayerId,
        index: u64,
        phys: u64,
    },
    /// Put a hole at `index` (frees owned data there).
    Hole {
        layer: LayerId,
        index: u64,
    },
    /// Remove the entry at `index` (frees owned data there).
    Clear {
        layer: LayerId,
        index: u64,
    },
    Snapshot {
        vol: ViewId,
        snap: ViewId,
        name: String,
        uuid: uuid::Uuid,
        new_top: LayerId,
        created: u64,
    },
    /// Clone of snapshot `snap` as a new volume on new leaf `layer`.
    CloneSnap {
        snap: ViewId,
        view: ViewId,
        layer: LayerId,
        name: String,
        uuid: uuid::Uuid,
        full: bool,
        created: u64,
        origin: String,
    },
    /// Clone of live volume `vol`: its top becomes a ghost with children `new_top` (vol) and `layer` (clone).
    CloneLive {
        vol: ViewId,
        new_top: LayerId,
        view: ViewId,
        layer: LayerId,
        name: String,
        uuid: uuid::Uuid,
        full: bool,
        created: u64,
        origin: String,
    },
    DeleteView {
        view: ViewId,
    },
    Rename {
        view: ViewId,
        name: String,
    },
    Resize {
        view: ViewId,
        size: u64,
    },
    SetGuarantee {
        view: ViewId,
        full: bool,
    },
    Rollback {
        vol: ViewId,
        snap: ViewId,
        new_top: LayerId,
    },
    /// Split finished: `layer` (a volume top that owns all it resolves) leaves its parent.
    Detach {
        layer: LayerId,
    },
    /// A receive starts: staging view `staging` on new leaf `layer`, under the layer of
    /// snapshot `base` (the increment's base, or a clone's origin), or a root when `None`.
    /// Ancestor data in a range the snapshot grew into is hidden by holes, as a grow does.
    ReceiveBegin {
        staging: ViewId,
        layer: LayerId,
        base: Option<ViewId>,
        spec: ReceiveSpec,
        created: u64,
    },
    /// Everything below `next_index` is staged (the resume point).
    ReceiveProgress {
        staging: ViewId,
        next_index: u64,
    },
    /// A receive completes, atomically: the staging layer is frozen as snapshot `snap` of
    /// volume `vol` and `vol` gets the new empty top `new_top` under it. For an increment
    /// `vol` exists and its old top is dropped (as a rollback does); for a full stream or a
    /// clone's increment it is created (uuid `vol_uuid`).
    ReceiveCommit {
        staging: ViewId,
        snap: ViewId,
        vol: ViewId,
        new_top: LayerId,
        vol_uuid: uuid::Uuid,
        created: u64,
    },
}

/// The whole metadata state.
#[derive(Clone, Debug)]
pub(crate) struct Meta {
    pub(crate) chunk_size: u64,
    pub(crate) layers: BTreeMap<LayerId, Layer>,
    pub(crate) views: BTreeMap<ViewId, View>,
    /// Spec and resume point of every staging view (`ViewKind::Staging`), by view id.
    pub(crate) staging: BTreeMap<ViewId, Staged>,
    pub(crate) next_id: u64,
    /// Derived: Σ owned.
    pub(crate) used: u64,
    /// Derived: Σ reserved over full volumes.
    pub(crate) reserved: u64,
    /// Not persisted: changes whenever a record may change what some layer's *ancestors*
    /// resolve to (anything but a mapping change in a leaf layer). Per-volume resolution
    /// caches ([`crate::chaincache`]) are valid only while it stays the same.
    pub(crate) epoch: u64,
    /// Not persisted: the LSN the record being applied gets on the live path
    /// (`State::log` sets it; 0 during replay). A merge stamps it into [`Layer::merged_lsn`].
    pub(crate) applying_lsn: u64,
}

type ApplyResult = std::result::Result<(), String>;

impl Meta {
    pub(crate) fn new(chunk_size: u64) -> Meta {
        Meta {
            chunk_size,
            layers: BTreeMap::new(),
            views: BTreeMap::new(),
            staging: BTreeMap::new(),
            next_id: 1,
            used: 0,
            reserved: 0,
            epoch: 0,
            applying_lsn: 0,
        }
    }

    /// Allocate an id (the live path records it; replay bumps `next_id` past it).
    pub(crate) fn new_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    fn see_id(&mut self, id: u64) {
        if id >= self.next_id {
            self.next_id = id + 1;
        }
    }

    /// Number of logical chunks of a view of `size` bytes.
    pub(crate) fn chunks(&self, size: u64) -> u64 {
        size.div_ceil(self.chunk_size)
    }

    /// Resolve `index` starting at `layer`: `Some(phys)` for data, `None` for zeros.
    pub(crate) fn resolve(&self, layer: LayerId, index: u64) -> Option<u64> {
        self.resolve_counting(layer, index).0
    }

    /// Like [`Meta::resolve`], also returning how many layers were probed.
    pub(crate) fn resolve_counting(&self, layer: LayerId, index: u64) -> (Option<u64>, usize) {
        let mut cur = Some(layer);
        let mut probes = 0;
        while let Some(id) = cur {
            let Some(l) = self.layers.get(&id) else {
                return (None, probes);
            };
            probes += 1;
            if let Some(&e) = l.map.get(&index) {
                return ((e != HOLE).then_some(e), probes);
            }
            cur = l.parent;
        }
        (None, probes)
    }

    /// Resolve through the ancestors of `layer` only (what the layer would see without its own map).
    pub(crate) fn resolve_parent(&self, layer: LayerId, index: u64) -> Option<u64> {
        self.layers
            .get(&layer)
            .and_then(|l| l.parent)
            .and_then(|p| self.resolve(p, index))
    }

    pub(crate) fn find_volume(&self, name: &str) -> Option<ViewId> {
        self.views
            .iter()
            .find(|(_, v)| v.is_volume() && v.name == name)
            .map(|(&id, _)| id)
    }

    pub(crate) fn find_snapshot(&self, vol: ViewId, name: &str) -> Option<ViewId> {
        self.views
            .iter()
            .find(|(_, v)| {
                matches!(v.kind, ViewKind::Snapshot { volume, .. } if volume == vol)
                    && v.name == name
            })
            .map(|(&id, _)| id)
    }

    pub(crate) fn snapshots_of(&self, vol: ViewId) -> Vec<ViewId> {
        self.views
            .iter()
            .filter(|(_, v)| matches!(v.kind, ViewKind::Snapshot { volume, .. } if volume == vol))
            .map(|(&id, _)| id)
            .collect()
    }

    /// Count the logical chunks below `size` that `layer` resolves to data (O(entries on the path)).
    pub(crate) fn count_mapped(&self, layer: LayerId, size: u64) -> u64 {
        let n = self.chunks(size);
        let mut seen: std::collections::HashSet<u64> = std::collections::HashSet::new();
        let mut count = 0;
        let mut cur = Some(layer);
        while let Some(id) = cur {
            let Some(l) = self.layers.get(&id) else { break };
            for (&i, &e) in &l.map {
                if i < n && seen.insert(i) && e != HOLE {
                    count += 1;
                }
            }
            cur = l.parent;
        }
        count
    }

    fn view_reserved(&self, v: &View) -> u64 {
        match v.kind {
            ViewKind::Volume {
                top,
                guarantee: Guarantee::Full,
            } => {
                let owned = self.layers.get(&top).map_or(0, |l| l.owned);
                self.chunks(v.size).saturating_sub(owned)
            }
            _ => 0,
        }
    }

    /// Recompute one view's reservation and the pool total.
    fn refresh_reserved(&mut self, view: ViewId) {
        if let Some(v) = self.views.get(&view) {
            let new = self.view_reserved(v);
            let old = v.reserved;
            self.reserved = self.reserved - old + new;
            if let Some(v) = self.views.get_mut(&view) {
                v.reserved = new;
            }
        }
    }

    fn refresh_mapped(&mut self, view: ViewId) {
        if let Some(v) = self.views.get(&view) {
            let m = self.count_mapped(v.layer(), v.size);
            if let Some(v) = self.views.get_mut(&view) {
                v.mapped = m;
            }
        }
    }

    /// Recompute every derived counter from the maps (used after loading a checkpoint).
    pub(crate) fn rebuild_derived(&mut self) {
        self.used = 0;
        let ids: Vec<LayerId> = self.layers.keys().copied().collect();
        for id in ids {
            if let Some(l) = self.layers.get_mut(&id) {
                l.owned = l.map.values().filter(|&&e| e != HOLE).count() as u64;
                self.used += l.owned;
            }
        }
        self.reserved = 0;
        let vids: Vec<ViewId> = self.views.keys().copied().collect();
        for v in vids {
            if let Some(view) = self.views.get_mut(&v) {
                view.reserved = 0;
            }
            self.refresh_mapped(v);
            self.refresh_reserved(v);
        }
    }

    fn layer_mut(&mut self, id: LayerId) -> Result<&mut Layer, String> {
        self.layers
            .get_mut(&id)
            .ok_or_else(|| format!("layer {id} does not exist"))
    }

    fn new_layer(
        &mut self,
        id: LayerId,
        parent: Option<LayerId>,
        view: Option<ViewId>,
    ) -> ApplyResult {
        if self.layers.contains_key(&id) {
            return Err(format!("layer {id} exists already"));
        }
        self.see_id(id);
        if let Some(p) = parent {
            self.layer_mut(p)?.children.push(id);
        }
        self.layers.insert(
            id,
            Layer {
                parent,
                view,
                ..Layer::default()
            },
        );
        Ok(())
    }

    /// Change one map entry and keep owned/used/mapped/reserved exact. Returns freed data.
    fn set_entry(
        &mut self,
        layer: LayerId,
        index: u64,
        new: Option<u64>,
        freed: &mut Vec<u64>,
    ) -> ApplyResult {
        let view = self
            .layers
            .get(&layer)
            .ok_or_else(|| format!("layer {layer} does not exist"))?
            .view;
        let watch = view
            .and_then(|v| self.views.get(&v))
            .is_some_and(|v| index < self.chunks(v.size));
        let before = watch && self.resolve(layer, index).is_some();
        let l = self.layer_mut(layer)?;
        let old = match new {
            Some(e) => l.map.insert(index, e),
            None => l.map.remove(&index),
        };
        let mut owned_delta: i64 = 0;
        if let Some(o) = old {
            if o != HOLE {
                owned_delta -= 1;
                freed.push(o);
            }
        }
        if matches!(new, Some(e) if e != HOLE) {
            owned_delta += 1;
        }
        l.owned = (l.owned as i64 + owned_delta) as u64;
        self.used = (self.used as i64 + owned_delta) as u64;
        if let Some(v) = view {
            if watch {
                let after = self.resolve(layer, index).is_some();
                if let Some(vw) = self.views.get_mut(&v) {
                    if after && !before {
                        vw.mapped += 1;
                    } else if before && !after {
                        vw.mapped = vw.mapped.saturating_sub(1);
                    }
                }
            }
            self.refresh_reserved(v);
        }
        Ok(())
    }

    /// Apply one record. Errors mean the record does not fit the state (corrupt journal).
    pub(crate) fn apply(&mut self, rec: &Rec, freed: &mut Vec<u64>) -> ApplyResult {
        // A leaf has no descendants, so a mapping change in it cannot change what any
        // layer's ancestors resolve to; everything else (new layers, merges, deletes, reclaim
        // of a ghost's entries, rollback, detach) moves the epoch. The layer count catches a
        // leaf mapping change that collected layers.
        let leaf = match rec {
            Rec::Map { layer, .. } | Rec::Hole { layer, .. } | Rec::Clear { layer, .. } => self
                .layers
                .get(layer)
                .is_some_and(|l| l.children.is_empty()),
            _ => false,
        };
        let nlayers = self.layers.len();
        let r = self.apply_rec(rec, freed);
        if !leaf || self.layers.len() != nlayers || r.is_err() {
            self.epoch = self.epoch.wrapping_add(1);
        }
        r
    }

    fn apply_rec(&mut self, rec: &Rec, freed: &mut Vec<u64>) -> ApplyResult {
        match rec {
            Rec::CreateVolume {
                view,
                layer,
                name,
                uuid,
                size,
                block_size,
                full,
                created,
            } => {
                if self.views.contains_key(view) {
                    return Err(format!("view {view} exists already"));
                }
                self.see_id(*view);
                self.new_layer(*layer, None, Some(*view))?;
                let guarantee = if *full {
                    Guarantee::Full
                } else {
                    Guarantee::None
                };
                self.views.insert(
                    *view,
                    View {
                        name: name.clone(),
                        uuid: *uuid,
                        size: *size,
                        block_size: *block_size,
                        created: *created,
                        origin: None,
                        kind: ViewKind::Volume {
                            top: *layer,
                            guarantee,
                        },
                        mapped: 0,
                        reserved: 0,
                        unique: 0,
                    },
                );
                self.refresh_reserved(*view);
            }
            Rec::Map { layer, index, phys } => {
                if *phys == HOLE {
                    return Err("map of the hole marker".into());
                }
                // Replacing data is legal: a merge may have moved the old chunk into this layer
                // while a first write was copying it; the old chunk is then freed.
                self.set_entry(*layer, *index, Some(*phys), freed)?;
            }
            Rec::Hole { layer, index } => self.set_entry(*layer, *index, Some(HOLE), freed)?,
            Rec::Clear { layer, index } => {
                self.set_entry(*layer, *index, None, freed)?;
                self.collect(*layer, freed)?;
            }
            Rec::Snapshot {
                vol,
                snap,
                name,
                uuid,
                new_top,
                created,
            } => {
                let v = self
                    .views
                    .get(vol)
                    .ok_or("snapshot of a missing volume")?
                    .clone();
                let ViewKind::Volume { top, guarantee } = v.kind else {
                    return Err("snapshot of a snapshot".into());
                };
                self.see_id(*snap);
                {
                    let t = self.layer_mut(top)?;
                    t.frozen = true;
                    t.view = Some(*snap);
                }
                self.new_layer(*new_top, Some(top), Some(*vol))?;
                self.views.insert(
                    *snap,
                    View {
                        name: name.clone(),
                        uuid: *uuid,
                        size: v.size,
                        block_size: v.block_size,
                        created: *created,
                        origin: None,
                        kind: ViewKind::Snapshot {
                            layer: top,
                            volume: *vol,
                        },
                        mapped: v.mapped,
                        reserved: 0,
                        unique: 0,
                    },
                );
                if let Some(vw) = self.views.get_mut(vol) {
                    vw.kind = ViewKind::Volume {
                        top: *new_top,
                        guarantee,
                    };
                }
                self.refresh_reserved(*vol);
            }
            Rec::CloneSnap {
                snap,
                view,
                layer,
                name,
                uuid,
                full,
                created,
                origin,
            } => {
                let s = self
                    .views
                    .get(snap)
                    .ok_or("clone of a missing snapshot")?
                    .clone();
                let ViewKind::Snapshot { layer: sl, .. } = s.kind else {
                    return Err("clone source is not a snapshot".into());
                };
                self.add_clone(sl, &s, *view, *layer, name, *uuid, *full, *created, origin)?;
            }
            Rec::CloneLive {
                vol,
                new_top,
                view,
                layer,
                name,
                uuid,
                full,
                created,
                origin,
            } => {
                let v = self
                    .views
                    .get(vol)
                    .ok_or("clone of a missing volume")?
                    .clone();
                let ViewKind::Volume { top, guarantee } = v.kind else {
                    return Err("clone source is not a volume".into());
                };
                {
                    let t = self.layer_mut(top)?;
                    t.frozen = true;
                    t.view = None;
                }
                self.new_layer(*new_top, Some(top), Some(*vol))?;
                if let Some(vw) = self.views.get_mut(vol) {
                    vw.kind = ViewKind::Volume {
                        top: *new_top,
                        guarantee,
                    };
                }
                self.refresh_reserved(*vol);
                self.add_clone(top, &v, *view, *layer, name, *uuid, *full, *created, origin)?;
            }
            Rec::DeleteView { view } => {
                let v = self.views.remove(view).ok_or("delete of a missing view")?;
                self.staging.remove(view);
                self.reserved -= v.reserved;
                let l = v.layer();
                self.layer_mut(l)?.view = None;
                self.collect(l, freed)?;
            }
            Rec::Rename { view, name } => {
                self.views
                    .get_mut(view)
                    .ok_or("rename of a missing view")?
                    .name = name.clone();
            }
            Rec::Resize { view, size } => self.resize(*view, *size, freed)?,
            Rec::SetGuarantee { view, full } => {
                let v = self
                    .views
                    .get_mut(view)
                    .ok_or("guarantee of a missing view")?;
                let ViewKind::Volume { top, .. } = v.kind else {
                    return Err("guarantee on a snapshot".into());
                };
                let guarantee = if *full {
                    Guarantee::Full
                } else {
                    Guarantee::None
                };
                v.kind = ViewKind::Volume { top, guarantee };
                self.refresh_reserved(*view);
            }
            Rec::Rollback { vol, snap, new_top } => {
                let s = self
                    .views
                    .get(snap)
                    .ok_or("rollback to a missing snapshot")?
                    .clone();
                let v = self
                    .views
                    .get(vol)
                    .ok_or("rollback of a missing volume")?
                    .clone();
                let (ViewKind::Volume { top, guarantee }, ViewKind::Snapshot { layer: sl, .. }) =
                    (v.kind, s.kind)
                else {
                    return Err("rollback with wrong view kinds".into());
                };
                self.new_layer(*new_top, Some(sl), Some(*vol))?;
                if let Some(vw) = self.views.get_mut(vol) {
                    vw.kind = ViewKind::Volume {
                        top: *new_top,
                        guarantee,
                    };
                    vw.size = s.size;
                    vw.mapped = s.mapped;
                }
                self.layer_mut(top)?.view = None;
                self.collect(top, freed)?;
                self.refresh_reserved(*vol);
            }
            Rec::ReceiveBegin {
                staging,
                layer,
                base,
                spec,
                created,
            } => self.receive_begin(*staging, *layer, *base, spec, *created)?,
            Rec::ReceiveProgress {
                staging,
                next_index,
            } => {
                self.staging
                    .get_mut(staging)
                    .ok_or("progress of a missing receive")?
                    .next_index = *next_index;
            }
            Rec::ReceiveCommit {
                staging,
                snap,
                vol,
                new_top,
                vol_uuid,
                created,
            } => {
                self.receive_commit(*staging, *snap, *vol, *new_top, *vol_uuid, *created, freed)?
            }
            Rec::Detach { layer } => {
                let l = self.layers.get(layer).ok_or("detach of a missing layer")?;
                let parent = l.parent.ok_or("detach of a root layer")?;
                let holes: Vec<u64> = l
                    .map
                    .iter()
                    .filter(|(_, &e)| e == HOLE)
                    .map(|(&i, _)| i)
                    .collect();
                let l = self.layer_mut(*layer)?;
                for i in holes {
                    l.map.remove(&i);
                }
                l.parent = None;
                self.layer_mut(parent)?.children.retain(|c| c != layer);
                if let Some(v) = self.layers.get(layer).and_then(|l| l.view) {
                    self.refresh_mapped(v);
                }
                self.collect(parent, freed)?;
            }
        }
        Ok(())
    }

    /// [`Rec::ReceiveBegin`].
    fn receive_begin(
        &mut self,
        staging: ViewId,
        layer: LayerId,
        base: Option<ViewId>,
        spec: &ReceiveSpec,
        created: u64,
    ) -> ApplyResult {
        if self.views.contains_key(&staging) {
            return Err(format!("view {staging} exists already"));
        }
        let (parent, base_size) = match base {
            None => (None, 0),
            Some(b) => {
                let bv = self.views.get(&b).ok_or("receive on a missing snapshot")?;
                let ViewKind::Snapshot { layer: bl, .. } = bv.kind else {
                    return Err("receive base is not a snapshot".into());
                };
                (Some(bl), bv.size)
            }
        };
        self.see_id(staging);
        self.new_layer(layer, parent, Some(staging))?;
        self.views.insert(
            staging,
            View {
                name: spec.volume.clone(),
                uuid: spec.snapshot_uuid,
                size: spec.size_bytes,
                block_size: spec.block_size,
                created,
                origin: None,
                kind: ViewKind::Staging { layer },
                mapped: 0,
                reserved: 0,
                unique: 0,
            },
        );
        self.staging.insert(
            staging,
            Staged {
                spec: spec.clone(),
                next_index: 0,
            },
        );
        // The received snapshot reads zeros beyond the base's end: hide whatever the
        // ancestors still hold in the grown range (from before a shrink), as a grow does.
        let (old_n, new_n) = (self.chunks(base_size), self.chunks(spec.size_bytes));
        if new_n > old_n {
            let mut hide = std::collections::BTreeSet::new();
            let mut cur = parent;
            while let Some(id) = cur {
                let l = self.layers.get(&id).ok_or("missing ancestor")?;
                hide.extend(l.map.keys().copied().filter(|&i| i >= old_n && i < new_n));
                cur = l.parent;
            }
            for i in hide {
                if self.resolve_parent(layer, i).is_some() {
                    self.layer_mut(layer)?.map.insert(i, HOLE);
                }
            }
        }
        self.refresh_mapped(staging);
        Ok(())
    }

    /// [`Rec::ReceiveCommit`].
    #[allow(clippy::too_many_arguments)]
    fn receive_commit(
        &mut self,
        staging: ViewId,
        snap: ViewId,
        vol: ViewId,
        new_top: LayerId,
        vol_uuid: uuid::Uuid,
        created: u64,
        freed: &mut Vec<u64>,
    ) -> ApplyResult {
        let sv = self
            .views
            .get(&staging)
            .ok_or("commit of a missing receive")?
            .clone();
        let ViewKind::Staging { layer: sl } = sv.kind else {
            return Err("commit of a view that is not a receive".into());
        };
        let staged = self
            .staging
            .get(&staging)
            .ok_or("commit of a receive without spec")?
            .clone();
        if self.views.contains_key(&snap) {
            return Err(format!("view {snap} exists already"));
        }
        // The replica volume: the existing one (its old top goes), or a new one.
        let old_top = match &staged.spec.base {
            ReceiveBase::Snapshot { .. } => {
                let v = self
                    .views
                    .get(&vol)
                    .ok_or("receive into a missing volume")?;
                let ViewKind::Volume { top, .. } = v.kind else {
                    return Err("receive into a view that is not a volume".into());
                };
                Some(top)
            }
            ReceiveBase::New | ReceiveBase::Origin { .. } => {
                if self.views.contains_key(&vol) {
                    return Err(format!("view {vol} exists already"));
                }
                None
            }
        };
        self.views.remove(&staging);
        self.staging.remove(&staging);
        self.see_id(snap);
        self.see_id(vol);
        {
            let l = self.layer_mut(sl)?;
            l.frozen = true;
            l.view = Some(snap);
        }
        self.views.insert(
            snap,
            View {
                name: staged.spec.snapshot.clone(),
                uuid: staged.spec.snapshot_uuid,
                size: sv.size,
                block_size: sv.block_size,
                created,
                origin: None,
                kind: ViewKind::Snapshot {
                    layer: sl,
                    volume: vol,
                },
                mapped: sv.mapped,
                reserved: 0,
                unique: 0,
            },
        );
        self.new_layer(new_top, Some(sl), Some(vol))?;
        match old_top {
            Some(top) => {
                if let Some(vw) = self.views.get_mut(&vol) {
                    if let ViewKind::Volume { guarantee, .. } = vw.kind {
                        vw.kind = ViewKind::Volume {
                            top: new_top,
                            guarantee,
                        };
                    }
                    vw.size = sv.size;
                    vw.mapped = sv.mapped;
                }
                self.layer_mut(top)?.view = None;
                self.collect(top, freed)?;
            }
            None => {
                let origin = match &staged.spec.base {
                    ReceiveBase::Origin {
                        volume, snapshot, ..
                    } => Some(format!("{volume}@{snapshot}")),
                    _ => None,
                };
                self.views.insert(
                    vol,
                    View {
                        name: staged.spec.volume.clone(),
                        uuid: vol_uuid,
                        size: sv.size,
                        block_size: sv.block_size,
                        created,
                        origin,
                        kind: ViewKind::Volume {
                            top: new_top,
                            guarantee: Guarantee::None,
                        },
                        mapped: sv.mapped,
                        reserved: 0,
                        unique: 0,
                    },
                );
            }
        }
        self.refresh_reserved(vol);
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn add_clone(
        &mut self,
        parent: LayerId,
        src: &View,
        view: ViewId,
        layer: LayerId,
        name: &str,
        uuid: uuid::Uuid,
        full: bool,
        created: u64,
        origin: &str,
    ) -> ApplyResult {
        if self.views.contains_key(&view) {
            return Err(format!("view {view} exists already"));
        }
        self.see_id(view);
        self.new_layer(layer, Some(parent), Some(view))?;
        let guarantee = if full {
            Guarantee::Full
        } else {
            Guarantee::None
        };
        self.views.insert(
            view,
            View {
                name: name.to_string(),
                uuid,
                size: src.size,
                block_size: src.block_size,
                created,
                origin: Some(origin.to_string()),
                kind: ViewKind::Volume {
                    top: layer,
                    guarantee,
                },
                mapped: src.mapped,
                reserved: 0,
                unique: 0,
            },
        );
        self.refresh_reserved(view);
        Ok(())
    }

    fn resize(&mut self, view: ViewId, size: u64, freed: &mut Vec<u64>) -> ApplyResult {
        let v = self
            .views
            .get(&view)
            .ok_or("resize of a missing view")?
            .clone();
        let ViewKind::Volume { top, .. } = v.kind else {
            return Err("resize of a snapshot".into());
        };
        let old_n = self.chunks(v.size);
        let new_n = self.chunks(size);
        if new_n < old_n {
            let gone: Vec<u64> = self
                .layers
                .get(&top)
                .ok_or("missing top")?
                .map
                .keys()
                .copied()
                .filter(|&i| i >= new_n)
                .collect();
            for i in gone {
                self.set_entry(top, i, None, freed)?;
            }
        } else if new_n > old_n {
            // Ancestors may still hold data beyond the old end (from before a shrink or a
            // rollback); the grown range must read zeros, so hide it.
            let mut hide = std::collections::BTreeSet::new();
            let mut cur = self.layers.get(&top).and_then(|l| l.parent);
            while let Some(id) = cur {
                let l = self.layers.get(&id).ok_or("missing ancestor")?;
                hide.extend(l.map.keys().copied().filter(|&i| i >= old_n && i < new_n));
                cur = l.parent;
            }
            for i in hide {
                if self.resolve_parent(top, i).is_some()
                    && !self
                        .layers
                        .get(&top)
                        .is_some_and(|l| l.map.contains_key(&i))
                {
                    self.layer_mut(top)?.map.insert(i, HOLE);
                }
            }
        }
        if let Some(vw) = self.views.get_mut(&view) {
            vw.size = size;
        }
        self.refresh_mapped(view);
        self.refresh_reserved(view);
        Ok(())
    }

    /// Garbage-collect a layer that may have lost its view or a child: free it when it has
    /// neither, merge it into its only child when viewless with one child.
    fn collect(&mut self, id: LayerId, freed: &mut Vec<u64>) -> ApplyResult {
        let Some(l) = self.layers.get(&id) else {
            return Ok(());
        };
        if l.view.is_some() {
            return Ok(());
        }
        match l.children.len() {
            0 => {
                let l = self.layers.remove(&id).ok_or("layer vanished")?;
                for &e in l.map.values() {
                    if e != HOLE {
                        freed.push(e);
                    }
                }
                self.used -= l.owned;
                if let Some(p) = l.parent {
                    self.layer_mut(p)?.children.retain(|&c| c != id);
                    self.collect(p, freed)?;
                }
            }
            1 => {
                let child = l.children[0];
                // A child with a view sees nothing beyond its size (a grow hides what its
                // ancestors hold there), and neither does anything below it: entries there are
                // garbage. Moving them down would make the child own chunks beyond its end
                // (shrinking a full volume's reservation) and a later grow would expose them.
                let limit = self
                    .layers
                    .get(&child)
                    .and_then(|c| c.view)
                    .and_then(|v| self.views.get(&v))
                    .map_or(u64::MAX, |v| self.chunks(v.size));
                let l = self.layers.remove(&id).ok_or("layer vanished")?;
                let root = l.parent.is_none();
                let stamp = self.applying_lsn;
                let c = self.layer_mut(child)?;
                let mut freed_n = 0u64;
                let mut moved = 0u64;
                for (i, e) in l.map {
                    if i >= limit {
                        if e != HOLE {
                            freed.push(e);
                            freed_n += 1;
                        }
                        continue;
                    }
                    match c.map.entry(i) {
                        std::collections::hash_map::Entry::Occupied(_) => {
                            if e != HOLE {
                                freed.push(e);
                                freed_n += 1;
                            }
                        }
                        std::collections::hash_map::Entry::Vacant(slot) => {
                            if e != HOLE {
                                slot.insert(e);
                                moved += 1;
                            } else if !root {
                                slot.insert(HOLE);
                            }
                        }
                    }
                }
                c.owned += moved;
                c.parent = l.parent;
                if moved > 0 {
                    c.merged_lsn = c.merged_lsn.max(stamp);
                }
                self.used -= freed_n;
                if let Some(p) = l.parent {
                    for ch in self.layer_mut(p)?.children.iter_mut() {
                        if *ch == id {
                            *ch = child;
                        }
                    }
                }
                if let Some(v) = self.layers.get(&child).and_then(|c| c.view) {
                    self.refresh_reserved(v);
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Views that can see data entry `index` of `layer` (stops counting at `limit`).
    pub(crate) fn viewers(&self, layer: LayerId, index: u64, limit: usize, out: &mut Vec<ViewId>) {
        let Some(l) = self.layers.get(&layer) else {
            return;
        };
        if let Some(v) = l.view {
            if self
                .views
                .get(&v)
                .is_some_and(|vw| index < self.chunks(vw.size))
            {
                out.push(v);
            }
        }
        for &c in &l.children {
            if out.len() >= limit {
                return;
            }
            if self
                .layers
                .get(&c)
                .is_some_and(|cl| !cl.map.contains_key(&index))
            {
                self.viewers(c, index, limit, out);
            }
        }
    }
}
