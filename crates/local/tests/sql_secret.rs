//! The local `<c>-pguser-<user>` Secret: its keys, multi-host URIs, and a `uri` that the real
//! libpq (psql) connects with over verify-full TLS.

mod sql_support;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use sql_support::{cluster, TestServer, BIN};
use tusk_local::secret::{user_secret, Endpoint};
use tusk_local::sql::{connect, reconcile_users, stored_password};

#[test]
fn keys_and_multi_host_uris() {
    let c = cluster("  users:\n    - {name: rhino, databases: [zoo, park]}\n    - {name: nodb}\n");
    let members = [
        Endpoint {
            host: "127.0.0.2".into(),
            port: 5432,
        },
        Endpoint {
            host: "127.0.0.3".into(),
            port: 5432,
        },
        Endpoint {
            host: "127.0.0.4".into(),
            port: 5432,
        },
    ];
    let ca = Path::new("/state/ca dir/ca.crt");
    let s = user_secret(&c.users[0], "p@ss/w:rd", "SCRAM-SHA-256$x", &members, ca);
    assert_eq!(
        s.uri,
        "postgresql://rhino:p%40ss%2Fw%3Ard@127.0.0.2:5432,127.0.0.3:5432,127.0.0.4:5432/zoo\
         ?target_session_attrs=read-write&sslmode=verify-full&sslrootcert=%2Fstate%2Fca%20dir%2Fca.crt"
    );
    assert_eq!(
        s.jdbc_uri,
        "jdbc:postgresql://127.0.0.2:5432,127.0.0.3:5432,127.0.0.4:5432/zoo\
         ?targetServerType=primary&sslmode=verify-full&sslrootcert=%2Fstate%2Fca%20dir%2Fca.crt\
         &password=p%40ss%2Fw%3Ard&user=rhino"
    );
    assert_eq!(
        (s.host.as_str(), s.port.as_str()),
        ("127.0.0.2,127.0.0.3,127.0.0.4", "5432")
    );
    let keys: Vec<&str> = s.to_map().into_keys().collect();
    assert_eq!(
        keys,
        ["dbname", "host", "jdbc-uri", "password", "port", "uri", "user", "verifier"]
    );
    let json: BTreeMap<String, String> = serde_json::from_str(&s.to_json()).unwrap();
    assert_eq!(json["dbname"], "zoo");
    assert_eq!(json["verifier"], "SCRAM-SHA-256$x");
    assert!(!format!("{s:?}").contains("p@ss"));

    let mixed = [
        Endpoint {
            host: "a".into(),
            port: 1,
        },
        Endpoint {
            host: "b".into(),
            port: 2,
        },
    ];
    let nodb = user_secret(&c.users[1], "x", "v", &mixed, ca);
    assert_eq!(nodb.port, "1,2");
    assert!(nodb.dbname.is_none() && !nodb.to_map().contains_key("dbname"));
    assert!(
        nodb.uri.starts_with("postgresql://nodb:x@a:1,b:2/?"),
        "{}",
        nodb.uri
    );
}

#[tokio::test]
async fn the_uri_connects_with_libpq_over_verified_tls() {
    let server = TestServer::start();
    let c = cluster("  users:\n    - {name: rhino, databases: [zoo]}\n");
    let pw: BTreeMap<String, String> = [("rhino".to_string(), "Zoo-Keeper_42".to_string())].into();
    reconcile_users(&server.superuser(), &c, &pw).await.unwrap();
    let su = connect(&server.superuser(), "postgres").await.unwrap();
    let verifier = stored_password(&su, "rhino").await.unwrap().unwrap();
    let members = [Endpoint {
        host: server.host.clone(),
        port: server.port,
    }];
    let s = user_secret(
        &c.users[0],
        "Zoo-Keeper_42",
        &verifier,
        &members,
        &server.ca_file,
    );
    assert!(tusk_config::users::ScramVerifier::parse(&s.verifier)
        .unwrap()
        .verifies("Zoo-Keeper_42"));

    let out = Command::new(Path::new(BIN).join("psql"))
        .args(["-X", "-tA", "-c", "SELECT current_user, current_database(), ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"])
        .arg(&s.uri)
        .env_remove("PGPASSWORD")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "rhino|zoo|t");

    // verify-full really verifies: the same URI against another CA is refused.
    let other_ca = server.dir.path().join("other-ca.crt");
    let other = tusk_pki::RootCa::generate(time::OffsetDateTime::now_utc()).unwrap();
    std::fs::write(&other_ca, other.cert_pem()).unwrap();
    let bad = user_secret(&c.users[0], "Zoo-Keeper_42", &verifier, &members, &other_ca);
    let out = Command::new(Path::new(BIN).join("psql"))
        .args(["-X", "-tA", "-c", "SELECT 1"])
        .arg(&bad.uri)
        .output()
        .unwrap();
    assert!(!out.status.success());
}
