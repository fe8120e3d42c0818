//! The LUN manager's persisted state (`<data-dir>/state.json`).
//!
//! After the first start this file, not the YAML configuration, is the truth about targets,
//! LUNs, mappings, ACLs, CHAP, snapshot groups and clone jobs. Volumes and snapshots
//! themselves live in the pool; the state only records what the pool does not know (LUN
//! identity, which target exports what, access control, job history).
//!
//! Writes are atomic: the new content goes to a temporary file in the same directory, is
//! fsynced, renamed over `state.json`, and the directory is fsynced, so a crash leaves either
//! the old or the new state, never a torn one.
//!
//! The file holds CHAP secrets, so it is private to lunard's user (mode 0600) whatever the
//! umask: the temporary file is created with that mode, never widened and narrowed later.
//!
//! Where the state lives is a [`StateStore`]: the [`FileStateStore`] above for a single
//! lunard, or the object `lunar.<group>.state` the gateways of an HA group share
//! (`crate::shared::SharedStateStore`), where every save is a compare-and-swap on the
//! version the [`State`] was loaded or last saved as ([`State::store_version`]), so a
//! gateway never overwrites a change another gateway made meanwhile.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::secret::Secret;

/// Mode of `state.json` (and its temporary file): it holds CHAP secrets.
pub const STATE_MODE: u32 = 0o600;

/// Current format version of `state.json`.
pub const STATE_VERSION: u32 = 1;

/// File name of the state inside the data directory.
pub const STATE_FILE: &str = "state.json";

/// Everything the LUN manager persists.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct State {
    /// Format version ([`STATE_VERSION`]).
    pub version: u32,
    /// LUNs by name (the name is also the pool volume's name).
    pub luns: BTreeMap<String, LunRecord>,
    /// Targets by IQN.
    pub targets: BTreeMap<String, TargetRecord>,
    /// Consistency groups: snapshots taken at one instant across several LUNs.
    pub groups: BTreeMap<String, GroupRecord>,
    /// Clone jobs, oldest first (kept until purged).
    pub clone_jobs: Vec<CloneJobRecord>,
    /// Number of the next clone job.
    #[serde(default)]
    pub next_job: u64,
    /// Consistency groups by name: LUNs of one pool snapshotted (and replicated) together
    /// (`lunarctl cg`, lunmgr/groups.rs).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub consistency_groups: BTreeMap<String, ConsistencyGroupRecord>,
    /// Replication relationships by name, on either side (docs/replication.md).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub replicas: BTreeMap<String, ReplicaRecord>,
    /// The store version this state was loaded or last saved as (not persisted): a shared
    /// store saves only if the stored version is still this one. 0: never stored.
    #[serde(skip)]
    pub store_version: StoreVersion,
}

/// The version of the stored state a [`State`] derives from. Interior-mutable so a save
/// through `&State` records the version it produced (the state is behind the LUN
/// manager's lock, so loading, changing and saving it are one sequence).
#[derive(Debug, Default)]
pub struct StoreVersion(std::sync::atomic::AtomicU64);

impl StoreVersion {
    /// The version (0: never stored).
    pub fn get(&self) -> u64 {
        self.0.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Record a new version.
    pub fn set(&self, v: u64) {
        self.0.store(v, std::sync::atomic::Ordering::Release);
    }
}

impl Clone for StoreVersion {
    fn clone(&self) -> Self {
        Self(std::sync::atomic::AtomicU64::new(self.get()))
    }
}

/// Where the LUN manager's [`State`] is kept. Blocking.
pub trait StateStore: Send + Sync {
    /// The stored state (with [`State::store_version`] set); `Ok(None)` when there is none
    /// yet.
    fn load(&self) -> Result<Option<State>, StateError>;

    /// Store `st`. A shared store does so only if the stored version is still
    /// `st.store_version` ([`StateError::Conflict`] otherwise, nothing written) and then
    /// records the new version in `st` and tells the other gateways.
    fn save(&self, st: &State) -> Result<(), StateError>;

