//! Records the tgtd baseline for the conformance comparison.
//!
//! `cargo test --release -p lunar-e2e --test tgtd_baseline -- --ignored --nocapture`
//! (as root) starts `tgtd` on a free loopback port with a 1 GiB sparse tmpfs-backed LUN, runs
//! `iscsi-test-cu --dataloss -t ALL` exactly as `conformance.rs` runs it against lunard, and
//! rewrites `tests/baseline/tgtd-iscsi-test-cu.{txt,log}`. Ignored by default: the committed
//! files are the baseline, and they should only change deliberately (e.g. a new libiscsi).

use lunar_e2e::conformance::{Outcome, Run};
use lunar_e2e::{require_tools, Tgtd};
use std::path::Path;

#[test]
#[ignore = "re-records tests/baseline/ from tgtd; run deliberately"]
fn record_tgtd_baseline() {
    require_tools!("tgtd", "tgtadm", "iscsi-test-cu");
    let tgtd = Tgtd::start(1 << 30).expect("start tgtd");
    let (report, out) = Run::all(&tgtd.lun_url())
        .execute()
        .expect("run iscsi-test-cu");
    let version = lunar_e2e::process::run(
        std::process::Command::new(lunar_e2e::tools::find("tgtd").expect("tgtd")).arg("-V"),
        std::time::Duration::from_secs(10),
    )
    .map(|o| o.combined().trim().to_string())
    .unwrap_or_default();
    let header = format!(
        "iscsi-test-cu --dataloss -t ALL URL URL against tgtd {version}\n\
         (1 GiB sparse file LUN on tmpfs, loopback). Regenerate with:\n\
         cargo test --release -p lunar-e2e --test tgtd_baseline -- --ignored --nocapture"
    );
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("baseline");
    std::fs::create_dir_all(&dir).expect("mkdir baseline");
    std::fs::write(
        dir.join("tgtd-iscsi-test-cu.txt"),
        report.to_results_file(&header),
    )
    .expect("write baseline");
    std::fs::write(dir.join("tgtd-iscsi-test-cu.log"), &out.stdout).expect("write raw log");
    let c = report.counts();
    println!("tgtd iscsi-test-cu ALL: {c}");
    for r in report.with_outcome(Outcome::Fail) {
        println!(
            "  FAIL {}: {}",
            r.name,
            r.messages.first().map_or("", String::as_str)
        );
    }
    // Sanity: tgtd is a mature target; a baseline in which most tests fail means the harness
    // (not tgtd) is broken, and must not be recorded silently.
    assert!(c.total() >= 200, "only {} tests reported", c.total());
    assert!(c.pass > c.fail * 4, "implausible tgtd baseline: {c}");
}
