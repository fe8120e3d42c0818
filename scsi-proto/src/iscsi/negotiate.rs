//! Operational and declarative login keys (RFC 7143 sections 6.2 and 13): the target side of
//! the negotiation, producing the session's [`SessionParams`].
//!
//! The target answers what the initiator offers (we never originate a negotiation, except for
//! declaring our own MaxRecvDataSegmentLength), so every result is one of:
//! - the result function applied to the offer and our setting (min, max, OR, AND, list pick),
//! - `Reject` for malformed or out-of-range values (the key keeps its default),
//! - `Irrelevant` where the key has no meaning (session-wide keys in a discovery session,
//!   marker intervals once markers are off),
//! - `NotUnderstood` for unknown and `X-`/`X#` vendor keys,
//! - or no answer at all for declarative keys.
//!
//! A key sent twice during one login is a protocol error that ends the login (section 6.2).

use std::collections::HashSet;

use crate::iscsi::pdu::CodecConfig;
use crate::iscsi::status::{LoginFailure, LoginStatus};
use crate::iscsi::text::{KeyValue, TextWriter};

/// Normal or discovery session.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum SessionType {
    /// Access to a target's LUNs.
    #[default]
    Normal,
    /// SendTargets only.
    Discovery,
}

/// How the target treats a digest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum DigestPolicy {
    /// Never use it (answer None).
    Disabled,
    /// Use it if the initiator prefers it.
    #[default]
    Allowed,
    /// Refuse logins that do not use it.
    Required,
}

/// Our side of the negotiation: preferred values and limits, filled from configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TargetSettings {
    /// What we declare as our MaxRecvDataSegmentLength (512..=2^24-1).
    pub max_recv_data_segment_length: u32,
    /// Largest MaxBurstLength we accept (512..=2^24-1).
    pub max_burst_length: u32,
    /// Largest FirstBurstLength we accept (512..=2^24-1, ≤ max_burst_length).
    pub first_burst_length: u32,
    /// Whether we allow immediate (in-command) data.
    pub immediate_data: bool,
    /// Whether we require an R2T before any unsolicited Data-Out.
    pub initial_r2t: bool,
    /// Largest MaxOutstandingR2T we accept (1..=65535).
    pub max_outstanding_r2t: u32,
    /// Largest MaxConnections we accept (1..=65535).
    pub max_connections: u16,
    /// DefaultTime2Wait we want at least (0..=3600).
    pub default_time2wait: u16,
    /// DefaultTime2Retain we accept at most (0..=3600).
    pub default_time2retain: u16,
    /// Header digest policy.
    pub header_digest: DigestPolicy,
    /// Data digest policy.
    pub data_digest: DigestPolicy,
    /// Commands the session may have outstanding: the final Login Response advertises
    /// MaxCmdSN = ExpCmdSN + queue_depth - 1, and the daemon's CmdSN window should use the
    /// same depth (1..=65536).
    pub queue_depth: u32,
}

impl Default for TargetSettings {
    fn default() -> Self {
        TargetSettings {
            max_recv_data_segment_length: 256 * 1024,
            max_burst_length: 1024 * 1024,
            first_burst_length: 256 * 1024,
            immediate_data: true,
            initial_r2t: false,
            max_outstanding_r2t: 16,
            max_connections: 1,
            default_time2wait: 2,
            default_time2retain: 20,
            header_digest: DigestPolicy::Allowed,
            data_digest: DigestPolicy::Allowed,
            queue_depth: 64,
        }
    }
}

const SEGMENT_RANGE: (u64, u64) = (512, (1 << 24) - 1);

impl TargetSettings {
    /// Check ranges and consistency; the daemon calls this when loading configuration.
    pub fn validate(&self) -> Result<(), String> {
        let in_seg = |name: &str, v: u32| {
            if (SEGMENT_RANGE.0..=SEGMENT_RANGE.1).contains(&u64::from(v)) {
                Ok(())
            } else {
                Err(format!("{name} {v} outside 512..=16777215"))
            }
        };
        in_seg(
            "MaxRecvDataSegmentLength",
            self.max_recv_data_segment_length,
        )?;
        in_seg("MaxBurstLength", self.max_burst_length)?;
        in_seg("FirstBurstLength", self.first_burst_length)?;
        if self.first_burst_length > self.max_burst_length {
            return Err("FirstBurstLength exceeds MaxBurstLength".into());
        }
        if !(1..=65535).contains(&self.max_outstanding_r2t) {
            return Err("MaxOutstandingR2T outside 1..=65535".into());
        }
        if self.max_connections == 0 {
            return Err("MaxConnections must be at least 1".into());
        }
        if !(1..=crate::iscsi::seq::MAX_WINDOW).contains(&self.queue_depth) {
            return Err("queue depth outside 1..=65536".into());
        }
        if self.default_time2wait > 3600 || self.default_time2retain > 3600 {
            return Err("DefaultTime2Wait/DefaultTime2Retain outside 0..=3600".into());
        }
        Ok(())
    }
}

