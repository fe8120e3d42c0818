//! The whole daemon (pool, device server, iSCSI) over loopback: reads and writes through
//! immediate data, unsolicited data and R2Ts, Data-In splitting, residuals, and concurrency.

use std::net::SocketAddr;

use crate::support::{demo_config, start_config, start_demo as start};
use lunar_test_kit::cdb::cdb10;
use lunar_test_kit::initiator::Initiator;
use lunar_test_kit::pattern;
use target_daemon::config::PortalCfg;

const READ10: u8 = 0x28;
const WRITE10: u8 = 0x2a;
use lunar_test_kit::lunard::DEMO_IQN as DEMO;
const INI: &str = "iqn.2026-11.io.test:io";

#[tokio::test]
async fn write_then_read_back_through_every_data_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (daemon, addr) = start(dir.path()).await;
    let mut c = Initiator::connect(addr, INI).await;
    assert!(c.login(Some(DEMO)).await.ok());
    c.clear_unit_attention().await;

    // Small write entirely as immediate data.
    let a = pattern(32 * 1024, 1);
    let r = c
        .run(
            &cdb10(WRITE10, 0, 64),
            false,
            a.len() as u32,
            &a,
            a.len(),
            8192,
        )
        .await;
    assert_eq!(r.status, 0, "{r:?}");
    assert_eq!(r.r2ts, 0);

    // Large write: 64 KiB immediate, the rest solicited by R2Ts.
    let b = pattern(512 * 1024, 7);
    let r = c
        .run(
            &cdb10(WRITE10, 64, 1024),
            false,
            b.len() as u32,
            &b,
            65536,
            32768,
        )
        .await;
    assert_eq!(r.status, 0, "{r:?}");
    assert!(
        r.r2ts >= 2,
        "MaxBurstLength 256 KiB needs at least two R2Ts: {r:?}"
    );
    assert!(!r.overflow && !r.underflow);

    // Read both back in one command: split into Data-In PDUs, status in the last one.
    let r = c
        .run(&cdb10(READ10, 0, 1088), true, 1088 * 512, &[], 0, 0)
        .await;
    assert_eq!(r.status, 0, "{r:?}");
    assert!(r.data_ins >= 9);
    assert_eq!(&r.data[..a.len()], &a[..]);
    assert_eq!(&r.data[a.len()..], &b[..]);

    daemon.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn residuals_match_rfc_7143() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (daemon, addr) = start(dir.path()).await;
    let mut c = Initiator::connect(addr, INI).await;
    assert!(c.login(Some(DEMO)).await.ok());
    c.clear_unit_attention().await;

    // CDB asks 8 blocks, EDTL allows 1024 bytes: overflow, data truncated to EDTL.
    let r = c.run(&cdb10(READ10, 0, 8), true, 1024, &[], 0, 0).await;
    assert_eq!(r.status, 0);
    assert_eq!(r.data.len(), 1024);
    assert!(r.overflow && !r.underflow);
    assert_eq!(r.residual, 8 * 512 - 1024);

    // CDB asks 1 block, EDTL 4096: underflow.
    let r = c.run(&cdb10(READ10, 0, 1), true, 4096, &[], 0, 0).await;
    assert_eq!(r.data.len(), 512);
    assert!(r.underflow && !r.overflow);
    assert_eq!(r.residual, 4096 - 512);

    // Write of 1 block with EDTL 10000: underflow 10000 - 512; only one block is written.
    let data = vec![0xabu8; 10000];
    let r = c
        .run(&cdb10(WRITE10, 100, 1), false, 10000, &data, 8192, 8192)
        .await;
    assert_eq!(r.status, 0, "{r:?}");
    assert!(r.underflow);
    assert_eq!(r.residual, 10000 - 512);

    // Write of 2 blocks with EDTL 512: overflow; nothing written.
    let before = c
        .run(&cdb10(READ10, 200, 2), true, 1024, &[], 0, 0)
        .await
        .data;
    let data = vec![0xcdu8; 512];
    let r = c
        .run(&cdb10(WRITE10, 200, 2), false, 512, &data, 512, 512)
        .await;
    assert!(r.overflow, "{r:?}");
    assert_eq!(r.residual, 512);
    let after = c
        .run(&cdb10(READ10, 200, 2), true, 1024, &[], 0, 0)
        .await
        .data;
    if r.status == 0 {
        assert_eq!(&after[..512], &data[..]);
        assert_eq!(&after[512..], &before[512..]);
    } else {
        assert_eq!(r.status, 2);
        assert_eq!(
            after, before,
            "a failed overflow write must not touch the medium"
        );
    }
    daemon.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn many_commands_in_flight_and_many_sessions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (daemon, addr) = start(dir.path()).await;
    let mut sessions = Vec::new();
    for i in 0..4 {
        let mut c = Initiator::connect(addr, &format!("{INI}-{i}")).await;
        assert!(c.login(Some(DEMO)).await.ok());
        c.clear_unit_attention().await;
        sessions.push(c);
    }
    for (i, c) in sessions.iter_mut().enumerate() {
        // 16 reads queued at once, answered in any order.
        let mut itts = Vec::new();
        for k in 0..16u32 {
            let cmd = c.command(
                &cdb10(READ10, k * 8 + i as u32, 8),
                true,
                false,
                4096,
                bytes::Bytes::new(),
            );
            itts.push(cmd.bhs.itt());
            c.send(cmd).await;
        }
        let mut done = 0;
        let mut bytes = std::collections::HashMap::new();
        while done < 16 {
            let p = c.recv().await;
            if let scsi_proto::iscsi::pdu::Bhs::DataIn(d) = &p.bhs {
                *bytes.entry(d.itt).or_insert(0usize) += p.data.len();
                if d.status.is_some() {
                    assert_eq!(d.status, Some(0));
                    done += 1;
                }
            } else if let scsi_proto::iscsi::pdu::Bhs::ScsiResponse(r) = &p.bhs {
                panic!("unexpected SCSI Response status {}", r.status);
            }
        }
        for itt in itts {
            assert_eq!(bytes.get(&itt), Some(&4096));
        }
    }
    for c in sessions.iter_mut() {
        c.logout().await;
    }
    daemon.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn abort_task_and_lun_reset_really_abort() {
    use scsi_proto::iscsi::pdu::{Bhs, DataOut, Pdu, TmFunction, TmResponse};
    let dir = tempfile::tempdir().expect("tempdir");
    let (daemon, addr) = start(dir.path()).await;
    let mut a = Initiator::connect(addr, INI).await;
    assert!(a.login(Some(DEMO)).await.ok());
    a.clear_unit_attention().await;

    // A write that waits for solicited data; abort it while the R2T is outstanding.
    let cmd = a.command(
        &cdb10(WRITE10, 0, 256),
        false,
        true,
        256 * 512,
        bytes::Bytes::new(),
    );
    let (itt, cmd_sn) = match &cmd.bhs {
        Bhs::ScsiCommand(c) => (c.itt, c.cmd_sn),
        _ => unreachable!(),
    };
    a.send(cmd).await;
    let p = a.recv().await;
    let Bhs::R2t(r2t) = &p.bhs else {
        panic!("expected R2T, got {:?}", p.bhs.opcode())
    };
    let ttt = r2t.ttt;
    assert_eq!(
        a.tmf(TmFunction::AbortTask, itt, cmd_sn).await,
        TmResponse::Complete
    );
    // Late data for the aborted task is dropped silently; the session keeps working.
    let late = DataOut {
        final_bit: true,
        lun: 0,
        itt,
        ttt,
        exp_stat_sn: a.exp_stat_sn,
        data_sn: 0,
        buffer_offset: 0,
    };
    a.send(Pdu::new(late, bytes::Bytes::from(vec![0u8; 4096])))
        .await;
    let p = a.nop(b"after-abort").await;
    assert!(
        matches!(p.bhs, Bhs::NopIn(_)),
        "no response for the aborted task, only the ping"
    );

    // The task is gone now: a second abort finds nothing.
    assert_eq!(
        a.tmf(TmFunction::AbortTask, itt, cmd_sn).await,
        TmResponse::TaskDoesNotExist
    );

    // LUN RESET from another session aborts this session's pending write.
    let cmd = a.command(
        &cdb10(WRITE10, 0, 256),
        false,
        true,
        256 * 512,
        bytes::Bytes::new(),
    );
    a.send(cmd).await;
    assert!(matches!(a.recv().await.bhs, Bhs::R2t(_)));
    let mut b = Initiator::connect(addr, "iqn.2026-11.io.test:resetter").await;
    assert!(b.login(Some(DEMO)).await.ok());
    assert_eq!(
        b.tmf(TmFunction::LogicalUnitReset, 0, 0).await,
        TmResponse::Complete
    );
    // Session A: no response for the aborted write; its next command reports the reset.
    let r = a.run(&[0u8; 6], false, 0, &[], 0, 0).await;
    assert_eq!(r.status, 2, "unit attention after a LUN reset: {r:?}");
    assert_eq!(r.sense.get(2).map(|k| k & 0x0f), Some(6));
    assert_eq!(r.sense.get(12), Some(&0x29));
    a.clear_unit_attention().await;
    daemon.shutdown().await.expect("clean shutdown");
}

