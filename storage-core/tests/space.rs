//! Space guarantees on a small overcommitted pool.

use bytes::Bytes;
use storage_core::{Guarantee, Pool, PoolOptions, StorageError};

const CS: u64 = 4096;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("rt")
}

fn fill(tag: u8, len: usize) -> Bytes {
    Bytes::from(vec![tag; len])
}

#[test]
fn guarantees_hold_and_thin_gets_nospace() {
    rt().block_on(async {
        let dir = tempfile::tempdir().expect("tempdir");
        let opts = PoolOptions {
            chunk_size: CS as u32,
            capacity_bytes: Some(24 << 20),
            soft_threshold_pct: Some(80),
        };
        let pool = Pool::create(dir.path(), &opts).await.expect("create");
        let cap = pool.status().capacity_bytes;
        let cap_chunks = cap / CS;
        assert!(cap_chunks > 1000);
        let threshold = pool.soft_threshold_watch();
        assert!(!threshold.borrow().reached);

        // A full volume of 40% of the pool reserves all of it at once.
        let full_size = cap_chunks * 2 / 5 * CS;
        pool.create_volume("full", full_size, 4096, Guarantee::Full)
            .await
            .expect("full volume");
        assert_eq!(pool.status().reserved_bytes, full_size);
        // A second full volume that does not fit fails and changes nothing.
        let before = pool.status();
        let err = pool
            .create_volume("toobig", cap - full_size + CS, 4096, Guarantee::Full)
            .await
            .unwrap_err();
        assert!(
            matches!(err, StorageError::GuaranteeUnavailable { .. }),
            "{err:?}"
        );
        let after = pool.status();
        assert_eq!(
            (before.volumes, before.reserved_bytes, before.used_bytes),
            (after.volumes, after.reserved_bytes, after.used_bytes)
        );
        assert!(pool.volume_info("toobig").is_err());

        // A thin volume twice the pool size: writes succeed until the unreserved space is gone.
        let thin = pool
            .create_volume("thin", cap * 2, 4096, Guarantee::None)
            .await
            .expect("thin");
        let tv = pool.volume(&thin.name).expect("thin handle");
        let mut written = 0u64;
        let err = loop {
            match tv
                .write(written, fill((written % 251) as u8 + 1, CS as usize), false)
                .await
            {
                Ok(()) => written += 1,
                Err(e) => break e,
            }
            assert!(
                written <= cap_chunks,
                "thin volume wrote past the pool capacity"
            );
        };
        assert!(matches!(err, StorageError::NoSpace), "{err:?}");
        assert_eq!(
            written,
            cap_chunks - full_size / CS,
            "thin volume may use exactly the unreserved space"
        );
        let st = pool.status();
        assert!(st.soft_threshold_reached);
        assert!(
            threshold.borrow().reached,
            "the soft-threshold watch did not fire"
        );
        assert_eq!(st.used_bytes + st.reserved_bytes, cap);

        // The full volume can still write every block.
        let fv = pool.volume("full").expect("full handle");
        for lba in 0..full_size / CS {
            fv.write(lba, fill(0xF0, CS as usize), false)
                .await
                .expect("guaranteed write");
        }
        assert_eq!(pool.status().reserved_bytes, 0);
        assert_eq!(
            pool.volume_info("full").expect("info").mapped_bytes,
            full_size
        );

        // A snapshot of the full volume would need its whole size reserved again: refused, nothing changed.
        let err = pool.snapshot("full", "s").await.unwrap_err();
        assert!(
            matches!(err, StorageError::GuaranteeUnavailable { .. }),
            "{err:?}"
        );
        assert!(pool.snapshots(None).is_empty());
        // So is a full clone, and growing the full volume.
        assert!(matches!(
            pool.clone_volume("thin", "c", Some(Guarantee::Full)).await,
            Err(StorageError::GuaranteeUnavailable { .. })
        ));
        assert!(matches!(
            pool.resize_volume("full", full_size + CS, false).await,
            Err(StorageError::GuaranteeUnavailable { .. })
        ));

        // Nothing written before NoSpace was lost.
        for lba in (0..written).step_by(97) {
            let got = tv.read(lba, 1).await.expect("read");
            assert!(
                got.iter().all(|&b| b == (lba % 251) as u8 + 1),
                "thin block {lba} damaged"
            );
        }

        // Free some thin space: thin writes work again (freed chunks become reusable after commit).
        tv.unmap(0, 100).await.expect("unmap");
        tv.write(written, fill(7, CS as usize), false)
            .await
            .expect("write after freeing space");
        for lba in written + 1..written + 100 {
            tv.write(lba, fill(7, CS as usize), false)
                .await
                .expect("write after freeing space");
        }
        assert!(matches!(
            tv.write(written + 100, fill(7, CS as usize), false).await,
            Err(StorageError::NoSpace)
        ));

        // Deleting the thin volume frees everything it owned; now the snapshot fits.
        pool.delete_volume("thin").await.expect("delete thin");
        pool.flush().await.expect("flush");
        assert_eq!(pool.status().used_bytes, full_size);
        pool.snapshot("full", "s").await.expect("snapshot fits now");
        assert_eq!(pool.status().reserved_bytes, full_size);
        // The full volume can overwrite everything again despite the snapshot.
        for lba in 0..full_size / CS {
            fv.write(lba, fill(0x0F, CS as usize), false)
                .await
                .expect("guaranteed overwrite");
        }
        let r = pool.check().await.expect("check");
        assert!(r.is_clean(), "{:?}", r.errors);
        // Space figures survive a reopen.
        let st = pool.status();
        pool.close().await.expect("close");
        let pool = Pool::open(dir.path()).await.expect("reopen");
        let st2 = pool.status();
        assert_eq!(
            (st.used_bytes, st.reserved_bytes),
            (st2.used_bytes, st2.reserved_bytes)
        );
        pool.close().await.expect("close");
    });
}

