//! Receiving a snapshot delta: staged in a hidden layer, made visible by one record.
//!
//! [`Pool::receive_begin`] journals a *staging view* (`ViewKind::Staging`): a new writable
//! leaf layer under the base snapshot's layer (a received increment), under the origin
//! snapshot's layer (a clone sent as an increment from its origin), or a new root (a full
//! stream). Received chunks are first writes into it (allocate, write, `Map`); holes are
//! `Hole`/`Clear` records. Nothing of it is a volume or a snapshot until
//! [`Receive::commit`] logs one `ReceiveCommit` record, applied by `Meta::apply` like every
//! other: the staging layer is frozen as the new snapshot (with the sender's uuid) and the
//! replica volume gets a new empty top under it (its previous top dropped, as a rollback
//! drops it), or is created. A crash before that record is durable leaves the staging view
//! and its resume point (the last [`Receive::save_progress`]); after it, everything.
//! docs/decisions/0017-replication-engine.md.

use std::sync::Arc;

use crate::clock::now_unix;
use crate::diff::chunk_len;
use crate::engine::{AllocFail, PoolInner, State};
use crate::layer::{LayerId, Rec, ViewId, ViewKind, HOLE};
use crate::pool::{check_name, MAX_VOLUME_BYTES};
use crate::{
    space, Pool, ReceiveBase, ReceiveSpec, ReceiveState, Result, SnapshotInfo, StorageError,
};

/// A receive being applied: the only handle that writes into its staging layer.
///
/// Dropping it without [`Receive::commit`] or [`Receive::abort`] leaves the staging where
/// it is (a later [`Pool::receive_begin`] with the same spec resumes it).
pub struct Receive {
    pub(crate) inner: Arc<PoolInner>,
    /// The staging view.
    pub(crate) id: ViewId,
    layer: LayerId,
    pub(crate) spec: ReceiveSpec,
    /// Next index a put may name (everything below was put in this session or before).
    next: u64,
    /// Chunks of the received snapshot.
    chunks: u64,
}

impl Drop for Receive {
    fn drop(&mut self) {
        self.inner.receiving.lock().remove(&self.id);
    }
}

fn bad(msg: String) -> StorageError {
    StorageError::InvalidArgument(msg)
}

/// The staging view receiving into `volume`, if any.
fn staged_for(st: &State, volume: &str) -> Option<ViewId> {
    st.meta
        .staging
        .iter()
        .find(|(_, s)| s.spec.volume == volume)
        .map(|(&id, _)| id)
}

/// Check that `spec` can apply to this pool as it is now: what it names exists (or must
/// not), uuids match. Returns the base snapshot's view id (none for a full stream) and the
/// replica volume's (none when the receive creates it).
pub(crate) fn check_base(
    st: &State,
    spec: &ReceiveSpec,
) -> Result<(Option<ViewId>, Option<ViewId>)> {
    let m = &st.meta;
    let snap_of = |vol: &str, snap: &str, uuid: &uuid::Uuid| -> Result<ViewId> {
        let v = m
            .find_volume(vol)
            .ok_or_else(|| StorageError::NotFound(format!("base volume '{vol}' not found")))?;
        let s = m.find_snapshot(v, snap).ok_or_else(|| {
            StorageError::NotFound(format!("base snapshot '{vol}@{snap}' not found"))
        })?;
        let sv = m
            .views
            .get(&s)
            .ok_or_else(|| StorageError::NotFound(format!("base snapshot '{vol}@{snap}'")))?;
        if sv.uuid != *uuid {
            return Err(bad(format!(
                "base snapshot '{vol}@{snap}' is {} here but the stream applies to {uuid}: not \
                 the same snapshot",
                sv.uuid
            )));
        }
        if sv.block_size != spec.block_size {
            return Err(bad(format!(
                "block size {} of the stream differs from {} of '{vol}@{snap}'",
                spec.block_size, sv.block_size
            )));
        }
        Ok(s)
    };
    match &spec.base {
        ReceiveBase::New | ReceiveBase::Origin { .. } => {
            if m.find_volume(&spec.volume).is_some() {
                return Err(StorageError::AlreadyExists(format!(
                    "volume '{}' (a full or clone stream creates it)",
                    spec.volume
                )));
            }
            match &spec.base {
                ReceiveBase::Origin {
                    volume,
                    snapshot,
                    uuid,
                } => Ok((Some(snap_of(volume, snapshot, uuid)?), None)),
                _ => Ok((None, None)),
            }
        }
        ReceiveBase::Snapshot { snapshot, uuid } => {
            let base = snap_of(&spec.volume, snapshot, uuid)?;
            let vol = m.find_volume(&spec.volume);
            if let Some(v) = vol {
                if m.find_snapshot(v, &spec.snapshot).is_some() {
                    return Err(StorageError::AlreadyExists(format!(
                        "snapshot '{}@{}'",
                        spec.volume, spec.snapshot
                    )));
                }
                if let Some(s) = m
                    .snapshots_of(v)
                    .into_iter()
                    .find(|s| m.views.get(s).is_some_and(|x| x.uuid == spec.snapshot_uuid))
                {
                    let name = m.views.get(&s).map(|x| x.name.clone()).unwrap_or_default();
                    return Err(StorageError::AlreadyExists(format!(
                        "snapshot {} (as '{}@{name}': received already)",
                        spec.snapshot_uuid, spec.volume
                    )));
                }
            }
            Ok((Some(base), vol))
        }
    }
}

