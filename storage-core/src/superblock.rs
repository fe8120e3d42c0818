//! Pool layout and the two superblock slots.
//!
//! Byte 0 and byte 4096 each hold one 4 KiB superblock slot. The valid slot with the highest
//! generation wins; writers always overwrite the other slot, so a torn superblock write leaves
//! the previous one intact. See docs/storage-format.md.

use crate::codec::{Dec, Enc};
use crate::{Result, StorageError};

/// Magic at the start of each superblock slot.
pub(crate) const MAGIC: &[u8; 8] = b"LUNARPL\x01";
/// On-disk format version written by this build. Version 2 added tentative journal blocks
/// and the seal slots; version 3 split the journal into two halves, appended to in turn, and
/// records in the superblock the half replay starts in, so that the journal stays appendable
/// while a checkpoint is written (docs/decisions/0021-double-buffered-journal.md). This build
/// also opens version 1 and 2 pools: at open their metadata is checkpointed and their
/// superblock rewritten as version 3 before anything of version 3 is written.
pub const FORMAT_VERSION: u32 = 3;
/// Oldest format version this build opens.
pub(crate) const OLDEST_VERSION: u32 = 1;
/// Size of one superblock slot.
pub(crate) const SB_SLOT: u64 = 4096;
/// The two seal slots (in the region before the journal, which format 1 left unused).
pub(crate) const SEAL_OFF: [u64; 2] = [8192, 12288];
const SEAL_MAGIC: &[u8; 4] = b"LSEL";
const ALIGN: u64 = 1 << 20;

fn align_up(v: u64, a: u64) -> u64 {
    v.div_ceil(a) * a
}

/// Where each region lives. Fixed at creation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Layout {
    pub(crate) chunk_size: u64,
    pub(crate) total_bytes: u64,
    pub(crate) journal_off: u64,
    pub(crate) journal_len: u64,
    pub(crate) ckpt_off: [u64; 2],
    pub(crate) ckpt_len: u64,
    pub(crate) data_off: u64,
    pub(crate) data_chunks: u64,
}

impl Layout {
    /// Compute a layout for a pool of `total_bytes` with `chunk_size` chunks.
    pub(crate) fn compute(total_bytes: u64, chunk_size: u64) -> Result<Layout> {
        let raw_chunks = total_bytes / chunk_size;
        // Journal: 1/1024 of the pool, between 4 MiB and 256 MiB.
        let journal_len = align_up((total_bytes / 1024).clamp(4 << 20, 256 << 20), ALIGN);
        // Checkpoint slot: 1 MiB + 32 bytes per chunk: 16-byte data entries with room to spare
        // for hole runs and layer records.
        let ckpt_len = align_up((1 << 20) + 32 * raw_chunks, ALIGN);
        let journal_off = ALIGN;
        let ckpt0 = journal_off + journal_len;
        let ckpt1 = ckpt0 + ckpt_len;
        let data_off = align_up(ckpt1 + ckpt_len, ALIGN.max(chunk_size));
        if total_bytes <= data_off + 16 * chunk_size {
            return Err(StorageError::InvalidArgument(format!(
                "pool of {total_bytes} bytes is too small: metadata needs {data_off} bytes plus at least 16 chunks"
            )));
        }
        let data_chunks = (total_bytes - data_off) / chunk_size;
        Ok(Layout {
            chunk_size,
            total_bytes,
            journal_off,
            journal_len,
            ckpt_off: [ckpt0, ckpt1],
            ckpt_len,
            data_off,
            data_chunks,
        })
    }

    /// Bytes of one journal half (format 3: the journal region is two halves).
    pub(crate) fn journal_half_len(&self) -> u64 {
        self.journal_len / 2
    }

    /// Device offset of the start of journal half `half` (0 or 1).
    pub(crate) fn journal_half_off(&self, half: u8) -> u64 {
        self.journal_off + u64::from(half) * self.journal_half_len()
    }

    /// Byte offset of physical chunk `phys`.
    pub(crate) fn chunk_offset(&self, phys: u64) -> u64 {
        self.data_off + phys * self.chunk_size
    }
}

