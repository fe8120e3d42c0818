//! `lunard`: the Lunar SCSI target daemon.
//!
//! Reads the YAML configuration (or uses the embedded default), opens the pool, exports the
//! configured targets over iSCSI and runs until SIGTERM/SIGINT, then shuts down cleanly.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use target_daemon::config::{Config, PortalCfg};
use target_daemon::daemon::Daemon;
use tracing_subscriber::EnvFilter;

/// Command-line flags; they override the configuration file.
#[derive(Debug, Parser)]
#[command(name = "lunard", version, about = "Lunar SCSI target daemon (iSCSI)")]
struct Args {
    /// YAML configuration file (without it, the embedded default is used).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Data directory (overrides `data_dir`).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Listen address; repeatable; replaces the configured portals. Port 0 picks a free port.
    #[arg(long = "portal", value_name = "ADDR:PORT")]
    portals: Vec<SocketAddr>,
    /// Prometheus endpoint (`/metrics`, `/healthz`, `/readyz`); default 127.0.0.1:9860.
    /// When given explicitly, failing to listen there is fatal; the default only warns.
    #[arg(long, value_name = "ADDR:PORT")]
    metrics: Option<SocketAddr>,
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell) and exit.
    #[arg(long, value_name = "SHELL")]
    generate_completions: Option<clap_complete::Shell>,
    /// Print the lunard(8) man page (roff) and exit.
    #[arg(long)]
    generate_man: bool,
    /// Do not serve the Prometheus endpoint at all.
    #[arg(long, conflicts_with = "metrics")]
    no_metrics: bool,
    /// Log filter: error, warn, info, debug, trace, or a tracing filter such as
    /// `target_daemon=debug` (default: $RUST_LOG or info).
    #[arg(long, value_name = "LEVEL")]
    log_level: Option<String>,
    // --- admin (issue 4) ---
    /// Also serve the admin API on this TCP address (requires --admin-token-file).
    /// The Unix socket <data-dir>/admin.sock is always served.
    #[arg(long, value_name = "ADDR:PORT")]
    admin_listen: Option<SocketAddr>,
    /// File holding the bearer token TCP admin clients must send.
    #[arg(long, value_name = "FILE")]
    admin_token_file: Option<PathBuf>,
    // --- end admin ---
}

