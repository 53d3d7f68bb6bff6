//! The operator's Prometheus metrics (prometheus-client): reconciles by result, errors by
//! reason (the error category, a small fixed set, so label cardinality stays bounded), and
//! reconcile duration; per cluster (label `pg_cluster` = `<namespace>/<name>`, the label the
//! shipped PodMonitor gives the exporters' series too): instances desired and ready, whether
//! a primary is ready, primary changes, and the finish time of the last successful backup.
//! Served as text by `http`. No I/O here.

use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, String)>;

pub struct Metrics {
    registry: Mutex<Registry>,
    reconciles: Family<Labels, Counter>,
    errors: Family<Labels, Counter>,
    duration: Histogram,
    cluster: ClusterMetrics,
    /// Last primary seen per cluster, to count changes.
    primaries: Mutex<std::collections::BTreeMap<String, String>>,
}

/// Per-cluster gauges and counters.
#[derive(Default)]
struct ClusterMetrics {
    instances_desired: Family<Labels, Gauge>,
    instances_ready: Family<Labels, Gauge>,
    primary_ready: Family<Labels, Gauge>,
    primary_changes: Family<Labels, Counter>,
    last_backup: Family<Labels, Gauge<f64, std::sync::atomic::AtomicU64>>,
}

/// What the status step saw of one cluster.
#[derive(Clone, Debug, PartialEq)]
pub struct ClusterObservation<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    pub instances_desired: u32,
    pub instances_ready: u32,
    /// Instance Patroni labelled `master`, if any.
    pub primary: Option<&'a str>,
    /// Unix time the last successful backup finished, when there is one.
    pub last_backup_unix: Option<f64>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("tusk");
        let reconciles = Family::<Labels, Counter>::default();
        let errors = Family::<Labels, Counter>::default();
        // 5 ms .. ~20 s: a reconcile is a handful of API calls.
        let duration = Histogram::new(exponential_buckets(0.005, 2.0, 13));
        registry.register(
            "reconciles",
            "Reconciles of PostgresClusters, by result",
            reconciles.clone(),
        );
        registry.register(
            "reconcile_errors",
            "Failed reconciles, by error reason",
            errors.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Duration of one reconcile",
            duration.clone(),
        );
        let cluster = ClusterMetrics::default();
        registry.register(
            "cluster_instances_desired",
            "PostgreSQL instances the cluster's spec asks for",
            cluster.instances_desired.clone(),
        );
        registry.register(
            "cluster_instances_ready",
            "PostgreSQL instances whose pod is ready",
            cluster.instances_ready.clone(),
        );
        registry.register(
            "cluster_primary_ready",
            "1 when an instance is labelled primary by Patroni, else 0",
            cluster.primary_ready.clone(),
        );
        registry.register(
            "cluster_primary_changes",
            "Times the primary moved to another instance, as seen by the operator",
            cluster.primary_changes.clone(),
        );
        registry.register(
            "cluster_last_backup_timestamp_seconds",
            "When the last successful backup finished (Unix time)",
            cluster.last_backup.clone(),
        );
        Self {
            registry: Mutex::new(registry),
            reconciles,
            errors,
            duration,
            cluster,
            primaries: Mutex::new(std::collections::BTreeMap::new()),
        }
    }

    /// Records what one reconcile's status step saw. A primary change is counted when the
    /// primary differs from the last one seen for the cluster (not when it first appears).
    pub fn observe_cluster(&self, seen: &ClusterObservation<'_>) {
        let key = format!("{}/{}", seen.namespace, seen.name);
        let labels = vec![("pg_cluster", key.clone())];
        let c = &self.cluster;
        c.instances_desired
            .get_or_create(&labels)
            .set(seen.instances_desired.into());
        c.instances_ready
            .get_or_create(&labels)
            .set(seen.instances_ready.into());
        c.primary_ready
            .get_or_create(&labels)
            .set(i64::from(seen.primary.is_some()));
        // Touch the counter so the series exists (at 0) before the first change.
        let changes = c.primary_changes.get_or_create(&labels);
        if let Some(primary) = seen.primary {
            let mut primaries = self.primaries.lock().unwrap_or_else(|p| p.into_inner());
            let previous = primaries.insert(key, primary.to_owned());
            if previous.is_some_and(|p| p != primary) {
                changes.inc();
            }
        }
        if let Some(at) = seen.last_backup_unix {
            c.last_backup.get_or_create(&labels).set(at);
        }
    }

    /// Records one reconcile; `error` is the error's reason when it failed.
    pub fn observe_reconcile(&self, error: Option<&str>, took: Duration) {
        let result = if error.is_some() { "error" } else { "success" };
        self.reconciles
            .get_or_create(&vec![("result", result.to_owned())])
            .inc();
        if let Some(reason) = error {
            self.errors
                .get_or_create(&vec![("reason", reason.to_owned())])
                .inc();
        }
        self.duration.observe(took.as_secs_f64());
    }

    /// OpenMetrics text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let registry = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        encode(&mut out, &registry).expect("writing to a String cannot fail");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_results_and_reasons() {
        let m = Metrics::new();
        m.observe_reconcile(None, Duration::from_millis(3));
        m.observe_reconcile(Some("ApplyObjectFailed"), Duration::from_millis(3));
        m.observe_reconcile(Some("ApplyObjectFailed"), Duration::from_millis(3));
        let text = m.render();
        assert!(
            text.contains(r#"tusk_reconciles_total{result="success"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"tusk_reconciles_total{result="error"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(r#"tusk_reconcile_errors_total{reason="ApplyObjectFailed"} 2"#),
            "{text}"
        );
        assert!(
            text.contains("tusk_reconcile_duration_seconds_count 3"),
            "{text}"
        );
    }

    #[test]
    fn cluster_gauges_and_primary_changes() {
        let m = Metrics::new();
        let mut seen = ClusterObservation {
            namespace: "db",
            name: "hippo",
            instances_desired: 3,
            instances_ready: 2,
            primary: Some("hippo-a-wm5p"),
            last_backup_unix: Some(1_700_000_000.0),
        };
        m.observe_cluster(&seen);
        m.observe_cluster(&seen);
        seen.primary = Some("hippo-a-x2k7");
        m.observe_cluster(&seen);
        seen.primary = None;
        seen.instances_ready = 1;
        m.observe_cluster(&seen);
        let text = m.render();
        for line in [
            r#"tusk_cluster_instances_desired{pg_cluster="db/hippo"} 3"#,
            r#"tusk_cluster_instances_ready{pg_cluster="db/hippo"} 1"#,
            r#"tusk_cluster_primary_ready{pg_cluster="db/hippo"} 0"#,
            r#"tusk_cluster_primary_changes_total{pg_cluster="db/hippo"} 1"#,
            r#"tusk_cluster_last_backup_timestamp_seconds{pg_cluster="db/hippo"} 1700000000.0"#,
        ] {
            assert!(text.contains(line), "{line} not in {text}");
        }
    }
}
