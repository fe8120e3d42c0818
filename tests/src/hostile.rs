//! Harness of the hostile-initiator suite (`tests/tests/hostile/`): a daemon with an attacked
//! target and an honest one, an honest reader whose READ latency is measured while an attack
//! runs, and lunard's memory as the kernel reports it.
//!
//! The bounds are what an attack may *not* cause, not performance targets: on a shared
//! two-core CI machine an honest 4 KiB READ normally takes well under a millisecond, a
//! starved or frozen daemon takes seconds. [`HONEST_READ_P99_BOUND`] and
//! [`HONEST_READ_MAX_BOUND`] sit between the two with a wide margin on either side, so a
//! failure means the attack froze other sessions, not that the machine was busy.

use crate::config::{yaml, ByteSize, ChapCfg, Config, LunCfg, TargetCfg};
use crate::raw::{Chap, Conn};
use crate::{Lunard, LunardOptions};
use anyhow::{bail, Context, Result};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The target the attacks aim at.
pub const VICTIM_IQN: &str = "iqn.2026-11.io.lunar:victim";
/// Another target on the same daemon, used only by honest sessions.
pub const HONEST_IQN: &str = "iqn.2026-11.io.lunar:honest";
/// Initiator name of honest sessions.
pub const HONEST_INITIATOR: &str = "iqn.2026-11.io.lunar.test:honest";
/// Initiator name of attacking sessions.
pub const ATTACKER: &str = "iqn.2026-11.io.lunar.test:mallory";
/// CHAP user and secrets of the victim target when it requires CHAP.
pub const CHAP_USER: &str = "victim-user";
/// Initiator secret.
pub const CHAP_SECRET: &str = "victim-secret-0123456789";
/// Target (mutual) CHAP user.
pub const TARGET_USER: &str = "victim-target";
/// Target (mutual) secret.
pub const TARGET_SECRET: &str = "victim-target-secret-987";

/// 99th percentile of the READ latency an honest session on another target may see while
/// an attack runs (over fewer than 100 READs: the second slowest).
pub const HONEST_READ_P99_BOUND: Duration = Duration::from_millis(500);
/// Slowest READ an honest session on another target may see while an attack runs. Higher
/// than the p99 bound: one scheduling hiccup of a few hundred milliseconds on an overloaded
/// machine (up to ~700 ms seen with two suites at once on two cores) is not a freeze; a
/// freeze is seconds.
pub const HONEST_READ_MAX_BOUND: Duration = Duration::from_secs(1);

/// Size of each LUN (thin, so only what is written costs space).
pub const LUN_BYTES: u64 = 64 << 20;

/// How the victim target is protected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Auth {
    /// Anyone may log in.
    Open,
    /// One-way CHAP.
    Chap,
    /// Mutual CHAP.
    Mutual,
}

/// The victim's CHAP credentials as an initiator presents them.
pub fn victim_chap(auth: Auth) -> Option<Chap> {
    let mutual =
        (auth == Auth::Mutual).then(|| (TARGET_USER.to_string(), TARGET_SECRET.to_string()));
    (auth != Auth::Open).then(|| Chap {
        user: CHAP_USER.into(),
        secret: CHAP_SECRET.into(),
        mutual,
    })
}

/// A daemon with the victim target (LUNs 0 and 1, with the CHAP `auth` asks for) and the
/// honest target (LUN 0), metrics on a free port; tests change what they need before
/// [`start_config`].
pub fn config(auth: Auth) -> Config {
    let size = ByteSize(LUN_BYTES);
    let mut victim = TargetCfg::iscsi(VICTIM_IQN);
    match auth {
        Auth::Open => {}
        Auth::Chap => victim = victim.with_chap(ChapCfg::new(CHAP_USER, CHAP_SECRET)),
        Auth::Mutual => {
            victim = victim.with_chap(
                ChapCfg::new(CHAP_USER, CHAP_SECRET).with_mutual(TARGET_USER, TARGET_SECRET),
            )
        }
    }
    let mut cfg = Config::local(ByteSize::gib(2))
        .with_target(
            victim
                .with_lun(LunCfg::new(0, "victim0", size))
                .with_lun(LunCfg::new(1, "victim1", size)),
        )
        .with_target(TargetCfg::iscsi(HONEST_IQN).with_lun(LunCfg::new(0, "honest0", size)));
    cfg.metrics.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    cfg
}

