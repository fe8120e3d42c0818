//! Semantic checks of a parsed configuration: ranges, names, and rules between fields
//! (unique LUN ids and volumes, sizes that are multiples of the block size, CHAP only on
//! iSCSI, ...). serde has already checked the shape and the types.
//!
//! A problem is reported as (dotted field path, message), e.g.
//! `("targets[0].luns[1].block_size", "must be a power of two ...")`; `locate` finds the
//! path's line in the file.

use super::schema::{ChapCfg, Config};
use crate::secret::Secret;

impl Config {
    /// Semantic checks, and whether this build can run the configuration; returns (field
    /// path, message) of the first problem. What `lunard` and `lunarctl config check` apply.
    pub fn validate(&self) -> Result<(), (String, String)> {
        self.validate_schema()?;
        self.validate_build()
    }

    /// Whether this build has what the configuration needs: an HA gateway (`ha:`, a pool
    /// with `rbd`) needs the `ceph` cargo feature (librados and librbd). Checked here, not
    /// only when lunard starts the gateway, so `lunarctl config check` and lunard's own
    /// config load refuse such a file before anything starts.
    pub fn validate_build(&self) -> Result<(), (String, String)> {
        if cfg!(feature = "ceph") {
            return Ok(());
        }
        let field = if self.ha.is_some() {
            "ha".to_string()
        } else if let Some(i) = self.pool_cfgs().iter().position(|p| p.rbd.is_some()) {
            format!("{}.rbd", self.pool_field(i))
        } else {
            return Ok(());
        };
        Err((
            field,
            "this build of Lunar has no Ceph support (cargo feature `ceph`, which needs \
             librados and librbd), so it cannot be a gateway of an HA group: use a build with \
             `--features ceph`, or remove the ha: section and the pools' rbd"
                .into(),
        ))
    }

    /// Semantic checks of the file alone, whatever this build supports.
    pub fn validate_schema(&self) -> Result<(), (String, String)> {
        self.validate_pools()?;
        if self.portals.is_empty() {
            return Err(("portals".into(), "at least one portal is required".into()));
        }
        for (i, p) in self.portals.iter().enumerate() {
            if p.tpgt == 0 {
                return Err((
                    format!("portals[{i}].tpgt"),
                    "must be between 1 and 65535 (it is also the relative target port \
                     identifier, and relative target port 0 is reserved in SCSI)"
                        .into(),
                ));
            }
            for (j, q) in self.portals.iter().enumerate().take(i) {
                if p.listen == q.listen && p.listen.port() != 0 {
                    return Err((
                        format!("portals[{i}].listen"),
                        format!("{} is also portals[{j}]", p.listen),
                    ));
                }
            }
            if let Some(a) = p.advertise {
                if a.ip().is_unspecified() || a.port() == 0 {
                    return Err((
                        format!("portals[{i}].advertise"),
                        format!("{a} is not a reachable address"),
                    ));
                }
            }
        }
        if let Some(chap) = &self.discovery.chap {
            validate_chap(chap).map_err(|(f, m)| (format!("discovery.chap.{f}"), m))?;
        }
        let t = &self.iscsi;
        if t.cmdsn_window == 0 || t.cmdsn_window > 1024 {
            return Err((
                "iscsi.cmdsn_window".into(),
                "must be between 1 and 1024".into(),
            ));
        }
        if !(512..=16_777_215).contains(&t.max_recv_data_segment_length) {
            return Err((
                "iscsi.max_recv_data_segment_length".into(),
                "must be between 512 and 16777215".into(),
            ));
        }
        if !(512..=16_777_215).contains(&t.max_burst_length) {
            return Err((
                "iscsi.max_burst_length".into(),
                "must be between 512 and 16777215".into(),
            ));
        }
        if !(512..=t.max_burst_length).contains(&t.first_burst_length) {
            return Err((
                "iscsi.first_burst_length".into(),
                "must be between 512 and max_burst_length".into(),
            ));
        }
        if t.max_outstanding_r2t == 0 || t.max_outstanding_r2t > 65535 {
            return Err((
                "iscsi.max_outstanding_r2t".into(),
                "must be between 1 and 65535".into(),
            ));
        }
        if t.nop_interval_secs > 0 && t.nop_timeout_secs == 0 {
            return Err((
                "iscsi.nop_timeout_secs".into(),
                "must be positive when nop_interval_secs is set".into(),
            ));
        }
        if t.login_timeout_secs == 0 {
            return Err(("iscsi.login_timeout_secs".into(), "must be positive".into()));
        }
        self.limits
            .validate()
            .map_err(|(f, m)| (format!("limits.{f}"), m))?;
        if self.lio.max_data_area_mb == 0 || self.lio.max_data_area_mb > 2048 {
            return Err((
                "lio.max_data_area_mb".into(),
                "must be between 1 and 2048".into(),
            ));
        }
        self.validate_ha()?;
        if let Some(r) = &self.replication {
            r.validate()
                .map_err(|(f, m)| (format!("replication.{f}"), m))?;
            if self.ha.is_some() {
                return Err((
                    "replication".into(),
                    "replication from an HA group is not supported yet: the relationship \
                     tasks would have to follow the pool's owner"
                        .into(),
                ));
            }
        }
        self.validate_targets()
    }

