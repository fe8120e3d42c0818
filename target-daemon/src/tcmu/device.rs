//! The per-backstore command loop: takes commands off one TCMU ring, runs them on the
//! SCSI device server concurrently, writes their responses back and kicks the kernel.
//!
//! One loop task owns the [`Ring`] (so ring bookkeeping needs no lock); every command runs
//! in a task of its own, moves its Data-In into the data area itself (the copies of
//! different commands run in parallel) and sends its [`Completion`] back to the loop,
//! which writes it into the ring, and publishes the tail and kicks the kernel once per
//! batch of completions.
//!
//! Nexus: the kernel's LIO core owns the real I_T nexuses (FC initiator ports, ACLs,
//! unit attentions, and — with the default `pgr_support`/`alua_support` of 0 — persistent
//! reservations, RESERVE/RELEASE and REPORT TARGET PORT GROUPS, which it emulates without
//! asking the backstore). TCMU does not say which initiator sent a command, so every
//! command arrives here on one fixed nexus per device, `tcmu:<device name>`. That nexus
//! never logs in ([`ScsiTarget::nexus_login`] is not called), on purpose: a unit
//! attention queued for it would be reported once, to whichever host happened to send the
//! next command, and never to the others; LIO already reports POWER ON and LUN inventory
//! changes per real nexus. The consequence: conditions lunard raises itself (CAPACITY DATA
//! HAS CHANGED after a resize, THIN PROVISIONING SOFT THRESHOLD REACHED) are not reported
//! to FC hosts as unit attentions.
//!
//! Task attributes: LIO orders ORDERED/HEAD OF QUEUE tasks before handing them to the
//! backstore, so commands run here as SIMPLE.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use scsi_proto::scsi::sense::{asc, Sense, SenseFormat, SenseKey};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;

use super::mem::{OutOfBounds, SharedMem};
use super::ring::{CmdEntry, Completion, Entry, Iov, Ring, RingError};
use crate::scsi::{status, Nexus, ScsiRequest, ScsiTarget, TaskAttr};

/// How long [`DeviceHandle::stop`] waits for commands in flight.
pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// The kernel side's signalling: the UIO fd on a real device, a simulator in tests.
pub trait Doorbell: Send + Sync + 'static {
    /// Resolves once the kernel has signalled (new entries) since the previous call. An
    /// error means the device is gone (UIO returns EIO after the backstore is removed).
    /// Must be cancel-safe: the loop drops a pending wait whenever a completion arrives
    /// first, and a dropped wait must not have consumed a signal.
    fn wait(&self) -> Pin<Box<dyn Future<Output = io::Result<()>> + Send + '_>>;
    /// Tells the kernel that `cmd_tail` moved.
    fn kick(&self) -> io::Result<()>;
}

/// Counters of one device (cheap: relaxed atomics).
#[derive(Default, Debug)]
struct Stats {
    commands: AtomicU64,
    failed: AtomicU64,
    malformed: AtomicU64,
    bytes_out: AtomicU64,
    bytes_in: AtomicU64,
}

/// A snapshot of a device's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeviceStats {
    /// Commands completed (malformed entries included).
    pub commands: u64,
    /// Commands completed with a status other than GOOD.
    pub failed: u64,
    /// Ring entries that could not be parsed and were failed without running.
    pub malformed: u64,
    /// Data-Out bytes handed to the device server.
    pub bytes_out: u64,
    /// Data-In bytes written into the data area.
    pub bytes_in: u64,
}

/// Why a device loop ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeviceExit {
    /// [`DeviceHandle::stop`] was called.
    Stopped,
    /// The kernel removed the device (the UIO fd failed).
    Gone(String),
    /// The ring held an entry that cannot be walked past; lunard stopped taking commands
    /// (the kernel times out what is left; `action/reset_ring` in configfs recovers).
    RingBroken(String),
}

/// A running device loop.
pub struct DeviceHandle {
    name: String,
    stats: Arc<Stats>,
    stop: Option<oneshot::Sender<Duration>>,
    task: tokio::task::JoinHandle<DeviceExit>,
}

impl DeviceHandle {
    /// The backstore name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Current counters.
    pub fn stats(&self) -> DeviceStats {
        let s = &self.stats;
        DeviceStats {
            commands: s.commands.load(Ordering::Relaxed),
            failed: s.failed.load(Ordering::Relaxed),
            malformed: s.malformed.load(Ordering::Relaxed),
            bytes_out: s.bytes_out.load(Ordering::Relaxed),
            bytes_in: s.bytes_in.load(Ordering::Relaxed),
        }
    }

