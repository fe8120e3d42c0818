//! The byte layout of a replication stream, version 1 (docs/replication-stream.md is the
//! byte-by-byte description; this module is its single implementation).
//!
//! A stream is a header, then records in ascending chunk index (DATA: one chunk's bytes;
//! HOLE: a run of chunks that read as zeros), then an END trailer. Every integer is
//! little-endian. Every header and record carries its own CRC32C, and the record CRCs are
//! seeded with the header's CRC, so a record spliced in from another stream fails its own
//! check. END carries the number of records, the number of payload bytes and a running
//! CRC32C over the records' framing and CRCs (a chain over every record): a record dropped,
//! duplicated or moved is caught even where each record on its own is intact.

use uuid::Uuid;

use super::error::StreamError;

/// First eight bytes of every stream.
pub const MAGIC: [u8; 8] = *b"LUNRREPL";
/// The only format version this build writes and reads.
pub const VERSION: u16 = 1;
/// Largest chunk a stream may carry (the largest pool chunk size): bounds every allocation
/// a decoder makes from a length field.
pub const MAX_CHUNK_SIZE: u32 = 1 << 20;
/// Smallest chunk size (the smallest pool chunk size).
pub const MIN_CHUNK_SIZE: u32 = 4096;
/// Longest volume or snapshot name (one length byte).
pub const MAX_NAME: usize = 255;
/// Fixed part of the header, before the names.
pub const HEADER_FIXED: usize = 116;
/// Longest header: fixed part, four names, CRC.
pub const MAX_HEADER: usize = HEADER_FIXED + 4 * MAX_NAME + 4;
/// Framing of a DATA record before its payload (tag, reserved, length, index).
pub const DATA_PREFIX: usize = 16;
/// Length of a HOLE record.
pub const HOLE_LEN: usize = 28;
/// Length of the END trailer.
pub const END_LEN: usize = 32;
/// Longest record: a DATA record of the largest chunk.
pub const MAX_RECORD: usize = DATA_PREFIX + MAX_CHUNK_SIZE as usize + 4;

/// Record tag of DATA.
pub const TAG_DATA: u8 = b'D';
/// Record tag of HOLE.
pub const TAG_HOLE: u8 = b'H';
/// Record tag of END.
pub const TAG_END: u8 = b'E';

/// What a stream applies to on the receiver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamKind {
    /// The whole snapshot, against an all-zero volume: the receiver creates the volume.
    Full,
    /// The difference from an earlier snapshot of the same volume.
    Increment,
    /// A clone sent as the difference from its origin snapshot (another volume): the
    /// receiver creates the volume as a clone of its replica of that snapshot, so both share
    /// the same chunks.
    CloneFromOrigin,
}

impl StreamKind {
    fn code(self) -> u8 {
        match self {
            StreamKind::Full => 0,
            StreamKind::Increment => 1,
            StreamKind::CloneFromOrigin => 2,
        }
    }

    fn from_code(c: u8) -> Option<StreamKind> {
        match c {
            0 => Some(StreamKind::Full),
            1 => Some(StreamKind::Increment),
            2 => Some(StreamKind::CloneFromOrigin),
            _ => None,
        }
    }

    /// Lower-case name for messages and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            StreamKind::Full => "full",
            StreamKind::Increment => "increment",
            StreamKind::CloneFromOrigin => "clone",
        }
    }
}

/// A snapshot named in a stream header: its names on the sender and its identity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamSnapshot {
    /// Volume name on the sender.
    pub volume: String,
    /// Snapshot name.
    pub snapshot: String,
    /// The snapshot's uuid on the sender (kept by the received snapshot).
    pub uuid: Uuid,
}

impl std::fmt::Display for StreamSnapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{} ({})", self.volume, self.snapshot, self.uuid)
    }
}

/// The stream header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamHeader {
    /// Full, increment or clone.
    pub kind: StreamKind,
    /// Random per stream: ties log lines of both ends together.
    pub stream_id: Uuid,
    /// The sending pool.
    pub source_pool: Uuid,
    /// The snapshot the receiver ends up with.
    pub to: StreamSnapshot,
    /// The base: an earlier snapshot of the same volume (increment) or the clone's origin
    /// snapshot (clone). `None` for a full stream.
    pub from: Option<StreamSnapshot>,
    /// Logical size of `to` in bytes.
    pub size_bytes: u64,
    /// Logical block size of the volume.
    pub block_size: u32,
    /// Chunk size: the unit of a record.
    pub chunk_size: u32,
    /// Changed chunks this stream carries (DATA records plus the chunks of every HOLE run),
    /// from `start_index` on.
    pub change_count: u64,
    /// First chunk index this stream carries (0, or where an interrupted receive resumes).
    pub start_index: u64,
}

impl StreamHeader {
    /// Number of chunks of a volume of `size_bytes`.
    pub fn chunks(&self) -> u64 {
        self.size_bytes.div_ceil(u64::from(self.chunk_size))
    }

