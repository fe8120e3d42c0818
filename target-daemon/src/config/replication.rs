//! The `replication:` section: this lunard's replication listener, its TLS identity and
//! the peers it trusts (issue 18, [decision 0019](../../../docs/decisions/0019-replication-link.md)).
//!
//! Trust is pinned, not delegated: each peer is named with the SHA-256 fingerprint of its
//! self-signed certificate (`lunarctl replica identity show` prints it), or with the
//! certificate file itself. There is no certificate authority to compromise and no
//! pre-shared key (rustls has no external-PSK TLS 1.3; the decision explains).

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::ha::DurationCfg;
use super::size::ByteSize;

/// Longest peer name accepted (it labels metrics and names relationships' peers).
pub const MAX_PEER_NAME: usize = 64;
/// Most peers a lunard may trust.
pub const MAX_PEERS: usize = 64;
/// Most replication connections served at once, the ceiling of `max_connections`.
pub const MAX_REPLICATION_CONNECTIONS: u32 = 1024;

/// This lunard's replication endpoint (see docs/replication.md).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ReplicationCfg {
    /// Where the replication listener accepts peers (TLS only). Absent: this lunard only
    /// sends (it still needs an identity to authenticate itself to its peers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    /// This lunard's certificate and private key (PEM), as `lunarctl replica identity
    /// create` writes them. Relative paths are under `data_dir`.
    #[serde(default)]
    pub identity: IdentityCfg,
    /// The lunards this one replicates with; nobody else is accepted.
    #[serde(default)]
    pub peers: Vec<PeerCfg>,
    /// Replication connections served at once; more are refused at accept.
    #[serde(default = "default_max_connections")]
    pub max_connections: u32,
    /// A peer that has not finished the TLS handshake and its request within this long is
    /// disconnected (a silent connection holds nothing longer).
    #[serde(default = "default_handshake_timeout")]
    pub handshake_timeout: DurationCfg,
    /// A transfer that moves no byte for this long is abandoned (and resumed later).
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout: DurationCfg,
}

/// Certificate and key files of this lunard.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityCfg {
    /// The self-signed certificate (PEM).
    #[serde(default = "default_cert")]
    pub cert: PathBuf,
    /// Its private key (PEM, mode 0600).
    #[serde(default = "default_key")]
    pub key: PathBuf,
}

impl Default for IdentityCfg {
    fn default() -> Self {
        IdentityCfg {
            cert: default_cert(),
            key: default_key(),
        }
    }
}

/// One trusted peer.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PeerCfg {
    /// Name used by relationships (`--peer`) and in metrics.
    pub name: String,
    /// Its replication listener (`host:port`); absent for a peer that only sends to us.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// SHA-256 fingerprint of its certificate, as `lunarctl replica identity show` prints
    /// it (hex, colons optional). One of `fingerprint` and `certificate`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
    /// Its certificate file (PEM); the fingerprint is computed from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<PathBuf>,
    /// The local volumes this peer may list, replicate into, prune and demote: names or
    /// patterns where `*` matches any run of characters (`prod-*`, `*`). Absent or empty:
    /// none (decision 0024) — a peer is trusted with nothing it is not given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volumes: Option<Vec<String>>,
    /// The most pool space the volumes this peer replicates into may use here, their
    /// snapshots and staged transfers included (`500GiB`). Absent: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub space_limit: Option<ByteSize>,
}

fn default_cert() -> PathBuf {
    PathBuf::from("replication/identity.crt")
}
fn default_key() -> PathBuf {
    PathBuf::from("replication/identity.key")
}
fn default_max_connections() -> u32 {
    16
}
fn default_handshake_timeout() -> DurationCfg {
    DurationCfg(Duration::from_secs(10))
}
fn default_idle_timeout() -> DurationCfg {
    DurationCfg(Duration::from_secs(60))
}

/// Parses a SHA-256 fingerprint written as 64 hex digits, with or without colons, in
/// either case; returns the 32 bytes.
pub fn parse_fingerprint(s: &str) -> Result<[u8; 32], String> {
    let t = s.trim();
    let t = t
        .strip_prefix("sha256:")
        .or_else(|| t.strip_prefix("SHA256:"))
        .unwrap_or(t);
    let hex: String = t.chars().filter(|&c| c != ':').collect();
    if hex.len() != 64 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(format!(
            "invalid fingerprint {s:?}: expected the 64 hex digits of a SHA-256 \
             (as `lunarctl replica identity show` prints it)"
        ));
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16)
            .map_err(|_| format!("invalid fingerprint {s:?}"))?;
    }
    Ok(out)
}

