//! NOP-Out / NOP-In: answering the initiator's pings and pinging idle initiators.
//!
//! After `nop_interval_secs` without receiving anything the target sends a NOP-In ping
//! (ITT 0xffffffff, a fresh TTT); if nothing at all arrives within `nop_timeout_secs` after
//! that, the connection is considered dead and dropped.

use std::time::Duration;

use scsi_proto::iscsi::pdu::{Bhs, NopIn, Pdu, RESERVED_TAG};
use tokio::time::Instant;

use super::conn::{now, Conn};
use super::writer::Writer;
use crate::config::IscsiCfg;

/// Ping state of one connection.
pub struct NopState {
    interval: Option<Duration>,
    timeout: Duration,
    last_rx: Instant,
    outstanding: Option<(u32, Instant)>,
    next_ttt: u32,
}

impl NopState {
    /// From the configured interval and timeout (interval 0 disables pings).
    pub fn new(cfg: &IscsiCfg) -> Self {
        NopState {
            interval: (cfg.nop_interval_secs > 0)
                .then(|| Duration::from_secs(cfg.nop_interval_secs)),
            timeout: Duration::from_secs(cfg.nop_timeout_secs.max(1)),
            last_rx: now(),
            outstanding: None,
            next_ttt: 1,
        }
    }

    /// Something arrived: the initiator is alive.
    pub fn received(&mut self) {
        self.last_rx = now();
        self.outstanding = None;
    }

    /// Our ping with `ttt` was answered.
    pub fn answered(&mut self, ttt: u32) {
        if self.outstanding.is_some_and(|(t, _)| t == ttt) {
            self.outstanding = None;
        }
    }

    /// When the timer should fire next.
    pub fn next_deadline(&self) -> Instant {
        match (self.outstanding, self.interval) {
            (Some((_, sent)), _) => sent + self.timeout,
            (None, Some(i)) => self.last_rx + i,
            // Disabled: a far deadline (re-armed on every loop iteration anyway).
            (None, None) => now() + Duration::from_secs(3600),
        }
    }

    /// Timer fired: sends a ping if idle long enough; false when a ping went unanswered.
    pub async fn on_timer(&mut self, writer: &Writer) -> bool {
        let t = now();
        if let Some((_, sent)) = self.outstanding {
            return t < sent + self.timeout;
        }
        let Some(interval) = self.interval else {
            return true;
        };
        if t < self.last_rx + interval {
            return true;
        }
        let ttt = self.next_ttt;
        self.next_ttt = self.next_ttt.wrapping_add(1).max(1);
        if self.next_ttt == RESERVED_TAG {
            self.next_ttt = 1;
        }
        self.outstanding = Some((ttt, t));
        let ping = NopIn {
            lun: 0,
            itt: RESERVED_TAG,
            ttt,
            stat_sn: 0,
            exp_cmd_sn: 0,
            max_cmd_sn: 0,
        };
        writer.send(Pdu::header_only(ping)).await
    }
}

impl Conn {
    /// Answers an initiator's NOP-Out ping (ITT != 0xffffffff), echoing its ping data.
    pub(crate) async fn nop_out(&mut self, pdu: Pdu) {
        let Bhs::NopOut(h) = &pdu.bhs else { return };
        if h.itt == RESERVED_TAG {
            self.nop.answered(h.ttt);
            return;
        }
        let resp = NopIn {
            lun: h.lun,
            itt: h.itt,
            ttt: RESERVED_TAG,
            stat_sn: 0,
            exp_cmd_sn: 0,
            max_cmd_sn: 0,
        };
        // Echo the ping data, cut to what the initiator accepts in one PDU.
        let max = self.codec.max_send_data_segment_length as usize;
        let echo = pdu.data.slice(..pdu.data.len().min(max));
        let _ = self.writer.send(Pdu::new(resp, echo)).await;
    }
}
