//! The connection machine driven PDU by PDU under a simulated clock: an in-memory [`Host`]
//! stands for the session (CmdSN window, task table, write buffer budget, target list) and
//! time is an `Instant` the test moves by hand.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use bytes::Bytes;
use scsi_proto::iscsi::pdu::{
    Bhs, DataOut, LoginRequest, LoginStage, LogoutReason, LogoutRequest, NopOut, Pdu, RejectReason,
    Snack, SnackType, TaskAttribute, TaskMgmtRequest, TextRequest, TmFunction, RESERVED_TAG,
};
use scsi_proto::iscsi::seq::CmdWindow;
use scsi_proto::iscsi::text::TextWriter;

use super::*;

/// A grant in the fake budget: just the bytes.
type G = u64;

struct FakeHost {
    window: CmdWindow<Pdu>,
    tasks: HashSet<u32>,
    free: u64,
    waiting: bool,
    immediate_full: bool,
    refused: u32,
    targets: Vec<String>,
}

impl Host for FakeHost {
    type Grant = G;
    fn immediate_limit_reached(&self) -> bool {
        self.immediate_full
    }
    fn admit(&mut self, pdu: Pdu) -> Admission {
        let sn = pdu.bhs.cmd_sn().unwrap_or(0);
        match self.window.admit(sn, pdu.bhs.is_immediate(), pdu) {
            Ok(()) => Admission::Admitted,
            Err((why, _)) => Admission::Dropped(why),
        }
    }
    fn release(&mut self) -> Option<Pdu> {
        self.window.pop_ready()
    }
    fn task_exists(&self, itt: u32) -> bool {
        self.tasks.contains(&itt)
    }
    fn data_out_len(&self, _lun: u64, _cdb: &[u8]) -> Option<u32> {
        None
    }
    fn try_reserve(&mut self, bytes: u64) -> Option<G> {
        (bytes <= self.free).then(|| {
            self.free -= bytes;
            bytes
        })
    }
    fn write_refused(&mut self, _itt: u32, _want: u32) {
        self.refused += 1;
    }
    fn watch_budget(&mut self, waiting: bool) {
        self.waiting = waiting;
    }
    fn send_targets(&self, value: &str, out: &mut TextWriter) {
        for t in &self.targets {
            if value == "All" || value == t {
                out.push("TargetName", t);
                out.push("TargetAddress", "127.0.0.1:3260,1");
            }
        }
    }
}

const SEG: u32 = 8192;
const BURST: u32 = 16384;
const PING_AFTER: Duration = Duration::from_secs(5);
const PING_TIMEOUT: Duration = Duration::from_secs(2);

fn params() -> ConnParams {
    ConnParams {
        discovery: false,
        write: WriteParams {
            first_burst: 8192,
            max_burst: BURST,
            max_outstanding_r2t: 1,
            initial_r2t: true,
        },
        datain: DataInLimits {
            max_segment: SEG,
            max_burst: BURST,
        },
        immediate_data: true,
        max_send_segment: SEG,
        nop_interval: Some(PING_AFTER),
        nop_timeout: PING_TIMEOUT,
        max_command_data: crate::config::MAX_COMMAND_DATA,
    }
}

/// A machine, its host and a clock that moves only when told.
struct Sim {
    m: Connection<G>,
    host: FakeHost,
    now: Instant,
}

impl Sim {
    fn new() -> Sim {
        Sim::with(params())
    }

    fn with(p: ConnParams) -> Sim {
        let now = Instant::now();
        Sim {
            m: Connection::new(p, now),
            host: FakeHost {
                window: CmdWindow::new(1, 8),
                tasks: HashSet::new(),
                free: u64::MAX,
                waiting: false,
                immediate_full: false,
                refused: 0,
                targets: vec!["iqn.2026-01.test:a".into()],
            },
            now,
        }
    }

    fn advance(&mut self, d: Duration) {
        self.now += d;
    }

    /// Feeds one PDU, releases what the window lets through, and returns every action.
    fn feed(&mut self, pdu: Pdu) -> Vec<Action<G>> {
        self.m
            .handle_pdu(self.now, pdu, &mut self.host)
            .expect("the connection stays open");
        let mut out = self.drain();
        while self.m.dispatch_released(&mut self.host) {
            out.extend(self.drain());
        }
        out
    }