    /// Length of chunk `index` (the last chunk of a volume may be short).
    pub fn chunk_len(&self, index: u64) -> u64 {
        let cs = u64::from(self.chunk_size);
        let start = index.saturating_mul(cs);
        self.size_bytes.saturating_sub(start).min(cs)
    }

    /// Checks every rule a header must follow (both ends run it).
    pub fn validate(&self) -> Result<(), StreamError> {
        let bad = |m: String| Err(StreamError::BadHeader(m));
        if self.block_size != 512 && self.block_size != 4096 {
            return bad(format!("block size {} is not 512 or 4096", self.block_size));
        }
        let cs = self.chunk_size;
        if !cs.is_power_of_two() || !(MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&cs) {
            return bad(format!(
                "chunk size {cs} is not a power of two in {MIN_CHUNK_SIZE}..={MAX_CHUNK_SIZE}"
            ));
        }
        if cs < self.block_size {
            return bad(format!(
                "chunk size {cs} is smaller than the block size {}",
                self.block_size
            ));
        }
        if self.size_bytes == 0 || self.size_bytes > 1 << 60 {
            return bad(format!("volume size {} is out of range", self.size_bytes));
        }
        if !self.size_bytes.is_multiple_of(u64::from(self.block_size)) {
            return bad(format!(
                "volume size {} is not a multiple of the block size {}",
                self.size_bytes, self.block_size
            ));
        }
        let chunks = self.chunks();
        if self.start_index > chunks {
            return bad(format!(
                "start index {} is past the volume's {chunks} chunks",
                self.start_index
            ));
        }
        if self.change_count > chunks - self.start_index {
            return bad(format!(
                "{} changes from index {} do not fit in {chunks} chunks",
                self.change_count, self.start_index
            ));
        }
        check_name("volume", &self.to.volume)?;
        check_name("snapshot", &self.to.snapshot)?;
        match (self.kind, &self.from) {
            (StreamKind::Full, None) => {}
            (StreamKind::Full, Some(_)) => return bad("a full stream names a base".into()),
            (_, None) => return bad(format!("an {} stream names no base", self.kind.as_str())),
            (kind, Some(f)) => {
                check_name("base volume", &f.volume)?;
                check_name("base snapshot", &f.snapshot)?;
                if f.uuid.is_nil() {
                    return bad("the base snapshot uuid is nil".into());
                }
                if f.uuid == self.to.uuid {
                    return bad("the base and the sent snapshot are the same".into());
                }
                let same = f.volume == self.to.volume;
                if kind == StreamKind::Increment && !same {
                    return bad(format!(
                        "an increment's base {} is not of volume {}",
                        f, self.to.volume
                    ));
                }
                if kind == StreamKind::CloneFromOrigin && same {
                    return bad(format!(
                        "a clone's origin {} is of the clone's own volume",
                        f
                    ));
                }
            }
        }
        if self.to.uuid.is_nil() {
            return bad("the snapshot uuid is nil".into());
        }
        Ok(())
    }

    /// Encodes the header (validated first).
    pub fn encode(&self) -> Result<Vec<u8>, StreamError> {
        self.validate()?;
        let mut b = Vec::with_capacity(MAX_HEADER);
        b.extend_from_slice(&MAGIC);
        b.extend_from_slice(&VERSION.to_le_bytes());
        b.extend_from_slice(&0u16.to_le_bytes()); // flags: none defined in version 1
        b.push(self.kind.code());
        b.extend_from_slice(&[0; 3]);
        b.extend_from_slice(self.stream_id.as_bytes());
        b.extend_from_slice(self.source_pool.as_bytes());
        b.extend_from_slice(&self.size_bytes.to_le_bytes());
        b.extend_from_slice(&self.block_size.to_le_bytes());
        b.extend_from_slice(&self.chunk_size.to_le_bytes());
        b.extend_from_slice(&self.change_count.to_le_bytes());
        b.extend_from_slice(&self.start_index.to_le_bytes());
        b.extend_from_slice(self.to.uuid.as_bytes());
        let from_uuid = self.from.as_ref().map_or(Uuid::nil(), |f| f.uuid);
        b.extend_from_slice(from_uuid.as_bytes());
        let (fv, fs) = self
            .from
            .as_ref()
            .map_or(("", ""), |f| (f.volume.as_str(), f.snapshot.as_str()));
        let names = [self.to.volume.as_str(), self.to.snapshot.as_str(), fv, fs];
        for n in names {
            // check_name bounded every name to MAX_NAME bytes.
            b.push(u8::try_from(n.len()).map_err(|_| {
                StreamError::BadHeader(format!("name {n:?} is longer than {MAX_NAME} bytes"))
            })?);
        }
        debug_assert_eq!(b.len(), HEADER_FIXED);
        for n in names {
            b.extend_from_slice(n.as_bytes());
        }
        let crc = crc32c::crc32c(&b);
        b.extend_from_slice(&crc.to_le_bytes());
        Ok(b)
    }

