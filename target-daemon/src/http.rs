//! The observability endpoint: `/metrics` (Prometheus text format), `/healthz`, `/readyz`.
//!
//! A deliberately tiny HTTP/1.1 responder instead of a web framework: three read-only GET
//! routes, one request per connection, bounded request size and time. It keeps lunard's
//! dependency tree (and attack surface) small; the admin API has its own socket.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

/// Largest request head we read; scrapers send a few hundred bytes.
const MAX_REQUEST: usize = 8 * 1024;
/// A client that does not finish its request in this time is dropped.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Clients served at once. A scraper or two, a health checker and an operator's curl need a
/// handful; a flood beyond this is answered 503 at once and closed, so it can hold neither
/// file descriptors nor tasks that the iSCSI portals and the admin socket need.
pub const MAX_CLIENTS: usize = 32;
/// `/metrics` renders at once (each walks every series on a blocking thread).
const MAX_RENDERS: usize = 2;

/// The pools open in this process now, with their names (asked at each scrape: on a
/// gateway of an HA group pools come and go with ownership).
pub type PoolSource = Arc<dyn Fn() -> Vec<(String, storage_core::Pool)> + Send + Sync>;

/// What the endpoint serves from: the pools for scrape-time figures, and readiness.
#[derive(Clone)]
pub struct HttpState {
    /// The pools whose figures are refreshed at each scrape (None: no pool figures).
    pub pools: Option<PoolSource>,
    /// Set once every portal listens; `/readyz` answers 503 until then and while stopping.
    pub ready: Arc<AtomicBool>,
}

/// Binds `addr` and serves until the returned task is aborted. Returns the bound address
/// (port 0 picks a free one).
pub async fn serve(
    addr: SocketAddr,
    state: HttpState,
) -> anyhow::Result<(SocketAddr, JoinHandle<()>)> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen for metrics on {addr}: {e}"))?;
    let local = listener.local_addr()?;
    let clients = Arc::new(Semaphore::new(MAX_CLIENTS));
    let renders = Arc::new(Semaphore::new(MAX_RENDERS));
    let task = tokio::spawn(async move {
        loop {
            let (sock, peer) = match listener.accept().await {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "metrics accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let Ok(permit) = clients.clone().try_acquire_owned() else {
                // Best effort, never waiting: the socket buffer of a new connection takes it.
                let _ = sock.try_write(BUSY);
                tracing::debug!(%peer, "metrics endpoint busy: connection refused");
                continue;
            };
            let st = state.clone();
            let renders = renders.clone();
            tokio::spawn(async move {
                if let Err(e) =
                    tokio::time::timeout(REQUEST_TIMEOUT, handle(sock, st, &renders)).await
                {
                    tracing::debug!(%peer, error = %e, "metrics client timed out");
                }
                drop(permit);
            });
        }
    });
    Ok((local, task))
}

/// The answer to a client over [`MAX_CLIENTS`].
const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\n\
Content-Length: 17\r\nConnection: close\r\n\r\ntoo many clients\n";

async fn handle(mut sock: TcpStream, st: HttpState, renders: &Semaphore) {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        if buf.windows(4).any(|w| w == b"\r\n\r\n") || buf.windows(2).any(|w| w == b"\n\n") {
            break;
        }
        if buf.len() >= MAX_REQUEST {
            let _ = respond(&mut sock, 431, "text/plain", b"request too large\n").await;
            return;
        }
        match sock.read(&mut chunk).await {
            Ok(0) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(_) => return,
        }
    }
    let line = buf.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    if method != "GET" && method != "HEAD" {
        let _ = respond(&mut sock, 405, "text/plain", b"only GET\n").await;
        return;
    }
    let (code, ctype, body): (u16, &str, Vec<u8>) = match path {
        "/metrics" => {
            let Ok(_render) = renders.acquire().await else {
                return;
            };
            let m = crate::metrics::global();
            let pools = st.pools.as_ref().map(|f| f()).unwrap_or_default();
            let text = tokio::task::spawn_blocking(move || m.render(&pools))
                .await
                .unwrap_or_default();
            (
                200,
                "text/plain; version=0.0.4; charset=utf-8",
                text.into_bytes(),
            )
        }
        "/healthz" => (200, "text/plain", b"ok\n".to_vec()),
        "/readyz" => {
            if st.ready.load(Ordering::Acquire) {
                (200, "text/plain", b"ready\n".to_vec())
            } else {
                (503, "text/plain", b"not ready\n".to_vec())
            }
        }
        _ => (
            404,
            "text/plain",
            b"not found: try /metrics, /healthz, /readyz\n".to_vec(),
        ),
    };
    let body = if method == "HEAD" { &[][..] } else { &body[..] };
    let _ = respond(&mut sock, code, ctype, body).await;
}

