//! Replication streams at the LUN level (issue 18): what `replica.send`, `replica.receive`,
//! `replica.receive_status`, `replica.receive_abort` and `snapshot.diff` do, on top of
//! `storage_core::stream`. The byte transport (admin socket, TLS link) is the caller's.
//!
//! A replica volume is a LUN exported write-protected (`read_only`, DATA PROTECT / WRITE
//! PROTECTED to initiators): a receive into a LUN that is writable is refused, and a volume a
//! full or clone stream creates becomes a read-only unmapped LUN when it commits. Its
//! contents change only at the commit (the engine applies the increment in a hidden staging
//! layer), so initiators reading the replica see one snapshot or the next, never a mix.

use serde::{Deserialize, Serialize};
use storage_core::stream::{
    self, PendingReceive, PreparedSend, ReceiveRequest, ReceiveSummary, ResumeToken, SendRequest,
    StreamProgress,
};
use storage_core::{Pool, SnapshotRef};
use tokio::io::AsyncRead;

use super::state::{LunRecord, LunStatus};
use super::{lun_rec, now_unix, LunManager, MgrError, MgrResult, ObjectKind};

/// What `replica.send` streams, as told before the stream bytes.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SendPlan {
    /// `full`, `increment` or `clone`.
    pub kind: String,
    /// `volume@snapshot` sent.
    pub to: String,
    /// Base `volume@snapshot`, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// Random stream id (in both ends' logs).
    pub stream_id: String,
    /// Changed chunks carried.
    pub changes: u64,
    /// Payload bytes carried (the stream is a little longer).
    pub payload_bytes: u64,
    /// First chunk index (non-zero when resuming).
    pub start_index: u64,
}

/// `replica.receive`'s result.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Received {
    /// Pool it was received into.
    pub pool: String,
    /// The replica volume (a read-only LUN).
    pub volume: String,
    /// The snapshot that appeared.
    pub snapshot: String,
    /// `full`, `increment` or `clone`.
    pub kind: String,
    /// Chunk index the transfer started at (non-zero: resumed).
    pub resumed_from: u64,
    /// Stream bytes read.
    pub bytes: u64,
    /// Records applied.
    pub records: u64,
}

/// One interrupted receive (`replica.receive_status`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PendingReceiveView {
    /// Pool.
    pub pool: String,
    /// Replica volume.
    pub volume: String,
    /// Snapshot being received.
    pub snapshot: String,
    /// Base `volume@snapshot`, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<String>,
    /// Give this to `lunarctl replica send --resume`.
    pub resume_token: String,
    /// First chunk not received yet.
    pub next_index: u64,
    /// Bytes staged.
    pub staged_bytes: u64,
    /// When it began, seconds since the Unix epoch.
    pub started_unix: u64,
}

/// One changed range (`snapshot.diff`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct DiffRange {
    /// First logical block.
    pub lba: u64,
    /// Number of blocks.
    pub blocks: u64,
    /// Holds data in the later snapshot (`false`: reads as zeros there).
    pub data: bool,
}

/// `snapshot.diff`'s result: the changed-block list between two snapshots.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SnapshotDiff {
    /// The LUN.
    pub lun: String,
    /// The earlier snapshot (`None`: everything `to` holds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// The later snapshot.
    pub to: String,
    /// Logical block size of the ranges.
    pub block_size: u32,
    /// Size of `to` in bytes.
    pub size_bytes: u64,
    /// Ascending, non-overlapping ranges.
    pub ranges: Vec<DiffRange>,
    /// Sum of the ranges' lengths in bytes.
    pub changed_bytes: u64,
}

/// `base` of a send or diff: `snap` (a snapshot of the same volume) or `vol@snap` (the
/// origin of a clone, or an earlier snapshot of it).
fn base_ref(volume: &str, from: &str) -> SnapshotRef {
    match from.split_once('@') {
        Some((v, s)) => SnapshotRef::new(v, s),
        None => SnapshotRef::new(volume, from),
    }
}

impl LunManager {
    /// The pool of `volume`: the LUN's pool when a LUN has that name, else the default pool.
    async fn volume_pool(&self, volume: &str) -> MgrResult<(String, Pool)> {
        let st = self.lock().await;
        if st.luns.contains_key(volume) {
            return self.lun_pool(&st, volume);
        }
        let name = self.default_pool();
        let pool = self.pool_named(&name)?;
        Ok((name, pool))
    }