/// Sends WRITE(10) of `blocks` blocks at `lba` without data and waits for its R2T: the task
/// now exists in the target and waits for Data-Out. Returns (ITT, CmdSN, TTT).
async fn pending_write(i: &mut Initiator, lba: u32, blocks: u16) -> (u32, u32, u32) {
    use scsi_proto::iscsi::pdu::Bhs;
    let cmd = i.command(
        &cdb10(WRITE10, lba, blocks),
        false,
        true,
        u32::from(blocks) * 512,
        bytes::Bytes::new(),
    );
    let Bhs::ScsiCommand(c) = &cmd.bhs else {
        unreachable!()
    };
    let (itt, cmd_sn) = (c.itt, c.cmd_sn);
    i.send(cmd).await;
    let p = i.recv().await;
    let Bhs::R2t(r2t) = &p.bhs else {
        panic!("expected R2T, got {:?}", p.bhs.opcode())
    };
    assert_eq!(r2t.itt, itt);
    (itt, cmd_sn, r2t.ttt)
}

/// Sends all the Data-Out an R2T asked for, as an initiator that did not see the abort yet
/// would.
async fn send_data(i: &mut Initiator, itt: u32, ttt: u32, data: &[u8]) {
    use scsi_proto::iscsi::pdu::{DataOut, Pdu};
    let d = DataOut {
        final_bit: true,
        lun: 0,
        itt,
        ttt,
        exp_stat_sn: i.exp_stat_sn,
        data_sn: 0,
        buffer_offset: 0,
    };
    i.send(Pdu::new(d, bytes::Bytes::copy_from_slice(data)))
        .await;
}

