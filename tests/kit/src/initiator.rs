//! A small raw iSCSI initiator for tests, built on scsi-proto's codec: login (with or
//! without CHAP, mutual CHAP), discovery, SCSI commands run to completion (immediate data,
//! R2Ts answered, Data-In collected and checked for order), task management, logout. Every
//! receive is bounded by [`RECV_LIMIT`], so a hang fails the test instead of stalling it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use scsi_proto::iscsi::chap::{chap_response, decode_binary, encode_hex};
use scsi_proto::iscsi::pdu::{
    self, Bhs, CodecConfig, LoginRequest, LoginStage, NopOut, Pdu, ScsiCommand, TaskAttribute,
    TextRequest,
};
use scsi_proto::iscsi::text;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long any single receive may take before the test fails (a hang, not a timing check).
pub const RECV_LIMIT: Duration = Duration::from_secs(20);

/// One iSCSI connection (and its session) driven PDU by PDU from a test.
pub struct Initiator {
    /// The TCP connection to the target.
    pub stream: TcpStream,
    buf: BytesMut,
    /// Framing limits and digests used to encode and decode PDUs (updated by login).
    pub codec: CodecConfig,
    /// CmdSN of the next non-immediate command.
    pub cmd_sn: u32,
    /// ExpStatSN we send: one past the last StatSN received.
    pub exp_stat_sn: u32,
    /// Initiator Task Tag the next task gets (see [`Initiator::itt`]).
    pub next_itt: u32,
    /// Initiator port part of the session identity (ISID, 48 bits).
    pub isid: u64,
    /// Target Session Identifying Handle: 0 until the login assigns one.
    pub tsih: u16,
    /// Our iSCSI name (InitiatorName).
    pub name: String,
    /// The LUN field (SAM-5 wire form) of the commands [`Initiator::command`] builds: LUN 0
    /// unless [`Initiator::set_lun`].
    pub lun_field: u64,
}

/// Result of a login attempt.
#[derive(Debug)]
pub struct LoginResult {
    /// Status-Class of the last Login Response (0 = success).
    pub status_class: u8,
    /// Status-Detail of the last Login Response.
    pub status_detail: u8,
    /// The keys the target answered in the last step.
    pub keys: HashMap<String, String>,
}

impl LoginResult {
    /// Whether the login succeeded.
    pub fn ok(&self) -> bool {
        self.status_class == 0
    }
}

/// Encodes `key=value` pairs as an iSCSI text data segment.
pub fn kv(pairs: &[(&str, &str)]) -> Bytes {
    text::encode(pairs.iter().copied())
}

impl Initiator {
    /// Opens a TCP connection to `addr` as initiator `name` (not logged in yet).
    pub async fn connect(addr: SocketAddr, name: &str) -> Initiator {
        let stream = TcpStream::connect(addr).await.expect("connect to lunard");
        Initiator::over(stream, name)
    }

    /// An initiator on an already connected socket (e.g. bound to a chosen source address).
    pub fn over(stream: TcpStream, name: &str) -> Initiator {
        stream.set_nodelay(true).expect("nodelay");
        Initiator {
            stream,
            buf: BytesMut::new(),
            codec: CodecConfig {
                max_recv_data_segment_length: (1 << 24) - 1,
                ..CodecConfig::default()
            },
            cmd_sn: 1,
            exp_stat_sn: 0,
            next_itt: 1,
            isid: 0x0002_3d00_0001 + u64::from(rand_u16()),
            tsih: 0,
            name: name.to_string(),
            lun_field: 0,
        }
    }

    /// Like [`Initiator::connect`], but logs in as the initiator port `isid` (e.g. the
    /// port of an earlier session, so a reconnect is the same I_T nexus).
    pub async fn connect_with_isid(addr: SocketAddr, name: &str, isid: u64) -> Initiator {
        let mut i = Initiator::connect(addr, name).await;
        i.isid = isid;
        i
    }

    /// A fresh Initiator Task Tag.
    pub fn itt(&mut self) -> u32 {
        let i = self.next_itt;
        self.next_itt += 1;
        i
    }

    /// Encodes and sends one PDU.
    pub async fn send(&mut self, p: Pdu) {
        let mut out = BytesMut::new();
        p.encode(&self.codec, &mut out).expect("encode");
        self.stream.write_all(&out).await.expect("send");
    }

