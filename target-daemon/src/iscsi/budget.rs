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
//!
//! Each connection may hold only its share of the write budget ([`ConnWrites`]): without it
//! one connection (with MaxConnections=1, one session) that queues large writes and never
//! sends their data holds the whole budget until the write-stall timeout, and every other
//! session's writes wait for R2Ts or end in TASK SET FULL meanwhile. The share is checked
//! with the same all-or-nothing reservation; a connection holding nothing may always reserve
//! one command whatever its size, so a share smaller than a command never blocks it forever.
//! Writes waiting for a share do not wait in a queue of their own: they retry when budget
//! is returned, like writes waiting for the daemon-wide budget. Data of commands held for a
//! CmdSN gap is charged to the daemon-wide budget only (it is capped per session at 1 MiB,
//! see `session::MAX_GAP_BYTES`).
//!
//! The read buffer budget ([`ReadBudget`]) bounds the other direction: READ data (any
//! Data-In) a connection holds from just before the device server allocates it until its
//! Data-In has been written to the socket. An initiator that queues READs and never reads
//! its socket would otherwise pin a CmdSN window of maximum-size READs per connection until
//! the write-stall timeout. It has two levels: the daemon-wide account, and a per-connection
//! share so one connection (or one address, with all its connections) cannot take the whole
//! budget from the others. A READ reserves its data (the CDB's transfer length, capped at the
//! per-connection share so one command always fits) before it runs, and waits while that
//! does not fit, in its own task: it never makes the connection task wait, so results the
//! connection task has batched but not written (which hold budget) always get flushed. Once
//! the device server answered, the reservation is set to the data it actually returned.
//! Waiting costs nothing on the hot path: reserving and returning are atomic operations, and
//! the wake-up channel is touched only while someone waits.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::watch;

/// The shared account.
pub struct WriteBudget {
    cap: u64,
    /// What one connection may hold (see [`ConnWrites`]).
    per_connection: u64,
    used: AtomicU64,
    /// Bumped when bytes are returned while a connection waits, so it retries (a `watch`
    /// keeps the change for a receiver that was not waiting yet).
    freed: watch::Sender<u64>,
    /// Connections with a write waiting for budget: returns only signal `freed` then, so
    /// the common case (nobody waits) costs no lock per completed write.
    waiters: AtomicUsize,
}

