//! The LIO fabric front end: Fibre Channel (`qla2xxx`) and loopback (`tcm_loop`) targets
//! served by the Linux kernel's SCSI target, with every command for a Lunar LUN passed to
//! lunard through a TCMU user backstore ([`crate::tcmu`]).
//!
//! Like the iSCSI front end it is a thin shell over the one device server: for each LUN a
//! [`ScsiTarget`] attaches (see [`crate::scsi::LunObserver`]) it creates a backstore in
//! configfs ([`configfs`]), opens its UIO device and serves the command ring, then links the
//! backstore into the fabric's portal group under the LUN's number and maps it into the
//! target's node ACLs. When the LUN detaches, it unlinks first (hosts see the LUN go),
//! stops serving, and removes the backstore. Everything happens on one worker task, in the
//! order the device servers reported it, so a detach can never overtake its attach.
//!
//! The LUN manager does not know about any of this: it sees a [`Frontend`], like the iSCSI
//! server.

pub mod configfs;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot};

use crate::config::LioCfg;
use crate::fabric::{parse_wwpn, Fabric, Frontend, FrontendError, SessionView, TargetSpec};
use crate::scsi::{LunEvent, LunObserver, ScsiTarget};
use crate::tcmu;
use configfs::{backstore_name, BackstoreSpec, Lio};

/// How long shutdown waits for the LIO configuration to be removed.
const SHUTDOWN_LIMIT: Duration = Duration::from_secs(60);

/// How long a new backstore's UIO device may take to appear after `enable`.
const UIO_APPEAR_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves the command ring of a backstore that was just enabled. The kernel's way
/// ([`UioOpener`]) waits for the backstore's UIO device and maps it; tests substitute a
/// simulated kernel so the whole choreography runs without LIO.
pub trait RingOpener: Send + Sync {
    /// Starts serving `backstore`'s ring: its commands execute on `lun` of `scsi`.
    fn open<'a>(
        &'a self,
        backstore: &'a str,
        scsi: Arc<ScsiTarget>,
        lun: u64,
    ) -> Pin<Box<dyn Future<Output = anyhow::Result<tcmu::DeviceHandle>> + Send + 'a>>;
}

/// The kernel's TCMU devices: `/sys/class/uio/uioN` named after the backstore, `/dev/uioN`.
pub struct UioOpener {
    /// sysfs mount point.
    pub sysfs: PathBuf,
    /// Directory of the `uioN` nodes.
    pub dev_dir: PathBuf,
}

impl RingOpener for UioOpener {
    fn open<'a>(
        &'a self,
        backstore: &'a str,
        scsi: Arc<ScsiTarget>,
        lun: u64,
    ) -> Pin<Box<dyn Future<Output = anyhow::Result<tcmu::DeviceHandle>> + Send + 'a>> {
        Box::pin(async move {
            use anyhow::Context;
            let started = std::time::Instant::now();
            let uio = loop {
                match tcmu::uio::find(&self.sysfs.join("class/uio"), &self.dev_dir, backstore) {
                    Ok(Some(info)) => break tcmu::UioDevice::open(info)?,
                    Ok(None) if started.elapsed() < UIO_APPEAR_TIMEOUT => {
                        tokio::time::sleep(Duration::from_millis(20)).await
                    }
                    Ok(None) => anyhow::bail!(
                        "no UIO device for backstore {backstore} under {}/class/uio after {}s (is target_core_user loaded?)",
                        self.sysfs.display(),
                        UIO_APPEAR_TIMEOUT.as_secs()
                    ),
                    Err(e) => return Err(e).context("opening the UIO device"),
                }
            };
            tcmu::spawn(uio, scsi, lun).context("serving the command ring")
        })
    }
}

/// One LUN served through LIO.
struct Served {
    backstore: String,
    device: tcmu::DeviceHandle,
}

/// One LIO target as exported.
struct Exported {
    spec: TargetSpec,
    scsi: Arc<ScsiTarget>,
    luns: BTreeMap<u64, Served>,
}

enum Work {
    AddTarget(TargetSpec, Arc<ScsiTarget>),
    RemoveTarget(String),
    SetAccess(TargetSpec),
    Lun(String, LunEvent),
    Sweep,
    Shutdown(oneshot::Sender<()>),
}

/// The LIO front end (see the module docs).
pub struct LioFabric {
    tx: mpsc::UnboundedSender<Work>,
    /// Names of the targets exported through LIO.
    names: Mutex<Vec<String>>,
}

/// Forwards a target's LUN events to the worker.
struct Observer(mpsc::UnboundedSender<Work>);

