//! The TCMU mailbox and command ring (`include/uapi/linux/target_core_user.h`), written
//! anew: byte offsets instead of packed C structs, so every field access is bounds-checked
//! through [`SharedMem`].
//!
//! Layout of the mapping: the mailbox at offset 0, the command ring at `cmdr_off`
//! (`cmdr_size` bytes), the data area after it. The kernel appends entries at `cmd_head`;
//! lunard completes them and moves `cmd_tail`. Every entry starts with an 8-byte header
//! (`len_op`: length with the opcode in its low 3 bits, `cmd_id`, `kflags`, `uflags`); PAD
//! entries fill the end of the ring so no entry wraps. A CMD entry carries the CDB offset
//! and the iovecs (offsets into the mapping) of its data buffer; the response (status,
//! read length, sense) is written over the request part of an entry.
//!
//! Completion: the kernel walks from its last cleaned position to `cmd_tail`, skipping PAD
//! and TMR entries and completing, for every other entry, the command whose `cmd_id` is
//! written in it. So with `CAP_OOOC` lunard completes in any order by writing a finished
//! command's id and response into the oldest unreleased CMD slot ("stealing" it — its own
//! request was parsed long ago) and moving the tail past it. Without `CAP_OOOC` a response
//! is written into the command's own slot and the tail only moves over a contiguous prefix
//! of finished slots.
//!
//! Hostile or buggy entries never cause an access outside the mapping, a panic or an
//! endless loop: an entry whose length cannot be trusted breaks the ring (nothing after it
//! can be located, so lunard stops taking commands and says why); a CMD entry whose
//! contents are out of range is failed with CHECK CONDITION on its own.

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;

use super::mem::{OutOfBounds, SharedMem};

/// The mailbox version this code speaks (the kernel has written 2 since it added cmd_id).
pub const MAILBOX_VERSION: u16 = 2;

/// Mailbox field offsets.
pub mod mailbox {
    /// `tcmu_mailbox.version` (u16): the layout version, [`MAILBOX_VERSION`](super::MAILBOX_VERSION).
    pub const VERSION: usize = 0;
    /// `tcmu_mailbox.flags` (u16): the kernel's capability flags, see [`cap`](super::cap).
    pub const FLAGS: usize = 2;
    /// `tcmu_mailbox.cmdr_off` (u32): where the command ring starts in the mapping.
    pub const CMDR_OFF: usize = 4;
    /// `tcmu_mailbox.cmdr_size` (u32): length in bytes of the command ring.
    pub const CMDR_SIZE: usize = 8;
    /// `tcmu_mailbox.cmd_head` (u32): ring offset where the kernel appends the next
    /// entry. Written by the kernel.
    pub const CMD_HEAD: usize = 12;
    /// `tcmu_mailbox.cmd_tail` (u32): ring offset up to which userspace has completed
    /// entries. Written by userspace; on its own cache line.
    pub const CMD_TAIL: usize = 64;
    /// Bytes the mailbox occupies at least.
    pub const MIN_SIZE: usize = 68;
}

/// Mailbox capability flags.
pub mod cap {
    /// Out-of-order completion.
    pub const OOOC: u16 = 1 << 0;
    /// `rsp.read_len` is honoured with `UFLAG_READ_LEN`.
    pub const READ_LEN: u16 = 1 << 1;
    /// The kernel can send TMR notifications.
    pub const TMR: u16 = 1 << 2;
    /// `UFLAG_KEEP_BUF` is understood (lunard never sets it).
    pub const KEEP_BUF: u16 = 1 << 3;
}

/// Entry opcodes (low 3 bits of `len_op`).
pub mod op {
    /// `TCMU_OP_PAD`: filler up to the end of the ring, so no entry wraps.
    pub const PAD: u8 = 0;
    /// `TCMU_OP_CMD`: a SCSI command (`struct tcmu_cmd_entry`).
    pub const CMD: u8 = 1;
    /// `TCMU_OP_TMR`: a task management notification (`struct tcmu_tmr_entry`).
    pub const TMR: u8 = 2;
    /// `TCMU_OP_MASK`: the bits of `len_op` that hold the opcode (the rest is the length,
    /// a multiple of 8).
    pub const MASK: u32 = 0x7;
}

