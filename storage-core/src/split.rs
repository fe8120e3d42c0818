//! Background clone split: the clone copies every chunk it still resolves through its
//! ancestors into its own top layer, then detaches from the tree. Shared chunks stay with
//! the other views; the clone ends up owning all its data.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use crate::engine::PoolInner;
use crate::layer::{Rec, ViewId, HOLE};
use crate::{Result, StorageError, Volume};

/// Chunks copied concurrently by a split.
const SPLIT_PARALLEL: usize = 8;

struct Progress {
    done: AtomicU64,
    total: AtomicU64,
    cancel: AtomicBool,
}

/// Handle of a running split: progress, cancel, wait.
pub struct SplitJob {
    progress: Arc<Progress>,
    task: tokio::task::JoinHandle<Result<()>>,
}

impl SplitJob {
    /// (chunks done, chunks total).
    pub fn progress(&self) -> (u64, u64) {
        (
            self.progress.done.load(Ordering::Relaxed),
            self.progress.total.load(Ordering::Relaxed),
        )
    }
    /// Ask the job to stop; `wait` then returns `Cancelled`. Chunks already copied stay
    /// with the clone (harmless; a later split continues from there).
    pub fn cancel(&self) {
        self.progress.cancel.store(true, Ordering::Release);
    }
    /// Whether the job has ended (completed, cancelled or failed); `wait` then returns at
    /// once with the outcome. Lets a poller notice a failure before progress reaches 100 %.
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }
    /// Wait for the job to finish.
    pub async fn wait(self) -> Result<()> {
        match self.task.await {
            Ok(r) => r,
            Err(e) => Err(StorageError::io(
                "running the split job",
                std::io::Error::other(e.to_string()),
            )),
        }
    }
}

/// Indices below the volume end that the top does not own but an ancestor maps to data.
fn borrowed(inner: &PoolInner, id: ViewId) -> Result<Vec<u64>> {
    let st = inner.state.read();
    let (top, size, _, _) = st.volume(id)?;
    let n = st.meta.chunks(size);
    let mut set = std::collections::BTreeSet::new();
    let own = st.meta.layers.get(&top).map(|l| &l.map);
    let mut cur = st.meta.layers.get(&top).and_then(|l| l.parent);
    while let Some(lid) = cur {
        let Some(l) = st.meta.layers.get(&lid) else {
            break;
        };
        for (&i, &p) in &l.map {
            if i < n && p != HOLE && !own.is_some_and(|m| m.contains_key(&i)) {
                set.insert(i);
            }
        }
        cur = l.parent;
    }
    set.retain(|&i| st.meta.resolve(top, i).is_some());
    Ok(set.into_iter().collect())
}

pub(crate) fn start(inner: Arc<PoolInner>, id: ViewId, name: String) -> Result<SplitJob> {
    let todo = borrowed(&inner, id)?;
    let progress = Arc::new(Progress {
        done: AtomicU64::new(0),
        total: AtomicU64::new(todo.len() as u64),
        cancel: AtomicBool::new(false),
    });
    let p = progress.clone();
    let rt = inner.rt(id);
    let vol = Volume::new(inner.clone(), id, rt.clone());
    let task = tokio::spawn(async move {
        tracing::info!(volume = %name, chunks = todo.len(), "split started");
        let total = todo.len() as u64;
        let step = (total / 20).max(1);
        let mut remaining = todo;
        loop {
            // A few chunks at a time in parallel; cancel is checked between batches.
            for batch in remaining.chunks(SPLIT_PARALLEL) {
                if p.cancel.load(Ordering::Acquire) {
                    tracing::info!(volume = %name, done = p.done.load(Ordering::Relaxed), total, "split cancelled");
                    return Err(StorageError::Cancelled);
                }
                {
                    let _g = crate::engine::lock_shared(&rt.gate).await;
                    // A zero-length write makes the chunk the top's own (copy of the resolved data).
                    futures_util::future::try_join_all(
                        batch.iter().map(|&i| vol.write_chunk(i, 0, Vec::new())),
                    )
                    .await?;
                }
                let before = p.done.fetch_add(batch.len() as u64, Ordering::Relaxed);
                let d = before + batch.len() as u64;
                if d / step != before / step {
                    tracing::info!(volume = %name, done = d, total, "split progress");
                }
            }
            // Detach under the gate once nothing is borrowed any more.
            let _g = rt.gate.write().await;
            remaining = borrowed(&inner, id)?;
            if remaining.is_empty() {
                {
                    let mut st = inner.state.write();
                    st.check_failed()?;
                    let (top, ..) = st.volume(id)?;
                    if st.meta.layers.get(&top).is_some_and(|l| l.parent.is_some()) {
                        st.log(Rec::Detach { layer: top })?;
                    }
                }
                drop(_g);
                inner.flush().await?;
                tracing::info!(volume = %name, total, "split finished");
                return Ok(());
            }
            p.total.fetch_add(remaining.len() as u64, Ordering::Relaxed);
        }
    });
    Ok(SplitJob { progress, task })
}