#[test]
fn unique_and_shared_follow_snapshots_and_clones() {
    rt().block_on(async {
        let dir = tempfile::tempdir().expect("tempdir");
        let opts = PoolOptions {
            chunk_size: CS as u32,
            capacity_bytes: Some(24 << 20),
            soft_threshold_pct: None,
        };
        let pool = Pool::create(dir.path(), &opts).await.expect("create");
        pool.create_volume("v", 64 * CS, 512, Guarantee::None)
            .await
            .expect("v");
        let v = pool.volume("v").expect("v");
        for i in 0..10 {
            v.write(i * 8, fill(1, CS as usize), false)
                .await
                .expect("write");
        }
        pool.snapshot("v", "s").await.expect("snap");
        for i in 0..4 {
            v.write(i * 8, fill(2, CS as usize), false)
                .await
                .expect("overwrite");
        }
        pool.clone_volume("v@s", "c", None).await.expect("clone");
        pool.reconcile_space().await.expect("reconcile");
        let vi = pool.volume_info("v").expect("v info");
        assert!(vi.space_exact);
        assert_eq!(vi.mapped_bytes, 10 * CS);
        assert_eq!(vi.unique_bytes, 4 * CS);
        assert_eq!(vi.shared_bytes, 6 * CS);
        let s = &pool.snapshots(Some("v"))[0];
        // The 4 overwritten chunks are still seen by the snapshot and the clone: shared.
        assert_eq!(s.unique_bytes, 0);
        assert_eq!(s.mapped_bytes, 10 * CS);
        // Deleting the snapshot keeps the clone's data; the 4 old chunks become the clone's own.
        pool.delete_snapshot("v", "s").await.expect("delete snap");
        pool.reconcile_space().await.expect("reconcile");
        let ci = pool.volume_info("c").expect("c info");
        assert_eq!(ci.unique_bytes, 4 * CS);
        assert_eq!(ci.shared_bytes, 6 * CS);
        // Deleting the origin volume leaves the clone owning everything it sees.
        pool.delete_volume("v").await.expect("delete v");
        pool.reconcile_space().await.expect("reconcile");
        let ci = pool.volume_info("c").expect("c info");
        assert_eq!(ci.unique_bytes, 10 * CS);
        assert_eq!(pool.status().used_bytes, 10 * CS);
        let c = pool.volume("c").expect("c");
        assert!(c.read(0, 8).await.expect("read").iter().all(|&b| b == 1));
        let r = pool.check().await.expect("check");
        assert!(r.is_clean(), "{:?}", r.errors);
        pool.close().await.expect("close");
    });
}

