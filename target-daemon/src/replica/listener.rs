//! The replication listener: accepts TCP, refuses beyond `max_connections` at once,
//! completes mutual TLS within the handshake timeout (a peer that connects and says
//! nothing is dropped then, holding nothing longer), identifies the peer by its pinned
//! certificate and hands the connection to the [`Handler`]. Every refusal is logged with
//! its reason and counted in `lunar_replica_link_refused_total{reason}`.
//!
//! [`connect`] is the dialling side: TCP and TLS within the same timeout, errors
//! explained (unknown peer, plaintext, refused by the peer).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::{TlsAcceptor, TlsConnector};

use super::tls::{classify, PeerSet};

/// A server-side replication connection.
pub type ServerConn = tokio_rustls::server::TlsStream<TcpStream>;
/// A client-side replication connection.
pub type ClientConn = tokio_rustls::client::TlsStream<TcpStream>;

/// Serves one authenticated connection from peer `peer`.
pub trait Handler: Send + Sync + 'static {
    /// Serves `conn`; `deadline` bounds reading the request (the handshake timeout).
    fn serve(
        self: Arc<Self>,
        peer: String,
        conn: ServerConn,
        deadline: Duration,
    ) -> Pin<Box<dyn Future<Output = ()> + Send>>;
}

/// The listener's settings.
#[derive(Clone)]
pub struct ListenerCfg {
    /// TLS configuration ([`super::tls::server_config`]).
    pub tls: Arc<rustls::ServerConfig>,
    /// The trusted peers (to name who connected).
    pub peers: PeerSet,
    /// Connections served at once.
    pub max_connections: u32,
    /// Bound on the TLS handshake and the request.
    pub handshake_timeout: Duration,
}

/// Accepts on `listener` until `shutdown` turns true.
pub async fn run(
    listener: TcpListener,
    cfg: ListenerCfg,
    handler: Arc<dyn Handler>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let acceptor = TlsAcceptor::from(cfg.tls.clone());
    let slots = Arc::new(Semaphore::new(cfg.max_connections as usize));
    let metrics = crate::metrics::global();
    loop {
        let (tcp, addr) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "replication listener: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        if *shutdown.borrow() {
            break;
        }
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            tracing::warn!(%addr, max = cfg.max_connections, "replication connection refused: too many at once");
            metrics.replica_link_refused("too_many");
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let peers = cfg.peers.clone();
        let handler = handler.clone();
        let timeout = cfg.handshake_timeout;
        tokio::spawn(async move {
            let _permit = permit;
            let conn = match tokio::time::timeout(timeout, acceptor.accept(tcp)).await {
                Err(_) => {
                    tracing::warn!(%addr, ?timeout, "replication connection dropped: no TLS handshake within the timeout");
                    metrics.replica_link_refused("timeout");
                    return;
                }
                Ok(Err(e)) => {
                    let (reason, msg) = classify(&e);
                    tracing::warn!(%addr, reason, error = %msg, "replication connection refused");
                    metrics.replica_link_refused(reason);
                    return;
                }
                Ok(Ok(c)) => c,
            };
            let peer = conn
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .and_then(|c| peers.name_of(c))
                .map(str::to_string);
            let Some(peer) = peer else {
                // The verifier accepted only pinned certificates; this cannot be reached
                // unless it changes, and then the connection is refused, not served.
                metrics.replica_link_refused("unknown_peer");
                return;
            };
            tracing::debug!(%addr, %peer, "replication peer connected");
            metrics.replica_link_delta(1);
            handler.serve(peer, conn, timeout).await;
            metrics.replica_link_delta(-1);
        });
    }
}

/// Why dialling a peer failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// Nothing answered / TCP failed.
    #[error("connecting to {addr}: {source}")]
    Tcp {
        /// The peer's address.
        addr: String,
        /// The error.
        source: std::io::Error,
    },
    /// The TLS handshake failed.
    #[error("TLS with {addr} failed ({reason}): {message}")]
    Tls {
        /// The peer's address.
        addr: String,
        /// Metric label.
        reason: &'static str,
        /// Explanation.
        message: String,
    },
    /// It took longer than the timeout.
    #[error("connecting to {addr}: no answer within {timeout:?}")]
    Timeout {
        /// The peer's address.
        addr: String,
        /// The timeout.
        timeout: Duration,
    },
}

/// Dials `addr` and completes mutual TLS within `timeout`.
pub async fn connect(
    addr: &str,
    tls: Arc<rustls::ClientConfig>,
    timeout: Duration,
) -> Result<ClientConn, ConnectError> {
    let name = super::tls::server_name().map_err(|e| ConnectError::Tls {
        addr: addr.to_string(),
        reason: "tls",
        message: e.to_string(),
    })?;
    let fut = async {
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|source| ConnectError::Tcp {
                addr: addr.to_string(),
                source,
            })?;
        let _ = tcp.set_nodelay(true);
        TlsConnector::from(tls)
            .connect(name, tcp)
            .await
            .map_err(|e| {
                let (reason, message) = classify(&e);
                ConnectError::Tls {
                    addr: addr.to_string(),
                    reason,
                    message,
                }
            })
    };
    tokio::time::timeout(timeout, fut)
        .await
        .map_err(|_| ConnectError::Timeout {
            addr: addr.to_string(),
            timeout,
        })?
}

/// The local address a bound listener took (for `listen: ...:0`).
pub fn local_addr(l: &TcpListener) -> Option<SocketAddr> {
    l.local_addr().ok()
}

