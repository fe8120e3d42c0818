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
    /// Log filter: error, warn, info, debug, trace, or a tracing filter such as
    /// `target_daemon=debug` (default: $RUST_LOG or info).
    #[arg(long, value_name = "LEVEL")]
    log_level: Option<String>,
}

fn main() -> ExitCode {
    let args = Args::parse();
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
    match rt.block_on(run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("lunard: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: Config) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    // Install the handlers before anything can observe readiness, so a SIGTERM sent right
    // after the ready line is never fatal.
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let daemon = Daemon::start(config).await?;
    let addrs: Vec<String> = daemon.local_addrs().iter().map(|a| a.to_string()).collect();
    tracing::info!("lunard ready: listening on {}", addrs.join(", "));
    tokio::select! {
        _ = term.recv() => tracing::info!("received SIGTERM"),
        _ = int.recv() => tracing::info!("received SIGINT"),
    }
    tracing::info!("shutting down: no new connections; finishing in-flight commands");
    daemon.shutdown().await?;
    tracing::info!("lunard stopped cleanly");
    Ok(())
}