#[test]
fn unmap_of_a_huge_range_frees_what_is_mapped() {
    rt().block_on(async {
        let dir = tempfile::tempdir().expect("tempdir");
        let opts = PoolOptions {
            chunk_size: 65536,
            capacity_bytes: Some(64 << 20),
            soft_threshold_pct: None,
        };
        let pool = Pool::create(dir.path(), &opts).await.expect("create");
        // 1 TiB thin volume = 16 M chunks; the unmap must not visit every one of them.
        pool.create_volume("big", 1 << 40, 512, Guarantee::None)
            .await
            .expect("big");
        let v = pool.volume("big").expect("big");
        let blocks = v.num_blocks();
        for lba in [0, 1000, 1 << 30, blocks - 128] {
            v.write(lba, fill(3, 65536), false).await.expect("write");
        }
        pool.snapshot("big", "s").await.expect("snap");
        v.write(1 << 20, fill(4, 4096), false)
            .await
            .expect("write after snapshot");
        // Leave the first block of the device mapped: the range starts mid-chunk.
        v.unmap(1, blocks - 1)
            .await
            .expect("unmap nearly everything");
        let first = v.read(0, 2).await.expect("read");
        assert!(first[..512].iter().all(|&b| b == 3) && first[512..].iter().all(|&b| b == 0));
        for lba in [1000, 1 << 20, 1 << 30, blocks - 128] {
            assert!(
                v.read(lba, 8).await.expect("read").iter().all(|&b| b == 0),
                "lba {lba} not zero"
            );
        }
        assert_eq!(pool.volume_info("big").expect("info").mapped_bytes, 65536);
        // The snapshot still has its data.
        pool.clone_volume("big@s", "c", None).await.expect("clone");
        let c = pool.volume("c").expect("c");
        assert!(c
            .read(1 << 30, 128)
            .await
            .expect("read")
            .iter()
            .all(|&b| b == 3));
        let r = pool.check().await.expect("check");
        assert!(r.is_clean(), "{:?}", r.errors);
        // A long run of holes over shared data survives a checkpoint and reopen.
        pool.create_volume("w", 64 << 20, 4096, Guarantee::None)
            .await
            .expect("w");
        let w = pool.volume("w").expect("w");
        w.write(0, fill(9, 32 << 20), false).await.expect("fill w");
        pool.snapshot("w", "s").await.expect("snap w");
        w.unmap(0, (64 << 20) / 4096).await.expect("unmap w");
        assert_eq!(pool.volume_info("w").expect("info").mapped_bytes, 0);
        pool.close().await.expect("close");
        let pool = Pool::open(dir.path()).await.expect("reopen");
        let w = pool.volume("w").expect("w");
        assert_eq!(pool.volume_info("w").expect("info").mapped_bytes, 0);
        assert!(w.read(0, 2048).await.expect("read").iter().all(|&b| b == 0));
        assert_eq!(pool.volume_info("big").expect("info").mapped_bytes, 65536);
        let r = pool.check().await.expect("check");
        assert!(r.is_clean(), "{:?}", r.errors);
        pool.close().await.expect("close");
    });
}

