//! What the daemon tests share beyond `lunar-test-kit`: lunard started in-process and the
//! configurations it starts with (the kit cannot depend on `target-daemon`, so anything that
//! names `Daemon` or `Config` lives here).

use std::net::SocketAddr;
use std::path::Path;

use lunar_test_kit::lunard::DEMO_IQN;
use target_daemon::config::{ByteSize, Config, LunCfg, TargetCfg};
use target_daemon::daemon::Daemon;

/// A loopback daemon's configuration: data and pool in `dir`, a pool of `capacity`, one
/// portal on `127.0.0.1:0`, no NOP-In pings (a test's initiator does not answer them), no
/// targets.
pub(crate) fn local_config(dir: &Path, capacity: ByteSize) -> Config {
    let mut cfg = Config::local(capacity).with_data_dir(dir);
    cfg.iscsi.nop_interval_secs = 0;
    cfg
}

/// The configuration most I/O tests need: [`local_config`] with a 1 GiB pool and the target
/// [`DEMO_IQN`] open to any initiator with LUN 0, the 64 MiB volume `demo`.
pub(crate) fn demo_config(dir: &Path) -> Config {
    local_config(dir, ByteSize::gib(1))
        .with_target(TargetCfg::iscsi(DEMO_IQN).with_lun(LunCfg::new(0, "demo", ByteSize::mib(64))))
}

/// Starts lunard in-process with `cfg`, which must be valid (as a file read by lunard).
pub(crate) async fn start_config(cfg: Config) -> Daemon {
    assert_eq!(cfg.validate(), Ok(()), "test configuration");
    Daemon::start(cfg).await.expect("daemon starts")
}

/// Starts the demo daemon ([`demo_config`]) on `dir`; returns it and its portal.
pub(crate) async fn start_demo(dir: &Path) -> (Daemon, SocketAddr) {
    let d = start_config(demo_config(dir)).await;
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
