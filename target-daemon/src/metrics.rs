//! Prometheus metrics: every admin-visible state of lunard as a series.
//!
//! One process-wide registry ([`global`]) because the fabrics, the device server and the
//! admin side all report into the same `/metrics` page, and threading a handle through
//! every constructor would couple rooms that otherwise never meet.
//!
//! Hot-path counters (per command) are resolved to concrete handles once, when a LUN or
//! session appears ([`LunMetrics`]), so a command costs a few atomic adds and no label
//! hashing. Pool and volume figures are read from storage-core at scrape time
//! ([`Metrics::refresh_pools`]): they are already exact counters there, so copying them on
//! every write would only add work to the data path.
//!
//! Label cardinality is bounded by configuration (targets, LUNs, volumes, initiators,
//! clone jobs), never by traffic: no per-LBA, per-task or per-connection-port labels.
//! `docs/metrics.md` lists every series.

use std::sync::OnceLock;
use std::time::Duration;

use prometheus::{
    Encoder, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Latency buckets for SCSI commands: 50 µs .. 10 s, covering RAM-backed reads up to a
/// pool stalled on a full device.
const LATENCY_BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0,
];

/// Metadata commits are fsync-bound: 100 µs .. 10 s.
const COMMIT_BUCKETS: &[f64] = &[
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// The kind of a SCSI command, for the per-LUN command counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommandKind {
    /// READ 6/10/12/16 and other commands that return medium data.
    Read,
    /// WRITE 6/10/12/16, WRITE AND VERIFY, WRITE SAME, COMPARE AND WRITE.
    Write,
    /// UNMAP (and WRITE SAME with UNMAP).
    Unmap,
    /// Everything else (INQUIRY, TEST UNIT READY, MODE SENSE, ...).
    Other,
}

impl CommandKind {
    /// Classifies a CDB by its operation code (SBC-3 names).
    pub fn of_opcode(op: u8) -> CommandKind {
        match op {
            // READ 6/10/12/16
            0x08 | 0x28 | 0xA8 | 0x88 => CommandKind::Read,
            // WRITE 6/10/12/16, WRITE AND VERIFY 10/12/16, WRITE SAME 10/16,
            // COMPARE AND WRITE, ORWRITE 16
            0x0A | 0x2A | 0xAA | 0x8A | 0x2E | 0xAE | 0x8E | 0x41 | 0x93 | 0x89 | 0x8B => {
                CommandKind::Write
            }
            0x42 => CommandKind::Unmap,
            _ => CommandKind::Other,
        }
    }
}

/// The sense key of fixed (0x70/0x71) or descriptor (0x72/0x73) sense data.
pub fn sense_key_of(sense: &[u8]) -> Option<u8> {
    match sense.first()? & 0x7F {
        0x70 | 0x71 => sense.get(2).map(|b| b & 0x0F),
        0x72 | 0x73 => sense.get(1).map(|b| b & 0x0F),
        _ => None,
    }
}

/// One relationship's figures at scrape time (see [`Metrics::set_replica_source`]).
#[derive(Clone, Debug)]
pub struct ReplicaSample {
    /// Relationship name.
    pub relationship: String,
    /// Lag in seconds (`None` on a side that does not measure it).
    pub lag_seconds: Option<f64>,
    /// Schedule interval in seconds.
    pub schedule_seconds: f64,
    /// `lunar_replica_state` value.
    pub state: i64,
    /// Duration of the last transfer, if one completed since lunard started.
    pub last_transfer_seconds: Option<f64>,
    /// Stream bytes moved so far by the transfer running now.
    pub transfer_bytes: Option<u64>,
    /// The running transfer's stream length (sending side).
    pub transfer_size_bytes: Option<u64>,
}

/// Where the relationship figures come from at scrape time.
pub type ReplicaSource = std::sync::Arc<dyn Fn() -> Vec<ReplicaSample> + Send + Sync>;

/// All series lunard exports.
pub struct Metrics {
    registry: Registry,
    lun_commands: IntCounterVec,
    lun_read_bytes: IntCounterVec,
    lun_written_bytes: IntCounterVec,
    lun_latency: HistogramVec,
    lun_errors: IntCounterVec,
    lun_in_flight: IntGaugeVec,
    lun_state: IntGaugeVec,
    sessions: IntGaugeVec,
    connections: IntGaugeVec,
    logins: IntCounterVec,
    chap_failures: IntCounterVec,
    logouts: IntCounter,
    nop_timeouts: IntCounter,
    pdus_rejected: IntCounterVec,
    digest_errors: IntCounterVec,
    tmf_requests: IntCounterVec,
    limit_refusals: IntCounterVec,
    replica_streams: IntCounterVec,
    replica_stream_bytes: IntCounterVec,
    replica_receives_pending: IntGaugeVec,
    replica_receive_staged: IntGaugeVec,
    write_buffer: IntGauge,
    read_buffer: IntGauge,
    pool_capacity: IntGaugeVec,
    pool_used: IntGaugeVec,
    pool_free: IntGaugeVec,
    pool_reserved: IntGaugeVec,
    pool_soft_threshold: IntGaugeVec,
    pool_volumes: IntGaugeVec,
    pool_snapshots: IntGaugeVec,
    pool_clones: IntGaugeVec,
    volume_size: IntGaugeVec,
    volume_mapped: IntGaugeVec,
    volume_unique: IntGaugeVec,
    volume_shared: IntGaugeVec,
    volume_reserved: IntGaugeVec,
    cow_ops: IntCounter,
    cow_bytes: IntCounter,
    metadata_commit: Histogram,
    flushes: IntCounter,
    clone_job_progress: GaugeVec,
    clone_job_state: IntGaugeVec,
    clone_jobs_finished: IntCounterVec,
    ha_role: IntGaugeVec,
    ha_epoch: IntGaugeVec,
    ha_renewals: IntCounterVec,
    ha_takeovers: IntCounterVec,
    ha_fenced: IntCounterVec,
    ha_takeover_duration: HistogramVec,
    ha_renew_latency: HistogramVec,
    replica_lag: GaugeVec,
    replica_schedule: GaugeVec,
    replica_bytes: IntCounterVec,
    replica_last_bytes: IntGaugeVec,
    replica_last_seconds: GaugeVec,
    replica_state: IntGaugeVec,
    replica_transfer_bytes: IntGaugeVec,
    replica_transfer_size: IntGaugeVec,
    replica_errors: IntCounterVec,
    replica_link_refused: IntCounterVec,
    replica_requests_refused: IntCounterVec,
    replica_link_connections: IntGauge,
    /// What `lunar_replica_lag_seconds` is read from at scrape time (the lag grows between
    /// cycles, so it is computed when asked, not when a cycle ends).
    replica_source: parking_lot::Mutex<Option<ReplicaSource>>,
    /// Serialises refresh-then-gather so two concurrent scrapes never see a half-reset vec.
    scrape: parking_lot::Mutex<()>,
}