/// Contents of one superblock slot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Superblock {
    pub(crate) uuid: uuid::Uuid,
    pub(crate) generation: u64,
    pub(crate) layout: Layout,
    pub(crate) soft_threshold_pct: Option<u8>,
    /// Checkpoint slot holding the metadata image (None: empty metadata).
    pub(crate) ckpt_slot: Option<u8>,
    pub(crate) ckpt_bytes: u64,
    pub(crate) ckpt_crc: u32,
    /// Sequence number of the first journal block after that checkpoint.
    pub(crate) journal_seq: u64,
    /// Journal half (0 or 1) whose first block has sequence `journal_seq` (format 3; formats
    /// 1 and 2 have one journal spanning the region, read as starting at half 0).
    pub(crate) journal_half: u8,
    /// Format version this slot was written with (1, 2 or 3).
    pub(crate) version: u32,
}

impl Superblock {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut e = Enc::default();
        e.buf.extend_from_slice(MAGIC);
        e.u32(FORMAT_VERSION);
        e.buf.extend_from_slice(self.uuid.as_bytes());
        e.u64(self.generation);
        let l = &self.layout;
        for v in [
            l.chunk_size,
            l.total_bytes,
            l.journal_off,
            l.journal_len,
            l.ckpt_off[0],
            l.ckpt_off[1],
            l.ckpt_len,
            l.data_off,
            l.data_chunks,
        ] {
            e.u64(v);
        }
        e.u8(self.soft_threshold_pct.map_or(255, |p| p));
        e.u8(self.ckpt_slot.map_or(255, |s| s));
        e.u64(self.ckpt_bytes);
        e.u32(self.ckpt_crc);
        e.u64(self.journal_seq);
        e.u8(self.journal_half);
        let crc = crc32c::crc32c(&e.buf);
        e.u32(crc);
        e.buf.resize(SB_SLOT as usize, 0);
        e.buf
    }

    /// Classification of one slot.
    pub(crate) fn decode(slot: &[u8]) -> SlotState {
        if slot.len() < 16 || &slot[..8] != MAGIC {
            return SlotState::NoMagic;
        }
        let version = u32::from_le_bytes([slot[8], slot[9], slot[10], slot[11]]);
        if !(OLDEST_VERSION..=FORMAT_VERSION).contains(&version) {
            return SlotState::Version(version);
        }
        match Self::decode_v1(slot, version) {
            Ok(sb) => SlotState::Valid(sb),
            Err(e) => SlotState::Corrupt(e.to_string()),
        }
    }

    /// Versions 1 and 2 share the superblock layout; version 3 adds the journal half after
    /// the journal sequence.
    fn decode_v1(slot: &[u8], version: u32) -> Result<Superblock> {
        let mut d = Dec::new(slot, "superblock");
        d.take(12)?;
        let uuid = uuid::Uuid::from_slice(d.take(16)?)
            .map_err(|e| StorageError::Corrupt(e.to_string()))?;
        let generation = d.u64()?;
        let mut v = [0u64; 9];
        for x in v.iter_mut() {
            *x = d.u64()?;
        }
        let soft = d.u8()?;
        let slot_b = d.u8()?;
        let ckpt_bytes = d.u64()?;
        let ckpt_crc = d.u32()?;
        let journal_seq = d.u64()?;
        let journal_half = if version >= 3 { d.u8()? } else { 0 };
        let end = slot.len() - d.remaining();
        let crc = d.u32()?;
        if crc32c::crc32c(&slot[..end]) != crc {
            return Err(StorageError::Corrupt("superblock checksum mismatch".into()));
        }
        let layout = Layout {
            chunk_size: v[0],
            total_bytes: v[1],
            journal_off: v[2],
            journal_len: v[3],
            ckpt_off: [v[4], v[5]],
            ckpt_len: v[6],
            data_off: v[7],
            data_chunks: v[8],
        };
        // The layout must be the one this build would compute: guards against any field damage
        // that still checksums (and keeps regions from overlapping).
        let expect = Layout::compute(layout.total_bytes, layout.chunk_size)
            .map_err(|e| StorageError::Corrupt(format!("superblock layout: {e}")))?;
        if !layout.chunk_size.is_power_of_two()
            || !(4096..=(1 << 20)).contains(&layout.chunk_size)
            || expect != layout
        {
            return Err(StorageError::Corrupt(
                "superblock layout is inconsistent".into(),
            ));
        }
        if journal_half > 1 {
            return Err(StorageError::Corrupt(format!(
                "superblock journal half {journal_half} is invalid"
            )));
        }
        if slot_b != 255 && slot_b > 1 || ckpt_bytes > layout.ckpt_len {
            return Err(StorageError::Corrupt(
                "superblock checkpoint reference is invalid".into(),
            ));
        }
        Ok(Superblock {
            uuid,
            generation,
            layout,
            soft_threshold_pct: (soft != 255).then_some(soft),
            ckpt_slot: (slot_b != 255).then_some(slot_b),
            ckpt_bytes,
            ckpt_crc,
            journal_seq,
            journal_half,
            version,
        })
    }
}

