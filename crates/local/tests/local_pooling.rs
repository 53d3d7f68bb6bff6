//! PgBouncer in `tusk local` on a real 2-member cluster (127.45.1.x, PgBouncer on .250):
//! pgbench through PgBouncer in transaction pooling over verified TLS; the Secret's
//! `pgbouncer-uri` connects with psql and lands on the primary, also after a switchover; a
//! `config.global` change is applied by RELOAD (admin console `SHOW CONFIG`) while a
//! transaction opened before it keeps its server connection and PgBouncer keeps its pid; the
//! auth role cannot read `pg_authid` and its lookup function returns nothing for `postgres`.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{manifest, output, psql, Cluster};
use tusk_local::sql::{connect, ConnectTarget, Pem};

const PGBENCH: &str = "/usr/bin/pgbench";
const POOLER_PORT: u16 = 6432;

fn pooling_manifest(default_pool_size: u32) -> String {
    manifest(
        "reef",
        2,
        &format!(
            "  users:\n    - name: app\n      databases: [reef]\n  proxy:\n    pgBouncer:\n      \
             port: {POOLER_PORT}\n      config:\n        global:\n          pool_mode: transaction\n          \
             default_pool_size: \"{default_pool_size}\"\n"
        ),
    )
}

/// `pgbench` through PgBouncer as `app` with verify-full TLS; its stdout.
fn pgbench(cluster: &Cluster, args: &[&str]) -> String {
    let secret = tusk_local::secret(&cluster.layout(), "app").unwrap();
    let keys = secret.to_map();
    let mut command = Command::new(PGBENCH);
    command
        .env_clear()
        .env("PGPASSWORD", &secret.password)
        .env("PGSSLMODE", "verify-full")
        .env(
            "PGSSLROOTCERT",
            tusk_local::users::ca_file(&cluster.layout()),
        )
        .args(["-h", &keys["pgbouncer-host"], "-p", &keys["pgbouncer-port"]])
        .args(["-U", "app"])
        .args(args)
        .arg("reef");
    output(command).unwrap_or_else(|e| panic!("pgbench {args:?}: {e}"))
}

/// `number of transactions actually processed: N` of a pgbench run.
fn processed(report: &str) -> u64 {
    report
        .lines()
        .find_map(|l| l.strip_prefix("number of transactions actually processed: "))
        .and_then(|rest| rest.split('/').next())
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no transaction count in:\n{report}"))
}

/// `SHOW CONFIG` value of `key` on the admin console.
fn show_config(cluster: &Cluster, text: &str, key: &str) -> String {
    let validated = tusk_api::validate_yaml(text).unwrap();
    let run_as = tusk_local::system::RunAs::detect().unwrap();
    let command =
        tusk_local::pgbouncer::admin_command(&validated, &cluster.layout(), &run_as, "SHOW CONFIG")
            .expect("the spec has PgBouncer");
    let rows = output(command).unwrap_or_else(|e| panic!("SHOW CONFIG: {e}"));
    rows.lines()
        .find_map(|l| {
            let mut fields = l.split('|');
            (fields.next() == Some(key)).then(|| fields.next().unwrap_or_default().to_owned())
        })
        .unwrap_or_else(|| panic!("{key} not in SHOW CONFIG:\n{rows}"))
}

fn pooler_pid(cluster: &Cluster) -> u32 {
    let report = tusk_local::status(&cluster.layout()).unwrap();
    let pooler = report.pgbouncer.expect("status reports pgbouncer");
    assert_eq!(pooler.host, format!("{}.250", cluster.network));
    assert_eq!(pooler.port, POOLER_PORT);
    pooler.pid.expect("pgbouncer runs")
}

