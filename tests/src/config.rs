//! `lunard` configurations for the end-to-end tests (ACL, CHAP and read-only scenarios),
//! built from the daemon's own configuration types, so they cannot drift from the format
//! lunard parses. The data dir and portal come from the `--data-dir` / `--portal` flags
//! the harness passes.

pub use target_daemon::config::{
    ByteSize, ChapCfg, Config, DigestCfg, LunCfg, PortalCfg, TargetCfg,
};

/// `target` alone in an 8 GiB pool.
pub fn with_target(target: TargetCfg) -> Config {
    Config::local(ByteSize::gib(8)).with_target(target)
}

/// An iSCSI target `iqn` open to any initiator, with a 1 GiB thin LUN 0 named `lun0`.
pub fn open_target(iqn: &str) -> TargetCfg {
    TargetCfg::iscsi(iqn).with_lun(LunCfg::new(0, "lun0", ByteSize::gib(1)))
}

/// `cfg` listening on `portals` instead of its loopback portal (start lunard with
/// `LunardOptions::portals` 0, so no `--portal` flag replaces them).
pub fn with_portals(mut cfg: Config, portals: Vec<PortalCfg>) -> Config {
    cfg.portals = portals;
    cfg
}

/// The YAML text of `cfg`, for `LunardOptions::config_yaml`.
pub fn yaml(cfg: &Config) -> String {
    cfg.to_yaml()
        .unwrap_or_else(|e| panic!("test configuration: {e}"))
}
