//! A small multipath initiator over the test kit's iSCSI initiator, and a writer that
//! writes, reads back and records numbered blocks through it: what a host's multipath
//! (dm-multipath, ESXi NMP, Windows MPIO) does with an ALUA array, reduced to what the
//! failover tests need to observe.
//!
//! One session per gateway (path). Commands go to the current path; a path that closes,
//! resets or does not answer within [`Multipath::cmd_limit`] is failed (its session
//! dropped, to be logged in again later), and so is one answering NOT READY with ASC/ASCQ
//! 04/0B (standby) or 04/0C (unavailable); 04/0A (transitioning) and BUSY retry after a short
//! pause; UNIT ATTENTION retries on the same path (a new nexus, an ALUA state change). While
//! no path works the command is queued (retried) for at most [`Multipath::queue_limit`]:
//! `no_path_retry` of dm-multipath, bounded.

use anyhow::{anyhow, bail, Result};
use lunar_test_kit::cdb::{read10, write10};
use lunar_test_kit::initiator::{CmdResult, Initiator, PathError};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// SCSI status GOOD.
pub const GOOD: u8 = 0x00;
/// SCSI status CHECK CONDITION.
pub const CHECK_CONDITION: u8 = 0x02;
/// SCSI status BUSY.
pub const BUSY: u8 = 0x08;
/// SCSI status RESERVATION CONFLICT.
pub const RESERVATION_CONFLICT: u8 = 0x18;
/// SCSI status TASK SET FULL.
pub const TASK_SET_FULL: u8 = 0x28;

/// `(sense key, ASC, ASCQ)` of fixed- or descriptor-format sense data.
pub fn sense_triple(sense: &[u8]) -> Option<(u8, u8, u8)> {
    match sense.first()? & 0x7f {
        0x70 | 0x71 => Some((
            sense.get(2)? & 0x0f,
            *sense.get(12).unwrap_or(&0),
            *sense.get(13).unwrap_or(&0),
        )),
        0x72 | 0x73 => Some((sense.get(1)? & 0x0f, *sense.get(2)?, *sense.get(3)?)),
        _ => None,
    }
}

/// NOT READY, LOGICAL UNIT NOT ACCESSIBLE, TARGET PORT IN STANDBY STATE (04/0B) or
/// UNAVAILABLE (04/0C): this path cannot do media access now.
pub fn is_standby(r: &CmdResult) -> bool {
    r.status == CHECK_CONDITION && matches!(sense_triple(&r.sense), Some((2, 0x04, 0x0b | 0x0c)))
}

/// NOT READY, ASYMMETRIC ACCESS STATE TRANSITION (04/0A).
pub fn is_transitioning(r: &CmdResult) -> bool {
    r.status == CHECK_CONDITION && matches!(sense_triple(&r.sense), Some((2, 0x04, 0x0a)))
}

/// UNIT ATTENTION of any kind.
pub fn is_unit_attention(r: &CmdResult) -> bool {
    r.status == CHECK_CONDITION && matches!(sense_triple(&r.sense), Some((6, _, _)))
}

/// One path: a gateway's portal and, while logged in, its session.
struct Path {
    name: String,
    addr: SocketAddr,
    session: Option<Initiator>,
}

/// Something that happened on a path, for the test's report.
#[derive(Clone, Debug)]
pub struct PathEvent {
    /// When.
    pub at: Instant,
    /// Path name (the gateway's).
    pub path: String,
    /// What: "failed: ...", "standby", "transitioning", "logged in", ...
    pub what: String,
}

/// A command that completed (any status), and where.
#[derive(Debug)]
pub struct Completion {
    /// Index of the path it completed on.
    pub path: usize,
    /// When the answer arrived.
    pub at: Instant,
    /// Status, data and sense.
    pub result: CmdResult,
}

/// A multipath "device": one LUN 0 of `target`, reachable through several gateways.
pub struct Multipath {
    target: String,
    initiator: String,
    paths: Vec<Path>,
    current: usize,
    /// How long one command may go unanswered before its path is failed.
    pub cmd_limit: Duration,
    /// How long a command is retried while no path can serve it.
    pub queue_limit: Duration,
    /// What happened on the paths, in order.
    pub events: Vec<PathEvent>,
    /// The LUN every command goes to (0 unless [`Multipath::on_lun`]).
    lun: u64,
}