/// Checks a peer name: 1..=64 of `[A-Za-z0-9._-]`, starting with a letter or digit.
pub fn check_peer_name(n: &str) -> Result<(), String> {
    let ok_chars = n
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    let ok_first = n.chars().next().is_some_and(|c| c.is_ascii_alphanumeric());
    if n.is_empty() || n.len() > MAX_PEER_NAME || !ok_chars || !ok_first {
        return Err(format!(
            "invalid peer name {n:?}: 1 to {MAX_PEER_NAME} letters, digits, '.', '_' or '-', \
             starting with a letter or digit"
        ));
    }
    Ok(())
}

impl ReplicationCfg {
    /// Ranges and cross-field rules; errors name the field under `replication.`.
    pub fn validate(&self) -> Result<(), (String, String)> {
        if self.max_connections == 0 || self.max_connections > MAX_REPLICATION_CONNECTIONS {
            return Err((
                "max_connections".into(),
                format!("must be 1..={MAX_REPLICATION_CONNECTIONS}"),
            ));
        }
        let hs = self.handshake_timeout.0;
        if hs < Duration::from_millis(100) || hs > Duration::from_secs(300) {
            return Err((
                "handshake_timeout".into(),
                "must be between 100ms and 300s".into(),
            ));
        }
        let idle = self.idle_timeout.0;
        if idle < Duration::from_secs(1) || idle > Duration::from_secs(3600) {
            return Err(("idle_timeout".into(), "must be between 1s and 3600s".into()));
        }
        if self.peers.len() > MAX_PEERS {
            return Err(("peers".into(), format!("at most {MAX_PEERS} peers")));
        }
        let mut names = BTreeSet::new();
        for (i, p) in self.peers.iter().enumerate() {
            let f = format!("peers[{i}]");
            check_peer_name(&p.name).map_err(|m| (format!("{f}.name"), m))?;
            if !names.insert(p.name.as_str()) {
                return Err((
                    format!("{f}.name"),
                    format!("peer {:?} is named twice", p.name),
                ));
            }
            match (&p.fingerprint, &p.certificate) {
                (Some(fp), None) => {
                    parse_fingerprint(fp).map_err(|m| (format!("{f}.fingerprint"), m))?;
                }
                (None, Some(_)) => {}
                _ => {
                    return Err((
                        f,
                        "give exactly one of fingerprint and certificate \
                         (the peer's `lunarctl replica identity show`)"
                            .into(),
                    ))
                }
            }
            if let Some(a) = &p.address {
                check_address(a).map_err(|m| (format!("{f}.address"), m))?;
            }
            for (j, pat) in p.volumes.iter().flatten().enumerate() {
                check_volume_pattern(pat).map_err(|m| (format!("{f}.volumes[{j}]"), m))?;
            }
            if p.space_limit.is_some_and(|l| l.0 == 0) {
                return Err((
                    format!("{f}.space_limit"),
                    "must be positive (omit it for no limit; to refuse every transfer, \
                     list no volumes)"
                        .into(),
                ));
            }
        }
        Ok(())
    }

    /// What is valid but probably not meant: peers that may use no volume of a lunard
    /// that listens (after an upgrade from before `volumes` existed, their transfers are
    /// refused until the volumes are listed).
    pub fn warnings(&self) -> Vec<String> {
        if self.listen.is_none() {
            return Vec::new();
        }
        self.peers
            .iter()
            .filter(|p| p.volumes.as_ref().is_none_or(Vec::is_empty))
            .map(|p| {
                format!(
                    "replication peer {} lists no volumes: it may not list, replicate into or \
                     fail back any volume of this lunard (add `volumes: [NAME or PATTERN, ...]` \
                     to its replication.peers entry; `[\"*\"]` allows all)",
                    p.name
                )
            })
            .collect()
    }
}

/// Longest volume pattern (a LUN name is at most 128 characters).
pub const MAX_VOLUME_PATTERN: usize = 128;

/// Checks a `volumes` entry: 1..=128 of the characters of a LUN name (letters, digits,
/// `-`, `_`, `.`) and `*`, not starting with `.`.
pub fn check_volume_pattern(p: &str) -> Result<(), String> {
    let ok = !p.is_empty()
        && p.len() <= MAX_VOLUME_PATTERN
        && !p.starts_with('.')
        && p.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '*'));
    if !ok {
        return Err(format!(
            "invalid volume pattern {p:?}: 1 to {MAX_VOLUME_PATTERN} letters, digits, '-', '_', \
             '.' (not leading) and '*' (any run of characters), e.g. \"prod-*\""
        ));
    }
    Ok(())
}

