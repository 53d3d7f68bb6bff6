//! The pods benchmark's backup part: a pgbench database of `--scale` ([`SCALE`] by default:
//! about 1 GB of table data, as `tusk-backup-bench`'s default) in a 1-instance cluster with a `volume` repo,
//! then, in the same run:
//!
//! - pods: a full backup through the `tusk.rs/pgbackrest-backup` annotation (pgBackRest's own
//!   start -> stop, and annotation -> `status.pgbackrest.manualBackup` finished), a clone of
//!   that cluster (`spec.dataSource.postgresCluster`: the restore Job, which restores and
//!   replays to the end of the archive, and apply -> Ready), and raw `pg_basebackup` of the
//!   same primary inside its pod (TLS, the replication certificate, onto the data volume);
//! - `tusk local`: the same database, a full backup (`tusk local backup`), `pgbackrest
//!   restore` into an empty directory, and `pg_basebackup` over TLS.
//!
//! Prints figures, asserts nothing.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use k8s_openapi::jiff::Timestamp;
use kube::Client;
use serde_json::Value;

use super::ha;
use super::kube_support::eventually;
use super::node_support::{wait_condition, Namespace, Node};
use super::pgbackrest_support::{
    annotate, apply, leader, pgbackrest_info, status, superuser_sql, wait_job_succeeded,
};

/// Default pgbench scale: 70 is about 1 GB of table data (1.1 GB with indexes).
pub const SCALE: u32 = 70;
const LIMIT: Duration = Duration::from_secs(1800);
const BIN: &str = "/usr/lib/postgresql/15/bin";

/// One trial's backup figures, in seconds (`megabytes` of all databases).
#[derive(Default, Clone)]
pub struct BackupFigures {
    pub megabytes: f64,
    /// pgBackRest's own start -> stop of the full backup.
    pub backup: f64,
    /// Pods only: from the annotation to `manualBackup.finished` in the status.
    pub backup_requested: f64,
    /// Pods: the restore Job's start -> completion (restore + replay to the archive's end);
    /// local: `pgbackrest restore` into an empty directory.
    pub restore: f64,
    /// Pods only: apply of the clone -> Ready.
    pub clone_ready: f64,
    pub basebackup: f64,
}

fn manifest(name: &str, namespace: &str, data_source: &str) -> String {
    let volume = "{accessModes: [ReadWriteOnce], resources: {requests: {storage: 8Gi}}}";
    format!(
        r#"apiVersion: tusk.rs/v1beta1
kind: PostgresCluster
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  postgresVersion: 15
  instances:
    - name: instance1
      dataVolumeClaimSpec: {volume}
  backups:
    pgbackrest:
      manual: {{repoName: repo1, options: [--type=full]}}
      repos:
        - name: repo1
          volume: {{volumeClaimSpec: {volume}}}
{data_source}
"#
    )
}

/// Seconds between two RFC 3339 times of a Job's status (1 s resolution).
fn between(start: &Value, end: &Value) -> f64 {
    let parse = |v: &Value| v.as_str().and_then(|s| s.parse::<Timestamp>().ok());
    match (parse(start), parse(end)) {
        (Some(a), Some(b)) => (b.as_millisecond() - a.as_millisecond()) as f64 / 1000.0,
        _ => f64::NAN,
    }
}

/// Runs `script` with bash in the database container of `pod`; its stdout, trimmed.
fn in_pod(node: &Node, namespace: &str, pod: &str, script: &str) -> String {
    node.kubectl_ok(
        &[
            "exec", "-n", namespace, pod, "-c", "database", "--", "bash", "-ceu", script,
        ],
        None,
    )
    .trim()
    .to_owned()
}