/// Handles for one LUN's hot-path counters, resolved once when the LUN is attached.
#[derive(Clone)]
pub struct LunMetrics {
    reads: IntCounter,
    writes: IntCounter,
    unmaps: IntCounter,
    others: IntCounter,
    read_bytes: IntCounter,
    written_bytes: IntCounter,
    read_latency: Histogram,
    write_latency: Histogram,
    in_flight: IntGauge,
    errors: IntCounterVec,
    labels: [String; 3],
}

impl LunMetrics {
    /// Marks a command as started; the returned guard decrements the in-flight gauge.
    pub fn start(&self) -> InFlight {
        self.in_flight.inc();
        InFlight(self.in_flight.clone())
    }

    /// Records one completed command: its kind, payload bytes moved and latency.
    pub fn record(&self, kind: CommandKind, bytes: u64, latency: Duration) {
        match kind {
            CommandKind::Read => {
                self.reads.inc();
                self.read_bytes.inc_by(bytes);
                self.read_latency.observe(latency.as_secs_f64());
            }
            CommandKind::Write => {
                self.writes.inc();
                self.written_bytes.inc_by(bytes);
                self.write_latency.observe(latency.as_secs_f64());
            }
            CommandKind::Unmap => self.unmaps.inc(),
            CommandKind::Other => self.others.inc(),
        }
    }

    /// Counts a command that ended in CHECK CONDITION, by sense key (rare path: labels
    /// are looked up here, not cached).
    pub fn error(&self, sense_key: u8) {
        let [t, l, n] = &self.labels;
        self.errors
            .with_label_values(&[
                t.as_str(),
                l.as_str(),
                n.as_str(),
                sense_key_name(sense_key),
            ])
            .inc();
    }
}

/// Decrements a LUN's in-flight gauge when the command ends, however it ends.
pub struct InFlight(IntGauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The LUN states an admin sees (`lunar_lun_state`).
pub const LUN_STATES: &[&str] = &["online", "creating", "offline"];

/// Every value the `sense_key` label can take.
const SENSE_KEYS: &[&str] = &[
    "recovered_error",
    "not_ready",
    "medium_error",
    "hardware_error",
    "illegal_request",
    "unit_attention",
    "data_protect",
    "blank_check",
    "aborted_command",
    "miscompare",
    "other",
];

fn sense_key_name(key: u8) -> &'static str {
    match key {
        0x1 => "recovered_error",
        0x2 => "not_ready",
        0x3 => "medium_error",
        0x4 => "hardware_error",
        0x5 => "illegal_request",
        0x6 => "unit_attention",
        0x7 => "data_protect",
        0x8 => "blank_check",
        0xB => "aborted_command",
        0xE => "miscompare",
        _ => "other",
    }
}

fn counter_vec(reg: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let v = IntCounterVec::new(Opts::new(name, help), labels)
        .unwrap_or_else(|e| panic!("metric {name} is malformed: {e}"));
    register(reg, Box::new(v.clone()), name);
    v
}

fn gauge_vec(reg: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let v = IntGaugeVec::new(Opts::new(name, help), labels)
        .unwrap_or_else(|e| panic!("metric {name} is malformed: {e}"));
    register(reg, Box::new(v.clone()), name);
    v
}

fn float_gauge_vec(reg: &Registry, name: &str, help: &str, labels: &[&str]) -> GaugeVec {
    let v = GaugeVec::new(Opts::new(name, help), labels)
        .unwrap_or_else(|e| panic!("metric {name} is malformed: {e}"));
    register(reg, Box::new(v.clone()), name);
    v
}

fn counter(reg: &Registry, name: &str, help: &str) -> IntCounter {
    let v = IntCounter::new(name, help).unwrap_or_else(|e| panic!("metric {name}: {e}"));
    register(reg, Box::new(v.clone()), name);
    v
}

fn gauge(reg: &Registry, name: &str, help: &str) -> IntGauge {
    let v = IntGauge::new(name, help).unwrap_or_else(|e| panic!("metric {name}: {e}"));
    register(reg, Box::new(v.clone()), name);
    v
}