fn check_spec(spec: &ReceiveSpec) -> Result<()> {
    check_name("volume", &spec.volume)?;
    check_name("snapshot", &spec.snapshot)?;
    match &spec.base {
        ReceiveBase::New => {}
        ReceiveBase::Snapshot { snapshot, .. } => check_name("snapshot", snapshot)?,
        ReceiveBase::Origin {
            volume, snapshot, ..
        } => {
            check_name("volume", volume)?;
            check_name("snapshot", snapshot)?;
            if *volume == spec.volume {
                return Err(bad(format!(
                    "a clone stream cannot create '{volume}' as a clone of its own snapshot"
                )));
            }
        }
    }
    if spec.block_size != 512 && spec.block_size != 4096 {
        return Err(bad(format!(
            "block size {} must be 512 or 4096",
            spec.block_size
        )));
    }
    if spec.size_bytes == 0
        || !spec.size_bytes.is_multiple_of(u64::from(spec.block_size))
        || spec.size_bytes > MAX_VOLUME_BYTES
    {
        return Err(bad(format!(
            "snapshot size {} must be a non-zero multiple of the block size {}, at most 2^60",
            spec.size_bytes, spec.block_size
        )));
    }
    Ok(())
}

impl Pool {
    /// Starts applying a delta to this pool, or resumes the one staged for the same volume
    /// with the same spec (after a crash, a restart or a cut connection): the returned
    /// handle's [`Receive::next_index`] says where the sender restarts.
    ///
    /// Fails, with nothing changed, when the base does not fit (`NotFound`, a uuid or block
    /// size mismatch as `InvalidArgument`, `AlreadyExists` for a volume a full stream would
    /// create or a snapshot received already), and with `Busy` when a receive with another
    /// spec is staged for the volume (abort it with [`Pool::receive_abort`]) or a handle for
    /// this one is open.
    pub async fn receive_begin(&self, spec: ReceiveSpec) -> Result<Receive> {
        self.inner.check_open()?;
        check_spec(&spec)?;
        let (id, layer, next, resumed) = {
            let mut st = self.inner.state.write();
            st.check_failed()?;
            if let Some(id) = staged_for(&st, &spec.volume) {
                let staged = st.meta.staging.get(&id).cloned();
                let layer = st.meta.views.get(&id).map(|v| v.layer());
                match (staged, layer) {
                    (Some(s), Some(layer)) if s.spec == spec => (id, layer, s.next_index, true),
                    (Some(s), _) => {
                        return Err(StorageError::Busy(format!(
                            "a receive of snapshot '{}' ({}) is staged for volume '{}'; resume \
                             it or abort it first",
                            s.spec.snapshot, s.spec.snapshot_uuid, spec.volume
                        )))
                    }
                    _ => {
                        return Err(StorageError::Corrupt(format!(
                            "receive {id} without its spec or layer"
                        )))
                    }
                }
            } else {
                let (base, _) = check_base(&st, &spec)?;
                let staging = st.meta.new_id();
                let layer = st.meta.new_id();
                st.log(Rec::ReceiveBegin {
                    staging,
                    layer,
                    base,
                    spec: spec.clone(),
                    created: now_unix(),
                })?;
                (staging, layer, 0, false)
            }
        };
        match self.inner.receiving.lock().entry(id) {
            std::collections::hash_map::Entry::Occupied(_) => {
                return Err(StorageError::Busy(format!(
                    "a receive into volume '{}' is being applied already",
                    spec.volume
                )))
            }
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(next);
            }
        }
        let chunks = self.inner.state.read().meta.chunks(spec.size_bytes);
        let rx = Receive {
            inner: self.inner.clone(),
            id,
            layer,
            spec,
            next,
            chunks,
        };
        // Durable before the first chunk: a restart lists it.
        self.inner.flush().await?;
        if resumed {
            tracing::info!(volume = %rx.spec.volume, snapshot = %rx.spec.snapshot, next_index = next, "receive resumed");
        } else {
            tracing::info!(volume = %rx.spec.volume, snapshot = %rx.spec.snapshot, base = ?rx.spec.base, "receive started");
        }
        Ok(rx)
    }

    /// Receives in progress (they survive restarts): spec, resume point, staged bytes.
    pub fn receives(&self) -> Vec<ReceiveState> {
        let receiving = self.inner.receiving.lock().clone();
        let st = self.inner.state.read();
        let cs = st.meta.chunk_size;
        st.meta
            .staging
            .iter()
            .map(|(id, s)| {
                let v = st.meta.views.get(id);
                let owned = v
                    .and_then(|v| st.meta.layers.get(&v.layer()))
                    .map_or(0, |l| l.owned);
                ReceiveState {
                    spec: s.spec.clone(),
                    next_index: receiving.get(id).copied().unwrap_or(s.next_index),
                    staged_bytes: owned * cs,
                    started_unix: v.map_or(0, |v| v.created),
                }
            })
            .collect()
    }

    /// Drops the receive staged for `volume` and frees what it staged (for a receive whose
    /// sender is gone, or that must make way for another). `NotFound` if there is none,
    /// `Busy` while a [`Receive`] handle applies it (use [`Receive::abort`]).
    pub async fn receive_abort(&self, volume: &str) -> Result<()> {
        self.inner.check_open()?;
        let id = staged_for(&self.inner.state.read(), volume).ok_or_else(|| {
            StorageError::NotFound(format!("no receive is staged for volume '{volume}'"))
        })?;
        if self.inner.receiving.lock().contains_key(&id) {
            return Err(StorageError::Busy(format!(
                "the receive into '{volume}' is being applied; abort it through its handle"
            )));
        }
        drop_staging(&self.inner, id).await?;
        tracing::info!(volume, "receive aborted");
        Ok(())
    }
}

