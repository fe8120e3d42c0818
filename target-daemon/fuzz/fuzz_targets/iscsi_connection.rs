//! Arbitrary bytes as the full feature phase of one iSCSI connection: decoded into PDUs with
//! the receive codec, each fed to the sans-I/O connection machine
//! (`target_daemon::iscsi::machine`) under a simulated clock, with an in-memory session
//! (CmdSN window, task table, a small write buffer budget). The machine must never panic,
//! every PDU must leave a bounded number of actions, a command is executed at most once per
//! ITT while it runs, and the pending writes never outgrow the commands that started them.
#![no_main]

use std::collections::HashSet;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use scsi_proto::iscsi::pdu::{self, CodecConfig, Pdu};
use scsi_proto::iscsi::seq::CmdWindow;
use scsi_proto::iscsi::text::TextWriter;
use target_daemon::iscsi::machine::datain::DataInLimits;
use target_daemon::iscsi::machine::r2t::WriteParams;
use target_daemon::iscsi::machine::{Action, Admission, CommandData, ConnParams, Connection, Host};

struct Session {
    window: CmdWindow<Pdu>,
    tasks: HashSet<u32>,
    free: u64,
}

impl Host for Session {
    type Grant = u64;
    fn immediate_limit_reached(&self) -> bool {
        self.tasks.len() >= 128
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
    fn data_out_len(&self, _lun: u64, cdb: &[u8]) -> Option<u32> {
        // WRITE(10): transfer length in blocks of 512.
        (cdb.first() == Some(&0x2a) && cdb.len() >= 9)
            .then(|| u32::from(u16::from_be_bytes([cdb[7], cdb[8]])) * 512)
    }
    fn try_reserve(&mut self, bytes: u64) -> Option<u64> {
        (bytes <= self.free).then(|| {
            self.free -= bytes;
            bytes
        })
    }
    fn write_refused(&mut self, _itt: u32, _want: u32) {}
    fn watch_budget(&mut self, _waiting: bool) {}
    fn send_targets(&self, value: &str, out: &mut TextWriter) {
        if value == "All" || value.is_empty() {
            out.push("TargetName", "iqn.2026-01.fuzz:t");
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&knobs, rest)) = data.split_first() else {
        return;
    };
    let params = ConnParams {
        discovery: knobs & 1 != 0,
        write: WriteParams {
            first_burst: 8192,
            max_burst: 16384,
            max_outstanding_r2t: 1 + u32::from(knobs >> 6),
            initial_r2t: knobs & 2 != 0,
        },
        datain: DataInLimits {
            max_segment: 8192,
            max_burst: 16384,
        },
        immediate_data: knobs & 4 != 0,
        max_send_segment: 8192,
        nop_interval: Some(Duration::from_secs(5)),
        nop_timeout: Duration::from_secs(5),
        max_command_data: target_daemon::config::MAX_COMMAND_DATA,
    };
    let mut now = Instant::now();
    let mut m: Connection<u64> = Connection::new(params, now);
    let mut host = Session {
        window: CmdWindow::new(1, 16),
        tasks: HashSet::new(),
        free: 1 << 20,
    };
    let codec = CodecConfig {
        max_recv_data_segment_length: 65536,
        ..CodecConfig::default()
    };
    let mut buf = BytesMut::from(rest);
    let mut started: HashSet<u32> = HashSet::new();
    for _ in 0..256 {
        let pdu = match pdu::decode(&mut buf, &codec) {
            Ok(Some(p)) => p,
            Ok(None) => break,
            Err(e) if !e.is_fatal() => {
                m.handle_bad_pdu(now, e.reject_reason().zip(e.rejected_header().cloned()));
                continue;
            }
            Err(_) => break,
        };
        now += Duration::from_millis(u64::from(buf.len() as u8) * 40);
        if m.handle_pdu(now, pdu, &mut host).is_err() {
            return;
        }
        let mut actions = 0usize;
        loop {
            while let Some(a) = m.poll_action() {
                actions += 1;
                assert!(actions < 1024, "one PDU queued unbounded actions");
                if let Action::Execute(cmd) = a {
                    let itt = cmd.info.itt;
                    assert!(!host.tasks.contains(&itt), "ITT {itt:#x} executed twice");
                    // Commands with data still coming run as tasks until the data is in;
                    // the rest finish at once (as the inline path would).
                    if matches!(cmd.data, CommandData::Pending) {
                        host.tasks.insert(itt);
                        started.insert(itt);
                    }
                } else if let Action::WriteData { itt, .. } = a {
                    assert!(
                        started.contains(&itt),
                        "data for a write that never started"
                    );
                    host.tasks.remove(&itt);
                }
            }
            if !m.dispatch_released(&mut host) {
                break;
            }
        }
        assert!(
            m.pending_writes().all(|itt| host.tasks.contains(&itt)),
            "a pending write without its command"
        );
        if let Some(t) = m.poll_timeout() {
            if t <= now && m.handle_timeout(now).is_err() {
                return;
            }
        }
    }
});