/// The negotiated parameters of a session (session-wide keys) and connection (digests and
/// data segment lengths). Starts at the RFC 7143 defaults.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionParams {
    /// Normal or discovery.
    pub session_type: SessionType,
    /// CRC32C header digests on this connection.
    pub header_digest: bool,
    /// CRC32C data digests on this connection.
    pub data_digest: bool,
    /// Largest data segment we accept (what we declared; 8192 if we never did).
    pub max_recv_data_segment_length: u32,
    /// Largest data segment we may send (what the initiator declared, default 8192).
    pub max_send_data_segment_length: u32,
    /// MaxBurstLength.
    pub max_burst_length: u32,
    /// FirstBurstLength (≤ max_burst_length).
    pub first_burst_length: u32,
    /// InitialR2T.
    pub initial_r2t: bool,
    /// ImmediateData.
    pub immediate_data: bool,
    /// MaxOutstandingR2T.
    pub max_outstanding_r2t: u32,
    /// MaxConnections.
    pub max_connections: u16,
    /// DataPDUInOrder.
    pub data_pdu_in_order: bool,
    /// DataSequenceInOrder.
    pub data_sequence_in_order: bool,
    /// ErrorRecoveryLevel (always 0 here).
    pub error_recovery_level: u8,
    /// DefaultTime2Wait (seconds).
    pub default_time2wait: u16,
    /// DefaultTime2Retain (seconds).
    pub default_time2retain: u16,
}

impl Default for SessionParams {
    fn default() -> Self {
        SessionParams {
            session_type: SessionType::Normal,
            header_digest: false,
            data_digest: false,
            max_recv_data_segment_length: 8192,
            max_send_data_segment_length: 8192,
            max_burst_length: 262_144,
            first_burst_length: 65_536,
            initial_r2t: true,
            immediate_data: true,
            max_outstanding_r2t: 1,
            max_connections: 1,
            data_pdu_in_order: true,
            data_sequence_in_order: true,
            error_recovery_level: 0,
            default_time2wait: 2,
            default_time2retain: 20,
        }
    }
}

impl SessionParams {
    /// The codec settings for the full feature phase of this connection.
    pub fn codec(&self) -> CodecConfig {
        CodecConfig {
            header_digest: self.header_digest,
            data_digest: self.data_digest,
            max_recv_data_segment_length: self.max_recv_data_segment_length,
            max_send_data_segment_length: self.max_send_data_segment_length,
        }
    }
}

/// Identity keys the initiator declares during login.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Declared {
    /// InitiatorName.
    pub initiator_name: Option<String>,
    /// InitiatorAlias.
    pub initiator_alias: Option<String>,
    /// TargetName.
    pub target_name: Option<String>,
    /// SessionType (None until declared; default Normal).
    pub session_type: Option<SessionType>,
}

/// Most distinct keys tracked per login; more is a flood and ends the login.
pub const MAX_KEYS_PER_LOGIN: usize = 512;

/// The target's negotiation state for one login (one connection).
#[derive(Clone, Debug)]
pub struct Negotiator {
    settings: TargetSettings,
    leading: bool,
    params: SessionParams,
    declared: Declared,
    seen: HashSet<String>,
    declared_mrdsl: bool,
    digest_required_unmet: Option<&'static str>,
    /// Set once the login has been identified (target, ACL, session join and the
    /// authentication they require were decided from the declared identity): from then on
    /// an identity key may only be repeated with the same value, never first declared or
    /// changed, or a login could be authorized as one thing and complete as another.
    identity_frozen: bool,
}

/// Keys that belong to the security stage (handled by authentication, not here).
pub fn is_security_key(key: &str) -> bool {
    key == "AuthMethod"
        || key.starts_with("CHAP_")
        || key.starts_with("SRP_")
        || key.starts_with("KRB_")
        || key.starts_with("SPKM_")
}

fn parse_bool(v: &str) -> Option<bool> {
    match v {
        "Yes" => Some(true),
        "No" => Some(false),
        _ => None,
    }
}

fn yes_no(b: bool) -> &'static str {
    if b {
        "Yes"
    } else {
        "No"
    }
}