    /// Sends `bytes` unencoded, e.g. a deliberately malformed PDU.
    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("send raw");
    }

    /// Next PDU, or None when the target closed the connection.
    pub async fn recv_opt(&mut self) -> Option<Pdu> {
        let fut = async {
            loop {
                match pdu::decode(&mut self.buf, &self.codec) {
                    Ok(Some(p)) => return Some(p),
                    Ok(None) => {}
                    Err(e) => panic!("target sent an undecodable PDU: {e}"),
                }
                let n = self.stream.read_buf(&mut self.buf).await.unwrap_or(0);
                if n == 0 {
                    return None;
                }
            }
        };
        let p = tokio::time::timeout(RECV_LIMIT, fut)
            .await
            .expect("target did not answer (hang)");
        if let Some(p) = &p {
            if let Some(sn) = stat_sn_of(&p.bhs) {
                self.exp_stat_sn = sn.wrapping_add(1);
            }
        }
        p
    }

    /// Next PDU; panics if the target closed the connection.
    pub async fn recv(&mut self) -> Pdu {
        self.recv_opt().await.expect("connection closed by target")
    }

    /// Sends one login request with `keys` and returns the response.
    pub async fn login_step(
        &mut self,
        csg: LoginStage,
        nsg: LoginStage,
        transit: bool,
        keys: &[(&str, &str)],
    ) -> (pdu::LoginResponse, HashMap<String, String>) {
        let req = LoginRequest {
            transit,
            continue_bit: false,
            csg,
            nsg,
            version_max: 0,
            version_min: 0,
            isid: self.isid,
            tsih: self.tsih,
            itt: 0x100,
            cid: 1,
            cmd_sn: self.cmd_sn,
            exp_stat_sn: self.exp_stat_sn,
        };
        self.send(Pdu::new(req, kv(keys))).await;
        let p = self.recv().await;
        let Bhs::LoginResponse(r) = p.bhs else {
            panic!("expected Login Response, got {:?}", p.bhs.opcode())
        };
        let map = text::parse(&p.data)
            .expect("login response text")
            .into_iter()
            .map(|kv| (kv.key, kv.value))
            .collect();
        (r, map)
    }

    /// The LoginOperationalNegotiation keys every login offers (digests off, ImmediateData=Yes, ...).
    pub fn operational_keys() -> Vec<(&'static str, &'static str)> {
        vec![
            ("HeaderDigest", "None"),
            ("DataDigest", "None"),
            ("MaxRecvDataSegmentLength", "65536"),
            ("InitialR2T", "No"),
            ("ImmediateData", "Yes"),
            ("MaxBurstLength", "262144"),
            ("FirstBurstLength", "65536"),
            ("MaxOutstandingR2T", "1"),
            ("DataPDUInOrder", "Yes"),
            ("DataSequenceInOrder", "Yes"),
            ("ErrorRecoveryLevel", "0"),
        ]
    }

    /// Login without authentication, straight to the operational stage.
    pub async fn login(&mut self, target: Option<&str>) -> LoginResult {
        self.login_with(target, &[]).await
    }

    /// Login without authentication, overriding some operational keys.
    pub async fn login_with(
        &mut self,
        target: Option<&str>,
        overrides: &[(&str, &str)],
    ) -> LoginResult {
        let name = self.name.clone();
        let mut keys = vec![("InitiatorName", name.as_str())];
        match target {
            Some(t) => keys.push(("TargetName", t)),
            None => keys.push(("SessionType", "Discovery")),
        }
        for (k, v) in Self::operational_keys() {
            let v = overrides
                .iter()
                .find(|(ok, _)| *ok == k)
                .map(|(_, ov)| *ov)
                .unwrap_or(v);
            keys.push((k, v));
        }
        let (r, map) = self
            .login_step(
                LoginStage::Operational,
                LoginStage::FullFeature,
                true,
                &keys,
            )
            .await;
        self.finish_login(r, map)
    }

    fn finish_login(
        &mut self,
        r: pdu::LoginResponse,
        keys: HashMap<String, String>,
    ) -> LoginResult {
        if r.status_class == 0 && r.transit && r.nsg == LoginStage::FullFeature {
            self.tsih = r.tsih;
            self.cmd_sn = r.exp_cmd_sn;
            if let Some(v) = keys
                .get("MaxRecvDataSegmentLength")
                .and_then(|v| v.parse::<u32>().ok())
            {
                self.codec.max_send_data_segment_length = v;
            }
        }
        LoginResult {
            status_class: r.status_class,
            status_detail: r.status_detail,
            keys,
        }
    }

    /// Login with CHAP (`user`, `secret`).
    pub async fn login_chap(
        &mut self,
        target: Option<&str>,
        user: &str,
        secret: &str,
    ) -> LoginResult {
        self.login_chap_mutual(target, user, secret, None).await
    }

    /// Login with CHAP; with `mutual = Some((target_user, target_secret))` the initiator also
    /// challenges the target and checks its answer (panics if it is wrong).
    pub async fn login_chap_mutual(
        &mut self,
        target: Option<&str>,
        user: &str,
        secret: &str,
        mutual: Option<(&str, &str)>,
    ) -> LoginResult {
        let name = self.name.clone();
        let mut keys = vec![("InitiatorName", name.as_str()), ("AuthMethod", "CHAP")];
        match target {
            Some(t) => keys.push(("TargetName", t)),
            None => keys.push(("SessionType", "Discovery")),
        }
        let (r, map) = self
            .login_step(LoginStage::Security, LoginStage::Operational, false, &keys)
            .await;
        if r.status_class != 0 {
            return self.finish_login(r, map);
        }
        assert_eq!(map.get("AuthMethod").map(String::as_str), Some("CHAP"));
        let (r, map) = self
            .login_step(
                LoginStage::Security,
                LoginStage::Operational,
                false,
                &[("CHAP_A", "5")],
            )
            .await;
        if r.status_class != 0 {
            return self.finish_login(r, map);
        }
        let id: u8 = map
            .get("CHAP_I")
            .and_then(|v| v.parse().ok())
            .expect("CHAP_I");
        let challenge = decode_binary(map.get("CHAP_C").expect("CHAP_C"), 1024).expect("challenge");
        let resp = encode_hex(&chap_response(id, secret.as_bytes(), &challenge));
        let my_challenge = [
            0x5au8, 0x17, 0x99, 0x02, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc,
            0xdd, 0xee,
        ];
        let my_challenge_hex = encode_hex(&my_challenge);
        let mut keys = vec![("CHAP_N", user), ("CHAP_R", resp.as_str())];
        if mutual.is_some() {
            keys.push(("CHAP_I", "77"));
            keys.push(("CHAP_C", my_challenge_hex.as_str()));
        }
        let (r, map) = self
            .login_step(LoginStage::Security, LoginStage::Operational, true, &keys)
            .await;
        if r.status_class != 0 {
            return self.finish_login(r, map);
        }
        if let Some((tuser, tsecret)) = mutual {
            assert_eq!(
                map.get("CHAP_N").map(String::as_str),
                Some(tuser),
                "target's CHAP name"
            );
            let expect = encode_hex(&chap_response(77, tsecret.as_bytes(), &my_challenge));
            let got = map
                .get("CHAP_R")
                .expect("target answers the mutual challenge");
            assert!(
                got.eq_ignore_ascii_case(&expect),
                "target's mutual CHAP response is wrong"
            );
        }
        let keys = Self::operational_keys();
        let (r, map) = self
            .login_step(
                LoginStage::Operational,
                LoginStage::FullFeature,
                true,
                &keys,
            )
            .await;
        self.finish_login(r, map)
    }

    /// Immediate NOP-Out carrying `data` (a ping); returns the answer (a NOP-In).
    pub async fn nop(&mut self, data: &'static [u8]) -> Pdu {
        let itt = self.itt();
        let p = NopOut {
            immediate: true,
            lun: 0,
            itt,
            ttt: pdu::RESERVED_TAG,
            cmd_sn: self.cmd_sn,
            exp_stat_sn: self.exp_stat_sn,
        };
        self.send(Pdu::new(p, Bytes::from_static(data))).await;
        self.recv().await
    }

    /// SendTargets=`value`; returns the (key, value) pairs answered.
    pub async fn send_targets(&mut self, value: &str) -> Vec<(String, String)> {
        let itt = self.itt();
        let req = TextRequest {
            immediate: true,
            final_bit: true,
            continue_bit: false,
            lun: 0,
            itt,
            ttt: pdu::RESERVED_TAG,
            cmd_sn: self.cmd_sn,
            exp_stat_sn: self.exp_stat_sn,
        };
        self.send(Pdu::new(req, kv(&[("SendTargets", value)])))
            .await;
        let p = self.recv().await;
        let Bhs::TextResponse(r) = &p.bhs else {
            panic!("expected Text Response, got {:?}", p.bhs.opcode())
        };
        assert!(r.final_bit);
        text::parse(&p.data)
            .expect("text")
            .into_iter()
            .map(|kv| (kv.key, kv.value))
            .collect()
    }

    /// Logout closing the session; returns the Logout Response.
    pub async fn logout(&mut self) -> Pdu {
        let itt = self.itt();
        let req = pdu::LogoutRequest {
            immediate: true,
            reason: pdu::LogoutReason::CloseSession,
            itt,
            cid: 1,
            cmd_sn: self.cmd_sn,
            exp_stat_sn: self.exp_stat_sn,
        };
        self.send(Pdu::header_only(req)).await;
        self.recv().await
    }

    /// Addresses the next commands to LUN `lun` (peripheral or flat addressing; a LUN
    /// beyond 16383 is sent as LUN 0).
    pub fn set_lun(&mut self, lun: u64) {
        self.lun_field =
            scsi_proto::scsi::report_luns::encode_lun(lun).map_or(0, u64::from_be_bytes);
    }

    /// A SCSI command; `data` is sent as immediate data.
    pub fn command(&mut self, cdb: &[u8], read: bool, write: bool, edtl: u32, data: Bytes) -> Pdu {
        let mut c = [0u8; 16];
        c[..cdb.len()].copy_from_slice(cdb);
        let itt = self.itt();
        let cmd = ScsiCommand {
            immediate: false,
            final_bit: true,
            read,
            write,
            attr: TaskAttribute::Simple,
            lun: self.lun_field,
            itt,
            expected_data_transfer_length: edtl,
            cmd_sn: self.cmd_sn,
            exp_stat_sn: self.exp_stat_sn,
            cdb: c,
            extended_cdb: None,
            bidi_read_length: None,
        };
        self.cmd_sn = self.cmd_sn.wrapping_add(1);
        Pdu::new(cmd, data)
    }
}