/// Flags userspace sets in `uflags` when completing.
pub mod uflag {
    /// `TCMU_UFLAG_UNKNOWN_OP`: userspace does not know the entry's opcode.
    pub const UNKNOWN_OP: u8 = 0x1;
    /// `TCMU_UFLAG_READ_LEN`: `rsp.read_len` holds the Data-In bytes actually transferred.
    pub const READ_LEN: u8 = 0x2;
    /// `TCMU_UFLAG_KEEP_BUF`: the kernel must keep the data buffer after completion.
    pub const KEEP_BUF: u8 = 0x4;
}

/// Entry offsets, relative to the start of the entry.
pub mod entry {
    /// `tcmu_cmd_entry_hdr.len_op` (u32): entry length in bytes, opcode in the low 3 bits
    /// (see [`op`](super::op)).
    pub const LEN_OP: usize = 0;
    /// `tcmu_cmd_entry_hdr.cmd_id` (u16): the command's id, echoed back on completion.
    pub const CMD_ID: usize = 4;
    /// `tcmu_cmd_entry_hdr.kflags` (u8): flags set by the kernel.
    pub const KFLAGS: usize = 6;
    /// `tcmu_cmd_entry_hdr.uflags` (u8): flags set by userspace, see [`uflag`](super::uflag).
    pub const UFLAGS: usize = 7;
    /// Size of `struct tcmu_cmd_entry_hdr`; the body of every entry starts here.
    pub const HDR_SIZE: usize = 8;
    // Request (CMD).
    /// `req.iov_cnt` (u32): number of iovecs of the data buffer.
    pub const IOV_CNT: usize = 8;
    /// `req.iov_bidi_cnt` (u32): iovecs of a bidirectional command's Data-In buffer, after
    /// the `iov_cnt` ones.
    pub const IOV_BIDI_CNT: usize = 12;
    /// `req.iov_dif_cnt` (u32): iovecs of protection information, after the others.
    pub const IOV_DIF_CNT: usize = 16;
    // `req` is an unpacked struct inside the packed entry: its u64 `cdb_off` is aligned
    // to 8 within it (4 bytes of padding after `iov_dif_cnt`), so the iovecs start at 48.
    // (Found with the real kernel: offset 44 read every iov_base shifted by 32 bits.)
    /// `req.cdb_off` (u64): offset of the CDB in the mapping.
    pub const CDB_OFF: usize = 24;
    /// `req.iov[]`: the data buffer's iovecs, `iov_base` being an offset into the mapping.
    pub const IOV: usize = 48;
    /// `struct iovec` on 64-bit Linux: base (u64), len (u64).
    pub const IOV_SIZE: usize = 16;
    // Response, over the request.
    /// `rsp.scsi_status` (u8): the SCSI status byte.
    pub const SCSI_STATUS: usize = 8;
    /// `rsp.read_len` (u32): Data-In bytes transferred, read with `TCMU_UFLAG_READ_LEN`.
    pub const READ_LEN: usize = 12;
    /// `rsp.sense_buffer`: sense data for CHECK CONDITION.
    pub const SENSE: usize = 16;
    /// `TCMU_SENSE_BUFFERSIZE`: length of `rsp.sense_buffer`.
    pub const SENSE_SIZE: usize = 96;
    /// Size of `struct tcmu_cmd_entry`: every CMD entry is at least this long, so a
    /// response always fits in a slot.
    pub const CMD_ENTRY_SIZE: usize = SENSE + SENSE_SIZE;
    // TMR.
    /// `tcmu_tmr_entry.tmr_type` (u8): which task management function (`TCMU_TMR_*`).
    pub const TMR_TYPE: usize = 8;
    /// `tcmu_tmr_entry.cmd_cnt` (u32): number of ids in `cmd_ids`.
    pub const TMR_CMD_CNT: usize = 12;
    /// `tcmu_tmr_entry.cmd_ids[]` (u16 each): the outstanding commands the function affects.
    pub const TMR_CMD_IDS: usize = 32;
}

/// Entries are 8-byte aligned.
pub const ENTRY_ALIGN: u32 = 8;