#[cfg(test)]
mod tests {
    use super::super::identity::Identity;
    use super::super::tls::{client_config, server_config};
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Echoes the peer's name and closes.
    struct Echo;
    impl Handler for Echo {
        fn serve(
            self: Arc<Self>,
            peer: String,
            mut conn: ServerConn,
            _deadline: Duration,
        ) -> Pin<Box<dyn Future<Output = ()> + Send>> {
            Box::pin(async move {
                let _ = conn.write_all(peer.as_bytes()).await;
                let _ = conn.shutdown().await;
            })
        }
    }

    fn id(name: &str) -> Identity {
        Identity::generate(name).unwrap().0
    }

    async fn server(
        srv: &Identity,
        trusted: &[(&str, &Identity)],
        max: u32,
        timeout: Duration,
    ) -> (String, tokio::sync::watch::Sender<bool>) {
        let peers = PeerSet::new(
            trusted
                .iter()
                .map(|(n, i)| (n.to_string(), i.fingerprint())),
        );
        let cfg = ListenerCfg {
            tls: server_config(srv, peers.clone()).unwrap(),
            peers,
            max_connections: max,
            handshake_timeout: timeout,
        };
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let (tx, rx) = tokio::sync::watch::channel(false);
        tokio::spawn(run(l, cfg, Arc::new(Echo), rx));
        (addr, tx)
    }

    #[tokio::test]
    async fn pinned_peer_is_accepted_and_named() {
        let (a, b) = (id("a"), id("b"));
        let (addr, _stop) = server(&a, &[("site-b", &b)], 4, Duration::from_secs(5)).await;
        let cc = client_config(&b, "site-a", a.fingerprint()).unwrap();
        let mut c = connect(&addr, cc, Duration::from_secs(5)).await.unwrap();
        let mut s = String::new();
        c.read_to_string(&mut s).await.unwrap();
        assert_eq!(s, "site-b");
    }

    #[tokio::test]
    async fn unknown_client_certificate_is_refused() {
        let (a, b, mallory) = (id("a"), id("b"), id("m"));
        let (addr, _stop) = server(&a, &[("site-b", &b)], 4, Duration::from_secs(5)).await;
        let cc = client_config(&mallory, "site-a", a.fingerprint()).unwrap();
        // TLS 1.3: the client may finish its side before the server's verdict arrives, so
        // the refusal shows on the first read at the latest.
        let r = match connect(&addr, cc, Duration::from_secs(5)).await {
            Err(e) => Err(e.to_string()),
            Ok(mut c) => {
                let mut s = String::new();
                match c.read_to_string(&mut s).await {
                    Ok(_) if s.is_empty() => Err("closed".into()),
                    Ok(_) => Ok(s),
                    Err(e) => Err(e.to_string()),
                }
            }
        };
        assert!(r.is_err(), "mallory was served: {r:?}");
    }

    #[tokio::test]
    async fn wrong_server_fingerprint_is_refused_by_the_client() {
        let (a, b, other) = (id("a"), id("b"), id("o"));
        let (addr, _stop) = server(&a, &[("site-b", &b)], 4, Duration::from_secs(5)).await;
        let cc = client_config(&b, "site-a", other.fingerprint()).unwrap();
        let e = connect(&addr, cc, Duration::from_secs(5))
            .await
            .unwrap_err();
        match e {
            ConnectError::Tls {
                reason, message, ..
            } => {
                assert_eq!(reason, "unknown_peer", "{message}");
                assert!(message.contains("replication.peers"), "{message}");
            }
            other => panic!("expected a TLS refusal, got {other}"),
        }
    }

    #[tokio::test]
    async fn silent_peer_is_dropped_after_the_handshake_timeout() {
        let (a, b) = (id("a"), id("b"));
        let (addr, _stop) = server(&a, &[("site-b", &b)], 1, Duration::from_millis(300)).await;
        // Connects, says nothing: the server closes it once the timeout passes.
        let mut silent = TcpStream::connect(&addr).await.unwrap();
        let mut buf = [0u8; 16];
        let n = tokio::time::timeout(Duration::from_secs(30), silent.read(&mut buf))
            .await
            .expect("the server must drop a silent peer")
            .unwrap_or(0);
        assert_eq!(n, 0, "closed without data");
        // Its slot is free again: the one allowed connection is served.
        let cc = client_config(&b, "site-a", a.fingerprint()).unwrap();
        let mut c = connect(&addr, cc, Duration::from_secs(5)).await.unwrap();
        let mut s = String::new();
        c.read_to_string(&mut s).await.unwrap();
        assert_eq!(s, "site-b");
    }

    #[tokio::test]
    async fn plaintext_is_refused() {
        let (a, b) = (id("a"), id("b"));
        let (addr, _stop) = server(&a, &[("site-b", &b)], 4, Duration::from_secs(5)).await;
        let mut plain = TcpStream::connect(&addr).await.unwrap();
        plain
            .write_all(b"{\"op\":\"status\",\"version\":1}\n")
            .await
            .unwrap();
        let mut buf = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(30), plain.read_to_end(&mut buf))
            .await
            .expect("the server must close a plaintext connection");
        assert!(
            !String::from_utf8_lossy(&buf).contains("status"),
            "nothing served to plaintext"
        );
        // And a TLS client meets a plaintext server with a clear error.
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let paddr = l.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            if let Ok((mut s, _)) = l.accept().await {
                let _ = s.write_all(b"HTTP/1.0 400 Bad Request\r\n\r\n").await;
            }
        });
        let cc = client_config(&b, "x", a.fingerprint()).unwrap();
        let e = connect(&paddr, cc, Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(
            matches!(
                e,
                ConnectError::Tls {
                    reason: "not_tls",
                    ..
                }
            ),
            "{e}"
        );
    }
}
