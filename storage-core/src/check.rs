//! fsck: recompute everything from the layer maps and compare with the maintained state.

use crate::engine::State;
use crate::layer::{ViewKind, HOLE};
use crate::CheckReport;

/// Verify every invariant; never modifies anything.
pub(crate) fn check(st: &State) -> CheckReport {
    let m = &st.meta;
    let mut r = CheckReport {
        layers: m.layers.len(),
        ..CheckReport::default()
    };
    let mut err = |s: String| r.errors.push(s);
    if let Err(e) = crate::checkpoint::validate_links(m) {
        err(e.to_string());
    }
    let total = st.alloc.total();
    let mut seen = vec![false; total as usize];
    let mut used = 0u64;
    let mut owned_total = 0u64;
    for (&id, l) in &m.layers {
        let mut owned = 0;
        for (&i, &p) in &l.map {
            if p == HOLE {
                continue;
            }
            owned += 1;
            if p >= total {
                err(format!("layer {id} index {i}: chunk {p} beyond the pool"));
                continue;
            }
            if seen[p as usize] {
                err(format!(
                    "chunk {p} owned twice (again by layer {id} index {i})"
                ));
            }
            seen[p as usize] = true;
            if !st.alloc.is_set(p) {
                err(format!(
                    "chunk {p} owned by layer {id} but free in the allocator"
                ));
            }
        }
        if owned != l.owned {
            err(format!(
                "layer {id}: owned counter {} but {} data entries",
                l.owned, owned
            ));
        }
        owned_total += owned;
        used += owned;
        if l.view.is_none() && l.children.len() < 2 {
            err(format!(
                "layer {id} has no view and {} children (should have been collected)",
                l.children.len()
            ));
        }
    }
    r.owned_chunks = owned_total;
    if used != m.used {
        err(format!(
            "pool used counter {} but {} chunks owned",
            m.used, used
        ));
    }
    let mut reserved = 0;
    for (&vid, v) in &m.views {
        let mapped = m.count_mapped(v.layer(), v.size);
        if mapped != v.mapped {
            err(format!(
                "view '{}': mapped counter {} but {} chunks resolve to data",
                v.name, v.mapped, mapped
            ));
        }
        let want_res = match v.kind {
            ViewKind::Volume { top, guarantee } => {
                if let Some(l) = m.layers.get(&top) {
                    if l.frozen || !l.children.is_empty() {
                        err(format!(
                            "volume '{}' top layer {top} is frozen or has children",
                            v.name
                        ));
                    }
                    if l.map.keys().any(|&i| i >= m.chunks(v.size)) {
                        err(format!(
                            "volume '{}' top holds entries beyond its size",
                            v.name
                        ));
                    }
                }
                if guarantee == crate::Guarantee::Full {
                    m.chunks(v.size)
                        .saturating_sub(m.layers.get(&top).map_or(0, |l| l.owned))
                } else {
                    0
                }
            }
            ViewKind::Snapshot { layer, volume } => {
                if !m.layers.get(&layer).is_some_and(|l| l.frozen) {
                    err(format!("snapshot '{}' layer {layer} is not frozen", v.name));
                }
                if !m.views.get(&volume).is_some_and(|x| x.is_volume()) {
                    err(format!(
                        "snapshot '{}' (view {vid}) belongs to no volume",
                        v.name
                    ));
                }
                0
            }
            ViewKind::Staging { layer } => {
                match m.layers.get(&layer) {
                    Some(l) if !l.frozen && l.children.is_empty() => {
                        if l.map.keys().any(|&i| i >= m.chunks(v.size)) {
                            err(format!(
                                "receive into '{}' stages entries beyond its size",
                                v.name
                            ));
                        }
                    }
                    _ => err(format!(
                        "receive into '{}': staging layer {layer} is frozen or has children",
                        v.name
                    )),
                }
                0
            }
        };
        if want_res != v.reserved {
            err(format!(
                "view '{}': reserved counter {} but {} expected",
                v.name, v.reserved, want_res
            ));
        }
        reserved += want_res;
    }
    if reserved != m.reserved {
        err(format!(
            "pool reserved counter {} but {} expected",
            m.reserved, reserved
        ));
    }
    if m.used + m.reserved + st.inflight_thin > total {
        err(format!(
            "space invariant broken: used {} + reserved {} > capacity {total}",
            m.used, m.reserved
        ));
    }
    // Unique figures claim to be exact when nothing changed since the last reconcile.
    if !st.space_dirty {
        let mut unique: std::collections::HashMap<u64, u64> = std::collections::HashMap::new();
        let mut viewers = Vec::new();
        for (&lid, l) in &m.layers {
            for (&i, &p) in &l.map {
                if p == HOLE {
                    continue;
                }
                viewers.clear();
                m.viewers(lid, i, 2, &mut viewers);
                if viewers.len() == 1 {
                    *unique.entry(viewers[0]).or_default() += 1;
                }
            }
        }
        for (vid, v) in &m.views {
            let want = unique.get(vid).copied().unwrap_or(0);
            if v.unique != want {
                r.errors.push(format!(
                    "view '{}': unique {} but {} recomputed (marked exact)",
                    v.name, v.unique, want
                ));
            }
        }
    }
    let expected_alloc = owned_total + st.inflight_total + st.pending_count;
    if st.alloc.used() > expected_alloc {
        r.leaked_chunks = st.alloc.used() - expected_alloc;
    } else if st.alloc.used() < expected_alloc {
        r.errors.push(format!(
            "allocator has {} chunks set, fewer than {} owned/in flight/pending",
            st.alloc.used(),
            expected_alloc
        ));
    }
    if r.leaked_chunks > 0 {
        r.errors.push(format!(
            "{} chunks leaked (allocated but owned by no layer)",
            r.leaked_chunks
        ));
    }
    r
}
