//! A minimal, deliberately permissive iSCSI initiator for the hostile-initiator suite.
//!
//! libiscsi (and every real initiator) refuses to send malformed PDUs, so attacks on the
//! target's parser and state machines need an initiator that will. This one builds PDUs
//! byte by byte from RFC 7143 section 11 (it shares no code with the target's codec, so a
//! codec bug cannot hide itself by being on both ends), lets a test mutate any field or send
//! arbitrary bytes, and offers just enough honest behaviour (login with or without CHAP,
//! SCSI commands with Data-In, R2T-solicited Data-Out and sense) to set attacks up and to
//! check that an honest session still works afterwards.
//!
//! Every receive has a deadline: a target that does not answer is reported as a hang (an
//! error naming what was awaited), never waited on forever.

use anyhow::{anyhow, bail, Context, Result};
use md5::{Digest, Md5};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// How long any single receive may wait before the target counts as hung.
pub const RECV_LIMIT: Duration = Duration::from_secs(20);

/// Largest data segment this initiator accepts from the target (the RFC maximum).
const MAX_SEGMENT: usize = (1 << 24) - 1;

/// The reserved tag value (RFC 7143 section 11.2.1.6).
pub const RESERVED_TAG: u32 = 0xffff_ffff;

/// Opcodes (RFC 7143 section 11.2.1.2).
pub mod op {
    /// NOP-Out: initiator ping, or the answer to a target NOP-In.
    pub const NOP_OUT: u8 = 0x00;
    /// SCSI Command: a CDB, optionally with immediate data.
    pub const SCSI_CMD: u8 = 0x01;
    /// SCSI Task Management Function Request (ABORT TASK, LUN RESET, ...).
    pub const TMF_REQ: u8 = 0x02;
    /// Login Request: one step of the login phase.
    pub const LOGIN_REQ: u8 = 0x03;
    /// Text Request: key=value negotiation after login (e.g. SendTargets).
    pub const TEXT_REQ: u8 = 0x04;
    /// SCSI Data-Out: write data, solicited by an R2T or unsolicited.
    pub const DATA_OUT: u8 = 0x05;
    /// Logout Request: close the session or one connection.
    pub const LOGOUT_REQ: u8 = 0x06;
    /// SNACK Request: asks the target to resend lost PDUs.
    pub const SNACK: u8 = 0x10;
    /// NOP-In: target ping, or the answer to a NOP-Out.
    pub const NOP_IN: u8 = 0x20;
    /// SCSI Response: status (and sense) of a finished command.
    pub const SCSI_RESP: u8 = 0x21;
    /// SCSI Task Management Function Response.
    pub const TMF_RESP: u8 = 0x22;
    /// Login Response: status class/detail and the target's keys.
    pub const LOGIN_RESP: u8 = 0x23;
    /// Text Response.
    pub const TEXT_RESP: u8 = 0x24;
    /// SCSI Data-In: read data; the last one may carry the status.
    pub const DATA_IN: u8 = 0x25;
    /// Logout Response.
    pub const LOGOUT_RESP: u8 = 0x26;
    /// Ready To Transfer: the target asks for a range of write data.
    pub const R2T: u8 = 0x31;
    /// Asynchronous Message: an unsolicited event from the target.
    pub const ASYNC: u8 = 0x32;
    /// Reject: the target refuses a PDU (header copied into the data).
    pub const REJECT: u8 = 0x3f;
}

/// Login stages: the CSG/NSG values of Login Request/Response (RFC 7143 section 11.12).
pub mod stage {
    /// SecurityNegotiation stage (authentication, e.g. CHAP).
    pub const SECURITY: u8 = 0;
    /// LoginOperationalNegotiation stage (session parameters).
    pub const OPERATIONAL: u8 = 1;
    /// FullFeaturePhase: login is over (2 is reserved).
    pub const FULL_FEATURE: u8 = 3;
}

/// SCSI status values (SAM-5), as carried in SCSI Response and Data-In.
pub mod status {
    /// GOOD: the command completed.
    pub const GOOD: u8 = 0x00;
    /// CHECK CONDITION: failed; the sense data says why.
    pub const CHECK_CONDITION: u8 = 0x02;
    /// RESERVATION CONFLICT: another I_T nexus holds a reservation.
    pub const RESERVATION_CONFLICT: u8 = 0x18;
}

/// One PDU as bytes: the 48-byte BHS, the AHS and the unpadded data segment.
#[derive(Clone, Debug)]
pub struct Pdu {
    /// Basic Header Segment.
    pub bhs: [u8; 48],
    /// Additional Header Segments (a multiple of 4 bytes when well formed).
    pub ahs: Vec<u8>,
    /// Data segment without padding.
    pub data: Vec<u8>,
}

impl Pdu {
    /// A PDU with opcode `opcode` (the I bit is set separately) and everything else zero.
    pub fn new(opcode: u8) -> Self {
        let mut bhs = [0u8; 48];
        bhs[0] = opcode & 0x3f;
        Pdu {
            bhs,
            ahs: Vec::new(),
            data: Vec::new(),
        }
    }

    /// Opcode without the I bit.
    pub fn opcode(&self) -> u8 {
        self.bhs[0] & 0x3f
    }

    /// Sets the immediate bit.
    pub fn immediate(mut self) -> Self {
        self.bhs[0] |= 0x40;
        self
    }

    /// Big-endian u32 at `at`.
    pub fn u32_at(&self, at: usize) -> u32 {
        u32::from_be_bytes([
            self.bhs[at],
            self.bhs[at + 1],
            self.bhs[at + 2],
            self.bhs[at + 3],
        ])
    }

