//! A simulated kernel side for tests: plays `target_core_user` on a memory-mapped
//! temporary file laid out like the real region (mailbox, command ring, data area).
//! It queues CMD entries (CDB in the ring, data in the data area, scattered iovecs),
//! inserts PAD entries when an entry would not fit before the ring end, and reaps
//! completions the way the kernel does: walking from its last cleaned position to
//! `cmd_tail`, skipping PAD/TMR and taking the cmd_id from each slot.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::os::fd::AsFd;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use super::device::Doorbell;
use super::mem::SharedMem;
use super::ring::{cap, entry, mailbox, op, uflag, MAILBOX_VERSION};

/// Where the kernel puts the ring: `sizeof(struct tcmu_mailbox)`, 128 with the 64-byte
/// aligned cmd_tail.
pub(crate) const CMDR_OFF: usize = 128;

/// The simulated UIO fd.
#[derive(Default)]
pub(crate) struct SimBell {
    irq: Notify,
    kicked: Notify,
    pub kicks: AtomicU64,
    gone: AtomicBool,
}

impl SimBell {
    /// The device was removed: the next wait fails (UIO's EIO).
    pub(crate) fn remove(&self) {
        self.gone.store(true, Ordering::SeqCst);
        self.irq.notify_one();
    }
}

impl Doorbell for SimBell {
    fn wait(&self) -> Pin<Box<dyn Future<Output = io::Result<()>> + Send + '_>> {
        Box::pin(async move {
            if !self.gone.load(Ordering::SeqCst) {
                self.irq.notified().await;
            }
            if self.gone.load(Ordering::SeqCst) {
                return Err(io::Error::other("uio device removed"));
            }
            Ok(())
        })
    }

    fn kick(&self) -> io::Result<()> {
        self.kicks.fetch_add(1, Ordering::SeqCst);
        self.kicked.notify_one();
        Ok(())
    }
}

/// How a command's data goes.
pub(crate) enum Data {
    None,
    /// Data-Out bytes, split into iovecs of these sizes (the last takes the rest).
    Out(Vec<u8>, Vec<usize>),
    /// A Data-In buffer of this many bytes, split like `Out`.
    In(usize, Vec<usize>),
}

struct Pending {
    slot: u32,
    iovs: Vec<(usize, usize)>,
}

/// A completed command as the kernel sees it.
#[derive(Debug)]
pub(crate) struct Done {
    pub cmd_id: u16,
    pub status: u8,
    pub uflags: u8,
    pub read_len: u32,
    pub sense: Vec<u8>,
    /// The data buffer's contents (cut to read_len when READ_LEN is flagged).
    pub data: Vec<u8>,
    /// The buffer in full, whatever read_len says.
    pub raw: Vec<u8>,
    /// Completed in another command's slot (OOOC stealing).
    pub stolen_slot: bool,
}

pub(crate) struct Sim {
    _file: std::fs::File,
    mem: Arc<SharedMem>,
    pub dev_mem: Arc<SharedMem>,
    pub bell: Arc<SimBell>,
    cmdr_size: u32,
    data_off: usize,
    len: usize,
    ooo: bool,
    head: u32,
    cleaned: u32,
    cursor: usize,
    next_id: u16,
    pending: HashMap<u16, Pending>,
    pub pads: usize,
}

fn align8(n: usize) -> usize {
    (n + 7) & !7
}

impl Sim {
    pub(crate) fn new(flags: u16, cmdr_size: u32, data_size: usize) -> Sim {
        let file = tempfile::tempfile().unwrap();
        let len = CMDR_OFF + cmdr_size as usize + data_size;
        file.set_len(len as u64).unwrap();
        let mem = Arc::new(SharedMem::map(file.as_fd(), len).unwrap());
        let dev_mem = Arc::new(SharedMem::map(file.as_fd(), len).unwrap());
        mem.write(mailbox::VERSION, &MAILBOX_VERSION.to_ne_bytes())
            .unwrap();
        mem.write(mailbox::FLAGS, &flags.to_ne_bytes()).unwrap();
        mem.write(mailbox::CMDR_OFF, &(CMDR_OFF as u32).to_ne_bytes())
            .unwrap();
        mem.write(mailbox::CMDR_SIZE, &cmdr_size.to_ne_bytes())
            .unwrap();
        let data_off = CMDR_OFF + cmdr_size as usize;
        Sim {
            _file: file,
            mem,
            dev_mem,
            bell: Arc::new(SimBell::default()),
            cmdr_size,
            data_off,
            len,
            ooo: flags & cap::OOOC != 0,
            head: 0,
            cleaned: 0,
            cursor: data_off,
            next_id: 1,
            pending: HashMap::new(),
            pads: 0,
        }
    }

