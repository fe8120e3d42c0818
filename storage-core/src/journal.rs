//! Metadata journal: checksummed, sequence-numbered blocks of logical records.
//!
//! A block is `header (40 bytes) + payload`, padded to 4 KiB: magic, pool UUID (16), sequence
//! (u64), payload length (u32), record count (u32), CRC32C of header fields and payload (u32).
//!
//! Two kinds (docs/storage-format.md, "Journal"):
//! - "LJNT" (format 2, the only kind written now): the payload starts with the boot id of the
//!   kernel that wrote it. Such a block is written to the page cache *before* the writes whose
//!   records it holds are acknowledged, so a killed process loses no acknowledged mapping,
//!   and it becomes durable only when a later seal (written after an fdatasync) covers its
//!   sequence number. Replay applies an unsealed one only in the same boot (the page cache,
//!   with the data it maps, survived).
//! - "LJNL" (format 1): written after the data fdatasync and made durable before the next
//!   one, so durable on its own.
//!
//! Replay reads blocks from the start of the journal region while the magic, UUID, expected
//! sequence and CRC all match, so the first invalid block is the end of the journal.

use crate::codec::{Dec, Enc};
use crate::layer::Rec;
use crate::{ReceiveBase, ReceiveSpec, Result, StorageError};

const JMAGIC: &[u8; 4] = b"LJNL";
const TMAGIC: &[u8; 4] = b"LJNT";
/// Bytes of the boot id at the start of a tentative block's payload.
pub(crate) const BOOT_LEN: usize = 16;
pub(crate) const HEADER: usize = 40;
pub(crate) const BLOCK_ALIGN: usize = 4096;

/// The newest journal block while records may still join it: it is rewritten in place, same
/// sequence number, until it would outgrow one page (see `commit::append_locked`).
#[derive(Default)]
pub(crate) struct OpenBlock {
    /// Encoded records it holds so far.
    pub(crate) records: Vec<u8>,
    /// How many records `records` holds.
    pub(crate) nrecs: u32,
}

/// Encode one record, appended to `e`.
pub(crate) fn encode_rec(e: &mut Enc, r: &Rec) {
    match r {
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
            e.u8(1);
            e.u64(*view);
            e.u64(*layer);
            e.str(name);
            e.buf.extend_from_slice(uuid.as_bytes());
            e.u64(*size);
            e.u32(*block_size);
            e.u8(*full as u8);
            e.u64(*created);
        }
        Rec::Map { layer, index, phys } => {
            e.u8(2);
            e.u64(*layer);
            e.u64(*index);
            e.u64(*phys);
        }
        Rec::Hole { layer, index } => {
            e.u8(3);
            e.u64(*layer);
            e.u64(*index);
        }
        Rec::Clear { layer, index } => {
            e.u8(4);
            e.u64(*layer);
            e.u64(*index);
        }
        Rec::Snapshot {
            vol,
            snap,
            name,
            uuid,
            new_top,
            created,
        } => {
            e.u8(5);
            e.u64(*vol);
            e.u64(*snap);
            e.str(name);
            e.buf.extend_from_slice(uuid.as_bytes());
            e.u64(*new_top);
            e.u64(*created);
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
            e.u8(6);
            e.u64(*snap);
            e.u64(*view);
            e.u64(*layer);
            e.str(name);
            e.buf.extend_from_slice(uuid.as_bytes());
            e.u8(*full as u8);
            e.u64(*created);
            e.str(origin);
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
            e.u8(7);
            e.u64(*vol);
            e.u64(*new_top);
            e.u64(*view);
            e.u64(*layer);
            e.str(name);
            e.buf.extend_from_slice(uuid.as_bytes());
            e.u8(*full as u8);
            e.u64(*created);
            e.str(origin);
        }
        Rec::DeleteView { view } => {
            e.u8(8);
            e.u64(*view);
        }
        Rec::Rename { view, name } => {
            e.u8(9);
            e.u64(*view);
            e.str(name);
        }
        Rec::Resize { view, size } => {
            e.u8(10);
            e.u64(*view);
            e.u64(*size);
        }
        Rec::SetGuarantee { view, full } => {
            e.u8(11);
            e.u64(*view);
            e.u8(*full as u8);
        }
        Rec::Rollback { vol, snap, new_top } => {
            e.u8(12);
            e.u64(*vol);
            e.u64(*snap);
            e.u64(*new_top);
        }
        Rec::Detach { layer } => {
            e.u8(13);
            e.u64(*layer);
        }
        Rec::ReceiveBegin {
            staging,
            layer,
            base,
            spec,
            created,
        } => {
            e.u8(14);
            e.u64(*staging);
            e.u64(*layer);
            e.opt_u64(*base);
            encode_spec(e, spec);
            e.u64(*created);
        }
        Rec::ReceiveProgress {
            staging,
            next_index,
        } => {
            e.u8(15);
            e.u64(*staging);
            e.u64(*next_index);
        }
        Rec::ReceiveCommit {
            staging,
            snap,
            vol,
            new_top,
            vol_uuid,
            created,
        } => {
            e.u8(16);
            e.u64(*staging);
            e.u64(*snap);
            e.u64(*vol);
            e.u64(*new_top);
            e.buf.extend_from_slice(vol_uuid.as_bytes());
            e.u64(*created);
        }
    }
}

