//! The page-cache fast path: `preadv2`/`pwritev2` with `RWF_NOWAIT` on the caller's thread.
//!
//! A pool file is buffered, so most reads of hot data and most writes are served by the page
//! cache in a few microseconds. Sending them to the ring thread (or the blocking pool) costs
//! two thread hops and a wake-up per I/O, which at queue depth 1 is most of a 4 KiB command's
//! latency. With `RWF_NOWAIT` the kernel does the copy only if it will not block (no disk
//! read, no writeback throttling, no lock to sleep on) and says `EAGAIN` otherwise; whatever
//! it did not do goes to the backend as before. Kernels or filesystems without support answer
//! `EOPNOTSUPP`/`EINVAL`/`ENOSYS` once and the fast path turns itself off.
//!
//! tmpfs is the exception: it answers `RWF_NOWAIT` with `EOPNOTSUPP` (kernel 6.18), yet its
//! pages live in memory, so a plain `preadv2`/`pwritev2` never waits for a device either (only
//! swap could make it wait). A pool on tmpfs therefore takes the same caller-thread path
//! without the flag; before this, every I/O of such a pool (the benchmarks against tgtd keep
//! both targets' data on tmpfs) went through the ring thread.

use std::fs::File;
use std::mem::MaybeUninit;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;

/// Whether each direction is still worth trying on this pool.
pub(crate) struct NoWait {
    reads: AtomicBool,
    writes: AtomicBool,
    /// `RWF_NOWAIT`, or 0 for memory-backed files (tmpfs), where no I/O waits for a device.
    flags: libc::c_int,
}

/// `f_type` of tmpfs in `statfs` (linux/magic.h).
const TMPFS_MAGIC: i64 = 0x0102_1994;

/// Whether `file` lives on tmpfs.
fn on_tmpfs(file: &File) -> bool {
    // SAFETY: `statfs` is plain old data; fstatfs fills it for a valid descriptor.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: the descriptor is valid for the lifetime of `file`; `st` is writable.
    let r = unsafe { libc::fstatfs(file.as_raw_fd(), &mut st) };
    // `f_type` is `__fsword_t`: i64 here, narrower on some targets.
    #[allow(clippy::useless_conversion)]
    let ty = i64::from(st.f_type);
    r == 0 && ty == TMPFS_MAGIC
}

/// What `RWF_NOWAIT` answered for one attempt.
enum Attempt {
    /// This many bytes were transferred (0 is possible: nothing without blocking).
    Done(usize),
    /// The kernel or filesystem does not support it: stop trying.
    Unsupported,
}

fn classify(ret: isize) -> Attempt {
    if ret >= 0 {
        return Attempt::Done(ret as usize);
    }
    match std::io::Error::last_os_error().raw_os_error() {
        Some(libc::EOPNOTSUPP | libc::EINVAL | libc::ENOSYS) => Attempt::Unsupported,
        // EAGAIN (would block), EINTR, or a real error: the backend retries and reports it.
        _ => Attempt::Done(0),
    }
}

impl NoWait {
    /// Both directions enabled for `file` unless `LUNAR_IO_NOWAIT=0`.
    pub(crate) fn new(file: &File) -> Self {
        let on = std::env::var("LUNAR_IO_NOWAIT").map_or(true, |v| v != "0");
        NoWait {
            reads: AtomicBool::new(on),
            writes: AtomicBool::new(on),
            flags: if on_tmpfs(file) { 0 } else { libc::RWF_NOWAIT },
        }
    }

    /// Read into `buf` (which need not be initialised) from `off` without blocking; returns
    /// how many leading bytes were read (and so are initialised).
    pub(crate) fn read(&self, file: &File, off: u64, buf: &mut [MaybeUninit<u8>]) -> usize {
        if !self.reads.load(Ordering::Relaxed) || buf.is_empty() {
            return 0;
        }
        let mut done = 0usize;
        while done < buf.len() {
            let iov = libc::iovec {
                iov_base: buf[done..].as_mut_ptr().cast(),
                iov_len: buf.len() - done,
            };
            let Ok(pos) = libc::off_t::try_from(off + done as u64) else {
                return done;
            };
            // SAFETY: `iov` points into `buf`, which is valid and exclusively borrowed for
            // its whole length; the kernel writes at most `iov_len` bytes there (writing
            // to uninitialised bytes is fine; nothing reads them before the kernel fills them).
            let ret = unsafe { libc::preadv2(file.as_raw_fd(), &iov, 1, pos, self.flags) };
            match classify(ret) {
                Attempt::Done(0) => break,
                Attempt::Done(n) => done += n,
                Attempt::Unsupported => {
                    self.reads.store(false, Ordering::Relaxed);
                    break;
                }
            }
        }
        done
    }