/// `host:port` with a port in 1..=65535 and a non-empty host.
fn check_address(a: &str) -> Result<(), String> {
    let Some((host, port)) = a.rsplit_once(':') else {
        return Err(format!("invalid address {a:?}: expected host:port"));
    };
    let port_ok = port.parse::<u16>().is_ok_and(|p| p != 0);
    if host.is_empty() || !port_ok {
        return Err(format!("invalid address {a:?}: expected host:port"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(peers: Vec<PeerCfg>) -> ReplicationCfg {
        ReplicationCfg {
            listen: None,
            identity: IdentityCfg::default(),
            peers,
            max_connections: 16,
            handshake_timeout: DurationCfg(Duration::from_secs(10)),
            idle_timeout: DurationCfg(Duration::from_secs(60)),
        }
    }

    fn peer(name: &str, fp: Option<&str>, cert: Option<&str>) -> PeerCfg {
        PeerCfg {
            name: name.into(),
            address: Some("127.0.0.1:3270".into()),
            fingerprint: fp.map(str::to_string),
            certificate: cert.map(PathBuf::from),
            volumes: None,
            space_limit: None,
        }
    }

    #[test]
    fn volume_patterns_and_space_limits_are_checked() {
        let mut p = peer("b", Some(FP), None);
        p.volumes = Some(vec!["prod-*".into(), "db.1".into(), "*".into()]);
        p.space_limit = Some(ByteSize(1 << 30));
        assert!(cfg(vec![p.clone()]).validate().is_ok());
        for bad in ["", "a/b", ".x", "a?", "prod[1]", &"x".repeat(129)] {
            let mut q = p.clone();
            q.volumes = Some(vec!["ok".into(), bad.to_string()]);
            let e = cfg(vec![q]).validate().unwrap_err();
            assert_eq!(e.0, "peers[0].volumes[1]", "{bad:?}: {e:?}");
            assert!(e.1.contains("invalid volume pattern"), "{e:?}");
        }
        p.space_limit = Some(ByteSize(0));
        assert_eq!(
            cfg(vec![p]).validate().unwrap_err().0,
            "peers[0].space_limit"
        );
    }

    #[test]
    fn a_listening_lunard_warns_about_peers_without_volumes() {
        let mut c = cfg(vec![peer("b", Some(FP), None)]);
        assert!(c.warnings().is_empty(), "a lunard that only sends");
        c.listen = Some("127.0.0.1:3270".parse().unwrap());
        let w = c.warnings();
        assert_eq!(w.len(), 1);
        assert!(w[0].contains("peer b lists no volumes"), "{w:?}");
        c.peers[0].volumes = Some(vec!["*".into()]);
        assert!(c.warnings().is_empty());
    }

    const FP: &str = "AB:cd:00:11:22:33:44:55:66:77:88:99:aa:bb:cc:dd:ee:ff:00:11:22:33:44:55:66:77:88:99:aa:bb:cc:dd";

    #[test]
    fn fingerprints_parse_with_or_without_colons() {
        let a = parse_fingerprint(FP).unwrap();
        let b = parse_fingerprint(&FP.replace(':', "").to_uppercase()).unwrap();
        assert_eq!(a, b);
        assert_eq!(a[0], 0xab);
        assert!(parse_fingerprint("abcd").is_err());
        assert!(parse_fingerprint(&"zz".repeat(32)).is_err());
    }

    #[test]
    fn peers_are_checked() {
        assert!(cfg(vec![peer("b", Some(FP), None)]).validate().is_ok());
        let e = cfg(vec![peer("b", Some(FP), Some("x.crt"))])
            .validate()
            .unwrap_err();
        assert_eq!(e.0, "peers[0]");
        let e = cfg(vec![peer("b", None, None)]).validate().unwrap_err();
        assert_eq!(e.0, "peers[0]");
        let e = cfg(vec![peer("b", Some(FP), None), peer("b", None, Some("c"))])
            .validate()
            .unwrap_err();
        assert_eq!(e.0, "peers[1].name");
        let e = cfg(vec![peer("-b", Some(FP), None)])
            .validate()
            .unwrap_err();
        assert_eq!(e.0, "peers[0].name");
        let e = cfg(vec![peer("b", Some("12"), None)])
            .validate()
            .unwrap_err();
        assert_eq!(e.0, "peers[0].fingerprint");
        let mut p = peer("b", Some(FP), None);
        p.address = Some("nohost".into());
        assert_eq!(cfg(vec![p]).validate().unwrap_err().0, "peers[0].address");
        let mut c = cfg(vec![]);
        c.max_connections = 0;
        assert_eq!(c.validate().unwrap_err().0, "max_connections");
        let mut c = cfg(vec![]);
        c.handshake_timeout = DurationCfg(Duration::from_millis(1));
        assert_eq!(c.validate().unwrap_err().0, "handshake_timeout");
    }

    #[test]
    fn section_reads_from_yaml() {
        let c: ReplicationCfg = serde_yaml::from_str(&format!(
            "listen: 127.0.0.1:3270\npeers:\n  - name: siteb\n    address: 127.0.0.1:3271\n    fingerprint: \"{FP}\"\n"
        ))
        .unwrap();
        assert_eq!(c.peers[0].name, "siteb");
        assert_eq!(c.max_connections, 16);
        assert!(c.validate().is_ok());
        assert!(serde_yaml::from_str::<ReplicationCfg>("lisen: 1").is_err());
    }
}
