//! ABORT TASK under load: the whole daemon over loopback, 4 sessions each keeping WRITEs
//! (waiting for R2T data) and READs in flight while ABORT TASK names tasks still in flight,
//! tasks that just completed, tasks that race with their completion and ITTs that never
//! existed. Every TMF must be answered (never a Reject, never silence) with the response
//! RFC 7143 11.6.1 prescribes, no response may follow "Function complete" for the task it
//! aborted, aborted writes never reach the medium, and the sessions keep working.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use crate::support::start_demo as start;
use bytes::Bytes;
use lunar_test_kit::cdb::cdb10;
use lunar_test_kit::initiator::Initiator;
use lunar_test_kit::pattern;
use scsi_proto::iscsi::pdu::{Bhs, DataOut, Pdu, TaskMgmtRequest, TmFunction, TmResponse};

const READ10: u8 = 0x28;
const WRITE10: u8 = 0x2a;
use lunar_test_kit::lunard::DEMO_IQN as DEMO;
const INI: &str = "iqn.2026-11.io.test:abort";
const BS: usize = 512;
const SESSIONS: usize = 4;
const ROUNDS: u32 = 8;
/// Blocks per command.
const BLOCKS: u16 = 16;
/// How long a TMF (or any expected PDU) may take to arrive.
const SILENCE_LIMIT: Duration = Duration::from_secs(10);
/// The whole test.
const TEST_LIMIT: Duration = Duration::from_secs(120);

/// Where one session's commands go (disjoint per session).
struct Layout {
    base: u32,
    seed: u8,
}

impl Layout {
    fn new(s: usize) -> Self {
        Layout {
            base: s as u32 * 8192,
            seed: 16 * s as u8,
        }
    }
    /// Prefilled, only read during the rounds (two reads per round).
    fn read_zone(&self) -> u32 {
        self.base
    }
    fn read_zone_blocks() -> u32 {
        ROUNDS * 2 * u32::from(BLOCKS)
    }
    /// Written by the completed write of each round.
    fn write_lba(&self, round: u32) -> u32 {
        self.base + 1024 + round * u32::from(BLOCKS)
    }
    /// Prefilled; targeted by the writes that get aborted, so it must never change.
    fn abort_zone(&self) -> u32 {
        self.base + 2048
    }
    fn abort_zone_blocks() -> u32 {
        ROUNDS * u32::from(BLOCKS)
    }
    fn verify_lba(&self) -> u32 {
        self.base + 4096
    }
    fn read_prefill(&self) -> Vec<u8> {
        pattern(Self::read_zone_blocks() as usize * BS, self.seed)
    }
    fn abort_prefill(&self) -> Vec<u8> {
        pattern(Self::abort_zone_blocks() as usize * BS, self.seed ^ 0x55)
    }
    fn round_data(&self, round: u32) -> Vec<u8> {
        pattern(
            usize::from(BLOCKS) * BS,
            self.seed.wrapping_add(100 + round as u8),
        )
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    /// A write left waiting for its solicited data, then aborted: "Function complete".
    StuckWrite,
    /// A read aborted right behind its command: either outcome, but consistent.
    Racing,
    /// Aborted once its status has arrived: "Task does not exist".
    Completed,
}

struct Task {
    role: Role,
    cmd_sn: u32,
    /// Data-Out for writes.
    data: Option<Vec<u8>>,
    /// Expected Data-In for reads.
    expect: Option<Vec<u8>>,
    data_in: Vec<u8>,
    status: Option<u8>,
    /// Answered "Function complete" by an ABORT TASK naming it.
    aborted: bool,
    /// Some ABORT TASK naming it was answered.
    tmf_answered: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    Exactly(TmResponse),
    CompleteOrNoTask,
}

struct Tmf {
    referenced: u32,
    expect: Expect,
}

#[derive(Default, Debug)]
struct Tally {
    complete: u32,
    no_task: u32,
    racy_aborted: u32,
    racy_completed: u32,
}

struct Round<'a> {
    c: &'a mut Initiator,
    tasks: HashMap<u32, Task>,
    tmfs: HashMap<u32, Tmf>,
    tally: &'a mut Tally,
    /// Send half of the burst before aborting the in-flight write.
    partial: bool,
}

