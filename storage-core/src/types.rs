//! Public value types: options, status and info records.

use serde::{Deserialize, Serialize};

/// The pool's soft-threshold state as published by [`crate::Pool::soft_threshold_watch`].
///
/// A watch channel keeps only its latest value, so a rise, fall and rise between two reads
/// would look like "reached, still reached" if only the state were published. `crossings`
/// counts every upward crossing (false to true) since the pool was opened, so a subscriber
/// that compares it with the count it last saw never misses a crossing, however late it
/// wakes up.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SoftThreshold {
    /// Whether used + reserved space is at or above the soft threshold right now.
    pub reached: bool,
    /// Upward crossings since the pool was opened (an open that finds the pool already
    /// above the threshold counts as one).
    pub crossings: u64,
}

/// Space guarantee of a volume.
///
/// `None` is thin: writes allocate on demand and fail with `NoSpace` when the pool is full.
/// `Full` reserves every chunk the volume could still need, so its writes never fail for space.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Guarantee {
    /// Thin provisioning.
    None,
    /// Fully reserved.
    Full,
}

/// Default chunk size: 64 KiB (see docs/decisions/0002-chunk-size.md).
pub const DEFAULT_CHUNK_SIZE: u32 = 64 * 1024;

/// Options used when a pool is created.
#[derive(Clone, Debug)]
pub struct PoolOptions {
    /// Allocation unit, power of two between 4 KiB and 1 MiB.
    pub chunk_size: u32,
    /// Size of a file or directory pool (the file is sparse). Block devices use the device size.
    pub capacity_bytes: Option<u64>,
    /// Soft threshold in per cent of capacity used; reported in [`PoolStatus`].
    pub soft_threshold_pct: Option<u8>,
}

impl Default for PoolOptions {
    fn default() -> Self {
        PoolOptions {
            chunk_size: DEFAULT_CHUNK_SIZE,
            capacity_bytes: None,
            soft_threshold_pct: None,
        }
    }
}

/// Pool-wide space and object figures. Capacity, used, free and reserved are always exact.
#[derive(Clone, Debug)]
pub struct PoolStatus {
    /// Pool UUID.
    pub uuid: uuid::Uuid,
    /// Bytes available for data chunks (metadata regions excluded).
    pub capacity_bytes: u64,
    /// Bytes in chunks owned by some layer.
    pub used_bytes: u64,
    /// `capacity - used`; includes `pending_free_bytes`.
    pub free_bytes: u64,
    /// Freed chunks waiting for their freeing transaction to be durable before reuse.
    pub pending_free_bytes: u64,
    /// Bytes reserved for full volumes and not yet used by them.
    pub reserved_bytes: u64,
    /// Chunk size in bytes.
    pub chunk_size: u32,
    /// Configured soft threshold in per cent of capacity.
    pub soft_threshold_pct: Option<u8>,
    /// Whether `used + reserved` has reached the soft threshold.
    pub soft_threshold_reached: bool,
    /// Number of live volumes.
    pub volumes: usize,
    /// Number of snapshots.
    pub snapshots: usize,
    /// Number of layers, including hidden ("ghost") layers.
    pub layers: usize,
}

/// Description of a live volume.
///
/// `mapped_bytes` and `reserved_bytes` are exact and current. `unique_bytes` and `shared_bytes`
/// are exact as of `space_reconciled_at` (see [`crate::Pool::reconcile_space`]); `space_exact`
/// tells whether anything changed since.
#[derive(Clone, Debug)]
pub struct VolumeInfo {
    /// Volume name.
    pub name: String,
    /// Stable identity (survives rename).
    pub uuid: uuid::Uuid,
    /// Logical size in bytes.
    pub size_bytes: u64,
    /// Logical block size: 512 or 4096.
    pub block_size: u32,
    /// Space guarantee.
    pub guarantee: Guarantee,
    /// Bytes of logical chunks that resolve to data.
    pub mapped_bytes: u64,
    /// Bytes reachable only through this volume (freed if it is deleted; `delete_volume` also
    /// deletes the volume's snapshots, which frees their `unique_bytes` and what only they and
    /// the volume share). Never more than `mapped_bytes`, even when not `space_exact`.
    pub unique_bytes: u64,
    /// `mapped - unique`.
    pub shared_bytes: u64,
    /// Bytes reserved for this volume's future writes (full guarantee only).
    pub reserved_bytes: u64,
    /// Source this volume was cloned from ("vol@snap" or "vol"), if any.
    pub origin: Option<String>,
    /// Creation time, seconds since the Unix epoch.
    pub created_unix: u64,
    /// Whether unique/shared are current (no change since the last reconcile).
    pub space_exact: bool,
    /// When unique/shared were last reconciled, seconds since the Unix epoch.
    pub space_reconciled_at: u64,
    /// Number of snapshots of this volume.
    pub snapshots: usize,
}