    /// Big-endian u16 at `at`.
    pub fn u16_at(&self, at: usize) -> u16 {
        u16::from_be_bytes([self.bhs[at], self.bhs[at + 1]])
    }

    /// Writes a big-endian u32 at `at`.
    pub fn set_u32(&mut self, at: usize, v: u32) -> &mut Self {
        self.bhs[at..at + 4].copy_from_slice(&v.to_be_bytes());
        self
    }

    /// Writes a big-endian u16 at `at`.
    pub fn set_u16(&mut self, at: usize, v: u16) -> &mut Self {
        self.bhs[at..at + 2].copy_from_slice(&v.to_be_bytes());
        self
    }

    /// Writes a big-endian u64 at `at`.
    pub fn set_u64(&mut self, at: usize, v: u64) -> &mut Self {
        self.bhs[at..at + 8].copy_from_slice(&v.to_be_bytes());
        self
    }

    /// Initiator Task Tag.
    pub fn itt(&self) -> u32 {
        self.u32_at(16)
    }

    /// StatSN (for target PDUs that carry one).
    pub fn stat_sn(&self) -> u32 {
        self.u32_at(24)
    }

    /// ExpCmdSN.
    pub fn exp_cmd_sn(&self) -> u32 {
        self.u32_at(28)
    }

    /// MaxCmdSN.
    pub fn max_cmd_sn(&self) -> u32 {
        self.u32_at(32)
    }

    /// Login Response status class and detail as one word (0x0201 etc.).
    pub fn login_status(&self) -> u16 {
        u16::from_be_bytes([self.bhs[36], self.bhs[37]])
    }

    /// The encoded PDU: header with TotalAHSLength and DataSegmentLength filled in from the
    /// AHS and data, then AHS, data and padding.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(48 + self.ahs.len() + self.data.len() + 3);
        let mut bhs = self.bhs;
        bhs[4] = (self.ahs.len() / 4) as u8;
        let dsl = (self.data.len() as u32).to_be_bytes();
        bhs[5..8].copy_from_slice(&dsl[1..]);
        out.extend_from_slice(&bhs);
        out.extend_from_slice(&self.ahs);
        out.extend_from_slice(&self.data);
        out.resize(out.len() + (4 - self.data.len() % 4) % 4, 0);
        out
    }

    /// [`Pdu::encode`] with CRC32C digests: a header digest after the BHS and AHS, a data
    /// digest after the padded data segment (when there is one), as negotiated.
    pub fn encode_with_digests(&self, header: bool, data: bool) -> Vec<u8> {
        let plain = self.encode();
        if !header && !data {
            return plain;
        }
        let hlen = 48 + self.ahs.len();
        let mut out = plain[..hlen].to_vec();
        if header {
            out.extend_from_slice(&crc32c::crc32c(&plain[..hlen]).to_le_bytes());
        }
        out.extend_from_slice(&plain[hlen..]);
        if data && !self.data.is_empty() {
            out.extend_from_slice(&crc32c::crc32c(&plain[hlen..]).to_le_bytes());
        }
        out
    }

    /// Keys of a Login or Text Response's data segment.
    pub fn keys(&self) -> HashMap<String, String> {
        parse_keys(&self.data)
    }

    /// Short description for assertion messages.
    pub fn describe(&self) -> String {
        let name = match self.opcode() {
            op::NOP_IN => "NOP-In",
            op::SCSI_RESP => "SCSI Response",
            op::TMF_RESP => "TMF Response",
            op::LOGIN_RESP => "Login Response",
            op::TEXT_RESP => "Text Response",
            op::DATA_IN => "Data-In",
            op::LOGOUT_RESP => "Logout Response",
            op::R2T => "R2T",
            op::ASYNC => "Async Message",
            op::REJECT => "Reject",
            _ => "unexpected opcode",
        };
        match self.opcode() {
            op::LOGIN_RESP => format!(
                "{name} (status {:#06x}, flags {:#04x}, TSIH {})",
                self.login_status(),
                self.bhs[1],
                self.u16_at(14)
            ),
            op::SCSI_RESP => format!(
                "{name} (ITT {:#x}, response {}, status {:#04x}, sense {:02x?})",
                self.itt(),
                self.bhs[2],
                self.bhs[3],
                sense_of(&self.data)
            ),
            op::REJECT => format!("{name} (reason {:#04x})", self.bhs[2]),
            op::TMF_RESP | op::LOGOUT_RESP => {
                format!("{name} (ITT {:#x}, response {})", self.itt(), self.bhs[2])
            }
            _ => format!("{name} {:#04x} (ITT {:#x})", self.opcode(), self.itt()),
        }
    }
}

/// `key=value` pairs, NUL separated (RFC 7143 section 6).
pub fn encode_keys(pairs: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, v) in pairs {
        out.extend_from_slice(k.as_bytes());
        out.push(b'=');
        out.extend_from_slice(v.as_bytes());
        out.push(0);
    }
    out
}

/// Parses NUL-separated `key=value` text; malformed items are skipped.
pub fn parse_keys(data: &[u8]) -> HashMap<String, String> {
    data.split(|&b| b == 0)
        .filter_map(|item| {
            let s = std::str::from_utf8(item).ok()?;
            let (k, v) = s.split_once('=')?;
            Some((k.to_string(), v.to_string()))
        })
        .collect()
}