impl Round<'_> {
    async fn issue(
        &mut self,
        role: Role,
        lba: u32,
        write: Option<Vec<u8>>,
        expect: Option<Vec<u8>>,
    ) -> u32 {
        let len = u32::from(BLOCKS) * BS as u32;
        let (op, read) = if write.is_some() {
            (WRITE10, false)
        } else {
            (READ10, true)
        };
        // No immediate data: writes wait for an R2T.
        let cmd = self
            .c
            .command(&cdb10(op, lba, BLOCKS), read, !read, len, Bytes::new());
        let Bhs::ScsiCommand(h) = &cmd.bhs else {
            unreachable!()
        };
        let (itt, cmd_sn) = (h.itt, h.cmd_sn);
        self.tasks.insert(
            itt,
            Task {
                role,
                cmd_sn,
                data: write,
                expect,
                data_in: Vec::new(),
                status: None,
                aborted: false,
                tmf_answered: false,
            },
        );
        self.c.send(cmd).await;
        itt
    }

    async fn abort(&mut self, referenced: u32, ref_cmd_sn: u32, expect: Expect) {
        let itt = self.c.itt();
        let req = TaskMgmtRequest {
            immediate: true,
            function: TmFunction::AbortTask,
            lun: 0,
            itt,
            referenced_task_tag: referenced,
            cmd_sn: self.c.cmd_sn,
            exp_stat_sn: self.c.exp_stat_sn,
            ref_cmd_sn,
            exp_data_sn: 0,
        };
        self.tmfs.insert(itt, Tmf { referenced, expect });
        self.c.send(Pdu::header_only(req)).await;
    }

    async fn data_out(&mut self, itt: u32, ttt: u32, data: &[u8], offset: u32, final_bit: bool) {
        let d = DataOut {
            final_bit,
            lun: 0,
            itt,
            ttt,
            exp_stat_sn: self.c.exp_stat_sn,
            data_sn: 0,
            buffer_offset: offset,
        };
        self.c.send(Pdu::new(d, Bytes::copy_from_slice(data))).await;
    }

    fn finished(&self) -> bool {
        self.tmfs.is_empty()
            && self
                .tasks
                .values()
                .all(|t| (t.status.is_some() || t.aborted) && t.tmf_answered)
    }

    /// A command's status arrived.
    async fn completed(&mut self, itt: u32, status: u8) {
        let t = self.tasks.get_mut(&itt).expect("known task");
        assert!(
            !t.aborted,
            "ITT {itt:#x}: status after ABORT TASK answered Function complete"
        );
        assert!(t.status.is_none(), "ITT {itt:#x}: second status");
        assert_eq!(status, 0, "ITT {itt:#x} ({:?}) failed", t.role);
        t.status = Some(status);
        if let Some(e) = &t.expect {
            assert!(t.data_in == *e, "ITT {itt:#x}: wrong read data");
        }
        assert_ne!(
            t.role,
            Role::StuckWrite,
            "a write whose data never came completed"
        );
        if t.role == Role::Completed {
            let sn = t.cmd_sn;
            self.abort(itt, sn, Expect::Exactly(TmResponse::TaskDoesNotExist))
                .await;
        }
    }

    async fn run(&mut self) {
        while !self.finished() {
            let p = tokio::time::timeout(SILENCE_LIMIT, self.c.recv())
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "silence: {} TMF(s) unanswered, tasks {:?}",
                        self.tmfs.len(),
                        self.tasks
                            .iter()
                            .filter(|(_, t)| t.status.is_none() && !t.aborted)
                            .map(|(i, t)| (*i, t.role))
                            .collect::<Vec<_>>()
                    )
                });
            match &p.bhs {
                Bhs::R2t(h) => {
                    let t = self.tasks.get(&h.itt).expect("R2T for an unknown ITT");
                    assert!(!t.aborted, "R2T for an aborted task");
                    let data = t.data.clone().expect("R2T for a read");
                    let (off, len) = (
                        h.buffer_offset as usize,
                        h.desired_data_transfer_length as usize,
                    );
                    let (itt, ttt, role, sn) = (h.itt, h.ttt, t.role, t.cmd_sn);
                    if role == Role::StuckWrite {
                        if self.partial {
                            let half = &data[off..off + len / 2];
                            self.data_out(itt, ttt, half, off as u32, false).await;
                        }
                        self.abort(itt, sn, Expect::Exactly(TmResponse::Complete))
                            .await;
                    } else {
                        self.data_out(itt, ttt, &data[off..off + len], off as u32, true)
                            .await;
                    }
                }
                Bhs::DataIn(h) => {
                    let t = self
                        .tasks
                        .get_mut(&h.itt)
                        .expect("Data-In for an unknown ITT");
                    assert!(
                        !t.aborted,
                        "ITT {:#x}: Data-In after ABORT TASK answered Function complete",
                        h.itt
                    );
                    assert_eq!(h.buffer_offset as usize, t.data_in.len());
                    t.data_in.extend_from_slice(&p.data);
                    if let Some(st) = h.status {
                        self.completed(h.itt, st).await;
                    }
                }
                Bhs::ScsiResponse(h) => self.completed(h.itt, h.status).await,
                Bhs::TaskMgmtResponse(h) => {
                    let tmf = self
                        .tmfs
                        .remove(&h.itt)
                        .expect("TMF response for an unknown ITT");
                    match tmf.expect {
                        Expect::Exactly(want) => {
                            assert_eq!(h.response, want, "ABORT TASK of ITT {:#x}", tmf.referenced)
                        }
                        Expect::CompleteOrNoTask => assert!(
                            matches!(
                                h.response,
                                TmResponse::Complete | TmResponse::TaskDoesNotExist
                            ),
                            "ABORT TASK of ITT {:#x}: {:?}",
                            tmf.referenced,
                            h.response
                        ),
                    }
                    match h.response {
                        TmResponse::Complete => self.tally.complete += 1,
                        _ => self.tally.no_task += 1,
                    }
                    if let Some(t) = self.tasks.get_mut(&tmf.referenced) {
                        t.tmf_answered = true;
                        if h.response == TmResponse::Complete {
                            assert!(
                                t.status.is_none() && t.data_in.is_empty(),
                                "ITT {:#x} answered (status {:?}, {} bytes of Data-In), yet ABORT TASK says Function complete",
                                tmf.referenced,
                                t.status,
                                t.data_in.len()
                            );
                            t.aborted = true;
                        }
                        if t.role == Role::Racing {
                            if t.aborted {
                                self.tally.racy_aborted += 1;
                            } else {
                                self.tally.racy_completed += 1;
                            }
                        }
                    }
                }
                Bhs::Reject(r) => panic!("Reject ({:?}) under load", r.reason),
                other => panic!("unexpected {:?}", other.opcode()),
            }
        }
    }
}

