//! `key=value` text (RFC 7143 section 6.1): parsing and encoding with hard limits, C-bit
//! reassembly of a logical text data segment (LTDS) and segmentation of long answers.
//!
//! Every limit here exists so that a hostile peer can make us hold at most a small, fixed
//! amount of memory per connection, however many PDUs or keys it sends.

use bytes::{BufMut, Bytes, BytesMut};

/// Longest key name (standard-label: 63 bytes).
pub const MAX_KEY_LEN: usize = 63;
/// Longest value for most keys.
pub const MAX_VALUE_LEN: usize = 255;
/// Longest value for keys carrying large binary values (CHAP challenges and responses) and
/// vendor (`X-`) keys.
pub const MAX_LONG_VALUE_LEN: usize = 8192;
/// Largest logical text data segment we reassemble. RFC 7143 requires at least 8192 bytes
/// per negotiation; generous, but bounded.
pub const MAX_TEXT_LEN: usize = 64 * 1024;
/// Most `key=value` pairs accepted in one logical text data segment.
pub const MAX_PAIRS: usize = 256;

/// Malformed or oversized text.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TextError {
    /// The last pair is not followed by a NUL delimiter.
    #[error("text does not end with a NUL delimiter")]
    Unterminated,
    /// A pair has no `=`.
    #[error("key {0:?} has no '='")]
    MissingEquals(String),
    /// The key is empty, too long, or has characters a key-name may not have.
    #[error("invalid key name {0:?}")]
    InvalidKey(String),
    /// A value is longer than allowed for its key.
    #[error("value of {key} is {len} bytes, more than {max}")]
    ValueTooLong {
        /// The key.
        key: String,
        /// Value length.
        len: usize,
        /// The applicable limit.
        max: usize,
    },
    /// Not UTF-8.
    #[error("text is not valid UTF-8")]
    NotUtf8,
    /// More pairs than [`MAX_PAIRS`].
    #[error("more than {MAX_PAIRS} key=value pairs")]
    TooManyPairs,
    /// The reassembled text exceeds [`MAX_TEXT_LEN`].
    #[error("text longer than {MAX_TEXT_LEN} bytes")]
    TooLong,
    /// A value holds a control character.
    #[error("value of {0} holds a control character")]
    ControlCharacter(String),
}

/// One parsed `key=value` pair.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyValue {
    /// Key name.
    pub key: String,
    /// Value (without the NUL).
    pub value: String,
}

/// The value length limit for `key`.
pub fn value_limit(key: &str) -> usize {
    if key.starts_with("CHAP_") || key.starts_with("X-") || key.starts_with("X#") {
        MAX_LONG_VALUE_LEN
    } else {
        MAX_VALUE_LEN
    }
}

/// Whether `key` is a syntactically valid key-name: a standard-label (a letter, then
/// letters, digits, `.`, `-`, `+`, `@`, `_`), or an `X-`/`X#` extension name.
///
/// RFC 7143 wants standard-labels to start with a capital letter, but RFC 7144's own
/// `iSCSIProtocolLevel` does not, so any leading letter is accepted.
pub fn valid_key(key: &str) -> bool {
    let b = key.as_bytes();
    if b.is_empty() || b.len() > MAX_KEY_LEN || !b[0].is_ascii_alphabetic() {
        return false;
    }
    let rest_ok = |c: &u8| c.is_ascii_alphanumeric() || b".-+@_".contains(c);
    if b.starts_with(b"X#") {
        return b.len() > 2 && b[2..].iter().all(rest_ok);
    }
    b[1..].iter().all(rest_ok)
}

/// Parse a complete logical text data segment.
///
/// Empty entries (consecutive NULs, which some initiators emit as padding) are skipped.
pub fn parse(data: &[u8]) -> Result<Vec<KeyValue>, TextError> {
    if data.len() > MAX_TEXT_LEN {
        return Err(TextError::TooLong);
    }
    if data.is_empty() {
        return Ok(Vec::new());
    }
    if data.last() != Some(&0) {
        return Err(TextError::Unterminated);
    }
    let text = std::str::from_utf8(data).map_err(|_| TextError::NotUtf8)?;
    let mut out = Vec::new();
    for entry in text.split('\0').filter(|e| !e.is_empty()) {
        if out.len() == MAX_PAIRS {
            return Err(TextError::TooManyPairs);
        }
        let Some((key, value)) = entry.split_once('=') else {
            return Err(TextError::MissingEquals(truncate(entry)));
        };
        if !valid_key(key) {
            return Err(TextError::InvalidKey(truncate(key)));
        }
        let max = value_limit(key);
        if value.len() > max {
            return Err(TextError::ValueTooLong {
                key: key.to_owned(),
                len: value.len(),
                max,
            });
        }
        // No value of RFC 7143 (names, numbers, booleans, hex/base64 binary, aliases) has a
        // use for control characters, and names and aliases end up in logs and admin
        // output, where a newline or an escape sequence would forge or hide lines.
        if value.chars().any(char::is_control) {
            return Err(TextError::ControlCharacter(key.to_owned()));
        }
        out.push(KeyValue {
            key: key.to_owned(),
            value: value.to_owned(),
        });
    }
    Ok(out)
}

