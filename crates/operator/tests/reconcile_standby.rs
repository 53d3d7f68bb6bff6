//! A standby cluster (`spec.standby.enabled`) in the reconcile, against kube-fake-client and
//! a REAL PostgreSQL 15 as its primary: the SQL step leaves the server alone while the
//! cluster is a standby (in pods its server is read-only, and every reconcile failed with
//! "cannot execute CREATE ROLE in a read-only transaction" and a Warning), `UsersReady` says
//! why, and once promoted (`enabled: false`) the users are applied.

mod common;

use std::sync::Arc;

use common::postgres::PgServer;
use common::primary::{mark_primary_ready, rendered_server_files, TestResolver};
use common::{cluster_from, Harness, NAME, NS};
use tusk_operator::controller::sql::USERS_READY;

fn manifest() -> tusk_api::PostgresCluster {
    cluster_from(&format!(
        r#"
apiVersion: tusk.rs/v1beta1
kind: PostgresCluster
metadata: {{name: {NAME}, namespace: {NS}}}
spec:
  postgresVersion: 15
  users:
    - {{name: rhino, databases: [zoo]}}
  instances:
    - name: instance1
      dataVolumeClaimSpec:
        accessModes: [ReadWriteOnce]
        resources: {{requests: {{storage: 1Gi}}}}
  standby: {{enabled: true, host: 192.0.2.2}}
"#
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_gets_no_sql_until_it_is_promoted() {
    let resolver = Arc::new(TestResolver::default());
    let shared = resolver.clone();
    let h = Harness::with(manifest(), Vec::new(), |ctx| ctx.primary_resolver = shared).await;
    h.reconcile().await;
    let server = PgServer::start(&rendered_server_files(&h).await);
    resolver.point_at(&server);
    mark_primary_ready(&h).await;
    let roles = || {
        server.psql(
            "postgres",
            "select count(*) from pg_roles where rolname = 'rhino'",
        )
    };

    h.reconcile().await;
    h.reconcile().await;
    let users = h.condition(USERS_READY).await;
    assert_eq!(
        (users.status.as_str(), users.reason.as_str()),
        ("True", "StandbyCluster"),
        "{}",
        users.message
    );
    assert_eq!(roles().trim(), "0", "nothing was applied to the standby");
    assert!(h.event_notes("Warning", "SqlFailed").await.is_empty());

    h.edit(|c| c.spec.standby.as_mut().unwrap().enabled = false)
        .await;
    h.reconcile().await;
    let users = h.condition(USERS_READY).await;
    assert_eq!(
        (users.status.as_str(), users.reason.as_str()),
        ("True", "SqlStateApplied"),
        "{}\n{}",
        users.message,
        server.log()
    );
    assert_eq!(roles().trim(), "1", "promoted: spec.users applied");
}