/// One round: four commands in flight and six ABORT TASKs.
async fn round(c: &mut Initiator, lay: &Layout, r: u32, tally: &mut Tally) {
    let chunk = usize::from(BLOCKS) * BS;
    let prefill = lay.read_prefill();
    let abort_data = pattern(chunk, 0xEE);
    let mut rd = Round {
        c,
        tasks: HashMap::new(),
        tmfs: HashMap::new(),
        tally,
        partial: r % 2 == 1,
    };
    let r0 = (2 * r) as usize * chunk;
    let stuck = rd
        .issue(
            Role::StuckWrite,
            lay.abort_zone() + r * u32::from(BLOCKS),
            Some(abort_data),
            None,
        )
        .await;
    rd.issue(
        Role::Completed,
        lay.write_lba(r),
        Some(lay.round_data(r)),
        None,
    )
    .await;
    let racy = rd
        .issue(
            Role::Racing,
            lay.read_zone() + 2 * r * u32::from(BLOCKS),
            None,
            Some(prefill[r0..r0 + chunk].to_vec()),
        )
        .await;
    rd.issue(
        Role::Completed,
        lay.read_zone() + (2 * r + 1) * u32::from(BLOCKS),
        None,
        Some(prefill[r0 + chunk..r0 + 2 * chunk].to_vec()),
    )
    .await;
    let racy_sn = rd.tasks[&racy].cmd_sn;
    // Vary how far the read got before its abort arrives: from right behind the command to
    // (usually) after its status was sent.
    match r % 4 {
        0 => {}
        1 => tokio::task::yield_now().await,
        n => tokio::time::sleep(Duration::from_millis(u64::from(n) * 2)).await,
    }
    rd.abort(racy, racy_sn, Expect::CompleteOrNoTask).await;
    // ITTs that never existed: RefCmdSN of a command already received (below the window)
    // and far beyond MaxCmdSN. Both are outside the window: "Task does not exist".
    let bogus = 0x4000_0000 | (lay.base << 4) | r;
    let old_sn = rd.tasks[&stuck].cmd_sn;
    rd.abort(bogus, old_sn, Expect::Exactly(TmResponse::TaskDoesNotExist))
        .await;
    let far = rd.c.cmd_sn.wrapping_add(1_000_000);
    rd.abort(
        bogus | 0x0800_0000,
        far,
        Expect::Exactly(TmResponse::TaskDoesNotExist),
    )
    .await;
    rd.run().await;
    // Nothing else is queued for this round: the next PDU answers the ping.
    let p = c.nop(b"round").await;
    assert!(
        matches!(p.bhs, Bhs::NopIn(_)),
        "stray {:?} (ITT {:#x}) after the round",
        p.bhs.opcode(),
        p.bhs.itt()
    );
}