/// Starts lunard with [`config`]`(auth)`.
pub fn start(auth: Auth) -> Lunard {
    start_config(&config(auth))
}

/// Starts lunard with `cfg` (its own portals: no `--portal` flag).
pub fn start_config(cfg: &Config) -> Lunard {
    Lunard::start_with(LunardOptions {
        config_yaml: Some(yaml(cfg)),
        portals: 0,
        ..LunardOptions::default()
    })
    .unwrap_or_else(|e| panic!("start lunard: {e:#}"))
}

/// [`start`], plus an [`HonestReader`] on the honest target: every attack test ends with
/// [`HonestReader::assert_flood_bounds`], so each one also shows that an honest session on
/// another target kept its READ latency while it ran.
pub fn start_watched(auth: Auth) -> (Lunard, HonestReader) {
    let d = start(auth);
    let honest = HonestReader::start(&d);
    (d, honest)
}

/// Memory bound of attacks that are not floods (a few connections): an idle lunard with
/// these LUNs is ~7 MiB.
pub const SMALL_ATTACK_MEMORY_MIB: u64 = 64;

/// An honest session to the victim target (with its credentials).
pub fn victim_session(d: &Lunard, auth: Auth, name: &str) -> Conn {
    let mut c = Conn::connect(d.addr(), name).expect("connect");
    c.login_ok(Some(VICTIM_IQN), victim_chap(auth).as_ref())
        .unwrap_or_else(|e| panic!("honest login to the victim: {e:#}"));
    c.ready(0).expect("TEST UNIT READY");
    c
}

/// An honest session to the honest target.
pub fn honest_session(d: &Lunard) -> Conn {
    let mut c = Conn::connect(d.addr(), HONEST_INITIATOR).expect("connect");
    c.login_ok(Some(HONEST_IQN), None)
        .unwrap_or_else(|e| panic!("honest login: {e:#}"));
    c.ready(0).expect("TEST UNIT READY");
    c
}