/// A NOP-Out answered by its NOP-In and nothing else: no status for an aborted task came
/// first (the target answers in order on a connection).
async fn only_the_ping(i: &mut Initiator, what: &str) {
    use scsi_proto::iscsi::pdu::Bhs;
    let p = i.nop(b"ping").await;
    assert!(
        matches!(p.bhs, Bhs::NopIn(_)),
        "{what}: expected only the NOP-In, got {:?} for ITT {:#x}",
        p.bhs.opcode(),
        p.bhs.itt()
    );
}

async fn read_back(i: &mut Initiator, lba: u32, blocks: u16) -> Vec<u8> {
    let r = i
        .run(
            &cdb10(READ10, lba, blocks),
            true,
            u32::from(blocks) * 512,
            &[],
            0,
            0,
        )
        .await;
    assert_eq!(r.status, 0, "read back: {r:?}");
    r.data
}

/// ABORT TASK SET aborts the issuer's tasks on the LUN and no one else's; CLEAR TASK SET
/// aborts every session's tasks on the LUN; TARGET WARM RESET aborts every task of the
/// target and leaves a reset unit attention for the other nexuses. "Aborted" is checked
/// where it matters: no status ever arrives for the task, the Data-Out an initiator still
/// sends for it is dropped, and the blocks it would have written keep their old contents.
#[tokio::test]
async fn task_set_aborts_and_target_warm_reset_really_abort() {
    use scsi_proto::iscsi::pdu::{TmFunction, TmResponse};
    let dir = tempfile::tempdir().expect("tempdir");
    let (daemon, addr) = start(dir.path()).await;
    let mut a = Initiator::connect(addr, INI).await;
    assert!(a.login(Some(DEMO)).await.ok());
    a.clear_unit_attention().await;
    let mut b = Initiator::connect(addr, "iqn.2026-11.io.test:other").await;
    assert!(b.login(Some(DEMO)).await.ok());
    b.clear_unit_attention().await;
    let old = pattern(64 * 512, 1);
    let r = a
        .run(&cdb10(WRITE10, 0, 64), false, 64 * 512, &old, 0, 8192)
        .await;
    assert_eq!(r.status, 0, "{r:?}");
    let new = pattern(8 * 512, 99);

    // ABORT TASK SET from A: A's two pending writes go, B's survives and completes.
    let (a1, a1_sn, a1_ttt) = pending_write(&mut a, 0, 8).await;
    let (a2, _, a2_ttt) = pending_write(&mut a, 8, 8).await;
    let (b1, _, b1_ttt) = pending_write(&mut b, 16, 8).await;
    assert_eq!(
        a.tmf(TmFunction::AbortTaskSet, 0, 0).await,
        TmResponse::Complete
    );
    send_data(&mut a, a1, a1_ttt, &new).await;
    send_data(&mut a, a2, a2_ttt, &new).await;
    only_the_ping(&mut a, "after ABORT TASK SET").await;
    assert_eq!(
        a.tmf(TmFunction::AbortTask, a1, a1_sn).await,
        TmResponse::TaskDoesNotExist,
        "the aborted task is gone"
    );
    send_data(&mut b, b1, b1_ttt, &new).await;
    let r = b.finish(b1, &[], 512).await;
    assert_eq!(r.status, 0, "the other session's write is untouched: {r:?}");
    let back = read_back(&mut a, 0, 24).await;
    assert_eq!(
        &back[..16 * 512],
        &old[..16 * 512],
        "aborted writes never land"
    );
    assert_eq!(&back[16 * 512..], &new[..], "the surviving write landed");

    // CLEAR TASK SET from A: the LUN's tasks of both sessions go.
    let (a3, _, a3_ttt) = pending_write(&mut a, 24, 8).await;
    let (b2, _, b2_ttt) = pending_write(&mut b, 32, 8).await;
    assert_eq!(
        a.tmf(TmFunction::ClearTaskSet, 0, 0).await,
        TmResponse::Complete
    );
    send_data(&mut a, a3, a3_ttt, &new).await;
    send_data(&mut b, b2, b2_ttt, &new).await;
    only_the_ping(&mut a, "after CLEAR TASK SET (issuer)").await;
    only_the_ping(&mut b, "after CLEAR TASK SET (other session)").await;
    let back = read_back(&mut a, 24, 16).await;
    assert_eq!(
        &back[..],
        &old[24 * 512..40 * 512],
        "cleared writes never land"
    );

    // TARGET WARM RESET from B: every task of the target goes, A gets the reset UA.
    let (a4, _, a4_ttt) = pending_write(&mut a, 40, 8).await;
    let (b3, _, b3_ttt) = pending_write(&mut b, 48, 8).await;
    assert_eq!(
        b.tmf(TmFunction::TargetWarmReset, 0, 0).await,
        TmResponse::Complete
    );
    send_data(&mut a, a4, a4_ttt, &new).await;
    send_data(&mut b, b3, b3_ttt, &new).await;
    only_the_ping(&mut a, "after TARGET WARM RESET (other session)").await;
    only_the_ping(&mut b, "after TARGET WARM RESET (issuer)").await;
    let r = a.run(&[0u8; 6], false, 0, &[], 0, 0).await;
    assert_eq!(r.status, 2, "unit attention after a target reset: {r:?}");
    assert_eq!(r.sense.get(2).map(|k| k & 0x0f), Some(6));
    assert_eq!(r.sense.get(12), Some(&0x29));
    a.clear_unit_attention().await;
    let back = read_back(&mut b, 40, 16).await;
    assert_eq!(
        &back[..],
        &old[40 * 512..56 * 512],
        "reset writes never land"
    );
    daemon.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn shutdown_with_commands_in_flight_is_clean() {
    use scsi_proto::iscsi::pdu::Bhs;
    let dir = tempfile::tempdir().expect("tempdir");
    let (daemon, addr) = start(dir.path()).await;
    let mut a = Initiator::connect(addr, INI).await;
    assert!(a.login(Some(DEMO)).await.ok());
    a.clear_unit_attention().await;
    // A write stuck waiting for its data, and an idle second session.
    let cmd = a.command(
        &cdb10(WRITE10, 0, 256),
        false,
        true,
        256 * 512,
        bytes::Bytes::new(),
    );
    a.send(cmd).await;
    assert!(matches!(a.recv().await.bhs, Bhs::R2t(_)));
    let mut b = Initiator::connect(addr, "iqn.2026-11.io.test:idle").await;
    assert!(b.login(Some(DEMO)).await.ok());
    daemon.shutdown().await.expect("clean shutdown");
    assert!(a.recv_opt().await.is_none(), "connections are closed");
    assert!(b.recv_opt().await.is_none());
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "no longer accepting"
    );
}

