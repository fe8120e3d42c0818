//! Byte counts as people write them in the configuration (`64KiB`, `1GiB`, `4096`).

use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// A byte count that may be written as an integer or with a binary/decimal suffix
/// (`512`, `64KiB`, `1GiB`, `10G`, `1.5TiB` is rejected: only integers are accepted).
///
/// It is written back (by `config export`) in the largest binary unit that divides it
/// exactly (`1GiB`, `12345B`), which [`ByteSize::parse`] reads as the same count.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl ByteSize {
    /// Parses `"64KiB"`, `"1 GiB"`, `"4096"`, `"10G"` (K/M/G/T are binary, like `dd`).
    pub fn parse(s: &str) -> Result<ByteSize, String> {
        let s = s.trim();
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (num, unit) = s.split_at(split);
        if num.is_empty() {
            return Err(format!(
                "invalid size {s:?}: expected a number with an optional unit such as 64KiB or 1GiB"
            ));
        }
        let n: u64 = num
            .parse()
            .map_err(|_| format!("invalid size {s:?}: number too large"))?;
        let mult: u64 = match unit.trim() {
            "" | "B" => 1,
            "K" | "KiB" | "k" => 1 << 10,
            "M" | "MiB" => 1 << 20,
            "G" | "GiB" => 1 << 30,
            "T" | "TiB" => 1 << 40,
            "P" | "PiB" => 1 << 50,
            "KB" | "kB" => 1_000,
            "MB" => 1_000_000,
            "GB" => 1_000_000_000,
            "TB" => 1_000_000_000_000,
            other => {
                return Err(format!(
                    "invalid size unit {other:?} in {s:?}: use B, KiB, MiB, GiB, TiB (or KB, MB, GB, TB)"
                ))
            }
        };
        n.checked_mul(mult)
            .map(ByteSize)
            .ok_or_else(|| format!("invalid size {s:?}: too large"))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(&str, u64); 5] = [
            ("PiB", 1 << 50),
            ("TiB", 1 << 40),
            ("GiB", 1 << 30),
            ("MiB", 1 << 20),
            ("KiB", 1 << 10),
        ];
        for (name, m) in UNITS {
            if self.0 >= m && self.0 & (m - 1) == 0 {
                return write!(f, "{}{}", self.0 / m, name);
            }
        }
        write!(f, "{}B", self.0)
    }
}

/// Written as its [`Display`](fmt::Display) text, so an exported file reads `1GiB`.
impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a byte size such as 4096, 64KiB or 1GiB")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ByteSize, E> {
                u64::try_from(v)
                    .map(ByteSize)
                    .map_err(|_| E::custom("a size cannot be negative"))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ByteSize, E> {
                ByteSize::parse(v).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(ByteSize::parse("64KiB"), Ok(ByteSize(65536)));
        assert_eq!(ByteSize::parse("1 GiB"), Ok(ByteSize(1 << 30)));
        assert_eq!(ByteSize::parse("10G"), Ok(ByteSize(10 << 30)));
        assert_eq!(ByteSize::parse("4096"), Ok(ByteSize(4096)));
        assert!(ByteSize::parse("1.5GiB").is_err());
        assert!(ByteSize::parse("GiB").is_err());
        assert!(ByteSize::parse("99999999999999PiB").is_err());
        assert_eq!(ByteSize(1 << 30).to_string(), "1GiB");
    }

    /// What `config export` writes reads back as the same count, whatever the count.
    #[test]
    fn display_parses_back() {
        for n in [
            0,
            1,
            511,
            512,
            4096,
            65536,
            12345,
            3 << 30,
            (1 << 50) + 1,
            u64::MAX,
        ] {
            let s = ByteSize(n).to_string();
            assert_eq!(ByteSize::parse(&s), Ok(ByteSize(n)), "{s}");
        }
    }
}
