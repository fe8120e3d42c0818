//! Creating and opening pools: path resolution, validation (read-only first), checkpoint load
//! and journal replay.

use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::alloc::Alloc;
use crate::codec::Dec;
use crate::device::Device;
use crate::journal::{check_block, decode_rec, parse_header, BLOCK_ALIGN, BOOT_LEN, HEADER};
use crate::layer::{Meta, HOLE};
use crate::superblock::{choose, Layout, Seal, SlotState, Superblock, SB_SLOT, SEAL_OFF};
use crate::{checkpoint, PoolOptions, Result, StorageError};

/// Mode of a pool file storage-core creates.
pub(crate) const POOL_FILE_MODE: u32 = 0o600;

/// Name of the pool file inside a directory pool.
pub(crate) const POOL_FILE: &str = "pool.img";

/// A directory pool keeps its data in `dir/pool.img`.
pub(crate) fn resolve_path(path: &Path) -> PathBuf {
    if path.is_dir() {
        path.join(POOL_FILE)
    } else {
        path.to_path_buf()
    }
}

fn io(ctx: String, e: std::io::Error) -> StorageError {
    StorageError::io(ctx, e)
}

fn device_len(f: &mut File, path: &Path) -> Result<u64> {
    f.seek(SeekFrom::End(0))
        .map_err(|e| io(format!("sizing {}", path.display()), e))
}

/// Reject options no pool can have.
fn check_options(opts: &PoolOptions) -> Result<()> {
    let cs = opts.chunk_size;
    if !cs.is_power_of_two() || !(4096..=(1 << 20)).contains(&cs) {
        return Err(StorageError::InvalidArgument(format!(
            "chunk size {cs} must be a power of two between 4096 and 1048576"
        )));
    }
    if let Some(p) = opts.soft_threshold_pct {
        if p == 0 || p > 100 {
            return Err(StorageError::InvalidArgument(format!(
                "soft threshold {p}% must be 1..=100"
            )));
        }
    }
    Ok(())
}

/// Write a fresh pool header. Returns the file path used.
pub(crate) fn create(path: &Path, opts: &PoolOptions) -> Result<PathBuf> {
    check_options(opts)?;
    let target = resolve_path(path);
    let meta = std::fs::metadata(&target).ok();
    let is_blk = meta
        .as_ref()
        .is_some_and(|m| m.file_type().is_block_device());
    let (file, total) = if is_blk {
        let mut f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&target)
            .map_err(|e| io(format!("opening {}", target.display()), e))?;
        let len = device_len(&mut f, &target)?;
        (f, len)
    } else {
        if meta.as_ref().is_some_and(|m| m.len() > 0) {
            return Err(StorageError::AlreadyExists(format!(
                "pool file {}",
                target.display()
            )));
        }
        let Some(cap) = opts.capacity_bytes else {
            return Err(StorageError::InvalidArgument(
                "capacity_bytes is required for a file or directory pool".into(),
            ));
        };
        // A new pool file holds every volume's data: readable by its owner only (0600),
        // whatever the umask. An existing (empty) file keeps the mode its creator chose.
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(POOL_FILE_MODE)
            .open(&target)
            .map_err(|e| io(format!("creating {}", target.display()), e))?;
        f.set_len(cap)
            .map_err(|e| io(format!("sizing {}", target.display()), e))?;
        (f, cap)
    };
    format(
        &Device::file(file, target.display().to_string()),
        total,
        opts,
    )?;
    Ok(target)
}

/// Write a fresh pool header covering the first `total` bytes of `dev`, durably.
pub(crate) fn format(dev: &Device, total: u64, opts: &PoolOptions) -> Result<()> {
    let layout = Layout::compute(total, opts.chunk_size as u64)?;
    let sb = Superblock {
        uuid: uuid::Uuid::new_v4(),
        generation: 1,
        layout,
        soft_threshold_pct: opts.soft_threshold_pct,
        ckpt_slot: None,
        ckpt_bytes: 0,
        ckpt_crc: 0,
        journal_seq: 1,
        journal_half: 0,
        version: crate::superblock::FORMAT_VERSION,
    };
    let w = |buf: &[u8], off: u64| {
        dev.write_at(buf, off)
            .map_err(|e| io(format!("writing {}", dev.name()), e))
    };
    // Zero the other superblock slot, the seal slots and the first block of each journal
    // half (old contents of a reused block device must never look valid).
    w(&vec![0u8; SB_SLOT as usize], 0)?;
    for off in SEAL_OFF {
        w(&vec![0u8; SB_SLOT as usize], off)?;
    }
    for half in 0..2 {
        w(&vec![0u8; BLOCK_ALIGN], layout.journal_half_off(half))?;
    }
    w(&sb.encode(), (sb.generation % 2) * SB_SLOT)?;
    dev.flush()
        .map_err(|e| io(format!("syncing {}", dev.name()), e))?;
    Ok(())
}

