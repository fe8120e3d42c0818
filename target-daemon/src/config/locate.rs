//! Where in the file a configuration error is: the line of a dotted field path such as
//! `targets[0].luns[1].block_size`.
//!
//! Shape and type errors come located from serde_yaml. Semantic errors are found after
//! parsing, when only the field path is known; to find its line, the text is walked once
//! more by the same YAML parser, along the path, and the walk stops with an error at the
//! key (or list item) the path names: serde_yaml stamps that error with the position of
//! the event it was raised on, which is the line we want. Block and flow style, quoting,
//! comments and anchors are therefore handled exactly as the parser handles them.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// The message of the error that ends a successful walk (never shown to anyone).
const FOUND: &str = "lunar-config-locate: found";

/// One step of a field path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step<'a> {
    /// A mapping key.
    Key(&'a str),
    /// A sequence index.
    Index(usize),
}

/// Splits `targets[0].luns[1].id` into its steps; None if it is not a path.
fn steps(path: &str) -> Option<Vec<Step<'_>>> {
    let mut out = Vec::new();
    for seg in path.split('.') {
        let (key, mut rest) = seg.split_once('[').map_or((seg, ""), |(k, r)| (k, r));
        if key.is_empty() {
            return None;
        }
        out.push(Step::Key(key));
        while !rest.is_empty() {
            let (idx, after) = rest.split_once(']')?;
            out.push(Step::Index(idx.parse().ok()?));
            rest = after.strip_prefix('[').unwrap_or(after);
        }
    }
    Some(out)
}

/// 1-based line of `path` in `text`; when the path is not all written (a default, a
/// missing section), the line of its deepest written ancestor; None if not even the first
/// step is in the text, or the text does not parse.
pub(super) fn locate_field(text: &str, path: &str) -> Option<usize> {
    let steps = steps(path)?;
    (1..=steps.len())
        .rev()
        .find_map(|n| walk(text, &steps[..n]))
}

/// The line of exactly `steps`, or None.
fn walk(text: &str, steps: &[Step<'_>]) -> Option<usize> {
    let de = serde_yaml::Deserializer::from_str(text);
    match (Seek { steps }).deserialize(de) {
        Err(e) if e.to_string().contains(FOUND) => e.location().map(|l| l.line()),
        _ => None,
    }
}

/// Deserializes one value, descending along `steps`.
struct Seek<'p> {
    steps: &'p [Step<'p>],
}

impl<'de> DeserializeSeed<'de> for Seek<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Seek<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }

    // A scalar has nothing below it: the path goes deeper than the text.
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
    fn visit_enum<A: de::EnumAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let Some((&Step::Key(want), rest)) = self.steps.split_first() else {
            return Ok(());
        };
        while let Some(hit) = map.next_key_seed(Key {
            want,
            last: rest.is_empty(),
        })? {
            if hit {
                return map.next_value_seed(Seek { steps: rest });
            }
            map.next_value::<IgnoredAny>()?;
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let Some((&Step::Index(want), rest)) = self.steps.split_first() else {
            return Ok(());
        };
        for _ in 0..want {
            if seq.next_element::<IgnoredAny>()?.is_none() {
                return Ok(());
            }
        }
        if rest.is_empty() {
            seq.next_element_seed(Found)?;
        } else {
            seq.next_element_seed(Seek { steps: rest })?;
        }
        Ok(())
    }
}

/// A mapping key: whether it is the one wanted (an error if it is the path's last step).
struct Key<'p> {
    want: &'p str,
    last: bool,
}

/// Whether a key in the text spells the path's key: `iqn` is also written `wwpn`.
fn key_matches(want: &str, key: &str) -> bool {
    key == want || (want == "iqn" && key == "wwpn")
}

