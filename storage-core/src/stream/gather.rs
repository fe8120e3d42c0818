//! Gathered writes for the sender: records are queued as their small framing (copied into
//! one buffer) and their payloads (the chunk's `Bytes`, by reference), and a batch goes out
//! in vectored writes. A payload is never copied on its way to the writer: before this the
//! sender copied every chunk into a 512 KiB `BufWriter`, one extra pass over every byte of a
//! full send (docs/performance.md, "Replication streams").
//!
//! A writer that does not take vectored writes (`is_write_vectored` false: its vectored write
//! would write only the first piece, a syscall per 16-byte framing) gets the batch copied
//! into one buffer and written as before.

use std::io::IoSlice;
use std::ops::Range;

use bytes::Bytes;
use tokio::io::{AsyncWrite, AsyncWriteExt};

/// Bytes queued before a batch is written.
pub(crate) const BATCH_BYTES: usize = 512 << 10;
/// Pieces queued before a batch is written (well below the kernel's `IOV_MAX` of 1024).
const BATCH_PIECES: usize = 256;

/// One queued piece.
enum Piece {
    /// A range of [`Gather::framing`].
    Framing(Range<usize>),
    /// A payload.
    Payload(Bytes),
}

/// Records waiting to be written.
#[derive(Default)]
pub(crate) struct Gather {
    framing: Vec<u8>,
    pieces: Vec<Piece>,
    bytes: usize,
}

impl Gather {
    /// Queues framing bytes (joined to the framing queued just before when nothing lies
    /// between: a record's CRC and the next record's prefix make one piece).
    pub(crate) fn framing(&mut self, b: &[u8]) {
        if b.is_empty() {
            return;
        }
        let start = self.framing.len();
        self.framing.extend_from_slice(b);
        let end = self.framing.len();
        match self.pieces.last_mut() {
            Some(Piece::Framing(r)) if r.end == start => r.end = end,
            _ => self.pieces.push(Piece::Framing(start..end)),
        }
        self.bytes += b.len();
    }

    /// Queues a payload.
    pub(crate) fn payload(&mut self, b: Bytes) {
        if b.is_empty() {
            return;
        }
        self.bytes += b.len();
        self.pieces.push(Piece::Payload(b));
    }

    /// Whether the batch should be written now.
    pub(crate) fn full(&self) -> bool {
        self.bytes >= BATCH_BYTES || self.pieces.len() >= BATCH_PIECES
    }

    fn slice<'a>(&'a self, p: &'a Piece) -> &'a [u8] {
        match p {
            Piece::Framing(r) => &self.framing[r.clone()],
            Piece::Payload(b) => b,
        }
    }

    /// Writes everything queued to `w` and empties the batch (flushing `w` is the caller's).
    pub(crate) async fn write_to<W: AsyncWrite + Unpin>(
        &mut self,
        w: &mut W,
    ) -> std::io::Result<()> {
        if self.bytes == 0 {
            return Ok(());
        }
        if !w.is_write_vectored() {
            let mut all = Vec::with_capacity(self.bytes);
            for p in &self.pieces {
                all.extend_from_slice(self.slice(p));
            }
            w.write_all(&all).await?;
            return self.clear();
        }
        // (piece, offset into it) of the first byte not written yet.
        let (mut at, mut off) = (0usize, 0usize);
        let mut slices: Vec<IoSlice<'_>> = Vec::with_capacity(self.pieces.len());
        while at < self.pieces.len() {
            slices.clear();
            slices.push(IoSlice::new(&self.slice(&self.pieces[at])[off..]));
            for p in &self.pieces[at + 1..] {
                slices.push(IoSlice::new(self.slice(p)));
            }
            let mut n = w.write_vectored(&slices).await?;
            if n == 0 {
                return Err(std::io::ErrorKind::WriteZero.into());
            }
            while n > 0 && at < self.pieces.len() {
                let left = self.slice(&self.pieces[at]).len() - off;
                if n >= left {
                    n -= left;
                    at += 1;
                    off = 0;
                } else {
                    off += n;
                    n = 0;
                }
            }
        }
        drop(slices);
        self.clear()
    }

    fn clear(&mut self) -> std::io::Result<()> {
        self.framing.clear();
        self.pieces.clear();
        self.bytes = 0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    /// A writer that takes at most `max` bytes per call, vectored or not.
    struct Trickle {
        out: Vec<u8>,
        max: usize,
        vectored: bool,
        calls: usize,
    }

    impl AsyncWrite for Trickle {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            let n = buf.len().min(self.max);
            self.out.extend_from_slice(&buf[..n]);
            self.calls += 1;
            Poll::Ready(Ok(n))
        }

        fn poll_write_vectored(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            bufs: &[IoSlice<'_>],
        ) -> Poll<std::io::Result<usize>> {
            let mut left = self.max;
            let mut n = 0;
            for b in bufs {
                let k = b.len().min(left);
                self.out.extend_from_slice(&b[..k]);
                left -= k;
                n += k;
            }
            self.calls += 1;
            Poll::Ready(Ok(n))
        }

        fn is_write_vectored(&self) -> bool {
            self.vectored
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    fn fill(g: &mut Gather, want: &mut Vec<u8>) {
        for i in 0..20u8 {
            let prefix = [i; 16];
            let payload = Bytes::from(vec![i.wrapping_mul(7); 1000 + usize::from(i) * 37]);
            let crc = [0xF0 | (i & 0xF); 4];
            g.framing(&prefix);
            g.payload(payload.clone());
            g.framing(&crc);
            want.extend_from_slice(&prefix);
            want.extend_from_slice(&payload);
            want.extend_from_slice(&crc);
        }
    }

    #[tokio::test]
    async fn partial_vectored_writes_keep_every_byte_in_order() {
        for max in [1usize, 3, 17, 999, 1000, 4096, 1 << 20] {
            for vectored in [true, false] {
                let mut g = Gather::default();
                let mut want = Vec::new();
                fill(&mut g, &mut want);
                assert_eq!(g.bytes, want.len());
                let mut w = Trickle {
                    out: Vec::new(),
                    max,
                    vectored,
                    calls: 0,
                };
                g.write_to(&mut w).await.unwrap();
                assert_eq!(w.out, want, "max {max} vectored {vectored}");
                assert_eq!(g.bytes, 0);
                assert!(g.pieces.is_empty());
                if max == 1 << 20 {
                    assert_eq!(w.calls, 1, "one call for everything when it fits");
                }
                // The batch is reusable.
                let mut again = Vec::new();
                fill(&mut g, &mut again);
                w.out.clear();
                g.write_to(&mut w).await.unwrap();
                assert_eq!(w.out, again);
            }
        }
    }

    #[test]
    fn adjacent_framing_is_one_piece() {
        let mut g = Gather::default();
        g.framing(&[1; 4]);
        g.framing(&[2; 16]);
        g.payload(Bytes::from_static(&[3; 8]));
        g.payload(Bytes::new());
        g.framing(&[4; 4]);
        assert_eq!(g.pieces.len(), 3);
        assert_eq!(g.bytes, 32);
    }
}
