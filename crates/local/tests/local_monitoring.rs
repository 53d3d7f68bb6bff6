//! The exporter in `tusk local` on a real 2-member cluster (127.45.2.x): one
//! postgres_exporter per member on `<member>:9187`, logged in as `_tusk_exporter` with its
//! password from a file (not in its environment). A real scrape (HTTP GET /metrics) of the
//! exporters contains every exporter metric that the Grafana dashboards and the alert rules
//! under deploy/monitoring reference (parsed with the same functions the operator's test
//! uses), and `status` and `down` know the exporters.

mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::{manifest, output, Cluster};
use tusk_config::exporter::{
    dashboard_expressions, exporter_metric_names, promql_metric_names, record_backup_sql,
    rule_expressions,
};

fn monitoring_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../deploy/monitoring")
}

/// Every metric name the dashboards and alert rules reference.
fn referenced_metrics() -> BTreeSet<String> {
    let dir = monitoring_dir();
    let rules = std::fs::read_to_string(dir.join("prometheus-rules.yaml")).unwrap();
    let mut exprs = rule_expressions(&rules).unwrap();
    for entry in std::fs::read_dir(dir.join("dashboards")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "json") {
            exprs.extend(dashboard_expressions(&std::fs::read_to_string(&path).unwrap()).unwrap());
        }
    }
    assert!(!exprs.is_empty());
    exprs
        .iter()
        .flat_map(|(_, expr)| promql_metric_names(expr))
        .collect()
}

fn scrape(url: &str) -> String {
    ureq::get(url)
        .call()
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
        .body_mut()
        .read_to_string()
        .unwrap()
}

/// Sample lines as `(metric name, value)`.
fn samples(exposition: &str) -> Vec<(String, f64)> {
    exposition
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let name_end = l.find(['{', ' '])?;
            let value = l.rsplit(' ').next()?.parse().ok()?;
            Some((l[..name_end].to_owned(), value))
        })
        .collect()
}

fn value(samples: &[(String, f64)], name: &str) -> Option<f64> {
    samples.iter().find(|(n, _)| n == name).map(|(_, v)| *v)
}