    /// Decodes a header from the start of `buf`. `Ok(None)`: more bytes are needed (never
    /// more than [`MAX_HEADER`]). `Ok(Some((header, len, crc)))`: the header, its encoded
    /// length and its CRC (the seed of the record CRCs).
    pub fn decode(buf: &[u8]) -> Result<Option<(StreamHeader, usize, u32)>, StreamError> {
        if buf.len() < 8 {
            if !MAGIC.starts_with(buf) {
                return Err(StreamError::BadMagic);
            }
            return Ok(None);
        }
        if buf[..8] != MAGIC {
            return Err(StreamError::BadMagic);
        }
        if buf.len() < 10 {
            return Ok(None);
        }
        let version = u16_at(buf, 8);
        if version != VERSION {
            return Err(StreamError::UnsupportedVersion(version));
        }
        if buf.len() < HEADER_FIXED {
            return Ok(None);
        }
        let names_len: usize = buf[112..116].iter().map(|&l| usize::from(l)).sum();
        let total = HEADER_FIXED + names_len + 4;
        if buf.len() < total {
            return Ok(None);
        }
        let crc = u32_at(buf, total - 4);
        if crc32c::crc32c(&buf[..total - 4]) != crc {
            return Err(StreamError::HeaderCrc);
        }
        let flags = u16_at(buf, 10);
        if flags != 0 {
            return Err(StreamError::UnknownFlags(flags));
        }
        let kind = StreamKind::from_code(buf[12])
            .ok_or_else(|| StreamError::BadHeader(format!("unknown stream kind {}", buf[12])))?;
        if buf[13..16] != [0; 3] {
            return Err(StreamError::BadHeader("reserved bytes are not zero".into()));
        }
        let mut names = Vec::with_capacity(4);
        let mut at = HEADER_FIXED;
        for i in 0..4 {
            let l = usize::from(buf[112 + i]);
            let s = std::str::from_utf8(&buf[at..at + l])
                .map_err(|_| StreamError::BadHeader("a name is not UTF-8".into()))?;
            names.push(s.to_string());
            at += l;
        }
        let [tv, ts, fv, fs]: [String; 4] = names
            .try_into()
            .map_err(|_| StreamError::BadHeader("names".into()))?;
        let from_uuid = uuid_at(buf, 96);
        let from = if kind == StreamKind::Full {
            if !from_uuid.is_nil() || !fv.is_empty() || !fs.is_empty() {
                return Err(StreamError::BadHeader("a full stream names a base".into()));
            }
            None
        } else {
            Some(StreamSnapshot {
                volume: fv,
                snapshot: fs,
                uuid: from_uuid,
            })
        };
        let h = StreamHeader {
            kind,
            stream_id: uuid_at(buf, 16),
            source_pool: uuid_at(buf, 32),
            size_bytes: u64_at(buf, 48),
            block_size: u32_at(buf, 56),
            chunk_size: u32_at(buf, 60),
            change_count: u64_at(buf, 64),
            start_index: u64_at(buf, 72),
            to: StreamSnapshot {
                volume: tv,
                snapshot: ts,
                uuid: uuid_at(buf, 80),
            },
            from,
        };
        h.validate()?;
        Ok(Some((h, total, crc)))
    }
}

fn check_name(what: &str, n: &str) -> Result<(), StreamError> {
    if n.is_empty() || n.len() > MAX_NAME {
        return Err(StreamError::BadHeader(format!(
            "{what} name must be 1..={MAX_NAME} bytes"
        )));
    }
    if n.chars().any(|c| c == '@' || c == '/' || c.is_control()) {
        return Err(StreamError::BadHeader(format!(
            "{what} name {n:?} contains '@', '/' or a control character"
        )));
    }
    Ok(())
}

/// The END trailer's figures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Trailer {
    /// DATA and HOLE records in the stream.
    pub records: u64,
    /// Payload bytes of every DATA record.
    pub payload_bytes: u64,
    /// Running digest (see the module comment).
    pub digest: u32,
}

/// Record CRC: CRC32C of the record's bytes before the CRC, seeded with the header CRC.
pub(crate) fn record_crc(seed: u32, parts: &[&[u8]]) -> u32 {
    parts.iter().fold(seed, |c, p| crc32c::crc32c_append(c, p))
}

/// The next running digest after a record: chains its framing (everything but a DATA
/// payload, which its CRC covers) and its CRC.
pub(crate) fn chain(digest: u32, framing: &[u8], crc: u32) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c_append(digest, framing), &crc.to_le_bytes())
}

pub(crate) fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

pub(crate) fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut x = [0u8; 4];
    x.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(x)
}

pub(crate) fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(x)
}

fn uuid_at(b: &[u8], at: usize) -> Uuid {
    let mut x = [0u8; 16];
    x.copy_from_slice(&b[at..at + 16]);
    Uuid::from_bytes(x)
}
