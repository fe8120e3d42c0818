//! A null iSCSI target: the machine's limit for any iSCSI target, as a benchmark reference
//! (tests/scripts/bench-vs-tgtd.sh, issue 17).
//!
//! It speaks enough iSCSI for libiscsi initiators (iscsi-ls, iscsi-perf, fio's libiscsi
//! engine, qemu) and nothing more, with no storage behind it: READs return zeros, WRITEs take
//! their data (immediate, unsolicited and solicited by R2T, as lunard negotiates them) and
//! answer GOOD, and INQUIRY, READ CAPACITY, REPORT LUNS, TEST UNIT READY, SYNCHRONIZE CACHE
//! and MODE SENSE answer what an initiator needs to start. It uses scsi-proto's PDU codec
//! and login state machine, lunard's own, so a ratio against it counts the PDU work every
//! target does and isolates what lunard adds: the device server, the store, the runtime.
//! One blocking thread per connection, reading whatever has arrived and answering every
//! complete PDU in it with one vectored write.
//!
//! ```text
//! lunar-null-target [--listen 127.0.0.1:0] [--blocks N]   # prints "listening on ADDR"
//! lunar-null-target --tcp-throughput SECONDS              # one-stream loopback TCP, MiB/s
//! ```
//!
//! The target is `iqn.2026-11.io.lunar:null`, LUN 0, `N` 512-byte blocks (default 1 GiB).
//! `--tcp-throughput` measures the other limit: one TCP stream over loopback, 1 MiB writes
//! into a reader that discards them.