async fn session(addr: SocketAddr, s: usize) -> Tally {
    let lay = Layout::new(s);
    let mut c = Initiator::connect(addr, &format!("{INI}-{s}")).await;
    assert!(c.login(Some(DEMO)).await.ok());
    c.clear_unit_attention().await;
    // Prefill the read and abort zones.
    for (lba, data) in [
        (lay.read_zone(), lay.read_prefill()),
        (lay.abort_zone(), lay.abort_prefill()),
    ] {
        let blocks = (data.len() / BS) as u16;
        let r = c
            .run(
                &cdb10(WRITE10, lba, blocks),
                false,
                data.len() as u32,
                &data,
                0,
                8192,
            )
            .await;
        assert_eq!(r.status, 0, "prefill: {r:?}");
    }
    let mut tally = Tally::default();
    for r in 0..ROUNDS {
        round(&mut c, &lay, r, &mut tally).await;
    }
    // The session still works: a fresh WRITE and READ back.
    let fresh = pattern(64 * BS, lay.seed ^ 0xA5);
    let w = c
        .run(
            &cdb10(WRITE10, lay.verify_lba(), 64),
            false,
            fresh.len() as u32,
            &fresh,
            8192,
            8192,
        )
        .await;
    assert_eq!(w.status, 0, "final write: {w:?}");
    let back = c
        .run(
            &cdb10(READ10, lay.verify_lba(), 64),
            true,
            fresh.len() as u32,
            &[],
            0,
            0,
        )
        .await;
    assert_eq!(back.status, 0);
    assert!(back.data == fresh, "final read back differs");
    // The completed writes landed; the aborted ones did not.
    for r in 0..ROUNDS {
        let got = c
            .run(
                &cdb10(READ10, lay.write_lba(r), BLOCKS),
                true,
                u32::from(BLOCKS) * BS as u32,
                &[],
                0,
                0,
            )
            .await;
        assert!(got.data == lay.round_data(r), "round {r} write missing");
    }
    let n = Layout::abort_zone_blocks();
    let got = c
        .run(
            &cdb10(READ10, lay.abort_zone(), n as u16),
            true,
            n * BS as u32,
            &[],
            0,
            0,
        )
        .await;
    assert!(
        got.data == lay.abort_prefill(),
        "an aborted write reached the medium"
    );
    c.logout().await;
    tally
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn abort_task_under_load_is_always_answered() {
    let _heavy = crate::support::heavy().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (daemon, addr) = start(dir.path()).await;
    let all = async {
        let handles: Vec<_> = (0..SESSIONS)
            .map(|s| tokio::spawn(session(addr, s)))
            .collect();
        let mut total = Tally::default();
        for h in handles {
            let t = h.await.expect("session task");
            total.complete += t.complete;
            total.no_task += t.no_task;
            total.racy_aborted += t.racy_aborted;
            total.racy_completed += t.racy_completed;
        }
        total
    };
    let total = tokio::time::timeout(TEST_LIMIT, all)
        .await
        .expect("ABORT TASK under load did not finish in time");
    println!("ABORT TASK responses: {total:?}");
    // Per round: the in-flight write (Function complete), the racy read (either), two
    // bogus ITTs and two completed tasks (Task does not exist).
    let rounds = SESSIONS as u32 * ROUNDS;
    assert_eq!(total.racy_aborted + total.racy_completed, rounds);
    assert_eq!(total.complete, rounds + total.racy_aborted);
    assert_eq!(total.no_task, 4 * rounds + total.racy_completed);
    daemon.shutdown().await.expect("clean shutdown");
}
