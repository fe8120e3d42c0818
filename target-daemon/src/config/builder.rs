//! Building a configuration from its types, for tests and tools that start lunard: the
//! same structs a file is read into, so what they build cannot drift from the format.
//! Use the value directly (`Daemon::start_with`) or write it with [`Config::to_yaml`] for
//! a `lunard --config` process.
//!
//! ```
//! use target_daemon::config::{ByteSize, Config, LunCfg, TargetCfg};
//! let cfg = Config::local(ByteSize::gib(8)).with_target(
//!     TargetCfg::iscsi("iqn.2026-11.io.lunar:t")
//!         .with_lun(LunCfg::new(0, "lun0", ByteSize::gib(1)).read_only()),
//! );
//! assert_eq!(cfg.validate(), Ok(()));
//! let yaml = cfg.to_yaml().unwrap();
//! assert_eq!(Config::from_yaml_str(&yaml, "t.yaml").unwrap(), cfg);
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;

use super::ha::{CephCfg, DurationCfg, HaCfg, RbdPoolCfg};
use super::limits::LimitsCfg;
use super::schema::{
    default_block, default_data_dir, default_tpgt, ChapCfg, Config, Credential, DiscoveryCfg,
    GuaranteeCfg, IscsiCfg, LioCfg, LunCfg, MetricsCfg, PoolCfg, PortalCfg, TargetCfg,
};
use super::size::ByteSize;
use crate::fabric::Fabric;
use crate::secret::Secret;

impl ByteSize {
    /// `n` KiB.
    pub const fn kib(n: u64) -> ByteSize {
        ByteSize(n << 10)
    }
    /// `n` MiB.
    pub const fn mib(n: u64) -> ByteSize {
        ByteSize(n << 20)
    }
    /// `n` GiB.
    pub const fn gib(n: u64) -> ByteSize {
        ByteSize(n << 30)
    }
}

impl Config {
    /// A configuration that serves on loopback only: a directory pool of `capacity` in the
    /// default data directory, one portal on 127.0.0.1 whose port the system picks (logged
    /// in lunard's ready line), no targets, every other setting at its default.
    pub fn local(capacity: ByteSize) -> Config {
        Config {
            data_dir: default_data_dir(),
            pool: Some(PoolCfg {
                capacity: Some(capacity),
                ..PoolCfg::default()
            }),
            pools: Vec::new(),
            portals: vec![PortalCfg::new(SocketAddr::from(([127, 0, 0, 1], 0)))],
            discovery: DiscoveryCfg::default(),
            iscsi: IscsiCfg::default(),
            metrics: MetricsCfg::default(),
            targets: Vec::new(),
            lio: LioCfg::default(),
            limits: LimitsCfg::default(),
            ha: None,
            replication: None,
        }
    }

    /// Makes this lunard gateway `gateway` (ALUA port group `port_group`) of HA group
    /// `group`, its pool in RBD image `image` of RADOS pool `ceph_pool`, reached through
    /// `ceph_conf` as client `admin`, with the default lease.
    pub fn with_ha(
        mut self,
        group: &str,
        gateway: &str,
        port_group: u16,
        ceph_conf: impl Into<PathBuf>,
        ceph_pool: &str,
        image: &str,
    ) -> Config {
        self.ha = Some(HaCfg {
            group: group.into(),
            gateway: gateway.into(),
            port_group,
            ceph: CephCfg {
                conf: ceph_conf.into(),
                pool: ceph_pool.into(),
                ..CephCfg::default()
            },
            lease: DurationCfg(std::time::Duration::from_secs(2)),
        });
        self.pool.get_or_insert_with(PoolCfg::default).rbd = Some(RbdPoolCfg {
            image: image.into(),
        });
        self
    }

    /// Serves `pools` (a `pools:` list) instead of the single pool: each a directory pool
    /// of its capacity at `<data_dir>/pool-<name>`. The first is the default pool.
    pub fn with_pools(mut self, pools: &[(&str, ByteSize)]) -> Config {
        let base = self.pool.take().unwrap_or_default();
        self.pools = pools
            .iter()
            .map(|(name, capacity)| PoolCfg {
                name: Some((*name).to_string()),
                path: PathBuf::from(format!("pool-{name}")),
                capacity: Some(*capacity),
                ..base.clone()
            })
            .collect();
        self
    }

