//! The Linux kernel initiator with dm-multipath over two Lunar HA gateways (issue 16).
//!
//! Two gateways of one HA group (one pool in an RBD image, `lunar_e2e::ha`) listen on fixed
//! loopback ports advertised as `10.0.2.2:PORT` to a throw-away Debian guest under QEMU
//! (`lunar_e2e::guest`, `tests/guest/`). The guest logs in through both, builds one
//! dm-multipath device over the two paths (`tests/guest/multipath.conf`: ALUA prioritizer and
//! device handler, queueing while no path works), and runs a writer of numbered blocks
//! (`tests/guest/scenarios/ha_multipath.sh`). The host SIGKILLs the owner gateway under it:
//! the guest must see no I/O error and read back every acknowledged block. The time from the
//! kill to the first write the new owner completed (its `lunar_lun_written_bytes_total`
//! moving) is printed, with the longest pause the guest's writer saw.
//!
//! `LUNAR_TEST_HA_LEASE_MS` sets the gateways' `ha.lease` (default: the config default,
//! 3 s), to measure what a shorter lease buys; `LUNAR_TEST_GUEST_CONSOLE=1` prints the
//! guest's kernel and multipathd log lines (where a takeover's time goes on the host).
//!
//! Needs a Ceph cluster (`LUNAR_CEPH_CONF`) and QEMU; skips loudly without them (fails under
//! `LUNAR_REQUIRE_CEPH=1` / `LUNAR_E2E_STRICT=1`).

use lunar_e2e::ceph::Scratch;
use lunar_e2e::config::yaml;
use lunar_e2e::guest::{guest_portal, Guest, GuestLunard, QEMU};
use lunar_e2e::ha::{
    gateway_config, http_get, log_lines_since, metric_sum, owner_among, renew_latency_summary, IQN,
    TAKEOVER_LIMIT,
};
use lunar_e2e::{net, require_ceph, require_tools};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// A whole guest run: boot (~40 s under TCG on a busy machine) plus the scenario.
const LIMIT: Duration = Duration::from_secs(900);

const INITIATOR: &str = "iqn.2026-11.io.lunar.test:kernel-guest-ha";

/// Bytes the gateway at `metrics` has written to LUN 0 so far.
fn written(metrics: SocketAddr) -> f64 {
    http_get(metrics, "/metrics")
        .map(|t| metric_sum(&t, "lunar_lun_written_bytes_total", ""))
        .unwrap_or(0.0)
}

/// `LUNAR_TEST_HA_LEASE_MS`, if set.
fn lease_override() -> Option<u64> {
    std::env::var("LUNAR_TEST_HA_LEASE_MS")
        .ok()
        .map(|v| v.parse().expect("LUNAR_TEST_HA_LEASE_MS: milliseconds"))
}

