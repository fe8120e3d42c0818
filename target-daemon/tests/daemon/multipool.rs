//! One lunard, two file pools (issue 16, "many pools per gateway"): LUNs in each, I/O
//! through iSCSI to both, space and soft-threshold unit attentions per pool, a clone that
//! stays in its origin's pool, a cross-pool clone refused, and a restart that keeps it all.

use crate::admin_support::{ctl, ctl_json};
use crate::support::{local_config, start_config};
use lunar_test_kit::cdb::cdb10;
use lunar_test_kit::initiator::{CmdResult, Initiator};
use lunar_test_kit::pattern;
use target_daemon::config::{ByteSize, Config, LunCfg, TargetCfg};
use target_daemon::daemon::Daemon;

const READ10: u8 = 0x28;
const WRITE10: u8 = 0x2a;
const MIB: usize = 1 << 20;
const BLOCKS_PER_MIB: u32 = (MIB / 512) as u32;
/// Target of pool b's LUN; it sorts before pool a's, so a unit attention wrongly raised on
/// every target would reach it before pool a's target sees its own.
const TB: &str = "iqn.2026-11.io.lunar:mp0-b";
/// Target of pool a's LUN.
const TA: &str = "iqn.2026-11.io.lunar:mp1-a";
const INI: &str = "iqn.2026-11.io.test:multipool";

/// Pool a: 16 MiB with a 50 % soft threshold, holding the 32 MiB thin LUN `la` (so it can
/// fill up); pool b: 64 MiB, holding `lb`.
fn config(dir: &std::path::Path) -> Config {
    let mut cfg = local_config(dir, ByteSize::mib(16))
        .with_pools(&[("a", ByteSize::mib(16)), ("b", ByteSize::mib(64))])
        .with_target(TargetCfg::iscsi(TA).with_lun(LunCfg::new(0, "la", ByteSize::mib(32))))
        .with_target(
            TargetCfg::iscsi(TB).with_lun(LunCfg::new(0, "lb", ByteSize::mib(16)).in_pool("b")),
        );
    cfg.pools[0].soft_threshold_pct = Some(50);
    cfg
}

async fn session(d: &Daemon, target: &str) -> Initiator {
    let mut i = Initiator::connect(d.local_addrs()[0], INI).await;
    assert!(i.login(Some(target)).await.ok(), "login to {target}");
    i.clear_unit_attention().await;
    i
}

async fn write_mib(i: &mut Initiator, mib: u32, seed: u8) -> CmdResult {
    let data = pattern(MIB, seed);
    i.run(
        &cdb10(WRITE10, mib * BLOCKS_PER_MIB, BLOCKS_PER_MIB as u16),
        false,
        MIB as u32,
        &data,
        65536,
        262_144,
    )
    .await
}

async fn read_mib(i: &mut Initiator, mib: u32) -> Vec<u8> {
    let r = i
        .run(
            &cdb10(READ10, mib * BLOCKS_PER_MIB, BLOCKS_PER_MIB as u16),
            true,
            MIB as u32,
            &[],
            0,
            0,
        )
        .await;
    assert_eq!(r.status, 0, "read: {r:?}");
    r.data.to_vec()
}

/// (sense key, ASC, ASCQ) of a CHECK CONDITION.
fn sense(r: &CmdResult) -> (u8, u8, u8) {
    (
        r.sense.get(2).map_or(0, |k| k & 0x0f),
        r.sense.get(12).copied().unwrap_or(0),
        r.sense.get(13).copied().unwrap_or(0),
    )
}

