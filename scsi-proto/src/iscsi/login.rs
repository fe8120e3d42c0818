//! The target's login state machine for one connection (RFC 7143 sections 6 and 11.12-13).
//!
//! Pure: the daemon feeds every PDU it receives during the login phase to
//! [`LoginConnection::handle`] and sends what comes back. The machine handles C-bit text
//! continuation in both directions, the Security → Operational → FullFeature stages (and the
//! allowed skips), the T bit, version and ISID/TSIH rules, authentication (CHAP via
//! [`crate::iscsi::chap`]), operational negotiation (via [`crate::iscsi::negotiate`]) and
//! reports failures with the RFC status class/detail. Everything that needs the target's
//! configuration or session table goes through [`LoginPolicy`].

use bytes::Bytes;

use crate::iscsi::chap::{ChapAuthenticator, ChapConfig};
use crate::iscsi::negotiate::{
    is_security_key, Negotiator, SessionParams, SessionType, TargetSettings,
};
use crate::iscsi::pdu::{Bhs, LoginRequest, LoginResponse, LoginStage, Pdu};
use crate::iscsi::status::{LoginFailure, LoginStatus};
use crate::iscsi::text::{self, KeyValue, TextAssembler, TextSegmenter, TextWriter};

/// The only iSCSI version: RFC 7143 (and RFC 3720) are version 0x00.
pub const ISCSI_VERSION: u8 = 0x00;
/// Most Login Request PDUs accepted in one login; a real login needs fewer than ten.
pub const MAX_LOGIN_PDUS: u32 = 256;
/// Data segment size of our Login Responses (the login-phase MaxRecvDataSegmentLength).
pub const LOGIN_SEGMENT_LEN: usize = 8192;

/// What the policy knows about a target.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TargetInfo {
    /// TargetAlias to announce, if any.
    pub alias: Option<String>,
    /// CHAP required for this target; `None` = no authentication.
    pub chap: Option<ChapConfig>,
}

/// A live session as the policy sees it, for a login that names it by TSIH (a non-leading
/// login: a connection added to the session, or a connection reinstatement).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExistingSession {
    /// The session's type: a discovery session never grants LUN access, so a connection may
    /// only join a session of the type it declares.
    pub session_type: SessionType,
    /// InitiatorName of the leading login.
    pub initiator_name: String,
    /// ISID of the leading login.
    pub isid: u64,
    /// TargetName of a normal session; `None` for a discovery session.
    pub target_name: Option<String>,
    /// Whether the session has a connection with the login's CID (connection reinstatement).
    pub has_cid: bool,
    /// Connections the session has now.
    pub connections: u32,
    /// The session's MaxConnections.
    pub max_connections: u32,
}

/// Who a login says it is: the identity a non-leading login must share with its session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoginIdentity<'a> {
    /// Declared SessionType (default Normal).
    pub session_type: SessionType,
    /// Declared InitiatorName.
    pub initiator_name: &'a str,
    /// ISID of the Login Request.
    pub isid: u64,
    /// Declared TargetName of a normal login; `None` for discovery (the name is irrelevant
    /// there and must not pick a session).
    pub target_name: Option<&'a str>,
}

/// Whether a non-leading login may join a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JoinDecision {
    /// The connection may join (or reinstate a connection of) the session.
    Allowed,
    /// No session with this TSIH, or one that belongs to another identity: 0x020a.
    NoSuchSession,
    /// The session already has MaxConnections connections: 0x0206.
    TooManyConnections,
}

