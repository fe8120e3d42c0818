//! libiscsi's conformance suite against lunard: `iscsi-test-cu --dataloss -t ALL`.
//!
//! Fails on any failed test, on any skip not in `tests/conformance/allowed-skips.txt`, and on
//! any test tgtd passes (per `tests/baseline/tgtd-iscsi-test-cu.txt`) that lunard does not.
//! The per-test results are written to `$CARGO_TARGET_DIR/lunar-e2e/lunard-iscsi-test-cu.txt`.
//!
//! lunard runs with two portals (`--portal 127.0.0.1:0` twice, both TPGT 1) and the
//! MultipathIO suite's second path goes through the second one, so the multipath tests see
//! two sessions on two portals of one target, as a host with two paths would.

use lunar_e2e::config::{
    open_target, with_portals, with_target, yaml, ByteSize, Config, LunCfg, PortalCfg, TargetCfg,
};
use lunar_e2e::conformance::{parse_results_file, regressions_vs, AllowList, Outcome, Run};
use lunar_e2e::{require_tools, Lunard, LunardOptions, DEFAULT_TARGET_IQN};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// libiscsi 1.19 tests whose own code contradicts SBC for LUNs with more than one logical
/// block per physical block, each with the exact failure that contradiction produces and
/// why. Such a test failing with exactly that message (every failure line names that
/// source line and text) is reported as a libiscsi defect and
/// does not fail the run; failing in any other way still does. Each one also runs on a
/// 4096-byte-block LUN (one logical block per physical block, where the test is
/// self-consistent) in `libiscsi_lbppb_sensitive_tests_on_a_4k_lun`, and must pass there.
const LIBISCSI_DEFECTS: &[(&str, &[&str], &str)] = &[(
    "ALL.GetLBAStatus.UnmapSingle",
    // The check in the second loop (line 135 in 1.19), not the one in the first loop.
    &[
        "test_get_lba_status_unmap_single.c:135",
        "lba offset in first descriptor does not",
    ],
    "its second loop asks GET LBA STATUS for LBA i+1 and expects the first descriptor to \
     start at LBA i+LBPPB; the two agree only when LBPPB is 1 (SBC-4 5.8.2: the first \
     descriptor starts at the requested LBA, which lunard returns)",
)];

/// Why `r` failed because of a listed libiscsi defect, if it did.
fn libiscsi_defect(r: &lunar_e2e::conformance::TestResult) -> Option<&'static str> {
    LIBISCSI_DEFECTS
        .iter()
        .find(|(name, needles, _)| {
            let failed: Vec<&String> = r.messages.iter().filter(|m| m.contains("FAIL")).collect();
            r.name == *name
                && !failed.is_empty()
                && failed.iter().all(|m| needles.iter().all(|n| m.contains(n)))
        })
        .map(|(_, _, why)| *why)
}

fn results_dir() -> PathBuf {
    // target/<profile>/deps/<exe> -> target/lunar-e2e
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent()?.parent()?.parent().map(|t| t.join("lunar-e2e")))
        .unwrap_or_else(std::env::temp_dir)
}

