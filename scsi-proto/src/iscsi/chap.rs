//! CHAP authentication, target side (RFC 7143 section 12.1.3, RFC 1994), with MD5
//! (CHAP_A=5).
//!
//! One-way: the target sends CHAP_A, CHAP_I and a random CHAP_C; the initiator proves it knows
//! the initiator secret with CHAP_N/CHAP_R. Mutual: the initiator also sends CHAP_I/CHAP_C and
//! the target answers with its own name and a response computed from the *target* secret.
//! Reflection (an initiator sending back our own challenge) is refused, and configurations
//! where the two secrets are equal are refused outright, since that is what makes reflection
//! attacks work.

use md5::{Digest, Md5};

use crate::iscsi::status::{LoginFailure, LoginStatus};
use crate::iscsi::text::{KeyValue, TextWriter};

/// CHAP algorithm number for MD5.
pub const CHAP_MD5: u8 = 5;
/// Shortest secret accepted (96 bits, RFC 7143 section 12.1.3 guidance).
pub const MIN_SECRET_LEN: usize = 12;
/// Longest secret accepted.
pub const MAX_SECRET_LEN: usize = 255;
/// Length of the challenges we issue.
pub const CHALLENGE_LEN: usize = 16;
/// Longest initiator challenge accepted (binary bytes).
pub const MAX_CHALLENGE_LEN: usize = 1024;

/// One CHAP identity: a name and its secret.
#[derive(Clone, PartialEq, Eq)]
pub struct ChapCredential {
    /// CHAP_N value.
    pub username: String,
    /// Shared secret.
    pub secret: Vec<u8>,
}

/// The secret is wiped from memory when the credential is dropped (each login builds one).
impl Drop for ChapCredential {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.secret);
    }
}

impl std::fmt::Debug for ChapCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChapCredential")
            .field("username", &self.username)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// CHAP requirements of a target (or of discovery).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChapConfig {
    /// The credential the initiator must prove.
    pub initiator: ChapCredential,
    /// When set, mutual CHAP is required and the target proves this credential.
    pub mutual: Option<ChapCredential>,
}

/// A CHAP configuration the target refuses to run with.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChapConfigError {
    /// Empty user name.
    #[error("CHAP user name is empty")]
    EmptyUsername,
    /// Secret length outside 12..=255 bytes.
    #[error("CHAP secret for {0:?} must be {MIN_SECRET_LEN}..={MAX_SECRET_LEN} bytes")]
    SecretLength(String),
    /// Initiator and target secrets are the same.
    #[error("mutual CHAP target secret must differ from the initiator secret")]
    SameSecrets,
}

impl ChapConfig {
    /// Refuse weak or unsafe configurations.
    pub fn validate(&self) -> Result<(), ChapConfigError> {
        for c in std::iter::once(&self.initiator).chain(self.mutual.as_ref()) {
            if c.username.is_empty() {
                return Err(ChapConfigError::EmptyUsername);
            }
            if !(MIN_SECRET_LEN..=MAX_SECRET_LEN).contains(&c.secret.len()) {
                return Err(ChapConfigError::SecretLength(c.username.clone()));
            }
        }
        if let Some(m) = &self.mutual {
            if m.secret == self.initiator.secret {
                return Err(ChapConfigError::SameSecrets);
            }
        }
        Ok(())
    }
}

/// The CHAP response: MD5(id || secret || challenge).
pub fn chap_response(id: u8, secret: &[u8], challenge: &[u8]) -> [u8; 16] {
    let mut h = Md5::new();
    h.update([id]);
    h.update(secret);
    h.update(challenge);
    h.finalize().into()
}

/// Compare without an early exit, so timing does not reveal how many bytes matched.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Encode binary as a `0x` hex constant.
pub fn encode_hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(2 + bytes.len() * 2);
    s.push_str("0x");
    for b in bytes {
        s.push(char::from(HEX[usize::from(b >> 4)]));
        s.push(char::from(HEX[usize::from(b & 0x0f)]));
    }
    s
}

