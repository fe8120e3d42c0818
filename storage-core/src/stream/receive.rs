//! Receiving: a stream from any reader, checked against this pool, applied through the
//! engine's staged receive ([`crate::Pool::receive_begin`]) and committed only once its END
//! trailer verifies. The replica volume's visible contents change at the commit and nowhere
//! else.
//!
//! What happens to the staged state when a transfer fails:
//! - the stream is cut (EOF before END, a read error) or the pool fails (no space): what was
//!   applied is saved durably and kept; the error carries the resume token, and the same
//!   stream sent again from the token's index (or from the start: records the receive holds
//!   already are checked and skipped) finishes it;
//! - the stream proves corrupt (a bad CRC, an index out of order, an END that does not match
//!   what came): the staged receive is aborted as a whole, because a record missing earlier in
//!   the stream is only detectable at END, so nothing staged from it can be trusted to be
//!   complete. The next transfer starts from scratch.
//!
//! Everything the header says is checked against the pool before anything is staged: a
//! replayed stream, a missing base, a resumed stream that does not continue the interrupted
//! one are refused with their own error and leave the pool untouched.

use std::sync::atomic::Ordering;

use tokio::io::{AsyncRead, AsyncReadExt};

use super::decode::{Decoder, Event, Record};
use super::error::StreamError;
use super::format::{StreamHeader, StreamKind, MAX_HEADER};
use super::progress::StreamProgress;
use super::token::ResumeToken;
use crate::{Pool, Receive, ReceiveBase, ReceiveSpec, ReceiveState, SnapshotInfo, StorageError};

/// Bytes applied between two durable progress saves...
pub const SAVE_EVERY_BYTES: u64 = 64 << 20;
/// ...or time between two saves when something was applied (a slow link loses at most this
/// much work to a crash).
pub const SAVE_EVERY: std::time::Duration = std::time::Duration::from_secs(1);
/// Size of one read from the stream.
const READ_SIZE: usize = 256 << 10;

/// Where to receive.
#[derive(Clone, Debug, Default)]
pub struct ReceiveRequest {
    /// The replica volume on this pool; default: the stream's volume name.
    pub volume: Option<String>,
    /// The volumes a clone stream's origin may be a snapshot of (`None`: any volume of the
    /// pool). A peer replicating over a link may base a clone only on what it replicated
    /// here; an origin elsewhere is [`StreamError::BaseMissing`] to it, as if absent.
    pub origins: Option<Vec<String>>,
}

/// What was received.
#[derive(Clone, Debug)]
pub struct ReceiveSummary {
    /// The replica volume.
    pub volume: String,
    /// The snapshot that appeared.
    pub snapshot: SnapshotInfo,
    /// Full, increment or clone.
    pub kind: StreamKind,
    /// Chunk index the transfer started at (non-zero: it resumed an interrupted one).
    pub resumed_from: u64,
    /// Stream bytes read.
    pub bytes: u64,
    /// Records applied (records the receive held already excluded).
    pub records: u64,
}

/// A failed receive: the cause, and the token to resume with if the staged state was kept.
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub struct ReceiveError {
    /// Why it failed.
    #[source]
    pub error: StreamError,
    /// Set when the staged state was kept: give it to the sender to continue.
    pub resume: Option<ResumeToken>,
}

impl From<StreamError> for ReceiveError {
    fn from(error: StreamError) -> Self {
        ReceiveError {
            error,
            resume: None,
        }
    }
}

/// An interrupted receive waiting to be resumed.
#[derive(Clone, Debug, serde::Serialize)]
pub struct PendingReceive {
    /// The replica volume.
    pub volume: String,
    /// The snapshot it is receiving.
    pub snapshot: String,
    /// The base snapshot (`volume@snapshot` on this pool), `None` for a full stream.
    pub base: Option<String>,
    /// Give this to the sender (`--resume`).
    pub token: ResumeToken,
    /// First chunk not received yet.
    pub next_index: u64,
    /// Bytes staged so far.
    pub staged_bytes: u64,
    /// When the receive began, seconds since the Unix epoch.
    pub started_unix: u64,
}

/// The resume token of what is staged for `volume` (what the sender resumes after a
/// failure), if a receive is staged there.
fn staged_token(pool: &Pool, volume: &str) -> Option<ResumeToken> {
    pool.receives()
        .iter()
        .find(|s| s.spec.volume == volume)
        .map(token_of)
}

/// The resume token of a receive in progress.
pub fn token_of(state: &ReceiveState) -> ResumeToken {
    ResumeToken {
        to_uuid: state.spec.snapshot_uuid,
        from_uuid: base_uuid(&state.spec.base),
        next_index: state.next_index,
    }
}

