//! The shipped Grafana dashboard and Prometheus alert rules only query series lunard
//! exports: every `lunar_*` name in their PromQL is a series of a registered metric family
//! (for histograms, their `_bucket`, `_sum` and `_count` series), as
//! `target_daemon::metrics::series_names` lists them. A renamed metric otherwise leaves an
//! empty panel or an alert that can never fire, and nothing else would notice.

use std::collections::BTreeSet;
use std::path::PathBuf;

use serde_json::Value;

fn deploy(file: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy")
        .join(file)
}

/// `lunar_*` identifiers in a PromQL expression (label values in quotes are skipped).
fn lunar_names(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut in_quotes = false;
    let mut word = String::new();
    for c in expr.chars().chain(std::iter::once(' ')) {
        if c == '"' {
            in_quotes = !in_quotes;
        }
        if !in_quotes && (c.is_ascii_alphanumeric() || c == '_' || c == ':') {
            word.push(c);
            continue;
        }
        if word.starts_with("lunar_") {
            out.push(word.clone());
        }
        word.clear();
    }
    out
}

/// Every PromQL string in a dashboard: panel targets' `expr` and templating `query` /
/// `definition` (a string, or an object with a `query` string).
fn queries(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                match (k.as_str(), x) {
                    ("expr" | "query" | "definition", Value::String(s)) => out.push(s.clone()),
                    _ => queries(x, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|x| queries(x, out)),
        _ => {}
    }
}

/// Whether lunard exports a series of that name (histograms as `_bucket`, `_sum`, `_count`).
fn exported(name: &str, series: &BTreeSet<String>) -> bool {
    series.contains(name)
}

fn families() -> BTreeSet<String> {
    let f: BTreeSet<String> = target_daemon::metrics::series_names().into_iter().collect();
    assert!(
        f.len() > 30 && f.contains("lunar_pool_used_bytes"),
        "implausible registry: {f:?}"
    );
    f
}

#[test]
fn grafana_dashboard_queries_only_exported_series() {
    let text = std::fs::read_to_string(deploy("grafana/lunar-dashboard.json"))
        .expect("deploy/grafana/lunar-dashboard.json");
    let dash: Value = serde_json::from_str(&text).expect("dashboard is valid JSON");
    let mut qs = Vec::new();
    queries(&dash, &mut qs);
    assert!(
        qs.len() >= 10,
        "expected the dashboard's queries, got {qs:?}"
    );
    let families = families();
    let used: BTreeSet<String> = qs.iter().flat_map(|q| lunar_names(q)).collect();
    assert!(
        used.len() >= 10,
        "the dashboard should use many lunar series, found {used:?}"
    );
    let unknown: Vec<&String> = used.iter().filter(|n| !exported(n, &families)).collect();
    assert!(
        unknown.is_empty(),
        "the dashboard queries series lunard does not export: {unknown:?}\nexported: {families:?}"
    );
}

#[test]
fn alert_rules_use_only_exported_series() {
    let text = std::fs::read_to_string(deploy("prometheus/lunar-alerts.yml"))
        .expect("deploy/prometheus/lunar-alerts.yml");
    let families = families();
    // Alert names (LunarPoolFull) are not metric names; only the rules' `expr` hold PromQL.
    let yaml: serde_yaml::Value = serde_yaml::from_str(&text).expect("alert rules are YAML");
    let json = serde_json::to_value(&yaml).expect("YAML as JSON");
    let mut qs = Vec::new();
    queries(&json, &mut qs);
    assert!(qs.len() >= 5, "expected the alert expressions, got {qs:?}");
    let used: BTreeSet<String> = qs.iter().flat_map(|q| lunar_names(q)).collect();
    assert!(
        used.len() >= 4,
        "alert rules should use lunar series: {used:?}"
    );
    let unknown: Vec<&String> = used.iter().filter(|n| !exported(n, &families)).collect();
    assert!(
        unknown.is_empty(),
        "alert rules use unknown series: {unknown:?}"
    );
}

#[test]
fn checker_rejects_wrong_names() {
    let families = families();
    let names = lunar_names(
        "sum by (name) (rate(lunar_lun_errors_total{name=~\"lunar_x\"}[5m])) / lunar_clone_job_progress",
    );
    assert_eq!(
        names,
        ["lunar_lun_errors_total", "lunar_clone_job_progress"]
    );
    assert!(exported("lunar_lun_errors_total", &families));
    assert!(exported(
        "lunar_lun_command_duration_seconds_bucket",
        &families
    ));
    assert!(!exported("lunar_clone_job_progress", &families));
    assert!(exported(
        "lunar_pool_metadata_commit_duration_seconds_sum",
        &families
    ));
    assert!(!exported("lunar_pool_used_bytes_bucket", &families));
    assert!(!exported("lunar_lun_command_duration_seconds", &families));
}