impl Multipath {
    /// A device over `paths` (name, portal) as initiator `initiator`; sessions are logged in
    /// on first use. Starts on path 0.
    pub fn new(target: &str, initiator: &str, paths: &[(String, SocketAddr)]) -> Self {
        Multipath {
            target: target.to_string(),
            initiator: initiator.to_string(),
            paths: paths
                .iter()
                .map(|(name, addr)| Path {
                    name: name.clone(),
                    addr: *addr,
                    session: None,
                })
                .collect(),
            current: 0,
            cmd_limit: Duration::from_secs(2),
            queue_limit: Duration::from_secs(120),
            events: Vec::new(),
            lun: 0,
        }
    }

    /// The device is LUN `lun` of the target (LUN 0 by default).
    pub fn on_lun(mut self, lun: u64) -> Self {
        self.lun = lun;
        self
    }

    /// Name of path `i`.
    pub fn path_name(&self, i: usize) -> &str {
        &self.paths[i].name
    }

    /// Index of the path commands go to first.
    pub fn current(&self) -> usize {
        self.current
    }

    /// Makes path `i` the one commands go to first.
    pub fn prefer(&mut self, i: usize) {
        self.current = i;
    }

    fn note(&mut self, i: usize, what: String) {
        self.events.push(PathEvent {
            at: Instant::now(),
            path: self.paths[i].name.clone(),
            what,
        });
    }

    /// Drops path `i`'s session (its TCP connection closes); the next use logs in again.
    pub fn fail_path(&mut self, i: usize, why: &str) {
        self.paths[i].session = None;
        self.note(i, format!("failed: {why}"));
    }

    async fn session(&mut self, i: usize) -> Result<&mut Initiator, PathError> {
        if self.paths[i].session.is_none() {
            let mut s = Initiator::try_connect(self.paths[i].addr, &self.initiator).await?;
            let login = s.try_login(&self.target, self.cmd_limit).await?;
            if !login.ok() {
                return Err(PathError::Protocol(format!(
                    "login refused: class {} detail {}",
                    login.status_class, login.status_detail
                )));
            }
            s.set_lun(self.lun);
            self.paths[i].session = Some(s);
            self.note(i, "logged in".into());
        }
        self.paths[i]
            .session
            .as_mut()
            .ok_or_else(|| PathError::Protocol("no session".into()))
    }

    /// One command on path `i` only, no failover: the path's answer, or why it has none (the
    /// session is dropped then).
    pub async fn on_path(
        &mut self,
        i: usize,
        cdb: &[u8],
        read_len: u32,
        data: &[u8],
    ) -> Result<CmdResult, PathError> {
        let limit = self.cmd_limit;
        let r = match self.session(i).await {
            Ok(s) => s.try_run(cdb, read_len, data, limit).await,
            Err(e) => Err(e),
        };
        if let Err(e) = &r {
            self.fail_path(i, &e.to_string());
        }
        r
    }

    /// One command with failover (see the module doc): the first answer that is neither a
    /// path failure nor standby/transitioning/busy/unit attention, with the path it came
    /// from. Fails only when no path served it within [`Multipath::queue_limit`].
    pub async fn io(&mut self, cdb: &[u8], read_len: u32, data: &[u8]) -> Result<Completion> {
        Ok(self.io_attempts(cdb, read_len, |_| data.to_vec()).await?.0)
    }