#[test]
fn pgbench_secret_reload_and_switchover_through_pgbouncer() {
    let cluster = Cluster::new("127.45.1");
    let v1_text = pooling_manifest(7);
    let v1 = cluster.write("v1.yaml", &v1_text);
    cluster.up(&v1).expect("up");
    let pid = pooler_pid(&cluster);
    let status = tusk_local::status(&cluster.layout()).unwrap();
    assert!(status.exporter.is_none(), "no exporter in this spec");

    // 1. The Secret's pgbouncer-uri connects and reaches the primary.
    let secret = tusk_local::secret(&cluster.layout(), "app")
        .unwrap()
        .to_map();
    assert_eq!(secret["pgbouncer-host"], "127.45.1.250");
    assert!(secret["pgbouncer-jdbc-uri"].contains("prepareThreshold=0"));
    let (leader, leader_host) = cluster.leader();
    let via_pooler = |sql: &str| psql(&secret["pgbouncer-uri"], sql).unwrap();
    assert_eq!(
        via_pooler(
            "SELECT current_user || ' ' || host(inet_server_addr()) || ' ' || pg_is_in_recovery()"
        ),
        format!("app {leader_host} false")
    );
    // Clients must use TLS.
    let plain = psql(
        &format!(
            "host=127.45.1.250 port={POOLER_PORT} user=app dbname=reef sslmode=disable password={}",
            secret["password"]
        ),
        "SELECT 1",
    );
    assert!(plain.is_err(), "PgBouncer accepted a client without TLS");

    // 2. pgbench: initialise, then a run in transaction pooling.
    pgbench(&cluster, &["-i", "-s", "1", "-q"]);
    let run = pgbench(&cluster, &["-c", "4", "-j", "2", "-T", "5", "-n"]);
    eprintln!("pgbench through pgbouncer:\n{run}");
    assert!(processed(&run) > 0, "{run}");
    assert!(run.contains("query mode: simple"), "{run}");

    // 3. A config change is a RELOAD: a transaction opened before keeps its server
    // connection, PgBouncer keeps its pid, SHOW CONFIG shows the new value.
    assert_eq!(show_config(&cluster, &v1_text, "default_pool_size"), "7");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let target = ConnectTarget {
        host: "127.45.1.250".into(),
        hostaddr: None,
        port: POOLER_PORT,
        socket_dir: None,
        user: "app".into(),
        ca: Some(Pem::File(tusk_local::users::ca_file(&cluster.layout()))),
        client_cert: None,
        password: Some(secret["password"].clone()),
    };
    let client = runtime
        .block_on(connect(&target, "reef"))
        .expect("connect through pgbouncer");
    // Simple protocol only: named prepared statements do not survive transaction pooling.
    let one_value = |client: &tokio_postgres::Client, sql: &str| -> String {
        let messages = runtime
            .block_on(client.simple_query(sql))
            .unwrap_or_else(|e| panic!("{sql} in the open session: {e}"));
        messages
            .iter()
            .find_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0).map(str::to_owned),
                _ => None,
            })
            .unwrap_or_else(|| panic!("{sql}: no row"))
    };
    let backend = |client: &tokio_postgres::Client| one_value(client, "SELECT pg_backend_pid()");
    runtime.block_on(client.batch_execute("BEGIN")).unwrap();
    let before = backend(&client);

    let v2_text = pooling_manifest(9);
    let v2 = cluster.write("v2.yaml", &v2_text);
    cluster.up(&v2).expect("up v2");
    assert!(
        cluster
            .progress
            .lock()
            .unwrap()
            .iter()
            .any(|l| l == "pgbouncer reloaded"),
        "up did not reload PgBouncer"
    );
    // SIGHUP is handled asynchronously; wait (bounded) for the new value.
    let start = Instant::now();
    while show_config(&cluster, &v2_text, "default_pool_size") != "9" {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "reload never applied"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        backend(&client),
        before,
        "the transaction lost its server connection"
    );
    runtime.block_on(client.batch_execute("COMMIT")).unwrap();
    assert_eq!(
        one_value(&client, "SELECT 1 + 1"),
        "2",
        "the session opened before the reload is unusable"
    );
    assert_eq!(
        pooler_pid(&cluster),
        pid,
        "PgBouncer was restarted, not reloaded"
    );

    // 4. Role checks, as the auth role itself over TLS to the primary.
    let auth_password = tusk_local::passwords::ensure_service_password(
        &cluster.layout(),
        tusk_config::pgbouncer::AUTH_USER,
    )
    .unwrap();
    let as_auth_role = |sql: &str| {
        psql(
            &format!(
                "host={leader_host} port=5432 user=_tusk_pgbouncer dbname=reef sslmode=verify-full \
                 sslrootcert={} password={auth_password}",
                tusk_local::users::ca_file(&cluster.layout()).display()
            ),
            sql,
        )
    };
    let denied = as_auth_role("SELECT rolpassword FROM pg_authid LIMIT 1").unwrap_err();
    assert!(denied.contains("permission denied"), "{denied}");
    assert_eq!(
        as_auth_role("SELECT count(*) FROM _tusk_pgbouncer.get_auth('postgres')").unwrap(),
        "0"
    );
    assert!(
        as_auth_role("SELECT password FROM _tusk_pgbouncer.get_auth('app')")
            .unwrap()
            .starts_with("SCRAM-SHA-256$")
    );

    // 5. After a switchover PgBouncer routes to the new primary.
    let new = tusk_local::switchover(
        &cluster.layout(),
        None,
        Duration::from_secs(180),
        &mut |_| {},
    )
    .expect("switchover");
    assert_ne!(new, leader);
    let (_, new_host) = cluster.leader();
    let start = Instant::now();
    loop {
        match psql(
            &secret["pgbouncer-uri"],
            "SELECT host(inet_server_addr()) || ' ' || pg_is_in_recovery()",
        ) {
            Ok(answer) if answer == format!("{new_host} false") => break,
            other => assert!(
                start.elapsed() < Duration::from_secs(30),
                "PgBouncer does not reach the new primary {new_host}: {other:?}"
            ),
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(pooler_pid(&cluster), pid);
}
