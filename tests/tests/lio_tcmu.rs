//! Fibre Channel's path through Linux LIO and TCMU, with the real kernel (issue 8).
//!
//! A QLogic HBA in target mode cannot be had here, but LIO's loopback fabric (`tcm_loop`)
//! takes its place: the commands of a loopback LUN go through the same LIO core and the same
//! TCMU user backstore (`target_core_user`, a UIO device with a shared command ring) as those
//! of a qla2xxx port. The test boots the Debian guest of the kernel-initiator suite (QEMU
//! TCG), copies the host's `lunard` and `lunarctl` (with their libraries) into it, and runs
//! `tests/guest/scenarios/lio.sh`: lunard configures configfs itself, the LUN appears as a
//! local disk, ext4 round-trips on it, a full clone appears as a second disk only once it
//! completed and holds the point-in-time data, a lunard killed with SIGKILL is replaced by
//! one that re-attaches to the backstores left in configfs (same disks, data intact), and a
//! SIGTERM leaves configfs clean.
//!
//! `lunard_tcmu_next_to_tcmu_runner` is the side-by-side figure of issue 8: in one guest,
//! lunard's loopback disk and one served by Debian's `tcmu-runner` (a raw file, through its
//! `qcow` handler) are measured with `fio` (4 KiB random read and write, QD1 and QD16,
//! alternating). It prints the IOPS and the lunard/tcmu-runner ratios; it asserts only that
//! both disks appeared and every fio run produced a figure, never a speed.

use lunar_e2e::daemon::lunard_bin;
use lunar_e2e::guest::{
    binary_with_libs, binary_with_libs_from, dedup_files, DebianPackages, Guest, GuestFile,
    Transcript, QEMU,
};
use lunar_e2e::require_tools;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(900);

const CHECKS: &[&str] = &[
    "modprobe-tcmu",
    "modprobe-tcm-loop",
    "lio-present",
    "lunard-ready",
    "disk-appears",
    "inquiry-vendor",
    "mkfs",
    "write-files",
    "checksums",
    "e2fsck",
    "clone-create",
    "clone-completes",
    "clone-hidden",
    "clone-disk",
    "clone-own-id",
    "clone-checksums",
    "clone-point-in-time",
    "clone-e2fsck",
    "crash-leaves-backstore",
    "reattach",
    "reattach-checksums",
    "reattach-e2fsck",
    "no-kernel-errors",
    "lunard-stops",
    "configfs-clean",
    "disks-gone",
];

fn report(t: &Transcript) {
    eprintln!(
        "lio/tcmu: boot {:.0} s, total {:.0} s, {} checks passed",
        t.boot_secs.unwrap_or(f64::NAN),
        t.total_secs,
        t.passed.len()
    );
    for i in &t.info {
        eprintln!("  guest INFO {i}");
    }
}

#[test]
fn loopback_lun_through_tcmu_with_a_clone() {
    require_tools!(QEMU, "apt-get", "dpkg-deb", "ldd");
    let lunard = lunard_bin().expect("lunard binary");
    let lunarctl = lunard.with_file_name("lunarctl");
    assert!(
        lunarctl.is_file(),
        "{} missing: build with `cargo build --release --bins`",
        lunarctl.display()
    );
    let mut files = binary_with_libs(&lunard, "usr/bin/lunard").expect("lunard for the guest");
    files.extend(binary_with_libs(&lunarctl, "usr/bin/lunarctl").expect("lunarctl for the guest"));
    let wwpn = "naa.5001405000000001";
    let env = [
        ("WWPN", wwpn.to_string()),
        ("VOL", "fc0".to_string()),
        ("PERF_MIB", "32".to_string()),
    ];
    let g = Guest::boot_with("lio.sh", &env, &files, 1024, LIMIT).expect("boot guest");
    let t = g.finish().expect("guest run");
    report(&t);
    t.assert_passed(CHECKS);
    // The disk is lunard's volume through LIO: 160 MiB, and the backstore and UIO device
    // carry lunard's names.
    let disk = t.info_values("disk");
    assert!(
        disk.iter().any(|i| i.contains("size_sectors=327680")),
        "guest saw an unexpected disk: {disk:?}"
    );
    assert!(
        disk.iter()
            .any(|i| i.contains("backstores=lunar_5001405000000001_0")),
        "unexpected backstore: {disk:?}"
    );
    let uio = t.info_values("uio");
    assert!(
        uio.iter()
            .any(|u| u.contains("tcm-user/0/lunar_5001405000000001_0/lunar/fc0")),
        "unexpected UIO device names: {uio:?}"
    );
}