/// A numerical value: decimal, or hex with `0x`/`0X` (RFC 7143 section 6.1).
pub fn parse_number(v: &str) -> Option<u64> {
    if let Some(hex) = v.strip_prefix("0x").or_else(|| v.strip_prefix("0X")) {
        if hex.is_empty() || hex.len() > 16 {
            return None;
        }
        return u64::from_str_radix(hex, 16).ok();
    }
    if v.is_empty() || v.len() > 20 || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    v.parse().ok()
}

fn in_range(v: &str, lo: u64, hi: u64) -> Option<u64> {
    parse_number(v).filter(|n| (lo..=hi).contains(n))
}

/// The answer to one key.
enum Answer {
    /// Respond with this value.
    Value(String),
    /// Declarative key: no response.
    Silent,
}

const REJECT: &str = "Reject";
const IRRELEVANT: &str = "Irrelevant";
const NOT_UNDERSTOOD: &str = "NotUnderstood";

impl Negotiator {
    /// Negotiation for a leading (new session) or non-leading (added connection) login.
    pub fn new(settings: TargetSettings, leading: bool) -> Self {
        Negotiator {
            settings,
            leading,
            params: SessionParams::default(),
            declared: Declared::default(),
            seen: HashSet::new(),
            declared_mrdsl: false,
            digest_required_unmet: None,
            identity_frozen: false,
        }
    }

    /// Fixes the declared identity (InitiatorName, TargetName, SessionType): the login
    /// machine calls this once it has decided target, ACL, session and authentication from
    /// them. A later first declaration of one of these keys fails the login.
    pub fn freeze_identity(&mut self) {
        self.identity_frozen = true;
    }

    /// Values declared by the initiator so far.
    pub fn declared(&self) -> &Declared {
        &self.declared
    }

    /// The settings in force.
    pub fn settings(&self) -> &TargetSettings {
        &self.settings
    }

    /// Whether this is a leading login.
    pub fn leading(&self) -> bool {
        self.leading
    }

    /// Session type as declared so far (default Normal).
    pub fn session_type(&self) -> SessionType {
        self.declared.session_type.unwrap_or_default()
    }

    /// True when `key` is an identity key already declared with exactly `value`.
    fn repeats_identity(&self, key: &str, value: &str) -> bool {
        let d = &self.declared;
        let same = |v: &Option<String>| v.as_deref() == Some(value);
        match key {
            "InitiatorName" => same(&d.initiator_name),
            "InitiatorAlias" => same(&d.initiator_alias),
            "TargetName" => same(&d.target_name),
            "SessionType" => {
                let t = match value {
                    "Normal" => SessionType::Normal,
                    "Discovery" => SessionType::Discovery,
                    _ => return false,
                };
                // Against the effective type: `SessionType=Normal` repeats the default.
                self.session_type() == t
            }
            _ => false,
        }
    }

    /// Record that `key` was negotiated; a second time is a protocol error.
    pub fn mark_seen(&mut self, key: &str) -> Result<(), LoginFailure> {
        if self.seen.len() >= MAX_KEYS_PER_LOGIN {
            return Err(LoginFailure::new(
                LoginStatus::InitiatorError,
                "too many keys in one login",
            ));
        }
        if !self.seen.insert(key.to_owned()) {
            return Err(LoginFailure::new(
                LoginStatus::InitiatorError,
                format!("key {key} negotiated twice"),
            ));
        }
        Ok(())
    }

