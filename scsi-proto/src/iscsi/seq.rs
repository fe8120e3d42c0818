//! Sequence numbers: RFC 1982 serial number arithmetic (32-bit, as RFC 7143 section 4.2.2.1
//! requires for CmdSN, StatSN, DataSN and R2TSN) and the target's CmdSN window.

use std::collections::{BTreeMap, VecDeque};

/// Half the 32-bit sequence space: differences at or beyond this are not comparable.
const HALF: u32 = 1 << 31;

/// `a < b` in serial number arithmetic. Undefined comparisons (distance exactly 2^31) are
/// false in both directions.
pub fn serial_lt(a: u32, b: u32) -> bool {
    a != b && b.wrapping_sub(a) < HALF
}

/// `a > b` in serial number arithmetic.
pub fn serial_gt(a: u32, b: u32) -> bool {
    serial_lt(b, a)
}

/// `a <= b` in serial number arithmetic.
pub fn serial_le(a: u32, b: u32) -> bool {
    a == b || serial_lt(a, b)
}

/// `lo <= sn <= hi` in serial arithmetic, with the window measured from `lo` (so windows up to
/// 2^31 - 1 wide work across the wrap).
pub fn serial_in_window(sn: u32, lo: u32, hi: u32) -> bool {
    sn.wrapping_sub(lo) <= hi.wrapping_sub(lo) && hi.wrapping_sub(lo) < HALF
}

/// The larger of two serial numbers (the first when they are not comparable).
pub fn serial_max(a: u32, b: u32) -> u32 {
    if serial_gt(b, a) {
        b
    } else {
        a
    }
}

/// Why a command was not admitted into the CmdSN window. RFC 7143 section 3.2.2.1: the
/// target "MUST silently ignore any non-immediate command outside of this range or
/// non-immediate duplicates within the range", so the daemon drops the PDU and logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WindowError {
    /// CmdSN is outside [ExpCmdSN, MaxCmdSN].
    #[error("CmdSN {cmd_sn} outside window [{exp_cmd_sn}, {max_cmd_sn}]")]
    OutsideWindow {
        /// The command's CmdSN.
        cmd_sn: u32,
        /// Current ExpCmdSN.
        exp_cmd_sn: u32,
        /// Current MaxCmdSN.
        max_cmd_sn: u32,
    },
    /// A command with this CmdSN is already queued.
    #[error("duplicate CmdSN {0}")]
    Duplicate(u32),
}

/// The target's per-session command window (RFC 7143 section 3.2.2.1).
///
/// Non-immediate commands are delivered in CmdSN order: a command with CmdSN == ExpCmdSN
/// becomes ready at once (with any queued successors); one further ahead waits in a queue
/// bounded by the window size. Immediate commands are ready at once and do not advance
/// ExpCmdSN. Items are generic so the daemon can queue whatever it needs (PDU, task state).
#[derive(Debug)]
pub struct CmdWindow<T> {
    exp_cmd_sn: u32,
    max_cmd_sn: u32,
    depth: u32,
    pending: BTreeMap<u32, T>,
    ready: VecDeque<T>,
    /// Whether delivering commands slides MaxCmdSN forward on its own.
    auto_slide: bool,
}

/// Largest window the target will ever advertise; keeps the out-of-order queue bounded.
pub const MAX_WINDOW: u32 = 1 << 16;

impl<T> CmdWindow<T> {
    /// A window starting at `exp_cmd_sn` (the CmdSN of the leading Login Request) that admits
    /// `depth` commands (clamped to 1..=[`MAX_WINDOW`]).
    ///
    /// MaxCmdSN slides forward as commands are delivered, so `depth` bounds the commands
    /// received but not yet delivered (queued behind a gap). Use [`CmdWindow::new_managed`]
    /// to also bound commands still executing.
    pub fn new(exp_cmd_sn: u32, depth: u32) -> Self {
        let depth = depth.clamp(1, MAX_WINDOW);
        CmdWindow {
            exp_cmd_sn,
            max_cmd_sn: exp_cmd_sn.wrapping_add(depth - 1),
            depth,
            pending: BTreeMap::new(),
            ready: VecDeque::new(),
            auto_slide: true,
        }
    }

    /// A window whose MaxCmdSN moves only when the caller calls [`CmdWindow::set_depth`].
    ///
    /// For targets that bound executing commands: after delivering commands (and after each
    /// completes) call `set_depth(limit - executing)`; MaxCmdSN becomes
    /// ExpCmdSN + depth - 1 (never lower than before). The caller must call `set_depth` after
    /// every delivery, including commands that finish at once (NOP-Out, Text, Logout),
    /// or the window closes.
    pub fn new_managed(exp_cmd_sn: u32, depth: u32) -> Self {
        CmdWindow {
            auto_slide: false,
            ..Self::new(exp_cmd_sn, depth)
        }
    }

