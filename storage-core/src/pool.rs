//! The pool: public entry point and administrative operations (volumes, snapshots, clones).

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::clock::now_unix;
use crate::commit;
use crate::commit_queue::CommitQueue;
use crate::engine::{PoolInner, SbState, Sealer, State};
use crate::io::DataIo;
use crate::layer::{Rec, ViewId, ViewKind};
use crate::{
    open, space, CheckReport, Guarantee, PoolOptions, PoolStatus, Result, SnapshotInfo, SplitJob,
    StorageError, Volume, VolumeInfo,
};

/// Largest volume: 2^60 bytes keeps every chunk index and byte offset far from overflow.
pub(crate) const MAX_VOLUME_BYTES: u64 = 1 << 60;

/// A storage pool. Cheap to clone; all clones share one engine.
#[derive(Clone)]
pub struct Pool {
    pub(crate) inner: Arc<PoolInner>,
    committer: Arc<parking_lot::Mutex<Option<std::thread::JoinHandle<()>>>>,
}

pub(crate) fn check_name(kind: &str, name: &str) -> Result<()> {
    if name.is_empty() || name.len() > 255 {
        return Err(StorageError::InvalidArgument(format!(
            "{kind} name must be 1..=255 bytes"
        )));
    }
    if name.chars().any(|c| c == '@' || c == '/' || c.is_control()) {
        return Err(StorageError::InvalidArgument(format!(
            "{kind} name '{name}' may not contain '@', '/' or control characters"
        )));
    }
    Ok(())
}

fn vol_not_found(name: &str) -> StorageError {
    StorageError::NotFound(format!("volume '{name}' not found"))
}

fn snap_not_found(vol: &str, snap: &str) -> StorageError {
    StorageError::NotFound(format!("snapshot '{vol}@{snap}' not found"))
}

impl Pool {
    /// Create a new pool at `path`: an existing directory (the pool lives in `pool.img`
    /// inside), a new file (sparse, `capacity_bytes` required) or a block device.
    pub async fn create(path: &Path, opts: &PoolOptions) -> Result<Pool> {
        let p = path.to_path_buf();
        let o = opts.clone();
        let target = tokio::task::spawn_blocking(move || open::create(&p, &o))
            .await
            .map_err(join_err)??;
        Self::open(&target).await
    }

    /// Open an existing pool. Non-pools, unknown versions, truncated or corrupt pools fail
    /// with `NotAPool`, `UnsupportedVersion` or `Corrupt` and the file is left untouched.
    pub async fn open(path: &Path) -> Result<Pool> {
        let p = path.to_path_buf();
        let loaded = tokio::task::spawn_blocking(move || {
            let mut loaded = open::open(&p)?;
            open::recover(&mut loaded)?;
            Ok::<_, StorageError>(loaded)
        })
        .await
        .map_err(join_err)??;
        Self::start(loaded)
    }

    /// Create a new pool on an RBD image (`opts.capacity_bytes`: `None` for the whole image,
    /// else at most its size). Fails with `AlreadyExists` if the image holds a pool.
    ///
    /// The caller must hold the image's exclusive lock (`RbdImage::lock_acquire_exclusive`)
    /// until [`Pool::close`] has returned: storage-core cannot keep another client out of an
    /// image (the HA coordinator does, by lease and fencing). Data I/O uses librbd aio;
    /// metadata I/O and flushes are synchronous librbd calls on the commit thread.
    #[cfg(feature = "ceph")]
    pub async fn create_rbd(image: crate::ceph::RbdImage, opts: &PoolOptions) -> Result<Pool> {
        let o = opts.clone();
        let img = image.clone();
        tokio::task::spawn_blocking(move || open::create_rbd(img, &o))
            .await
            .map_err(join_err)??;
        Self::open_rbd(image).await
    }

