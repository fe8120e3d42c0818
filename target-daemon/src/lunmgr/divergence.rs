//! YAML edits the saved state overrides.
//!
//! ADR 0003: the YAML seeds a new data directory; afterwards `state.json` is the truth, so a
//! YAML edit to a target or LUN the state already knows (ACL, CHAP, read-only) has no effect.
//! That is by design, but silently ignoring an edit surprises the admin who made it: at every
//! start lunard logs one warning per such field, naming it, saying the state wins and which
//! `lunarctl` command applies the YAML's value at run time. Secrets are never logged.

use super::state::{ChapRecord, State};
use crate::config::Config;

/// One YAML setting the saved state overrides.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Divergence {
    /// Dotted path of the YAML field, e.g. `targets[0].initiators`.
    pub field: String,
    /// What differs and the `lunarctl` commands that apply the YAML's value.
    pub detail: String,
}

impl std::fmt::Display for Divergence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: the configuration differs from the saved state, which wins (ADR 0003): {}",
            self.field, self.detail
        )
    }
}

/// Every setting of a target or LUN that both the YAML and the saved state describe, where
/// they disagree. Objects only the YAML names are not divergences: they are added.
pub fn config_divergences(st: &State, config: &Config) -> Vec<Divergence> {
    let mut out = Vec::new();
    for (ti, t) in config.targets.iter().enumerate() {
        // The state stores names in the fabric's canonical spelling (a WWPN may be written
        // `naa.` or with colons); compare in that spelling, as the manager does.
        let fabric = t.fabric;
        let canon = |n: &String| fabric.canonical_name(n).unwrap_or_else(|_| n.clone());
        let name = canon(&t.iqn);
        let Some(rec) = st.targets.get(&name) else {
            continue;
        };
        let iqn = &name;
        let yaml_initiators: Vec<String> = t.initiators.iter().map(canon).collect();
        if t.allow_any != rec.allow_any {
            let cmd = if t.allow_any { "add" } else { "remove" };
            out.push(Divergence {
                field: format!("targets[{ti}].allow_any"),
                detail: format!(
                    "YAML {}, state {}; apply with `lunarctl acl {cmd} {iqn} '*'`",
                    t.allow_any, rec.allow_any
                ),
            });
        }
        let has = |list: &[String], i: &String| list.iter().any(|x| fabric.same_name(x, i));
        let added: Vec<&String> = yaml_initiators
            .iter()
            .filter(|i| !has(&rec.initiators, i))
            .collect();
        let removed: Vec<&String> = rec
            .initiators
            .iter()
            .filter(|i| !has(&yaml_initiators, i))
            .collect();
        if !added.is_empty() || !removed.is_empty() {
            let cmds: Vec<String> = added
                .iter()
                .map(|i| format!("`lunarctl acl add {iqn} {i}`"))
                .chain(
                    removed
                        .iter()
                        .map(|i| format!("`lunarctl acl remove {iqn} {i}`")),
                )
                .collect();
            out.push(Divergence {
                field: format!("targets[{ti}].initiators"),
                detail: format!(
                    "YAML {:?}, state {:?}; apply with {}",
                    yaml_initiators,
                    rec.initiators,
                    cmds.join(", ")
                ),
            });
        }
        let yaml_chap = t.chap.as_ref().map(ChapRecord::from_cfg);
        if yaml_chap != rec.chap {
            let describe = |c: &Option<ChapRecord>| match c {
                None => "no CHAP".to_string(),
                Some(c) => format!(
                    "CHAP user {:?}{}",
                    c.username,
                    if c.mutual_username.is_some() {
                        " with mutual CHAP"
                    } else {
                        ""
                    }
                ),
            };
            let apply = match &yaml_chap {
                None => format!("`lunarctl chap clear {iqn}`"),
                Some(c) => format!(
                    "`lunarctl chap set {iqn} --user {} --secret-file SECRET_FILE{}`",
                    c.username,
                    c.mutual_username
                        .as_ref()
                        .map_or(String::new(), |m| format!(
                            " --mutual-user {m} --mutual-secret-file MUTUAL_SECRET_FILE"
                        ))
                ),
            };
            // Same user but another secret shows as the same description: say so.
            let what = if describe(&yaml_chap) == describe(&rec.chap) {
                "the secrets differ".to_string()
            } else {
                format!(
                    "YAML {}, state {}",
                    describe(&yaml_chap),
                    describe(&rec.chap)
                )
            };
            out.push(Divergence {
                field: format!("targets[{ti}].chap"),
                detail: format!("{what}; apply with {apply}"),
            });
        }
        for (li, l) in t.luns.iter().enumerate() {
            let Some(lun) = st.luns.get(&l.volume) else {
                continue;
            };
            if l.read_only != lun.read_only {
                out.push(Divergence {
                    field: format!("targets[{ti}].luns[{li}].read_only"),
                    detail: format!(
                        "YAML {}, state {} for LUN {:?}; apply with \
                         `lunarctl lun set {} --read-only {}`",
                        l.read_only, lun.read_only, l.volume, l.volume, l.read_only
                    ),
                });
            }
        }
    }
    out
}

