//! The shared memory region of one TCMU device: the only place in the TCMU front end that
//! touches raw pointers.
//!
//! The kernel and lunard share one `MAP_SHARED` mapping (the UIO device's map 0, or in
//! tests a temporary file laid out the same way). Every access goes through this type and
//! is bounds-checked against the mapping's length, so an offset taken from a hostile or
//! buggy ring entry can at worst produce an error, never an access outside the mapping.
//!
//! Concurrency: the kernel writes new ring entries and `cmd_head`; lunard writes responses,
//! Data-In and `cmd_tail`. The two sides never write the same bytes at the same time by
//! protocol: an entry belongs to lunard from the moment `cmd_head` passes it (acquire load)
//! until `cmd_tail` passes it (release store), and a command's data buffers belong to
//! lunard until it is completed. Plain (non-volatile) copies are therefore enough between
//! those two fences, as in every other consumer of this ring.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::ptr::NonNull;
use std::sync::atomic::AtomicU32;
use std::sync::Arc;

use bytes::Bytes;

/// An access outside the mapping (or misaligned, for atomics).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("shared memory access at {off}+{len} outside the {size}-byte mapping (or misaligned)")]
pub struct OutOfBounds {
    /// Byte offset into the mapping the access started at.
    pub off: usize,
    /// Length in bytes of the access.
    pub len: usize,
    /// Size in bytes of the whole mapping.
    pub size: usize,
}

/// A `MAP_SHARED` read/write mapping, unmapped on drop.
pub struct SharedMem {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is plain shared memory; all access is through raw-pointer copies
// within bounds and through atomics, whose ownership rules are described in the module doc.
unsafe impl Send for SharedMem {}
// SAFETY: as above; no `&mut` to the memory is ever handed out.
unsafe impl Sync for SharedMem {}

impl SharedMem {
    /// Maps `len` bytes of `fd` from offset 0, shared and read/write.
    pub fn map(fd: BorrowedFd<'_>, len: usize) -> io::Result<Self> {
        if len == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "cannot map an empty region",
            ));
        }
        // SAFETY: mmap with a null hint has no preconditions beyond a valid fd, which
        // `BorrowedFd` guarantees; the result is checked for MAP_FAILED.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = NonNull::new(p.cast::<u8>())
            .ok_or_else(|| io::Error::other("mmap returned a null pointer"))?;
        Ok(Self { ptr, len })
    }

    /// Length of the mapping in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the mapping is empty (never, by construction).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn check(&self, off: usize, len: usize) -> Result<(), OutOfBounds> {
        match off.checked_add(len) {
            Some(end) if end <= self.len => Ok(()),
            _ => Err(OutOfBounds {
                off,
                len,
                size: self.len,
            }),
        }
    }

    /// Copies `buf.len()` bytes at `off` out of the mapping.
    pub fn read(&self, off: usize, buf: &mut [u8]) -> Result<(), OutOfBounds> {
        self.check(off, buf.len())?;
        // SAFETY: the range is inside the mapping (checked above) and `buf` is a distinct
        // local buffer, so the regions do not overlap.
        unsafe {
            std::ptr::copy_nonoverlapping(self.ptr.as_ptr().add(off), buf.as_mut_ptr(), buf.len())
        };
        Ok(())
    }

    /// Copies `data` into the mapping at `off`.
    pub fn write(&self, off: usize, data: &[u8]) -> Result<(), OutOfBounds> {
        self.check(off, data.len())?;
        // SAFETY: the range is inside the mapping (checked above); `data` is not part of
        // the mapping's bytes lunard owns at this moment (callers pass local buffers).
        unsafe {
            std::ptr::copy_nonoverlapping(data.as_ptr(), self.ptr.as_ptr().add(off), data.len())
        };
        Ok(())
    }

    /// Fills `len` bytes at `off` with zeroes.
    pub fn zero(&self, off: usize, len: usize) -> Result<(), OutOfBounds> {
        self.check(off, len)?;
        // SAFETY: the range is inside the mapping (checked above).
        unsafe { std::ptr::write_bytes(self.ptr.as_ptr().add(off), 0, len) };
        Ok(())
    }

    /// Reads a native-endian u16 (TCMU structures are in host byte order).
    pub fn u16_at(&self, off: usize) -> Result<u16, OutOfBounds> {
        let mut b = [0u8; 2];
        self.read(off, &mut b)?;
        Ok(u16::from_ne_bytes(b))
    }

    /// Reads a native-endian u32.
    pub fn u32_at(&self, off: usize) -> Result<u32, OutOfBounds> {
        let mut b = [0u8; 4];
        self.read(off, &mut b)?;
        Ok(u32::from_ne_bytes(b))
    }

    /// Reads a native-endian u64.
    pub fn u64_at(&self, off: usize) -> Result<u64, OutOfBounds> {
        let mut b = [0u8; 8];
        self.read(off, &mut b)?;
        Ok(u64::from_ne_bytes(b))
    }

    /// The u32 at `off` as an atomic (for `cmd_head`/`cmd_tail`, which the two sides
    /// publish to each other). `off` must be 4-byte aligned.
    pub fn atomic_u32(&self, off: usize) -> Result<&AtomicU32, OutOfBounds> {
        self.check(off, 4)?;
        let p = self.ptr.as_ptr().wrapping_add(off);
        if !(p as usize).is_multiple_of(std::mem::align_of::<AtomicU32>()) {
            return Err(OutOfBounds {
                off,
                len: 4,
                size: self.len,
            });
        }
        // SAFETY: in bounds and aligned (checked above); the memory lives as long as
        // `self` and is only ever accessed atomically at this offset by both sides.
        Ok(unsafe { &*p.cast::<AtomicU32>() })
    }

    /// `len` bytes at `off` as [`Bytes`] without copying: the returned buffer keeps the
    /// mapping alive. Only for a command's Data-Out buffer, which the kernel does not touch
    /// until the command is completed — so the device server must not keep Data-Out past
    /// its response (it does not: storage-core writes it out before the write returns).
    pub fn bytes(self: &Arc<Self>, off: usize, len: usize) -> Result<Bytes, OutOfBounds> {
        self.check(off, len)?;
        Ok(Bytes::from_owner(MapSlice {
            mem: self.clone(),
            off,
            len,
        }))
    }
}