/// A seal: every journal block with a sequence number below `seq` is durable (it was written
/// before an fdatasync that completed before this seal was written, or, when the data its
/// records map was already durable, shares this seal's fdatasync; docs/storage-format.md). Two slots, written
/// alternately; the valid one with the higher generation counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Seal {
    pub(crate) generation: u64,
    pub(crate) seq: u64,
}

impl Seal {
    /// Slot image: magic "LSEL", pool UUID, generation, sequence, CRC32C, zero padding.
    pub(crate) fn encode(&self, pool: &uuid::Uuid) -> Vec<u8> {
        let mut e = Enc::default();
        e.buf.extend_from_slice(SEAL_MAGIC);
        e.buf.extend_from_slice(pool.as_bytes());
        e.u64(self.generation);
        e.u64(self.seq);
        let crc = crc32c::crc32c(&e.buf);
        e.u32(crc);
        e.buf.resize(SB_SLOT as usize, 0);
        e.buf
    }

    /// Decode one slot; `None` for anything that is not a valid seal of this pool (zeros in a
    /// format 1 pool, a torn write, another pool's leftovers).
    pub(crate) fn decode(slot: &[u8], pool: &uuid::Uuid) -> Option<Seal> {
        if slot.len() < 40 || &slot[..4] != SEAL_MAGIC || &slot[4..20] != pool.as_bytes() {
            return None;
        }
        let generation = u64::from_le_bytes(slot[20..28].try_into().ok()?);
        let seq = u64::from_le_bytes(slot[28..36].try_into().ok()?);
        let crc = u32::from_le_bytes(slot[36..40].try_into().ok()?);
        (crc32c::crc32c(&slot[..36]) == crc).then_some(Seal { generation, seq })
    }

    /// The newer of two slots.
    pub(crate) fn newest(a: Option<Seal>, b: Option<Seal>) -> Seal {
        match (a, b) {
            (Some(x), Some(y)) => {
                if y.generation > x.generation {
                    y
                } else {
                    x
                }
            }
            (Some(x), None) | (None, Some(x)) => x,
            (None, None) => Seal::default(),
        }
    }
}

/// What a superblock slot turned out to hold.
pub(crate) enum SlotState {
    NoMagic,
    Version(u32),
    Corrupt(String),
    Valid(Superblock),
}

/// Pick the superblock to use from the two slots, or explain why there is none.
pub(crate) fn choose(a: SlotState, b: SlotState, what: &str) -> Result<Superblock> {
    match (a, b) {
        (SlotState::Valid(x), SlotState::Valid(y)) => {
            Ok(if y.generation > x.generation { y } else { x })
        }
        (SlotState::Valid(x), _) | (_, SlotState::Valid(x)) => Ok(x),
        (SlotState::Version(v), _) | (_, SlotState::Version(v)) => {
            Err(StorageError::UnsupportedVersion(v))
        }
        (SlotState::Corrupt(e), _) | (_, SlotState::Corrupt(e)) => {
            Err(StorageError::Corrupt(format!("{what}: {e}")))
        }
        (SlotState::NoMagic, SlotState::NoMagic) => Err(StorageError::NotAPool(format!(
            "{what}: no Lunar pool header"
        ))),
    }
}