/// Write a fresh pool over an RBD image (its whole size, or the first `capacity_bytes`).
/// Refuses an image that already holds a pool superblock: creating is never a way to wipe
/// a pool another gateway may be serving.
#[cfg(feature = "ceph")]
pub(crate) fn create_rbd(image: crate::ceph::RbdImage, opts: &PoolOptions) -> Result<()> {
    check_options(opts)?;
    check_lock_owner(&image)?;
    let dev = Device::rbd(image);
    let what = dev.name().to_string();
    let size = dev.len().map_err(|e| io(format!("sizing {what}"), e))?;
    let total = match opts.capacity_bytes {
        None => size,
        Some(cap) if cap <= size => cap,
        Some(cap) => {
            return Err(StorageError::InvalidArgument(format!(
                "capacity {cap} exceeds the {size} bytes of {what}"
            )))
        }
    };
    if holds_pool(&dev)? {
        return Err(StorageError::AlreadyExists(format!(
            "a pool on {what} (open it instead)"
        )));
    }
    format(&dev, total, opts)
}

/// Validate and load the pool on an RBD image. The caller holds the image's exclusive lock
/// (the HA coordinator takes it, fencing the previous owner, before opening): unlike a pool
/// file, there is no flock to take here.
#[cfg(feature = "ceph")]
pub(crate) fn open_rbd(image: crate::ceph::RbdImage) -> Result<Loaded> {
    check_lock_owner(&image)?;
    load(Device::rbd(image))
}

/// Refuse an image whose exclusive lock this handle does not hold: another client may be
/// writing it (or could take it over unnoticed), and the pool's metadata has one writer.
#[cfg(feature = "ceph")]
fn check_lock_owner(image: &crate::ceph::RbdImage) -> Result<()> {
    let owner = image.is_lock_owner().map_err(|e| {
        io(
            format!("checking the lock of rbd:{}", image.name()),
            crate::device::ceph_io(e),
        )
    })?;
    if !owner {
        return Err(StorageError::Busy(format!(
            "rbd:{}: this handle does not hold the image's exclusive lock (take it, fencing the previous owner, before opening the pool)",
            image.name()
        )));
    }
    Ok(())
}

/// What open recovered.
pub(crate) struct Loaded {
    pub(crate) dev: Device,
    pub(crate) sb: Superblock,
    pub(crate) meta: Meta,
    pub(crate) alloc: Alloc,
    /// Offset of the journal's end within `journal_half`.
    pub(crate) journal_off: u64,
    pub(crate) next_seq: u64,
    /// The journal half appends continue in.
    pub(crate) journal_half: u8,
    /// Replay went on from the superblock's half into the other one (a checkpoint was being
    /// written when the process died): the superblock's half is still needed, so a
    /// checkpoint at open (see [`recover`]) frees it before anything is appended.
    pub(crate) spans: bool,
    /// The seal read at open.
    pub(crate) seal: Seal,
    /// Replay applied tentative blocks no seal covers (written in this boot by a process
    /// that did not live to seal them): they must be sealed before the pool is used.
    pub(crate) unsealed: bool,
    /// Boot id of the running kernel (stamped into tentative blocks).
    pub(crate) boot: uuid::Uuid,
}

/// Identity of the running kernel boot. A process kill keeps the page cache, so what a dead
/// process wrote in this boot is still what `read` returns; after a reboot (power loss) only
/// what was made durable is. `LUNAR_BOOT_ID` overrides it (tests simulate a reboot with it).
pub(crate) fn boot_id() -> uuid::Uuid {
    static PROCESS: std::sync::OnceLock<uuid::Uuid> = std::sync::OnceLock::new();
    let parse = |s: &str| uuid::Uuid::parse_str(s.trim()).ok();
    if let Some(id) = std::env::var("LUNAR_BOOT_ID").ok().and_then(|s| parse(&s)) {
        return id;
    }
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .and_then(|s| parse(&s))
        // Without a boot id, tentative blocks are trusted only within this process.
        .unwrap_or_else(|| *PROCESS.get_or_init(uuid::Uuid::new_v4))
}