    /// [`Multipath::io`] where the data of each (re)sending comes from `data(attempt)`:
    /// attempt 0 first, one more each time the command is sent again after a path failed
    /// under it (it may or may not have executed there). Also returns the attempt that
    /// completed.
    pub async fn io_attempts(
        &mut self,
        cdb: &[u8],
        read_len: u32,
        data: impl Fn(u32) -> Vec<u8>,
    ) -> Result<(Completion, u32)> {
        let started = Instant::now();
        let n = self.paths.len();
        let mut tried_since_pause = 0;
        let mut unit_attentions = 0;
        let mut attempt = 0u32;
        loop {
            if started.elapsed() > self.queue_limit {
                bail!(
                    "no path served the command within {:?}; path events: {:?}",
                    self.queue_limit,
                    self.events
                );
            }
            if tried_since_pause >= n {
                tokio::time::sleep(Duration::from_millis(50)).await;
                tried_since_pause = 0;
            }
            let i = self.current;
            let buf = data(attempt);
            match self.on_path(i, cdb, read_len, &buf).await {
                Err(_) => {
                    // It may have executed there (or may still): send different contents.
                    attempt += 1;
                    self.current = (i + 1) % n;
                    tried_since_pause += 1;
                }
                Ok(r) if is_unit_attention(&r) && unit_attentions < 16 => {
                    unit_attentions += 1;
                    let (_, asc, ascq) = sense_triple(&r.sense).unwrap_or_default();
                    self.note(i, format!("unit attention {asc:02x}/{ascq:02x}"));
                }
                Ok(r) if is_standby(&r) => {
                    self.note(i, "standby".into());
                    self.current = (i + 1) % n;
                    tried_since_pause += 1;
                }
                Ok(r) if is_transitioning(&r) || r.status == BUSY || r.status == TASK_SET_FULL => {
                    self.note(i, format!("retry later (status {:#x})", r.status));
                    self.current = (i + 1) % n;
                    tried_since_pause += 1;
                }
                Ok(result) => {
                    return Ok((
                        Completion {
                            path: i,
                            at: Instant::now(),
                            result,
                        },
                        attempt,
                    ))
                }
            }
        }
    }

    /// Logs out of every session (best effort) and drops them.
    pub async fn close(&mut self) {
        for p in &mut self.paths {
            if let Some(mut s) = p.session.take() {
                let _ = tokio::time::timeout(Duration::from_secs(2), s.logout()).await;
            }
        }
    }
}

/// Bytes per logical block the writer assumes (lunard's default block size).
pub const BLOCK: usize = 512;

/// Blocks per record: one record is one 4 KiB write.
pub const RECORD_BLOCKS: u16 = 8;

/// One numbered record of the writer: 4 KiB at LBA `base + number * 8`, holding a header
/// (magic, run, number, attempt) and a deterministic fill, so a record of another run, of
/// another number, or an earlier attempt of the same number never compares equal.
pub fn record(run: u64, number: u64, attempt: u32) -> Vec<u8> {
    let len = BLOCK * usize::from(RECORD_BLOCKS);
    let mut d = lunar_test_kit::pattern(len, (number as u8) ^ (attempt as u8).rotate_left(4));
    for (b, chunk) in d.chunks_mut(BLOCK).enumerate() {
        chunk[..8].copy_from_slice(b"LUNARHA1");
        chunk[8..16].copy_from_slice(&run.to_be_bytes());
        chunk[16..24].copy_from_slice(&number.to_be_bytes());
        chunk[24..28].copy_from_slice(&attempt.to_be_bytes());
        chunk[28..32].copy_from_slice(&(b as u32).to_be_bytes());
    }
    d
}

/// `(number, attempt)` in the header of a record read back, if it is one of `run`'s.
pub fn record_id(run: u64, data: &[u8]) -> Option<(u64, u32)> {
    let h = data.get(..32)?;
    if &h[..8] != b"LUNARHA1" || h[8..16] != run.to_be_bytes() {
        return None;
    }
    let number = u64::from_be_bytes(h[16..24].try_into().ok()?);
    let attempt = u32::from_be_bytes(h[24..28].try_into().ok()?);
    Some((number, attempt))
}

/// A write the target acknowledged (GOOD) and that read back equal through the same path.
#[derive(Clone, Debug)]
pub struct Acked {
    /// Record number.
    pub number: u64,
    /// Which attempt of it was acknowledged (earlier ones failed or went unanswered).
    pub attempt: u32,
    /// Path (gateway index) that acknowledged it.
    pub path: usize,
    /// When the write's GOOD arrived.
    pub at: Instant,
}

/// Writes, reads back and records numbered records through a [`Multipath`].
pub struct Writer {
    /// The device.
    pub mp: Multipath,
    /// Distinguishes this writer's records from any other's.
    pub run: u64,
    /// First LBA of record 0.
    pub base_lba: u32,
    /// Every acknowledged record, in order.
    pub acked: Vec<Acked>,
    next: u64,
}

impl Writer {
    /// A writer over `mp` starting at record 0 at `base_lba`.
    pub fn new(mp: Multipath, run: u64, base_lba: u32) -> Self {
        Writer {
            mp,
            run,
            base_lba,
            acked: Vec::new(),
            next: 0,
        }
    }

    fn lba(&self, number: u64) -> Result<u32> {
        u32::try_from(u64::from(self.base_lba) + number * u64::from(RECORD_BLOCKS))
            .map_err(|_| anyhow!("record {number} is beyond WRITE(10)'s LBA range"))
    }

