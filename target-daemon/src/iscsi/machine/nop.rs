//! NOP-Out / NOP-In: answering the initiator's pings and pinging idle initiators.
//!
//! After the NOP interval without receiving anything the target sends a NOP-In ping
//! (ITT 0xffffffff, a fresh TTT); if nothing at all arrives within the NOP timeout after
//! that, the connection is considered dead and dropped. Time is passed in: this module never
//! reads a clock, so tests drive it with simulated time.

use std::time::{Duration, Instant};

use bytes::Bytes;
use scsi_proto::iscsi::pdu::{NopIn, NopOut, Pdu, RESERVED_TAG};

/// Ping state of one connection.
#[derive(Debug)]
pub struct Pinger {
    interval: Option<Duration>,
    timeout: Duration,
    last_rx: Instant,
    outstanding: Option<(u32, Instant)>,
    next_ttt: u32,
}

/// What the NOP timer decided when it fired.
#[derive(Debug)]
pub enum PingTimer {
    /// Nothing to do yet.
    Idle,
    /// Send this ping.
    Ping(Pdu),
    /// The ping went unanswered: the connection is dead.
    Dead,
}

impl Pinger {
    /// Pings after `interval` of silence (`None` disables pings) and gives up `timeout`
    /// after a ping; `now` counts as the last time something arrived.
    pub fn new(interval: Option<Duration>, timeout: Duration, now: Instant) -> Self {
        Pinger {
            interval,
            timeout,
            last_rx: now,
            outstanding: None,
            next_ttt: 1,
        }
    }

    /// Something arrived: the initiator is alive.
    pub fn received(&mut self, now: Instant) {
        self.last_rx = now;
        self.outstanding = None;
    }

    /// Our ping with `ttt` was answered.
    pub fn answered(&mut self, ttt: u32) {
        if self.outstanding.is_some_and(|(t, _)| t == ttt) {
            self.outstanding = None;
        }
    }

    /// When the timer should fire next; `None` when pings are disabled.
    pub fn deadline(&self) -> Option<Instant> {
        match (self.outstanding, self.interval) {
            (Some((_, sent)), _) => Some(sent + self.timeout),
            (None, Some(i)) => Some(self.last_rx + i),
            (None, None) => None,
        }
    }

    /// The timer fired at `now`.
    pub fn on_timer(&mut self, now: Instant) -> PingTimer {
        if let Some((_, sent)) = self.outstanding {
            return if now < sent + self.timeout {
                PingTimer::Idle
            } else {
                PingTimer::Dead
            };
        }
        let Some(interval) = self.interval else {
            return PingTimer::Idle;
        };
        if now < self.last_rx + interval {
            return PingTimer::Idle;
        }
        let ttt = self.next_ttt;
        self.next_ttt = self.next_ttt.wrapping_add(1).max(1);
        if self.next_ttt == RESERVED_TAG {
            self.next_ttt = 1;
        }
        self.outstanding = Some((ttt, now));
        PingTimer::Ping(Pdu::header_only(NopIn {
            lun: 0,
            itt: RESERVED_TAG,
            ttt,
            stat_sn: 0,
            exp_cmd_sn: 0,
            max_cmd_sn: 0,
        }))
    }
}

/// The answer to an initiator's NOP-Out ping (ITT != 0xffffffff): its ping data echoed, cut
/// to what the initiator accepts in one PDU (`max_segment`).
pub fn echo(h: &NopOut, data: &Bytes, max_segment: u32) -> Pdu {
    let resp = NopIn {
        lun: h.lun,
        itt: h.itt,
        ttt: RESERVED_TAG,
        stat_sn: 0,
        exp_cmd_sn: 0,
        max_cmd_sn: 0,
    };
    Pdu::new(resp, data.slice(..data.len().min(max_segment as usize)))
}
