//! A Windows-failover-cluster style fencing scenario over real iSCSI sessions against the
//! `lunard` binary: two nodes register keys with APTPL, node A reserves Write Exclusive –
//! Registrants Only, a non-registrant's write conflicts, node B fences A with PREEMPT AND
//! ABORT, and after a daemon restart the keys and the reservation are still there (and B,
//! reconnecting through the same initiator port, still holds it). PREEMPT AND ABORT also
//! aborts the fenced node's in-flight tasks, but not the issuer's.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use bytes::Bytes;
use lunar_test_kit::cdb::cdb10;
use lunar_test_kit::initiator::Initiator;
use lunar_test_kit::lunard::LunardProcess;
use scsi_proto::iscsi::pdu::{self, Bhs, Pdu};

const TARGET: &str = "iqn.2026-11.io.lunar:demo";
const GOOD: u8 = 0x00;
const CHECK_CONDITION: u8 = 0x02;
const RESERVATION_CONFLICT: u8 = 0x18;
const WERO: u8 = 5;

/// Start lunard on an ephemeral port over `dir`; returns the daemon (SIGKILLed and reaped
/// when dropped or killed: APTPL state must survive that) and its portal.
fn start(dir: &Path) -> (LunardProcess, SocketAddr) {
    let daemon = LunardProcess::spawn_ready(
        Command::new(env!("CARGO_BIN_EXE_lunard"))
            .args(["--portal", "127.0.0.1:0", "--no-metrics", "--data-dir"])
            .arg(dir),
    );
    let addr = daemon.addr();
    (daemon, addr)
}

async fn node(addr: SocketAddr, name: &str) -> Initiator {
    logged_in(Initiator::connect(addr, name).await).await
}

/// Node `name` through the initiator port `isid` (the same I_T nexus as an earlier session).
async fn node_with_isid(addr: SocketAddr, name: &str, isid: u64) -> Initiator {
    logged_in(Initiator::connect_with_isid(addr, name, isid).await).await
}

async fn logged_in(mut i: Initiator) -> Initiator {
    assert!(i.login(Some(TARGET)).await.ok(), "{} logs in", i.name);
    i.clear_unit_attention().await;
    i
}

fn prout_cdb(sa: u8, pr_type: u8, len: u32) -> [u8; 10] {
    let mut c = [0u8; 10];
    c[0] = 0x5F;
    c[1] = sa;
    c[2] = pr_type;
    c[5..9].copy_from_slice(&len.to_be_bytes());
    c
}

fn prout_params(key: u64, sa_key: u64, aptpl: bool) -> Vec<u8> {
    let mut p = vec![0u8; 24];
    p[0..8].copy_from_slice(&key.to_be_bytes());
    p[8..16].copy_from_slice(&sa_key.to_be_bytes());
    p[20] = u8::from(aptpl);
    p
}

async fn prout(i: &mut Initiator, sa: u8, pr_type: u8, key: u64, sa_key: u64) -> u8 {
    let p = prout_params(key, sa_key, true);
    i.run(&prout_cdb(sa, pr_type, 24), false, 24, &p, 0, 8192)
        .await
        .status
}

async fn prin(i: &mut Initiator, sa: u8) -> Vec<u8> {
    let cdb = [0x5E, sa, 0, 0, 0, 0, 0, 0x10, 0, 0];
    let r = i.run(&cdb, true, 0x1000, &[], 0, 0).await;
    assert_eq!(r.status, GOOD, "PERSISTENT RESERVE IN {sa}");
    r.data
}

fn keys(read_keys: &[u8]) -> Vec<u64> {
    let len = u32::from_be_bytes([read_keys[4], read_keys[5], read_keys[6], read_keys[7]]) as usize;
    read_keys[8..8 + len]
        .chunks_exact(8)
        .map(|c| u64::from_be_bytes(c.try_into().expect("8 bytes")))
        .collect()
}

/// (key, type) of the current reservation.
fn reservation(read_res: &[u8]) -> Option<(u64, u8)> {
    if read_res[7] == 0 {
        return None;
    }
    let key = u64::from_be_bytes(read_res[8..16].try_into().expect("8 bytes"));
    Some((key, read_res[21] & 0x0F))
}