/// Logs [`config_divergences`] as warnings.
pub fn warn_divergences(st: &State, config: &Config) {
    for d in config_divergences(st, config) {
        tracing::warn!("{d}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ByteSize, ChapCfg, LunCfg, PortalCfg, TargetCfg};
    use crate::fabric::Fabric;
    use crate::lunmgr::state::{LunRecord, LunStatus, TargetRecord};
    use std::collections::BTreeMap;
    use std::net::SocketAddr;

    const IQN: &str = "iqn.2026-11.io.lunar:db";

    /// `target` with LUN 0 (the 64 MiB volume `db`), alone in a configuration.
    fn config(target: TargetCfg, read_only: bool) -> Config {
        let mut lun = LunCfg::new(0, "db", ByteSize::mib(64));
        lun.read_only = read_only;
        let mut cfg = Config::local(ByteSize::gib(1)).with_target(target.with_lun(lun));
        cfg.portals = vec![PortalCfg::new(SocketAddr::from(([127, 0, 0, 1], 3260)))];
        assert_eq!(cfg.validate(), Ok(()));
        cfg
    }

    fn saved(cfg: &Config) -> State {
        // The state as the first start seeds it from `cfg`.
        let mut st = State::default();
        for t in &cfg.targets {
            st.targets.insert(
                t.iqn.clone(),
                TargetRecord {
                    iqn: t.iqn.clone(),
                    alias: t.alias.clone(),
                    allow_any: t.allow_any,
                    initiators: t.initiators.clone(),
                    chap: t.chap.as_ref().map(ChapRecord::from_cfg),
                    luns: BTreeMap::from([(0, "db".to_string())]),
                    fabric: t.fabric,
                },
            );
            for l in &t.luns {
                st.luns.insert(
                    l.volume.clone(),
                    LunRecord {
                        name: l.volume.clone(),
                        identity: uuid::Uuid::nil(),
                        read_only: l.read_only,
                        status: LunStatus::Online,
                        origin: None,
                        clone_mode: None,
                        created_unix: 0,
                        pool: String::new(),
                        geometry: None,
                    },
                );
            }
        }
        st
    }

    const WEB1: &str = "iqn.1993-08.org.debian:01:web1";

    /// The target [`IQN`] open to [`WEB1`] only.
    fn acl() -> TargetCfg {
        TargetCfg::iscsi(IQN).with_initiators([WEB1])
    }

    /// The target [`IQN`], neither open to any initiator nor with an ACL.
    fn closed() -> TargetCfg {
        let mut t = TargetCfg::iscsi(IQN);
        t.allow_any = false;
        t
    }

    fn chap() -> ChapCfg {
        ChapCfg::new("db-host", "db-host-secret-1")
    }

    #[test]
    fn unchanged_yaml_has_no_divergence() {
        let c = config(acl().with_chap(chap()), false);
        assert!(config_divergences(&saved(&c), &c).is_empty());
    }

    /// The state holds FC names in colon form; a configuration that spells them `naa.`
    /// describes the same target and initiators (no false warning, and a real edit is still
    /// found).
    #[test]
    fn fc_names_compare_in_any_spelling() {
        let fc = |initiator: &str| {
            let mut cfg = Config::local(ByteSize::gib(1)).with_target(
                TargetCfg::lio(Fabric::Qla2xxx, "naa.21000024ff314c48")
                    .with_initiators([initiator]),
            );
            if let Some(p) = cfg.pool.as_mut() {
                p.capacity = None;
            }
            cfg.portals = vec![PortalCfg::new(SocketAddr::from(([127, 0, 0, 1], 3260)))];
            assert_eq!(cfg.validate(), Ok(()));
            cfg
        };
        let c = fc("naa.21000024ff314c49");
        let mut st = State::default();
        st.targets.insert(
            "21:00:00:24:ff:31:4c:48".into(),
            TargetRecord {
                iqn: "21:00:00:24:ff:31:4c:48".into(),
                alias: None,
                allow_any: false,
                initiators: vec!["21:00:00:24:ff:31:4c:49".into()],
                chap: None,
                luns: BTreeMap::new(),
                fabric: crate::fabric::Fabric::Qla2xxx,
            },
        );
        assert!(config_divergences(&st, &c).is_empty());
        let c = fc("naa.21000024ff314c4a");
        let d = config_divergences(&st, &c);
        assert_eq!(d.len(), 1, "{d:?}");
        assert!(
            d[0].detail
                .contains("acl add 21:00:00:24:ff:31:4c:48 21:00:00:24:ff:31:4c:4a"),
            "{d:?}"
        );
    }

    #[test]
    fn new_targets_are_not_divergences() {
        let c = config(acl(), false);
        assert!(config_divergences(&State::default(), &c).is_empty());
    }

    #[test]
    fn acl_chap_and_read_only_edits_are_each_reported() {
        let before = config(acl(), false);
        let st = saved(&before);
        // The admin adds an initiator, turns on CHAP and makes the LUN read-only in the YAML.
        let after = config(
            TargetCfg::iscsi(IQN)
                .with_initiators([WEB1, "iqn.1993-08.org.debian:01:web2"])
                .with_chap(chap()),
            true,
        );
        let d = config_divergences(&st, &after);
        let fields: Vec<&str> = d.iter().map(|d| d.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "targets[0].initiators",
                "targets[0].chap",
                "targets[0].luns[0].read_only"
            ]
        );
        let text: Vec<String> = d.iter().map(|d| d.to_string()).collect();
        assert!(text.iter().all(|t| t.contains("saved state, which wins")));
        assert!(text[0].contains(&format!(
            "`lunarctl acl add {IQN} iqn.1993-08.org.debian:01:web2`"
        )));
        assert!(text[1].contains(&format!(
            "`lunarctl chap set {IQN} --user db-host --secret-file SECRET_FILE`"
        )));
        assert!(text[2].contains("`lunarctl lun set db --read-only true`"));
        assert!(
            !text.iter().any(|t| t.contains("db-host-secret-1")),
            "secrets must never be logged: {text:?}"
        );
    }

    #[test]
    fn removals_and_allow_any_are_reported() {
        let before = config(acl().with_chap(chap()), true);
        let st = saved(&before);
        let after = config(TargetCfg::iscsi(IQN), false);
        let text: Vec<String> = config_divergences(&st, &after)
            .iter()
            .map(|d| d.to_string())
            .collect();
        assert_eq!(text.len(), 4, "{text:#?}");
        assert!(text[0].starts_with("targets[0].allow_any:"));
        assert!(text[0].contains(&format!("`lunarctl acl add {IQN} '*'`")));
        assert!(text[1].contains(&format!(
            "`lunarctl acl remove {IQN} iqn.1993-08.org.debian:01:web1`"
        )));
        assert!(text[2].contains(&format!("`lunarctl chap clear {IQN}`")));
        assert!(text[3].contains("`lunarctl lun set db --read-only false`"));
    }

    #[test]
    fn a_changed_secret_alone_is_reported_without_the_secret() {
        let before = config(closed().with_chap(chap()), false);
        let st = saved(&before);
        let after = config(
            closed().with_chap(ChapCfg::new("db-host", "db-host-secret-2")),
            false,
        );
        let d = config_divergences(&st, &after);
        assert_eq!(d.len(), 1);
        assert!(d[0].detail.starts_with("the secrets differ"), "{}", d[0]);
        assert!(!d[0].to_string().contains("db-host-secret"));
    }
}