    fn drain(&mut self) -> Vec<Action<G>> {
        std::iter::from_fn(|| self.m.poll_action()).collect()
    }

    fn timeout(&mut self) -> Result<Vec<Action<G>>, Close> {
        self.m.handle_timeout(self.now)?;
        Ok(self.drain())
    }
}

fn cmd(itt: u32, cmd_sn: u32, cdb0: u8, edtl: u32, read: bool, write: bool) -> ScsiCommandBuilder {
    let mut cdb = [0u8; 16];
    cdb[0] = cdb0;
    ScsiCommandBuilder(scsi_proto::iscsi::pdu::ScsiCommand {
        immediate: false,
        final_bit: true,
        read,
        write,
        attr: TaskAttribute::Simple,
        lun: 0,
        itt,
        expected_data_transfer_length: edtl,
        cmd_sn,
        exp_stat_sn: 0,
        cdb,
        extended_cdb: None,
        bidi_read_length: None,
    })
}

struct ScsiCommandBuilder(scsi_proto::iscsi::pdu::ScsiCommand);

impl ScsiCommandBuilder {
    fn immediate(mut self) -> Self {
        self.0.immediate = true;
        self
    }
    fn pdu(self) -> Pdu {
        Pdu::header_only(self.0)
    }
    fn with_data(self, data: Bytes) -> Pdu {
        Pdu::new(self.0, data)
    }
}

fn read10(itt: u32, cmd_sn: u32, len: u32) -> Pdu {
    cmd(itt, cmd_sn, 0x28, len, true, false).pdu()
}

fn write10(itt: u32, cmd_sn: u32, len: u32) -> ScsiCommandBuilder {
    cmd(itt, cmd_sn, 0x2a, len, false, true)
}

fn data_out(itt: u32, ttt: u32, data_sn: u32, offset: u32, len: usize, fin: bool) -> Pdu {
    Pdu::new(
        DataOut {
            final_bit: fin,
            lun: 0,
            itt,
            ttt,
            exp_stat_sn: 0,
            data_sn,
            buffer_offset: offset,
        },
        Bytes::from(vec![offset as u8; len]),
    )
}

fn nop_out(itt: u32, ttt: u32, cmd_sn: u32, data: &'static [u8]) -> Pdu {
    Pdu::new(
        NopOut {
            immediate: itt == RESERVED_TAG,
            lun: 0,
            itt,
            ttt,
            cmd_sn,
            exp_stat_sn: 0,
        },
        Bytes::from_static(data),
    )
}

fn text(itt: u32, ttt: u32, cmd_sn: u32, data: &'static [u8]) -> Pdu {
    Pdu::new(
        TextRequest {
            immediate: false,
            final_bit: true,
            continue_bit: false,
            lun: 0,
            itt,
            ttt,
            cmd_sn,
            exp_stat_sn: 0,
        },
        Bytes::from_static(data),
    )
}

fn executed(actions: &[Action<G>]) -> Vec<u32> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Execute(c) => Some(c.info.itt),
            _ => None,
        })
        .collect()
}

fn rejects(actions: &[Action<G>]) -> Vec<RejectReason> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Reject { reason, .. } => Some(*reason),
            _ => None,
        })
        .collect()
}

/// The R2Ts among the actions: (ITT, TTT, R2TSN, offset, length).
fn r2ts(actions: &[Action<G>]) -> Vec<(u32, u32, u32, u32, u32)> {
    actions
        .iter()
        .flat_map(|a| match a {
            Action::SendAll(ps) => ps.iter().collect::<Vec<_>>(),
            _ => Vec::new(),
        })
        .filter_map(|p| match &p.bhs {
            Bhs::R2t(r) => Some((
                r.itt,
                r.ttt,
                r.r2t_sn,
                r.buffer_offset,
                r.desired_data_transfer_length,
            )),
            _ => None,
        })
        .collect()
}

/// A write's data as the tests look at it: (length, R2Ts, grant) or the error.
type Delivered = Result<(usize, u32, Option<G>), DataError>;

fn write_data(actions: &[Action<G>]) -> Vec<(u32, Delivered)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::WriteData { itt, result } => Some((
                *itt,
                match result {
                    Ok(w) => Ok((w.data.iter().map(Bytes::len).sum(), w.r2ts, w.grant)),
                    Err(DataError::Protocol(why)) => Err(DataError::Protocol(why)),
                    Err(DataError::NoBuffer) => Err(DataError::NoBuffer),
                },
            )),
            _ => None,
        })
        .collect()
}