impl<'de> DeserializeSeed<'de> for Key<'_> {
    type Value = bool;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Key<'_> {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a mapping key")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<bool, E> {
        match (key_matches(self.want, key), self.last) {
            (true, true) => Err(E::custom(FOUND)),
            (hit, _) => Ok(hit),
        }
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<bool, E> {
        self.visit_str(&v.to_string())
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<bool, E> {
        self.visit_str(&v.to_string())
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_unit<E: de::Error>(self) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<bool, A::Error> {
        Ok(false)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<bool, A::Error> {
        Ok(false)
    }
}

/// The list item the path ends at: stops the walk where it starts.
struct Found;

impl<'de> DeserializeSeed<'de> for Found {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Found {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Err(E::custom(FOUND))
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Err(E::custom(FOUND))
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Err(E::custom(FOUND))
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Err(E::custom(FOUND))
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Err(E::custom(FOUND))
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Err(E::custom(FOUND))
    }
    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        Err(E::custom(FOUND))
    }
    fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        Err(de::Error::custom(FOUND))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        Err(de::Error::custom(FOUND))
    }
}

/// serde_yaml appends " at line X column Y" to messages; errors print the location in front.
pub(super) fn strip_location(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "\
# comment: targets:
data_dir: /x
portals:
  - listen: 127.0.0.1:3260
  - listen: 127.0.0.1:3261
    tpgt: 2
targets:
  - wwpn: \"21:00:00:24:ff:31:4c:48\"
    fabric: qla2xxx
  - iqn: iqn.2026-11.io.lunar:b
    initiators:
      - iqn.2026-11.io.x:a
      - bogus
    luns:
      - {id: 0, volume: a, size: 1MiB}
      - {id: 0,
         volume: b, size: 1MiB}
iscsi: {cmdsn_window: 0}
";

    #[test]
    fn paths_split_into_steps() {
        assert_eq!(
            steps("targets[0].luns[1].id"),
            Some(vec![
                Step::Key("targets"),
                Step::Index(0),
                Step::Key("luns"),
                Step::Index(1),
                Step::Key("id")
            ])
        );
        assert_eq!(
            steps("a[1][2]"),
            Some(vec![Step::Key("a"), Step::Index(1), Step::Index(2)])
        );
        assert_eq!(steps("a[x]"), None);
        assert_eq!(steps(""), None);
    }

    #[test]
    fn block_and_flow_style_fields_are_found() {
        assert_eq!(locate_field(DOC, "data_dir"), Some(2));
        assert_eq!(locate_field(DOC, "portals[1].tpgt"), Some(6));
        assert_eq!(locate_field(DOC, "portals[1]"), Some(5));
        // `wwpn` is the other spelling of `iqn`.
        assert_eq!(locate_field(DOC, "targets[0].iqn"), Some(8));
        assert_eq!(locate_field(DOC, "targets[1].iqn"), Some(10));
        assert_eq!(locate_field(DOC, "targets[1].initiators[1]"), Some(13));
        // Flow mappings, also across lines (the hand-written locator found neither).
        assert_eq!(locate_field(DOC, "targets[1].luns[1].id"), Some(16));
        assert_eq!(locate_field(DOC, "targets[1].luns[1].volume"), Some(17));
        assert_eq!(locate_field(DOC, "iscsi.cmdsn_window"), Some(18));
    }

    #[test]
    fn missing_fields_fall_back_to_their_deepest_written_ancestor() {
        assert_eq!(locate_field(DOC, "targets[1].luns[0].block_size"), Some(15));
        assert_eq!(locate_field(DOC, "targets[0].chap.secret"), Some(8));
        assert_eq!(locate_field(DOC, "iscsi.login_timeout_secs"), Some(18));
        assert_eq!(locate_field(DOC, "pool.chunk_size"), None);
        assert_eq!(locate_field(DOC, "targets[5]"), Some(7));
        assert_eq!(locate_field("- data_dir\n", "data_dir"), None);
        assert_eq!(locate_field("[\ndata_dir: 1\n", "data_dir"), None);
    }
}
