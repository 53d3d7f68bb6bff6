//! `deploy/monitoring`: every metric the Grafana dashboards and the PrometheusRule use is
//! produced by something Tusk ships (the curated exporter queries, the exporter built-ins
//! Tusk lists, the operator's metrics module) or by the kubelet for volume space; the rules
//! pass the real `promtool check rules` and their unit tests (`promtool test rules`).
//! promtool comes from Debian's `prometheus` package.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use tusk_config::exporter::{
    dashboard_expressions, exporter_metric_names, promql_metric_names, rule_expressions,
};
use tusk_operator::metrics::{ClusterObservation, Metrics};

/// Metrics that only the kubelet has (free space of a PVC); not part of an exporter scrape.
const KUBELET_METRICS: &[&str] = &[
    "kubelet_volume_stats_available_bytes",
    "kubelet_volume_stats_capacity_bytes",
];

fn monitoring_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../deploy/monitoring")
}

/// The rule groups of the PrometheusRule (`spec`), i.e. a plain Prometheus rules file.
fn rule_groups() -> serde_yaml::Value {
    let text = std::fs::read_to_string(monitoring_dir().join("prometheus-rules.yaml")).unwrap();
    let rule: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    assert_eq!(rule["kind"], "PrometheusRule");
    rule["spec"].clone()
}

/// `(where, expression)` of every rule.
fn rule_exprs() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(monitoring_dir().join("prometheus-rules.yaml")).unwrap();
    rule_expressions(&text).unwrap()
}

/// `(where, expression)` of every panel target and templating query of every dashboard.
fn dashboard_exprs() -> Vec<(String, String)> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(monitoring_dir().join("dashboards"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    paths.sort();
    assert!(!paths.is_empty());
    let mut out = Vec::new();
    for path in paths {
        let file = path.file_name().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(&path).unwrap();
        for (place, expr) in dashboard_expressions(&text).unwrap() {
            out.push((format!("{file}: {place}"), expr));
        }
    }
    out
}

/// Series names the operator exposes, from its real exposition after one reconcile of each
/// outcome and one cluster observation (families without samples are not printed): every
/// `# TYPE` family with the suffixes OpenMetrics gives its kind.
fn operator_metric_names() -> BTreeSet<String> {
    let metrics = Metrics::new();
    metrics.observe_reconcile(None, Duration::from_millis(5));
    metrics.observe_reconcile(Some("ApplyObjectFailed"), Duration::from_millis(5));
    metrics.observe_cluster(&ClusterObservation {
        namespace: "db",
        name: "hippo",
        instances_desired: 2,
        instances_ready: 2,
        primary: Some("hippo-a-wm5p"),
        last_backup_unix: Some(1_700_000_000.0),
    });
    let text = metrics.render();
    let mut names = BTreeSet::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let (name, kind) = rest.split_once(' ').unwrap();
        match kind {
            "counter" => {
                names.insert(format!("{name}_total"));
            }
            "histogram" => {
                for suffix in ["bucket", "sum", "count"] {
                    names.insert(format!("{name}_{suffix}"));
                }
            }
            _ => {
                names.insert(name.to_owned());
            }
        }
    }
    names
}

#[test]
fn every_metric_in_dashboards_and_rules_has_a_producer() {
    let exporter = exporter_metric_names();
    let operator = operator_metric_names();
    assert!(operator.contains("tusk_reconciles_total"), "{operator:?}");
    assert!(
        operator.contains("tusk_cluster_instances_ready"),
        "{operator:?}"
    );
    let mut used = BTreeSet::new();
    for (place, expr) in rule_exprs().into_iter().chain(dashboard_exprs()) {
        let names = promql_metric_names(&expr);
        assert!(!names.is_empty(), "{place}: no metric in {expr}");
        for name in names {
            assert!(
                exporter.contains(&name)
                    || operator.contains(&name)
                    || KUBELET_METRICS.contains(&name.as_str()),
                "{place}: {name} is produced by nothing Tusk ships"
            );
            used.insert(name);
        }
    }
    // The issue's alerts and panels read these; a rename must show up here.
    for needed in [
        "tusk_pg_connections_used",
        "tusk_pg_database_size_bytes",
        "tusk_pg_replication_lag_bytes",
        "tusk_pg_replication_lag_seconds",
        "tusk_pg_wal_dir_bytes",
        "tusk_pg_archiver_failed_count",
        "tusk_pg_backup_age_seconds",
        "tusk_cluster_primary_ready",
        "tusk_cluster_primary_changes_total",
    ] {
        assert!(used.contains(needed), "{needed} unused");
    }
}

#[test]
fn every_issue_alert_exists() {
    let alerts: BTreeSet<String> = rule_exprs().into_iter().map(|(name, _)| name).collect();
    for alert in [
        "PostgresPrimaryDown",
        "PostgresReplicationLagHigh",
        "PostgresArchiveFailing",
        "PostgresVolumeFilling",
        "PostgresBackupTooOld",
        "PostgresConnectionsSaturated",
    ] {
        assert!(alerts.contains(alert), "{alert} missing from {alerts:?}");
    }
}

/// A scratch directory removed on drop.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn promtool(dir: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run promtool (apt-get install prometheus)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn promtool_checks_and_unit_tests_pass() {
    let dir = Scratch(std::env::temp_dir().join(format!("tusk-promtool-{}", std::process::id())));
    std::fs::create_dir_all(&dir.0).unwrap();
    std::fs::write(
        dir.0.join("rules.yaml"),
        serde_yaml::to_string(&rule_groups()).unwrap(),
    )
    .unwrap();
    std::fs::copy(
        monitoring_dir().join("tests/alerts-test.yaml"),
        dir.0.join("alerts-test.yaml"),
    )
    .unwrap();

    let (ok, text) = promtool(&dir.0, &["check", "rules", "rules.yaml"]);
    assert!(ok, "{text}");
    assert!(text.contains("SUCCESS"), "{text}");

    let (ok, text) = promtool(&dir.0, &["test", "rules", "alerts-test.yaml"]);
    assert!(ok, "{text}");

    // The unit tests can fail: a rule file whose primary-down alert never fires does.
    let broken = std::fs::read_to_string(dir.0.join("rules.yaml"))
        .unwrap()
        .replace("== 0", "== 42");
    std::fs::write(dir.0.join("rules.yaml"), broken).unwrap();
    let (ok, text) = promtool(&dir.0, &["test", "rules", "alerts-test.yaml"]);
    assert!(!ok, "{text}");
}