impl Drop for SharedMem {
    fn drop(&mut self) {
        // SAFETY: ptr/len are exactly what mmap returned; nothing borrows the mapping any
        // more (every borrower holds an Arc to `self`).
        let rc = unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
        if rc != 0 {
            tracing::warn!(error = %io::Error::last_os_error(), "munmap of a TCMU region failed");
        }
    }
}

/// Owner of a zero-copy slice of the mapping (see [`SharedMem::bytes`]).
struct MapSlice {
    mem: Arc<SharedMem>,
    off: usize,
    len: usize,
}

impl AsRef<[u8]> for MapSlice {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: the range was bounds-checked when the slice was made and the Arc keeps
        // the mapping alive; the bytes are a Data-Out buffer nobody writes while the
        // command is outstanding (see `SharedMem::bytes`).
        unsafe { std::slice::from_raw_parts(self.mem.ptr.as_ptr().add(self.off), self.len) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn bounds_are_enforced() {
        let f = tempfile::tempfile().unwrap();
        f.set_len(4096).unwrap();
        let m = Arc::new(SharedMem::map(f.as_fd(), 4096).unwrap());
        assert!(m.write(4090, &[1; 6]).is_ok());
        assert!(m.write(4091, &[1; 6]).is_err());
        assert!(m.read(usize::MAX, &mut [0u8; 2]).is_err());
        assert!(m.atomic_u32(4093).is_err());
        assert!(m.atomic_u32(2).is_err());
        assert!(m.bytes(4000, 97).is_err());
        let b = m.bytes(4090, 6).unwrap();
        drop(m);
        // The zero-copy slice keeps the mapping alive.
        assert_eq!(&b[..], &[1; 6]);
    }
}