    /// Where the state is, for messages (a path or an object name).
    fn describe(&self) -> String;
}

/// Today's `<data-dir>/state.json` (atomic replace, mode 0600). One writer (this lunard),
/// so there are no versions to check.
#[derive(Debug, Clone)]
pub struct FileStateStore {
    dir: PathBuf,
}

impl FileStateStore {
    /// The state file of `data_dir`.
    pub fn new(data_dir: &Path) -> Self {
        Self {
            dir: data_dir.to_path_buf(),
        }
    }
}

impl StateStore for FileStateStore {
    fn load(&self) -> Result<Option<State>, StateError> {
        load(&self.dir)
    }

    fn save(&self, st: &State) -> Result<(), StateError> {
        save(&self.dir, st)
    }

    fn describe(&self) -> String {
        state_path(&self.dir).display().to_string()
    }
}

/// Whether a LUN may be presented to initiators.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LunStatus {
    /// Usable: mapped LUNs are in REPORT LUNS.
    Online,
    /// A full clone whose copy is still running: never presented.
    Creating,
}

/// How a clone relates to its source.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CloneMode {
    /// Shares unchanged data with its source (copy-on-write); instant.
    Linked,
    /// Owns a full copy of its data (background split); independent of the source.
    Full,
}

impl CloneMode {
    /// Lower-case name as shown and accepted by the API.
    pub fn as_str(self) -> &'static str {
        match self {
            CloneMode::Linked => "linked",
            CloneMode::Full => "full",
        }
    }
}

/// Which end of a replication relationship this lunard is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReplicaRole {
    /// Takes snapshots of `volume` and sends them to the peer on the schedule.
    Source,
    /// Receives into `volume`, which stays write-protected until promoted.
    Replica,
    /// Was the replica; promoted (writable), waiting for `reverse` to replicate back.
    Promoted,
}

impl ReplicaRole {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            ReplicaRole::Source => "source",
            ReplicaRole::Replica => "replica",
            ReplicaRole::Promoted => "promoted",
        }
    }
}

/// One replication relationship (the same name on both sides).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaRecord {
    /// Relationship name (unique on each side; the replica side takes the source's).
    pub name: String,
    /// This side's role.
    pub role: ReplicaRole,
    /// The LUN (volume) on this side.
    pub volume: String,
    /// Its pool (empty: the LUN's, or the first).
    #[serde(default)]
    pub pool: String,
    /// The peer lunard (`replication.peers[].name`).
    pub peer: String,
    /// The volume on the peer.
    pub remote_volume: String,
    /// Schedule interval in seconds.
    pub every_secs: u64,
    /// Replication snapshots kept here.
    pub keep_local: u32,
    /// Replication snapshots kept on the peer.
    pub keep_remote: u32,
    /// Bandwidth limit in bytes per second (`None`: unlimited).
    #[serde(default)]
    pub bandwidth: Option<u64>,
    /// Paused by the operator.
    #[serde(default)]
    pub paused: bool,
    /// Creation time, seconds since the Unix epoch.
    pub created_unix: u64,
    /// Creation time (ms since the epoch) of the newest source snapshot both sides have:
    /// the replica's data is as of then.
    #[serde(default)]
    pub replicated_as_of_ms: Option<u64>,
    /// The last completed transfer.
    #[serde(default)]
    pub last_transfer: Option<TransferRecord>,
    /// A consistency group's relationship (decision 0027). On the source: the consistency
    /// group replicated (`volume` names it too) and `members` its LUNs. On the replica
    /// side: the source's relationship name, on each member's record (one record per
    /// member volume, named `<relationship>.<remote volume>`), so that `promote` and
    /// `delete` of the relationship act on every member.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// The source side of a group relationship: each member LUN and its volume on the peer.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<GroupMember>,
}

/// A member of a replicated consistency group: the LUN here and its replica on the peer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupMember {
    /// The member LUN on this side.
    pub volume: String,
    /// Its replica volume on the peer.
    pub remote_volume: String,
}