/// Sense data from a SCSI Response data segment (SenseLength then sense bytes).
pub fn sense_of(data: &[u8]) -> Vec<u8> {
    if data.len() < 2 {
        return Vec::new();
    }
    let len = usize::from(u16::from_be_bytes([data[0], data[1]]));
    data.get(2..2 + len).unwrap_or(&data[2..]).to_vec()
}

/// (sense key, ASC, ASCQ) from fixed or descriptor format sense data.
pub fn sense_triple(sense: &[u8]) -> Option<(u8, u8, u8)> {
    match sense.first()? & 0x7f {
        0x70 | 0x71 => Some((sense.get(2)? & 0x0f, *sense.get(12)?, *sense.get(13)?)),
        0x72 | 0x73 => Some((sense.get(1)? & 0x0f, *sense.get(2)?, *sense.get(3)?)),
        _ => None,
    }
}

/// MD5 CHAP response: MD5(id || secret || challenge) (RFC 1994).
pub fn chap_response(id: u8, secret: &[u8], challenge: &[u8]) -> [u8; 16] {
    let mut h = Md5::new();
    h.update([id]);
    h.update(secret);
    h.update(challenge);
    h.finalize().into()
}

/// `0x` hex encoding of a binary value.
pub fn hex(bytes: &[u8]) -> String {
    let mut s = String::from("0x");
    for b in bytes {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// Decodes a `0x` hex value; `None` if malformed.
pub fn unhex(v: &str) -> Option<Vec<u8>> {
    let h = v.strip_prefix("0x").or_else(|| v.strip_prefix("0X"))?;
    if h.len() % 2 != 0 {
        return None;
    }
    (0..h.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&h[i..i + 2], 16).ok())
        .collect()
}

/// CHAP credentials for a login.
#[derive(Clone, Debug)]
pub struct Chap {
    /// CHAP_N.
    pub user: String,
    /// Initiator secret.
    pub secret: String,
    /// Mutual CHAP: (expected target name, target secret).
    pub mutual: Option<(String, String)>,
}

/// The operational keys this initiator offers (each overridable per login).
pub fn default_operational() -> Vec<(&'static str, String)> {
    [
        ("HeaderDigest", "None"),
        ("DataDigest", "None"),
        ("MaxRecvDataSegmentLength", "262144"),
        ("InitialR2T", "Yes"),
        ("ImmediateData", "Yes"),
        ("MaxBurstLength", "262144"),
        ("FirstBurstLength", "65536"),
        ("MaxOutstandingR2T", "1"),
        ("DataPDUInOrder", "Yes"),
        ("DataSequenceInOrder", "Yes"),
        ("ErrorRecoveryLevel", "0"),
        ("MaxConnections", "1"),
    ]
    .into_iter()
    .map(|(k, v)| (k, v.to_string()))
    .collect()
}

/// What a login left negotiated.
#[derive(Clone, Debug, Default)]
pub struct Negotiated {
    /// The target's MaxRecvDataSegmentLength (our largest Data-Out segment).
    pub max_send_segment: u32,
    /// InitialR2T result.
    pub initial_r2t: bool,
    /// ImmediateData result.
    pub immediate_data: bool,
    /// FirstBurstLength result.
    pub first_burst: u32,
    /// MaxBurstLength result.
    pub max_burst: u32,
}

/// Result of a SCSI command.
#[derive(Clone, Debug)]
pub struct ScsiResult {
    /// SCSI status (from the SCSI Response or the final Data-In).
    pub status: u8,
    /// iSCSI response code (0 = command completed at the target).
    pub response: u8,
    /// Sense data, if any.
    pub sense: Vec<u8>,
    /// Data-In collected.
    pub data: Vec<u8>,
    /// Number of R2Ts the target sent.
    pub r2ts: u32,
}

impl ScsiResult {
    /// (key, ASC, ASCQ) of the sense data.
    pub fn sense_triple(&self) -> Option<(u8, u8, u8)> {
        sense_triple(&self.sense)
    }

    /// True for CHECK CONDITION with this sense key and ASC.
    pub fn is_check(&self, key: u8, asc: u8) -> bool {
        self.status == status::CHECK_CONDITION
            && self
                .sense_triple()
                .is_some_and(|(k, a, _)| k == key && a == asc)
    }
}

/// One TCP connection to the target and the session state this initiator keeps.
pub struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    /// Next CmdSN.
    pub cmd_sn: u32,
    /// ExpStatSN.
    pub exp_stat_sn: u32,
    next_itt: u32,
    /// 48-bit ISID.
    pub isid: u64,
    /// TSIH (0 until a leading login completes).
    pub tsih: u16,
    /// CID.
    pub cid: u16,
    /// InitiatorName.
    pub name: String,
    /// Negotiated values after login.
    pub neg: Negotiated,
    /// MaxCmdSN from the last target PDU that carried one.
    pub max_cmd_sn: u32,
    /// CRC32C header and data digests in use (set after a login that negotiated them).
    pub digests: (bool, bool),
}

/// An ISID of type "random" (0b10 in the top bits) that no other connection of this
/// process has had: the low 24 bits count connections, so two never collide (a collision
/// is a session reinstatement, which closes the older connection: the PR registration
/// flood's 5000 logins met one when the count was XORed into the clock), and the next byte
/// varies with the clock and the process so that runs and parallel test processes differ.
pub fn random_isid() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed) & 0xff_ffff;
    let salt = (std::process::id() ^ (nanos >> 10)) & 0xff;
    (0x80u64 << 40)
        | (u64::from(std::process::id() & 0xff) << 32)
        | (u64::from(salt) << 24)
        | u64::from(seq)
}