#[test]
fn dm_multipath_owner_killed_under_writer() {
    require_ceph!(cluster);
    require_tools!(QEMU, "apt-get", "dpkg-deb");
    let scratch = Scratch::new(&cluster, "kmp");
    let mut metrics = Vec::new();
    let mut gws = Vec::new();
    for index in 0..2 {
        let m = SocketAddr::from((
            [127, 0, 0, 1],
            net::free_loopback_port().expect("free port"),
        ));
        metrics.push(m);
        let gw = GuestLunard::start(|port| {
            let mut cfg = gateway_config(&scratch, index, guest_portal(port));
            if let (Some(ha), Some(ms)) = (cfg.ha.as_mut(), lease_override()) {
                ha.lease = target_daemon::config::DurationCfg(Duration::from_millis(ms));
            }
            cfg.metrics.enabled = true;
            cfg.metrics.listen = m;
            yaml(&cfg)
        })
        .expect("start gateway");
        gws.push(gw);
    }
    let portals: Vec<SocketAddr> = gws.iter().map(GuestLunard::addr).collect();
    let deadline = Instant::now() + TAKEOVER_LIMIT;
    let owner_pg = loop {
        if let Some(pg) = owner_among(&portals) {
            break pg;
        }
        assert!(Instant::now() < deadline, "no gateway became the owner");
        std::thread::sleep(Duration::from_millis(200));
    };
    let owner = usize::from(owner_pg - 1);
    let other = 1 - owner;
    let env = vec![
        ("PORTAL1", gws[0].guest_portal()),
        ("PORTAL2", gws[1].guest_portal()),
        ("IQN", IQN.to_string()),
        ("INITIATOR", INITIATOR.to_string()),
        // dm-multipath wants a failed path's I/O back quickly: fail it over after 3 s of
        // reconnect attempts instead of open-iscsi's 120 s (docs/ha.md), once the new
        // owner serves. multipathd sets the same timeout from its fast_io_fail_tmo
        // (tests/guest/multipath.conf), which wins once it runs.
        ("REPLACEMENT_TIMEOUT", "3".to_string()),
        ("RUN", std::process::id().to_string()),
        ("WRITES_AFTER", "30".to_string()),
    ];
    let mut env = env;
    if std::env::var_os("LUNAR_TEST_GUEST_CONSOLE").is_some() {
        env.push(("DEBUG_MPATH", "1".to_string()));
    }
    let mut g = Guest::boot_with("ha_multipath.sh", &env, &[], 768, LIMIT).expect("boot guest");
    g.wait_for("WAIT killed")
        .expect("guest writing through the owner");
    let before = written(metrics[other]);
    let renews_before = http_get(metrics[owner], "/metrics")
        .map_or_else(|e| e.to_string(), |t| renew_latency_summary(&t));
    let killed_wall = std::time::SystemTime::now();
    let killed = Instant::now();
    if let Some(pid) = gws[owner].pid() {
        lunar_e2e::process::signal(pid, libc::SIGKILL);
    }
    g.send("killed").expect("tell the guest");
    // The first write the new owner completes: its written-bytes counter moves.
    let mut first_io = None;
    while killed.elapsed() < TAKEOVER_LIMIT {
        if written(metrics[other]) > before {
            first_io = Some(killed.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let t = g.finish().expect("guest run");
    if std::env::var_os("LUNAR_TEST_GUEST_CONSOLE").is_some() {
        for l in t.console.lines().filter(|l| l.contains("LOG ")) {
            eprintln!("  {l}");
        }
    }
    for i in &t.info {
        eprintln!("  guest INFO {i}");
    }
    // Where the takeover's time went on the new owner, from the kill on.
    for l in log_lines_since(
        &gws[other].log(),
        killed_wall,
        &[
            "HA role change",
            "fencing",
            "fenced",
            "pool open",
            "took over",
            "replay",
        ],
    ) {
        eprintln!("  gw{} {l}", other + 1);
    }
    eprintln!(
        "  renews of the owner gw{} before the kill: {renews_before}",
        owner + 1
    );
    if let Ok(text) = http_get(metrics[other], "/metrics") {
        eprintln!(
            "  renews of gw{} as the new owner: {}",
            other + 1,
            renew_latency_summary(&text)
        );
    }
    t.assert_passed(&[
        "discovery",
        "login",
        "two-paths",
        "multipath-map",
        "writing-before-kill",
        "writing-after-kill",
        "no-io-errors",
        "acknowledged-blocks",
        "no-dm-errors",
    ]);
    let first_io = first_io.expect("the new owner never completed a write");
    eprintln!(
        "HA failover under dm-multipath (SIGKILL of gw{}, lease {}): first write completed on \
         gw{} {:.3} s after the kill; longest pause of the guest's writer {} s; boot {:.0} s, \
         total {:.0} s",
        owner + 1,
        lease_override().map_or("default".to_string(), |ms| format!("{ms} ms")),
        other + 1,
        first_io.as_secs_f64(),
        t.info_values("max_gap_s").first().unwrap_or(&"?"),
        t.boot_secs.unwrap_or(f64::NAN),
        t.total_secs
    );
    drop(gws);
    drop(scratch);
}
