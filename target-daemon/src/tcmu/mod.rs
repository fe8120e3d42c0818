//! The TCMU front end: Lunar LUNs served through the Linux kernel's LIO target and its
//! userspace backstore, `target_core_user`.
//!
//! Why: LIO drives Fibre Channel HBAs (`tcm_qla2xxx`) and the loopback fabric, and TCMU
//! hands every SCSI command for a `user` backstore to a userspace process. Lunar thereby
//! serves FC hosts with the same SCSI device server, LUN manager and storage engine as
//! iSCSI, without an FC stack of its own.
//!
//! How the ring works (see [`ring`]): each backstore is a UIO device whose one mapping
//! holds a mailbox, a command ring and a data area. The kernel appends command entries
//! (CDB offset and iovecs into the data area) and signals through the UIO fd; lunard
//! parses every new entry, runs the commands concurrently on the device server
//! ([`device`]), writes status and sense in place, moves `cmd_tail` and writes to the fd.
//! With `CAP_OOOC` (every kernel since 4.6) completions go back in any order.
//!
//! What is copied: the CDB (a few bytes, because its ring slot may be reused for another
//! command's response before it completes); Data-Out is handed to the device server
//! without a copy when it is one iovec — the kernel's data area is in blocks (4 KiB pages
//! by default, `data_pages_per_blk` of them), so larger writes usually arrive as one iovec
//! per block run and are gathered with one copy; Data-In is copied once from the device
//! server's buffer into the data area (the device server returns owned bytes).
//!
//! [`netlink`] listens for the kernel's device add/remove/reconfigure events; [`uio`]
//! finds and opens the devices.

pub mod device;
pub mod mem;
pub mod netlink;
pub mod ring;
pub mod uio;

#[cfg(test)]
pub(crate) mod sim;

use std::sync::Arc;

pub use device::{
    spawn_with, DeviceExit, DeviceHandle, DeviceStats, Doorbell, DEFAULT_STOP_TIMEOUT,
};
pub use netlink::{Listener, NetlinkError, TcmuEvent};
pub use uio::{UioDevice, UioInfo};

use crate::scsi::ScsiTarget;

/// Starts serving an opened TCMU device: its commands go to `lun` of `target`. Must be
/// called inside a tokio runtime.
pub fn spawn(uio: UioDevice, target: Arc<ScsiTarget>, lun: u64) -> anyhow::Result<DeviceHandle> {
    let name = uio.info().name.device.clone();
    let path = uio.info().dev_path.clone();
    let (mem, db) = uio.into_parts()?;
    spawn_with(mem, Arc::new(db), &name, target, lun)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}
