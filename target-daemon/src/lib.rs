//! lunard: the Lunar SCSI target appliance.
//!
//! - [`config`]: the YAML configuration and its validation.
//! - [`daemon`]: lifecycle (pool, targets, portals, shutdown).
//! - [`iscsi`]: the iSCSI front end (RFC 7143).
//! - [`scsi`]: the SCSI device server the front ends hand commands to.
//! - [`tcmu`]: the TCMU front end (LIO userspace backstore: Fibre Channel, loopback).
//! - [`metrics`], [`http`]: Prometheus series and the `/metrics`, `/healthz`, `/readyz` endpoint.

// --- admin (issue 4) ---
pub mod admin;
pub mod lunmgr;
// --- end admin ---
pub mod config;
pub mod daemon;
pub mod http;
pub mod iscsi;
pub mod metrics;
pub mod scsi;
pub mod sdnotify;
pub mod tcmu;
