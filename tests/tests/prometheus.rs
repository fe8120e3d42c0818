//! Operational visibility with a real Prometheus server (Debian `prometheus`).
//!
//! lunard runs with `--metrics`, qemu-io writes and reads a known number of bytes, a real
//! Prometheus scrapes lunard on loopback, and the test queries Prometheus's HTTP API: the
//! series exist and moved exactly as the I/O did. It then provokes the events operators alert
//! on — a CHAP login with the wrong secret, a command that ends in ILLEGAL REQUEST, an
//! ABORT TASK, linked and full clone jobs — and checks the security, error, task-management,
//! clone-job and LUN-state series moved by exactly those events. `promtool` checks the
//! exposition format, the shipped alert rules and their unit test.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use lunar_e2e::config::{yaml, ByteSize, ChapCfg, Config, LunCfg, TargetCfg};
use lunar_e2e::initiator::{libiscsi, qemu_image_opts, qemu_io, url, Auth};
use lunar_e2e::net::free_loopback_port;
use lunar_e2e::process::run;
use lunar_e2e::{require_tools, Lunard, LunardOptions, DEFAULT_TARGET_IQN, TEST_INITIATOR_IQN};

const MIB: u64 = 1 << 20;

/// A second target that requires CHAP, next to the embedded default's demo target.
const SECURE_IQN: &str = "iqn.2026-11.io.lunar:secure";
const CHAP_USER: &str = "metrics-user";
const CHAP_SECRET: &str = "metrics-secret-1234";

/// The embedded default configuration (target `demo`, volume `demo`) plus a CHAP target.
fn config_yaml() -> String {
    yaml(
        &Config::local(ByteSize::gib(16))
            .with_target(TargetCfg::iscsi(DEFAULT_TARGET_IQN).with_lun(LunCfg::new(
                0,
                "demo",
                ByteSize::gib(1),
            )))
            .with_target(
                TargetCfg::iscsi(SECURE_IQN)
                    .with_chap(ChapCfg::new(CHAP_USER, CHAP_SECRET))
                    .with_lun(LunCfg::new(0, "secure", ByteSize::mib(64))),
            ),
    )
}

/// One HTTP/1.1 GET on loopback; returns (status code, body).
fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut out = Vec::new();
    s.read_to_end(&mut out)?;
    let text = String::from_utf8_lossy(&out).into_owned();
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    // Prometheus answers with chunked encoding; de-chunk naively (sizes on their own lines).
    Ok((code, dechunk(&text, body)))
}

fn dechunk(head: &str, body: String) -> String {
    if !head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        return body;
    }
    let mut out = String::new();
    let mut rest = body.as_str();
    while let Some((size, after)) = rest.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || after.len() < n {
            break;
        }
        out.push_str(&after[..n]);
        rest = after[n..].trim_start_matches("\r\n");
    }
    out
}

/// Value of the first sample of `name` whose label set contains every `labels` pair.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .find_map(|l| l.rsplit(' ').next()?.parse().ok())
}

struct Prometheus(Child);

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_prometheus(dir: &Path, scrape: SocketAddr, listen: SocketAddr) -> Prometheus {
    let cfg = dir.join("prometheus.yml");
    std::fs::write(
        &cfg,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  \
             - job_name: lunar\n    static_configs:\n      - targets: ['{scrape}']\n"
        ),
    )
    .expect("write prometheus.yml");
    let log = std::fs::File::create(dir.join("prometheus.log")).expect("log");
    let child = Command::new("prometheus")
        .arg(format!("--config.file={}", cfg.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("tsdb").display()
        ))
        .arg(format!("--web.listen-address={listen}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start prometheus");
    Prometheus(child)
}

