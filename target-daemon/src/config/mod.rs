//! `lunard` configuration: the YAML file format, its embedded default, and validation.
//!
//! Parsing is strict (`deny_unknown_fields`) so a typo is an error rather than a silently
//! ignored setting. Syntax and type errors come from `serde_yaml` and carry a line and column;
//! semantic errors (bad IQN, duplicate LUN, ...) carry the dotted field path, e.g.
//! `targets[0].luns[1].block_size`. Both name the file.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

use crate::secret::Secret;

/// The configuration used when `lunard` is started without `--config`.
pub const DEFAULT_CONFIG_YAML: &str = r#"
data_dir: ./lunar-data
pool:
  path: pool
  chunk_size: 64KiB
  capacity: 16GiB
portals:
  - listen: 127.0.0.1:3260
targets:
  - iqn: iqn.2026-11.io.lunar:demo
    alias: demo
    allow_any: true
    luns:
      - id: 0
        volume: demo
        size: 1GiB
        block_size: 512
        guarantee: none
"#;

/// An error in a configuration file, located as precisely as the check allows.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{file}: cannot read: {source}")]
    Read {
        /// The file name as given.
        file: String,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// YAML syntax or type error; serde_yaml's message names the field path.
    #[error("{file}:{line}:{column}: {message}")]
    Syntax {
        /// The file name as given.
        file: String,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What is wrong.
        message: String,
    },
    /// YAML error without a location (e.g. an empty document).
    #[error("{file}: {message}")]
    Unlocated {
        /// The file name as given.
        file: String,
        /// What is wrong.
        message: String,
    },
    /// A value that parses but makes no sense.
    #[error("{file}:{line}: {field}: {message}")]
    Invalid {
        /// The file name as given.
        file: String,
        /// Best-effort 1-based line of the field (0 if it could not be located).
        line: usize,
        /// Dotted field path such as `targets[0].luns[1].block_size`.
        field: String,
        /// What is wrong.
        message: String,
    },
}

/// A byte count that may be written as an integer or with a binary/decimal suffix
/// (`512`, `64KiB`, `1GiB`, `10G`, `1.5TiB` is rejected: only integers are accepted).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl ByteSize {
    /// Parses `"64KiB"`, `"1 GiB"`, `"4096"`, `"10G"` (K/M/G/T are binary, like `dd`).
    pub fn parse(s: &str) -> Result<ByteSize, String> {
        let s = s.trim();
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (num, unit) = s.split_at(split);
        if num.is_empty() {
            return Err(format!(
                "invalid size {s:?}: expected a number with an optional unit such as 64KiB or 1GiB"
            ));
        }
        let n: u64 = num
            .parse()
            .map_err(|_| format!("invalid size {s:?}: number too large"))?;
        let mult: u64 = match unit.trim() {
            "" | "B" => 1,
            "K" | "KiB" | "k" => 1 << 10,
            "M" | "MiB" => 1 << 20,
            "G" | "GiB" => 1 << 30,
            "T" | "TiB" => 1 << 40,
            "P" | "PiB" => 1 << 50,
            "KB" | "kB" => 1_000,
            "MB" => 1_000_000,
            "GB" => 1_000_000_000,
            "TB" => 1_000_000_000_000,
            other => {
                return Err(format!(
                    "invalid size unit {other:?} in {s:?}: use B, KiB, MiB, GiB, TiB (or KB, MB, GB, TB)"
                ))
            }
        };
        n.checked_mul(mult)
            .map(ByteSize)
            .ok_or_else(|| format!("invalid size {s:?}: too large"))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(&str, u64); 5] = [
            ("PiB", 1 << 50),
            ("TiB", 1 << 40),
            ("GiB", 1 << 30),
            ("MiB", 1 << 20),
            ("KiB", 1 << 10),
        ];
        for (name, m) in UNITS {
            if self.0 >= m && self.0 & (m - 1) == 0 {
                return write!(f, "{}{}", self.0 / m, name);
            }
        }
        write!(f, "{}B", self.0)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a byte size such as 4096, 64KiB or 1GiB")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ByteSize, E> {
                u64::try_from(v)
                    .map(ByteSize)
                    .map_err(|_| E::custom("a size cannot be negative"))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ByteSize, E> {
                ByteSize::parse(v).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// Space guarantee of a LUN's volume (see storage-core): thin or fully reserved.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum GuaranteeCfg {
    /// Thin: space is allocated on first write.
    #[default]
    None,
    /// Thick: the whole size is reserved in the pool up front.
    Full,
}

impl From<GuaranteeCfg> for storage_core::Guarantee {
    fn from(g: GuaranteeCfg) -> Self {
        match g {
            GuaranteeCfg::None => storage_core::Guarantee::None,
            GuaranteeCfg::Full => storage_core::Guarantee::Full,
        }
    }
}

/// The whole configuration file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Directory for the pool (when `pool.path` is relative) and other state.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// The block store.
    #[serde(default)]
    pub pool: PoolCfg,
    /// Listen addresses.
    #[serde(default)]
    pub portals: Vec<PortalCfg>,
    /// Authentication for discovery sessions.
    #[serde(default)]
    pub discovery: DiscoveryCfg,
    /// iSCSI protocol tunables.
    #[serde(default)]
    pub iscsi: IscsiCfg,
    /// Prometheus endpoint (`/metrics`, `/healthz`, `/readyz`).
    #[serde(default)]
    pub metrics: MetricsCfg,
    /// Exported targets.
    #[serde(default)]
    pub targets: Vec<TargetCfg>,
    /// Linux LIO (Fibre Channel and loopback targets through TCMU).
    #[serde(default)]
    pub lio: LioCfg,
    /// Resource limits against hostile or broken clients.
    #[serde(default)]
    pub limits: LimitsCfg,
}