    /// Handle the non-security keys of one Login Request text, appending answers to `out`.
    /// `operational` is true in the operational stage: our MaxRecvDataSegmentLength is
    /// declared the first time that stage is answered.
    pub fn respond(
        &mut self,
        pairs: &[KeyValue],
        operational: bool,
        out: &mut TextWriter,
    ) -> Result<(), LoginFailure> {
        // Answers are collected first so that FirstBurstLength can be clamped to the final
        // MaxBurstLength whatever order the keys came in, without answering a key twice.
        let mut answered: Vec<(&str, String)> = Vec::new();
        for kv in pairs {
            if is_security_key(&kv.key) {
                continue;
            }
            // "NotUnderstood", "Irrelevant" and "Reject" are answers, never offers: the
            // initiator is responding to something we declared (e.g. TargetAlias). Answering
            // them again would start a loop, so they are consumed silently.
            if matches!(kv.value.as_str(), NOT_UNDERSTOOD | IRRELEVANT | REJECT) {
                self.mark_seen(&kv.key)?;
                continue;
            }
            // libiscsi repeats its identity keys in the operational stage after CHAP; a
            // repeat with the same value changes nothing, a different value is an error.
            if self.repeats_identity(&kv.key, &kv.value) {
                continue;
            }
            self.mark_seen(&kv.key)?;
            if let Answer::Value(v) = self.answer(&kv.key, &kv.value)? {
                answered.push((&kv.key, v));
            }
        }
        if self.params.first_burst_length > self.params.max_burst_length {
            self.params.first_burst_length = self.params.max_burst_length;
            for (k, v) in answered.iter_mut() {
                if *k == "FirstBurstLength" && v != IRRELEVANT && v != REJECT {
                    *v = self.params.first_burst_length.to_string();
                }
            }
        }
        for (k, v) in &answered {
            out.push(k, v);
        }
        if operational && !self.declared_mrdsl {
            self.declared_mrdsl = true;
            self.params.max_recv_data_segment_length = self.settings.max_recv_data_segment_length;
            out.push(
                "MaxRecvDataSegmentLength",
                &self.settings.max_recv_data_segment_length.to_string(),
            );
        }
        if let Some(which) = self.digest_required_unmet {
            return Err(LoginFailure::new(
                LoginStatus::InitiatorError,
                format!("{which} CRC32C is required but the initiator did not offer it"),
            ));
        }
        Ok(())
    }

