//! iSCSI names (RFC 7143 section 4.2.7, RFC 3722): `iqn.`, `eui.` and `naa.` formats.
//!
//! Used to validate configured target names and ACL entries; the login itself accepts any
//! non-empty InitiatorName (real initiators are not always strictly normalized) and
//! compares names case-insensitively.

/// Longest iSCSI name in bytes.
pub const MAX_NAME_LEN: usize = 223;

/// Why a string is not a valid iSCSI name.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// Empty or longer than [`MAX_NAME_LEN`] bytes.
    #[error("iSCSI name must be 1..={MAX_NAME_LEN} bytes")]
    Length,
    /// Not starting with `iqn.`, `eui.` or `naa.`.
    #[error("iSCSI name must start with iqn., eui. or naa.")]
    UnknownType,
    /// `iqn.` name without a valid `yyyy-mm.` date and naming authority.
    #[error("iqn. name must look like iqn.yyyy-mm.reversed.domain[:identifier]")]
    BadIqn,
    /// `eui.`/`naa.` name with the wrong number of hex digits.
    #[error("{0}. name must be followed by {1} hexadecimal digits")]
    BadHex(&'static str, &'static str),
    /// A character iSCSI names may not contain (upper case, space, punctuation other than
    /// `-`, `.`, `:`).
    #[error("invalid character {0:?} in iSCSI name")]
    BadChar(char),
}

fn allowed(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '.' | ':') || !c.is_ascii()
}

/// Validate an iSCSI name in its normalized (lower-case) form.
pub fn validate(name: &str) -> Result<(), NameError> {
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Err(NameError::Length);
    }
    if let Some(c) = name.chars().find(|&c| !allowed(c)) {
        return Err(NameError::BadChar(c));
    }
    if let Some(rest) = name.strip_prefix("iqn.") {
        let b = rest.as_bytes();
        let date_ok = b.len() > 8
            && b[..4].iter().all(u8::is_ascii_digit)
            && b[4] == b'-'
            && b[5..7].iter().all(u8::is_ascii_digit)
            && matches!(
                &rest[5..7],
                "01" | "02" | "03" | "04" | "05" | "06" | "07" | "08" | "09" | "10" | "11" | "12"
            )
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
}