/// Resource limits: how many connections the iSCSI portals and the admin API hold, how
/// much WRITE data the daemon buffers for initiators, and how long an admin connection may
/// idle. Each bounds memory or sockets a client could otherwise claim without limit
/// (before authenticating, for most of them); docs/configuration.md justifies the defaults.
#[derive(Clone, Debug, Deserialize)]
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
fn default_admin_unauthenticated_request() -> ByteSize {
    ByteSize(8 << 10)
}
fn default_admin_idle_timeout() -> u64 {
    300
}

/// Smallest `limits.write_buffer_bytes`: twice the largest Data-Out one command may carry
/// (the iSCSI front end's per-command cap), so any single command can always be admitted.
pub const MIN_WRITE_BUFFER: u64 = 2 * crate::iscsi::cmd::MAX_COMMAND_DATA as u64;

/// Smallest `limits.read_buffer_bytes_per_connection`: one READ of the MAXIMUM TRANSFER
/// LENGTH the LUNs advertise (8 MiB), so a connection can always run its largest READ
/// without the budget splitting it.
pub const MIN_READ_BUFFER_PER_CONNECTION: u64 = 8 << 20;

impl Default for LimitsCfg {
    fn default() -> Self {
        LimitsCfg {
            max_connections: default_max_connections(),
            max_connections_per_address: default_max_connections_per_address(),
            max_logins_in_progress: default_max_logins_in_progress(),
            write_buffer_bytes: default_write_buffer(),
            read_buffer_bytes: default_read_buffer(),
            read_buffer_bytes_per_connection: default_read_buffer_per_connection(),
            admin_max_connections: default_admin_max_connections(),
            admin_max_unauthenticated_request_bytes: default_admin_unauthenticated_request(),
            admin_idle_timeout_secs: default_admin_idle_timeout(),
        }
    }
}

/// Where LIO's configfs and the TCMU devices are, and how backstores are sized. Only used
/// when a target's `fabric` is `qla2xxx` or `loopback`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LioCfg {
    /// configfs mount point (LIO lives under `<configfs>/target`).
    #[serde(default = "default_configfs")]
    pub configfs: PathBuf,
    /// sysfs mount point (TCMU devices are found under `<sysfs>/class/uio`).
    #[serde(default = "default_sysfs")]
    pub sysfs: PathBuf,
    /// Directory holding the `uioN` device nodes.
    #[serde(default = "default_dev")]
    pub dev_dir: PathBuf,
    /// TCMU HBA index: backstores live in `<configfs>/target/core/user_<hba>`.
    #[serde(default)]
    pub hba: u32,
    /// Size of each backstore's TCMU data area in MiB (the kernel's `max_data_area_mb`):
    /// bounds the data of the commands in flight on one LUN.
    #[serde(default = "default_data_area_mb")]
    pub max_data_area_mb: u32,
}

impl Default for LioCfg {
    fn default() -> Self {
        LioCfg {
            configfs: default_configfs(),
            sysfs: default_sysfs(),
            dev_dir: default_dev(),
            hba: 0,
            max_data_area_mb: default_data_area_mb(),
        }
    }
}

fn default_configfs() -> PathBuf {
    PathBuf::from("/sys/kernel/config")
}
fn default_sysfs() -> PathBuf {
    PathBuf::from("/sys")
}
fn default_dev() -> PathBuf {
    PathBuf::from("/dev")
}
fn default_data_area_mb() -> u32 {
    64
}

fn default_data_dir() -> PathBuf {
    PathBuf::from("./lunar-data")
}

/// Prometheus endpoint settings.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsCfg {
    /// Serve the endpoint at all.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Listen address (port 0 picks a free port).
    #[serde(default = "default_metrics_listen")]
    pub listen: SocketAddr,
}

fn default_metrics_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9860))
}

impl Default for MetricsCfg {
    fn default() -> Self {
        MetricsCfg {
            enabled: true,
            listen: default_metrics_listen(),
        }
    }
}

/// Pool settings.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolCfg {
    /// Pool location: a directory, a file or a block device; relative to `data_dir`.
    #[serde(default = "default_pool_path")]
    pub path: PathBuf,
    /// Allocation unit for thin provisioning (power of two, 4KiB..1MiB); used at creation.
    #[serde(default = "default_chunk")]
    pub chunk_size: ByteSize,
    /// Capacity of a file/directory pool, used at creation (block devices use their size).
    #[serde(default)]
    pub capacity: Option<ByteSize>,
    /// Percentage of capacity at which thin-provisioning threshold warnings start.
    #[serde(default)]
    pub soft_threshold_pct: Option<u8>,
}

fn default_pool_path() -> PathBuf {
    PathBuf::from("pool")
}
fn default_chunk() -> ByteSize {
    ByteSize(64 << 10)
}

impl Default for PoolCfg {
    fn default() -> Self {
        PoolCfg {
            path: default_pool_path(),
            chunk_size: default_chunk(),
            capacity: None,
            soft_threshold_pct: None,
        }
    }
}

/// One listening portal.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortalCfg {
    /// `IPv4:port` or `[IPv6]:port`; port 0 picks a free port (logged at start).
    pub listen: SocketAddr,
    /// Address reported in SendTargets instead of the listen address (for NAT).
    #[serde(default)]
    pub advertise: Option<SocketAddr>,
    /// Target portal group tag.
    #[serde(default = "default_tpgt")]
    pub tpgt: u16,
}

fn default_tpgt() -> u16 {
    1
}

/// CHAP credentials for one direction.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Credential {
    /// CHAP name.
    pub username: String,
    /// CHAP secret (12..=255 bytes; RFC 7143 recommends at least 12); never printed.
    pub secret: Secret,
}