// The panics above and below fire only on a programming error in this file (a malformed
// static name or a duplicate registration), which every test run catches at start-up;
// no input reaches them.
fn register(reg: &Registry, c: Box<dyn prometheus::core::Collector>, name: &str) {
    // Families of a vec with no label set yet still carry their name and type.
    let names: Vec<String> = c
        .collect()
        .iter()
        .flat_map(|mf| {
            let n = mf.name();
            let suffixes: &[&str] = match mf.get_field_type() {
                prometheus::proto::MetricType::HISTOGRAM => &["_bucket", "_sum", "_count"],
                prometheus::proto::MetricType::SUMMARY => &["", "_sum", "_count"],
                _ => &[""],
            };
            suffixes
                .iter()
                .map(|s| format!("{n}{s}"))
                .collect::<Vec<_>>()
        })
        .collect();
    if let Err(e) = reg.register(c) {
        panic!("metric {name} registered twice: {e}");
    }
    REGISTERED.lock().extend(names);
}

/// Every series name registered (see [`series_names`]).
static REGISTERED: parking_lot::Mutex<std::collections::BTreeSet<String>> =
    parking_lot::Mutex::new(std::collections::BTreeSet::new());

/// The name of every series lunard exports, whether or not it has a sample yet (`/metrics`
/// omits a labelled family until its first label set appears). A histogram is listed as its
/// `_bucket`, `_sum` and `_count` series. For checks that dashboards and alert rules only
/// query series that exist.
pub fn series_names() -> Vec<String> {
    global();
    REGISTERED.lock().iter().cloned().collect()
}

