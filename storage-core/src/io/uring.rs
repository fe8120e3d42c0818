//! io_uring backend: one ring thread owns the ring; requests arrive over a channel and
//! complete through oneshot channels. Falls back (at setup) when the kernel refuses io_uring.

use std::fs::File;
use std::os::unix::io::AsRawFd;
use std::sync::mpsc;
use std::sync::Arc;

use bytes::Bytes;

use crate::{Result, StorageError};

enum Req {
    Read {
        off: u64,
        buf: Vec<u8>,
        done: tokio::sync::oneshot::Sender<std::io::Result<Vec<u8>>>,
    },
    Write {
        off: u64,
        bufs: Vec<Bytes>,
        done: tokio::sync::oneshot::Sender<std::io::Result<()>>,
    },
}

pub(crate) struct UringIo {
    tx: parking_lot::Mutex<mpsc::Sender<Req>>,
}

fn gone() -> StorageError {
    StorageError::io(
        "submitting to io_uring",
        std::io::Error::other("io_uring thread stopped"),
    )
}

impl UringIo {
    pub(crate) fn new(file: Arc<File>) -> std::io::Result<UringIo> {
        let mut ring = io_uring::IoUring::new(256)?;
        // Probe once so that a kernel (or seccomp policy) that creates rings but rejects
        // operations makes us fall back here rather than fail every I/O later.
        probe(&mut ring, &file)?;
        let (tx, rx) = mpsc::channel::<Req>();
        std::thread::Builder::new()
            .name("lunar-uring".into())
            .spawn(move || ring_thread(ring, file, rx))?;
        Ok(UringIo {
            tx: parking_lot::Mutex::new(tx),
        })
    }

    pub(crate) async fn read(&self, off: u64, len: usize) -> Result<Vec<u8>> {
        let (done, rx) = tokio::sync::oneshot::channel();
        self.tx
            .lock()
            .send(Req::Read {
                off,
                buf: vec![0u8; len],
                done,
            })
            .map_err(|_| gone())?;
        rx.await
            .map_err(|_| gone())?
            .map_err(|e| StorageError::io("reading data", e))
    }

    pub(crate) async fn write(&self, off: u64, bufs: Vec<Bytes>) -> Result<()> {
        let (done, rx) = tokio::sync::oneshot::channel();
        self.tx
            .lock()
            .send(Req::Write { off, bufs, done })
            .map_err(|_| gone())?;
        rx.await
            .map_err(|_| gone())?
            .map_err(|e| StorageError::io("writing data", e))
    }
}

fn probe(ring: &mut io_uring::IoUring, file: &File) -> std::io::Result<()> {
    use io_uring::{opcode, types};
    let mut buf = vec![0u8; 512];
    let sqe = opcode::Read::new(
        types::Fd(file.as_raw_fd()),
        buf.as_mut_ptr(),
        buf.len() as u32,
    )
    .offset(0)
    .build()
    .user_data(u64::MAX);
    // SAFETY: `buf` outlives the operation: we wait for its completion before returning.
    unsafe { ring.submission().push(&sqe) }
        .map_err(|_| std::io::Error::other("io_uring submission queue full"))?;
    ring.submit_and_wait(1)?;
    let res = ring
        .completion()
        .next()
        .map(|c| c.result())
        .unwrap_or(-libc::EIO);
    if res < 0 {
        return Err(std::io::Error::from_raw_os_error(-res));
    }
    Ok(())
}

/// One in-flight operation: its buffers stay owned here until completion, and short
/// transfers are resubmitted for the remainder.
struct Op {
    req: Req,
    done_bytes: usize,
    iov: Vec<libc::iovec>,
}

fn total_len(req: &Req) -> usize {
    match req {
        Req::Read { buf, .. } => buf.len(),
        Req::Write { bufs, .. } => bufs.iter().map(|b| b.len()).sum(),
    }
}