    /// Whether the loop has ended on its own (device gone, ring broken).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Stops taking new commands, waits up to [`DEFAULT_STOP_TIMEOUT`] for those in
    /// flight, completes them in the ring and kicks the kernel. The mapping is unmapped
    /// once the last command task lets go of it. Returns why the loop ended.
    pub async fn stop(self) -> DeviceExit {
        self.stop_within(DEFAULT_STOP_TIMEOUT).await
    }

    /// [`DeviceHandle::stop`] with an explicit bound on the wait for commands in flight.
    /// Commands still running after it are abandoned uncompleted (the kernel's
    /// `cmd_time_out` fails them).
    pub async fn stop_within(mut self, timeout: Duration) -> DeviceExit {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(timeout);
        }
        match (&mut self.task).await {
            Ok(exit) => exit,
            Err(e) => DeviceExit::Gone(format!("device loop failed: {e}")),
        }
    }
}

/// Everything a command task needs.
struct Ctx {
    mem: Arc<SharedMem>,
    target: Arc<ScsiTarget>,
    lun: u64,
    nexus: Arc<Nexus>,
    read_len: bool,
    /// Set once the kernel removed the device: command tasks stop touching the data area.
    gone: AtomicBool,
    stats: Arc<Stats>,
}

/// Starts the command loop of a device on the current tokio runtime: `mem` is the mapped
/// TCMU region, `doorbell` its signalling, `name` the backstore name (it names the fixed
/// nexus, `tcmu:<name>`), commands go to `lun` of `target`.
pub fn spawn_with(
    mem: Arc<SharedMem>,
    doorbell: Arc<dyn Doorbell>,
    name: &str,
    target: Arc<ScsiTarget>,
    lun: u64,
) -> Result<DeviceHandle, RingError> {
    let ring = Ring::new(mem.clone())?;
    let stats = Arc::new(Stats::default());
    let ctx = Arc::new(Ctx {
        mem,
        target,
        lun,
        nexus: Arc::new(Nexus {
            initiator: format!("tcmu:{name}"),
            isid: 0,
            tpgt: 1,
        }),
        read_len: ring.read_len_supported(),
        gone: AtomicBool::new(false),
        stats: stats.clone(),
    });
    let g = ring.geometry();
    tracing::info!(
        device = name,
        lun,
        ring_bytes = g.cmdr_size,
        data_bytes = g.len - g.data_off,
        out_of_order = ring.out_of_order(),
        read_len = ring.read_len_supported(),
        "TCMU device attached"
    );
    let (stop_tx, stop_rx) = oneshot::channel();
    let task = tokio::spawn(run(ring, doorbell, ctx, stop_rx, name.to_string()));
    Ok(DeviceHandle {
        name: name.to_string(),
        stats,
        stop: Some(stop_tx),
        task,
    })
}

