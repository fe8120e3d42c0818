//! Consistency groups in the block store: several volumes of one pool at one instant.
//!
//! Three operations make a group's members change together, and both rest on the same fact:
//! records logged under one hold of the metadata write lock are taken into the journal as
//! one payload (`commit::prepare_append` takes the whole buffer under that lock), so they
//! land in one checksummed journal block and replay all-or-nothing, and the checkpoint
//! replica applies them as one backlog piece.
//!
//! - [`Pool::snapshot_group`] (in `pool.rs`, where the single-volume snapshot is its
//!   one-member case) holds every member's I/O gate for writing at once — taken in view-id
//!   order by `PoolInner::write_gates`, so two group operations cannot deadlock — then logs one `Snapshot` record per
//!   member. A write holds its volume's gate for reading from before it touches metadata to
//!   its completion, so every write on any member is wholly before the group's instant (in
//!   every member snapshot it touches) or wholly after it; a write a host issued only after
//!   another member's write completed is never in a snapshot that misses the earlier one.
//! - [`Pool::receive_commit_group`] (here) commits several staged receives — one per member
//!   of a replicated group — with one `ReceiveCommit` record per member in one block, so a
//!   crash, an error or a missing member never exposes member A at one instant with member B
//!   at another.
//! - [`Pool::rollback_group`] (here) rolls several members back to their snapshots of one
//!   group instant with one `Rollback` record per member in one block (the reverse of a
//!   replicated group, where the old source's members go back to the last common group
//!   snapshot together). docs/decisions/0027-consistency-groups.md.

use crate::clock::now_unix;
use crate::layer::{Rec, ViewId};
use crate::receive::check_base;
use crate::{space, Pool, Receive, Result, SnapshotInfo, StorageError};

impl Pool {
    /// Makes several staged receives visible at once: every `volume@snapshot` appears, and
    /// every replica volume reads as its new snapshot, in one journal block (all or none,
    /// across a crash too). Every check of [`Receive::commit`] is made for every member
    /// first; on any error nothing changes and every staging stays (resume or abort them).
    /// Returns the new snapshots in the order of `receives`.
    pub async fn receive_commit_group(&self, receives: Vec<Receive>) -> Result<Vec<SnapshotInfo>> {
        self.inner.check_open()?;
        if receives.is_empty() {
            return Ok(Vec::new());
        }
        let mut seen = std::collections::BTreeSet::new();
        for rx in &receives {
            if !std::sync::Arc::ptr_eq(&rx.inner, &self.inner) {
                return Err(StorageError::InvalidArgument(format!(
                    "the receive into '{}' belongs to another pool",
                    rx.spec.volume
                )));
            }
            if !seen.insert(rx.spec.volume.clone()) {
                return Err(StorageError::InvalidArgument(format!(
                    "volume '{}' appears twice in the group commit",
                    rx.spec.volume
                )));
            }
        }
        let vids: Vec<Option<ViewId>> = {
            let st = self.inner.state.read();
            receives
                .iter()
                .map(|rx| st.meta.find_volume(&rx.spec.volume))
                .collect()
        };
        // Each increment replaces its volume's top: ordered against that volume's I/O like a
        // rollback, all gates held together (`write_gates` takes them in the same order as
        // `snapshot_group`).
        let existing: Vec<ViewId> = vids.iter().flatten().copied().collect();
        let snaps = self
            .inner
            .change_together(&existing, |st| {
                // Every check first: once the first record is logged, all must follow.
                let mut need = 0;
                for (rx, vid) in receives.iter().zip(&vids) {
                    if !st.meta.views.contains_key(&rx.id) {
                        return Err(rx.gone());
                    }
                    let (_, vol) = check_base(st, &rx.spec)?;
                    if vol != *vid {
                        return Err(StorageError::Busy(format!(
                            "volume '{}' changed while the group committed; retry",
                            rx.spec.volume
                        )));
                    }
                    if let Some(v) = vol {
                        let (top, size, _, full) = st.volume(v)?;
                        if full {
                            let owned = st.meta.layers.get(&top).map_or(0, |l| l.owned);
                            let old_res = st.meta.chunks(size).saturating_sub(owned);
                            need += st
                                .meta
                                .chunks(rx.spec.size_bytes)
                                .saturating_sub(old_res + owned);
                        }
                    }
                }
                st.need(need)?;
                let created = now_unix();
                let mut snaps = Vec::with_capacity(receives.len());
                for (rx, vid) in receives.iter().zip(&vids) {
                    let snap = st.meta.new_id();
                    let vol = match vid {
                        Some(v) => *v,
                        None => st.meta.new_id(),
                    };
                    let new_top = st.meta.new_id();
                    st.log(Rec::ReceiveCommit {
                        staging: rx.id,
                        snap,
                        vol,
                        new_top,
                        vol_uuid: uuid::Uuid::new_v4(),
                        created,
                    })?;
                    snaps.push(snap);
                }
                Ok(snaps)
            })
            .await?;
        for rx in &receives {
            tracing::info!(volume = %rx.spec.volume, snapshot = %rx.spec.snapshot, "receive committed (group)");
        }
        let st = self.inner.state.read();
        snaps
            .iter()
            .zip(&receives)
            .map(|(&s, rx)| {
                space::snapshot_info(&st, s).ok_or_else(|| {
                    StorageError::NotFound(format!(
                        "snapshot '{}@{}' vanished after its receive",
                        rx.spec.volume, rx.spec.snapshot
                    ))
                })
            })
            .collect()
    }
}

