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

use target_daemon::lunmgr::state::ReplicaRecord;
use target_daemon::replica::progress::TransferProgress;
use target_daemon::replica::service::RelationshipView;

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
    /// This lunard's replication identity (a self-signed certificate peers pin).
    #[command(subcommand)]
    Identity(IdentityCmd),
    /// Create a replication relationship (on the source): VOLUME (or every member of
    /// consistency group GROUP, at one instant) is snapshotted and sent to PEER every
    /// interval.
    Create {
        /// Relationship name (the same on both sides).
        name: String,
        /// The source LUN (volume).
        #[arg(
            long,
            alias = "lun",
            required_unless_present = "group",
            conflicts_with = "group"
        )]
        volume: Option<String>,
        /// Replicate a consistency group (`lunarctl cg`): its members' replicas move to
        /// each group snapshot together on the peer.
        #[arg(long)]
        group: Option<String>,
        /// With --group: MEMBER=REMOTE-VOLUME, a member replicated into another name than
        /// its own (repeatable).
        #[arg(long, requires = "group")]
        map: Vec<String>,
        /// The peer, as named in replication.peers.
        #[arg(long)]
        peer: String,
        /// The replica volume on the peer (default: the same name).
        #[arg(long)]
        remote_volume: Option<String>,
        /// Schedule: 30s, 5m, 1h (RPO is at most two intervals).
        #[arg(long, default_value = "5m")]
        every: String,
        /// Replication snapshots kept here.
        #[arg(long, default_value_t = 3)]
        keep_local: u32,
        /// Replication snapshots kept on the peer.
        #[arg(long, default_value_t = 3)]
        keep_remote: u32,
        /// Bandwidth limit per second, e.g. 100MiB (default: none).
        #[arg(long)]
        bandwidth: Option<String>,
    },
    /// Relationships: state, lag, last transfer, last error.
    List,
    /// Stop starting cycles (a running transfer finishes).
    Pause {
        /// Relationship name.
        name: String,
    },
    /// Resume a paused relationship (a cycle runs at once).
    Resume {
        /// Relationship name.
        name: String,
    },
    /// Run a cycle now.
    Sync {
        /// Relationship name.
        name: String,
    },
    /// Delete a relationship (volumes and snapshots stay).
    Delete {
        /// Relationship name.
        name: String,
    },
    /// On the replica: stop receiving and make the LUN writable (disaster recovery).
    Promote {
        /// Relationship name.
        name: String,
    },
    /// On the promoted replica, once the old source is back: roll the old source back to
    /// the newest common snapshot and replicate from here to there (no full copy).
    Reverse {
        /// Relationship name.
        name: String,
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

/// `lunarctl replica identity ...`.
#[derive(Debug, Subcommand)]
pub(crate) enum IdentityCmd {
    /// Generate this lunard's certificate and key (needs no running lunard).
    Create {
        /// Certificate file (PEM).
        #[arg(long, default_value = "./lunar-data/replication/identity.crt")]
        cert: std::path::PathBuf,
        /// Key file (PEM, written mode 0600).
        #[arg(long, default_value = "./lunar-data/replication/identity.key")]
        key: std::path::PathBuf,
        /// Name in the certificate (informative; trust is the fingerprint).
        #[arg(long, default_value = "lunard")]
        name: String,
        /// Replace an existing identity (peers must then pin the new fingerprint).
        #[arg(long)]
        force: bool,
    },
    /// Print the fingerprint to give the peer's operator: of --cert, or of the running
    /// lunard's identity.
    Show {
        /// A certificate file (default: ask the running lunard).
        #[arg(long)]
        cert: Option<std::path::PathBuf>,
    },
}

/// Commands that need no lunard: `identity create`, `identity show --cert`.
pub(crate) fn offline(cmd: &ReplicaCmd) -> anyhow::Result<Option<Shown>> {
    use target_daemon::replica::identity::{load_cert, Fingerprint, Identity};
    match cmd {
        ReplicaCmd::Identity(IdentityCmd::Create {
            cert,
            key,
            name,
            force,
        }) => {
            let id = Identity::create(name, cert, key, *force)?;
            let fp = id.fingerprint().to_string();
            Ok(Some(Shown::line(
                serde_json::json!({"fingerprint": fp, "cert": cert, "key": key}),
                format!(
                    "identity written: {} (key {})\nfingerprint: {fp}\ngive the fingerprint to the peer's operator (its replication.peers)",
                    cert.display(),
                    key.display()
                ),
            )))
        }
        ReplicaCmd::Identity(IdentityCmd::Show { cert: Some(cert) }) => {
            let fp = Fingerprint::of(&load_cert(cert)?).to_string();
            Ok(Some(Shown::line(
                serde_json::json!({"fingerprint": fp}),
                fp,
            )))
        }
        _ => Ok(None),
    }
}

/// `30s`, `5m`, `1h`, `1d` or plain seconds.
fn every_secs(s: &str) -> anyhow::Result<u64> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| anyhow!("--every {s:?}: expected a number with s, m, h or d, such as 5m"))?;
    let mul = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        other => bail!("--every {s:?}: unknown unit {other:?} (s, m, h or d)"),
    };
    n.checked_mul(mul)
        .filter(|&v| v > 0)
        .ok_or_else(|| anyhow!("--every {s:?}: must be positive"))
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
        ReplicaCmd::Identity(IdentityCmd::Show { .. }) => {
            let v = c.call(Request::ReplicaIdentity)?;
            let fp = v
                .get("fingerprint")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            Ok(Some(Shown::line(v, fp)))
        }
        ReplicaCmd::Identity(IdentityCmd::Create { .. }) => {
            bail!("replica identity create runs without lunard")
        }
        ReplicaCmd::Create {
            name,
            volume,
            group,
            map,
            peer,
            remote_volume,
            every,
            keep_local,
            keep_remote,
            bandwidth,
        } => {
            let bandwidth = bandwidth
                .map(|b| {
                    target_daemon::config::ByteSize::parse(&b)
                        .map(|b| b.0)
                        .map_err(|e| anyhow!("--bandwidth: {e}"))
                })
                .transpose()?;
            let req = Request::ReplicaCreate(target_daemon::admin::proto::ReplicaCreate {
                name,
                volume: volume.unwrap_or_default(),
                group,
                map,
                peer,
                remote_volume,
                every_secs: every_secs(&every)?,
                keep_local,
                keep_remote,
                bandwidth,
            });
            let v = c.call(req)?;
            let r: ReplicaRecord = decode(&v)?;
            Ok(Some(Shown::line(
                v,
                format!(
                    "relationship {} created: {} every {}s (first cycle now)",
                    r.name,
                    route(&r),
                    r.every_secs
                ),
            )))
        }
        ReplicaCmd::List => Ok(Some(Shown::list(
            c.call(Request::ReplicaList)?,
            print_relationships,
        ))),
        ReplicaCmd::Pause { name } => simple(
            c,
            Request::ReplicaPause { name: name.clone() },
            format!("{name} paused"),
        ),
        ReplicaCmd::Resume { name } => simple(
            c,
            Request::ReplicaResume { name: name.clone() },
            format!("{name} resumed"),
        ),
        ReplicaCmd::Sync { name } => simple(
            c,
            Request::ReplicaSync { name: name.clone() },
            format!("{name}: cycle requested"),
        ),
        ReplicaCmd::Delete { name } => simple(
            c,
            Request::ReplicaDelete { name: name.clone() },
            format!("{name} deleted (volumes and snapshots kept)"),
        ),
        ReplicaCmd::Promote { name } => simple(
            c,
            Request::ReplicaPromote { name: name.clone() },
            format!("{name}: replica promoted, the LUN is writable"),
        ),
        ReplicaCmd::Reverse { name } => simple(
            c,
            Request::ReplicaReverse { name: name.clone() },
            format!("{name} reversed: this side is the source now"),
        ),
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

