//! `spec.users` and `spec.databaseInitSQL` on a real local cluster (2 members on 127.41.1.x),
//! and how clients reach it: `tusk local secret` (its multi-host `uri` really connects as the
//! user and reaches the primary, before and after a switchover), `tusk local psql`, TLS-only
//! access. One cluster is shared by the assertions to keep the file fast.

mod common;

use std::ffi::OsString;

use common::{manifest, output, psql, Cluster};

/// Superuser SQL on the primary through `tusk local psql` (Unix socket, peer auth).
fn as_superuser(cluster: &Cluster, sql: &str) -> String {
    let args: Vec<OsString> = ["-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-c", sql]
        .into_iter()
        .map(OsString::from)
        .collect();
    output(tusk_local::psql_command(&cluster.layout(), None, &args).unwrap())
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

const INIT_SQL: &str = "\\set ON_ERROR_STOP 1\n\\c zoo\n\
    CREATE TABLE init_runs (at timestamptz DEFAULT now());\n\
    INSERT INTO init_runs DEFAULT VALUES;\n\
    GRANT ALL ON init_runs TO app;\n";

fn users_manifest(options: &str, databases: &str, init_sql: Option<&str>) -> String {
    let mut extra = format!(
        "  users:\n    - name: app\n      databases: [{databases}]\n      options: \"{options}\"\n"
    );
    if let Some(key) = init_sql {
        extra += &format!("  databaseInitSQL:\n    name: init-sql\n    key: {key}\n");
    }
    manifest("zoo", 2, &extra)
}

#[test]
fn users_init_sql_secret_and_psql_on_a_running_cluster() {
    let cluster = Cluster::new("127.41.1");
    cluster.write("init.sql", INIT_SQL);

    // 1. Created with its options and database; init SQL runs; postgres has no password.
    let v1 = cluster.write(
        "v1.yaml",
        &users_manifest("SUPERUSER", "zoo", Some("init.sql")),
    );
    cluster.up(&v1).expect("up v1");
    assert_eq!(
        as_superuser(
            &cluster,
            "SELECT rolsuper, rolcanlogin FROM pg_roles WHERE rolname = 'app'"
        ),
        "t|t"
    );
    assert_eq!(
        as_superuser(
            &cluster,
            "SELECT count(*) FROM pg_database WHERE datname = 'zoo'"
        ),
        "1"
    );
    assert_eq!(
        as_superuser(
            &cluster,
            "SELECT rolpassword IS NULL FROM pg_authid WHERE rolname = 'postgres'"
        ),
        "t",
        "postgres is not listed, so it must have no password"
    );

    // 2. The secret: every key, the stored password, a uri naming every member.
    let secret = tusk_local::secret(&cluster.layout(), "app").expect("secret app");
    let keys = secret.to_map();
    let names: Vec<&str> = keys.keys().copied().collect();
    assert_eq!(
        names,
        ["dbname", "host", "jdbc-uri", "password", "port", "uri", "user", "verifier"]
    );
    assert_eq!(keys["dbname"], "zoo");
    assert_eq!(keys["host"], "127.41.1.2,127.41.1.3");
    let password_file = cluster.state_dir.join("passwords/app");
    assert_eq!(
        std::fs::read_to_string(&password_file).unwrap().trim(),
        secret.password
    );
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&password_file)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    assert!(secret.verifier.starts_with("SCRAM-SHA-256$"));
    assert_eq!(
        as_superuser(
            &cluster,
            "SELECT rolpassword FROM pg_authid WHERE rolname = 'app'"
        ),
        secret.verifier
    );
    for line in cluster.progress.lock().unwrap().iter() {
        assert!(
            !line.contains(&secret.password) && !line.contains(&secret.verifier),
            "a progress line leaks a secret: {line}"
        );
    }
    assert!(
        secret.uri.contains("127.41.1.2:5432,127.41.1.3:5432")
            && secret.uri.contains("target_session_attrs=read-write")
            && secret.uri.contains("sslmode=verify-full"),
        "{}",
        secret.uri
    );

    // 3. The uri connects as the user over verified TLS and reaches the primary.
    let (leader, leader_host) = cluster.leader();
    let probe = "SELECT current_user, current_database(), pg_is_in_recovery(), \
                 host(inet_server_addr()), (SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid())";
    assert_eq!(
        psql(&secret.uri, probe).expect("the secret's uri connects"),
        format!("app|zoo|f|{leader_host}|t")
    );
    // Plain TCP is refused by the server even with the right password.
    let plain = format!(
        "host={leader_host} port=5432 dbname=zoo user=app password={} sslmode=disable",
        secret.password
    );
    let refused = psql(&plain, "SELECT 1").expect_err("sslmode=disable must be rejected");
    assert!(refused.contains("no encryption"), "{refused}");
    // `tusk local psql --user app` goes the same way.
    let args: Vec<OsString> = [
        "-X",
        "-A",
        "-t",
        "-c",
        "SELECT current_user, pg_is_in_recovery()",
    ]
    .into_iter()
    .map(OsString::from)
    .collect();
    let via_cli = output(tusk_local::psql_command(&cluster.layout(), Some("app"), &args).unwrap());
    assert_eq!(via_cli.as_deref(), Ok("app|f"));
    // Unknown users are named.
    let unknown = tusk_local::secret(&cluster.layout(), "ghost").unwrap_err();
    assert!(unknown.to_string().contains("\"ghost\""), "{unknown}");

    // 4. Options and databases change on the next up; the init SQL does not run again.
    let v2 = cluster.write(
        "v2.yaml",
        &users_manifest("NOSUPERUSER", "zoo, park", Some("init.sql")),
    );
    cluster.up(&v2).expect("up v2");
    assert_eq!(
        as_superuser(
            &cluster,
            "SELECT rolsuper FROM pg_roles WHERE rolname = 'app'"
        ),
        "f"
    );
    assert_eq!(
        as_superuser(
            &cluster,
            "SELECT string_agg(datname, ',' ORDER BY datname) FROM pg_database \
             WHERE datname IN ('zoo', 'park')"
        ),
        "park,zoo"
    );
    assert_eq!(
        psql(&secret.uri, "SELECT count(*) FROM init_runs").unwrap(),
        "1",
        "databaseInitSQL ran more than once"
    );
    assert_eq!(
        tusk_local::secret(&cluster.layout(), "app")
            .unwrap()
            .password,
        secret.password,
        "the password must survive an up"
    );

    // 5. After a switchover the same uri follows the primary.
    let target = tusk_local::status(&cluster.layout())
        .unwrap()
        .members
        .into_iter()
        .find(|m| m.name != leader)
        .expect("a replica");
    let new_leader = tusk_local::switchover(
        &cluster.layout(),
        Some(&target.name),
        std::time::Duration::from_secs(180),
        &mut |_| {},
    )
    .expect("switchover");
    assert_eq!(new_leader, target.name);
    assert_eq!(
        psql(
            &secret.uri,
            "SELECT pg_is_in_recovery(), host(inet_server_addr())"
        )
        .unwrap(),
        format!("f|{}", target.host)
    );
    psql(&secret.uri, "INSERT INTO init_runs DEFAULT VALUES").expect("write after switchover");

    // 6. A failing databaseInitSQL: non-zero naming the field, not recorded, cluster running.
    let v3 = cluster.write("v3.yaml", &users_manifest("NOSUPERUSER", "zoo, park", None));
    cluster
        .up(&v3)
        .expect("up without databaseInitSQL forgets its record");
    cluster.write("bad.sql", "\\set ON_ERROR_STOP 1\nSELECT 1/0;\n");
    let v4 = cluster.write(
        "v4.yaml",
        &users_manifest("NOSUPERUSER", "zoo, park", Some("bad.sql")),
    );
    let error = cluster.up(&v4).expect_err("failing init SQL must fail up");
    let message = error.to_string();
    assert!(
        message.contains("spec.databaseInitSQL") && message.contains("division by zero"),
        "{message}"
    );
    assert!(!cluster
        .state_dir
        .join(tusk_local::sql::INIT_SQL_MARKER)
        .exists());
    // Left running: every member's processes are there and the primary takes writes.
    let report = tusk_local::status(&cluster.layout()).unwrap();
    assert!(
        report
            .members
            .iter()
            .all(|m| m.pids.patroni.is_some() && m.pids.postgres.is_some()),
        "{report:#?}"
    );
    psql(&secret.uri, "INSERT INTO init_runs DEFAULT VALUES").expect("write after the failure");
}
