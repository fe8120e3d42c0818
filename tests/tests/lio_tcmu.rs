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

use lunar_e2e::daemon::lunard_bin;
use lunar_e2e::guest::{binary_with_libs, Guest, Transcript, QEMU};
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
