//! Checkpoint: a full image of the metadata written to the inactive of two slots.
//!
//! Format: magic "LCKP", pool UUID, next id, then views and layers (with their maps). Derived
//! counters (owned, mapped, reserved, used) are not stored; they are rebuilt on load. The
//! superblock records the slot, byte length and CRC32C of the image.

use crate::codec::{Dec, Enc};
use crate::journal::{decode_spec, encode_spec};
use crate::layer::{Layer, Meta, Staged, View, ViewKind, HOLE};
use crate::{Guarantee, Result, StorageError};

const CMAGIC: &[u8; 4] = b"LCKP";

/// Serialize the metadata.
pub(crate) fn encode(meta: &Meta, pool: &uuid::Uuid) -> Vec<u8> {
    capture(meta, pool).encode()
}

/// What an image of the metadata holds, copied out of it, so that sorting and encoding
/// ([`Capture::encode`]) can run after whatever lock guards the source is released. A
/// checkpoint encodes the commit thread's replica (docs/decisions/0015-checkpoint-replica.md),
/// which no I/O waits for; the copy under the live metadata lock survives only as the
/// benchmark's "before" (feature `bench-internals`). One linear pass, 16 bytes per entry.
pub(crate) struct Capture {
    /// Magic, pool UUID, next id and the views, already encoded (small).
    head: Vec<u8>,
    layers: Vec<LayerCapture>,
}

struct LayerCapture {
    id: u64,
    parent: Option<u64>,
    view: Option<u64>,
    frozen: bool,
    children: Vec<u64>,
    /// (index, physical chunk), unsorted.
    data: Vec<(u64, u64)>,
    /// Indices of holes, unsorted.
    holes: Vec<u64>,
}

/// Copy out what an image of `meta` needs (call with the metadata lock held).
pub(crate) fn capture(meta: &Meta, pool: &uuid::Uuid) -> Capture {
    let mut e = Enc::default();
    e.buf.extend_from_slice(CMAGIC);
    e.buf.extend_from_slice(pool.as_bytes());
    e.u64(meta.next_id);
    e.u64(meta.views.len() as u64);
    for (&id, v) in &meta.views {
        e.u64(id);
        e.str(&v.name);
        e.buf.extend_from_slice(v.uuid.as_bytes());
        e.u64(v.size);
        e.u32(v.block_size);
        e.u64(v.created);
        e.opt_str(v.origin.as_deref());
        match v.kind {
            ViewKind::Volume { top, guarantee } => {
                e.u8(0);
                e.u64(top);
                e.u8((guarantee == Guarantee::Full) as u8);
            }
            ViewKind::Snapshot { layer, volume } => {
                e.u8(1);
                e.u64(layer);
                e.u64(volume);
            }
            // Written only while a receive is staged: an image without one stays readable
            // by builds that predate receives (docs/storage-format.md, "Checkpoint").
            ViewKind::Staging { layer } => {
                e.u8(2);
                e.u64(layer);
                match meta.staging.get(&id) {
                    Some(st) => {
                        e.u8(1);
                        encode_spec(&mut e, &st.spec);
                        e.u64(st.next_index);
                    }
                    None => e.u8(0),
                }
            }
        }
    }
    let layers = meta
        .layers
        .iter()
        .map(|(&id, l)| {
            let mut data = Vec::with_capacity(l.owned as usize);
            let mut holes = Vec::new();
            for (&i, &p) in &l.map {
                if p == HOLE {
                    holes.push(i);
                } else {
                    data.push((i, p));
                }
            }
            LayerCapture {
                id,
                parent: l.parent,
                view: l.view,
                frozen: l.frozen,
                children: l.children.clone(),
                data,
                holes,
            }
        })
        .collect();
    Capture {
        head: e.buf,
        layers,
    }
}