async fn respond(sock: &mut TcpStream, code: u16, ctype: &str, body: &[u8]) -> std::io::Result<()> {
    let reason = match code {
        200 => "OK",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Error",
    };
    let head = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    sock.write_all(head.as_bytes()).await?;
    sock.write_all(body).await?;
    sock.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn get(addr: SocketAddr, req: &[u8]) -> String {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(req).await.unwrap();
        let mut out = Vec::new();
        // The server may reset the connection after answering an oversized request.
        let _ = s.read_to_end(&mut out).await;
        String::from_utf8_lossy(&out).into_owned()
    }

    #[tokio::test]
    async fn routes_and_readiness() {
        let ready = Arc::new(AtomicBool::new(false));
        let st = HttpState {
            pools: None,
            ready: ready.clone(),
        };
        let (addr, task) = serve("127.0.0.1:0".parse().unwrap(), st).await.unwrap();
        let r = get(addr, b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(r.starts_with("HTTP/1.1 503"), "{r}");
        ready.store(true, Ordering::Release);
        let r = get(addr, b"GET /readyz HTTP/1.1\r\n\r\n").await;
        assert!(r.starts_with("HTTP/1.1 200"), "{r}");
        let r = get(addr, b"GET /healthz HTTP/1.1\r\n\r\n").await;
        assert!(r.ends_with("ok\n"), "{r}");
        let r = get(addr, b"GET /metrics HTTP/1.1\r\n\r\n").await;
        assert!(r.contains("lunar_build_info"), "{r}");
        let r = get(addr, b"POST /metrics HTTP/1.1\r\n\r\n").await;
        assert!(r.starts_with("HTTP/1.1 405"), "{r}");
        let r = get(addr, b"GET /nope HTTP/1.1\r\n\r\n").await;
        assert!(r.starts_with("HTTP/1.1 404"), "{r}");
        let mut huge = b"GET /metrics HTTP/1.1\r\n".to_vec();
        huge.extend(std::iter::repeat_n(b'a', 20_000));
        let r = get(addr, &huge).await;
        assert!(r.starts_with("HTTP/1.1 431"), "{r}");
        task.abort();
    }

    /// Idle connections beyond the cap are refused at once instead of each holding a task
    /// and a descriptor for the request timeout; once they go, clients are served again.
    #[tokio::test]
    async fn a_connection_flood_is_refused_at_the_cap() {
        let st = HttpState {
            pools: None,
            ready: Arc::new(AtomicBool::new(true)),
        };
        let (addr, task) = serve("127.0.0.1:0".parse().unwrap(), st).await.unwrap();
        let mut idle = Vec::new();
        for _ in 0..MAX_CLIENTS {
            idle.push(TcpStream::connect(addr).await.unwrap());
        }
        // The server takes connections in order, so every idle one holds a slot once the
        // listener has reached this one.
        let r = get(addr, b"GET /healthz HTTP/1.1\r\n\r\n").await;
        assert!(r.starts_with("HTTP/1.1 503"), "{r}");
        drop(idle);
        // Slots come back as the server sees the idle connections close.
        let mut r = String::new();
        for _ in 0..200 {
            r = get(addr, b"GET /healthz HTTP/1.1\r\n\r\n").await;
            if r.starts_with("HTTP/1.1 200") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(r.ends_with("ok\n"), "{r}");
        task.abort();
    }
}
