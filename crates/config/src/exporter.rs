//! postgres_exporter's side of monitoring: the curated query set (`queries/queries.yaml`,
//! the `--extend.query-path` format), the metric names it and the exporter's built-ins
//! produce, a PromQL metric-name extractor and the expressions of the dashboards and alert
//! rules (as text) for checking them against those names, the exporter's environment, and the SQL for its least-privilege role and for the
//! backup-status table the backup side fills. Shared by the operator (ConfigMap, sidecar env)
//! and `tusk local` (files, process env). Pure; no I/O.

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;
use tusk_api::naming::{EXPORTER_USER, SUPERUSER};

use crate::pgbouncer::service_role_sql;
use crate::users::{quote_ident, quote_literal};

/// The curated queries, as shipped in the `<c>-exporter-queries-config` ConfigMap.
pub const QUERIES_YAML: &str = include_str!("../queries/queries.yaml");
/// File name of [`QUERIES_YAML`] in the exporter's configuration directory.
pub const QUERIES_FILE: &str = "queries.yaml";
/// The role the exporter logs in as.
pub const ROLE: &str = EXPORTER_USER;
/// Database the exporter connects to (and where the backup-status table lives).
pub const DATABASE: &str = "postgres";
/// Schema and table the backup side writes and [`QUERIES_YAML`]'s `tusk_pg_backup` reads.
pub const MONITOR_SCHEMA: &str = "_tusk_monitor";
pub const BACKUP_STATUS_TABLE: &str = "_tusk_monitor.backup_status";

/// Metrics postgres_exporter (0.11+, the Debian package and the image) produces by itself
/// that the dashboards and rules may use. Kept short on purpose: each one is a promise the
/// real-scrape test checks.
pub const BUILTIN_METRICS: &[&str] = &["pg_up", "pg_exporter_last_scrape_error"];

/// One query of the `queries.yaml` format.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct Query {
    pub query: String,
    /// Each entry is a one-key map: column -> its usage.
    pub metrics: Vec<BTreeMap<String, Column>>,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct Column {
    /// `LABEL`, `GAUGE`, `COUNTER`, `DISCARD`, ...
    pub usage: String,
    pub description: String,
}

/// `queries.yaml` parsed: query name -> query.
pub fn parse_queries(yaml: &str) -> Result<BTreeMap<String, Query>, serde_yaml::Error> {
    serde_yaml::from_str(yaml)
}

/// The curated queries.
pub fn queries() -> BTreeMap<String, Query> {
    parse_queries(QUERIES_YAML).expect("queries.yaml is checked by the crate's tests")
}

/// Metric names `queries` produce: `<query>_<column>` for every non-LABEL, non-DISCARD
/// column, as postgres_exporter names them.
pub fn query_metric_names(queries: &BTreeMap<String, Query>) -> BTreeSet<String> {
    queries
        .iter()
        .flat_map(|(name, q)| {
            q.metrics.iter().flat_map(move |m| {
                m.iter()
                    .filter(|(_, c)| !matches!(c.usage.as_str(), "LABEL" | "DISCARD"))
                    .map(move |(column, _)| format!("{name}_{column}"))
            })
        })
        .collect()
}

/// Every metric name an exporter with the curated queries exposes that Tusk relies on.
pub fn exporter_metric_names() -> BTreeSet<String> {
    let mut names = query_metric_names(&queries());
    names.extend(BUILTIN_METRICS.iter().map(|s| (*s).to_owned()));
    names
}

/// PromQL keywords, functions and modifiers that look like identifiers but are not metrics.
const PROMQL_WORDS: &[&str] = &[
    "and",
    "or",
    "unless",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "offset",
    "bool",
    "sum",
    "min",
    "max",
    "avg",
    "count",
    "stddev",
    "stdvar",
    "topk",
    "bottomk",
    "quantile",
    "count_values",
    "group",
    "abs",
    "absent",
    "absent_over_time",
    "ceil",
    "changes",
    "clamp",
    "clamp_max",
    "clamp_min",
    "delta",
    "deriv",
    "exp",
    "floor",
    "histogram_quantile",
    "idelta",
    "increase",
    "irate",
    "label_replace",
    "label_join",
    "ln",
    "log2",
    "log10",
    "predict_linear",
    "rate",
    "resets",
    "round",
    "scalar",
    "sgn",
    "sort",
    "sort_desc",
    "sqrt",
    "time",
    "timestamp",
    "vector",
    "avg_over_time",
    "min_over_time",
    "max_over_time",
    "sum_over_time",
    "count_over_time",
    "last_over_time",
    "quantile_over_time",
    "stddev_over_time",
    "present_over_time",
    "inf",
    "nan",
];