async fn write(i: &mut Initiator, lba: u32) -> u8 {
    let data = vec![0x5Au8; 512];
    i.run(&cdb10(0x2A, lba, 1), false, 512, &data, 0, 8192)
        .await
        .status
}

async fn read(i: &mut Initiator, lba: u32) -> u8 {
    i.run(&cdb10(0x28, lba, 1), true, 512, &[], 0, 0)
        .await
        .status
}

/// The block at `lba` (the read must succeed).
async fn read_block(i: &mut Initiator, lba: u32) -> Vec<u8> {
    let r = i.run(&cdb10(0x28, lba, 1), true, 512, &[], 0, 0).await;
    assert_eq!(r.status, GOOD, "READ of LBA {lba}");
    r.data
}

/// Sends a one-block WRITE(10) without immediate data and waits for the target's R2T:
/// the target now holds the task waiting for its Data-Out. Returns (ITT, TTT).
async fn start_write(i: &mut Initiator, lba: u32) -> (u32, u32) {
    let cmd = i.command(&cdb10(0x2A, lba, 1), false, true, 512, Bytes::new());
    let itt = cmd.bhs.itt();
    i.send(cmd).await;
    let p = i.recv().await;
    match &p.bhs {
        Bhs::R2t(r) if r.itt == itt => {
            assert_eq!(r.desired_data_transfer_length, 512, "one R2T for the block");
            (itt, r.ttt)
        }
        other => panic!("expected an R2T for ITT {itt:#x}, got {:?}", other.opcode()),
    }
}

/// Answers the R2T of [`start_write`] with the whole block.
async fn send_block(i: &mut Initiator, (itt, ttt): (u32, u32), fill: u8) {
    let d = pdu::DataOut {
        final_bit: true,
        lun: 0,
        itt,
        ttt,
        exp_stat_sn: i.exp_stat_sn,
        data_sn: 0,
        buffer_offset: 0,
    };
    i.send(Pdu::new(d, Bytes::from(vec![fill; 512]))).await;
}

#[tokio::test]
async fn cluster_fencing_survives_restart_with_aptpl() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (daemon, addr) = start(dir.path());

    let mut a = node(addr, "iqn.2026-11.io.test:node-a").await;
    let mut b = node(addr, "iqn.2026-11.io.test:node-b").await;
    let mut outsider = node(addr, "iqn.2026-11.io.test:outsider").await;

    // Both nodes register (APTPL), A reserves Write Exclusive – Registrants Only.
    assert_eq!(prout(&mut a, 0, 0, 0, 0xAAAA,).await, GOOD);
    assert_eq!(prout(&mut b, 0, 0, 0, 0xBBBB).await, GOOD);
    assert_eq!(prout(&mut a, 1, WERO, 0xAAAA, 0).await, GOOD);
    assert_eq!(keys(&prin(&mut b, 0).await), vec![0xAAAA, 0xBBBB]);
    assert_eq!(reservation(&prin(&mut b, 1).await), Some((0xAAAA, WERO)));

    // Registrants read and write; the outsider reads but its write conflicts.
    assert_eq!(write(&mut a, 1).await, GOOD);
    assert_eq!(write(&mut b, 2).await, GOOD);
    assert_eq!(read(&mut outsider, 1).await, GOOD);
    assert_eq!(write(&mut outsider, 3).await, RESERVATION_CONFLICT);

    // B fences A: PREEMPT AND ABORT of A's key takes the reservation.
    assert_eq!(prout(&mut b, 5, WERO, 0xBBBB, 0xAAAA).await, GOOD);
    // A learns it (REGISTRATIONS PREEMPTED unit attention), then is locked out of writes.
    assert_eq!(read(&mut a, 1).await, CHECK_CONDITION);
    assert_eq!(write(&mut a, 1).await, RESERVATION_CONFLICT);
    assert_eq!(keys(&prin(&mut b, 0).await), vec![0xBBBB]);
    assert_eq!(reservation(&prin(&mut b, 1).await), Some((0xBBBB, WERO)));
    // A wrong key is refused.
    assert_eq!(
        prout(&mut a, 1, WERO, 0xAAAA, 0).await,
        RESERVATION_CONFLICT
    );

    // Restart (SIGKILL: APTPL state is durable when PERSISTENT RESERVE OUT returns).
    daemon.kill();
    let b_isid = b.isid;
    drop((a, b, outsider));
    let (daemon, addr) = start(dir.path());

    let mut outsider = node(addr, "iqn.2026-11.io.test:outsider").await;
    assert_eq!(keys(&prin(&mut outsider, 0).await), vec![0xBBBB]);
    assert_eq!(
        reservation(&prin(&mut outsider, 1).await),
        Some((0xBBBB, WERO))
    );
    assert_eq!(write(&mut outsider, 3).await, RESERVATION_CONFLICT);
    assert_eq!(read(&mut outsider, 3).await, GOOD);
    // A session of node B through another initiator port (new ISID) is another I_T
    // nexus: neither registered nor the holder, so its write conflicts.
    let mut b_other = node(addr, "iqn.2026-11.io.test:node-b").await;
    assert_ne!(b_other.isid, b_isid);
    assert_eq!(write(&mut b_other, 2).await, RESERVATION_CONFLICT);
    // B reconnects through its original initiator port: the same I_T nexus, still the
    // reservation holder, so it resumes writing.
    let mut b = node_with_isid(addr, "iqn.2026-11.io.test:node-b", b_isid).await;
    assert_eq!(write(&mut b, 2).await, GOOD);
    // REPORT CAPABILITIES: PTPL_A is set.
    let caps = prin(&mut b, 2).await;
    assert_eq!(caps[3] & 0x01, 0x01, "PTPL_A after restart");

    daemon.kill();
}

