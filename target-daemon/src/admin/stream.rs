//! Byte-stream mode of the admin API: `replica.send` and `replica.receive` carry a
//! replication stream on the same connection as their request line, so `lunarctl replica
//! send ... | ssh dr lunarctl replica receive ...` needs nothing but the admin socket.
//!
//! - `replica.send`: lunard answers one response line (an error, or the stream's plan), then
//!   writes the stream bytes and closes the connection. A stream that stops before its END
//!   trailer failed on the way (lunarctl checks it as it copies).
//! - `replica.receive`: the client writes the stream bytes right after the request line and
//!   half-closes; lunard reads them up to the END trailer, applies the stream and answers one
//!   response line (the result, or the error with a resume token when the staged state was
//!   kept), then closes. An error found early (a replayed stream) is answered at once.
//!
//! The admin limits still hold: the request line is bounded as any other, a stream
//! connection counts against the connection cap, and it is closed when no stream byte
//! moves for the idle timeout (a client that stops reading or writing holds nothing).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use storage_core::stream::StreamProgress;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use super::proto::Response;
use super::{encode, reply, write_response};
use crate::lunmgr::LunManager;

/// An I/O object that fails with `TimedOut` when a read or write waits longer than `idle`
/// without progress (time spent elsewhere between calls does not count).
pub(crate) struct Idle<S> {
    inner: S,
    idle: Duration,
    timer: Pin<Box<Sleep>>,
    waiting: bool,
}

impl<S> Idle<S> {
    pub(crate) fn new(inner: S, idle: Duration) -> Idle<S> {
        Idle {
            inner,
            idle,
            timer: Box::pin(tokio::time::sleep(idle)),
            waiting: false,
        }
    }

    fn guard<T>(
        &mut self,
        cx: &mut Context<'_>,
        poll: impl FnOnce(&mut S, &mut Context<'_>) -> Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if !self.waiting {
            self.timer.as_mut().reset(Instant::now() + self.idle);
            self.waiting = true;
        }
        match poll(&mut self.inner, cx) {
            Poll::Ready(r) => {
                self.waiting = false;
                Poll::Ready(r)
            }
            Poll::Pending => match self.timer.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    self.waiting = false;
                    crate::metrics::global().limit_refusal("admin_idle_timeout");
                    Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!(
                            "no stream bytes moved for {}s (admin idle timeout)",
                            self.idle.as_secs()
                        ),
                    )))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Idle<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.get_mut()
            .guard(cx, |s, cx| Pin::new(s).poll_read(cx, buf))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Idle<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut()
            .guard(cx, |s, cx| Pin::new(s).poll_write(cx, buf))
    }

    /// Vectored writes pass through (the sender gathers framing and payloads).
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.get_mut()
            .guard(cx, |s, cx| Pin::new(s).poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().guard(cx, |s, cx| Pin::new(s).poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut()
            .guard(cx, |s, cx| Pin::new(s).poll_shutdown(cx))
    }
}

/// `replica.send` on a connection: the plan (or the error) as a response line, then the
/// stream.
pub(crate) async fn serve_send<W: AsyncWrite + Unpin + Send>(
    mgr: &Arc<LunManager>,
    args: SendArgs,
    w: &mut W,
    idle: Duration,
) {
    let prepared = mgr
        .replica_prepare_send(
            &args.volume,
            &args.snapshot,
            args.from.as_deref(),
            args.resume.as_deref(),
        )
        .await;
    let (prepared, plan) = match prepared {
        Ok(p) => p,
        Err(e) => {
            crate::metrics::global().replica_stream("send", e.kind());
            let _ = write_response(w, &Response::mgr_err(&e)).await;
            return;
        }
    };
    if write_response(w, &encode(&plan)).await.is_err() {
        return;
    }
    let progress = StreamProgress::default();
    let result = prepared.write_to(Idle::new(&mut *w, idle), &progress).await;
    let bytes = progress.bytes.load(std::sync::atomic::Ordering::Relaxed);
    crate::metrics::global().replica_stream_bytes("send", bytes);
    match result {
        Ok(sum) => {
            crate::metrics::global().replica_stream("send", "ok");
            tracing::info!(volume = %args.volume, snapshot = %args.snapshot, bytes = sum.bytes,
                "replica send over the admin socket finished");
        }
        Err(e) => {
            crate::metrics::global().replica_stream("send", e.kind());
            tracing::warn!(volume = %args.volume, snapshot = %args.snapshot, bytes,
                "replica send over the admin socket failed: {e}");
        }
    }
}

/// Arguments of `replica.send`.
pub(crate) struct SendArgs {
    pub(crate) volume: String,
    pub(crate) snapshot: String,
    pub(crate) from: Option<String>,
    pub(crate) resume: Option<String>,
}

/// `replica.receive` on a connection: the stream from `r`, one response line to `w`.
pub(crate) async fn serve_receive<R, W>(
    mgr: &Arc<LunManager>,
    pool: Option<String>,
    volume: String,
    r: R,
    w: &mut W,
    idle: Duration,
) where
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin,
{
    let progress = StreamProgress::default();
    let result = mgr
        .replica_receive(
            pool.as_deref(),
            &volume,
            None,
            Idle::new(r, idle),
            &progress,
        )
        .await;
    let bytes = progress.bytes.load(std::sync::atomic::Ordering::Relaxed);
    crate::metrics::global().replica_stream_bytes("receive", bytes);
    match &result {
        Ok(_) => crate::metrics::global().replica_stream("receive", "ok"),
        Err(e) => {
            crate::metrics::global().replica_stream("receive", e.kind());
            tracing::warn!(volume = %volume, bytes, "replica receive over the admin socket failed: {e}");
        }
    }
    let _ = write_response(w, &reply(result)).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn a_stalled_stream_times_out_but_time_spent_elsewhere_does_not_count() {
        let (mut a, b) = tokio::io::duplex(64);
        let mut r = Idle::new(b, Duration::from_millis(200));
        a.write_all(b"x").await.unwrap();
        let mut buf = [0u8; 8];
        assert_eq!(r.read(&mut buf).await.unwrap(), 1);
        // Busy elsewhere for longer than the idle time: the next read still waits afresh.
        tokio::time::sleep(Duration::from_millis(600)).await;
        a.write_all(b"y").await.unwrap();
        assert_eq!(r.read(&mut buf).await.unwrap(), 1);
        // Nothing comes: timed out.
        let e = r.read(&mut buf).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
    }

    #[tokio::test]
    async fn a_reader_that_stops_reading_times_the_writer_out() {
        let (_a, b) = tokio::io::duplex(16);
        let mut w = Idle::new(b, Duration::from_millis(200));
        let e = w.write_all(&[0u8; 64]).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
    }
}