fn main() -> ExitCode {
    // Before any thread exists (see the module's doc for why).
    let buffers_kept = target_daemon::malloc::keep_io_buffers();
    let args = Args::parse();
    // Completions and the man page come from the clap definition above, so they can never
    // describe flags that do not exist.
    if let Some(shell) = args.generate_completions {
        let mut cmd = <Args as clap::CommandFactory>::command();
        clap_complete::generate(shell, &mut cmd, "lunard", &mut std::io::stdout());
        return ExitCode::SUCCESS;
    }
    if args.generate_man {
        let cmd = <Args as clap::CommandFactory>::command();
        if let Err(e) = clap_mangen::Man::new(cmd)
            .section("8")
            .render(&mut std::io::stdout())
        {
            eprintln!("lunard: cannot write the man page: {e}");
            return ExitCode::FAILURE;
        }
        return ExitCode::SUCCESS;
    }
    let filter = match &args.log_level {
        Some(l) => EnvFilter::try_new(l),
        None => EnvFilter::try_from_default_env().or_else(|_| EnvFilter::try_new("info")),
    };
    let filter = match filter {
        Ok(f) => f,
        Err(e) => {
            eprintln!("lunard: invalid --log-level: {e}");
            return ExitCode::from(2);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    if !buffers_kept {
        tracing::debug!("allocator thresholds left at their defaults (not glibc, or refused)");
    }

    let (mut config, source) = match &args.config {
        Some(path) => match Config::load(path) {
            Ok(c) => (c, path.display().to_string()),
            Err(e) => {
                eprintln!("lunard: configuration error: {e}");
                return ExitCode::from(2);
            }
        },
        None => (Config::embedded_default(), "<embedded default>".to_string()),
    };
    if args.config.is_none() {
        tracing::info!(
            "no --config given: using the embedded default configuration (pool under ./lunar-data, \
             portal 127.0.0.1:3260, target iqn.2026-11.io.lunar:demo allowing any initiator, \
             1 GiB thin LUN 0 'demo')"
        );
    }
    if let Some(d) = args.data_dir {
        config.data_dir = d;
    }
    if !args.portals.is_empty() {
        config.portals = args
            .portals
            .iter()
            .map(|&listen| PortalCfg {
                listen,
                advertise: None,
                tpgt: 1,
            })
            .collect();
    }
    if let Err((field, msg)) = config.validate() {
        eprintln!("lunard: configuration error: {source}: {field}: {msg}");
        return ExitCode::from(2);
    }

    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("lunard: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // --- admin (issue 4) ---
    let admin = match admin_options(&args.admin_listen, &args.admin_token_file) {
        Ok(a) => a,
        Err(msg) => {
            eprintln!("lunard: {msg}");
            return ExitCode::from(2);
        }
    };
    // --- end admin ---
    // Flags override the `metrics:` section; only the built-in default address may be busy
    // without failing the start (parallel daemons, tests).
    let metrics = if args.no_metrics {
        MetricsListen::Off
    } else {
        match args.metrics {
            Some(a) => MetricsListen::Explicit(a),
            None if !config.metrics.enabled => MetricsListen::Off,
            None if config.metrics.listen
                == target_daemon::config::MetricsCfg::default().listen =>
            {
                MetricsListen::Default(config.metrics.listen)
            }
            None => MetricsListen::Explicit(config.metrics.listen),
        }
    };
    let result = rt.block_on(run(config, admin, metrics));
    // Dropping the runtime drops what its tasks still held (the LUN manager, the shared
    // stores), which starts threads that unwatch in librados; exiting under them can abort
    // the process, so wait for them (shared/threads.rs).
    drop(rt);
    if !target_daemon::shared::threads::wait_idle(EXIT_WAIT) {
        tracing::warn!(
            threads = target_daemon::shared::threads::running(),
            "Ceph threads still busy after {EXIT_WAIT:?}; exiting anyway"
        );
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("lunard: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// How long lunard waits at exit for the shared stores' own threads (unwatching takes a
/// RADOS round trip; a dead cluster would make it wait for ever).
const EXIT_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

// --- admin (issue 4) ---
/// Admin API options from the flags: a TCP listener is refused without a non-empty token,
/// and the token file must be private to lunard's user.
fn admin_options(
    listen: &Option<SocketAddr>,
    token_file: &Option<PathBuf>,
) -> Result<target_daemon::admin::AdminOptions, String> {
    // Refused when the group or others may read it, or another user owns it (like ssh).
    let token = match token_file {
        Some(f) => Some(
            target_daemon::secret::read_private_file(f)
                .map_err(|e| format!("--admin-token-file {e}"))?,
        ),
        None => None,
    };
    if listen.is_some() && token.is_none() {
        return Err("--admin-listen requires --admin-token-file (a TCP admin API without a token is refused)".into());
    }
    Ok(target_daemon::admin::AdminOptions {
        socket: None,
        tcp: *listen,
        token,
        ha: None,
        replication: None,
    })
}
// --- end admin ---

// --- metrics (issue 6) ---
/// Where the Prometheus endpoint listens, and whether failing to listen is fatal.
enum MetricsListen {
    Off,
    Default(SocketAddr),
    Explicit(SocketAddr),
}

async fn start_metrics(
    how: MetricsListen,
    daemon: &Daemon,
    ready: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> anyhow::Result<Option<tokio::task::JoinHandle<()>>> {
    let (addr, fatal) = match how {
        MetricsListen::Off => return Ok(None),
        MetricsListen::Default(a) => (a, false),
        MetricsListen::Explicit(a) => (a, true),
    };
    for (_, pool) in daemon.pools() {
        target_daemon::metrics::global().observe_pool(pool);
    }
    // The LUN manager knows which pools are open now (all of them on a single lunard;
    // on a gateway of an HA group, the ones it owns).
    let mgr = std::sync::Arc::downgrade(daemon.lunmgr());
    let pools: target_daemon::http::PoolSource =
        std::sync::Arc::new(move || mgr.upgrade().map(|m| m.open_pools()).unwrap_or_default());
    let state = target_daemon::http::HttpState {
        pools: Some(pools),
        ready,
    };
    match target_daemon::http::serve(addr, state).await {
        Ok((bound, task)) => {
            tracing::info!("metrics on http://{bound}/metrics");
            Ok(Some(task))
        }
        Err(e) if !fatal => {
            tracing::warn!(
                "{e:#}; continuing without the metrics endpoint (use --metrics ADDR:PORT)"
            );
            Ok(None)
        }
        Err(e) => Err(e),
    }
}
// --- end metrics ---

async fn run(
    config: Config,
    admin: target_daemon::admin::AdminOptions,
    metrics: MetricsListen,
) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    // Install the handlers before anything can observe readiness, so a SIGTERM sent right
    // after the ready line is never fatal.
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let daemon = Daemon::start_with(config, admin).await?; // admin (issue 4)
    let addrs: Vec<String> = daemon.local_addrs().iter().map(|a| a.to_string()).collect();
    let ready = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let metrics_task = match start_metrics(metrics, &daemon, ready.clone()).await {
        Ok(t) => t,
        Err(e) => {
            daemon.shutdown().await?;
            return Err(e);
        }
    };
    ready.store(true, std::sync::atomic::Ordering::Release);
    tracing::info!("lunard ready: listening on {}", addrs.join(", "));
    target_daemon::sdnotify::notify(&format!("READY=1\nSTATUS=serving on {}", addrs.join(", ")));
    tokio::select! {
        _ = term.recv() => tracing::info!("received SIGTERM"),
        _ = int.recv() => tracing::info!("received SIGINT"),
    }
    tracing::info!("shutting down: no new connections; finishing in-flight commands");
    ready.store(false, std::sync::atomic::Ordering::Release);
    target_daemon::sdnotify::notify("STOPPING=1");
    daemon.shutdown().await?;
    if let Some(t) = metrics_task {
        t.abort();
    }
    tracing::info!("lunard stopped cleanly");
    Ok(())
}