    /// Serves `pools` instead of the single pool: each `(name, RBD image, preferred
    /// gateway)` an RBD pool of `capacity` (an HA gateway with several pools; call after
    /// [`Config::with_ha`]). The first is the default pool.
    pub fn with_rbd_pools(
        mut self,
        pools: &[(&str, &str, Option<&str>)],
        capacity: ByteSize,
    ) -> Config {
        let base = self.pool.take().unwrap_or_default();
        self.pools = pools
            .iter()
            .map(|(name, image, prefer)| PoolCfg {
                name: Some((*name).to_string()),
                capacity: Some(capacity),
                rbd: Some(RbdPoolCfg {
                    image: (*image).to_string(),
                }),
                prefer: prefer.map(str::to_string),
                ..base.clone()
            })
            .collect();
        self
    }

    /// Keeps the pool and state in `dir`.
    pub fn with_data_dir(mut self, dir: impl Into<PathBuf>) -> Config {
        self.data_dir = dir.into();
        self
    }

    /// Adds a target.
    pub fn with_target(mut self, target: TargetCfg) -> Config {
        self.targets.push(target);
        self
    }
}

impl PortalCfg {
    /// A portal listening on `listen`, in portal group 1, advertising its own address.
    pub fn new(listen: SocketAddr) -> PortalCfg {
        PortalCfg {
            listen,
            advertise: None,
            tpgt: default_tpgt(),
        }
    }

    /// In target portal group `tpgt` (portals sharing a tag are one SCSI target port).
    pub fn with_tpgt(mut self, tpgt: u16) -> PortalCfg {
        self.tpgt = tpgt;
        self
    }

    /// Advertises `addr` in SendTargets instead of the listen address (NAT, a guest).
    pub fn with_advertise(mut self, addr: SocketAddr) -> PortalCfg {
        self.advertise = Some(addr);
        self
    }
}

impl TargetCfg {
    /// An iSCSI target every initiator may log in to, without alias, CHAP or LUNs.
    pub fn iscsi(iqn: impl Into<String>) -> TargetCfg {
        TargetCfg {
            iqn: iqn.into(),
            fabric: Fabric::Iscsi,
            alias: None,
            allow_any: true,
            initiators: Vec::new(),
            chap: None,
            luns: Vec::new(),
        }
    }

    /// A target on an LIO fabric (`Qla2xxx`, `Loopback`) named by its target port's
    /// WWPN (`naa.`, colon or plain hex form), open to any initiator, without LUNs.
    pub fn lio(fabric: Fabric, wwpn: impl Into<String>) -> TargetCfg {
        TargetCfg {
            fabric,
            ..TargetCfg::iscsi(wwpn)
        }
    }

    /// Only `initiators` may log in (an ACL: `allow_any` goes off).
    pub fn with_initiators<I, S>(mut self, initiators: I) -> TargetCfg
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.allow_any = false;
        self.initiators = initiators.into_iter().map(Into::into).collect();
        self
    }

    /// Requires CHAP for normal sessions.
    pub fn with_chap(mut self, chap: ChapCfg) -> TargetCfg {
        self.chap = Some(chap);
        self
    }

    /// Adds a LUN.
    pub fn with_lun(mut self, lun: LunCfg) -> TargetCfg {
        self.luns.push(lun);
        self
    }
}

impl LunCfg {
    /// LUN `id` on the volume `volume` (created with `size` if absent): 512-byte blocks,
    /// thin, read-write.
    pub fn new(id: u64, volume: impl Into<String>, size: ByteSize) -> LunCfg {
        LunCfg {
            id,
            volume: volume.into(),
            size,
            block_size: default_block(),
            guarantee: GuaranteeCfg::None,
            read_only: false,
            pool: None,
        }
    }

    /// With the volume in pool `pool` (a name from `pools:`; the first pool unless set).
    pub fn in_pool(mut self, pool: impl Into<String>) -> LunCfg {
        self.pool = Some(pool.into());
        self
    }

    /// With logical blocks of `bytes` (512 unless set).
    pub fn with_block_size(mut self, bytes: u32) -> LunCfg {
        self.block_size = bytes;
        self
    }

    /// Exported read-only.
    pub fn read_only(mut self) -> LunCfg {
        self.read_only = true;
        self
    }
}

impl ChapCfg {
    /// One-way CHAP: the initiator must prove `username`/`secret`.
    pub fn new(username: impl Into<String>, secret: impl Into<String>) -> ChapCfg {
        ChapCfg {
            username: username.into(),
            secret: Secret::new(secret),
            mutual: None,
        }
    }

    /// Mutual CHAP: the target answers with `username`/`secret`.
    pub fn with_mutual(
        mut self,
        username: impl Into<String>,
        secret: impl Into<String>,
    ) -> ChapCfg {
        self.mutual = Some(Credential {
            username: username.into(),
            secret: Secret::new(secret),
        });
        self
    }
}