#[test]
fn an_in_order_read_executes_at_once_and_may_run_inline() {
    let mut s = Sim::new();
    let a = s.feed(read10(0x10, 1, 4096));
    let [Action::Execute(c)] = &a[..] else {
        panic!("one Execute, got {a:?}");
    };
    assert_eq!((c.info.itt, c.expected_data_in, c.cmd_sn), (0x10, 4096, 1));
    assert!(c.may_run_inline, "a small READ is polled inline");
    assert!(matches!(&c.data, CommandData::Ready(d, None) if d.is_empty()));
}

#[test]
fn commands_ahead_of_exp_cmd_sn_wait_for_the_gap_then_run_in_cmd_sn_order() {
    let mut s = Sim::new();
    assert!(
        s.feed(read10(3, 3, 512)).is_empty(),
        "CmdSN 3 waits for 1 and 2"
    );
    assert!(s.feed(read10(2, 2, 512)).is_empty(), "CmdSN 2 waits for 1");
    let a = s.feed(read10(1, 1, 512));
    assert_eq!(executed(&a), [1, 2, 3], "released in CmdSN order");
    // A CmdSN already delivered is a duplicate: dropped silently.
    assert!(s.feed(read10(9, 2, 512)).is_empty());
}

#[test]
fn only_an_admitted_pdu_asks_the_shell_to_release_the_window() {
    let mut s = Sim::new();
    let admitted = |s: &mut Sim, pdu| {
        let now = s.now;
        let r = s.m.handle_pdu(now, pdu, &mut s.host).expect("stays open");
        while s.m.dispatch_released(&mut s.host) {}
        s.drain();
        r
    };
    assert!(admitted(&mut s, read10(1, 1, 512)), "in the window");
    assert!(
        !admitted(&mut s, read10(2, 1, 512)),
        "a duplicate is dropped"
    );
    assert!(!admitted(&mut s, read10(3, 900, 512)), "outside the window");
    assert!(
        !admitted(&mut s, data_out(4, 1, 0, 0, 8, true)),
        "Data-Out has no CmdSN"
    );
    s.host.immediate_full = true;
    let imm = cmd(5, 2, 0x00, 0, false, false).immediate().pdu();
    assert!(!admitted(&mut s, imm), "a rejected immediate command");
}

#[test]
fn immediate_commands_bypass_the_window_until_their_bound() {
    let mut s = Sim::new();
    assert!(s.feed(read10(5, 5, 512)).is_empty(), "a gap is open");
    // An immediate command carries the next CmdSN without taking it and runs at once.
    let a = s.feed(cmd(6, 1, 0x00, 0, false, false).immediate().pdu());
    assert_eq!(executed(&a), [6]);
    s.host.immediate_full = true;
    let a = s.feed(cmd(7, 1, 0x00, 0, false, false).immediate().pdu());
    assert_eq!(rejects(&a), [RejectReason::ImmediateCommandReject]);
    assert!(executed(&a).is_empty());
}

#[test]
fn a_write_is_solicited_burst_by_burst_and_its_data_checked() {
    let mut s = Sim::new();
    let total = 2 * BURST + 4096;
    let a = s.feed(write10(0x20, 1, total).pdu());
    let [Action::Execute(c), _] = &a[..] else {
        panic!("Execute then R2Ts, got {a:?}");
    };
    assert!(matches!(c.data, CommandData::Pending));
    assert!(
        !c.may_run_inline,
        "a command waiting for data is never inline"
    );
    // MaxOutstandingR2T = 1: one burst at a time.
    let r = r2ts(&a);
    assert_eq!(r.len(), 1);
    let (itt, ttt, sn, off, len) = r[0];
    assert_eq!((itt, sn, off, len), (0x20, 0, 0, BURST));
    // The burst in two Data-Out PDUs (DataSN 0, 1); the F bit ends it and the next R2T
    // follows.
    assert!(s.feed(data_out(0x20, ttt, 0, 0, 8192, false)).is_empty());
    let a = s.feed(data_out(0x20, ttt, 1, 8192, 8192, true));
    let r = r2ts(&a);
    assert_eq!(r.len(), 1);
    let (_, ttt2, sn, off, len) = r[0];
    assert_eq!((sn, off, len), (1, BURST, BURST));
    assert_ne!(ttt2, ttt, "each R2T has its own TTT");
    // A Data-Out with the wrong DataSN fails the command's data (DATA PHASE ERROR).
    let a = s.feed(data_out(0x20, ttt2, 1, BURST, 8192, false));
    assert_eq!(
        write_data(&a),
        [(
            0x20,
            Err(DataError::Protocol("Data-Out DataSN out of sequence"))
        )]
    );
    // The write is gone: its late data is dropped, its ITT may be used again.
    assert!(s
        .feed(data_out(0x20, ttt2, 0, BURST, 8192, false))
        .is_empty());
    assert_eq!(s.m.pending_writes().count(), 0);
}

