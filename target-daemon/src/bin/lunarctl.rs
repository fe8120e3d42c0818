//! `lunarctl`: command-line client of lunard's admin API.
//!
//! Talks newline-delimited JSON to `<data-dir>/admin.sock` (or a TCP address with a bearer
//! token). Prints human tables by default and the raw JSON result with `--json`. Every error
//! exits non-zero with one line on stderr: `lunarctl: <reason>`.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use clap::{Args, Parser, Subcommand};
use serde_json::{json, Value};
use target_daemon::config::ByteSize;
use target_daemon::secret::{read_private_file, Secret};

/// Manage a running lunard.
#[derive(Debug, Parser)]
#[command(
    name = "lunarctl",
    version,
    about = "Manage LUNs, snapshots, clones and targets of a running lunard"
)]
struct Cli {
    /// Admin socket (default: $LUNAR_SOCKET or /var/lib/lunar/admin.sock).
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
}

#[derive(Debug, Subcommand)]
enum PoolCmd {
    /// Capacity, used, free and reserved bytes.
    Status,
    /// Consistency check of the pool metadata.
    Check,
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
    /// Delete a LUN and its snapshots.
    Delete {
        name: String,
        /// Even if initiators are logged in to a target exporting it.
        #[arg(long)]
        force: bool,
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
    /// Write targets and mapped LUNs as YAML configuration.
    Export {
        /// Output file (default stdout); written with mode 0600, as it holds the CHAP secrets.
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
}

/// A connection to lunard.
struct Client {
    reader: Box<dyn BufRead>,
    writer: Box<dyn Write>,
    token: Option<Secret>,
}

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
            return Ok(Client {
                reader: Box::new(BufReader::new(r)),
                writer: Box::new(s),
                token: Some(token),
            });
        }
        let path = cli
            .socket
            .clone()
            .or_else(|| std::env::var_os("LUNAR_SOCKET").map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from("/var/lib/lunar/admin.sock"));
        let s = std::os::unix::net::UnixStream::connect(&path).with_context(|| {
            format!(
                "cannot connect to lunard at {} (is it running? use --socket)",
                path.display()
            )
        })?;
        let r = s.try_clone()?;
        Ok(Client {
            reader: Box::new(BufReader::new(r)),
            writer: Box::new(s),
            token: None,
        })
    }

    fn call(&mut self, op: &str, args: Value) -> anyhow::Result<Value> {
        let mut req = json!({"op": op});
        if !args.is_null() {
            req["args"] = args;
        }
        if let Some(t) = &self.token {
            req["token"] = json!(t.expose());
        }
        let mut line = serde_json::to_vec(&req)?;
        line.push(b'\n');
        self.writer
            .write_all(&line)
            .context("sending the request")?;
        self.writer.flush()?;
        let mut resp = String::new();
        let n = self
            .reader
            .read_line(&mut resp)
            .context("reading the response")?;
        if n == 0 {
            bail!("lunard closed the connection without answering");
        }
        let v: Value = serde_json::from_str(&resp).context("lunard sent an invalid response")?;
        if v["ok"].as_bool() == Some(true) {
            Ok(v["result"].clone())
        } else {
            let msg = v["error"]["message"].as_str().unwrap_or("unknown error");
            bail!("{msg}")
        }
    }
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
    let mut bytes = Vec::new();
    if path.as_os_str() == "-" {
        if std::io::stdin().is_terminal() {
            eprintln!("lunarctl: reading the {flag} secret from standard input (end with Ctrl-D)");
        }
        std::io::stdin()
            .read_to_end(&mut bytes)
            .with_context(|| format!("--{flag} -: cannot read standard input"))?;
    } else {
        bytes = std::fs::read(path).with_context(|| format!("--{flag} {}", path.display()))?;
    }
    let mut text = String::from_utf8(bytes)
        .map_err(|_| anyhow!("--{flag} {}: the secret is not UTF-8 text", path.display()))?;
    if text.ends_with('\n') {
        text.pop();
        if text.ends_with('\r') {
            text.pop();
        }
    }
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

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

fn s(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Prints rows as aligned columns.
fn table(headers: &[&str], rows: Vec<Vec<String>>) {
    let mut w: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.len());
        }
    }
    let line = |cells: Vec<String>| {
        let out: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<width$}", width = w[i]))
            .collect();
        println!("{}", out.join("  ").trim_end());
    };
    line(headers.iter().map(|h| h.to_string()).collect());
    for r in rows {
        line(r);
    }
}