/// Zeroing without UNMAP (Linux BLKZEROOUT, VMware's block zero) is a write: on a thin volume
/// every chunk of the range ends allocated (holes included, so a file system journal mkfs
/// zeroed has its space), a chunk a snapshot shares is copied first and the snapshot keeps its
/// data; a full-guarantee volume keeps its chunks mapped and its reservation whole. With
/// UNMAP the chunks go.
#[test]
fn write_zeroes_without_unmap_allocates_and_with_unmap_frees() {
    rt().block_on(async {
        let dir = tempfile::tempdir().expect("tempdir");
        const CHUNK: u64 = 65536;
        const BPC: u64 = CHUNK / 512;
        let opts = PoolOptions {
            chunk_size: CHUNK as u32,
            capacity_bytes: Some(64 << 20),
            soft_threshold_pct: None,
        };
        let pool = Pool::create(dir.path(), &opts).await.expect("create");

        // Thin, not shared: chunks 0..4 written, 4..8 never; zero from the middle of chunk 1
        // to the middle of chunk 6: chunks 4, 5 and 6 get allocated, nothing is freed.
        pool.create_volume("t", 8 << 20, 512, Guarantee::None)
            .await
            .expect("t");
        let t = pool.volume("t").expect("t");
        t.write(0, fill(7, 4 * CHUNK as usize), false)
            .await
            .expect("write t");
        let used_before = pool.status().used_bytes;
        let (from, to) = (BPC + 10, 6 * BPC + 20);
        t.write_zeroes(from, to - from, false)
            .await
            .expect("zero t");
        assert_eq!(
            pool.volume_info("t").expect("info").mapped_bytes,
            7 * CHUNK,
            "chunks 0..=6 mapped, 7 still a hole"
        );
        assert_eq!(pool.status().used_bytes, used_before + 3 * CHUNK);
        let all = t.read(0, (8 * BPC) as u32).await.expect("read t");
        for (i, blk) in all.chunks(512).enumerate() {
            let want = if (from..to).contains(&(i as u64)) || i as u64 >= 4 * BPC {
                0
            } else {
                7
            };
            assert!(blk.iter().all(|&b| b == want), "block {i}");
        }
        for (lba, mapped) in [
            (0, true),
            (2 * BPC, true),
            (5 * BPC, true),
            (6 * BPC, true),
            (7 * BPC, false),
        ] {
            assert_eq!(t.block_status(lba).expect("status").0, mapped, "lba {lba}");
        }
        // With UNMAP the whole chunks inside the range are freed again.
        t.write_zeroes(from, to - from, true)
            .await
            .expect("unmap t");
        assert_eq!(
            pool.volume_info("t").expect("info").mapped_bytes,
            3 * CHUNK,
            "chunks 0, 1 and 6 (1 and 6 in part in the range) stay, 2..=5 go"
        );

        // Thin, shared with a snapshot: the volume gets its own zeroed chunks, the snapshot
        // keeps its data.
        pool.create_volume("s", 4 << 20, 512, Guarantee::None)
            .await
            .expect("s");
        let s = pool.volume("s").expect("s");
        s.write(0, fill(5, 4 * CHUNK as usize), false)
            .await
            .expect("write s");
        pool.snapshot("s", "snap").await.expect("snapshot");
        let used_shared = pool.status().used_bytes;
        s.write_zeroes(0, 4 * BPC, false).await.expect("zero s");
        assert_eq!(pool.volume_info("s").expect("info").mapped_bytes, 4 * CHUNK);
        assert_eq!(pool.status().used_bytes, used_shared + 4 * CHUNK);
        assert!(s
            .read(0, (4 * BPC) as u32)
            .await
            .expect("read s")
            .iter()
            .all(|&b| b == 0));
        pool.clone_volume("s@snap", "sc", None)
            .await
            .expect("clone");
        assert!(pool
            .volume("sc")
            .expect("sc")
            .read(0, (4 * BPC) as u32)
            .await
            .expect("read clone")
            .iter()
            .all(|&b| b == 5));

        // Full guarantee: zeroing without UNMAP keeps every chunk and the reservation.
        pool.create_volume("f", 1 << 20, 512, Guarantee::Full)
            .await
            .expect("f");
        let f = pool.volume("f").expect("f");
        f.write(0, fill(9, 4 * CHUNK as usize), false)
            .await
            .expect("write f");
        let before = pool.volume_info("f").expect("info");
        f.write_zeroes(0, 4 * BPC, false).await.expect("zero f");
        let after = pool.volume_info("f").expect("info");
        assert_eq!(after.mapped_bytes, before.mapped_bytes);
        assert_eq!(after.reserved_bytes, before.reserved_bytes);
        assert!(f
            .read(0, (4 * BPC) as u32)
            .await
            .expect("read f")
            .iter()
            .all(|&b| b == 0));
        // With UNMAP the chunks go, and the guarantee reserves them again.
        f.write_zeroes(0, 4 * BPC, true).await.expect("unmap f");
        let unmapped = pool.volume_info("f").expect("info");
        assert_eq!(unmapped.mapped_bytes, before.mapped_bytes - 4 * CHUNK);
        assert_eq!(
            unmapped.reserved_bytes,
            before.reserved_bytes + 4 * CHUNK,
            "the guarantee still covers the whole volume"
        );
        let r = pool.check().await.expect("check");
        assert!(r.is_clean(), "{:?}", r.errors);
        pool.close().await.expect("close");
    });
}

