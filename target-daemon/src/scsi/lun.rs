//! A logical unit: a storage-core volume plus the SCSI state that belongs to the LUN
//! (mode parameters, SCSI-2 reservation, last reported capacity).
//!
//! The volume is optional: a standby gateway of an HA group has no pool open, yet its LUNs
//! must be the same devices hosts see through the owner (same NAA, geometry, reservations),
//! so a LUN can exist with only its [`LunShape`] (from the LUN manager's record) and gets
//! its volume when the pool is attached ([`Lun::set_volume`]); [`Lun::drain_volume`] takes it
//! away again once the media commands using it have finished. Everything but media access
//! (INQUIRY, VPD, READ CAPACITY, MODE SENSE, PR) reads the shape, never the volume.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use scsi_proto::scsi::capacity::Capacity;
use scsi_proto::scsi::mode::{ModeContext, ModeParams};
use scsi_proto::scsi::sense::{AdditionalSense, SenseFormat};
use scsi_proto::scsi::vpd::{BlockLimits, DeviceIdentity, Provisioning};
use storage_core::{Guarantee, Volume};

use super::Nexus;

/// What a LUN is without its volume: the name, geometry, provisioning and SCSI identity the
/// LUN manager's record carries, identical on every gateway.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LunShape {
    /// LUN (= volume) name.
    pub name: String,
    /// Size in logical blocks.
    pub blocks: u64,
    /// Logical block size in bytes (a power of two).
    pub block_size: u32,
    /// Thin provisioned (else fully reserved).
    pub thin: bool,
    /// The UUID the NAA id and unit serial derive from.
    pub identity: uuid::Uuid,
}

/// One LUN of a target.
pub struct Lun {
    /// LUN number.
    pub id: u64,
    /// The volume the LUN serves; `None` while the pool is not open on this gateway. Media
    /// commands hold it shared for their whole run and borrow the volume from the guard (no
    /// handle clone per command); taking the volume away holds it exclusively, so it waits
    /// for them ([`Lun::drain_volume`]).
    pub(super) media: tokio::sync::RwLock<Option<Volume>>,
    /// The same volume for the synchronous readers (size, name, EXTENDED COPY's other
    /// LUNs); changed only together with `media`, under its exclusive lock.
    volume: parking_lot::RwLock<Option<Volume>>,
    /// Name shown in metrics and LUN events while there is no volume.
    shape_name: parking_lot::Mutex<String>,
    /// Logical block size (a volume's never changes).
    block_size: u32,
    /// Size in blocks while there is no volume (a volume knows its own).
    shape_blocks: AtomicU64,
    /// Writes are refused with DATA PROTECT, WRITE PROTECTED.
    pub read_only: bool,
    /// Limits reported in the Block Limits VPD page and enforced on commands.
    pub limits: BlockLimits,
    /// Provisioning type reported in the Logical Block Provisioning VPD page.
    pub provisioning: Provisioning,
    mode: Mutex<ModeParams>,
    reserved: AtomicBool,
    reservation: Mutex<Option<Nexus>>,
    last_blocks: AtomicU64,
    /// Makes COMPARE AND WRITE atomic with respect to every other write: writers share it,
    /// COMPARE AND WRITE holds it exclusively for its read-compare-write.
    pub(super) atomic: tokio::sync::RwLock<()>,
    /// Persistent reservation state, and a flag so unreserved LUNs skip the lock.
    pub(super) pr: Mutex<super::pr::PrState>,
    pub(super) pr_active: AtomicBool,
    /// PERSISTENT RESERVE OUTs of this LUN take turns on it from their decision until their
    /// commit (after the store write), so the writes happen in the order of the changes.
    /// Owned guards, so the turn can move into the blocking write (see `spc.rs`).
    pub(super) pr_order: Arc<tokio::sync::Mutex<()>>,
    /// Per-LUN Prometheus handles, resolved once when the LUN is attached to a target.
    pub metrics: Option<Arc<crate::metrics::LunMetrics>>,
    /// EXTENDED COPY commands this LUN's copy manager runs or ran (RECEIVE COPY RESULTS).
    pub(super) copies: super::xcopy::CopyLog,
    /// The ALUA view of the LUN's pool on a gateway with several pools (each pool has its
    /// own owner); unset: the target's view ([`ScsiTarget::set_alua`](super::ScsiTarget::set_alua)).
    pub(super) alua: std::sync::OnceLock<Arc<super::alua::AluaView>>,
    /// The store behind the LUN has a volatile write cache (WCE reported, changeable, and
    /// WCE=0 forces every write to stable storage); without one every write is stable
    /// when it completes. Set by the target before the LUN is shared.
    pub(super) volatile_cache: bool,
    /// The SCSI identity: NAA id, unit serial and persistent-reservation state derive from
    /// it. The volume's UUID, except for a refreshed clone, which keeps the one hosts know.
    identity: uuid::Uuid,
}

