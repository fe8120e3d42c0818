//! This lunard's replication identity: a self-signed certificate and its key, and the
//! SHA-256 fingerprint a peer pins.
//!
//! `lunarctl replica identity create` writes the pair (key mode 0600, never overwriting an
//! existing one without `--force`); `identity show` prints the fingerprint to hand to the
//! peer's operator, who writes it in that peer's `replication.peers`. Pinning the exact
//! certificate replaces a certificate authority: there is nothing else to trust or revoke
//! (to revoke a peer, remove it from `peers`; to rotate, create a new identity and give
//! the peers its fingerprint).

use std::fmt;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Mode of the private key file.
pub const KEY_MODE: u32 = 0o600;

/// The SHA-256 of a certificate's DER encoding: what peers pin.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Fingerprint(pub [u8; 32]);

impl Fingerprint {
    /// The fingerprint of `cert` (DER).
    pub fn of(cert: &[u8]) -> Fingerprint {
        let d = ring::digest::digest(&ring::digest::SHA256, cert);
        let mut out = [0u8; 32];
        out.copy_from_slice(d.as_ref());
        Fingerprint(out)
    }

    /// Parses the form [`Display`](fmt::Display) writes (colons and case optional).
    pub fn parse(s: &str) -> Result<Fingerprint, String> {
        crate::config::parse_fingerprint(s).map(Fingerprint)
    }
}

impl fmt::Display for Fingerprint {
    /// `sha256:` and 32 colon-separated hex pairs, like `openssl x509 -fingerprint`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("sha256:")?;
        for (i, b) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(":")?;
            }
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Why an identity could not be created or loaded.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// The files exist and `--force` was not given.
    #[error("{0} already exists: an identity is there (use --force to replace it; peers must then pin the new fingerprint)")]
    Exists(PathBuf),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A file is not the PEM expected.
    #[error("{path}: {what}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        what: String,
    },
    /// Generating the certificate failed.
    #[error("generating the certificate: {0}")]
    Generate(String),
}

/// A certificate and its private key, loaded.
pub struct Identity {
    /// The certificate (DER).
    pub cert: CertificateDer<'static>,
    /// Its private key.
    pub key: PrivateKeyDer<'static>,
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("fingerprint", &self.fingerprint())
            .field("key", &"<redacted>")
            .finish()
    }
}

impl Clone for Identity {
    fn clone(&self) -> Self {
        Identity {
            cert: self.cert.clone(),
            key: self.key.clone_key(),
        }
    }
}

impl Identity {
    /// The fingerprint peers pin.
    pub fn fingerprint(&self) -> Fingerprint {
        Fingerprint::of(&self.cert)
    }

    /// A new self-signed identity named `name` (the certificate's subject alternative name;
    /// informative only, trust is the fingerprint).
    pub fn generate(name: &str) -> Result<(Identity, String, String), IdentityError> {
        let ck = rcgen::generate_simple_self_signed(vec![name.to_string()])
            .map_err(|e| IdentityError::Generate(e.to_string()))?;
        let cert_pem = ck.cert.pem();
        let key_pem = ck.key_pair.serialize_pem();
        let key = PrivateKeyDer::try_from(ck.key_pair.serialize_der())
            .map_err(|e| IdentityError::Generate(e.to_string()))?;
        Ok((
            Identity {
                cert: ck.cert.der().clone(),
                key,
            },
            cert_pem,
            key_pem,
        ))
    }

    /// Generates an identity and writes it to `cert` (0644) and `key` (0600), creating
    /// their directories; refuses to replace existing files unless `force`.
    pub fn create(
        name: &str,
        cert: &Path,
        key: &Path,
        force: bool,
    ) -> Result<Identity, IdentityError> {
        if !force {
            for p in [cert, key] {
                if p.exists() {
                    return Err(IdentityError::Exists(p.to_path_buf()));
                }
            }
        }
        let (id, cert_pem, key_pem) = Identity::generate(name)?;
        write_file(key, key_pem.as_bytes(), KEY_MODE)?;
        write_file(cert, cert_pem.as_bytes(), 0o644)?;
        Ok(id)
    }

    /// Loads the pair written by [`create`](Self::create).
    pub fn load(cert: &Path, key: &Path) -> Result<Identity, IdentityError> {
        let c = load_cert(cert)?;
        let k = PrivateKeyDer::from_pem_file(key).map_err(|e| pem_error(key, e))?;
        Ok(Identity { cert: c, key: k })
    }
}

/// The first certificate of a PEM file.
pub fn load_cert(path: &Path) -> Result<CertificateDer<'static>, IdentityError> {
    CertificateDer::from_pem_file(path).map_err(|e| pem_error(path, e))
}

fn pem_error(path: &Path, e: rustls::pki_types::pem::Error) -> IdentityError {
    match e {
        rustls::pki_types::pem::Error::Io(source) => IdentityError::Io {
            path: path.to_path_buf(),
            source,
        },
        other => IdentityError::Pem {
            path: path.to_path_buf(),
            what: format!("not a PEM file of the expected kind ({other:?})"),
        },
    }
}

/// Writes `data` to `path` atomically (temporary file with `mode`, fsync, rename).
fn write_file(path: &Path, data: &[u8], mode: u32) -> Result<(), IdentityError> {
    let io = |source| IdentityError::Io {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io)?;
    f.write_all(data).map_err(io)?;
    f.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn create_load_and_refuse_overwrite() {
        let d = tempfile::tempdir().unwrap();
        let (c, k) = (d.path().join("r/id.crt"), d.path().join("r/id.key"));
        let a = Identity::create("a", &c, &k, false).unwrap();
        let mode = std::fs::metadata(&k).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, KEY_MODE);
        let b = Identity::load(&c, &k).unwrap();
        assert_eq!(a.fingerprint(), b.fingerprint());
        assert!(matches!(
            Identity::create("a", &c, &k, false),
            Err(IdentityError::Exists(_))
        ));
        let n = Identity::create("a", &c, &k, true).unwrap();
        assert_ne!(n.fingerprint(), a.fingerprint());
        let shown = n.fingerprint().to_string();
        assert_eq!(Fingerprint::parse(&shown).unwrap(), n.fingerprint());
        // A key file given as the certificate is refused with the file named.
        let e = Identity::load(&k, &k).unwrap_err().to_string();
        assert!(e.contains("id.key"), "{e}");
    }
}