/// CHAP settings: the initiator proves itself with `username`/`secret`; with `mutual` the
/// target must also prove itself back with the mutual credential.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ChapCfg {
    /// Name the initiator must send.
    pub username: String,
    /// Secret the initiator must know; never printed.
    pub secret: Secret,
    /// When set, mutual CHAP is required: the initiator must challenge the target, which
    /// answers with these credentials (logins with one-way CHAP are refused).
    #[serde(default)]
    pub mutual: Option<Credential>,
}

/// Discovery-session settings.
#[derive(Clone, Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct DiscoveryCfg {
    /// Require CHAP for discovery sessions.
    #[serde(default)]
    pub chap: Option<ChapCfg>,
}

/// iSCSI protocol tunables.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IscsiCfg {
    /// Number of commands an initiator may have outstanding (MaxCmdSN - ExpCmdSN + 1).
    #[serde(default = "default_window")]
    pub cmdsn_window: u32,
    /// Seconds of idleness after which the target pings the initiator (0 disables).
    #[serde(default = "default_nop_interval")]
    pub nop_interval_secs: u64,
    /// Seconds to wait for a ping answer before dropping the connection.
    #[serde(default = "default_nop_timeout")]
    pub nop_timeout_secs: u64,
    /// Seconds a login may take before the connection is dropped.
    #[serde(default = "default_login_timeout")]
    pub login_timeout_secs: u64,
    /// Target's MaxRecvDataSegmentLength (512..=16777215).
    #[serde(default = "default_mrdsl")]
    pub max_recv_data_segment_length: u32,
    /// Largest burst the target accepts (MaxBurstLength).
    #[serde(default = "default_burst")]
    pub max_burst_length: u32,
    /// Largest unsolicited burst (FirstBurstLength).
    #[serde(default = "default_first_burst")]
    pub first_burst_length: u32,
    /// Offer ImmediateData=Yes.
    #[serde(default = "default_true")]
    pub immediate_data: bool,
    /// Require InitialR2T=Yes (false lets initiators send unsolicited Data-Out up to
    /// FirstBurstLength).
    #[serde(default)]
    pub initial_r2t: bool,
    /// Outstanding R2Ts per task the target issues (MaxOutstandingR2T upper bound).
    #[serde(default = "default_max_r2t")]
    pub max_outstanding_r2t: u32,
    /// CRC32C header digests: `disabled`, `allowed` (if the initiator prefers them) or
    /// `required`.
    #[serde(default)]
    pub header_digest: DigestCfg,
    /// CRC32C data digests: `disabled`, `allowed` or `required`.
    #[serde(default)]
    pub data_digest: DigestCfg,
}

/// Digest policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum DigestCfg {
    /// Never use CRC32C.
    Disabled,
    /// Use CRC32C when the initiator asks for it first.
    #[default]
    Allowed,
    /// Refuse logins without CRC32C.
    Required,
}

fn default_window() -> u32 {
    64
}
fn default_nop_interval() -> u64 {
    30
}
fn default_nop_timeout() -> u64 {
    30
}
fn default_login_timeout() -> u64 {
    15
}
fn default_mrdsl() -> u32 {
    256 * 1024
}
fn default_burst() -> u32 {
    1024 * 1024
}
fn default_first_burst() -> u32 {
    256 * 1024
}
fn default_true() -> bool {
    true
}
fn default_max_r2t() -> u32 {
    16
}

impl Default for IscsiCfg {
    fn default() -> Self {
        IscsiCfg {
            cmdsn_window: default_window(),
            nop_interval_secs: default_nop_interval(),
            nop_timeout_secs: default_nop_timeout(),
            login_timeout_secs: default_login_timeout(),
            max_recv_data_segment_length: default_mrdsl(),
            max_burst_length: default_burst(),
            first_burst_length: default_first_burst(),
            immediate_data: true,
            initial_r2t: false,
            max_outstanding_r2t: default_max_r2t(),
            header_digest: DigestCfg::Allowed,
            data_digest: DigestCfg::Allowed,
        }
    }
}

/// One exported target.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetCfg {
    /// Target name: an iSCSI name (`iqn.YYYY-MM.reversed.domain[:suffix]`, `eui.` or
    /// `naa.`) for iSCSI targets; the target port's WWPN for `qla2xxx` and `loopback`
    /// targets (YAML also accepts the key `wwpn` for those).
    #[serde(alias = "wwpn")]
    pub iqn: String,
    /// Transport: `iscsi` (lunard's own front end), `qla2xxx` (Fibre Channel through LIO)
    /// or `loopback` (LIO's tcm_loop).
    #[serde(default)]
    pub fabric: crate::fabric::Fabric,
    /// TargetAlias reported at login.
    #[serde(default)]
    pub alias: Option<String>,
    /// Let any initiator log in and discover this target.
    #[serde(default)]
    pub allow_any: bool,
    /// Initiator names allowed when `allow_any` is false.
    #[serde(default)]
    pub initiators: Vec<String>,
    /// Require CHAP for normal sessions to this target.
    #[serde(default)]
    pub chap: Option<ChapCfg>,
    /// Logical units.
    #[serde(default)]
    pub luns: Vec<LunCfg>,
}

/// One logical unit backed by a pool volume.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LunCfg {
    /// LUN number (0..=16383, flat addressing).
    pub id: u64,
    /// Volume name in the pool; created if absent.
    pub volume: String,
    /// Volume size used when creating it.
    pub size: ByteSize,
    /// Logical block size used when creating it: 512 or 4096 (or any power of two 512..=64KiB).
    #[serde(default = "default_block")]
    pub block_size: u32,
    /// Space guarantee used when creating it.
    #[serde(default)]
    pub guarantee: GuaranteeCfg,
    /// Export read-only (writes fail with DATA PROTECT).
    #[serde(default)]
    pub read_only: bool,
}

fn default_block() -> u32 {
    512
}

