//! `lunarctl`: command-line client of lunard's admin API.
//!
//! Talks newline-delimited JSON to `<data-dir>/admin.sock` (or a TCP address with a bearer
//! token), building the typed requests of [`target_daemon::admin::proto`] and decoding the
//! results as the types lunard encodes them with. Prints human tables by default and the
//! JSON result as lunard sent it with `--json`. Every error exits non-zero with one line on
//! stderr: `lunarctl: <reason>`; a reader that stops reading (`| head`) ends it quietly.

#[path = "lunarctl/cg.rs"]
mod cg;
#[path = "lunarctl/replica.rs"]
mod replica;

use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use clap::{Args, Parser, Subcommand};
use serde::de::DeserializeOwned;
use serde_json::Value;
use target_daemon::admin::proto::{
    ClosedSessions, Deleted, DeletedGroup, PoolCheck, Request, RequestLine, Response, RolledBack,
    Unmapped, MAX_RESPONSE_LINE,
};
use target_daemon::admin::SOCKET_NAME;
use target_daemon::config::{ByteSize, Config, DEFAULT_CONFIG_YAML};
use target_daemon::ha::status::{HaStatus, MoveAccepted};
use target_daemon::lunmgr::clones::CloneCreate;
use target_daemon::lunmgr::replication::SnapshotDiff;
use target_daemon::lunmgr::{
    human_bytes, CloneJobView, LunCreate, LunSet, LunView, MappingView, PoolView, SessionView,
    SnapshotView, TargetView,
};
use target_daemon::secret::{read_private_file, Secret};

/// Manage a running lunard.
#[derive(Debug, Parser)]
#[command(
    name = "lunarctl",
    version,
    about = "Manage LUNs, snapshots, clones and targets of a running lunard"
)]
struct Cli {
    /// Admin socket (default: $LUNAR_SOCKET, else /var/lib/lunar/admin.sock, else
    /// ./lunar-data/admin.sock, the socket of lunard's embedded default configuration).
    #[arg(long, global = true, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// Connect over TCP instead (needs --token-file or $LUNAR_TOKEN).
    #[arg(long, global = true, value_name = "ADDR:PORT")]
    tcp: Option<String>,
    /// File holding the bearer token for --tcp.
    #[arg(long, global = true, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// Print the JSON result instead of a table.
    #[arg(long, global = true)]
    json: bool,
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell) and exit.
    #[arg(long, value_name = "SHELL", exclusive = true)]
    generate_completions: Option<clap_complete::Shell>,
    /// Print the lunarctl(8) man page (roff) and exit.
    #[arg(long, exclusive = true)]
    generate_man: bool,
    #[command(subcommand)]
    cmd: Option<Cmd>,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Pool status and checks.
    #[command(subcommand)]
    Pool(PoolCmd),
    /// Logical units.
    #[command(subcommand)]
    Lun(LunCmd),
    /// Snapshots and consistency groups.
    #[command(subcommand)]
    Snapshot(SnapCmd),
    /// Consistency groups: LUNs of one pool snapshotted at one instant.
    #[command(subcommand)]
    Cg(cg::CgCmd),
    /// Clones and clone jobs.
    #[command(subcommand)]
    Clone(CloneCmd),
    /// iSCSI targets.
    #[command(subcommand)]
    Target(TargetCmd),
    /// Initiator access lists.
    #[command(subcommand)]
    Acl(AclCmd),
    /// CHAP authentication.
    #[command(subcommand)]
    Chap(ChapCmd),
    /// iSCSI sessions.
    #[command(subcommand)]
    Session(SessionCmd),
    /// Configuration export.
    #[command(subcommand)]
    Config(ConfigCmd),
    /// High availability: the gateways of this lunard's HA group.
    #[command(subcommand)]
    Ha(HaCmd),
    /// Replication streams: send a snapshot (or its changes) to another lunard.
    #[command(subcommand)]
    Replica(replica::ReplicaCmd),
}

#[derive(Debug, Subcommand)]
enum HaCmd {
    /// Gateways, owner, epoch, lease state and this gateway's role.
    Status,
    /// Planned move: the owner of pool POOL finishes in-flight I/O, closes the pool and
    /// hands its lease to gateway TO (the gateway's other pools stay where they are).
    Move {
        /// Pool to move (optional when the gateway has one pool).
        #[arg(long)]
        pool: Option<String>,
        /// Gateway to take over.
        #[arg(long)]
        to: String,
    },
}

