//! What two lunards say over a replication connection, after mutual TLS: one request
//! line (JSON, at most [`MAX_LINE`] bytes) and one reply line, and for `receive` the
//! replication stream between them (storage_core::stream's format, read exactly to its
//! END record), then the final reply.
//!
//! The requests are few and each is checked on the receiving side against its own
//! records: a peer may replicate only into volumes of relationships it owns there (or a
//! new one), may prune only `repl-` snapshots of those, and may demote only a
//! relationship whose peer it is.

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWrite, AsyncWriteExt};

/// Version of this protocol a single-LUN relationship speaks (every lunard since the
/// link exists understands it).
pub const PROTOCOL_VERSION: u32 = 1;
/// Version of the requests of a consistency group's relationship: a `Receive` with
/// `stage_only`, the `CommitGroup` request and the `DemoteGroup` request (its reverse). A peer that does not know them (it accepts
/// only version 1) refuses every request of such a relationship with both versions named,
/// rather than committing a member alone.
pub const GROUP_PROTOCOL_VERSION: u32 = 2;
/// The versions this lunard answers.
pub const SUPPORTED_VERSIONS: std::ops::RangeInclusive<u32> =
    PROTOCOL_VERSION..=GROUP_PROTOCOL_VERSION;
/// Longest request or reply line.
pub const MAX_LINE: usize = 64 * 1024;

/// One request.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// What the peer has of `volume`: its snapshots (name, uuid) and an interrupted
    /// receive's resume token.
    Status {
        /// Protocol version of the caller.
        version: u32,
        /// Relationship name.
        relationship: String,
        /// The volume on the answering side.
        volume: String,
        /// Also look for the snapshot with this uuid (the origin of the caller's clone) in
        /// the volumes the caller replicates here; the answer's `origin` says where it is.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        origin: Option<uuid::Uuid>,
    },
    /// A replication stream follows into `volume` for relationship `relationship`.
    Receive {
        /// Protocol version of the caller.
        version: u32,
        /// Relationship name (the replica side records it on the first transfer).
        relationship: String,
        /// The replica volume on the answering side.
        volume: String,
        /// The volume on the sending side.
        source_volume: String,
        /// Schedule interval in seconds (shown on the replica side).
        every_secs: u64,
        /// The source's retention: snapshots kept there (`keep_local`) and here
        /// (`keep_remote`), recorded on the replica side for `replica list`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        keep: Option<Keep>,
        /// When the source took the snapshot the stream carries, milliseconds since the
        /// Unix epoch: the replica side's data is as of then (its lag).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        as_of_ms: Option<u64>,
        /// Stage the stream to its end without committing it: a member of consistency
        /// group relationship `group`, committed with the others by `CommitGroup`
        /// (version [`GROUP_PROTOCOL_VERSION`]).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        stage_only: bool,
        /// The group relationship this member belongs to (recorded on the member's record
        /// on the replica side).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        group: Option<String>,
    },
    /// Commit the staged receives of every member of group relationship `relationship`
    /// at once (one journal block: all members move to the new group snapshot, or none).
    CommitGroup {
        /// Protocol version of the caller (at least [`GROUP_PROTOCOL_VERSION`]).
        version: u32,
        /// The group relationship.
        relationship: String,
        /// Every member: its record, its volume here, the snapshot staged into it.
        members: Vec<GroupCommitMember>,
        /// When the source took the group snapshot (ms since the epoch).
        as_of_ms: u64,
    },
    /// Retention on the replica side: delete `repl-` snapshots of `volume` beyond `keep`,
    /// never the one with uuid `common`.
    Prune {
        /// Protocol version of the caller.
        version: u32,
        /// Relationship name.
        relationship: String,
        /// The replica volume.
        volume: String,
        /// How many to keep.
        keep: u32,
        /// The newest common snapshot's uuid.
        common: uuid::Uuid,
        /// Snapshots to keep too whatever the count: their copies on the source are the
        /// origins of clones there, and a clone's replica is created from the copy here.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        also_keep: Vec<uuid::Uuid>,
    },
    /// Failback: the answering side (the old source) rolls `volume` back to `common` and
    /// becomes the replica of the caller.
    Demote {
        /// Protocol version of the caller.
        version: u32,
        /// Relationship name.
        relationship: String,
        /// The volume on the answering side.
        volume: String,
        /// The caller's volume (the new source).
        source_volume: String,
        /// The snapshot (name on the answering side) both sides have.
        common: String,
    },
    /// Failback of a consistency group's relationship: the answering side (the old
    /// source) rolls every member back to its copy of one group snapshot in one journal
    /// block and becomes the replica of the caller, or changes nothing (version
    /// [`GROUP_PROTOCOL_VERSION`]).
    DemoteGroup {
        /// Protocol version of the caller (at least [`GROUP_PROTOCOL_VERSION`]).
        version: u32,
        /// The group relationship (its record on the answering side).
        relationship: String,
        /// Every member: its volume here, the caller's volume, the common snapshot.
        members: Vec<DemoteMember>,
    },
}