impl LunObserver for Observer {
    fn lun_event(&self, target: &str, event: LunEvent) {
        let _ = self.0.send(Work::Lun(target.to_string(), event));
    }
}

impl LioFabric {
    /// Starts the worker. Nothing touches configfs until the first target is added.
    pub fn start(cfg: &LioCfg) -> Arc<LioFabric> {
        let opener = Arc::new(UioOpener {
            sysfs: cfg.sysfs.clone(),
            dev_dir: cfg.dev_dir.clone(),
        });
        Self::start_with(cfg, opener)
    }

    /// [`start`](Self::start) with another way to serve the rings (tests).
    pub fn start_with(cfg: &LioCfg, opener: Arc<dyn RingOpener>) -> Arc<LioFabric> {
        let (tx, rx) = mpsc::unbounded_channel();
        let worker = Worker {
            lio: Lio::new(&cfg.configfs, cfg.hba),
            opener,
            max_data_area_mb: cfg.max_data_area_mb,
            targets: HashMap::new(),
            tx: tx.clone(),
            unavailable_logged: false,
            netlink_started: false,
        };
        tokio::spawn(worker.run(rx));
        Arc::new(LioFabric {
            tx,
            names: Mutex::new(Vec::new()),
        })
    }

    /// Whether `name` is a target of this front end.
    pub fn has_target(&self, name: &str) -> bool {
        self.names.lock().iter().any(|n| n == name)
    }

    /// Exports `spec` (a `qla2xxx` or `loopback` target) with `scsi`'s LUNs.
    pub fn add(&self, spec: TargetSpec, scsi: Arc<ScsiTarget>) {
        self.names.lock().push(spec.name.clone());
        let _ = self.tx.send(Work::AddTarget(spec, scsi));
    }

    /// Removes what an earlier lunard (killed, or crashed) left in configfs and nothing
    /// exported now claims. Call once after the targets present at start-up were added:
    /// their LUNs re-attach to their own backstores first (resetting the rings), so only
    /// the leftovers of LUNs that are gone are removed.
    pub fn sweep(&self) {
        let _ = self.tx.send(Work::Sweep);
    }

    /// Unlinks everything lunard created in configfs and stops serving, in order; returns
    /// when done (at shutdown).
    pub async fn shutdown(&self) {
        let (done, wait) = oneshot::channel();
        if self.tx.send(Work::Shutdown(done)).is_ok() {
            // A configfs write the kernel never returns from (a wedged backstore) must not
            // keep lunard from flushing and closing its pool.
            if tokio::time::timeout(SHUTDOWN_LIMIT, wait).await.is_err() {
                tracing::error!(
                    "LIO: configuration not fully removed after {}s; leaving the rest (the next start re-attaches or sweeps it)",
                    SHUTDOWN_LIMIT.as_secs()
                );
            }
        }
    }
}

/// The worker applies changes in order and logs what LIO refuses: nothing fails here.
impl Frontend for LioFabric {
    fn fabrics(&self) -> &'static [Fabric] {
        &[Fabric::Qla2xxx, Fabric::Loopback]
    }

    fn add_target(&self, spec: TargetSpec, scsi: Arc<ScsiTarget>) -> Result<(), FrontendError> {
        self.add(spec, scsi);
        Ok(())
    }

    fn remove_target(&self, name: &str) -> Result<(), FrontendError> {
        self.names.lock().retain(|n| n != name);
        let _ = self.tx.send(Work::RemoveTarget(name.to_string()));
        Ok(())
    }

    fn update_target(&self, spec: TargetSpec) -> Result<(), FrontendError> {
        let _ = self.tx.send(Work::SetAccess(spec));
        Ok(())
    }

    /// LIO keeps FC sessions in the kernel; lunard does not list them.
    fn sessions(&self, _name: &str) -> Vec<SessionView> {
        Vec::new()
    }

    fn close_sessions(&self, _name: &str) -> usize {
        0
    }
}

struct Worker {
    lio: Lio,
    opener: Arc<dyn RingOpener>,
    max_data_area_mb: u32,
    targets: HashMap<String, Exported>,
    tx: mpsc::UnboundedSender<Work>,
    unavailable_logged: bool,
    netlink_started: bool,
}

/// Runs a configfs operation on a blocking thread. Writing configfs makes the kernel act
/// synchronously: linking a LUN into a loopback portal group scans it (INQUIRY, READ
/// CAPACITY... through the very ring lunard serves), unlinking sends SYNCHRONIZE CACHE,
/// enabling a backstore creates its UIO device. On a runtime thread that would starve the
/// ring's task (a one-CPU host has one runtime thread) until the kernel timed the command
/// out.
async fn blocking<T: Send + 'static>(
    lio: &Lio,
    f: impl FnOnce(&Lio) -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    let lio = lio.clone();
    tokio::task::spawn_blocking(move || f(&lio))
        .await
        .map_err(std::io::Error::other)?
}