    fn answer(&mut self, key: &str, value: &str) -> Result<Answer, LoginFailure> {
        let discovery = self.session_type() == SessionType::Discovery;
        let v = |s: &str| Ok(Answer::Value(s.to_owned()));
        // Session-wide keys that only matter for a normal session's leading login.
        let session_wide = matches!(
            key,
            "MaxConnections"
                | "InitialR2T"
                | "ImmediateData"
                | "MaxBurstLength"
                | "FirstBurstLength"
                | "MaxOutstandingR2T"
                | "DataPDUInOrder"
                | "DataSequenceInOrder"
        );
        if session_wide && (discovery || !self.leading) {
            return v(IRRELEVANT);
        }
        if self.identity_frozen && matches!(key, "InitiatorName" | "TargetName" | "SessionType") {
            return Err(LoginFailure::new(
                LoginStatus::InitiatorError,
                format!("{key} declared after the first Login Request"),
            ));
        }
        match key {
            "InitiatorName" => {
                if value.is_empty() {
                    return Err(LoginFailure::new(
                        LoginStatus::MissingParameter,
                        "empty InitiatorName",
                    ));
                }
                self.declared.initiator_name = Some(value.to_owned());
                Ok(Answer::Silent)
            }
            "InitiatorAlias" => {
                self.declared.initiator_alias = Some(value.to_owned());
                Ok(Answer::Silent)
            }
            "TargetName" => {
                self.declared.target_name = Some(value.to_owned());
                Ok(Answer::Silent)
            }
            "SessionType" => {
                let t = match value {
                    "Normal" => SessionType::Normal,
                    "Discovery" => SessionType::Discovery,
                    other => {
                        return Err(LoginFailure::new(
                            LoginStatus::SessionTypeNotSupported,
                            format!("SessionType {other:?}"),
                        ))
                    }
                };
                self.declared.session_type = Some(t);
                self.params.session_type = t;
                Ok(Answer::Silent)
            }
            // Keys only a target may send.
            "TargetAlias" | "TargetAddress" | "TargetPortalGroupTag" => v(REJECT),
            // Full feature phase only.
            "SendTargets" => v(IRRELEVANT),
            "HeaderDigest" => {
                let pick = pick_digest(value, self.settings.header_digest);
                if pick.is_none() && self.settings.header_digest == DigestPolicy::Required {
                    self.digest_required_unmet = Some("HeaderDigest");
                }
                self.params.header_digest = pick == Some("CRC32C");
                v(pick.unwrap_or(REJECT))
            }
            "DataDigest" => {
                let pick = pick_digest(value, self.settings.data_digest);
                if pick.is_none() && self.settings.data_digest == DigestPolicy::Required {
                    self.digest_required_unmet = Some("DataDigest");
                }
                self.params.data_digest = pick == Some("CRC32C");
                v(pick.unwrap_or(REJECT))
            }
            "MaxRecvDataSegmentLength" => match in_range(value, SEGMENT_RANGE.0, SEGMENT_RANGE.1) {
                Some(n) => {
                    self.params.max_send_data_segment_length = n as u32;
                    Ok(Answer::Silent)
                }
                None => Err(LoginFailure::new(
                    LoginStatus::InitiatorError,
                    format!("MaxRecvDataSegmentLength {value:?} is not in 512..=16777215"),
                )),
            },
            "MaxConnections" => match in_range(value, 1, 65535) {
                Some(n) => {
                    let r = n.min(u64::from(self.settings.max_connections)) as u16;
                    self.params.max_connections = r;
                    v(&r.to_string())
                }
                None => v(REJECT),
            },
            "InitialR2T" => match parse_bool(value) {
                Some(b) => {
                    let r = b || self.settings.initial_r2t;
                    self.params.initial_r2t = r;
                    v(yes_no(r))
                }
                None => v(REJECT),
            },
            "ImmediateData" => match parse_bool(value) {
                Some(b) => {
                    let r = b && self.settings.immediate_data;
                    self.params.immediate_data = r;
                    v(yes_no(r))
                }
                None => v(REJECT),
            },
            "MaxBurstLength" => match in_range(value, SEGMENT_RANGE.0, SEGMENT_RANGE.1) {
                Some(n) => {
                    let r = n.min(u64::from(self.settings.max_burst_length)) as u32;
                    self.params.max_burst_length = r;
                    v(&r.to_string())
                }
                None => v(REJECT),
            },
            "FirstBurstLength" => match in_range(value, SEGMENT_RANGE.0, SEGMENT_RANGE.1) {
                Some(n) => {
                    let r = n.min(u64::from(self.settings.first_burst_length)) as u32;
                    self.params.first_burst_length = r;
                    v(&r.to_string())
                }
                None => v(REJECT),
            },
            "DefaultTime2Wait" => match in_range(value, 0, 3600) {
                Some(n) => {
                    let r = n.max(u64::from(self.settings.default_time2wait)) as u16;
                    self.params.default_time2wait = r;
                    v(&r.to_string())
                }
                None => v(REJECT),
            },
            "DefaultTime2Retain" => match in_range(value, 0, 3600) {
                Some(n) => {
                    let r = n.min(u64::from(self.settings.default_time2retain)) as u16;
                    self.params.default_time2retain = r;
                    v(&r.to_string())
                }
                None => v(REJECT),
            },
            "MaxOutstandingR2T" => match in_range(value, 1, 65535) {
                Some(n) => {
                    let r = n.min(u64::from(self.settings.max_outstanding_r2t)) as u32;
                    self.params.max_outstanding_r2t = r;
                    v(&r.to_string())
                }
                None => v(REJECT),
            },
            // OR with our "Yes": the result is always Yes (we only handle in-order data).
            "DataPDUInOrder" | "DataSequenceInOrder" => match parse_bool(value) {
                Some(_) => v("Yes"),
                None => v(REJECT),
            },
            // Minimum with the only level we implement.
            "ErrorRecoveryLevel" => match in_range(value, 0, 2) {
                Some(_) => {
                    self.params.error_recovery_level = 0;
                    v("0")
                }
                None => v(REJECT),
            },
            // Markers (RFC 3720; obsolete in RFC 7143): AND with our "No".
            "OFMarker" | "IFMarker" => match parse_bool(value) {
                Some(_) => v("No"),
                None => v(REJECT),
            },
            // Marker intervals are irrelevant once markers are off.
            "OFMarkInt" | "IFMarkInt" => v(IRRELEVANT),
            // RFC 7143 section 13.23: we implement the RFC 3720 task reporting semantics.
            "TaskReporting" => {
                if value.split(',').any(|x| x == "RFC3720") {
                    v("RFC3720")
                } else {
                    v(REJECT)
                }
            }
            // RFC 7144: minimum of both levels; we implement level 1 (RFC 7143).
            "iSCSIProtocolLevel" => match in_range(value, 0, 31) {
                Some(n) => v(&n.min(1).to_string()),
                None => v(REJECT),
            },
            _ => v(NOT_UNDERSTOOD),
        }
    }

    /// Final parameters. Call once the login reaches the full feature phase.
    pub fn params(&self) -> SessionParams {
        let mut p = self.params.clone();
        if p.first_burst_length > p.max_burst_length {
            p.first_burst_length = p.max_burst_length;
        }
        p
    }
}

/// Pick the first digest in the initiator's preference list that our policy accepts.
fn pick_digest(list: &str, policy: DigestPolicy) -> Option<&'static str> {
    list.split(',').find_map(|d| match (d, policy) {
        ("None", DigestPolicy::Disabled | DigestPolicy::Allowed) => Some("None"),
        ("CRC32C", DigestPolicy::Allowed | DigestPolicy::Required) => Some("CRC32C"),
        _ => None,
    })
}

#[cfg(test)]
mod tests;