async fn run(
    mut ring: Ring,
    db: Arc<dyn Doorbell>,
    ctx: Arc<Ctx>,
    mut stop_rx: oneshot::Receiver<Duration>,
    name: String,
) -> DeviceExit {
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<(u16, Completion)>();
    let mut tasks = JoinSet::new();
    let mut broken: Option<String> = None;
    let mut drain = DEFAULT_STOP_TIMEOUT;

    // One doorbell wait lives across turns of the loop (a new one per turn would allocate
    // and re-arm each time); it is replaced only once it has fired.
    let mut bell = db.wait();
    let exit = loop {
        if broken.is_none() {
            let entries = ring.poll();
            for e in entries.unwrap_or_default() {
                if let Some((id, c)) = dispatch(&ctx, &mut tasks, &done_tx, e).await {
                    apply(&mut ring, &ctx, &name, id, &c);
                }
            }
            if let Some(b) = ring.broken() {
                tracing::error!(device = %name, reason = b, "TCMU ring broken: no longer taking commands from this device");
                broken = Some(b.to_string());
            }
        }
        publish(
            &mut ring,
            db.as_ref(),
            &name,
            ctx.gone.load(Ordering::Relaxed),
        );
        while tasks.try_join_next().is_some() {}
        if let Some(b) = &broken {
            if ring.outstanding() == 0 {
                break DeviceExit::RingBroken(b.clone());
            }
        }
        tokio::select! {
            biased;
            r = &mut stop_rx => {
                if let Ok(d) = r {
                    drain = d;
                }
                break match &broken {
                    Some(b) => DeviceExit::RingBroken(b.clone()),
                    None => DeviceExit::Stopped,
                };
            }
            Some((id, c)) = done_rx.recv() => {
                apply(&mut ring, &ctx, &name, id, &c);
                while let Ok((id, c)) = done_rx.try_recv() {
                    apply(&mut ring, &ctx, &name, id, &c);
                }
            }
            // Waited for right here, not in a task of its own: one wake-up per doorbell
            // instead of two.
            ev = &mut bell => {
                if let Err(e) = ev {
                    ctx.gone.store(true, Ordering::Relaxed);
                    break DeviceExit::Gone(e.to_string());
                }
                bell = db.wait();
            },
        }
    };
    // Finish what is in flight, bounded.
    let deadline = tokio::time::Instant::now() + drain;
    while ring.outstanding() > 0 {
        tokio::select! {
            r = done_rx.recv() => match r {
                Some((id, c)) => apply(&mut ring, &ctx, &name, id, &c),
                None => break,
            },
            _ = tokio::time::sleep_until(deadline) => break,
        }
    }
    while let Ok((id, c)) = done_rx.try_recv() {
        apply(&mut ring, &ctx, &name, id, &c);
    }
    publish(
        &mut ring,
        db.as_ref(),
        &name,
        ctx.gone.load(Ordering::Relaxed),
    );
    if ring.outstanding() > 0 {
        tracing::warn!(device = %name, left = ring.outstanding(), "TCMU device stopped with commands still running; they are abandoned uncompleted");
        ctx.gone.store(true, Ordering::Relaxed);
        tasks.abort_all();
    }
    tracing::info!(device = %name, exit = ?exit, "TCMU device detached");
    exit
}

fn publish(ring: &mut Ring, db: &dyn Doorbell, name: &str, gone: bool) {
    match ring.publish() {
        Ok(true) if !gone => {
            if let Err(e) = db.kick() {
                tracing::warn!(device = %name, error = %e, "kicking the TCMU device failed");
            }
        }
        Ok(_) => {}
        Err(e) => tracing::error!(device = %name, error = %e, "publishing cmd_tail failed"),
    }
}

fn apply(ring: &mut Ring, ctx: &Ctx, name: &str, id: u16, c: &Completion) {
    ctx.stats.commands.fetch_add(1, Ordering::Relaxed);
    if c.status != status::GOOD {
        ctx.stats.failed.fetch_add(1, Ordering::Relaxed);
    }
    if let Err(e) = ring.complete(id, c) {
        tracing::error!(device = %name, cmd_id = id, error = %e, "cannot complete TCMU command");
    }
}

/// HARDWARE ERROR, INTERNAL TARGET FAILURE: for entries lunard cannot run at all.
fn internal_failure() -> Completion {
    let s = Sense::new(SenseKey::HardwareError, asc::INTERNAL_TARGET_FAILURE);
    Completion {
        status: status::CHECK_CONDITION,
        sense: Bytes::from(s.encode(SenseFormat::Fixed)),
        read_len: None,
        unknown_op: false,
    }
}

/// Starts one entry. A command is polled once right here: most reads and in-place writes
/// complete at once (the store answers from the page cache on the calling thread), and then
/// its completion is returned for the caller to write into the ring with no task spawn, no
/// channel and no extra wake-up of this loop (each of which is a scheduling round trip that
/// tcmu-runner's synchronous handlers do not pay). Only a command still pending becomes a
/// task of its own, so commands in flight still proceed in parallel.
async fn dispatch(
    ctx: &Arc<Ctx>,
    tasks: &mut JoinSet<()>,
    done: &mpsc::UnboundedSender<(u16, Completion)>,
    e: Entry,
) -> Option<(u16, Completion)> {
    match e {
        Entry::Cmd(cmd) => {
            let id = cmd.cmd_id;
            let c2 = ctx.clone();
            let mut fut = Box::pin(async move { execute(&c2, cmd).await });
            let polled =
                std::future::poll_fn(|cx| std::task::Poll::Ready(fut.as_mut().poll(cx))).await;
            if let std::task::Poll::Ready(c) = polled {
                return Some((id, c));
            }
            let done = done.clone();
            tasks.spawn(async move {
                let c = fut.await;
                let _ = done.send((id, c));
            });
            None
        }
        Entry::Pad => None,
        Entry::Tmr { tmr_type, cmd_ids } => {
            // Commands run to completion here; the kernel already answered the TMF.
            tracing::debug!(tmr_type, ?cmd_ids, "TCMU task management notification");
            None
        }
        Entry::Invalid { cmd_id, reason } => {
            tracing::warn!(cmd_id, reason, "malformed TCMU command entry failed");
            ctx.stats.malformed.fetch_add(1, Ordering::Relaxed);
            Some((cmd_id, internal_failure()))
        }
        Entry::Unknown { cmd_id, op } => {
            tracing::warn!(cmd_id, op, "TCMU entry with an unknown opcode");
            ctx.stats.malformed.fetch_add(1, Ordering::Relaxed);
            let c = Completion {
                status: status::CHECK_CONDITION,
                unknown_op: true,
                ..Default::default()
            };
            Some((cmd_id, c))
        }
    }
}