    /// Open the pool on an RBD image; as [`Pool::open`] for files (an image without a pool
    /// fails with `NotAPool`). The caller holds the image's exclusive lock, as for
    /// [`Pool::create_rbd`].
    #[cfg(feature = "ceph")]
    pub async fn open_rbd(image: crate::ceph::RbdImage) -> Result<Pool> {
        let loaded = tokio::task::spawn_blocking(move || {
            let mut loaded = open::open_rbd(image)?;
            open::recover(&mut loaded)?;
            Ok::<_, StorageError>(loaded)
        })
        .await
        .map_err(join_err)??;
        Self::start(loaded)
    }

    /// Run a loaded (and recovered) pool: engine state, commit thread, space reconciler.
    fn start(loaded: open::Loaded) -> Result<Pool> {
        let name = loaded.dev.name().to_string();
        let dev = Arc::new(loaded.dev);
        let layout = loaded.sb.layout;
        let uuid = loaded.sb.uuid;
        let shared = Arc::new(CommitQueue::default());
        // The checkpoint replica starts as the recovered metadata (what replaying the image
        // and the journal gave); from here on it follows the records the journal receives.
        let replica = loaded.meta.clone();
        let inner = Arc::new(PoolInner {
            io: DataIo::new(&dev),
            dev,
            layout,
            uuid,
            state: parking_lot::RwLock::new(State::new(
                loaded.meta,
                loaded.alloc,
                loaded.sb.soft_threshold_pct,
            )),
            sb: Arc::new(tokio::sync::Mutex::new(SbState {
                sb: loaded.sb,
                journal_off: loaded.journal_off,
                next_seq: loaded.next_seq,
                half: loaded.journal_half,
                ckpt_busy: false,
                ckpt_due: None,
                unsealed_frees: Vec::new(),
                boot: loaded.boot,
                open: None,
                backlog: Vec::new(),
            })),
            replica: parking_lot::Mutex::new(replica),
            #[cfg(feature = "bench-internals")]
            full_capture: std::sync::atomic::AtomicBool::new(false),
            #[cfg(feature = "bench-internals")]
            ckpt_hold_journal: std::sync::atomic::AtomicBool::new(false),
            #[cfg(feature = "bench-internals")]
            ckpt_inline: std::sync::atomic::AtomicBool::new(false),
            #[cfg(test)]
            ckpt_hook: parking_lot::Mutex::new(None),
            sealer: parking_lot::Mutex::new(Sealer {
                seal: loaded.seal,
                durable_seq: loaded.next_seq,
            }),
            durable_lsn: AtomicU64::new(0),
            published_lsn: AtomicU64::new(0),
            data_writes: AtomicU64::new(0),
            synced_writes: AtomicU64::new(0),
            commit: shared.clone(),
            vols: parking_lot::Mutex::new(Default::default()),
            receiving: Default::default(),
            closed: Default::default(),
            zero_chunk: bytes::Bytes::from(vec![0u8; layout.chunk_size as usize]),
            name,
            stats: Default::default(),
            commit_observer: parking_lot::RwLock::new(None),
        });
        let handle = commit::spawn(Arc::downgrade(&inner), shared)
            .map_err(|e| StorageError::io("starting the commit thread", e))?;
        space::spawn_reconciler(Arc::downgrade(&inner));
        tracing::info!(pool = %inner.name, %uuid, backend = inner.io.name(), "pool opened");
        Ok(Pool {
            inner,
            committer: Arc::new(parking_lot::Mutex::new(Some(handle))),
        })
    }

    /// Open the pool at `path`, creating it if nothing (or an empty file) is there.
    pub async fn open_or_create(path: &Path, opts: &PoolOptions) -> Result<Pool> {
        let target = open::resolve_path(path);
        let exists = std::fs::metadata(&target)
            .map(|m| m.len() > 0 || m.file_type().is_block_device_like())
            .unwrap_or(false);
        if exists {
            Self::open(path).await
        } else {
            Self::create(path, opts).await
        }
    }

