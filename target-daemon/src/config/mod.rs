//! `lunard` configuration: the YAML file format, its embedded default, and validation.
//!
//! Split by concern, each file depending only on the ones above it:
//! - `size.rs`: byte counts as people write them (`64KiB`);
//! - `ha.rs`: the `ha:` section and `pool.rbd` (a gateway of an HA group over Ceph RBD);
//! - `pools.rs`: the `pools:` list (or the `pool:` shorthand), names and paths;
//! - `limits.rs`: the `limits:` section and the fixed caps it is bounded by;
//! - `schema.rs`: the file's shape, one struct per section, with their defaults; serde
//!   reads and writes the file through them alone;
//! - `validate.rs`: ranges and rules between fields, reported as a dotted field path;
//! - `locate.rs`: the line of such a path in the file, found by serde_yaml itself;
//! - `defaults.rs`: the embedded default; `builder.rs`: configurations built from the types
//!   (tests, tools); `export.rs`: writing a configuration back (`lunarctl config export`);
//! - this file: reading a file, and [`ConfigError`].
//!
//! Parsing is strict (`deny_unknown_fields`) so a typo is an error rather than a silently
//! ignored setting. Syntax and type errors come from `serde_yaml` and carry a line and column;
//! semantic errors (bad IQN, duplicate LUN, ...) carry the dotted field path, e.g.
//! `targets[0].luns[1].block_size`, and its line. Both name the file.
//!
//! The configuration is a leaf of the daemon: besides these files it uses only
//! [`crate::fabric`] (target naming per transport) and [`crate::secret`].

use std::path::Path;

mod builder;
mod defaults;
mod export;
mod ha;
mod limits;
mod locate;
mod pools;
mod replication;
mod schema;
mod size;
mod validate;

pub use defaults::DEFAULT_CONFIG_YAML;
pub use export::{ExportError, EXPORT_HEADER};
pub use ha::{CephCfg, DurationCfg, HaCfg, RbdPoolCfg, MAX_LEASE, MIN_LEASE};
pub use limits::{
    LimitsCfg, MAX_COMMAND_DATA, MAX_REQUEST_LINE, MIN_READ_BUFFER_PER_CONNECTION, MIN_WRITE_BUFFER,
};
pub use pools::{check_pool_name, DEFAULT_POOL_NAME, MAX_POOL_NAME};
pub use replication::{
    check_peer_name, check_volume_pattern, parse_fingerprint, IdentityCfg, PeerCfg, ReplicationCfg,
    MAX_PEERS, MAX_PEER_NAME, MAX_REPLICATION_CONNECTIONS, MAX_VOLUME_PATTERN,
};
pub use schema::{
    ChapCfg, Config, Credential, DigestCfg, DiscoveryCfg, GuaranteeCfg, IscsiCfg, LioCfg, LunCfg,
    MetricsCfg, PoolCfg, PortalCfg, TargetCfg,
};
pub use size::ByteSize;

/// An error in a configuration file, located as precisely as the check allows.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{file}: cannot read: {source}")]
    Read {
        /// The file name as given.
        file: String,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// YAML syntax or type error; serde_yaml's message names the field path.
    #[error("{file}:{line}:{column}: {message}")]
    Syntax {
        /// The file name as given.
        file: String,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What is wrong.
        message: String,
    },
    /// YAML error without a location (e.g. an empty document).
    #[error("{file}: {message}")]
    Unlocated {
        /// The file name as given.
        file: String,
        /// What is wrong.
        message: String,
    },
    /// A value that parses but makes no sense.
    #[error("{file}:{line}: {field}: {message}")]
    Invalid {
        /// The file name as given.
        file: String,
        /// 1-based line of the field, or of its closest enclosing section written in the
        /// file (0 if not even that is in the file).
        line: usize,
        /// Dotted field path such as `targets[0].luns[1].block_size`.
        field: String,
        /// What is wrong.
        message: String,
    },
}