#[test]
fn a_complete_write_hands_its_data_and_r2t_count_to_the_command() {
    let mut s = Sim::new();
    let total = BURST + 4096;
    // 4 KiB of immediate data, then R2Ts for the rest.
    let a = s.feed(write10(0x21, 1, total).with_data(Bytes::from(vec![1u8; 4096])));
    let r = r2ts(&a);
    assert_eq!(r.len(), 1);
    let (_, ttt, _, off, len) = r[0];
    assert_eq!((off, len), (4096, BURST));
    // Out-of-order offset: refused.
    let mut s2 = Sim::new();
    let a2 = s2.feed(write10(0x21, 1, total).with_data(Bytes::from(vec![1u8; 4096])));
    let (_, ttt_b, ..) = r2ts(&a2)[0];
    let bad = s2.feed(data_out(0x21, ttt_b, 0, 8192, 4096, false));
    assert!(matches!(
        write_data(&bad)[..],
        [(0x21, Err(DataError::Protocol(_)))]
    ));
    // In order: complete after one burst.
    assert!(s.feed(data_out(0x21, ttt, 0, 4096, 8192, false)).is_empty());
    let a = s.feed(data_out(0x21, ttt, 1, 4096 + 8192, 8192, true));
    assert_eq!(
        write_data(&a),
        [(0x21, Ok((total as usize, 1, Some(u64::from(total)))))]
    );
}

/// A write made of large PDUs reaches the command in the pieces it arrived in, each the very
/// slice the reader decoded (no gathering copy), in buffer-offset order; small payloads
/// between them are gathered into one piece of their own.
#[test]
fn a_multi_pdu_write_hands_over_the_received_slices_in_order() {
    let seg = 32 * 1024;
    let mut s = Sim::with(ConnParams {
        write: WriteParams {
            first_burst: seg as u32,
            max_burst: 4 * seg as u32,
            max_outstanding_r2t: 1,
            initial_r2t: true,
        },
        ..params()
    });
    let total = (seg + 2 * 512 + 2 * seg) as u32;
    let imm = Bytes::from(vec![0xa0u8; seg]);
    let a = s.feed(write10(0x50, 1, total).with_data(imm.clone()));
    let r = r2ts(&a);
    assert_eq!(r.len(), 1);
    let (_, ttt, _, off, len) = r[0];
    assert_eq!((off, len), (seg as u32, total - seg as u32));
    // Two small payloads, then two large ones, all in the one burst.
    let mut sent = Vec::new();
    let mut offset = seg as u32;
    for (sn, n) in [512usize, 512, seg, seg].into_iter().enumerate() {
        let p = data_out(0x50, ttt, sn as u32, offset, n, sn == 3);
        sent.push(p.data.clone());
        offset += n as u32;
        let a = s.feed(p);
        if sn < 3 {
            assert!(write_data(&a).is_empty(), "not complete after PDU {sn}");
            continue;
        }
        let mut done: Vec<_> = a
            .into_iter()
            .filter_map(|x| match x {
                Action::WriteData { itt, result } => Some((itt, result)),
                _ => None,
            })
            .collect();
        assert_eq!(done.len(), 1);
        let (itt, result) = done.remove(0);
        assert_eq!(itt, 0x50);
        let w = result.expect("complete");
        let lens: Vec<usize> = w.data.iter().map(Bytes::len).collect();
        assert_eq!(
            lens,
            [seg, 1024, seg, seg],
            "immediate, gathered small, two large"
        );
        assert_eq!(
            w.data[0].as_ptr(),
            imm.as_ptr(),
            "immediate data not copied"
        );
        assert_eq!(w.data[2].as_ptr(), sent[2].as_ptr(), "Data-Out not copied");
        assert_eq!(w.data[3].as_ptr(), sent[3].as_ptr(), "Data-Out not copied");
        let flat: Vec<u8> = w.data.iter().flat_map(|b| b.iter().copied()).collect();
        let mut want = vec![0xa0u8; seg];
        for p in &sent {
            want.extend_from_slice(p);
        }
        assert_eq!(flat, want, "the bytes, in offset order");
    }
}