fn base_uuid(b: &ReceiveBase) -> Option<uuid::Uuid> {
    match b {
        ReceiveBase::New => None,
        ReceiveBase::Snapshot { uuid, .. } | ReceiveBase::Origin { uuid, .. } => Some(*uuid),
    }
}

/// Every receive in progress on `pool`, with its resume token.
pub fn pending_receives(pool: &Pool) -> Vec<PendingReceive> {
    pool.receives()
        .into_iter()
        .map(|s| PendingReceive {
            volume: s.spec.volume.clone(),
            snapshot: s.spec.snapshot.clone(),
            base: match &s.spec.base {
                ReceiveBase::New => None,
                ReceiveBase::Snapshot { snapshot, .. } => {
                    Some(format!("{}@{snapshot}", s.spec.volume))
                }
                ReceiveBase::Origin {
                    volume, snapshot, ..
                } => Some(format!("{volume}@{snapshot}")),
            },
            token: token_of(&s),
            next_index: s.next_index,
            staged_bytes: s.staged_bytes,
            started_unix: s.started_unix,
        })
        .collect()
}

/// Decides what the stream applies to on this pool, or why it cannot. Reads the pool only.
/// `origins`: the volumes a clone stream's origin may belong to (`None`: any).
pub fn plan(
    pool: &Pool,
    h: &StreamHeader,
    volume: &str,
    origins: Option<&[String]>,
) -> Result<ReceiveSpec, StreamError> {
    let chunk_size = pool.status().chunk_size;
    if chunk_size != h.chunk_size {
        return Err(StreamError::Incompatible(format!(
            "the stream has {} byte chunks, this pool {chunk_size} byte chunks",
            h.chunk_size
        )));
    }
    let pending = pool
        .receives()
        .into_iter()
        .find(|s| s.spec.volume == volume);
    if let Some(p) = pending {
        let from = h.from.as_ref().map(|f| f.uuid);
        if p.spec.snapshot_uuid != h.to.uuid || base_uuid(&p.spec.base) != from {
            return Err(StreamError::ResumeMismatch(format!(
                "volume {volume} has an interrupted receive of snapshot {} ({}); this stream \
                 is {}: finish that one (lunarctl replica receive-status shows its token) or \
                 abort it (lunarctl replica receive-abort)",
                p.spec.snapshot, p.spec.snapshot_uuid, h.to
            )));
        }
        if h.start_index > p.next_index {
            return Err(StreamError::ResumeMismatch(format!(
                "the stream starts at chunk {} but the receive of {volume}@{} resumes at chunk \
                 {}: send it with the current resume token {}",
                h.start_index,
                p.spec.snapshot,
                p.next_index,
                token_of(&p)
            )));
        }
        return Ok(p.spec);
    }
    if h.start_index != 0 {
        return Err(StreamError::ResumeMismatch(format!(
            "the stream resumes at chunk {} but volume {volume} has no interrupted receive \
             (it was committed or aborted): send it again without a token",
            h.start_index
        )));
    }
    let all = pool.snapshots(None);
    if let Some(s) = all.iter().find(|s| s.uuid == h.to.uuid) {
        return Err(StreamError::Replayed {
            volume: s.volume.clone(),
            snapshot: s.name.clone(),
            uuid: s.uuid,
        });
    }
    let exists = pool.volume_info(volume).is_ok();
    let base = match (h.kind, &h.from) {
        (StreamKind::Full, _) | (_, None) => {
            if exists {
                return Err(StreamError::TargetExists(volume.to_string()));
            }
            ReceiveBase::New
        }
        (StreamKind::Increment, Some(f)) => {
            if !exists {
                return Err(StreamError::TargetMissing(volume.to_string()));
            }
            let base = all
                .iter()
                .find(|s| s.volume == volume && s.uuid == f.uuid)
                .ok_or_else(|| StreamError::BaseMissing {
                    base: f.to_string(),
                })?;
            ReceiveBase::Snapshot {
                snapshot: base.name.clone(),
                uuid: f.uuid,
            }
        }
        (StreamKind::CloneFromOrigin, Some(f)) => {
            if exists {
                return Err(StreamError::TargetExists(volume.to_string()));
            }
            let origin = all
                .iter()
                .find(|s| s.uuid == f.uuid && origins.is_none_or(|o| o.contains(&s.volume)))
                .ok_or_else(|| StreamError::BaseMissing {
                    base: f.to_string(),
                })?;
            ReceiveBase::Origin {
                volume: origin.volume.clone(),
                snapshot: origin.name.clone(),
                uuid: f.uuid,
            }
        }
    };
    Ok(ReceiveSpec {
        volume: volume.to_string(),
        base,
        snapshot: h.to.snapshot.clone(),
        snapshot_uuid: h.to.uuid,
        size_bytes: h.size_bytes,
        block_size: h.block_size,
    })
}

