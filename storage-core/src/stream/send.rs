//! Sending: a snapshot (or its difference from an ancestor) as a stream to any writer.
//!
//! The chunks are read a few at a time concurrently ([`READ_AHEAD`]) and written in index
//! order, so neither the reads nor the writer wait for each other on a fast path.

use std::sync::atomic::Ordering;

use futures_util::stream::{self, StreamExt};
use tokio::io::{AsyncWrite, AsyncWriteExt};

use super::encode::Encoder;
use super::error::StreamError;
use super::format::{
    StreamHeader, StreamKind, StreamSnapshot, Trailer, DATA_PREFIX, END_LEN, HOLE_LEN,
};
use super::gather::Gather;
use super::progress::StreamProgress;
use super::token::ResumeToken;
use crate::{ChunkDelta, Pool, SnapshotDelta, SnapshotRef};

/// Chunks read ahead of the writer.
pub const READ_AHEAD: usize = 8;

/// What to send.
#[derive(Clone, Debug)]
pub struct SendRequest {
    /// The base: an earlier snapshot of the same volume, or the origin snapshot of a clone
    /// (or an earlier snapshot of that origin). `None`: the whole snapshot.
    pub from: Option<SnapshotRef>,
    /// The snapshot to send.
    pub to: SnapshotRef,
    /// Resume an interrupted transfer: the receiver's token.
    pub resume: Option<ResumeToken>,
}

/// What was sent.
#[derive(Clone, Debug)]
pub struct SendSummary {
    /// The stream's header.
    pub header: StreamHeader,
    /// Its trailer.
    pub trailer: Trailer,
    /// Stream bytes written.
    pub bytes: u64,
}

/// One record to produce.
enum Item {
    Data(u64),
    Hole(u64, u64),
}

/// Records for the changes from `start` on: DATA per data chunk, HOLE per run of
/// consecutive zero chunks.
fn items(changes: &[ChunkDelta], start: u64) -> Vec<Item> {
    let mut out: Vec<Item> = Vec::new();
    for c in changes.iter().filter(|c| c.index >= start) {
        if c.data {
            out.push(Item::Data(c.index));
            continue;
        }
        match out.last_mut() {
            Some(Item::Hole(i, run)) if *i + *run == c.index => *run += 1,
            _ => out.push(Item::Hole(c.index, 1)),
        }
    }
    out
}

/// The stream header for a delta.
fn header_for(
    pool: &Pool,
    delta: &SnapshotDelta,
    start: u64,
    change_count: u64,
) -> Result<StreamHeader, StreamError> {
    let to = StreamSnapshot {
        volume: delta.to.volume.clone(),
        snapshot: delta.to.snapshot.clone(),
        uuid: delta.to_uuid,
    };
    let (kind, from) = match (&delta.from, delta.from_uuid) {
        (Some(f), Some(uuid)) => (
            if f.volume == delta.to.volume {
                StreamKind::Increment
            } else {
                StreamKind::CloneFromOrigin
            },
            Some(StreamSnapshot {
                volume: f.volume.clone(),
                snapshot: f.snapshot.clone(),
                uuid,
            }),
        ),
        _ => (StreamKind::Full, None),
    };
    Ok(StreamHeader {
        kind,
        stream_id: uuid::Uuid::new_v4(),
        source_pool: pool.status().uuid,
        to,
        from,
        size_bytes: delta.size_bytes,
        block_size: delta.block_size,
        chunk_size: delta.chunk_size,
        change_count,
        start_index: start,
    })
}

/// A send whose delta and header are computed and nothing written yet: lets a caller
/// report an error (not an ancestor, a resume token for another stream) before it commits
/// its output to a stream.
pub struct PreparedSend {
    pool: Pool,
    to: SnapshotRef,
    header: StreamHeader,
    items: Vec<Item>,
}

impl std::fmt::Debug for PreparedSend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreparedSend")
            .field("header", &self.header)
            .field("records", &self.items.len())
            .finish()
    }
}

/// Computes what `req` sends. A resume token must name the same `to` and `from`
/// snapshots. `from` not an ancestor of `to`: `StreamError::Storage(StorageError::NotAncestor)`.
pub fn prepare_send(pool: &Pool, req: &SendRequest) -> Result<PreparedSend, StreamError> {
    let delta = pool.snapshot_delta(req.from.as_ref(), &req.to)?;
    let start = match &req.resume {
        None => 0,
        Some(t) => {
            if t.to_uuid != delta.to_uuid || t.from_uuid != delta.from_uuid {
                return Err(StreamError::ResumeMismatch(format!(
                    "the token is for the stream of snapshot {} from {}, not of {} ({}) from {}",
                    t.to_uuid,
                    t.from_uuid
                        .map_or("nothing (full)".into(), |u| u.to_string()),
                    req.to,
                    delta.to_uuid,
                    delta
                        .from_uuid
                        .map_or("nothing (full)".into(), |u| u.to_string()),
                )));
            }
            t.next_index
        }
    };
    let items = items(&delta.changes, start);
    let change_count: u64 = items
        .iter()
        .map(|i| match i {
            Item::Data(_) => 1,
            Item::Hole(_, run) => *run,
        })
        .sum();
    let header = header_for(pool, &delta, start, change_count)?;
    header.validate()?;
    Ok(PreparedSend {
        pool: pool.clone(),
        to: req.to.clone(),
        header,
        items,
    })
}