fn print_lun(v: &Value) {
    let maps: Vec<String> = v["mappings"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|m| format!("{}/{}", s(&m["target"]), u(&m["lun_id"])))
                .collect()
        })
        .unwrap_or_default();
    let rows = [
        ("Name", s(&v["name"])),
        ("State", s(&v["state"])),
        (
            "Size",
            format!(
                "{} ({} bytes)",
                human(u(&v["size_bytes"])),
                u(&v["size_bytes"])
            ),
        ),
        ("Block size", u(&v["block_size"]).to_string()),
        ("Guarantee", s(&v["guarantee"])),
        ("Mapped", human(u(&v["mapped_bytes"]))),
        ("Unique", human(u(&v["unique_bytes"]))),
        ("Shared", human(u(&v["shared_bytes"]))),
        ("Reserved", human(u(&v["reserved_bytes"]))),
        ("NAA id", s(&v["naa"])),
        ("Serial", s(&v["serial"])),
        ("Read-only", s(&v["read_only"])),
        ("Origin", s(&v["origin"])),
        ("Clone mode", s(&v["clone_mode"])),
        ("Snapshots", u(&v["snapshots"]).to_string()),
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
        println!("{k:<11} {val}");
    }
}

fn print_jobs(v: &Value) {
    let rows = v
        .as_array()
        .map(|a| {
            a.iter()
                .map(|j| {
                    vec![
                        s(&j["id"]),
                        s(&j["source"]),
                        s(&j["destination"]),
                        s(&j["mode"]),
                        format!("{:.0}%", j["progress_pct"].as_f64().unwrap_or(0.0)),
                        s(&j["state"]),
                        j["error"].as_str().unwrap_or("").to_string(),
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    table(
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
    );
}

fn print_target(t: &Value) {
    let luns: Vec<String> = t["luns"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|l| format!("{}={}", u(&l["lun_id"]), s(&l["name"])))
                .collect()
        })
        .unwrap_or_default();
    let inits: Vec<String> = t["initiators"]
        .as_array()
        .map(|a| a.iter().map(s).collect())
        .unwrap_or_default();
    println!("Target     {}", s(&t["iqn"]));
    println!("Fabric     {}", s(&t["fabric"]));
    println!("Allow any  {}", s(&t["allow_any"]));
    println!(
        "Initiators {}",
        if inits.is_empty() {
            "-".into()
        } else {
            inits.join(", ")
        }
    );
    println!(
        "CHAP user  {}{}",
        s(&t["chap_username"]),
        if t["mutual_chap"].as_bool() == Some(true) {
            " (mutual)"
        } else {
            ""
        }
    );
    println!(
        "LUNs       {}",
        if luns.is_empty() {
            "-".into()
        } else {
            luns.join(", ")
        }
    );
    println!("Sessions   {}", u(&t["sessions"]));
    if t["pending_restart"].as_bool() == Some(true) {
        println!("Note       change saved; applied when lunard restarts");
    }
}

/// Polls `clone list` until the latest job of `name` has ended; fails unless it completed.
fn wait_job(c: &mut Client, name: &str) -> anyhow::Result<Value> {
    loop {
        let jobs = c.call("clone.list", json!({}))?;
        let job = jobs
            .as_array()
            .and_then(|a| {
                a.iter()
                    .rev()
                    .find(|j| j["destination"] == name || j["id"] == name)
                    .cloned()
            })
            .ok_or_else(|| anyhow!("no clone job for {name:?}"))?;
        match job["state"].as_str() {
            Some("completed") => return Ok(job),
            Some("failed") | Some("cancelled") => bail!(
                "clone job {} for {name:?} {}{}",
                s(&job["id"]),
                s(&job["state"]),
                job["error"]
                    .as_str()
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

/// How a command's result is shown as text.
type Printer = Box<dyn Fn(&Value)>;

fn run(mut cli: Cli) -> anyhow::Result<()> {
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
    let mut c = Client::connect(&cli)?;
    let json_out = cli.json;
    // (result, how to print it)
    let (v, print): (Value, Printer) = match cmd {
        Cmd::Pool(PoolCmd::Status) => (
            c.call("pool.status", Value::Null)?,
            Box::new(|v: &Value| {
                let cap = u(&v["capacity_bytes"]).max(1);
                println!("Capacity   {}", human(u(&v["capacity_bytes"])));
                println!("Used       {} ({:.1}%)", human(u(&v["used_bytes"])), u(&v["used_bytes"]) as f64 * 100.0 / cap as f64);
                println!("Free       {}", human(u(&v["free_bytes"])));
                println!("Reserved   {}", human(u(&v["reserved_bytes"])));
                println!("Chunk size {}", human(u(&v["chunk_size"])));
                println!("Volumes    {}", u(&v["volumes"]));
                println!("Snapshots  {}", u(&v["snapshots"]));
                match v["soft_threshold_pct"].as_u64() {
                    None => println!("Threshold  none"),
                    Some(p) if v["soft_threshold_reached"].as_bool() == Some(true) => {
                        println!("Threshold  {p}% REACHED (initiators were told: 38/07)")
                    }
                    Some(p) => println!("Threshold  {p}% (not reached)"),
                }
            }),
        ),
        Cmd::Pool(PoolCmd::Check) => {
            let v = c.call("pool.check", Value::Null)?;
            if v["clean"].as_bool() != Some(true) {
                bail!("pool check found problems: {}", v["errors"]);
            }
            (v, Box::new(|_: &Value| println!("pool is clean")))
        }
        Cmd::Lun(LunCmd::Create { name, size, guarantee, block_size, map, read_only }) => (
            c.call("lun.create", json!({"name": name, "size_bytes": size_arg(&size)?, "guarantee": guarantee,
                "block_size": block_size, "target": map.target, "lun_id": map.lun_id, "read_only": read_only}))?,
            Box::new(print_lun),
        ),
        Cmd::Lun(LunCmd::List) => (
            c.call("lun.list", Value::Null)?,
            Box::new(|v: &Value| {
                let rows = v.as_array().map(|a| a.iter().map(|l| {
                    let maps: Vec<String> = l["mappings"].as_array().map(|m| m.iter().map(|m| format!("{}/{}", s(&m["target"]), u(&m["lun_id"]))).collect()).unwrap_or_default();
                    vec![s(&l["name"]), human(u(&l["size_bytes"])), s(&l["guarantee"]), human(u(&l["mapped_bytes"])), s(&l["state"]), s(&l["origin"]), if maps.is_empty() { "-".into() } else { maps.join(",") }]
                }).collect()).unwrap_or_default();
                table(&["NAME", "SIZE", "GUARANTEE", "MAPPED", "STATE", "ORIGIN", "EXPORTED AS"], rows);
            }),
        ),
        Cmd::Lun(LunCmd::Show { name }) => (c.call("lun.show", json!({"name": name}))?, Box::new(print_lun)),
        Cmd::Lun(LunCmd::Resize { name, size, shrink }) => (
            c.call("lun.resize", json!({"name": name, "size_bytes": size_arg(&size)?, "shrink": shrink}))?,
            Box::new(print_lun),
        ),
        Cmd::Lun(LunCmd::Delete { name, force }) => (
            c.call("lun.delete", json!({"name": name, "force": force}))?,
            Box::new(|v: &Value| println!("deleted {}", s(&v["deleted"]))),
        ),
        Cmd::Lun(LunCmd::Set { name, guarantee, read_only, rename }) => (
            c.call("lun.set", json!({"name": name, "guarantee": guarantee, "read_only": read_only, "rename": rename}))?,
            Box::new(print_lun),
        ),
        Cmd::Lun(LunCmd::Map { name, target, lun_id }) => (
            c.call("lun.map", json!({"name": name, "target": target, "lun_id": lun_id}))?,
            Box::new(|v: &Value| println!("mapped as LUN {} of {}", u(&v["lun_id"]), s(&v["target"]))),
        ),
        Cmd::Lun(LunCmd::Unmap { name, target, force }) => (
            c.call("lun.unmap", json!({"name": name, "target": target, "force": force}))?,
            Box::new(|v: &Value| println!("unmapped {} from {}", s(&v["unmapped"]), s(&v["target"]))),
        ),
        Cmd::Snapshot(SnapCmd::Create { group: Some(g), items }) => (
            c.call("snapshot.group", json!({"group": g, "luns": items}))?,
            Box::new(|v: &Value| {
                for sn in v.as_array().into_iter().flatten() {
                    println!("created {}@{}", s(&sn["lun"]), s(&sn["name"]));
                }
            }),
        ),
        Cmd::Snapshot(SnapCmd::Create { group: None, items }) => {
            if items.len() != 1 {
                bail!("give one LUN@NAME, or --group NAME with the LUNs");
            }
            let (lun, name) = split_at_sign(&items[0])?;
            (
                c.call("snapshot.create", json!({"lun": lun, "name": name}))?,
                Box::new(|v: &Value| println!("created {}@{}", s(&v["lun"]), s(&v["name"]))),
            )
        }
        Cmd::Snapshot(SnapCmd::List { lun }) => (
            c.call("snapshot.list", json!({"lun": lun}))?,
            Box::new(|v: &Value| {
                let rows = v.as_array().map(|a| a.iter().map(|x| vec![
                    format!("{}@{}", s(&x["lun"]), s(&x["name"])), human(u(&x["size_bytes"])), human(u(&x["mapped_bytes"])), human(u(&x["unique_bytes"])), s(&x["group"]),
                ]).collect()).unwrap_or_default();
                table(&["SNAPSHOT", "SIZE", "MAPPED", "UNIQUE", "GROUP"], rows);
            }),
        ),
        Cmd::Snapshot(SnapCmd::Delete { group, item }) => match (group, item) {
            (Some(g), None) => (
                c.call("snapshot.group_delete", json!({"group": g}))?,
                Box::new(|v: &Value| println!("deleted group {}", s(&v["deleted_group"]))),
            ),
            (None, Some(item)) => {
                let (lun, name) = split_at_sign(&item)?;
                (
                    c.call("snapshot.delete", json!({"lun": lun, "name": name}))?,
                    Box::new(|v: &Value| println!("deleted {}", s(&v["deleted"]))),
                )
            }
            _ => bail!("give either LUN@NAME or --group NAME"),
        },
        Cmd::Snapshot(SnapCmd::Rollback { item, force }) => {
            let (lun, name) = split_at_sign(&item)?;
            (
                c.call("snapshot.rollback", json!({"lun": lun, "name": name, "force": force}))?,
                Box::new(|v: &Value| println!("rolled {} back to {}", s(&v["rolled_back"]), s(&v["snapshot"]))),
            )
        }
        Cmd::Clone(CloneCmd::Create { source, name, mode, map, guarantee, copy_acl, wait }) => {
            let mut v = c.call("clone.create", json!({"source": source, "name": name, "mode": mode,
                "target": map.target, "lun_id": map.lun_id, "guarantee": guarantee, "copy_acl": copy_acl}))?;
            if wait {
                v = wait_job(&mut c, &name)?;
            }
            (v, Box::new(|v: &Value| print_jobs(&Value::Array(vec![v.clone()]))))
        }
        Cmd::Clone(CloneCmd::List { purge }) => (c.call("clone.list", json!({"purge": purge}))?, Box::new(print_jobs)),
        Cmd::Clone(CloneCmd::Cancel { name }) => (
            c.call("clone.cancel", json!({"name": name}))?,
            Box::new(|v: &Value| print_jobs(&Value::Array(vec![v.clone()]))),
        ),
        Cmd::Clone(CloneCmd::Split { name, wait }) => {
            let mut v = c.call("clone.split", json!({"name": name}))?;
            if wait {
                v = wait_job(&mut c, &name)?;
            }
            (v, Box::new(|v: &Value| print_jobs(&Value::Array(vec![v.clone()]))))
        }
        Cmd::Clone(CloneCmd::Refresh { name, source, force }) => (
            c.call("clone.refresh", json!({"name": name, "source": source, "force": force}))?,
            Box::new(print_lun),
        ),
        Cmd::Clone(CloneCmd::Wait { name }) => (
            wait_job(&mut c, &name)?,
            Box::new(|v: &Value| print_jobs(&Value::Array(vec![v.clone()]))),
        ),
        Cmd::Target(TargetCmd::Create { iqn, fabric, alias, allow_any }) => (
            c.call("target.create", json!({"iqn": iqn, "fabric": fabric, "alias": alias, "allow_any": allow_any}))?,
            Box::new(print_target),
        ),
        Cmd::Target(TargetCmd::List) => (
            c.call("target.list", Value::Null)?,
            Box::new(|v: &Value| {
                let rows = v.as_array().map(|a| a.iter().map(|t| vec![
                    s(&t["iqn"]),
                    s(&t["fabric"]),
                    t["luns"].as_array().map_or(0, |l| l.len()).to_string(),
                    if t["allow_any"].as_bool() == Some(true) { "any".into() } else { t["initiators"].as_array().map_or(0, |l| l.len()).to_string() },
                    s(&t["chap_username"]),
                    u(&t["sessions"]).to_string(),
                ]).collect()).unwrap_or_default();
                table(&["TARGET", "FABRIC", "LUNS", "INITIATORS", "CHAP", "SESSIONS"], rows);
            }),
        ),
        Cmd::Target(TargetCmd::Delete { iqn, force }) => (
            c.call("target.delete", json!({"iqn": iqn, "force": force}))?,
            Box::new(|v: &Value| println!("deleted {}", s(&v["deleted"]))),
        ),
        Cmd::Acl(AclCmd::Add { target, initiator }) => (c.call("acl.add", json!({"target": target, "initiator": initiator}))?, Box::new(print_target)),
        Cmd::Acl(AclCmd::Remove { target, initiator }) => (c.call("acl.remove", json!({"target": target, "initiator": initiator}))?, Box::new(print_target)),
        Cmd::Acl(AclCmd::List { target }) => (
            c.call("acl.list", json!({"target": target}))?,
            Box::new(|t: &Value| {
                if t["allow_any"].as_bool() == Some(true) {
                    println!("*");
                }
                for i in t["initiators"].as_array().into_iter().flatten() {
                    println!("{}", s(i));
                }
            }),
        ),
        Cmd::Chap(ChapCmd::Set { target, user, secret_file, secret, mutual_user, mutual_secret_file, mutual_secret }) => {
            let (secret, mutual_secret) = chap_secrets(secret_file, secret, mutual_secret_file, mutual_secret)?;
            (
            c.call("chap.set", json!({"target": target, "username": user, "secret": secret.expose(), "mutual_username": mutual_user, "mutual_secret": mutual_secret.as_ref().map(Secret::expose)}))?,
            Box::new(print_target),
        )
        }
        Cmd::Chap(ChapCmd::Clear { target }) => (c.call("chap.clear", json!({"target": target}))?, Box::new(print_target)),
        Cmd::Session(SessionCmd::List { target }) => (
            c.call("session.list", json!({"target": target}))?,
            Box::new(|v: &Value| {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                let rows = v.as_array().map(|a| a.iter().map(|x| vec![
                    s(&x["target"]), s(&x["initiator"]), s(&x["isid"]), u(&x["tsih"]).to_string(),
                    x["connections"].as_array().map(|c| c.iter().map(|c| s(&c[1])).collect::<Vec<_>>().join(",")).unwrap_or_default(),
                    x["connections"].as_array().map(|c| c.iter().map(|c| s(&c[2])).collect::<Vec<_>>().join(",")).unwrap_or_default(),
                    x["luns"].as_array().map(|l| l.iter().map(|n| u(n).to_string()).collect::<Vec<_>>().join(",")).unwrap_or_default(),
                    age(now.saturating_sub(u(&x["since_unix"]))),
                ]).collect()).unwrap_or_default();
                table(&["TARGET", "INITIATOR", "ISID", "TSIH", "FROM", "PORTAL", "LUNS", "SINCE"], rows);
            }),
        ),
        Cmd::Session(SessionCmd::Close { target }) => (
            c.call("session.close", json!({"target": target}))?,
            Box::new(|v: &Value| println!("closed {} session(s)", u(&v["closed_sessions"]))),
        ),
        Cmd::Config(ConfigCmd::Export { output }) => {
            let v = c.call("config.export", Value::Null)?;
            let text = v.as_str().unwrap_or_default().to_string();
            if let Some(path) = output {
                write_private(&path, &text).with_context(|| format!("cannot write {}", path.display()))?;
                (v, Box::new(move |_: &Value| println!("wrote {}", path.display())))
            } else {
                (v, Box::new(move |_: &Value| print!("{text}")))
            }
        }
    };
    if json_out {
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        print(&v);
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(shell) = cli.generate_completions {
        let mut cmd = <Cli as clap::CommandFactory>::command();
        clap_complete::generate(shell, &mut cmd, "lunarctl", &mut std::io::stdout());
        return ExitCode::SUCCESS;
    }
    if cli.generate_man {
        let cmd = <Cli as clap::CommandFactory>::command();
        if let Err(e) = clap_mangen::Man::new(cmd)
            .section("8")
            .render(&mut std::io::stdout())
        {
            eprintln!("lunarctl: cannot write the man page: {e}");
            return ExitCode::FAILURE;
        }
        return ExitCode::SUCCESS;
    }
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let msg = format!("{e:#}").replace('\n', " ");
            eprintln!("lunarctl: {msg}");
            ExitCode::FAILURE
        }
    }
}
