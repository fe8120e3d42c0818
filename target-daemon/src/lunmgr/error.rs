//! Errors of LUN manager operations: one variant per reason, carrying the objects involved,
//! with a stable machine-readable kind that the admin API reports next to the message.
//!
//! Each variant's message is written once, here; the objects it names are fields, so the
//! admin API can return them as data and callers can match on them.

use std::fmt;

use storage_core::StorageError;

/// What sort of object an error is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ObjectKind {
    /// A LUN (and its pool volume).
    Lun,
    /// A snapshot, named `lun@snap`.
    Snapshot,
    /// A consistency group's snapshots (`snapshot create --group`).
    Group,
    /// A consistency group: LUNs snapshotted and replicated together (`lunarctl cg`).
    ConsistencyGroup,
    /// A target (IQN or WWPN).
    Target,
    /// An initiator name.
    Initiator,
    /// A clone job (or the clone it creates).
    CloneJob,
    /// A pool (a name from the configuration's `pools:`).
    Pool,
    /// A replication relationship.
    Relationship,
}

impl ObjectKind {
    /// Lower-case name as the admin API reports it.
    pub fn as_str(self) -> &'static str {
        match self {
            ObjectKind::Lun => "lun",
            ObjectKind::Snapshot => "snapshot",
            ObjectKind::Group => "group",
            ObjectKind::ConsistencyGroup => "consistency_group",
            ObjectKind::Target => "target",
            ObjectKind::Initiator => "initiator",
            ObjectKind::CloneJob => "clone_job",
            ObjectKind::Pool => "pool",
            ObjectKind::Relationship => "relationship",
        }
    }
}

impl fmt::Display for ObjectKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ObjectKind::Lun => "LUN",
            ObjectKind::Snapshot => "snapshot",
            ObjectKind::Group => "group",
            ObjectKind::ConsistencyGroup => "consistency group",
            ObjectKind::Target => "target",
            ObjectKind::Initiator => "initiator",
            ObjectKind::CloneJob => "clone job",
            ObjectKind::Pool => "pool",
            ObjectKind::Relationship => "relationship",
        })
    }
}

/// What keeps an object in use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UsedBy {
    /// Initiators are logged in to these targets.
    Sessions(Vec<String>),
    /// This many sessions are logged in to the target itself.
    SessionCount(usize),
    /// A running clone job.
    CloneJob(String),
    /// A consistency group it is a member of.
    ConsistencyGroup(String),
}

impl fmt::Display for UsedBy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UsedBy::Sessions(t) => write!(f, "sessions logged in to {}", t.join(", ")),
            UsedBy::SessionCount(n) => write!(f, "logged-in sessions: {n}"),
            UsedBy::CloneJob(j) => write!(f, "running clone job {j}"),
            UsedBy::ConsistencyGroup(g) => write!(f, "member of consistency group {g}"),
        }
    }
}

