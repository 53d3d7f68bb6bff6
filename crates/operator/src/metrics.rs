//! The operator's Prometheus metrics (prometheus-client): reconciles by result, errors by
//! reason (the error category, a small fixed set, so label cardinality stays bounded), and
//! reconcile duration. Served as text by `http`. No I/O here.

use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, String)>;

pub struct Metrics {
    registry: Mutex<Registry>,
    reconciles: Family<Labels, Counter>,
    errors: Family<Labels, Counter>,
    duration: Histogram,
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
        Self {
            registry: Mutex::new(registry),
            reconciles,
            errors,
            duration,
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
}