/// A snapshot's data beyond a shrunk volume's end must not come back when the snapshot is
/// deleted (its layer merged into the volume's top) and the volume grows again; nor may it
/// count as owned by the volume (its reservation would shrink).
#[test]
fn merge_after_shrink_keeps_the_grown_range_zero_and_the_reservation() {
    rt().block_on(async {
        let dir = tempfile::tempdir().expect("tempdir");
        let opts = PoolOptions {
            chunk_size: CS as u32,
            capacity_bytes: Some(24 << 20),
            soft_threshold_pct: None,
        };
        let pool = Pool::create(dir.path(), &opts).await.expect("create");
        pool.create_volume("v", 4 * CS, 512, Guarantee::Full)
            .await
            .expect("create");
        let vol = pool.volume("v").expect("vol");
        // Data only in chunks 2 and 3, which the shrink below cuts off.
        vol.write(2 * CS / 512, fill(0xaa, 2 * CS as usize), false)
            .await
            .expect("write");
        pool.snapshot("v", "s").await.expect("snapshot");
        pool.resize_volume("v", 2 * CS, true).await.expect("shrink");
        pool.delete_snapshot("v", "s")
            .await
            .expect("delete snapshot");
        let info = pool.volume_info("v").expect("info");
        assert_eq!(info.mapped_bytes, 0);
        assert_eq!(
            info.reserved_bytes,
            2 * CS,
            "reservation of the shrunk volume"
        );
        assert_eq!(
            pool.status().used_bytes,
            0,
            "the snapshot's chunks are freed"
        );
        pool.resize_volume("v", 4 * CS, false).await.expect("grow");
        let got = vol.read(0, (4 * CS / 512) as u32).await.expect("read");
        assert!(got.iter().all(|&b| b == 0), "grown range reads zeros");
        assert_eq!(pool.volume_info("v").expect("info").mapped_bytes, 0);
        assert!(pool.check().await.expect("check").is_clean());
        pool.close().await.expect("close");
    });
}

/// A rise, fall and rise of the soft threshold while a subscriber is not reading must still
/// show as two crossings: the watch channel keeps only the latest value, so the state alone
/// ("reached, still reached") would hide the second crossing and the daemon would not raise
/// THIN PROVISIONING SOFT THRESHOLD REACHED again.
#[test]
fn soft_threshold_counts_crossings_a_late_reader_missed() {
    rt().block_on(async {
        let dir = tempfile::tempdir().expect("tempdir");
        let opts = PoolOptions {
            chunk_size: CS as u32,
            capacity_bytes: Some(24 << 20),
            soft_threshold_pct: Some(50),
        };
        let pool = Pool::create(dir.path(), &opts).await.expect("create");
        let cap = pool.status().capacity_bytes;
        let mut rx = pool.soft_threshold_watch();
        let start = *rx.borrow_and_update();
        assert_eq!(
            (start.reached, start.crossings),
            (false, 0),
            "empty pool is below"
        );

        // Reservations count towards the threshold: a full volume of 60% rises above it,
        // deleting it falls below, a second one rises again. The receiver reads nothing.
        let big = cap / CS * 3 / 5 * CS;
        pool.create_volume("a", big, 4096, Guarantee::Full)
            .await
            .expect("first rise");
        pool.delete_volume("a").await.expect("fall");
        assert!(!pool.status().soft_threshold_reached, "deleting fell below");
        pool.create_volume("b", big, 4096, Guarantee::Full)
            .await
            .expect("second rise");

        let now = *rx.borrow_and_update();
        assert!(now.reached);
        assert_eq!(now.crossings, 2, "both upward crossings are visible");
        pool.close().await.expect("close");
    });
}
