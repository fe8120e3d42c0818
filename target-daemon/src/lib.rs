//! lunard: the Lunar SCSI target appliance.
//!
//! - [`config`]: the YAML configuration and its validation.
//! - [`daemon`]: lifecycle (pool, targets, portals, shutdown).
//! - [`iscsi`]: the iSCSI front end (RFC 7143).
//! - [`scsi`]: the SCSI device server the front ends hand commands to.
//! - [`lio`], [`tcmu`]: the Fibre Channel / loopback front end through Linux LIO and its
//!   TCMU user backstore.
//! - [`lunmgr`], [`admin`]: LUNs, snapshots, clones and targets at run time, and the admin API.
//! - [`fabric`]: which transport a target uses and how its ports are named.
//! - [`shared`]: the state the gateways of an HA group share in RADOS (reservations, the
//!   LUN manager's state, the gateway registry).
//! - [`secret`]: secrets that never print, and token files only their owner can read.
//! - [`metrics`], [`http`]: Prometheus series and the `/metrics`, `/healthz`, `/readyz` endpoint.

pub mod admin;
pub mod config;
pub mod daemon;
pub mod fabric;
pub mod ha;
pub mod http;
pub mod iscsi;
pub mod lio;
pub mod lunmgr;
pub mod malloc;
pub mod metrics;
pub mod replica;
pub mod scsi;
pub mod sdnotify;
pub mod secret;
pub mod shared;
pub mod tcmu;
