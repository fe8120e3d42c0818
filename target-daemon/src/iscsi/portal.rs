//! Portals: listening sockets and their accept loops.

use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpSocket};

use super::{PortalInfo, Server};
use crate::config::PortalCfg;

/// Binds a portal. IPv6 sockets are made IPv6-only so `0.0.0.0:3260` and `[::]:3260` can both
/// be configured.
pub fn bind(cfg: &PortalCfg) -> std::io::Result<(TcpListener, PortalInfo)> {
    let sock = match cfg.listen {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => {
            let s = TcpSocket::new_v6()?;
            set_v6_only(&s)?;
            s
        }
    };
    sock.set_reuseaddr(true)?;
    sock.bind(cfg.listen)?;
    let listener = sock.listen(1024)?;
    let local = listener.local_addr()?;
    Ok((
        listener,
        PortalInfo {
            local,
            advertise: cfg.advertise,
            tpgt: cfg.tpgt,
        },
    ))
}

fn set_v6_only(s: &TcpSocket) -> std::io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: setsockopt on a valid, owned socket descriptor with a correctly sized int value.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::IPPROTO_IPV6,
            libc::IPV6_V6ONLY,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Accepts connections until shutdown; each connection runs in its own task.
pub async fn serve(server: Arc<Server>, listener: TcpListener, portal: PortalInfo) {
    let mut shutdown = server.shutdown_signal();
    loop {
        tokio::select! {
            r = listener.accept() => match r {
                Ok((stream, peer)) => match server.admission.admit(peer.ip()) {
                    Ok(slot) => {
                        tracing::debug!(%peer, portal = %portal.local, "connection accepted");
                        tokio::spawn(super::conn::serve(server.clone(), stream, portal.clone(), slot));
                    }
                    Err(limit) => {
                        // Closed before reading anything: the refusal costs no buffer.
                        crate::metrics::global().limit_refusal(limit.label());
                        tracing::warn!(%peer, portal = %portal.local, limit = limit.label(), "connection refused: limit reached");
                        drop(stream);
                    }
                },
                Err(e) => {
                    // EMFILE and friends: back off briefly instead of spinning.
                    tracing::warn!(portal = %portal.local, "accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            },
            _ = super::conn::signalled(&mut shutdown) => break,
        }
    }
    tracing::debug!(portal = %portal.local, "portal closed");
}
