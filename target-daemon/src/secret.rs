//! Secrets (CHAP secrets, the admin bearer token) and the files they are read from.
//!
//! [`Secret`] wraps the text so that no `{:?}` or `{}` can print it: request types, records
//! and configuration structs derive `Debug`, and any of them may end up in a log line at some
//! log level (`--log-level debug` logs every admin request). The only way to the text is
//! [`Secret::expose`], which the few places that need it (CHAP computation, token check,
//! `config export`, the state file through serde) call by name. Serde sees a plain string,
//! so `state.json`, the YAML and the admin JSON keep their format.
//!
//! A `Secret` wipes its text from memory when it is dropped (zeroize), as do the buffers
//! the text passes through on its way in (the token file's contents): a core dump, a
//! swapped-out page or a later allocation reusing the memory then holds no old secret. Each
//! clone is a copy of its own and is wiped with it.
//!
//! [`read_private_file`] reads a token file the way ssh reads a private key: a file that the
//! group or others may access, or that another user owns, is refused with the command that
//! fixes it, because a secret anyone can read is not a secret.

use std::fmt;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

/// A secret string whose `Debug` and `Display` print `<redacted>`, wiped when dropped.
#[derive(Clone, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

/// What `Debug` and `Display` print instead of the secret.
pub const REDACTED: &str = "<redacted>";

impl Secret {
    /// Wraps `s`.
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }

    /// The secret itself: only for the code that must use it (never for messages or logs).
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Length in bytes (validation messages may say how long a secret is, not what it is).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the secret is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Secret {
    /// Overwrites the text with zeros (all of the allocation, spare capacity included) and
    /// empties it; what dropping a `Secret` does.
    fn wipe(&mut self) {
        self.0.zeroize();
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        self.wipe();
    }
}

impl ZeroizeOnDrop for Secret {}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

/// Equality in time that depends only on the lengths, not on where the contents differ, so a
/// comparison against a secret never leaks it through timing.
impl PartialEq for Secret {
    fn eq(&self, other: &Self) -> bool {
        let (a, b) = (self.0.as_bytes(), other.0.as_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
    }
}

impl Eq for Secret {}

impl From<String> for Secret {
    fn from(s: String) -> Self {
        Secret(s)
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Self {
        Secret(s.to_string())
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Secret(s.to_string()))
    }
}

/// Why a private file (a token file) was refused.
#[derive(Debug, thiserror::Error)]
pub enum PrivateFileError {
    /// Opening or reading failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The group or others have some access.
    #[error(
        "{path}: permissions {mode:04o} are too open (the group or others may read or replace \
         the secret); run `chmod 600 {path}`"
    )]
    TooOpen {
        /// The file.
        path: String,
        /// Its permission bits.
        mode: u32,
    },
    /// Another user owns it.
    #[error(
        "{path}: owned by uid {owner}, not by the user reading it (uid {me}); \
         run `chown {me} {path}` and `chmod 600 {path}`"
    )]
    NotOwner {
        /// The file.
        path: String,
        /// Its owner.
        owner: u32,
        /// The effective uid of this process.
        me: u32,
    },
    /// Nothing but white space in it.
    #[error("{path}: the file is empty")]
    Empty {
        /// The file.
        path: String,
    },
}