/// Why an administrative operation failed. A failed operation changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum MgrError {
    /// An object named in the request does not exist.
    #[error("{kind} {name:?} not found")]
    NotFound {
        /// What was looked for.
        kind: ObjectKind,
        /// Its name (`lun@snap` for snapshots).
        name: String,
    },
    /// The name is already taken.
    #[error("{kind} {name:?} already exists")]
    AlreadyExists {
        /// What was to be created.
        kind: ObjectKind,
        /// The taken name.
        name: String,
    },
    /// A name that is not valid for its kind of object.
    #[error("invalid {kind} name {name:?}: {reason}")]
    InvalidName {
        /// What was to be named.
        kind: ObjectKind,
        /// The name as given.
        name: String,
        /// Which rule it breaks.
        reason: String,
    },
    /// A value out of its domain (guarantee, block size, size, clone mode, fabric, ...).
    #[error("invalid {what} {value}: {reason}")]
    InvalidValue {
        /// Which argument.
        what: &'static str,
        /// The value as given.
        value: String,
        /// What is allowed.
        reason: String,
    },
    /// An argument that only makes sense with another one.
    #[error("{given} needs {needs}{why}")]
    NeedsArgument {
        /// The argument given.
        given: &'static str,
        /// The argument it needs.
        needs: &'static str,
        /// Why (empty, or starting with `: `).
        why: &'static str,
    },
    /// The object is in use; `force` (where the operation has it) overrides.
    #[error("{kind} {name:?} is in use ({by}): {hint}")]
    InUse {
        /// What is in use.
        kind: ObjectKind,
        /// Its name.
        name: String,
        /// By what.
        by: UsedBy,
        /// What to do about it.
        hint: &'static str,
    },
    /// A full clone still being copied cannot be used yet.
    #[error(
        "LUN {name:?} is a clone still being created (`lunarctl clone cancel {name}` stops it)"
    )]
    StillCreating {
        /// The clone.
        name: String,
    },
    /// Deleting a LUN would delete its snapshots, which was not asked for.
    #[error(
        "LUN {lun:?} has {} snapshot(s) ({}): delete them first, or pass --recursive to delete them with it",
        snapshots.len(),
        snapshots.join(", ")
    )]
    HasSnapshots {
        /// The LUN.
        lun: String,
        /// Its snapshots, as `lun@snap`.
        snapshots: Vec<String>,
    },
    /// Shrinking loses data and was not confirmed.
    #[error("shrinking {name:?} from {from} to {to} loses data: pass --shrink to confirm")]
    ShrinkNotConfirmed {
        /// The LUN.
        name: String,
        /// Current size (human).
        from: String,
        /// Requested size (human).
        to: String,
    },
    /// The LUN number is taken in that target.
    #[error("LUN number {lun_id} of target {target:?} is already used by {by:?}")]
    LunNumberTaken {
        /// The target.
        target: String,
        /// The LUN number.
        lun_id: u64,
        /// The LUN using it.
        by: String,
    },
    /// Every LUN number of the target is taken.
    #[error("target {target:?} has no free LUN number")]
    NoFreeLunNumber {
        /// The target.
        target: String,
    },
    /// The LUN is not mapped in that target.
    #[error("LUN {lun:?} is not mapped in target {target:?}")]
    NotMapped {
        /// The LUN.
        lun: String,
        /// The target.
        target: String,
    },
    /// The initiator is already in the target's ACL.
    #[error("initiator {initiator:?} is already allowed on {target:?}")]
    AlreadyAllowed {
        /// The initiator.
        initiator: String,
        /// The target.
        target: String,
    },
    /// The initiator is not in the target's ACL.
    #[error("initiator {initiator:?} is not in the ACL of {target:?}")]
    NotAllowed {
        /// The initiator.
        initiator: String,
        /// The target.
        target: String,
    },
    /// No running clone job for that clone or job id.
    #[error("no running clone job for {name:?}")]
    NoRunningJob {
        /// Destination LUN or job id as given.
        name: String,
    },
    /// The LUN is not a clone (or not a linked one) and the operation needs one.
    #[error("LUN {name:?} is not a {}clone", if *.linked { "linked " } else { "" })]
    NotAClone {
        /// The LUN.
        name: String,
        /// Whether a linked clone was needed.
        linked: bool,
    },
    /// A feature the target's fabric does not have.
    #[error("{feature} is an iSCSI login feature; {target:?} is a {fabric} target")]
    NotOnFabric {
        /// The feature (`CHAP`).
        feature: &'static str,
        /// The target.
        target: String,
        /// Its fabric.
        fabric: crate::fabric::Fabric,
    },
    /// The device server refused to attach the LUN.
    #[error("cannot attach LUN {lun:?} to {target:?}: {reason}")]
    Attach {
        /// The LUN.
        lun: String,
        /// The target.
        target: String,
        /// The device server's reason.
        reason: String,
    },
    /// A snapshot or clone would span two pools: a clone shares chunks with its origin,
    /// so it lives in its origin's pool.
    #[error(
        "{what}: LUN {lun:?} is in pool {pool:?}, not in pool {other:?} (clones and snapshots \
         stay in their LUN's pool)"
    )]
    CrossPool {
        /// The operation (`clone create`, `snapshot group`).
        what: &'static str,
        /// The LUN the request names.
        lun: String,
        /// The LUN's pool.
        pool: String,
        /// The other pool the request asks for.
        other: String,
    },
    /// A pool of an appliance with several pools refused or failed.
    #[error("pool {pool:?}: {}", storage_message(.source))]
    InPool {
        /// The pool's name.
        pool: String,
        /// What the pool said.
        source: StorageError,
    },
    /// This gateway of an HA group is not the pool's owner (it has no pool open): the
    /// operation needs the pool and must be run on the owner.
    #[error("{}", not_owner_message(.owner.as_deref()))]
    NotOwner {
        /// The gateway that owns the pool, if one does now.
        owner: Option<String>,
    },
    /// The pool refused or failed.
    #[error("{}", storage_message(.0))]
    Storage(#[from] StorageError),
    /// A replication stream was refused or failed (`replica.send`, `replica.receive`).
    #[error("{}", stream_message(.source))]
    Stream {
        /// Why.
        source: storage_core::stream::StreamError,
        /// Set when a receive kept its staged state: the token to resume with.
        resume: Option<storage_core::stream::ResumeToken>,
    },
    /// `state.json` could not be written.
    #[error("{0}")]
    State(#[from] super::state::StateError),
    /// The running configuration could not be written as YAML (`config export`).
    #[error("config export: {0}")]
    Export(#[from] crate::config::ExportError),
}

/// The pool's message, phrased for an administrator (the pool's own wording names its
/// objects already: `volume 'x' not found`).
fn not_owner_message(owner: Option<&str>) -> String {
    match owner {
        Some(o) => format!(
            "this gateway is standby: the pool is open on gateway {o:?}; run the command there"
        ),
        None => "this gateway is standby and no gateway owns the pool right now (failover in progress?); retry on the owner".to_string(),
    }
}

fn stream_message(e: &storage_core::stream::StreamError) -> String {
    match e {
        storage_core::stream::StreamError::Storage(s) => storage_message(s),
        other => other.to_string(),
    }
}

impl From<storage_core::stream::StreamError> for MgrError {
    fn from(source: storage_core::stream::StreamError) -> Self {
        MgrError::Stream {
            source,
            resume: None,
        }
    }
}

impl From<storage_core::stream::ReceiveError> for MgrError {
    fn from(e: storage_core::stream::ReceiveError) -> Self {
        MgrError::Stream {
            source: e.error,
            resume: e.resume,
        }
    }
}

/// Kind string of a storage error.
fn storage_kind(e: &StorageError) -> &'static str {
    match e {
        StorageError::NotFound(_) => "not_found",
        StorageError::AlreadyExists(_) => "already_exists",
        StorageError::InvalidArgument(_) | StorageError::ReadOnly(_) => "invalid",
        StorageError::NotAncestor(_) => "not_ancestor",
        StorageError::NoSpace | StorageError::GuaranteeUnavailable { .. } => "no_space",
        StorageError::Busy(_) => "busy",
        _ => "internal",
    }
}

fn storage_message(e: &StorageError) -> String {
    match e {
        StorageError::InvalidArgument(m) | StorageError::Busy(m) => m.clone(),
        StorageError::NoSpace => "the pool is out of space".into(),
        StorageError::GuaranteeUnavailable {
            needed_bytes,
            available_bytes,
        } => format!(
            "space guarantee cannot be met: needs {} but only {} is available in the pool",
            human_bytes(*needed_bytes),
            human_bytes(*available_bytes)
        ),
        StorageError::ReadOnly(m) => format!("{m} is read-only"),
        other => other.to_string(),
    }
}

impl MgrError {
    /// An invalid name; `reason` may start with the quoted name (as the fabric's name
    /// checks write it), which is dropped so the name is said once.
    pub fn invalid_name(kind: ObjectKind, name: &str, reason: impl Into<String>) -> MgrError {
        let reason = reason.into();
        let quoted = format!("{name:?}");
        let reason = match reason.strip_prefix(&quoted) {
            Some(rest) => rest.trim_start_matches(':').trim_start().to_string(),
            None => reason,
        };
        MgrError::InvalidName {
            kind,
            name: name.to_string(),
            reason,
        }
    }

    /// Stable kind string: `not_found`, `already_exists`, `invalid`, `busy`, `no_space`,
    /// `internal`.
    pub fn kind(&self) -> &'static str {
        match self {
            MgrError::NotFound { .. }
            | MgrError::NotMapped { .. }
            | MgrError::NotAllowed { .. }
            | MgrError::NoRunningJob { .. } => "not_found",
            MgrError::AlreadyExists { .. }
            | MgrError::LunNumberTaken { .. }
            | MgrError::AlreadyAllowed { .. } => "already_exists",
            MgrError::InvalidName { .. }
            | MgrError::InvalidValue { .. }
            | MgrError::NeedsArgument { .. }
            | MgrError::HasSnapshots { .. }
            | MgrError::ShrinkNotConfirmed { .. }
            | MgrError::NotAClone { .. }
            | MgrError::NotOnFabric { .. }
            | MgrError::CrossPool { .. }
            | MgrError::Attach { .. } => "invalid",
            MgrError::InUse { .. } | MgrError::StillCreating { .. } => "busy",
            MgrError::NoFreeLunNumber { .. } => "no_space",
            MgrError::Storage(e) | MgrError::InPool { source: e, .. } => storage_kind(e),
            MgrError::Stream { source, .. } => match source {
                storage_core::stream::StreamError::Storage(e) => storage_kind(e),
                other => other.kind(),
            },
            // Another gateway of the HA group changed the shared state first: retry.
            MgrError::State(super::state::StateError::Conflict { .. }) => "busy",
            MgrError::State(_) | MgrError::Export(_) => "internal",
            MgrError::NotOwner { .. } => "not_owner",
        }
    }

    /// The object the error is about, if it names one: (kind, name).
    pub fn object(&self) -> Option<(ObjectKind, &str)> {
        match self {
            MgrError::NotFound { kind, name }
            | MgrError::AlreadyExists { kind, name }
            | MgrError::InvalidName { kind, name, .. }
            | MgrError::InUse { kind, name, .. } => Some((*kind, name)),
            MgrError::StillCreating { name }
            | MgrError::ShrinkNotConfirmed { name, .. }
            | MgrError::NotAClone { name, .. } => Some((ObjectKind::Lun, name)),
            MgrError::CrossPool { lun, .. } => Some((ObjectKind::Lun, lun)),
            MgrError::InPool { pool, .. } => Some((ObjectKind::Pool, pool)),
            MgrError::HasSnapshots { lun, .. }
            | MgrError::NotMapped { lun, .. }
            | MgrError::Attach { lun, .. } => Some((ObjectKind::Lun, lun)),
            MgrError::LunNumberTaken { target, .. }
            | MgrError::NoFreeLunNumber { target }
            | MgrError::NotOnFabric { target, .. } => Some((ObjectKind::Target, target)),
            MgrError::AlreadyAllowed { initiator, .. } | MgrError::NotAllowed { initiator, .. } => {
                Some((ObjectKind::Initiator, initiator))
            }
            MgrError::NoRunningJob { name } => Some((ObjectKind::CloneJob, name)),
            MgrError::InvalidValue { .. }
            | MgrError::NeedsArgument { .. }
            | MgrError::Storage(_)
            | MgrError::Stream { .. }
            | MgrError::State(_)
            | MgrError::NotOwner { .. }
            | MgrError::Export(_) => None,
        }
    }

    /// Whether the error says the object looked for does not exist.
    pub fn is_not_found(&self) -> bool {
        self.kind() == "not_found"
    }
}