impl Config {
    /// The embedded default configuration.
    pub fn embedded_default() -> Config {
        // The embedded text is a compile-time constant covered by a unit test.
        match Config::from_yaml_str(DEFAULT_CONFIG_YAML, "<embedded default>") {
            Ok(c) => c,
            Err(e) => panic!("embedded default config is invalid: {e}"),
        }
    }

    /// Reads and validates a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            file: file.clone(),
            source,
        })?;
        Config::from_yaml_str(&text, &file)
    }

    /// Parses and validates configuration text; `file` names it in errors.
    pub fn from_yaml_str(text: &str, file: &str) -> Result<Config, ConfigError> {
        let cfg: Config = serde_yaml::from_str(text).map_err(|e| match e.location() {
            Some(loc) => ConfigError::Syntax {
                file: file.to_string(),
                line: loc.line(),
                column: loc.column(),
                message: strip_location(&e.to_string()),
            },
            None => ConfigError::Unlocated {
                file: file.to_string(),
                message: e.to_string(),
            },
        })?;
        cfg.validate()
            .map_err(|(field, message)| ConfigError::Invalid {
                file: file.to_string(),
                line: locate_field(text, &field),
                field,
                message,
            })?;
        Ok(cfg)
    }

    /// Semantic checks; returns (field path, message) of the first problem.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let cs = self.pool.chunk_size.0;
        if !cs.is_power_of_two() || !(4096..=1 << 20).contains(&cs) {
            return Err((
                "pool.chunk_size".into(),
                format!(
                    "must be a power of two between 4KiB and 1MiB, got {}",
                    self.pool.chunk_size
                ),
            ));
        }
        if let Some(c) = self.pool.capacity {
            if c.0 < cs * 16 {
                return Err((
                    "pool.capacity".into(),
                    format!("{c} is too small for a pool"),
                ));
            }
        }
        if let Some(p) = self.pool.soft_threshold_pct {
            if p == 0 || p > 100 {
                return Err((
                    "pool.soft_threshold_pct".into(),
                    "must be between 1 and 100".into(),
                ));
            }
        }
        if self.portals.is_empty() {
            return Err(("portals".into(), "at least one portal is required".into()));
        }
        for (i, p) in self.portals.iter().enumerate() {
            if p.tpgt == 0 {
                return Err((
                    format!("portals[{i}].tpgt"),
                    "must be between 1 and 65535 (it is also the relative target port \
                     identifier, and relative target port 0 is reserved in SCSI)"
                        .into(),
                ));
            }
            for (j, q) in self.portals.iter().enumerate().take(i) {
                if p.listen == q.listen && p.listen.port() != 0 {
                    return Err((
                        format!("portals[{i}].listen"),
                        format!("{} is also portals[{j}]", p.listen),
                    ));
                }
            }
            if let Some(a) = p.advertise {
                if a.ip().is_unspecified() || a.port() == 0 {
                    return Err((
                        format!("portals[{i}].advertise"),
                        format!("{a} is not a reachable address"),
                    ));
                }
            }
        }
        if let Some(chap) = &self.discovery.chap {
            validate_chap(chap).map_err(|(f, m)| (format!("discovery.chap.{f}"), m))?;
        }
        let t = &self.iscsi;
        if t.cmdsn_window == 0 || t.cmdsn_window > 1024 {
            return Err((
                "iscsi.cmdsn_window".into(),
                "must be between 1 and 1024".into(),
            ));
        }
        if !(512..=16_777_215).contains(&t.max_recv_data_segment_length) {
            return Err((
                "iscsi.max_recv_data_segment_length".into(),
                "must be between 512 and 16777215".into(),
            ));
        }
        if !(512..=16_777_215).contains(&t.max_burst_length) {
            return Err((
                "iscsi.max_burst_length".into(),
                "must be between 512 and 16777215".into(),
            ));
        }
        if !(512..=t.max_burst_length).contains(&t.first_burst_length) {
            return Err((
                "iscsi.first_burst_length".into(),
                "must be between 512 and max_burst_length".into(),
            ));
        }
        if t.max_outstanding_r2t == 0 || t.max_outstanding_r2t > 65535 {
            return Err((
                "iscsi.max_outstanding_r2t".into(),
                "must be between 1 and 65535".into(),
            ));
        }
        if t.nop_interval_secs > 0 && t.nop_timeout_secs == 0 {
            return Err((
                "iscsi.nop_timeout_secs".into(),
                "must be positive when nop_interval_secs is set".into(),
            ));
        }
        if t.login_timeout_secs == 0 {
            return Err(("iscsi.login_timeout_secs".into(), "must be positive".into()));
        }
        let l = &self.limits;
        for (name, v, max) in [
            ("max_connections", l.max_connections, 65536),
            (
                "max_connections_per_address",
                l.max_connections_per_address,
                l.max_connections,
            ),
            (
                "max_logins_in_progress",
                l.max_logins_in_progress,
                l.max_connections,
            ),
            ("admin_max_connections", l.admin_max_connections, 4096),
        ] {
            if v == 0 || v > max {
                return Err((
                    format!("limits.{name}"),
                    format!("must be between 1 and {max}, got {v}"),
                ));
            }
        }
        if l.write_buffer_bytes.0 < MIN_WRITE_BUFFER {
            return Err((
                "limits.write_buffer_bytes".into(),
                format!(
                    "must be at least {} (twice the largest Data-Out of one command), got {}",
                    ByteSize(MIN_WRITE_BUFFER),
                    l.write_buffer_bytes
                ),
            ));
        }
        if l.read_buffer_bytes_per_connection.0 < MIN_READ_BUFFER_PER_CONNECTION
            || l.read_buffer_bytes_per_connection.0 > l.read_buffer_bytes.0
        {
            return Err((
                "limits.read_buffer_bytes_per_connection".into(),
                format!(
                    "must be between {} (one maximum-size READ) and limits.read_buffer_bytes ({}), got {}",
                    ByteSize(MIN_READ_BUFFER_PER_CONNECTION),
                    l.read_buffer_bytes,
                    l.read_buffer_bytes_per_connection
                ),
            ));
        }
        let req = l.admin_max_unauthenticated_request_bytes.0;
        let max_req = crate::admin::proto::MAX_REQUEST_LINE as u64;
        if !(512..=max_req).contains(&req) {
            return Err((
                "limits.admin_max_unauthenticated_request_bytes".into(),
                format!(
                    "must be between 512B and {}, got {}",
                    ByteSize(max_req),
                    l.admin_max_unauthenticated_request_bytes
                ),
            ));
        }
        if l.admin_idle_timeout_secs == 0 {
            return Err((
                "limits.admin_idle_timeout_secs".into(),
                "must be positive".into(),
            ));
        }
        if self.lio.max_data_area_mb == 0 || self.lio.max_data_area_mb > 2048 {
            return Err((
                "lio.max_data_area_mb".into(),
                "must be between 1 and 2048".into(),
            ));
        }
        let mut volumes: Vec<(&str, String)> = Vec::new();
        for (i, tgt) in self.targets.iter().enumerate() {
            let f = format!("targets[{i}]");
            let fab = tgt.fabric;
            fab.canonical_name(&tgt.iqn)
                .map_err(|m| (format!("{f}.iqn"), m))?;
            for (j, other) in self.targets.iter().enumerate().take(i) {
                if other.fabric == fab && fab.same_name(&other.iqn, &tgt.iqn) {
                    return Err((
                        format!("{f}.iqn"),
                        format!("{} is also targets[{j}]", tgt.iqn),
                    ));
                }
            }
            if let Some(a) = &tgt.alias {
                if a.len() > 255 || a.chars().any(|c| c.is_control()) {
                    return Err((
                        format!("{f}.alias"),
                        "must be at most 255 printable characters".into(),
                    ));
                }
            }
            for (k, ini) in tgt.initiators.iter().enumerate() {
                fab.canonical_name(ini)
                    .map_err(|m| (format!("{f}.initiators[{k}]"), m))?;
            }
            if fab.is_lio() && tgt.chap.is_some() {
                return Err((
                    format!("{f}.chap"),
                    format!("CHAP is an iSCSI login feature; a {fab} target cannot use it"),
                ));
            }
            if tgt.allow_any && !tgt.initiators.is_empty() {
                return Err((
                    format!("{f}.initiators"),
                    "cannot be combined with allow_any: true".into(),
                ));
            }
            if let Some(chap) = &tgt.chap {
                validate_chap(chap).map_err(|(x, m)| (format!("{f}.chap.{x}"), m))?;
            }
            for (k, lun) in tgt.luns.iter().enumerate() {
                let lf = format!("{f}.luns[{k}]");
                if lun.id > 16383 {
                    return Err((format!("{lf}.id"), "must be between 0 and 16383".into()));
                }
                if let Some((m, _)) = tgt
                    .luns
                    .iter()
                    .enumerate()
                    .take(k)
                    .find(|(_, o)| o.id == lun.id)
                {
                    return Err((
                        format!("{lf}.id"),
                        format!("LUN {} is also {f}.luns[{m}]", lun.id),
                    ));
                }
                validate_volume_name(&lun.volume).map_err(|m| (format!("{lf}.volume"), m))?;
                if let Some((_, prev)) = volumes.iter().find(|(v, _)| *v == lun.volume) {
                    return Err((
                        format!("{lf}.volume"),
                        format!("volume {:?} is already exported as {prev}", lun.volume),
                    ));
                }
                volumes.push((&lun.volume, lf.clone()));
                let bs = lun.block_size;
                if !bs.is_power_of_two() || !(512..=65536).contains(&bs) {
                    return Err((
                        format!("{lf}.block_size"),
                        format!("must be a power of two between 512 and 65536, got {bs}"),
                    ));
                }
                if lun.size.0 == 0 || lun.size.0 % u64::from(bs) != 0 {
                    return Err((
                        format!("{lf}.size"),
                        format!(
                            "must be a positive multiple of block_size ({bs}), got {}",
                            lun.size
                        ),
                    ));
                }
            }
        }
        Ok(())
    }
}