/// Decode a binary value: `0x`/`0X` hex (an odd digit count implies a leading zero) or
/// `0b`/`0B` base64 (RFC 7143 section 6.1). `None` when malformed or longer than `max`.
pub fn decode_binary(v: &str, max: usize) -> Option<Vec<u8>> {
    if let Some(hex) = v.strip_prefix("0x").or_else(|| v.strip_prefix("0X")) {
        if hex.is_empty() || hex.len().div_ceil(2) > max {
            return None;
        }
        let digits: Vec<u8> = hex
            .bytes()
            .map(|c| char::from(c).to_digit(16).map(|d| d as u8))
            .collect::<Option<_>>()?;
        let mut out = Vec::with_capacity(digits.len().div_ceil(2));
        let (head, tail) = digits.split_at(digits.len() % 2);
        if let Some(&d) = head.first() {
            out.push(d);
        }
        for pair in tail.chunks_exact(2) {
            out.push((pair[0] << 4) | pair[1]);
        }
        return Some(out);
    }
    if let Some(b64) = v.strip_prefix("0b").or_else(|| v.strip_prefix("0B")) {
        if b64.is_empty() || b64.len() % 4 != 0 || b64.len() / 4 * 3 > max + 2 {
            return None;
        }
        return decode_base64(b64).filter(|d| !d.is_empty() && d.len() <= max);
    }
    None
}

fn decode_base64(s: &str) -> Option<Vec<u8>> {
    fn val(c: u8) -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len() / 4 * 3);
    let chunks = bytes.chunks_exact(4);
    let last = chunks.len().saturating_sub(1);
    for (i, chunk) in chunks.enumerate() {
        let pad = chunk.iter().rev().take_while(|&&c| c == b'=').count();
        if pad > 2 || (pad > 0 && i != last) {
            return None;
        }
        let mut n = 0u32;
        for &c in &chunk[..4 - pad] {
            n = (n << 6) | val(c)?;
        }
        n <<= 6 * pad as u32;
        let b = n.to_be_bytes();
        out.extend_from_slice(&b[1..4 - pad]);
    }
    Some(out)
}

/// Where the target-side CHAP exchange stands.
#[derive(Clone, Debug, PartialEq, Eq)]
enum State {
    /// Waiting for CHAP_A.
    Algorithm,
    /// Challenge sent; waiting for CHAP_N/CHAP_R.
    Response,
    /// Authenticated.
    Done,
}

/// Progress after one step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChapProgress {
    /// More exchanges are needed.
    InProgress,
    /// The initiator is authenticated (and, for mutual CHAP, our answer is in the output).
    Authenticated,
}

/// Target side of one CHAP exchange.
#[derive(Clone, Debug)]
pub struct ChapAuthenticator {
    config: ChapConfig,
    id: u8,
    challenge: Vec<u8>,
    state: State,
}

fn auth_fail(reason: impl Into<String>) -> LoginFailure {
    LoginFailure::new(LoginStatus::AuthenticationFailure, reason)
}

impl ChapAuthenticator {
    /// Start an exchange with our identifier and challenge (fresh random bytes: see
    /// [`ChapAuthenticator::random`]).
    pub fn new(config: ChapConfig, id: u8, challenge: Vec<u8>) -> Self {
        ChapAuthenticator {
            config,
            id,
            challenge,
            state: State::Algorithm,
        }
    }

    /// Start an exchange with a random identifier and a random [`CHALLENGE_LEN`]-byte
    /// challenge from the operating system's CSPRNG.
    pub fn random(config: ChapConfig) -> Self {
        use rand::RngCore;
        let mut rng = rand::rngs::OsRng;
        let mut challenge = vec![0u8; CHALLENGE_LEN];
        rng.fill_bytes(&mut challenge);
        let id = (rng.next_u32() & 0xff) as u8;
        Self::new(config, id, challenge)
    }