impl Capture {
    /// The image: entries sorted, holes as runs. Deterministic for a given metadata state.
    pub(crate) fn encode(self) -> Vec<u8> {
        let mut e = Enc { buf: self.head };
        e.u64(self.layers.len() as u64);
        for mut l in self.layers {
            e.u64(l.id);
            e.opt_u64(l.parent);
            e.opt_u64(l.view);
            e.u8(l.frozen as u8);
            e.u64(l.children.len() as u64);
            for &c in &l.children {
                e.u64(c);
            }
            l.data.sort_unstable();
            e.u64(l.data.len() as u64);
            for (i, p) in l.data {
                e.u64(i);
                e.u64(p);
            }
            // Holes come in long runs (a discard of a shared range): store them as runs.
            l.holes.sort_unstable();
            let mut runs: Vec<(u64, u64)> = Vec::new();
            for i in l.holes {
                match runs.last_mut() {
                    Some((start, len)) if *start + *len == i => *len += 1,
                    _ => runs.push((i, 1)),
                }
            }
            e.u64(runs.len() as u64);
            for (start, len) in runs {
                e.u64(start);
                e.u64(len);
            }
        }
        e.buf
    }
}

/// Load a metadata image (derived counters rebuilt).
pub(crate) fn decode(
    buf: &[u8],
    pool: &uuid::Uuid,
    chunk_size: u64,
    data_chunks: u64,
) -> Result<Meta> {
    let mut d = Dec::new(buf, "checkpoint");
    if d.take(4)? != CMAGIC || d.take(16)? != pool.as_bytes() {
        return Err(StorageError::Corrupt(
            "checkpoint header does not match the pool".into(),
        ));
    }
    let mut m = Meta::new(chunk_size);
    m.next_id = d.u64()?;
    let nviews = d.count(40)?;
    for _ in 0..nviews {
        let id = d.u64()?;
        let name = d.str()?;
        let uuid = uuid::Uuid::from_slice(d.take(16)?)
            .map_err(|e| StorageError::Corrupt(e.to_string()))?;
        let size = d.u64()?;
        let block_size = d.u32()?;
        let created = d.u64()?;
        let origin = d.opt_str()?;
        let kind = match d.u8()? {
            0 => {
                let top = d.u64()?;
                let g = if d.u8()? == 1 {
                    Guarantee::Full
                } else {
                    Guarantee::None
                };
                ViewKind::Volume { top, guarantee: g }
            }
            1 => ViewKind::Snapshot {
                layer: d.u64()?,
                volume: d.u64()?,
            },
            2 => {
                let layer = d.u64()?;
                if d.u8()? != 1 {
                    return Err(StorageError::Corrupt(format!(
                        "checkpoint: receive {id} without its spec"
                    )));
                }
                let spec = decode_spec(&mut d)?;
                let next_index = d.u64()?;
                m.staging.insert(id, Staged { spec, next_index });
                ViewKind::Staging { layer }
            }
            t => {
                return Err(StorageError::Corrupt(format!(
                    "checkpoint: bad view kind {t}"
                )))
            }
        };
        m.views.insert(
            id,
            View {
                name,
                uuid,
                size,
                block_size,
                created,
                origin,
                kind,
                mapped: 0,
                reserved: 0,
                unique: 0,
            },
        );
    }
    let nlayers = d.count(30)?;
    for _ in 0..nlayers {
        let id = d.u64()?;
        let parent = d.opt_u64()?;
        let view = d.opt_u64()?;
        let frozen = d.u8()? != 0;
        let nc = d.count(8)?;
        let mut children = Vec::with_capacity(nc);
        for _ in 0..nc {
            children.push(d.u64()?);
        }
        let ne = d.count(16)?;
        let mut map = crate::chunkmap::ChunkMap::with_capacity_and_hasher(ne, Default::default());
        for _ in 0..ne {
            let i = d.u64()?;
            let p = d.u64()?;
            if p >= data_chunks {
                return Err(StorageError::Corrupt(format!(
                    "checkpoint: chunk {p} beyond the pool"
                )));
            }
            map.insert(i, p);
        }
        // A hole only ever hides data of an ancestor, so a layer cannot have more holes than
        // the pool has chunks times the number of layers; refuse anything larger.
        let hole_limit = data_chunks.saturating_mul(nlayers as u64 + 1);
        let mut holes = 0u64;
        let nr = d.count(16)?;
        for _ in 0..nr {
            let start = d.u64()?;
            let len = d.u64()?;
            holes = holes.saturating_add(len);
            if len == 0 || start.checked_add(len).is_none() || holes > hole_limit {
                return Err(StorageError::Corrupt(
                    "checkpoint: implausible hole run".into(),
                ));
            }
            for i in start..start + len {
                map.insert(i, HOLE);
            }
        }
        m.layers.insert(
            id,
            Layer {
                parent,
                children,
                view,
                frozen,
                map,
                owned: 0,
                merged_lsn: 0,
            },
        );
    }
    validate_links(&m)?;
    m.rebuild_derived();
    Ok(m)
}

