//! Volume I/O handle: the data path.
//!
//! A request is split at chunk boundaries and the pieces run concurrently. Reads resolve the
//! top layer, then ancestors. A write to a chunk the top owns goes in place with no metadata
//! change; a first write allocates a new chunk, writes it whole in one gathered write (the
//! caller's buffers between the old resolved contents outside the written range, or zeros),
//! and only then maps it (data before mapping).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures_util::future::try_join_all;

use crate::engine::{lock_exclusive, lock_shared, AllocFail, PoolInner, StripeGuard, VolRt};
use crate::layer::{Rec, ViewId, HOLE};
use crate::{Result, StorageError, VolumeInfo};

/// Cheap-to-clone I/O handle for one volume. After the volume is deleted, I/O fails with
/// `NotFound`. Resize and rename are visible through existing handles.
#[derive(Clone)]
pub struct Volume {
    inner: Arc<PoolInner>,
    id: ViewId,
    rt: Arc<VolRt>,
}

/// Unmaps spanning more chunks than this visit only the chunks some layer maps.
const UNMAP_SCAN_LIMIT: u64 = 4096;

/// One chunk-sized piece of a request.
/// Largest merged run of chunks in one device request (RBD): far below what one librbd call
/// takes, large enough that a run costs one round trip for any usual transfer.
const MAX_RUN: usize = 64 << 20;

/// Zeros a first write into a chunk nothing below the volume maps is padded with: shared,
/// so a 4 KiB first write into a 64 KiB chunk allocates, clears and copies nothing.
static ZEROS: [u8; 64 << 10] = [0; 64 << 10];

/// `n` zero bytes as pieces of [`ZEROS`], appended to `out`.
fn push_zeros(out: &mut Vec<Bytes>, mut n: usize) {
    while n > 0 {
        let k = n.min(ZEROS.len());
        out.push(Bytes::from_static(&ZEROS[..k]));
        n -= k;
    }
}

struct Piece {
    index: u64,
    off: usize,
    len: usize,
}

fn pieces(start: u64, len: u64, cs: u64) -> Vec<Piece> {
    let mut out = Vec::new();
    let mut pos = start;
    let end = start + len;
    while pos < end {
        let index = pos / cs;
        let off = pos % cs;
        let n = (cs - off).min(end - pos);
        out.push(Piece {
            index,
            off: off as usize,
            len: n as usize,
        });
        pos += n;
    }
    out
}

impl Volume {
    pub(crate) fn new(inner: Arc<PoolInner>, id: ViewId, rt: Arc<VolRt>) -> Volume {
        Volume { inner, id, rt }
    }

    fn gone(&self) -> StorageError {
        StorageError::NotFound("volume not found (deleted)".into())
    }

    fn alive(&self) -> Result<()> {
        self.inner.check_open()?;
        if self.rt.deleted.load(Ordering::Acquire) {
            return Err(self.gone());
        }
        Ok(())
    }

    /// Current name.
    pub fn name(&self) -> String {
        self.inner
            .state
            .read()
            .meta
            .views
            .get(&self.id)
            .map(|v| v.name.clone())
            .unwrap_or_default()
    }
    /// Stable identity.
    pub fn uuid(&self) -> uuid::Uuid {
        self.inner
            .state
            .read()
            .meta
            .views
            .get(&self.id)
            .map_or(uuid::Uuid::nil(), |v| v.uuid)
    }
    /// Logical block size.
    pub fn block_size(&self) -> u32 {
        self.inner
            .state
            .read()
            .meta
            .views
            .get(&self.id)
            .map_or(512, |v| v.block_size)
    }
    /// Current number of logical blocks (0 once deleted).
    pub fn num_blocks(&self) -> u64 {
        self.inner
            .state
            .read()
            .meta
            .views
            .get(&self.id)
            .map_or(0, |v| v.size / v.block_size as u64)
    }
    /// Current figures. A deleted volume reports its name empty and sizes zero.
    pub fn info(&self) -> VolumeInfo {
        let st = self.inner.state.read();
        crate::space::volume_info(&st, self.id).unwrap_or_else(crate::space::empty_info)
    }

    /// Bounds-check a request; returns (top layer, byte offset, byte length, full).
    fn prepare(&self, lba: u64, blocks: u64) -> Result<(u64, u64, u64, bool)> {
        self.alive()?;
        let st = self.inner.state.read();
        st.check_failed()?;
        let (top, size, bs, full) = st.volume(self.id).map_err(|_| self.gone())?;
        let cap = size / bs as u64;
        if lba.checked_add(blocks).is_none_or(|e| e > cap) {
            return Err(StorageError::OutOfRange {
                lba,
                blocks,
                capacity_blocks: cap,
            });
        }
        Ok((top, lba * bs as u64, blocks * bs as u64, full))
    }