/// Validate and load a pool. The file is opened read-only until everything checks out.
pub(crate) fn open(path: &Path) -> Result<Loaded> {
    let target = resolve_path(path);
    let ro = File::open(&target).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            StorageError::NotFound(format!("pool {} not found", target.display()))
        } else {
            io(format!("opening {}", target.display()), e)
        }
    })?;
    let what = target.display().to_string();
    let mut loaded = load(Device::file(ro, what.clone()))?;
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&target)
        .map_err(|e| io(format!("opening {what} for writing"), e))?;
    lock_exclusive(&file, &what)?;
    loaded.dev = Device::file(file, what);
    Ok(loaded)
}

/// Whether `dev` starts with a pool superblock (valid or not): creating over it would
/// destroy a pool.
#[cfg(feature = "ceph")]
fn holds_pool(dev: &Device) -> Result<bool> {
    let mut head = vec![0u8; (2 * SB_SLOT) as usize];
    let n = dev
        .read_upto(&mut head, 0)
        .map_err(|e| io(format!("reading {}", dev.name()), e))?;
    head.truncate(n);
    Ok(head
        .chunks(SB_SLOT as usize)
        .any(|slot| !matches!(Superblock::decode(slot), SlotState::NoMagic)))
}

/// Validate a pool on `dev` and load its metadata (checkpoint, then journal replay). Only
/// reads `dev`.
pub(crate) fn load(dev: Device) -> Result<Loaded> {
    let what = dev.name().to_string();
    let len = dev.len().map_err(|e| io(format!("sizing {what}"), e))?;
    let mut head = vec![0u8; (2 * SB_SLOT) as usize];
    let n = dev
        .read_upto(&mut head, 0)
        .map_err(|e| io(format!("reading {what}"), e))?;
    head.truncate(n);
    let a = Superblock::decode(&head[..n.min(SB_SLOT as usize)]);
    let b = if n > SB_SLOT as usize {
        Superblock::decode(&head[SB_SLOT as usize..])
    } else {
        SlotState::NoMagic
    };
    let sb = choose(a, b, &what)?;
    let layout = sb.layout;
    if len < layout.total_bytes {
        return Err(StorageError::Corrupt(format!(
            "{what}: truncated ({len} bytes, the pool needs {})",
            layout.total_bytes
        )));
    }
    // Checkpoint.
    let mut meta = match sb.ckpt_slot {
        None => Meta::new(layout.chunk_size),
        Some(slot) => {
            let mut img = vec![0u8; sb.ckpt_bytes as usize];
            dev.read_at(&mut img, layout.ckpt_off[slot as usize])
                .map_err(|e| io(format!("reading the checkpoint of {what}"), e))?;
            if crc32c::crc32c(&img) != sb.ckpt_crc {
                return Err(StorageError::Corrupt(format!(
                    "{what}: checkpoint checksum mismatch"
                )));
            }
            checkpoint::decode(&img, &sb.uuid, layout.chunk_size, layout.data_chunks)?
        }
    };
    // Journal replay. Blocks below `durable` are durable (a checkpoint or a seal covers them);
    // tentative blocks at or above it count only if written in this boot (the page cache that
    // holds them and the data they map survived), otherwise the log ends there.
    let mut seal_buf = vec![0u8; SB_SLOT as usize];
    let mut seals = [None, None];
    for (i, off) in SEAL_OFF.into_iter().enumerate() {
        if sb.version >= 2 {
            dev.read_at(&mut seal_buf, off)
                .map_err(|e| io(format!("reading the seal of {what}"), e))?;
            seals[i] = Seal::decode(&seal_buf, &sb.uuid);
        }
    }
    let seal = Seal::newest(seals[0], seals[1]);
    let durable = seal.seq.max(sb.journal_seq);
    let boot = boot_id();
    // Without a volatile cache (RBD), a tentative block that reads back was written durably,
    // after the data it maps: it counts whichever boot or host wrote it.
    let trust_tentative = !dev.volatile_cache();
    let mut unsealed = false;
    // Format 3: the journal starts at offset 0 of the superblock's half and may go on at
    // offset 0 of the other half (appends moved there when a checkpoint began; the sequence
    // numbers run on). Formats 1 and 2: one journal over the whole region.
    let regions: Vec<(u8, u64, u64)> = if sb.version >= 3 {
        let h = sb.journal_half;
        let len = layout.journal_half_len();
        vec![
            (h, layout.journal_half_off(h), len),
            (1 - h, layout.journal_half_off(1 - h), len),
        ]
    } else {
        vec![(0, layout.journal_off, layout.journal_len)]
    };
    let mut seq = sb.journal_seq;
    let mut hdr = vec![0u8; BLOCK_ALIGN];
    let mut freed = Vec::new();
    let mut end = (regions[0].0, 0u64);
    for (i, &(half, base, len)) in regions.iter().enumerate() {
        let mut off = 0u64;
        while off + BLOCK_ALIGN as u64 <= len {
            dev.read_at(&mut hdr, base + off)
                .map_err(|e| io(format!("reading the journal of {what}"), e))?;
            let Some(h) = parse_header(&hdr, &sb.uuid, seq) else {
                break;
            };
            let plen = h.payload_len;
            let blen = (HEADER + plen).div_ceil(BLOCK_ALIGN) * BLOCK_ALIGN;
            if off + blen as u64 > len {
                break;
            }
            let mut block = vec![0u8; blen];
            dev.read_at(&mut block, base + off)
                .map_err(|e| io(format!("reading the journal of {what}"), e))?;
            if !check_block(&block, plen) {
                break;
            }
            let mut start = HEADER;
            if h.tentative {
                start += BOOT_LEN;
                if seq >= durable {
                    if !trust_tentative && block[HEADER..start] != *boot.as_bytes() {
                        break;
                    }
                    unsealed = true;
                }
            }
            let mut d = Dec::new(&block[start..HEADER + plen], "journal block");
            for _ in 0..h.nrecs {
                let rec = decode_rec(&mut d)?;
                meta.apply(&rec, &mut freed).map_err(|e| {
                    StorageError::Corrupt(format!(
                        "{what}: journal block {seq} does not apply: {e}"
                    ))
                })?;
            }
            off += blen as u64;
            seq += 1;
        }
        // The second half counts only if its first block follows on (the first half may be
        // empty: a checkpoint asked for right after another one).
        if i == 0 || off > 0 {
            end = (half, off);
        }
    }
    let spans = end.0 != regions[0].0;
    checkpoint::validate_links(&meta)?;
    // Derive the allocator from the maps.
    let mut alloc = Alloc::new(layout.data_chunks);
    for (id, l) in &meta.layers {
        for &p in l.map.values() {
            if p != HOLE && !alloc.set(p) {
                return Err(StorageError::Corrupt(format!(
                    "{what}: chunk {p} (layer {id}) is owned twice or out of range"
                )));
            }
        }
    }
    Ok(Loaded {
        dev,
        sb,
        meta,
        alloc,
        journal_off: end.1,
        next_seq: seq,
        journal_half: end.0,
        spans,
        seal,
        unsealed,
        boot,
    })
}

