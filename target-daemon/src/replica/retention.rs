//! Which replication snapshots a cycle deletes, on either side: a pure function.
//!
//! Only snapshots the relationship made (named [`SNAPSHOT_PREFIX`]…) are candidates; an
//! operator's own snapshots are never touched. The newest `keep` are kept, and whatever
//! the count, the newest snapshot both sides have (the base of the next increment) is never
//! deleted: without it the next send would be a full copy. A snapshot the caller marks
//! `pinned` (a clone depends on it, or a transfer in flight uses it) is kept too and
//! considered again at the next cycle — so a replica snapshot a clone was made from stays
//! until the clone goes (the pool would keep the data readable for the clone anyway: a
//! clone holds the layer it was made from).

use uuid::Uuid;

/// Prefix of the snapshots a relationship takes (`repl-<unix seconds>`).
pub const SNAPSHOT_PREFIX: &str = "repl-";

/// The name of the snapshot a cycle starting at `unix_secs` takes (suffixed when two
/// cycles fall in one second).
pub fn snapshot_name(unix_secs: u64, taken: &[String]) -> String {
    let base = format!("{SNAPSHOT_PREFIX}{unix_secs}");
    if !taken.contains(&base) {
        return base;
    }
    (1..)
        .map(|i| format!("{base}-{i}"))
        .find(|n| !taken.iter().any(|t| t == n))
        .unwrap_or(base)
}

/// One snapshot as retention sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snap {
    /// Its name on this side.
    pub name: String,
    /// The source snapshot's uuid (kept on the received copy).
    pub uuid: Uuid,
    /// Kept this cycle whatever the count (a clone depends on it, a transfer uses it).
    pub pinned: bool,
}

/// The snapshots to delete from `snaps` (oldest first, as the pool lists them), keeping the
/// newest `keep` replication snapshots (at least one), the one whose uuid is `common`, and
/// every pinned one.
pub fn to_delete(snaps: &[Snap], keep: u32, common: Option<Uuid>) -> Vec<String> {
    let keep = keep.max(1) as usize;
    let repl: Vec<&Snap> = snaps
        .iter()
        .filter(|s| s.name.starts_with(SNAPSHOT_PREFIX))
        .collect();
    let excess = repl.len().saturating_sub(keep);
    repl.into_iter()
        .take(excess)
        .filter(|s| !s.pinned && Some(s.uuid) != common)
        .map(|s| s.name.clone())
        .collect()
}

/// The newest snapshot of `source` (oldest first) whose uuid `replica` also has: the base of
/// the next increment, and where a reverse rolls the old source back to.
pub fn newest_common(source: &[(String, Uuid)], replica: &[Uuid]) -> Option<(String, Uuid)> {
    source
        .iter()
        .rev()
        .find(|(_, u)| replica.contains(u))
        .cloned()
}

/// One member of a consistency group as a reverse sees it: its snapshots on this side and
/// its copy's snapshots on the peer, each oldest first as (name, uuid).
#[derive(Clone, Debug, Default)]
pub struct MemberSnaps {
    /// The member's snapshots here.
    pub local: Vec<(String, Uuid)>,
    /// Its copy's snapshots on the peer.
    pub remote: Vec<(String, Uuid)>,
}