pub async fn pods_trial(node: &Node, client: &Client, trial: usize, scale: u32) -> BackupFigures {
    let mut figures = BackupFigures::default();
    let ns = Namespace::create(node, client, &format!("bench-backup-{trial}")).await;
    let cluster = "hippo";
    apply(node, &manifest(cluster, &ns.name, ""));
    wait_condition(client, &ns.name, cluster, "Ready", LIMIT).await;
    // The initial backup of the empty cluster first, so it does not overlap the measured one.
    wait_job_succeeded(
        client,
        &ns.name,
        "tusk.rs/cluster=hippo,tusk.rs/pgbackrest-backup=replica-create",
        LIMIT,
    )
    .await;
    let primary = leader(client, &ns.name, cluster, LIMIT).await;
    eprintln!("  pods: pgbench -i -s {scale}");
    in_pod(
        node,
        &ns.name,
        &primary,
        &format!(
            "{BIN}/pgbench -i -q -s {scale} -h /tmp/postgres -U postgres postgres 2>&1 | tail -1"
        ),
    );
    let bytes: f64 = superuser_sql(
        node,
        &ns.name,
        &primary,
        "select sum(pg_database_size(datname)) from pg_database",
    )
    .parse()
    .expect("a size");
    figures.megabytes = bytes / 1e6;

    eprintln!("  pods: full backup by annotation");
    let requested = Instant::now();
    annotate(
        client,
        &ns.name,
        cluster,
        tusk_api::naming::ANNOTATION_BACKUP,
        "bench",
    )
    .await;
    eventually("the manual backup finished", LIMIT, || async {
        let s = status(client, &ns.name, cluster).await;
        let manual = &s["pgbackrest"]["manualBackup"];
        (manual["id"] == "bench" && manual["finished"] == true).then_some(())
    })
    .await;
    figures.backup_requested = requested.elapsed().as_secs_f64();
    let info = pgbackrest_info(node, &ns.name, cluster);
    let newest = info[0]["backup"]
        .as_array()
        .and_then(|b| b.last())
        .cloned()
        .unwrap_or_default();
    figures.backup = newest["timestamp"]["stop"].as_f64().unwrap_or(f64::NAN)
        - newest["timestamp"]["start"].as_f64().unwrap_or(f64::NAN);

    eprintln!("  pods: pg_basebackup in the primary's pod");
    let host = format!("{primary}.{cluster}-pods.{}.svc", ns.name);
    let tls = "/pgconf/tls/replication";
    let millis = in_pod(
        node,
        &ns.name,
        &primary,
        &format!(
            "rm -rf /pgdata/bench-basebackup; start=$(date +%s%N); \
             {BIN}/pg_basebackup -X stream -c fast -D /pgdata/bench-basebackup -d \
             'host={host} user=_tusk_repl sslmode=verify-full sslrootcert={tls}/ca.crt \
             sslcert={tls}/tls.crt sslkey={tls}/tls.key'; \
             end=$(date +%s%N); rm -rf /pgdata/bench-basebackup; echo $(( (end - start) / 1000000 ))"
        ),
    );
    figures.basebackup = millis.parse::<f64>().unwrap_or(f64::NAN) / 1000.0;

    eprintln!("  pods: clone from the repo");
    let clone = "elephant";
    let started = Instant::now();
    apply(
        node,
        &manifest(
            clone,
            &ns.name,
            "  dataSource: {postgresCluster: {clusterName: hippo, repoName: repo1}}",
        ),
    );
    let restore = eventually("the clone's restore finished", LIMIT, || async {
        let s = status(client, &ns.name, clone).await;
        let r = s["pgbackrest"]["restore"].clone();
        (r["finished"] == true).then_some(r)
    })
    .await;
    figures.restore = between(&restore["startTime"], &restore["completionTime"]);
    wait_condition(client, &ns.name, clone, "Ready", LIMIT).await;
    figures.clone_ready = started.elapsed().as_secs_f64();
    figures
}

