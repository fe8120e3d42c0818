//! The thread-pool fallback backend (forced with LUNAR_IO_BACKEND=threads) gives the same data.

use bytes::Bytes;
use storage_core::{Guarantee, Pool, PoolOptions};

#[test]
fn thread_pool_backend_round_trips() {
    // Only test in this binary, so setting the variable races with nothing.
    std::env::set_var("LUNAR_IO_BACKEND", "threads");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("rt");
    rt.block_on(async {
        let dir = tempfile::tempdir().expect("tempdir");
        let opts = PoolOptions {
            chunk_size: 16384,
            capacity_bytes: Some(64 << 20),
            soft_threshold_pct: None,
        };
        let pool = Pool::create(dir.path(), &opts).await.expect("create");
        assert_eq!(pool.io_backend(), "threads");
        pool.create_volume("v", 1 << 20, 512, Guarantee::None)
            .await
            .expect("v");
        let v = pool.volume("v").expect("v");
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 253) as u8).collect();
        let data = Bytes::from(data[..(100_000 / 512) * 512].to_vec());
        v.write(3, data.clone(), true).await.expect("write");
        pool.snapshot("v", "s").await.expect("snap");
        v.write(5, Bytes::from(vec![1u8; 512]), false)
            .await
            .expect("cow write");
        let got = v.read(3, (data.len() / 512) as u32).await.expect("read");
        assert_eq!(&got[..1024], &data[..1024]);
        assert!(got[1024..1536].iter().all(|&b| b == 1));
        assert_eq!(&got[1536..], &data[1536..]);
        pool.close().await.expect("close");
        let pool = Pool::open(dir.path()).await.expect("reopen");
        let got = pool
            .volume("v")
            .expect("v")
            .read(3, (data.len() / 512) as u32)
            .await
            .expect("read");
        assert!(got
            .iter()
            .enumerate()
            .all(|(i, &b)| if (1024..1536).contains(&i) {
                b == 1
            } else {
                b == data[i]
            }));
        pool.close().await.expect("close");
    });
}