fn validate_chap(c: &ChapCfg) -> Result<(), (String, String)> {
    check_chap_name(&c.username).map_err(|m| ("username".to_string(), m))?;
    check_chap_secret(&c.secret).map_err(|m| ("secret".to_string(), m))?;
    if let Some(m) = &c.mutual {
        check_chap_name(&m.username).map_err(|e| ("mutual.username".to_string(), e))?;
        check_chap_secret(&m.secret).map_err(|e| ("mutual.secret".to_string(), e))?;
        if m.secret == c.secret {
            return Err((
                "mutual.secret".into(),
                "must differ from the initiator's secret (RFC 7143 9.2.1)".into(),
            ));
        }
    }
    Ok(())
}

fn check_chap_name(n: &str) -> Result<(), String> {
    if n.is_empty() || n.len() > 255 || n.chars().any(|c| c.is_control()) {
        return Err("must be 1 to 255 printable characters".into());
    }
    Ok(())
}

fn check_chap_secret(s: &Secret) -> Result<(), String> {
    if s.len() < 12 || s.len() > 255 {
        return Err(format!("must be 12 to 255 bytes long, got {}", s.len()));
    }
    Ok(())
}

/// Volume names: what storage-core accepts, checked early for a clear error.
fn validate_volume_name(n: &str) -> Result<(), String> {
    if n.is_empty() || n.len() > 128 {
        return Err("must be 1 to 128 characters".into());
    }
    if !n
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        || n.starts_with('.')
    {
        return Err(format!(
            "{n:?}: use letters, digits, '-', '_' and '.' (not leading)"
        ));
    }
    Ok(())
}

