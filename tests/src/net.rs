//! Loopback ports for daemons under test.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

/// Picks a currently free TCP port on 127.0.0.1 by binding port 0 and releasing it.
///
/// Another process could take the port before the daemon binds it; callers that start a
/// daemon retry with a fresh port when the daemon reports "address in use".
pub fn free_loopback_port() -> std::io::Result<u16> {
    let listener = TcpListener::bind(("127.0.0.1", 0))?;
    Ok(listener.local_addr()?.port())
}

/// Whether something accepts TCP connections on `addr` right now.
pub fn accepts(addr: SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
}

/// Polls `addr` until it accepts connections or `timeout` passes.
pub fn wait_accepting(addr: SocketAddr, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if accepts(addr) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}
