//! The write buffer budget: one account, shared by every iSCSI connection, of the WRITE data
//! the daemon holds for initiators (received or solicited, until the device server has
//! written it).
//!
//! A write command reserves all the data it will buffer before any of it is solicited, and
//! keeps the reservation (a [`Grant`]) until it completes. All-or-nothing matters: a command
//! holding part of its data and waiting for budget to solicit the rest could wait forever
//! for budget that other such commands hold. A command that holds a grant never needs more,
//! so it always finishes as soon as its initiator sends the data. RFC 7143 leaves the target
//! in control of solicited data (it chooses when to send R2Ts); unsolicited data (immediate
//! data and unsolicited Data-Out, at most FirstBurstLength) is not, which is why the front
//! end refuses such a command with TASK SET FULL when the budget cannot cover it, instead of
//! buffering it (see `cmd.rs`).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::watch;

/// The shared account.
pub struct WriteBudget {
    cap: u64,
    used: AtomicU64,
    /// Bumped when bytes are returned while a connection waits, so it retries (a `watch`
    /// keeps the change for a receiver that was not waiting yet).
    freed: watch::Sender<u64>,
    /// Connections with a write waiting for budget: returns only signal `freed` then, so
    /// the common case (nobody waits) costs no lock per completed write.
    waiters: AtomicUsize,
}

impl WriteBudget {
    /// A budget of `cap` bytes.
    pub fn new(cap: u64) -> Arc<WriteBudget> {
        Arc::new(WriteBudget {
            cap,
            used: AtomicU64::new(0),
            freed: watch::channel(0).0,
            waiters: AtomicUsize::new(0),
        })
    }

    /// The configured size.
    pub fn capacity(&self) -> u64 {
        self.cap
    }

    /// Bytes reserved now.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Acquire)
    }

    /// Reserves `bytes` if they fit; `None` (nothing reserved) otherwise.
    pub fn try_reserve(self: &Arc<Self>, bytes: u64) -> Option<Grant> {
        let mut cur = self.used.load(Ordering::SeqCst);
        loop {
            let next = cur.checked_add(bytes).filter(|n| *n <= self.cap)?;
            match self
                .used
                .compare_exchange_weak(cur, next, Ordering::SeqCst, Ordering::SeqCst)
            {
                Ok(_) => break,
                Err(now) => cur = now,
            }
        }
        crate::metrics::global().write_buffer_delta(bytes as i64);
        Some(Grant {
            budget: self.clone(),
            bytes,
        })
    }

    /// A receiver that changes when bytes are returned while a [`Waiter`] is registered.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.freed.subscribe()
    }

    /// Registers a connection that has a write waiting for budget. Register before the
    /// reservation attempt that may fail: a return either comes after the registration and
    /// signals, or before it and the attempt sees the bytes (both orders are sequentially
    /// consistent).
    pub fn waiter(self: &Arc<Self>) -> Waiter {
        self.waiters.fetch_add(1, Ordering::SeqCst);
        Waiter {
            budget: self.clone(),
        }
    }

    fn release(&self, bytes: u64) {
        self.used.fetch_sub(bytes, Ordering::SeqCst);
        crate::metrics::global().write_buffer_delta(-(bytes as i64));
        if self.waiters.load(Ordering::SeqCst) > 0 {
            self.freed.send_modify(|g| *g = g.wrapping_add(1));
        }
    }
}

/// A connection's registration as waiting for budget; dropping it unregisters.
pub struct Waiter {
    budget: Arc<WriteBudget>,
}

impl Drop for Waiter {
    fn drop(&mut self) {
        self.budget.waiters.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Bytes reserved for one command; returned to the budget when dropped.
pub struct Grant {
    budget: Arc<WriteBudget>,
    bytes: u64,
}

impl std::fmt::Debug for Grant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Grant({})", self.bytes)
    }
}

impl Drop for Grant {
    fn drop(&mut self) {
        if self.bytes > 0 {
            self.budget.release(self.bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_are_all_or_nothing_and_return_on_drop() {
        let b = WriteBudget::new(100);
        let mut rx = b.subscribe();
        let g0 = b.try_reserve(10).expect("fits");
        drop(g0);
        assert!(!rx.has_changed().unwrap_or(true), "nobody waits: no signal");
        let _waiting = b.waiter();
        let g1 = b.try_reserve(60).expect("fits");
        assert!(b.try_reserve(41).is_none(), "would exceed the budget");
        assert_eq!(b.used(), 60, "a refused reservation takes nothing");
        let g2 = b.try_reserve(40).expect("fits exactly");
        assert_eq!(b.used(), 100);
        assert!(!rx.has_changed().unwrap_or(true));
        drop(g1);
        assert_eq!(b.used(), 40);
        assert!(rx.has_changed().unwrap_or(false), "waiters are told");
        rx.borrow_and_update();
        drop(g2);
        assert_eq!(b.used(), 0);
        assert!(b.try_reserve(u64::MAX).is_none(), "no overflow");
    }
}