/// Keep error messages bounded when echoing hostile input.
fn truncate(s: &str) -> String {
    s.chars().take(MAX_KEY_LEN + 1).collect()
}

/// Builds `key=value\0` text.
#[derive(Clone, Debug, Default)]
pub struct TextWriter {
    buf: BytesMut,
}

impl TextWriter {
    /// An empty writer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Append one pair.
    pub fn push(&mut self, key: &str, value: &str) -> &mut Self {
        self.buf.reserve(key.len() + value.len() + 2);
        self.buf.put_slice(key.as_bytes());
        self.buf.put_u8(b'=');
        self.buf.put_slice(value.as_bytes());
        self.buf.put_u8(0);
        self
    }

    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// True when nothing has been written.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// The finished text.
    pub fn finish(self) -> Bytes {
        self.buf.freeze()
    }
}

/// Encode pairs as text.
pub fn encode<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Bytes {
    let mut w = TextWriter::new();
    for (k, v) in pairs {
        w.push(k, v);
    }
    w.finish()
}

/// Reassembles a logical text data segment from PDUs chained with the C (continue) bit.
#[derive(Clone, Debug, Default)]
pub struct TextAssembler {
    buf: BytesMut,
}

impl TextAssembler {
    /// An empty assembler.
    pub fn new() -> Self {
        Self::default()
    }

    /// Add one PDU's data segment. Returns the whole text when `continue_bit` is clear,
    /// `None` while more is expected. Over [`MAX_TEXT_LEN`] fails (and resets).
    pub fn push(&mut self, data: &[u8], continue_bit: bool) -> Result<Option<Bytes>, TextError> {
        if self.buf.len() + data.len() > MAX_TEXT_LEN {
            self.buf = BytesMut::new();
            return Err(TextError::TooLong);
        }
        self.buf.extend_from_slice(data);
        if continue_bit {
            Ok(None)
        } else {
            Ok(Some(self.buf.split().freeze()))
        }
    }

    /// True while a continued text is being collected.
    pub fn in_progress(&self) -> bool {
        !self.buf.is_empty()
    }

    /// Discard partial text.
    pub fn reset(&mut self) {
        self.buf.clear();
    }
}

/// Splits an outgoing text into data segments of at most `max` bytes (the peer's
/// MaxRecvDataSegmentLength); every chunk but the last goes out with the C bit set.
#[derive(Clone, Debug)]
pub struct TextSegmenter {
    rest: Bytes,
    max: usize,
}

impl TextSegmenter {
    /// Segment `text` into chunks of at most `max` (at least 1) bytes.
    pub fn new(text: Bytes, max: usize) -> Self {
        TextSegmenter {
            rest: text,
            max: max.max(1),
        }
    }

    /// True when no more chunks remain.
    pub fn is_done(&self) -> bool {
        self.rest.is_empty()
    }