impl ReplicaRecord {
    /// The name the replica side records member `remote_volume` of group relationship
    /// `relationship` under (one record per member there).
    pub fn member_name(relationship: &str, remote_volume: &str) -> String {
        format!("{relationship}.{remote_volume}")
    }

    /// The LUNs of this side the relationship replicates: its volume, or a group's members.
    pub fn volumes(&self) -> Vec<&str> {
        if self.members.is_empty() {
            vec![self.volume.as_str()]
        } else {
            self.members.iter().map(|m| m.volume.as_str()).collect()
        }
    }
}

/// What the last completed transfer moved.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferRecord {
    /// The snapshot sent.
    pub snapshot: String,
    /// Stream bytes.
    pub bytes: u64,
    /// Duration in milliseconds.
    pub duration_ms: u64,
    /// When it completed, seconds since the Unix epoch.
    pub finished_unix: u64,
    /// `full`, `increment` or `clone`.
    pub kind: String,
}

/// One LUN.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LunRecord {
    /// LUN name = pool volume name.
    pub name: String,
    /// SCSI identity (NAA id / unit serial derive from it). Equal to the volume UUID at
    /// creation; kept when `clone refresh` replaces the volume underneath.
    pub identity: Uuid,
    /// Exported write-protected.
    #[serde(default)]
    pub read_only: bool,
    /// Online or still being created.
    pub status: LunStatus,
    /// `source` or `source@snap` this LUN was cloned from (as asked; survives splits).
    #[serde(default)]
    pub origin: Option<String>,
    /// Clone mode, for clones.
    #[serde(default)]
    pub clone_mode: Option<CloneMode>,
    /// Creation time, seconds since the Unix epoch.
    pub created_unix: u64,
    /// The pool holding the LUN's volume (a configured pool name). Empty in a state
    /// written before lunard served several pools: the first pool (filled in at start).
    #[serde(default)]
    pub pool: String,
    /// What a gateway without the pool presents (size, block size, provisioning), as the
    /// pool's owner last recorded it; `None` in a state written before it was kept (or by
    /// a LUN still being created). Refreshed from the pool at every save.
    #[serde(default)]
    pub geometry: Option<LunGeometry>,
}

/// A LUN's geometry as recorded for standby gateways of an HA group (which have no pool
/// to ask): everything READ CAPACITY, MODE SENSE and the VPD pages report besides identity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LunGeometry {
    /// Size in logical blocks.
    pub size_blocks: u64,
    /// Logical block size in bytes.
    pub block_size: u32,
    /// Thin provisioned (guarantee `none`), else fully reserved.
    pub thin: bool,
    /// The pool's chunk size (the UNMAP granularity of the Block Limits page).
    pub chunk_size: u32,
}

/// CHAP credentials as persisted (the config's `ChapCfg` is input-only). The secrets are
/// [`Secret`]s: `Debug` of a record (or of the whole [`State`]) never shows them, while
/// `state.json` keeps them as plain strings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChapRecord {
    /// Name the initiator must send.
    pub username: String,
    /// Secret the initiator must know.
    pub secret: Secret,
    /// Mutual CHAP: name the target answers with.
    #[serde(default)]
    pub mutual_username: Option<String>,
    /// Mutual CHAP: secret the target answers with.
    #[serde(default)]
    pub mutual_secret: Option<Secret>,
}

impl ChapRecord {
    /// From the configuration form.
    pub fn from_cfg(c: &crate::config::ChapCfg) -> Self {
        ChapRecord {
            username: c.username.clone(),
            secret: c.secret.clone(),
            mutual_username: c.mutual.as_ref().map(|m| m.username.clone()),
            mutual_secret: c.mutual.as_ref().map(|m| m.secret.clone()),
        }
    }