/// Encode a receive spec (journal records and checkpoint images share this layout).
pub(crate) fn encode_spec(e: &mut Enc, s: &ReceiveSpec) {
    e.str(&s.volume);
    match &s.base {
        ReceiveBase::New => e.u8(0),
        ReceiveBase::Snapshot { snapshot, uuid } => {
            e.u8(1);
            e.str(snapshot);
            e.buf.extend_from_slice(uuid.as_bytes());
        }
        ReceiveBase::Origin {
            volume,
            snapshot,
            uuid,
        } => {
            e.u8(2);
            e.str(volume);
            e.str(snapshot);
            e.buf.extend_from_slice(uuid.as_bytes());
        }
    }
    e.str(&s.snapshot);
    e.buf.extend_from_slice(s.snapshot_uuid.as_bytes());
    e.u64(s.size_bytes);
    e.u32(s.block_size);
}

/// Decode what [`encode_spec`] wrote.
pub(crate) fn decode_spec(d: &mut Dec<'_>) -> Result<ReceiveSpec> {
    let volume = d.str()?;
    let base = match d.u8()? {
        0 => ReceiveBase::New,
        1 => ReceiveBase::Snapshot {
            snapshot: d.str()?,
            uuid: uuid(d)?,
        },
        2 => ReceiveBase::Origin {
            volume: d.str()?,
            snapshot: d.str()?,
            uuid: uuid(d)?,
        },
        t => return Err(StorageError::Corrupt(format!("bad receive base kind {t}"))),
    };
    Ok(ReceiveSpec {
        volume,
        base,
        snapshot: d.str()?,
        snapshot_uuid: uuid(d)?,
        size_bytes: d.u64()?,
        block_size: d.u32()?,
    })
}

fn uuid(d: &mut Dec<'_>) -> Result<uuid::Uuid> {
    uuid::Uuid::from_slice(d.take(16)?).map_err(|e| StorageError::Corrupt(e.to_string()))
}

fn flag(d: &mut Dec<'_>) -> Result<bool> {
    match d.u8()? {
        0 => Ok(false),
        1 => Ok(true),
        x => Err(StorageError::Corrupt(format!("bad flag byte {x}"))),
    }
}

/// Decode one record.
pub(crate) fn decode_rec(d: &mut Dec<'_>) -> Result<Rec> {
    Ok(match d.u8()? {
        1 => Rec::CreateVolume {
            view: d.u64()?,
            layer: d.u64()?,
            name: d.str()?,
            uuid: uuid(d)?,
            size: d.u64()?,
            block_size: d.u32()?,
            full: flag(d)?,
            created: d.u64()?,
        },
        2 => Rec::Map {
            layer: d.u64()?,
            index: d.u64()?,
            phys: d.u64()?,
        },
        3 => Rec::Hole {
            layer: d.u64()?,
            index: d.u64()?,
        },
        4 => Rec::Clear {
            layer: d.u64()?,
            index: d.u64()?,
        },
        5 => Rec::Snapshot {
            vol: d.u64()?,
            snap: d.u64()?,
            name: d.str()?,
            uuid: uuid(d)?,
            new_top: d.u64()?,
            created: d.u64()?,
        },
        6 => Rec::CloneSnap {
            snap: d.u64()?,
            view: d.u64()?,
            layer: d.u64()?,
            name: d.str()?,
            uuid: uuid(d)?,
            full: flag(d)?,
            created: d.u64()?,
            origin: d.str()?,
        },
        7 => Rec::CloneLive {
            vol: d.u64()?,
            new_top: d.u64()?,
            view: d.u64()?,
            layer: d.u64()?,
            name: d.str()?,
            uuid: uuid(d)?,
            full: flag(d)?,
            created: d.u64()?,
            origin: d.str()?,
        },
        8 => Rec::DeleteView { view: d.u64()? },
        9 => Rec::Rename {
            view: d.u64()?,
            name: d.str()?,
        },
        10 => Rec::Resize {
            view: d.u64()?,
            size: d.u64()?,
        },
        11 => Rec::SetGuarantee {
            view: d.u64()?,
            full: flag(d)?,
        },
        12 => Rec::Rollback {
            vol: d.u64()?,
            snap: d.u64()?,
            new_top: d.u64()?,
        },
        13 => Rec::Detach { layer: d.u64()? },
        14 => Rec::ReceiveBegin {
            staging: d.u64()?,
            layer: d.u64()?,
            base: d.opt_u64()?,
            spec: decode_spec(d)?,
            created: d.u64()?,
        },
        15 => Rec::ReceiveProgress {
            staging: d.u64()?,
            next_index: d.u64()?,
        },
        16 => Rec::ReceiveCommit {
            staging: d.u64()?,
            snap: d.u64()?,
            vol: d.u64()?,
            new_top: d.u64()?,
            vol_uuid: uuid(d)?,
            created: d.u64()?,
        },
        t => {
            return Err(StorageError::Corrupt(format!(
                "unknown journal record type {t}"
            )))
        }
    })
}

