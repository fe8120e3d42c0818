//! Opening things that are not (valid) pools: clear error, file bytes untouched.

use storage_core::{Pool, PoolOptions, StorageError};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("rt")
}

const MIB: u64 = 1 << 20;

async fn make_pool(dir: &std::path::Path) -> std::path::PathBuf {
    let opts = PoolOptions {
        chunk_size: 65536,
        capacity_bytes: Some(64 * MIB),
        soft_threshold_pct: None,
    };
    let pool = Pool::create(dir, &opts).await.expect("create");
    pool.create_volume("v", 4 * MIB, 512, storage_core::Guarantee::None)
        .await
        .expect("volume");
    let v = pool.volume("v").expect("v");
    v.write(0, bytes::Bytes::from(vec![9u8; 65536]), true)
        .await
        .expect("write");
    pool.close().await.expect("close");
    dir.join("pool.img")
}

fn patch(path: &std::path::Path, off: u64, bytes: &[u8]) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .expect("open for patch");
    f.write_all_at(bytes, off).expect("patch");
}

async fn assert_open_fails_untouched(path: &std::path::Path, want: fn(&StorageError) -> bool) {
    let before = std::fs::read(path).expect("read before");
    let r = Pool::open(path).await;
    match r {
        Ok(_) => panic!("opening {} should fail", path.display()),
        Err(e) => assert!(want(&e), "unexpected error {e:?}"),
    }
    let after = std::fs::read(path).expect("read after");
    assert!(before == after, "a failed open modified the file");
}

#[test]
fn not_a_pool() {
    rt().block_on(async {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("text");
        std::fs::write(&p, b"hello, this is not a pool at all\n".repeat(500)).expect("write");
        assert_open_fails_untouched(&p, |e| matches!(e, StorageError::NotAPool(_))).await;
        let empty = dir.path().join("empty");
        std::fs::write(&empty, b"").expect("write");
        assert_open_fails_untouched(&empty, |e| matches!(e, StorageError::NotAPool(_))).await;
        assert!(matches!(
            Pool::open(&dir.path().join("missing")).await,
            Err(StorageError::NotFound(_))
        ));
        // create refuses to overwrite an existing non-empty file
        let r = Pool::create(
            &p,
            &PoolOptions {
                capacity_bytes: Some(64 * MIB),
                ..PoolOptions::default()
            },
        )
        .await;
        assert!(matches!(r, Err(StorageError::AlreadyExists(_))));
    });
}

#[test]
fn bad_options_rejected() {
    rt().block_on(async {
        let dir = tempfile::tempdir().expect("tempdir");
        for cs in [0u32, 1000, 2048, 3 << 12, 2 << 20] {
            let o = PoolOptions {
                chunk_size: cs,
                capacity_bytes: Some(64 * MIB),
                soft_threshold_pct: None,
            };
            assert!(matches!(
                Pool::create(&dir.path().join(format!("p{cs}")), &o).await,
                Err(StorageError::InvalidArgument(_))
            ));
        }
        let o = PoolOptions {
            capacity_bytes: Some(MIB),
            ..PoolOptions::default()
        };
        assert!(matches!(
            Pool::create(&dir.path().join("small"), &o).await,
            Err(StorageError::InvalidArgument(_))
        ));
        let o = PoolOptions::default();
        assert!(matches!(
            Pool::create(&dir.path().join("nocap"), &o).await,
            Err(StorageError::InvalidArgument(_))
        ));
        let pool = Pool::create(
            dir.path(),
            &PoolOptions {
                capacity_bytes: Some(64 * MIB),
                ..PoolOptions::default()
            },
        )
        .await
        .expect("pool");
        for (size, bs) in [(0u64, 512u32), (1000, 512), (4096, 1024), (1 << 61, 4096)] {
            assert!(matches!(
                pool.create_volume("x", size, bs, storage_core::Guarantee::None)
                    .await,
                Err(StorageError::InvalidArgument(_))
            ));
        }
        for name in ["", "a@b", "a/b", "a\nb"] {
            assert!(matches!(
                pool.create_volume(name, 4096, 512, storage_core::Guarantee::None)
                    .await,
                Err(StorageError::InvalidArgument(_))
            ));
        }
        pool.create_volume("v", 8192, 512, storage_core::Guarantee::None)
            .await
            .expect("v");
        let v = pool.volume("v").expect("v");
        assert!(matches!(
            v.read(16, 1).await,
            Err(StorageError::OutOfRange { .. })
        ));
        assert!(matches!(
            v.read(u64::MAX, 2).await,
            Err(StorageError::OutOfRange { .. })
        ));
        assert!(matches!(
            v.write(15, bytes::Bytes::from(vec![0u8; 1024]), false)
                .await,
            Err(StorageError::OutOfRange { .. })
        ));
        assert!(matches!(
            v.write(0, bytes::Bytes::from(vec![0u8; 100]), false).await,
            Err(StorageError::InvalidArgument(_))
        ));
        assert!(matches!(
            pool.resize_volume("v", 4096, false).await,
            Err(StorageError::InvalidArgument(_))
        ));
        // A second open of an open pool is refused.
        assert!(matches!(
            Pool::open(dir.path()).await,
            Err(StorageError::Busy(_))
        ));
        pool.delete_volume("v").await.expect("delete");
        assert!(matches!(v.read(0, 1).await, Err(StorageError::NotFound(_))));
        pool.close().await.expect("close");
    });
}

#[test]
fn wrong_version() {
    rt().block_on(async {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = make_pool(dir.path()).await;
        patch(&p, 8, &99u32.to_le_bytes());
        patch(&p, 4096 + 8, &99u32.to_le_bytes());
        assert_open_fails_untouched(&p, |e| matches!(e, StorageError::UnsupportedVersion(99)))
            .await;
    });
}

#[test]
fn corrupt_header() {
    rt().block_on(async {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = make_pool(dir.path()).await;
        // One damaged slot: the other one is used.
        patch(&p, 20, b"XX");
        let pool = Pool::open(&p).await.expect("one good superblock is enough");
        assert!(pool.volume("v").is_ok());
        pool.close().await.expect("close");
        // Both damaged: Corrupt.
        patch(&p, 20, b"XX");
        patch(&p, 4096 + 20, b"XX");
        assert_open_fails_untouched(&p, |e| matches!(e, StorageError::Corrupt(_))).await;
    });
}

#[test]
fn truncated_pool() {
    rt().block_on(async {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = make_pool(dir.path()).await;
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&p)
            .expect("open");
        f.set_len(32 * MIB).expect("truncate");
        drop(f);
        assert_open_fails_untouched(
            &p,
            |e| matches!(e, StorageError::Corrupt(m) if m.contains("truncated")),
        )
        .await;
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&p)
            .expect("open");
        f.set_len(100).expect("truncate");
        drop(f);
        assert_open_fails_untouched(&p, |e| {
            matches!(e, StorageError::NotAPool(_) | StorageError::Corrupt(_))
        })
        .await;
    });
}

#[test]
fn corrupt_metadata() {
    rt().block_on(async {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = make_pool(dir.path()).await;
        // close() wrote a checkpoint to slot 0 (after the 1 MiB header area and 4 MiB journal).
        patch(&p, 5 * MIB + 40, &[0xAB; 8]);
        assert_open_fails_untouched(
            &p,
            |e| matches!(e, StorageError::Corrupt(m) if m.contains("checkpoint")),
        )
        .await;
    });
}