impl Metrics {
    fn new() -> Metrics {
        let r = Registry::new();
        let lun = &["target", "lun", "name"];
        let lun_latency = HistogramVec::new(
            HistogramOpts::new(
                "lunar_lun_command_duration_seconds",
                "SCSI command latency per LUN, from arrival at the device server to status",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["target", "lun", "name", "op"],
        )
        .unwrap_or_else(|e| panic!("latency histogram: {e}"));
        register(
            &r,
            Box::new(lun_latency.clone()),
            "lunar_lun_command_duration_seconds",
        );
        let metadata_commit = Histogram::with_opts(
            HistogramOpts::new(
                "lunar_pool_metadata_commit_duration_seconds",
                "Time for one metadata commit (journal write and fsync), one per group",
            )
            .buckets(COMMIT_BUCKETS.to_vec()),
        )
        .unwrap_or_else(|e| panic!("commit histogram: {e}"));
        register(&r, Box::new(metadata_commit.clone()), "commit");

        #[cfg(target_os = "linux")]
        register(
            &r,
            Box::new(prometheus::process_collector::ProcessCollector::for_self()),
            "process",
        );
        let build = gauge_vec(
            &r,
            "lunar_build_info",
            "Build of lunard (always 1)",
            &["version"],
        );
        build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);

        Metrics {
            lun_commands: counter_vec(
                &r,
                "lunar_lun_commands_total",
                "SCSI commands completed per LUN, by kind (read, write, unmap, other)",
                &["target", "lun", "name", "kind"],
            ),
            lun_read_bytes: counter_vec(
                &r,
                "lunar_lun_read_bytes_total",
                "Bytes read per LUN",
                lun,
            ),
            lun_written_bytes: counter_vec(
                &r,
                "lunar_lun_written_bytes_total",
                "Bytes written per LUN",
                lun,
            ),
            lun_latency,
            lun_errors: counter_vec(
                &r,
                "lunar_lun_errors_total",
                "Commands that ended in CHECK CONDITION, per LUN and sense key",
                &["target", "lun", "name", "sense_key"],
            ),
            lun_in_flight: gauge_vec(
                &r,
                "lunar_lun_commands_in_flight",
                "SCSI commands executing on the LUN now",
                lun,
            ),
            lun_state: gauge_vec(
                &r,
                "lunar_lun_state",
                "1 for the LUN's current state (online, creating, offline), 0 for the others",
                &["target", "lun", "name", "state"],
            ),
            sessions: gauge_vec(
                &r,
                "lunar_iscsi_sessions",
                "Open iSCSI sessions per target and initiator",
                &["target", "initiator"],
            ),
            connections: gauge_vec(
                &r,
                "lunar_iscsi_connections",
                "Open iSCSI connections per target and initiator",
                &["target", "initiator"],
            ),
            logins: counter_vec(
                &r,
                "lunar_iscsi_logins_total",
                "Login attempts by result (success, failure) and reason",
                &["result", "reason"],
            ),
            chap_failures: counter_vec(
                &r,
                "lunar_iscsi_chap_failures_total",
                "CHAP authentication failures (security events), per target or 'discovery'",
                &["target"],
            ),
            logouts: counter(&r, "lunar_iscsi_logouts_total", "Logout requests answered"),
            nop_timeouts: counter(
                &r,
                "lunar_iscsi_nop_timeouts_total",
                "Connections dropped because the initiator did not answer NOP-In pings",
            ),
            pdus_rejected: counter_vec(
                &r,
                "lunar_iscsi_pdus_rejected_total",
                "PDUs answered with Reject or that closed the connection, by reason",
                &["reason"],
            ),
            digest_errors: counter_vec(
                &r,
                "lunar_iscsi_digest_errors_total",
                "CRC32C digest mismatches by kind (header, data)",
                &["kind"],
            ),
            tmf_requests: counter_vec(
                &r,
                "lunar_iscsi_task_management_requests_total",
                "Task management requests by function",
                &["function"],
            ),
            limit_refusals: counter_vec(
                &r,
                "lunar_limit_refusals_total",
                "Connections, requests and commands refused (or closed) by a resource limit, by limit",
                &["limit"],
            ),
            replica_streams: counter_vec(
                &r,
                "lunar_replica_streams_total",
                "Replication streams sent or received over the admin socket, by direction and result (ok or the error kind)",
                &["direction", "result"],
            ),
            replica_stream_bytes: counter_vec(
                &r,
                "lunar_replica_stream_bytes_total",
                "Replication stream bytes sent or received over the admin socket, by direction",
                &["direction"],
            ),
            replica_receives_pending: gauge_vec(
                &r,
                "lunar_replica_receives_pending",
                "Interrupted replication receives waiting to be resumed (lunarctl replica receive-status), by pool",
                &["pool"],
            ),
            replica_receive_staged: gauge_vec(
                &r,
                "lunar_replica_receive_staged_bytes",
                "Bytes staged by interrupted or running replication receives, by pool",
                &["pool"],
            ),
            write_buffer: gauge(
                &r,
                "lunar_iscsi_write_buffer_bytes",
                "WRITE data reserved in the write buffer budget (limits.write_buffer_bytes)",
            ),
            read_buffer: gauge(
                &r,
                "lunar_iscsi_read_buffer_bytes",
                "Data-In held for initiators in the read buffer budget (limits.read_buffer_bytes): reserved for READs running or answers not yet written to the socket",
            ),
            pool_capacity: gauge_vec(
                &r,
                "lunar_pool_capacity_bytes",
                "Pool data capacity",
                &["pool"],
            ),
            pool_used: gauge_vec(
                &r,
                "lunar_pool_used_bytes",
                "Pool bytes holding data",
                &["pool"],
            ),
            pool_free: gauge_vec(
                &r,
                "lunar_pool_free_bytes",
                "Pool bytes free for thin allocation",
                &["pool"],
            ),
            pool_reserved: gauge_vec(
                &r,
                "lunar_pool_reserved_bytes",
                "Pool bytes reserved for full-guarantee volumes' future writes",
                &["pool"],
            ),
            pool_soft_threshold: gauge_vec(
                &r,
                "lunar_pool_soft_threshold_reached",
                "1 when pool usage is at or above the configured soft threshold",
                &["pool"],
            ),
            pool_volumes: gauge_vec(
                &r,
                "lunar_pool_volumes",
                "Volumes (LUN backings and clones)",
                &["pool"],
            ),
            pool_snapshots: gauge_vec(
                &r,
                "lunar_pool_snapshots",
                "Snapshots in the pool",
                &["pool"],
            ),
            pool_clones: gauge_vec(
                &r,
                "lunar_pool_clones",
                "Volumes created as clones (that still record an origin)",
                &["pool"],
            ),
            volume_size: gauge_vec(&r, "lunar_volume_size_bytes", "Logical size", &["volume"]),
            volume_mapped: gauge_vec(
                &r,
                "lunar_volume_mapped_bytes",
                "Bytes of the volume that resolve to data",
                &["volume"],
            ),
            volume_unique: gauge_vec(
                &r,
                "lunar_volume_unique_bytes",
                "Bytes only this volume references: what deleting it frees",
                &["volume"],
            ),
            volume_shared: gauge_vec(
                &r,
                "lunar_volume_shared_bytes",
                "Mapped bytes shared with snapshots or clones",
                &["volume"],
            ),
            volume_reserved: gauge_vec(
                &r,
                "lunar_volume_reserved_bytes",
                "Bytes reserved for this volume's guarantee",
                &["volume"],
            ),
            cow_ops: counter(
                &r,
                "lunar_pool_copy_on_write_total",
                "First writes into shared chunks that allocated a private chunk",
            ),
            cow_bytes: counter(
                &r,
                "lunar_pool_copy_on_write_bytes_total",
                "Bytes copied by copy-on-write (partial first writes)",
            ),
            metadata_commit,
            flushes: counter(
                &r,
                "lunar_pool_flushes_total",
                "Flush (SYNCHRONIZE CACHE) requests",
            ),
            clone_job_progress: {
                let v = GaugeVec::new(
                    Opts::new(
                        "lunar_clone_job_progress_ratio",
                        "Clone copy/split job progress, 0..1",
                    ),
                    &["job", "source", "destination"],
                )
                .unwrap_or_else(|e| panic!("clone progress gauge: {e}"));
                register(&r, Box::new(v.clone()), "lunar_clone_job_progress_ratio");
                v
            },
            clone_job_state: gauge_vec(
                &r,
                "lunar_clone_job_state",
                "1 for the clone job's state (queued, creating, completed, failed, cancelled)",
                &["job", "state"],
            ),
            clone_jobs_finished: counter_vec(
                &r,
                "lunar_clone_jobs_finished_total",
                "Clone jobs that ended, by result (completed, failed, cancelled)",
                &["result"],
            ),
            ha_role: gauge_vec(
                &r,
                "lunar_ha_role",
                "HA gateway role for the pool: 0 standby, 1 taking over, 2 active (owner), \
                 3 releasing, 4 reconnecting after being fenced, 5 stopped",
                &["pool"],
            ),
            ha_epoch: gauge_vec(
                &r,
                "lunar_ha_epoch",
                "Epoch of the pool's current ownership as this gateway last saw it",
                &["pool"],
            ),
            ha_renewals: counter_vec(
                &r,
                "lunar_ha_lease_renewals_total",
                "Successful renewals of the pool's ownership lease by this gateway",
                &["pool"],
            ),
            ha_takeovers: counter_vec(
                &r,
                "lunar_ha_takeovers_total",
                "Times this gateway became the pool's owner (lease won, previous owner fenced, pool open)",
                &["pool"],
            ),
            ha_fenced: counter_vec(
                &r,
                "lunar_ha_fenced_total",
                "Times this gateway found itself blocklisted by a new owner of the pool",
                &["pool"],
            ),
            ha_takeover_duration: {
                let h = HistogramVec::new(
                    HistogramOpts::new(
                        "lunar_ha_takeover_duration_seconds",
                        "From winning the pool's lease to serving: fencing, opening the pool, attaching LUNs",
                    )
                    .buckets(vec![0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]),
                    &["pool"],
                )
                .unwrap_or_else(|e| panic!("takeover histogram: {e}"));
                register(&r, Box::new(h.clone()), "lunar_ha_takeover_duration_seconds");
                h
            },
            ha_renew_latency: {
                let h = HistogramVec::new(
                    HistogramOpts::new(
                        "lunar_ha_renew_seconds",
                        "Round trip of a successful lease renew (lock renew and content read). The \
                         owner renews a quarter of a lease after its last renew and stops \
                         serving three quarters of a lease after it: a renew slower than half \
                         a lease steps the owner down",
                    )
                    .buckets(vec![
                        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5,
                    ]),
                    &["pool"],
                )
                .unwrap_or_else(|e| panic!("renew histogram: {e}"));
                register(&r, Box::new(h.clone()), "lunar_ha_renew_seconds");
                h
            },
            replica_lag: float_gauge_vec(
                &r,
                "lunar_replica_lag_seconds",
                "Age of the replica's data: seconds since the source snapshot the replica last received was taken",
                &["relationship"],
            ),
            replica_schedule: float_gauge_vec(
                &r,
                "lunar_replica_schedule_seconds",
                "The relationship's schedule interval (the alert compares the lag with twice it)",
                &["relationship"],
            ),
            replica_bytes: counter_vec(
                &r,
                "lunar_replica_bytes_total",
                "Replication stream bytes sent (source side) or received (replica side)",
                &["relationship"],
            ),
            replica_last_bytes: gauge_vec(
                &r,
                "lunar_replica_last_transfer_bytes",
                "Stream bytes of the last completed transfer",
                &["relationship"],
            ),
            replica_last_seconds: float_gauge_vec(
                &r,
                "lunar_replica_last_transfer_seconds",
                "Duration of the last completed transfer",
                &["relationship"],
            ),
            replica_state: gauge_vec(
                &r,
                "lunar_replica_state",
                "Relationship state: 0 idle, 1 transferring, 2 paused, 3 error (retrying), 4 stopped (promoted or replica side)",
                &["relationship"],
            ),
            replica_transfer_bytes: gauge_vec(
                &r,
                "lunar_replica_transfer_bytes",
                "Stream bytes sent (source side) or received (replica side) so far by the transfer running now",
                &["relationship"],
            ),
            replica_transfer_size: gauge_vec(
                &r,
                "lunar_replica_transfer_size_bytes",
                "Stream length of the transfer running now (source side)",
                &["relationship"],
            ),
            replica_errors: counter_vec(
                &r,
                "lunar_replica_errors_total",
                "Replication cycles that failed (each is retried with a backoff)",
                &["relationship"],
            ),
            replica_link_refused: counter_vec(
                &r,
                "lunar_replica_link_refused_total",
                "Replication connections refused: unknown_peer, no_certificate, not_tls, refused_by_peer, timeout, too_many, tls, io, closed",
                &["reason"],
            ),
            replica_requests_refused: counter_vec(
                &r,
                "lunar_replica_requests_refused_total",
                "Requests of an authenticated replication peer refused: volume (not in its replication.peers[].volumes), space_limit",
                &["peer", "reason"],
            ),
            replica_link_connections: gauge(
                &r,
                "lunar_replica_link_connections",
                "Replication connections being served by this lunard's listener",
            ),
            replica_source: parking_lot::Mutex::new(None),
            registry: r,
            scrape: parking_lot::Mutex::new(()),
        }
    }