impl Lun {
    /// Wrap a volume. `chunk_size` is the pool's allocation unit (UNMAP granularity).
    pub fn new(id: u64, volume: Volume, read_only: bool, chunk_size: u32) -> Self {
        let identity = volume.uuid();
        Self::with_identity(id, volume, read_only, chunk_size, identity, None)
    }

    /// Wrap a volume presented under `identity` (see [`Lun::identity_uuid`]), its
    /// persistent reservations kept in `pr_store` (and reloaded from it now: blocking).
    pub fn with_identity(
        id: u64,
        volume: Volume,
        read_only: bool,
        chunk_size: u32,
        identity: uuid::Uuid,
        pr_store: Option<Arc<dyn super::pr::PrStore>>,
    ) -> Self {
        let shape = LunShape {
            name: volume.name(),
            blocks: volume.num_blocks(),
            block_size: volume.block_size(),
            thin: volume.info().guarantee == Guarantee::None,
            identity,
        };
        Self::build(id, shape, Some(volume), read_only, chunk_size, pr_store)
    }

    /// A LUN without a volume (a standby gateway): geometry and identity from `shape`,
    /// media access refused until [`Lun::set_volume`].
    pub fn pool_less(
        id: u64,
        shape: LunShape,
        read_only: bool,
        chunk_size: u32,
        pr_store: Option<Arc<dyn super::pr::PrStore>>,
    ) -> Self {
        Self::build(id, shape, None, read_only, chunk_size, pr_store)
    }

    fn build(
        id: u64,
        shape: LunShape,
        volume: Option<Volume>,
        read_only: bool,
        chunk_size: u32,
        pr_store: Option<Arc<dyn super::pr::PrStore>>,
    ) -> Self {
        let LunShape {
            name,
            blocks,
            block_size,
            thin,
            identity,
        } = shape;
        let provisioning = if thin {
            Provisioning::Thin
        } else {
            Provisioning::Resource
        };
        let last_blocks = AtomicU64::new(blocks);
        // Persistent reservations saved with APTPL for this LUN identity come back here.
        let pr = super::pr::PrState::for_lun(identity, pr_store);
        let pr_active = AtomicBool::new(pr.is_active());
        Self {
            id,
            media: tokio::sync::RwLock::new(volume.clone()),
            volume: parking_lot::RwLock::new(volume),
            shape_name: parking_lot::Mutex::new(name),
            block_size,
            shape_blocks: AtomicU64::new(blocks),
            read_only,
            limits: BlockLimits::for_volume(block_size, chunk_size),
            provisioning,
            mode: Mutex::new(ModeParams::default()),
            reserved: AtomicBool::new(false),
            reservation: Mutex::new(None),
            last_blocks,
            atomic: tokio::sync::RwLock::new(()),
            pr: Mutex::new(pr),
            pr_active,
            pr_order: Arc::new(tokio::sync::Mutex::new(())),
            metrics: None,
            copies: Default::default(),
            alua: std::sync::OnceLock::new(),
            volatile_cache: true,
            identity,
        }
    }

    /// The volume, if the pool is open here.
    pub fn volume(&self) -> Option<Volume> {
        self.volume.read().clone()
    }

    /// Whether the LUN has its volume.
    pub fn has_volume(&self) -> bool {
        self.volume.read().is_some()
    }

    /// Gives the LUN its volume (the pool was attached): media access works from now on.
    /// Identity, reservations, mode parameters and unit attentions are the LUN's and stay.
    pub async fn set_volume(&self, volume: Volume) {
        let mut media = self.media.write().await;
        *self.shape_name.lock() = volume.name();
        self.shape_blocks
            .store(volume.num_blocks(), Ordering::Relaxed);
        *self.volume.write() = Some(volume.clone());
        *media = Some(volume);
    }