fn build_sqe(fd: i32, op: &mut Op, key: u64) -> io_uring::squeue::Entry {
    use io_uring::{opcode, types};
    let skip = op.done_bytes;
    match &mut op.req {
        Req::Read { off, buf, .. } => {
            let rest = &mut buf[skip..];
            opcode::Read::new(types::Fd(fd), rest.as_mut_ptr(), rest.len() as u32)
                .offset(*off + skip as u64)
                .build()
                .user_data(key)
        }
        Req::Write { off, bufs, .. } => {
            op.iov.clear();
            let mut s = skip;
            for b in bufs.iter() {
                if s >= b.len() {
                    s -= b.len();
                    continue;
                }
                op.iov.push(libc::iovec {
                    iov_base: b[s..].as_ptr() as *mut libc::c_void,
                    iov_len: b.len() - s,
                });
                s = 0;
            }
            opcode::Writev::new(types::Fd(fd), op.iov.as_ptr(), op.iov.len() as u32)
                .offset(*off + skip as u64)
                .build()
                .user_data(key)
        }
    }
}

fn finish(op: Op, res: std::io::Result<()>) {
    match op.req {
        Req::Read { buf, done, .. } => {
            let _ = done.send(res.map(|_| buf));
        }
        Req::Write { done, .. } => {
            let _ = done.send(res);
        }
    }
}

fn ring_thread(mut ring: io_uring::IoUring, file: Arc<File>, rx: mpsc::Receiver<Req>) {
    let fd = file.as_raw_fd();
    let mut ops: std::collections::HashMap<u64, Op> = std::collections::HashMap::new();
    let mut next_key: u64 = 0;
    let cap = 200usize;
    loop {
        // Block for work only when nothing is in flight.
        let mut incoming = Vec::new();
        if ops.is_empty() {
            match rx.recv() {
                Ok(r) => incoming.push(r),
                Err(_) => return,
            }
        }
        while ops.len() + incoming.len() < cap {
            match rx.try_recv() {
                Ok(r) => incoming.push(r),
                Err(mpsc::TryRecvError::Empty) => break,
                Err(mpsc::TryRecvError::Disconnected) => {
                    if ops.is_empty() && incoming.is_empty() {
                        return;
                    }
                    break;
                }
            }
        }
        for req in incoming {
            let key = next_key;
            next_key += 1;
            ops.insert(
                key,
                Op {
                    req,
                    done_bytes: 0,
                    iov: Vec::new(),
                },
            );
            let Some(op) = ops.get_mut(&key) else {
                continue;
            };
            let sqe = build_sqe(fd, op, key);
            // SAFETY: the buffers and iovecs referenced by the SQE live in `ops` until the
            // matching completion is reaped below.
            while unsafe { ring.submission().push(&sqe) }.is_err() {
                if ring.submit().is_err() {
                    break;
                }
            }
        }
        if let Err(e) = ring.submit_and_wait(1) {
            if e.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            // Ring is broken: fail everything in flight and stop.
            for (_, op) in ops.drain() {
                finish(op, Err(std::io::Error::new(e.kind(), e.to_string())));
            }
            return;
        }
        let cqes: Vec<(u64, i32)> = ring
            .completion()
            .map(|c| (c.user_data(), c.result()))
            .collect();
        for (key, res) in cqes {
            let Some(mut op) = ops.remove(&key) else {
                continue;
            };
            if res < 0 {
                if -res == libc::EINTR || -res == libc::EAGAIN {
                    let sqe = build_sqe(fd, &mut op, key);
                    ops.insert(key, op);
                    // SAFETY: as above.
                    let _ = unsafe { ring.submission().push(&sqe) };
                    continue;
                }
                finish(op, Err(std::io::Error::from_raw_os_error(-res)));
                continue;
            }
            op.done_bytes += res as usize;
            let total = total_len(&op.req);
            if op.done_bytes >= total {
                finish(op, Ok(()));
            } else if res == 0 {
                finish(
                    op,
                    Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "short transfer",
                    )),
                );
            } else {
                let sqe = build_sqe(fd, &mut op, key);
                ops.insert(key, op);
                // SAFETY: as above.
                let _ = unsafe { ring.submission().push(&sqe) };
            }
        }
    }
}
