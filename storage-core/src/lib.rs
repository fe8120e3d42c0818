//! Lunar's shared thin-provisioned block store. Knows nothing about SCSI.
//!
//! One pool (a file, a block device or a directory holding `pool.img`) stores any number of
//! thin volumes with O(1) snapshots and writable clones. The clone engine is the "layered
//! ownership" model of docs/decisions/0001-clone-engine.md: every physical chunk is owned by
//! exactly one layer, so space figures are plain counters. The on-disk format is described in
//! docs/storage-format.md.

mod alloc;
#[cfg(feature = "ceph")]
pub mod ceph;
mod chaincache;
mod changes;
mod check;
mod checkpoint;
mod chunkmap;
mod clock;
mod codec;
mod commit;
mod commit_queue;
pub mod completion;
mod device;
mod diff;
mod engine;
mod error;
mod footprint;
mod group;
mod io;
mod journal;
mod layer;
mod open;
mod pool;
mod receive;
mod space;
mod split;
pub mod stream;
mod superblock;
#[cfg(test)]
mod testutil;
mod types;
mod volume;

pub use diff::{ChangedRange, ChunkDelta, SnapshotDelta, SnapshotRef};
pub use error::{Result, StorageError};
pub use pool::Pool;
pub use receive::Receive;
pub use split::SplitJob;
pub use superblock::FORMAT_VERSION;
pub use types::{
    CheckReport, Guarantee, PoolOptions, PoolStats, PoolStatus, ReceiveBase, ReceiveSpec,
    ReceiveState, SnapshotInfo, SoftThreshold, VolumeInfo, DEFAULT_CHUNK_SIZE,
};
pub use volume::Volume;
