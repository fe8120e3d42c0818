//! The null iSCSI target (`src/bin/lunar-null-target.rs`), the benchmark's reference for the
//! machine's limit (tests/scripts/bench-vs-tgtd.sh), must stay a target real initiators
//! accept, or the benchmark's limit column would quietly stop meaning anything:
//!
//! - `iscsi-ls -s`: discovery (SendTargets), then a normal login, REPORT LUNS, INQUIRY and
//!   READ CAPACITY;
//! - `qemu-io`: 1 MiB writes (immediate data, unsolicited Data-Out and R2T-solicited bursts:
//!   the data lunard negotiates) and reads, which return zeros;
//! - fio's libiscsi engine, when a build with it is at hand (`FIO`, or the cache directory
//!   that tests/scripts/build-fio-libiscsi.sh fills), for the benchmark's own fio rows;
//! - `--tcp-throughput`, the loopback TCP figure, prints a positive number.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use lunar_e2e::initiator::{qemu_image_opts, qemu_io};
use lunar_e2e::require_tools;

const IQN: &str = "iqn.2026-11.io.lunar:null";

struct NullTarget {
    child: Child,
    addr: std::net::SocketAddr,
}

impl NullTarget {
    fn start() -> NullTarget {
        let mut child = Command::new(env!("CARGO_BIN_EXE_lunar-null-target"))
            .args(["--listen", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("start lunar-null-target");
        let out = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(out).read_line(&mut line).expect("read");
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
        NullTarget { child, addr }
    }
}

impl Drop for NullTarget {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{cmd:?} failed: {text}");
    text
}

#[test]
fn iscsi_ls_discovers_and_inspects_the_null_target() {
    require_tools!("iscsi-ls");
    let t = NullTarget::start();
    let text = run(Command::new("iscsi-ls").args([
        "-s",
        "-i",
        "iqn.2026-11.io.lunar.test:ls",
        &format!("iscsi://{}", t.addr),
    ]));
    assert!(text.contains(&format!("Target:{IQN}")), "{text}");
    assert!(text.contains("Lun:0"), "{text}");
    assert!(text.contains("DIRECT_ACCESS"), "{text}");
}

#[test]
fn qemu_writes_and_reads_through_the_null_target() {
    require_tools!("qemu-io");
    let t = NullTarget::start();
    let opts = qemu_image_opts(t.addr, IQN, 0, "iqn.2026-11.io.lunar.test:qemu", None);
    // The writes are taken and dropped; every read returns zeros.
    let cmds = vec![
        "write -P 0xab 0 1M".to_string(),
        "write -P 0xcd 4096 4096".to_string(),
        "aio_write -P 0x11 2M 1M".to_string(),
        "aio_write -P 0x12 3M 1M".to_string(),
        "aio_flush".to_string(),
        "read -P 0 0 2M".to_string(),
        "flush".to_string(),
    ];
    let out = qemu_io(&opts, &cmds).expect("qemu-io");
    assert!(
        out.combined().contains("read 2097152/2097152"),
        "{}",
        out.combined()
    );
}

/// fio with the libiscsi engine, as the benchmark runs it.
fn fio_libiscsi() -> Option<std::path::PathBuf> {
    let fio = std::env::var_os("FIO")
        .map(std::path::PathBuf::from)
        .or_else(|| {
            let cache = std::env::var_os("XDG_CACHE_HOME")
                .map(std::path::PathBuf::from)
                .or_else(|| {
                    std::env::var_os("HOME").map(|h| std::path::Path::new(&h).join(".cache"))
                })?;
            Some(cache.join("lunar/fio-libiscsi/fio"))
        })?;
    let help = Command::new(&fio).arg("--enghelp").output().ok()?;
    String::from_utf8_lossy(&help.stdout)
        .contains("libiscsi")
        .then_some(fio)
}

#[test]
fn fio_libiscsi_runs_the_benchmark_jobs_against_the_null_target() {
    let Some(fio) = fio_libiscsi() else {
        eprintln!("no fio with the libiscsi engine (tests/scripts/build-fio-libiscsi.sh): skipped");
        return;
    };
    let t = NullTarget::start();
    let url = format!("iscsi://{}/{IQN}/0", t.addr).replace(':', "\\:");
    for (rw, qd) in [("randread", "1"), ("randread", "32"), ("randwrite", "32")] {
        let text = run(Command::new(&fio).args([
            "--name=null",
            "--ioengine=libiscsi",
            "--initiator=iqn.2026-11.io.lunar.test:fio",
            &format!("--filename={url}"),
            &format!("--rw={rw}"),
            "--bs=4k",
            &format!("--iodepth={qd}"),
            "--size=16m",
            "--io_size=4m",
            "--output-format=terse",
            "--terse-version=3",
        ]));
        let line = text
            .lines()
            .find(|l| l.split(';').count() > 50)
            .unwrap_or_else(|| panic!("no terse line from fio {rw} QD{qd}: {text}"));
        let f: Vec<&str> = line.split(';').collect();
        // Field 6 (read) or 47 (write), 1-based: KiB transferred.
        let kib: u64 = f[if rw == "randwrite" { 46 } else { 5 }]
            .parse()
            .unwrap_or(0);
        assert_eq!(kib, 4096, "fio {rw} QD{qd} moved {kib} KiB: {line}");
    }
}

#[test]
fn loopback_tcp_throughput_is_measured() {
    let out = Command::new(env!("CARGO_BIN_EXE_lunar-null-target"))
        .args(["--tcp-throughput", "0.2"])
        .output()
        .expect("run");
    assert!(out.status.success());
    let mibs: f64 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("a number");
    assert!(mibs > 0.0);
}