#[tokio::test]
async fn two_pools_serve_side_by_side_and_survive_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(dir.path());
    let d = start_config(cfg.clone()).await;
    let pool = |d: &Daemon, n: &str| d.pool_named(n).expect("pool").clone();
    assert!(pool(&d, "a").volume_info("la").is_ok());
    assert!(pool(&d, "b").volume_info("lb").is_ok());
    assert!(pool(&d, "a").volume_info("lb").is_err());

    // I/O to both pools.
    let mut sa = session(&d, TA).await;
    let mut sb = session(&d, TB).await;
    assert_eq!(write_mib(&mut sa, 0, 1).await.status, 0);
    assert_eq!(write_mib(&mut sb, 0, 2).await.status, 0);
    assert_eq!(read_mib(&mut sa, 0).await, pattern(MIB, 1));
    assert_eq!(read_mib(&mut sb, 0).await, pattern(MIB, 2));

    // The admin API places and shows LUNs per pool.
    let v = ctl_json(
        dir.path(),
        &["lun", "create", "lc", "--size", "4M", "--pool", "b"],
    )
    .await;
    assert_eq!(v["pool"], "b");
    assert!(pool(&d, "b").volume_info("lc").is_ok());
    let v = ctl_json(
        dir.path(),
        &["clone", "create", "--source", "lb", "--name", "lbc"],
    )
    .await;
    assert_eq!(v["state"], "completed", "{v}");
    assert!(pool(&d, "b").volume_info("lbc").is_ok());
    let out = ctl(
        dir.path(),
        &[
            "clone", "create", "--source", "lb", "--name", "x", "--pool", "a",
        ],
    )
    .await;
    out.fails_with("LUN \"lb\" is in pool \"b\", not in pool \"a\"");
    assert!(pool(&d, "a").volume_info("x").is_err() && pool(&d, "b").volume_info("x").is_err());
    let out = ctl(
        dir.path(),
        &["lun", "create", "y", "--size", "4M", "--pool", "c"],
    )
    .await;
    out.fails_with("pool \"c\" not found");
    let pools = ctl_json(dir.path(), &["pool", "status"]).await;
    let names: Vec<&str> = pools
        .as_array()
        .expect("a list of pools")
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert_eq!(names, ["a", "b"]);
    assert_eq!(
        ctl_json(dir.path(), &["pool", "status", "b"]).await["volumes"],
        3
    );
    let text = ctl(dir.path(), &["lun", "list"]).await;
    assert!(text.stdout.contains("POOL"), "{}", text.stdout);

    // Fill pool a through its LUN: its soft threshold raises 38/07 on its LUN, then thin
    // writes fail with SPACE ALLOCATION FAILED WRITE PROTECT (07/27/07).
    let mut threshold_ua = false;
    let mut full = None;
    for mib in 1..32 {
        let mut r = write_mib(&mut sa, mib, 3).await;
        if sense(&r) == (6, 0x38, 0x07) {
            threshold_ua = true;
            r = write_mib(&mut sa, mib, 3).await;
        }
        if r.status != 0 {
            full = Some(sense(&r));
            break;
        }
    }
    assert!(
        threshold_ua,
        "pool a's LUN got THIN PROVISIONING SOFT THRESHOLD REACHED"
    );
    assert_eq!(full, Some((7, 0x27, 0x07)), "pool a ran out of space");
    // Pool b is neither full nor over a threshold: its LUN saw no unit attention, and its
    // writes go on.
    let r = sb.run(&[0u8; 6], false, 0, &[], 0, 0).await;
    assert_eq!(r.status, 0, "no unit attention on pool b's LUN: {r:?}");
    assert_eq!(write_mib(&mut sb, 1, 4).await.status, 0);
    assert_eq!(read_mib(&mut sb, 1).await, pattern(MIB, 4));
    drop((sa, sb));
    d.shutdown().await.expect("clean shutdown");

    // Restart: every LUN in its pool, its data there.
    let d = start_config(cfg).await;
    let luns = ctl_json(dir.path(), &["lun", "list"]).await;
    let pool_of = |n: &str| {
        luns.as_array()
            .and_then(|l| l.iter().find(|x| x["name"] == n))
            .map(|x| x["pool"].as_str().unwrap_or_default().to_string())
    };
    assert_eq!(pool_of("la").as_deref(), Some("a"));
    for n in ["lb", "lc", "lbc"] {
        assert_eq!(pool_of(n).as_deref(), Some("b"), "{n}");
    }
    let mut sa = session(&d, TA).await;
    let mut sb = session(&d, TB).await;
    assert_eq!(read_mib(&mut sa, 0).await, pattern(MIB, 1));
    assert_eq!(read_mib(&mut sb, 0).await, pattern(MIB, 2));
    assert_eq!(read_mib(&mut sb, 1).await, pattern(MIB, 4));
    drop((sa, sb));
    d.shutdown().await.expect("clean shutdown");
}

/// A pool that cannot be opened is named in the start-up error, and the pools opened
/// before it are closed again (a second start finds them free).
#[tokio::test]
async fn a_pool_that_cannot_open_is_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(dir.path());
    std::fs::write(dir.path().join("pool-b"), b"not a pool").expect("write");
    let e = match Daemon::start(cfg.clone()).await {
        Ok(_) => panic!("lunard started over a file that is not a pool"),
        Err(e) => format!("{e:#}"),
    };
    assert!(e.starts_with("cannot open pool \"b\" at "), "{e}");
    std::fs::remove_file(dir.path().join("pool-b")).expect("rm");
    let d = start_config(cfg).await;
    d.shutdown().await.expect("clean shutdown");
}