#[derive(Debug, Subcommand)]
enum PoolCmd {
    /// Capacity, used, free and reserved bytes of pool NAME, or of every pool.
    Status {
        /// Pool name (default: every pool).
        name: Option<String>,
    },
    /// The pools, one line each.
    List,
    /// Consistency check of the pool metadata (of pool NAME; default: the first pool).
    Check {
        /// Pool name (default: the first pool).
        name: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum LunCmd {
    /// Create a LUN.
    Create {
        /// Name (letters, digits, '-', '_', '.').
        name: String,
        /// Size, e.g. 10G, 512M, 1T (binary units).
        #[arg(long)]
        size: String,
        /// Space guarantee: none (thin) or full.
        #[arg(long)]
        guarantee: Option<String>,
        /// Logical block size: 512 or 4096.
        #[arg(long)]
        block_size: Option<u32>,
        #[command(flatten)]
        map: MapArgs,
        /// Export write-protected.
        #[arg(long)]
        read_only: bool,
        /// The pool to create it in (default: the first pool).
        #[arg(long)]
        pool: Option<String>,
    },
    /// List LUNs.
    List,
    /// Details of one LUN (space figures, NAA id, state, origin).
    Show { name: String },
    /// Change the size.
    Resize {
        name: String,
        /// New size, e.g. 20G.
        #[arg(long)]
        size: String,
        /// Allow shrinking (data past the new end is lost).
        #[arg(long)]
        shrink: bool,
    },
    /// Delete a LUN (and, with --recursive, its snapshots).
    Delete {
        name: String,
        /// Even if initiators are logged in to a target exporting it.
        #[arg(long)]
        force: bool,
        /// Delete its snapshots with it (a LUN with snapshots is refused without this).
        #[arg(short, long)]
        recursive: bool,
    },
    /// Change settings.
    Set {
        name: String,
        /// none or full.
        #[arg(long)]
        guarantee: Option<String>,
        /// true or false.
        #[arg(long)]
        read_only: Option<bool>,
        /// New name.
        #[arg(long)]
        rename: Option<String>,
    },
    /// Export a LUN through a target.
    Map {
        name: String,
        #[arg(long)]
        target: String,
        #[arg(long)]
        lun_id: Option<u64>,
    },
    /// Stop exporting a LUN through a target.
    Unmap {
        name: String,
        #[arg(long)]
        target: String,
        #[arg(long)]
        force: bool,
    },
}

#[derive(Debug, Args)]
struct MapArgs {
    /// Map into this target.
    #[arg(long)]
    target: Option<String>,
    /// LUN number in the target (default: lowest free).
    #[arg(long)]
    lun_id: Option<u64>,
}

#[derive(Debug, Subcommand)]
enum SnapCmd {
    /// `LUN@NAME`, or `--group NAME LUN1 LUN2...` for one instant across LUNs.
    Create {
        /// Consistency group name.
        #[arg(long)]
        group: Option<String>,
        /// `LUN@NAME` (or the LUNs of the group).
        #[arg(required = true)]
        items: Vec<String>,
    },
    /// List snapshots (of one LUN).
    List { lun: Option<String> },
    /// Delete `LUN@NAME`, or `--group NAME`.
    Delete {
        #[arg(long)]
        group: Option<String>,
        item: Option<String>,
    },
    /// Roll `LUN@NAME` back.
    Rollback {
        item: String,
        #[arg(long)]
        force: bool,
    },
    /// The block ranges that changed between snapshots FIRST and SECOND of LUN (or, with
    /// one snapshot, every range it holds data in): the changed-block list.
    Diff {
        /// LUN.
        lun: String,
        /// The earlier snapshot (a snapshot of LUN, or `VOL@SNAP` of its clone origin); or
        /// the only one.
        first: String,
        /// The later snapshot.
        second: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum CloneCmd {
    /// Clone a LUN (now) or a snapshot.
    Create {
        /// `LUN` or `LUN@SNAP`.
        #[arg(long)]
        source: String,
        /// New LUN name.
        #[arg(long)]
        name: String,
        /// linked (instant, shares data) or full (background copy).
        #[arg(long)]
        mode: Option<String>,
        #[command(flatten)]
        map: MapArgs,
        /// none or full (default: the source's).
        #[arg(long)]
        guarantee: Option<String>,
        /// Add the initiators allowed to see the source to the clone's target.
        #[arg(long)]
        copy_acl: bool,
        /// The pool the clone is wanted in: it must be the source's (a clone shares data
        /// with its origin); default: the source's.
        #[arg(long)]
        pool: Option<String>,
        /// Wait until a full clone has completed (or failed).
        #[arg(long)]
        wait: bool,
    },
    /// Clone jobs.
    List {
        /// Forget finished jobs.
        #[arg(long)]
        purge: bool,
    },
    /// Cancel a running clone job (the half clone is removed).
    Cancel { name: String },
    /// Make a linked clone independent of its source.
    Split {
        name: String,
        #[arg(long)]
        wait: bool,
    },
    /// Re-base a clone on a new point in time of its source (keeps NAA id, LUN ids, ACLs).
    Refresh {
        name: String,
        /// New source `LUN` or `LUN@SNAP` (default: the origin LUN now).
        #[arg(long)]
        source: Option<String>,
        #[arg(long)]
        force: bool,
    },
    /// Wait until the clone job of NAME has ended.
    Wait { name: String },
}

#[derive(Debug, Subcommand)]
enum TargetCmd {
    /// Create a target: an iSCSI target named by its IQN, or (with `--fabric`) a Fibre
    /// Channel (`qla2xxx`) or LIO loopback target named by its WWPN
    /// (`21:00:00:24:ff:31:4c:48` or `naa.21000024ff314c48`).
    Create {
        /// IQN, or WWPN for `--fabric qla2xxx|loopback`.
        iqn: String,
        /// Transport: iscsi, qla2xxx (Fibre Channel through LIO) or loopback (LIO tcm_loop).
        #[arg(long, default_value = "iscsi")]
        fabric: String,
        #[arg(long)]
        alias: Option<String>,
        /// Allow any initiator.
        #[arg(long)]
        allow_any: bool,
    },
    /// List targets.
    List,
    /// Delete a target (its LUNs stay).
    Delete {
        iqn: String,
        #[arg(long)]
        force: bool,
    },
}

#[derive(Debug, Subcommand)]
enum AclCmd {
    /// Allow an initiator (`*` = any).
    Add { target: String, initiator: String },
    /// Remove an initiator (`*` = stop allowing any).
    Remove { target: String, initiator: String },
    /// Show a target's ACL.
    List { target: String },
}

#[derive(Debug, Subcommand)]
enum ChapCmd {
    /// Require CHAP. The secrets are read from files (or standard input), never taken from
    /// the command line, where every local user could read them in the process list.
    Set {
        target: String,
        /// Name the initiator must send (CHAP_N).
        #[arg(long)]
        user: String,
        /// File holding the initiator's secret (12 to 255 bytes), or `-` for standard input;
        /// one trailing newline is dropped.
        #[arg(
            long,
            value_name = "FILE",
            required_unless_present = "secret",
            conflicts_with = "secret"
        )]
        secret_file: Option<PathBuf>,
        /// The initiator's secret itself. Deprecated: visible to every local user in the
        /// process list (use --secret-file).
        #[arg(long, value_name = "SECRET")]
        secret: Option<Secret>,
        /// Mutual CHAP: the name the target answers with.
        #[arg(long)]
        mutual_user: Option<String>,
        /// Mutual CHAP: file holding the target's secret, or `-` for standard input; one
        /// trailing newline is dropped.
        #[arg(long, value_name = "FILE", conflicts_with = "mutual_secret")]
        mutual_secret_file: Option<PathBuf>,
        /// Mutual CHAP: the target's secret itself. Deprecated: visible to every local user in
        /// the process list (use --mutual-secret-file).
        #[arg(long, value_name = "SECRET")]
        mutual_secret: Option<Secret>,
    },
    /// Stop requiring CHAP.
    Clear { target: String },
}

#[derive(Debug, Subcommand)]
enum SessionCmd {
    /// Live sessions.
    List {
        #[arg(long)]
        target: Option<String>,
    },
    /// Close every session of a target.
    Close { target: String },
}

#[derive(Debug, Subcommand)]
enum ConfigCmd {
    /// Check a configuration file as lunard reads it (syntax, values, and whether this
    /// build supports it, e.g. an ha: section needs Ceph support); talks to no lunard.
    Check {
        /// The configuration file.
        file: PathBuf,
    },
    /// Write targets and mapped LUNs as YAML configuration.
    Export {
        /// Output file (default stdout); written with mode 0600, as it holds the CHAP secrets.
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
}

/// A connection to lunard.
struct Client {
    reader: Box<dyn BufRead + Send>,
    writer: Box<dyn Write + Send>,
    /// Half-closes the connection (the end of a `replica receive` stream).
    shutdown: Option<Box<dyn FnOnce() -> io::Result<()> + Send>>,
    token: Option<Secret>,
}

/// The sending half of a connection, for a byte stream.
struct StreamWriter {
    writer: Box<dyn Write + Send>,
    shutdown: Option<Box<dyn FnOnce() -> io::Result<()> + Send>>,
}

impl StreamWriter {
    fn write_all(&mut self, b: &[u8]) -> io::Result<()> {
        self.writer.write_all(b)
    }

    /// Flushes and half-closes: lunard sees the end of the stream.
    fn finish(mut self) -> io::Result<()> {
        self.writer.flush()?;
        match self.shutdown.take() {
            Some(f) => f(),
            None => Ok(()),
        }
    }
}

/// The admin sockets tried when neither `--socket` nor `$LUNAR_SOCKET` names one: the
/// packaged unit's (`/var/lib/lunar`), then the one of lunard's embedded default
/// configuration (`./lunar-data`, what `cargo run --bin lunard` uses).
fn default_sockets() -> Vec<PathBuf> {
    let mut out = vec![PathBuf::from(SYSTEM_SOCKET)];
    if let Ok(c) = Config::from_yaml_str(DEFAULT_CONFIG_YAML, "the embedded default") {
        out.push(c.data_dir.join(SOCKET_NAME));
    }
    out
}

/// The packaged unit's admin socket.
const SYSTEM_SOCKET: &str = "/var/lib/lunar/admin.sock";

impl Client {
    fn connect(cli: &Cli) -> anyhow::Result<Client> {
        if let Some(addr) = &cli.tcp {
            // A token file others may read (or another user owns) is refused, as ssh does.
            let token = match &cli.token_file {
                Some(f) => read_private_file(f).map_err(|e| anyhow!("--token-file {e}"))?,
                None => std::env::var("LUNAR_TOKEN")
                    .map(Secret::from)
                    .map_err(|_| anyhow!("--tcp needs --token-file or $LUNAR_TOKEN"))?,
            };
            let s = std::net::TcpStream::connect(addr)
                .with_context(|| format!("cannot connect to lunard at {addr}"))?;
            let r = s.try_clone()?;
            let h = s.try_clone()?;
            return Ok(Client {
                reader: Box::new(BufReader::new(r)),
                writer: Box::new(s),
                shutdown: Some(Box::new(move || h.shutdown(std::net::Shutdown::Write))),
                token: Some(token),
            });
        }
        let named = cli
            .socket
            .clone()
            .or_else(|| std::env::var_os("LUNAR_SOCKET").map(PathBuf::from));
        let path = match named {
            Some(p) => p,
            None => {
                let tried = default_sockets();
                match tried.iter().find(|p| p.exists()) {
                    Some(p) => p.clone(),
                    None => bail!(
                        "cannot connect to lunard: no admin socket at {} (is it running? use --socket PATH or $LUNAR_SOCKET)",
                        tried
                            .iter()
                            .map(|p| p.display().to_string())
                            .collect::<Vec<_>>()
                            .join(" or ")
                    ),
                }
            }
        };
        let s = std::os::unix::net::UnixStream::connect(&path).with_context(|| {
            format!(
                "cannot connect to lunard at {} (is it running? use --socket)",
                path.display()
            )
        })?;
        let r = s.try_clone()?;
        let h = s.try_clone()?;
        Ok(Client {
            reader: Box::new(BufReader::new(r)),
            writer: Box::new(s),
            shutdown: Some(Box::new(move || h.shutdown(std::net::Shutdown::Write))),
            token: None,
        })
    }

    /// Writes one request line without waiting for the answer.
    fn send_line(&mut self, request: Request) -> anyhow::Result<()> {
        let line = RequestLine {
            token: self.token.clone(),
            request,
        };
        let mut bytes = serde_json::to_vec(&line)?;
        bytes.push(b'\n');
        self.writer
            .write_all(&bytes)
            .context("sending the request")?;
        self.writer.flush()?;
        Ok(())
    }

    /// The sending half, for a byte stream after a request line (once).
    fn take_writer(&mut self) -> Option<StreamWriter> {
        let shutdown = self.shutdown.take()?;
        let writer = std::mem::replace(&mut self.writer, Box::new(io::sink()));
        Some(StreamWriter {
            writer,
            shutdown: Some(shutdown),
        })
    }

    /// Sends one request; returns its result, or fails with lunard's message.
    fn call(&mut self, request: Request) -> anyhow::Result<Value> {
        self.send_line(request)?;
        let Some(resp) = read_reply(&mut self.reader, MAX_RESPONSE_LINE)? else {
            bail!("lunard closed the connection without answering");
        };
        let r: Response =
            serde_json::from_slice(&resp).context("lunard sent an invalid response")?;
        match (r.ok, r.result, r.error) {
            (true, Some(v), _) => Ok(v),
            (true, None, _) => Ok(Value::Null),
            (false, _, Some(e)) => bail!("{}", e.message),
            (false, _, None) => bail!("unknown error"),
        }
    }
}

/// Reads one response line of at most `max` bytes (`None` at EOF). Never buffers more than
/// `max + 1` bytes, whatever the peer sends: a longer line is an error, not an allocation.
fn read_reply(reader: &mut dyn BufRead, max: usize) -> anyhow::Result<Option<Vec<u8>>> {
    use std::io::Read;
    let mut line = Vec::new();
    let limit = u64::try_from(max).unwrap_or(u64::MAX).saturating_add(1);
    let n = reader
        .take(limit)
        .read_until(b'\n', &mut line)
        .context("reading the response")?;
    if n == 0 {
        return Ok(None);
    }
    if line.len() > max {
        bail!(
            "lunard's response is longer than {} (the most lunarctl reads); is the address really lunard's admin API?",
            ByteSize(max as u64)
        );
    }
    Ok(Some(line))
}

/// A result decoded as the type lunard encoded it with.
fn decode<T: DeserializeOwned>(v: &Value) -> anyhow::Result<T> {
    T::deserialize(v).context("lunard sent a result this lunarctl does not understand")
}

/// Writes `text` to `path` readable by its owner only (mode 0600, also for an existing file,
/// set before writing): an exported configuration holds the CHAP secrets.
fn write_private(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    f.write_all(text.as_bytes())
}

/// Warns that a secret given on the command line is visible in the process list.
fn warn_command_line_secret(flag: &str) {
    eprintln!(
        "lunarctl: warning: --{flag} puts the secret in the process list, where every local \
         user can read it; use --{flag}-file FILE (or - for standard input)"
    );
}

/// Reads a secret from `path`, or from standard input for `-`, dropping one trailing
/// newline (`echo` and editors add one; anything else is part of the secret).
fn read_secret(flag: &str, path: &std::path::Path) -> anyhow::Result<Secret> {
    use std::io::{IsTerminal, Read};
    // Wiped when dropped, on every path (the secret is read into it first).
    let mut bytes = zeroize::Zeroizing::new(Vec::new());
    if path.as_os_str() == "-" {
        if std::io::stdin().is_terminal() {
            eprintln!("lunarctl: reading the {flag} secret from standard input (end with Ctrl-D)");
        }
        std::io::stdin()
            .read_to_end(&mut bytes)
            .with_context(|| format!("--{flag} -: cannot read standard input"))?;
    } else {
        bytes = zeroize::Zeroizing::new(
            std::fs::read(path).with_context(|| format!("--{flag} {}", path.display()))?,
        );
    }
    let Ok(text) = std::str::from_utf8(&bytes) else {
        bail!("--{flag} {}: the secret is not UTF-8 text", path.display());
    };
    let text = match text.strip_suffix('\n') {
        Some(t) => t.strip_suffix('\r').unwrap_or(t),
        None => text,
    };
    if text.is_empty() {
        bail!("--{flag} {}: the secret is empty", path.display());
    }
    Ok(Secret::from(text))
}

/// The CHAP secrets of `chap set`, from their files (or, deprecated, the command line).
fn chap_secrets(
    secret_file: Option<PathBuf>,
    secret: Option<Secret>,
    mutual_secret_file: Option<PathBuf>,
    mutual_secret: Option<Secret>,
) -> anyhow::Result<(Secret, Option<Secret>)> {
    let stdin = |p: &Option<PathBuf>| p.as_ref().is_some_and(|p| p.as_os_str() == "-");
    if stdin(&secret_file) && stdin(&mutual_secret_file) {
        bail!("--secret-file and --mutual-secret-file cannot both read standard input (-)");
    }
    let secret = match (secret_file, secret) {
        (Some(f), _) => read_secret("secret-file", &f)?,
        (None, Some(s)) => s,
        // clap requires one of them.
        (None, None) => bail!("chap set needs --secret-file FILE"),
    };
    let mutual = match (mutual_secret_file, mutual_secret) {
        (Some(f), _) => Some(read_secret("mutual-secret-file", &f)?),
        (None, s) => s,
    };
    Ok((secret, mutual))
}

fn size_arg(s: &str) -> anyhow::Result<u64> {
    ByteSize::parse(s)
        .map(|b| b.0)
        .map_err(|e| anyhow!("--size: {e}"))
}

fn split_at_sign(item: &str) -> anyhow::Result<(String, String)> {
    match item.split_once('@') {
        Some((l, s)) if !l.is_empty() && !s.is_empty() => Ok((l.into(), s.into())),
        _ => bail!("expected LUN@SNAPSHOT, got {item:?}"),
    }
}

fn human(b: u64) -> String {
    target_daemon::lunmgr::human_bytes(b)
}

/// An optional field as a table cell: `-` when absent.
fn opt(v: &Option<String>) -> String {
    v.clone().unwrap_or_else(|| "-".into())
}

/// Where the text output goes: standard output, whose write errors (a closed pipe) end
/// the command instead of panicking as `println!` would.
type Out<'a> = &'a mut dyn Write;

/// Prints rows as aligned columns.
fn table(w: Out<'_>, headers: &[&str], rows: Vec<Vec<String>>) -> io::Result<()> {
    let mut width: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            width[i] = width[i].max(c.len());
        }
    }
    let line = |w: Out<'_>, cells: Vec<String>| {
        let out: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<width$}", width = width[i]))
            .collect();
        writeln!(w, "{}", out.join("  ").trim_end())
    };
    line(w, headers.iter().map(|h| h.to_string()).collect())?;
    for r in rows {
        line(w, r)?;
    }
    Ok(())
}

