//! iSCSI names (RFC 7143 section 4.2.7, RFC 3720 section 3.2.6, RFC 3722): the `iqn.`,
//! `eui.` and `naa.` formats.
//!
//! The one rule lunard applies to configured target names and ACL entries (the daemon's
//! configuration, its LUN manager and its fabric naming all call [`validate`]). The login
//! itself accepts any non-empty InitiatorName (real initiators are not always strictly
//! normalized) and compares names case-insensitively.
//!
//! What the RFCs require, and where this module is lenient or strict on purpose:
//! - at most 223 bytes, not empty (RFC 7143 4.2.7.1);
//! - `iqn.` + `yyyy-mm.` (a real month) + a reversed domain name as naming authority, then
//!   optionally `:` and anything (4.2.7.3); names are in their normalized (stringprep)
//!   form, so ASCII letters are lower case, and the only ASCII punctuation is `-`, `.`,
//!   `:` (4.2.7.2). Other Unicode characters are allowed, as RFC 3722 allows them, except
//!   the ones its profile maps or prohibits that a reader could mistype: upper case,
//!   white space and control characters;
//! - `eui.` + 16 hex digits (4.2.7.4) and `naa.` + 16 or 32 hex digits (4.2.7.5, RFC 3980);
//!   the hex digits may be of either case, as the RFCs' own examples
//!   (`eui.02004567A425678D`, `naa.52004567BA64678D`) write them.

/// Longest iSCSI name in bytes.
pub const MAX_NAME_LEN: usize = 223;

/// Why a string is not a valid iSCSI name.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// Empty or longer than [`MAX_NAME_LEN`] bytes.
    #[error("an iSCSI name is 1 to {MAX_NAME_LEN} bytes long")]
    Length,
    /// Not starting with `iqn.`, `eui.` or `naa.`.
    #[error("iSCSI names start with iqn., eui. or naa.")]
    UnknownType,
    /// `iqn.` name without a valid `yyyy-mm.` date and naming authority.
    #[error("expected iqn.yyyy-mm.reversed.domain[:identifier]")]
    BadIqn,
    /// `eui.`/`naa.` name with the wrong number of hex digits.
    #[error("{0}. names need {1} hex digits")]
    BadHex(&'static str, &'static str),
    /// A character iSCSI names may not contain (upper case, space, punctuation other than
    /// `-`, `.`, `:`).
    #[error("character {0:?} not allowed (lowercase letters, digits, '-', '.', ':')")]
    BadChar(char),
}

/// A character of a normalized `iqn.` name.
fn allowed(c: char) -> bool {
    if c.is_ascii() {
        c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '.' | ':')
    } else {
        !(c.is_uppercase() || c.is_whitespace() || c.is_control())
    }
}