    /// The pool named `pool`, or the default pool.
    fn pool_or_default(&self, pool: Option<&str>) -> MgrResult<(String, Pool)> {
        let name = pool.map_or_else(|| self.default_pool(), str::to_string);
        let p = self.pool_named(&name)?;
        Ok((name, p))
    }

    /// Prepares the stream of `volume@snapshot` (from `from`: a snapshot of the same volume
    /// or `vol@snap` of its clone origin; `None`: full). Nothing is written yet: errors come
    /// back before the caller starts the byte stream.
    pub async fn replica_prepare_send(
        &self,
        volume: &str,
        snapshot: &str,
        from: Option<&str>,
        resume: Option<&str>,
    ) -> MgrResult<(PreparedSend, SendPlan)> {
        let (_, pool) = self.volume_pool(volume).await?;
        let resume = resume
            .map(str::parse::<ResumeToken>)
            .transpose()
            .map_err(MgrError::from)?;
        let req = SendRequest {
            from: from.map(|f| base_ref(volume, f)),
            to: SnapshotRef::new(volume, snapshot),
            resume,
        };
        let prepared = stream::prepare_send(&pool, &req)?;
        let h = prepared.header();
        let plan = SendPlan {
            kind: h.kind.as_str().to_string(),
            to: req.to.to_string(),
            from: req.from.as_ref().map(ToString::to_string),
            stream_id: h.stream_id.to_string(),
            changes: h.change_count,
            payload_bytes: prepared.payload_bytes(),
            start_index: h.start_index,
        };
        Ok((prepared, plan))
    }

    /// Refuses a receive into a LUN that initiators may write: a replica must be
    /// write-protected while (and after) it receives.
    async fn replica_receive_guard(&self, pool: &str, volume: &str) -> MgrResult<()> {
        let st = self.lock().await;
        if let Some(rec) = st.luns.get(volume) {
            if self.pool_name_of(rec) != pool {
                return Err(MgrError::CrossPool {
                    what: "replica receive",
                    lun: volume.to_string(),
                    pool: self.pool_name_of(rec),
                    other: pool.to_string(),
                });
            }
            if !rec.read_only {
                return Err(MgrError::InvalidValue {
                    what: "replica volume",
                    value: format!("{volume:?}"),
                    reason: "it is a writable LUN: a replica must be write-protected \
                             (lunarctl lun set --read-only true)"
                        .into(),
                });
            }
        }
        Ok(())
    }

    /// A volume a receive created becomes a write-protected unmapped LUN.
    async fn replica_received(&self, pool_name: &str, pool: &Pool, volume: &str) -> MgrResult<()> {
        let mut st = self.lock().await;
        if st.luns.contains_key(volume) {
            return Ok(());
        }
        let v = pool.volume_info(volume).map_err(self.in_pool(pool_name))?;
        st.luns.insert(
            volume.to_string(),
            LunRecord {
                name: volume.to_string(),
                identity: v.uuid,
                read_only: true,
                status: LunStatus::Online,
                origin: v.origin.clone(),
                clone_mode: v.origin.as_ref().map(|_| super::state::CloneMode::Linked),
                created_unix: now_unix(),
                pool: pool_name.to_string(),
                geometry: None,
            },
        );
        self.save(&st)
    }

    /// Receives one stream from `r` into replica volume `volume` of `pool` (default pool when
    /// `None`). A clone stream's origin must be a snapshot of one of `origins` (`None`: any
    /// volume). On a cut or storage failure the error carries the resume token.
    pub async fn replica_receive<R>(
        &self,
        pool: Option<&str>,
        volume: &str,
        origins: Option<Vec<String>>,
        r: R,
        progress: &StreamProgress,
    ) -> MgrResult<Received>
    where
        R: AsyncRead + Unpin + Send,
    {
        super::check_name(ObjectKind::Lun, volume)?;
        let (pool_name, p) = self.pool_or_default(pool)?;
        self.replica_receive_guard(&pool_name, volume).await?;
        let req = ReceiveRequest {
            volume: Some(volume.to_string()),
            origins,
        };
        let sum: ReceiveSummary = stream::receive(&p, &req, r, progress).await?;
        self.replica_received(&pool_name, &p, volume).await?;
        Ok(Received {
            pool: pool_name,
            volume: sum.volume,
            snapshot: sum.snapshot.name,
            kind: sum.kind.as_str().to_string(),
            resumed_from: sum.resumed_from,
            bytes: sum.bytes,
            records: sum.records,
        })
    }