    /// Read `blocks` blocks at `lba`. Unwritten blocks read as zeros.
    ///
    /// The result is one buffer the chunk pieces are read into directly: no zero-fill
    /// before the read and no copy to join the pieces afterwards.
    pub async fn read(&self, lba: u64, blocks: u32) -> Result<Bytes> {
        let _g = lock_shared(&self.rt.gate).await;
        let (top, off, len, _) = self.prepare(lba, blocks as u64)?;
        let cs = self.inner.layout.chunk_size;
        let len = len as usize;
        let mut out;
        let one_chunk = off % cs + len as u64 <= cs;
        if self.inner.dev.prefers_large_io() || !one_chunk {
            // Runs of physically consecutive chunks are one device read: a 1 MiB read of
            // 64 KiB chunks laid down in order is one `preadv` (or one librbd request)
            // instead of sixteen, each with its own stripe lock, map lookup and syscall.
            let (guards, runs) = self.lock_runs(top, &pieces(off, len as u64, cs)).await;
            if let ([(n, Some(at))], true) = (&runs[..], self.inner.dev.prefers_large_io()) {
                let (n, at) = (*n, *at);
                // One run of data (every 4 KiB read, most sequential ones): the buffer
                // librbd reads into becomes the result, no copy.
                let data = self.inner.io.read(at, n).await?;
                drop(guards);
                return Ok(Bytes::from(data));
            }
            out = BytesMut::with_capacity(len);
            self.read_runs_into(&runs, &mut out.spare_capacity_mut()[..len])
                .await?;
            drop(guards);
        } else {
            // One chunk (every 4 KiB read): no piece list to allocate.
            out = BytesMut::with_capacity(len);
            let spare = &mut out.spare_capacity_mut()[..len];
            let p = Piece {
                index: off / cs,
                off: (off % cs) as usize,
                len,
            };
            self.read_piece_into(top, &p, spare).await?;
        }
        // SAFETY: the pieces (or the runs made of them) cover `0..len` exactly, and each
        // returned Ok only after initialising its whole slice.
        unsafe { out.set_len(len) };
        Ok(out.freeze())
    }

    /// Plan a read as runs of pieces whose chunks are physically consecutive, `(bytes,
    /// device offset)`, or `(bytes, None)` for holes: a 1 MiB read of 64 KiB chunks laid
    /// down in order is one request instead of sixteen (a network round trip each on RBD; a
    /// syscall, a stripe lock and a map lookup each on a file). Returns the stripe guards the
    /// read must hold until it has its data.
    ///
    /// Every stripe the pieces touch is held shared, taken in stripe order: writers hold one
    /// stripe at a time and readers take theirs in one global order, so no wait cycle can
    /// form.
    async fn lock_runs(
        &self,
        top: u64,
        ps: &[Piece],
    ) -> (
        Vec<tokio::sync::RwLockReadGuard<'_, ()>>,
        Vec<(usize, Option<u64>)>,
    ) {
        let mut stripes: Vec<usize> = ps.iter().map(|p| self.rt.stripe_no(p.index)).collect();
        stripes.sort_unstable();
        stripes.dedup();
        let mut guards = Vec::with_capacity(stripes.len());
        for i in stripes {
            guards.push(lock_shared(&self.rt.stripes[i]).await);
        }
        let phys: Vec<Option<u64>> = {
            let st = self.inner.state.read();
            ps.iter()
                .map(|p| self.rt.chain.resolve(&st.meta, top, p.index))
                .collect()
        };
        // Runs: (byte length, device offset or None for zeros).
        let mut runs: Vec<(usize, Option<u64>)> = Vec::new();
        for (p, ph) in ps.iter().zip(&phys) {
            let dev_off = ph.map(|c| self.inner.layout.chunk_offset(c) + p.off as u64);
            if let Some((len, last)) = runs.last_mut() {
                let joins = *len + p.len <= MAX_RUN
                    && match (*last, dev_off) {
                        (Some(a), Some(b)) => a + *len as u64 == b,
                        (None, None) => true,
                        _ => false,
                    };
                if joins {
                    *len += p.len;
                    continue;
                }
            }
            runs.push((p.len, dev_off));
        }
        (guards, runs)
    }

    /// Fill `buf` (uninitialised on entry) from `runs` ([`Volume::lock_runs`]; the caller
    /// holds its guards): one device read per run of data, zeros for holes.
    async fn read_runs_into(
        &self,
        runs: &[(usize, Option<u64>)],
        buf: &mut [std::mem::MaybeUninit<u8>],
    ) -> Result<()> {
        let mut slices = Vec::with_capacity(runs.len());
        let mut rest = buf;
        for &(len, _) in runs {
            let (head, tail) = rest.split_at_mut(len);
            slices.push(head);
            rest = tail;
        }
        try_join_all(
            runs.iter()
                .zip(slices)
                .map(|(&(_, dev_off), b)| async move {
                    match dev_off {
                        None => {
                            b.fill(std::mem::MaybeUninit::new(0));
                            Ok(())
                        }
                        Some(o) => self.inner.io.read_into(o, b).await,
                    }
                }),
        )
        .await?;
        Ok(())
    }