/// The Data-Out buffer: zero-copy for a single iovec, one copy to gather several.
fn gather(mem: &Arc<SharedMem>, iovs: &[Iov]) -> Result<Bytes, OutOfBounds> {
    match iovs {
        [] => Ok(Bytes::new()),
        [one] => mem.bytes(one.off, one.len),
        many => {
            let total = many.iter().map(|i| i.len).sum();
            let mut b = BytesMut::zeroed(total);
            let mut at = 0;
            for i in many {
                mem.read(i.off, &mut b[at..at + i.len])?;
                at += i.len;
            }
            Ok(b.freeze())
        }
    }
}

/// Copies `data` into the iovecs (truncated to their capacity); with `zero_rest` the
/// unused remainder is cleared, so a short Data-In never exposes stale data-area bytes.
fn scatter(
    mem: &SharedMem,
    iovs: &[Iov],
    data: &[u8],
    zero_rest: bool,
) -> Result<usize, OutOfBounds> {
    let mut done = 0;
    for i in iovs {
        let n = (data.len() - done).min(i.len);
        if n > 0 {
            mem.write(i.off, &data[done..done + n])?;
            done += n;
        }
        if zero_rest && n < i.len {
            mem.zero(i.off + n, i.len - n)?;
        }
    }
    Ok(done)
}

async fn execute(ctx: &Ctx, cmd: CmdEntry) -> Completion {
    let capacity = cmd.data_len();
    // The ring does not say which way the data goes: ask the device server. `None`
    // (COMPARE AND WRITE, WRITE SAME) hands the buffer over as Data-Out, which costs
    // nothing for one iovec and is what the commands that take "all the initiator sends"
    // need; `Some(0)` includes commands that will fail without data.
    let takes_out = !matches!(ctx.target.data_out_len(ctx.lun, &cmd.cdb), Some(0));
    let data_out = if takes_out {
        match gather(&ctx.mem, &cmd.iovs) {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(cmd_id = cmd.cmd_id, error = %e, "TCMU Data-Out unreadable");
                return internal_failure();
            }
        }
    } else {
        Bytes::new()
    };
    let out_len = data_out.len() as u64;
    let req = ScsiRequest {
        nexus: ctx.nexus.clone(),
        lun: ctx.lun,
        cdb: cmd.cdb,
        data_out: data_out.into(),
        expected_data_in: u32::try_from(capacity).unwrap_or(u32::MAX),
        attr: TaskAttr::Simple,
        tag: u32::from(cmd.cmd_id),
    };
    let resp = ctx.target.execute(req).await;
    ctx.stats.bytes_out.fetch_add(out_len, Ordering::Relaxed);
    let mut read_len = None;
    let data_in = !takes_out || !resp.data_in.is_empty();
    if data_in && !ctx.gone.load(Ordering::Relaxed) {
        match scatter(&ctx.mem, &cmd.iovs, &resp.data_in, !ctx.read_len) {
            Ok(n) => {
                ctx.stats.bytes_in.fetch_add(n as u64, Ordering::Relaxed);
                if n > 0 && n < capacity {
                    read_len = Some(n as u32);
                }
            }
            Err(e) => {
                tracing::warn!(cmd_id = cmd.cmd_id, error = %e, "TCMU Data-In unwritable");
                return internal_failure();
            }
        }
    }
    Completion {
        status: resp.status,
        sense: resp.sense.unwrap_or_default(),
        read_len,
        unknown_op: false,
    }
}