#[test]
fn libiscsi_test_cu_all() {
    require_tools!("iscsi-test-cu");
    let mut d = Lunard::start_with(LunardOptions {
        portals: 2,
        ..LunardOptions::default()
    })
    .expect("start lunard with two portals");
    let first = d.lun_url_via(0, DEFAULT_TARGET_IQN, 0).expect("portal 0");
    let second = d.lun_url_via(1, DEFAULT_TARGET_IQN, 0).expect("portal 1");
    assert_ne!(first, second, "two portals, two addresses");
    let mut run = Run::all_multipath(&first, &second);
    run.initiators = Some((
        "iqn.2026-11.io.lunar.test:cu-1".into(),
        "iqn.2026-11.io.lunar.test:cu-2".into(),
    ));
    run.timeout = std::time::Duration::from_secs(600);
    let (report, out) = run.execute().expect("iscsi-test-cu");

    let dir = results_dir();
    let _ = std::fs::create_dir_all(&dir);
    let file = dir.join("lunard-iscsi-test-cu.txt");
    let _ = std::fs::write(
        &file,
        report.to_results_file(
            "iscsi-test-cu --dataloss -t ALL URL URL2 against lunard \
             (URL2: the same LUN through a second portal)",
        ),
    );
    let _ = std::fs::write(dir.join("lunard-iscsi-test-cu.log"), &out.stdout);

    let allow = AllowList::load_default().expect("allow-list");
    let baseline_path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("baseline/tgtd-iscsi-test-cu.txt");
    let baseline =
        parse_results_file(&std::fs::read_to_string(&baseline_path).expect("read tgtd baseline"))
            .expect("parse tgtd baseline");
    let mut base_counts = lunar_e2e::conformance::Counts::default();
    for o in baseline.values() {
        match o {
            Outcome::Pass => base_counts.pass += 1,
            Outcome::Skip => base_counts.skip += 1,
            Outcome::Fail => base_counts.fail += 1,
        }
    }

    println!("iscsi-test-cu ALL: lunard {}", report.counts());
    println!("iscsi-test-cu ALL: tgtd   {base_counts} (baseline)");
    println!("per-test results: {}", file.display());
    // Per suite, where lunard and tgtd differ: "suite: lunard pass/skip/fail vs tgtd ...".
    let mut tgtd_suites: std::collections::BTreeMap<&str, [usize; 3]> = Default::default();
    for (name, o) in &baseline {
        let suite = name.rsplit_once('.').map_or(name.as_str(), |(s, _)| s);
        let slot = match o {
            Outcome::Pass => 0,
            Outcome::Skip => 1,
            Outcome::Fail => 2,
        };
        tgtd_suites.entry(suite).or_default()[slot] += 1;
    }
    for (suite, c) in report.suite_counts() {
        let ours = [c.pass, c.skip, c.fail];
        let theirs = tgtd_suites.get(suite.as_str()).copied().unwrap_or_default();
        if ours != theirs {
            println!(
                "  {suite:<34} lunard {}/{}/{}  tgtd {}/{}/{}  (pass/skip/fail)",
                ours[0], ours[1], ours[2], theirs[0], theirs[1], theirs[2]
            );
        }
    }

    let (defects, failures): (Vec<_>, Vec<_>) = report
        .with_outcome(Outcome::Fail)
        .partition(|r| libiscsi_defect(r).is_some());
    for r in &defects {
        println!(
            "  libiscsi defect, not counted: {} ({})",
            r.name,
            libiscsi_defect(r).unwrap_or_default()
        );
    }
    let failures: Vec<String> = failures
        .iter()
        .map(|r| format!("FAIL {}\n      {}", r.name, r.messages.join("\n      ")))
        .collect();
    let unexpected_skips: Vec<String> = report
        .with_outcome(Outcome::Skip)
        .filter(|r| allow.reason(&r.name).is_none())
        .map(|r| {
            let why = r.messages.iter().find(|m| m.contains("[SKIPPED]"));
            format!("SKIP {}: {}", r.name, why.map_or("", String::as_str))
        })
        .collect();
    let regressions = regressions_vs(&report, &baseline, &allow);
    for (title, list) in [
        ("failed tests", &failures),
        (
            "skips not in tests/conformance/allowed-skips.txt",
            &unexpected_skips,
        ),
        ("tests tgtd passes but lunard does not", &regressions),
    ] {
        if !list.is_empty() {
            println!("--- {} {title}:", list.len());
            for l in list {
                println!("  {l}");
            }
        }
    }
    d.check_alive().expect("lunard survived the suite");
    assert!(
        failures.is_empty() && unexpected_skips.is_empty() && regressions.is_empty(),
        "iscsi-test-cu: {} failed, {} unexpected skips, {} worse than tgtd (details above; \
         results in {})",
        failures.len(),
        unexpected_skips.len(),
        regressions.len(),
        file.display()
    );
}