fn print_pool(w: Out<'_>, p: &PoolView) -> io::Result<()> {
    let cap = p.capacity_bytes.max(1);
    writeln!(w, "Capacity   {}", human(p.capacity_bytes))?;
    writeln!(
        w,
        "Used       {} ({:.1}%)",
        human(p.used_bytes),
        p.used_bytes as f64 * 100.0 / cap as f64
    )?;
    writeln!(w, "Free       {}", human(p.free_bytes))?;
    writeln!(w, "Reserved   {}", human(p.reserved_bytes))?;
    writeln!(w, "Chunk size {}", human(u64::from(p.chunk_size)))?;
    writeln!(w, "Volumes    {}", p.volumes)?;
    writeln!(w, "Snapshots  {}", p.snapshots)?;
    match p.soft_threshold_pct {
        None => writeln!(w, "Threshold  none"),
        Some(pct) if p.soft_threshold_reached => {
            writeln!(w, "Threshold  {pct}% REACHED (initiators were told: 38/07)")
        }
        Some(pct) => writeln!(w, "Threshold  {pct}% (not reached)"),
    }
}

/// `pool status` of several pools: each pool's figures under its name.
fn print_pools(w: Out<'_>, pools: &[PoolView]) -> io::Result<()> {
    for (i, p) in pools.iter().enumerate() {
        if i > 0 {
            writeln!(w)?;
        }
        writeln!(w, "Pool       {}", p.name)?;
        print_pool(w, p)?;
    }
    Ok(())
}