fn stat_sn_of(b: &Bhs) -> Option<u32> {
    match b {
        Bhs::ScsiResponse(h) => Some(h.stat_sn),
        Bhs::TaskMgmtResponse(h) => Some(h.stat_sn),
        Bhs::TextResponse(h) => Some(h.stat_sn),
        Bhs::LogoutResponse(h) => Some(h.stat_sn),
        Bhs::LoginResponse(h) => Some(h.stat_sn),
        Bhs::DataIn(h) if h.status.is_some() => Some(h.stat_sn),
        Bhs::NopIn(h) if h.itt != pdu::RESERVED_TAG => Some(h.stat_sn),
        _ => None,
    }
}

fn rand_u16() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static N: AtomicU16 = AtomicU16::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

impl Initiator {
    /// Sends the Data-Out `r2t` asks for, from `data`, in PDUs of at most `seg` bytes.
    pub async fn answer_r2t(&mut self, itt: u32, r2t: &pdu::R2t, data: &[u8], seg: usize) {
        let mut off = r2t.buffer_offset as usize;
        let end = off + r2t.desired_data_transfer_length as usize;
        let mut sn = 0;
        while off < end {
            let n = seg.min(end - off);
            let d = pdu::DataOut {
                final_bit: off + n == end,
                lun: 0,
                itt,
                ttt: r2t.ttt,
                exp_stat_sn: self.exp_stat_sn,
                data_sn: sn,
                buffer_offset: off as u32,
            };
            self.send(Pdu::new(d, Bytes::copy_from_slice(&data[off..off + n])))
                .await;
            sn += 1;
            off += n;
        }
    }
}