    /// Receives one stream like [`LunManager::replica_receive`] but stages it without a
    /// commit (a member of a replicated consistency group): nothing of it is visible until
    /// [`LunManager::replica_commit_group`] commits it with the other members. Returns the
    /// pool's name and the staged receive.
    pub async fn replica_receive_staged<R>(
        &self,
        volume: &str,
        origins: Option<Vec<String>>,
        r: R,
        progress: &StreamProgress,
    ) -> MgrResult<(String, stream::StagedReceive)>
    where
        R: AsyncRead + Unpin + Send,
    {
        super::check_name(ObjectKind::Lun, volume)?;
        let (pool_name, p) = self.replica_pool(volume).await?;
        self.replica_receive_guard(&pool_name, volume).await?;
        let req = ReceiveRequest {
            volume: Some(volume.to_string()),
            origins,
        };
        let staged = stream::receive_staged(&p, &req, r, progress).await?;
        Ok((pool_name, staged))
    }

    /// Commits the staged receives of a replicated consistency group's members in pool
    /// `pool_name` at once (`Pool::receive_commit_group`: one journal block, all or none;
    /// on an error every staging stays for a resume). Volumes a full or clone stream
    /// created become write-protected unmapped LUNs. Returns the snapshots, in order.
    pub async fn replica_commit_group(
        &self,
        pool_name: &str,
        receives: Vec<storage_core::Receive>,
    ) -> MgrResult<Vec<storage_core::SnapshotInfo>> {
        let p = self.pool_named(pool_name)?;
        let volumes: Vec<String> = receives.iter().map(|r| r.spec().volume.clone()).collect();
        for v in &volumes {
            self.replica_receive_guard(pool_name, v).await?;
        }
        let snaps = p
            .receive_commit_group(receives)
            .await
            .map_err(self.in_pool(pool_name))?;
        for v in &volumes {
            self.replica_received(pool_name, &p, v).await?;
        }
        tracing::info!(pool = %pool_name, volumes = ?volumes, "replicated group committed");
        Ok(snaps)
    }

    /// Interrupted receives of `pool` (every open pool when `None`), with resume tokens.
    pub fn replica_receive_status(&self, pool: Option<&str>) -> MgrResult<Vec<PendingReceiveView>> {
        let pools = match pool {
            Some(name) => vec![(name.to_string(), self.pool_named(name)?)],
            None => self.open_pools(),
        };
        Ok(pools
            .into_iter()
            .flat_map(|(name, p)| {
                stream::pending_receives(&p)
                    .into_iter()
                    .map(move |r: PendingReceive| PendingReceiveView {
                        pool: name.clone(),
                        volume: r.volume,
                        snapshot: r.snapshot,
                        base: r.base,
                        resume_token: r.token.to_string(),
                        next_index: r.next_index,
                        staged_bytes: r.staged_bytes,
                        started_unix: r.started_unix,
                    })
            })
            .collect())
    }

    /// Drops the staged state of `volume`'s interrupted receive.
    pub async fn replica_receive_abort(&self, pool: Option<&str>, volume: &str) -> MgrResult<()> {
        let (name, p) = self.pool_or_default(pool)?;
        stream::abort_pending(&p, volume)
            .await
            .map_err(self.in_pool(&name))?;
        tracing::info!(pool = %name, volume, "staged replica receive aborted");
        Ok(())
    }

    /// The changed-block list between `lun@from` (a snapshot of the LUN or `vol@snap` of its
    /// clone origin; `None`: everything) and `lun@to`.
    pub async fn snapshot_diff(
        &self,
        lun: &str,
        from: Option<&str>,
        to: &str,
    ) -> MgrResult<SnapshotDiff> {
        let (pool_name, pool) = {
            let st = self.lock().await;
            lun_rec(&st, lun)?;
            self.lun_pool(&st, lun)?
        };
        let from_ref = from.map(|f| base_ref(lun, f));
        let delta = pool
            .snapshot_delta(from_ref.as_ref(), &SnapshotRef::new(lun, to))
            .map_err(self.in_pool(&pool_name))?;
        let bs = u64::from(delta.block_size);
        let ranges: Vec<DiffRange> = delta
            .changed_ranges()
            .into_iter()
            .map(|r| DiffRange {
                lba: r.lba,
                blocks: r.blocks,
                data: r.data,
            })
            .collect();
        Ok(SnapshotDiff {
            lun: lun.to_string(),
            from: from_ref.as_ref().map(ToString::to_string),
            to: format!("{lun}@{to}"),
            block_size: delta.block_size,
            size_bytes: delta.size_bytes,
            changed_bytes: ranges.iter().map(|r| r.blocks * bs).sum(),
            ranges,
        })
    }
}