    /// The HA gateway's role for `pool` (see `lunar_ha_role`) and the epoch it last saw.
    pub fn ha_state(&self, pool: &str, role: i64, epoch: u64) {
        self.ha_role.with_label_values(&[pool]).set(role);
        self.ha_epoch
            .with_label_values(&[pool])
            .set(i64::try_from(epoch).unwrap_or(i64::MAX));
    }

    /// A renewal of `pool`'s lease succeeded, `took` from sending it to its answer.
    pub fn ha_renewed(&self, pool: &str, took: Duration) {
        self.ha_renewals.with_label_values(&[pool]).inc();
        self.ha_renew_latency
            .with_label_values(&[pool])
            .observe(took.as_secs_f64());
    }

    /// This gateway took `pool` over, in `d` from lease won to serving.
    pub fn ha_took_over(&self, pool: &str, d: Duration) {
        self.ha_takeovers.with_label_values(&[pool]).inc();
        self.ha_takeover_duration
            .with_label_values(&[pool])
            .observe(d.as_secs_f64());
    }

    /// This gateway was found blocklisted by a new owner of `pool`.
    pub fn ha_fenced(&self, pool: &str) {
        self.ha_fenced.with_label_values(&[pool]).inc();
    }

    /// Sets where relationship figures are read at scrape time (the replication service).
    pub fn set_replica_source(&self, source: ReplicaSource) {
        *self.replica_source.lock() = Some(source);
    }

    /// A completed transfer of `relationship`: `bytes` stream bytes in `d`.
    pub fn replica_transfer(&self, relationship: &str, bytes: u64, d: Duration) {
        self.replica_bytes
            .with_label_values(&[relationship])
            .inc_by(bytes);
        self.replica_last_bytes
            .with_label_values(&[relationship])
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
        self.replica_last_seconds
            .with_label_values(&[relationship])
            .set(d.as_secs_f64());
    }

    /// A failed cycle of `relationship`.
    pub fn replica_error(&self, relationship: &str) {
        self.replica_errors.with_label_values(&[relationship]).inc();
    }

    /// A replication connection refused for `reason`.
    pub fn replica_link_refused(&self, reason: &str) {
        self.replica_link_refused.with_label_values(&[reason]).inc();
    }