/// Outcome of a SCSI command as the initiator sees it.
#[derive(Debug, Default)]
pub struct CmdResult {
    /// SCSI status byte.
    pub status: u8,
    /// Read data, all Data-In segments in order.
    pub data: Vec<u8>,
    /// Sense data from the SCSI Response (without its length prefix); empty if none.
    pub sense: Vec<u8>,
    /// O bit: the command wanted more than the expected data transfer length.
    pub overflow: bool,
    /// U bit: less than the expected data transfer length moved.
    pub underflow: bool,
    /// Residual Count, meaningful when `overflow` or `underflow` is set.
    pub residual: u32,
    /// How many R2Ts the target sent.
    pub r2ts: u32,
    /// How many Data-In PDUs the target sent.
    pub data_ins: u32,
}

impl Initiator {
    /// Sends a command and runs it to completion: answers R2Ts from `data` (Data-Out PDUs of
    /// at most `seg` bytes), collects Data-In, returns status/sense/residuals.
    pub async fn run(
        &mut self,
        cdb: &[u8],
        read: bool,
        edtl: u32,
        data: &[u8],
        immediate: usize,
        seg: usize,
    ) -> CmdResult {
        let write = !data.is_empty();
        let imm = Bytes::copy_from_slice(&data[..immediate.min(data.len())]);
        let cmd = self.command(cdb, read, write, edtl, imm);
        let itt = cmd.bhs.itt();
        self.send(cmd).await;
        self.finish(itt, data, seg).await
    }