impl Conn {
    /// Connects to `addr` as initiator `name` with a fresh ISID.
    pub fn connect(addr: SocketAddr, name: &str) -> Result<Conn> {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(10))
            .with_context(|| format!("connecting to {addr}"))?;
        stream.set_nodelay(true)?;
        Ok(Conn {
            stream,
            buf: Vec::new(),
            cmd_sn: 1,
            exp_stat_sn: 0,
            next_itt: 1,
            isid: random_isid(),
            tsih: 0,
            cid: 1,
            name: name.to_string(),
            neg: Negotiated::default(),
            max_cmd_sn: 0,
            digests: (false, false),
        })
    }

    /// How many non-immediate commands the target lets this session send now (MaxCmdSN -
    /// CmdSN + 1, from the last response seen; at least 1).
    pub fn max_cmd_sn_window(&self) -> u32 {
        self.max_cmd_sn
            .wrapping_sub(self.cmd_sn)
            .wrapping_add(1)
            .clamp(1, 1 << 16)
    }

    /// A fresh Initiator Task Tag.
    pub fn itt(&mut self) -> u32 {
        let i = self.next_itt;
        self.next_itt = self.next_itt.wrapping_add(1).max(1);
        i
    }

    /// Sends raw bytes.
    pub fn send_raw(&mut self, bytes: &[u8]) -> Result<()> {
        self.stream
            .write_all(bytes)
            .context("sending to the target")
    }

    /// Sends a PDU.
    pub fn send(&mut self, p: &Pdu) -> Result<()> {
        let (h, d) = self.digests;
        self.send_raw(&p.encode_with_digests(h, d))
    }

    /// The underlying socket (for half-closing, peeking).
    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    /// The next PDU within `limit`; `Ok(None)` when the target closed the connection (or
    /// reset it). A receive that times out is an error.
    pub fn recv_within(&mut self, limit: Duration) -> Result<Option<Pdu>> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(p) = self.parse_buffered()? {
                if matches!(
                    p.opcode(),
                    op::SCSI_RESP
                        | op::TMF_RESP
                        | op::LOGIN_RESP
                        | op::TEXT_RESP
                        | op::LOGOUT_RESP
                        | op::NOP_IN
                        | op::ASYNC
                        | op::REJECT
                ) || (p.opcode() == op::DATA_IN && p.bhs[1] & 0x01 != 0)
                {
                    // Only PDUs that carry a StatSN advance ExpStatSN (a NOP-In ping with
                    // TTT set and ITT reserved does not, but its StatSN is the next one).
                    let sn = p.stat_sn();
                    if p.opcode() != op::NOP_IN || p.itt() != RESERVED_TAG {
                        self.exp_stat_sn = sn.wrapping_add(1);
                    }
                    if p.opcode() != op::LOGIN_RESP || p.login_status() == 0 {
                        self.max_cmd_sn = p.max_cmd_sn();
                    }
                }
                return Ok(Some(p));
            }
            let now = Instant::now();
            if now >= deadline {
                bail!("target did not answer within {limit:?} (hang)");
            }
            self.stream.set_read_timeout(Some(deadline - now))?;
            let mut chunk = [0u8; 65536];
            match self.stream.read(&mut chunk) {
                Ok(0) => return Ok(None),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    bail!("target did not answer within {limit:?} (hang)")
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
                    ) =>
                {
                    return Ok(None)
                }
                Err(e) => return Err(e).context("reading from the target"),
            }
        }
    }

    /// The next PDU within [`RECV_LIMIT`] (`None`: connection closed).
    pub fn recv_opt(&mut self) -> Result<Option<Pdu>> {
        self.recv_within(RECV_LIMIT)
    }

    /// The next PDU; a closed connection is an error.
    pub fn recv(&mut self) -> Result<Pdu> {
        self.recv_opt()?
            .ok_or_else(|| anyhow!("the target closed the connection"))
    }

    fn parse_buffered(&mut self) -> Result<Option<Pdu>> {
        if self.buf.len() < 48 {
            return Ok(None);
        }
        let ahs_len = usize::from(self.buf[4]) * 4;
        let dsl = usize::from(self.buf[5]) << 16
            | usize::from(self.buf[6]) << 8
            | usize::from(self.buf[7]);
        if dsl > MAX_SEGMENT {
            bail!("target sent a {dsl}-byte data segment");
        }
        let (hd, dd) = self.digests;
        let hd_len = if hd { 4 } else { 0 };
        let dd_len = if dd && dsl > 0 { 4 } else { 0 };
        let total = 48 + ahs_len + hd_len + dsl.div_ceil(4) * 4 + dd_len;
        if self.buf.len() < total {
            return Ok(None);
        }
        let mut bhs = [0u8; 48];
        bhs.copy_from_slice(&self.buf[..48]);
        let ahs = self.buf[48..48 + ahs_len].to_vec();
        let at = 48 + ahs_len + hd_len;
        let data = self.buf[at..at + dsl].to_vec();
        self.buf.drain(..total);
        Ok(Some(Pdu { bhs, ahs, data }))
    }

    /// Waits until the target closes the connection, discarding what it sends meanwhile;
    /// fails if it is still open after `limit`.
    pub fn expect_closed_within(&mut self, limit: Duration) -> Result<Vec<Pdu>> {
        let deadline = Instant::now() + limit;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                bail!(
                    "connection still open after {limit:?}; received {:?}",
                    seen.iter().map(Pdu::describe).collect::<Vec<_>>()
                );
            }
            match self.recv_within(left) {
                Ok(None) => return Ok(seen),
                Ok(Some(p)) => seen.push(p),
                Err(e) => {
                    return Err(e.context(format!(
                        "waiting for the target to close; received {:?}",
                        seen.iter().map(Pdu::describe).collect::<Vec<_>>()
                    )))
                }
            }
        }
    }

    // ----- Login -----------------------------------------------------------------------

    /// A Login Request header from this connection's identity.
    pub fn login_pdu(&self, transit: bool, csg: u8, nsg: u8, keys: &[(&str, &str)]) -> Pdu {
        let mut p = Pdu::new(op::LOGIN_REQ).immediate();
        p.bhs[1] = if transit { 0x80 } else { 0 } | (csg & 3) << 2 | (nsg & 3);
        p.bhs[2] = 0; // VersionMax
        p.bhs[3] = 0; // VersionMin
        let isid = self.isid.to_be_bytes();
        p.bhs[8..14].copy_from_slice(&isid[2..8]);
        p.set_u16(14, self.tsih);
        p.set_u32(16, 0x4c4f_4749); // "LOGI"
        p.set_u16(20, self.cid);
        p.set_u32(24, self.cmd_sn);
        p.set_u32(28, self.exp_stat_sn);
        p.data = encode_keys(keys);
        p
    }

    /// Sends one Login Request and returns the response (`None`: connection closed).
    pub fn login_step(
        &mut self,
        transit: bool,
        csg: u8,
        nsg: u8,
        keys: &[(&str, &str)],
    ) -> Result<Option<Pdu>> {
        let p = self.login_pdu(transit, csg, nsg, keys);
        self.send(&p)?;
        let r = self.recv_opt()?;
        if let Some(r) = &r {
            if r.opcode() != op::LOGIN_RESP {
                bail!("expected a Login Response, got {}", r.describe());
            }
        }
        Ok(r)
    }

    /// Identity keys of the first login PDU: InitiatorName and TargetName or
    /// SessionType=Discovery.
    fn identity(&self, target: Option<&str>) -> Vec<(&'static str, String)> {
        let mut keys = vec![("InitiatorName", self.name.clone())];
        match target {
            Some(t) => {
                keys.push(("SessionType", "Normal".into()));
                keys.push(("TargetName", t.into()));
            }
            None => keys.push(("SessionType", "Discovery".into())),
        }
        keys
    }

    /// Full login: the security stage with CHAP when `chap` is given (else straight to the
    /// operational stage), then operational negotiation with `overrides` on top of
    /// [`default_operational`]. Returns the final Login Response; a refusal is
    /// returned as a response with a non-zero status, a dropped connection as an error.
    pub fn login(
        &mut self,
        target: Option<&str>,
        chap: Option<&Chap>,
        overrides: &[(&str, &str)],
    ) -> Result<Pdu> {
        let ident = self.identity(target);
        let mut op_keys: Vec<(String, String)> = Vec::new();
        if chap.is_none() {
            op_keys.extend(ident.iter().map(|(k, v)| (k.to_string(), v.clone())));
        }
        for (k, v) in default_operational() {
            let v = overrides
                .iter()
                .find(|(ok, _)| *ok == k)
                .map(|(_, ov)| ov.to_string())
                .unwrap_or(v);
            op_keys.push((k.to_string(), v));
        }
        for (k, v) in overrides {
            if !op_keys.iter().any(|(ok, _)| ok == k) {
                op_keys.push((k.to_string(), v.to_string()));
            }
        }
        if let Some(chap) = chap {
            let r = self.chap_exchange(&ident, chap)?;
            if r.login_status() != 0 {
                return Ok(r);
            }
        }
        let keys: Vec<(&str, &str)> = op_keys
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let mut resp = self
            .login_step(true, stage::OPERATIONAL, stage::FULL_FEATURE, &keys)?
            .ok_or_else(|| anyhow!("target closed the connection during login"))?;
        let mut got = resp.keys();
        // The target may need more exchanges (or continue its text): answer with empty
        // requests until it moves to the full feature phase.
        for _ in 0..8 {
            if resp.login_status() != 0 || (resp.bhs[1] & 0x80 != 0 && resp.bhs[1] & 3 == 3) {
                break;
            }
            resp = self
                .login_step(true, stage::OPERATIONAL, stage::FULL_FEATURE, &[])?
                .ok_or_else(|| anyhow!("target closed the connection during login"))?;
            got.extend(resp.keys());
        }
        if resp.login_status() == 0 {
            self.finish_login(&resp, &got, &op_keys);
        }
        Ok(resp)
    }

    /// Records what a successful login negotiated.
    fn finish_login(
        &mut self,
        resp: &Pdu,
        got: &HashMap<String, String>,
        ours: &[(String, String)],
    ) {
        self.tsih = resp.u16_at(14);
        self.exp_stat_sn = resp.stat_sn().wrapping_add(1);
        self.cmd_sn = resp.exp_cmd_sn();
        let ours = |k: &str| ours.iter().find(|(ok, _)| ok == k).map(|(_, v)| v.clone());
        let num = |k: &str, dflt: u32| -> u32 {
            got.get(k)
                .and_then(|v| v.parse().ok())
                .or_else(|| ours(k).and_then(|v| v.parse().ok()))
                .unwrap_or(dflt)
        };
        let yes = |k: &str, dflt: bool| -> bool {
            got.get(k)
                .or(ours(k).as_ref())
                .map(|v| v == "Yes")
                .unwrap_or(dflt)
        };
        self.digests = (
            got.get("HeaderDigest").is_some_and(|v| v == "CRC32C"),
            got.get("DataDigest").is_some_and(|v| v == "CRC32C"),
        );
        self.neg = Negotiated {
            max_send_segment: got
                .get("MaxRecvDataSegmentLength")
                .and_then(|v| v.parse().ok())
                .unwrap_or(8192),
            initial_r2t: yes("InitialR2T", true),
            immediate_data: yes("ImmediateData", true),
            first_burst: num("FirstBurstLength", 65536),
            max_burst: num("MaxBurstLength", 262144),
        };
    }

    /// Runs the CHAP exchange of the security stage and transits to the operational stage.
    /// Returns the last Login Response (non-zero status on refusal).
    pub fn chap_exchange(&mut self, ident: &[(&'static str, String)], chap: &Chap) -> Result<Pdu> {
        let mut keys: Vec<(&str, &str)> = ident.iter().map(|(k, v)| (*k, v.as_str())).collect();
        keys.push(("AuthMethod", "CHAP,None"));
        let r = self.login_req(false, stage::SECURITY, stage::OPERATIONAL, &keys)?;
        if r.login_status() != 0 {
            return Ok(r);
        }
        let r = self.login_req(
            false,
            stage::SECURITY,
            stage::OPERATIONAL,
            &[("CHAP_A", "5")],
        )?;
        if r.login_status() != 0 {
            return Ok(r);
        }
        let k = r.keys();
        let (id, challenge) = chap_challenge(&k)?;
        let resp = hex(&chap_response(id, chap.secret.as_bytes(), &challenge));
        let mut keys = vec![("CHAP_N", chap.user.clone()), ("CHAP_R", resp)];
        let my_challenge: Vec<u8> = (0..16u8)
            .map(|i| i.wrapping_mul(37).wrapping_add(11))
            .collect();
        let my_id = 0x42u8;
        if chap.mutual.is_some() {
            keys.push(("CHAP_I", my_id.to_string()));
            keys.push(("CHAP_C", hex(&my_challenge)));
        }
        let kv: Vec<(&str, &str)> = keys.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let r = self.login_req(true, stage::SECURITY, stage::OPERATIONAL, &kv)?;
        if r.login_status() != 0 {
            return Ok(r);
        }
        if let Some((tuser, tsecret)) = &chap.mutual {
            let k = r.keys();
            let want = hex(&chap_response(my_id, tsecret.as_bytes(), &my_challenge));
            if k.get("CHAP_N") != Some(tuser)
                || k.get("CHAP_R").map(|s| s.to_ascii_lowercase()) != Some(want)
            {
                bail!("the target failed mutual CHAP: {k:?}");
            }
        }
        if r.bhs[1] & 0x80 == 0 {
            bail!(
                "target did not leave the security stage after CHAP: {}",
                r.describe()
            );
        }
        Ok(r)
    }

    /// [`Conn::login_step`] that treats a closed connection as an error.
    pub fn login_req(
        &mut self,
        transit: bool,
        csg: u8,
        nsg: u8,
        keys: &[(&str, &str)],
    ) -> Result<Pdu> {
        self.login_step(transit, csg, nsg, keys)?
            .ok_or_else(|| anyhow!("target closed the connection during login"))
    }

    /// Logs in to `target` (or a discovery session) and fails unless the login succeeds.
    pub fn login_ok(&mut self, target: Option<&str>, chap: Option<&Chap>) -> Result<()> {
        let r = self.login(target, chap, &[])?;
        if r.login_status() != 0 {
            bail!("login to {target:?} refused: {}", r.describe());
        }
        Ok(())
    }

    // ----- Full feature phase --------------------------------------------------------------

    /// A SCSI Command PDU (not yet sent): CmdSN is assigned from the session, the ITT is
    /// fresh, F is set, simple task attribute.
    pub fn scsi_pdu(&mut self, lun: u64, cdb: &[u8], read_len: u32, write_len: u32) -> Pdu {
        let mut p = Pdu::new(op::SCSI_CMD);
        let mut flags = 0x80 | 0x01; // F, SIMPLE
        if read_len > 0 {
            flags |= 0x40;
        }
        if write_len > 0 {
            flags |= 0x20;
        }
        p.bhs[1] = flags;
        p.set_u64(8, lun_field(lun));
        let itt = self.itt();
        p.set_u32(16, itt);
        p.set_u32(20, read_len.max(write_len));
        p.set_u32(24, self.cmd_sn);
        p.set_u32(28, self.exp_stat_sn);
        let n = cdb.len().min(16);
        p.bhs[32..32 + n].copy_from_slice(&cdb[..n]);
        self.cmd_sn = self.cmd_sn.wrapping_add(1);
        p
    }

    /// A Data-Out PDU.
    pub fn data_out_pdu(
        &self,
        itt: u32,
        ttt: u32,
        data_sn: u32,
        offset: u32,
        data: Vec<u8>,
        fin: bool,
    ) -> Pdu {
        let mut p = Pdu::new(op::DATA_OUT);
        p.bhs[1] = if fin { 0x80 } else { 0 };
        p.set_u32(16, itt);
        p.set_u32(20, ttt);
        p.set_u32(28, self.exp_stat_sn);
        p.set_u32(36, data_sn);
        p.set_u32(40, offset);
        p.data = data;
        p
    }

    /// Runs one SCSI command to completion: sends `data_out` as immediate data (up to
    /// FirstBurstLength when allowed) and answers R2Ts, collects Data-In.
    ///
    /// A UNIT ATTENTION (the POWER ON OR RESET every new nexus gets first, a reservation
    /// change) is consumed and the command retried, up to four times: the attacks want the
    /// answer to the command itself.
    pub fn scsi(
        &mut self,
        lun: u64,
        cdb: &[u8],
        read_len: u32,
        data_out: &[u8],
    ) -> Result<ScsiResult> {
        for _ in 0..4 {
            let r = self.scsi_once(lun, cdb, read_len, data_out)?;
            if !r.is_check(0x06, r.sense_triple().map_or(0, |t| t.1)) {
                return Ok(r);
            }
        }
        self.scsi_once(lun, cdb, read_len, data_out)
    }

    /// One SCSI command, unit attentions included (see [`Conn::scsi`]).
    pub fn scsi_once(
        &mut self,
        lun: u64,
        cdb: &[u8],
        read_len: u32,
        data_out: &[u8],
    ) -> Result<ScsiResult> {
        let mut p = self.scsi_pdu(lun, cdb, read_len, data_out.len() as u32);
        let itt = p.itt();
        // Immediate data up to FirstBurstLength; the F bit is set, so the target solicits
        // the rest with R2Ts (no unsolicited Data-Out).
        if !data_out.is_empty() && self.neg.immediate_data {
            let n = data_out
                .len()
                .min(self.neg.first_burst as usize)
                .min(self.neg.max_send_segment as usize);
            p.data = data_out[..n].to_vec();
        }
        self.send(&p)?;
        self.complete(itt, data_out)
    }

    /// Collects the outcome of task `itt`, answering its R2Ts from `data_out`.
    pub fn complete(&mut self, itt: u32, data_out: &[u8]) -> Result<ScsiResult> {
        let mut data = Vec::new();
        let mut r2ts = 0;
        loop {
            let p = self.recv()?;
            match p.opcode() {
                op::DATA_IN if p.itt() == itt => {
                    let off = p.u32_at(40) as usize;
                    if data.len() < off + p.data.len() {
                        data.resize(off + p.data.len(), 0);
                    }
                    data[off..off + p.data.len()].copy_from_slice(&p.data);
                    if p.bhs[1] & 0x01 != 0 {
                        return Ok(ScsiResult {
                            status: p.bhs[3],
                            response: 0,
                            sense: Vec::new(),
                            data,
                            r2ts,
                        });
                    }
                }
                op::R2T if p.itt() == itt => {
                    r2ts += 1;
                    let ttt = p.u32_at(20);
                    let off = p.u32_at(40) as usize;
                    let len = p.u32_at(44) as usize;
                    let seg = self.neg.max_send_segment.max(512) as usize;
                    let mut at = off;
                    let mut sn = 0;
                    let end = (off + len).min(data_out.len());
                    while at < end {
                        let n = seg.min(end - at);
                        let d = self.data_out_pdu(
                            itt,
                            ttt,
                            sn,
                            at as u32,
                            data_out[at..at + n].to_vec(),
                            at + n == end,
                        );
                        self.send(&d)?;
                        at += n;
                        sn += 1;
                    }
                }
                op::SCSI_RESP if p.itt() == itt => {
                    return Ok(ScsiResult {
                        status: p.bhs[3],
                        response: p.bhs[2],
                        sense: sense_of(&p.data),
                        data,
                        r2ts,
                    });
                }
                op::NOP_IN if p.itt() == RESERVED_TAG => self.answer_ping(&p)?,
                op::ASYNC => {}
                _ => bail!(
                    "unexpected PDU while waiting for task {itt:#x}: {}",
                    p.describe()
                ),
            }
        }
    }

    /// Answers a target's NOP-In ping.
    pub fn answer_ping(&mut self, ping: &Pdu) -> Result<()> {
        let mut p = Pdu::new(op::NOP_OUT).immediate();
        p.bhs[1] = 0x80;
        p.set_u32(16, RESERVED_TAG);
        p.set_u32(20, ping.u32_at(20));
        p.set_u32(24, self.cmd_sn);
        p.set_u32(28, self.exp_stat_sn);
        self.send(&p)
    }

    /// NOP-Out ping expecting a NOP-In; proves the connection is alive and in order.
    pub fn ping(&mut self) -> Result<()> {
        let mut p = Pdu::new(op::NOP_OUT).immediate();
        p.bhs[1] = 0x80;
        let itt = self.itt();
        p.set_u32(16, itt);
        p.set_u32(20, RESERVED_TAG);
        p.set_u32(24, self.cmd_sn);
        p.set_u32(28, self.exp_stat_sn);
        self.send(&p)?;
        loop {
            let r = self.recv()?;
            match r.opcode() {
                op::NOP_IN if r.itt() == itt => return Ok(()),
                op::NOP_IN if r.itt() == RESERVED_TAG => self.answer_ping(&r)?,
                op::ASYNC => {}
                _ => bail!(
                    "unexpected PDU while waiting for the NOP-In: {}",
                    r.describe()
                ),
            }
        }
    }

    /// Consumes the unit attentions LUN `lun` has for this nexus (TEST UNIT READY until
    /// GOOD), so commands sent by hand afterwards get their own answer.
    pub fn ready(&mut self, lun: u64) -> Result<()> {
        let r = self.scsi(lun, &[0u8; 6], 0, &[])?;
        if r.status != status::GOOD {
            bail!(
                "TEST UNIT READY: status {:#x}, sense {:02x?}",
                r.status,
                r.sense
            );
        }
        Ok(())
    }

    /// READ(10) of `blocks` 512-byte blocks at `lba`; fails unless GOOD.
    pub fn read10(&mut self, lun: u64, lba: u32, blocks: u16) -> Result<Vec<u8>> {
        let r = self.scsi(lun, &cdb10(0x28, lba, blocks), u32::from(blocks) * 512, &[])?;
        if r.status != status::GOOD {
            bail!(
                "READ(10) failed: status {:#x}, sense {:02x?}",
                r.status,
                r.sense
            );
        }
        Ok(r.data)
    }

    /// WRITE(10) of `data` at `lba`; fails unless GOOD.
    pub fn write10(&mut self, lun: u64, lba: u32, data: &[u8]) -> Result<()> {
        let blocks = (data.len() / 512) as u16;
        let r = self.scsi(lun, &cdb10(0x2a, lba, blocks), 0, data)?;
        if r.status != status::GOOD {
            bail!(
                "WRITE(10) failed: status {:#x}, sense {:02x?}",
                r.status,
                r.sense
            );
        }
        Ok(())
    }

    /// Logout (close the session) and wait for the response.
    pub fn logout(&mut self) -> Result<Pdu> {
        let mut p = Pdu::new(op::LOGOUT_REQ).immediate();
        p.bhs[1] = 0x80; // reason 0: close the session
        let itt = self.itt();
        p.set_u32(16, itt);
        p.set_u32(24, self.cmd_sn);
        p.set_u32(28, self.exp_stat_sn);
        self.send(&p)?;
        loop {
            let r = self.recv()?;
            if r.opcode() == op::LOGOUT_RESP {
                return Ok(r);
            }
        }
    }
}

/// The CHAP_I and decoded CHAP_C of a target's challenge.
pub fn chap_challenge(k: &HashMap<String, String>) -> Result<(u8, Vec<u8>)> {
    let id: u8 = k
        .get("CHAP_I")
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| anyhow!("no CHAP_I in {k:?}"))?;
    let challenge = k
        .get("CHAP_C")
        .and_then(|v| unhex(v))
        .ok_or_else(|| anyhow!("no CHAP_C in {k:?}"))?;
    Ok((id, challenge))
}

