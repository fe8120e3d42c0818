//! `lunarctl replica ...`: replication streams through the admin connection's byte-stream
//! mode (see target-daemon/src/admin/stream.rs), so that
//! `lunarctl replica send ... | ssh dr lunarctl replica receive ...` works like
//! `zfs send | zfs receive`.
//!
//! `send` checks the stream as it copies it (the same decoder the receiver runs), so a
//! stream that lunard could not finish ends in an error here too, not only at the receiver.

use std::io::{self, IsTerminal, Read};

use anyhow::{anyhow, bail, Context};
use clap::Subcommand;
use serde_json::Value;
use storage_core::stream::{Decoder, Event};
use target_daemon::admin::proto::{Deleted, Request, Response};
use target_daemon::lunmgr::replication::{PendingReceiveView, Received, SendPlan};

use super::{decode, read_reply, Client, Out, Shown, MAX_RESPONSE_LINE};

/// Copy buffer for stream bytes.
const COPY: usize = 1 << 20;

#[derive(Debug, Subcommand)]
pub(crate) enum ReplicaCmd {
    /// Write a replication stream of VOLUME@SNAPSHOT to standard output (in full, or the
    /// changes since --from).
    Send {
        /// Volume (LUN) to send.
        #[arg(long, alias = "lun")]
        volume: String,
        /// Snapshot to send.
        #[arg(long)]
        snapshot: String,
        /// Send only the changes since this snapshot of the volume, or since `VOL@SNAP`, the
        /// origin snapshot of a clone (the receiver then shares the origin's chunks).
        #[arg(long)]
        from: Option<String>,
        /// Continue an interrupted transfer (the token `replica receive` printed or
        /// `replica receive-status` shows on the receiver).
        #[arg(long)]
        resume: Option<String>,
    },
    /// Apply a replication stream from standard input to replica volume VOLUME.
    Receive {
        /// Replica volume (created by a full or clone stream; a write-protected LUN).
        #[arg(long, alias = "lun")]
        volume: String,
        /// Pool (default: the first pool).
        #[arg(long)]
        pool: Option<String>,
    },
    /// Interrupted receives and their resume tokens.
    ReceiveStatus {
        /// Only this pool's.
        #[arg(long)]
        pool: Option<String>,
    },
    /// Drop what an interrupted receive staged (the next transfer starts over).
    ReceiveAbort {
        /// Replica volume.
        #[arg(long, alias = "lun")]
        volume: String,
        /// Pool (default: the first pool).
        #[arg(long)]
        pool: Option<String>,
    },
}

/// Runs one `replica` command: `None` when it wrote its output itself (the stream).
pub(crate) fn run(cmd: ReplicaCmd, c: &mut Client, w: Out<'_>) -> anyhow::Result<Option<Shown>> {
    match cmd {
        ReplicaCmd::Send {
            volume,
            snapshot,
            from,
            resume,
        } => {
            let req = Request::ReplicaSend {
                volume,
                snapshot,
                from,
                resume,
            };
            send(c, req, w)?;
            Ok(None)
        }
        ReplicaCmd::Receive { volume, pool } => {
            let v = receive(c, Request::ReplicaReceive { volume, pool })?;
            Ok(Some(Shown::typed(v, print_received)))
        }
        ReplicaCmd::ReceiveStatus { pool } => Ok(Some(Shown::list(
            c.call(Request::ReplicaReceiveStatus { pool })?,
            print_pending,
        ))),
        ReplicaCmd::ReceiveAbort { volume, pool } => {
            let v = c.call(Request::ReplicaReceiveAbort { volume, pool })?;
            let d: Deleted = decode(&v)?;
            Ok(Some(Shown::line(v, format!("dropped the {}", d.deleted))))
        }
    }
}

/// `replica send`: the plan line, then the stream copied to `out` and checked on the way.
fn send(c: &mut Client, req: Request, out: Out<'_>) -> anyhow::Result<()> {
    if io::stdout().is_terminal() {
        bail!("refusing to write a binary replication stream to a terminal: redirect it to a file or a pipe");
    }
    let plan: SendPlan = decode(&c.call(req)?)?;
    let mut dec = Decoder::new();
    let mut buf = vec![0u8; COPY];
    loop {
        let n = match c.reader.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => bail!("reading the stream from lunard: {e}"),
        };
        if n == 0 {
            break;
        }
        dec.push(&buf[..n]);
        while let Some(ev) = dec
            .next_event()
            .map_err(|e| anyhow!("lunard sent a bad stream: {e}"))?
        {
            if let Event::End(_) = ev {
                break;
            }
        }
        // Not an io::Error in the chain: a reader that goes away (ssh died) must fail the
        // command, unlike `lunarctl lun list | head`.
        out.write_all(&buf[..n])
            .and_then(|()| out.flush())
            .map_err(|e| anyhow!("cannot write the stream to standard output: {e}"))?;
    }
    dec.finish().map_err(|e| {
        anyhow!(
            "the stream of {} ended before its END trailer ({e}); lunard's log says why",
            plan.to
        )
    })?;
    Ok(())
}

/// `replica receive`: request line, then standard input copied to lunard by a thread while
/// this one waits for the answer (which may come early: a replayed stream is refused at
/// once).
fn receive(c: &mut Client, req: Request) -> anyhow::Result<Value> {
    c.send_line(req)?;
    let mut sock = c
        .take_writer()
        .context("the connection cannot carry a stream")?;
    std::thread::spawn(move || {
        let mut stdin = io::stdin().lock();
        let mut buf = vec![0u8; COPY];
        loop {
            let n = match stdin.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // lunard sees the stream cut short and keeps what it has (resumable).
                    eprintln!("lunarctl: reading standard input: {e}");
                    break;
                }
            };
            // A write error: lunard closed the connection; its answer says why.
            if sock.write_all(&buf[..n]).is_err() {
                return;
            }
        }
        let _ = sock.finish();
    });
    let Some(line) = read_reply(&mut c.reader, MAX_RESPONSE_LINE)? else {
        bail!("lunard closed the connection without answering (see its log)");
    };
    let r: Response = serde_json::from_slice(&line).context("lunard sent an invalid response")?;
    match (r.ok, r.result, r.error) {
        (true, Some(v), _) => Ok(v),
        (true, None, _) => Ok(Value::Null),
        (false, _, Some(e)) => match e.resume_token {
            Some(t) => bail!(
                "{}; what arrived is kept: resume with `lunarctl replica send ... --resume {t}`",
                e.message
            ),
            None => bail!("{}", e.message),
        },
        (false, _, None) => bail!("unknown error"),
    }
}

fn print_received(w: Out<'_>, r: &Received) -> io::Result<()> {
    let resumed = if r.resumed_from > 0 {
        format!(", resumed at chunk {}", r.resumed_from)
    } else {
        String::new()
    };
    writeln!(
        w,
        "received {} stream: {}@{} in pool {} ({} bytes, {} records{resumed})",
        r.kind, r.volume, r.snapshot, r.pool, r.bytes, r.records
    )?;
    Ok(())
}

fn print_pending(w: Out<'_>, list: &[PendingReceiveView]) -> io::Result<()> {
    if list.is_empty() {
        writeln!(w, "no interrupted receives")?;
        return Ok(());
    }
    for p in list {
        writeln!(
            w,
            "{}/{}@{} (base {}): {} bytes staged, next chunk {}\n  resume token: {}",
            p.pool,
            p.volume,
            p.snapshot,
            p.base.as_deref().unwrap_or("none: full"),
            p.staged_bytes,
            p.next_index,
            p.resume_token
        )?;
    }
    Ok(())
}