    /// Drives the command with `itt` to its status.
    pub async fn finish(&mut self, itt: u32, data: &[u8], seg: usize) -> CmdResult {
        let mut res = CmdResult::default();
        let mut expect_data_sn = 0;
        loop {
            let p = self.recv().await;
            assert_eq!(
                p.bhs.itt(),
                itt,
                "unexpected {:?} for another task",
                p.bhs.opcode()
            );
            match &p.bhs {
                Bhs::R2t(r) => {
                    res.r2ts += 1;
                    self.answer_r2t(itt, r, data, seg).await;
                }
                Bhs::DataIn(d) => {
                    assert_eq!(d.data_sn, expect_data_sn, "DataSN sequence");
                    assert_eq!(
                        d.buffer_offset as usize,
                        res.data.len(),
                        "Data-In offsets are contiguous"
                    );
                    assert!(
                        p.data.len() <= self.recv_limit(),
                        "Data-In larger than our MaxRecvDataSegmentLength"
                    );
                    expect_data_sn += 1;
                    res.data_ins += 1;
                    res.data.extend_from_slice(&p.data);
                    if let Some(st) = d.status {
                        assert!(d.final_bit, "S bit requires F bit");
                        res.status = st;
                        res.overflow = d.overflow;
                        res.underflow = d.underflow;
                        res.residual = d.residual_count;
                        return res;
                    }
                }
                Bhs::ScsiResponse(r) => {
                    res.status = r.status;
                    res.overflow = r.overflow;
                    res.underflow = r.underflow;
                    res.residual = r.residual_count;
                    res.sense = pdu::parse_sense_segment(&p.data)
                        .map(|b| b.to_vec())
                        .unwrap_or_default();
                    return res;
                }
                other => panic!("unexpected PDU {:?}", other.opcode()),
            }
        }
    }

    /// Our declared MaxRecvDataSegmentLength (see `operational_keys`).
    pub fn recv_limit(&self) -> usize {
        65536
    }
}

impl Initiator {
    /// TEST UNIT READY until GOOD: consumes the unit attentions a new nexus starts with.
    pub async fn clear_unit_attention(&mut self) {
        for _ in 0..8 {
            let r = self.run(&[0u8; 6], false, 0, &[], 0, 0).await;
            if r.status == 0 {
                return;
            }
            assert_eq!(
                r.sense.get(2).map(|k| k & 0x0f),
                Some(6),
                "only UNIT ATTENTION is expected: {r:?}"
            );
        }
        panic!("unit attentions never cleared");
    }
}

