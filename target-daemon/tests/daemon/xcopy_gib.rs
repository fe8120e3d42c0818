//! VMware-style full copy of 1 GiB between two LUNs over iSCSI (issue 5): EXTENDED COPY
//! commands of 16 segments of 16 MiB each, as ESXi's clone/Storage vMotion sends them, issued
//! to the source LUN and naming both LUNs by the NAA designators of VPD page 83h.
//!
//! It checks that every byte arrives, that the never-written quarter of the source is not
//! stored in the destination (the copy of a thin disk costs only its written data, and
//! what the destination held there is given back), that RECEIVE COPY RESULTS reports the
//! copy, and that a LUN of another target, whose ACL does not admit this initiator, cannot
//! be named. The time and the space the copy took are printed, not asserted.

use std::time::Instant;

use crate::support::{local_config, start_config};
use lunar_test_kit::initiator::{CmdResult, Initiator};
use scsi_proto::scsi::sense::{Sense, SenseKey};
use scsi_proto::scsi::vpd::DeviceIdentity;
use scsi_proto::scsi::xcopy;
use target_daemon::config::{ByteSize, LunCfg, TargetCfg};
use target_daemon::daemon::Daemon;

const DEMO: &str = "iqn.2026-11.io.lunar:demo";
const SECRET: &str = "iqn.2026-11.io.lunar:secret";
const BS: u64 = 512;
const MIB: u64 = 1 << 20;
const COPY: u64 = 1 << 30;
/// The source holds data in its first 768 MiB; the last 256 MiB were never written.
const WRITTEN: u64 = 768 * MIB;
const SEGMENT_BLOCKS: u16 = 32768; // 16 MiB
const SEGMENTS_PER_COMMAND: usize = 16;
const PIECE: u64 = 8 * MIB;

async fn start(dir: &std::path::Path) -> Daemon {
    let cfg = local_config(dir, ByteSize::gib(4))
        .with_target(
            TargetCfg::iscsi(DEMO)
                .with_lun(LunCfg::new(0, "src", ByteSize::gib(1)))
                .with_lun(LunCfg::new(1, "dst", ByteSize::gib(1))),
        )
        .with_target(
            TargetCfg::iscsi(SECRET)
                .with_initiators(["iqn.2026-11.io.test:someone-else"])
                .with_lun(LunCfg::new(0, "secret", ByteSize::mib(16))),
        );
    start_config(cfg).await
}

