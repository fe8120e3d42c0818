//! A Windows-failover-cluster style fencing scenario over real iSCSI sessions against the
//! `lunard` binary: two nodes register keys with APTPL, node A reserves Write Exclusive –
//! Registrants Only, a non-registrant's write conflicts, node B fences A with PREEMPT AND
//! ABORT, and after a daemon restart the keys and the reservation are still there.

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use common::{cdb10, Initiator};

const TARGET: &str = "iqn.2026-11.io.lunar:demo";
const GOOD: u8 = 0x00;
const CHECK_CONDITION: u8 = 0x02;
const RESERVATION_CONFLICT: u8 = 0x18;
const WERO: u8 = 5;

/// Start lunard on an ephemeral port over `dir`; returns the child and its portal.
fn start(dir: &Path) -> (Child, SocketAddr) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_lunard"))
        .args(["--portal", "127.0.0.1:0", "--no-metrics", "--data-dir"])
        .arg(dir)
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn lunard");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let addr = loop {
        let line = rx
            .recv_timeout(std::time::Duration::from_secs(60))
            .expect("lunard never became ready");
        if let Some(rest) = line.split("lunard ready: listening on ").nth(1) {
            break rest
                .trim()
                .split(", ")
                .next()
                .expect("address")
                .parse()
                .expect("socket address");
        }
    };
    // Keep draining stderr so the daemon never blocks on a full pipe.
    std::thread::spawn(move || while rx.recv().is_ok() {});
    (child, addr)
}

async fn node(addr: SocketAddr, name: &str) -> Initiator {
    let mut i = Initiator::connect(addr, name).await;
    assert!(i.login(Some(TARGET)).await.ok(), "{name} logs in");
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

#[tokio::test]
async fn cluster_fencing_survives_restart_with_aptpl() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut daemon, addr) = start(dir.path());

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
    daemon.kill().expect("kill lunard");
    daemon.wait().expect("reap lunard");
    drop((a, b, outsider));
    let (mut daemon, addr) = start(dir.path());

    let mut b = node(addr, "iqn.2026-11.io.test:node-b").await;
    let mut outsider = node(addr, "iqn.2026-11.io.test:outsider").await;
    assert_eq!(keys(&prin(&mut outsider, 0).await), vec![0xBBBB]);
    assert_eq!(
        reservation(&prin(&mut outsider, 1).await),
        Some((0xBBBB, WERO))
    );
    assert_eq!(write(&mut outsider, 3).await, RESERVATION_CONFLICT);
    // B's new session is another I_T nexus (new ISID): not the holder, so it conflicts
    // too, until it registers and the cluster releases the old nexus's reservation.
    assert_eq!(read(&mut outsider, 3).await, GOOD);
    // REPORT CAPABILITIES: PTPL_A is set.
    let caps = prin(&mut b, 2).await;
    assert_eq!(caps[3] & 0x01, 0x01, "PTPL_A after restart");

    daemon.kill().expect("kill lunard");
    daemon.wait().expect("reap lunard");
}
