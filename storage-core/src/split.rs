//! Background clone split.

use crate::{Result, StorageError};

/// Handle of a running split: progress, cancel, wait.
pub struct SplitJob {
    _private: (),
}

impl SplitJob {
    /// (chunks done, chunks total).
    pub fn progress(&self) -> (u64, u64) {
        (0, 0)
    }
    /// Ask the job to stop; `wait` then returns `Cancelled`.
    pub fn cancel(&self) {}
    /// Wait for the job to finish.
    pub async fn wait(self) -> Result<()> {
        Err(StorageError::Cancelled)
    }
}