    /// Fill `buf` (piece `p`'s bytes, uninitialised on entry) with the piece's data or zeros.
    async fn read_piece_into(
        &self,
        top: u64,
        p: &Piece,
        buf: &mut [std::mem::MaybeUninit<u8>],
    ) -> Result<()> {
        let _s = lock_shared(self.rt.stripe(p.index)).await;
        let phys = self
            .rt
            .chain
            .resolve(&self.inner.state.read().meta, top, p.index);
        match phys {
            None => {
                buf.fill(std::mem::MaybeUninit::new(0));
                Ok(())
            }
            Some(c) => {
                self.inner
                    .io
                    .read_into(self.inner.layout.chunk_offset(c) + p.off as u64, buf)
                    .await
            }
        }
    }

    /// Write `data` (a whole number of blocks) at `lba`. With `fua` the write is durable on return.
    pub async fn write(&self, lba: u64, data: Bytes, fua: bool) -> Result<()> {
        self.write_vectored(lba, vec![data], fua).await
    }

    /// Gather-write: the buffers are written back to back from `lba`.
    pub async fn write_vectored(&self, lba: u64, bufs: Vec<Bytes>, fua: bool) -> Result<()> {
        let total: u64 = bufs.iter().map(|b| b.len() as u64).sum();
        let bs = self.block_size() as u64;
        if !total.is_multiple_of(bs) {
            return Err(StorageError::InvalidArgument(format!(
                "write of {total} bytes is not a multiple of the block size {bs}"
            )));
        }
        if total == 0 {
            return Ok(());
        }
        {
            let _g = lock_shared(&self.rt.gate).await;
            let (_, off, len, _) = self.prepare(lba, total / bs)?;
            let cs = self.inner.layout.chunk_size;
            let ps = pieces(off, len, cs);
            // Slice the caller's buffers per piece without copying.
            let mut per_piece = Vec::with_capacity(ps.len());
            let mut bi = 0usize;
            let mut boff = 0usize;
            for p in &ps {
                let mut need = p.len;
                let mut parts = Vec::new();
                while need > 0 {
                    let b = &bufs[bi];
                    let take = (b.len() - boff).min(need);
                    parts.push(b.slice(boff..boff + take));
                    need -= take;
                    boff += take;
                    if boff == b.len() {
                        bi += 1;
                        boff = 0;
                    }
                }
                per_piece.push(parts);
            }
            let merged = if ps.len() > 1
                && self.inner.dev.prefers_large_io()
                && self.inner.dev.atomic_blocks()
            {
                self.write_runs_in_place(&ps, &per_piece).await?
            } else {
                None
            };
            let lsn = match merged {
                Some(lsn) => lsn,
                None => try_join_all(
                    ps.iter()
                        .zip(per_piece)
                        .map(|(p, parts)| self.write_chunk(p.index, p.off, parts)),
                )
                .await?
                .into_iter()
                .max()
                .unwrap_or(0),
            };
            if !fua {
                self.inner.publish(lsn).await?;
            }
        }
        if fua {
            self.inner.flush().await?;
        }
        Ok(())
    }

    /// On a device where every operation is a round trip and blocks are atomic (RBD): when
    /// the top owns every chunk of a multi-chunk write, write each run of physically
    /// consecutive chunks with one request (a 1 MiB write of 64 KiB chunks laid down in
    /// order: one request instead of sixteen). Returns the LSN to publish, as
    /// [`Volume::write_chunk`] does, or `None` with nothing written when some chunk needs a
    /// first write or copy-on-write (the caller then writes piece by piece). The stripes are
    /// held shared (in-place writes on such a device, see `write_chunk`), taken in stripe
    /// order like a merged read's.
    async fn write_runs_in_place(
        &self,
        ps: &[Piece],
        per_piece: &[Vec<Bytes>],
    ) -> Result<Option<u64>> {
        let mut stripes: Vec<usize> = ps.iter().map(|p| self.rt.stripe_no(p.index)).collect();
        stripes.sort_unstable();
        stripes.dedup();
        let mut guards = Vec::with_capacity(stripes.len());
        for i in stripes {
            guards.push(lock_shared(&self.rt.stripes[i]).await);
        }
        let mut runs: Vec<(u64, usize, Vec<Bytes>)> = Vec::new();
        let mut lsn = 0;
        for (p, parts) in ps.iter().zip(per_piece) {
            let Some(c) = self.owned_phys_settled(p.index).await? else {
                return Ok(None);
            };
            lsn = lsn.max(self.rt.map_lsn(p.index).load(Ordering::Acquire));
            let at = self.inner.layout.chunk_offset(c) + p.off as u64;
            match runs.last_mut() {
                Some((start, len, bufs))
                    if *start + *len as u64 == at && *len + p.len <= MAX_RUN =>
                {
                    *len += p.len;
                    bufs.extend(parts.iter().cloned());
                }
                _ => runs.push((at, p.len, parts.clone())),
            }
        }
        try_join_all(
            runs.into_iter()
                .map(|(at, _, bufs)| self.inner.write_data(at, bufs)),
        )
        .await?;
        drop(guards);
        Ok(Some(lsn))
    }