    /// A request of replication peer `peer` refused for `reason`.
    pub fn replica_request_refused(&self, peer: &str, reason: &str) {
        self.replica_requests_refused
            .with_label_values(&[peer, reason])
            .inc();
    }

    /// A replication connection began (+1) or ended (-1).
    pub fn replica_link_delta(&self, delta: i64) {
        self.replica_link_connections.add(delta);
    }

    /// Sets every relationship's gauges from the source, dropping deleted ones.
    fn refresh_replicas(&self) {
        let Some(src) = self.replica_source.lock().clone() else {
            return;
        };
        let samples = src();
        for v in [
            &self.replica_lag,
            &self.replica_schedule,
            &self.replica_last_seconds,
        ] {
            v.reset();
        }
        for v in [
            &self.replica_state,
            &self.replica_transfer_bytes,
            &self.replica_transfer_size,
        ] {
            v.reset();
        }
        let gauge = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        for s in samples {
            let l = [s.relationship.as_str()];
            if let Some(lag) = s.lag_seconds {
                self.replica_lag.with_label_values(&l).set(lag);
            }
            self.replica_schedule
                .with_label_values(&l)
                .set(s.schedule_seconds);
            self.replica_state.with_label_values(&l).set(s.state);
            if let Some(d) = s.last_transfer_seconds {
                self.replica_last_seconds.with_label_values(&l).set(d);
            }
            if let Some(b) = s.transfer_bytes {
                self.replica_transfer_bytes
                    .with_label_values(&l)
                    .set(gauge(b));
            }
            if let Some(b) = s.transfer_size_bytes {
                self.replica_transfer_size
                    .with_label_values(&l)
                    .set(gauge(b));
            }
        }
    }

    /// Feeds the metadata-commit histogram from the pool's commit thread.
    pub fn observe_pool(&'static self, pool: &storage_core::Pool) {
        pool.set_commit_observer(std::sync::Arc::new(move |d| self.metadata_commit(d)));
    }

    /// Resolves the hot-path handles of one LUN and marks it online.
    pub fn lun(&self, target: &str, lun: u64, name: &str) -> LunMetrics {
        let lun_s = lun.to_string();
        let l = [target, lun_s.as_str(), name];
        let kind = |k: &str| {
            self.lun_commands
                .with_label_values(&[target, lun_s.as_str(), name, k])
        };
        let lat = |op: &str| {
            self.lun_latency
                .with_label_values(&[target, lun_s.as_str(), name, op])
        };
        self.set_lun_state(target, lun, name, "online");
        LunMetrics {
            reads: kind("read"),
            writes: kind("write"),
            unmaps: kind("unmap"),
            others: kind("other"),
            read_bytes: self.lun_read_bytes.with_label_values(&l),
            written_bytes: self.lun_written_bytes.with_label_values(&l),
            read_latency: lat("read"),
            write_latency: lat("write"),
            in_flight: self.lun_in_flight.with_label_values(&l),
            errors: self.lun_errors.clone(),
            labels: [target.to_string(), lun_s.clone(), name.to_string()],
        }
    }

    /// Sets the one-hot LUN state series.
    pub fn set_lun_state(&self, target: &str, lun: u64, name: &str, state: &str) {
        let lun_s = lun.to_string();
        for s in LUN_STATES {
            self.lun_state
                .with_label_values(&[target, lun_s.as_str(), name, s])
                .set(i64::from(*s == state));
        }
    }

    /// Drops every series of a LUN that went away, so dead LUNs do not linger on dashboards.
    pub fn remove_lun(&self, target: &str, lun: u64, name: &str) {
        let lun_s = lun.to_string();
        let l = [target, lun_s.as_str(), name];
        let _ = self.lun_read_bytes.remove_label_values(&l);
        let _ = self.lun_written_bytes.remove_label_values(&l);
        let _ = self.lun_in_flight.remove_label_values(&l);
        for k in ["read", "write", "unmap", "other"] {
            let _ = self
                .lun_commands
                .remove_label_values(&[target, lun_s.as_str(), name, k]);
        }
        for op in ["read", "write"] {
            let _ = self
                .lun_latency
                .remove_label_values(&[target, lun_s.as_str(), name, op]);
        }
        for key in SENSE_KEYS {
            let _ = self
                .lun_errors
                .remove_label_values(&[target, lun_s.as_str(), name, key]);
        }
        for s in LUN_STATES {
            let _ = self
                .lun_state
                .remove_label_values(&[target, lun_s.as_str(), name, s]);
        }
    }

    /// A session (or connection, with `connection = true`) opened or closed.
    pub fn session_delta(&self, target: &str, initiator: &str, connection: bool, delta: i64) {
        let v = if connection {
            &self.connections
        } else {
            &self.sessions
        };
        let g = v.with_label_values(&[target, initiator]);
        g.add(delta);
        // Gone initiators leave no series behind (bounded cardinality with allow_any).
        if g.get() <= 0 {
            let _ = v.remove_label_values(&[target, initiator]);
        }
    }

    /// One login attempt ended. `reason` is a short fixed word ("ok", "auth", "forbidden",
    /// "not_found", "negotiation", ...), never free text from the initiator.
    pub fn login(&self, success: bool, reason: &str) {
        let result = if success { "success" } else { "failure" };
        self.logins.with_label_values(&[result, reason]).inc();
    }

    /// A CHAP authentication failure on `target` ("discovery" for discovery sessions).
    pub fn chap_failure(&self, target: &str) {
        self.chap_failures.with_label_values(&[target]).inc();
    }

    /// A logout was answered.
    pub fn logout(&self) {
        self.logouts.inc();
    }

    /// A connection was dropped for not answering pings.
    pub fn nop_timeout(&self) {
        self.nop_timeouts.inc();
    }