use std::collections::HashMap;
use std::io::{IoSlice, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::{Bytes, BytesMut};
use scsi_proto::iscsi::discovery::{self, DiscoveredTarget};
use scsi_proto::iscsi::login::{
    ExistingSession, LoginConnection, LoginPolicy, LoginStep, TargetInfo,
};
use scsi_proto::iscsi::negotiate::{SessionParams, SessionType, TargetSettings};
use scsi_proto::iscsi::pdu::{
    self, Bhs, CodecConfig, DataIn, EncodedPdu, LogoutResponse, LogoutResponseCode, NopIn, Pdu,
    R2t, ScsiCommand, ScsiResponse, TaskMgmtResponse, TextResponse, TmResponse,
};
use scsi_proto::iscsi::text;
use scsi_proto::scsi::capacity::Capacity;
use scsi_proto::scsi::inquiry::StandardInquiry;
use scsi_proto::scsi::report_luns;
use scsi_proto::scsi::sense::{Sense, SenseFormat};

const IQN: &str = "iqn.2026-11.io.lunar:null";
const BLOCK: u32 = 512;
const GOOD: u8 = 0x00;
const CHECK_CONDITION: u8 = 0x02;
/// Commands the initiator may have outstanding (MaxCmdSN - ExpCmdSN + 1), as lunard's default.
const QUEUE_DEPTH: u32 = 64;
/// Zeros for READ data (sliced, never copied).
const ZEROS_LEN: usize = 1 << 20;

struct Policy {
    tsih: AtomicU16,
}

impl LoginPolicy for Policy {
    fn target(&self, target_name: &str) -> Option<TargetInfo> {
        target_name
            .eq_ignore_ascii_case(IQN)
            .then(TargetInfo::default)
    }
    fn initiator_allowed(&self, _target: &str, _initiator: &str) -> bool {
        true
    }
    fn discovery_chap(&self) -> Option<scsi_proto::iscsi::chap::ChapConfig> {
        None
    }
    fn allocate_tsih(&self) -> Option<u16> {
        Some(self.tsih.fetch_add(1, Ordering::Relaxed).max(1))
    }
    fn session(&self, _tsih: u16, _cid: u16) -> Option<ExistingSession> {
        None
    }
}

/// A WRITE whose data is still arriving.
struct PendingWrite {
    edtl: u32,
    received: u32,
    /// Where the next R2T starts.
    next_r2t: u32,
    /// Outstanding R2Ts.
    outstanding: u32,
    r2t_sn: u32,
    lun: u64,
}

/// One full-feature-phase connection.
struct Conn {
    sock: TcpStream,
    cfg: CodecConfig,
    params: SessionParams,
    session_type: SessionType,
    target_name: Option<String>,
    local: SocketAddr,
    stat_sn: u32,
    exp_cmd_sn: u32,
    blocks: u64,
    zeros: Bytes,
    writes: HashMap<u32, PendingWrite>,
    next_ttt: u32,
    out: Vec<EncodedPdu>,
    scratch: BytesMut,
    closing: bool,
}

impl Conn {
    fn max_cmd_sn(&self) -> u32 {
        self.exp_cmd_sn.wrapping_add(QUEUE_DEPTH - 1)
    }

    /// The StatSN for a status-bearing PDU (and advance it).
    fn next_stat_sn(&mut self) -> u32 {
        let s = self.stat_sn;
        self.stat_sn = self.stat_sn.wrapping_add(1);
        s
    }

    fn send(&mut self, bhs: impl Into<Bhs>, data: Bytes) -> anyhow::Result<()> {
        let pdu = Pdu::new(bhs, data);
        let enc = pdu
            .encode_parts(&self.cfg, &mut self.scratch)
            .context("encoding a PDU")?;
        self.out.push(enc);
        Ok(())
    }

    /// Write every queued PDU with as few syscalls as the socket allows.
    fn flush(&mut self) -> anyhow::Result<()> {
        if self.out.is_empty() {
            return Ok(());
        }
        let mut slices: Vec<IoSlice<'_>> = Vec::with_capacity(self.out.len() * 3);
        for p in &self.out {
            slices.push(IoSlice::new(&p.header));
            if !p.data.is_empty() {
                slices.push(IoSlice::new(&p.data));
            }
            if !p.trailer().is_empty() {
                slices.push(IoSlice::new(p.trailer()));
            }
        }
        let mut rest: &mut [IoSlice<'_>] = &mut slices;
        while !rest.is_empty() {
            let n = self.sock.write_vectored(rest).context("writing")?;
            if n == 0 {
                bail!("connection closed while writing");
            }
            IoSlice::advance_slices(&mut rest, n);
        }
        drop(slices);
        self.out.clear();
        Ok(())
    }

    fn status(
        &mut self,
        itt: u32,
        status: u8,
        sense: Option<Sense>,
        residual: Option<(bool, u32)>,
    ) -> anyhow::Result<()> {
        let data = match sense {
            Some(s) => pdu::sense_segment(&s.encode(SenseFormat::Fixed)).context("sense")?,
            None => Bytes::new(),
        };
        let stat_sn = self.next_stat_sn();
        let (over, under, count) = match residual {
            Some((true, n)) => (true, false, n),
            Some((false, n)) => (false, true, n),
            None => (false, false, 0),
        };
        let rsp = ScsiResponse {
            bidi_overflow: false,
            bidi_underflow: false,
            overflow: over,
            underflow: under,
            response: 0,
            status,
            itt,
            snack_tag: 0,
            stat_sn,
            exp_cmd_sn: self.exp_cmd_sn,
            max_cmd_sn: self.max_cmd_sn(),
            exp_data_sn: 0,
            bidi_read_residual_count: 0,
            residual_count: count,
        };
        self.send(rsp, data)
    }

    /// Answer `data` (at most `edtl` bytes of it) as Data-In with the status collapsed into
    /// the last PDU.
    fn data_in(&mut self, itt: u32, edtl: u32, data: Bytes) -> anyhow::Result<()> {
        let len = data.len().min(edtl as usize);
        let seg = self.cfg.max_send_data_segment_length.max(512) as usize;
        let residual = (edtl as usize - len) as u32;
        let mut off = 0usize;
        let mut data_sn = 0u32;
        loop {
            let n = seg.min(len - off);
            let last = off + n == len;
            let stat_sn = if last {
                self.next_stat_sn()
            } else {
                self.stat_sn
            };
            let d = DataIn {
                final_bit: last,
                ack: false,
                overflow: false,
                underflow: last && residual > 0,
                status: last.then_some(GOOD),
                lun: 0,
                itt,
                ttt: 0xffff_ffff,
                stat_sn,
                exp_cmd_sn: self.exp_cmd_sn,
                max_cmd_sn: self.max_cmd_sn(),
                data_sn,
                buffer_offset: off as u32,
                residual_count: if last { residual } else { 0 },
            };
            self.send(d, data.slice(off..off + n))?;
            data_sn += 1;
            off += n;
            if last {
                return Ok(());
            }
        }
    }

    fn zeros(&self, len: u32) -> Bytes {
        // Reads longer than the zero buffer are answered in pieces of it.
        self.zeros.slice(..(len as usize).min(ZEROS_LEN))
    }

    fn read(&mut self, itt: u32, edtl: u32) -> anyhow::Result<()> {
        let mut off = 0u32;
        let seg = self.cfg.max_send_data_segment_length.max(512);
        let mut data_sn = 0u32;
        if edtl == 0 {
            return self.status(itt, GOOD, None, None);
        }
        while off < edtl {
            let n = seg.min(edtl - off).min(ZEROS_LEN as u32);
            let last = off + n == edtl;
            let stat_sn = if last {
                self.next_stat_sn()
            } else {
                self.stat_sn
            };
            let d = DataIn {
                final_bit: last,
                ack: false,
                overflow: false,
                underflow: false,
                status: last.then_some(GOOD),
                lun: 0,
                itt,
                ttt: 0xffff_ffff,
                stat_sn,
                exp_cmd_sn: self.exp_cmd_sn,
                max_cmd_sn: self.max_cmd_sn(),
                data_sn,
                buffer_offset: off,
                residual_count: 0,
            };
            let z = self.zeros(n);
            self.send(d, z)?;
            data_sn += 1;
            off += n;
        }
        Ok(())
    }

    /// Send R2Ts for a write while it may have more outstanding.
    fn solicit(&mut self, itt: u32) -> anyhow::Result<()> {
        let max_burst = self.params.max_burst_length.max(512);
        let max_out = self.params.max_outstanding_r2t.max(1);
        loop {
            let Some(w) = self.writes.get_mut(&itt) else {
                return Ok(());
            };
            if w.outstanding >= max_out || w.next_r2t >= w.edtl {
                return Ok(());
            }
            let len = max_burst.min(w.edtl - w.next_r2t);
            let r2t = R2t {
                lun: w.lun,
                itt,
                ttt: self.next_ttt,
                stat_sn: self.stat_sn,
                exp_cmd_sn: self.exp_cmd_sn,
                max_cmd_sn: self.exp_cmd_sn.wrapping_add(QUEUE_DEPTH - 1),
                r2t_sn: w.r2t_sn,
                buffer_offset: w.next_r2t,
                desired_data_transfer_length: len,
            };
            w.r2t_sn += 1;
            w.next_r2t += len;
            w.outstanding += 1;
            self.next_ttt = self.next_ttt.wrapping_add(1) & 0x7fff_ffff;
            self.send(r2t, Bytes::new())?;
        }
    }

    fn write(&mut self, cmd: &ScsiCommand, data: &Bytes) -> anyhow::Result<()> {
        let edtl = cmd.expected_data_transfer_length;
        let received = data.len() as u32;
        if received >= edtl {
            return self.status(cmd.itt, GOOD, None, None);
        }
        // F set on the command: no unsolicited Data-Out follows (RFC 7143 section 11.3.4);
        // otherwise it may carry data up to FirstBurstLength (InitialR2T=No).
        let unsolicited_end = if cmd.final_bit {
            received
        } else {
            self.params.first_burst_length.min(edtl)
        };
        self.writes.insert(
            cmd.itt,
            PendingWrite {
                edtl,
                received,
                next_r2t: unsolicited_end,
                outstanding: 0,
                r2t_sn: 0,
                lun: cmd.lun,
            },
        );
        if received >= unsolicited_end {
            self.solicit(cmd.itt)?;
        }
        Ok(())
    }

    fn data_out(&mut self, d: &pdu::DataOut, data: &Bytes) -> anyhow::Result<()> {
        let Some(w) = self.writes.get_mut(&d.itt) else {
            // Data for no command we know: ignore it (a null target keeps no history).
            return Ok(());
        };
        w.received += data.len() as u32;
        let done = w.received >= w.edtl;
        if d.final_bit && d.ttt != 0xffff_ffff {
            w.outstanding = w.outstanding.saturating_sub(1);
        }
        if done {
            self.writes.remove(&d.itt);
            return self.status(d.itt, GOOD, None, None);
        }
        // The end of a burst (unsolicited or an R2T's): ask for what is left.
        if d.final_bit {
            self.solicit(d.itt)?;
        }
        Ok(())
    }

    fn command(&mut self, cmd: &ScsiCommand, data: &Bytes) -> anyhow::Result<()> {
        if !cmd.immediate {
            self.exp_cmd_sn = cmd.cmd_sn.wrapping_add(1);
        }
        let cdb = &cmd.cdb;
        let edtl = cmd.expected_data_transfer_length;
        match cdb[0] {
            // READ(6/10/12/16)
            0x08 | 0x28 | 0xa8 | 0x88 => self.read(cmd.itt, edtl),
            // WRITE(6/10/12/16), WRITE SAME(10/16), WRITE AND VERIFY(10/16)
            0x0a | 0x2a | 0xaa | 0x8a | 0x41 | 0x93 | 0x2e | 0x8e => self.write(cmd, data),
            // TEST UNIT READY, SYNCHRONIZE CACHE(10/16)
            0x00 | 0x35 | 0x91 => self.status(cmd.itt, GOOD, None, None),
            // INQUIRY
            0x12 => {
                let evpd = cdb[1] & 1 != 0;
                let body = if !evpd {
                    StandardInquiry::default().encode()
                } else {
                    match cdb[2] {
                        // Supported pages: this one, unit serial number.
                        0x00 => vec![0, 0x00, 0, 2, 0x00, 0x80],
                        0x80 => {
                            let mut v = vec![0, 0x80, 0, 8];
                            v.extend_from_slice(b"null0000");
                            v
                        }
                        _ => {
                            return self.status(
                                cmd.itt,
                                CHECK_CONDITION,
                                Some(Sense::invalid_field_in_cdb(2, None)),
                                None,
                            )
                        }
                    }
                };
                self.data_in(cmd.itt, edtl, Bytes::from(body))
            }
            // READ CAPACITY(10)
            0x25 => {
                let c = self.capacity();
                self.data_in(cmd.itt, edtl, Bytes::copy_from_slice(&c.encode10()))
            }
            // SERVICE ACTION IN(16): READ CAPACITY(16)
            0x9e if cdb[1] & 0x1f == 0x10 => {
                let c = self.capacity();
                self.data_in(cmd.itt, edtl, Bytes::copy_from_slice(&c.encode16()))
            }
            // REPORT LUNS
            0xa0 => {
                let body = report_luns::encode(&[0], cdb[2]);
                self.data_in(cmd.itt, edtl, Bytes::from(body))
            }
            // MODE SENSE(6): a header with no pages; MODE SENSE(10) likewise.
            0x1a => self.data_in(cmd.itt, edtl, Bytes::from_static(&[3, 0, 0, 0])),
            0x5a => self.data_in(cmd.itt, edtl, Bytes::from_static(&[0, 6, 0, 0, 0, 0, 0, 0])),
            _ => self.status(
                cmd.itt,
                CHECK_CONDITION,
                Some(Sense::invalid_opcode()),
                None,
            ),
        }
    }

    fn capacity(&self) -> Capacity {
        Capacity {
            blocks: self.blocks,
            block_size: BLOCK,
            lbpme: false,
            lbprz: false,
        }
    }

    fn text(&mut self, req: &pdu::TextRequest, data: &Bytes) -> anyhow::Result<()> {
        let value = text::parse(data)
            .ok()
            .and_then(|kv| kv.into_iter().find(|k| k.key == "SendTargets"))
            .map(|k| k.value);
        let body = match value {
            Some(v) => discovery::send_targets(
                &v,
                self.session_type,
                self.target_name.as_deref(),
                &[DiscoveredTarget {
                    name: IQN.into(),
                    addresses: vec![discovery::target_address(self.local, 1)],
                }],
            ),
            None => Bytes::new(),
        };
        if !req.immediate {
            self.exp_cmd_sn = req.cmd_sn.wrapping_add(1);
        }
        let stat_sn = self.next_stat_sn();
        let rsp = TextResponse {
            final_bit: true,
            continue_bit: false,
            lun: 0,
            itt: req.itt,
            ttt: 0xffff_ffff,
            stat_sn,
            exp_cmd_sn: self.exp_cmd_sn,
            max_cmd_sn: self.max_cmd_sn(),
        };
        self.send(rsp, body)
    }

    fn handle(&mut self, p: Pdu) -> anyhow::Result<()> {
        match &p.bhs {
            Bhs::ScsiCommand(cmd) => self.command(cmd, &p.data),
            Bhs::DataOut(d) => self.data_out(d, &p.data),
            Bhs::NopOut(n) => {
                if !n.immediate {
                    self.exp_cmd_sn = n.cmd_sn.wrapping_add(1);
                }
                if n.itt == 0xffff_ffff {
                    return Ok(());
                }
                let stat_sn = self.next_stat_sn();
                let rsp = NopIn {
                    lun: n.lun,
                    itt: n.itt,
                    ttt: 0xffff_ffff,
                    stat_sn,
                    exp_cmd_sn: self.exp_cmd_sn,
                    max_cmd_sn: self.max_cmd_sn(),
                };
                self.send(rsp, p.data.clone())
            }
            Bhs::TextRequest(t) => self.text(t, &p.data),
            Bhs::TaskMgmtRequest(t) => {
                if !t.immediate {
                    self.exp_cmd_sn = t.cmd_sn.wrapping_add(1);
                }
                let stat_sn = self.next_stat_sn();
                let rsp = TaskMgmtResponse {
                    response: TmResponse::Complete,
                    itt: t.itt,
                    stat_sn,
                    exp_cmd_sn: self.exp_cmd_sn,
                    max_cmd_sn: self.max_cmd_sn(),
                };
                self.send(rsp, Bytes::new())
            }
            Bhs::LogoutRequest(l) => {
                if !l.immediate {
                    self.exp_cmd_sn = l.cmd_sn.wrapping_add(1);
                }
                let stat_sn = self.next_stat_sn();
                let rsp = LogoutResponse {
                    response: LogoutResponseCode::Closed,
                    itt: l.itt,
                    stat_sn,
                    exp_cmd_sn: self.exp_cmd_sn,
                    max_cmd_sn: self.max_cmd_sn(),
                    time2wait: 0,
                    time2retain: 0,
                };
                self.closing = true;
                self.send(rsp, Bytes::new())
            }
            other => bail!("unexpected {:?} PDU", other.opcode()),
        }
    }
}

/// Read until `buf` holds at least one more byte; `false` at end of stream.
fn fill(sock: &mut TcpStream, buf: &mut BytesMut, tmp: &mut [u8]) -> anyhow::Result<bool> {
    let n = sock.read(tmp).context("reading")?;
    if n == 0 {
        return Ok(false);
    }
    buf.extend_from_slice(&tmp[..n]);
    Ok(true)
}

fn serve(mut sock: TcpStream, policy: &Policy, blocks: u64) -> anyhow::Result<()> {
    sock.set_nodelay(true).context("TCP_NODELAY")?;
    let local = sock.local_addr().context("local address")?;
    let mut buf = BytesMut::with_capacity(1 << 20);
    let mut tmp = vec![0u8; 1 << 20];
    // Login phase.
    let mut login = LoginConnection::new(TargetSettings::default(), 1, 1);
    let login_cfg = CodecConfig::default();
    let outcome = loop {
        let pdu = match pdu::decode(&mut buf, &login_cfg) {
            Ok(Some(p)) => p,
            Ok(None) => {
                if !fill(&mut sock, &mut buf, &mut tmp)? {
                    return Ok(());
                }
                continue;
            }
            Err(e) => bail!("bad PDU during login: {e}"),
        };
        let mut out = BytesMut::new();
        match login.handle(&pdu, policy) {
            LoginStep::Respond(r) => {
                r.encode(&login_cfg, &mut out).context("encoding")?;
                sock.write_all(&out).context("writing")?;
            }
            LoginStep::Complete { response, outcome } => {
                response.encode(&login_cfg, &mut out).context("encoding")?;
                sock.write_all(&out).context("writing")?;
                break outcome;
            }
            LoginStep::Fail { response, failure } => {
                response.encode(&login_cfg, &mut out).context("encoding")?;
                sock.write_all(&out).context("writing")?;
                bail!("login failed: {failure:?}");
            }
        }
    };
    let mut conn = Conn {
        cfg: outcome.params.codec(),
        params: outcome.params.clone(),
        session_type: outcome.session_type,
        target_name: outcome.target_name.clone(),
        local,
        stat_sn: outcome.stat_sn,
        exp_cmd_sn: outcome.cmd_sn,
        blocks,
        zeros: Bytes::from(vec![0u8; ZEROS_LEN]),
        writes: HashMap::new(),
        next_ttt: 1,
        out: Vec::new(),
        scratch: BytesMut::new(),
        closing: false,
        sock,
    };
    // Full feature phase: answer every whole PDU that has arrived, then write once.
    loop {
        loop {
            match pdu::decode(&mut buf, &conn.cfg) {
                Ok(Some(p)) => conn.handle(p)?,
                Ok(None) => break,
                Err(e) => bail!("bad PDU: {e}"),
            }
        }
        conn.flush()?;
        if conn.closing {
            return Ok(());
        }
        if !fill(&mut conn.sock, &mut buf, &mut tmp)? {
            return Ok(());
        }
    }
}

/// One TCP stream over loopback for `secs` seconds: MiB/s received.
fn tcp_throughput(secs: f64) -> anyhow::Result<f64> {
    let l = TcpListener::bind("127.0.0.1:0").context("binding")?;
    let addr = l.local_addr().context("address")?;
    let sink = std::thread::spawn(move || -> anyhow::Result<u64> {
        let (mut s, _) = l.accept().context("accepting")?;
        let mut b = vec![0u8; 1 << 20];
        let mut total = 0u64;
        loop {
            let n = s.read(&mut b).context("reading")?;
            if n == 0 {
                return Ok(total);
            }
            total += n as u64;
        }
    });
    let mut s = TcpStream::connect(addr).context("connecting")?;
    let b = vec![0u8; 1 << 20];
    let t = Instant::now();
    let mut sent = 0u64;
    while t.elapsed() < Duration::from_secs_f64(secs) {
        s.write_all(&b).context("writing")?;
        sent += b.len() as u64;
    }
    drop(s);
    let got = sink
        .join()
        .map_err(|_| anyhow::anyhow!("sink thread panicked"))??;
    if got != sent {
        bail!("sent {sent} bytes, received {got}");
    }
    Ok(got as f64 / (1 << 20) as f64 / t.elapsed().as_secs_f64())
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let value = |name: &str| -> Option<&str> {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .map(String::as_str)
    };
    if let Some(secs) = value("--tcp-throughput") {
        let secs: f64 = secs.parse().context("--tcp-throughput SECONDS")?;
        println!("{:.0}", tcp_throughput(secs)?);
        return Ok(());
    }
    let listen = value("--listen").unwrap_or("127.0.0.1:0");
    let blocks: u64 = match value("--blocks") {
        Some(b) => b.parse().context("--blocks N")?,
        None => (1 << 30) / BLOCK as u64,
    };
    let l = TcpListener::bind(listen).with_context(|| format!("binding {listen}"))?;
    println!("listening on {}", l.local_addr().context("address")?);
    std::io::stdout().flush().context("stdout")?;
    let policy: &'static Policy = Box::leak(Box::new(Policy {
        tsih: AtomicU16::new(1),
    }));
    for s in l.incoming() {
        let Ok(s) = s else { continue };
        std::thread::spawn(move || {
            if let Err(e) = serve(s, policy, blocks) {
                eprintln!("lunar-null-target: connection: {e:#}");
            }
        });
    }
    Ok(())
}