    /// The next chunk and whether more follow (the C bit). An empty text yields one empty
    /// final chunk, so every answer has at least one PDU.
    pub fn next_chunk(&mut self) -> (Bytes, bool) {
        let n = self.rest.len().min(self.max);
        let chunk = self.rest.split_to(n);
        (chunk, !self.rest.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parse_basic() {
        let kv = parse(b"InitiatorName=iqn.1994-05.com.redhat:abc\0SessionType=Normal\0\0")
            .expect("valid");
        assert_eq!(kv.len(), 2);
        assert_eq!(kv[0].key, "InitiatorName");
        assert_eq!(kv[0].value, "iqn.1994-05.com.redhat:abc");
        assert_eq!(kv[1].value, "Normal");
        assert_eq!(parse(b"").expect("empty"), vec![]);
        // Value containing '=' keeps everything after the first '='.
        assert_eq!(parse(b"X-a=b=c\0").expect("valid")[0].value, "b=c");
    }

    #[test]
    fn parse_errors() {
        assert_eq!(parse(b"A=b"), Err(TextError::Unterminated));
        assert_eq!(parse(b"Ab\0"), Err(TextError::MissingEquals("Ab".into())));
        assert_eq!(
            parse(b"1lower=1\0"),
            Err(TextError::InvalidKey("1lower".into()))
        );
        assert_eq!(parse(b"=1\0"), Err(TextError::InvalidKey("".into())));
        assert_eq!(
            parse(b"Bad Key=1\0"),
            Err(TextError::InvalidKey("Bad Key".into()))
        );
        assert_eq!(parse(&[b'A', b'=', 0xff, 0]), Err(TextError::NotUtf8));
        // Names and aliases reach logs: a newline or escape sequence would forge lines.
        for bad in [
            "iqn.x\nlunard ready",
            "a\rb",
            "\u{1b}[2J",
            "tab\there",
            "c1\u{85}",
        ] {
            let text = format!("InitiatorName={bad}\0");
            assert_eq!(
                parse(text.as_bytes()),
                Err(TextError::ControlCharacter("InitiatorName".into())),
                "{bad:?}"
            );
        }
        assert!(parse("InitiatorAlias=Büro 3 (ü)\0".as_bytes()).is_ok());
        let long_key = format!("K{}=1\0", "a".repeat(63));
        assert!(matches!(
            parse(long_key.as_bytes()),
            Err(TextError::InvalidKey(_))
        ));
        let long_val = format!("TargetAlias={}\0", "a".repeat(256));
        assert!(matches!(
            parse(long_val.as_bytes()),
            Err(TextError::ValueTooLong { max: 255, .. })
        ));
        let chap = format!("CHAP_C=0x{}\0", "a".repeat(2048));
        assert!(parse(chap.as_bytes()).is_ok());
        let flood: String = (0..=MAX_PAIRS).map(|i| format!("X-k{i}=v\0")).collect();
        assert_eq!(parse(flood.as_bytes()), Err(TextError::TooManyPairs));
        assert_eq!(parse(&vec![0u8; MAX_TEXT_LEN + 1]), Err(TextError::TooLong));
    }

    #[test]
    fn key_names() {
        assert!(valid_key("MaxRecvDataSegmentLength"));
        assert!(valid_key("X-com.example.foo"));
        assert!(valid_key("X#org.example"));
        assert!(!valid_key("X#"));
        assert!(valid_key("iSCSIProtocolLevel"));
        assert!(!valid_key("9Lives"));
        assert!(!valid_key("-dash"));
        assert!(!valid_key("A\u{e9}"));
    }

    #[test]
    fn assembler_caps_total() {
        let mut a = TextAssembler::new();
        assert_eq!(a.push(b"Key=va", true), Ok(None));
        assert!(a.in_progress());
        assert_eq!(
            a.push(b"lue\0", false).expect("ok").as_deref(),
            Some(&b"Key=value\0"[..])
        );
        assert!(!a.in_progress());
        let chunk = vec![b'a'; 8192];
        let mut res = Ok(None);
        for _ in 0..9 {
            res = a.push(&chunk, true);
            if res.is_err() {
                break;
            }
        }
        assert_eq!(res, Err(TextError::TooLong));
        assert!(!a.in_progress());
    }

    proptest! {
        #[test]
        fn encode_parse_round_trip(pairs in prop::collection::vec(("[A-Z][A-Za-z0-9._@+-]{0,40}", "[ -<>-~]{0,200}"), 0..40)) {
            let text = encode(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())));
            let parsed = parse(&text).expect("valid");
            let expect: Vec<KeyValue> = pairs.iter().map(|(k, v)| KeyValue { key: k.clone(), value: v.clone() }).collect();
            prop_assert_eq!(parsed, expect);
        }

        #[test]
        fn segment_reassemble(len in 0usize..5000, max in 1usize..700) {
            let text = Bytes::from((0..len).map(|i| (i % 251) as u8).collect::<Vec<_>>());
            let mut seg = TextSegmenter::new(text.clone(), max);
            let mut asm = TextAssembler::new();
            loop {
                let (chunk, more) = seg.next_chunk();
                prop_assert!(chunk.len() <= max);
                if let Some(all) = asm.push(&chunk, more).expect("fits") {
                    prop_assert!(!more);
                    prop_assert_eq!(all, text);
                    break;
                }
            }
            prop_assert!(seg.is_done());
        }

        #[test]
        fn parse_never_panics(data in prop::collection::vec(any::<u8>(), 0..3000)) {
            let _ = parse(&data);
        }
    }
}
