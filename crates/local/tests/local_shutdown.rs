//! `spec.shutdown` on a real local cluster (2 members on 127.41.2.x): `true` stops Patroni and
//! PostgreSQL on every member but keeps data and etcd; `false` starts them again, the same
//! primary leads, and a row written before the shutdown is there.

mod common;

use std::ffi::OsString;

use common::{manifest, output, Cluster};

fn as_superuser(cluster: &Cluster, sql: &str) -> Result<String, String> {
    let args: Vec<OsString> = ["-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-c", sql]
        .into_iter()
        .map(OsString::from)
        .collect();
    output(tusk_local::psql_command(&cluster.layout(), None, &args).map_err(|e| e.to_string())?)
}

#[test]
fn shutdown_stops_every_member_keeps_data_and_starts_again() {
    let cluster = Cluster::new("127.41.2");
    let running = cluster.write("running.yaml", &manifest("pause", 2, "  shutdown: false\n"));
    let stopped = cluster.write("stopped.yaml", &manifest("pause", 2, "  shutdown: true\n"));
    cluster.up(&running).expect("up");
    as_superuser(
        &cluster,
        "CREATE TABLE kept (note text); INSERT INTO kept VALUES ('before shutdown')",
    )
    .expect("write on the primary");
    let (leader, _) = cluster.leader();
    let before = tusk_local::status(&cluster.layout()).unwrap();
    let pids: Vec<u32> = before
        .members
        .iter()
        .flat_map(|m| [m.pids.patroni, m.pids.postgres])
        .map(|pid| pid.expect("every member runs Patroni and PostgreSQL"))
        .collect();
    assert_eq!(pids.len(), 4);

    cluster.up(&stopped).expect("up with shutdown: true");
    for pid in &pids {
        assert!(
            !tusk_local::system::alive(*pid, ""),
            "pid {pid} still runs after shutdown"
        );
    }
    let report = tusk_local::status(&cluster.layout()).unwrap();
    for m in &report.members {
        assert_eq!(
            (m.role.as_str(), m.state.as_str()),
            ("stopped", "stopped"),
            "{m:#?}"
        );
        assert_eq!(m.pids.patroni, None);
        assert_eq!(m.pids.postgres, None);
        let pg_version = cluster
            .layout()
            .member(&m.name)
            .data_dir()
            .join("PG_VERSION");
        assert!(pg_version.is_file(), "data of {} was not kept", m.name);
    }
    assert!(
        tusk_local::etcd::pid(&cluster.layout()).is_some(),
        "etcd keeps running through a shutdown"
    );
    assert!(
        as_superuser(&cluster, "SELECT 1").is_err(),
        "nothing answers SQL"
    );
    // A second shutdown is a no-op, not an error.
    cluster.up(&stopped).expect("repeated shutdown");

    cluster.up(&running).expect("up with shutdown: false");
    // `up` returns once every replica streams (pg_stat_replication); Patroni reports the
    // replica `running` on its next loop, so poll for that, bounded.
    let start = std::time::Instant::now();
    let report = loop {
        let report = tusk_local::status(&cluster.layout()).unwrap();
        let all_running = report
            .members
            .iter()
            .all(|m| m.state == "running" && m.pids.postgres.is_some());
        if all_running || start.elapsed() > std::time::Duration::from_secs(60) {
            break report;
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
    };
    assert!(
        report
            .members
            .iter()
            .all(|m| m.state == "running" && m.pids.postgres.is_some()),
        "{report:#?}"
    );
    assert_eq!(
        cluster.leader().0,
        leader,
        "the previous primary leads again"
    );
    assert_eq!(
        as_superuser(&cluster, "SELECT note FROM kept").unwrap(),
        "before shutdown"
    );
}
