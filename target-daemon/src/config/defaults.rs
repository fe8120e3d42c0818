//! The configuration `lunard` runs with when it is given none.

use super::schema::Config;

/// The configuration used when `lunard` is started without `--config` (kept as text: it is
/// what docs/configuration.md describes and what a first-time user would write).
pub const DEFAULT_CONFIG_YAML: &str = r#"
data_dir: ./lunar-data
pool:
  path: pool
  chunk_size: 64KiB
  capacity: 16GiB
portals:
  - listen: 127.0.0.1:3260
targets:
  - iqn: iqn.2026-11.io.lunar:demo
    alias: demo
    allow_any: true
    luns:
      - id: 0
        volume: demo
        size: 1GiB
        block_size: 512
        guarantee: none
"#;

impl Config {
    /// The embedded default configuration ([`DEFAULT_CONFIG_YAML`]).
    pub fn embedded_default() -> Config {
        // The embedded text is a compile-time constant covered by a unit test.
        match Config::from_yaml_str(DEFAULT_CONFIG_YAML, "<embedded default>") {
            Ok(c) => c,
            Err(e) => panic!("embedded default config is invalid: {e}"),
        }
    }
}
