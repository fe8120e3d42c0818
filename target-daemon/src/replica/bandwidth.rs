//! The bandwidth limit of a relationship: a token bucket on the sending stream.
//!
//! [`TokenBucket`] is the arithmetic (time passed in, sans I/O, unit-tested);
//! [`Throttled`] wraps the stream's writer and sleeps when the bucket is empty. The burst
//! is a quarter second of the rate (at least 64 KiB), so the average holds over any window
//! longer than that while a single write is never split.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::AsyncWrite;
use tokio::time::{Instant, Sleep};

/// Bytes per second and the burst the bucket holds.
#[derive(Clone, Debug)]
pub struct TokenBucket {
    rate: u64,
    burst: u64,
    /// Available bytes (may go negative: a write larger than the bucket borrows).
    tokens: i128,
    last_ns: u128,
}

impl TokenBucket {
    /// A full bucket for `rate` bytes per second, at time `now_ns`.
    pub fn new(rate: u64, now_ns: u128) -> TokenBucket {
        let rate = rate.max(1);
        let burst = (rate / 4).max(64 * 1024);
        TokenBucket {
            rate,
            burst,
            tokens: burst as i128,
            last_ns: now_ns,
        }
    }

    fn refill(&mut self, now_ns: u128) {
        let dt = now_ns.saturating_sub(self.last_ns);
        self.last_ns = self.last_ns.max(now_ns);
        let add = (dt * self.rate as u128 / 1_000_000_000) as i128;
        self.tokens = (self.tokens + add).min(self.burst as i128);
    }

    /// How long to wait at `now_ns` before `n` bytes may go; zero when they may go now
    /// (they are then taken).
    pub fn take(&mut self, now_ns: u128, n: u64) -> Duration {
        self.refill(now_ns);
        if self.tokens > 0 {
            self.tokens -= n as i128;
            return Duration::ZERO;
        }
        let missing = (1 - self.tokens) as u128;
        Duration::from_nanos(
            (missing * 1_000_000_000 / self.rate as u128).min(u64::MAX as u128) as u64,
        )
    }
}

/// A writer limited to a rate by a [`TokenBucket`].
pub struct Throttled<W> {
    inner: W,
    bucket: Option<TokenBucket>,
    start: Instant,
    sleep: Option<Pin<Box<Sleep>>>,
}

impl<W> Throttled<W> {
    /// `inner` limited to `rate` bytes per second (`None`: unlimited).
    pub fn new(inner: W, rate: Option<u64>) -> Throttled<W> {
        Throttled {
            inner,
            bucket: rate.map(|r| TokenBucket::new(r, 0)),
            start: Instant::now(),
            sleep: None,
        }
    }

    /// The wrapped writer.
    pub fn into_inner(self) -> W {
        self.inner
    }
}

impl<W: AsyncWrite + Unpin> AsyncWrite for Throttled<W> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.get_mut()
            .paced(cx, |w, cx| Pin::new(w).poll_write(cx, buf))
    }

    /// Vectored writes pass through (the sender gathers framing and payloads, gather.rs).
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        self.get_mut()
            .paced(cx, |w, cx| Pin::new(w).poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl<W: AsyncWrite + Unpin> Throttled<W> {
    /// Waits until the bucket allows a write, runs `write`, and takes what it wrote.
    fn paced(
        &mut self,
        cx: &mut Context<'_>,
        write: impl FnOnce(&mut W, &mut Context<'_>) -> Poll<std::io::Result<usize>>,
    ) -> Poll<std::io::Result<usize>> {
        let this = self;
        loop {
            if let Some(s) = this.sleep.as_mut() {
                if s.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                this.sleep = None;
            }
            let Some(bucket) = this.bucket.as_mut() else {
                break;
            };
            let now = this.start.elapsed().as_nanos();
            let wait = bucket.take(now, 0);
            if wait.is_zero() {
                break;
            }
            this.sleep = Some(Box::pin(tokio::time::sleep(wait)));
        }
        let r = write(&mut this.inner, cx);
        if let (Poll::Ready(Ok(n)), Some(b)) = (&r, this.bucket.as_mut()) {
            let now = this.start.elapsed().as_nanos();
            b.refill(now);
            b.tokens -= *n as i128;
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u128 = 1_000_000_000;

    #[test]
    fn bucket_holds_the_average_rate() {
        let rate = 1_000_000u64;
        let mut b = TokenBucket::new(rate, 0);
        let mut now = 0u128;
        let mut sent = 0u64;
        // Send 64 KiB writes as fast as the bucket allows for 10 simulated seconds.
        while now < 10 * S {
            let w = b.take(now, 0);
            if w.is_zero() {
                b.tokens -= 65536;
                sent += 65536;
            } else {
                now += w.as_nanos();
            }
        }
        let burst = (rate / 4).max(65536) + 65536;
        assert!(sent <= 10 * rate + burst, "sent {sent}");
        assert!(sent >= 10 * rate - 65536, "sent {sent}");
    }

    #[test]
    fn idle_time_does_not_bank_more_than_the_burst() {
        let mut b = TokenBucket::new(1_000_000, 0);
        b.refill(1000 * S);
        assert_eq!(b.tokens, 250_000);
    }

    #[tokio::test]
    async fn throttled_writer_paces_writes() {
        use tokio::io::AsyncWriteExt;
        let mut w = Throttled::new(tokio::io::sink(), Some(1_000_000));
        let t0 = Instant::now();
        let buf = vec![0u8; 50_000];
        for _ in 0..30 {
            w.write_all(&buf).await.unwrap();
        }
        // 1.5 MB at 1 MB/s with a 256 KB burst cannot take less than 1.2 s (a lower bound:
        // a slow machine only makes it longer).
        assert!(
            t0.elapsed() >= Duration::from_millis(1200),
            "{:?}",
            t0.elapsed()
        );
    }
}
