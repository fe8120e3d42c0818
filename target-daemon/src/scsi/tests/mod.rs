//! Device-server tests against a real storage-core pool in a temporary directory, split like
//! the code: `spc`, `sbc`, `pr`, `ua`, `xcopy`. This module holds what they share: the
//! fixture (a pool, a target with one LUN, two logged-in nexuses) and CDB builders.

use std::sync::Arc;

use bytes::Bytes;
use scsi_proto::scsi::sense::{asc, FieldPointer, Sense, SenseKey};
use scsi_proto::scsi::unmap::{self, UnmapDescriptor};
use storage_core::{Guarantee, Pool, PoolOptions};

use super::{status, Nexus, ScsiRequest, ScsiResponse, ScsiTarget, TaskAttr};

mod alua;
mod pr;
pub(crate) mod pr_shared;
mod sbc;
mod spc;
mod ua;
mod xcopy;

const BS: u32 = 512;
const BLOCKS: u64 = 8192; // 4 MiB

struct Fixture {
    _dir: tempfile::TempDir,
    pool: Pool,
    target: Arc<ScsiTarget>,
    a: Arc<Nexus>,
    b: Arc<Nexus>,
}

fn nexus(i: u64) -> Arc<Nexus> {
    Arc::new(Nexus {
        initiator: format!("iqn.2026-11.test:init{i}"),
        isid: i,
        tpgt: 1,
    })
}

async fn fixture_with(opts: PoolOptions, read_only: bool) -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let pool = Pool::create(&dir.path().join("pool"), &opts)
        .await
        .expect("create pool");
    pool.create_volume("vol0", BLOCKS * u64::from(BS), BS, Guarantee::None)
        .await
        .expect("create volume");
    let target = ScsiTarget::new("iqn.2026-11.io.lunar:test");
    target
        .add_lun(0, pool.volume("vol0").expect("volume"), read_only)
        .expect("add lun");
    let (a, b) = (nexus(1), nexus(2));
    for n in [&a, &b] {
        target.nexus_login(n);
        // Consume the POWER ON unit attention.
        let r = run(&target, n, 0, &[0, 0, 0, 0, 0, 0], Bytes::new()).await;
        assert_eq!(r.status, status::CHECK_CONDITION);
        assert_eq!(
            sense(&r).code,
            asc::POWER_ON_RESET_OR_BUS_DEVICE_RESET_OCCURRED
        );
    }
    Fixture {
        _dir: dir,
        pool,
        target,
        a,
        b,
    }
}

async fn fixture() -> Fixture {
    fixture_with(
        PoolOptions {
            capacity_bytes: Some(64 << 20),
            ..Default::default()
        },
        false,
    )
    .await
}

async fn run(
    t: &ScsiTarget,
    n: &Arc<Nexus>,
    lun: u64,
    cdb: &[u8],
    data_out: Bytes,
) -> ScsiResponse {
    t.execute(ScsiRequest {
        nexus: n.clone(),
        lun,
        cdb: Bytes::copy_from_slice(cdb),
        data_out: data_out.into(),
        expected_data_in: 1 << 20,
        attr: TaskAttr::Simple,
        tag: 1,
    })
    .await
}

/// `cdb` with `data_out` sent to LUN 0 by `n` (for the RADOS tests in `shared::rados`).
#[cfg(feature = "ceph")]
pub(crate) async fn run_cmd(
    t: &ScsiTarget,
    n: &Arc<Nexus>,
    cdb: &[u8],
    data_out: Bytes,
) -> ScsiResponse {
    run(t, n, 0, cdb, data_out).await
}

/// The status of `cdb` (no Data-Out) sent to LUN 0 by `n`.
async fn status_of(t: &ScsiTarget, n: &Arc<Nexus>, cdb: &[u8]) -> u8 {
    run(t, n, 0, cdb, Bytes::new()).await.status
}

/// READ(10) of `blocks` blocks at `lba` on LUN 0 by `n`, which must succeed: the data.
async fn read_back(t: &ScsiTarget, n: &Arc<Nexus>, lba: u32, blocks: u16) -> Bytes {
    let r = run(t, n, 0, &read10(lba, blocks), Bytes::new()).await;
    assert_eq!(
        r.status,
        status::GOOD,
        "read back {blocks} blocks at {lba}: {r:?}"
    );
    r.data_in
}

fn sense(r: &ScsiResponse) -> Sense {
    Sense::decode(r.sense.as_ref().expect("sense data")).expect("decodable sense")
}

fn read10(lba: u32, blocks: u16) -> [u8; 10] {
    let mut c = [0u8; 10];
    c[0] = 0x28;
    c[2..6].copy_from_slice(&lba.to_be_bytes());
    c[7..9].copy_from_slice(&blocks.to_be_bytes());
    c
}

fn write10(lba: u32, blocks: u16) -> [u8; 10] {
    let mut c = read10(lba, blocks);
    c[0] = 0x2A;
    c
}

fn cdb16(op: u8, b1: u8, lba: u64, len: u32) -> [u8; 16] {
    let mut c = [0u8; 16];
    c[0] = op;
    c[1] = b1;
    c[2..10].copy_from_slice(&lba.to_be_bytes());
    c[10..14].copy_from_slice(&len.to_be_bytes());
    c
}

fn pattern(blocks: usize, seed: u8) -> Bytes {
    Bytes::from(
        (0..blocks * BS as usize)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect::<Vec<_>>(),
    )
}

fn assert_check(
    r: &ScsiResponse,
    key: SenseKey,
    code: scsi_proto::scsi::sense::AdditionalSense,
) -> Sense {
    assert_eq!(
        r.status,
        status::CHECK_CONDITION,
        "expected CHECK CONDITION, got {r:?}"
    );
    let s = sense(r);
    assert_eq!((s.key, s.code), (key, code), "sense {s}");
    s
}

/// TEST UNIT READY until GOOD (consumes pending unit attentions; bounded).
async fn settle(t: &ScsiTarget, n: &Arc<Nexus>, lun: u64) {
    for _ in 0..8 {
        if run(t, n, lun, &[0, 0, 0, 0, 0, 0], Bytes::new())
            .await
            .status
            == status::GOOD
        {
            return;
        }
    }
    panic!("LUN {lun} keeps failing TEST UNIT READY");
}

/// A second target over a new volume of `blocks` blocks of `bs` bytes, nexus A logged in
/// and its unit attentions consumed.
async fn extra_lun(f: &Fixture, name: &str, blocks: u64, bs: u32, g: Guarantee) -> Arc<ScsiTarget> {
    f.pool
        .create_volume(name, blocks * u64::from(bs), bs, g)
        .await
        .expect("create volume");
    let t = ScsiTarget::new("iqn.2026-11.io.lunar:extra");
    t.add_lun(0, f.pool.volume(name).expect("volume"), false)
        .expect("add lun");
    t.nexus_login(&f.a);
    settle(&t, &f.a, 0).await;
    t
}