/// Reads a secret from `path`, trimmed of surrounding white space, after checking that only
/// its owner, the user running this process, can access it (like ssh with a private key).
///
/// The checks look at the opened file (`fstat`), not at the path, so the file checked is the
/// file read. They hold for root too: whoever can replace the file controls the secret.
pub fn read_private_file(path: &Path) -> Result<Secret, PrivateFileError> {
    let name = path.display().to_string();
    let io = |source| PrivateFileError::Io {
        path: name.clone(),
        source,
    };
    let mut f = std::fs::File::open(path).map_err(io)?;
    let meta = f.metadata().map_err(io)?;
    let mode = meta.mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(PrivateFileError::TooOpen { path: name, mode });
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    if meta.uid() != me {
        return Err(PrivateFileError::NotOwner {
            path: name,
            owner: meta.uid(),
            me,
        });
    }
    let mut text = Zeroizing::new(String::new());
    f.read_to_string(&mut text).map_err(io)?;
    let t = text.trim();
    if t.is_empty() {
        return Err(PrivateFileError::Empty { path: name });
    }
    Ok(Secret::new(t))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn debug_and_display_never_show_the_secret() {
        let s = Secret::new("hunter2-hunter2");
        assert_eq!(format!("{s:?}"), REDACTED);
        assert_eq!(format!("{s}"), REDACTED);
        assert_eq!(
            format!("{:?}", Some(s.clone())),
            format!("Some({REDACTED})")
        );
        assert_eq!(s.expose(), "hunter2-hunter2");
    }

    /// Dropping wipes: every byte of the allocation the text lived in is zero (checked on
    /// the live allocation through `wipe`, which is all `Drop` does), and the type says so.
    #[test]
    fn a_secret_is_wiped_when_dropped() {
        fn wiped_on_drop<T: ZeroizeOnDrop>() {}
        wiped_on_drop::<Secret>();
        let mut s = Secret::new(String::from("hunter2-hunter2-hunter2"));
        let (ptr, cap) = (s.0.as_ptr(), s.0.capacity());
        s.wipe();
        assert!(s.is_empty());
        assert_eq!(
            (s.0.as_ptr(), s.0.capacity()),
            (ptr, cap),
            "same allocation"
        );
        // SAFETY: the allocation is still owned by `s` (a cleared String keeps its buffer)
        // and every byte of it was written (by the original text and by the wipe).
        let bytes = unsafe { std::slice::from_raw_parts(ptr, cap) };
        assert!(bytes.iter().all(|&b| b == 0), "{bytes:?}");
    }

    #[test]
    fn serde_sees_a_plain_string() {
        let s: Secret = serde_json::from_str(r#""abc""#).unwrap();
        assert_eq!(s.expose(), "abc");
        assert_eq!(serde_json::to_string(&s).unwrap(), r#""abc""#);
        let y: Secret = serde_yaml::from_str("abc def").unwrap();
        assert_eq!(y.expose(), "abc def");
    }

    #[test]
    fn equality_compares_contents() {
        assert_eq!(Secret::from("abc"), Secret::from("abc"));
        assert_ne!(Secret::from("abc"), Secret::from("abd"));
        assert_ne!(Secret::from("abc"), Secret::from("abcd"));
        assert_ne!(Secret::from(""), Secret::from("a"));
    }

    fn file_with_mode(text: &str, mode: u32) -> (tempfile::TempDir, std::path::PathBuf) {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("token");
        std::fs::write(&p, text).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        (d, p)
    }

    #[test]
    fn a_private_file_is_read_and_trimmed() {
        let (_d, p) = file_with_mode("  tok-123\n", 0o600);
        assert_eq!(read_private_file(&p).unwrap().expose(), "tok-123");
        let (_d, p) = file_with_mode("tok-123", 0o400);
        assert_eq!(read_private_file(&p).unwrap().expose(), "tok-123");
    }

    #[test]
    fn a_file_others_may_access_is_refused_with_the_fix() {
        for mode in [0o644, 0o640, 0o604, 0o620, 0o602, 0o660] {
            let (_d, p) = file_with_mode("tok-123\n", mode);
            let e = read_private_file(&p).unwrap_err().to_string();
            let name = p.display().to_string();
            assert!(
                e.starts_with(&format!("{name}: permissions 0{mode:o}")),
                "{e}"
            );
            assert!(e.contains(&format!("run `chmod 600 {name}`")), "{e}");
        }
    }

    /// Needs root to give a file away; as another user there is nothing to check.
    #[test]
    fn a_file_another_user_owns_is_refused() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return;
        }
        let (_d, p) = file_with_mode("tok-123\n", 0o600);
        std::os::unix::fs::chown(&p, Some(65534), None).unwrap();
        let e = read_private_file(&p).unwrap_err().to_string();
        assert!(
            e.contains("owned by uid 65534, not by the user reading it (uid 0)"),
            "{e}"
        );
        assert!(e.contains("run `chown 0 "), "{e}");
    }

    #[test]
    fn an_empty_or_missing_file_is_refused() {
        let (_d, p) = file_with_mode(" \n", 0o600);
        assert!(read_private_file(&p)
            .unwrap_err()
            .to_string()
            .ends_with("the file is empty"));
        let e = read_private_file(Path::new("/nonexistent/token")).unwrap_err();
        assert!(e.to_string().starts_with("/nonexistent/token: "), "{e}");
    }
}
