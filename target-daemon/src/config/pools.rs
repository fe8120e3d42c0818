//! The pools a lunard serves: the `pools:` list, or the `pool:` shorthand for a list of
//! one, and the checks between them (names, paths, images, the LUNs that name a pool).
//!
//! Everything else reads the pools through [`Config::pool_cfgs`], which gives every pool
//! its name, so nothing downstream cares which of the two spellings the file used.

use std::path::PathBuf;

use super::schema::{Config, PoolCfg};

/// Name of the pool the `pool:` shorthand (or no pool section at all) gives.
pub const DEFAULT_POOL_NAME: &str = "default";

/// Longest pool name.
pub const MAX_POOL_NAME: usize = 32;

/// Checks a pool name: `[a-z0-9][a-z0-9_-]{0,31}` (short, and safe in a file name, a
/// RADOS object name and a Prometheus label).
pub fn check_pool_name(n: &str) -> Result<(), String> {
    let ok_first = n
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    let ok_rest = n
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    if !ok_first || !ok_rest || n.len() > MAX_POOL_NAME {
        return Err(format!(
            "{n:?}: a pool name is 1 to {MAX_POOL_NAME} characters of a-z, 0-9, '_' and '-', \
             starting with a letter or digit"
        ));
    }
    Ok(())
}

impl Config {
    /// The pools lunard serves, in the order the file gives them, each with its name set:
    /// the `pools:` list, else the `pool:` shorthand (named `default` unless it has a
    /// name), else one pool at its defaults. Never empty on a validated configuration.
    pub fn pool_cfgs(&self) -> Vec<PoolCfg> {
        if !self.pools.is_empty() {
            return self.pools.clone();
        }
        let mut p = self.pool.clone().unwrap_or_default();
        p.name.get_or_insert_with(|| DEFAULT_POOL_NAME.to_string());
        vec![p]
    }

    /// The first pool: where LUNs that name no pool live (and the one pool of a lunard
    /// that serves one).
    pub fn first_pool(&self) -> PoolCfg {
        self.pool_cfgs().into_iter().next().unwrap_or_default()
    }

    /// The name of the first pool.
    pub fn default_pool_name(&self) -> String {
        self.first_pool()
            .name
            .unwrap_or_else(|| DEFAULT_POOL_NAME.to_string())
    }

    /// Where a file/block-device pool lives: its `path`, relative to `data_dir`.
    pub fn pool_path(&self, p: &PoolCfg) -> PathBuf {
        if p.path.is_absolute() {
            p.path.clone()
        } else {
            self.data_dir.join(&p.path)
        }
    }

    /// The field path of pool `i` of [`Config::pool_cfgs`] in the file.
    pub(super) fn pool_field(&self, i: usize) -> String {
        if self.pools.is_empty() {
            "pool".into()
        } else {
            format!("pools[{i}]")
        }
    }