    /// Allocates `n` bytes in the data area, never overlapping a pending command's.
    fn alloc(&mut self, n: usize) -> usize {
        if self.cursor + n > self.len {
            self.cursor = self.data_off;
        }
        let at = self.cursor;
        for p in self.pending.values() {
            for &(o, l) in &p.iovs {
                assert!(at + n <= o || o + l <= at, "sim data area exhausted");
            }
        }
        // Leave a gap so iovecs are really scattered.
        self.cursor += align8(n) + 64;
        at
    }

    fn split(&mut self, total: usize, sizes: &[usize]) -> Vec<(usize, usize)> {
        let mut out = Vec::new();
        let mut left = total;
        for (i, &s) in sizes.iter().enumerate() {
            let n = if i + 1 == sizes.len() {
                left
            } else {
                s.min(left)
            };
            if n == 0 {
                continue;
            }
            out.push((self.alloc(n), n));
            left -= n;
        }
        if left > 0 {
            out.push((self.alloc(left), left));
        }
        out
    }

    /// Queues a command (not yet signalled: see [`Sim::irq`]). `tweak` may corrupt the
    /// entry bytes before they are written (the head still advances by the real size).
    pub(crate) fn submit_with(
        &mut self,
        cdb: &[u8],
        data: Data,
        tweak: impl FnOnce(&mut Vec<u8>),
    ) -> u16 {
        let iovs = match &data {
            Data::None => Vec::new(),
            Data::Out(bytes, sizes) => {
                let iovs = self.split(bytes.len(), sizes);
                let mut at = 0;
                for &(o, l) in &iovs {
                    self.mem.write(o, &bytes[at..at + l]).unwrap();
                    at += l;
                }
                iovs
            }
            Data::In(n, sizes) => {
                let iovs = self.split(*n, sizes);
                for &(o, l) in &iovs {
                    self.mem.write(o, &vec![0xAA; l]).unwrap();
                }
                iovs
            }
        };
        let base_len = entry::IOV + iovs.len() * entry::IOV_SIZE;
        let size = align8((base_len + cdb.len()).max(entry::CMD_ENTRY_SIZE)) as u32;
        let used = (self.head + self.cmdr_size - self.cleaned) % self.cmdr_size;
        let to_end = self.cmdr_size - self.head;
        let pad = if size > to_end { to_end } else { 0 };
        assert!(used + pad + size < self.cmdr_size, "sim ring full");
        if pad > 0 {
            let at = CMDR_OFF + self.head as usize;
            self.mem
                .write(at, &(pad | u32::from(op::PAD)).to_ne_bytes())
                .unwrap();
            self.mem.write(at + 4, &[0; 4]).unwrap();
            self.head = 0;
            self.pads += 1;
        }
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1).max(1);
        let at = CMDR_OFF + self.head as usize;
        let mut e = vec![0u8; size as usize];
        e[0..4].copy_from_slice(&(size | u32::from(op::CMD)).to_ne_bytes());
        e[4..6].copy_from_slice(&id.to_ne_bytes());
        e[8..12].copy_from_slice(&(iovs.len() as u32).to_ne_bytes());
        e[entry::CDB_OFF..entry::CDB_OFF + 8]
            .copy_from_slice(&((at + base_len) as u64).to_ne_bytes());
        for (i, &(o, l)) in iovs.iter().enumerate() {
            let p = entry::IOV + i * entry::IOV_SIZE;
            e[p..p + 8].copy_from_slice(&(o as u64).to_ne_bytes());
            e[p + 8..p + 16].copy_from_slice(&(l as u64).to_ne_bytes());
        }
        e[base_len..base_len + cdb.len()].copy_from_slice(cdb);
        tweak(&mut e);
        self.mem.write(at, &e).unwrap();
        self.pending.insert(
            id,
            Pending {
                slot: self.head,
                iovs,
            },
        );
        self.head = (self.head + size) % self.cmdr_size;
        self.mem
            .atomic_u32(mailbox::CMD_HEAD)
            .unwrap()
            .store(self.head, Ordering::Release);
        id
    }

    pub(crate) fn submit(&mut self, cdb: &[u8], data: Data) -> u16 {
        self.submit_with(cdb, data, |_| {})
    }

    /// Signals the device (UIO interrupt).
    pub(crate) fn irq(&self) {
        self.bell.irq.notify_one();
    }

    /// Processes completions up to cmd_tail, as tcmu_handle_completions does.
    pub(crate) fn reap(&mut self) -> Vec<Done> {
        let tail = self
            .mem
            .atomic_u32(mailbox::CMD_TAIL)
            .unwrap()
            .load(Ordering::Acquire);
        let mut out = Vec::new();
        while self.cleaned != tail {
            let base = CMDR_OFF + self.cleaned as usize;
            let len_op = self.mem.u32_at(base).unwrap();
            let len = len_op & !op::MASK;
            assert!(len > 0, "zero-length entry at {}", self.cleaned);
            let o = (len_op & op::MASK) as u8;
            if o == op::PAD || o == op::TMR {
                self.cleaned = (self.cleaned + len) % self.cmdr_size;
                continue;
            }
            let id = self.mem.u16_at(base + entry::CMD_ID).unwrap();
            let p = self
                .pending
                .remove(&id)
                .unwrap_or_else(|| panic!("cmd_id {id} not found, ring is broken"));
            if !self.ooo {
                assert_eq!(
                    p.slot, self.cleaned,
                    "cmd_id {id} completed in another slot without OOOC"
                );
            }
            let mut hdr = [0u8; 8];
            self.mem.read(base + 8, &mut hdr).unwrap();
            let uflags = self.mem.read_u8(base + entry::UFLAGS);
            let read_len = u32::from_ne_bytes(hdr[4..8].try_into().unwrap());
            let mut sense = vec![0u8; entry::SENSE_SIZE];
            self.mem.read(base + entry::SENSE, &mut sense).unwrap();
            let mut raw = Vec::new();
            for &(o, l) in &p.iovs {
                let mut b = vec![0u8; l];
                self.mem.read(o, &mut b).unwrap();
                raw.extend(b);
            }
            let mut data = raw.clone();
            if uflags & uflag::READ_LEN != 0 && (read_len as usize) < data.len() && read_len > 0 {
                data.truncate(read_len as usize);
            }
            out.push(Done {
                cmd_id: id,
                status: hdr[0],
                uflags,
                read_len,
                sense,
                data,
                raw,
                stolen_slot: p.slot != self.cleaned,
            });
            self.cleaned = (self.cleaned + len) % self.cmdr_size;
        }
        out
    }

    /// Reaps until `n` commands are done (10 s at most).
    pub(crate) async fn collect(&mut self, n: usize) -> Vec<Done> {
        let mut out = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            out.extend(self.reap());
            if out.len() >= n {
                return out;
            }
            let bell = self.bell.clone();
            if tokio::time::timeout_at(deadline, bell.kicked.notified())
                .await
                .is_err()
            {
                out.extend(self.reap());
                assert!(
                    out.len() >= n,
                    "only {} of {n} commands completed",
                    out.len()
                );
                return out;
            }
        }
    }

    pub(crate) fn pending(&self) -> usize {
        self.pending.len()
    }
}

impl SharedMem {
    fn read_u8(&self, off: usize) -> u8 {
        let mut b = [0u8; 1];
        self.read(off, &mut b).unwrap();
        b[0]
    }
}

#[cfg(test)]
mod tests;
