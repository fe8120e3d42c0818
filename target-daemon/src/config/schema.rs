//! The configuration file's shape: one struct per YAML section, with the defaults of the
//! fields a file may leave out.
//!
//! The structs are the one description of the format: serde reads files through them
//! (strictly: `deny_unknown_fields`, so a typo is an error, not an ignored setting) and
//! writes them back through them (`config export`, [`Config::to_yaml`]). Ranges and
//! cross-field rules are checked afterwards, in `validate`.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::ser::{SerializeStruct, Serializer};
use serde::{Deserialize, Serialize};

use super::ha::{HaCfg, RbdPoolCfg};
use super::limits::LimitsCfg;
use super::replication::ReplicationCfg;
use super::size::ByteSize;
use crate::fabric::Fabric;
use crate::secret::Secret;

/// Space guarantee of a LUN's volume (see storage-core): thin or fully reserved.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, Default)]
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

impl From<storage_core::Guarantee> for GuaranteeCfg {
    fn from(g: storage_core::Guarantee) -> Self {
        match g {
            storage_core::Guarantee::None => GuaranteeCfg::None,
            storage_core::Guarantee::Full => GuaranteeCfg::Full,
        }
    }
}

/// Whether a section equals its defaults, so that writing it out can be left to them.
fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

/// The whole configuration file.
///
/// Written out (`config export`), sections still at their defaults (`discovery`, `iscsi`,
/// `metrics`, `lio`, `limits`) are left out, so the file shows what was chosen; reading
/// it back gives the same configuration.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Directory for the pool (when `pool.path` is relative) and other state.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// The block store, when there is one: shorthand for a `pools:` list of one (named
    /// `default` unless it has a `name`). Neither given: one pool at its defaults.
    /// See [`Config::pool_cfgs`] for the pools lunard serves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<PoolCfg>,
    /// Several block stores, each with a unique `name`; the first is where LUNs that name
    /// no pool live. Cannot be combined with `pool`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pools: Vec<PoolCfg>,
    /// Listen addresses.
    #[serde(default)]
    pub portals: Vec<PortalCfg>,
    /// Authentication for discovery sessions.
    #[serde(default, skip_serializing_if = "is_default")]
    pub discovery: DiscoveryCfg,
    /// iSCSI protocol tunables.
    #[serde(default, skip_serializing_if = "is_default")]
    pub iscsi: IscsiCfg,
    /// Prometheus endpoint (`/metrics`, `/healthz`, `/readyz`).
    #[serde(default, skip_serializing_if = "is_default")]
    pub metrics: MetricsCfg,
    /// Exported targets.
    #[serde(default)]
    pub targets: Vec<TargetCfg>,
    /// Linux LIO (Fibre Channel and loopback targets through TCMU).
    #[serde(default, skip_serializing_if = "is_default")]
    pub lio: LioCfg,
    /// Resource limits against hostile or broken clients.
    #[serde(default, skip_serializing_if = "is_default")]
    pub limits: LimitsCfg,
    /// High availability: this lunard is a gateway of an HA group over Ceph RBD.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ha: Option<HaCfg>,
    /// Replication between lunards: the TLS listener, this lunard's identity and the peers
    /// it trusts (docs/replication.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replication: Option<ReplicationCfg>,
}

pub(super) fn default_data_dir() -> PathBuf {
    PathBuf::from("./lunar-data")
}

/// Where LIO's configfs and the TCMU devices are, and how backstores are sized. Only used
/// when a target's `fabric` is `qla2xxx` or `loopback`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
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