/// Longest CDB lunard accepts from the ring (variable-length CDBs: 8 + 255 rounded).
const MAX_CDB: usize = 264;

/// Why the ring cannot be used (further).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RingError {
    /// The mailbox `version` is not [`MAILBOX_VERSION`].
    #[error("unsupported TCMU mailbox version {0} (expected {MAILBOX_VERSION})")]
    Version(u16),
    /// The command ring the mailbox describes does not fit in the mapping.
    #[error("mailbox geometry out of range: cmdr_off {cmdr_off}, cmdr_size {cmdr_size}, mapping {len} bytes")]
    Geometry {
        /// `cmdr_off` as the mailbox gives it.
        cmdr_off: u32,
        /// `cmdr_size` as the mailbox gives it.
        cmdr_size: u32,
        /// Length of the mapping.
        len: usize,
    },
    /// An entry could not be trusted, so nothing after it can be located (the reason).
    #[error("command ring broken: {0}")]
    Broken(String),
    /// A completion for a `cmd_id` the ring has not handed out (or already completed).
    #[error("cmd_id {0} is not outstanding")]
    NotOutstanding(u16),
    /// An access outside the mapping.
    #[error(transparent)]
    Mem(#[from] OutOfBounds),
}

/// One data buffer segment: an offset into the mapping (inside the data area) and a length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Iov {
    /// Offset into the mapping (`iov_base` as the kernel writes it).
    pub off: usize,
    /// Length in bytes (`iov_len`).
    pub len: usize,
}

/// A parsed CMD entry: everything needed to run the command, copied out of the ring (the
/// slot may be overwritten by another command's response before this one completes).
#[derive(Clone, Debug)]
pub struct CmdEntry {
    /// The kernel's id for the command, to give back in [`Ring::complete`].
    pub cmd_id: u16,
    /// The CDB (its length follows from the opcode).
    pub cdb: Bytes,
    /// The data buffer (Data-Out or Data-In: the ring does not say which).
    pub iovs: Vec<Iov>,
}

impl CmdEntry {
    /// Total bytes of the data buffer.
    pub fn data_len(&self) -> usize {
        self.iovs.iter().map(|i| i.len).sum()
    }
}

/// A parsed ring entry.
#[derive(Clone, Debug)]
pub enum Entry {
    /// A command to execute and complete.
    Cmd(CmdEntry),
    /// Filler up to the end of the ring.
    Pad,
    /// A task management notification (informational; needs no completion).
    Tmr {
        /// `tmr_type`: which task management function (`TCMU_TMR_*`).
        tmr_type: u8,
        /// The outstanding commands it affects.
        cmd_ids: Vec<u16>,
    },
    /// A CMD entry whose contents are out of range: complete it with CHECK CONDITION.
    Invalid {
        /// The entry's id, to complete it by.
        cmd_id: u16,
        /// What is out of range, for the log.
        reason: String,
    },
    /// An opcode this code does not know: complete it with `UFLAG_UNKNOWN_OP`.
    Unknown {
        /// The entry's id, to complete it by.
        cmd_id: u16,
        /// The opcode from `len_op`.
        op: u8,
    },
}

/// A response to write into the ring.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Completion {
    /// SCSI status byte (`rsp.scsi_status`).
    pub status: u8,
    /// Sense data (truncated to 96 bytes).
    pub sense: Bytes,
    /// Data-In bytes actually transferred, when fewer than the buffer holds
    /// (sent with `UFLAG_READ_LEN`, only if the kernel has `CAP_READ_LEN`).
    pub read_len: Option<u32>,
    /// Mark the command as an unknown operation.
    pub unknown_op: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SlotKind {
    /// PAD or TMR: nothing to complete, the kernel skips it.
    Skip,
    /// A slot that holds (or will hold) one completion.
    Cmd(u16),
}

#[derive(Clone, Copy, Debug)]
struct Slot {
    off: u32,
    len: u32,
    kind: SlotKind,
    done: bool,
}