impl WriteBudget {
    /// A budget of `cap` bytes of which one connection may hold `per_connection`.
    pub fn new(cap: u64, per_connection: u64) -> Arc<WriteBudget> {
        Arc::new(WriteBudget {
            cap,
            per_connection: per_connection.min(cap).max(1),
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

    /// Reserves `bytes` of the daemon-wide budget alone (no connection's share) if they
    /// fit; `None` (nothing reserved) otherwise. For data a session holds rather than a
    /// connection's write (commands queued behind a CmdSN gap).
    pub fn try_reserve(self: &Arc<Self>, bytes: u64) -> Option<Grant> {
        if !try_add(&self.used, self.cap, bytes) {
            return None;
        }
        crate::metrics::global().write_buffer_delta(bytes as i64);
        Some(Grant {
            budget: self.clone(),
            conn: None,
            bytes,
        })
    }

    /// A new connection's share.
    pub fn connection(self: &Arc<Self>) -> Arc<ConnWrites> {
        Arc::new(ConnWrites {
            budget: self.clone(),
            used: AtomicU64::new(0),
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

    fn release(&self, conn: Option<&ConnWrites>, bytes: u64) {
        if let Some(c) = conn {
            c.used.fetch_sub(bytes, Ordering::SeqCst);
        }
        self.used.fetch_sub(bytes, Ordering::SeqCst);
        crate::metrics::global().write_buffer_delta(-(bytes as i64));
        if self.waiters.load(Ordering::SeqCst) > 0 {
            self.freed.send_modify(|g| *g = g.wrapping_add(1));
        }
    }
}

/// One connection's share of the [`WriteBudget`].
pub struct ConnWrites {
    budget: Arc<WriteBudget>,
    used: AtomicU64,
}

impl ConnWrites {
    /// Bytes this connection holds now.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::SeqCst)
    }

    /// Reserves `bytes` if they fit both the connection's share and the daemon-wide budget
    /// (a connection holding nothing may exceed its share with one reservation); `None`
    /// (nothing reserved) otherwise.
    pub fn try_reserve(self: &Arc<Self>, bytes: u64) -> Option<Grant> {
        let share = self.budget.per_connection;
        let mut cur = self.used.load(Ordering::SeqCst);
        loop {
            let next = cur.checked_add(bytes)?;
            if cur > 0 && next > share {
                return None;
            }
            match self
                .used
                .compare_exchange_weak(cur, next, Ordering::SeqCst, Ordering::SeqCst)
            {
                Ok(_) => break,
                Err(now) => cur = now,
            }
        }
        if !try_add(&self.budget.used, self.budget.cap, bytes) {
            // Only this connection's task reserves from its share, so nobody failed on the
            // bytes taken for a moment: no wake-up is owed.
            self.used.fetch_sub(bytes, Ordering::SeqCst);
            return None;
        }
        crate::metrics::global().write_buffer_delta(bytes as i64);
        Some(Grant {
            budget: self.budget.clone(),
            conn: Some(self.clone()),
            bytes,
        })
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
    /// The connection whose share holds the bytes too, if any.
    conn: Option<Arc<ConnWrites>>,
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
            self.budget.release(self.conn.as_deref(), self.bytes);
        }
    }
}

/// The daemon-wide account of Data-In held for initiators.
pub struct ReadBudget {
    cap: u64,
    per_connection: u64,
    used: AtomicU64,
    /// Tasks waiting in [`ConnReads::reserve`]; returns notify only while it is non-zero.
    waiters: AtomicUsize,
    /// Bumped on returns while someone waits.
    freed: watch::Sender<u64>,
}

impl ReadBudget {
    /// A budget of `cap` bytes of which one connection may hold `per_connection`.
    pub fn new(cap: u64, per_connection: u64) -> Arc<ReadBudget> {
        Arc::new(ReadBudget {
            cap,
            per_connection: per_connection.min(cap).max(1),
            used: AtomicU64::new(0),
            waiters: AtomicUsize::new(0),
            freed: watch::channel(0).0,
        })
    }

    /// Bytes reserved now, all connections together.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::SeqCst)
    }

    /// A new connection's account.
    pub fn connection(self: &Arc<Self>) -> Arc<ConnReads> {
        Arc::new(ConnReads {
            budget: self.clone(),
            used: AtomicU64::new(0),
        })
    }

    /// Takes `bytes` if the total stays within the cap (counted in the gauge).
    fn try_take(&self, bytes: u64) -> bool {
        let ok = try_add(&self.used, self.cap, bytes);
        if ok {
            crate::metrics::global().read_buffer_delta(bytes as i64);
        }
        ok
    }

    /// Takes `bytes` beyond the cap (data that already exists).
    fn take(&self, bytes: u64) {
        self.used.fetch_add(bytes, Ordering::SeqCst);
        crate::metrics::global().read_buffer_delta(bytes as i64);
    }

    fn release(&self, bytes: u64) {
        self.used.fetch_sub(bytes, Ordering::SeqCst);
        if bytes > 0 {
            crate::metrics::global().read_buffer_delta(-(bytes as i64));
        }
        // SeqCst pairs with the waiter's increment before its retry: either the retry sees
        // these bytes returned, or this load sees the waiter and wakes it.
        if self.waiters.load(Ordering::SeqCst) > 0 {
            self.freed.send_modify(|g| *g = g.wrapping_add(1));
        }
    }
}

/// Adds `bytes` to `used` if the sum stays within `cap`.
fn try_add(used: &AtomicU64, cap: u64, bytes: u64) -> bool {
    let mut cur = used.load(Ordering::SeqCst);
    loop {
        let Some(next) = cur.checked_add(bytes).filter(|n| *n <= cap) else {
            return false;
        };
        match used.compare_exchange_weak(cur, next, Ordering::SeqCst, Ordering::SeqCst) {
            Ok(_) => return true,
            Err(now) => cur = now,
        }
    }
}

/// One connection's share of the [`ReadBudget`].
pub struct ConnReads {
    budget: Arc<ReadBudget>,
    used: AtomicU64,
}

impl ConnReads {
    /// Bytes this connection holds now.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::SeqCst)
    }

    /// Reserves `bytes` (at most the per-connection share, so any command fits once enough
    /// is returned) if both the connection's share and the daemon-wide budget hold them.
    pub fn try_reserve(self: &Arc<Self>, bytes: u64) -> Option<ReadGrant> {
        let bytes = bytes.min(self.budget.per_connection);
        if !try_add(&self.used, self.budget.per_connection, bytes) {
            return None;
        }
        if !self.budget.try_take(bytes) {
            self.used.fetch_sub(bytes, Ordering::SeqCst);
            // Nothing was taken from the budget, but this share may have kept another of
            // the connection's commands from reserving meanwhile: let it retry.
            self.budget.release(0);
            return None;
        }
        Some(ReadGrant {
            conn: self.clone(),
            bytes,
        })
    }

    /// Reserves `bytes` (capped at the share) as [`Self::try_reserve`] does, waiting until
    /// they fit. Cancel safe.
    ///
    /// The connection's share is taken first and kept while the daemon-wide budget is full.
    /// Taking it back after each failed attempt would have to wake the connection's other
    /// waiting READs (they may have failed on it), which would fail on the full budget in
    /// turn and wake each other again: a spin for as long as the budget stays full.
    pub async fn reserve(self: &Arc<Self>, bytes: u64) -> ReadGrant {
        let bytes = bytes.min(self.budget.per_connection);
        let mut share: Option<Share<'_>> = None;
        let mut waiting: Option<(watch::Receiver<u64>, Waiting<'_>)> = None;
        loop {
            if share.is_none() && try_add(&self.used, self.budget.per_connection, bytes) {
                share = Some(Share { conn: self, bytes });
            }
            if let Some(taken) = share.take() {
                if self.budget.try_take(bytes) {
                    std::mem::forget(taken);
                    return ReadGrant {
                        conn: self.clone(),
                        bytes,
                    };
                }
                share = Some(taken);
            }
            match waiting.as_mut() {
                None => {
                    // Register, then try once more: a return after the registration
                    // signals, one before it is seen by the retry.
                    crate::metrics::global().limit_refusal("read_buffer");
                    let mut rx = self.budget.freed.subscribe();
                    rx.borrow_and_update();
                    waiting = Some((rx, Waiting::new(&self.budget)));
                }
                Some((rx, _)) => {
                    // The sender lives as long as the budget, which `self` keeps alive.
                    let _ = rx.changed().await;
                    rx.borrow_and_update();
                }
            }
        }
    }

    /// Charges `bytes` without a limit: data that already exists (a command's answer that
    /// was not reserved ahead) is counted, so later commands wait for it to be sent.
    pub fn charge(self: &Arc<Self>, bytes: u64) -> ReadGrant {
        let mut g = ReadGrant {
            conn: self.clone(),
            bytes: 0,
        };
        g.resize(bytes);
        g
    }
}

/// A connection's share taken by a READ still waiting for the daemon-wide budget; given
/// back (waking the connection's other waiting READs) if the wait is cancelled.
struct Share<'a> {
    conn: &'a ConnReads,
    bytes: u64,
}

impl Drop for Share<'_> {
    fn drop(&mut self) {
        self.conn.used.fetch_sub(self.bytes, Ordering::SeqCst);
        self.conn.budget.release(0);
    }
}

/// Counts a waiter for as long as it lives.
struct Waiting<'a>(&'a ReadBudget);