impl ExistingSession {
    /// The rule every non-leading login passes (RFC 7143 sections 4.3.1, 6.3): the session
    /// must be the one this initiator (name and ISID) opened, of the same type and to the
    /// same target. Names compare case-insensitively, as iSCSI names are case-folded.
    /// Authentication is not decided here: the login machine takes it from the same target
    /// (or discovery) settings the leading login passed, so every connection authenticates.
    pub fn admits(&self, who: &LoginIdentity<'_>) -> JoinDecision {
        let same_target = match (&self.target_name, who.target_name) {
            (Some(a), Some(b)) => a.eq_ignore_ascii_case(b),
            (None, None) => true,
            _ => false,
        };
        if self.session_type != who.session_type
            || self.isid != who.isid
            || !self.initiator_name.eq_ignore_ascii_case(who.initiator_name)
            || !same_target
        {
            return JoinDecision::NoSuchSession;
        }
        if self.has_cid || self.connections < self.max_connections {
            JoinDecision::Allowed
        } else {
            JoinDecision::TooManyConnections
        }
    }
}

/// Target configuration and session table, as the login needs them. Methods take `&self`;
/// implementations use interior mutability where needed (TSIH allocation).
pub trait LoginPolicy {
    /// Look up a target by IQN; `None` fails the login with 0x0203 (not found).
    fn target(&self, target_name: &str) -> Option<TargetInfo>;
    /// Whether `initiator_name` may access `target_name`; `false` fails with 0x0202.
    fn initiator_allowed(&self, target_name: &str, initiator_name: &str) -> bool;
    /// CHAP required for discovery sessions; `None` = no authentication.
    fn discovery_chap(&self) -> Option<ChapConfig>;
    /// A fresh, nonzero TSIH for a new session; `None` fails with 0x0302 (out of resources).
    fn allocate_tsih(&self) -> Option<u16>;
    /// The live session with this TSIH, as seen by a login with connection ID `cid`;
    /// `None` if there is none. The login machine decides with [`ExistingSession::admits`].
    fn session(&self, tsih: u16, cid: u16) -> Option<ExistingSession>;
}

/// The result of a successful login.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoginOutcome {
    /// Negotiated parameters. For a non-leading login only the connection-scoped ones
    /// (digests, data segment lengths) are meaningful; session-wide ones stay the session's.
    pub params: SessionParams,
    /// InitiatorName.
    pub initiator_name: String,
    /// InitiatorAlias, if declared.
    pub initiator_alias: Option<String>,
    /// TargetName (`None` for discovery sessions that did not name one).
    pub target_name: Option<String>,
    /// Normal or discovery.
    pub session_type: SessionType,
    /// 48-bit ISID.
    pub isid: u64,
    /// TSIH (newly allocated for a leading login).
    pub tsih: u16,
    /// Connection ID.
    pub cid: u16,
    /// The CmdSN of the login, i.e. the session's first ExpCmdSN (leading login).
    pub cmd_sn: u32,
    /// The next StatSN this connection will use.
    pub stat_sn: u32,
    /// True for a new session (TSIH was 0). A leading login whose (initiator, ISID, target)
    /// matches an existing session is a session reinstatement: the daemon must close the old
    /// session (RFC 7143 section 6.3.5).
    pub leading: bool,
}

/// What to do after feeding a PDU.
#[derive(Clone, Debug, PartialEq, Eq)]
#[allow(clippy::large_enum_variant)]
pub enum LoginStep {
    /// Send this Login Response and wait for the next request.
    Respond(Pdu),
    /// Send this final Login Response; the connection is now in the full feature phase with
    /// `outcome.params.codec()` (digests start with the next PDU).
    Complete {
        /// The final Login Response.
        response: Pdu,
        /// What was negotiated.
        outcome: LoginOutcome,
    },
    /// Send this Login Response (status class 2 or 3), then close the connection.
    Fail {
        /// The failure response.
        response: Pdu,
        /// Why, for logs.
        failure: LoginFailure,
    },
}

/// Values fixed by the first Login Request of the connection.
#[derive(Clone, Copy, Debug)]
struct First {
    isid: u64,
    tsih: u16,
    cid: u16,
    cmd_sn: u32,
}