/// Checks an iSCSI name (RFC 3720 3.2.6 / RFC 7143 4.2.7): `iqn.YYYY-MM.domain[:x]`,
/// `eui.` + 16 hex digits, or `naa.` + 16 or 32 hex digits; lowercase, at most 223 bytes.
pub fn validate_iscsi_name(name: &str) -> Result<(), String> {
    if name.len() > 223 {
        return Err(format!("{name:?} is longer than 223 bytes"));
    }
    if let Some(rest) = name.strip_prefix("iqn.") {
        let b = rest.as_bytes();
        let date_ok = b.len() >= 8
            && b[..4].iter().all(u8::is_ascii_digit)
            && b[4] == b'-'
            && b[5..7].iter().all(u8::is_ascii_digit)
            && b[7] == b'.'
            && matches!(
                &rest[5..7],
                "01" | "02" | "03" | "04" | "05" | "06" | "07" | "08" | "09" | "10" | "11" | "12"
            );
        if !date_ok {
            return Err(format!(
                "{name:?}: expected iqn.YYYY-MM.reversed.domain[:identifier]"
            ));
        }
        let tail = &rest[8..];
        let domain = tail.split(':').next().unwrap_or("");
        if domain.is_empty() {
            return Err(format!("{name:?}: missing naming authority after the date"));
        }
        if let Some(c) = name.chars().find(|c| {
            !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '-' | ':'))
        }) {
            return Err(format!(
                "{name:?}: character {c:?} not allowed (lowercase letters, digits, '.', '-', ':')"
            ));
        }
        return Ok(());
    }
    for (prefix, lens) in [("eui.", &[16usize][..]), ("naa.", &[16, 32][..])] {
        if let Some(hex) = name.strip_prefix(prefix) {
            if lens.contains(&hex.len()) && hex.chars().all(|c| c.is_ascii_hexdigit()) {
                return Ok(());
            }
            return Err(format!("{name:?}: {prefix} names need {lens:?} hex digits"));
        }
    }
    Err(format!(
        "{name:?}: iSCSI names start with iqn., eui. or naa."
    ))
}

/// serde_yaml appends " at line X column Y" to messages; we print the location in front.
fn strip_location(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
    }
}

