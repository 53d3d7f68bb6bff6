//! Users and databases reconciled against a real PostgreSQL 15: options applied and changed,
//! databases added without dropping old ones, an unchanged state planning nothing, and the
//! client-side SCRAM verifiers accepted by the server's scram-sha-256 authentication.

mod sql_support;

use std::collections::BTreeMap;

use sql_support::{cluster, TestServer};
use tusk_local::sql::{connect, plan_users, reconcile_users, SqlError};

fn passwords(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(u, p)| (u.to_string(), p.to_string()))
        .collect()
}

#[tokio::test]
async fn options_and_databases_converge_and_a_second_plan_is_empty() {
    let server = TestServer::start();
    let su = server.superuser();
    let pw = passwords(&[("rhino", "Rh1no-pass"), ("hippo", "h'ppo\\pass")]);
    let v1 = cluster(
        "  users:\n    - {name: rhino, databases: [zoo], options: SUPERUSER}\n    - {name: hippo, databases: [\"My \\\"Db\\\"\"], options: \"CREATEDB CONNECTION LIMIT 7\"}\n",
    );
    let done = reconcile_users(&su, &v1, &pw).await.unwrap();
    assert!(
        done.contains(&"create database zoo".to_string()),
        "{done:?}"
    );
    assert_eq!(
        server.psql(
            "postgres",
            "SELECT rolname, rolsuper, rolcanlogin, rolcreatedb, rolconnlimit FROM pg_roles \
             WHERE rolname IN ('rhino', 'hippo') ORDER BY 1"
        ),
        "hippo|f|t|t|7\nrhino|t|t|f|-1"
    );
    assert_eq!(
        server.psql(
            "postgres",
            "SELECT datname FROM pg_database WHERE datname IN ('zoo', 'My \"Db\"') ORDER BY 1"
        ),
        "My \"Db\"\nzoo"
    );
    assert!(
        plan_users(&su, &v1, &pw).await.unwrap().is_empty(),
        "second plan of an unchanged state must be empty"
    );

    // NOSUPERUSER and a new database; zoo leaves the spec but stays.
    let v2 = cluster(
        "  users:\n    - {name: rhino, databases: [park], options: NOSUPERUSER}\n    - {name: hippo, databases: [\"My \\\"Db\\\"\"], options: \"CREATEDB CONNECTION LIMIT 7\"}\n",
    );
    let done = reconcile_users(&su, &v2, &pw).await.unwrap();
    assert_eq!(
        done,
        [
            "alter role rhino: NOSUPERUSER",
            "create database park",
            "grant all on database park to rhino",
            "grant all on schema public of park to rhino",
        ]
    );
    assert_eq!(
        server.psql(
            "postgres",
            "SELECT rolsuper FROM pg_roles WHERE rolname = 'rhino'"
        ),
        "f"
    );
    assert_eq!(
        server.psql(
            "postgres",
            "SELECT string_agg(datname, ',' ORDER BY datname) FROM pg_database \
             WHERE datname IN ('zoo', 'park')"
        ),
        "park,zoo"
    );
    assert!(plan_users(&su, &v2, &pw).await.unwrap().is_empty());

    // The grants are real: rhino, no longer superuser, can create a table in park's public.
    let rhino = connect(&server.tcp_user("rhino", "Rh1no-pass"), "park")
        .await
        .unwrap();
    rhino
        .batch_execute("CREATE TABLE rhino_owned (id int)")
        .await
        .unwrap();
    // ... and hippo, never granted park, cannot.
    let hippo = connect(&server.tcp_user("hippo", "h'ppo\\pass"), "park")
        .await
        .unwrap();
    assert!(hippo
        .batch_execute("CREATE TABLE hippo_owned (id int)")
        .await
        .is_err());
}

#[tokio::test]
async fn verifiers_authenticate_with_scram_and_a_changed_password_is_reset() {
    let server = TestServer::start();
    let su = server.superuser();
    let c = cluster("  users:\n    - {name: app, databases: [appdb]}\n");
    reconcile_users(&su, &c, &passwords(&[("app", "first")]))
        .await
        .unwrap();
    assert!(server
        .psql(
            "postgres",
            "SELECT rolpassword FROM pg_authid WHERE rolname = 'app'"
        )
        .starts_with("SCRAM-SHA-256$4096:"));
    connect(&server.tcp_user("app", "first"), "appdb")
        .await
        .expect("the verifier accepts its password over scram-sha-256");
    let wrong = connect(&server.tcp_user("app", "second"), "appdb").await;
    assert!(matches!(wrong, Err(SqlError::Connect { .. })), "{wrong:?}");

    let done = reconcile_users(&su, &c, &passwords(&[("app", "second")]))
        .await
        .unwrap();
    assert_eq!(done, ["set the password of role app"]);
    connect(&server.tcp_user("app", "second"), "appdb")
        .await
        .expect("the new password works");
    assert!(connect(&server.tcp_user("app", "first"), "appdb")
        .await
        .is_err());
}

#[tokio::test]
async fn the_superuser_gets_a_password_only_while_listed() {
    let server = TestServer::start();
    let su = server.superuser();
    let listed = cluster("  users:\n    - {name: postgres}\n");
    let pw = passwords(&[("postgres", "super-pw")]);
    assert_eq!(
        reconcile_users(&su, &listed, &pw).await.unwrap(),
        ["set the password of role postgres"]
    );
    // The test server's pg_hba lets postgres in over TCP, which proves the verifier; Tusk's
    // own pg_hba refuses the superuser over TCP whatever its password.
    connect(&server.tcp_user("postgres", "super-pw"), "postgres")
        .await
        .unwrap();
    assert_eq!(
        server.psql(
            "postgres",
            "SELECT rolsuper FROM pg_roles WHERE rolname = 'postgres'"
        ),
        "t"
    );
    let unlisted = cluster("");
    let done = reconcile_users(&su, &unlisted, &BTreeMap::new())
        .await
        .unwrap();
    assert!(done.contains(&"remove the password of postgres (not in spec.users)".to_string()));
    assert_eq!(
        server.psql(
            "postgres",
            "SELECT rolpassword IS NULL FROM pg_authid WHERE rolname = 'postgres'"
        ),
        "t"
    );
}
