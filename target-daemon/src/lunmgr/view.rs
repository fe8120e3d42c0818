//! What the LUN manager reports: serializable views for the admin API and `lunarctl`.

use serde::{Deserialize, Serialize};

use super::state::CloneJobRecord;

/// Pool figures (exact: used/free/reserved are maintained per allocation).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PoolView {
    /// The pool's name (`default` for the `pool:` shorthand).
    #[serde(default)]
    pub name: String,
    /// Pool UUID.
    pub uuid: String,
    /// Bytes available for data.
    pub capacity_bytes: u64,
    /// Bytes in use by some volume or snapshot.
    pub used_bytes: u64,
    /// `capacity - used`.
    pub free_bytes: u64,
    /// Reserved for full-guarantee volumes, not yet written.
    pub reserved_bytes: u64,
    /// Allocation unit.
    pub chunk_size: u32,
    /// Soft threshold in per cent, if configured.
    pub soft_threshold_pct: Option<u8>,
    /// Whether used + reserved reached the soft threshold.
    pub soft_threshold_reached: bool,
    /// Volumes in the pool (LUNs, including clones being created).
    pub volumes: usize,
    /// Snapshots in the pool.
    pub snapshots: usize,
    /// I/O backend (`io_uring` or `threads`).
    pub io_backend: String,
}

/// Where a LUN is exported.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct MappingView {
    /// Target IQN.
    pub target: String,
    /// LUN number in that target.
    pub lun_id: u64,
}

/// One LUN with its space figures.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LunView {
    /// Name.
    pub name: String,
    /// `online`, `creating` or `missing` (volume absent from the pool).
    pub state: String,
    /// Logical size.
    pub size_bytes: u64,
    /// Logical block size.
    pub block_size: u32,
    /// `none` or `full`.
    pub guarantee: String,
    /// Bytes of logical space that hold data.
    pub mapped_bytes: u64,
    /// Bytes only this LUN references (freed by deleting it).
    pub unique_bytes: u64,
    /// Bytes shared with snapshots/clones.
    pub shared_bytes: u64,
    /// Bytes reserved for future writes.
    pub reserved_bytes: u64,
    /// NAA identifier (`naa.6...`, 32 hex digits) reported in VPD page 83h.
    pub naa: String,
    /// Unit serial number (VPD page 80h).
    pub serial: String,
    /// Exported write-protected.
    pub read_only: bool,
    /// Clone source (`lun` or `lun@snap`).
    pub origin: Option<String>,
    /// `linked` or `full` for clones.
    pub clone_mode: Option<String>,
    /// Target mappings.
    pub mappings: Vec<MappingView>,
    /// Number of snapshots.
    pub snapshots: usize,
    /// Creation time, seconds since the Unix epoch.
    pub created_unix: u64,
    /// The pool holding the LUN.
    #[serde(default)]
    pub pool: String,
}

/// One snapshot.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SnapshotView {
    /// LUN.
    pub lun: String,
    /// Snapshot name.
    pub name: String,
    /// Size at snapshot time.
    pub size_bytes: u64,
    /// Bytes holding data.
    pub mapped_bytes: u64,
    /// Bytes only this snapshot keeps alive.
    pub unique_bytes: u64,
    /// Consistency group, if taken as part of one.
    pub group: Option<String>,
    /// Creation time, seconds since the Unix epoch.
    pub created_unix: u64,
}

/// One target.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TargetView {
    /// Target name (IQN, or WWPN for LIO fabrics).
    pub iqn: String,
    /// Transport.
    #[serde(default)]
    pub fabric: crate::fabric::Fabric,
    /// Alias.
    pub alias: Option<String>,
    /// Any initiator may log in.
    pub allow_any: bool,
    /// Allowed initiators.
    pub initiators: Vec<String>,
    /// CHAP user name (secrets are never reported).
    pub chap_username: Option<String>,
    /// Mutual CHAP configured.
    pub mutual_chap: bool,
    /// LUN number -> LUN name.
    pub luns: Vec<MappingLun>,
    /// Live sessions.
    pub sessions: usize,
    /// Whether the running iSCSI server has yet to pick up a change (applied at restart).
    pub pending_restart: bool,
}

/// A LUN as listed under a target.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MappingLun {
    /// LUN number.
    pub lun_id: u64,
    /// LUN name.
    pub name: String,
}

/// One clone job.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CloneJobView {
    /// Job id.
    pub id: String,
    /// Source (`lun` or `lun@snap`).
    pub source: String,
    /// Destination LUN.
    pub destination: String,
    /// `linked` or `full`.
    pub mode: String,
    /// Progress, 0..=100.
    pub progress_pct: f64,
    /// `queued`, `creating`, `completed`, `failed` or `cancelled`.
    pub state: String,
    /// Failure reason.
    pub error: Option<String>,
    /// Start, seconds since the Unix epoch.
    pub started_unix: u64,
    /// End, seconds since the Unix epoch.
    pub finished_unix: Option<u64>,
}

impl From<&CloneJobRecord> for CloneJobView {
    fn from(j: &CloneJobRecord) -> Self {
        CloneJobView {
            id: j.id.clone(),
            source: j.source.clone(),
            destination: j.destination.clone(),
            mode: j.mode.as_str().into(),
            progress_pct: j.percent(),
            state: j.state.as_str().into(),
            error: j.error.clone(),
            started_unix: j.started_unix,
            finished_unix: j.finished_unix,
        }
    }
}

/// `naa.` + 32 hex digits and the unit serial for a LUN identity.
pub fn naa_and_serial(identity: uuid::Uuid) -> (String, String) {
    let id = scsi_proto::scsi::vpd::DeviceIdentity {
        uuid: *identity.as_bytes(),
        relative_port: 1,
        target_port_group: 1,
        target_name: None,
    };
    let mut naa = String::from("naa.");
    for b in id.naa() {
        naa.push_str(&format!("{b:02x}"));
    }
    (naa, id.serial())
}