/// Log the staging view's deletion (its layer is freed, cascading to a ghost above) and
/// make it durable.
async fn drop_staging(inner: &PoolInner, id: ViewId) -> Result<()> {
    {
        let mut st = inner.state.write();
        st.check_failed()?;
        if st
            .meta
            .views
            .get(&id)
            .is_some_and(|v| matches!(v.kind, ViewKind::Staging { .. }))
        {
            st.log(Rec::DeleteView { view: id })?;
        }
    }
    inner.flush().await
}

impl Receive {
    /// Resume point: the next chunk index the sender must send (indices below it are staged).
    pub fn next_index(&self) -> u64 {
        self.next
    }

    /// What is being received.
    pub fn spec(&self) -> &ReceiveSpec {
        &self.spec
    }

    fn check_index(&self, index: u64) -> Result<()> {
        self.inner.check_open()?;
        if index >= self.chunks {
            return Err(bad(format!(
                "chunk {index} is past the end of '{}@{}' ({} chunks)",
                self.spec.volume, self.spec.snapshot, self.chunks
            )));
        }
        if index < self.next {
            return Err(bad(format!(
                "chunk {index} out of order: the receive is at chunk {} (indices must ascend)",
                self.next
            )));
        }
        Ok(())
    }

    /// Stages `data` as chunk `index` of the received snapshot. Indices ascend; `data` is
    /// the chunk's length ([`crate::SnapshotDelta::chunk_len`]). An all-zero chunk is
    /// staged as a hole (no space). Not durable until [`Receive::save_progress`] or
    /// [`Receive::commit`].
    pub async fn put_chunk(&mut self, index: u64, data: bytes::Bytes) -> Result<()> {
        self.check_index(index)?;
        let cs = self.inner.layout.chunk_size;
        let want = chunk_len(self.spec.size_bytes, cs as u32, index) as usize;
        if data.len() != want {
            return Err(bad(format!(
                "chunk {index} has {} bytes, {want} expected",
                data.len()
            )));
        }
        if data.iter().all(|&b| b == 0) {
            return self.put_hole(index).await;
        }
        let mut body = vec![data];
        if want < cs as usize {
            body.push(self.inner.zero_chunk.slice(..cs as usize - want));
        }
        // A chunk staged before an interrupted session (past its saved resume point) is
        // overwritten in place; a merge that moved it here (the base snapshot was deleted)
        // must be durable first, as for any in-place write (`Volume::write_chunk`).
        let owned = loop {
            let (owned, merged) = {
                let st = self.inner.state.read();
                let l = st.meta.layers.get(&self.layer).ok_or_else(|| self.gone())?;
                (
                    l.map.get(&index).copied().filter(|&p| p != HOLE),
                    l.merged_lsn,
                )
            };
            if owned.is_some()
                && merged
                    > self
                        .inner
                        .durable_lsn
                        .load(std::sync::atomic::Ordering::Acquire)
            {
                self.inner.wait_durable(merged).await?;
                continue;
            }
            break owned;
        };
        if let Some(p) = owned {
            self.inner
                .write_data(self.inner.layout.chunk_offset(p), body)
                .await?;
            self.next = index + 1;
            return Ok(());
        }
        let phys = self.allocate().await?;
        let id = self.id;
        self.inner
            .publish_first_write(
                id,
                false,
                self.layer,
                index,
                phys,
                body,
                |st| st.meta.views.contains_key(&id),
                || self.gone(),
            )
            .await?;
        self.next = index + 1;
        Ok(())
    }