fn print_pool_list(w: Out<'_>, pools: &[PoolView]) -> io::Result<()> {
    let rows = pools
        .iter()
        .map(|p| {
            let cap = p.capacity_bytes.max(1);
            vec![
                p.name.clone(),
                human(p.capacity_bytes),
                human(p.used_bytes),
                format!("{:.1}%", p.used_bytes as f64 * 100.0 / cap as f64),
                human(p.free_bytes),
                p.volumes.to_string(),
                match p.soft_threshold_pct {
                    None => "-".into(),
                    Some(pct) if p.soft_threshold_reached => format!("{pct}% REACHED"),
                    Some(pct) => format!("{pct}%"),
                },
            ]
        })
        .collect();
    table(
        w,
        &[
            "NAME",
            "CAPACITY",
            "USED",
            "USE%",
            "FREE",
            "VOLUMES",
            "THRESHOLD",
        ],
        rows,
    )
}

fn mappings(m: &[MappingView]) -> Vec<String> {
    m.iter()
        .map(|m| format!("{}/{}", m.target, m.lun_id))
        .collect()
}

fn print_lun_list(w: Out<'_>, luns: &[LunView]) -> io::Result<()> {
    let rows = luns
        .iter()
        .map(|l| {
            let maps = mappings(&l.mappings);
            vec![
                l.name.clone(),
                l.pool.clone(),
                human(l.size_bytes),
                l.guarantee.clone(),
                human(l.mapped_bytes),
                l.state.clone(),
                opt(&l.origin),
                if maps.is_empty() {
                    "-".into()
                } else {
                    maps.join(",")
                },
            ]
        })
        .collect();
    table(
        w,
        &[
            "NAME",
            "POOL",
            "SIZE",
            "GUARANTEE",
            "MAPPED",
            "STATE",
            "ORIGIN",
            "EXPORTED AS",
        ],
        rows,
    )
}