/// The newest group snapshot every member holds on both sides: a name every member's
/// snapshots here have, whose copy (matched by uuid, member by member) the peer holds on
/// every member under one name too (the same group snapshot there). Returns its name here
/// and its name on the peer. A snapshot one member lacks on either side is no common point
/// of the group: rolling the members back to different instants would break the write order
/// the group snapshot keeps.
pub fn newest_common_group(members: &[MemberSnaps]) -> Option<(String, String)> {
    let first = members.first()?;
    first.local.iter().rev().find_map(|(name, _)| {
        let mut remote_name: Option<&str> = None;
        for m in members {
            let (_, uuid) = m.local.iter().find(|(n, _)| n == name)?;
            let (there, _) = m.remote.iter().find(|(_, u)| u == uuid)?;
            match remote_name {
                None => remote_name = Some(there),
                Some(r) if r == there => {}
                Some(_) => return None,
            }
        }
        remote_name.map(|r| (name.clone(), r.to_string()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snaps(names: &[&str]) -> Vec<Snap> {
        names
            .iter()
            .enumerate()
            .map(|(i, n)| Snap {
                name: n.to_string(),
                uuid: Uuid::from_u128(i as u128 + 1),
                pinned: false,
            })
            .collect()
    }

    #[test]
    fn keeps_newest_and_operator_snapshots() {
        let s = snaps(&["mine", "repl-1", "repl-2", "repl-3", "repl-4"]);
        assert_eq!(to_delete(&s, 2, None), vec!["repl-1", "repl-2"]);
        assert_eq!(to_delete(&s, 10, None), Vec::<String>::new());
        // keep 0 still keeps one: the base of the next increment.
        assert_eq!(to_delete(&s, 0, None), vec!["repl-1", "repl-2", "repl-3"]);
    }

    #[test]
    fn never_deletes_the_newest_common_or_a_pinned_one() {
        let mut s = snaps(&["repl-1", "repl-2", "repl-3", "repl-4"]);
        // The replica has only repl-2: it is the base and stays.
        let common = Some(s[1].uuid);
        assert_eq!(to_delete(&s, 1, common), vec!["repl-1", "repl-3"]);
        s[0].pinned = true;
        assert_eq!(to_delete(&s, 1, common), vec!["repl-3"]);
    }

    #[test]
    fn newest_common_by_uuid() {
        let u = |i| Uuid::from_u128(i);
        let src = vec![
            ("a".to_string(), u(1)),
            ("b".into(), u(2)),
            ("c".into(), u(3)),
        ];
        assert_eq!(
            newest_common(&src, &[u(2), u(1), u(9)]),
            Some(("b".into(), u(2)))
        );
        assert_eq!(newest_common(&src, &[u(9)]), None);
    }

    #[test]
    fn the_common_group_snapshot_is_one_every_member_has_on_both_sides() {
        let u = |i| Uuid::from_u128(i);
        let pairs = |v: &[(&str, u128)]| -> Vec<(String, Uuid)> {
            v.iter().map(|(n, i)| (n.to_string(), u(*i))).collect()
        };
        // Member a: g1, g2, g3 here; member b: g1, g2, g3 (other uuids: one per member).
        let a_local = pairs(&[("g1", 1), ("g2", 2), ("g3", 3)]);
        let b_local = pairs(&[("g1", 11), ("g2", 12), ("g3", 13)]);
        // The peer has g3 of a but not of b (b's copy of g3 never came): g2 is the newest
        // group instant both sides have on every member.
        let m = vec![
            MemberSnaps {
                local: a_local.clone(),
                remote: pairs(&[("g1", 1), ("g2", 2), ("g3", 3)]),
            },
            MemberSnaps {
                local: b_local.clone(),
                remote: pairs(&[("g1", 11), ("g2", 12)]),
            },
        ];
        assert_eq!(
            newest_common_group(&m),
            Some(("g2".to_string(), "g2".to_string()))
        );
        // Names may differ between the sides: matched by uuid, member by member.
        let m = vec![
            MemberSnaps {
                local: a_local.clone(),
                remote: pairs(&[("x2", 2)]),
            },
            MemberSnaps {
                local: b_local.clone(),
                remote: pairs(&[("x2", 12)]),
            },
        ];
        assert_eq!(
            newest_common_group(&m),
            Some(("g2".to_string(), "x2".to_string()))
        );
        // The peer holds the copies under two names (not one group snapshot there): none.
        let m = vec![
            MemberSnaps {
                local: a_local.clone(),
                remote: pairs(&[("x2", 2)]),
            },
            MemberSnaps {
                local: b_local.clone(),
                remote: pairs(&[("y2", 12)]),
            },
        ];
        assert_eq!(newest_common_group(&m), None);
        // Each member shares a snapshot with the peer, but not of the same instant: none.
        let m = vec![
            MemberSnaps {
                local: a_local,
                remote: pairs(&[("g3", 3)]),
            },
            MemberSnaps {
                local: b_local,
                remote: pairs(&[("g1", 11)]),
            },
        ];
        assert_eq!(newest_common_group(&m), None);
        // A snapshot one member lacks here is no group instant either.
        let m = vec![
            MemberSnaps {
                local: pairs(&[("g1", 1), ("solo", 5)]),
                remote: pairs(&[("g1", 1), ("solo", 5)]),
            },
            MemberSnaps {
                local: pairs(&[("g1", 11)]),
                remote: pairs(&[("g1", 11)]),
            },
        ];
        assert_eq!(
            newest_common_group(&m),
            Some(("g1".to_string(), "g1".to_string()))
        );
        assert_eq!(newest_common_group(&[]), None);
    }

    #[test]
    fn names_are_unique() {
        assert_eq!(snapshot_name(5, &[]), "repl-5");
        let taken = vec!["repl-5".to_string(), "repl-5-1".to_string()];
        assert_eq!(snapshot_name(5, &taken), "repl-5-2");
    }
}