    /// Write `bufs` back to back at `off` without blocking; returns how many leading bytes
    /// were written (the caller writes the rest through the backend).
    pub(crate) fn write(&self, file: &File, off: u64, bufs: &[Bytes]) -> usize {
        if !self.writes.load(Ordering::Relaxed) {
            return 0;
        }
        let mut done = 0usize;
        let mut skip = 0usize;
        for b in bufs {
            if skip + b.len() <= done {
                skip += b.len();
                continue;
            }
            let mut at = done - skip;
            while at < b.len() {
                let iov = libc::iovec {
                    iov_base: b[at..].as_ptr() as *mut libc::c_void,
                    iov_len: b.len() - at,
                };
                let Ok(pos) = libc::off_t::try_from(off + done as u64) else {
                    return done;
                };
                // SAFETY: `iov` points into `b`, alive for the call; the kernel only reads it.
                let ret = unsafe { libc::pwritev2(file.as_raw_fd(), &iov, 1, pos, self.flags) };
                match classify(ret) {
                    Attempt::Done(0) => return done,
                    Attempt::Done(n) => {
                        done += n;
                        at += n;
                    }
                    Attempt::Unsupported => {
                        self.writes.store(false, Ordering::Relaxed);
                        return done;
                    }
                }
            }
            skip += b.len();
        }
        done
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    /// An initialised buffer seen as the uninitialised slice `read` takes.
    fn uninit(b: &mut [u8]) -> &mut [MaybeUninit<u8>] {
        // SAFETY: same layout; initialised bytes are valid `MaybeUninit`s, and `read` only
        // writes initialised bytes into them.
        unsafe { &mut *(b as *mut [u8] as *mut [MaybeUninit<u8>]) }
    }

    fn file() -> (tempfile::TempDir, File) {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(dir.path().join("f"))
            .expect("open");
        (dir, f)
    }

    #[test]
    fn writes_and_reads_through_the_page_cache() {
        let (_d, f) = file();
        let nw = NoWait::new(&f);
        let bufs = vec![
            Bytes::from(vec![1u8; 4096]),
            Bytes::from(vec![2u8; 100]),
            Bytes::from(vec![3u8; 8192]),
        ];
        let n = nw.write(&f, 512, &bufs);
        // Whatever the fast path wrote is exactly the leading bytes; finish the rest as the
        // backend would, then both views agree.
        let all: Vec<u8> = bufs.iter().flat_map(|b| b.iter().copied()).collect();
        f.write_all_at(&all[n..], 512 + n as u64).expect("rest");
        let mut got = vec![0u8; all.len()];
        let r = nw.read(&f, 512, uninit(&mut got));
        f.read_exact_at(&mut got[r..], 512 + r as u64)
            .expect("rest");
        assert_eq!(got, all);
        // Cached data just written is served by the fast path on this kernel, if supported.
        if nw.reads.load(Ordering::Relaxed) {
            assert_eq!(r, all.len(), "a page-cached read does not need the backend");
        }
    }

    /// On tmpfs the caller-thread path works without `RWF_NOWAIT` (which tmpfs refuses).
    #[test]
    fn tmpfs_takes_the_fast_path() {
        let Ok(dir) = tempfile::tempdir_in("/dev/shm") else {
            return; // no tmpfs here
        };
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(dir.path().join("f"))
            .expect("open");
        if !on_tmpfs(&f) {
            return;
        }
        let nw = NoWait::new(&f);
        if !nw.reads.load(Ordering::Relaxed) {
            return; // LUNAR_IO_NOWAIT=0
        }
        assert_eq!(nw.write(&f, 0, &[Bytes::from(vec![9u8; 8192])]), 8192);
        let mut buf = vec![0u8; 8192];
        assert_eq!(nw.read(&f, 0, uninit(&mut buf)), 8192);
        assert!(buf.iter().all(|&b| b == 9));
    }

    #[test]
    fn reads_stop_at_end_of_file_and_can_be_disabled() {
        let (_d, f) = file();
        f.write_all_at(&[7u8; 1000], 0).expect("write");
        let nw = NoWait::new(&f);
        let mut buf = vec![0u8; 4096];
        let n = nw.read(&f, 0, uninit(&mut buf));
        assert!(n <= 1000, "never past end of file");
        assert!(buf[..n].iter().all(|&b| b == 7));
        nw.reads.store(false, Ordering::Relaxed);
        assert_eq!(nw.read(&f, 0, uninit(&mut buf)), 0);
        nw.writes.store(false, Ordering::Relaxed);
        assert_eq!(nw.write(&f, 0, &[Bytes::from_static(b"x")]), 0);
    }
}