#[test]
fn a_write_waits_for_budget_before_its_first_r2t() {
    let mut s = Sim::new();
    s.host.free = 1000;
    let a = s.feed(write10(0x30, 1, 8192).pdu());
    assert_eq!(executed(&a), [0x30]);
    assert!(
        r2ts(&a).is_empty(),
        "no R2T without budget for all the data"
    );
    assert!(s.host.waiting, "the shell is asked to watch for budget");
    s.host.free = 1 << 20;
    s.m.budget_freed(&mut s.host);
    let a = s.drain();
    assert_eq!(r2ts(&a).len(), 1);
    assert!(!s.host.waiting);
}

#[test]
fn unsolicited_data_the_budget_cannot_hold_ends_in_task_set_full() {
    let mut s = Sim::new();
    s.host.free = 0;
    let a = s.feed(write10(0x31, 1, 4096).with_data(Bytes::from(vec![7u8; 4096])));
    let [Action::Result(pdus)] = &a[..] else {
        panic!("a result, got {a:?}");
    };
    let Bhs::ScsiResponse(r) = &pdus[0].bhs else {
        panic!("SCSI Response");
    };
    assert_eq!((r.itt, r.status), (0x31, datain::TASK_SET_FULL));
    assert_eq!(s.host.refused, 1, "the refusal is counted");
}

#[test]
fn a_command_beyond_the_data_backstop_is_refused_before_any_data() {
    let mut s = Sim::new();
    let a = s.feed(write10(0x32, 1, params().max_command_data + 1).pdu());
    let [Action::Result(pdus)] = &a[..] else {
        panic!("a result, got {a:?}");
    };
    let Bhs::ScsiResponse(r) = &pdus[0].bhs else {
        panic!("SCSI Response");
    };
    assert_eq!(r.status, datain::CHECK_CONDITION);
    assert_eq!(
        (pdus[0].data[2 + 2] & 0x0f, pdus[0].data[2 + 12]),
        (0x05, 0x24)
    );
}

#[test]
fn an_idle_initiator_is_pinged_and_dropped_when_the_ping_goes_unanswered() {
    let mut s = Sim::new();
    let t0 = s.now;
    assert_eq!(s.m.poll_timeout(), Some(t0 + PING_AFTER));
    s.advance(PING_AFTER - Duration::from_millis(1));
    assert!(
        s.timeout().expect("alive").is_empty(),
        "not idle long enough"
    );
    s.advance(Duration::from_millis(1));
    let a = s.timeout().expect("alive");
    let [Action::Send(p)] = &a[..] else {
        panic!("a ping, got {a:?}");
    };
    let Bhs::NopIn(ping) = &p.bhs else {
        panic!("NOP-In");
    };
    assert_eq!(ping.itt, RESERVED_TAG, "an unsolicited ping");
    assert_eq!(s.m.poll_timeout(), Some(s.now + PING_TIMEOUT));
    s.advance(PING_TIMEOUT);
    assert!(matches!(s.timeout(), Err(Close::NopTimeout)));
}

#[test]
fn an_answered_ping_rearms_the_idle_timer() {
    let mut s = Sim::new();
    s.advance(PING_AFTER);
    let a = s.timeout().expect("alive");
    let Some(Action::Send(p)) = a.first() else {
        panic!("a ping");
    };
    let Bhs::NopIn(ping) = &p.bhs else {
        panic!("NOP-In");
    };
    s.advance(Duration::from_secs(1));
    assert!(s.feed(nop_out(RESERVED_TAG, ping.ttt, 1, b"")).is_empty());
    assert_eq!(s.m.poll_timeout(), Some(s.now + PING_AFTER));
    s.advance(PING_TIMEOUT);
    assert!(s.timeout().expect("answered: alive").is_empty());
}