/// Structural sanity so that later code can rely on ids resolving.
pub(crate) fn validate_links(m: &Meta) -> Result<()> {
    let bad = |s: String| Err(StorageError::Corrupt(format!("checkpoint: {s}")));
    for (&id, l) in &m.layers {
        if let Some(p) = l.parent {
            if !m.layers.get(&p).is_some_and(|pl| pl.children.contains(&id)) {
                return bad(format!("layer {id} parent link broken"));
            }
        }
        for c in &l.children {
            if m.layers.get(c).and_then(|cl| cl.parent) != Some(id) {
                return bad(format!("layer {id} child link broken"));
            }
        }
        if let Some(v) = l.view {
            if m.views.get(&v).map(|vw| vw.layer()) != Some(id) {
                return bad(format!("layer {id} view link broken"));
            }
        }
        // Parent chains must end (no cycles).
        let mut depth = 0usize;
        let mut cur = l.parent;
        while let Some(p) = cur {
            depth += 1;
            if depth > m.layers.len() {
                return bad(format!("layer {id} has a parent cycle"));
            }
            cur = m.layers.get(&p).and_then(|pl| pl.parent);
        }
    }
    for (&vid, v) in &m.views {
        if m.layers.get(&v.layer()).and_then(|l| l.view) != Some(vid) {
            return bad(format!("view {vid} layer link broken"));
        }
        if matches!(v.kind, ViewKind::Staging { .. }) != m.staging.contains_key(&vid) {
            return bad(format!("view {vid} and its receive spec disagree"));
        }
    }
    for id in m.staging.keys() {
        if !m.views.contains_key(id) {
            return bad(format!("receive spec {id} without its view"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod capture_tests {
    use super::*;
    use crate::layer::Rec;

    fn apply(m: &mut Meta, rec: Rec) {
        let mut freed = Vec::new();
        m.apply(&rec, &mut freed).expect("apply");
    }

    /// The image encoded after the lock is released is the state at capture time: changes
    /// made between capture and encoding are not in it.
    #[test]
    fn the_image_is_the_state_at_capture() {
        let uuid = uuid::Uuid::new_v4();
        let mut m = Meta::new(65536);
        let (v, l) = (m.new_id(), m.new_id());
        apply(
            &mut m,
            Rec::CreateVolume {
                view: v,
                layer: l,
                name: "v".into(),
                uuid: uuid::Uuid::nil(),
                size: 1 << 30,
                block_size: 4096,
                full: false,
                created: 0,
            },
        );
        for i in 0..1000u64 {
            apply(
                &mut m,
                Rec::Map {
                    layer: l,
                    index: i * 3 % 1000,
                    phys: i,
                },
            );
        }
        apply(
            &mut m,
            Rec::Hole {
                layer: l,
                index: 2000,
            },
        );
        let at_capture = encode(&m, &uuid);
        let cap = capture(&m, &uuid);
        apply(
            &mut m,
            Rec::Map {
                layer: l,
                index: 5000,
                phys: 5000,
            },
        );
        apply(&mut m, Rec::Clear { layer: l, index: 3 });
        apply(
            &mut m,
            Rec::Rename {
                view: v,
                name: "w".into(),
            },
        );
        let img = cap.encode();
        assert_eq!(img, at_capture, "same bytes as encoding at capture time");
        let back = decode(&img, &uuid, 65536, 1 << 20).expect("decode");
        assert_eq!(back.resolve(l, 5000), None);
        assert_eq!(back.resolve(l, 3), Some(1));
        assert_eq!(back.views.get(&v).map(|x| x.name.as_str()), Some("v"));
        assert_ne!(
            encode(&m, &uuid),
            img,
            "later changes show in a later image"
        );
    }
}