impl Worker {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Work>) {
        while let Some(w) = rx.recv().await {
            match w {
                Work::AddTarget(spec, scsi) => self.add_target(spec, scsi).await,
                Work::Sweep => {
                    if self.lio.check().is_ok() {
                        self.remove_unclaimed().await;
                    }
                }
                Work::RemoveTarget(name) => self.remove_target(&name).await,
                Work::SetAccess(spec) => self.set_access(spec).await,
                Work::Lun(target, ev) => self.lun_event(&target, ev).await,
                Work::Shutdown(done) => {
                    let names: Vec<String> = self.targets.keys().cloned().collect();
                    for n in names {
                        self.remove_target(&n).await;
                    }
                    tracing::info!("LIO: configuration removed");
                    let _ = done.send(());
                    return;
                }
            }
        }
    }

    /// Says once that LIO cannot be used, then runs iSCSI only.
    fn unavailable(&mut self, why: &str) {
        if !self.unavailable_logged {
            self.unavailable_logged = true;
            tracing::warn!("LIO/TCMU unavailable, Fibre Channel and loopback targets are not exported (iSCSI only): {why}");
        } else {
            tracing::debug!("LIO/TCMU unavailable: {why}");
        }
    }

    fn claimed(&self, backstore: &str) -> bool {
        self.targets
            .values()
            .any(|t| t.luns.values().any(|s| s.backstore == backstore))
    }

    /// Removes lunard's backstores that no exported LUN serves, with any fabric links to
    /// them (links only lunard made: `lun_N/<backstore>` in a portal group). A crashed
    /// lunard leaves its backstores and links behind; those still exported were re-attached
    /// by then (see `attach`), the rest go here.
    async fn remove_unclaimed(&mut self) {
        for b in self.lio.own_backstores() {
            if self.claimed(&b) {
                continue;
            }
            for fabric in [Fabric::Qla2xxx, Fabric::Loopback] {
                let dir = self.lio.root().join(fabric.as_str());
                let Ok(rd) = std::fs::read_dir(&dir) else {
                    continue;
                };
                for wwn in rd.flatten() {
                    let Some(wwn) = wwn.file_name().to_str().map(str::to_string) else {
                        continue;
                    };
                    for lun in self.lio.linked_luns(fabric, &wwn) {
                        let link = self
                            .lio
                            .tpg_dir(fabric, &wwn)
                            .join("lun")
                            .join(format!("lun_{lun}"))
                            .join(&b);
                        if link.symlink_metadata().is_ok() {
                            let w = wwn.clone();
                            let r = blocking(&self.lio, move |l| l.unlink_lun(fabric, &w, lun));
                            if let Err(e) = r.await {
                                tracing::warn!(%fabric, wwn, lun, "LIO: removing a stale LUN: {e}");
                            }
                        }
                    }
                }
            }
            let name = b.clone();
            match blocking(&self.lio, move |l| l.remove_backstore(&name)).await {
                Ok(()) => tracing::info!(backstore = %b, "LIO: stale backstore removed"),
                Err(e) => {
                    tracing::warn!(backstore = %b, "LIO: cannot remove a stale backstore: {e}")
                }
            }
        }
    }

    async fn add_target(&mut self, spec: TargetSpec, scsi: Arc<ScsiTarget>) {
        let fabric = spec.fabric;
        let name = spec.name.clone();
        let check = blocking(&self.lio, move |l| {
            Ok(l.check().and_then(|()| l.check_fabric(fabric)))
        })
        .await;
        let why = match check {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(e) => Some(e.to_string()),
        };
        if let Some(why) = why {
            self.unavailable(&why);
            return;
        }
        if !self.netlink_started {
            self.netlink_started = true;
            spawn_netlink_log();
        }
        let n = name.clone();
        if let Err(e) = blocking(&self.lio, move |l| l.create_tpg(fabric, &n)).await {
            tracing::error!(target = %name, %fabric, "LIO: cannot create the target port: {e}");
            return;
        }
        // tcm_loop has no node ACLs: its one initiator is the local nexus.
        if fabric != Fabric::Loopback {
            let (n, any, inits) = (name.clone(), spec.allow_any, spec.initiators.clone());
            let r = blocking(&self.lio, move |l| l.set_acls(fabric, &n, any, &inits, &[]));
            if let Err(e) = r.await {
                tracing::error!(target = %name, "LIO: cannot set the ACLs: {e}");
            }
        }
        if fabric == Fabric::Loopback {
            let (n, nexus) = (name.clone(), loopback_nexus(&spec));
            let r = blocking(&self.lio, move |l| l.set_loopback_nexus(&n, &nexus));
            if let Err(e) = r.await {
                tracing::error!(target = %name, "LIO: cannot create the loopback nexus: {e}");
            }
        }
        if fabric == Fabric::Qla2xxx {
            let n = name.clone();
            if let Err(e) = blocking(&self.lio, move |l| l.enable_tpg(fabric, &n)).await {
                tracing::error!(target = %name, "LIO: cannot enable the FC port: {e}");
            }
        }
        tracing::info!(target = %name, %fabric, "LIO target exported");
        self.targets.insert(
            name.clone(),
            Exported {
                spec,
                scsi: scsi.clone(),
                luns: BTreeMap::new(),
            },
        );
        // Changes from now on arrive as events; the LUNs already there are attached here,
        // before anything queued behind this target (such as the start-up sweep) runs.
        scsi.set_lun_observer(Arc::new(Observer(self.tx.clone())));
        for ev in scsi.attached_luns() {
            self.lun_event(&name, ev).await;
        }
    }

    async fn remove_target(&mut self, name: &str) {
        let Some(mut t) = self.targets.remove(name) else {
            return;
        };
        t.scsi.clear_lun_observer();
        let fabric = t.spec.fabric;
        let luns: Vec<u64> = t.luns.keys().copied().collect();
        for lun in luns {
            if let Some(s) = t.luns.remove(&lun) {
                self.detach(fabric, name, lun, s).await;
            }
        }
        let n = name.to_string();
        if let Err(e) = blocking(&self.lio, move |l| l.remove_target(fabric, &n)).await {
            tracing::warn!(target = %name, "LIO: removing the target port: {e}");
        }
        tracing::info!(target = %name, %fabric, "LIO target removed");
    }

    async fn set_access(&mut self, spec: TargetSpec) {
        let Some(t) = self.targets.get_mut(&spec.name) else {
            return;
        };
        let luns: Vec<u64> = t.luns.keys().copied().collect();
        t.spec.allow_any = spec.allow_any;
        t.spec.initiators = spec.initiators.clone();
        if spec.fabric != Fabric::Loopback {
            let (fabric, n, any, inits) = (
                spec.fabric,
                spec.name.clone(),
                spec.allow_any,
                spec.initiators,
            );
            let r = blocking(&self.lio, move |l| {
                l.set_acls(fabric, &n, any, &inits, &luns)
            });
            if let Err(e) = r.await {
                tracing::error!(target = %spec.name, "LIO: cannot update the ACLs: {e}");
            }
        }
    }

    async fn lun_event(&mut self, target: &str, ev: LunEvent) {
        let Some(t) = self.targets.get(target) else {
            return;
        };
        let fabric = t.spec.fabric;
        match ev {
            LunEvent::Attached {
                lun,
                volume,
                size_bytes,
                block_size,
            } => {
                if t.luns.contains_key(&lun) {
                    return;
                }
                let scsi = t.scsi.clone();
                let Ok(wwpn) = parse_wwpn(target) else {
                    tracing::error!(target, "LIO: target name is not a WWPN");
                    return;
                };
                let spec = BackstoreSpec {
                    name: backstore_name(wwpn, lun),
                    volume,
                    size_bytes,
                    block_size,
                    max_data_area_mb: self.max_data_area_mb,
                };
                match self.attach(fabric, target, lun, &spec, scsi).await {
                    Ok(served) => {
                        if let Some(t) = self.targets.get_mut(target) {
                            t.luns.insert(lun, served);
                        }
                    }
                    Err(e) => {
                        tracing::error!(target, lun, backstore = %spec.name, "LIO: cannot export the LUN: {e:#}");
                        let (t, b) = (target.to_string(), spec.name.clone());
                        let _ = blocking(&self.lio, move |l| {
                            l.unlink_lun(fabric, &t, lun)?;
                            l.remove_backstore(&b)
                        })
                        .await;
                    }
                }
            }
            LunEvent::Resized { lun, size_bytes } => {
                if let Some(s) = t.luns.get(&lun) {
                    let b = s.backstore.clone();
                    if let Err(e) = blocking(&self.lio, move |l| l.set_size(&b, size_bytes)).await {
                        tracing::warn!(target, lun, "LIO: cannot update dev_size: {e}");
                    }
                }
            }
            LunEvent::Detached { lun } => {
                let Some(s) = self
                    .targets
                    .get_mut(target)
                    .and_then(|t| t.luns.remove(&lun))
                else {
                    return;
                };
                self.detach(fabric, target, lun, s).await;
            }
        }
    }

    /// Backstore (reused if an earlier lunard left it enabled), UIO device, command loop,
    /// then the fabric link and the ACL mappings: the LUN is served before any host can
    /// see it.
    async fn attach(
        &mut self,
        fabric: Fabric,
        target: &str,
        lun: u64,
        spec: &BackstoreSpec,
        scsi: Arc<ScsiTarget>,
    ) -> anyhow::Result<Served> {
        use anyhow::Context;
        let reused = self.lio.backstore_enabled(&spec.name);
        if reused {
            tracing::info!(backstore = %spec.name, "LIO: re-attaching to a backstore an earlier lunard left");
            let b = spec.name.clone();
            blocking(&self.lio, move |l| l.reset_ring(&b))
                .await
                .context("resetting the command ring")?;
        } else {
            let sp = spec.clone();
            blocking(&self.lio, move |l| l.create_backstore(&sp))
                .await
                .context("creating the TCMU backstore")?;
        }
        let device = self.opener.open(&spec.name, scsi, lun).await?;
        let served = Served {
            backstore: spec.name.clone(),
            device,
        };
        let (t, b) = (target.to_string(), spec.name.clone());
        let link = blocking(&self.lio, move |l| l.link_lun(fabric, &t, lun, &b))
            .await
            .context("linking the LUN into the portal group");
        if let Err(e) = link {
            let _ = served.device.stop().await;
            return Err(e);
        }
        let inits = match self.targets.get(target) {
            Some(t) if !t.spec.allow_any && fabric != Fabric::Loopback => t.spec.initiators.clone(),
            _ => Vec::new(),
        };
        for ini in inits {
            let (t, i) = (target.to_string(), ini.clone());
            if let Err(e) = blocking(&self.lio, move |l| l.map_acl_lun(fabric, &t, &i, lun)).await {
                tracing::error!(target, lun, initiator = %ini, "LIO: cannot map the LUN into the ACL: {e}");
            }
        }
        tracing::info!(target, lun, backstore = %spec.name, volume = %spec.volume, "LIO LUN exported");
        Ok(served)
    }

    /// Unlink (hosts see the LUN go), stop serving, remove the backstore.
    async fn detach(&mut self, fabric: Fabric, target: &str, lun: u64, s: Served) {
        let t = target.to_string();
        if let Err(e) = blocking(&self.lio, move |l| l.unlink_lun(fabric, &t, lun)).await {
            tracing::warn!(target, lun, "LIO: unlinking the LUN: {e}");
        }
        match s.device.stop().await {
            tcmu::DeviceExit::Stopped => {}
            other => {
                tracing::warn!(target, lun, backstore = %s.backstore, "TCMU device ended: {other:?}")
            }
        }
        let b = s.backstore.clone();
        if let Err(e) = blocking(&self.lio, move |l| l.remove_backstore(&b)).await {
            tracing::warn!(target, lun, backstore = %s.backstore, "LIO: removing the backstore: {e}");
        }
        tracing::info!(target, lun, backstore = %s.backstore, "LIO LUN removed");
    }
}