/// Reads from `r` until the decoder has the header. Never buffers more than a header plus
/// one read.
async fn read_header<R: AsyncRead + Unpin>(
    r: &mut R,
    dec: &mut Decoder,
) -> Result<StreamHeader, StreamError> {
    loop {
        if let Some(ev) = dec.next_event()? {
            return match ev {
                Event::Header(h) => Ok(*h),
                _ => Err(StreamError::BadMagic),
            };
        }
        if dec.buffer_mut().len() > MAX_HEADER {
            return Err(StreamError::BadHeader("header too long".into()));
        }
        let buf = dec.buffer_mut();
        buf.reserve(MAX_HEADER);
        let n = r
            .read_buf(buf)
            .await
            .map_err(|e| StreamError::io("reading the replication stream", e))?;
        if n == 0 {
            dec.finish()?;
        }
    }
}

/// Receives one stream from `r` into `pool` (see the module comment for what a failure
/// leaves behind). `r` is read to the END trailer and no further.
pub async fn receive<R>(
    pool: &Pool,
    req: &ReceiveRequest,
    r: R,
    progress: &StreamProgress,
) -> Result<ReceiveSummary, ReceiveError>
where
    R: AsyncRead + Unpin + Send,
{
    let staged = receive_to_end(pool, req, r, progress, false).await?;
    let StagedReceive {
        volume,
        receive: rx,
        kind,
        resumed_from,
        bytes,
        records,
    } = staged;
    // A refused commit changes nothing and keeps the staging: resumable (the whole stream
    // is staged, so the token's index is the end).
    let snapshot = match rx.commit().await {
        Ok(s) => s,
        Err(e) => {
            return Err(ReceiveError {
                error: e.into(),
                resume: staged_token(pool, &volume),
            });
        }
    };
    tracing::info!(volume = %volume, snapshot = %snapshot.name, records,
        "replication receive committed");
    Ok(ReceiveSummary {
        volume,
        snapshot,
        kind,
        resumed_from,
        bytes,
        records,
    })
}

/// A stream received to its END and staged, not committed: the handle commits it (alone,
/// or with other members of a consistency group through
/// [`Pool::receive_commit_group`](crate::Pool::receive_commit_group)).
pub struct StagedReceive {
    /// The replica volume.
    pub volume: String,
    /// The staged receive, its progress saved at the stream's end: dropping the handle
    /// leaves it staged (listed by [`pending_receives`], resumable from its token).
    pub receive: Receive,
    /// Full, increment or clone.
    pub kind: StreamKind,
    /// Chunk index the transfer started at.
    pub resumed_from: u64,
    /// Stream bytes read.
    pub bytes: u64,
    /// Records applied.
    pub records: u64,
}

/// Receives one stream from `r` into `pool` like [`receive`] but stops before the commit:
/// the whole stream is staged and its progress saved (a restart lists it with a token at
/// its end), and nothing of it is visible until the returned handle commits. A replicated
/// consistency group stages every member this way, then commits them in one journal block.
pub async fn receive_staged<R>(
    pool: &Pool,
    req: &ReceiveRequest,
    r: R,
    progress: &StreamProgress,
) -> Result<StagedReceive, ReceiveError>
where
    R: AsyncRead + Unpin + Send,
{
    receive_to_end(pool, req, r, progress, true).await
}