    /// Stages chunk `index` as zeros (unmapped in the received snapshot).
    pub async fn put_hole(&mut self, index: u64) -> Result<()> {
        self.check_index(index)?;
        let mut st = self.inner.state.write();
        st.check_failed()?;
        let l = st.meta.layers.get(&self.layer).ok_or_else(|| self.gone())?;
        let own = l.map.get(&index).copied();
        let below = st.meta.resolve_parent(self.layer, index).is_some();
        if below && own != Some(HOLE) {
            st.log(Rec::Hole {
                layer: self.layer,
                index,
            })?;
        } else if !below && own.is_some() {
            st.log(Rec::Clear {
                layer: self.layer,
                index,
            })?;
        }
        self.next = index + 1;
        Ok(())
    }

    /// Makes everything put so far durable, with the resume point after it: a crash or a
    /// restart resumes here ([`Pool::receives`]).
    pub async fn save_progress(&mut self) -> Result<()> {
        {
            let mut st = self.inner.state.write();
            st.check_failed()?;
            if !st.meta.views.contains_key(&self.id) {
                return Err(self.gone());
            }
            st.log(Rec::ReceiveProgress {
                staging: self.id,
                next_index: self.next,
            })?;
        }
        self.inner.flush().await?;
        if let Some(saved) = self.inner.receiving.lock().get_mut(&self.id) {
            *saved = self.next;
        }
        Ok(())
    }