    /// Writes the next record until an attempt is acknowledged (each resending after a
    /// path failure is a new attempt with different contents, so a late execution of an
    /// earlier one is detectable), then reads it back and compares. A non-GOOD final answer
    /// is an error.
    pub async fn step(&mut self) -> Result<Acked> {
        let number = self.next;
        let lba = self.lba(number)?;
        let run = self.run;
        let (c, attempt) = self
            .mp
            .io_attempts(&write10(lba, RECORD_BLOCKS), 0, |a| record(run, number, a))
            .await?;
        if c.result.status != GOOD {
            bail!(
                "write of record {number} (attempt {attempt}) got status {:#x} sense {:02x?} on {}",
                c.result.status,
                c.result.sense,
                self.mp.path_name(c.path)
            );
        }
        let ack = Acked {
            number,
            attempt,
            path: c.path,
            at: c.at,
        };
        let read = self
            .mp
            .io(
                &read10(lba, RECORD_BLOCKS),
                u32::from(RECORD_BLOCKS) * BLOCK as u32,
                &[],
            )
            .await?;
        if read.result.status != GOOD {
            bail!(
                "read-back of record {number} got status {:#x} sense {:02x?}",
                read.result.status,
                read.result.sense
            );
        }
        if read.result.data != record(self.run, number, ack.attempt) {
            bail!(
                "record {number} read back as {:?} right after attempt {} was acknowledged on {}",
                record_id(self.run, &read.result.data),
                ack.attempt,
                self.mp.path_name(ack.path)
            );
        }
        self.acked.push(ack.clone());
        self.next += 1;
        Ok(ack)
    }

    /// Reads every acknowledged record back (with failover) and returns the records whose
    /// contents are not the acknowledged attempt, with what was found instead.
    pub async fn verify_all(&mut self) -> Result<Vec<String>> {
        let mut bad = Vec::new();
        let acked = self.acked.clone();
        for a in &acked {
            let lba = self.lba(a.number)?;
            let c = self
                .mp
                .io(
                    &read10(lba, RECORD_BLOCKS),
                    u32::from(RECORD_BLOCKS) * BLOCK as u32,
                    &[],
                )
                .await?;
            if c.result.status != GOOD {
                bail!(
                    "reading record {} back: status {:#x} sense {:02x?}",
                    a.number,
                    c.result.status,
                    c.result.sense
                );
            }
            if c.result.data != record(self.run, a.number, a.attempt) {
                bad.push(format!(
                    "record {} (acknowledged attempt {} on {}): found {:?}",
                    a.number,
                    a.attempt,
                    self.mp.path_name(a.path),
                    record_id(self.run, &c.result.data)
                ));
            }
        }
        Ok(bad)
    }
}

/// WRITE(10) of `blocks` at `lba` (re-exported for tests building their own writes).
pub fn write_cdb(lba: u32, blocks: u16) -> [u8; 10] {
    write10(lba, blocks)
}

/// READ(10) of `blocks` at `lba`.
pub fn read_cdb(lba: u32, blocks: u16) -> [u8; 10] {
    read10(lba, blocks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_differ_by_run_number_and_attempt() {
        let a = record(1, 5, 0);
        assert_eq!(a.len(), 4096);
        assert_eq!(record_id(1, &a), Some((5, 0)));
        assert_eq!(record_id(2, &a), None);
        assert_ne!(a, record(1, 5, 1));
        assert_ne!(a, record(1, 6, 0));
        assert_ne!(a, record(2, 5, 0));
        assert_eq!(a, record(1, 5, 0));
    }

    #[test]
    fn sense_formats() {
        let mut fixed = vec![0u8; 18];
        fixed[0] = 0x70;
        fixed[2] = 0x02;
        fixed[12] = 0x04;
        fixed[13] = 0x0b;
        assert_eq!(sense_triple(&fixed), Some((2, 4, 0x0b)));
        let r = CmdResult {
            status: CHECK_CONDITION,
            sense: fixed,
            ..Default::default()
        };
        assert!(is_standby(&r));
        assert!(!is_transitioning(&r));
        assert_eq!(sense_triple(&[0x72, 0x06, 0x2a, 0x06]), Some((6, 0x2a, 6)));
        assert_eq!(sense_triple(&[]), None);
    }
}