/// The tests of [`LIBISCSI_DEFECTS`] on a LUN of 4096-byte blocks (LBPPB exponent 0), where
/// their code is self-consistent: they must pass, so lunard's behaviour they check is still
/// checked.
#[test]
fn libiscsi_lbppb_sensitive_tests_on_a_4k_lun() {
    require_tools!("iscsi-test-cu");
    const IQN: &str = "iqn.2026-11.io.lunar:four-k";
    let cfg = Config::local(ByteSize::gib(2)).with_target(
        TargetCfg::iscsi(IQN)
            .with_lun(LunCfg::new(0, "lun0", ByteSize::mib(256)).with_block_size(4096)),
    );
    let mut d = Lunard::start_with(LunardOptions {
        config_yaml: Some(yaml(&cfg)),
        portals: 0,
        ..LunardOptions::default()
    })
    .expect("start lunard with a 4096-byte LUN");
    for (name, _, _) in LIBISCSI_DEFECTS {
        let mut run = Run::all(&d.lun_url(IQN, 0));
        run.selector = name.to_string();
        run.multipath_url = None;
        let (report, out) = run.execute().expect("iscsi-test-cu");
        println!(
            "iscsi-test-cu {name} on a 4096-byte LUN: {}",
            report.counts()
        );
        let c = report.counts();
        assert!(
            c.total() == 1 && c.pass == 1,
            "{name} on a 4096-byte LUN: {c}\n{}",
            report.to_results_file("") + lunar_e2e::process::tail(&out.stdout, 4000)
        );
    }
    d.check_alive().expect("lunard survived");
}

/// The ReadOnly suite needs a write-protected LUN (on LUN 0 of the default target it skips):
/// every write-type command must fail with DATA PROTECT / WRITE PROTECTED.
#[test]
fn libiscsi_test_cu_read_only_lun() {
    require_tools!("iscsi-test-cu");
    const IQN: &str = "iqn.2026-11.io.lunar:read-only";
    let mut d = Lunard::start_with(LunardOptions {
        config_yaml: Some(yaml(&with_target(
            TargetCfg::iscsi(IQN).with_lun(LunCfg::new(0, "lun0", ByteSize::gib(1)).read_only()),
        ))),
        ..LunardOptions::default()
    })
    .expect("start lunard");
    let mut run = Run::all(&d.lun_url(IQN, 0));
    run.selector = "ALL.ReadOnly".into();
    run.multipath_url = None;
    let (report, out) = run.execute().expect("iscsi-test-cu -t ALL.ReadOnly");
    println!(
        "iscsi-test-cu ALL.ReadOnly on a read-only LUN: {}",
        report.counts()
    );
    d.check_alive().expect("lunard survived the suite");
    let c = report.counts();
    assert!(
        c.total() > 0 && c.pass == c.total(),
        "ALL.ReadOnly against a read-only LUN: {c}\n{}",
        report.to_results_file("") + lunar_e2e::process::tail(&out.stdout, 4000)
    );
}

/// MultipathIO with its two paths in different portal groups: portals with TPGT 1 and 2 are
/// two SCSI target ports (distinct relative target port and target port group designators
/// in VPD 83h) of one logical unit (the same NAA designator), which libiscsi must accept as
/// one multipath device.
#[test]
fn libiscsi_multipath_io_across_portal_groups() {
    require_tools!("iscsi-test-cu");
    const IQN: &str = "iqn.2026-11.io.lunar:two-groups";
    let portal = PortalCfg::new(SocketAddr::from(([127, 0, 0, 1], 0)));
    let cfg = with_portals(
        with_target(open_target(IQN)),
        vec![portal.clone().with_tpgt(1), portal.with_tpgt(2)],
    );
    let mut d = Lunard::start_with(LunardOptions {
        config_yaml: Some(yaml(&cfg)),
        portals: 0,
        ..LunardOptions::default()
    })
    .expect("start lunard with two portal groups");
    assert_eq!(d.addrs().len(), 2, "two portals: {:?}", d.addrs());
    let mut run = Run::all_multipath(
        &d.lun_url_via(0, IQN, 0).expect("portal 0"),
        &d.lun_url_via(1, IQN, 0).expect("portal 1"),
    );
    run.selector = "ALL.MultipathIO".into();
    run.initiators = Some((
        "iqn.2026-11.io.lunar.test:mp-1".into(),
        "iqn.2026-11.io.lunar.test:mp-2".into(),
    ));
    let (report, out) = run.execute().expect("iscsi-test-cu -t ALL.MultipathIO");
    println!(
        "iscsi-test-cu ALL.MultipathIO across portal groups 1 and 2: {}",
        report.counts()
    );
    d.check_alive().expect("lunard survived the suite");
    let c = report.counts();
    assert!(
        c.total() > 0 && c.pass == c.total(),
        "ALL.MultipathIO across two portal groups: {c}\n{}",
        report.to_results_file("") + lunar_e2e::process::tail(&out.stdout, 4000)
    );
}