    /// `ha` and the pools' `rbd`: with `ha` every pool is in an RBD image (with the
    /// capacity the first owner creates it with); without it none is.
    fn validate_ha(&self) -> Result<(), (String, String)> {
        if let Some(ha) = &self.ha {
            ha.validate().map_err(|(f, m)| (format!("ha.{f}"), m))?;
        }
        for (i, p) in self.pool_cfgs().iter().enumerate() {
            let f = self.pool_field(i);
            if let Some(g) = &p.prefer {
                if self.ha.is_none() {
                    return Err((
                        format!("{f}.prefer"),
                        "names the gateway that takes this pool first in an HA group: it \
                         needs an ha: section"
                            .into(),
                    ));
                }
                super::ha::check_name(g).map_err(|m| (format!("{f}.prefer"), m))?;
            }
            match (&self.ha, &p.rbd) {
                (Some(_), Some(_)) if p.capacity.is_none() => {
                    return Err((
                        format!("{f}.capacity"),
                        format!(
                            "is required with {f}.rbd: it is the size of the RBD image the \
                             first owner creates"
                        ),
                    ));
                }
                (Some(_), None) => {
                    return Err((
                        format!("{f}.rbd"),
                        format!(
                            "in an HA group every pool is in an RBD image (each pool has its \
                             own lease and owner, and any gateway must be able to open it): \
                             set {f}.rbd.image"
                        ),
                    ));
                }
                (None, Some(_)) => {
                    return Err((
                        format!("{f}.rbd"),
                        "needs an ha: section (the Ceph connection and the lease that decides \
                         which gateway opens the image)"
                            .into(),
                    ));
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Names, ACLs, CHAP and LUNs of every target.
    fn validate_targets(&self) -> Result<(), (String, String)> {
        let mut volumes: Vec<(&str, String)> = Vec::new();
        for (i, tgt) in self.targets.iter().enumerate() {
            let f = format!("targets[{i}]");
            let fab = tgt.fabric;
            fab.canonical_name(&tgt.iqn)
                .map_err(|m| (format!("{f}.iqn"), m))?;
            for (j, other) in self.targets.iter().enumerate().take(i) {
                if other.fabric == fab && fab.same_name(&other.iqn, &tgt.iqn) {
                    return Err((
                        format!("{f}.iqn"),
                        format!("{} is also targets[{j}]", tgt.iqn),
                    ));
                }
            }
            if let Some(a) = &tgt.alias {
                if a.len() > 255 || a.chars().any(|c| c.is_control()) {
                    return Err((
                        format!("{f}.alias"),
                        "must be at most 255 printable characters".into(),
                    ));
                }
            }
            for (k, ini) in tgt.initiators.iter().enumerate() {
                fab.canonical_name(ini)
                    .map_err(|m| (format!("{f}.initiators[{k}]"), m))?;
            }
            if fab.is_lio() && tgt.chap.is_some() {
                return Err((
                    format!("{f}.chap"),
                    format!("CHAP is an iSCSI login feature; a {fab} target cannot use it"),
                ));
            }
            if tgt.allow_any && !tgt.initiators.is_empty() {
                return Err((
                    format!("{f}.initiators"),
                    "cannot be combined with allow_any: true".into(),
                ));
            }
            if let Some(chap) = &tgt.chap {
                validate_chap(chap).map_err(|(x, m)| (format!("{f}.chap.{x}"), m))?;
            }
            for (k, lun) in tgt.luns.iter().enumerate() {
                let lf = format!("{f}.luns[{k}]");
                if lun.id > 16383 {
                    return Err((format!("{lf}.id"), "must be between 0 and 16383".into()));
                }
                if let Some((m, _)) = tgt
                    .luns
                    .iter()
                    .enumerate()
                    .take(k)
                    .find(|(_, o)| o.id == lun.id)
                {
                    return Err((
                        format!("{lf}.id"),
                        format!("LUN {} is also {f}.luns[{m}]", lun.id),
                    ));
                }
                validate_volume_name(&lun.volume).map_err(|m| (format!("{lf}.volume"), m))?;
                if let Some((_, prev)) = volumes.iter().find(|(v, _)| *v == lun.volume) {
                    return Err((
                        format!("{lf}.volume"),
                        format!("volume {:?} is already exported as {prev}", lun.volume),
                    ));
                }
                volumes.push((&lun.volume, lf.clone()));
                let bs = lun.block_size;
                if !bs.is_power_of_two() || !(512..=65536).contains(&bs) {
                    return Err((
                        format!("{lf}.block_size"),
                        format!("must be a power of two between 512 and 65536, got {bs}"),
                    ));
                }
                if lun.size.0 == 0 || lun.size.0 % u64::from(bs) != 0 {
                    return Err((
                        format!("{lf}.size"),
                        format!(
                            "must be a positive multiple of block_size ({bs}), got {}",
                            lun.size
                        ),
                    ));
                }
            }
        }
        Ok(())
    }
}

fn validate_chap(c: &ChapCfg) -> Result<(), (String, String)> {
    check_chap_name(&c.username).map_err(|m| ("username".to_string(), m))?;
    check_chap_secret(&c.secret).map_err(|m| ("secret".to_string(), m))?;
    if let Some(m) = &c.mutual {
        check_chap_name(&m.username).map_err(|e| ("mutual.username".to_string(), e))?;
        check_chap_secret(&m.secret).map_err(|e| ("mutual.secret".to_string(), e))?;
        if m.secret == c.secret {
            return Err((
                "mutual.secret".into(),
                "must differ from the initiator's secret (RFC 7143 9.2.1)".into(),
            ));
        }
    }
    Ok(())
}

fn check_chap_name(n: &str) -> Result<(), String> {
    if n.is_empty() || n.len() > 255 || n.chars().any(|c| c.is_control()) {
        return Err("must be 1 to 255 printable characters".into());
    }
    Ok(())
}

fn check_chap_secret(s: &Secret) -> Result<(), String> {
    if s.len() < 12 || s.len() > 255 {
        return Err(format!("must be 12 to 255 bytes long, got {}", s.len()));
    }
    Ok(())
}

/// Volume names: what storage-core accepts, checked early for a clear error.
fn validate_volume_name(n: &str) -> Result<(), String> {
    if n.is_empty() || n.len() > 128 {
        return Err("must be 1 to 128 characters".into());
    }
    if !n
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        || n.starts_with('.')
    {
        return Err(format!(
            "{n:?}: use letters, digits, '-', '_' and '.' (not leading)"
        ));
    }
    Ok(())
}