    /// Makes the received snapshot visible, atomically (one journal record): `volume@snapshot`
    /// appears with the sender's uuid and `volume` reads as it (its writes since the base
    /// snapshot are dropped, as a rollback drops them), or `volume` is created. Checks the
    /// base again first; on an error nothing changes and the staging stays (resume or abort
    /// it).
    pub async fn commit(self) -> Result<SnapshotInfo> {
        let vid = {
            let st = self.inner.state.read();
            st.meta.find_volume(&self.spec.volume)
        };
        // An increment replaces the volume's top: ordered against its I/O like a rollback.
        let rt = vid.map(|v| self.inner.rt(v));
        let _gate = match &rt {
            Some(rt) => Some(rt.gate.write().await),
            None => None,
        };
        let snap = {
            let mut st = self.inner.state.write();
            st.check_failed()?;
            if !st.meta.views.contains_key(&self.id) {
                return Err(self.gone());
            }
            let (_, vol) = check_base(&st, &self.spec)?;
            if vol != vid {
                return Err(StorageError::Busy(format!(
                    "volume '{}' changed while the receive committed; retry",
                    self.spec.volume
                )));
            }
            if let Some(v) = vol {
                // The old top's chunks go; a full volume's reservation is for the new size.
                let (top, size, _, full) = st.volume(v)?;
                if full {
                    let owned = st.meta.layers.get(&top).map_or(0, |l| l.owned);
                    let old_res = st.meta.chunks(size).saturating_sub(owned);
                    let need = st
                        .meta
                        .chunks(self.spec.size_bytes)
                        .saturating_sub(old_res + owned);
                    st.need(need)?;
                }
            }
            let snap = st.meta.new_id();
            let vol = match vol {
                Some(v) => v,
                None => st.meta.new_id(),
            };
            let new_top = st.meta.new_id();
            st.log(Rec::ReceiveCommit {
                staging: self.id,
                snap,
                vol,
                new_top,
                vol_uuid: uuid::Uuid::new_v4(),
                created: now_unix(),
            })?;
            snap
        };
        self.inner.flush().await?;
        tracing::info!(volume = %self.spec.volume, snapshot = %self.spec.snapshot, "receive committed");
        let st = self.inner.state.read();
        space::snapshot_info(&st, snap).ok_or_else(|| {
            StorageError::NotFound(format!(
                "snapshot '{}@{}' vanished after its receive",
                self.spec.volume, self.spec.snapshot
            ))
        })
    }

    /// Drops the receive and frees everything it staged.
    pub async fn abort(self) -> Result<()> {
        drop_staging(&self.inner, self.id).await?;
        tracing::info!(volume = %self.spec.volume, snapshot = %self.spec.snapshot, "receive aborted");
        Ok(())
    }

    pub(crate) fn gone(&self) -> StorageError {
        StorageError::NotFound(format!(
            "the receive into '{}' is no longer staged",
            self.spec.volume
        ))
    }

    /// Allocate a chunk for the staging layer, committing once if only not-yet-durable
    /// frees are left (as `Volume::allocate`).
    async fn allocate(&self) -> Result<u64> {
        for attempt in 0..2 {
            let r = self.inner.state.write().allocate(self.id, false);
            match r {
                Ok(c) => return Ok(c),
                Err(AllocFail::NoSpace) => return Err(StorageError::NoSpace),
                Err(AllocFail::NeedCommit) if attempt == 0 => self.inner.flush().await?,
                Err(AllocFail::NeedCommit) => return Err(StorageError::NoSpace),
            }
        }
        Err(StorageError::NoSpace)
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use crate::layer::Rec;
    use crate::{Pool, PoolOptions, ReceiveBase, ReceiveSpec};

    const CS: u64 = 64 << 10;

    /// `Pool::receives` is what an operator (and a sender deciding where to resume) reads:
    /// it must name a resume point a crash keeps, never one only journalled in memory.
    #[tokio::test]
    async fn the_listed_resume_point_is_the_durable_one() {
        let d = tempfile::tempdir().unwrap();
        let opts = PoolOptions {
            chunk_size: CS as u32,
            capacity_bytes: Some(16 << 20),
            soft_threshold_pct: None,
        };
        let pool = Pool::create(d.path(), &opts).await.unwrap();
        let mut rx = pool
            .receive_begin(ReceiveSpec {
                volume: "r".into(),
                base: ReceiveBase::New,
                snapshot: "s1".into(),
                snapshot_uuid: uuid::Uuid::from_u128(7),
                size_bytes: 8 * CS,
                block_size: 4096,
            })
            .await
            .unwrap();
        for i in 0..2 {
            rx.put_chunk(i, Bytes::from(vec![1u8; CS as usize]))
                .await
                .unwrap();
        }
        rx.save_progress().await.unwrap();
        assert_eq!(pool.receives()[0].next_index, 2);
        rx.put_chunk(2, Bytes::from(vec![2u8; CS as usize]))
            .await
            .unwrap();
        // The first half of a save: the record is in the metadata, its flush not done.
        pool.inner
            .state
            .write()
            .log(Rec::ReceiveProgress {
                staging: rx.id,
                next_index: 3,
            })
            .unwrap();
        assert_eq!(pool.receives()[0].next_index, 2, "not durable yet");
        rx.save_progress().await.unwrap();
        assert_eq!(pool.receives()[0].next_index, 3);
        // Without a handle the metadata's point is the durable one (a restart resumes it).
        drop(rx);
        assert_eq!(pool.receives()[0].next_index, 3);
        pool.close().await.unwrap();
    }
}
