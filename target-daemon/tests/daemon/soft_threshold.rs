//! THIN PROVISIONING SOFT THRESHOLD REACHED (38/07), end to end: the pool crossing its soft
//! threshold reaches a logged-in initiator as exactly one unit attention per crossing, not
//! again while usage stays above, and again after usage fell below and rose once more
//! (issue 5; VMware and Windows surface it to the administrator as "thin provisioning
//! threshold" events).

use std::time::{Duration, Instant};

use crate::support::{local_config, start_config};
use lunar_test_kit::initiator::Initiator;
use target_daemon::config::{ByteSize, LunCfg, TargetCfg};
use target_daemon::daemon::Daemon;

const DEMO: &str = "iqn.2026-11.io.lunar:demo";
const MIB: u64 = 1 << 20;
const BS: u64 = 512;

async fn start(dir: &std::path::Path) -> Daemon {
    let mut cfg = local_config(dir, ByteSize::mib(64))
        .with_target(TargetCfg::iscsi(DEMO).with_lun(LunCfg::new(0, "demo", ByteSize::mib(64))));
    if let Some(p) = cfg.pool.as_mut() {
        p.soft_threshold_pct = Some(50);
    }
    start_config(cfg).await
}

/// TEST UNIT READY: `None` for GOOD, else the (ASC, ASCQ) of the UNIT ATTENTION.
async fn tur(i: &mut Initiator) -> Option<(u8, u8)> {
    let r = i.run(&[0u8; 6], false, 0, &[], 0, 0).await;
    if r.status == 0 {
        return None;
    }
    assert_eq!(
        r.sense.get(2).map(|k| k & 0x0F),
        Some(6),
        "UNIT ATTENTION: {r:?}"
    );
    Some((r.sense[12], r.sense[13]))
}

/// Waits (bounded) for the soft-threshold unit attention; then the condition is cleared.
async fn expect_threshold_ua(i: &mut Initiator, when: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match tur(i).await {
            Some((0x38, 0x07)) => break,
            Some(other) => panic!("{when}: unexpected unit attention {other:02x?}"),
            None if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            None => panic!("{when}: no THIN PROVISIONING SOFT THRESHOLD REACHED within 5 s"),
        }
    }
    assert_eq!(tur(i).await, None, "{when}: reported once, then cleared");
}

/// No unit attention shows up within a grace period longer than the watcher needs.
async fn expect_quiet(i: &mut Initiator, when: &str) {
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(tur(i).await, None, "{when}: no unit attention expected");
}

async fn fill(d: &Daemon, from_mib: u64, to_mib: u64) {
    let v = d
        .pool()
        .expect("local pool")
        .volume("demo")
        .expect("volume");
    for m in from_mib..to_mib {
        v.write(m * MIB / BS, vec![0xC3u8; MIB as usize].into(), false)
            .await
            .expect("write");
    }
}

#[tokio::test]
async fn soft_threshold_ua_once_per_crossing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = start(dir.path()).await;
    let mut i = Initiator::connect(d.local_addrs()[0], "iqn.2026-11.io.test:thin-watcher").await;
    assert!(i.login(Some(DEMO)).await.ok(), "login");
    i.clear_unit_attention().await;

    fill(&d, 0, 16).await;
    expect_quiet(&mut i, "a quarter full").await;
    fill(&d, 16, 40).await;
    expect_threshold_ua(&mut i, "first crossing").await;
    fill(&d, 40, 48).await;
    expect_quiet(&mut i, "still above the threshold").await;

    // Back below (unmap frees whole chunks), then above again: a second crossing.
    let v = d
        .pool()
        .expect("local pool")
        .volume("demo")
        .expect("volume");
    v.unmap(8 * MIB / BS, 40 * MIB / BS).await.expect("unmap");
    assert!(
        !d.pool()
            .expect("local pool")
            .status()
            .soft_threshold_reached,
        "below after unmap"
    );
    expect_quiet(&mut i, "back below").await;
    fill(&d, 8, 40).await;
    expect_threshold_ua(&mut i, "second crossing").await;
    drop(i);
    d.shutdown().await.expect("clean shutdown");
}