fn print_lun(w: Out<'_>, v: &LunView) -> io::Result<()> {
    let maps = mappings(&v.mappings);
    let rows = [
        ("Name", v.name.clone()),
        ("State", v.state.clone()),
        (
            "Size",
            format!("{} ({} bytes)", human(v.size_bytes), v.size_bytes),
        ),
        ("Block size", v.block_size.to_string()),
        ("Pool", v.pool.clone()),
        ("Guarantee", v.guarantee.clone()),
        ("Mapped", human(v.mapped_bytes)),
        ("Unique", human(v.unique_bytes)),
        ("Shared", human(v.shared_bytes)),
        ("Reserved", human(v.reserved_bytes)),
        ("NAA id", v.naa.clone()),
        ("Serial", v.serial.clone()),
        ("Read-only", v.read_only.to_string()),
        ("Origin", opt(&v.origin)),
        ("Clone mode", opt(&v.clone_mode)),
        ("Snapshots", v.snapshots.to_string()),
        (
            "Mappings",
            if maps.is_empty() {
                "-".into()
            } else {
                maps.join(", ")
            },
        ),
    ];
    for (k, val) in rows {
        writeln!(w, "{k:<11} {val}")?;
    }
    Ok(())
}

fn print_snapshots(w: Out<'_>, snaps: &[SnapshotView]) -> io::Result<()> {
    let rows = snaps
        .iter()
        .map(|x| {
            vec![
                format!("{}@{}", x.lun, x.name),
                human(x.size_bytes),
                human(x.mapped_bytes),
                human(x.unique_bytes),
                opt(&x.group),
            ]
        })
        .collect();
    table(w, &["SNAPSHOT", "SIZE", "MAPPED", "UNIQUE", "GROUP"], rows)
}

fn print_jobs(w: Out<'_>, jobs: &[CloneJobView]) -> io::Result<()> {
    let rows = jobs
        .iter()
        .map(|j| {
            vec![
                j.id.clone(),
                j.source.clone(),
                j.destination.clone(),
                j.mode.clone(),
                format!("{:.0}%", j.progress_pct),
                j.state.clone(),
                j.error.clone().unwrap_or_default(),
            ]
        })
        .collect();
    table(
        w,
        &[
            "JOB",
            "SOURCE",
            "DESTINATION",
            "MODE",
            "PROGRESS",
            "STATE",
            "ERROR",
        ],
        rows,
    )
}

fn print_job(w: Out<'_>, job: &CloneJobView) -> io::Result<()> {
    print_jobs(w, std::slice::from_ref(job))
}

fn print_target(w: Out<'_>, t: &TargetView) -> io::Result<()> {
    let luns: Vec<String> = t
        .luns
        .iter()
        .map(|l| format!("{}={}", l.lun_id, l.name))
        .collect();
    let list = |v: &[String], sep: &str| {
        if v.is_empty() {
            "-".to_string()
        } else {
            v.join(sep)
        }
    };
    writeln!(w, "Target     {}", t.iqn)?;
    writeln!(w, "Fabric     {}", t.fabric)?;
    writeln!(w, "Allow any  {}", t.allow_any)?;
    writeln!(w, "Initiators {}", list(&t.initiators, ", "))?;
    writeln!(
        w,
        "CHAP user  {}{}",
        opt(&t.chap_username),
        if t.mutual_chap { " (mutual)" } else { "" }
    )?;
    writeln!(w, "LUNs       {}", list(&luns, ", "))?;
    writeln!(w, "Sessions   {}", t.sessions)?;
    if t.pending_restart {
        writeln!(w, "Note       change saved; applied when lunard restarts")?;
    }
    Ok(())
}

fn print_target_list(w: Out<'_>, targets: &[TargetView]) -> io::Result<()> {
    let rows = targets
        .iter()
        .map(|t| {
            vec![
                t.iqn.clone(),
                t.fabric.to_string(),
                t.luns.len().to_string(),
                if t.allow_any {
                    "any".into()
                } else {
                    t.initiators.len().to_string()
                },
                opt(&t.chap_username),
                t.sessions.to_string(),
            ]
        })
        .collect();
    table(
        w,
        &["TARGET", "FABRIC", "LUNS", "INITIATORS", "CHAP", "SESSIONS"],
        rows,
    )
}

fn print_acl(w: Out<'_>, t: &TargetView) -> io::Result<()> {
    if t.allow_any {
        writeln!(w, "*")?;
    }
    for i in &t.initiators {
        writeln!(w, "{i}")?;
    }
    Ok(())
}

fn print_sessions(w: Out<'_>, sessions: &[SessionView]) -> io::Result<()> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let join = |v: Vec<String>| v.join(",");
    let rows = sessions
        .iter()
        .map(|x| {
            vec![
                opt(&x.target),
                x.initiator.clone(),
                x.isid.clone(),
                x.tsih.to_string(),
                join(x.connections.iter().map(|c| c.1.clone()).collect()),
                join(x.connections.iter().map(|c| c.2.clone()).collect()),
                join(x.luns.iter().map(u64::to_string).collect()),
                age(now.saturating_sub(x.since_unix)),
            ]
        })
        .collect();
    table(
        w,
        &[
            "TARGET",
            "INITIATOR",
            "ISID",
            "TSIH",
            "FROM",
            "PORTAL",
            "LUNS",
            "SINCE",
        ],
        rows,
    )
}

