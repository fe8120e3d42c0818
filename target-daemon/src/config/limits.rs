//! Resource limits: the caps a configuration sets (`limits:`), and the fixed caps of the
//! front ends those are bounded by.
//!
//! The fixed caps live here, not in the front ends that enforce them, so the configuration
//! can check its bounds against them without depending on those front ends (the iSCSI
//! connection and the admin API read their configuration from here, not the other way).

use serde::{Deserialize, Serialize};

use super::size::ByteSize;

/// Largest Data-Out one iSCSI command may transfer, whatever the CDB says: a backstop above
/// anything the device server accepts (8 MiB: the Block Limits MAXIMUM TRANSFER LENGTH and
/// the largest COMPARE AND WRITE), for commands whose Data-Out is "all the initiator sends".
pub const MAX_COMMAND_DATA: u32 = 16 * 1024 * 1024;

/// Largest admin request line accepted (bytes) once a connection is authorised (and always
/// on the Unix socket); longer lines are refused, not buffered.
pub const MAX_REQUEST_LINE: usize = 1 << 20;

/// Smallest `limits.write_buffer_bytes`: twice the largest Data-Out one command may carry
/// (the iSCSI front end's per-command cap), so any single command can always be admitted.
pub const MIN_WRITE_BUFFER: u64 = 2 * MAX_COMMAND_DATA as u64;

/// Smallest `limits.read_buffer_bytes_per_connection`: one READ of the MAXIMUM TRANSFER
/// LENGTH the LUNs advertise (8 MiB), so a connection can always run its largest READ
/// without the budget splitting it.
pub const MIN_READ_BUFFER_PER_CONNECTION: u64 = 8 << 20;

/// Resource limits: how many connections the iSCSI portals and the admin API hold, how
/// much WRITE data the daemon buffers for initiators, and how long an admin connection may
/// idle. Each bounds memory or sockets a client could otherwise claim without limit
/// (before authenticating, for most of them); docs/configuration.md justifies the defaults.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsCfg {
    /// iSCSI connections in all phases, across all portals.
    #[serde(default = "default_max_connections")]
    pub max_connections: u32,
    /// iSCSI connections from one IP address.
    #[serde(default = "default_max_connections_per_address")]
    pub max_connections_per_address: u32,
    /// iSCSI connections that have not finished logging in.
    #[serde(default = "default_max_logins_in_progress")]
    pub max_logins_in_progress: u32,
    /// WRITE data buffered for all initiators together (received or solicited, until the
    /// device server has written it).
    #[serde(default = "default_write_buffer")]
    pub write_buffer_bytes: ByteSize,
    /// The part of `write_buffer_bytes` one connection (one session) may hold, so one
    /// that floods writes and withholds their data cannot starve the others; unset, an
    /// eighth of `write_buffer_bytes` (see [`Self::write_buffer_share`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write_buffer_bytes_per_connection: Option<ByteSize>,
    /// Data-In (READ data) held for all initiators together, from before the device
    /// server reads it until it is written to the socket.
    #[serde(default = "default_read_buffer")]
    pub read_buffer_bytes: ByteSize,
    /// The part of `read_buffer_bytes` one connection may hold.
    #[serde(default = "default_read_buffer_per_connection")]
    pub read_buffer_bytes_per_connection: ByteSize,
    /// Admin API connections open at once on the TCP listener.
    #[serde(default = "default_admin_max_connections")]
    pub admin_max_connections: u32,
    /// Admin API connections open at once on the Unix socket (counted apart from the TCP
    /// listener's, so remote clients cannot lock the local administrator out).
    #[serde(default = "default_admin_max_local_connections")]
    pub admin_max_local_connections: u32,
    /// Longest admin request line accepted before a connection has shown the bearer token
    /// (TCP); authorised connections and the Unix socket may send up to 1 MiB.
    #[serde(default = "default_admin_unauthenticated_request")]
    pub admin_max_unauthenticated_request_bytes: ByteSize,
    /// Seconds an admin connection may stay silent (no request in progress) before the
    /// daemon closes it.
    #[serde(default = "default_admin_idle_timeout")]
    pub admin_idle_timeout_secs: u64,
}

fn default_max_connections() -> u32 {
    1024
}
fn default_max_connections_per_address() -> u32 {
    64
}
fn default_max_logins_in_progress() -> u32 {
    64
}
fn default_write_buffer() -> ByteSize {
    ByteSize(512 << 20)
}
/// 64 connections (`max_connections_per_address`) of 16 MiB each: one address with all
/// its connections can fill the budget, no fewer connections can.
fn default_read_buffer() -> ByteSize {
    ByteSize(1 << 30)
}
/// Two maximum-size (8 MiB) READs, or sixteen of 1 MiB, in flight per connection: more than
/// a 25 GbE link drains in the time the next READ takes to arrive.
fn default_read_buffer_per_connection() -> ByteSize {
    ByteSize(16 << 20)
}
fn default_admin_max_connections() -> u32 {
    16
}
/// `lunarctl` holds one connection per command: 64 covers scripts running commands in
/// parallel, while a runaway loop cannot hold thousands of tasks and buffers.
fn default_admin_max_local_connections() -> u32 {
    64
}
fn default_admin_unauthenticated_request() -> ByteSize {
    ByteSize(8 << 10)
}
fn default_admin_idle_timeout() -> u64 {
    300
}