    /// To the form the fabric front ends take.
    pub fn to_spec(&self) -> crate::fabric::ChapSpec {
        crate::fabric::ChapSpec {
            username: self.username.clone(),
            secret: self.secret.clone(),
            mutual: match (&self.mutual_username, &self.mutual_secret) {
                (Some(u), Some(s)) => Some((u.clone(), s.clone())),
                _ => None,
            },
        }
    }
}

/// One target: access control and its LUN map.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TargetRecord {
    /// Target name: IQN for iSCSI, WWPN (in the fabric's canonical spelling) for LIO fabrics.
    pub iqn: String,
    /// Transport the target is exported over.
    #[serde(default)]
    pub fabric: crate::fabric::Fabric,
    /// TargetAlias.
    #[serde(default)]
    pub alias: Option<String>,
    /// Any initiator may log in.
    #[serde(default)]
    pub allow_any: bool,
    /// Allowed initiator IQNs (when not `allow_any`).
    #[serde(default)]
    pub initiators: Vec<String>,
    /// CHAP required for normal sessions.
    #[serde(default)]
    pub chap: Option<ChapRecord>,
    /// LUN number -> LUN name.
    #[serde(default)]
    pub luns: BTreeMap<u64, String>,
}

impl TargetRecord {
    /// What the fabric front ends export (the LUNs are attached to the device server
    /// directly).
    pub fn to_spec(&self) -> crate::fabric::TargetSpec {
        crate::fabric::TargetSpec {
            name: self.iqn.clone(),
            fabric: self.fabric,
            alias: self.alias.clone(),
            allow_any: self.allow_any,
            initiators: self.initiators.clone(),
            chap: self.chap.as_ref().map(ChapRecord::to_spec),
        }
    }
}

/// A consistency group snapshot.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GroupRecord {
    /// Group (and per-LUN snapshot) name.
    pub name: String,
    /// LUNs snapshotted together.
    pub members: Vec<String>,
    /// When, seconds since the Unix epoch.
    pub created_unix: u64,
}

/// A consistency group: LUNs of one pool whose group snapshots are taken at one instant.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsistencyGroupRecord {
    /// Group name.
    pub name: String,
    /// Member LUNs, in the order given (a LUN is a member of at most one group).
    pub members: Vec<String>,
    /// The pool every member is in.
    pub pool: String,
    /// When it was created, seconds since the Unix epoch.
    pub created_unix: u64,
}

/// Life cycle of a clone job.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// Accepted, not started.
    Queued,
    /// Copy running.
    Creating,
    /// Done: the clone is online.
    Completed,
    /// Failed: nothing of the clone is left.
    Failed,
    /// Cancelled: nothing of the clone is left.
    Cancelled,
}

impl JobState {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Creating => "creating",
            JobState::Completed => "completed",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
        }
    }

    /// Whether the job has ended.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            JobState::Completed | JobState::Failed | JobState::Cancelled
        )
    }
}

/// One clone job (every clone creation and every split is one).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CloneJobRecord {
    /// Job id, e.g. `clone-7`.
    pub id: String,
    /// Source as given (`lun` or `lun@snap`).
    pub source: String,
    /// Destination LUN.
    pub destination: String,
    /// Linked or full.
    pub mode: CloneMode,
    /// Current state.
    pub state: JobState,
    /// Chunks copied (full clones).
    #[serde(default)]
    pub done: u64,
    /// Chunks to copy (full clones).
    #[serde(default)]
    pub total: u64,
    /// Why it failed.
    #[serde(default)]
    pub error: Option<String>,
    /// Start time, seconds since the Unix epoch.
    pub started_unix: u64,
    /// End time, seconds since the Unix epoch.
    #[serde(default)]
    pub finished_unix: Option<u64>,
    /// What to do on completion: map into this target at this LUN number.
    #[serde(default)]
    pub map_to: Option<(String, u64)>,
}

impl CloneJobRecord {
    /// Progress in percent (100 for completed jobs and linked clones).
    pub fn percent(&self) -> f64 {
        if self.state == JobState::Completed {
            100.0
        } else if self.total == 0 {
            0.0
        } else {
            (self.done as f64 * 100.0 / self.total as f64).min(100.0)
        }
    }
}