#[tokio::test]
async fn oversized_write_is_refused_before_buffering() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (daemon, addr) = start(dir.path()).await;
    let mut c = Initiator::connect(addr, INI).await;
    assert!(c.login(Some(DEMO)).await.ok());
    c.clear_unit_attention().await;
    // WRITE(16) of 200000 blocks (~98 MiB) with a matching EDTL: refused at once, no R2T.
    let mut cdb = [0u8; 16];
    cdb[0] = 0x8a;
    cdb[10..14].copy_from_slice(&200_000u32.to_be_bytes());
    let r = c.run(&cdb, false, 200_000 * 512, &[0u8; 512], 0, 0).await;
    assert_eq!(r.status, 2, "{r:?}");
    assert_eq!(r.r2ts, 0);
    assert_eq!(
        (r.sense.get(2).map(|k| k & 0x0f), r.sense.get(12)),
        (Some(5), Some(&0x24))
    );
    // The session is fine afterwards.
    let r = c.run(&cdb10(READ10, 0, 1), true, 512, &[], 0, 0).await;
    assert_eq!(r.status, 0);
    daemon.shutdown().await.expect("clean shutdown");
}

/// Designators of a VPD page 83h: `(association, designator type, value)` in page order.
fn designators(page: &[u8]) -> Vec<(u8, u8, Vec<u8>)> {
    assert_eq!(page.get(1), Some(&0x83), "VPD page 83h: {page:02x?}");
    let len = usize::from(u16::from_be_bytes([page[2], page[3]]));
    let body = &page[4..4 + len];
    let mut out = Vec::new();
    let mut off = 0;
    while off + 4 <= body.len() {
        let n = usize::from(body[off + 3]);
        let d = &body[off..off + 4 + n];
        out.push(((d[1] >> 4) & 0x3, d[1] & 0x0f, d[4..].to_vec()));
        off += 4 + n;
    }
    out
}