/// [`receive_staged`]'s work; `save_at_end`: make the end of the stream the durable resume
/// point (a commit right after needs no such save).
async fn receive_to_end<R>(
    pool: &Pool,
    req: &ReceiveRequest,
    mut r: R,
    progress: &StreamProgress,
    save_at_end: bool,
) -> Result<StagedReceive, ReceiveError>
where
    R: AsyncRead + Unpin + Send,
{
    let mut dec = Decoder::new();
    let h = read_header(&mut r, &mut dec).await?;
    let volume = req.volume.clone().unwrap_or_else(|| h.to.volume.clone());
    let spec = plan(pool, &h, &volume, req.origins.as_deref())?;
    let mut rx = pool.receive_begin(spec).await.map_err(StreamError::from)?;
    let resumed_from = h.start_index;
    let held = rx.next_index();
    progress.begin(h.change_count);
    progress.bytes.fetch_add(dec.offset(), Ordering::Relaxed);
    tracing::info!(
        stream = %h.stream_id,
        kind = h.kind.as_str(),
        to = %h.to,
        volume = %volume,
        start_index = h.start_index,
        held,
        changes = h.change_count,
        "replication receive started"
    );
    match apply(&mut rx, &mut r, &mut dec, held, progress).await {
        Ok(records) => {
            // Durable resume point at the end: after a restart, the sender resumes with
            // a token that sends nothing but the END trailer again.
            let saved = if save_at_end {
                rx.save_progress().await
            } else {
                Ok(())
            };
            if let Err(e) = saved {
                return Err(ReceiveError {
                    error: e.into(),
                    resume: staged_token(pool, &volume),
                });
            }
            tracing::info!(stream = %h.stream_id, volume = %volume, records,
                "replication receive staged to its end");
            Ok(StagedReceive {
                volume,
                receive: rx,
                kind: h.kind,
                resumed_from,
                bytes: dec.offset(),
                records,
            })
        }
        Err(error) if error.is_corrupt_stream() => {
            tracing::warn!(stream = %h.stream_id, volume = %volume, %error,
                "corrupt replication stream: staged receive aborted");
            if let Err(e) = rx.abort().await {
                tracing::warn!(volume = %volume, "aborting the staged receive failed: {e}");
            }
            Err(ReceiveError {
                error,
                resume: None,
            })
        }
        Err(error) => {
            let saved = rx.save_progress().await;
            let resume = match saved {
                Ok(()) => Some(ResumeToken {
                    to_uuid: h.to.uuid,
                    from_uuid: h.from.as_ref().map(|f| f.uuid),
                    next_index: rx.next_index(),
                }),
                Err(e) => {
                    tracing::warn!(volume = %volume, "saving receive progress failed: {e}");
                    staged_token(pool, &volume)
                }
            };
            tracing::warn!(stream = %h.stream_id, volume = %volume, %error,
                resume = ?resume.map(|t| t.to_string()), "replication receive interrupted");
            Err(ReceiveError { error, resume })
        }
    }
}

/// Applies records until END; returns the number applied.
async fn apply<R: AsyncRead + Unpin>(
    rx: &mut Receive,
    r: &mut R,
    dec: &mut Decoder,
    held: u64,
    progress: &StreamProgress,
) -> Result<u64, StreamError> {
    let mut applied = 0u64;
    let mut unsaved = 0u64;
    let mut last_offset = dec.offset();
    let mut saved_at = std::time::Instant::now();
    loop {
        while let Some(ev) = dec.next_event()? {
            let off = dec.offset();
            progress
                .bytes
                .fetch_add(off - last_offset, Ordering::Relaxed);
            unsaved += off - last_offset;
            last_offset = off;
            match ev {
                Event::Header(_) => return Err(StreamError::BadHeader("second header".into())),
                Event::End(_) => {
                    return Ok(applied);
                }
                Event::Record(Record::Data { index, payload }) => {
                    if index >= held {
                        rx.put_chunk(index, payload).await?;
                        applied += 1;
                    }
                    progress.changes_done.fetch_add(1, Ordering::Relaxed);
                }
                Event::Record(Record::Hole { index, run }) => {
                    for i in index.max(held)..index + run {
                        rx.put_hole(i).await?;
                    }
                    if index + run > held {
                        applied += 1;
                    }
                    progress.changes_done.fetch_add(run, Ordering::Relaxed);
                }
            }
            progress.records.fetch_add(1, Ordering::Relaxed);
            if unsaved >= SAVE_EVERY_BYTES || (unsaved > 0 && saved_at.elapsed() >= SAVE_EVERY) {
                rx.save_progress().await?;
                unsaved = 0;
                saved_at = std::time::Instant::now();
            }
        }
        let buf = dec.buffer_mut();
        buf.reserve(READ_SIZE);
        // A stalled sender: what was applied is saved after SAVE_EVERY of waiting (reading
        // is cancel-safe: nothing read is lost when the timeout wins).
        let read = r.read_buf(buf);
        let n = if unsaved > 0 {
            match tokio::time::timeout(SAVE_EVERY, read).await {
                Ok(n) => n,
                Err(_) => {
                    rx.save_progress().await?;
                    unsaved = 0;
                    saved_at = std::time::Instant::now();
                    continue;
                }
            }
        } else {
            read.await
        }
        .map_err(|e| StreamError::io("reading the replication stream", e))?;
        if n == 0 {
            dec.finish()?;
        }
    }
}

/// Drops the staged state of `volume`'s interrupted receive.
pub async fn abort_pending(pool: &Pool, volume: &str) -> Result<(), StorageError> {
    pool.receive_abort(volume).await
}