/// Validates an iSCSI name in its normalized form (see the module documentation).
pub fn validate(name: &str) -> Result<(), NameError> {
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Err(NameError::Length);
    }
    if let Some(rest) = name.strip_prefix("iqn.") {
        if let Some(c) = name.chars().find(|&c| !allowed(c)) {
            return Err(NameError::BadChar(c));
        }
        let b = rest.as_bytes();
        let date_ok = b.len() > 8
            && b[..4].iter().all(u8::is_ascii_digit)
            && b[4] == b'-'
            && b[5..7].iter().all(u8::is_ascii_digit)
            && (1..=12).contains(&((b[5] - b'0') * 10 + (b[6] - b'0')))
            && b[7] == b'.';
        let authority = rest.get(8..).unwrap_or("");
        let authority = authority.split(':').next().unwrap_or("");
        if !date_ok || authority.is_empty() || authority.starts_with('.') {
            return Err(NameError::BadIqn);
        }
        return Ok(());
    }
    let hex_len = |s: &str, lens: &[usize]| {
        lens.contains(&s.len()) && s.bytes().all(|c| c.is_ascii_hexdigit())
    };
    if let Some(rest) = name.strip_prefix("eui.") {
        return if hex_len(rest, &[16]) {
            Ok(())
        } else {
            Err(NameError::BadHex("eui", "16"))
        };
    }
    if let Some(rest) = name.strip_prefix("naa.") {
        return if hex_len(rest, &[16, 32]) {
            Ok(())
        } else {
            Err(NameError::BadHex("naa", "16 or 32"))
        };
    }
    Err(NameError::UnknownType)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_names() {
        for n in [
            "iqn.2004-10.com.ubuntu:01:deadbeef",
            "iqn.1991-05.com.microsoft:win-host.example.com",
            "iqn.2026-01.io.lunar:vol1",
            "iqn.2001-04.com.example",
            "iqn.1993-08.org.debian:01:6e2d5a9f",
            "eui.02004567a425678d",
            "naa.52004567ba64678d",
            "naa.62004567ba64678d0123456789abcdef",
        ] {
            assert_eq!(validate(n), Ok(()), "{n}");
        }
    }

    #[test]
    fn invalid_names() {
        assert_eq!(validate(""), Err(NameError::Length));
        assert_eq!(
            validate(&format!("iqn.2001-04.com.x:{}", "a".repeat(220))),
            Err(NameError::Length)
        );
        assert_eq!(
            validate("iqn.2001-04.com.Example"),
            Err(NameError::BadChar('E'))
        );
        assert_eq!(validate("iqn.2001-13.com.x"), Err(NameError::BadIqn));
        assert_eq!(validate("iqn.01-04.com.x"), Err(NameError::BadIqn));
        assert_eq!(validate("iqn.2001-04."), Err(NameError::BadIqn));
        assert_eq!(validate("iqn.2001-04.:x"), Err(NameError::BadIqn));
        assert_eq!(validate("eui.1234"), Err(NameError::BadHex("eui", "16")));
        assert_eq!(
            validate("naa.zz004567ba64678d"),
            Err(NameError::BadHex("naa", "16 or 32"))
        );
        assert_eq!(validate("foo.bar"), Err(NameError::UnknownType));
        assert_eq!(validate("iqn.2001-04.com x"), Err(NameError::BadChar(' ')));
    }

    /// Where the daemon's configuration used to apply a rule of its own, the RFC's reading
    /// wins; each case here is one such difference.
    #[test]
    fn rules_that_differed_between_the_two_checkers() {
        // RFC 7143 4.2.7.4/4.2.7.5 spell their examples in upper-case hex: accepted (the
        // old scsi-proto rule refused the upper-case letters as characters).
        assert_eq!(validate("eui.02004567A425678D"), Ok(()));
        assert_eq!(validate("naa.52004567BA64678D"), Ok(()));
        assert_eq!(validate("naa.62004567BA64678D0123456789ABCDEF"), Ok(()));
        // RFC 3722 allows characters beyond ASCII in their normalized form (the daemon's
        // rule refused every non-ASCII character)...
        assert_eq!(validate("iqn.2001-04.com.example:données"), Ok(()));
        // ... but not what stringprep maps or prohibits: upper case, spaces, controls.
        assert_eq!(
            validate("iqn.2001-04.com.example:DONNÉES"),
            Err(NameError::BadChar('D'))
        );
        assert_eq!(
            validate("iqn.2001-04.com.example:É"),
            Err(NameError::BadChar('É'))
        );
        assert_eq!(
            validate("iqn.2001-04.com.example:a\u{a0}b"),
            Err(NameError::BadChar('\u{a0}'))
        );
        assert_eq!(
            validate("iqn.2001-04.com.example:a\u{85}b"),
            Err(NameError::BadChar('\u{85}'))
        );
        // The naming authority is a domain name: it cannot start with a dot (the daemon's
        // rule let `iqn.2001-04..com` through).
        assert_eq!(validate("iqn.2001-04..com"), Err(NameError::BadIqn));
        // An empty name is a length error, not an unknown type.
        assert_eq!(validate(""), Err(NameError::Length));
        // The type prefix is decided first: a name of no known type says so, rather than
        // complaining about its first upper-case letter.
        assert_eq!(validate("Demo"), Err(NameError::UnknownType));
        assert_eq!(validate("IQN.2001-04.com.x"), Err(NameError::UnknownType));
    }
}