/// Metric names a PromQL expression selects. Skips string literals, label matchers
/// (`{...}`), grouping lists (`by (...)`), range/offset durations and numbers, so what is
/// left are the selectors' metric names. Also accepts Grafana's `$__rate_interval`-style
/// variables (skipped as non-identifiers).
pub fn promql_metric_names(expr: &str) -> BTreeSet<String> {
    let chars: Vec<char> = expr.chars().collect();
    let mut names = BTreeSet::new();
    let mut i = 0;
    // After `by`/`without`/`on`/`ignoring`/`group_*`, the next `( ... )` holds labels.
    let mut label_list_next = false;
    while i < chars.len() {
        let c = chars[i];
        if c == '"' || c == '\'' || c == '`' {
            i = skip_string(&chars, i);
        } else if c == '{' || c == '[' {
            let close = if c == '{' { '}' } else { ']' };
            while i < chars.len() && chars[i] != close {
                if chars[i] == '"' {
                    i = skip_string(&chars, i);
                } else {
                    i += 1;
                }
            }
            i += 1;
        } else if c == '(' && label_list_next {
            while i < chars.len() && chars[i] != ')' {
                i += 1;
            }
            i += 1;
            label_list_next = false;
        } else if c == '$' || c.is_ascii_digit() {
            // A Grafana variable or a number/duration (`5m`, `1e3`): one token.
            i += 1;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
            {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let lower = word.to_ascii_lowercase();
            if matches!(
                lower.as_str(),
                "by" | "without" | "on" | "ignoring" | "group_left" | "group_right"
            ) {
                label_list_next = true;
                continue;
            }
            let mut j = i;
            while j < chars.len() && chars[j].is_whitespace() {
                j += 1;
            }
            let is_call = j < chars.len() && chars[j] == '(';
            if !is_call && !PROMQL_WORDS.contains(&lower.as_str()) {
                names.insert(word);
            }
            label_list_next = false;
        } else {
            i += 1;
        }
    }
    names
}

/// `(alert or record name, expression)` of every rule in a PrometheusRule manifest
/// (`deploy/monitoring/prometheus-rules.yaml`); its `spec` is a plain rules file.
pub fn rule_expressions(prometheus_rule_yaml: &str) -> Result<Vec<(String, String)>, String> {
    let rule: serde_yaml::Value =
        serde_yaml::from_str(prometheus_rule_yaml).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for group in rule["spec"]["groups"]
        .as_sequence()
        .ok_or("spec.groups: missing")?
    {
        for rule in group["rules"]
            .as_sequence()
            .ok_or("groups[].rules: missing")?
        {
            let name = rule["alert"]
                .as_str()
                .or(rule["record"].as_str())
                .ok_or("rules[]: neither alert nor record")?;
            let expr = rule["expr"].as_str().ok_or("rules[].expr: missing")?;
            out.push((name.to_owned(), expr.to_owned()));
        }
    }
    Ok(out)
}

/// `(panel title or $variable, PromQL)` of every panel target and templating query of a
/// Grafana dashboard. For Grafana's `label_values(metric, label)` only the metric is PromQL.
pub fn dashboard_expressions(dashboard_json: &str) -> Result<Vec<(String, String)>, String> {
    let dashboard: serde_json::Value =
        serde_json::from_str(dashboard_json).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for panel in dashboard["panels"].as_array().ok_or("panels: missing")? {
        for target in panel["targets"]
            .as_array()
            .ok_or("panels[].targets: missing")?
        {
            let expr = target["expr"].as_str().ok_or("targets[].expr: missing")?;
            out.push((panel["title"].to_string(), expr.to_owned()));
        }
    }
    for variable in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if let Some(query) = variable["query"]["query"].as_str() {
            let metric = query
                .strip_prefix("label_values(")
                .and_then(|rest| rest.split(',').next())
                .unwrap_or(query);
            out.push((format!("${}", variable["name"]), metric.to_owned()));
        }
    }
    Ok(out)
}

fn skip_string(chars: &[char], start: usize) -> usize {
    let quote = chars[start];
    let mut i = start + 1;
    while i < chars.len() && chars[i] != quote {
        if chars[i] == '\\' {
            i += 1;
        }
        i += 1;
    }
    i + 1
}

/// How the exporter reaches PostgreSQL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Connection {
    pub host: String,
    pub port: u16,
    /// libpq `sslmode`.
    pub sslmode: String,
    /// CA to verify the server with (`verify-ca`/`verify-full`).
    pub sslrootcert: Option<String>,
}