/// Build a tentative block (padded to 4 KiB) around already-encoded records, stamped with the
/// boot id of the running kernel.
pub(crate) fn build_block(
    pool: &uuid::Uuid,
    boot: &uuid::Uuid,
    seq: u64,
    nrecs: u32,
    records: &[u8],
) -> Vec<u8> {
    let plen = BOOT_LEN + records.len();
    let mut b = Vec::with_capacity(block_len(records.len()) as usize);
    b.extend_from_slice(TMAGIC);
    b.extend_from_slice(pool.as_bytes());
    b.extend_from_slice(&seq.to_le_bytes());
    b.extend_from_slice(&(plen as u32).to_le_bytes());
    b.extend_from_slice(&nrecs.to_le_bytes());
    let crc = crc32c::crc32c_append(
        crc32c::crc32c_append(crc32c::crc32c(&b), boot.as_bytes()),
        records,
    );
    b.extend_from_slice(&crc.to_le_bytes());
    b.extend_from_slice(boot.as_bytes());
    b.extend_from_slice(records);
    b.resize(b.len().div_ceil(BLOCK_ALIGN) * BLOCK_ALIGN, 0);
    b
}

/// On-disk length of a tentative block holding `records_len` bytes of records.
pub(crate) fn block_len(records_len: usize) -> u64 {
    ((HEADER + BOOT_LEN + records_len).div_ceil(BLOCK_ALIGN) * BLOCK_ALIGN) as u64
}

/// A parsed block header.
pub(crate) struct Header {
    pub(crate) payload_len: usize,
    pub(crate) nrecs: u32,
    /// "LJNT": the payload starts with the writer's boot id.
    pub(crate) tentative: bool,
}

/// Parse the header at the start of `hdr` (at least HEADER bytes). Returns the header when
/// magic, UUID and sequence match; the CRC is checked by [`check_block`].
pub(crate) fn parse_header(hdr: &[u8], pool: &uuid::Uuid, seq: u64) -> Option<Header> {
    if hdr.len() < HEADER || &hdr[4..20] != pool.as_bytes() {
        return None;
    }
    let tentative = match &hdr[..4] {
        m if m == JMAGIC => false,
        m if m == TMAGIC => true,
        _ => return None,
    };
    let s = u64::from_le_bytes(hdr[20..28].try_into().ok()?);
    if s != seq {
        return None;
    }
    let payload_len = u32::from_le_bytes(hdr[28..32].try_into().ok()?) as usize;
    let nrecs = u32::from_le_bytes(hdr[32..36].try_into().ok()?);
    if tentative && payload_len < BOOT_LEN {
        return None;
    }
    Some(Header {
        payload_len,
        nrecs,
        tentative,
    })
}

/// Verify the CRC of a whole block (header + payload).
pub(crate) fn check_block(block: &[u8], payload_len: usize) -> bool {
    if block.len() < HEADER + payload_len {
        return false;
    }
    let want = u32::from_le_bytes([block[36], block[37], block[38], block[39]]);
    let crc = crc32c::crc32c_append(
        crc32c::crc32c(&block[..36]),
        &block[HEADER..HEADER + payload_len],
    );
    crc == want
}
