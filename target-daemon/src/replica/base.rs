//! What a cycle's stream is computed from, besides the usual newest common snapshot: a
//! clone's origin on its first cycle, or the snapshot and base of an interrupted transfer.
//!
//! A clone replicated in full would cost the replica side its whole size although the
//! origin's chunks are there already when the origin LUN is replicated to the same peer
//! (issue 18: "clone savings survive replication"). So the first cycle of a relationship
//! whose volume is a clone asks the peer, by uuid, whether it holds the clone's origin
//! snapshot in a volume this side replicates there; if so the stream is a clone stream
//! from that snapshot and the peer creates the replica as a clone of its copy, sharing its
//! chunks. Otherwise the first cycle is a full send, and the log says why.
//!
//! A resume token names the snapshot being sent and its base by uuid: the resumed
//! transfer's snapshot and base are looked up directly, not found by trial.

use storage_core::stream::ResumeToken;
use storage_core::Pool;
use uuid::Uuid;

use super::link::Located;

/// The snapshot a clone was made from, on the source side.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    /// The origin volume.
    pub volume: String,
    /// The snapshot's name.
    pub snapshot: String,
    /// Its uuid (its replicas elsewhere keep it).
    pub uuid: Uuid,
}

impl Origin {
    /// `vol@snap`: how a send names a base of another volume.
    pub fn base_ref(&self) -> String {
        format!("{}@{}", self.volume, self.snapshot)
    }
}

/// `volume`'s origin snapshot, if `volume` is a clone of a snapshot that still exists in
/// `pool` (a clone of a live volume, or of a snapshot deleted since, has none to send from).
pub fn clone_origin(pool: &Pool, volume: &str) -> Option<Origin> {
    let origin = pool.volume_info(volume).ok()?.origin?;
    let (v, s) = origin.split_once('@')?;
    pool.snapshots(Some(v))
        .into_iter()
        .find(|x| x.name == s)
        .map(|x| Origin {
            volume: x.volume,
            snapshot: x.name,
            uuid: x.uuid,
        })
}

/// The base of a clone's first cycle: its origin when the peer reported holding it
/// (`located`, the answer to asking for `origin.uuid`), else why the cycle sends in full.
pub fn first_base<'a>(
    origin: Option<&'a Origin>,
    located: Option<&Located>,
) -> Result<&'a Origin, String> {
    let o = origin.ok_or_else(|| "not a clone of an existing snapshot".to_string())?;
    match located {
        Some(l) if l.uuid == o.uuid => Ok(o),
        Some(l) => Err(format!(
            "the peer answered about snapshot {} instead of the origin {} ({})",
            l.uuid,
            o.base_ref(),
            o.uuid
        )),
        None => Err(format!(
            "its origin {} ({}) is not on the peer in a volume replicated there from here \
             (replicate the origin LUN to the same peer first)",
            o.base_ref(),
            o.uuid
        )),
    }
}

/// The snapshot (a name in `local`, the volume's snapshots) and base (`None` for a full
/// stream, a snapshot name of the volume, or `vol@snap` of its origin) of the interrupted
/// transfer `token` continues; `None` if this side no longer has them (the cycle then takes
/// a new snapshot, and the peer's staged receive must be aborted there).
pub fn resumed(
    token: &ResumeToken,
    local: &[(String, Uuid)],
    origin: Option<&Origin>,
) -> Option<(String, Option<String>)> {
    let to = local.iter().find(|(_, u)| *u == token.to_uuid)?.0.clone();
    let from = match token.from_uuid {
        None => None,
        Some(u) => Some(match local.iter().find(|(_, x)| *x == u) {
            Some((n, _)) => n.clone(),
            None => origin.filter(|o| o.uuid == u)?.base_ref(),
        }),
    };
    Some((to, from))
}

/// The snapshots of `volume` that clones in `pool` were made from (`volume@name` origins):
/// retention keeps them while the clones exist, here and, for the source side's, on the
/// peer (a clone's replica is created from the peer's copy).
pub fn clone_origins_of(pool: &Pool, volume: &str) -> Vec<(String, Uuid)> {
    let origins: Vec<String> = pool
        .volumes()
        .into_iter()
        .filter_map(|v| v.origin)
        .collect();
    pool.snapshots(Some(volume))
        .into_iter()
        .filter(|s| origins.contains(&format!("{volume}@{}", s.name)))
        .map(|s| (s.name, s.uuid))
        .collect()
}

/// Replica side: where the snapshot with `uuid` is among the snapshots of `volumes` (those
/// the asking peer replicates here; nothing else is reported to it).
pub fn locate(pool: &Pool, volumes: &[String], uuid: Uuid) -> Option<Located> {
    volumes.iter().find_map(|v| {
        pool.snapshots(Some(v))
            .into_iter()
            .find(|s| s.uuid == uuid)
            .map(|s| Located {
                volume: s.volume,
                name: s.name,
                uuid: s.uuid,
            })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin() -> Origin {
        Origin {
            volume: "gold".into(),
            snapshot: "repl-1".into(),
            uuid: Uuid::from_u128(9),
        }
    }

    #[test]
    fn a_clone_is_sent_from_its_origin_only_when_the_peer_has_it() {
        let o = origin();
        let here = Located {
            volume: "gold".into(),
            name: "repl-1".into(),
            uuid: o.uuid,
        };
        assert_eq!(first_base(Some(&o), Some(&here)), Ok(&o));
        assert_eq!(o.base_ref(), "gold@repl-1");
        let why = first_base(Some(&o), None).unwrap_err();
        assert!(
            why.contains("gold@repl-1") && why.contains("not on the peer"),
            "{why}"
        );
        let other = Located {
            uuid: Uuid::from_u128(10),
            ..here
        };
        assert!(first_base(Some(&o), Some(&other)).is_err());
        assert!(first_base(None, None).is_err());
    }

    #[test]
    fn a_resume_finds_its_snapshot_and_base_by_uuid() {
        let u = Uuid::from_u128;
        let local = vec![
            ("repl-1".to_string(), u(1)),
            ("mine".into(), u(2)),
            ("repl-3".into(), u(3)),
        ];
        let tok = |to: u128, from: Option<u128>| ResumeToken {
            to_uuid: u(to),
            from_uuid: from.map(u),
            next_index: 5,
        };
        // An increment: both are the volume's.
        assert_eq!(
            resumed(&tok(3, Some(1)), &local, None),
            Some(("repl-3".into(), Some("repl-1".into())))
        );
        // A full stream.
        assert_eq!(
            resumed(&tok(1, None), &local, None),
            Some(("repl-1".into(), None))
        );
        // A clone's first transfer: the base is the origin, another volume's.
        let o = origin();
        assert_eq!(
            resumed(&tok(3, Some(9)), &local, Some(&o)),
            Some(("repl-3".into(), Some("gold@repl-1".into())))
        );
        // Gone here: the snapshot, or the base.
        assert_eq!(resumed(&tok(4, None), &local, Some(&o)), None);
        assert_eq!(resumed(&tok(3, Some(8)), &local, Some(&o)), None);
    }
}