/// After a successful load, before the pool is used: make what a killed process left in the
/// page cache durable. Its in-place data writes and its tentative journal blocks may have
/// been acknowledged without a flush; a flush answered by this process must cover them, and
/// chunks its unsealed records freed must not be reused while a power loss could still
/// revive those records. Also upgrades a format 1 superblock before anything of format 2 is
/// written. Only runs on a pool that opened cleanly.
pub(crate) fn recover(l: &mut Loaded) -> Result<()> {
    let what = l.dev.name().to_string();
    l.dev
        .flush()
        .map_err(|e| io(format!("syncing {what}"), e))?;
    if l.sb.version < crate::superblock::FORMAT_VERSION || l.spans {
        checkpoint_at_open(l)?;
    }
    // A commit that had no data to sync writes its seal and lets one fdatasync cover both the
    // seal and the blocks. A power loss during that sync can keep the seal without the last
    // blocks: replay then ended before them, below the seal. Left alone, the seal would vouch
    // for the next blocks written at those sequence numbers while they are still tentative
    // (their data maybe not on disk), so it is pulled back to the replayed end first.
    let seal_ahead = l.seal.seq > l.next_seq;
    if l.unsealed || seal_ahead {
        if seal_ahead {
            tracing::warn!(
                path = %what,
                seal = l.seal.seq,
                end = l.next_seq,
                "the journal ends below its seal (power loss during a commit that was never acknowledged); pulling the seal back"
            );
        }
        let mut sealer = crate::engine::Sealer {
            seal: l.seal,
            durable_seq: l.sb.journal_seq.max(l.seal.seq),
        };
        crate::commit::write_seal(&l.dev, &l.sb.uuid, &mut sealer, l.next_seq)?;
        l.seal = sealer.seal;
        if l.unsealed {
            tracing::info!(path = %what, "sealed journal blocks a killed process had written");
        }
        l.unsealed = false;
    }
    Ok(())
}