impl Config {
    /// Reads and validates a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            file: file.clone(),
            source,
        })?;
        Config::from_yaml_str(&text, &file)
    }

    /// Parses and validates configuration text ([`Config::validate`]: also whether this
    /// build can run it); `file` names it in errors.
    pub fn from_yaml_str(text: &str, file: &str) -> Result<Config, ConfigError> {
        Self::parse_checked(text, file, Config::validate)
    }

    /// Parses and checks configuration text for what it says alone, whatever this build
    /// supports (an `ha:` section passes without the `ceph` feature): for tools and tests
    /// that check configurations meant for another build. lunard uses
    /// [`Config::from_yaml_str`].
    pub fn from_yaml_str_any_build(text: &str, file: &str) -> Result<Config, ConfigError> {
        Self::parse_checked(text, file, Config::validate_schema)
    }

    /// Parses `text` and applies `check`, locating its complaint in the text.
    fn parse_checked(
        text: &str,
        file: &str,
        check: impl Fn(&Config) -> Result<(), (String, String)>,
    ) -> Result<Config, ConfigError> {
        let cfg: Config = serde_yaml::from_str(text).map_err(|e| match e.location() {
            Some(loc) => ConfigError::Syntax {
                file: file.to_string(),
                line: loc.line(),
                column: loc.column(),
                message: locate::strip_location(&e.to_string()),
            },
            None => ConfigError::Unlocated {
                file: file.to_string(),
                message: e.to_string(),
            },
        })?;
        check(&cfg).map_err(|(field, message)| ConfigError::Invalid {
            file: file.to_string(),
            line: locate::locate_field(text, &field).unwrap_or(0),
            field,
            message,
        })?;
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_default_is_valid() {
        let c = Config::embedded_default();
        assert_eq!(c.portals[0].listen.to_string(), "127.0.0.1:3260");
        assert_eq!(c.targets[0].iqn, "iqn.2026-11.io.lunar:demo");
        assert!(c.targets[0].allow_any);
        assert_eq!(c.targets[0].luns[0].size, ByteSize(1 << 30));
        assert_eq!(c.targets[0].luns[0].guarantee, GuaranteeCfg::None);
    }

    #[test]
    fn shipped_example_is_valid() {
        let text = include_str!("../../../deploy/lunar.example.yaml");
        let c = Config::from_yaml_str(text, "deploy/lunar.example.yaml").unwrap();
        assert_eq!(c.targets.len(), 3);
        assert_eq!(c.targets[2].fabric, crate::fabric::Fabric::Qla2xxx);
        assert_eq!(c.portals.len(), 2);
        assert!(c.portals[1].listen.is_ipv6());
        assert!(c.discovery.chap.is_some());
    }

    const FULL: &str = r#"
data_dir: /var/lib/lunar
pool:
  path: /dev/sdb
  chunk_size: 128KiB
portals:
  - listen: 0.0.0.0:3260
    advertise: 203.0.113.7:3260
  - listen: "[::]:3260"
discovery:
  chap: { username: disc, secret: discoverysecret1 }
iscsi:
  cmdsn_window: 32
targets:
  - iqn: iqn.2026-11.io.lunar:db
    alias: database
    initiators: [iqn.1993-08.org.debian:01:abc]
    chap:
      username: db-user
      secret: supersecret123
      mutual: { username: lunar, secret: targetsecret99 }
    luns:
      - id: 0
        volume: db0
        size: 10GiB
        block_size: 4096
        guarantee: full
      - id: 1
        volume: db-logs
        size: 1GiB
        read_only: true
"#;

    #[test]
    fn full_config_parses() {
        let c = Config::from_yaml_str(FULL, "lunar.yaml").unwrap();
        assert_eq!(c.portals.len(), 2);
        assert!(c.portals[1].listen.is_ipv6());
        assert_eq!(
            c.portals[0].advertise.unwrap().to_string(),
            "203.0.113.7:3260"
        );
        let t = &c.targets[0];
        assert!(!t.allow_any);
        assert_eq!(
            t.chap.as_ref().unwrap().mutual.as_ref().unwrap().username,
            "lunar"
        );
        assert_eq!(t.luns[0].block_size, 4096);
        assert_eq!(t.luns[0].guarantee, GuaranteeCfg::Full);
        assert!(t.luns[1].read_only);
        assert_eq!(t.luns[1].block_size, 512);
        assert_eq!(c.iscsi.cmdsn_window, 32);
        assert_eq!(c.first_pool().chunk_size, ByteSize(128 << 10));
    }

    /// `--log-level debug` may print a configuration: its CHAP secrets must not be in it.
    #[test]
    fn debug_of_a_config_shows_no_chap_secret() {
        let c = Config::from_yaml_str(FULL, "lunar.yaml").unwrap();
        let text = format!("{c:?} {c:#?}");
        for s in ["discoverysecret1", "supersecret123", "targetsecret99"] {
            assert!(!text.contains(s), "{s} in {text}");
        }
        assert!(text.contains("<redacted>"), "{text}");
        let chap = c.targets[0].chap.as_ref().unwrap();
        assert_eq!(chap.secret.expose(), "supersecret123");
    }

    fn err(text: &str) -> String {
        Config::from_yaml_str(text, "bad.yaml")
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn unknown_field_names_file_line_and_field() {
        let e = err("portals:\n  - listen: 127.0.0.1:3260\ntargets:\n  - iqn: iqn.2026-11.io.lunar:x\n    lunz: []\n");
        assert!(e.starts_with("bad.yaml:5:"), "{e}");
        assert!(e.contains("unknown field `lunz`"), "{e}");
        assert!(e.contains("targets[0]"), "{e}");
    }

    #[test]
    fn type_error_is_located() {
        let e = err("portals:\n  - listen: not-an-address\n");
        assert!(e.starts_with("bad.yaml:2:"), "{e}");
        assert!(e.contains("portals[0].listen"), "{e}");
    }

    #[test]
    fn bad_iqn_names_field_and_line() {
        let e = err("portals:\n  - listen: 127.0.0.1:3260\ntargets:\n  - iqn: iqn.2026-11.io.lunar:ok\n  - alias: x\n    iqn: iqn.26-1.Bad\n");
        assert!(e.starts_with("bad.yaml:6: targets[1].iqn:"), "{e}");
    }

    #[test]
    fn bad_block_size_and_size() {
        let base = "portals:\n  - listen: 127.0.0.1:3260\ntargets:\n  - iqn: iqn.2026-11.io.lunar:ok\n    luns:\n      - id: 0\n        volume: a\n        size: 1GiB\n";
        let e = err(&format!("{base}        block_size: 1000\n"));
        assert!(
            e.starts_with("bad.yaml:9: targets[0].luns[0].block_size:"),
            "{e}"
        );
        let e = err(&base.replace("1GiB", "1000"));
        assert!(e.contains("targets[0].luns[0].size"), "{e}");
        assert!(e.starts_with("bad.yaml:8:"), "{e}");
    }

    #[test]
    fn duplicate_lun_and_volume() {
        let y = "portals:\n  - listen: 127.0.0.1:3260\ntargets:\n  - iqn: iqn.2026-11.io.lunar:ok\n    luns:\n      - {id: 0, volume: a, size: 1MiB}\n      - {id: 0, volume: b, size: 1MiB}\n";
        assert!(
            err(y).contains("targets[0].luns[1].id: LUN 0 is also"),
            "{}",
            err(y)
        );
        let y = "portals:\n  - listen: 127.0.0.1:3260\ntargets:\n  - iqn: iqn.2026-11.io.lunar:ok\n    luns:\n      - {id: 0, volume: a, size: 1MiB}\n      - {id: 1, volume: a, size: 1MiB}\n";
        assert!(err(y).contains("targets[0].luns[1].volume"), "{}", err(y));
    }

    #[test]
    fn chap_secret_rules() {
        let y = "portals:\n  - listen: 127.0.0.1:3260\ntargets:\n  - iqn: iqn.2026-11.io.lunar:ok\n    chap:\n      username: u\n      secret: short\n";
        let e = err(y);
        assert!(e.starts_with("bad.yaml:7: targets[0].chap.secret:"), "{e}");
        let y = "portals:\n  - listen: 127.0.0.1:3260\ndiscovery:\n  chap:\n    username: u\n    secret: samesecret1234\n    mutual: {username: t, secret: samesecret1234}\n";
        assert!(
            err(y).contains("discovery.chap.mutual.secret"),
            "{}",
            err(y)
        );
    }

    #[test]
    fn acl_conflict_and_names() {
        let y = "portals:\n  - listen: 127.0.0.1:3260\ntargets:\n  - iqn: iqn.2026-11.io.lunar:ok\n    allow_any: true\n    initiators: [iqn.2026-11.io.x:a]\n";
        assert!(err(y).contains("targets[0].initiators"));
        let y = "portals:\n  - listen: 127.0.0.1:3260\ntargets:\n  - iqn: iqn.2026-11.io.lunar:ok\n    initiators:\n      - iqn.2026-11.io.x:a\n      - bogus\n";
        let e = err(y);
        assert!(
            e.starts_with("bad.yaml:7: targets[0].initiators[1]:"),
            "{e}"
        );
    }

    #[test]
    fn tpgt_zero_is_rejected() {
        let e =
            err("portals:\n  - listen: 127.0.0.1:3260\n  - listen: 127.0.0.1:3261\n    tpgt: 0\n");
        assert!(e.starts_with("bad.yaml:4: portals[1].tpgt:"), "{e}");
        assert!(e.contains("between 1 and 65535"), "{e}");
        let ok = "portals:\n  - listen: 127.0.0.1:3260\n  - listen: 127.0.0.1:3261\n    tpgt: 2\n";
        assert_eq!(
            Config::from_yaml_str(ok, "ok.yaml").unwrap().portals[1].tpgt,
            2
        );
    }

    const HA: &str = "portals:\n  - listen: 127.0.0.1:3260\npool:\n  capacity: 1GiB\n  rbd:\n    image: lunar-g1\nha:\n  group: g1\n  gateway: gw1\n  port_group: 1\n  ceph:\n    conf: /tmp/ceph.conf\n    pool: rbd\n  lease: 1500ms\n";

    fn parse_any_build(text: &str, file: &str) -> Result<Config, ConfigError> {
        Config::from_yaml_str_any_build(text, file)
    }

    #[test]
    fn ha_section_parses_with_defaults() {
        let cfg = parse_any_build(HA, "ha.yaml").unwrap();
        let ha = cfg.ha.as_ref().unwrap();
        assert_eq!(
            ha.lease,
            DurationCfg(std::time::Duration::from_millis(1500))
        );
        assert_eq!(ha.ceph.client, "admin");
        assert_eq!(cfg.first_pool().rbd.unwrap().image, "lunar-g1");
        let yaml = cfg.to_yaml().unwrap();
        assert_eq!(parse_any_build(&yaml, "again.yaml").unwrap(), cfg);
        let short = HA.replace(
            "  ceph:\n    conf: /tmp/ceph.conf\n    pool: rbd\n  lease: 1500ms\n",
            "",
        );
        let cfg = parse_any_build(&short, "ha.yaml").unwrap();
        let ha = cfg.ha.unwrap();
        assert_eq!(ha.lease.to_string(), "2s");
        assert_eq!(ha.ceph, CephCfg::default());
    }

    /// A build without the `ceph` feature refuses an HA configuration when it reads the
    /// file (lunard's config load, `lunarctl config check`), naming the line of `ha:`; a
    /// build with it accepts the file.
    #[test]
    fn ha_needs_a_build_with_ceph() {
        let r = Config::from_yaml_str(HA, "ha.yaml");
        if cfg!(feature = "ceph") {
            assert!(r.is_ok(), "{r:?}");
            return;
        }
        let e = r.unwrap_err().to_string();
        assert!(
            e.starts_with("ha.yaml:7: ha: this build of Lunar has no Ceph support"),
            "{e}"
        );
        assert!(e.contains("--features ceph"), "{e}");
        // pool.rbd alone is named when there is no ha: (the schema error comes first in a
        // build with Ceph: pool.rbd needs ha:).
        let no_ha = &HA[..HA.find("ha:").unwrap()];
        let e = Config::from_yaml_str(no_ha, "rbd.yaml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("pool.rbd"), "{e}");
        let cfg = parse_any_build(HA, "ha.yaml").unwrap();
        assert!(cfg.validate().is_err());
    }

    #[test]
    fn ha_errors_name_the_field_and_line() {
        let e = err(&HA.replace("port_group: 1", "port_group: 0"));
        assert!(e.starts_with("bad.yaml:10: ha.port_group:"), "{e}");
        let e = err(&HA.replace("gateway: gw1", "gateway: gw/1"));
        assert!(e.starts_with("bad.yaml:9: ha.gateway:"), "{e}");
        let e = err(&HA.replace("group: g1", "group: \"\""));
        assert!(e.starts_with("bad.yaml:8: ha.group:"), "{e}");
        let e = err(&HA.replace("lease: 1500ms", "lease: 100ms"));
        assert!(e.starts_with("bad.yaml:14: ha.lease:"), "{e}");
        assert!(e.contains("between 500ms and 60s, got 100ms"), "{e}");
        let e = err(&HA.replace("lease: 1500ms", "lease: 3h"));
        assert!(e.contains("invalid duration unit"), "{e}");
        let e = err(&HA.replace("pool: rbd", "pool: rbd\n    client: client.admin"));
        assert!(e.contains("ha.ceph.client"), "{e}");
        let e = err(&HA.replace("image: lunar-g1", "image: a/b"));
        assert!(e.starts_with("bad.yaml:6: pool.rbd.image:"), "{e}");
        let e = err(&HA.replace("  capacity: 1GiB\n", ""));
        assert!(
            e.contains("pool.capacity: is required with pool.rbd"),
            "{e}"
        );
        let e = err(&HA.replace("  rbd:\n    image: lunar-g1\n", ""));
        assert!(
            e.contains("pool.rbd: in an HA group every pool is in an RBD image"),
            "{e}"
        );
        let no_ha = &HA[..HA.find("ha:").unwrap()];
        let e = err(no_ha);
        assert!(
            e.starts_with("bad.yaml:5: pool.rbd: needs an ha: section"),
            "{e}"
        );
        let e = err(&HA.replace("  port_group: 1\n", ""));
        assert!(e.contains("missing field `port_group`"), "{e}");
    }

    /// An HA gateway with a pools: list: two RBD pools, each with the gateway it prefers.
    const HA_TWO: &str = "portals:\n  - listen: 127.0.0.1:3260\npools:\n  - name: fast\n    capacity: 1GiB\n    rbd:\n      image: lunar-fast\n    prefer: gw1\n  - name: bulk\n    capacity: 2GiB\n    rbd:\n      image: lunar-bulk\n    prefer: gw2\nha:\n  group: g1\n  gateway: gw1\n  port_group: 1\n";

    #[test]
    fn an_ha_gateway_serves_several_rbd_pools_with_a_preferred_gateway() {
        let cfg = parse_any_build(HA_TWO, "ha.yaml").unwrap();
        let pools = cfg.pool_cfgs();
        assert_eq!(pools.len(), 2);
        assert_eq!(pools[0].prefer.as_deref(), Some("gw1"));
        assert_eq!(pools[1].prefer.as_deref(), Some("gw2"));
        assert_eq!(pools[1].rbd.as_ref().unwrap().image, "lunar-bulk");
        let yaml = cfg.to_yaml().unwrap();
        assert_eq!(parse_any_build(&yaml, "again.yaml").unwrap(), cfg);
        // prefer is optional.
        parse_any_build(&HA_TWO.replace("    prefer: gw2\n", ""), "ha.yaml").unwrap();
    }

    #[test]
    fn every_pool_of_an_ha_gateway_is_rbd_and_prefer_needs_ha() {
        // A directory pool beside an RBD pool: named, with why.
        let e = parse_any_build(
            &HA_TWO.replace(
                "    rbd:\n      image: lunar-bulk\n",
                "    path: /srv/bulk\n",
            ),
            "bad.yaml",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("bad.yaml:9: pools[1].rbd: in an HA group every pool is in an RBD image"),
            "{e}"
        );
        // Two pools on one image.
        let e = parse_any_build(&HA_TWO.replace("lunar-bulk", "lunar-fast"), "bad.yaml")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("pools[1].rbd.image: image \"lunar-fast\" is also pools[0]'s"),
            "{e}"
        );
        // prefer: a gateway name, and only with ha:.
        let e = parse_any_build(&HA_TWO.replace("prefer: gw2", "prefer: gw/2"), "bad.yaml")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("bad.yaml:13: pools[1].prefer:"), "{e}");
        let local =
            "portals:\n  - listen: 127.0.0.1:3260\npool:\n  capacity: 1GiB\n  prefer: gw1\n";
        let e = parse_any_build(local, "bad.yaml").unwrap_err().to_string();
        assert!(
            e.starts_with("bad.yaml:5: pool.prefer: names the gateway that takes this pool first"),
            "{e}"
        );
    }

    #[test]
    fn no_portals_and_empty_document() {
        assert!(err("targets: []\n").contains("portals"));
        let e = err("");
        assert!(e.starts_with("bad.yaml"), "{e}");
    }

    /// Target and initiator names follow scsi-proto's one rule (RFC 7143 4.2.7), spelled out
    /// in the error with the name.
    #[test]
    fn iscsi_names_follow_the_protocol_rule() {
        let target = |iqn: &str| {
            format!("portals:\n  - listen: 127.0.0.1:3260\ntargets:\n  - iqn: \"{iqn}\"\n")
        };
        for ok in [
            "iqn.2026-11.io.lunar:demo",
            "iqn.1993-08.org.debian:01:6e2d5a9f",
            "eui.02004567A425678D",
            "naa.52004567BA64678D",
        ] {
            Config::from_yaml_str(&target(ok), "ok.yaml").unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for (bad, why) in [
            ("iqn.2026-13.io.lunar", "expected iqn.yyyy-mm"),
            ("iqn.2026-11.io.Lunar", "character 'L' not allowed"),
            ("iqn.2026-11.", "expected iqn.yyyy-mm"),
            ("eui.123", "eui. names need 16 hex digits"),
            ("demo", "iSCSI names start with iqn., eui. or naa."),
            ("", "an iSCSI name is 1 to 223 bytes long"),
        ] {
            let e = err(&target(bad));
            assert!(e.starts_with("bad.yaml:4: targets[0].iqn: "), "{e}");
            assert!(e.contains(&format!("{bad:?}: {why}")), "{e}");
        }
    }

    /// A semantic error is located on its own line however the YAML spells it: the `wwpn`
    /// key, a flow list across lines, a quoted key, a flow mapping. (The hand-written
    /// locator this replaced answered 3, 4 and 2 for the first three.)
    #[test]
    fn errors_are_located_however_the_yaml_is_written() {
        let e = err("portals: [{listen: 127.0.0.1:3260}]\ntargets:\n  - alias: fc\n    fabric: qla2xxx\n    wwpn: \"99:00:00:24:ff:31:4c:48\"\n");
        assert!(e.starts_with("bad.yaml:5: targets[0].iqn:"), "{e}");
        let e = err("portals: [{listen: 127.0.0.1:3260}]\ntargets:\n  - iqn: iqn.2026-11.io.lunar:ok\n    initiators: [iqn.2026-11.io.x:a,\n      bogus]\n");
        assert!(
            e.starts_with("bad.yaml:5: targets[0].initiators[1]:"),
            "{e}"
        );
        let e = err("portals:\n  - listen: 127.0.0.1:3260\n    \"tpgt\": 0\n");
        assert!(e.starts_with("bad.yaml:3: portals[0].tpgt:"), "{e}");
        let e = err("portals: [{listen: 127.0.0.1:3260}]\ntargets:\n  - iqn: iqn.2026-11.io.lunar:ok\n    luns:\n      - {id: 0, volume: a, size: 1MiB}\n      - {id: 1, volume: b,\n         size: 1000}\n");
        assert!(e.starts_with("bad.yaml:7: targets[0].luns[1].size:"), "{e}");
    }

    /// A default-valued field is reported at the section that holds it; a section that is
    /// not in the file at all gets line 0, as before.
    #[test]
    fn errors_in_defaults_point_at_the_enclosing_section() {
        let e = err("portals:\n  - listen: 127.0.0.1:3260\nlimits:\n  max_connections: 8\n");
        assert!(
            e.starts_with("bad.yaml:3: limits.max_connections_per_address:"),
            "{e}"
        );
        assert!(err("targets: []\n").starts_with("bad.yaml:0: portals:"));
    }

    /// What `config export` writes reads back as the same configuration: every field of
    /// every section, defaults left out or not.
    #[test]
    fn export_round_trips() {
        let mut full = Config::from_yaml_str(FULL, "lunar.yaml").unwrap();
        full.iscsi.header_digest = DigestCfg::Required;
        full.limits.admin_idle_timeout_secs = 60;
        full.metrics.enabled = false;
        full.lio.hba = 3;
        let p = full.pool.as_mut().unwrap();
        p.capacity = Some(ByteSize(12345 << 20));
        p.soft_threshold_pct = Some(80);
        full.targets[0].luns[1].size = ByteSize((1 << 30) + 512);
        let example = include_str!("../../../deploy/lunar.example.yaml");
        for cfg in [
            Config::embedded_default(),
            full,
            Config::from_yaml_str(example, "example.yaml").unwrap(),
            Config::local(ByteSize::gib(1)),
        ] {
            let text = cfg.export_yaml().unwrap();
            let back = Config::from_yaml_str(&text, "exported.yaml")
                .unwrap_or_else(|e| panic!("{e}\n{text}"));
            assert_eq!(back, cfg, "{text}");
        }
    }

    /// The export reads like a file written by hand: a header, sizes with units, the name
    /// key that fits the fabric, and sections at their defaults left out.
    #[test]
    fn export_is_readable() {
        let text = Config::embedded_default().export_yaml().unwrap();
        assert!(text.starts_with(EXPORT_HEADER), "{text}");
        for line in [
            "  chunk_size: 64KiB",
            "- iqn: iqn.2026-11.io.lunar:demo",
            "size: 1GiB",
        ] {
            assert!(text.contains(line), "{line:?} in\n{text}");
        }
        for section in [
            "iscsi:",
            "limits:",
            "metrics:",
            "lio:",
            "discovery:",
            "fabric:",
        ] {
            assert!(!text.contains(section), "{section} in\n{text}");
        }
        let example = include_str!("../../../deploy/lunar.example.yaml");
        let text = Config::from_yaml_str(example, "example.yaml")
            .unwrap()
            .to_yaml()
            .unwrap();
        assert!(
            text.contains("\n- wwpn: 21:00:00:24:ff:31:4c:48\n  fabric: qla2xxx\n"),
            "{text}"
        );
    }

    /// The builders make the configurations tests used to write as YAML, and they validate.
    #[test]
    fn builders_make_valid_configs() {
        let cfg = Config::local(ByteSize::gib(8))
            .with_data_dir("/tmp/x")
            .with_target(
                TargetCfg::iscsi("iqn.2026-11.io.lunar:a")
                    .with_initiators(["iqn.2026-11.io.x:host"])
                    .with_chap(
                        ChapCfg::new("user", "secret-secret-1").with_mutual("t", "secret-secret-2"),
                    )
                    .with_lun(LunCfg::new(0, "a0", ByteSize::gib(1)).read_only()),
            );
        assert_eq!(cfg.validate(), Ok(()));
        let text = cfg.to_yaml().unwrap();
        assert_eq!(Config::from_yaml_str(&text, "t.yaml").unwrap(), cfg);
        assert!(!cfg.targets[0].allow_any);
        assert_eq!(cfg.portals[0].listen.port(), 0);
    }

    #[test]
    fn fibre_channel_targets_are_named_by_wwpn() {
        let base = "portals:\n  - listen: 127.0.0.1:3260\ntargets:\n";
        let ok = format!(
            "{base}  - wwpn: \"21:00:00:24:ff:31:4c:48\"\n    fabric: qla2xxx\n    initiators: [naa.21000024ff314c49]\n    luns:\n      - {{id: 0, volume: a, size: 1MiB}}\n"
        );
        let c = Config::from_yaml_str(&ok, "fc.yaml").unwrap();
        assert_eq!(c.targets[0].fabric, crate::fabric::Fabric::Qla2xxx);
        assert_eq!(
            c.lio.configfs,
            std::path::PathBuf::from("/sys/kernel/config")
        );
        // An IQN is not a port name on FC, a WWPN is not an iSCSI name.
        let e = err(&format!(
            "{base}  - iqn: iqn.2026-11.io.lunar:x\n    fabric: qla2xxx\n"
        ));
        assert!(e.contains("targets[0].iqn") && e.contains("WWPN"), "{e}");
        let e = err(&format!(
            "{base}  - wwpn: \"21:00:00:24:ff:31:4c:48\"\n    fabric: qla2xxx\n    initiators: [iqn.2026-11.io.x:a]\n"
        ));
        assert!(e.contains("targets[0].initiators[0]"), "{e}");
        let e = err(&format!(
            "{base}  - wwpn: \"21:00:00:24:ff:31:4c:48\"\n    fabric: qla2xxx\n    chap: {{username: u, secret: secret-secret-1}}\n"
        ));
        assert!(e.contains("targets[0].chap") && e.contains("iSCSI"), "{e}");
        // The same port twice, spelled two ways.
        let e = err(&format!(
            "{base}  - wwpn: \"21:00:00:24:ff:31:4c:48\"\n    fabric: qla2xxx\n  - wwpn: naa.21000024ff314c48\n    fabric: qla2xxx\n"
        ));
        assert!(
            e.contains("targets[1].iqn") && e.contains("also targets[0]"),
            "{e}"
        );
        let e = err(&format!(
            "{base}  - wwpn: naa.5001405000000001\n    fabric: srp\n"
        ));
        assert!(e.contains("fabric"), "{e}");
        let e = err(&format!("{base}lio:\n  max_data_area_mb: 0\n"));
        assert!(e.contains("lio.max_data_area_mb"), "{e}");
    }
}