/// Prometheus endpoint settings.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
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
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PoolCfg {
    /// The pool's name (`[a-z0-9][a-z0-9_-]{0,31}`): required in a `pools:` list; in the
    /// `pool:` shorthand it defaults to `default`. LUNs and the admin API name pools by it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Pool location: a directory, a file or a block device; relative to `data_dir`.
    #[serde(default = "default_pool_path")]
    pub path: PathBuf,
    /// Allocation unit for thin provisioning (power of two, 4KiB..1MiB); used at creation.
    #[serde(default = "default_chunk")]
    pub chunk_size: ByteSize,
    /// Capacity of a file/directory pool, used at creation (block devices use their size).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity: Option<ByteSize>,
    /// Percentage of capacity at which thin-provisioning threshold warnings start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub soft_threshold_pct: Option<u8>,
    /// The pool lives in an RBD image instead of `path` (HA groups; requires `ha`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rbd: Option<RbdPoolCfg>,
    /// In an HA group: the gateway that takes this pool when its lease is free and it was
    /// not the last owner (the others leave it the lease for a while, as after a planned
    /// move), so the pools of a group spread over its gateways. Unset: whoever comes first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefer: Option<String>,
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
            name: None,
            path: default_pool_path(),
            chunk_size: default_chunk(),
            capacity: None,
            soft_threshold_pct: None,
            rbd: None,
            prefer: None,
        }
    }
}

/// One listening portal.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PortalCfg {
    /// `IPv4:port` or `[IPv6]:port`; port 0 picks a free port (logged at start).
    pub listen: SocketAddr,
    /// Address reported in SendTargets instead of the listen address (for NAT).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advertise: Option<SocketAddr>,
    /// Target portal group tag.
    #[serde(default = "default_tpgt")]
    pub tpgt: u16,
}

pub(super) fn default_tpgt() -> u16 {
    1
}

/// CHAP credentials for one direction.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Credential {
    /// CHAP name.
    pub username: String,
    /// CHAP secret (12..=255 bytes; RFC 7143 recommends at least 12); never printed.
    pub secret: Secret,
}

/// CHAP settings: the initiator proves itself with `username`/`secret`; with `mutual` the
/// target must also prove itself back with the mutual credential.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ChapCfg {
    /// Name the initiator must send.
    pub username: String,
    /// Secret the initiator must know; never printed.
    pub secret: Secret,
    /// When set, mutual CHAP is required: the initiator must challenge the target, which
    /// answers with these credentials (logins with one-way CHAP are refused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mutual: Option<Credential>,
}

/// Discovery-session settings.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
pub struct DiscoveryCfg {
    /// Require CHAP for discovery sessions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chap: Option<ChapCfg>,
}

/// iSCSI protocol tunables.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
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
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, Default)]
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
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
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
    pub fabric: Fabric,
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

/// Written as derived `Serialize` would, except that the name's key says what the name is:
/// `iqn` for iSCSI targets, `wwpn` (with `fabric`) for LIO fabrics. Both keys read back.
impl Serialize for TargetCfg {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // Destructured: a field added to TargetCfg does not compile until it is written here.
        let TargetCfg {
            iqn,
            fabric,
            alias,
            allow_any,
            initiators,
            chap,
            luns,
        } = self;
        let mut m = s.serialize_struct("TargetCfg", 7)?;
        if fabric.is_lio() {
            m.serialize_field("wwpn", iqn)?;
            m.serialize_field("fabric", fabric)?;
        } else {
            m.serialize_field("iqn", iqn)?;
            m.skip_field("fabric")?;
        }
        match alias {
            Some(a) => m.serialize_field("alias", a)?,
            None => m.skip_field("alias")?,
        }
        m.serialize_field("allow_any", allow_any)?;
        if initiators.is_empty() {
            m.skip_field("initiators")?;
        } else {
            m.serialize_field("initiators", initiators)?;
        }
        match chap {
            Some(c) => m.serialize_field("chap", c)?,
            None => m.skip_field("chap")?,
        }
        m.serialize_field("luns", luns)?;
        m.end()
    }
}

/// One logical unit backed by a pool volume.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
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
    /// The pool holding the volume (a name from `pools:`); default: the first pool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
}

pub(super) fn default_block() -> u32 {
    512
}