/// Geometry read from the mailbox at open.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    /// The mailbox `flags`: the kernel's capabilities (see [`cap`]).
    pub flags: u16,
    /// Offset of the command ring in the mapping.
    pub cmdr_off: u32,
    /// Length in bytes of the command ring.
    pub cmdr_size: u32,
    /// Start of the data area (= cmdr_off + cmdr_size).
    pub data_off: usize,
    /// Length of the mapping.
    pub len: usize,
}

/// Length in bytes of a CDB with this first byte (SCSI opcode groups), `None` for the
/// variable-length group, whose length is in byte 7.
pub fn cdb_len(opcode: u8) -> Option<usize> {
    match opcode >> 5 {
        0 => Some(6),
        1 | 2 => Some(10),
        3 if opcode == 0x7f => None,
        3 => Some(12),
        4 => Some(16),
        5 => Some(12),
        _ => Some(10),
    }
}

/// lunard's view of one command ring.
pub struct Ring {
    mem: Arc<SharedMem>,
    geo: Geometry,
    ooo: bool,
    /// Ring offset up to which entries have been parsed.
    parsed: u32,
    /// Our tail (ring offset), published to the mailbox by [`Ring::publish`].
    tail: u32,
    published: u32,
    /// Parsed, unreleased slots from `tail` to `parsed`, in ring order.
    slots: VecDeque<Slot>,
    /// cmd_ids handed out by `poll` and not completed yet.
    outstanding: HashSet<u16>,
    broken: Option<String>,
}

impl Ring {
    /// Validates the mailbox and takes over the ring from its current tail (entries
    /// between tail and head are re-read: after a restart they were never completed).
    pub fn new(mem: Arc<SharedMem>) -> Result<Self, RingError> {
        let version = mem.u16_at(mailbox::VERSION)?;
        if version != MAILBOX_VERSION {
            return Err(RingError::Version(version));
        }
        let flags = mem.u16_at(mailbox::FLAGS)?;
        let cmdr_off = mem.u32_at(mailbox::CMDR_OFF)?;
        let cmdr_size = mem.u32_at(mailbox::CMDR_SIZE)?;
        let len = mem.len();
        let bad = || RingError::Geometry {
            cmdr_off,
            cmdr_size,
            len,
        };
        let data_off = (cmdr_off as usize)
            .checked_add(cmdr_size as usize)
            .ok_or_else(bad)?;
        if (cmdr_off as usize) < mailbox::MIN_SIZE
            || cmdr_off % ENTRY_ALIGN != 0
            || cmdr_size < entry::CMD_ENTRY_SIZE as u32
            || cmdr_size % ENTRY_ALIGN != 0
            || data_off > len
        {
            return Err(bad());
        }
        let tail = mem.atomic_u32(mailbox::CMD_TAIL)?.load(Ordering::Acquire);
        if tail >= cmdr_size || tail % ENTRY_ALIGN != 0 {
            return Err(RingError::Broken(format!("cmd_tail {tail} out of range")));
        }
        Ok(Self {
            mem,
            geo: Geometry {
                flags,
                cmdr_off,
                cmdr_size,
                data_off,
                len,
            },
            ooo: flags & cap::OOOC != 0,
            parsed: tail,
            tail,
            published: tail,
            slots: VecDeque::new(),
            outstanding: HashSet::new(),
            broken: None,
        })
    }

    /// The mailbox geometry and flags.
    pub fn geometry(&self) -> Geometry {
        self.geo
    }

    /// Whether completions may be out of order (the kernel has `CAP_OOOC`).
    pub fn out_of_order(&self) -> bool {
        self.ooo
    }

    /// Whether `read_len` can be reported (`CAP_READ_LEN`).
    pub fn read_len_supported(&self) -> bool {
        self.geo.flags & cap::READ_LEN != 0
    }

    /// The shared mapping.
    pub fn mem(&self) -> &Arc<SharedMem> {
        &self.mem
    }

    /// Commands handed out by [`Ring::poll`] and not completed yet.
    pub fn outstanding(&self) -> usize {
        self.outstanding.len()
    }

    /// Why the ring stopped being usable, if it did.
    pub fn broken(&self) -> Option<&str> {
        self.broken.as_deref()
    }

    fn ring_pos(&self, rel: u32) -> usize {
        self.geo.cmdr_off as usize + rel as usize
    }