    /// Takes the volume away once every media command that started with it has finished
    /// (later ones find no volume and are refused with NOT READY); keeps the last size as
    /// the shape's. Returns the volume it held.
    pub async fn drain_volume(&self) -> Option<Volume> {
        let mut media = self.media.write().await;
        *self.volume.write() = None;
        let v = media.take();
        if let Some(v) = &v {
            self.shape_blocks.store(v.num_blocks(), Ordering::Relaxed);
        }
        v
    }

    /// A new size for a LUN without a volume (the owner resized it): READ CAPACITY reports
    /// it and the next command raises CAPACITY DATA HAS CHANGED. Ignored while the volume
    /// is here (the volume knows its size).
    pub fn set_shape_blocks(&self, blocks: u64) {
        if !self.has_volume() {
            self.shape_blocks.store(blocks, Ordering::Relaxed);
        }
    }

    /// Name of the volume (= LUN name).
    pub fn name(&self) -> String {
        match &*self.volume.read() {
            Some(v) => v.name(),
            None => self.shape_name.lock().clone(),
        }
    }

    /// Size in logical blocks.
    pub fn num_blocks(&self) -> u64 {
        match &*self.volume.read() {
            Some(v) => v.num_blocks(),
            None => self.shape_blocks.load(Ordering::Relaxed),
        }
    }

    /// Logical block size.
    pub fn block_size(&self) -> u32 {
        self.block_size
    }

    /// Install a reservation state read from or published through the shared store if it
    /// is newer than the local copy (see [`super::pr::PrState::install`]); the "anything to
    /// check" flag follows it. Returns whether it was installed.
    pub fn pr_install(&self, v: &super::pr::VersionedPr) -> bool {
        let mut st = self.pr.lock();
        let installed = st.install(v);
        self.pr_active.store(st.is_active(), Ordering::Release);
        installed
    }

    /// Install a change another gateway announced (saved as `v.version`, decided on
    /// `base`, with the unit attentions `announced`, issued by `issuer`); returns the unit
    /// attentions owed here (see [`super::pr::PrState::account`]).
    pub fn pr_install_notice(
        &self,
        v: &super::pr::VersionedPr,
        base: super::pr::PrVersion,
        announced: &[(Nexus, AdditionalSense)],
        issuer: Option<&Nexus>,
    ) -> Vec<(Nexus, AdditionalSense)> {
        let mut st = self.pr.lock();
        st.install(v);
        let owed = st.account(v.version, base, None, &v.data, announced, issuer);
        self.pr_active.store(st.is_active(), Ordering::Release);
        owed
    }

    /// Install the latest shared state after notices may have been missed; returns the
    /// unit attentions of the changes not accounted for (see
    /// [`super::pr::PrState::resync`]).
    pub fn pr_resync(&self, v: &super::pr::VersionedPr) -> Vec<(Nexus, AdditionalSense)> {
        let mut st = self.pr.lock();
        let owed = st.resync(v);
        self.pr_active.store(st.is_active(), Ordering::Release);
        owed
    }

    /// The shared reservation state cannot be read (`why`): media access is refused until
    /// it can.
    pub fn pr_mark_unreadable(&self, why: &str) {
        let mut st = self.pr.lock();
        st.mark_unreadable(why);
        self.pr_active.store(true, Ordering::Release);
    }

    /// Current mode parameters.
    pub fn mode(&self) -> ModeParams {
        *self.mode.lock()
    }

    /// Replace the mode parameters; returns whether anything changed.
    pub fn set_mode(&self, p: ModeParams) -> bool {
        let mut m = self.mode.lock();
        let changed = *m != p;
        *m = p;
        changed
    }

    /// Whether a write must be forced to stable storage although its FUA bit is clear:
    /// the initiator turned the volatile write cache off (WCE=0). A store without a volatile
    /// cache needs no forcing: its writes are stable when they complete.
    pub fn write_through(&self) -> bool {
        self.volatile_cache && !self.mode.lock().wce
    }