/// Errors reading or writing the state file.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// I/O on the state file.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file does not parse.
    #[error("state file {path} is corrupt: {message}")]
    Corrupt {
        /// File.
        path: String,
        /// Parser message.
        message: String,
    },
    /// Another gateway saved the shared state since this one loaded it: nothing was
    /// written; the operation may be retried once the gateway has reloaded.
    #[error("the shared state {object} was changed by another gateway meanwhile; nothing was saved, retry")]
    Conflict {
        /// Object name.
        object: String,
    },
    /// The shared store could not be reached or refused the operation.
    #[error("shared state {object}: {message}")]
    Shared {
        /// Object name.
        object: String,
        /// What failed.
        message: String,
    },
    /// Written by a newer lunard.
    #[error(
        "state file {path} has version {found}; this lunard understands up to {STATE_VERSION}"
    )]
    Version {
        /// File.
        path: String,
        /// Version found.
        found: u32,
    },
}

/// Path of the state file in `data_dir`.
pub fn state_path(data_dir: &Path) -> PathBuf {
    data_dir.join(STATE_FILE)
}

/// Loads the state; `Ok(None)` when there is none yet (a new data directory).
pub fn load(data_dir: &Path) -> Result<Option<State>, StateError> {
    let path = state_path(data_dir);
    let text = match std::fs::read(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(StateError::Io {
                context: format!("reading {}", path.display()),
                source,
            })
        }
    };
    tighten(&path)?;
    decode(&path.display().to_string(), &text).map(Some)
}

/// Decodes a stored state (`what`: where it came from, for the errors): a corrupt one or
/// one of a newer format is refused, never half-read.
pub fn decode(what: &str, bytes: &[u8]) -> Result<State, StateError> {
    let st: State = serde_json::from_slice(bytes).map_err(|e| StateError::Corrupt {
        path: what.to_string(),
        message: e.to_string(),
    })?;
    if st.version > STATE_VERSION {
        return Err(StateError::Version {
            path: what.to_string(),
            found: st.version,
        });
    }
    Ok(st)
}

/// The stored form of a state (pretty JSON).
pub fn encode(st: &State) -> Result<Vec<u8>, StateError> {
    serde_json::to_vec_pretty(st).map_err(|e| StateError::Io {
        context: "encoding the state".into(),
        source: std::io::Error::other(e),
    })
}

/// A `state.json` written by an older lunard under a lax umask may be readable by others:
/// make it private now rather than at the next change.
fn tighten(path: &Path) -> Result<(), StateError> {
    let io = |context: String| move |source| StateError::Io { context, source };
    let meta = std::fs::metadata(path).map_err(io(format!("reading {}", path.display())))?;
    let mode = meta.mode() & 0o7777;
    if mode & 0o077 != 0 {
        tracing::warn!(
            path = %path.display(),
            "the state file (it holds CHAP secrets) had mode {mode:04o}; setting 0600"
        );
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(STATE_MODE))
            .map_err(io(format!("setting mode 0600 on {}", path.display())))?;
    }
    Ok(())
}