    /// A PDU was rejected (`reason` is a fixed word such as "protocol_error").
    pub fn pdu_rejected(&self, reason: &str) {
        self.pdus_rejected.with_label_values(&[reason]).inc();
    }

    /// A digest mismatch ("header" or "data").
    pub fn digest_error(&self, kind: &str) {
        self.digest_errors.with_label_values(&[kind]).inc();
    }

    /// A task management request (`function` such as "abort_task", "lun_reset").
    pub fn tmf(&self, function: &str) {
        self.tmf_requests.with_label_values(&[function]).inc();
    }

    /// A resource limit refused something; `limit` is a fixed word naming it (see
    /// docs/metrics.md).
    pub fn limit_refusal(&self, limit: &str) {
        self.limit_refusals.with_label_values(&[limit]).inc();
    }

    /// A replication stream over the admin socket ended: `direction` is `send` or
    /// `receive`, `result` `ok` or the error kind.
    pub fn replica_stream(&self, direction: &str, result: &str) {
        self.replica_streams
            .with_label_values(&[direction, result])
            .inc();
    }

    /// `bytes` of replication stream moved in `direction`.
    pub fn replica_stream_bytes(&self, direction: &str, bytes: u64) {
        self.replica_stream_bytes
            .with_label_values(&[direction])
            .inc_by(bytes);
    }

    /// The write buffer budget grew (or, negative, shrank) by `delta` bytes.
    pub fn write_buffer_delta(&self, delta: i64) {
        self.write_buffer.add(delta);
    }

    /// The read buffer budget grew (or, negative, shrank) by `delta` bytes.
    pub fn read_buffer_delta(&self, delta: i64) {
        self.read_buffer.add(delta);
    }

    /// A flush request reached the pool.
    pub fn flush(&self) {
        self.flushes.inc();
    }

    /// Metadata commit latency, as measured by whoever awaited the commit.
    pub fn metadata_commit(&self, d: Duration) {
        self.metadata_commit.observe(d.as_secs_f64());
    }

    /// Copy-on-write activity reported by the pool.
    pub fn set_cow(&self, ops: u64, bytes: u64) {
        let dops = ops.saturating_sub(self.cow_ops.get());
        self.cow_ops.inc_by(dops);
        let db = bytes.saturating_sub(self.cow_bytes.get());
        self.cow_bytes.inc_by(db);
    }

    /// Clone job progress and state. `progress` is 0.0..=1.0.
    pub fn clone_job(&self, job: &str, source: &str, dest: &str, progress: f64, state: &str) {
        self.clone_job_progress
            .with_label_values(&[job, source, dest])
            .set(progress.clamp(0.0, 1.0));
        for s in ["queued", "creating", "completed", "failed", "cancelled"] {
            self.clone_job_state
                .with_label_values(&[job, s])
                .set(i64::from(s == state));
        }
    }

    /// A clone job ended with `result` (completed, failed, cancelled).
    pub fn clone_job_finished(&self, result: &str) {
        self.clone_jobs_finished.with_label_values(&[result]).inc();
    }

    /// Removes a purged clone job's series.
    pub fn remove_clone_job(&self, job: &str, source: &str, dest: &str) {
        let _ = self
            .clone_job_progress
            .remove_label_values(&[job, source, dest]);
        for s in ["queued", "creating", "completed", "failed", "cancelled"] {
            let _ = self.clone_job_state.remove_label_values(&[job, s]);
        }
    }

    /// Copies the pools' exact counters into the pool gauges (one series per pool, label
    /// `pool`) and the volume gauges. Series of pools not given (a gateway that lost a
    /// pool) are dropped.
    pub fn refresh_pools(&self, pools: &[(String, storage_core::Pool)]) {
        for g in [
            &self.pool_capacity,
            &self.pool_used,
            &self.pool_free,
            &self.pool_reserved,
            &self.pool_soft_threshold,
            &self.pool_volumes,
            &self.pool_snapshots,
            &self.pool_clones,
            &self.volume_size,
            &self.volume_mapped,
            &self.volume_unique,
            &self.volume_shared,
            &self.volume_reserved,
            &self.replica_receives_pending,
            &self.replica_receive_staged,
        ] {
            g.reset();
        }
        for (name, pool) in pools {
            let pending = storage_core::stream::pending_receives(pool);
            self.replica_receives_pending
                .with_label_values(&[name])
                .set(clamp(pending.len() as u64));
            self.replica_receive_staged
                .with_label_values(&[name])
                .set(clamp(pending.iter().map(|p| p.staged_bytes).sum()));
        }
        // The copy-on-write counters are the sum over the pools (each pool's own counts
        // only grow while it is open).
        let (mut cow_ops, mut cow_bytes) = (0u64, 0u64);
        for (name, pool) in pools {
            let stats = pool.stats();
            cow_ops = cow_ops.saturating_add(stats.cow_ops);
            cow_bytes = cow_bytes.saturating_add(stats.cow_bytes);
            self.refresh_pool(name, pool);
        }
        if !pools.is_empty() {
            self.set_cow(cow_ops, cow_bytes);
        }
    }