fn simple(c: &mut Client, req: Request, line: String) -> anyhow::Result<Option<Shown>> {
    let v = c.call(req)?;
    Ok(Some(Shown::line(v, line)))
}

fn print_relationships(w: Out<'_>, list: &[RelationshipView]) -> io::Result<()> {
    if list.is_empty() {
        writeln!(w, "no replication relationships")?;
        return Ok(());
    }
    writeln!(
        w,
        "{:<16} {:<9} {:<13} {:<24} {:>8} {:>7} LAST TRANSFER",
        "NAME", "ROLE", "STATE", "VOLUME -> PEER:VOLUME", "EVERY", "LAG"
    )?;
    for r in list {
        let rec = &r.record;
        let last = rec.last_transfer.as_ref().map_or("-".to_string(), |t| {
            let rate = t.bytes as f64 / (t.duration_ms.max(1) as f64 / 1000.0);
            format!(
                "{} {} B in {:.1}s ({:.1} MB/s) at {}",
                t.kind,
                t.bytes,
                t.duration_ms as f64 / 1000.0,
                rate / 1e6,
                t.finished_unix
            )
        });
        writeln!(
            w,
            "{:<16} {:<9} {:<13} {:<24} {:>7}s {:>7} {}",
            rec.name,
            rec.role.as_str(),
            r.state,
            route(rec),
            rec.every_secs,
            r.lag_ms
                .map_or("-".into(), |l| format!("{:.3}s", l as f64 / 1000.0)),
            last
        )?;
        if let Some(t) = &r.transfer {
            writeln!(w, "  {}", transfer_line(t))?;
        }
        if let Some(e) = &r.last_error {
            writeln!(w, "  last error: {e}")?;
        }
    }
    Ok(())
}

/// `prod -> site-b:prod`, or for a consistency group's relationship
/// `cg db [data,log] -> site-b:[data,log]`.
fn route(rec: &ReplicaRecord) -> String {
    if rec.members.is_empty() {
        return format!("{} -> {}:{}", rec.volume, rec.peer, rec.remote_volume);
    }
    let here: Vec<&str> = rec.members.iter().map(|m| m.volume.as_str()).collect();
    let there: Vec<&str> = rec
        .members
        .iter()
        .map(|m| m.remote_volume.as_str())
        .collect();
    format!(
        "cg {} [{}] -> {}:[{}]",
        rec.volume,
        here.join(","),
        rec.peer,
        there.join(",")
    )
}

/// `sending repl-1796 (increment): 12582912 of 41943040 B (30%), 35.0 MB/s, 0.8s left`.
fn transfer_line(t: &TransferProgress) -> String {
    let what = match (&t.snapshot, &t.kind) {
        (Some(s), Some(k)) => format!("sending {s} ({k})"),
        (Some(s), None) => format!("sending {s}"),
        _ => "receiving".to_string(),
    };
    let amount = match t.total_bytes {
        Some(total) => format!(
            "{} of {total} B ({:.0}%)",
            t.bytes,
            t.bytes as f64 * 100.0 / total.max(1) as f64
        ),
        None => format!("{} B", t.bytes),
    };
    let rate = t
        .rate_bytes_per_sec
        .map_or(String::new(), |r| format!(", {:.1} MB/s", r / 1e6));
    let eta = t.eta_ms.map_or(String::new(), |e| {
        format!(", {:.1}s left", e as f64 / 1000.0)
    });
    format!("{what}: {amount}{rate}{eta}")
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