    /// True once the initiator has been authenticated.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Process the CHAP_* keys of one Login Request, appending our keys to `out`.
    pub fn step(
        &mut self,
        pairs: &[KeyValue],
        out: &mut TextWriter,
    ) -> Result<ChapProgress, LoginFailure> {
        let get = |k: &str| -> Result<Option<&str>, LoginFailure> {
            let mut it = pairs.iter().filter(|kv| kv.key == k);
            let first = it.next().map(|kv| kv.value.as_str());
            if it.next().is_some() {
                return Err(auth_fail(format!("{k} sent twice")));
            }
            Ok(first)
        };
        let any_chap = pairs.iter().any(|kv| kv.key.starts_with("CHAP_"));
        match self.state {
            State::Algorithm => {
                let Some(algs) = get("CHAP_A")? else {
                    if any_chap {
                        return Err(auth_fail("CHAP keys out of order: expected CHAP_A"));
                    }
                    return Ok(ChapProgress::InProgress);
                };
                if pairs
                    .iter()
                    .any(|kv| kv.key.starts_with("CHAP_") && kv.key != "CHAP_A")
                {
                    return Err(auth_fail("unexpected CHAP keys with CHAP_A"));
                }
                if !algs.split(',').any(|a| a == "5") {
                    return Err(auth_fail(format!(
                        "no supported CHAP algorithm in {algs:?}"
                    )));
                }
                out.push("CHAP_A", "5");
                out.push("CHAP_I", &self.id.to_string());
                out.push("CHAP_C", &encode_hex(&self.challenge));
                self.state = State::Response;
                Ok(ChapProgress::InProgress)
            }
            State::Response => {
                if !any_chap {
                    return Ok(ChapProgress::InProgress);
                }
                if get("CHAP_A")?.is_some() {
                    return Err(auth_fail("CHAP_A sent twice"));
                }
                let name = get("CHAP_N")?.ok_or_else(|| auth_fail("missing CHAP_N"))?;
                let resp = get("CHAP_R")?.ok_or_else(|| auth_fail("missing CHAP_R"))?;
                let resp = decode_binary(resp, 16).ok_or_else(|| auth_fail("malformed CHAP_R"))?;
                let expected =
                    chap_response(self.id, &self.config.initiator.secret, &self.challenge);
                // Evaluate both checks before deciding, so the failure path does not reveal
                // which one failed through timing.
                let name_ok =
                    constant_time_eq(name.as_bytes(), self.config.initiator.username.as_bytes());
                let resp_ok = constant_time_eq(&resp, &expected);
                if !(name_ok & resp_ok) {
                    return Err(auth_fail(format!("CHAP verification failed for {name:?}")));
                }
                let i_id = get("CHAP_I")?;
                let i_chal = get("CHAP_C")?;
                match (&self.config.mutual, i_id, i_chal) {
                    (None, None, None) => {}
                    (Some(_), None, None) => {
                        return Err(auth_fail(
                            "mutual CHAP required but initiator sent no challenge",
                        ))
                    }
                    (None, Some(_), _) | (None, _, Some(_)) => {
                        return Err(auth_fail(
                            "initiator requested mutual CHAP but the target has no credentials",
                        ))
                    }
                    (Some(_), None, Some(_)) | (Some(_), Some(_), None) => {
                        return Err(auth_fail("CHAP_I and CHAP_C must be sent together"))
                    }
                    (Some(target), Some(i_id), Some(i_chal)) => {
                        let id = crate::iscsi::negotiate::parse_number(i_id)
                            .filter(|&n| n <= 255)
                            .ok_or_else(|| auth_fail("malformed CHAP_I"))?
                            as u8;
                        let chal = decode_binary(i_chal, MAX_CHALLENGE_LEN)
                            .ok_or_else(|| auth_fail("malformed CHAP_C"))?;
                        if constant_time_eq(&chal, &self.challenge) {
                            return Err(auth_fail("initiator reflected the target's challenge"));
                        }
                        let answer = chap_response(id, &target.secret, &chal);
                        out.push("CHAP_N", &target.username);
                        out.push("CHAP_R", &encode_hex(&answer));
                    }
                }
                self.state = State::Done;
                Ok(ChapProgress::Authenticated)
            }
            State::Done => {
                if any_chap {
                    return Err(auth_fail("CHAP keys after authentication completed"));
                }
                Ok(ChapProgress::Authenticated)
            }
        }
    }
}

#[cfg(test)]
mod tests;