fn as_superuser(cluster: &Cluster, sql: &str) -> String {
    let args: Vec<std::ffi::OsString> =
        ["-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-c", sql]
            .into_iter()
            .map(Into::into)
            .collect();
    output(tusk_local::psql_command(&cluster.layout(), None, &args).unwrap())
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

#[test]
fn a_real_scrape_has_every_metric_the_dashboards_and_alerts_use() {
    let cluster = Cluster::new("127.45.2");
    let text = manifest(
        "owl",
        2,
        "  monitoring:\n    pgmonitor:\n      exporter: {}\n",
    );
    let file = cluster.write("owl.yaml", &text);
    cluster.up(&file).expect("up");

    let report = tusk_local::status(&cluster.layout()).unwrap();
    assert!(report.pgbouncer.is_none(), "no PgBouncer in this spec");
    let exporters = report.exporter.expect("status reports the exporters");
    assert_eq!(exporters.len(), 2);
    let (leader, leader_host) = cluster.leader();
    let primary = exporters.iter().find(|e| e.member == leader).unwrap();
    assert_eq!(primary.url, format!("http://{leader_host}:9187/metrics"));
    let table = tusk_local::render_table(&tusk_local::status(&cluster.layout()).unwrap());
    assert!(table.contains(&primary.url), "{table}");

    // The password is in a file, not in the exporter's environment.
    let password = tusk_local::passwords::ensure_service_password(
        &cluster.layout(),
        tusk_config::exporter::ROLE,
    )
    .unwrap();
    for exporter in &exporters {
        let pid = exporter.pid.expect("exporter runs");
        let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
        let environ = String::from_utf8_lossy(&environ);
        assert!(environ.contains("DATA_SOURCE_PASS_FILE="), "{environ}");
        assert!(!environ.contains(&password), "password in the environment");
    }

    // What the backup side records after a backup (tusk_config::exporter::record_backup_sql)
    // is what the backup-age alert reads.
    as_superuser(
        &cluster,
        &record_backup_sql("repo1", "full", "20240101-000000F", 1_700_000_000),
    );

    // Every exporter metric the dashboards and rules use is in a real scrape; the replica
    // rows appear once the replica streams, so wait (bounded) for the set to be complete.
    let referenced = referenced_metrics();
    let produced_by_exporter = exporter_metric_names();
    let wanted: BTreeSet<&String> = referenced
        .iter()
        .filter(|n| produced_by_exporter.contains(*n))
        .collect();
    assert!(
        wanted.len() >= 8,
        "the dashboards and rules use hardly any exporter metric: {wanted:?}"
    );
    let start = Instant::now();
    let (missing, primary_samples) = loop {
        let primary_samples = samples(&scrape(&primary.url));
        let mut scraped: BTreeSet<String> =
            primary_samples.iter().map(|(n, _)| n.clone()).collect();
        for other in exporters.iter().filter(|e| e.member != leader) {
            scraped.extend(samples(&scrape(&other.url)).into_iter().map(|(n, _)| n));
        }
        let missing: Vec<&&String> = wanted.iter().filter(|n| !scraped.contains(**n)).collect();
        if missing.is_empty() || start.elapsed() > Duration::from_secs(60) {
            break (
                missing
                    .into_iter()
                    .map(|n| (*n).clone())
                    .collect::<Vec<_>>(),
                primary_samples,
            );
        }
        std::thread::sleep(Duration::from_secs(1));
    };
    assert!(missing.is_empty(), "not in a real scrape: {missing:?}");

    // The values are real: the exporter is connected, sees the primary and the backup.
    assert_eq!(value(&primary_samples, "pg_up"), Some(1.0));
    assert_eq!(
        value(&primary_samples, "tusk_pg_instance_is_primary"),
        Some(1.0)
    );
    let max = as_superuser(&cluster, "SHOW max_connections");
    assert_eq!(
        value(&primary_samples, "tusk_pg_connections_max"),
        Some(max.parse().unwrap())
    );
    assert!(value(&primary_samples, "tusk_pg_backup_age_seconds").unwrap() > 0.0);

    // The exporter role has pg_monitor and nothing more.
    assert_eq!(
        as_superuser(
            &cluster,
            "SELECT rolsuper, pg_has_role('_tusk_exporter', 'pg_monitor', 'MEMBER') \
             FROM pg_roles WHERE rolname = '_tusk_exporter'"
        ),
        "f|t"
    );

    // An exporter that died is started again by `up`; when another process holds its
    // address, `up` says so by name and the running cluster is left as it was.
    let replica = exporters.iter().find(|e| e.member != leader).unwrap();
    let address = replica
        .url
        .trim_start_matches("http://")
        .trim_end_matches("/metrics")
        .to_owned();
    let old_pid = replica.pid.unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(old_pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    // The killed exporter's socket closes as it exits.
    let start = Instant::now();
    let squatter = loop {
        match std::net::TcpListener::bind(&address) {
            Ok(listener) => break listener,
            Err(e) if start.elapsed() > Duration::from_secs(10) => panic!("{address}: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    };
    let err = cluster
        .up(&file)
        .expect_err("up with the exporter's address taken");
    assert!(
        matches!(&err, tusk_local::Error::PortInUse { what, address: a } if what == "postgres_exporter" && *a == address),
        "{err}"
    );
    assert_eq!(cluster.leader().0, leader, "the cluster kept its leader");
    drop(squatter);
    cluster.up(&file).expect("up once the address is free");
    let restarted = tusk_local::status(&cluster.layout())
        .unwrap()
        .exporter
        .unwrap();
    let new_pid = restarted
        .iter()
        .find(|e| e.member == replica.member)
        .and_then(|e| e.pid)
        .expect("the replica's exporter runs again");
    assert_ne!(new_pid, old_pid);
    assert!(!scrape(&replica.url).is_empty());

    // down stops the exporters.
    let exporters = restarted;
    let pids: Vec<u32> = exporters.iter().filter_map(|e| e.pid).collect();
    tusk_local::down(&cluster.layout(), false, &mut |_| {}).unwrap();
    for pid in pids {
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists()
                || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .is_ok_and(|s| s.contains(") Z")),
            "exporter {pid} still runs after down"
        );
    }
}
