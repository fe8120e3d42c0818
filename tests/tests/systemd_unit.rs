//! The shipped systemd unit works as systemd would run it: lunard is started with exactly the
//! unit's ExecStart flags (paths moved under a temporary root), reports READY=1 over
//! `$NOTIFY_SOCKET` once it serves, and on SIGTERM reports STOPPING=1 and exits 0 within the
//! unit's TimeoutStopSec.

use std::net::SocketAddr;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use lunar_e2e::config::{yaml, ByteSize, Config, LunCfg, PortalCfg, TargetCfg};
use lunar_e2e::daemon::lunard_bin;
use lunar_e2e::net::{free_loopback_port, wait_accepting};
use lunar_e2e::process::{signal, wait_timeout};

const UNIT: &str = include_str!("../../deploy/systemd/lunard.service");

fn unit_value(key: &str) -> String {
    UNIT.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("the unit has no {key}="))
        .trim()
        .to_string()
}

fn recv_state(sock: &UnixDatagram, want: &str, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    let mut seen = String::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        sock.set_read_timeout(Some(Duration::from_millis(500)))
            .expect("timeout");
        if let Ok(n) = sock.recv(&mut buf) {
            let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
            seen.push_str(&msg);
            seen.push('\n');
            if msg.lines().any(|l| l == want) {
                return seen;
            }
        }
    }
    panic!("no {want} from lunard within {timeout:?}; got: {seen:?}");
}

#[test]
fn unit_exec_start_notify_readiness_and_graceful_stop() {
    assert_eq!(unit_value("Type"), "notify");
    let exec = unit_value("ExecStart");
    let mut words = exec.split_whitespace();
    let bin_path = words.next().expect("ExecStart binary");
    assert!(bin_path.ends_with("/lunard"), "{exec}");
    let root = tempfile::tempdir().expect("root");
    let under = |p: &str| root.path().join(p.trim_start_matches('/'));

    // The unit's own flags, with absolute paths moved under the temporary root.
    let args: Vec<String> = words
        .map(|w| {
            if w.starts_with('/') {
                under(w).display().to_string()
            } else {
                w.to_string()
            }
        })
        .collect();
    let cfg_path = args
        .iter()
        .position(|a| a == "--config")
        .and_then(|i| args.get(i + 1))
        .expect("ExecStart passes --config");
    let data_dir = args
        .iter()
        .position(|a| a == "--data-dir")
        .and_then(|i| args.get(i + 1))
        .expect("ExecStart passes --data-dir");
    // systemd creates StateDirectory=/ConfigurationDirectory= before starting the service.
    std::fs::create_dir_all(data_dir).expect("state dir");
    std::fs::create_dir_all(Path::new(cfg_path).parent().expect("cfg dir")).expect("cfg dir");
    let port = free_loopback_port().expect("port");
    let mut cfg = Config::local(ByteSize::gib(1)).with_target(
        TargetCfg::iscsi("iqn.2026-11.io.lunar:unit").with_lun(LunCfg::new(
            0,
            "v0",
            ByteSize::mib(64),
        )),
    );
    cfg.portals = vec![PortalCfg::new(SocketAddr::from(([127, 0, 0, 1], port)))];
    cfg.metrics.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    std::fs::write(cfg_path, yaml(&cfg)).expect("write config");

    let notify_path = root.path().join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).expect("bind notify socket");
    let log = std::fs::File::create(root.path().join("lunard.log")).expect("log");
    let mut child = Command::new(lunard_bin().expect("lunard binary"))
        .args(&args)
        .env("NOTIFY_SOCKET", &notify_path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start lunard");
    let pid = child.id();

    let ready = recv_state(&notify, "READY=1", Duration::from_secs(60));
    let addr = format!("127.0.0.1:{port}").parse().expect("addr");
    assert!(
        wait_accepting(addr, Duration::from_secs(5)),
        "READY=1 was sent ({ready:?}) but the portal does not accept"
    );
    assert!(
        Path::new(data_dir).join("pool").exists()
            || std::fs::read_dir(data_dir).expect("ls").count() > 0
    );

    signal(pid, libc::SIGTERM);
    recv_state(&notify, "STOPPING=1", Duration::from_secs(30));
    let stop_secs: u64 = unit_value("TimeoutStopSec")
        .parse()
        .expect("TimeoutStopSec");
    let status = wait_timeout(&mut child, Duration::from_secs(stop_secs))
        .expect("wait")
        .unwrap_or_else(|| {
            let _ = child.kill();
            panic!("lunard did not stop within TimeoutStopSec={stop_secs}")
        });
    let log = std::fs::read_to_string(root.path().join("lunard.log")).unwrap_or_default();
    assert!(
        status.success(),
        "lunard exited with {status} after SIGTERM:\n{log}"
    );
    assert!(log.contains("stopped cleanly"), "{log}");
}