impl Default for LimitsCfg {
    fn default() -> Self {
        LimitsCfg {
            max_connections: default_max_connections(),
            max_connections_per_address: default_max_connections_per_address(),
            max_logins_in_progress: default_max_logins_in_progress(),
            write_buffer_bytes: default_write_buffer(),
            write_buffer_bytes_per_connection: None,
            read_buffer_bytes: default_read_buffer(),
            read_buffer_bytes_per_connection: default_read_buffer_per_connection(),
            admin_max_connections: default_admin_max_connections(),
            admin_max_local_connections: default_admin_max_local_connections(),
            admin_max_unauthenticated_request_bytes: default_admin_unauthenticated_request(),
            admin_idle_timeout_secs: default_admin_idle_timeout(),
        }
    }
}

impl LimitsCfg {
    /// The part of the write buffer budget one connection may hold: the configured
    /// `write_buffer_bytes_per_connection`, or an eighth of `write_buffer_bytes` but at least
    /// the largest Data-Out of one command. An eighth of the default 512 MiB is 64 MiB: eight
    /// maximum-size (8 MiB) writes, or 64 of 1 MiB, in flight on one connection, and seven
    /// other connections still find room when one has filled its share.
    pub fn write_buffer_share(&self) -> u64 {
        match self.write_buffer_bytes_per_connection {
            Some(s) => s.0,
            None => (self.write_buffer_bytes.0 / 8)
                .max(u64::from(MAX_COMMAND_DATA))
                .min(self.write_buffer_bytes.0),
        }
    }

    /// Range checks; returns (field name within `limits`, message) of the first problem.
    pub(super) fn validate(&self) -> Result<(), (String, String)> {
        for (name, v, max) in [
            ("max_connections", self.max_connections, 65536),
            (
                "max_connections_per_address",
                self.max_connections_per_address,
                self.max_connections,
            ),
            (
                "max_logins_in_progress",
                self.max_logins_in_progress,
                self.max_connections,
            ),
            ("admin_max_connections", self.admin_max_connections, 4096),
            (
                "admin_max_local_connections",
                self.admin_max_local_connections,
                4096,
            ),
        ] {
            if v == 0 || v > max {
                return Err((name.into(), format!("must be between 1 and {max}, got {v}")));
            }
        }
        if self.write_buffer_bytes.0 < MIN_WRITE_BUFFER {
            return Err((
                "write_buffer_bytes".into(),
                format!(
                    "must be at least {} (twice the largest Data-Out of one command), got {}",
                    ByteSize(MIN_WRITE_BUFFER),
                    self.write_buffer_bytes
                ),
            ));
        }
        if let Some(share) = self.write_buffer_bytes_per_connection {
            if share.0 < u64::from(MAX_COMMAND_DATA) || share.0 > self.write_buffer_bytes.0 {
                return Err((
                    "write_buffer_bytes_per_connection".into(),
                    format!(
                        "must be between {} (the largest Data-Out of one command) and limits.write_buffer_bytes ({}), got {}",
                        ByteSize(u64::from(MAX_COMMAND_DATA)),
                        self.write_buffer_bytes,
                        share
                    ),
                ));
            }
        }
        if self.read_buffer_bytes_per_connection.0 < MIN_READ_BUFFER_PER_CONNECTION
            || self.read_buffer_bytes_per_connection.0 > self.read_buffer_bytes.0
        {
            return Err((
                "read_buffer_bytes_per_connection".into(),
                format!(
                    "must be between {} (one maximum-size READ) and limits.read_buffer_bytes ({}), got {}",
                    ByteSize(MIN_READ_BUFFER_PER_CONNECTION),
                    self.read_buffer_bytes,
                    self.read_buffer_bytes_per_connection
                ),
            ));
        }
        let req = self.admin_max_unauthenticated_request_bytes.0;
        let max_req = MAX_REQUEST_LINE as u64;
        if !(512..=max_req).contains(&req) {
            return Err((
                "admin_max_unauthenticated_request_bytes".into(),
                format!(
                    "must be between 512B and {}, got {}",
                    ByteSize(max_req),
                    self.admin_max_unauthenticated_request_bytes
                ),
            ));
        }
        if self.admin_idle_timeout_secs == 0 {
            return Err(("admin_idle_timeout_secs".into(), "must be positive".into()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_write_share_defaults_to_an_eighth_and_is_range_checked() {
        let mut l = LimitsCfg::default();
        assert_eq!(l.write_buffer_share(), 64 << 20);
        l.write_buffer_bytes = ByteSize(32 << 20);
        assert_eq!(l.write_buffer_share(), 16 << 20, "at least one command");
        assert_eq!(l.validate(), Ok(()));
        for bad in [(8u64 << 20), (33 << 20)] {
            l.write_buffer_bytes_per_connection = Some(ByteSize(bad));
            let (field, msg) = l.validate().expect_err("out of range");
            assert_eq!(field, "write_buffer_bytes_per_connection", "{msg}");
        }
        l.write_buffer_bytes_per_connection = Some(ByteSize(20 << 20));
        assert_eq!((l.validate(), l.write_buffer_share()), (Ok(()), 20 << 20));
    }
}