/// The same database in `tusk local` (member on 127.46.{200+trial}.x): full backup,
/// `pgbackrest restore` into an empty directory, `pg_basebackup` over TLS.
pub fn local_trial(trial: usize, scale: u32) -> Result<BackupFigures, String> {
    use tusk_config::paths::{TLS_CA_FILE, TLS_CERT_FILE, TLS_KEY_FILE};
    let mut figures = BackupFigures::default();
    let run_as = tusk_local::system::RunAs::detect().map_err(|e| e.to_string())?;
    let cluster = ha::Cluster::new(&format!("127.46.{}", 200 + trial));
    let edit = ha::ManifestEdit {
        replicas: Some(1),
        ..ha::ManifestEdit::default()
    };
    let file = cluster.write_manifest(&ha::manifest("01-hippo-basic.yaml", &edit));
    cluster.up(&file).map_err(|e| format!("up: {e}"))?;
    let leader = cluster.leader();
    let layout = cluster.layout();
    let member = layout.member(&leader);
    let run = |what: &str, command: Command| -> Result<f64, String> {
        let started = Instant::now();
        tusk_local::system::run_helper(what, command, Some(&run_as))
            .map_err(|e| format!("{what}: {e}"))?;
        Ok(started.elapsed().as_secs_f64())
    };
    let mut init = Command::new(Path::new(BIN).join("pgbench"));
    tusk_local::system::clear_libpq_env(&mut init);
    init.args(["-i", "-q", "-s", &scale.to_string(), "-U", "postgres", "-h"])
        .arg(member.socket_dir())
        .arg("postgres");
    run("pgbench -i", init)?;
    let bytes: f64 = cluster
        .superuser_sql(
            &leader,
            "SELECT sum(pg_database_size(datname)) FROM pg_database",
        )
        .map_err(|e| e.to_string())?
        .parse()
        .map_err(|e| format!("a size: {e}"))?;
    figures.megabytes = bytes / 1e6;

    let started = Instant::now();
    let backup = tusk_local::backup::run_backup(
        &layout,
        tusk_local::backup::BackupKind::Full,
        None,
        &mut |_| {},
    )
    .map_err(|e| format!("backup: {e}"))?;
    figures.backup = started.elapsed().as_secs_f64();

    let scratch = |name: &str| -> Result<std::path::PathBuf, String> {
        let dir = cluster.state_dir.parent().unwrap().join(name);
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        run_as.own_tree(&dir).map_err(|e| e.to_string())?;
        Ok(dir)
    };
    let tls = member.replication_tls_dir();
    let conninfo = format!(
        "host={} port=5432 user={} sslmode=verify-full sslrootcert={} sslcert={} sslkey={}",
        cluster.host_of(&leader),
        tusk_api::naming::REPLICATION_USER,
        tls.join(TLS_CA_FILE).display(),
        tls.join(TLS_CERT_FILE).display(),
        tls.join(TLS_KEY_FILE).display(),
    );
    let copy = scratch("basebackup")?;
    let mut basebackup = Command::new(Path::new(BIN).join("pg_basebackup"));
    tusk_local::system::clear_libpq_env(&mut basebackup);
    basebackup
        .args(["-X", "stream", "-c", "fast", "-d", &conninfo, "-D"])
        .arg(&copy);
    figures.basebackup = run("pg_basebackup", basebackup)?;
    let _ = std::fs::remove_dir_all(&copy);

    let target = scratch("restore")?;
    let mut restore = Command::new(tusk_local::system::find_program("pgbackrest"));
    restore
        .env("PGBACKREST_CONFIG", member.pgbackrest_conf())
        .args(["--stanza", tusk_config::parameters::PGBACKREST_STANZA])
        .arg(format!("--pg1-path={}", target.display()))
        .arg(format!("--set={}", backup.label))
        .arg("restore");
    figures.restore = run("pgbackrest restore", restore)?;
    let _ = std::fs::remove_dir_all(&target);
    Ok(figures)
}

pub fn print_table(pods: &[BackupFigures], local: &[BackupFigures], scale: u32) {
    type Metric = (&'static str, fn(&BackupFigures) -> f64);
    let metrics: [Metric; 6] = [
        ("database size (MB, all databases)", |f| f.megabytes),
        ("full backup (pgBackRest start -> stop)", |f| f.backup),
        ("full backup: annotation -> status", |f| f.backup_requested),
        ("restore (pods: the clone's Job)", |f| f.restore),
        ("clone: apply -> Ready", |f| f.clone_ready),
        ("pg_basebackup (-X stream, TLS)", |f| f.basebackup),
    ];
    let cell = |values: Vec<f64>| {
        super::median(
            values
                .into_iter()
                .filter(|v| v.is_finite() && *v > 0.0)
                .collect(),
        )
        .map_or_else(|| "-".to_owned(), |v| format!("{v:.1}"))
    };
    println!(
        "\nbackup and restore, pgbench scale {scale}: median seconds over {} pod trial(s) and \
         {} tusk local trial(s)",
        pods.len(),
        local.len()
    );
    println!("{:<40} {:>10} {:>12}", "", "pods", "tusk local");
    for (name, get) in metrics {
        println!(
            "{name:<40} {:>10} {:>12}",
            cell(pods.iter().map(get).collect()),
            cell(local.iter().map(get).collect())
        );
    }
    println!(
        "(pods: the restore Job also replays the archive to its end and stops the server; \
         tusk local: pgbackrest restore alone. pg_basebackup: in the primary's pod onto its \
         data volume; locally onto the same disk)"
    );
}