/// The exporter's environment, except the password, which the caller adds as
/// `DATA_SOURCE_PASS_FILE` (a file projected from a Secret in a pod, a 0600 file locally).
pub fn exporter_env(connection: &Connection) -> BTreeMap<String, String> {
    let mut params = vec![format!("sslmode={}", connection.sslmode)];
    if let Some(ca) = &connection.sslrootcert {
        params.push(format!("sslrootcert={ca}"));
    }
    if connection.sslmode == "verify-ca" {
        // The exporter's lib/pq (1.10.5 and later) sends the host as TLS SNI and then checks
        // the certificate against that name even in verify-ca mode: in a pod, `localhost`
        // against a certificate naming the Services failed every scrape (pg_up 0). Without
        // SNI it verifies the chain only, as verify-ca means.
        params.push("sslsni=0".to_owned());
    }
    BTreeMap::from([
        (
            "DATA_SOURCE_URI".to_owned(),
            format!(
                "{}:{}/{DATABASE}?{}",
                connection.host,
                connection.port,
                params.join("&")
            ),
        ),
        ("DATA_SOURCE_USER".to_owned(), ROLE.to_owned()),
    ])
}

/// The exporter's arguments: the curated queries at `queries_path`, metrics on `listen`
/// (`:9187` in a pod), and a `--web.config.file` enabling TLS when one is given.
pub fn exporter_args(queries_path: &str, listen: &str, web_config: Option<&str>) -> Vec<String> {
    let mut args = vec![
        format!("--extend.query-path={queries_path}"),
        format!("--web.listen-address={listen}"),
    ];
    if let Some(path) = web_config {
        args.push(format!("--web.config.file={path}"));
    }
    args
}

/// The exporter's web configuration serving metrics over TLS with the given files.
pub fn web_config_yaml(cert_file: &str, key_file: &str) -> String {
    format!("tls_server_config:\n  cert_file: {cert_file}\n  key_file: {key_file}\n")
}

/// SQL creating or updating [`ROLE`]: LOGIN, `pg_monitor` (which covers `pg_ls_waldir`,
/// `pg_database_size` of every database and every statistics view the queries read), and
/// read access to the backup-status table. Run once per cluster as the superuser on the
/// primary, in [`DATABASE`]; `password_verifier` should be a SCRAM verifier. Idempotent.
pub fn role_sql(password_verifier: &str) -> Vec<String> {
    let role = quote_ident(ROLE);
    let schema = quote_ident(MONITOR_SCHEMA);
    let mut sql = service_role_sql(ROLE, password_verifier);
    sql.push(format!("GRANT pg_monitor TO {role}"));
    sql.extend([
        format!(
            "CREATE SCHEMA IF NOT EXISTS {schema} AUTHORIZATION {}",
            quote_ident(SUPERUSER)
        ),
        format!("REVOKE ALL ON SCHEMA {schema} FROM PUBLIC"),
        format!("GRANT USAGE ON SCHEMA {schema} TO {role}"),
        format!(
            "CREATE TABLE IF NOT EXISTS {BACKUP_STATUS_TABLE} (\
             repo pg_catalog.text NOT NULL, \
             backup_type pg_catalog.text NOT NULL CHECK (backup_type IN ('full', 'diff', 'incr')), \
             label pg_catalog.text NOT NULL, \
             finished_at pg_catalog.timestamptz NOT NULL, \
             PRIMARY KEY (repo, backup_type))"
        ),
        format!("REVOKE ALL ON {BACKUP_STATUS_TABLE} FROM PUBLIC"),
        format!("GRANT SELECT ON {BACKUP_STATUS_TABLE} TO {role}"),
    ]);
    sql
}