impl Initiator {
    /// Sends a task management request (immediate) and returns its response code.
    pub async fn tmf(
        &mut self,
        function: pdu::TmFunction,
        referenced: u32,
        ref_cmd_sn: u32,
    ) -> pdu::TmResponse {
        let itt = self.itt();
        let req = pdu::TaskMgmtRequest {
            immediate: true,
            function,
            lun: 0,
            itt,
            referenced_task_tag: referenced,
            cmd_sn: self.cmd_sn,
            exp_stat_sn: self.exp_stat_sn,
            ref_cmd_sn,
            exp_data_sn: 0,
        };
        self.send(Pdu::header_only(req)).await;
        let p = self.recv().await;
        match &p.bhs {
            Bhs::TaskMgmtResponse(r) if r.itt == itt => r.response,
            other => panic!(
                "unexpected {:?} (ITT {:#x}) before the TMF response",
                other.opcode(),
                other.itt()
            ),
        }
    }
}

/// Why a command did not complete on a connection (the fallible API below): what a
/// multipath initiator treats as a failed path, never a test failure by itself.
#[derive(Debug)]
pub enum PathError {
    /// The target closed the connection (or it was reset).
    Closed,
    /// No answer within the limit (a frozen or partitioned target).
    Timeout,
    /// A socket error other than a clean close.
    Io(std::io::Error),
    /// The target sent something a correct target never sends here.
    Protocol(String),
}

impl std::fmt::Display for PathError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PathError::Closed => write!(f, "connection closed by the target"),
            PathError::Timeout => write!(f, "no answer in time"),
            PathError::Io(e) => write!(f, "socket error: {e}"),
            PathError::Protocol(m) => write!(f, "protocol error: {m}"),
        }
    }
}

impl std::error::Error for PathError {}

/// The fallible side of the initiator, for tests where targets die, freeze or refuse on
/// purpose (failover): every step returns a [`PathError`] instead of panicking, and every
/// wait is bounded by the caller's limit.
impl Initiator {
    /// Opens a TCP connection to `addr` (not logged in); refused or unreachable is an error.
    pub async fn try_connect(addr: SocketAddr, name: &str) -> Result<Initiator, PathError> {
        let stream = tokio::time::timeout(RECV_LIMIT, TcpStream::connect(addr))
            .await
            .map_err(|_| PathError::Timeout)?
            .map_err(PathError::Io)?;
        stream.set_nodelay(true).map_err(PathError::Io)?;
        Ok(Initiator::over(stream, name))
    }

