//! Ordering of SCSI tasks by task attribute (SAM-5 8.6): the barrier each new task waits
//! behind before it runs. Lives beside the session, which keeps one per I_T nexus.

use tokio::sync::watch;

use crate::scsi::TaskAttr;

/// Ordering of tasks by attribute (SAM-5 8.6): a SIMPLE task waits for the last ORDERED task
/// before it; an ORDERED task waits for everything before it; HEAD OF QUEUE waits for nothing.
/// Tasks are registered in CmdSN order, so "before" is CmdSN order. Each task is represented
/// by a watch receiver whose sender the task holds until its future ends.
#[derive(Default)]
pub struct OrderState {
    last_ordered: Option<watch::Receiver<()>>,
    simple_since: Vec<watch::Receiver<()>>,
}

impl OrderState {
    /// Registers a new task and returns the tasks it must wait for.
    pub fn register(
        &mut self,
        attr: &TaskAttr,
        done: &watch::Receiver<()>,
    ) -> Vec<watch::Receiver<()>> {
        // Forget finished tasks (sender dropped) so the list stays bounded by running tasks.
        self.simple_since.retain(|r| r.has_changed().is_ok());
        if self
            .last_ordered
            .as_ref()
            .is_some_and(|r| r.has_changed().is_err())
        {
            self.last_ordered = None;
        }
        match attr {
            TaskAttr::HeadOfQueue => Vec::new(),
            TaskAttr::Ordered => {
                let mut wait: Vec<_> = std::mem::take(&mut self.simple_since);
                wait.extend(self.last_ordered.take());
                self.last_ordered = Some(done.clone());
                wait
            }
            _ => {
                self.simple_since.push(done.clone());
                self.last_ordered.iter().cloned().collect()
            }
        }
    }
}

/// Waits until every task in `list` has ended.
pub(crate) async fn wait_all(list: Vec<watch::Receiver<()>>) {
    for mut r in list {
        while r.changed().await.is_ok() {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn ordered_waits_for_earlier_simple_and_blocks_later() {
        let mut st = OrderState::default();
        let (a_tx, a_rx) = watch::channel(());
        let (b_tx, b_rx) = watch::channel(());
        let (_c_tx, c_rx) = watch::channel(());
        assert!(st.register(&TaskAttr::Simple, &a_rx).is_empty());
        let w = st.register(&TaskAttr::Ordered, &b_rx);
        assert_eq!(w.len(), 1, "ordered waits for the simple task before it");
        let w2 = st.register(&TaskAttr::Simple, &c_rx);
        assert_eq!(w2.len(), 1, "simple waits for the ordered task before it");
        assert!(st.register(&TaskAttr::HeadOfQueue, &c_rx).is_empty());
        drop(a_tx);
        wait_all(w).await;
        drop(b_tx);
        wait_all(w2).await;
    }
}