/// REPORT TARGET PORT GROUPS data: `(group, asymmetric access state byte, ports)` per
/// descriptor (length-only or extended header).
fn port_groups(data: &[u8]) -> Vec<(u16, u8, Vec<u16>)> {
    let len = u32::from_be_bytes([data[0], data[1], data[2], data[3]]) as usize;
    assert_eq!(data.len(), 4 + len, "RTPG data is complete: {data:02x?}");
    let mut off = 4;
    if data.get(4).is_some_and(|b| b & 0x70 == 0x10) {
        off = 8; // extended header (format type 001b)
    }
    let mut out = Vec::new();
    while off + 8 <= data.len() {
        let d = &data[off..];
        let n = usize::from(d[7]);
        let ports = (0..n)
            .map(|i| u16::from_be_bytes([d[8 + 4 * i + 2], d[8 + 4 * i + 3]]))
            .collect();
        out.push((u16::from_be_bytes([d[2], d[3]]), d[0], ports));
        off += 8 + 4 * n;
    }
    out
}

/// One target behind three portals in two portal groups (TPGT 1; TPGT 2 twice): through
/// every portal LUN 0 is the same logical unit (identical NAA designator) seen through the
/// target port of that portal's group (relative target port and target port group
/// designators = its TPGT; equal for the two portals that share a group), and REPORT TARGET
/// PORT GROUPS lists both groups, active/optimized, whichever path asks.
#[tokio::test]
async fn two_portal_groups_one_logical_unit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = demo_config(dir.path());
    let portal = PortalCfg::new(SocketAddr::from(([127, 0, 0, 1], 0)));
    cfg.portals = vec![
        portal.clone().with_tpgt(1),
        portal.clone().with_tpgt(2),
        portal.with_tpgt(2),
    ];
    let daemon = start_config(cfg).await;
    let addrs = daemon.local_addrs().to_vec();
    assert_eq!(addrs.len(), 3, "{addrs:?}");
    let tpgts = [1u16, 2, 2];

    let mut naa = None;
    for (addr, tpgt) in addrs.iter().zip(tpgts) {
        let mut c = Initiator::connect(*addr, INI).await;
        assert!(c.login(Some(DEMO)).await.ok(), "login through {addr}");
        c.clear_unit_attention().await;

        // INQUIRY, EVPD=1, page 83h.
        let r = c
            .run(&[0x12, 0x01, 0x83, 0x01, 0x00, 0x00], true, 256, &[], 0, 0)
            .await;
        assert_eq!(r.status, 0, "INQUIRY VPD 83h through {addr}: {r:?}");
        let d = designators(&r.data);
        let find = |assoc: u8, ty: u8| {
            d.iter()
                .find(|(a, t, _)| *a == assoc && *t == ty)
                .map(|(_, _, v)| v.clone())
                .unwrap_or_else(|| panic!("no designator {assoc}/{ty} through {addr}: {d:02x?}"))
        };
        // Logical unit association (00b), NAA (type 3): the same through every portal.
        let this_naa = find(0, 3);
        assert_eq!(this_naa.len(), 16);
        match &naa {
            None => naa = Some(this_naa),
            Some(first) => assert_eq!(first, &this_naa, "NAA designator through {addr}"),
        }
        // Target port association (01b): relative target port (4), target port group (5).
        let [hi, lo] = tpgt.to_be_bytes();
        assert_eq!(find(1, 4), vec![0, 0, hi, lo], "relative port via {addr}");
        assert_eq!(find(1, 5), vec![0, 0, hi, lo], "port group via {addr}");

        // REPORT TARGET PORT GROUPS (MAINTENANCE IN / 0Ah), both header formats.
        for extended in [false, true] {
            let mut cdb = [0u8; 12];
            cdb[0] = 0xa3;
            cdb[1] = 0x0a | if extended { 0x20 } else { 0 };
            cdb[6..10].copy_from_slice(&1024u32.to_be_bytes());
            let r = c.run(&cdb, true, 1024, &[], 0, 0).await;
            assert_eq!(r.status, 0, "RTPG through {addr}: {r:?}");
            if extended {
                assert_eq!(r.data[4] & 0x70, 0x10, "extended header");
            }
            assert_eq!(
                port_groups(&r.data),
                vec![(1, 0x80, vec![1]), (2, 0x80, vec![2])],
                "RTPG (extended {extended}) through {addr}: every group, active/optimized"
            );
        }
        c.logout().await;
    }
    daemon.shutdown().await.expect("clean shutdown");
}
