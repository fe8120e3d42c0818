//! Several `lunard` gateways of one HA group over one RBD-backed pool, for the failover tests
//! (`tests/tests/ha.rs`).
//!
//! Each gateway is a [`Lunard`] on 127.0.0.1 with its own data directory, its own portal
//! (port chosen by the system, TPGT = its ALUA port group), its own metrics port, and the
//! same `ha:` section but for its name and port group (docs/ha.md). They all export the same
//! target, so an initiator sees one LUN through every gateway. Who owns the pool is read
//! from the gateways themselves over SCSI: REPORT TARGET PORT GROUPS names the
//! active/optimized group, which is the owner's port group.

use crate::ceph::{Scratch, POOL};
use crate::config::{yaml, ByteSize, Config, LunCfg, PortalCfg, TargetCfg};
use crate::daemon::{Lunard, LunardOptions};
use crate::net;
use anyhow::{anyhow, bail, Context, Result};
use lunar_test_kit::initiator::{Initiator, PathError};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// IQN of the target every gateway exports.
pub const IQN: &str = "iqn.2026-11.io.lunar:ha";

/// Size of the pool (the RBD image the first owner creates; thin on the OSDs).
pub const POOL_BYTES: ByteSize = ByteSize::gib(2);

/// Size of LUN 0.
pub const LUN_BYTES: ByteSize = ByteSize::gib(1);

/// Lease of the test groups: the default a deployment uses (docs/ha.md).
pub const LEASE: Duration = Duration::from_secs(2);

/// How long a takeover may take before a test gives up (a hang, not a timing check: the
/// goal is 5 s; CI machines are slow and shared).
pub const TAKEOVER_LIMIT: Duration = Duration::from_secs(90);

/// One gateway of the group.
pub struct Gateway {
    /// Its name in the group (`gw1`, `gw2`, ...).
    pub name: String,
    /// Its ALUA target port group (1, 2, ...).
    pub port_group: u16,
    /// The daemon.
    pub lunard: Lunard,
    /// Its Prometheus endpoint.
    pub metrics: SocketAddr,
}

impl Gateway {
    /// The iSCSI portal.
    pub fn addr(&self) -> SocketAddr {
        self.lunard.addr()
    }

    /// Process id (None once it was stopped by the harness).
    pub fn pid(&self) -> Option<u32> {
        self.lunard.pid()
    }

    /// SIGKILL: the gateway dies at once, with no chance to release anything.
    pub fn kill9(&mut self) {
        if let Some(pid) = self.pid() {
            crate::process::signal(pid, libc::SIGKILL);
        }
    }