/// Waits (at most `limit`) until an honest login to the honest target is admitted. After a
/// flood's sockets are closed, lunard frees their connection slots only once it has noticed
/// each close; how long that takes is not bounded by any fixed pause, so a test that wants
/// "logins work again" waits for it instead of sleeping and assuming.
pub fn wait_honest_login_admitted(d: &Lunard, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        let attempt = Conn::connect(d.addr(), HONEST_INITIATOR)
            .and_then(|mut c| c.login_ok(Some(HONEST_IQN), None));
        match attempt {
            Ok(()) => return,
            Err(e) if Instant::now() >= deadline => {
                panic!("no honest login admitted within {limit:?}: {e:#}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// READ latencies an honest session saw.
#[derive(Clone, Debug, Default)]
pub struct Latency {
    /// READs completed.
    pub count: usize,
    /// Slowest READ.
    pub max: Duration,
    /// 99th percentile (the sample below which 99% of the others lie; for fewer than 100
    /// READs, the second slowest).
    pub p99: Duration,
}

/// An honest session on [`HONEST_IQN`] issuing 4 KiB READs back to back on its own thread
/// (with a short pause between them) until stopped.
pub struct HonestReader {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<Result<Vec<Duration>>>>,
}

impl HonestReader {
    /// Logs in (before the attack starts) and begins reading.
    pub fn start(d: &Lunard) -> HonestReader {
        let mut c = honest_session(d);
        // The 2 MiB it reads hold data, so its READs reach the pool like real ones (a
        // never-written range is answered from metadata alone).
        let block = vec![0x48u8; 256 << 10];
        for i in 0..8u32 {
            c.write10(0, i * 512, &block)
                .expect("honest WRITE before the attack");
        }
        c.read10(0, 0, 8).expect("first honest READ");
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let mut lat = Vec::new();
            let mut lba = 0u32;
            // At least a few READs even when the attack is over in milliseconds: the last
            // ones then show the session still works after it.
            while !flag.load(Ordering::Relaxed) || lat.len() < 3 {
                let t0 = Instant::now();
                c.read10(0, lba, 8)
                    .with_context(|| format!("honest READ #{} at LBA {lba}", lat.len()))?;
                lat.push(t0.elapsed());
                lba = (lba + 8) % 4096;
                std::thread::sleep(Duration::from_millis(5));
            }
            Ok(lat)
        });
        HonestReader {
            stop,
            handle: Some(handle),
        }
    }

    /// Stops reading and returns the latencies; fails if a READ failed or the session broke.
    pub fn finish(mut self) -> Result<Latency> {
        self.stop.store(true, Ordering::Relaxed);
        let Some(h) = self.handle.take() else {
            bail!("honest reader already finished");
        };
        let mut lat = match h.join() {
            Ok(r) => r?,
            Err(_) => bail!("honest reader thread panicked"),
        };
        if lat.is_empty() {
            bail!("the honest session completed no READ during the attack");
        }
        lat.sort_unstable();
        let p99 = lat[(lat.len() - 1) * 99 / 100];
        Ok(Latency {
            count: lat.len(),
            max: *lat.last().unwrap_or(&Duration::ZERO),
            p99,
        })
    }

    /// [`HonestReader::finish`] for an attack: stops the reader, then checks all bounds at
    /// once (so a failure reports every figure): the honest READ latency's p99 under
    /// [`HONEST_READ_P99_BOUND`] and its maximum under [`HONEST_READ_MAX_BOUND`], lunard's
    /// peak RSS under `memory_bound_mib`; lunard must also still be alive.
    pub fn assert_flood_bounds(self, d: &mut Lunard, what: &str, memory_bound_mib: u64) -> Latency {
        let l = self
            .finish()
            .unwrap_or_else(|e| panic!("{what}: honest session broke: {e:#}"));
        d.check_alive()
            .unwrap_or_else(|e| panic!("{what}: lunard died: {e:#}"));
        let peak = peak_rss_mib(d);
        eprintln!(
            "{what}: honest READs {}, p99 {:?} (bound {HONEST_READ_P99_BOUND:?}), max {:?} \
             (bound {HONEST_READ_MAX_BOUND:?}); lunard peak RSS {peak} MiB (bound \
             {memory_bound_mib} MiB)",
            l.count, l.p99, l.max
        );
        let mut broken = Vec::new();
        if l.p99 > HONEST_READ_P99_BOUND || l.max > HONEST_READ_MAX_BOUND {
            broken.push(format!(
                "honest READs on another target: p99 {:?}, max {:?} over {} READs; the bounds \
                 are {HONEST_READ_P99_BOUND:?} and {HONEST_READ_MAX_BOUND:?}",
                l.p99, l.max, l.count
            ));
        }
        if peak > memory_bound_mib {
            broken.push(format!(
                "lunard's resident memory peaked at {peak} MiB, above the {memory_bound_mib} MiB bound"
            ));
        }
        assert!(broken.is_empty(), "{what}: {}", broken.join("; "));
        l
    }
}

impl Drop for HonestReader {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// A line of `/proc/<pid>/status` in KiB (`VmRSS`, `VmHWM`).
pub fn proc_status_kib(pid: u32, field: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with(field) && l[field.len()..].starts_with(':'))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

/// lunard's peak resident memory so far, in MiB (`VmHWM`: the kernel's high-water mark, so
/// no sampling can miss a spike).
pub fn peak_rss_mib(d: &Lunard) -> u64 {
    let pid = d.pid().expect("lunard running");
    proc_status_kib(pid, "VmHWM").expect("VmHWM of lunard") / 1024
}

/// Asserts lunard's peak RSS stayed under `bound_mib` and that it is still alive.
pub fn assert_memory_bounded(d: &mut Lunard, what: &str, bound_mib: u64) {
    d.check_alive()
        .unwrap_or_else(|e| panic!("{what}: lunard died: {e:#}"));
    let peak = peak_rss_mib(d);
    eprintln!("{what}: lunard peak RSS {peak} MiB (bound {bound_mib} MiB)");
    assert!(
        peak <= bound_mib,
        "{what}: lunard's resident memory peaked at {peak} MiB, above the {bound_mib} MiB bound"
    );
}

/// After an attack: the daemon is alive and a fresh honest login and READ on the honest
/// target work.
pub fn assert_daemon_healthy(d: &mut Lunard, what: &str) {
    d.check_alive()
        .unwrap_or_else(|e| panic!("{what}: lunard died: {e:#}"));
    let mut c = honest_session(d);
    c.read10(0, 0, 8)
        .unwrap_or_else(|e| panic!("{what}: honest READ after the attack: {e:#}"));
    assert!(
        !d.log().contains("panicked"),
        "{what}: lunard logged a panic:\n{}",
        crate::process::tail(&d.log(), 8000)
    );
}