    /// `pool` and `pools` not both; every pool's own ranges; names unique and well formed;
    /// no two pools on one path or one RBD image; every LUN's `pool` known.
    pub(super) fn validate_pools(&self) -> Result<(), (String, String)> {
        if self.pool.is_some() && !self.pools.is_empty() {
            return Err((
                "pools".into(),
                "cannot be combined with pool: (the shorthand for a single pool); move the \
                 pool: section into the pools: list, with a name"
                    .into(),
            ));
        }
        let pools = self.pool_cfgs();
        for (i, p) in pools.iter().enumerate() {
            let f = self.pool_field(i);
            match &p.name {
                Some(n) => check_pool_name(n).map_err(|m| (format!("{f}.name"), m))?,
                None => {
                    return Err((
                        format!("{f}.name"),
                        "is required for every pool of a pools: list".into(),
                    ))
                }
            }
            validate_one(p).map_err(|(x, m)| (format!("{f}.{x}"), m))?;
            for (j, q) in pools.iter().enumerate().take(i) {
                let g = self.pool_field(j);
                if p.name == q.name {
                    return Err((
                        format!("{f}.name"),
                        format!("pool {:?} is also {g}", p.name.as_deref().unwrap_or("")),
                    ));
                }
                match (&p.rbd, &q.rbd) {
                    (Some(a), Some(b)) if a.image == b.image => {
                        return Err((
                            format!("{f}.rbd.image"),
                            format!("image {:?} is also {g}'s", a.image),
                        ))
                    }
                    (None, None) if self.pool_path(p) == self.pool_path(q) => {
                        return Err((
                            format!("{f}.path"),
                            format!(
                                "{} is also {g}'s: give every pool its own path",
                                self.pool_path(p).display()
                            ),
                        ))
                    }
                    _ => {}
                }
            }
        }
        for (ti, t) in self.targets.iter().enumerate() {
            for (li, l) in t.luns.iter().enumerate() {
                if let Some(name) = &l.pool {
                    if !pools.iter().any(|p| p.name.as_ref() == Some(name)) {
                        let known: Vec<&str> =
                            pools.iter().filter_map(|p| p.name.as_deref()).collect();
                        return Err((
                            format!("targets[{ti}].luns[{li}].pool"),
                            format!("no pool is named {name:?} (pools: {})", known.join(", ")),
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}

/// One pool's own ranges (field names relative to the pool).
fn validate_one(p: &PoolCfg) -> Result<(), (String, String)> {
    let cs = p.chunk_size.0;
    if !cs.is_power_of_two() || !(4096..=1 << 20).contains(&cs) {
        return Err((
            "chunk_size".into(),
            format!(
                "must be a power of two between 4KiB and 1MiB, got {}",
                p.chunk_size
            ),
        ));
    }
    if let Some(c) = p.capacity {
        if c.0 < cs * 16 {
            return Err(("capacity".into(), format!("{c} is too small for a pool")));
        }
    }
    if let Some(t) = p.soft_threshold_pct {
        if t == 0 || t > 100 {
            return Err((
                "soft_threshold_pct".into(),
                "must be between 1 and 100".into(),
            ));
        }
    }
    if let Some(rbd) = &p.rbd {
        rbd.validate().map_err(|(f, m)| (format!("rbd.{f}"), m))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ByteSize, LunCfg, TargetCfg};

    fn err(text: &str) -> String {
        Config::from_yaml_str(text, "bad.yaml")
            .unwrap_err()
            .to_string()
    }

    const TWO: &str = "portals:\n  - listen: 127.0.0.1:3260\npools:\n  - name: fast\n    path: /srv/fast\n    capacity: 1GiB\n  - name: bulk\n    path: /srv/bulk\n    chunk_size: 128KiB\n    soft_threshold_pct: 80\ntargets:\n  - iqn: iqn.2026-11.io.lunar:t\n    luns:\n      - {id: 0, volume: a, size: 1MiB}\n      - {id: 1, volume: b, size: 1MiB, pool: bulk}\n";

    #[test]
    fn a_pools_list_parses_and_names_every_pool() {
        let c = Config::from_yaml_str(TWO, "two.yaml").unwrap();
        let names: Vec<_> = c.pool_cfgs().into_iter().map(|p| p.name.unwrap()).collect();
        assert_eq!(names, ["fast", "bulk"]);
        assert_eq!(c.default_pool_name(), "fast");
        assert_eq!(c.pool_cfgs()[1].chunk_size, ByteSize::kib(128));
        assert_eq!(c.targets[0].luns[1].pool.as_deref(), Some("bulk"));
        assert_eq!(c.targets[0].luns[0].pool, None);
        let yaml = c.to_yaml().unwrap();
        assert_eq!(Config::from_yaml_str(&yaml, "again.yaml").unwrap(), c);
    }

    #[test]
    fn the_pool_shorthand_is_one_pool_named_default() {
        let c = Config::embedded_default();
        let pools = c.pool_cfgs();
        assert_eq!(pools.len(), 1);
        assert_eq!(pools[0].name.as_deref(), Some(DEFAULT_POOL_NAME));
        let c = Config::from_yaml_str(
            "portals: [{listen: 127.0.0.1:3260}]\npool:\n  name: tank\n",
            "t.yaml",
        )
        .unwrap();
        assert_eq!(c.default_pool_name(), "tank");
        // No pool section at all: one pool at its defaults.
        let c = Config::from_yaml_str("portals: [{listen: 127.0.0.1:3260}]\n", "t.yaml").unwrap();
        assert_eq!(c.pool_cfgs()[0].path, PathBuf::from("pool"));
        assert_eq!(c.default_pool_name(), DEFAULT_POOL_NAME);
    }

    #[test]
    fn pool_and_pools_together_is_an_error() {
        let e = err(&TWO.replace("pools:\n", "pool:\n  path: x\npools:\n"));
        assert!(e.contains("pools: cannot be combined with pool:"), "{e}");
    }

    #[test]
    fn bad_duplicate_and_missing_names() {
        let e = err(&TWO.replace("name: bulk", "name: Bulk"));
        assert!(e.starts_with("bad.yaml:7: pools[1].name:"), "{e}");
        assert!(e.contains("\"Bulk\": a pool name is"), "{e}");
        let e = err(&TWO.replace("name: bulk", "name: fast"));
        assert!(
            e.starts_with("bad.yaml:7: pools[1].name: pool \"fast\" is also pools[0]"),
            "{e}"
        );
        let e = err(&TWO.replace(
            "  - name: bulk\n    path: /srv/bulk\n",
            "  - path: /srv/bulk\n",
        ));
        assert!(e.contains("pools[1].name: is required"), "{e}");
        let long = "a".repeat(33);
        assert!(err(&TWO.replace("name: bulk", &format!("name: {long}"))).contains("pools[1].name"));
        assert!(err(&TWO.replace("name: bulk", "name: _x")).contains("pools[1].name"));
        for ok in ["a", "0", "a_b-c9", &"z".repeat(32)] {
            assert_eq!(check_pool_name(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn two_pools_on_one_path_or_image() {
        let e = err(&TWO.replace("path: /srv/bulk", "path: /srv/fast"));
        assert!(
            e.starts_with("bad.yaml:8: pools[1].path: /srv/fast is also pools[0]'s"),
            "{e}"
        );
        // Relative paths are compared under data_dir.
        let e = err(&TWO
            .replace("path: /srv/fast", "path: p")
            .replace("path: /srv/bulk", "path: /d/p")
            .replace("portals:", "data_dir: /d\nportals:"));
        assert!(e.contains("pools[1].path"), "{e}");
    }

    #[test]
    fn a_lun_naming_an_unknown_pool() {
        let e = err(&TWO.replace("pool: bulk", "pool: nope"));
        assert!(
            e.starts_with("bad.yaml:15: targets[0].luns[1].pool: no pool is named \"nope\" (pools: fast, bulk)"),
            "{e}"
        );
    }

    #[test]
    fn per_pool_ranges_name_the_pool() {
        let e = err(&TWO.replace("chunk_size: 128KiB", "chunk_size: 3KiB"));
        assert!(e.starts_with("bad.yaml:9: pools[1].chunk_size:"), "{e}");
        let e = err(&TWO.replace("soft_threshold_pct: 80", "soft_threshold_pct: 0"));
        assert!(e.contains("pools[1].soft_threshold_pct"), "{e}");
        let e = err("portals: [{listen: 127.0.0.1:3260}]\npool:\n  chunk_size: 3KiB\n");
        assert!(e.contains("pool.chunk_size"), "{e}");
    }

    #[test]
    fn builder_pools_validate() {
        let c = Config::local(ByteSize::gib(1))
            .with_pools(&[("a", ByteSize::gib(1)), ("b", ByteSize::gib(2))])
            .with_target(
                TargetCfg::iscsi("iqn.2026-11.io.lunar:t")
                    .with_lun(LunCfg::new(0, "x", ByteSize::mib(1)).in_pool("b")),
            );
        assert_eq!(c.validate(), Ok(()));
        assert!(c.pool.is_none());
        assert_eq!(c.pool_cfgs()[1].capacity, Some(ByteSize::gib(2)));
    }
}