/// One member of a `DemoteGroup` request.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct DemoteMember {
    /// The member's volume on the answering side.
    pub volume: String,
    /// The caller's volume (the member on the new source).
    pub source_volume: String,
    /// The group snapshot both sides have (its name on the answering side).
    pub common: String,
}

impl Request {
    /// The version the caller speaks.
    pub fn version(&self) -> u32 {
        match self {
            Request::Status { version, .. }
            | Request::Receive { version, .. }
            | Request::Prune { version, .. }
            | Request::CommitGroup { version, .. }
            | Request::Demote { version, .. }
            | Request::DemoteGroup { version, .. } => *version,
        }
    }

    /// The oldest version that can carry this request: a group's requests need
    /// [`GROUP_PROTOCOL_VERSION`].
    pub fn needs_version(&self) -> u32 {
        match self {
            Request::Receive {
                stage_only: true, ..
            }
            | Request::CommitGroup { .. }
            | Request::DemoteGroup { .. } => GROUP_PROTOCOL_VERSION,
            _ => PROTOCOL_VERSION,
        }
    }
}

/// One member of a `CommitGroup` request.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct GroupCommitMember {
    /// The member's relationship record on the answering side.
    pub relationship: String,
    /// The member's volume on the answering side.
    pub volume: String,
    /// The source snapshot staged into it (its uuid).
    pub snapshot_uuid: uuid::Uuid,
}

/// A snapshot as the peer reports it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct SnapEntry {
    /// Name on that side.
    pub name: String,
    /// The source snapshot's uuid.
    pub uuid: uuid::Uuid,
    /// Creation time there, seconds since the Unix epoch.
    pub created_unix: u64,
}

/// A relationship's retention as the source has it.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Keep {
    /// Snapshots the source keeps.
    pub source: u32,
    /// Snapshots the replica side keeps.
    pub replica: u32,
}

/// Where the answering side holds a snapshot the caller asked about by uuid.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Located {
    /// The volume on the answering side.
    pub volume: String,
    /// The snapshot's name there.
    pub name: String,
    /// Its uuid (the source snapshot's).
    pub uuid: uuid::Uuid,
}

/// One reply.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub enum Reply {
    /// `Status`'s answer.
    Status {
        /// Whether the volume exists.
        exists: bool,
        /// Its snapshots, oldest first.
        snapshots: Vec<SnapEntry>,
        /// An interrupted receive into it: the token to resume with.
        resume_token: Option<String>,
        /// Where the snapshot the request's `origin` names is, if this side holds it in
        /// a volume the caller replicates here.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        origin: Option<Located>,
    },
    /// Ready for the stream (`Receive`).
    Ready,
    /// The stream was received and committed.
    Received {
        /// The snapshot that appeared.
        snapshot: String,
        /// `full`, `increment` or `clone`.
        kind: String,
        /// Stream bytes read.
        bytes: u64,
    },
    /// `Prune` done.
    Pruned {
        /// Snapshots deleted.
        deleted: Vec<String>,
    },
    /// `Demote` done.
    Demoted,
    /// `CommitGroup` done: every member's new snapshot is visible.
    CommittedGroup {
        /// The snapshot that appeared on each member (the same name on all).
        snapshots: Vec<String>,
    },
    /// Refused or failed.
    Error {
        /// Stable kind (`not_found`, `invalid`, `busy`, `protocol`, ...).
        kind: String,
        /// What happened, for the operator.
        message: String,
        /// Resume token, when the receive was cut and can continue.
        resume_token: Option<String>,
    },
}