    fn advance(&self, pos: u32, by: u32) -> u32 {
        // `by` never exceeds cmdr_size (checked in parse), so this cannot overflow u64.
        ((u64::from(pos) + u64::from(by)) % u64::from(self.geo.cmdr_size)) as u32
    }

    /// Reads the entries the kernel added since the last call. Entries up to a broken one
    /// are returned; after that the ring is marked broken and every later call fails.
    pub fn poll(&mut self) -> Result<Vec<Entry>, RingError> {
        if let Some(b) = &self.broken {
            return Err(RingError::Broken(b.clone()));
        }
        let head = self
            .mem
            .atomic_u32(mailbox::CMD_HEAD)?
            .load(Ordering::Acquire);
        let mut out = Vec::new();
        if head >= self.geo.cmdr_size || head % ENTRY_ALIGN != 0 {
            self.broken = Some(format!(
                "cmd_head {head} outside the {}-byte ring",
                self.geo.cmdr_size
            ));
            return Ok(out);
        }
        // Each iteration consumes at least 8 bytes of the (finite) distance to head, so
        // this terminates.
        while self.parsed != head {
            let avail = if head > self.parsed {
                head - self.parsed
            } else {
                self.geo.cmdr_size - self.parsed + head
            };
            match self.parse_at(self.parsed, avail) {
                Ok((len, e)) => {
                    let kind = match &e {
                        Entry::Pad | Entry::Tmr { .. } => SlotKind::Skip,
                        Entry::Cmd(c) => SlotKind::Cmd(c.cmd_id),
                        Entry::Invalid { cmd_id, .. } | Entry::Unknown { cmd_id, .. } => {
                            SlotKind::Cmd(*cmd_id)
                        }
                    };
                    if let SlotKind::Cmd(id) = kind {
                        if !self.outstanding.insert(id) {
                            self.broken = Some(format!(
                                "cmd_id {id} at ring offset {} is already outstanding",
                                self.parsed
                            ));
                            break;
                        }
                    }
                    self.slots.push_back(Slot {
                        off: self.parsed,
                        len,
                        kind,
                        done: false,
                    });
                    self.parsed = self.advance(self.parsed, len);
                    out.push(e);
                }
                Err(reason) => {
                    self.broken = Some(format!("at ring offset {}: {reason}", self.parsed));
                    break;
                }
            }
        }
        self.release_prefix();
        Ok(out)
    }

    /// Parses the entry at ring offset `at`, with `avail` bytes up to head. Returns its
    /// length and contents, or why the ring cannot be walked past it.
    fn parse_at(&self, at: u32, avail: u32) -> Result<(u32, Entry), String> {
        let base = self.ring_pos(at);
        let len_op = self
            .mem
            .u32_at(base + entry::LEN_OP)
            .map_err(|e| e.to_string())?;
        let len = len_op & !op::MASK;
        let opcode = (len_op & op::MASK) as u8;
        if len == 0 {
            return Err("entry of length 0".into());
        }
        if len > avail {
            return Err(format!(
                "entry of {len} bytes runs past cmd_head ({avail} bytes left)"
            ));
        }
        if u64::from(at) + u64::from(len) > u64::from(self.geo.cmdr_size) {
            return Err(format!("entry of {len} bytes wraps around the ring end"));
        }
        let cmd_id = self
            .mem
            .u16_at(base + entry::CMD_ID)
            .map_err(|e| e.to_string())?;
        if opcode == op::PAD {
            return Ok((len, Entry::Pad));
        }
        if opcode != op::TMR && (len as usize) < entry::CMD_ENTRY_SIZE {
            // A response would overwrite the next entry.
            return Err(format!(
                "command entry of {len} bytes cannot hold a response"
            ));
        }
        let e = match opcode {
            op::CMD => match self.parse_cmd(base, len as usize, cmd_id) {
                Ok(c) => Entry::Cmd(c),
                Err(reason) => Entry::Invalid { cmd_id, reason },
            },
            op::TMR => self.parse_tmr(base, len as usize),
            other => Entry::Unknown { cmd_id, op: other },
        };
        Ok((len, e))
    }