const VS_LIMIT: Duration = Duration::from_secs(600);

const VS_CHECKS: &[&str] = &[
    "modprobe-tcmu",
    "modprobe-tcm-loop",
    "lio-present",
    "lunard-ready",
    "lunard-disk",
    "runner-starts",
    "runner-backstore",
    "runner-target",
    "runner-disk",
    "fill-lunard",
    "fill-runner",
    "fio-randread-qd1-lunard",
    "fio-randread-qd1-runner",
    "fio-randread-qd16-lunard",
    "fio-randread-qd16-runner",
    "fio-randwrite-qd1-lunard",
    "fio-randwrite-qd1-runner",
    "fio-randwrite-qd16-lunard",
    "fio-randwrite-qd16-runner",
    "no-kernel-errors",
    "both-alive",
];

/// Debian's tcmu-runner (with the one handler used) and the host's fio, for the guest.
fn runner_and_fio() -> Vec<GuestFile> {
    // libnl-genl-3-200 is a dependency of libtcmu2 the host may lack; the rest (glib, kmod,
    // zlib) is on any Debian host.
    let debs = DebianPackages::fetch(&["tcmu-runner", "libtcmu2", "libnl-genl-3-200"])
        .expect("apt-get download tcmu-runner");
    let libs = debs.lib_dirs();
    let mut files = binary_with_libs_from(
        &debs.path("usr/bin/tcmu-runner"),
        "usr/bin/tcmu-runner",
        &libs,
    )
    .expect("tcmu-runner for the guest");
    // The scenario shows that tcmu-runner needs its configuration file, then installs it.
    files.push(GuestFile::dir("etc/tcmu"));
    files.push(
        GuestFile::from_host(
            &debs.path("etc/tcmu/tcmu.conf"),
            "etc/tcmu/tcmu.conf.dist",
            0o644,
        )
        .expect("tcmu.conf"),
    );
    // Its default handler directory, under /lib (the scenario passes --handler-path).
    files.push(GuestFile::dir("lib/x86_64-linux-gnu/tcmu-runner"));
    files.extend(
        binary_with_libs_from(
            &debs.path("usr/lib/x86_64-linux-gnu/tcmu-runner/handler_qcow.so"),
            "lib/x86_64-linux-gnu/tcmu-runner/handler_qcow.so",
            &libs,
        )
        .expect("handler_qcow.so for the guest"),
    );
    let fio = std::path::Path::new("/usr/bin/fio");
    files.extend(binary_with_libs(fio, "usr/bin/fio").expect("fio for the guest"));
    files
}

#[test]
fn lunard_tcmu_next_to_tcmu_runner() {
    require_tools!(QEMU, "apt-get", "dpkg-deb", "ldd", "fio");
    let lunard = lunard_bin().expect("lunard binary");
    let mut files = binary_with_libs(&lunard, "usr/bin/lunard").expect("lunard for the guest");
    files.extend(runner_and_fio());
    let files = dedup_files(files);
    let env = [
        ("WWPN", "naa.5001405000000001".to_string()),
        ("RWWPN", "naa.5001405000000009".to_string()),
        ("VOL", "bench".to_string()),
        ("MIB", "64".to_string()),
        ("RUNTIME", "6".to_string()),
    ];
    let g = Guest::boot_with("lio_vs_tcmu_runner.sh", &env, &files, 1536, VS_LIMIT)
        .expect("boot guest");
    let t = g.finish().expect("guest run");
    report(&t);
    t.assert_passed(VS_CHECKS);
    let figures = t.info_values("fio");
    eprintln!("4 KiB random I/O through tcm_loop, lunard vs tcmu-runner (qcow handler, raw file):");
    for f in &figures {
        eprintln!("  {f}");
    }
    assert_eq!(figures.len(), 4, "expected four fio figures: {figures:?}");
    for f in &figures {
        let iops = |key: &str| -> f64 {
            f.split_whitespace()
                .find_map(|w| w.strip_prefix(key))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0.0)
        };
        assert!(
            iops("lunard_iops=") > 0.0 && iops("tcmu_runner_iops=") > 0.0,
            "a run without a figure: {f}"
        );
    }
}