#[test]
fn any_pdu_counts_as_traffic() {
    let mut s = Sim::new();
    s.advance(Duration::from_secs(4));
    s.feed(read10(1, 1, 512));
    assert_eq!(s.m.poll_timeout(), Some(s.now + PING_AFTER));
}

#[test]
fn a_nop_out_ping_is_echoed_cut_to_the_initiators_segment_length() {
    let mut s = Sim::with(ConnParams {
        max_send_segment: 4,
        ..params()
    });
    let a = s.feed(nop_out(0x40, RESERVED_TAG, 1, b"abcdefgh"));
    let [Action::Send(p)] = &a[..] else {
        panic!("the echo, got {a:?}");
    };
    let Bhs::NopIn(h) = &p.bhs else {
        panic!("NOP-In");
    };
    assert_eq!((h.itt, &p.data[..]), (0x40, &b"abcd"[..]));
}

#[test]
fn logout_is_handed_to_the_shell_and_unknown_reasons_rejected() {
    let mut s = Sim::new();
    let logout = |itt, sn, reason| {
        Pdu::header_only(LogoutRequest {
            immediate: false,
            reason,
            itt,
            cid: 3,
            cmd_sn: sn,
            exp_stat_sn: 0,
        })
    };
    let a = s.feed(logout(0x50, 1, LogoutReason::Other(9)));
    assert_eq!(rejects(&a), [RejectReason::InvalidPduField]);
    let a = s.feed(logout(0x51, 2, LogoutReason::CloseSession));
    assert!(matches!(
        &a[..],
        [Action::Logout {
            itt: 0x51,
            reason: LogoutReason::CloseSession,
            cid: 3
        }]
    ));
}

#[test]
fn task_management_goes_to_the_shell_except_in_discovery() {
    let tmf = || {
        Pdu::header_only(TaskMgmtRequest {
            immediate: true,
            function: TmFunction::AbortTask,
            lun: 0,
            itt: 0x60,
            referenced_task_tag: 0x10,
            cmd_sn: 1,
            exp_stat_sn: 0,
            ref_cmd_sn: 1,
            exp_data_sn: 0,
        })
    };
    let mut s = Sim::new();
    assert!(matches!(&s.feed(tmf())[..], [Action::TaskMgmt(_)]));
    let mut d = Sim::with(ConnParams {
        discovery: true,
        ..params()
    });
    assert_eq!(rejects(&d.feed(tmf())), [RejectReason::ProtocolError]);
}

#[test]
fn send_targets_is_answered_and_a_long_answer_continues_by_ttt() {
    let mut s = Sim::new();
    let a = s.feed(text(0x70, RESERVED_TAG, 1, b"SendTargets=All\0"));
    let [Action::Send(p)] = &a[..] else {
        panic!("a Text Response, got {a:?}");
    };
    let Bhs::TextResponse(h) = &p.bhs else {
        panic!("Text Response");
    };
    assert!(h.final_bit && !h.continue_bit);
    assert!(p.data.starts_with(b"TargetName=iqn.2026-01.test:a\0"));

    // An answer longer than the initiator's segment goes in pieces, each fetched with the
    // TTT of the one before.
    let mut s = Sim::with(ConnParams {
        max_send_segment: 16,
        ..params()
    });
    let a = s.feed(text(0x71, RESERVED_TAG, 1, b"SendTargets=All\0"));
    let [Action::Send(p)] = &a[..] else {
        panic!("first piece");
    };
    let Bhs::TextResponse(h) = &p.bhs else {
        panic!("Text Response");
    };
    assert!(h.continue_bit && !h.final_bit);
    assert_eq!(p.data.len(), 16);
    let a = s.feed(text(0x71, h.ttt, 2, b""));
    assert!(matches!(&a[..], [Action::Send(_)]));
    // A continuation naming a TTT we never gave is refused.
    let a = s.feed(text(0x71, 0x1234, 3, b""));
    assert_eq!(rejects(&a), [RejectReason::InvalidPduField]);
}