#[derive(Debug)]
enum Auth {
    /// AuthMethod not negotiated yet.
    Pending,
    /// No authentication (AuthMethod=None, or auth not required and AuthMethod rejected).
    Open,
    /// CHAP in progress or done.
    Chap(ChapAuthenticator),
}

/// Flags for the response that ends an exchange (after any continued text).
#[derive(Clone, Copy, Debug)]
struct Reply {
    transit: bool,
    csg: LoginStage,
    nsg: LoginStage,
    complete: bool,
}

#[derive(Debug)]
enum State {
    Active,
    Finished,
}

/// Applies [`ExistingSession::admits`] to the session the login names.
fn check_join(
    policy: &dyn LoginPolicy,
    tsih: u16,
    cid: u16,
    who: &LoginIdentity<'_>,
) -> Result<(), LoginFailure> {
    let decision = policy
        .session(tsih, cid)
        .map_or(JoinDecision::NoSuchSession, |s| s.admits(who));
    let status = match decision {
        JoinDecision::Allowed => return Ok(()),
        JoinDecision::NoSuchSession => LoginStatus::SessionDoesNotExist,
        JoinDecision::TooManyConnections => LoginStatus::TooManyConnections,
    };
    Err(fail(status, format!("cannot join session TSIH {tsih}")))
}

/// Login state machine for one connection.
#[derive(Debug)]
pub struct LoginConnection {
    settings: TargetSettings,
    portal_group_tag: u16,
    stat_sn: u32,
    state: State,
    first: Option<First>,
    stage: LoginStage,
    negotiator: Option<Negotiator>,
    auth: Auth,
    auth_required: bool,
    chap_config: Option<ChapConfig>,
    target: Option<TargetInfo>,
    rx: TextAssembler,
    tx: Option<(TextSegmenter, Reply)>,
    pdus: u32,
}

fn fail(status: LoginStatus, reason: impl Into<String>) -> LoginFailure {
    LoginFailure::new(status, reason)
}

impl LoginConnection {
    /// A new connection accepted on a portal of group `portal_group_tag`. `initial_stat_sn`
    /// is the StatSN of the first Login Response (any value; e.g. random).
    pub fn new(settings: TargetSettings, portal_group_tag: u16, initial_stat_sn: u32) -> Self {
        LoginConnection {
            settings,
            portal_group_tag,
            stat_sn: initial_stat_sn,
            state: State::Active,
            first: None,
            stage: LoginStage::Security,
            negotiator: None,
            auth: Auth::Pending,
            auth_required: false,
            chap_config: None,
            target: None,
            rx: TextAssembler::new(),
            tx: None,
            pdus: 0,
        }
    }

    /// Feed one PDU received during the login phase.
    pub fn handle(&mut self, pdu: &Pdu, policy: &dyn LoginPolicy) -> LoginStep {
        let Bhs::LoginRequest(req) = &pdu.bhs else {
            let failure = fail(
                LoginStatus::InvalidDuringLogin,
                format!("{:?} PDU during login", pdu.bhs.opcode()),
            );
            return self.failure(None, pdu.bhs.itt(), failure);
        };
        if matches!(self.state, State::Finished) {
            let failure = fail(
                LoginStatus::InitiatorError,
                "Login Request after login ended",
            );
            return self.failure(Some(req), req.itt, failure);
        }
        match self.step(req, &pdu.data, policy) {
            Ok(step) => step,
            Err(failure) => self.failure(Some(req), req.itt, failure),
        }
    }