/// Asks Prometheus for `query` until the first result's value satisfies `ok`.
fn wait_query(prom: SocketAddr, query: &str, ok: impl Fn(f64) -> bool) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(90);
    let enc: String = query
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'.' | b'-' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    let mut last = String::new();
    while Instant::now() < deadline {
        if let Ok((200, body)) = http_get(prom, &format!("/api/v1/query?query={enc}")) {
            // {"status":"success","data":{"resultType":"vector","result":[{"metric":{...},"value":[ts,"V"]}]}}
            if let Some(v) = body
                .split("\"value\":[")
                .nth(1)
                .and_then(|s| s.split('"').nth(1))
                .and_then(|v| v.parse::<f64>().ok())
            {
                if ok(v) {
                    return v;
                }
            }
            last = body;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    panic!("Prometheus never answered `{query}` as expected; last answer: {last}");
}

#[test]
fn prometheus_scrapes_lunard_and_values_follow_io() {
    require_tools!("prometheus", "promtool", "qemu-io");
    let mport = free_loopback_port().expect("port");
    let maddr: SocketAddr = format!("127.0.0.1:{mport}").parse().expect("addr");
    let d = Lunard::start_with(LunardOptions {
        config_yaml: Some(config_yaml()),
        extra_args: vec!["--metrics".into(), maddr.to_string()],
        ..LunardOptions::default()
    })
    .expect("start lunard");

    // Endpoints answer.
    assert_eq!(http_get(maddr, "/healthz").expect("healthz").0, 200);
    assert_eq!(http_get(maddr, "/readyz").expect("readyz").0, 200);
    let (code, before) = http_get(maddr, "/metrics").expect("metrics");
    assert_eq!(code, 200);
    let lun = [("target", DEFAULT_TARGET_IQN), ("lun", "0")];
    let w0 = sample(&before, "lunar_lun_written_bytes_total", &lun).unwrap_or(0.0);
    let r0 = sample(&before, "lunar_lun_read_bytes_total", &lun).unwrap_or(0.0);

    // Known I/O: 8 MiB written, then the same 8 MiB read back and verified.
    let opts = qemu_image_opts(d.addr(), DEFAULT_TARGET_IQN, 0, TEST_INITIATOR_IQN, None);
    qemu_io(
        &opts,
        &[
            format!("write -P 0x5a 0 {}", 8 * MIB),
            format!("read -P 0x5a 0 {}", 8 * MIB),
        ],
    )
    .expect("qemu-io");

    let (_, after) = http_get(maddr, "/metrics").expect("metrics");
    let w1 = sample(&after, "lunar_lun_written_bytes_total", &lun).expect("written series");
    let r1 = sample(&after, "lunar_lun_read_bytes_total", &lun).expect("read series");
    assert_eq!(
        w1 - w0,
        (8 * MIB) as f64,
        "bytes written must equal what qemu-io wrote"
    );
    assert!(r1 - r0 >= (8 * MIB) as f64, "read bytes {r0} -> {r1}");
    let used = sample(&after, "lunar_pool_used_bytes", &[]).expect("pool used");
    assert!(
        used >= (8 * MIB) as f64,
        "pool used {used} after 8 MiB written"
    );
    let mapped =
        sample(&after, "lunar_volume_mapped_bytes", &[("volume", "demo")]).expect("mapped");
    assert_eq!(
        mapped,
        (8 * MIB) as f64,
        "thin volume maps exactly what was written"
    );
    assert!(
        sample(&after, "lunar_iscsi_logins_total", &[("result", "success")]).unwrap_or(0.0) >= 1.0
    );
    assert!(sample(&after, "process_open_fds", &[]).is_some());

    // The exposition passes promtool's linter.
    let dir = tempfile::tempdir().expect("tempdir");
    let prom_file = dir.path().join("metrics.txt");
    std::fs::write(&prom_file, &after).expect("write metrics");
    let lint = run(
        Command::new("sh")
            .arg("-c")
            .arg(format!("promtool check metrics < {}", prom_file.display())),
        Duration::from_secs(60),
    )
    .expect("promtool");
    assert!(
        lint.status.success(),
        "promtool check metrics:\n{}",
        lint.combined()
    );

    // A real Prometheus scrapes lunard and sees the same figures.
    let pport = free_loopback_port().expect("port");
    let paddr: SocketAddr = format!("127.0.0.1:{pport}").parse().expect("addr");
    let _prom = start_prometheus(dir.path(), maddr, paddr);
    let q =
        format!("sum(lunar_lun_written_bytes_total{{target=\"{DEFAULT_TARGET_IQN}\",lun=\"0\"}})");
    let seen = wait_query(paddr, &q, |v| v >= w1);
    assert_eq!(seen, w1, "Prometheus sees the bytes written");
    wait_query(paddr, "up{job=\"lunar\"}", |v| v == 1.0);
    wait_query(paddr, "lunar_pool_capacity_bytes", |v| v > 0.0);
    // Thin allocations were committed: the pool's commit observer fed the histogram.
    wait_query(
        paddr,
        "lunar_pool_metadata_commit_duration_seconds_count",
        |v| v > 0.0,
    );

    // A clone made with lunarctl shows up as a clone and a new volume.
    let lunarctl = lunar_e2e::daemon::lunard_bin()
        .expect("lunard")
        .with_file_name("lunarctl");
    let sock = d.data_dir().join("admin.sock");
    let out = run(
        Command::new(&lunarctl).arg("--socket").arg(&sock).args([
            "clone",
            "create",
            "--source",
            "demo",
            "--name",
            "demo-clone",
        ]),
        Duration::from_secs(60),
    )
    .expect("lunarctl");
    assert!(
        out.status.success(),
        "lunarctl clone create:\n{}",
        out.combined()
    );
    wait_query(paddr, "lunar_pool_clones", |v| v == 1.0);
    wait_query(
        paddr,
        "lunar_volume_mapped_bytes{volume=\"demo-clone\"}",
        |v| v == (8 * MIB) as f64,
    );

    // More I/O moves the series in Prometheus too.
    qemu_io(&opts, &[format!("write -P 0x33 {} {}", 16 * MIB, 4 * MIB)]).expect("qemu-io 2");
    // Prometheus may have scraped in the middle of the write: wait for a value at least
    // the whole write above `w1` (not merely above it), then it must be exactly that.
    let seen2 = wait_query(paddr, &q, |v| v >= w1 + (4 * MIB) as f64);
    assert_eq!(seen2 - w1, (4 * MIB) as f64);

    // Events operators alert on. Each is checked as an exact delta on the scraped endpoint,
    // then Prometheus must show the same figure.
    let (_, base) = http_get(maddr, "/metrics").expect("metrics");
    let val = |text: &str, name: &str, labels: &[(&str, &str)]| -> f64 {
        sample(text, name, labels).unwrap_or(0.0)
    };
    let demo0 = [("target", DEFAULT_TARGET_IQN), ("lun", "0")];
    let auth_failed = [("result", "failure"), ("reason", "auth")];
    let login_ok = [("result", "success"), ("reason", "ok")];
    let illegal = [
        ("target", DEFAULT_TARGET_IQN),
        ("lun", "0"),
        ("sense_key", "illegal_request"),
    ];
    let secure = [("target", SECURE_IQN)];

    // 1. CHAP with the wrong secret is refused: one failed login for `auth` and one CHAP
    //    security event on that target; the right secret then logs in.
    let secure_lun = (SECURE_IQN, 0);
    let wrong = Auth::chap(CHAP_USER, "wrong-secret-9876");
    let bad = libiscsi(
        "iscsi-inq",
        &[],
        &url(d.addr(), Some(secure_lun), &wrong),
        Some(TEST_INITIATOR_IQN),
        &Auth::default(),
    )
    .expect("iscsi-inq");
    assert!(
        !bad.status.success(),
        "a wrong CHAP secret must be refused:\n{}",
        bad.combined()
    );
    let (_, m1) = http_get(maddr, "/metrics").expect("metrics");
    assert_eq!(
        val(&m1, "lunar_iscsi_chap_failures_total", &secure)
            - val(&base, "lunar_iscsi_chap_failures_total", &secure),
        1.0,
        "one CHAP failure on {SECURE_IQN}"
    );
    assert_eq!(
        val(&m1, "lunar_iscsi_logins_total", &auth_failed)
            - val(&base, "lunar_iscsi_logins_total", &auth_failed),
        1.0,
        "one failed login with reason auth"
    );
    assert_eq!(
        val(&m1, "lunar_iscsi_logins_total", &login_ok),
        val(&base, "lunar_iscsi_logins_total", &login_ok),
        "the refused login is not counted as a success"
    );
    libiscsi(
        "iscsi-inq",
        &[],
        &url(
            d.addr(),
            Some(secure_lun),
            &Auth::chap(CHAP_USER, CHAP_SECRET),
        ),
        Some(TEST_INITIATOR_IQN),
        &Auth::default(),
    )
    .and_then(|o| o.check())
    .expect("iscsi-inq with the right CHAP secret");
    let (_, m2) = http_get(maddr, "/metrics").expect("metrics");
    assert_eq!(
        val(&m2, "lunar_iscsi_logins_total", &login_ok)
            - val(&m1, "lunar_iscsi_logins_total", &login_ok),
        1.0,
        "the right secret logs in once"
    );
    assert_eq!(
        val(&m2, "lunar_iscsi_chap_failures_total", &secure),
        val(&m1, "lunar_iscsi_chap_failures_total", &secure),
        "a good login is no CHAP failure"
    );

    // 2. INQUIRY of a VPD page the LUN does not have (0x99; iscsi-inq takes it in decimal)
    //    ends in ILLEGAL REQUEST, counted once under that sense key on that LUN.
    let bad_vpd = libiscsi(
        "iscsi-inq",
        &["-e", "1", "-c", "153"],
        &d.lun_url(DEFAULT_TARGET_IQN, 0),
        Some(TEST_INITIATOR_IQN),
        &Auth::default(),
    )
    .expect("iscsi-inq");
    assert!(
        !bad_vpd.status.success(),
        "VPD page 0x99 must fail:\n{}",
        bad_vpd.combined()
    );
    let (_, m3) = http_get(maddr, "/metrics").expect("metrics");
    assert_eq!(
        val(&m3, "lunar_lun_errors_total", &illegal) - val(&m2, "lunar_lun_errors_total", &illegal),
        1.0,
        "one ILLEGAL REQUEST on LUN 0:\n{}",
        bad_vpd.combined()
    );
    assert!(
        sample(
            &m3,
            "lunar_lun_errors_total",
            &[("sense_key", "data_protect")]
        )
        .is_none(),
        "no other sense key is invented"
    );

    // 3. An ABORT TASK task-management request (libiscsi's own TMF test: a WRITE, then
    //    ABORT TASK for it).
    let abort = [("function", "abort_task")];
    let tmf = run(
        Command::new("iscsi-test-cu")
            .args([
                "--test",
                "iSCSI.iSCSITMF.AbortTaskSimpleAsync",
                "--dataloss",
            ])
            .arg("--initiator-name")
            .arg(TEST_INITIATOR_IQN)
            .arg(d.lun_url(DEFAULT_TARGET_IQN, 0)),
        Duration::from_secs(120),
    )
    .expect("iscsi-test-cu");
    assert!(
        tmf.combined().contains("AbortTaskSimpleAsync ...passed"),
        "{}",
        tmf.combined()
    );
    let (_, m4) = http_get(maddr, "/metrics").expect("metrics");
    assert!(
        val(&m4, "lunar_iscsi_task_management_requests_total", &abort)
            - val(&m3, "lunar_iscsi_task_management_requests_total", &abort)
            >= 1.0,
        "ABORT TASK counted:\n{}",
        tmf.combined()
    );

    // 4. A full clone mapped as LUN 1: no LUN 1 series before, then a completed job at
    //    progress 1 and an online LUN.
    let lun1 = |state: &'static str| {
        [
            ("target", DEFAULT_TARGET_IQN),
            ("lun", "1"),
            ("name", "demo-full"),
            ("state", state),
        ]
    };
    assert!(
        sample(&m4, "lunar_lun_state", &lun1("online")).is_none(),
        "no LUN 1 before the clone"
    );
    let completed = [("result", "completed")];
    let full = run(
        Command::new(&lunarctl).arg("--socket").arg(&sock).args([
            "clone",
            "create",
            "--source",
            "demo",
            "--name",
            "demo-full",
            "--mode",
            "full",
            "--target",
            DEFAULT_TARGET_IQN,
            "--lun-id",
            "1",
            "--wait",
        ]),
        Duration::from_secs(120),
    )
    .expect("lunarctl");
    assert!(
        full.status.success(),
        "lunarctl clone create --mode full:\n{}",
        full.combined()
    );
    let (_, m5) = http_get(maddr, "/metrics").expect("metrics");
    assert_eq!(
        val(&m5, "lunar_clone_jobs_finished_total", &completed)
            - val(&m4, "lunar_clone_jobs_finished_total", &completed),
        1.0,
        "the full clone's job finished as completed"
    );
    assert_eq!(
        val(&m5, "lunar_clone_jobs_finished_total", &completed),
        2.0,
        "linked + full clone jobs completed"
    );
    assert_eq!(
        sample(
            &m5,
            "lunar_clone_job_progress_ratio",
            &[("source", "demo"), ("destination", "demo-full")]
        ),
        Some(1.0)
    );
    let job_states: Vec<&str> = m5
        .lines()
        .filter(|l| l.starts_with("lunar_clone_job_state{") && l.ends_with(" 1"))
        .collect();
    assert_eq!(job_states.len(), 2, "one state per job: {job_states:?}");
    assert!(
        job_states.iter().all(|l| l.contains("state=\"completed\"")),
        "{job_states:?}"
    );
    assert_eq!(sample(&m5, "lunar_lun_state", &lun1("online")), Some(1.0));
    assert_eq!(sample(&m5, "lunar_lun_state", &lun1("creating")), Some(0.0));
    assert_eq!(sample(&m5, "lunar_lun_state", &lun1("offline")), Some(0.0));
    let demo_state = |s| {
        let mut l = demo0.to_vec();
        l.push(("state", s));
        sample(&m5, "lunar_lun_state", &l)
    };
    assert_eq!(demo_state("online"), Some(1.0));
    assert_eq!(demo_state("offline"), Some(0.0));

    // Prometheus shows the same figures.
    let expect = |query: String, want: f64| {
        let got = wait_query(paddr, &query, |v| v == want);
        assert_eq!(got, want, "{query}");
    };
    expect(
        format!("lunar_iscsi_chap_failures_total{{target=\"{SECURE_IQN}\"}}"),
        val(&m5, "lunar_iscsi_chap_failures_total", &secure),
    );
    expect(
        "lunar_iscsi_logins_total{result=\"failure\",reason=\"auth\"}".into(),
        val(&m5, "lunar_iscsi_logins_total", &auth_failed),
    );
    expect(
        "lunar_iscsi_logins_total{result=\"success\",reason=\"ok\"}".into(),
        val(&m5, "lunar_iscsi_logins_total", &login_ok),
    );
    expect(
        format!(
            "lunar_lun_errors_total{{target=\"{DEFAULT_TARGET_IQN}\",lun=\"0\",\
             sense_key=\"illegal_request\"}}"
        ),
        val(&m5, "lunar_lun_errors_total", &illegal),
    );
    expect(
        "lunar_iscsi_task_management_requests_total{function=\"abort_task\"}".into(),
        val(&m5, "lunar_iscsi_task_management_requests_total", &abort),
    );
    expect(
        "lunar_clone_jobs_finished_total{result=\"completed\"}".into(),
        2.0,
    );
    expect(
        "sum(lunar_clone_job_state{state=\"completed\"})".into(),
        2.0,
    );
    expect(
        "lunar_clone_job_progress_ratio{destination=\"demo-full\"}".into(),
        1.0,
    );
    expect(
        format!("lunar_lun_state{{target=\"{DEFAULT_TARGET_IQN}\",lun=\"1\",state=\"online\"}}"),
        1.0,
    );
    expect(
        format!("sum(lunar_lun_state{{target=\"{DEFAULT_TARGET_IQN}\",state=\"online\"}})"),
        2.0,
    );
    drop(d);
}

#[test]
fn shipped_alert_rules_check_and_unit_test() {
    require_tools!("promtool");
    let deploy = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/prometheus");
    for args in [
        vec!["check", "rules", "lunar-alerts.yml"],
        vec!["test", "rules", "lunar-alerts.test.yml"],
        vec!["check", "config", "prometheus.yml"],
    ] {
        let out = run(
            Command::new("promtool").args(&args).current_dir(&deploy),
            Duration::from_secs(60),
        )
        .expect("promtool");
        assert!(
            out.status.success(),
            "promtool {args:?}:\n{}",
            out.combined()
        );
    }
}