#[test]
fn malformed_or_unexpected_pdus_are_rejected() {
    let mut s = Sim::new();
    let snack = Pdu::header_only(Snack {
        kind: SnackType::DataR2t,
        lun: 0,
        itt: 1,
        ttt: RESERVED_TAG,
        exp_stat_sn: 0,
        beg_run: 0,
        run_length: 0,
    });
    assert_eq!(rejects(&s.feed(snack)), [RejectReason::CommandNotSupported]);
    let login = Pdu::header_only(LoginRequest {
        transit: true,
        continue_bit: false,
        csg: LoginStage::Operational,
        nsg: LoginStage::FullFeature,
        version_max: 0,
        version_min: 0,
        isid: 1,
        tsih: 1,
        itt: 2,
        cid: 0,
        cmd_sn: 1,
        exp_stat_sn: 0,
    });
    assert_eq!(rejects(&s.feed(login)), [RejectReason::ProtocolError]);
    // The reserved ITT, an ITT still running, and immediate data on a READ.
    assert_eq!(
        rejects(&s.feed(read10(RESERVED_TAG, 1, 512))),
        [RejectReason::ProtocolError]
    );
    s.host.tasks.insert(0x80);
    assert_eq!(
        rejects(&s.feed(read10(0x80, 2, 512))),
        [RejectReason::ProtocolError]
    );
    let a = s.feed(cmd(0x81, 3, 0x28, 512, true, false).with_data(Bytes::from_static(b"x")));
    assert_eq!(rejects(&a), [RejectReason::ProtocolError]);
    // Immediate data longer than FirstBurstLength.
    let a = s.feed(write10(0x82, 4, 65536).with_data(Bytes::from(vec![0u8; 9000])));
    assert_eq!(rejects(&a), [RejectReason::ProtocolError]);
    // A PDU the decoder refused but could skip: rejected with the reason it gave.
    s.m.handle_bad_pdu(
        s.now,
        Some((
            RejectReason::DataDigestError,
            Bytes::from_static(&[0u8; 48]),
        )),
    );
    assert_eq!(rejects(&s.drain()), [RejectReason::DataDigestError]);
    // The rejected header travels in the Reject: the offending BHS, 48 bytes.
    let a = s.feed(read10(RESERVED_TAG, 5, 512));
    let Some(Action::Reject { header, .. }) = a.first() else {
        panic!("reject");
    };
    assert_eq!(header.len(), 48);
    assert_eq!(
        u32::from_be_bytes([header[16], header[17], header[18], header[19]]),
        RESERVED_TAG
    );
}

#[test]
fn scsi_commands_in_a_discovery_session_are_rejected() {
    let mut s = Sim::with(ConnParams {
        discovery: true,
        ..params()
    });
    assert_eq!(
        rejects(&s.feed(read10(1, 1, 512))),
        [RejectReason::ProtocolError]
    );
}

#[test]
fn data_in_is_split_by_segment_and_burst_with_status_in_the_last_pdu() {
    let info = CmdInfo {
        itt: 9,
        lun_raw: 0,
        edtl: 3 * SEG,
        read: true,
        write: false,
        spdtl: None,
        r2t_count: 0,
    };
    let limits = DataInLimits {
        max_segment: SEG,
        max_burst: 2 * SEG,
    };
    let data = Bytes::from(vec![5u8; 3 * SEG as usize]);
    let pdus = datain::result_pdus(&info, datain::GOOD, None, data.clone(), 0, limits);
    let got: Vec<_> = pdus
        .iter()
        .map(|p| match &p.bhs {
            Bhs::DataIn(h) => (h.data_sn, h.buffer_offset, h.final_bit, h.status),
            other => panic!("only Data-In, got {other:?}"),
        })
        .collect();
    assert_eq!(
        got,
        [
            (0, 0, false, None),
            (1, SEG, true, None),
            (2, 2 * SEG, true, Some(datain::GOOD)),
        ],
        "F at the burst boundary and at the end; status piggybacked on the last"
    );
    // With sense data the status goes in a SCSI Response after the data, ExpDataSN = 3.
    let sense = datain::fixed_sense(Sense::new(
        SenseKey::IllegalRequest,
        asc::INVALID_FIELD_IN_CDB,
    ));
    let pdus = datain::result_pdus(&info, datain::CHECK_CONDITION, Some(sense), data, 0, limits);
    let Some(Bhs::ScsiResponse(r)) = pdus.last().map(|p| &p.bhs) else {
        panic!("SCSI Response last");
    };
    assert_eq!(
        (pdus.len(), r.exp_data_sn, r.status),
        (4, 3, datain::CHECK_CONDITION)
    );
}