/// The 8-byte LUN field (peripheral addressing) for a LUN below 256.
pub fn lun_field(lun: u64) -> u64 {
    (lun & 0xff) << 48
}

/// The CDB builders are the test kit's: byte layouts from SBC-4, not scsi-proto's codec (the
/// kit builds them by hand; scsi-proto has no CDB encoder), so this initiator stays
/// independent of the target's code.
pub use lunar_test_kit::cdb::{cdb10, cdb12, cdb16, cdb6};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_fills_lengths_and_pads() {
        let mut p = Pdu::new(op::TEXT_REQ);
        p.ahs = vec![1, 2, 3, 4];
        p.data = b"a=b\0c".to_vec();
        let b = p.encode();
        assert_eq!(b[4], 1, "TotalAHSLength in words");
        assert_eq!(&b[5..8], &[0, 0, 5], "DataSegmentLength");
        assert_eq!(b.len(), 48 + 4 + 8, "data padded to 4 bytes");
    }

    #[test]
    fn digests_use_the_rfc_crc32c() {
        // RFC 3720 B.4: 32 bytes of zeros give aa 36 91 8a on the wire.
        let mut p = Pdu::new(0);
        p.bhs = [0; 48];
        let b = p.encode_with_digests(true, false);
        assert_eq!(b.len(), 52);
        assert_eq!(
            crc32c::crc32c(&[0u8; 32]).to_le_bytes(),
            [0xaa, 0x36, 0x91, 0x8a]
        );
        assert_eq!(&b[48..], &crc32c::crc32c(&b[..48]).to_le_bytes());
        p.data = vec![7; 3];
        let b = p.encode_with_digests(true, true);
        assert_eq!(
            b.len(),
            48 + 4 + 4 + 4,
            "header digest, padded data, data digest"
        );
        assert_eq!(&b[56..], &crc32c::crc32c(&[7, 7, 7, 0]).to_le_bytes());
    }

    #[test]
    fn keys_hex_and_sense() {
        let k = parse_keys(b"A=1\0B=x=y\0junk\0");
        assert_eq!(k.get("A").map(String::as_str), Some("1"));
        assert_eq!(k.get("B").map(String::as_str), Some("x=y"));
        assert_eq!(encode_keys(&[("A", "1")]), b"A=1\0");
        assert_eq!(unhex(&hex(&[0, 0xab, 0xff])), Some(vec![0, 0xab, 0xff]));
        assert_eq!(unhex("0x123"), None);
        let fixed = [0x70, 0, 0x05, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x21, 0x00];
        assert_eq!(sense_triple(&fixed), Some((5, 0x21, 0)));
        assert_eq!(sense_triple(&[0x72, 0x06, 0x29, 0x01]), Some((6, 0x29, 1)));
        assert_eq!(sense_of(&[0, 2, 0x70, 0x00, 0xff]), vec![0x70, 0x00]);
    }

    #[test]
    fn chap_response_is_md5_of_id_secret_challenge() {
        let mut h = Md5::new();
        h.update([7u8]);
        h.update(b"secret-123456");
        h.update([1u8, 2, 3]);
        let want: [u8; 16] = h.finalize().into();
        assert_eq!(chap_response(7, b"secret-123456", &[1, 2, 3]), want);
    }
}