impl<'a> Waiting<'a> {
    fn new(b: &'a ReadBudget) -> Self {
        b.waiters.fetch_add(1, Ordering::SeqCst);
        Waiting(b)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.waiters.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Data-In bytes one command holds; returned when dropped (after its Data-In is written).
pub struct ReadGrant {
    conn: Arc<ConnReads>,
    bytes: u64,
}

impl ReadGrant {
    /// Sets the bytes held to `bytes`, the size of the data the command actually holds. A
    /// larger answer than reserved is charged beyond the limits (the memory is already in
    /// use; later reservations wait for it); a smaller one returns the difference.
    pub fn resize(&mut self, bytes: u64) {
        if bytes > self.bytes {
            let more = bytes - self.bytes;
            self.conn.used.fetch_add(more, Ordering::SeqCst);
            self.conn.budget.take(more);
        } else if bytes < self.bytes {
            let less = self.bytes - bytes;
            self.conn.used.fetch_sub(less, Ordering::SeqCst);
            self.conn.budget.release(less);
        }
        self.bytes = bytes;
    }
}

impl std::fmt::Debug for ReadGrant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ReadGrant({})", self.bytes)
    }
}

impl Drop for ReadGrant {
    fn drop(&mut self) {
        if self.bytes > 0 {
            self.conn.used.fetch_sub(self.bytes, Ordering::SeqCst);
            self.conn.budget.release(self.bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_are_all_or_nothing_and_return_on_drop() {
        let b = WriteBudget::new(100, 100);
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

    #[test]
    fn write_reservations_respect_the_connection_share_and_the_total() {
        let b = WriteBudget::new(100, 40);
        let (c1, c2, c3) = (b.connection(), b.connection(), b.connection());
        let g1 = c1.try_reserve(30).expect("fits");
        assert!(
            c1.try_reserve(20).is_none(),
            "beyond the connection's share"
        );
        assert_eq!((c1.used(), b.used()), (30, 30), "a refusal takes nothing");
        let g2 = c2
            .try_reserve(40)
            .expect("another connection has its own share");
        let g3 = b.try_reserve(25).expect("a session's gap data: no share");
        assert!(
            c3.try_reserve(10).is_none(),
            "within the share, over the total"
        );
        assert_eq!((c3.used(), b.used()), (0, 95), "a refusal takes nothing");
        drop(g3);
        let big = c3.try_reserve(70);
        assert!(big.is_none(), "over the total even when alone");
        drop((g1, g2));
        let big = c3
            .try_reserve(70)
            .expect("a connection holding nothing may take one command beyond its share");
        assert!(c3.try_reserve(1).is_none(), "but nothing more");
        assert_eq!((c3.used(), b.used()), (70, 70));
        drop(big);
        assert_eq!((c1.used(), c2.used(), c3.used(), b.used()), (0, 0, 0, 0));
    }

    #[test]
    fn read_reservations_respect_the_connection_share_and_the_total() {
        let b = ReadBudget::new(100, 60);
        let (c1, c2, c3) = (b.connection(), b.connection(), b.connection());
        let g1 = c1.try_reserve(50).expect("fits");
        assert!(
            c1.try_reserve(20).is_none(),
            "beyond the connection's share"
        );
        assert!(
            c2.try_reserve(500).is_none(),
            "capped at the share, still over the total"
        );
        assert_eq!(
            (c2.used(), b.used()),
            (0, 50),
            "a refused reservation takes nothing"
        );
        let g2 = c2.try_reserve(40).expect("fits");
        drop(g1);
        assert_eq!((c1.used(), b.used()), (0, 40));
        let mut g3 = c1.try_reserve(500).expect("capped at the share, fits");
        assert_eq!((c1.used(), b.used()), (60, 100));
        assert!(c3.try_reserve(1).is_none(), "the total is full");
        g3.resize(70);
        assert_eq!(
            (c1.used(), b.used()),
            (70, 110),
            "real data is charged beyond the caps"
        );
        g3.resize(10);
        assert_eq!((c1.used(), b.used()), (10, 50));
        drop((g2, g3));
        assert_eq!(b.used(), 0);
        let g4 = c3.charge(5);
        assert_eq!((c3.used(), b.used()), (5, 5));
        drop(g4);
        assert_eq!(b.used(), 0);
    }

    /// Two READs of one connection waiting while the daemon-wide budget is full must sleep,
    /// not wake each other: the signal count stays put until something is returned.
    #[tokio::test]
    async fn reads_waiting_for_a_full_total_do_not_wake_each_other() {
        let b = ReadBudget::new(100, 60);
        let (c1, c2) = (b.connection(), b.connection());
        let g1 = c1.try_reserve(60).expect("fits");
        let g2 = c2.try_reserve(40).expect("fits: the total is full now");
        let c3 = b.connection();
        let (a, bb) = (c3.clone(), c3.clone());
        let w1 = tokio::spawn(async move { a.reserve(10).await.bytes });
        let w2 = tokio::spawn(async move { bb.reserve(10).await.bytes });
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
        let signals = *b.freed.borrow();
        for _ in 0..50 {
            tokio::task::yield_now().await;
        }
        assert_eq!(*b.freed.borrow(), signals, "waiters woke each other");
        assert!(!w1.is_finished() && !w2.is_finished());
        assert_eq!(c3.used(), 20, "each waiter keeps its connection share");
        drop(g2);
        assert_eq!(w1.await.expect("joined"), 10);
        assert_eq!(w2.await.expect("joined"), 10);
        drop(g1);
        assert_eq!(b.used(), 0);
    }

    /// `lunar_iscsi_read_buffer_bytes` follows the budget (process-wide: other tests hold
    /// grants too, so it is at least what this one holds).
    #[test]
    fn the_read_buffer_gauge_counts_what_is_held() {
        let gauge = || {
            let text = crate::metrics::global().render(&[]);
            text.lines()
                .find_map(|l| l.strip_prefix("lunar_iscsi_read_buffer_bytes "))
                .and_then(|v| v.trim().parse::<i64>().ok())
                .expect("the gauge is exported")
        };
        let b = ReadBudget::new(1 << 40, 1 << 40);
        let c = b.connection();
        let mut g = c.try_reserve(3 << 30).expect("fits");
        assert!(gauge() >= 3 << 30);
        g.resize(5 << 30);
        assert!(
            gauge() >= 5 << 30,
            "answers larger than reserved are counted"
        );
        let h = c.charge(2 << 30);
        assert!(gauge() >= 7 << 30);
        drop((g, h));
        assert_eq!(b.used(), 0);
    }

    #[tokio::test]
    async fn a_waiting_read_gets_its_budget_when_another_returns_it() {
        let b = ReadBudget::new(100, 100);
        let c = b.connection();
        let g = c.try_reserve(80).expect("fits");
        let c2 = c.clone();
        let waiter = tokio::spawn(async move { c2.reserve(50).await.bytes });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "50 more do not fit yet");
        drop(g);
        assert_eq!(waiter.await.expect("joined"), 50);
        assert_eq!(b.used(), 0);
    }
}