    /// Tells the LUN whether its store has a volatile write cache (before it is shared):
    /// the initial WCE and whether it can be changed follow.
    pub(super) fn set_volatile_cache(&mut self, volatile: bool) {
        self.volatile_cache = volatile;
        *self.mode.get_mut() = ModeParams::for_cache(volatile);
    }

    /// Sense format selected by D_SENSE.
    pub fn sense_format(&self) -> SenseFormat {
        if self.mode.lock().d_sense {
            SenseFormat::Descriptor
        } else {
            SenseFormat::Fixed
        }
    }

    /// READ CAPACITY view of the volume.
    pub fn capacity(&self) -> Capacity {
        Capacity {
            blocks: self.num_blocks(),
            block_size: self.block_size,
            lbpme: true,
            lbprz: true,
        }
    }

    /// MODE SENSE view of the volume.
    pub fn mode_context(&self) -> ModeContext {
        ModeContext {
            blocks: self.num_blocks(),
            block_size: self.block_size,
            write_protected: self.read_only,
            volatile_cache: self.volatile_cache,
        }
    }

    /// The UUID the LUN's SCSI identity derives from.
    pub fn identity_uuid(&self) -> uuid::Uuid {
        self.identity
    }

    /// The NAA designator of VPD page 83h, by which EXTENDED COPY names this LUN.
    pub fn naa(&self) -> [u8; 16] {
        DeviceIdentity {
            uuid: *self.identity.as_bytes(),
            relative_port: 1,
            target_port_group: 1,
            target_name: None,
        }
        .naa()
    }

    /// Identity for the VPD pages as seen through relative target port `port`, which is
    /// also its target port group (see `alua.rs`).
    pub fn identity(&self, target_name: &str, port: u16) -> DeviceIdentity {
        DeviceIdentity {
            uuid: *self.identity.as_bytes(),
            relative_port: port,
            target_port_group: port,
            target_name: Some(target_name.to_string()),
        }
    }

    /// Whether the capacity changed since the last call (a resize happened).
    pub fn capacity_changed(&self) -> bool {
        let now = self.num_blocks();
        self.last_blocks.swap(now, Ordering::Relaxed) != now
    }

    /// The nexus holding a SCSI-2 reservation, if it is not `nexus`.
    pub fn reserved_by_other(&self, nexus: &Nexus) -> bool {
        if !self.reserved.load(Ordering::Acquire) {
            return false;
        }
        self.reservation
            .lock()
            .as_ref()
            .is_some_and(|holder| holder != nexus)
    }

    /// RESERVE: take the reservation; `false` if another nexus holds it.
    pub fn reserve(&self, nexus: &Nexus) -> bool {
        let mut r = self.reservation.lock();
        match r.as_ref() {
            Some(holder) if holder != nexus => false,
            _ => {
                *r = Some(nexus.clone());
                self.reserved.store(true, Ordering::Release);
                true
            }
        }
    }

    /// RELEASE: drop the reservation if `nexus` holds it (a no-op otherwise, per SPC-2).
    pub fn release(&self, nexus: &Nexus) {
        let mut r = self.reservation.lock();
        if r.as_ref() == Some(nexus) {
            *r = None;
            self.reserved.store(false, Ordering::Release);
        }
    }

    /// Drop the reservation whoever holds it (LUN/target reset, holder logout).
    pub fn clear_reservation(&self) {
        *self.reservation.lock() = None;
        self.reserved.store(false, Ordering::Release);
    }

    /// Whether `nexus` holds the reservation.
    pub fn holds_reservation(&self, nexus: &Nexus) -> bool {
        self.reservation.lock().as_ref() == Some(nexus)
    }
}

impl super::pr::SharedPrHolder for Lun {
    fn pr_install(&self, v: &super::pr::VersionedPr) -> bool {
        Lun::pr_install(self, v)
    }

    fn pr_mark_unreadable(&self, why: &str) {
        Lun::pr_mark_unreadable(self, why)
    }

    fn pr_decide_on(
        &self,
        base: &super::pr::PrData,
        n: &Nexus,
        req: &super::pr::PrOutRequest,
    ) -> Result<super::pr::Decision, scsi_proto::scsi::sense::Sense> {
        self.pr.lock().decide_on(base, n, req)
    }
}