/// Description of a snapshot. Same exactness rules as [`VolumeInfo`].
#[derive(Clone, Debug)]
pub struct SnapshotInfo {
    /// Name of the volume the snapshot belongs to.
    pub volume: String,
    /// Snapshot name.
    pub name: String,
    /// Stable identity.
    pub uuid: uuid::Uuid,
    /// Logical size at snapshot time.
    pub size_bytes: u64,
    /// Bytes of logical chunks that resolve to data.
    pub mapped_bytes: u64,
    /// Bytes reachable only through this snapshot.
    pub unique_bytes: u64,
    /// `mapped - unique`.
    pub shared_bytes: u64,
    /// Creation time, seconds since the Unix epoch.
    pub created_unix: u64,
    /// Whether unique/shared are current.
    pub space_exact: bool,
    /// When unique/shared were last reconciled, seconds since the Unix epoch.
    pub space_reconciled_at: u64,
}

/// Result of [`crate::Pool::check`]: every invariant verified, problems listed.
#[derive(Clone, Debug, Default)]
pub struct CheckReport {
    /// Layers examined.
    pub layers: usize,
    /// Chunks found owned by a layer.
    pub owned_chunks: u64,
    /// Chunks marked used in the allocator but owned by no layer.
    pub leaked_chunks: u64,
    /// Human-readable description of every violated invariant.
    pub errors: Vec<String>,
}

impl CheckReport {
    /// True when no invariant is violated.
    pub fn is_clean(&self) -> bool {
        self.errors.is_empty() && self.leaked_chunks == 0
    }
}

/// Cumulative pool activity since it was opened ([`crate::Pool::stats`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// First writes into a chunk the volume resolved through an ancestor (or a hole in its
    /// own top): a private chunk was allocated while the old one stays with its owner.
    pub cow_ops: u64,
    /// Bytes carried over from the old chunk by partial first writes into shared chunks: the
    /// chunk size minus the bytes written (a whole-chunk first write copies nothing).
    pub cow_bytes: u64,
    /// Metadata commits (one per group commit).
    pub commits: u64,
    /// `fdatasync` calls of the commit path: two per commit while data writes are pending
    /// (data, then the seal), one when the data is already durable (an idle snapshot).
    pub syncs: u64,
    /// Entries in the volumes' deep-chain resolution caches (current, not cumulative; each
    /// costs about 16 bytes plus hash-table overhead; see `chaincache`).
    pub chain_cache_entries: u64,
}

/// What a received delta applies to ([`crate::Pool::receive_begin`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReceiveBase {
    /// A full stream: the replica volume must not exist; it is created on commit.
    New,
    /// An increment on `volume@snapshot` of this pool, whose uuid must be `uuid` (the
    /// sender's uuid of the same snapshot, kept when it was received).
    Snapshot {
        /// Base snapshot name on the replica volume.
        snapshot: String,
        /// Its uuid (the sender's).
        uuid: uuid::Uuid,
    },
    /// A clone sent as an increment from its origin: the replica volume must not exist and
    /// is created on commit as a clone of `volume@snapshot` of this pool (uuid must match),
    /// sharing its chunks.
    Origin {
        /// Volume holding the origin snapshot on this pool.
        volume: String,
        /// Origin snapshot name.
        snapshot: String,
        /// Its uuid (the sender's).
        uuid: uuid::Uuid,
    },
}

/// A delta to apply: which volume, on top of what, and the snapshot it produces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReceiveSpec {
    /// The replica volume on this pool.
    pub volume: String,
    /// What the delta applies to.
    pub base: ReceiveBase,
    /// Name of the snapshot that appears on commit.
    pub snapshot: String,
    /// The sender's snapshot uuid, kept on the received snapshot (the next increment names
    /// it as its base).
    pub snapshot_uuid: uuid::Uuid,
    /// Size of the snapshot in bytes (the volume takes this size on commit).
    pub size_bytes: u64,
    /// Logical block size: 512 or 4096.
    pub block_size: u32,
}

/// A receive in progress, as [`crate::Pool::receives`] lists it (survives restarts).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReceiveState {
    /// What is being received.
    pub spec: ReceiveSpec,
    /// Resume point: every chunk index below it is staged durably; the sender restarts here.
    pub next_index: u64,
    /// Bytes of data chunks staged so far (counted in the pool's used space).
    pub staged_bytes: u64,
    /// When the receive began, seconds since the Unix epoch.
    pub started_unix: u64,
}