/// Why a line could not be read.
#[derive(Debug, thiserror::Error)]
pub enum LineError {
    /// The connection failed or closed.
    #[error("reading from the peer: {0}")]
    Io(#[from] std::io::Error),
    /// The connection closed before a line.
    #[error("the peer closed the connection")]
    Closed,
    /// Longer than [`MAX_LINE`].
    #[error("the peer sent a line longer than {MAX_LINE} bytes")]
    TooLong,
    /// Not the JSON expected.
    #[error("the peer sent an invalid message: {0}")]
    Json(#[from] serde_json::Error),
}

/// Reads one JSON line of at most [`MAX_LINE`] bytes (never buffering more: a hostile peer
/// cannot make us allocate).
pub async fn read_line<R, T>(r: &mut R) -> Result<T, LineError>
where
    R: tokio::io::AsyncBufRead + Unpin,
    T: serde::de::DeserializeOwned,
{
    let mut buf = Vec::new();
    loop {
        let avail = r.fill_buf().await?;
        if avail.is_empty() {
            return Err(LineError::Closed);
        }
        let (take, done) = match avail.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (avail.len(), false),
        };
        if buf.len() + take > MAX_LINE + 1 {
            return Err(LineError::TooLong);
        }
        buf.extend_from_slice(&avail[..take]);
        r.consume(take);
        if done {
            return Ok(serde_json::from_slice(&buf)?);
        }
    }
}

/// Writes one JSON line and flushes.
pub async fn write_line<W, T>(w: &mut W, v: &T) -> std::io::Result<()>
where
    W: AsyncWrite + Unpin,
    T: Serialize,
{
    let mut b = serde_json::to_vec(v).map_err(std::io::Error::other)?;
    b.push(b'\n');
    w.write_all(&b).await?;
    w.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn lines_round_trip_and_long_lines_are_refused() {
        let req = Request::Status {
            version: PROTOCOL_VERSION,
            relationship: "r".into(),
            volume: "v".into(),
            origin: None,
        };
        let mut out = Vec::new();
        write_line(&mut out, &req).await.unwrap();
        let mut rd = tokio::io::BufReader::new(&out[..]);
        let back: Request = read_line(&mut rd).await.unwrap();
        assert_eq!(back.version(), PROTOCOL_VERSION);
        let long = vec![b'x'; MAX_LINE + 10];
        let mut rd = tokio::io::BufReader::new(&long[..]);
        assert!(matches!(
            read_line::<_, Request>(&mut rd).await,
            Err(LineError::TooLong)
        ));
        let mut rd = tokio::io::BufReader::new(&b"{\"op\":\"nope\"}\n"[..]);
        assert!(matches!(
            read_line::<_, Request>(&mut rd).await,
            Err(LineError::Json(_))
        ));
    }

    /// A group's demotion is a version-2 request (an old peer refuses it, so an old
    /// source is never half demoted) and carries every member.
    #[test]
    fn a_group_demotion_needs_the_group_protocol_and_round_trips() {
        let req = Request::DemoteGroup {
            version: GROUP_PROTOCOL_VERSION,
            relationship: "g".into(),
            members: vec![DemoteMember {
                volume: "a".into(),
                source_volume: "a-dr".into(),
                common: "repl-1".into(),
            }],
        };
        assert_eq!(req.needs_version(), GROUP_PROTOCOL_VERSION);
        let line = serde_json::to_string(&req).unwrap();
        assert!(line.contains(r#""op":"demote_group""#), "{line}");
        let back: Request = serde_json::from_str(&line).unwrap();
        assert!(
            matches!(back, Request::DemoteGroup { members, .. } if members[0].source_volume == "a-dr")
        );
        let single = Request::Demote {
            version: PROTOCOL_VERSION,
            relationship: "r".into(),
            volume: "v".into(),
            source_volume: "v".into(),
            common: "s".into(),
        };
        assert_eq!(single.needs_version(), PROTOCOL_VERSION);
    }

    /// The fields added for clone origins, retention and lag are optional: a peer that
    /// does not send them is understood (no origin, keep counts unknown, lag from the
    /// receive) and one that does not know them ignores them.
    #[test]
    fn optional_fields_default_when_absent() {
        let status: Request =
            serde_json::from_str(r#"{"op":"status","version":1,"relationship":"r","volume":"v"}"#)
                .unwrap();
        assert!(matches!(status, Request::Status { origin: None, .. }));
        let recv: Request = serde_json::from_str(
            r#"{"op":"receive","version":1,"relationship":"r","volume":"v","source_volume":"s","every_secs":5}"#,
        )
        .unwrap();
        assert!(matches!(
            recv,
            Request::Receive {
                keep: None,
                as_of_ms: None,
                ..
            }
        ));
        let prune: Request = serde_json::from_str(&format!(
            r#"{{"op":"prune","version":1,"relationship":"r","volume":"v","keep":2,"common":"{}"}}"#,
            uuid::Uuid::nil()
        ))
        .unwrap();
        assert!(matches!(prune, Request::Prune { also_keep, .. } if also_keep.is_empty()));
        let reply: Reply = serde_json::from_str(
            r#"{"reply":"status","exists":false,"snapshots":[],"resume_token":null}"#,
        )
        .unwrap();
        assert!(matches!(reply, Reply::Status { origin: None, .. }));
        // And the new fields round-trip.
        let u = uuid::Uuid::from_u128(7);
        let r = Reply::Status {
            exists: true,
            snapshots: vec![],
            resume_token: None,
            origin: Some(Located {
                volume: "gold".into(),
                name: "repl-1".into(),
                uuid: u,
            }),
        };
        let back: Reply = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert!(
            matches!(back, Reply::Status { origin: Some(l), .. } if l.uuid == u && l.volume == "gold")
        );
    }
}