/// The initiator port name of a loopback target's local SCSI host: the first ACL entry if
/// there is one, else the target's WWPN with its last byte flipped (tcm_loop only needs a
/// `naa.` name of the same kind as the target's).
fn loopback_nexus(spec: &TargetSpec) -> String {
    if let Some(i) = spec.initiators.first() {
        return i.clone();
    }
    let w = parse_wwpn(&spec.name).unwrap_or(0x5001_4050_0000_0001);
    format!("naa.{:016x}", w ^ 0xff)
}

/// Logs what the kernel announces on the TCMU netlink family: lunard makes its own devices
/// (so it needs no event to learn of them), but a backstore removed or resized by someone
/// else (targetcli, a script) should show up in lunard's log. lunard never registers for
/// command replies, so the kernel never waits on this listener.
fn spawn_netlink_log() {
    tokio::spawn(async {
        let mut listener = match tcmu::Listener::open() {
            Ok(l) => l,
            Err(e) => {
                tracing::debug!("TCMU netlink events not available: {e}");
                return;
            }
        };
        loop {
            match listener.next().await {
                Ok(ev) => tracing::info!(event = ?ev, "TCMU netlink event"),
                Err(e) => {
                    tracing::debug!("TCMU netlink listener stopped: {e}");
                    return;
                }
            }
        }
    });
}