    /// Whether a completed write can sit in a volatile cache until a flush: true for pools
    /// on files and block devices (the page cache; SCSI reports WCE=1 and hosts send
    /// SYNCHRONIZE CACHE), false for pools on RBD images (librbd's cache is off, so a
    /// completed write is on the OSDs: WCE=0).
    pub fn volatile_write_cache(&self) -> bool {
        self.inner.dev.volatile_cache()
    }

    /// Name of the data-path I/O backend ("io_uring", "threads" or "librbd").
    pub fn io_backend(&self) -> &'static str {
        self.inner.io.name()
    }

    /// Pool-wide figures (exact and current).
    /// Cumulative activity counters since the pool was opened.
    pub fn stats(&self) -> crate::PoolStats {
        let s = &self.inner.stats;
        crate::PoolStats {
            cow_ops: s.cow_ops.load(std::sync::atomic::Ordering::Relaxed),
            cow_bytes: s.cow_bytes.load(std::sync::atomic::Ordering::Relaxed),
            commits: s.commits.load(std::sync::atomic::Ordering::Relaxed),
            syncs: s.syncs.load(std::sync::atomic::Ordering::Relaxed),
            chain_cache_entries: self
                .inner
                .vols
                .lock()
                .values()
                .map(|v| v.chain.len() as u64)
                .sum(),
        }
    }

    /// Registers a callback told the duration of every metadata commit (journal write and
    /// fsyncs), so a caller can keep latency figures without storage-core knowing how.
    pub fn set_commit_observer(&self, f: Arc<dyn Fn(std::time::Duration) + Send + Sync>) {
        *self.inner.commit_observer.write() = Some(f);
    }

    /// Space and object figures as of now, read from memory without I/O (cheap enough for
    /// every `lunarctl pool status` and metrics scrape). Capacity, used, free and reserved are
    /// exact; per-volume unique figures are not part of it (see [`Pool::reconcile_space`]).
    pub fn status(&self) -> PoolStatus {
        let st = self.inner.state.read();
        let sb = st.soft_pct;
        let cs = self.inner.layout.chunk_size;
        let total = st.alloc.total();
        let used = st.meta.used;
        let reached = st.threshold_reached();
        PoolStatus {
            uuid: self.inner.uuid,
            capacity_bytes: total * cs,
            used_bytes: used * cs,
            free_bytes: (total - used.min(total)) * cs,
            pending_free_bytes: st.pending_count * cs,
            reserved_bytes: st.meta.reserved * cs,
            chunk_size: cs as u32,
            soft_threshold_pct: sb,
            soft_threshold_reached: reached,
            volumes: st.meta.views.values().filter(|v| v.is_volume()).count(),
            snapshots: st
                .meta
                .views
                .values()
                .filter(|v| matches!(v.kind, ViewKind::Snapshot { .. }))
                .count(),
            layers: st.meta.layers.len(),
        }
    }

    fn find_volume(st: &State, name: &str) -> Result<ViewId> {
        st.meta.find_volume(name).ok_or_else(|| vol_not_found(name))
    }

    /// Create a thin (`Guarantee::None`) or fully reserved volume.
    pub async fn create_volume(
        &self,
        name: &str,
        size_bytes: u64,
        block_size: u32,
        guarantee: Guarantee,
    ) -> Result<VolumeInfo> {
        self.inner.check_open()?;
        check_name("volume", name)?;
        if block_size != 512 && block_size != 4096 {
            return Err(StorageError::InvalidArgument(format!(
                "block size {block_size} must be 512 or 4096"
            )));
        }
        if size_bytes == 0
            || !size_bytes.is_multiple_of(block_size as u64)
            || size_bytes > MAX_VOLUME_BYTES
        {
            return Err(StorageError::InvalidArgument(format!(
                "volume size {size_bytes} must be a non-zero multiple of the block size {block_size}, at most 2^60"
            )));
        }
        let id = {
            let mut st = self.inner.state.write();
            st.check_failed()?;
            if st.meta.find_volume(name).is_some() {
                return Err(StorageError::AlreadyExists(format!("volume '{name}'")));
            }
            let full = guarantee == Guarantee::Full;
            if full {
                st.need(st.meta.chunks(size_bytes))?;
            }
            let view = st.meta.new_id();
            let layer = st.meta.new_id();
            st.log(Rec::CreateVolume {
                view,
                layer,
                name: name.to_string(),
                uuid: uuid::Uuid::new_v4(),
                size: size_bytes,
                block_size,
                full,
                created: now_unix(),
            })?;
            view
        };
        self.inner.flush().await?;
        tracing::info!(volume = name, size_bytes, ?guarantee, "volume created");
        self.info_of(id)
    }

    pub(crate) fn info_of(&self, id: ViewId) -> Result<VolumeInfo> {
        let st = self.inner.state.read();
        space::volume_info(&st, id).ok_or_else(|| StorageError::NotFound("volume not found".into()))
    }

    /// I/O handle for a volume.
    pub fn volume(&self, name: &str) -> Result<Volume> {
        let id = Self::find_volume(&self.inner.state.read(), name)?;
        Ok(Volume::new(self.inner.clone(), id, self.inner.rt(id)))
    }

    /// Info about one volume.
    pub fn volume_info(&self, name: &str) -> Result<VolumeInfo> {
        let st = self.inner.state.read();
        let id = Self::find_volume(&st, name)?;
        space::volume_info(&st, id).ok_or_else(|| vol_not_found(name))
    }

    /// All volumes, sorted by name.
    pub fn volumes(&self) -> Vec<VolumeInfo> {
        let st = self.inner.state.read();
        let mut v: Vec<VolumeInfo> = st
            .meta
            .views
            .iter()
            .filter(|(_, v)| v.is_volume())
            .filter_map(|(&id, _)| space::volume_info(&st, id))
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// Grow a volume, or shrink it when `allow_shrink` (data beyond the new end is freed).
    /// A full volume's grow must fit the free space (`GuaranteeUnavailable`).
    pub async fn resize_volume(
        &self,
        name: &str,
        new_size_bytes: u64,
        allow_shrink: bool,
    ) -> Result<VolumeInfo> {
        self.inner.check_open()?;
        let id = Self::find_volume(&self.inner.state.read(), name)?;
        let rt = self.inner.rt(id);
        let _gate = rt.gate.write().await;
        let (old, bs, full) = {
            let st = self.inner.state.read();
            let (_, size, bs, full) = st.volume(id)?;
            (size, bs, full)
        };
        if new_size_bytes == 0
            || !new_size_bytes.is_multiple_of(bs as u64)
            || new_size_bytes > MAX_VOLUME_BYTES
        {
            return Err(StorageError::InvalidArgument(format!(
                "new size {new_size_bytes} must be a non-zero multiple of the block size {bs}, at most 2^60"
            )));
        }
        if new_size_bytes < old && !allow_shrink {
            return Err(StorageError::InvalidArgument(format!(
                "shrinking '{name}' from {old} to {new_size_bytes} bytes needs an explicit shrink"
            )));
        }
        if new_size_bytes > old {
            let cs = self.inner.layout.chunk_size;
            {
                let st = self.inner.state.read();
                if full {
                    st.need(st.meta.chunks(new_size_bytes) - st.meta.chunks(old))?;
                }
            }
            // The tail of the old last chunk may hold data from before a shrink: zero it.
            if old % cs != 0 {
                let vol = Volume::new(self.inner.clone(), id, rt.clone());
                let index = old / cs;
                let from = (old % cs) as usize;
                let mapped = {
                    self.inner
                        .state
                        .read()
                        .meta
                        .resolve(st_top(&self.inner, id)?, index)
                        .is_some()
                };
                if mapped {
                    let z = self.inner.zero_chunk.slice(from..);
                    vol.write_chunk(index, from, vec![z]).await?;
                }
            }
        }
        {
            let mut st = self.inner.state.write();
            st.check_failed()?;
            st.log(Rec::Resize {
                view: id,
                size: new_size_bytes,
            })?;
        }
        self.inner.flush().await?;
        tracing::info!(volume = name, old, new = new_size_bytes, "volume resized");
        self.info_of(id)
    }

    /// Delete a volume and its snapshots. Clones of it stay valid (they keep what they share).
    pub async fn delete_volume(&self, name: &str) -> Result<()> {
        self.inner.check_open()?;
        let id = Self::find_volume(&self.inner.state.read(), name)?;
        let rt = self.inner.rt(id);
        let _gate = rt.gate.write().await;
        {
            let mut st = self.inner.state.write();
            st.check_failed()?;
            if !st.meta.views.contains_key(&id) {
                return Err(vol_not_found(name));
            }
            for s in st.meta.snapshots_of(id) {
                st.log(Rec::DeleteView { view: s })?;
            }
            st.log(Rec::DeleteView { view: id })?;
            rt.deleted.store(true, Ordering::Release);
        }
        self.inner.vols.lock().remove(&id);
        self.inner.flush().await?;
        tracing::info!(volume = name, "volume deleted");
        Ok(())
    }

    /// Rename a volume (its UUID and open handles stay valid).
    pub async fn rename_volume(&self, old: &str, new: &str) -> Result<()> {
        self.inner.check_open()?;
        check_name("volume", new)?;
        {
            let mut st = self.inner.state.write();
            st.check_failed()?;
            let id = Self::find_volume(&st, old)?;
            if old == new {
                return Ok(());
            }
            if st.meta.find_volume(new).is_some() {
                return Err(StorageError::AlreadyExists(format!("volume '{new}'")));
            }
            st.log(Rec::Rename {
                view: id,
                name: new.to_string(),
            })?;
        }
        self.inner.flush().await
    }

    /// Change the space guarantee. Going to `Full` reserves what the volume could still need.
    pub async fn set_guarantee(&self, name: &str, g: Guarantee) -> Result<()> {
        self.inner.check_open()?;
        {
            let mut st = self.inner.state.write();
            st.check_failed()?;
            let id = Self::find_volume(&st, name)?;
            let (top, size, _, full) = st.volume(id)?;
            let want = g == Guarantee::Full;
            if want == full {
                return Ok(());
            }
            if want {
                let owned = st.meta.layers.get(&top).map_or(0, |l| l.owned);
                st.need(st.meta.chunks(size).saturating_sub(owned))?;
            }
            st.log(Rec::SetGuarantee {
                view: id,
                full: want,
            })?;
        }
        self.inner.flush().await
    }

    /// Take a read-only snapshot (O(1)).
    pub async fn snapshot(&self, volume: &str, snap: &str) -> Result<SnapshotInfo> {
        let mut v = self.snapshot_group(&[(volume, snap)]).await?;
        v.pop().ok_or_else(|| snap_not_found(volume, snap))
    }

    /// Snapshot several volumes at one instant: all or none, in one journal commit.
    pub async fn snapshot_group(&self, pairs: &[(&str, &str)]) -> Result<Vec<SnapshotInfo>> {
        self.inner.check_open()?;
        for (_, s) in pairs {
            check_name("snapshot", s)?;
        }
        let mut ids = Vec::new();
        {
            let st = self.inner.state.read();
            for (v, _) in pairs {
                ids.push(Self::find_volume(&st, v)?);
            }
        }
        let distinct: std::collections::BTreeSet<ViewId> = ids.iter().copied().collect();
        if distinct.len() != ids.len() {
            return Err(StorageError::InvalidArgument(
                "a volume appears twice in the snapshot group".into(),
            ));
        }
        let snaps = self
            .inner
            .change_together(&ids, |st| {
                let mut need = 0;
                for (&id, (vname, sname)) in ids.iter().zip(pairs) {
                    let (top, _, _, full) = st.volume(id).map_err(|_| vol_not_found(vname))?;
                    if st.meta.find_snapshot(id, sname).is_some() {
                        return Err(StorageError::AlreadyExists(format!(
                            "snapshot '{vname}@{sname}'"
                        )));
                    }
                    if full {
                        need += st.meta.layers.get(&top).map_or(0, |l| l.owned);
                    }
                }
                st.need(need)?;
                let created = now_unix();
                let mut snaps = Vec::new();
                for (&vol, (_, sname)) in ids.iter().zip(pairs) {
                    let snap = st.meta.new_id();
                    let new_top = st.meta.new_id();
                    st.log(Rec::Snapshot {
                        vol,
                        snap,
                        name: sname.to_string(),
                        uuid: uuid::Uuid::new_v4(),
                        new_top,
                        created,
                    })?;
                    snaps.push(snap);
                }
                Ok(snaps)
            })
            .await?;
        let st = self.inner.state.read();
        for (v, s) in pairs {
            tracing::info!(volume = v, snapshot = s, "snapshot taken");
        }
        Ok(snaps
            .iter()
            .filter_map(|&s| space::snapshot_info(&st, s))
            .collect())
    }

    /// List snapshots of one volume, or of all volumes; sorted by volume then creation.
    pub fn snapshots(&self, volume: Option<&str>) -> Vec<SnapshotInfo> {
        let st = self.inner.state.read();
        let filter = match volume {
            Some(name) => match st.meta.find_volume(name) {
                Some(id) => Some(id),
                None => return Vec::new(),
            },
            None => None,
        };
        let mut out: Vec<(ViewId, SnapshotInfo)> = st
            .meta
            .views
            .iter()
            .filter(|(_, v)| matches!(v.kind, ViewKind::Snapshot { volume, .. } if filter.is_none_or(|f| f == volume)))
            .filter_map(|(&id, _)| space::snapshot_info(&st, id).map(|i| (id, i)))
            .collect();
        out.sort_by(|a, b| a.1.volume.cmp(&b.1.volume).then(a.0.cmp(&b.0)));
        out.into_iter().map(|(_, i)| i).collect()
    }

    pub(crate) fn find_snapshot(st: &State, volume: &str, snap: &str) -> Result<(ViewId, ViewId)> {
        let v = Self::find_volume(st, volume)?;
        let s = st
            .meta
            .find_snapshot(v, snap)
            .ok_or_else(|| snap_not_found(volume, snap))?;
        Ok((v, s))
    }

    /// Delete a snapshot. Never refused: clones of it keep what they need.
    pub async fn delete_snapshot(&self, volume: &str, snap: &str) -> Result<()> {
        self.inner.check_open()?;
        {
            let mut st = self.inner.state.write();
            st.check_failed()?;
            let (_, s) = Self::find_snapshot(&st, volume, snap)?;
            st.log(Rec::DeleteView { view: s })?;
        }
        self.inner.flush().await?;
        tracing::info!(volume, snapshot = snap, "snapshot deleted");
        Ok(())
    }

    /// Roll a volume back to one of its snapshots (size included). Later snapshots stay.
    pub async fn rollback(&self, volume: &str, snap: &str) -> Result<()> {
        // One volume is a group of one: the same checks, space accounting and record.
        self.rollback_group(&[(volume, snap)]).await
    }

    /// Clone "vol@snap" or live "vol" (an implicit snapshot) as a new writable volume.
    /// `guarantee` None inherits the source's.
    pub async fn clone_volume(
        &self,
        source: &str,
        name: &str,
        guarantee: Option<Guarantee>,
    ) -> Result<VolumeInfo> {
        self.inner.check_open()?;
        check_name("volume", name)?;
        let (vname, sname) = match source.split_once('@') {
            Some((v, s)) => (v, Some(s)),
            None => (source, None),
        };
        let vid = Self::find_volume(&self.inner.state.read(), vname)?;
        let rt = self.inner.rt(vid);
        // A live clone freezes the source's top, which must not race its writes.
        let _gate = if sname.is_none() {
            Some(rt.gate.write().await)
        } else {
            None
        };
        let id = {
            let mut st = self.inner.state.write();
            st.check_failed()?;
            if st.meta.find_volume(name).is_some() {
                return Err(StorageError::AlreadyExists(format!("volume '{name}'")));
            }
            let (top, size, _, src_full) = st.volume(vid).map_err(|_| vol_not_found(vname))?;
            let full = guarantee.map_or(src_full, |g| g == Guarantee::Full);
            let view = st.meta.new_id();
            let layer = st.meta.new_id();
            let created = now_unix();
            let uuid = uuid::Uuid::new_v4();
            match sname {
                Some(s) => {
                    let sid = st
                        .meta
                        .find_snapshot(vid, s)
                        .ok_or_else(|| snap_not_found(vname, s))?;
                    let ssize = st.meta.views.get(&sid).map_or(0, |v| v.size);
                    if full {
                        st.need(st.meta.chunks(ssize))?;
                    }
                    st.log(Rec::CloneSnap {
                        snap: sid,
                        view,
                        layer,
                        name: name.to_string(),
                        uuid,
                        full,
                        created,
                        origin: source.to_string(),
                    })?;
                }
                None => {
                    let mut need = if full { st.meta.chunks(size) } else { 0 };
                    if src_full {
                        need += st.meta.layers.get(&top).map_or(0, |l| l.owned);
                    }
                    st.need(need)?;
                    let new_top = st.meta.new_id();
                    st.log(Rec::CloneLive {
                        vol: vid,
                        new_top,
                        view,
                        layer,
                        name: name.to_string(),
                        uuid,
                        full,
                        created,
                        origin: source.to_string(),
                    })?;
                }
            }
            view
        };
        self.inner.flush().await?;
        tracing::info!(source, clone = name, "clone created");
        self.info_of(id)
    }

    /// Start splitting a clone from what it shares: it copies everything it still resolves
    /// through ancestors into its own top, then detaches. Runs in the background.
    pub fn start_split(&self, name: &str) -> Result<SplitJob> {
        self.inner.check_open()?;
        let id = Self::find_volume(&self.inner.state.read(), name)?;
        crate::split::start(self.inner.clone(), id, name.to_string())
    }

    /// Make everything acknowledged so far durable (one group commit).
    pub async fn flush(&self) -> Result<()> {
        self.inner.check_open()?;
        self.inner.flush().await
    }

    /// Write a checkpoint now: the metadata image replaces the journal half written so far,
    /// and appends go on in the other half (the commit thread does this on its own when a
    /// half fills, and at close).
    /// Everything acknowledged before the call is durable when it returns.
    pub async fn checkpoint(&self) -> Result<()> {
        self.inner.check_open()?;
        let rx = self.inner.commit.request_checkpoint();
        rx.await.unwrap_or_else(|_| {
            Err(StorageError::io(
                "writing a checkpoint",
                std::io::Error::other("commit thread stopped"),
            ))
        })
    }

    /// Benchmarks only (feature `bench-internals`): map chunks `first..first + count` of
    /// volume `name` to free data chunks *without writing them* (they read whatever the pool
    /// holds there: zeros in a new sparse file), to build a pool with millions of mapped
    /// chunks in seconds. Records are logged and committed like any others.
    #[cfg(feature = "bench-internals")]
    #[doc(hidden)]
    pub async fn bench_map_unwritten(&self, name: &str, first: u64, count: u64) -> Result<()> {
        self.inner.check_open()?;
        {
            let mut st = self.inner.state.write();
            let id = Self::find_volume(&st, name)?;
            let (top, ..) = st.volume(id)?;
            for index in first..first + count {
                let phys = st.alloc.allocate().ok_or(StorageError::NoSpace)?;
                st.log(Rec::Map {
                    layer: top,
                    index,
                    phys,
                })?;
            }
        }
        self.inner.flush().await
    }

    /// Benchmarks only (feature `bench-internals`): with `on`, checkpoints copy the live
    /// maps out under the metadata lock and image that copy, as they did before the replica
    /// (docs/decisions/0015-checkpoint-replica.md), so one run can measure both.
    #[cfg(feature = "bench-internals")]
    #[doc(hidden)]
    pub fn bench_full_capture(&self, on: bool) {
        self.inner.full_capture.store(on, Ordering::Release);
    }

    /// Benchmarks only (feature `bench-internals`): with `on`, checkpoints hold the journal
    /// lock throughout (encode, write, both syncs), as they did before the journal was
    /// double-buffered (docs/decisions/0021-double-buffered-journal.md), so one run can
    /// measure the first-write stall both ways.
    #[cfg(feature = "bench-internals")]
    #[doc(hidden)]
    pub fn bench_checkpoint_holds_journal(&self, on: bool) {
        self.inner.ckpt_hold_journal.store(on, Ordering::Release);
    }

    /// Benchmarks only (feature `bench-internals`): with `on`, the commit thread waits for
    /// every checkpoint it starts and seals nothing meanwhile, as before checkpoints ran on
    /// a thread of their own (docs/decisions/0029-checkpoint-thread.md), so one run can
    /// measure flush latency during a checkpoint both ways.
    #[cfg(feature = "bench-internals")]
    #[doc(hidden)]
    pub fn bench_checkpoint_inline(&self, on: bool) {
        self.inner.ckpt_inline.store(on, Ordering::Release);
    }

    /// Recompute unique/shared figures now and reclaim garbage hidden by every viewer.
    pub async fn reconcile_space(&self) -> Result<()> {
        self.inner.check_open()?;
        space::reconcile(&self.inner);
        self.inner.flush().await
    }

    /// Watch the soft threshold: `reached` turns `true` when used + reserved space reaches
    /// `soft_threshold_pct` of capacity and back to `false` when it drops below, and
    /// `crossings` counts the rising edges, so a subscriber that wakes up late still sees
    /// each of them (the daemon raises THIN PROVISIONING SOFT THRESHOLD REACHED on every
    /// rising edge).
    pub fn soft_threshold_watch(
        &self,
    ) -> tokio::sync::watch::Receiver<crate::types::SoftThreshold> {
        self.inner.state.read().threshold.subscribe()
    }

    /// Bytes a metadata checkpoint would take right now (for sizing and benchmarks; O(metadata)).
    pub fn metadata_image_bytes(&self) -> u64 {
        let st = self.inner.state.read();
        crate::checkpoint::encode(&st.meta, &self.inner.uuid).len() as u64
    }

    /// Verify every invariant (fsck).
    pub async fn check(&self) -> Result<CheckReport> {
        let st = self.inner.state.read();
        Ok(crate::check::check(&st))
    }

    /// Flush, write a checkpoint, stop background work and release the pool file.
    /// Later operations through any handle fail.
    pub async fn close(&self) -> Result<()> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Ok(());
        }
        let rx = self.inner.commit.request_checkpoint();
        let res = rx.await.unwrap_or_else(|_| {
            Err(StorageError::io(
                "closing",
                std::io::Error::other("commit thread stopped"),
            ))
        });
        self.inner.closed.store(true, Ordering::Release);
        self.inner.commit.shutdown();
        let handle = self.committer.lock().take();
        if let Some(h) = handle {
            let _ = tokio::task::spawn_blocking(move || h.join()).await;
        }
        self.inner.dev.unlock();
        tracing::info!(pool = %self.inner.name, "pool closed");
        res
    }
}

fn st_top(inner: &PoolInner, id: ViewId) -> Result<u64> {
    Ok(inner.state.read().volume(id)?.0)
}

fn join_err(e: tokio::task::JoinError) -> StorageError {
    StorageError::io(
        "running a blocking task",
        std::io::Error::other(e.to_string()),
    )
}

trait BlockLike {
    fn is_block_device_like(&self) -> bool;
}

impl BlockLike for std::fs::FileType {
    fn is_block_device_like(&self) -> bool {
        use std::os::unix::fs::FileTypeExt;
        self.is_block_device()
    }
}
