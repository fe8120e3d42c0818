//! Resume tokens: what a receiver hands out after an interrupted transfer and a sender
//! accepts to start the stream again from where it stopped (as `zfs receive -s` does).
//!
//! Opaque to users, but plain: `lunar-resume-v1-` then the hex of the `to` snapshot uuid
//! (16 bytes), the `from` snapshot uuid (16 bytes, all zero for a full stream), the next
//! chunk index (8 bytes, little-endian) and a CRC32C of those 40 bytes (4 bytes,
//! little-endian). The checksum catches a token mangled by copy and paste; a sender also
//! checks that the token names the snapshots it is asked to send.

use std::fmt;
use std::str::FromStr;

use uuid::Uuid;

use super::error::StreamError;

const PREFIX: &str = "lunar-resume-v1-";
const BODY: usize = 40;

/// Where an interrupted stream resumes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResumeToken {
    /// The snapshot being received (its sender uuid).
    pub to_uuid: Uuid,
    /// The base of the stream, `None` for a full stream.
    pub from_uuid: Option<Uuid>,
    /// The first chunk index the receiver does not hold yet.
    pub next_index: u64,
}

impl fmt::Display for ResumeToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut b = Vec::with_capacity(BODY + 4);
        b.extend_from_slice(self.to_uuid.as_bytes());
        b.extend_from_slice(self.from_uuid.unwrap_or_else(Uuid::nil).as_bytes());
        b.extend_from_slice(&self.next_index.to_le_bytes());
        let crc = crc32c::crc32c(&b);
        b.extend_from_slice(&crc.to_le_bytes());
        f.write_str(PREFIX)?;
        for x in b {
            write!(f, "{x:02x}")?;
        }
        Ok(())
    }
}

impl FromStr for ResumeToken {
    type Err = StreamError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |m: &str| StreamError::BadToken(m.to_string());
        let hex = s
            .trim()
            .strip_prefix(PREFIX)
            .ok_or_else(|| bad("it does not start with \"lunar-resume-v1-\""))?;
        if hex.len() != 2 * (BODY + 4) {
            return Err(bad("wrong length"));
        }
        let mut b = Vec::with_capacity(BODY + 4);
        for pair in hex.as_bytes().chunks(2) {
            let p = std::str::from_utf8(pair).map_err(|_| bad("not hexadecimal"))?;
            b.push(u8::from_str_radix(p, 16).map_err(|_| bad("not hexadecimal"))?);
        }
        let want = super::format::u32_at(&b, BODY);
        if crc32c::crc32c(&b[..BODY]) != want {
            return Err(bad("checksum mismatch (was it copied whole?)"));
        }
        let uuid = |at: usize| {
            let mut x = [0u8; 16];
            x.copy_from_slice(&b[at..at + 16]);
            Uuid::from_bytes(x)
        };
        let to_uuid = uuid(0);
        let from = uuid(16);
        if to_uuid.is_nil() {
            return Err(bad("nil snapshot uuid"));
        }
        Ok(ResumeToken {
            to_uuid,
            from_uuid: (!from.is_nil()).then_some(from),
            next_index: super::format::u64_at(&b, 32),
        })
    }
}

impl serde::Serialize for ResumeToken {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for ResumeToken {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}