/// Best-effort line of a dotted field path in YAML text (block style, as written by people):
/// walks the path segment by segment, matching `key:` lines and `- ` list items by indentation.
/// Returns 0 when the path cannot be followed (e.g. flow style).
fn locate_field(text: &str, path: &str) -> usize {
    let lines: Vec<&str> = text.lines().collect();
    let indent = |l: &str| l.len() - l.trim_start().len();
    // (start line index, end line exclusive, minimum indentation of the region)
    let mut lo = 0usize;
    let mut hi = lines.len();
    let mut min_indent = 0usize;
    let mut found_line = 0usize;
    for seg in path.split('.') {
        let (key, index) = match seg.find('[') {
            Some(b) => (
                &seg[..b],
                seg[b + 1..].trim_end_matches(']').parse::<usize>().ok(),
            ),
            None => (seg, None),
        };
        // Find `key:` at the shallowest indentation in [lo, hi).
        let mut key_at = None;
        let mut key_indent = usize::MAX;
        for (i, l) in lines.iter().enumerate().take(hi).skip(lo) {
            let t = l.trim_start().trim_start_matches("- ");
            let ind = indent(l) + (l.trim_start().len() - t.len());
            if ind < min_indent || t.starts_with('#') {
                continue;
            }
            if (t.starts_with(&format!("{key}:"))) && ind < key_indent {
                key_at = Some(i);
                key_indent = ind;
                break;
            }
        }
        let Some(k) = key_at else { return found_line };
        found_line = k + 1;
        // Region of this key's value: following lines indented deeper than the key.
        let mut end = k + 1;
        while end < hi {
            let l = lines[end];
            if !l.trim().is_empty()
                && !l.trim_start().starts_with('#')
                && indent(l) <= key_indent
                && !l.trim_start().starts_with("- ")
            {
                break;
            }
            if !l.trim().is_empty() && l.trim_start().starts_with("- ") && indent(l) < key_indent {
                break;
            }
            end += 1;
        }
        lo = k + 1;
        hi = end;
        min_indent = key_indent + 1;
        if let Some(idx) = index {
            // Items are `- ` lines at the shallowest indentation within the region.
            let item_lines: Vec<usize> = {
                let items: Vec<usize> = (lo..hi)
                    .filter(|&i| lines[i].trim_start().starts_with("- "))
                    .collect();
                let shallow = items.iter().map(|&i| indent(lines[i])).min();
                items
                    .into_iter()
                    .filter(|&i| Some(indent(lines[i])) == shallow)
                    .collect()
            };
            let Some(&start) = item_lines.get(idx) else {
                return found_line;
            };
            let stop = item_lines.get(idx + 1).copied().unwrap_or(hi);
            found_line = start + 1;
            lo = start;
            hi = stop;
            min_indent = indent(lines[start]);
        }
    }
    found_line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_default_is_valid() {
        let c = Config::embedded_default();
        assert_eq!(c.portals[0].listen.to_string(), "127.0.0.1:3260");
        assert_eq!(c.targets[0].iqn, "iqn.2026-11.io.lunar:demo");
        assert!(c.targets[0].allow_any);
        assert_eq!(c.targets[0].luns[0].size, ByteSize(1 << 30));
        assert_eq!(c.targets[0].luns[0].guarantee, GuaranteeCfg::None);
    }

    #[test]
    fn shipped_example_is_valid() {
        let text = include_str!("../../deploy/lunar.example.yaml");
        let c = Config::from_yaml_str(text, "deploy/lunar.example.yaml").unwrap();
        assert_eq!(c.targets.len(), 3);
        assert_eq!(c.targets[2].fabric, crate::fabric::Fabric::Qla2xxx);
        assert_eq!(c.portals.len(), 2);
        assert!(c.portals[1].listen.is_ipv6());
        assert!(c.discovery.chap.is_some());
    }

    #[test]
    fn sizes_parse() {
        assert_eq!(ByteSize::parse("64KiB"), Ok(ByteSize(65536)));
        assert_eq!(ByteSize::parse("1 GiB"), Ok(ByteSize(1 << 30)));
        assert_eq!(ByteSize::parse("10G"), Ok(ByteSize(10 << 30)));
        assert_eq!(ByteSize::parse("4096"), Ok(ByteSize(4096)));
        assert!(ByteSize::parse("1.5GiB").is_err());
        assert!(ByteSize::parse("GiB").is_err());
        assert!(ByteSize::parse("99999999999999PiB").is_err());
        assert_eq!(ByteSize(1 << 30).to_string(), "1GiB");
    }

    const FULL: &str = r#"
data_dir: /var/lib/lunar
pool:
  path: /dev/sdb
  chunk_size: 128KiB
portals:
  - listen: 0.0.0.0:3260
    advertise: 203.0.113.7:3260
  - listen: "[::]:3260"
discovery:
  chap: { username: disc, secret: discoverysecret1 }
iscsi:
  cmdsn_window: 32
targets:
  - iqn: iqn.2026-11.io.lunar:db
    alias: database
    initiators: [iqn.1993-08.org.debian:01:abc]
    chap:
      username: db-user
      secret: supersecret123
      mutual: { username: lunar, secret: targetsecret99 }
    luns:
      - id: 0
        volume: db0
        size: 10GiB
        block_size: 4096
        guarantee: full
      - id: 1
        volume: db-logs
        size: 1GiB
        read_only: true
"#;

    #[test]
    fn full_config_parses() {
        let c = Config::from_yaml_str(FULL, "lunar.yaml").unwrap();
        assert_eq!(c.portals.len(), 2);
        assert!(c.portals[1].listen.is_ipv6());
        assert_eq!(
            c.portals[0].advertise.unwrap().to_string(),
            "203.0.113.7:3260"
        );
        let t = &c.targets[0];
        assert!(!t.allow_any);
        assert_eq!(
            t.chap.as_ref().unwrap().mutual.as_ref().unwrap().username,
            "lunar"
        );
        assert_eq!(t.luns[0].block_size, 4096);
        assert_eq!(t.luns[0].guarantee, GuaranteeCfg::Full);
        assert!(t.luns[1].read_only);
        assert_eq!(t.luns[1].block_size, 512);
        assert_eq!(c.iscsi.cmdsn_window, 32);
        assert_eq!(c.pool.chunk_size, ByteSize(128 << 10));
    }

    /// `--log-level debug` may print a configuration: its CHAP secrets must not be in it.
    #[test]
    fn debug_of_a_config_shows_no_chap_secret() {
        let c = Config::from_yaml_str(FULL, "lunar.yaml").unwrap();
        let text = format!("{c:?} {c:#?}");
        for s in ["discoverysecret1", "supersecret123", "targetsecret99"] {
            assert!(!text.contains(s), "{s} in {text}");
        }
        assert!(text.contains("<redacted>"), "{text}");
        let chap = c.targets[0].chap.as_ref().unwrap();
        assert_eq!(chap.secret.expose(), "supersecret123");
    }

    fn err(text: &str) -> String {
        Config::from_yaml_str(text, "bad.yaml")
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn unknown_field_names_file_line_and_field() {
        let e = err("portals:\n  - listen: 127.0.0.1:3260\ntargets:\n  - iqn: iqn.2026-11.io.lunar:x\n    lunz: []\n");
        assert!(e.starts_with("bad.yaml:5:"), "{e}");
        assert!(e.contains("unknown field `lunz`"), "{e}");
        assert!(e.contains("targets[0]"), "{e}");
    }

    #[test]
    fn type_error_is_located() {
        let e = err("portals:\n  - listen: not-an-address\n");
        assert!(e.starts_with("bad.yaml:2:"), "{e}");
        assert!(e.contains("portals[0].listen"), "{e}");
    }

    #[test]
    fn bad_iqn_names_field_and_line() {
        let e = err("portals:\n  - listen: 127.0.0.1:3260\ntargets:\n  - iqn: iqn.2026-11.io.lunar:ok\n  - alias: x\n    iqn: iqn.26-1.Bad\n");
        assert!(e.starts_with("bad.yaml:6: targets[1].iqn:"), "{e}");
    }

    #[test]
    fn bad_block_size_and_size() {
        let base = "portals:\n  - listen: 127.0.0.1:3260\ntargets:\n  - iqn: iqn.2026-11.io.lunar:ok\n    luns:\n      - id: 0\n        volume: a\n        size: 1GiB\n";
        let e = err(&format!("{base}        block_size: 1000\n"));
        assert!(
            e.starts_with("bad.yaml:9: targets[0].luns[0].block_size:"),
            "{e}"
        );
        let e = err(&base.replace("1GiB", "1000"));
        assert!(e.contains("targets[0].luns[0].size"), "{e}");
        assert!(e.starts_with("bad.yaml:8:"), "{e}");
    }

    #[test]
    fn duplicate_lun_and_volume() {
        let y = "portals:\n  - listen: 127.0.0.1:3260\ntargets:\n  - iqn: iqn.2026-11.io.lunar:ok\n    luns:\n      - {id: 0, volume: a, size: 1MiB}\n      - {id: 0, volume: b, size: 1MiB}\n";
        assert!(
            err(y).contains("targets[0].luns[1].id: LUN 0 is also"),
            "{}",
            err(y)
        );
        let y = "portals:\n  - listen: 127.0.0.1:3260\ntargets:\n  - iqn: iqn.2026-11.io.lunar:ok\n    luns:\n      - {id: 0, volume: a, size: 1MiB}\n      - {id: 1, volume: a, size: 1MiB}\n";
        assert!(err(y).contains("targets[0].luns[1].volume"), "{}", err(y));
    }

    #[test]
    fn chap_secret_rules() {
        let y = "portals:\n  - listen: 127.0.0.1:3260\ntargets:\n  - iqn: iqn.2026-11.io.lunar:ok\n    chap:\n      username: u\n      secret: short\n";
        let e = err(y);
        assert!(e.starts_with("bad.yaml:7: targets[0].chap.secret:"), "{e}");
        let y = "portals:\n  - listen: 127.0.0.1:3260\ndiscovery:\n  chap:\n    username: u\n    secret: samesecret1234\n    mutual: {username: t, secret: samesecret1234}\n";
        assert!(
            err(y).contains("discovery.chap.mutual.secret"),
            "{}",
            err(y)
        );
    }

    #[test]
    fn acl_conflict_and_names() {
        let y = "portals:\n  - listen: 127.0.0.1:3260\ntargets:\n  - iqn: iqn.2026-11.io.lunar:ok\n    allow_any: true\n    initiators: [iqn.2026-11.io.x:a]\n";
        assert!(err(y).contains("targets[0].initiators"));
        let y = "portals:\n  - listen: 127.0.0.1:3260\ntargets:\n  - iqn: iqn.2026-11.io.lunar:ok\n    initiators:\n      - iqn.2026-11.io.x:a\n      - bogus\n";
        let e = err(y);
        assert!(
            e.starts_with("bad.yaml:7: targets[0].initiators[1]:"),
            "{e}"
        );
    }

    #[test]
    fn tpgt_zero_is_rejected() {
        let e =
            err("portals:\n  - listen: 127.0.0.1:3260\n  - listen: 127.0.0.1:3261\n    tpgt: 0\n");
        assert!(e.starts_with("bad.yaml:4: portals[1].tpgt:"), "{e}");
        assert!(e.contains("between 1 and 65535"), "{e}");
        let ok = "portals:\n  - listen: 127.0.0.1:3260\n  - listen: 127.0.0.1:3261\n    tpgt: 2\n";
        assert_eq!(
            Config::from_yaml_str(ok, "ok.yaml").unwrap().portals[1].tpgt,
            2
        );
    }

    #[test]
    fn no_portals_and_empty_document() {
        assert!(err("targets: []\n").contains("portals"));
        let e = err("");
        assert!(e.starts_with("bad.yaml"), "{e}");
    }

    #[test]
    fn iscsi_names() {
        assert!(validate_iscsi_name("iqn.2026-11.io.lunar:demo").is_ok());
        assert!(validate_iscsi_name("iqn.1993-08.org.debian:01:6e2d5a9f").is_ok());
        assert!(validate_iscsi_name("eui.02004567A425678D").is_ok());
        assert!(validate_iscsi_name("naa.52004567BA64678D").is_ok());
        assert!(validate_iscsi_name("iqn.2026-13.io.lunar").is_err());
        assert!(validate_iscsi_name("iqn.2026-11.io.Lunar").is_err());
        assert!(validate_iscsi_name("iqn.2026-11.").is_err());
        assert!(validate_iscsi_name("eui.123").is_err());
        assert!(validate_iscsi_name("demo").is_err());
    }

    #[test]
    fn fibre_channel_targets_are_named_by_wwpn() {
        let base = "portals:\n  - listen: 127.0.0.1:3260\ntargets:\n";
        let ok = format!(
            "{base}  - wwpn: \"21:00:00:24:ff:31:4c:48\"\n    fabric: qla2xxx\n    initiators: [naa.21000024ff314c49]\n    luns:\n      - {{id: 0, volume: a, size: 1MiB}}\n"
        );
        let c = Config::from_yaml_str(&ok, "fc.yaml").unwrap();
        assert_eq!(c.targets[0].fabric, crate::fabric::Fabric::Qla2xxx);
        assert_eq!(c.lio.configfs, PathBuf::from("/sys/kernel/config"));
        // An IQN is not a port name on FC, a WWPN is not an iSCSI name.
        let e = err(&format!(
            "{base}  - iqn: iqn.2026-11.io.lunar:x\n    fabric: qla2xxx\n"
        ));
        assert!(e.contains("targets[0].iqn") && e.contains("WWPN"), "{e}");
        let e = err(&format!(
            "{base}  - wwpn: \"21:00:00:24:ff:31:4c:48\"\n    fabric: qla2xxx\n    initiators: [iqn.2026-11.io.x:a]\n"
        ));
        assert!(e.contains("targets[0].initiators[0]"), "{e}");
        let e = err(&format!(
            "{base}  - wwpn: \"21:00:00:24:ff:31:4c:48\"\n    fabric: qla2xxx\n    chap: {{username: u, secret: secret-secret-1}}\n"
        ));
        assert!(e.contains("targets[0].chap") && e.contains("iSCSI"), "{e}");
        // The same port twice, spelled two ways.
        let e = err(&format!(
            "{base}  - wwpn: \"21:00:00:24:ff:31:4c:48\"\n    fabric: qla2xxx\n  - wwpn: naa.21000024ff314c48\n    fabric: qla2xxx\n"
        ));
        assert!(
            e.contains("targets[1].iqn") && e.contains("also targets[0]"),
            "{e}"
        );
        let e = err(&format!(
            "{base}  - wwpn: naa.5001405000000001\n    fabric: srp\n"
        ));
        assert!(e.contains("fabric"), "{e}");
        let e = err(&format!("{base}lio:\n  max_data_area_mb: 0\n"));
        assert!(e.contains("lio.max_data_area_mb"), "{e}");
    }
}