    fn step(
        &mut self,
        req: &LoginRequest,
        data: &Bytes,
        policy: &dyn LoginPolicy,
    ) -> Result<LoginStep, LoginFailure> {
        self.pdus += 1;
        if self.pdus > MAX_LOGIN_PDUS {
            return Err(fail(LoginStatus::InitiatorError, "too many Login Requests"));
        }
        self.check_header(req)?;

        // Continue sending a long response: the initiator asks with empty requests.
        if self.tx.is_some() {
            if !data.is_empty() || req.continue_bit {
                return Err(fail(
                    LoginStatus::InitiatorError,
                    "text sent while the target's response was being continued",
                ));
            }
            return self.next_chunk(req, policy);
        }

        if req.transit && req.continue_bit {
            return Err(fail(LoginStatus::InitiatorError, "T and C bits both set"));
        }
        let Some(text) = self
            .rx
            .push(data, req.continue_bit)
            .map_err(|e| fail(LoginStatus::InitiatorError, format!("login text: {e}")))?
        else {
            // Partial text: acknowledge with an empty response and wait for the rest.
            let reply = Reply {
                transit: false,
                csg: self.stage,
                nsg: self.stage,
                complete: false,
            };
            return Ok(LoginStep::Respond(self.response(
                req,
                reply,
                Bytes::new(),
                0,
            )));
        };
        let pairs = text::parse(&text)
            .map_err(|e| fail(LoginStatus::InitiatorError, format!("login text: {e}")))?;

        let mut out = TextWriter::new();
        let first_pdu = self.negotiator.is_none();
        if first_pdu {
            self.negotiator = Some(Negotiator::new(self.settings.clone(), req.tsih == 0));
        }
        let reply = match req.csg {
            LoginStage::Security => self.security(req, &pairs, first_pdu, policy, &mut out)?,
            LoginStage::Operational => {
                self.operational(req, &pairs, first_pdu, policy, &mut out)?
            }
            LoginStage::FullFeature | LoginStage::Reserved => {
                return Err(fail(
                    LoginStatus::InitiatorError,
                    format!("invalid current stage {:?}", req.csg),
                ))
            }
        };
        self.tx = Some((TextSegmenter::new(out.finish(), LOGIN_SEGMENT_LEN), reply));
        self.next_chunk(req, policy)
    }