    /// Encodes and sends one PDU.
    pub async fn try_send(&mut self, p: Pdu) -> Result<(), PathError> {
        let mut out = BytesMut::new();
        p.encode(&self.codec, &mut out)
            .map_err(|e| PathError::Protocol(format!("encode: {e}")))?;
        self.stream
            .write_all(&out)
            .await
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset => {
                    PathError::Closed
                }
                _ => PathError::Io(e),
            })
    }

    /// The next PDU within `limit`.
    pub async fn try_recv(&mut self, limit: Duration) -> Result<Pdu, PathError> {
        let fut = async {
            loop {
                match pdu::decode(&mut self.buf, &self.codec) {
                    Ok(Some(p)) => return Ok(p),
                    Ok(None) => {}
                    Err(e) => return Err(PathError::Protocol(format!("undecodable PDU: {e}"))),
                }
                match self.stream.read_buf(&mut self.buf).await {
                    Ok(0) => return Err(PathError::Closed),
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                        return Err(PathError::Closed)
                    }
                    Err(e) => return Err(PathError::Io(e)),
                }
            }
        };
        let p = tokio::time::timeout(limit, fut)
            .await
            .map_err(|_| PathError::Timeout)??;
        if let Some(sn) = stat_sn_of(&p.bhs) {
            self.exp_stat_sn = sn.wrapping_add(1);
        }
        Ok(p)
    }

    /// Login without authentication to `target` within `limit`; the login status is in the
    /// result (a refused login is not a [`PathError`]).
    pub async fn try_login(
        &mut self,
        target: &str,
        limit: Duration,
    ) -> Result<LoginResult, PathError> {
        let name = self.name.clone();
        let mut keys = vec![("InitiatorName", name.as_str()), ("TargetName", target)];
        keys.extend(Self::operational_keys());
        let req = LoginRequest {
            transit: true,
            continue_bit: false,
            csg: LoginStage::Operational,
            nsg: LoginStage::FullFeature,
            version_max: 0,
            version_min: 0,
            isid: self.isid,
            tsih: self.tsih,
            itt: 0x100,
            cid: 1,
            cmd_sn: self.cmd_sn,
            exp_stat_sn: self.exp_stat_sn,
        };
        self.try_send(Pdu::new(req, kv(&keys))).await?;
        let p = self.try_recv(limit).await?;
        let Bhs::LoginResponse(r) = p.bhs else {
            return Err(PathError::Protocol(format!(
                "expected a Login Response, got {:?}",
                p.bhs.opcode()
            )));
        };
        let map = text::parse(&p.data)
            .map_err(|e| PathError::Protocol(format!("login response text: {e}")))?
            .into_iter()
            .map(|kv| (kv.key, kv.value))
            .collect();
        Ok(self.finish_login(r, map))
    }

    /// Runs one SCSI command to completion within `limit`: `data` (a write) goes as
    /// immediate data up to the first burst and the rest on R2Ts; Data-In is collected.
    /// Target pings (NOP-In asking for an answer) are answered and asynchronous messages
    /// skipped while waiting.
    pub async fn try_run(
        &mut self,
        cdb: &[u8],
        read_len: u32,
        data: &[u8],
        limit: Duration,
    ) -> Result<CmdResult, PathError> {
        let deadline = tokio::time::Instant::now() + limit;
        let write = !data.is_empty();
        let edtl = if write { data.len() as u32 } else { read_len };
        let imm = Bytes::copy_from_slice(&data[..data.len().min(65536)]);
        let cmd = self.command(cdb, read_len > 0, write, edtl, imm);
        let itt = cmd.bhs.itt();
        self.try_send(cmd).await?;
        let mut res = CmdResult::default();
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let p = self.try_recv(left).await?;
            match &p.bhs {
                Bhs::NopIn(n) if n.itt == pdu::RESERVED_TAG => {
                    if n.ttt != pdu::RESERVED_TAG {
                        let answer = NopOut {
                            immediate: true,
                            lun: n.lun,
                            itt: pdu::RESERVED_TAG,
                            ttt: n.ttt,
                            cmd_sn: self.cmd_sn,
                            exp_stat_sn: self.exp_stat_sn,
                        };
                        self.try_send(Pdu::header_only(answer)).await?;
                    }
                }
                Bhs::AsyncMessage(_) => {}
                b if b.itt() != itt => {
                    return Err(PathError::Protocol(format!(
                        "{:?} for another task ({:#x}, waiting for {itt:#x})",
                        b.opcode(),
                        b.itt()
                    )))
                }
                Bhs::R2t(r) => {
                    res.r2ts += 1;
                    let r = r.clone();
                    let mut off = r.buffer_offset as usize;
                    let end = (off + r.desired_data_transfer_length as usize).min(data.len());
                    let mut sn = 0;
                    while off < end {
                        let n = 65536.min(end - off);
                        let d = pdu::DataOut {
                            final_bit: off + n == end,
                            lun: 0,
                            itt,
                            ttt: r.ttt,
                            exp_stat_sn: self.exp_stat_sn,
                            data_sn: sn,
                            buffer_offset: off as u32,
                        };
                        self.try_send(Pdu::new(d, Bytes::copy_from_slice(&data[off..off + n])))
                            .await?;
                        sn += 1;
                        off += n;
                    }
                }
                Bhs::DataIn(d) => {
                    res.data_ins += 1;
                    res.data.extend_from_slice(&p.data);
                    if let Some(st) = d.status {
                        res.status = st;
                        res.overflow = d.overflow;
                        res.underflow = d.underflow;
                        res.residual = d.residual_count;
                        return Ok(res);
                    }
                }
                Bhs::ScsiResponse(r) => {
                    res.status = r.status;
                    res.overflow = r.overflow;
                    res.underflow = r.underflow;
                    res.residual = r.residual_count;
                    res.sense = pdu::parse_sense_segment(&p.data)
                        .map(|b| b.to_vec())
                        .unwrap_or_default();
                    return Ok(res);
                }
                other => {
                    return Err(PathError::Protocol(format!(
                        "unexpected {:?} for a command",
                        other.opcode()
                    )))
                }
            }
        }
    }
}