#[tokio::test]
async fn preempt_and_abort_aborts_the_preempted_nodes_tasks() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (daemon, addr) = start(dir.path());
    let scenario = async {
        let mut a = node(addr, "iqn.2026-11.io.test:node-a").await;
        let mut b = node(addr, "iqn.2026-11.io.test:node-b").await;
        assert_eq!(prout(&mut a, 0, 0, 0, 0xAAAA).await, GOOD);
        assert_eq!(prout(&mut b, 0, 0, 0, 0xBBBB).await, GOOD);
        assert_eq!(prout(&mut a, 1, WERO, 0xAAAA, 0).await, GOOD);
        let before = read_block(&mut b, 7).await;
        assert_ne!(before, vec![0x5A; 512], "LBA 7 starts without A's pattern");

        // Both nodes have a write in flight that the target holds for its Data-Out.
        let a_write = start_write(&mut a, 7).await;
        let b_write = start_write(&mut b, 8).await;

        // B fences A: PREEMPT AND ABORT completes (A's task aborted, not waited for forever).
        assert_eq!(prout(&mut b, 5, WERO, 0xBBBB, 0xAAAA).await, GOOD);

        // The issuer's own task survived: its data lands.
        send_block(&mut b, b_write, 0xB8).await;
        let r = b.finish(b_write.0, &[], 512).await;
        assert_eq!(r.status, GOOD, "B's write is not aborted");
        assert_eq!(read_block(&mut b, 8).await, vec![0xB8; 512]);

        // A's task is gone: its Data-Out is dropped and it gets no status, so the next
        // PDU A receives answers its next command (`finish` checks the ITT), which reports
        // REGISTRATIONS PREEMPTED.
        send_block(&mut a, a_write, 0x5A).await;
        let tur = a.run(&[0u8; 6], false, 0, &[], 0, 0).await;
        assert_eq!(tur.status, CHECK_CONDITION);
        assert_eq!(
            tur.sense.get(2).map(|k| k & 0x0F),
            Some(6),
            "UNIT ATTENTION"
        );
        assert_eq!(tur.sense.get(12..14), Some(&[0x2A, 0x05][..]), "2A/05");
        let nop = a.nop(b"ping").await;
        assert!(
            matches!(nop.bhs, Bhs::NopIn(_)),
            "nothing else pending for A"
        );
        // The aborted write never landed, and A is now fenced.
        assert_eq!(read_block(&mut b, 7).await, before);
        assert_eq!(write(&mut a, 7).await, RESERVATION_CONFLICT);
        assert_eq!(read_block(&mut b, 7).await, before);
        assert_eq!(reservation(&prin(&mut b, 1).await), Some((0xBBBB, WERO)));
    };
    let done = tokio::time::timeout(Duration::from_secs(120), scenario).await;
    daemon.kill();
    done.expect("PREEMPT AND ABORT scenario timed out");
}