/// Writes the state atomically (temp file + fsync + rename + directory fsync).
pub fn save(data_dir: &Path, st: &State) -> Result<(), StateError> {
    let path = state_path(data_dir);
    let tmp = data_dir.join(format!(".{STATE_FILE}.tmp"));
    let io = |context: String| move |source| StateError::Io { context, source };
    let body = encode(st)?;
    {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(STATE_MODE)
            .open(&tmp)
            .map_err(io(format!("creating {}", tmp.display())))?;
        // `mode` applies only when the file is created: a temporary file left by a crashed
        // older lunard keeps its mode, so set it (on the descriptor) before writing.
        f.set_permissions(std::fs::Permissions::from_mode(STATE_MODE))
            .map_err(io(format!("setting mode 0600 on {}", tmp.display())))?;
        f.write_all(&body)
            .and_then(|_| f.write_all(b"\n"))
            .map_err(io(format!("writing {}", tmp.display())))?;
        f.sync_all()
            .map_err(io(format!("syncing {}", tmp.display())))?;
    }
    std::fs::rename(&tmp, &path).map_err(io(format!(
        "renaming {} to {}",
        tmp.display(),
        path.display()
    )))?;
    let dir =
        std::fs::File::open(data_dir).map_err(io(format!("opening {}", data_dir.display())))?;
    dir.sync_all()
        .map_err(io(format!("syncing {}", data_dir.display())))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_then_load_round_trips_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load(dir.path()).unwrap().is_none());
        let mut st = State {
            version: STATE_VERSION,
            ..Default::default()
        };
        st.luns.insert(
            "a".into(),
            LunRecord {
                name: "a".into(),
                identity: Uuid::new_v4(),
                read_only: false,
                status: LunStatus::Online,
                origin: None,
                clone_mode: None,
                created_unix: 1,
                pool: String::new(),
                geometry: None,
            },
        );
        save(dir.path(), &st).unwrap();
        let back = load(dir.path()).unwrap().unwrap();
        assert_eq!(back.luns["a"].identity, st.luns["a"].identity);
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, vec![STATE_FILE.to_string()]);
    }

    const WITH_CHAP: &str = r#"{"version": 1, "luns": {}, "groups": {}, "clone_jobs": [],
        "targets": {"iqn.2026-11.io.lunar:t": {"iqn": "iqn.2026-11.io.lunar:t",
        "chap": {"username": "u", "secret": "initiator-secret-1",
                 "mutual_username": "m", "mutual_secret": "target-secret-22"}}}}"#;

    /// A state (or a record of it) in a debug log must not carry the CHAP secrets.
    #[test]
    fn debug_of_the_state_shows_no_chap_secret() {
        let st: State = serde_json::from_str(WITH_CHAP).unwrap();
        let chap = st.targets["iqn.2026-11.io.lunar:t"].chap.clone().unwrap();
        let text = format!("{st:?} {st:#?} {chap:?} {:?}", chap.to_spec());
        for s in ["initiator-secret-1", "target-secret-22"] {
            assert!(!text.contains(s), "{s} in {text}");
        }
    }

    /// `state.json` keeps the secrets as plain strings (the format is unchanged).
    #[test]
    fn state_json_keeps_the_secrets_as_strings() {
        let dir = tempfile::tempdir().unwrap();
        let st: State = serde_json::from_str(WITH_CHAP).unwrap();
        save(dir.path(), &st).unwrap();
        let v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(state_path(dir.path())).unwrap()).unwrap();
        let c = &v["targets"]["iqn.2026-11.io.lunar:t"]["chap"];
        assert_eq!(c["secret"], "initiator-secret-1");
        assert_eq!(c["mutual_secret"], "target-secret-22");
        let back = load(dir.path()).unwrap().unwrap();
        assert_eq!(
            back.targets["iqn.2026-11.io.lunar:t"].chap,
            st.targets["iqn.2026-11.io.lunar:t"].chap
        );
    }

    /// A state.json an older lunard left readable by others is made private when loaded.
    #[test]
    fn a_state_file_readable_by_others_is_made_private_on_load() {
        let dir = tempfile::tempdir().unwrap();
        let path = state_path(dir.path());
        std::fs::write(&path, WITH_CHAP).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(load(dir.path()).unwrap().is_some());
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, STATE_MODE);
    }

    #[test]
    fn corrupt_and_future_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(state_path(dir.path()), b"{not json").unwrap();
        assert!(matches!(load(dir.path()), Err(StateError::Corrupt { .. })));
        std::fs::write(
            state_path(dir.path()),
            br#"{"version": 99, "luns": {}, "targets": {}, "groups": {}, "clone_jobs": []}"#,
        )
        .unwrap();
        assert!(matches!(
            load(dir.path()),
            Err(StateError::Version { found: 99, .. })
        ));
    }
}