    /// Write `parts` at byte `off` of logical chunk `index` (caller holds the gate shared or
    /// exclusively). Returns the LSN the caller must publish before acknowledging
    /// ([`PoolInner::publish`]): the `Map` record a first write logged, or for an in-place
    /// write the latest `Map` logged on the chunk's stripe.
    pub(crate) async fn write_chunk(
        &self,
        index: u64,
        off: usize,
        parts: Vec<Bytes>,
    ) -> Result<u64> {
        let cs = self.inner.layout.chunk_size;
        let len: usize = parts.iter().map(|b| b.len()).sum();
        // Fast path: the top owns the chunk, overwrite in place. Exclusive against reads of
        // the chunk, so a read sees each block wholly before or wholly after a write — the
        // sector atomicity disks give and VMFS's heartbeat reads rely on. (Page-cache copies
        // run on several threads at once; nothing below would order them.)
        //
        // The chunk's own `Map` record may not be published yet: the first write that logged
        // it releases the stripe before its request publishes. An in-place write acknowledged
        // before that publish would die with a killed process, mapping and all, so it returns
        // the LSN of the stripe's latest `Map` for the caller to publish (usually already
        // published: one atomic load).
        //
        // On a device that makes every block read or write atomic by itself (an RBD image:
        // a block never straddles a RADOS object, and an object's operations apply whole and
        // in order) the stripe is taken shared: only allocation changes need excluding
        // there, and an exclusive stripe held for a round trip to the OSDs serialised
        // unrelated writes (64 stripes: 32 writers in flight collided half the time).
        {
            let _s = if self.inner.dev.atomic_blocks() {
                StripeGuard::Shared(lock_shared(self.rt.stripe(index)).await)
            } else {
                StripeGuard::Exclusive(lock_exclusive(self.rt.stripe(index)).await)
            };
            if let Some(p) = self.owned_phys_settled(index).await? {
                self.inner
                    .write_data(self.inner.layout.chunk_offset(p) + off as u64, parts)
                    .await?;
                return Ok(self.rt.map_lsn(index).load(Ordering::Acquire));
            }
        }
        // First write: ordered against every other access to this chunk of this volume.
        let _s = lock_exclusive(self.rt.stripe(index)).await;
        if let Some(p) = self.owned_phys_settled(index).await? {
            self.inner
                .write_data(self.inner.layout.chunk_offset(p) + off as u64, parts)
                .await?;
            return Ok(self.rt.map_lsn(index).load(Ordering::Acquire));
        }
        let (top, full, old) = {
            let st = self.inner.state.read();
            let (top, _, _, full) = st.volume(self.id).map_err(|_| self.gone())?;
            let old = match st
                .meta
                .layers
                .get(&top)
                .and_then(|l| l.map.get(&index).copied())
            {
                Some(HOLE) => None,
                Some(p) => Some(p),
                None => st.meta.resolve_parent(top, index),
            };
            (top, full, old)
        };
        let phys = self.allocate(full).await?;
        if old.is_some() {
            self.inner
                .stats
                .cow_ops
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        let body: Vec<Bytes> = match old {
            _ if off == 0 && len == cs as usize => parts,
            None => {
                // Nothing to copy: the write between zeros, gathered by the device write.
                let mut body = Vec::with_capacity(parts.len() + 4);
                push_zeros(&mut body, off);
                let tail = cs as usize - off - len;
                body.extend(parts);
                push_zeros(&mut body, tail);
                body
            }
            Some(q) => {
                // Only what lies outside the written range is carried over from the old
                // chunk, and the new chunk is written as head, the caller's buffers, tail in
                // one gathered write: no chunk-sized buffer to copy the write into.
                let tail = cs as usize - off - len;
                self.inner
                    .stats
                    .cow_bytes
                    .fetch_add((off + tail) as u64, std::sync::atomic::Ordering::Relaxed);
                match self.carry_over(q, off, len).await {
                    Ok((head, rest)) => {
                        let mut body = Vec::with_capacity(parts.len() + 2);
                        body.extend(head);
                        body.extend(parts);
                        body.extend(rest);
                        body
                    }
                    Err(e) => {
                        self.inner
                            .state
                            .write()
                            .allocation_done(self.id, full, Some(phys));
                        return Err(e);
                    }
                }
            }
        };
        let id = self.id;
        let lsn = self
            .inner
            .publish_first_write(
                id,
                full,
                top,
                index,
                phys,
                body,
                |st| st.volume(id).is_ok(),
                || self.gone(),
            )
            .await?;
        // Still under the stripe lock: a later in-place write of this chunk sees it.
        self.rt.map_lsn(index).fetch_max(lsn, Ordering::AcqRel);
        Ok(lsn)
    }

    /// The parts of old chunk `q` a partial first write at `off..off + len` keeps: the bytes
    /// before and after the written range, as slices of one device read. A range touching
    /// either end of the chunk reads only the other side; one in the middle reads the whole
    /// chunk once (the written bytes are read but not used: one request instead of two, on
    /// RBD one round trip instead of two) and slices it without copying.
    async fn carry_over(
        &self,
        q: u64,
        off: usize,
        len: usize,
    ) -> Result<(Option<Bytes>, Option<Bytes>)> {
        let cs = self.inner.layout.chunk_size as usize;
        let at = self.inner.layout.chunk_offset(q);
        let end = off + len;
        if off == 0 {
            let tail = self.inner.io.read(at + end as u64, cs - end).await?;
            return Ok((None, Some(Bytes::from(tail))));
        }
        if end == cs {
            let head = self.inner.io.read(at, off).await?;
            return Ok((Some(Bytes::from(head)), None));
        }
        let old = Bytes::from(self.inner.io.read(at, cs).await?);
        Ok((Some(old.slice(..off)), Some(old.slice(end..))))
    }

    /// Allocate a chunk, committing once if only not-yet-durable frees are left.
    async fn allocate(&self, full: bool) -> Result<u64> {
        for attempt in 0..2 {
            let r = self.inner.state.write().allocate(self.id, full);
            match r {
                Ok(c) => return Ok(c),
                Err(AllocFail::NoSpace) => return Err(StorageError::NoSpace),
                Err(AllocFail::NeedCommit) if attempt == 0 => self.inner.flush().await?,
                Err(AllocFail::NeedCommit) => return Err(StorageError::NoSpace),
            }
        }
        Err(StorageError::NoSpace)
    }

    /// The chunk the top owns at `index`, with the top's [`crate::layer::Layer::merged_lsn`].
    fn owned_phys(&self, index: u64) -> Result<Option<(u64, u64)>> {
        let st = self.inner.state.read();
        let (top, ..) = st.volume(self.id).map_err(|_| self.gone())?;
        Ok(st.meta.layers.get(&top).and_then(|l| {
            l.map
                .get(&index)
                .copied()
                .filter(|&p| p != HOLE)
                .map(|p| (p, l.merged_lsn))
        }))
    }

    /// The chunk the top owns at `index`, once it may be overwritten in place: when a merge
    /// (snapshot or clone delete, rollback, split) moved chunks into the top and is not
    /// durable yet, a crash would undo it and bring back a view sharing them, so the write
    /// waits for that commit (the merging operation is waiting for it too). Otherwise one
    /// comparison. The caller holds the chunk's stripe exclusively and the gate shared, so
    /// the top's entry cannot change meanwhile; it is looked up again all the same.
    async fn owned_phys_settled(&self, index: u64) -> Result<Option<u64>> {
        loop {
            match self.owned_phys(index)? {
                Some((_, merged)) if merged > self.inner.durable_lsn.load(Ordering::Acquire) => {
                    self.inner.wait_durable(merged).await?
                }
                found => return Ok(found.map(|(p, _)| p)),
            }
        }
    }

    /// Zero a range.
    ///
    /// With `unmap` this is [`Volume::unmap`]: chunks wholly inside the range end
    /// unallocated (they read as zeros) and partial chunks are zeroed in place.
    ///
    /// Without `unmap` the zeros are written like any data, on thin and full-guarantee
    /// volumes alike: every chunk of the range ends allocated and a chunk a snapshot or clone
    /// shares is copied first. A host that zeroes without UNMAP (Linux `BLKZEROOUT`, which
    /// mkfs uses for the ext4 journal; ESXi eager-zeroing a thick VMDK) asks for the space to
    /// be provisioned: deallocating instead would leave that file system metadata in holes
    /// that the first write after the pool fills cannot get (decision 0030).
    pub async fn write_zeroes(&self, lba: u64, blocks: u64, unmap: bool) -> Result<()> {
        if unmap {
            return self.unmap(lba, blocks).await;
        }
        let _g = lock_shared(&self.rt.gate).await;
        let (_, off, len, _) = self.prepare(lba, blocks)?;
        let cs = self.inner.layout.chunk_size;
        // Bounded concurrency: zeroing a large range must not build one huge future set.
        let mut lsn = 0;
        for batch in pieces(off, len, cs).chunks(64) {
            let done = try_join_all(batch.iter().map(|p| {
                self.write_chunk(p.index, p.off, vec![self.inner.zero_chunk.slice(..p.len)])
            }))
            .await?;
            lsn = done.into_iter().max().unwrap_or(0).max(lsn);
        }
        self.inner.publish(lsn).await
    }

    /// Deallocate a range; it reads back as zeros. Whole chunks are freed; partial chunks
    /// that hold data are zeroed.
    pub async fn unmap(&self, lba: u64, blocks: u64) -> Result<()> {
        if blocks == 0 {
            self.prepare(lba, 0)?;
            return Ok(());
        }
        let _g = lock_shared(&self.rt.gate).await;
        let (_, off, len, _) = self.prepare(lba, blocks)?;
        let cs = self.inner.layout.chunk_size;
        let size = self
            .inner
            .state
            .read()
            .volume(self.id)
            .map_err(|_| self.gone())?
            .1;
        let first = off / cs;
        let last = (off + len - 1) / cs;
        let piece = |index: u64| {
            let cstart = index * cs;
            let from = off.max(cstart);
            let to = (off + len).min(cstart + cs);
            Piece {
                index,
                off: (from - cstart) as usize,
                len: (to - from) as usize,
            }
        };
        let mut lsn = 0;
        if last - first < UNMAP_SCAN_LIMIT {
            for index in first..=last {
                lsn = lsn.max(self.unmap_piece(&piece(index), size).await?);
            }
        } else {
            // A huge range (mkfs discards the whole device): only chunks that some layer on
            // the path maps can need work, so visit those instead of every index.
            let candidates = {
                let st = self.inner.state.read();
                let (top, ..) = st.volume(self.id).map_err(|_| self.gone())?;
                let mut set = std::collections::BTreeSet::new();
                let mut cur = Some(top);
                while let Some(id) = cur {
                    let Some(l) = st.meta.layers.get(&id) else {
                        break;
                    };
                    set.extend(l.map.keys().copied().filter(|i| (first..=last).contains(i)));
                    cur = l.parent;
                }
                set
            };
            for index in candidates {
                lsn = lsn.max(self.unmap_piece(&piece(index), size).await?);
            }
        }
        // An acknowledged unmap survives a kill of this process, like a first write.
        self.inner.publish(lsn).await
    }

    /// Unmap one piece; returns the LSN of the record it logged (0 if none).
    async fn unmap_piece(&self, p: &Piece, size: u64) -> Result<u64> {
        let cs = self.inner.layout.chunk_size;
        let chunk_end = ((p.index + 1) * cs).min(size);
        let whole = p.off == 0 && (p.index * cs + p.len as u64) >= chunk_end;
        let zero_partial = {
            let _s = lock_exclusive(self.rt.stripe(p.index)).await;
            let mut st = self.inner.state.write();
            st.check_failed()?;
            let (top, ..) = st.volume(self.id).map_err(|_| self.gone())?;
            let own = st
                .meta
                .layers
                .get(&top)
                .and_then(|l| l.map.get(&p.index).copied());
            let below = st.meta.resolve_parent(top, p.index).is_some();
            if whole {
                match (own, below) {
                    (Some(HOLE), _) | (None, false) => return Ok(0),
                    (Some(_), false) => st.log(Rec::Clear {
                        layer: top,
                        index: p.index,
                    })?,
                    (_, true) => st.log(Rec::Hole {
                        layer: top,
                        index: p.index,
                    })?,
                }
                return Ok(st.lsn);
            } else {
                match own {
                    Some(HOLE) => false,
                    Some(_) => true,
                    None => below,
                }
            }
        };
        if zero_partial {
            return self
                .write_chunk(p.index, p.off, vec![self.inner.zero_chunk.slice(..p.len)])
                .await;
        }
        Ok(0)
    }

    /// Make acknowledged writes durable (SYNCHRONIZE CACHE).
    pub async fn flush(&self) -> Result<()> {
        self.alive()?;
        self.inner.flush().await
    }

    /// GET LBA STATUS: whether `lba` is mapped and how many blocks from it share that state
    /// (scans at most 65536 chunks).
    pub fn block_status(&self, lba: u64) -> Result<(bool, u64)> {
        self.alive()?;
        let st = self.inner.state.read();
        let (top, size, bs, _) = st.volume(self.id).map_err(|_| self.gone())?;
        let cap = size / bs as u64;
        if lba >= cap {
            return Err(StorageError::OutOfRange {
                lba,
                blocks: 1,
                capacity_blocks: cap,
            });
        }
        let cs = self.inner.layout.chunk_size;
        let bpc = cs / bs as u64;
        let first = lba / bpc;
        let state = st.meta.resolve(top, first).is_some();
        let last_chunk = (cap - 1) / bpc;
        let mut idx = first + 1;
        while idx <= last_chunk
            && idx - first < 65536
            && st.meta.resolve(top, idx).is_some() == state
        {
            idx += 1;
        }
        let end_lba = (idx * bpc).min(cap);
        Ok((state, end_lba - lba))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An in-place write into a chunk whose first write has logged its `Map` but not yet
    /// published it must make its caller publish that record: acknowledged, it would
    /// otherwise be lost with the mapping if the process were killed before the first write's
    /// request published (seen once in `crash.rs`, four tasks writing blocks of shared chunks).
    #[tokio::test]
    async fn an_in_place_write_publishes_the_chunks_unpublished_mapping() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pool = crate::testutil::pool_with_volume(dir.path(), 16384, 1 << 20).await;
        let v = pool.volume("v").expect("v");
        // Task A's first write of chunk 3 (block 12), stopped before its request publishes.
        let first = v
            .write_chunk(3, 0, vec![Bytes::from(vec![1u8; 4096])])
            .await
            .expect("first write");
        assert!(first > 0, "a first write logs a Map record");
        assert!(
            pool.inner.published_lsn.load(Ordering::Acquire) < first,
            "not published yet"
        );
        // Task B's in-place write of the next block of the same chunk.
        let in_place = v
            .write_chunk(3, 4096, vec![Bytes::from(vec![2u8; 4096])])
            .await
            .expect("in-place write");
        assert!(
            in_place >= first,
            "the in-place write must publish the chunk's mapping ({in_place} < {first})"
        );
        // Through the public path the acknowledgement comes after that publish.
        v.write(14, Bytes::from(vec![3u8; 4096]), false)
            .await
            .expect("write");
        assert!(pool.inner.published_lsn.load(Ordering::Acquire) >= first);
        pool.close().await.expect("close");
    }

    /// A read spanning many chunks is planned as runs of physically consecutive chunks
    /// (one device read each) on file pools too: whatever the layout under it (chunks laid
    /// down out of order, holes, chunks a clone still shares with its origin next to its
    /// own), every byte comes back from where the map says, and runs never join chunks
    /// that are not neighbours on the device.
    #[tokio::test]
    async fn a_read_across_chunks_returns_every_piece_from_its_own_place() {
        let dir = tempfile::tempdir().expect("tempdir");
        // 16 KiB chunks, 4 KiB blocks: four blocks per chunk, a 1 MiB volume of 64 chunks.
        let pool = crate::testutil::pool_with_volume(dir.path(), 16384, 1 << 20).await;
        let v = pool.volume("v").expect("v");
        let stamp = |lba: u64, gen: u8| {
            let mut b = vec![gen; 4096];
            b[..8].copy_from_slice(&lba.to_le_bytes());
            Bytes::from(b)
        };
        // Chunks 0..8 laid down in reverse order (physically backwards), chunk 9 left a
        // hole, chunks 10..16 in order (physically consecutive): one write per chunk.
        for chunk in (0u64..8).rev().chain(10..16) {
            let bufs: Vec<Bytes> = (0..4).map(|b| stamp(chunk * 4 + b, 1)).collect();
            v.write_vectored(chunk * 4, bufs, false)
                .await
                .expect("write");
        }
        let expect = |lba: u64, gen: &dyn Fn(u64) -> Option<u8>| -> Vec<u8> {
            match gen(lba) {
                Some(g) => stamp(lba, g).to_vec(),
                None => vec![0u8; 4096],
            }
        };
        let origin = |lba: u64| (lba / 4 < 8 || (10..16).contains(&(lba / 4))).then_some(1u8);
        // Unaligned start and end, every length up to the whole written span.
        for (lba, blocks) in [(0u64, 64u32), (1, 62), (3, 9), (30, 20), (35, 2), (39, 2)] {
            let got = v.read(lba, blocks).await.expect("read");
            let want: Vec<u8> = (lba..lba + u64::from(blocks))
                .flat_map(|l| expect(l, &origin))
                .collect();
            assert_eq!(got.len(), want.len(), "read {lba}+{blocks}: length");
            assert!(got[..] == want[..], "read {lba}+{blocks}: data");
        }
        // A clone shares every chunk; overwrite some of its blocks (its own chunks, copied
        // on write, land elsewhere on the device) and read across the mix.
        pool.clone_volume("v", "c", None).await.expect("clone");
        let c = pool.volume("c").expect("c");
        for lba in [5u64, 22, 41, 42] {
            c.write(lba, stamp(lba, 2), false)
                .await
                .expect("write clone");
        }
        let clone = |lba: u64| match lba {
            5 | 22 | 41 | 42 => Some(2u8),
            _ => origin(lba),
        };
        for (lba, blocks) in [(0u64, 64u32), (4, 24), (21, 23)] {
            let got = c.read(lba, blocks).await.expect("read clone");
            let want: Vec<u8> = (lba..lba + u64::from(blocks))
                .flat_map(|l| expect(l, &clone))
                .collect();
            assert!(got[..] == want[..], "clone read {lba}+{blocks}: data");
            let got = v.read(lba, blocks).await.expect("read origin");
            let want: Vec<u8> = (lba..lba + u64::from(blocks))
                .flat_map(|l| expect(l, &origin))
                .collect();
            assert!(
                got[..] == want[..],
                "origin read {lba}+{blocks} after the clone's writes"
            );
        }
        pool.close().await.expect("close");
    }

    /// Which admin operation merges a ghost or snapshot layer into a volume's top.
    #[derive(Clone, Copy, Debug)]
    enum Merge {
        /// Deleting snapshot "s" merges its layer into v's top.
        DeleteSnapshot,
        /// Deleting live clone "c" merges the ghost it shared with v into v's top.
        DeleteVolume,
        /// Rolling v back to "s" frees v's top and merges the ghost it shared with live clone
        /// "c" into c's top.
        Rollback,
    }

    fn block(b: u8) -> Bytes {
        Bytes::from(vec![b; 4096])
    }

    /// A merge moves chunks into a volume's top, which then overwrites them in place. Until
    /// the merging record is durable, a crash brings the merged layer back, and with it a view
    /// (the deleted snapshot or clone, the volume before its rollback) that shares the chunk.
    /// The in-place write must not reach the chunk before then, acknowledged or not.
    ///
    /// The kill is simulated exactly: the journal lock is held (so the commit thread cannot
    /// make the merge durable, and nothing more is appended) while the write runs, and the
    /// pool file is copied as it stands in the page cache, which is what a process kill
    /// leaves. The copy is then opened as after a kill (same boot: tentative blocks count).
    async fn merge_then_overwrite_then_kill(kind: Merge) {
        let dir = tempfile::tempdir().expect("tempdir");
        let pool = crate::testutil::pool_with_volume(dir.path(), 16384, 1 << 20).await;
        let v = pool.volume("v").expect("v");
        // Set up a layer holding block 0 = 'A' that is about to be merged into `writer`'s top.
        let (writer, witness) = match kind {
            Merge::DeleteSnapshot => {
                v.write(0, block(b'A'), false).await.expect("write");
                pool.snapshot("v", "s").await.expect("snapshot");
                ("v", "v@s")
            }
            Merge::DeleteVolume => {
                v.write(0, block(b'A'), false).await.expect("write");
                pool.clone_volume("v", "c", None).await.expect("clone");
                ("v", "c")
            }
            Merge::Rollback => {
                pool.snapshot("v", "s").await.expect("snapshot");
                v.write(0, block(b'A'), false).await.expect("write");
                pool.clone_volume("v", "c", None).await.expect("clone");
                ("c", "v")
            }
        };
        pool.flush().await.expect("flush");
        let journal = pool.inner.sb.clone().lock_owned().await;
        let lsn = pool.inner.state.read().lsn;
        let admin = {
            let pool = pool.clone();
            tokio::spawn(async move {
                match kind {
                    Merge::DeleteSnapshot => pool.delete_snapshot("v", "s").await,
                    Merge::DeleteVolume => pool.delete_volume("c").await,
                    Merge::Rollback => pool.rollback("v", "s").await,
                }
            })
        };
        // The merge is applied in memory (its commit cannot finish while the journal is held).
        while pool.inner.state.read().lsn == lsn {
            tokio::task::yield_now().await;
        }
        let w = pool.volume(writer).expect("writer");
        let mut write = tokio::spawn(async move { w.write(0, block(b'B'), false).await });
        // Give the overwrite every chance to happen before the kill (it takes microseconds
        // when nothing holds it back); the outcome must not depend on whether it did.
        let early = tokio::time::timeout(std::time::Duration::from_millis(500), &mut write)
            .await
            .ok();
        let acked = early.is_some();
        let crashed = tempfile::tempdir().expect("tempdir");
        std::fs::copy(dir.path().join("pool.img"), crashed.path().join("pool.img"))
            .expect("copy the killed process's pool file");
        drop(journal);
        admin.await.expect("admin task").expect("admin operation");
        match early {
            Some(r) => r.expect("write task").expect("write"),
            None => write.await.expect("write task").expect("write"),
        }
        pool.close().await.expect("close");

        let pool = crate::Pool::open(crashed.path())
            .await
            .expect("open after the kill");
        let report = pool.check().await.expect("check");
        assert!(report.is_clean(), "{kind:?}: {:?}", report.errors);
        // The merging operation never committed: the witness view is back, with its data.
        let reader = match witness.split_once('@') {
            Some(_) => {
                pool.clone_volume(witness, "verify", None)
                    .await
                    .expect("clone the snapshot");
                "verify"
            }
            None => witness,
        };
        let got = pool
            .volume(reader)
            .expect("witness")
            .read(0, 1)
            .await
            .expect("read");
        assert!(
            got.iter().all(|&b| b == b'A'),
            "{kind:?}: '{witness}' reads {:?} after the kill (the overwrite through '{writer}' \
             was {}acknowledged before it): a view that the uncommitted merge removed shares \
             the overwritten chunk",
            got[0] as char,
            if acked { "" } else { "not " }
        );
        pool.close().await.expect("close");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_snapshot_deleted_before_a_kill_keeps_its_data() {
        merge_then_overwrite_then_kill(Merge::DeleteSnapshot).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_clone_deleted_before_a_kill_keeps_its_data() {
        merge_then_overwrite_then_kill(Merge::DeleteVolume).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_volume_rolled_back_before_a_kill_keeps_its_data() {
        merge_then_overwrite_then_kill(Merge::Rollback).await;
    }
}