    fn parse_cmd(&self, base: usize, len: usize, cmd_id: u16) -> Result<CmdEntry, String> {
        let m = &self.mem;
        let e = |x: OutOfBounds| x.to_string();
        let iov_cnt = m.u32_at(base + entry::IOV_CNT).map_err(e)? as u64;
        let bidi = m.u32_at(base + entry::IOV_BIDI_CNT).map_err(e)? as u64;
        let dif = m.u32_at(base + entry::IOV_DIF_CNT).map_err(e)? as u64;
        let total = iov_cnt + bidi + dif;
        let iov_bytes = total * entry::IOV_SIZE as u64;
        if entry::IOV as u64 + iov_bytes > len as u64 {
            return Err(format!("{total} iovecs do not fit in a {len}-byte entry"));
        }
        let mut iovs = Vec::with_capacity(iov_cnt as usize);
        for i in 0..iov_cnt as usize {
            let at = base + entry::IOV + i * entry::IOV_SIZE;
            let ib = m.u64_at(at).map_err(e)?;
            let il = m.u64_at(at + 8).map_err(e)?;
            let inside = match ib.checked_add(il) {
                Some(end) => ib >= self.geo.data_off as u64 && end <= self.geo.len as u64,
                None => false,
            };
            if !inside {
                return Err(format!(
                    "iovec {i} ({ib:#x}+{il}) outside the data area {:#x}..{:#x}",
                    self.geo.data_off, self.geo.len
                ));
            }
            if il > 0 {
                iovs.push(Iov {
                    off: ib as usize,
                    len: il as usize,
                });
            }
        }
        let cdb_off = m.u64_at(base + entry::CDB_OFF).map_err(e)?;
        let bad_cdb = || format!("CDB offset {cdb_off:#x} outside the mapping");
        let cdb_off = usize::try_from(cdb_off).map_err(|_| bad_cdb())?;
        let mut first = [0u8; 8];
        m.read(cdb_off, &mut first).map_err(|_| bad_cdb())?;
        let n = match cdb_len(first[0]) {
            Some(n) => n,
            None => 8 + usize::from(first[7]),
        }
        .min(MAX_CDB);
        let mut cdb = vec![0u8; n];
        m.read(cdb_off, &mut cdb).map_err(|_| bad_cdb())?;
        Ok(CmdEntry {
            cmd_id,
            cdb: Bytes::from(cdb),
            iovs,
        })
    }

    fn parse_tmr(&self, base: usize, len: usize) -> Entry {
        let mut t = [0u8; 1];
        let tmr_type = match self.mem.read(base + entry::TMR_TYPE, &mut t) {
            Ok(()) => t[0],
            Err(_) => 0,
        };
        let cnt = self.mem.u32_at(base + entry::TMR_CMD_CNT).unwrap_or(0) as usize;
        // Only the ids that fit in the entry.
        let fit = len.saturating_sub(entry::TMR_CMD_IDS) / 2;
        let cmd_ids = (0..cnt.min(fit))
            .filter_map(|i| self.mem.u16_at(base + entry::TMR_CMD_IDS + 2 * i).ok())
            .collect();
        Entry::Tmr { tmr_type, cmd_ids }
    }

    /// Records the response of `cmd_id` in the ring (not yet visible to the kernel: call
    /// [`Ring::publish`]).
    pub fn complete(&mut self, cmd_id: u16, c: &Completion) -> Result<(), RingError> {
        if !self.outstanding.contains(&cmd_id) {
            return Err(RingError::NotOutstanding(cmd_id));
        }
        if self.ooo {
            // Steal the oldest unreleased command slot. Skips at the front were released
            // already, so the front is a command slot: there are exactly as many command
            // slots between tail and parsed as outstanding commands.
            let Some(pos) = self
                .slots
                .iter()
                .position(|s| matches!(s.kind, SlotKind::Cmd(_)) && !s.done)
            else {
                return Err(RingError::Broken(format!(
                    "no ring slot left for cmd_id {cmd_id}"
                )));
            };
            let off = self.slots[pos].off;
            self.write_response(off, cmd_id, c)?;
            self.slots[pos].done = true;
        } else {
            let Some(pos) = self
                .slots
                .iter()
                .position(|s| s.kind == SlotKind::Cmd(cmd_id) && !s.done)
            else {
                return Err(RingError::NotOutstanding(cmd_id));
            };
            let off = self.slots[pos].off;
            self.write_response(off, cmd_id, c)?;
            self.slots[pos].done = true;
        }
        self.outstanding.remove(&cmd_id);
        self.release_prefix();
        Ok(())
    }