    /// One pool's figures into the (already reset) pool and volume gauges.
    fn refresh_pool(&self, name: &str, pool: &storage_core::Pool) {
        let st = pool.status();
        let p = [name];
        self.pool_capacity
            .with_label_values(&p)
            .set(clamp(st.capacity_bytes));
        self.pool_used
            .with_label_values(&p)
            .set(clamp(st.used_bytes));
        self.pool_free
            .with_label_values(&p)
            .set(clamp(st.free_bytes));
        self.pool_reserved
            .with_label_values(&p)
            .set(clamp(st.reserved_bytes));
        self.pool_soft_threshold
            .with_label_values(&p)
            .set(i64::from(st.soft_threshold_reached));
        self.pool_volumes
            .with_label_values(&p)
            .set(st.volumes as i64);
        self.pool_snapshots
            .with_label_values(&p)
            .set(st.snapshots as i64);
        let volumes = pool.volumes();
        self.pool_clones
            .with_label_values(&p)
            .set(volumes.iter().filter(|v| v.origin.is_some()).count() as i64);
        for v in volumes {
            let l = [v.name.as_str()];
            self.volume_size
                .with_label_values(&l)
                .set(clamp(v.size_bytes));
            self.volume_mapped
                .with_label_values(&l)
                .set(clamp(v.mapped_bytes));
            self.volume_unique
                .with_label_values(&l)
                .set(clamp(v.unique_bytes));
            self.volume_shared
                .with_label_values(&l)
                .set(clamp(v.shared_bytes));
            self.volume_reserved
                .with_label_values(&l)
                .set(clamp(v.reserved_bytes));
        }
    }

    /// Renders the text exposition format, refreshing the figures of `pools` (the pools
    /// open in this process, with their names) first.
    pub fn render(&self, pools: &[(String, storage_core::Pool)]) -> String {
        let _g = self.scrape.lock();
        self.refresh_pools(pools);
        self.refresh_replicas();
        let mut out = Vec::with_capacity(16 * 1024);
        // Encoding into a Vec cannot fail for well-formed metric families.
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::warn!(error = %e, "metrics encoding failed");
        }
        String::from_utf8_lossy(&out).into_owned()
    }
}

fn clamp(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// The process-wide metrics.
pub fn global() -> &'static Metrics {
    static M: OnceLock<Metrics> = OnceLock::new();
    M.get_or_init(Metrics::new)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lun_counters_move_and_render() {
        let m = global();
        let l = m.lun("iqn.2026-11.io.lunar:t", 7, "vol7");
        {
            let _g = l.start();
            l.record(CommandKind::Write, 4096, Duration::from_micros(300));
            l.record(CommandKind::Read, 8192, Duration::from_micros(100));
            l.error(0x7);
        }
        let text = m.render(&[]);
        assert!(text.contains(
            "lunar_lun_written_bytes_total{lun=\"7\",name=\"vol7\",target=\"iqn.2026-11.io.lunar:t\"} 4096"
        ), "{text}");
        assert!(text.contains(
            "lunar_lun_read_bytes_total{lun=\"7\",name=\"vol7\",target=\"iqn.2026-11.io.lunar:t\"} 8192"
        ));
        assert!(text.contains("sense_key=\"data_protect\""));
        assert!(text.contains(
            "lunar_lun_commands_in_flight{lun=\"7\",name=\"vol7\",target=\"iqn.2026-11.io.lunar:t\"} 0"
        ));
        m.remove_lun("iqn.2026-11.io.lunar:t", 7, "vol7");
        assert!(!m.render(&[]).contains("name=\"vol7\""));
    }

    #[test]
    fn series_names_cover_empty_families_and_histograms() {
        let names = series_names();
        for n in [
            "lunar_iscsi_chap_failures_total",
            "lunar_clone_job_progress_ratio",
            "lunar_lun_command_duration_seconds_bucket",
            "lunar_pool_metadata_commit_duration_seconds_count",
            "lunar_build_info",
            "process_open_fds",
        ] {
            assert!(names.iter().any(|x| x == n), "{n} missing from {names:?}");
        }
        for n in [
            "lunar_clone_job_progress",
            "lunar_lun_command_duration_seconds",
            "lunar_pool_used_bytes_sum",
        ] {
            assert!(!names.iter().any(|x| x == n), "{n} is no series");
        }
    }

    #[test]
    fn clone_job_state_is_one_hot() {
        let m = global();
        m.clone_job("j1", "gold", "c1", 0.5, "creating");
        let text = m.render(&[]);
        assert!(text.contains(
            "lunar_clone_job_progress_ratio{destination=\"c1\",job=\"j1\",source=\"gold\"} 0.5"
        ));
        assert!(text.contains("lunar_clone_job_state{job=\"j1\",state=\"creating\"} 1"));
        assert!(text.contains("lunar_clone_job_state{job=\"j1\",state=\"failed\"} 0"));
    }

    #[test]
    fn replica_samples_export_transfer_progress_and_millisecond_lag() {
        let m = Metrics::new();
        m.set_replica_source(std::sync::Arc::new(|| {
            vec![
                ReplicaSample {
                    relationship: "src1".into(),
                    lag_seconds: Some(1.25),
                    schedule_seconds: 60.0,
                    state: 1,
                    last_transfer_seconds: None,
                    transfer_bytes: Some(4096),
                    transfer_size_bytes: Some(10_000),
                },
                ReplicaSample {
                    relationship: "dr1".into(),
                    lag_seconds: Some(0.5),
                    schedule_seconds: 5.0,
                    state: 4,
                    last_transfer_seconds: Some(2.0),
                    transfer_bytes: None,
                    transfer_size_bytes: None,
                },
            ]
        }));
        let text = m.render(&[]);
        for want in [
            "lunar_replica_transfer_bytes{relationship=\"src1\"} 4096",
            "lunar_replica_transfer_size_bytes{relationship=\"src1\"} 10000",
            "lunar_replica_lag_seconds{relationship=\"src1\"} 1.25",
            "lunar_replica_lag_seconds{relationship=\"dr1\"} 0.5",
            "lunar_replica_state{relationship=\"dr1\"} 4",
        ] {
            assert!(text.contains(want), "{want} missing from\n{text}");
        }
        // No transfer running: no series (not a stale figure).
        assert!(!text.contains("lunar_replica_transfer_bytes{relationship=\"dr1\"}"));
    }
}
