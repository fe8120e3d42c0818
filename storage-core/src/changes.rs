//! What the reconcile pass must look at again: the data entries whose unique/shared
//! standing may have changed since it last ran.
//!
//! A view's `unique` figure counts the data entries only it can see. A mapping change at
//! `(layer, index)` can change who sees the entries at `index` of that layer and of its
//! ancestors (it hides or uncovers them for the views below `layer`), and nothing else:
//! descendants and other branches look at their own entries first. So each such record notes
//! those entries, with the view each was counted unique to before its first change, and
//! the pass re-examines only them and moves each count from the old view to the new one: work
//! proportional to what changed, not to the pool (docs/decisions/0015-checkpoint-replica.md).
//! Records that change more than entries (views and layers coming, going or resized, merges)
//! make the next pass a full one.

use std::collections::HashMap;

use crate::layer::{LayerId, Meta, Rec, ViewId, HOLE};

/// More noted entries than this and the next pass is a full one instead (bounds the memory a
/// long burst of writes between passes can take: 16 M entries, about 0.5 GiB).
const MAX_NOTED: usize = 1 << 24;

/// Who can see one entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Seen {
    /// No data entry there, or one seen by several views.
    NotUnique,
    /// A data entry only this view sees.
    Unique(ViewId),
    /// A data entry no view sees (reclaimable): its physical chunk.
    Garbage(u64),
}

impl Seen {
    pub(crate) fn unique_to(self) -> Option<ViewId> {
        match self {
            Seen::Unique(v) => Some(v),
            _ => None,
        }
    }
}

/// Who can see the entry at `index` of `layer`.
pub(crate) fn seen(meta: &Meta, layer: LayerId, index: u64, viewers: &mut Vec<ViewId>) -> Seen {
    let Some(&p) = meta.layers.get(&layer).and_then(|l| l.map.get(&index)) else {
        return Seen::NotUnique;
    };
    if p == HOLE {
        return Seen::NotUnique;
    }
    viewers.clear();
    meta.viewers(layer, index, 2, viewers);
    match viewers.as_slice() {
        [] => Seen::Garbage(p),
        [v] => Seen::Unique(*v),
        _ => Seen::NotUnique,
    }
}

/// Entries changed since the last pass, and whether it must be a full one.
pub(crate) struct Changes {
    /// `(layer, index)` -> the view it was counted unique to (`None`: counted to none).
    pub(crate) noted: HashMap<(LayerId, u64), Option<ViewId>>,
    /// The next pass must recount everything.
    pub(crate) structural: bool,
}

impl Changes {
    /// Unique figures are not stored, so the first pass after open is a full one.
    pub(crate) fn new() -> Changes {
        Changes {
            noted: HashMap::new(),
            structural: true,
        }
    }

    /// Note what `rec` may change, before it is applied to `meta`.
    pub(crate) fn note(&mut self, meta: &Meta, rec: &Rec) {
        let (layer, index) = match rec {
            Rec::Map { layer, index, .. }
            | Rec::Hole { layer, index }
            | Rec::Clear { layer, index } => (*layer, *index),
            // Neither changes who sees what.
            Rec::Rename { .. } | Rec::SetGuarantee { .. } | Rec::ReceiveProgress { .. } => return,
            _ => {
                self.structural = true;
                return;
            }
        };
        if self.structural {
            return;
        }
        if self.noted.len() >= MAX_NOTED {
            self.structural = true;
            self.noted = HashMap::new();
            return;
        }
        let mut viewers = Vec::with_capacity(2);
        let mut cur = Some(layer);
        while let Some(id) = cur {
            let Some(l) = meta.layers.get(&id) else { break };
            // The changed layer's own entry, and every ancestor's data entry at `index`.
            if id == layer || l.map.get(&index).is_some_and(|&p| p != HOLE) {
                self.noted
                    .entry((id, index))
                    .or_insert_with(|| seen(meta, id, index, &mut viewers).unique_to());
            }
            cur = l.parent;
        }
    }
}
