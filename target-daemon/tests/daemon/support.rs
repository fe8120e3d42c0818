//! What the daemon tests share beyond `lunar-test-kit`: lunard started in-process (the kit
//! cannot depend on `target-daemon`, so anything that names `Daemon` lives here).

use std::net::SocketAddr;
use std::path::Path;

use lunar_test_kit::lunard::demo_yaml;
use target_daemon::config::Config;
use target_daemon::daemon::Daemon;

/// Starts lunard in-process with the configuration `yaml`.
pub(crate) async fn start_yaml(yaml: &str) -> Daemon {
    let cfg = Config::from_yaml_str(yaml, "test.yaml").expect("config");
    Daemon::start(cfg).await.expect("daemon starts")
}

/// Starts the demo daemon ([`demo_yaml`]: target `iqn.2026-11.io.lunar:demo`, LUN 0 of
/// 64 MiB) on `dir`; returns it and its portal.
pub(crate) async fn start_demo(dir: &Path) -> (Daemon, SocketAddr) {
    let d = start_yaml(&demo_yaml(dir)).await;
    let addr = d.local_addrs()[0];
    (d, addr)
}

/// Serializes the heavy load tests of this binary (a 1 GiB EXTENDED COPY, 8 sessions of
/// COMPARE AND WRITE, TMFs under load). Each ran alone in its own test binary before the
/// daemon tests became one; their hang limits were chosen for that, so they still do not run
/// beside each other. Hold the guard for the whole test.
pub(crate) async fn heavy() -> tokio::sync::MutexGuard<'static, ()> {
    static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    HEAVY.lock().await
}