/// `deleted demo`, or with the snapshots that went with it:
/// `deleted demo and its 2 snapshots: demo@a, demo@b`.
fn print_ha_status(w: Out<'_>, s: &HaStatus) -> io::Result<()> {
    writeln!(w, "group:      {}", s.group)?;
    writeln!(
        w,
        "gateway:    {} (port group {}), role {}",
        s.gateway, s.port_group, s.role
    )?;
    writeln!(w, "owner:      {}", opt(&s.owner))?;
    writeln!(w, "epoch:      {}", s.epoch)?;
    writeln!(w, "lease:      {} ({} ms)", s.lease, s.lease_ms)?;
    if let Some(p) = &s.preferred {
        writeln!(w, "moving to:  {p}")?;
    }
    if let Some(r) = s.since_renew_ms {
        writeln!(w, "last renew: {r} ms ago")?;
    }
    if let Some(l) = s.serving_left_ms {
        writeln!(w, "serving:    {l} ms left before the local deadline")?;
    }
    if let Some(e) = &s.last_error {
        writeln!(w, "last error: {e}")?;
    }
    if !s.pools.is_empty() {
        writeln!(w)?;
        let rows = s
            .pools
            .iter()
            .map(|p| {
                vec![
                    p.pool.clone(),
                    opt(&p.owner),
                    p.epoch.to_string(),
                    p.lease.clone(),
                    p.role.clone(),
                    opt(&p.preferred),
                ]
            })
            .collect();
        table(
            w,
            &["POOL", "OWNER", "EPOCH", "LEASE", "ROLE HERE", "MOVING TO"],
            rows,
        )?;
    }
    if s.gateways.is_empty() {
        return Ok(());
    }
    writeln!(w)?;
    // With several pools a gateway's role is the pools it owns.
    let role = |g: &target_daemon::ha::status::GatewayStatus| {
        if s.pools.is_empty() {
            return if g.owner { "owner" } else { "standby" }.to_string();
        }
        let owned: Vec<&str> = s
            .pools
            .iter()
            .filter(|p| p.owner.as_deref() == Some(g.name.as_str()))
            .map(|p| p.pool.as_str())
            .collect();
        if owned.is_empty() {
            "standby".to_string()
        } else {
            format!("owner of {}", owned.join(","))
        }
    };
    let rows = s
        .gateways
        .iter()
        .map(|g| {
            vec![
                g.name.clone(),
                g.port_group.to_string(),
                role(g),
                g.alua.clone().unwrap_or_else(|| "-".into()),
                g.portals.join(","),
                age(g.last_seen_secs_ago),
            ]
        })
        .collect();
    table(
        w,
        &[
            "GATEWAY",
            "PORT GROUP",
            "ROLE",
            "ALUA",
            "PORTALS",
            "LAST SEEN",
        ],
        rows,
    )
}

fn print_deleted(w: Out<'_>, d: &Deleted) -> io::Result<()> {
    match d.snapshots.len() {
        0 => writeln!(w, "deleted {}", d.deleted),
        1 => writeln!(
            w,
            "deleted {} and its snapshot {}",
            d.deleted, d.snapshots[0]
        ),
        n => writeln!(
            w,
            "deleted {} and its {n} snapshots: {}",
            d.deleted,
            d.snapshots.join(", ")
        ),
    }
}