    /// ExpCmdSN to put in responses.
    pub fn exp_cmd_sn(&self) -> u32 {
        self.exp_cmd_sn
    }

    /// MaxCmdSN to put in responses. Never moves backwards (initiators ignore a smaller one).
    pub fn max_cmd_sn(&self) -> u32 {
        self.max_cmd_sn
    }

    /// Change the number of commands admitted beyond ExpCmdSN - 1 (e.g. to apply back
    /// pressure). Shrinking takes effect as ExpCmdSN advances, since MaxCmdSN never decreases.
    pub fn set_depth(&mut self, depth: u32) {
        self.depth = depth.clamp(1, MAX_WINDOW);
        self.refresh_max();
    }

    /// Number of commands waiting for a CmdSN gap to fill.
    pub fn queued(&self) -> usize {
        self.pending.len()
    }

    fn refresh_max(&mut self) {
        let want = self.exp_cmd_sn.wrapping_add(self.depth - 1);
        self.max_cmd_sn = serial_max(self.max_cmd_sn, want);
    }

    /// Admit a command. On success it is either ready ([`CmdWindow::pop_ready`]) or queued
    /// until the gap before it fills. On error the item is handed back with the reason.
    pub fn admit(&mut self, cmd_sn: u32, immediate: bool, item: T) -> Result<(), (WindowError, T)> {
        if immediate {
            self.ready.push_back(item);
            return Ok(());
        }
        if !serial_in_window(cmd_sn, self.exp_cmd_sn, self.max_cmd_sn) {
            return Err((
                WindowError::OutsideWindow {
                    cmd_sn,
                    exp_cmd_sn: self.exp_cmd_sn,
                    max_cmd_sn: self.max_cmd_sn,
                },
                item,
            ));
        }
        if cmd_sn != self.exp_cmd_sn {
            if self.pending.contains_key(&cmd_sn) {
                return Err((WindowError::Duplicate(cmd_sn), item));
            }
            self.pending.insert(cmd_sn, item);
            return Ok(());
        }
        self.ready.push_back(item);
        self.exp_cmd_sn = self.exp_cmd_sn.wrapping_add(1);
        while let Some(next) = self.pending.remove(&self.exp_cmd_sn) {
            self.ready.push_back(next);
            self.exp_cmd_sn = self.exp_cmd_sn.wrapping_add(1);
        }
        if self.auto_slide {
            self.refresh_max();
        }
        Ok(())
    }

    /// Next command to execute, in delivery order.
    pub fn pop_ready(&mut self) -> Option<T> {
        self.ready.pop_front()
    }

    /// Drop every queued command (session reinstatement / logout); returns them.
    pub fn drain(&mut self) -> Vec<T> {
        let mut all: Vec<T> = self.ready.drain(..).collect();
        all.extend(std::mem::take(&mut self.pending).into_values());
        all
    }
}

/// A connection's StatSN counter (RFC 7143 section 4.2.2.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StatSn {
    next: u32,
}

impl StatSn {
    /// Start at `initial` (the target picks it; it goes into the first Login Response).
    pub fn new(initial: u32) -> Self {
        StatSn { next: initial }
    }

    /// The StatSN the next status-bearing PDU will carry (also used, without advancing, in
    /// R2T, NOP-In pings and Data-In without status).
    pub fn peek(&self) -> u32 {
        self.next
    }

    /// Take a StatSN for a status-bearing PDU and advance.
    pub fn advance(&mut self) -> u32 {
        let sn = self.next;
        self.next = self.next.wrapping_add(1);
        sn
    }

