//! Shared set-up for the crate's unit tests.

use crate::{Guarantee, Pool, PoolOptions};

/// A 64 MiB pool in `dir` with `chunk_size` chunks and one thin volume "v" of `volume_bytes`
/// with 4096-byte blocks.
pub(crate) async fn pool_with_volume(
    dir: &std::path::Path,
    chunk_size: u32,
    volume_bytes: u64,
) -> Pool {
    let opts = PoolOptions {
        chunk_size,
        capacity_bytes: Some(64 << 20),
        soft_threshold_pct: None,
    };
    let pool = Pool::create(dir, &opts).await.expect("create");
    pool.create_volume("v", volume_bytes, 4096, Guarantee::None)
        .await
        .expect("volume");
    pool
}