    /// SIGSTOP: the gateway freezes (a hung machine); its sockets stay open.
    ///
    /// Returns once every thread of the process is stopped (`/proc/PID/task/*/stat` state
    /// `T`): SIGSTOP takes effect asynchronously, and a command sent in between would be
    /// served by a gateway the test believes frozen (a write queued "on the frozen owner"
    /// was once acknowledged, legitimately, before the stop took hold).
    pub fn freeze(&self) {
        let Some(pid) = self.pid() else { return };
        crate::process::signal(pid, libc::SIGSTOP);
        let all_stopped = || -> Option<bool> {
            let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
            let mut any = false;
            for t in tasks {
                let stat = std::fs::read_to_string(t.ok()?.path().join("stat")).ok()?;
                // pid (comm) STATE ...: the comm may hold spaces and parentheses.
                let state = stat.rsplit_once(')')?.1.trim_start().chars().next()?;
                if !matches!(state, 'T' | 't') {
                    return Some(false);
                }
                any = true;
            }
            Some(any)
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while all_stopped() == Some(false) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// SIGCONT after [`Gateway::freeze`].
    pub fn thaw(&self) {
        if let Some(pid) = self.pid() {
            crate::process::signal(pid, libc::SIGCONT);
        }
    }

    /// `lunarctl` against this gateway's admin socket.
    pub fn ctl(&self) -> Result<crate::admin::Lunarctl> {
        crate::admin::Lunarctl::for_daemon(&self.lunard)
    }

    /// The value of metric `name` with `labels` (a substring of the label set, e.g.
    /// `lun="0"`), summed over matching series; 0 when absent.
    pub fn metric(&self, name: &str, labels: &str) -> Result<f64> {
        let text = http_get(self.metrics, "/metrics")?;
        Ok(metric_sum(&text, name, labels))
    }

    /// REPORT TARGET PORT GROUPS through this gateway: `(group id, access state)` pairs.
    /// A gateway that does not answer within 2 s (dead, frozen) is an error.
    pub async fn port_groups(&self) -> Result<Vec<(u16, u8)>> {
        port_groups_at(self.addr())
            .await
            .with_context(|| self.name.clone())
    }
}

/// REPORT TARGET PORT GROUPS to LUN 0 through the portal `addr`: `(group id, access
/// state)` pairs. A gateway that does not answer within 2 s (dead, frozen) is an error.
pub async fn port_groups_at(addr: SocketAddr) -> Result<Vec<(u16, u8)>> {
    port_groups_of(addr, 0).await
}

/// [`port_groups_at`] for LUN `lun` (a gateway with several pools reports each LUN's
/// pool's states).
pub async fn port_groups_of(addr: SocketAddr, lun: u64) -> Result<Vec<(u16, u8)>> {
    let limit = Duration::from_secs(2);
    let mut i = tokio::time::timeout(
        limit,
        Initiator::try_connect(addr, crate::TEST_INITIATOR_IQN),
    )
    .await
    .map_err(|_| anyhow!("{addr}: connect timed out"))?
    .map_err(|e| anyhow!("{addr}: {e}"))?;
    let l = i
        .try_login(IQN, limit)
        .await
        .map_err(|e| anyhow!("{addr}: login: {e}"))?;
    if !l.ok() {
        bail!("{addr}: login refused ({l:?})");
    }
    i.set_lun(lun);
    // A new nexus first reports its unit attentions; RTPG is allowed through them
    // (SPC-4 5.16) but retry a few times anyway.
    for _ in 0..4 {
        let r = i
            .try_run(&rtpg_cdb(4096), 4096, &[], limit)
            .await
            .map_err(|e| anyhow!("{addr}: RTPG: {e}"))?;
        if r.status == 0 {
            return parse_rtpg(&r.data);
        }
    }
    bail!("{addr}: REPORT TARGET PORT GROUPS never answered GOOD")
}

/// The owner's port group as the gateways at `portals` report it: the group every
/// answering one reports active/optimized. `None` while they disagree, none answers, or
/// none is optimized.
pub fn owner_among(portals: &[SocketAddr]) -> Option<u16> {
    owner_of_lun_among(portals, 0)
}

/// [`owner_among`] for LUN `lun`: the owner of its pool.
pub fn owner_of_lun_among(portals: &[SocketAddr], lun: u64) -> Option<u16> {
    let rt = runtime().ok()?;
    let mut seen: Option<u16> = None;
    for &addr in portals {
        let Ok(groups) = rt.block_on(port_groups_of(addr, lun)) else {
            continue;
        };
        let ao: Vec<u16> = groups
            .iter()
            .filter(|(_, s)| *s == ALUA_ACTIVE_OPTIMIZED)
            .map(|(id, _)| *id)
            .collect();
        match (ao.as_slice(), seen) {
            ([id], None) => seen = Some(*id),
            ([id], Some(s)) if *id == s => {}
            _ => return None,
        }
    }
    seen
}

/// The gateways of one group, and the Ceph names they use.
pub struct Group {
    /// Gateways in port-group order (`gws[0]` is `gw1`, port group 1).
    pub gws: Vec<Gateway>,
    /// Image and group names (dropped after the gateways: fields drop in order).
    pub scratch: Scratch,
}

/// The configuration of gateway `index` (0-based) of `scratch`'s group: lunard's own types
/// with its `ha:` builder; `portal` is where it listens (port 0: any).
pub fn gateway_config(scratch: &Scratch, index: usize, portal: PortalCfg) -> Config {
    let port_group = index as u16 + 1;
    let target = TargetCfg::iscsi(IQN).with_lun(LunCfg::new(0, "lun0", LUN_BYTES));
    let mut cfg = Config::local(POOL_BYTES)
        .with_ha(
            &scratch.group,
            &format!("gw{port_group}"),
            port_group,
            scratch.cluster.conf(),
            POOL,
            &scratch.image,
        )
        .with_target(target);
    cfg.portals = vec![portal.with_tpgt(port_group)];
    cfg
}

impl Group {
    /// Starts `n` gateways of a fresh group and waits until one of them owns the pool.
    pub fn start(scratch: Scratch, n: usize) -> Result<Group> {
        Self::start_with(scratch, n, |_, cfg| cfg)
    }

    /// [`Group::start`], with `tweak(index, config)` applied to each gateway's configuration.
    pub fn start_with(
        scratch: Scratch,
        n: usize,
        tweak: impl Fn(usize, Config) -> Config,
    ) -> Result<Group> {
        let mut gws = Vec::new();
        for index in 0..n {
            let portal = PortalCfg::new(SocketAddr::from(([127, 0, 0, 1], 0)));
            let cfg = tweak(index, gateway_config(&scratch, index, portal));
            let port_group = cfg
                .ha
                .as_ref()
                .map(|h| h.port_group)
                .ok_or_else(|| anyhow!("gateway {index} has no ha: section"))?;
            let metrics = SocketAddr::from(([127, 0, 0, 1], net::free_loopback_port()?));
            let lunard = Lunard::start_with(LunardOptions {
                config_yaml: Some(yaml(&cfg)),
                portals: 0,
                extra_args: vec!["--metrics".into(), metrics.to_string()],
                ..LunardOptions::default()
            })
            .with_context(|| format!("starting gateway gw{port_group}"))?;
            gws.push(Gateway {
                name: format!("gw{port_group}"),
                port_group,
                lunard,
                metrics,
            });
        }
        let group = Group { gws, scratch };
        if let Err(e) = group.wait_owner(None, TAKEOVER_LIMIT) {
            bail!("{e:#}\n{}", group.logs(6000));
        }
        Ok(group)
    }

    /// The tail (`max` bytes) of every gateway's log without the logins and logouts of the
    /// harness's own owner polling, for failure messages.
    pub fn logs(&self, max: usize) -> String {
        self.gws
            .iter()
            .map(|g| {
                let log: String = g
                    .lunard
                    .log()
                    .lines()
                    .filter(|l| !l.contains("iscsi::login") && !l.contains("logged out"))
                    .map(|l| format!("{l}\n"))
                    .collect();
                format!(
                    "--- {} log (tail, logins left out)\n{}",
                    g.name,
                    crate::process::tail(&log, max)
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Index of the gateway `name`.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.gws.iter().position(|g| g.name == name)
    }

    /// The owner as the live gateways report it ([`owner_among`]): its index.
    pub fn owner(&self) -> Option<usize> {
        self.owner_of(0)
    }

    /// The owner of LUN `lun`'s pool as the live gateways report it: its index.
    pub fn owner_of(&self, lun: u64) -> Option<usize> {
        let portals: Vec<SocketAddr> = self.gws.iter().map(Gateway::addr).collect();
        let id = owner_of_lun_among(&portals, lun)?;
        self.gws.iter().position(|g| g.port_group == id)
    }

    /// Waits until the live gateways agree on an owner (other than `not`, when given) and
    /// returns its index.
    pub fn wait_owner(&self, not: Option<usize>, limit: Duration) -> Result<usize> {
        self.wait_owner_of(0, not, limit)
    }

    /// [`Group::wait_owner`] for LUN `lun`'s pool.
    pub fn wait_owner_of(&self, lun: u64, not: Option<usize>, limit: Duration) -> Result<usize> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(o) = self.owner_of(lun) {
                if Some(o) != not {
                    return Ok(o);
                }
            }
            if Instant::now() >= deadline {
                let views: Vec<String> = self
                    .gws
                    .iter()
                    .map(|g| {
                        match runtime().and_then(|rt| rt.block_on(port_groups_of(g.addr(), lun))) {
                            Ok(groups) => format!("{}: {groups:?}", g.name),
                            Err(e) => format!("{}: {e:#}", g.name),
                        }
                    })
                    .collect();
                bail!(
                    "no gateway (other than {not:?}) became the owner of LUN {lun}'s pool \
                     within {limit:?}; RTPG per gateway: {views:?}"
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The portals of every gateway, in order (the multipath initiator's paths).
    pub fn paths(&self) -> Vec<(String, SocketAddr)> {
        self.gws
            .iter()
            .map(|g| (g.name.clone(), g.addr()))
            .collect()
    }
}

/// ALUA asymmetric access states (SPC-4 6.37, REPORT TARGET PORT GROUPS).
pub const ALUA_ACTIVE_OPTIMIZED: u8 = 0x0;
/// Standby.
pub const ALUA_STANDBY: u8 = 0x2;
/// Unavailable (a gateway whose heartbeat stopped).
pub const ALUA_UNAVAILABLE: u8 = 0x3;
/// Transitioning between states.
pub const ALUA_TRANSITIONING: u8 = 0xf;

/// REPORT TARGET PORT GROUPS (MAINTENANCE IN, service action 0x0A) for `alloc` bytes.
pub fn rtpg_cdb(alloc: u32) -> [u8; 12] {
    let mut c = [0u8; 12];
    c[0] = 0xa3;
    c[1] = 0x0a;
    c[6..10].copy_from_slice(&alloc.to_be_bytes());
    c
}

/// `(target port group id, asymmetric access state)` of each descriptor of a REPORT TARGET
/// PORT GROUPS answer (length format, SPC-4 table 170).
pub fn parse_rtpg(data: &[u8]) -> Result<Vec<(u16, u8)>> {
    let len = data
        .get(..4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
        .ok_or_else(|| anyhow!("RTPG answer of {} bytes", data.len()))?;
    let end = (4 + len).min(data.len());
    let mut out = Vec::new();
    let mut off = 4;
    while off + 8 <= end {
        let d = &data[off..];
        let state = d[0] & 0x0f;
        let id = u16::from_be_bytes([d[2], d[3]]);
        let ports = usize::from(d[7]);
        out.push((id, state));
        off += 8 + 4 * ports;
    }
    Ok(out)
}

/// A current-thread tokio runtime for the blocking helpers above.
pub fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("tokio runtime")
}

/// A plain HTTP/1.0 GET on loopback; the body.
pub fn http_get(addr: SocketAddr, path: &str) -> Result<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .with_context(|| format!("connecting to {addr}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .ok_or_else(|| anyhow!("no HTTP body from {addr}{path}"))?;
    Ok(body)
}

/// Sum of the samples of metric `name` whose label set contains `labels`.
pub fn metric_sum(text: &str, name: &str, labels: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (n, rest) = match series.find('{') {
                Some(i) => (&series[..i], &series[i..]),
                None => (series, ""),
            };
            (n == name && rest.contains(labels)).then(|| value.parse::<f64>().ok())?
        })
        .sum()
}

/// What `lunar_ha_renew_seconds` says about the renews a gateway made so far, in one
/// line: how many, their mean, how many took longer than 100 ms / 250 ms / 500 ms, and the
/// bucket the slowest one fell in (the owner steps down when no renew succeeds within
/// half a lease of being due: 1 s at the default 2 s).
pub fn renew_latency_summary(metrics_text: &str) -> String {
    let count = metric_sum(metrics_text, "lunar_ha_renew_seconds_count", "");
    if count == 0.0 {
        return "no renews".into();
    }
    let sum = metric_sum(metrics_text, "lunar_ha_renew_seconds_sum", "");
    let within = |le: &str| {
        metric_sum(
            metrics_text,
            "lunar_ha_renew_seconds_bucket",
            &format!("le=\"{le}\""),
        )
    };
    let bounds = [
        "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "0.75", "1",
        "2.5",
    ];
    let slowest = bounds
        .iter()
        .find(|b| within(b) >= count)
        .map_or("> 2.5 s".to_string(), |b| format!("<= {b} s"));
    format!(
        "{count} renews, mean {:.1} ms, > 100 ms: {}, > 250 ms: {}, > 500 ms: {}, slowest {slowest}",
        sum / count * 1000.0,
        count - within("0.1"),
        count - within("0.25"),
        count - within("0.5"),
    )
}

/// The lines of a lunard log (tracing's default format, UTC timestamps) that contain one
/// of `words`, from `since` on, each prefixed with its offset from `since` in seconds:
/// where a takeover's time went, for the test output.
pub fn log_lines_since(log: &str, since: std::time::SystemTime, words: &[&str]) -> Vec<String> {
    let day_secs = |t: std::time::SystemTime| {
        t.duration_since(std::time::UNIX_EPOCH)
            .map(|d| (d.as_secs() % 86_400) as f64 + f64::from(d.subsec_micros()) / 1e6)
            .unwrap_or(0.0)
    };
    let origin = day_secs(since);
    log.lines()
        .filter(|l| words.iter().any(|w| l.contains(w)))
        .filter_map(|l| {
            // 2026-12-07T12:40:01.123456Z
            let t = l.get(11..26)?;
            let h: f64 = t.get(0..2)?.parse().ok()?;
            let m: f64 = t.get(3..5)?.parse().ok()?;
            let s: f64 = t.get(6..)?.trim_end_matches('Z').parse().ok()?;
            let at = h * 3600.0 + m * 60.0 + s - origin;
            (at >= -0.5).then(|| format!("{at:+7.3} s {}", l.get(27..).unwrap_or(l).trim()))
        })
        .collect()
}

/// Whether `e` says the path is gone rather than the command having failed.
pub fn is_path_loss(e: &PathError) -> bool {
    matches!(e, PathError::Closed | PathError::Timeout | PathError::Io(_))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renew_latency_summary_reads_the_histogram() {
        let text = "\
# TYPE lunar_ha_renew_seconds histogram
lunar_ha_renew_seconds_bucket{pool=\"default\",le=\"0.05\"} 7
lunar_ha_renew_seconds_bucket{pool=\"default\",le=\"0.1\"} 8
lunar_ha_renew_seconds_bucket{pool=\"default\",le=\"0.25\"} 9
lunar_ha_renew_seconds_bucket{pool=\"default\",le=\"0.5\"} 9
lunar_ha_renew_seconds_bucket{pool=\"default\",le=\"0.75\"} 10
lunar_ha_renew_seconds_bucket{pool=\"default\",le=\"1\"} 10
lunar_ha_renew_seconds_bucket{pool=\"default\",le=\"+Inf\"} 10
lunar_ha_renew_seconds_sum{pool=\"default\"} 1.0
lunar_ha_renew_seconds_count{pool=\"default\"} 10
";
        assert_eq!(
            renew_latency_summary(text),
            "10 renews, mean 100.0 ms, > 100 ms: 2, > 250 ms: 1, > 500 ms: 1, slowest <= 0.75 s"
        );
        assert_eq!(renew_latency_summary(""), "no renews");
    }

    #[test]
    fn log_lines_since_are_offset_from_the_instant_given() {
        let since = std::time::UNIX_EPOCH + Duration::from_secs(86_400 * 3 + 3600 + 61);
        let log = "\
2026-12-07T01:01:00.400000Z  INFO a: HA role change more than half a second early
2026-12-07T01:01:02.250000Z  INFO a: HA role change to=acquiring
2026-12-07T01:01:03.000000Z  INFO a: unrelated
";
        let lines = log_lines_since(log, since, &["HA role change"]);
        assert_eq!(
            lines,
            vec![" +1.250 s INFO a: HA role change to=acquiring".to_string()]
        );
    }

    #[test]
    fn rtpg_answers_parse() {
        // Two groups: 1 active/optimized (one port), 2 standby (one port).
        let mut d = vec![0, 0, 0, 24];
        d.extend_from_slice(&[0x80, 0x0f, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1]);
        d.extend_from_slice(&[0x02, 0x0f, 0, 2, 0, 0, 0, 1, 0, 0, 0, 2]);
        assert_eq!(
            parse_rtpg(&d).unwrap(),
            vec![(1, ALUA_ACTIVE_OPTIMIZED), (2, ALUA_STANDBY)]
        );
        assert!(parse_rtpg(&[0, 0]).is_err());
    }

    #[test]
    fn metric_sums_match_name_and_labels() {
        let text = "# HELP x\nlunar_lun_written_bytes_total{target=\"t\",lun=\"0\"} 4096\n\
                    lunar_lun_written_bytes_total{target=\"t\",lun=\"1\"} 1\n\
                    lunar_lun_written_bytes_totalx 7\nlunar_ha_epoch 3\n";
        assert_eq!(
            metric_sum(text, "lunar_lun_written_bytes_total", "lun=\"0\""),
            4096.0
        );
        assert_eq!(
            metric_sum(text, "lunar_lun_written_bytes_total", ""),
            4097.0
        );
        assert_eq!(metric_sum(text, "lunar_ha_epoch", ""), 3.0);
    }
}
