//! WAL archiving seen from the operator, against a REAL PostgreSQL 15 configured as the
//! operator rendered it (see `common::primary`): the SQL step reads `pg_stat_archiver`, so
//! `WALArchiving` is `Unknown` until a segment was archived, a failing `archive_command`
//! becomes `WALArchiving=False` with one Warning before the volume fills, and clears when
//! archiving works again; an in-place restore stops the instances only after the WAL written
//! so far is archived. The server's `archive_command` succeeds exactly while a file the test
//! controls exists.

mod common;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use common::postgres::PgServer;
use common::primary::{mark_primary_ready, rendered_server_files, TestResolver};
use common::{cluster_from, Harness, NAME, NS};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::batch::v1::Job;
use kube::api::{Api, ListParams};
use tusk_api::naming;

fn manifest(backups_extra: &str) -> tusk_api::PostgresCluster {
    cluster_from(&format!(
        r#"
apiVersion: tusk.rs/v1beta1
kind: PostgresCluster
metadata: {{name: {NAME}, namespace: {NS}}}
spec:
  postgresVersion: 15
  instances:
    - name: instance1
      dataVolumeClaimSpec:
        accessModes: [ReadWriteOnce]
        resources: {{requests: {{storage: 1Gi}}}}
  backups:
    pgbackrest:
      repos:
        - name: repo1
          volume:
            volumeClaimSpec:
              accessModes: [ReadWriteOnce]
              resources: {{requests: {{storage: 1Gi}}}}
{backups_extra}"#
    ))
}

/// A reconciled cluster and its primary, whose archiving works only while
/// [`Primary::allow_archiving`] has been called.
struct Primary {
    h: Harness,
    server: PgServer,
    switch: PathBuf,
}

impl Primary {
    async fn start(cluster: tusk_api::PostgresCluster) -> Primary {
        let resolver = Arc::new(TestResolver::default());
        let shared = resolver.clone();
        let h = Harness::with(cluster, Vec::new(), |ctx| ctx.primary_resolver = shared).await;
        h.reconcile().await;
        let mut files = rendered_server_files(&h).await;
        // archive_command runs in the data directory (`<server dir>/data`): `../archive-ok`
        // is in the server's own directory, which the `postgres` user can look into and
        // which goes away with the server.
        files.parameters.extend([
            ("archive_mode".to_owned(), "on".to_owned()),
            (
                "archive_command".to_owned(),
                "test -e ../archive-ok".to_owned(),
            ),
        ]);
        let server = PgServer::start(&files);
        let switch = server.dir.path().join("archive-ok");
        resolver.point_at(&server);
        mark_primary_ready(&h).await;
        Primary { h, server, switch }
    }

    fn sql(&self, sql: &str) -> String {
        self.server.psql("postgres", sql)
    }

    fn allow_archiving(&self) {
        std::fs::write(&self.switch, "").unwrap();
    }

    /// Writes something and ends its WAL segment, so the archiver has a segment to try.
    fn write_and_switch(&self) -> String {
        self.sql("CREATE TABLE IF NOT EXISTS t (n int); INSERT INTO t VALUES (1)");
        self.sql("SELECT pg_walfile_name(pg_switch_wal())")
    }

    fn wait_until(&self, what: &str, sql: &str) {
        for _ in 0..120 {
            if self.sql(sql) == "t" {
                return;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        panic!("{what} did not happen:\n{}", self.server.log());
    }
}

async fn instance_replicas(h: &Harness) -> Vec<i32> {
    let sets: Api<StatefulSet> = Api::namespaced(h.client.clone(), NS);
    sets.list(&ListParams::default().labels(naming::LABEL_INSTANCE))
        .await
        .unwrap()
        .items
        .iter()
        .map(|s| s.spec.as_ref().unwrap().replicas.unwrap_or(1))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_archive_command_is_a_condition_and_one_warning_until_it_recovers() {
    let p = Primary::start(manifest("")).await;
    // A new server has archived nothing and failed nothing: that is not health yet.
    assert_eq!(
        p.sql("SELECT archived_count = 0 AND failed_count = 0 FROM pg_stat_archiver"),
        "t"
    );
    p.h.reconcile().await;
    let unseen = p.h.condition("WALArchiving").await;
    assert_eq!(
        (unseen.status.as_str(), unseen.reason.as_str()),
        ("Unknown", "NoSegmentArchivedYet"),
        "{}",
        unseen.message
    );
    p.write_and_switch();
    p.wait_until(
        "an archive failure",
        "SELECT failed_count > 0 FROM pg_stat_archiver",
    );

    p.h.reconcile().await;
    let failing = p.h.condition("WALArchiving").await;
    assert_eq!(
        (failing.status.as_str(), failing.reason.as_str()),
        ("False", "ArchiveFailing"),
        "{}",
        failing.message
    );
    // A second look at the same failure does not repeat the Warning.
    p.h.reconcile().await;
    assert_eq!(p.h.event_notes("Warning", "ArchiveFailing").await.len(), 1);

    p.allow_archiving();
    p.write_and_switch();
    p.wait_until(
        "archiving to succeed after the failure",
        "SELECT last_archived_time > last_failed_time FROM pg_stat_archiver",
    );
    p.h.reconcile().await;
    let healthy = p.h.condition("WALArchiving").await;
    assert_eq!(healthy.status, "True", "{}", healthy.message);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_in_place_restore_stops_the_instances_only_after_the_wal_is_archived() {
    let p = Primary::start(manifest(
        "      restore: {enabled: true, repoName: repo1, options: ['--type=time', '--target=2026-01-01 00:00:00+00']}\n",
    ))
    .await;
    p.sql("CREATE TABLE precious (n int); INSERT INTO precious VALUES (42)");
    let written_in = p.sql("SELECT pg_walfile_name(pg_current_wal_insert_lsn())");
    p.h.annotate(naming::ANNOTATION_RESTORE, "one").await;

    // Archiving fails: the instances keep running and no restore Job exists.
    p.h.reconcile().await;
    let holding = p.h.condition("Restoring").await;
    assert_eq!(holding.reason, "ArchivingWAL", "{}", holding.message);
    assert_eq!(instance_replicas(&p.h).await, vec![1]);
    let jobs: Api<Job> = Api::namespaced(p.h.client.clone(), NS);
    let restore_job = format!("{NAME}-pgbackrest-restore");
    assert!(jobs.get_opt(&restore_job).await.unwrap().is_none());

    // Once the segment holding the last write is archived, the instances are stopped.
    p.allow_archiving();
    p.h.reconcile().await;
    assert_eq!(
        p.sql(&format!(
            "SELECT last_archived_wal >= '{written_in}' FROM pg_stat_archiver"
        )),
        "t"
    );
    assert_eq!(instance_replicas(&p.h).await, vec![0]);
    // The fake API server keeps no StatefulSet status, so the pods count as gone at once
    // and the restore may already have started.
    let moving_on = p.h.condition("Restoring").await;
    assert!(
        ["StoppingInstances", "RestoreRunning"].contains(&moving_on.reason.as_str()),
        "{}: {}",
        moving_on.reason,
        moving_on.message
    );
}