    /// Checks every Login Request header must pass.
    fn check_header(&mut self, req: &LoginRequest) -> Result<(), LoginFailure> {
        match self.first {
            None => {
                if req.version_min > ISCSI_VERSION {
                    return Err(fail(
                        LoginStatus::UnsupportedVersion,
                        format!(
                            "initiator versions {}..={}",
                            req.version_min, req.version_max
                        ),
                    ));
                }
                if !matches!(req.csg, LoginStage::Security | LoginStage::Operational) {
                    return Err(fail(
                        LoginStatus::InitiatorError,
                        format!("first Login Request in stage {:?}", req.csg),
                    ));
                }
                self.stage = req.csg;
                self.first = Some(First {
                    isid: req.isid,
                    tsih: req.tsih,
                    cid: req.cid,
                    cmd_sn: req.cmd_sn,
                });
            }
            Some(f) => {
                if (f.isid, f.tsih, f.cid) != (req.isid, req.tsih, req.cid) {
                    return Err(fail(
                        LoginStatus::InitiatorError,
                        "ISID, TSIH or CID changed during login",
                    ));
                }
                if req.csg != self.stage {
                    return Err(fail(
                        LoginStatus::InitiatorError,
                        format!(
                            "Login Request for stage {:?} while in {:?}",
                            req.csg, self.stage
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    /// First-PDU identity checks: names, target lookup, ACL, session join.
    fn identify(&mut self, policy: &dyn LoginPolicy) -> Result<(), LoginFailure> {
        let (declared, leading, session_type) = {
            let n = self.negotiator_ref()?;
            (n.declared().clone(), n.leading(), n.session_type())
        };
        let initiator = declared
            .initiator_name
            .as_deref()
            .ok_or_else(|| fail(LoginStatus::MissingParameter, "InitiatorName missing"))?;
        let chap = match session_type {
            SessionType::Normal => {
                let target = declared
                    .target_name
                    .as_deref()
                    .ok_or_else(|| fail(LoginStatus::MissingParameter, "TargetName missing"))?;
                let info = policy
                    .target(target)
                    .ok_or_else(|| fail(LoginStatus::NotFound, format!("no target {target}")))?;
                if !policy.initiator_allowed(target, initiator) {
                    return Err(fail(
                        LoginStatus::AuthorizationFailure,
                        format!("{initiator} may not access {target}"),
                    ));
                }
                let chap = info.chap.clone();
                self.target = Some(info);
                chap
            }
            SessionType::Discovery => policy.discovery_chap(),
        };
        if let Some(cfg) = &chap {
            cfg.validate()
                .map_err(|e| fail(LoginStatus::TargetError, format!("CHAP configuration: {e}")))?;
        }
        self.auth_required = chap.is_some();
        self.chap_config = chap;
        if !leading {
            let f = self.first_ref()?;
            let who = LoginIdentity {
                session_type,
                initiator_name: initiator,
                isid: f.isid,
                target_name: match session_type {
                    SessionType::Normal => declared.target_name.as_deref(),
                    SessionType::Discovery => None,
                },
            };
            check_join(policy, f.tsih, f.cid, &who)?;
        }
        self.negotiator_mut()?.freeze_identity();
        Ok(())
    }

    /// Keys the target announces in its first response of a normal session.
    fn announce(&self, out: &mut TextWriter) {
        if let Some(info) = &self.target {
            out.push("TargetPortalGroupTag", &self.portal_group_tag.to_string());
            if let Some(alias) = &info.alias {
                out.push("TargetAlias", alias);
            }
        }
    }

    fn negotiator_ref(&self) -> Result<&Negotiator, LoginFailure> {
        self.negotiator
            .as_ref()
            .ok_or_else(|| fail(LoginStatus::TargetError, "negotiation state missing"))
    }

    fn negotiator_mut(&mut self) -> Result<&mut Negotiator, LoginFailure> {
        self.negotiator
            .as_mut()
            .ok_or_else(|| fail(LoginStatus::TargetError, "negotiation state missing"))
    }

    fn first_ref(&self) -> Result<First, LoginFailure> {
        self.first
            .ok_or_else(|| fail(LoginStatus::TargetError, "login state missing"))
    }

    fn security(
        &mut self,
        req: &LoginRequest,
        pairs: &[KeyValue],
        first_pdu: bool,
        policy: &dyn LoginPolicy,
        out: &mut TextWriter,
    ) -> Result<Reply, LoginFailure> {
        // Declarative and (tolerated) operational keys; security keys are skipped there.
        self.negotiator_mut()?.respond(pairs, false, out)?;
        if first_pdu {
            self.identify(policy)?;
            self.announce(out);
        }

        if let Some(am) = pairs.iter().find(|kv| kv.key == "AuthMethod") {
            self.negotiator_mut()?.mark_seen("AuthMethod")?;
            let offered = |m: &str| am.value.split(',').any(|x| x == m);
            match self.chap_config.clone() {
                Some(cfg) if offered("CHAP") => {
                    out.push("AuthMethod", "CHAP");
                    self.auth = Auth::Chap(ChapAuthenticator::random(cfg));
                }
                Some(_) => {
                    return Err(fail(
                        LoginStatus::AuthenticationFailure,
                        format!("CHAP required; initiator offered AuthMethod={}", am.value),
                    ))
                }
                None if offered("None") => {
                    out.push("AuthMethod", "None");
                    self.auth = Auth::Open;
                }
                None => {
                    out.push("AuthMethod", "Reject");
                    self.auth = Auth::Open;
                }
            }
        }

        let chap_keys: Vec<KeyValue> = pairs
            .iter()
            .filter(|kv| kv.key.starts_with("CHAP_"))
            .cloned()
            .collect();
        match &mut self.auth {
            Auth::Chap(chap) => {
                chap.step(&chap_keys, out)?;
            }
            _ if !chap_keys.is_empty() => {
                return Err(fail(
                    LoginStatus::InitiatorError,
                    "CHAP keys without AuthMethod=CHAP",
                ))
            }
            _ => {}
        }
        // Keys of authentication methods we never select.
        for kv in pairs.iter().filter(|kv| {
            is_security_key(&kv.key) && kv.key != "AuthMethod" && !kv.key.starts_with("CHAP_")
        }) {
            out.push(&kv.key, "NotUnderstood");
        }

        let stay = Reply {
            transit: false,
            csg: LoginStage::Security,
            nsg: LoginStage::Security,
            complete: false,
        };
        if !req.transit {
            return Ok(stay);
        }
        if !matches!(req.nsg, LoginStage::Operational | LoginStage::FullFeature) {
            return Err(fail(
                LoginStatus::InitiatorError,
                format!("invalid next stage {:?} from security", req.nsg),
            ));
        }
        let authenticated = match &self.auth {
            Auth::Chap(chap) => chap.is_done(),
            Auth::Open | Auth::Pending => !self.auth_required,
        };
        if authenticated {
            Ok(Reply {
                transit: true,
                csg: LoginStage::Security,
                nsg: req.nsg,
                complete: req.nsg == LoginStage::FullFeature,
            })
        } else if matches!(self.auth, Auth::Chap(_)) {
            // CHAP still running: refuse the transition for now (T=0).
            Ok(stay)
        } else {
            Err(fail(
                LoginStatus::AuthenticationFailure,
                "authentication required before leaving the security stage",
            ))
        }
    }

    fn operational(
        &mut self,
        req: &LoginRequest,
        pairs: &[KeyValue],
        first_pdu: bool,
        policy: &dyn LoginPolicy,
        out: &mut TextWriter,
    ) -> Result<Reply, LoginFailure> {
        if let Some(kv) = pairs.iter().find(|kv| is_security_key(&kv.key)) {
            return Err(fail(
                LoginStatus::InitiatorError,
                format!("security key {} in the operational stage", kv.key),
            ));
        }
        self.negotiator_mut()?.respond(pairs, true, out)?;
        if first_pdu {
            self.identify(policy)?;
            if self.auth_required {
                return Err(fail(
                    LoginStatus::AuthenticationFailure,
                    "authentication required but the initiator skipped the security stage",
                ));
            }
            self.announce(out);
        }
        if !req.transit {
            return Ok(Reply {
                transit: false,
                csg: LoginStage::Operational,
                nsg: LoginStage::Operational,
                complete: false,
            });
        }
        if req.nsg != LoginStage::FullFeature {
            return Err(fail(
                LoginStatus::InitiatorError,
                format!("invalid next stage {:?} from operational", req.nsg),
            ));
        }
        Ok(Reply {
            transit: true,
            csg: LoginStage::Operational,
            nsg: LoginStage::FullFeature,
            complete: true,
        })
    }

    /// Send the next piece of the pending response; on the last piece apply the stage
    /// transition and, at the full feature phase, finish the login.
    fn next_chunk(
        &mut self,
        req: &LoginRequest,
        policy: &dyn LoginPolicy,
    ) -> Result<LoginStep, LoginFailure> {
        let Some((seg, reply)) = self.tx.as_mut() else {
            return Err(fail(LoginStatus::TargetError, "no pending response"));
        };
        let reply = *reply;
        let (chunk, more) = seg.next_chunk();
        if more {
            let partial = Reply {
                transit: false,
                nsg: reply.csg,
                complete: false,
                ..reply
            };
            return Ok(LoginStep::Respond(self.response(req, partial, chunk, 0)));
        }
        self.tx = None;
        if !reply.complete {
            if reply.transit {
                self.stage = reply.nsg;
            }
            return Ok(LoginStep::Respond(self.response(req, reply, chunk, 0)));
        }

        let first = self.first_ref()?;
        let negotiator = self.negotiator_ref()?;
        let leading = negotiator.leading();
        let declared = negotiator.declared().clone();
        let params = negotiator.params();
        let initiator_name = declared
            .initiator_name
            .ok_or_else(|| fail(LoginStatus::MissingParameter, "InitiatorName missing"))?;
        let tsih = if leading {
            policy
                .allocate_tsih()
                .filter(|&t| t != 0)
                .ok_or_else(|| fail(LoginStatus::OutOfResources, "no TSIH available"))?
        } else {
            // Again at the end: the session may have ended, and its TSIH been given to
            // another, while this login was authenticating.
            let who = LoginIdentity {
                session_type: params.session_type,
                initiator_name: &initiator_name,
                isid: first.isid,
                target_name: match params.session_type {
                    SessionType::Normal => declared.target_name.as_deref(),
                    SessionType::Discovery => None,
                },
            };
            check_join(policy, first.tsih, first.cid, &who)?;
            first.tsih
        };
        let response = self.response(req, reply, chunk, tsih);
        self.stage = LoginStage::FullFeature;
        self.state = State::Finished;
        let outcome = LoginOutcome {
            session_type: params.session_type,
            params,
            initiator_name,
            initiator_alias: declared.initiator_alias,
            target_name: declared.target_name,
            isid: first.isid,
            tsih,
            cid: first.cid,
            cmd_sn: first.cmd_sn,
            stat_sn: self.stat_sn,
            leading,
        };
        Ok(LoginStep::Complete { response, outcome })
    }

    /// Build a Login Response; `tsih` 0 means "echo the request's".
    fn response(&mut self, req: &LoginRequest, reply: Reply, data: Bytes, tsih: u16) -> Pdu {
        let continue_bit = self.tx.is_some();
        let cmd_sn = self.first.map_or(req.cmd_sn, |f| f.cmd_sn);
        let max_cmd_sn = if reply.complete {
            cmd_sn.wrapping_add(self.settings.queue_depth.max(1) - 1)
        } else {
            cmd_sn
        };
        let stat_sn = self.stat_sn;
        self.stat_sn = self.stat_sn.wrapping_add(1);
        Pdu::new(
            LoginResponse {
                transit: reply.transit,
                continue_bit,
                csg: reply.csg,
                nsg: if reply.transit { reply.nsg } else { reply.csg },
                version_max: ISCSI_VERSION,
                version_active: ISCSI_VERSION,
                isid: req.isid,
                tsih: if tsih != 0 { tsih } else { req.tsih },
                itt: req.itt,
                stat_sn,
                exp_cmd_sn: cmd_sn,
                max_cmd_sn,
                status_class: 0,
                status_detail: 0,
            },
            data,
        )
    }

    fn failure(
        &mut self,
        req: Option<&LoginRequest>,
        itt: u32,
        failure: LoginFailure,
    ) -> LoginStep {
        self.state = State::Finished;
        self.tx = None;
        self.rx.reset();
        let cmd_sn = self
            .first
            .map(|f| f.cmd_sn)
            .or(req.map(|r| r.cmd_sn))
            .unwrap_or(0);
        let stat_sn = self.stat_sn;
        self.stat_sn = self.stat_sn.wrapping_add(1);
        let response = Pdu::header_only(LoginResponse {
            transit: false,
            continue_bit: false,
            csg: self.stage,
            nsg: self.stage,
            version_max: ISCSI_VERSION,
            version_active: ISCSI_VERSION,
            isid: req.map_or(0, |r| r.isid),
            tsih: req.map_or(0, |r| r.tsih),
            itt,
            stat_sn,
            exp_cmd_sn: cmd_sn,
            max_cmd_sn: cmd_sn,
            status_class: failure.status.class(),
            status_detail: failure.status.detail(),
        });
        LoginStep::Fail { response, failure }
    }
}

#[cfg(test)]
mod tests;