/// Write a checkpoint of the metadata open recovered and restart the journal at offset 0 of
/// a half nothing still needs, with the sequence replay ended at:
/// - a format 1 or 2 pool: its journal spans the whole region, which format 3 reads as two
///   halves; after this image the old journal is no longer needed, and the superblock is
///   rewritten as format 3 (the first block of the second half is zeroed first, so that no
///   leftover of the old journal can ever read as the continuation of the new one);
/// - a format 3 pool whose journal went on into the second half (the process died while a
///   checkpoint was being written): the superblock's half is freed.
///
/// The caller has synced the data every replayed record maps. The image goes to the inactive
/// slot and the superblock follows an fdatasync, as every checkpoint: a crash before the
/// superblock lands leaves the previous image and journal, which replay as before.
fn checkpoint_at_open(l: &mut Loaded) -> Result<()> {
    let what = l.dev.name().to_string();
    let layout = l.sb.layout;
    let img = checkpoint::encode(&l.meta, &l.sb.uuid);
    if img.len() as u64 > layout.ckpt_len {
        return Err(StorageError::Corrupt(format!(
            "{what}: metadata image of {} bytes exceeds the checkpoint area of {} bytes",
            img.len(),
            layout.ckpt_len
        )));
    }
    let slot = match l.sb.ckpt_slot {
        Some(0) => 1u8,
        _ => 0u8,
    };
    // The new journal starts in the half replay began in when it went on into the other
    // one; otherwise (and for an older format) in half 0.
    let half = if l.spans { l.sb.journal_half } else { 0 };
    let w = |buf: &[u8], off: u64, ctx: &str| {
        l.dev
            .write_at(buf, off)
            .map_err(|e| io(format!("{ctx} of {what}"), e))
    };
    w(&img, layout.ckpt_off[slot as usize], "writing a checkpoint")?;
    if l.sb.version < 3 {
        w(
            &vec![0u8; BLOCK_ALIGN],
            layout.journal_half_off(1),
            "clearing the journal",
        )?;
    }
    l.dev
        .flush()
        .map_err(|e| io(format!("syncing {what}"), e))?;
    let mut sb = l.sb.clone();
    sb.generation += 1;
    sb.version = crate::superblock::FORMAT_VERSION;
    sb.ckpt_slot = Some(slot);
    sb.ckpt_bytes = img.len() as u64;
    sb.ckpt_crc = crc32c::crc32c(&img);
    sb.journal_seq = l.next_seq;
    sb.journal_half = half;
    w(
        &sb.encode(),
        (sb.generation % 2) * SB_SLOT,
        "writing the superblock",
    )?;
    l.dev
        .flush()
        .map_err(|e| io(format!("syncing {what}"), e))?;
    tracing::info!(
        path = %what,
        from_version = l.sb.version,
        journal_seq = l.next_seq,
        half,
        "checkpointed the metadata at open (format upgrade or a journal spanning both halves)"
    );
    l.sb = sb;
    l.journal_half = half;
    l.journal_off = 0;
    l.spans = false;
    Ok(())
}

