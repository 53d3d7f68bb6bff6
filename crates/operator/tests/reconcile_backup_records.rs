//! The exporter's backup-status table, filled by the SQL step from a REAL pgBackRest
//! repository: the test server (PostgreSQL 15, configured as the operator rendered it) has
//! pgBackRest configured in its environment, as the database container has; a real
//! `stanza-create` and full backup go into a posix repository; once the status reports a
//! finished backup, one reconcile makes the primary run `pgbackrest info` itself and the
//! table holds pgBackRest's own label and stop time, which `tusk_pg_backup_age_seconds` reads.
//! The same finished backup is not looked up again on the next reconcile.

mod common;

use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::Arc;

use common::postgres::PgServer;
use common::primary::{mark_primary_ready, rendered_server_files, TestResolver};
use common::{cluster_from, Harness, NAME, NS};
use kube::api::{Patch, PatchParams};
use nix::unistd::{chown, User};
use tusk_operator::controller::sql::USERS_READY;

fn manifest() -> tusk_api::PostgresCluster {
    cluster_from(&format!(
        r#"
apiVersion: tusk.rs/v1beta1
kind: PostgresCluster
metadata: {{name: {NAME}, namespace: {NS}}}
spec:
  postgresVersion: 15
  monitoring: {{pgmonitor: {{exporter: {{}}}}}}
  backups:
    pgbackrest:
      repos:
        - name: repo1
          volume:
            volumeClaimSpec:
              accessModes: [ReadWriteOnce]
              resources: {{requests: {{storage: 1Gi}}}}
  instances:
    - name: instance1
      dataVolumeClaimSpec:
        accessModes: [ReadWriteOnce]
        resources: {{requests: {{storage: 1Gi}}}}
"#
    ))
}

/// Runs pgBackRest as the `postgres` OS user with `config`; its stdout.
fn pgbackrest(config: &std::path::Path, args: &[&str]) -> String {
    let user = User::from_name("postgres").unwrap().unwrap();
    let out = Command::new("pgbackrest")
        .arg(format!("--config={}", config.display()))
        .args(args)
        .uid(user.uid.as_raw())
        .gid(user.gid.as_raw())
        .env("HOME", &user.dir)
        .output()
        .expect("pgbackrest runs");
    assert!(
        out.status.success(),
        "pgbackrest {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_backup_is_recorded_from_the_repository_once() {
    // pgBackRest's configuration, in the server's environment as in the database container
    // (written once the server's directories exist; pgBackRest reads it on every run).
    let scratch = tempfile::Builder::new()
        .prefix("tusk-backup-records")
        .tempdir()
        .unwrap();
    let postgres = User::from_name("postgres").unwrap().unwrap();
    chown(scratch.path(), Some(postgres.uid), Some(postgres.gid)).unwrap();
    let config = scratch.path().join("pgbackrest.conf");
    // Inherited by the server started below (the binary's only test sets it).
    std::env::set_var("PGBACKREST_CONFIG", &config);

    let resolver = Arc::new(TestResolver::default());
    let shared = resolver.clone();
    let h = Harness::with(manifest(), Vec::new(), |ctx| ctx.primary_resolver = shared).await;
    h.reconcile().await;
    let server = PgServer::start(&rendered_server_files(&h).await);
    resolver.point_at(&server);
    mark_primary_ready(&h).await;
    std::fs::write(
        &config,
        format!(
            "[global]\nrepo1-path={repo}\nlock-path={dir}/lock\nlog-path={dir}/log\n\
             log-level-file=off\nstart-fast=y\narchive-check=n\n\
             [db]\npg1-path={data}\npg1-socket-path={sock}\npg1-port={port}\n",
            repo = scratch.path().join("repo").display(),
            dir = scratch.path().display(),
            data = server.dir.path().join("data").display(),
            sock = server.socket_dir().display(),
            port = server.port,
        ),
    )
    .unwrap();
    chown(&config, Some(postgres.uid), Some(postgres.gid)).unwrap();

    // Users applied, the exporter's role and table created; no backup finished yet.
    h.reconcile().await;
    let ready = h.condition(USERS_READY).await;
    assert_eq!(ready.status, "True", "{}\n{}", ready.message, server.log());
    let rows = || {
        server.psql(
            "postgres",
            "SELECT repo || '|' || backup_type || '|' || label || '|' || \
             extract(epoch FROM finished_at)::bigint FROM _tusk_monitor.backup_status",
        )
    };
    assert_eq!(rows(), "", "nothing recorded before a backup finished");

    pgbackrest(&config, &["--stanza=db", "stanza-create"]);
    pgbackrest(&config, &["--stanza=db", "--type=full", "backup"]);
    let info: serde_json::Value = serde_json::from_str(&pgbackrest(
        &config,
        &["--stanza=db", "--output=json", "info"],
    ))
    .unwrap();
    let backup = &info[0]["backup"][0];
    let expected = format!(
        "repo1|full|{}|{}",
        backup["label"].as_str().unwrap(),
        backup["timestamp"]["stop"]
    );

    // The backup step reports the Job's completion; the next reconcile records the backup.
    h.clusters
        .patch_status(
            NAME,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({
                "status": {"pgbackrest": {"lastBackupCompletion": "2026-01-01T00:00:00Z"}}
            })),
        )
        .await
        .unwrap();
    h.reconcile().await;
    assert_eq!(rows(), expected, "{}", server.log());

    // The same finished backup is not looked up again: a row changed by hand stays.
    server.psql(
        "postgres",
        "UPDATE _tusk_monitor.backup_status SET label = 'by-hand'",
    );
    h.reconcile().await;
    assert!(rows().contains("|by-hand|"), "{}", rows());
}