impl Pool {
    /// Rolls several volumes back to their snapshots at once (`pairs`: volume, snapshot):
    /// one `Rollback` record per member in one journal block, every member's I/O gate held,
    /// so the members move back to a group instant together (all or none, across a crash
    /// too). The reverse of a replicated consistency group rolls the old source's members
    /// back to the newest group snapshot both sides have this way. Every check (members
    /// exist and are distinct, snapshots exist, space for full volumes) is made first; on
    /// any error nothing changes.
    pub async fn rollback_group(&self, pairs: &[(&str, &str)]) -> Result<()> {
        self.inner.check_open()?;
        let ids: Vec<(ViewId, ViewId)> = {
            let st = self.inner.state.read();
            pairs
                .iter()
                .map(|(v, s)| Self::find_snapshot(&st, v, s))
                .collect::<Result<_>>()?
        };
        let vols: Vec<ViewId> = ids.iter().map(|(v, _)| *v).collect();
        let distinct: std::collections::BTreeSet<ViewId> = vols.iter().copied().collect();
        if distinct.len() != vols.len() {
            return Err(StorageError::InvalidArgument(
                "a volume appears twice in the group rollback".into(),
            ));
        }
        self.inner
            .change_together(&vols, |st| {
                // Every check first: once the first record is logged, all must follow.
                let mut need = 0;
                for (&(vid, sid), (v, s)) in ids.iter().zip(pairs) {
                    let (top, size, _, full) = st.volume(vid)?;
                    let ssize = st.meta.views.get(&sid).map(|w| w.size).ok_or_else(|| {
                        StorageError::NotFound(format!("snapshot '{v}@{s}' not found"))
                    })?;
                    if full {
                        let owned = st.meta.layers.get(&top).map_or(0, |l| l.owned);
                        let old_res = st.meta.chunks(size).saturating_sub(owned);
                        need += st.meta.chunks(ssize).saturating_sub(old_res + owned);
                    }
                }
                st.need(need)?;
                for &(vol, snap) in &ids {
                    let new_top = st.meta.new_id();
                    st.log(Rec::Rollback { vol, snap, new_top })?;
                }
                Ok(())
            })
            .await?;
        for (v, s) in pairs {
            tracing::info!(volume = %v, snapshot = %s, "volume rolled back");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use crate::testutil::pool_with_volume;
    use crate::{Guarantee, Pool, ReceiveBase, ReceiveSpec, StorageError};

    const CS: u32 = 64 * 1024;

    fn block(tag: u64) -> Bytes {
        let mut v = vec![0u8; 4096];
        v[..8].copy_from_slice(&tag.to_le_bytes());
        Bytes::from(v)
    }

    fn tag(b: &[u8]) -> u64 {
        u64::from_le_bytes(b[..8].try_into().unwrap_or([0; 8]))
    }

    /// The tag block 0 of `vol@snap` holds (read through a clone).
    async fn snap_tag(pool: &Pool, vol: &str, snap: &str) -> u64 {
        let clone = format!("read-{vol}-{snap}");
        pool.clone_volume(&format!("{vol}@{snap}"), &clone, None)
            .await
            .expect("clone");
        let t = tag(&pool
            .volume(&clone)
            .expect("vol")
            .read(0, 1)
            .await
            .expect("read"));
        pool.delete_volume(&clone).await.expect("delete clone");
        t
    }

    async fn two_volumes(dir: &std::path::Path) -> Pool {
        let pool = pool_with_volume(dir, CS, 1 << 20).await;
        pool.rename_volume("v", "a").await.expect("rename");
        pool.create_volume("b", 1 << 20, 4096, Guarantee::None)
            .await
            .expect("b");
        pool
    }

    #[tokio::test]
    async fn a_group_snapshot_is_all_or_none_on_errors() {
        let dir = tempfile::tempdir().expect("tmp");
        let pool = two_volumes(dir.path()).await;
        pool.snapshot("b", "s").await.expect("b@s");
        // b@s exists: the group fails and a@s is not taken either.
        let e = pool
            .snapshot_group(&[("a", "s"), ("b", "s")])
            .await
            .expect_err("existing member snapshot");
        assert!(matches!(e, StorageError::AlreadyExists(_)), "{e}");
        assert!(pool.snapshots(Some("a")).is_empty());
        let e = pool
            .snapshot_group(&[("a", "t"), ("nope", "t")])
            .await
            .expect_err("missing member");
        assert!(matches!(e, StorageError::NotFound(_)), "{e}");
        let e = pool
            .snapshot_group(&[("a", "t"), ("a", "u")])
            .await
            .expect_err("a member twice");
        assert!(matches!(e, StorageError::InvalidArgument(_)), "{e}");
        assert!(pool.snapshots(Some("a")).is_empty());
        let got = pool
            .snapshot_group(&[("a", "g"), ("b", "g")])
            .await
            .expect("group");
        assert_eq!(
            got.iter().map(|s| s.volume.as_str()).collect::<Vec<_>>(),
            ["a", "b"]
        );
        assert!(pool.check().await.expect("check").is_clean());
        pool.close().await.expect("close");
    }

    #[tokio::test]
    async fn a_group_rollback_moves_every_member_back_or_none() {
        let dir = tempfile::tempdir().expect("tmp");
        let pool = two_volumes(dir.path()).await;
        let (a, b) = (pool.volume("a").expect("a"), pool.volume("b").expect("b"));
        a.write(0, block(1), false).await.expect("write a");
        b.write(0, block(1), false).await.expect("write b");
        pool.snapshot_group(&[("a", "g1"), ("b", "g1")])
            .await
            .expect("g1");
        pool.snapshot("a", "only-a").await.expect("a@only-a");
        a.write(0, block(2), false).await.expect("write a");
        b.write(0, block(2), false).await.expect("write b");
        // A member without the snapshot refuses the whole rollback: a keeps its data.
        let e = pool
            .rollback_group(&[("a", "only-a"), ("b", "only-a")])
            .await
            .expect_err("b has no such snapshot");
        assert!(matches!(e, StorageError::NotFound(_)), "{e}");
        let e = pool
            .rollback_group(&[("a", "g1"), ("a", "g1")])
            .await
            .expect_err("a member twice");
        assert!(matches!(e, StorageError::InvalidArgument(_)), "{e}");
        assert_eq!(tag(&a.read(0, 1).await.expect("read a")), 2);
        assert_eq!(tag(&b.read(0, 1).await.expect("read b")), 2);
        pool.rollback_group(&[("a", "g1"), ("b", "g1")])
            .await
            .expect("group rollback");
        assert_eq!(tag(&a.read(0, 1).await.expect("read a")), 1);
        assert_eq!(tag(&b.read(0, 1).await.expect("read b")), 1);
        // Snapshots stay, and the rollback survives a reopen.
        assert_eq!(pool.snapshots(Some("a")).len(), 2);
        pool.close().await.expect("close");
        let pool = Pool::open(dir.path()).await.expect("reopen");
        for v in ["a", "b"] {
            let t = tag(&pool.volume(v).expect(v).read(0, 1).await.expect("read"));
            assert_eq!(t, 1, "{v} after reopen");
        }
        assert!(pool.check().await.expect("check").is_clean());
        pool.close().await.expect("close");
    }

    /// A writer puts sequence n on a then, once that completed, on b; group snapshots taken
    /// meanwhile must each hold a = b or a = b + 1 (never b ahead of a, never a gap).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn group_snapshots_order_against_writes_on_all_members() {
        let dir = tempfile::tempdir().expect("tmp");
        let pool = two_volumes(dir.path()).await;
        let (a, b) = (pool.volume("a").expect("a"), pool.volume("b").expect("b"));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stop2 = stop.clone();
        let writer = tokio::spawn(async move {
            let mut n = 0u64;
            while !stop2.load(std::sync::atomic::Ordering::Acquire) {
                n += 1;
                a.write(0, block(n), false).await.expect("write a");
                b.write(0, block(n), false).await.expect("write b");
            }
            n
        });
        let mut names = Vec::new();
        for i in 0..40 {
            let name = format!("g{i}");
            pool.snapshot_group(&[("b", name.as_str()), ("a", name.as_str())])
                .await
                .expect("group snapshot");
            names.push(name);
            tokio::task::yield_now().await;
        }
        stop.store(true, std::sync::atomic::Ordering::Release);
        let last = writer.await.expect("writer");
        assert!(last > 0);
        let mut advanced = 0;
        let mut prev = 0;
        for name in &names {
            let (ta, tb) = (
                snap_tag(&pool, "a", name).await,
                snap_tag(&pool, "b", name).await,
            );
            assert!(
                ta == tb || ta == tb + 1,
                "group {name}: a holds {ta}, b holds {tb}"
            );
            if ta > prev {
                advanced += 1;
            }
            prev = ta;
        }
        assert!(advanced > 1, "the writer hardly ran between snapshots");
        assert!(pool.check().await.expect("check").is_clean());
        pool.close().await.expect("close");
    }

    fn full_spec(vol: &str, snap: &str, uuid: u128) -> ReceiveSpec {
        ReceiveSpec {
            volume: vol.into(),
            base: ReceiveBase::New,
            snapshot: snap.into(),
            snapshot_uuid: uuid::Uuid::from_u128(uuid),
            size_bytes: 4 * CS as u64,
            block_size: 4096,
        }
    }

    async fn stage(pool: &Pool, spec: ReceiveSpec, fill: u8) -> crate::Receive {
        let mut rx = pool.receive_begin(spec).await.expect("begin");
        rx.put_chunk(0, Bytes::from(vec![fill; CS as usize]))
            .await
            .expect("put");
        rx
    }

    #[tokio::test]
    async fn a_group_receive_commits_every_member_or_none() {
        let dir = tempfile::tempdir().expect("tmp");
        let pool = pool_with_volume(dir.path(), CS, 1 << 20).await;
        // "v" exists, so the full stream into it is refused at commit: the other member
        // stays staged and invisible.
        let ra = stage(&pool, full_spec("ra", "s1", 1), 7).await;
        let rv = pool.receive_begin(full_spec("v", "s1", 2)).await;
        assert!(rv.is_err(), "a full stream into an existing volume begins");
        let rb = pool
            .receive_begin(full_spec("rb2", "s1", 3))
            .await
            .expect("begin rb2");
        // Make rb2's commit fail: its volume appears after the begin.
        pool.create_volume("rb2", 4096, 4096, Guarantee::None)
            .await
            .expect("rb2");
        let e = pool
            .receive_commit_group(vec![ra, rb])
            .await
            .expect_err("one member cannot commit");
        assert!(matches!(e, StorageError::AlreadyExists(_)), "{e}");
        assert!(pool.volume_info("ra").is_err(), "ra visible without rb2");
        assert_eq!(pool.receives().len(), 2, "both stay staged");
        pool.delete_volume("rb2").await.expect("delete rb2");
        let ra = stage(&pool, full_spec("ra", "s1", 1), 7).await;
        let rb = stage(&pool, full_spec("rb2", "s1", 3), 9).await;
        let snaps = pool
            .receive_commit_group(vec![ra, rb])
            .await
            .expect("group commit");
        assert_eq!(snaps.len(), 2);
        assert_eq!(snaps[0].volume, "ra");
        assert_eq!(snaps[1].uuid, uuid::Uuid::from_u128(3));
        let read = pool
            .volume("rb2")
            .expect("rb2")
            .read(0, 1)
            .await
            .expect("read");
        assert!(read.iter().all(|&x| x == 9));
        assert!(pool.receives().is_empty());
        assert!(pool.check().await.expect("check").is_clean());
        pool.close().await.expect("close");
    }

    #[tokio::test]
    async fn a_group_receive_refuses_a_volume_twice() {
        let dir = tempfile::tempdir().expect("tmp");
        let pool = pool_with_volume(dir.path(), CS, 1 << 20).await;
        let ra = stage(&pool, full_spec("ra", "s1", 1), 7).await;
        let again = pool.receive_begin(full_spec("ra", "s1", 1)).await;
        assert!(matches!(again, Err(StorageError::Busy(_))), "second handle");
        let e = pool
            .receive_commit_group(vec![])
            .await
            .expect("empty group");
        assert!(e.is_empty());
        pool.receive_commit_group(vec![ra])
            .await
            .expect("one member");
        assert!(pool.volume_info("ra").is_ok());
        pool.close().await.expect("close");
    }
}