/// Polls `clone list` until the latest job of `name` has ended; fails unless it completed.
/// Returns the job as lunard sent it.
fn wait_job(c: &mut Client, name: &str) -> anyhow::Result<Value> {
    loop {
        let raw = c.call(Request::CloneList { purge: false })?;
        let jobs: Vec<CloneJobView> = decode(&raw)?;
        let i = jobs
            .iter()
            .rposition(|j| j.destination == name || j.id == name)
            .ok_or_else(|| anyhow!("no clone job for {name:?}"))?;
        let raw = raw.get(i).cloned().unwrap_or(Value::Null);
        let job = &jobs[i];
        match job.state.as_str() {
            "completed" => return Ok(raw),
            "failed" | "cancelled" => bail!(
                "clone job {} for {name:?} {}{}",
                job.id,
                job.state,
                job.error
                    .as_ref()
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default()
            ),
            _ => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

/// A duration in seconds as "3d4h", "5h12m", "7m03s" or "42s" (how long a session is up).
fn age(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    if d > 0 {
        format!("{d}d{h}h")
    } else if h > 0 {
        format!("{h}h{m:02}m")
    } else if m > 0 {
        format!("{m}m{s:02}s")
    } else {
        format!("{s}s")
    }
}

/// A result and how to show it: the JSON result as lunard sent it (`--json`), or as text
/// through the result's type.
struct Shown {
    value: Value,
    text: TextFn,
}

/// Prints a result as text.
type TextFn = Box<dyn FnOnce(&mut dyn Write, &Value) -> anyhow::Result<()>>;

impl Shown {
    /// `value` shown as text by `print` after decoding it as a `T`.
    fn typed<T: DeserializeOwned + 'static>(
        value: Value,
        print: fn(Out<'_>, &T) -> io::Result<()>,
    ) -> Shown {
        Shown {
            value,
            text: Box::new(move |w, v| Ok(print(w, &decode::<T>(v)?)?)),
        }
    }

    /// `value`, a list, shown as text by `print` after decoding it as a `Vec<T>`.
    fn list<T: DeserializeOwned + 'static>(
        value: Value,
        print: fn(Out<'_>, &[T]) -> io::Result<()>,
    ) -> Shown {
        Shown {
            value,
            text: Box::new(move |w, v| Ok(print(w, &decode::<Vec<T>>(v)?)?)),
        }
    }

    /// `value` shown as one fixed line of text.
    fn line(value: Value, line: String) -> Shown {
        Shown {
            value,
            text: Box::new(move |w, _| Ok(writeln!(w, "{line}")?)),
        }
    }
}

fn run(mut cli: Cli, w: Out<'_>) -> anyhow::Result<()> {
    let Some(cmd) = cli.cmd.take() else {
        bail!("no command given (try `lunarctl --help`)");
    };
    if let Cmd::Chap(ChapCmd::Set {
        secret,
        mutual_secret,
        ..
    }) = &cmd
    {
        if secret.is_some() {
            warn_command_line_secret("secret");
        }
        if mutual_secret.is_some() {
            warn_command_line_secret("mutual-secret");
        }
    }
    // Checking a file needs no lunard.
    if let Cmd::Config(ConfigCmd::Check { file }) = &cmd {
        let shown = check_config(file)?;
        return show(&cli, w, shown);
    }
    if let Cmd::Replica(r) = &cmd {
        if let Some(shown) = replica::offline(r)? {
            return show(&cli, w, shown);
        }
    }
    let mut c = Client::connect(&cli)?;
    let shown = match cmd {
        Cmd::Pool(PoolCmd::Status { name: Some(name) }) => {
            Shown::typed(c.call(Request::PoolShow { name })?, print_pool)
        }
        Cmd::Pool(PoolCmd::Status { name: None }) => {
            let v = c.call(Request::PoolList)?;
            // One pool: the figures as they always were printed (and as JSON, one object).
            match v.as_array().map(Vec::as_slice) {
                Some([one]) => Shown::typed(one.clone(), print_pool),
                _ => Shown::list(v, print_pools),
            }
        }
        Cmd::Pool(PoolCmd::List) => Shown::list(c.call(Request::PoolList)?, print_pool_list),
        Cmd::Pool(PoolCmd::Check { name }) => {
            let v = c.call(match name {
                Some(name) => Request::PoolCheckNamed { name },
                None => Request::PoolCheck,
            })?;
            let check: PoolCheck = decode(&v)?;
            if !check.clean {
                bail!(
                    "pool check found problems: {}",
                    serde_json::to_string(&check.errors)?
                );
            }
            Shown::line(v, "pool is clean".into())
        }
        Cmd::Lun(LunCmd::Create {
            name,
            size,
            guarantee,
            block_size,
            map,
            read_only,
            pool,
        }) => {
            let req = Request::LunCreate(LunCreate {
                name,
                size_bytes: size_arg(&size)?,
                guarantee,
                block_size,
                target: map.target,
                lun_id: map.lun_id,
                read_only,
                pool,
            });
            Shown::typed(c.call(req)?, print_lun)
        }
        Cmd::Lun(LunCmd::List) => Shown::list(c.call(Request::LunList)?, print_lun_list),
        Cmd::Lun(LunCmd::Show { name }) => {
            Shown::typed(c.call(Request::LunShow { name })?, print_lun)
        }
        Cmd::Lun(LunCmd::Resize { name, size, shrink }) => {
            let req = Request::LunResize {
                name,
                size_bytes: size_arg(&size)?,
                shrink,
            };
            Shown::typed(c.call(req)?, print_lun)
        }
        Cmd::Lun(LunCmd::Delete {
            name,
            force,
            recursive,
        }) => {
            let req = Request::LunDelete {
                name,
                force,
                recursive,
            };
            Shown::typed(c.call(req)?, print_deleted)
        }
        Cmd::Lun(LunCmd::Set {
            name,
            guarantee,
            read_only,
            rename,
        }) => {
            let req = Request::LunSet(LunSet {
                name,
                guarantee,
                read_only,
                rename,
            });
            Shown::typed(c.call(req)?, print_lun)
        }
        Cmd::Lun(LunCmd::Map {
            name,
            target,
            lun_id,
        }) => {
            let v = c.call(Request::LunMap {
                name,
                target,
                lun_id,
            })?;
            let m: MappingView = decode(&v)?;
            Shown::line(v, format!("mapped as LUN {} of {}", m.lun_id, m.target))
        }
        Cmd::Lun(LunCmd::Unmap {
            name,
            target,
            force,
        }) => {
            let v = c.call(Request::LunUnmap {
                name,
                target,
                force,
            })?;
            let u: Unmapped = decode(&v)?;
            Shown::line(v, format!("unmapped {} from {}", u.unmapped, u.target))
        }
        Cmd::Snapshot(SnapCmd::Create {
            group: Some(group),
            items,
        }) => {
            let v = c.call(Request::SnapshotGroup { group, luns: items })?;
            let snaps: Vec<SnapshotView> = decode(&v)?;
            let text: Vec<String> = snaps
                .iter()
                .map(|s| format!("created {}@{}", s.lun, s.name))
                .collect();
            Shown {
                value: v,
                text: Box::new(move |w, _| {
                    for l in text {
                        writeln!(w, "{l}")?;
                    }
                    Ok(())
                }),
            }
        }
        Cmd::Snapshot(SnapCmd::Create { group: None, items }) => {
            if items.len() != 1 {
                bail!("give one LUN@NAME, or --group NAME with the LUNs");
            }
            let (lun, name) = split_at_sign(&items[0])?;
            let v = c.call(Request::SnapshotCreate { lun, name })?;
            let s: SnapshotView = decode(&v)?;
            Shown::line(v, format!("created {}@{}", s.lun, s.name))
        }
        Cmd::Snapshot(SnapCmd::List { lun }) => {
            Shown::list(c.call(Request::SnapshotList { lun })?, print_snapshots)
        }
        Cmd::Snapshot(SnapCmd::Delete { group, item }) => match (group, item) {
            (Some(group), None) => {
                let v = c.call(Request::SnapshotGroupDelete { group })?;
                let d: DeletedGroup = decode(&v)?;
                Shown::line(v, format!("deleted group {}", d.deleted_group))
            }
            (None, Some(item)) => {
                let (lun, name) = split_at_sign(&item)?;
                Shown::typed(
                    c.call(Request::SnapshotDelete { lun, name })?,
                    print_deleted,
                )
            }
            _ => bail!("give either LUN@NAME or --group NAME"),
        },
        Cmd::Snapshot(SnapCmd::Rollback { item, force }) => {
            let (lun, name) = split_at_sign(&item)?;
            let v = c.call(Request::SnapshotRollback { lun, name, force })?;
            let r: RolledBack = decode(&v)?;
            Shown::line(
                v,
                format!("rolled {} back to {}", r.rolled_back, r.snapshot),
            )
        }
        Cmd::Clone(CloneCmd::Create {
            source,
            name,
            mode,
            map,
            guarantee,
            copy_acl,
            pool,
            wait,
        }) => {
            let req = Request::CloneCreate(CloneCreate {
                source,
                name: name.clone(),
                mode,
                target: map.target,
                lun_id: map.lun_id,
                guarantee,
                copy_acl,
                read_only: None,
                pool,
            });
            let mut v = c.call(req)?;
            if wait {
                v = wait_job(&mut c, &name)?;
            }
            Shown::typed(v, print_job)
        }
        Cmd::Clone(CloneCmd::List { purge }) => {
            Shown::list(c.call(Request::CloneList { purge })?, print_jobs)
        }
        Cmd::Clone(CloneCmd::Cancel { name }) => {
            Shown::typed(c.call(Request::CloneCancel { name })?, print_job)
        }
        Cmd::Clone(CloneCmd::Split { name, wait }) => {
            let mut v = c.call(Request::CloneSplit { name: name.clone() })?;
            if wait {
                v = wait_job(&mut c, &name)?;
            }
            Shown::typed(v, print_job)
        }
        Cmd::Clone(CloneCmd::Refresh {
            name,
            source,
            force,
        }) => Shown::typed(
            c.call(Request::CloneRefresh {
                name,
                source,
                force,
            })?,
            print_lun,
        ),
        Cmd::Clone(CloneCmd::Wait { name }) => Shown::typed(wait_job(&mut c, &name)?, print_job),
        Cmd::Target(TargetCmd::Create {
            iqn,
            fabric,
            alias,
            allow_any,
        }) => {
            let req = Request::TargetCreate {
                iqn,
                fabric: Some(fabric),
                alias,
                allow_any,
            };
            Shown::typed(c.call(req)?, print_target)
        }
        Cmd::Target(TargetCmd::List) => {
            Shown::list(c.call(Request::TargetList)?, print_target_list)
        }
        Cmd::Target(TargetCmd::Delete { iqn, force }) => {
            Shown::typed(c.call(Request::TargetDelete { iqn, force })?, print_deleted)
        }
        Cmd::Acl(AclCmd::Add { target, initiator }) => {
            Shown::typed(c.call(Request::AclAdd { target, initiator })?, print_target)
        }
        Cmd::Acl(AclCmd::Remove { target, initiator }) => Shown::typed(
            c.call(Request::AclRemove { target, initiator })?,
            print_target,
        ),
        Cmd::Acl(AclCmd::List { target }) => {
            Shown::typed(c.call(Request::AclList { target })?, print_acl)
        }
        Cmd::Chap(ChapCmd::Set {
            target,
            user,
            secret_file,
            secret,
            mutual_user,
            mutual_secret_file,
            mutual_secret,
        }) => {
            let (secret, mutual_secret) =
                chap_secrets(secret_file, secret, mutual_secret_file, mutual_secret)?;
            let req = Request::ChapSet {
                target,
                username: user,
                secret,
                mutual_username: mutual_user,
                mutual_secret,
            };
            Shown::typed(c.call(req)?, print_target)
        }
        Cmd::Chap(ChapCmd::Clear { target }) => {
            Shown::typed(c.call(Request::ChapClear { target })?, print_target)
        }
        Cmd::Session(SessionCmd::List { target }) => {
            Shown::list(c.call(Request::SessionList { target })?, print_sessions)
        }
        Cmd::Session(SessionCmd::Close { target }) => {
            let v = c.call(Request::SessionClose { target })?;
            let n: ClosedSessions = decode(&v)?;
            Shown::line(v, format!("closed {} session(s)", n.closed_sessions))
        }
        Cmd::Ha(HaCmd::Status) => Shown::typed(c.call(Request::HaStatus)?, print_ha_status),
        Cmd::Ha(HaCmd::Move { pool, to }) => {
            let v = c.call(Request::HaMove { pool, to })?;
            let m: MoveAccepted = decode(&v)?;
            let from = m.from.unwrap_or_else(|| "(no owner)".into());
            Shown::line(
                v,
                format!(
                    "moving pool {} from {from} to {} (epoch {}): the owner hands over at its next renew",
                    m.pool, m.to, m.epoch
                ),
            )
        }
        Cmd::Config(ConfigCmd::Check { file }) => check_config(&file)?,
        Cmd::Snapshot(SnapCmd::Diff { lun, first, second }) => {
            let (from, to) = match second {
                Some(s) => (Some(first), s),
                None => (None, first),
            };
            Shown::typed(c.call(Request::SnapshotDiff { lun, from, to })?, print_diff)
        }
        Cmd::Cg(g) => cg::run(g, &mut c)?,
        Cmd::Replica(r) => match replica::run(r, &mut c, w)? {
            Some(shown) => shown,
            // It wrote its output (the stream) itself.
            None => return Ok(()),
        },
        Cmd::Config(ConfigCmd::Export { output }) => {
            let v = c.call(Request::ConfigExport)?;
            let text: String = decode(&v)?;
            match output {
                Some(path) => {
                    write_private(&path, &text)
                        .with_context(|| format!("cannot write {}", path.display()))?;
                    Shown::line(v, format!("wrote {}", path.display()))
                }
                None => Shown {
                    value: v,
                    text: Box::new(move |w, _| Ok(write!(w, "{text}")?)),
                },
            }
        }
    };
    show(&cli, w, shown)
}

fn print_diff(w: Out<'_>, d: &SnapshotDiff) -> io::Result<()> {
    writeln!(
        w,
        "{} -> {}: {} range(s), {} changed ({}-byte blocks)",
        d.from.as_deref().unwrap_or("(nothing)"),
        d.to,
        d.ranges.len(),
        human_bytes(d.changed_bytes),
        d.block_size
    )?;
    writeln!(w, "{:>14} {:>12}  CONTENTS", "LBA", "BLOCKS")?;
    for r in &d.ranges {
        let what = if r.data { "data" } else { "zeros" };
        writeln!(w, "{:>14} {:>12}  {what}", r.lba, r.blocks)?;
    }
    Ok(())
}

/// Prints what a command returned, as JSON with `--json`.
fn show(cli: &Cli, w: Out<'_>, shown: Shown) -> anyhow::Result<()> {
    if cli.json {
        writeln!(w, "{}", serde_json::to_string_pretty(&shown.value)?)?;
    } else {
        (shown.text)(w, &shown.value)?;
    }
    w.flush()?;
    Ok(())
}

/// `lunarctl config check FILE`: the file as lunard would read it.
fn check_config(file: &Path) -> anyhow::Result<Shown> {
    let cfg = Config::load(file)?;
    let warnings: Vec<String> = cfg
        .replication
        .as_ref()
        .map(|r| r.warnings())
        .unwrap_or_default();
    let mut text = format!("{}: OK", file.display());
    for w in &warnings {
        text.push_str(&format!("\nwarning: {w}"));
    }
    let v = serde_json::json!({
        "file": file.display().to_string(),
        "valid": true,
        "warnings": warnings,
    });
    Ok(Shown::line(v, text))
}

/// Whether `e` is a write to a reader that went away (`lunarctl ... | head`).
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<io::Error>()
            .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe)
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(shell) = cli.generate_completions {
        let mut cmd = <Cli as clap::CommandFactory>::command();
        clap_complete::generate(shell, &mut cmd, "lunarctl", &mut io::stdout());
        return ExitCode::SUCCESS;
    }
    if cli.generate_man {
        let cmd = <Cli as clap::CommandFactory>::command();
        if let Err(e) = clap_mangen::Man::new(cmd)
            .section("8")
            .render(&mut io::stdout())
        {
            if e.kind() != io::ErrorKind::BrokenPipe {
                let _ = writeln!(io::stderr(), "lunarctl: cannot write the man page: {e}");
                return ExitCode::FAILURE;
            }
        }
        return ExitCode::SUCCESS;
    }
    let stdout = io::stdout();
    let mut out = stdout.lock();
    match run(cli, &mut out) {
        Ok(()) => ExitCode::SUCCESS,
        // The reader stopped reading (`| head`): it has what it wanted; nothing to say.
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            let msg = format!("{e:#}").replace('\n', " ");
            let _ = writeln!(io::stderr(), "lunarctl: {msg}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reply_is_read_up_to_the_limit_and_no_further() {
        let mut r = BufReader::new(&b"{\"ok\":true}\nnext"[..]);
        let line = read_reply(&mut r, 12).expect("fits").expect("a line");
        assert_eq!(line, b"{\"ok\":true}\n");
        // An endless line without a newline: refused after max + 1 bytes, not buffered.
        let mut endless = BufReader::new(std::io::repeat(b'x'));
        let e = read_reply(&mut endless, 1024).expect_err("too long");
        assert!(e.to_string().contains("longer than 1KiB"), "{e}");
        let mut empty = BufReader::new(&b""[..]);
        assert!(read_reply(&mut empty, 10).expect("EOF").is_none());
    }
}
