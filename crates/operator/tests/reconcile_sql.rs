//! The operator's SQL step against a REAL PostgreSQL 15: the test reconciles on
//! kube-fake-client, starts a server from what the operator rendered (pg_hba, pg_ident,
//! parameters from the Patroni ConfigMap; certificates from `<c>-cluster-cert`), marks a
//! primary pod Ready, and points the operator's primary resolver at the server. Users,
//! databases, passwords (from the Secrets' `verifier`) and service roles are then checked in
//! the server itself. With `customTLSSecret`, the server is configured as the pod is (the
//! user's certificate, the `<c>-client-ca` bundle as client CA) and the operator gets in.

mod common;

use std::sync::Arc;

use common::postgres::{PgServer, ServerFiles};
use common::primary::{
    mark_primary_ready, rendered_server_files, rendered_server_files_with, tls_target,
    TestResolver, PRIMARY_HOST,
};
use common::{cluster_from, Harness, NAME, NS};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams};
use tusk_api::naming;
use tusk_operator::controller::sql::USERS_READY;
use tusk_sql::{ClientCert, Pem, SqlError};

fn manifest() -> tusk_api::PostgresCluster {
    cluster_from(&format!(
        r#"
apiVersion: tusk.rs/v1beta1
kind: PostgresCluster
metadata: {{name: {NAME}, namespace: {NS}}}
spec:
  postgresVersion: 15
  users:
    - {{name: rhino, databases: [zoo], options: SUPERUSER}}
    - {{name: hippo, databases: [zoo, swamp], options: "CREATEDB CONNECTION LIMIT 5"}}
  proxy: {{pgBouncer: {{}}}}
  monitoring: {{pgmonitor: {{exporter: {{}}}}}}
  instances:
    - name: instance1
      dataVolumeClaimSpec:
        accessModes: [ReadWriteOnce]
        resources: {{requests: {{storage: 1Gi}}}}
"#
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_databases_and_service_roles_are_applied_once_over_verified_tls() {
    let resolver = Arc::new(TestResolver::default());
    let shared = resolver.clone();
    let h = Harness::with(manifest(), Vec::new(), |ctx| ctx.primary_resolver = shared).await;

    // No primary yet: nothing is tried, and the condition says why.
    h.reconcile().await;
    let waiting = h.condition(USERS_READY).await;
    assert_eq!(
        (waiting.status.as_str(), waiting.reason.as_str()),
        ("False", "WaitingForPrimary")
    );

    let files = rendered_server_files(&h).await;
    assert!(
        files
            .pg_hba
            .iter()
            .any(|l| l == "hostssl all postgres all cert map=tusk-operator"),
        "{:?}",
        files.pg_hba
    );
    let server = PgServer::start(&files);
    resolver.point_at(&server);
    mark_primary_ready(&h).await;
    h.reconcile().await;

    let ready = h.condition(USERS_READY).await;
    assert_eq!(ready.status, "True", "{}\n{}", ready.message, server.log());
    assert!(!h.event_notes("Normal", "SqlStateChanged").await.is_empty());

    // Roles with their options, databases with their grants.
    let q = |sql: &str| server.psql("postgres", sql);
    assert_eq!(
        q("SELECT rolsuper, rolcanlogin FROM pg_roles WHERE rolname = 'rhino'"),
        "t|t"
    );
    assert_eq!(
        q("SELECT rolsuper, rolcreatedb, rolconnlimit FROM pg_roles WHERE rolname = 'hippo'"),
        "f|t|5"
    );
    assert_eq!(q("SELECT string_agg(datname, ',' ORDER BY datname) FROM pg_database WHERE datname IN ('zoo', 'swamp')"), "swamp,zoo");
    assert_eq!(
        q("SELECT has_database_privilege('hippo', 'swamp', 'CREATE')"),
        "t"
    );
    // pg_authid holds exactly the Secret's verifier; the Secret's password logs in over TLS.
    for user in ["rhino", "hippo"] {
        let secret = format!("hippo-pguser-{user}");
        let verifier = h.secret_text(&secret, "verifier").await;
        assert!(verifier.starts_with("SCRAM-SHA-256$4096:"), "{user}");
        assert_eq!(
            q(&format!(
                "SELECT rolpassword FROM pg_authid WHERE rolname = '{user}'"
            )),
            verifier
        );
        let mut login = tls_target(&server, &files.ca_pem, user);
        login.password = Some(h.secret_text(&secret, "password").await);
        let client = tusk_sql::connect(&login, "zoo")
            .await
            .expect("the user logs in");
        let row = client
            .query_one(
                "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                &[],
            )
            .await
            .unwrap();
        assert!(row.get::<_, bool>(0), "{user} is on TLS");
    }
    // Service roles, and PgBouncer's lookup function in every database and template1.
    assert_eq!(q("SELECT count(*) FROM pg_roles WHERE rolname IN ('_tusk_pgbouncer', '_tusk_exporter') AND rolcanlogin"), "2");
    assert_eq!(
        q("SELECT pg_has_role('_tusk_exporter', 'pg_monitor', 'MEMBER')"),
        "t"
    );
    for db in ["postgres", "template1", "zoo", "swamp"] {
        let has = server.psql(
            db,
            "SELECT count(*) FROM pg_proc WHERE proname = 'get_auth'",
        );
        assert_eq!(has, "1", "lookup function in {db}");
    }

    // A second reconcile of the same spec executes nothing.
    let statements = server.logged_statements();
    let changes = h.event_notes("Normal", "SqlStateChanged").await.len();
    let verifier = h.secret_text("hippo-pguser-rhino", "verifier").await;
    h.reconcile().await;
    assert_eq!(server.logged_statements(), statements, "{}", server.log());
    assert_eq!(
        h.event_notes("Normal", "SqlStateChanged").await.len(),
        changes
    );
    assert_eq!(
        h.secret_text("hippo-pguser-rhino", "verifier").await,
        verifier,
        "stable"
    );

    // SUPERUSER -> NOSUPERUSER and a new database are applied.
    h.edit(|c| {
        let rhino = &mut c.spec.users.as_mut().unwrap()[0];
        rhino.options = Some("NOSUPERUSER".into());
        rhino.databases = Some(vec!["zoo".into(), "aquarium".into()]);
    })
    .await;
    h.reconcile().await;
    assert_eq!(h.condition(USERS_READY).await.status, "True");
    assert_eq!(
        q("SELECT rolsuper FROM pg_roles WHERE rolname = 'rhino'"),
        "f"
    );
    // Without SUPERUSER, rhino holds exactly the grants of its databases.
    assert_eq!(
        q(
            "SELECT has_database_privilege('rhino', 'aquarium', 'CREATE'), \
           has_database_privilege('rhino', 'swamp', 'CREATE')"
        ),
        "t|f"
    );
    assert_eq!(
        server.psql(
            "aquarium",
            "SELECT count(*) FROM pg_proc WHERE proname = 'get_auth'"
        ),
        "1"
    );

    // TCP as the superuser without the operator's certificate is rejected, with a password
    // or with another certificate the cluster CA signed (the replication one).
    let mut no_cert = tls_target(&server, &files.ca_pem, "postgres");
    no_cert.password = Some("anything".into());
    let refused = tusk_sql::connect(&no_cert, "postgres")
        .await
        .expect_err("superuser over TCP");
    assert!(refused.to_string().contains("certificate"), "{refused}");
    let mut replication_cert = tls_target(&server, &files.ca_pem, "postgres");
    replication_cert.client_cert = Some(ClientCert {
        cert: Pem::Text(h.secret_text("hippo-replication-cert", "tls.crt").await),
        key: Pem::Text(h.secret_text("hippo-replication-cert", "tls.key").await),
    });
    let refused = tusk_sql::connect(&replication_cert, "postgres")
        .await
        .expect_err("mapped CN only");
    assert!(matches!(refused, SqlError::Connect { .. }), "{refused}");
    assert!(refused.to_string().contains("postgres"), "{refused}");

    // A primary whose certificate another CA signed is refused (verify-full), and said so.
    let impostor_ca = tusk_pki::RootCa::generate(time::OffsetDateTime::now_utc()).unwrap();
    let impostor_leaf = impostor_ca
        .issue_server(
            "hippo-primary",
            &[PRIMARY_HOST.to_owned()],
            time::OffsetDateTime::now_utc(),
        )
        .unwrap();
    let impostor = PgServer::start(&ServerFiles {
        cert_pem: impostor_leaf.cert_pem,
        key_pem: impostor_leaf.key_pem,
        ca_pem: impostor_ca.cert_pem().to_owned(),
        ..files
    });
    resolver.point_at(&impostor);
    h.reconcile().await;
    let refused = h.condition(USERS_READY).await;
    assert_eq!(refused.status, "False");
    assert_eq!(
        refused.reason, "PrimaryTLSVerificationFailed",
        "{}",
        refused.message
    );
    assert!(
        refused.message.to_lowercase().contains("certificate"),
        "{}",
        refused.message
    );
    let warnings = h
        .event_notes("Warning", "PrimaryTLSVerificationFailed")
        .await;
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    let password = h.secret_text("hippo-pguser-rhino", "password").await;
    assert!(!warnings[0].contains(&password) && !refused.message.contains(&password));
    assert_eq!(
        impostor.logged_statements(),
        0,
        "nothing ran on the impostor"
    );
}

/// `customTLSSecret`: the user's CA signed the server certificate, so PostgreSQL's client-CA
/// file must hold the operator root as well, or the operator's certificate is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_custom_tls_the_operator_gets_in_through_the_client_ca_bundle() {
    let now = time::OffsetDateTime::now_utc();
    let user_ca = tusk_pki::RootCa::generate(now).unwrap();
    let server_leaf = user_ca
        .issue_server("hippo-primary", &[PRIMARY_HOST.to_owned()], now)
        .unwrap();
    let replication_leaf = user_ca.issue_client(naming::REPLICATION_USER, now).unwrap();
    let user_secrets = vec![
        common::secret(
            "hippo.tls",
            &[
                ("tls.crt", &server_leaf.cert_pem),
                ("tls.key", &server_leaf.key_pem),
                ("ca.crt", user_ca.cert_pem()),
            ],
        ),
        common::secret(
            "hippo-repl.tls",
            &[
                ("tls.crt", &replication_leaf.cert_pem),
                ("tls.key", &replication_leaf.key_pem),
                ("ca.crt", user_ca.cert_pem()),
            ],
        ),
    ];
    let manifest = cluster_from(&format!(
        r#"
apiVersion: tusk.rs/v1beta1
kind: PostgresCluster
metadata: {{name: {NAME}, namespace: {NS}}}
spec:
  postgresVersion: 15
  customTLSSecret: {{name: hippo.tls}}
  customReplicationTLSSecret: {{name: hippo-repl.tls}}
  users: [{{name: rhino, databases: [zoo]}}]
  instances:
    - name: instance1
      dataVolumeClaimSpec:
        accessModes: [ReadWriteOnce]
        resources: {{requests: {{storage: 1Gi}}}}
"#
    ));
    let resolver = Arc::new(TestResolver::default());
    let shared = resolver.clone();
    let h = Harness::with(manifest, user_secrets.clone(), |ctx| {
        ctx.primary_resolver = shared
    })
    .await;
    h.reconcile().await;

    // The Tusk-owned bundle: the user's CA, then the operator root; the user's Secrets as
    // they were.
    let maps: Api<ConfigMap> = Api::namespaced(h.client.clone(), NS);
    let bundle = maps
        .get("hippo-client-ca")
        .await
        .expect("client-CA ConfigMap")
        .data
        .unwrap()["ca.crt"]
        .clone();
    let roots: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(
        h.client.clone(),
        tusk_operator::controller::DEFAULT_OPERATOR_NAMESPACE,
    );
    let operator_root = roots
        .get(naming::ROOT_CA_SECRET)
        .await
        .unwrap()
        .data
        .unwrap()[tusk_operator::controller::root_ca::ROOT_CERT_KEY]
        .0
        .clone();
    assert_eq!(
        tusk_pki::bundle_certificates(&bundle),
        [
            user_ca.cert_pem().to_owned(),
            String::from_utf8(operator_root).unwrap()
        ]
    );
    for user_secret in &user_secrets {
        let name = user_secret.metadata.name.as_deref().unwrap();
        assert_eq!(h.secret(name).await.unwrap().data, user_secret.data);
    }
    // The pod's server directory takes `ca.crt` from the bundle, not from the user's Secret.
    let sets: Api<StatefulSet> = Api::namespaced(h.client.clone(), NS);
    let set = sets
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .remove(0);
    let volumes = set.spec.unwrap().template.spec.unwrap().volumes.unwrap();
    let tls = volumes.iter().find(|v| v.name == "tls").unwrap();
    let sources = tls.projected.as_ref().unwrap().sources.as_ref().unwrap();
    let ca_from: Vec<String> = sources
        .iter()
        .filter_map(|source| {
            let (name, items) = match (&source.secret, &source.config_map) {
                (Some(s), _) => (&s.name, s.items.as_ref()?),
                (_, Some(c)) => (&c.name, c.items.as_ref()?),
                _ => return None,
            };
            items
                .iter()
                .any(|item| item.path == "ca.crt")
                .then(|| name.clone())
        })
        .collect();
    assert_eq!(ca_from, ["hippo-client-ca"]);

    // A server configured as the pod is: the user's certificate, the bundle as client CA.
    let files = rendered_server_files_with(
        &h,
        server_leaf.cert_pem.clone(),
        server_leaf.key_pem.clone(),
        bundle,
    )
    .await;
    let server = PgServer::start(&files);
    resolver.point_at(&server);
    mark_primary_ready(&h).await;
    h.reconcile().await;
    let ready = h.condition(USERS_READY).await;
    assert_eq!(ready.status, "True", "{}\n{}", ready.message, server.log());
    assert_eq!(
        server.psql(
            "postgres",
            "SELECT count(*) FROM pg_roles WHERE rolname = 'rhino'"
        ),
        "1"
    );

    // The same server with the user's `ca.crt` alone (what the pod had before) refuses the
    // operator: the bundle is what lets it in.
    let user_ca_only = PgServer::start(&ServerFiles {
        ca_pem: user_ca.cert_pem().to_owned(),
        ..files
    });
    resolver.point_at(&user_ca_only);
    h.reconcile().await;
    let refused = h.condition(USERS_READY).await;
    assert_eq!(refused.status, "False", "{}", refused.message);
    assert_eq!(user_ca_only.logged_statements(), 0);
}