/// Deterministic content of the source at byte `offset` (a piece of `len` bytes).
fn content(offset: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    for (i, w) in v.chunks_mut(8).enumerate() {
        let x = (offset / 8 + i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0x5A5A;
        w.copy_from_slice(&x.to_le_bytes()[..w.len()]);
    }
    v
}

fn naa_of(d: &Daemon, volume: &str) -> [u8; 16] {
    let v = d
        .pool()
        .expect("local pool")
        .volume(volume)
        .expect("volume");
    DeviceIdentity {
        uuid: *v.uuid().as_bytes(),
        relative_port: 1,
        target_port_group: 1,
        target_name: None,
    }
    .naa()
}

fn target_desc(naa: &[u8; 16]) -> Vec<u8> {
    let mut t = vec![0u8; 32];
    t[0] = xcopy::IDENTIFICATION_DESCRIPTOR;
    t[4] = 0x01;
    t[5] = 0x03;
    t[7] = 16;
    t[8..24].copy_from_slice(naa);
    t[29..32].copy_from_slice(&(BS as u32).to_be_bytes()[1..]);
    t
}

fn param_list(
    list_id: u8,
    targets: &[[u8; 16]],
    segments: &[(u16, u16, u16, u64, u64)],
) -> Vec<u8> {
    let t: Vec<u8> = targets.iter().flat_map(target_desc).collect();
    let mut s = Vec::new();
    for &(src, dst, blocks, src_lba, dst_lba) in segments {
        let mut d = vec![0u8; 28];
        d[0] = xcopy::BLOCK_TO_BLOCK;
        d[3] = 24;
        d[4..6].copy_from_slice(&src.to_be_bytes());
        d[6..8].copy_from_slice(&dst.to_be_bytes());
        d[10..12].copy_from_slice(&blocks.to_be_bytes());
        d[12..20].copy_from_slice(&src_lba.to_be_bytes());
        d[20..28].copy_from_slice(&dst_lba.to_be_bytes());
        s.extend_from_slice(&d);
    }
    let mut b = vec![0u8; 16];
    b[0] = list_id;
    b[2..4].copy_from_slice(&(t.len() as u16).to_be_bytes());
    b[8..12].copy_from_slice(&(s.len() as u32).to_be_bytes());
    b.extend_from_slice(&t);
    b.extend_from_slice(&s);
    b
}

async fn extended_copy(i: &mut Initiator, list: &[u8]) -> CmdResult {
    let mut cdb = [0u8; 16];
    cdb[0] = 0x83;
    cdb[10..14].copy_from_slice(&(list.len() as u32).to_be_bytes());
    i.run(&cdb, false, list.len() as u32, list, list.len(), 8192)
        .await
}

#[tokio::test]
async fn one_gib_full_copy_between_luns() {
    let _heavy = crate::support::heavy().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let d = start(dir.path()).await;
    let addr = d.local_addrs()[0];
    let (src, dst) = (
        d.pool().expect("local pool").volume("src").expect("src"),
        d.pool().expect("local pool").volume("dst").expect("dst"),
    );
    // Source data, and stale data in the destination where the source has its hole.
    let mut off = 0;
    while off < WRITTEN {
        src.write(off / BS, content(off, PIECE as usize).into(), false)
            .await
            .expect("fill src");
        off += PIECE;
    }
    dst.write(
        WRITTEN / BS,
        vec![0xEEu8; (64 * MIB) as usize].into(),
        false,
    )
    .await
    .expect("stale dst");
    d.pool().expect("local pool").flush().await.expect("flush");
    let used_before = d.pool().expect("local pool").status().used_bytes;

    let mut i = Initiator::connect(addr, "iqn.2026-11.io.test:esx-clone").await;
    assert!(i.login(Some(DEMO)).await.ok(), "login");
    i.clear_unit_attention().await;
    let naas = [naa_of(&d, "src"), naa_of(&d, "dst")];

    let started = Instant::now();
    let per_command = u64::from(SEGMENT_BLOCKS) * SEGMENTS_PER_COMMAND as u64;
    let total_blocks = COPY / BS;
    let mut lba = 0u64;
    let mut list_id = 0u8;
    while lba < total_blocks {
        let segs: Vec<_> = (0..SEGMENTS_PER_COMMAND as u64)
            .map(|k| {
                let at = lba + k * u64::from(SEGMENT_BLOCKS);
                (0, 1, SEGMENT_BLOCKS, at, at)
            })
            .collect();
        list_id += 1;
        let r = extended_copy(&mut i, &param_list(list_id, &naas, &segs)).await;
        assert_eq!(r.status, 0, "EXTENDED COPY at LBA {lba}: {r:?}");
        lba += per_command;
    }
    let elapsed = started.elapsed();

    // COPY STATUS of the last list: completed, 16 segments, 256 MiB.
    let mut rcr = [0u8; 16];
    rcr[0] = 0x84;
    rcr[2] = list_id;
    rcr[10..14].copy_from_slice(&1024u32.to_be_bytes());
    let r = i.run(&rcr, true, 1024, &[], 0, 0).await;
    assert_eq!(r.status, 0, "{r:?}");
    assert_eq!(
        r.data,
        xcopy::CopyStatus {
            state: xcopy::CopyState::Completed,
            segments_processed: SEGMENTS_PER_COMMAND as u16,
            bytes: per_command * BS,
        }
        .encode()
    );

    // Every byte: the written part equal to the source, the hole zeros.
    let mut off = 0;
    while off < COPY {
        let got = dst
            .read(off / BS, (PIECE / BS) as u32)
            .await
            .expect("read dst");
        if off < WRITTEN {
            assert!(
                got[..] == content(off, PIECE as usize)[..],
                "data differs in the piece at {off}"
            );
        } else {
            assert!(got.iter().all(|&b| b == 0), "hole not zero at {off}");
        }
        off += PIECE;
    }
    // Space: the destination maps exactly the written part; its stale 64 MiB are freed.
    let mapped = dst.info().mapped_bytes;
    assert_eq!(
        mapped, WRITTEN,
        "destination maps the copied data and nothing of the hole"
    );
    let used_after = d.pool().expect("local pool").status().used_bytes;
    println!(
        "XCOPY 1 GiB (768 MiB data + 256 MiB never written) in {} commands: {:.2} s, {:.0} MiB/s; \
         pool used {} MiB -> {} MiB (+{} MiB: the written data copied, the destination's \
         64 MiB of stale data in the hole freed; sharing instead of copying: see ADR 0006)",
        list_id,
        elapsed.as_secs_f64(),
        COPY as f64 / MIB as f64 / elapsed.as_secs_f64(),
        used_before / MIB,
        used_after / MIB,
        (used_after as i64 - used_before as i64) / MIB as i64,
    );

    // A LUN of a target this initiator may not log in to cannot be named.
    let secret = d
        .pool()
        .expect("local pool")
        .volume("secret")
        .expect("secret");
    let before = secret.read(0, 16).await.expect("read secret");
    let list = param_list(99, &[naas[0], naa_of(&d, "secret")], &[(0, 1, 16, 0, 0)]);
    let r = extended_copy(&mut i, &list).await;
    assert_eq!(r.status, 2, "{r:?}");
    let s = Sense::decode(&r.sense).expect("sense");
    assert_eq!(
        (s.key, s.code),
        (SenseKey::CopyAborted, xcopy::UNREACHABLE_COPY_TARGET)
    );
    assert_eq!(secret.read(0, 16).await.expect("read secret"), before);
    drop(i);
    d.shutdown().await.expect("clean shutdown");
}
