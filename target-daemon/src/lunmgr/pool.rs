//! Pool figures and the pool consistency check.

use super::{LunManager, MgrResult, PoolView};

impl LunManager {
    /// Pool figures.
    pub fn pool_status(&self) -> MgrResult<PoolView> {
        let pool = self.pool()?;
        let s = pool.status();
        Ok(PoolView {
            uuid: s.uuid.to_string(),
            capacity_bytes: s.capacity_bytes,
            used_bytes: s.used_bytes,
            free_bytes: s.free_bytes,
            reserved_bytes: s.reserved_bytes,
            chunk_size: s.chunk_size,
            soft_threshold_pct: s.soft_threshold_pct,
            soft_threshold_reached: s.soft_threshold_reached,
            volumes: s.volumes,
            snapshots: s.snapshots,
            io_backend: pool.io_backend().into(),
        })
    }

    /// Runs the pool's consistency check; returns (clean, errors, leaked chunks).
    pub async fn pool_check(&self) -> MgrResult<(bool, Vec<String>, u64)> {
        let _st = self.lock().await;
        let r = self.pool()?.check().await?;
        Ok((r.is_clean(), r.errors.clone(), r.leaked_chunks))
    }
}