/// SQL the backup side runs (as the superuser, on the primary, in [`DATABASE`]) after a
/// successful pgBackRest backup: `repo` is `repo1`..`repo4`, `backup_type` is pgBackRest's
/// `full` | `diff` | `incr`, `label` the backup's label and `finished_unix` its stop time
/// (pgBackRest's `timestamp.stop`). A row only moves forward, so a late or repeated report of
/// an older backup cannot make the last backup look older than it is.
pub fn record_backup_sql(repo: &str, backup_type: &str, label: &str, finished_unix: i64) -> String {
    format!(
        "INSERT INTO {BACKUP_STATUS_TABLE} (repo, backup_type, label, finished_at) \
         VALUES ({}, {}, {}, pg_catalog.to_timestamp({finished_unix})) \
         ON CONFLICT (repo, backup_type) DO UPDATE SET label = EXCLUDED.label, \
         finished_at = EXCLUDED.finished_at \
         WHERE {BACKUP_STATUS_TABLE}.finished_at < EXCLUDED.finished_at",
        quote_literal(repo),
        quote_literal(backup_type),
        quote_literal(label),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn curated_queries_parse_and_name_their_metrics_like_the_exporter() {
        let names = query_metric_names(&queries());
        for expected in [
            "tusk_pg_connections_used",
            "tusk_pg_connections_max",
            "tusk_pg_database_size_bytes",
            "tusk_pg_replication_lag_bytes",
            "tusk_pg_replication_lag_seconds",
            "tusk_pg_wal_dir_bytes",
            "tusk_pg_archiver_failed_count",
            "tusk_pg_archiver_last_archive_age_seconds",
            "tusk_pg_backup_age_seconds",
        ] {
            assert!(
                names.contains(expected),
                "{expected} missing from {names:?}"
            );
        }
        // Labels are not metrics.
        assert!(!names.contains("tusk_pg_database_datname"));
        assert!(!names.contains("tusk_pg_replication_replica"));
    }

    #[test]
    fn every_query_column_has_a_known_usage_and_a_description() {
        for (name, q) in queries() {
            assert!(q.query.to_uppercase().contains("SELECT"), "{name}");
            for column in q.metrics.iter().flat_map(|m| m.iter()) {
                assert!(
                    ["LABEL", "GAUGE", "COUNTER"].contains(&column.1.usage.as_str()),
                    "{name}.{}",
                    column.0
                );
                assert!(!column.1.description.is_empty(), "{name}.{}", column.0);
            }
        }
    }

    #[test]
    fn promql_names_skip_functions_labels_and_durations() {
        let names = promql_metric_names(
            r#"sum by (pg_cluster, replica) (rate(tusk_pg_archiver_failed_count{job="x", a=~"b|c"}[5m] offset 1h)) / on (pg_cluster) group_left max(tusk_pg_connections_max) > bool 0.8 and absent(pg_up) or vector(1) unless time() - foo:bar_rule > $__interval"#,
        );
        let expected: BTreeSet<String> = [
            "tusk_pg_archiver_failed_count",
            "tusk_pg_connections_max",
            "pg_up",
            "foo:bar_rule",
        ]
        .into_iter()
        .map(str::to_owned)
        .collect();
        assert_eq!(names, expected);
    }

    #[test]
    fn rule_and_dashboard_expressions_are_found_with_where_they_are() {
        let rules = rule_expressions(
            "kind: PrometheusRule\nspec:\n  groups:\n    - name: g\n      rules:\n        - {alert: A, expr: 'pg_up == 0'}\n        - {record: 'r:x', expr: 'sum(tusk_pg_wal_dir_bytes)'}\n",
        )
        .unwrap();
        assert_eq!(
            rules,
            [
                ("A".to_owned(), "pg_up == 0".to_owned()),
                ("r:x".to_owned(), "sum(tusk_pg_wal_dir_bytes)".to_owned())
            ]
        );
        let panels = dashboard_expressions(
            r#"{"panels": [{"title": "T", "targets": [{"expr": "up"}]}],
                "templating": {"list": [{"name": "c", "query": {"query": "label_values(pg_up, job)"}}]}}"#,
        )
        .unwrap();
        assert_eq!(panels[0].1, "up");
        assert_eq!(panels[1], ("$\"c\"".to_owned(), "pg_up".to_owned()));
        assert!(rule_expressions("spec: {}").is_err());
    }

    #[test]
    fn env_connects_as_the_exporter_role_with_tls() {
        let env = exporter_env(&Connection {
            host: "127.0.0.1".into(),
            port: 5432,
            sslmode: "verify-ca".into(),
            sslrootcert: Some("/tls/ca.crt".into()),
        });
        assert_eq!(
            env["DATA_SOURCE_URI"],
            "127.0.0.1:5432/postgres?sslmode=verify-ca&sslrootcert=/tls/ca.crt&sslsni=0"
        );
        assert_eq!(env["DATA_SOURCE_USER"], "_tusk_exporter");
        assert!(!env.contains_key("DATA_SOURCE_NAME"));
    }

    #[test]
    fn backup_record_quotes_and_only_moves_forward() {
        let sql = record_backup_sql("repo1", "full", "x'; DROP TABLE y; --", 1_700_000_000);
        assert!(sql.contains("'x''; DROP TABLE y; --'"), "{sql}");
        assert!(sql.contains("finished_at < EXCLUDED.finished_at"), "{sql}");
    }
}