    /// Whether an initiator's ExpStatSN is plausible: not ahead of what we have sent.
    pub fn acknowledges(&self, exp_stat_sn: u32) -> bool {
        serial_le(exp_stat_sn, self.next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn serial_basics() {
        assert!(serial_lt(1, 2));
        assert!(serial_lt(0xffff_fffe, 3));
        assert!(serial_gt(3, 0xffff_fffe));
        assert!(!serial_lt(5, 5));
        assert!(serial_le(5, 5));
        // Undefined comparison: exactly half the space apart.
        assert!(!serial_lt(0, HALF) && !serial_gt(0, HALF));
        assert!(serial_in_window(0, 0xffff_fff0, 0x10));
        assert!(!serial_in_window(0x11, 0xffff_fff0, 0x10));
        assert!(!serial_in_window(0xffff_ffef, 0xffff_fff0, 0x10));
        assert_eq!(serial_max(0xffff_ffff, 2), 2);
    }

    proptest! {
        #[test]
        fn serial_antisymmetric(a: u32, b: u32) {
            prop_assert!(!(serial_lt(a, b) && serial_lt(b, a)));
            if a != b && a.wrapping_sub(b) != HALF {
                prop_assert!(serial_lt(a, b) ^ serial_lt(b, a));
            }
        }

        #[test]
        fn serial_add_is_greater(a: u32, n in 1u32..HALF) {
            prop_assert!(serial_gt(a.wrapping_add(n), a));
        }

        /// Any permutation of an in-window burst is delivered in CmdSN order.
        #[test]
        fn window_reorders(start: u32, order in Just((0u32..32).collect::<Vec<_>>()).prop_shuffle()) {
            let mut w = CmdWindow::new(start, 32);
            for off in &order {
                let sn = start.wrapping_add(*off);
                prop_assert!(w.admit(sn, false, sn).is_ok());
            }
            let mut got = Vec::new();
            while let Some(sn) = w.pop_ready() {
                got.push(sn);
            }
            let want: Vec<u32> = (0..32).map(|o| start.wrapping_add(o)).collect();
            prop_assert_eq!(got, want);
            prop_assert_eq!(w.exp_cmd_sn(), start.wrapping_add(32));
            prop_assert_eq!(w.max_cmd_sn(), start.wrapping_add(63));
        }
    }

    #[test]
    fn window_rejects_outside_and_duplicates() {
        let mut w = CmdWindow::new(10, 4);
        assert_eq!(w.max_cmd_sn(), 13);
        assert!(matches!(
            w.admit(14, false, ()),
            Err((WindowError::OutsideWindow { cmd_sn: 14, .. }, ()))
        ));
        assert!(matches!(
            w.admit(9, false, ()),
            Err((WindowError::OutsideWindow { .. }, ()))
        ));
        assert!(w.admit(12, false, ()).is_ok());
        assert_eq!(
            w.admit(12, false, ()),
            Err((WindowError::Duplicate(12), ()))
        );
        assert_eq!(w.queued(), 1);
        assert!(w.pop_ready().is_none());
        // An immediate command is delivered at once and does not advance ExpCmdSN.
        assert!(w.admit(10, true, ()).is_ok());
        assert_eq!(w.exp_cmd_sn(), 10);
        assert!(w.pop_ready().is_some());
        assert!(w.admit(10, false, ()).is_ok());
        assert!(w.admit(11, false, ()).is_ok());
        assert_eq!(w.exp_cmd_sn(), 13);
        assert_eq!(w.queued(), 0);
        // Already delivered CmdSN is now outside the window.
        assert!(w.admit(11, false, ()).is_err());
    }

    #[test]
    fn shrinking_never_lowers_max() {
        let mut w: CmdWindow<()> = CmdWindow::new(0, 16);
        assert_eq!(w.max_cmd_sn(), 15);
        w.set_depth(2);
        assert_eq!(w.max_cmd_sn(), 15);
        for sn in 0..15 {
            assert!(w.admit(sn, false, ()).is_ok());
        }
        assert_eq!(w.max_cmd_sn(), 16);
        assert_eq!(w.drain().len(), 15);
    }

    #[test]
    fn managed_window_moves_only_on_set_depth() {
        let mut w: CmdWindow<()> = CmdWindow::new_managed(100, 4);
        assert_eq!(w.max_cmd_sn(), 103);
        for sn in 100..104 {
            assert!(w.admit(sn, false, ()).is_ok());
        }
        // Four commands delivered and still executing: the window is closed.
        assert_eq!((w.exp_cmd_sn(), w.max_cmd_sn()), (104, 103));
        assert!(w.admit(104, false, ()).is_err());
        // One finishes: the caller reports three executing out of four.
        w.set_depth(1);
        assert_eq!(w.max_cmd_sn(), 104);
        assert!(w.admit(104, false, ()).is_ok());
    }

    #[test]
    fn stat_sn_counter() {
        let mut s = StatSn::new(0xffff_ffff);
        assert_eq!(s.advance(), 0xffff_ffff);
        assert_eq!(s.peek(), 0);
        assert!(s.acknowledges(0));
        assert!(s.acknowledges(0xffff_fff0));
        assert!(!s.acknowledges(1));
    }
}
