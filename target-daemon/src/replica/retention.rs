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
    fn names_are_unique() {
        assert_eq!(snapshot_name(5, &[]), "repl-5");
        let taken = vec!["repl-5".to_string(), "repl-5-1".to_string()];
        assert_eq!(snapshot_name(5, &taken), "repl-5-2");
    }
}