    fn write_response(&self, at: u32, cmd_id: u16, c: &Completion) -> Result<(), RingError> {
        let base = self.ring_pos(at);
        let m = &self.mem;
        let mut uflags = 0u8;
        if c.unknown_op {
            uflags |= uflag::UNKNOWN_OP;
        }
        let mut read_len = 0u32;
        if let Some(n) = c.read_len {
            if self.read_len_supported() {
                uflags |= uflag::READ_LEN;
                read_len = n;
            }
        }
        m.write(base + entry::CMD_ID, &cmd_id.to_ne_bytes())?;
        m.write(base + entry::UFLAGS, &[uflags])?;
        m.write(base + entry::SCSI_STATUS, &[c.status, 0, 0, 0])?;
        m.write(base + entry::READ_LEN, &read_len.to_ne_bytes())?;
        let n = c.sense.len().min(entry::SENSE_SIZE);
        m.write(base + entry::SENSE, &c.sense[..n])?;
        m.zero(base + entry::SENSE + n, entry::SENSE_SIZE - n)?;
        Ok(())
    }

    /// Moves our tail over the released prefix: skip slots and finished command slots.
    fn release_prefix(&mut self) {
        while let Some(s) = self.slots.front() {
            if s.kind != SlotKind::Skip && !s.done {
                break;
            }
            self.tail = self.advance(s.off, s.len);
            self.slots.pop_front();
        }
    }

    /// Makes everything completed so far visible to the kernel (release store of
    /// `cmd_tail`). Returns whether the tail moved, i.e. whether the kernel should be
    /// kicked.
    pub fn publish(&mut self) -> Result<bool, RingError> {
        if self.tail == self.published {
            return Ok(false);
        }
        self.mem
            .atomic_u32(mailbox::CMD_TAIL)?
            .store(self.tail, Ordering::Release);
        self.published = self.tail;
        Ok(true)
    }
}

/// The offsets above against the C layout rules, mirrored with `repr(C)` structs: the
/// kernel's `tcmu_cmd_entry` is packed, but the `req`/`rsp` structs in its union are not,
/// so their members keep natural alignment.
#[cfg(test)]
mod layout {
    use super::entry;
    use std::mem::{offset_of, size_of};

    #[allow(dead_code)]
    #[repr(C)]
    struct Req {
        iov_cnt: u32,
        iov_bidi_cnt: u32,
        iov_dif_cnt: u32,
        cdb_off: u64,
        pad1: u64,
        pad2: u64,
    }

    #[allow(dead_code)]
    #[repr(C)]
    struct Rsp {
        scsi_status: u8,
        pad1: u8,
        pad2: u16,
        read_len: u32,
        sense_buffer: [u8; 96],
    }

    #[test]
    fn offsets_follow_the_c_layout() {
        let hdr = entry::HDR_SIZE;
        assert_eq!(hdr + offset_of!(Req, iov_cnt), entry::IOV_CNT);
        assert_eq!(hdr + offset_of!(Req, iov_dif_cnt), entry::IOV_DIF_CNT);
        assert_eq!(hdr + offset_of!(Req, cdb_off), entry::CDB_OFF);
        assert_eq!(hdr + size_of::<Req>(), entry::IOV);
        assert_eq!(hdr + offset_of!(Rsp, scsi_status), entry::SCSI_STATUS);
        assert_eq!(hdr + offset_of!(Rsp, read_len), entry::READ_LEN);
        assert_eq!(hdr + offset_of!(Rsp, sense_buffer), entry::SENSE);
        assert_eq!(
            hdr + size_of::<Req>().max(size_of::<Rsp>()),
            entry::CMD_ENTRY_SIZE
        );
    }
}