/// Writes the stream of `req` to `w`: header, records, END; flushes at the end
/// ([`prepare_send`] then [`PreparedSend::write_to`]).
pub async fn send<W>(
    pool: &Pool,
    req: &SendRequest,
    w: W,
    progress: &StreamProgress,
) -> Result<SendSummary, StreamError>
where
    W: AsyncWrite + Unpin + Send,
{
    prepare_send(pool, req)?.write_to(w, progress).await
}

impl PreparedSend {
    /// The header the stream will start with.
    pub fn header(&self) -> &StreamHeader {
        &self.header
    }

    /// Payload bytes the stream will carry (DATA records).
    pub fn payload_bytes(&self) -> u64 {
        self.items
            .iter()
            .map(|i| match i {
                Item::Data(index) => self.header.chunk_len(*index),
                Item::Hole(..) => 0,
            })
            .sum()
    }

    /// The exact length of the stream [`PreparedSend::write_to`] will write: header,
    /// records, END (what a progress report divides by).
    pub fn stream_bytes(&self) -> Result<u64, StreamError> {
        let head = self.header.encode()?.len() as u64;
        let records: u64 = self
            .items
            .iter()
            .map(|i| match i {
                Item::Data(index) => DATA_PREFIX as u64 + self.header.chunk_len(*index) + 4,
                Item::Hole(..) => HOLE_LEN as u64,
            })
            .sum();
        Ok(head + records + END_LEN as u64)
    }

    /// Writes the stream to `w`, reading chunks [`READ_AHEAD`] at a time.
    pub async fn write_to<W>(
        self,
        w: W,
        progress: &StreamProgress,
    ) -> Result<SendSummary, StreamError>
    where
        W: AsyncWrite + Unpin + Send,
    {
        let PreparedSend {
            pool,
            to,
            header,
            items,
        } = self;
        let (mut enc, head) = Encoder::new(header.clone())?;
        progress.begin(header.change_count);
        tracing::info!(
            stream = %header.stream_id,
            kind = header.kind.as_str(),
            to = %header.to,
            from = ?header.from.as_ref().map(ToString::to_string),
            changes = header.change_count,
            start_index = header.start_index,
            "replication send started"
        );
        // Framing and payloads are gathered and go out in large vectored writes, payloads
        // straight from the chunks read (gather.rs).
        let mut w = w;
        let mut batch = Gather::default();
        let mut bytes = 0u64;
        let werr = |e| StreamError::io("writing the replication stream", e);
        batch.framing(&head);
        bytes += head.len() as u64;
        progress.bytes.fetch_add(bytes, Ordering::Relaxed);

        let (pool, to) = (&pool, &to);
        let mut reads = stream::iter(items)
            .map(|item| async move {
                match item {
                    Item::Data(i) => pool
                        .read_snapshot_chunk(to, i)
                        .await
                        .map(|d| (i, 0, Some(d))),
                    Item::Hole(i, run) => Ok((i, run, None)),
                }
            })
            .buffered(READ_AHEAD);
        while let Some(r) = reads.next().await {
            let (index, run, data) = r?;
            let (n, done) = match data {
                Some(d) => {
                    let (prefix, crc) = enc.data(index, &d)?;
                    let n = (prefix.len() + d.len() + crc.len()) as u64;
                    batch.framing(&prefix);
                    batch.payload(d);
                    batch.framing(&crc);
                    (n, 1)
                }
                None => {
                    let rec = enc.hole(index, run)?;
                    batch.framing(&rec);
                    (rec.len() as u64, run)
                }
            };
            if batch.full() {
                batch.write_to(&mut w).await.map_err(werr)?;
            }
            bytes += n;
            progress.bytes.fetch_add(n, Ordering::Relaxed);
            progress.records.fetch_add(1, Ordering::Relaxed);
            progress.changes_done.fetch_add(done, Ordering::Relaxed);
        }
        let (end, trailer) = enc.end()?;
        batch.framing(&end);
        batch.write_to(&mut w).await.map_err(werr)?;
        w.flush().await.map_err(werr)?;
        bytes += end.len() as u64;
        progress
            .bytes
            .fetch_add(end.len() as u64, Ordering::Relaxed);
        tracing::info!(
            stream = %header.stream_id,
            records = trailer.records,
            bytes,
            "replication send finished"
        );
        Ok(SendSummary {
            header,
            trailer,
            bytes,
        })
    }
}