/// One process per pool: take an exclusive advisory lock.
fn lock_exclusive(f: &File, what: &str) -> Result<()> {
    use std::os::unix::io::AsRawFd;
    // A process that just died may hold the file for a moment (io_uring teardown finishes
    // asynchronously in the kernel), so retry briefly before reporting Busy.
    for _ in 0..30 {
        // SAFETY: flock on a valid open descriptor has no memory-safety preconditions.
        let r = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if r == 0 {
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    Err(StorageError::Busy(format!(
        "{what} is open in another process or handle"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Pool;

    /// The superblock slot image a format 2 build wrote (no journal half byte).
    fn encode_v2(sb: &Superblock) -> Vec<u8> {
        let v3 = sb.encode();
        // Magic 8, version 4, uuid 16, generation 8, layout 9 x 8, soft 1, slot 1,
        // image bytes 8, image crc 4, journal sequence 8: then the half (v3) and the crc.
        let body = 8 + 4 + 16 + 8 + 72 + 1 + 1 + 8 + 4 + 8;
        let mut b = v3[..body].to_vec();
        b[8..12].copy_from_slice(&2u32.to_le_bytes());
        let crc = crc32c::crc32c(&b);
        b.extend_from_slice(&crc.to_le_bytes());
        b.resize(SB_SLOT as usize, 0);
        b
    }

    /// A format 2 pool (one journal over the whole region) with acknowledged first writes in
    /// its journal opens: replay reads them, open checkpoints them and rewrites the
    /// superblock as format 3, and the pool then works and reopens as format 3.
    #[tokio::test]
    async fn a_format_2_pool_is_checkpointed_and_upgraded_at_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pool = crate::testutil::pool_with_volume(dir.path(), 65536, 4 << 20).await;
        let v = pool.volume("v").expect("v");
        for i in 0..20u64 {
            v.write(i * 16, bytes::Bytes::from(vec![i as u8 + 1; 4096]), false)
                .await
                .expect("write");
        }
        // As a killed format 2 process would leave it: the journal holds the writes.
        let copy = tempfile::tempdir().expect("tempdir");
        let file = copy.path().join(POOL_FILE);
        std::fs::copy(dir.path().join(POOL_FILE), &file).expect("copy");
        pool.close().await.expect("close");
        {
            let l = open(copy.path()).expect("open");
            assert!(l.next_seq > l.sb.journal_seq, "the journal holds blocks");
            assert_eq!(l.sb.journal_half, 0);
            let bytes = encode_v2(&l.sb);
            l.dev
                .write_at(&bytes, (l.sb.generation % 2) * SB_SLOT)
                .expect("write a format 2 superblock");
        }
        {
            let mut l = open(copy.path()).expect("open the format 2 pool");
            assert_eq!(l.sb.version, 2);
            recover(&mut l).expect("recover");
            assert_eq!(l.sb.version, crate::superblock::FORMAT_VERSION);
            assert_eq!((l.journal_off, l.sb.journal_seq), (0, l.next_seq));
        }
        for round in 0..2 {
            let p = Pool::open(copy.path()).await.expect("reopen");
            let v = p.volume("v").expect("v");
            for i in 0..20u64 {
                let got = v.read(i * 16, 1).await.expect("read");
                assert!(
                    got.iter().all(|&b| b == i as u8 + 1),
                    "round {round} block {i}"
                );
            }
            v.write(400, bytes::Bytes::from(vec![9u8; 4096]), false)
                .await
                .expect("write");
            assert!(p.check().await.expect("check").is_clean());
            p.close().await.expect("close");
        }
        let l = open(copy.path()).expect("open");
        assert_eq!(l.sb.version, crate::superblock::FORMAT_VERSION);
    }

    /// A power loss during a one-sync commit can keep the seal but not the blocks it covers.
    /// Opening such a pool must pull the seal back to where replay ended; otherwise the seal
    /// would vouch for the next, still tentative, blocks written at those sequence numbers.
    #[tokio::test]
    async fn a_seal_past_the_journal_end_is_pulled_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pool = crate::testutil::pool_with_volume(dir.path(), 65536, 1 << 20).await;
        pool.close().await.expect("close");
        drop(pool);

        // What the power loss leaves: a seal two blocks beyond the last block on disk.
        let l = open(dir.path()).expect("open");
        assert!(
            l.seal.seq <= l.next_seq,
            "a clean pool's seal is behind its end"
        );
        let end = l.next_seq;
        let mut sealer = crate::engine::Sealer {
            seal: l.seal,
            durable_seq: l.next_seq,
        };
        crate::commit::write_seal(&l.dev, &l.sb.uuid, &mut sealer, end + 2).expect("seal");
        drop(l);

        let mut l = open(dir.path()).expect("reopen");
        assert_eq!(l.seal.seq, end + 2, "replay read the advanced seal");
        assert_eq!(l.next_seq, end, "and ended below it");
        recover(&mut l).expect("recover");
        assert_eq!(l.seal.seq, end, "recover pulled the seal back");
        drop(l);
        let l = open(dir.path()).expect("reopen again");
        assert_eq!(l.seal.seq, end, "durably");
        drop(l);

        // The pool works normally afterwards.
        let pool = Pool::open(dir.path()).await.expect("pool open");
        let v = pool.volume("v").expect("v");
        v.write(0, bytes::Bytes::from(vec![5u8; 4096]), false)
            .await
            .expect("write");
        v.flush().await.expect("flush");
        assert!(pool.check().await.expect("check").is_clean());
        pool.close().await.expect("close");
    }
}