/// Result of a LUN manager operation.
pub type MgrResult<T> = Result<T, MgrError>;

/// `10 GiB`, `512 MiB`, `123 B`: exact binary units when the value is a whole multiple,
/// otherwise one decimal.
pub fn human_bytes(b: u64) -> String {
    const UNITS: [(&str, u64); 5] = [
        ("PiB", 1 << 50),
        ("TiB", 1 << 40),
        ("GiB", 1 << 30),
        ("MiB", 1 << 20),
        ("KiB", 1 << 10),
    ];
    for (name, m) in UNITS {
        if b >= m {
            if b.is_multiple_of(m) {
                return format!("{} {name}", b / m);
            }
            return format!("{:.1} {name}", b as f64 / m as f64);
        }
    }
    format!("{b} B")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each message says its words once (issue 15: "snapshot 'demo@nosuch' not found not
    /// found").
    #[test]
    fn messages_say_things_once() {
        let e = MgrError::NotFound {
            kind: ObjectKind::Snapshot,
            name: "demo@nosuch".into(),
        };
        assert_eq!(e.to_string(), "snapshot \"demo@nosuch\" not found");
        let e = MgrError::from(StorageError::NotFound(
            "snapshot 'demo@nosuch' not found".into(),
        ));
        assert_eq!(e.to_string(), "snapshot 'demo@nosuch' not found");
        assert_eq!(e.kind(), "not_found");
        let e = MgrError::from(StorageError::AlreadyExists("volume 'x'".into()));
        assert_eq!(e.to_string(), "volume 'x' already exists");
        let e = MgrError::invalid_name(
            ObjectKind::Target,
            "not-an-iqn",
            "\"not-an-iqn\": must start with iqn., eui. or naa.",
        );
        assert_eq!(
            e.to_string(),
            "invalid target name \"not-an-iqn\": must start with iqn., eui. or naa."
        );
    }

    #[test]
    fn objects_are_data() {
        let e = MgrError::HasSnapshots {
            lun: "demo".into(),
            snapshots: vec!["demo@a".into(), "demo@b".into()],
        };
        assert_eq!(e.kind(), "invalid");
        assert_eq!(e.object(), Some((ObjectKind::Lun, "demo")));
        assert!(e.to_string().contains("demo@a, demo@b"), "{e}");
        assert!(e.to_string().contains("--recursive"), "{e}");
    }
}
