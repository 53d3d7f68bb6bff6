//! `tusk local` against the real programs (etcd-server, patroni, postgresql-15, pgbackrest
//! from Debian). Each test uses its own loopback network (127.31.x) and temp state dir, and
//! a guard stops every process it started on drop, even when the test panics.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{psql, Cluster};

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples")
        .join(name)
}

/// SQL on a member over TCP+TLS as the test's password user, verifying the member's
/// certificate against the local CA and its address (`verify-full`).
fn psql_tls(cluster: &Cluster, host: &str, sql: &str) -> Result<String, String> {
    let ca = cluster.state_dir.join("ca/ca.crt");
    let conninfo = format!(
        "host={host} port=5432 dbname=postgres user=tester password=tester-password \
         sslmode=verify-full sslrootcert={}",
        ca.display()
    );
    psql(&conninfo, sql)
}

fn leader_and_replicas(report: &tusk_local::StatusReport) -> (String, Vec<String>) {
    let leader = report
        .members
        .iter()
        .find(|m| m.role == "leader")
        .unwrap_or_else(|| panic!("no leader in {report:#?}"));
    let replicas = report
        .members
        .iter()
        .filter(|m| m.role != "leader")
        .map(|m| m.host.clone())
        .collect();
    (leader.host.clone(), replicas)
}

#[test]
fn three_members_replicate_and_an_invalid_manifest_changes_nothing() {
    let cluster = Cluster::new("127.31.7");
    cluster.up(&example("02-hippo-ha.yaml")).expect("up");

    let report = tusk_local::status(&cluster.layout()).unwrap();
    assert_eq!(report.members.len(), 3, "{report:#?}");
    let hosts: Vec<&str> = report.members.iter().map(|m| m.host.as_str()).collect();
    assert_eq!(hosts, ["127.31.7.2", "127.31.7.3", "127.31.7.4"]);
    for m in &report.members {
        assert!(
            m.pids.patroni.is_some() && m.pids.postgres.is_some(),
            "{m:#?}"
        );
        assert_eq!(m.state, "running", "{m:#?}");
    }
    let (leader, replicas) = leader_and_replicas(&report);
    assert_eq!(replicas.len(), 2);

    // A password user over TLS: the superuser has no TCP access by design.
    let leader_name = &report
        .members
        .iter()
        .find(|m| m.host == leader)
        .unwrap()
        .name;
    tusk_local::members::psql(
        &tusk_api::validate_yaml(&std::fs::read_to_string(example("02-hippo-ha.yaml")).unwrap())
            .unwrap(),
        &cluster.layout(),
        leader_name,
        "CREATE ROLE tester LOGIN PASSWORD 'tester-password'; \
         CREATE TABLE seen (note text); GRANT SELECT, INSERT ON seen TO tester;",
    )
    .expect("setup on the primary");
    psql_tls(
        &cluster,
        &leader,
        "INSERT INTO seen VALUES ('written on the primary')",
    )
    .expect("insert over verify-full TLS");
    assert_eq!(
        psql_tls(
            &cluster,
            &leader,
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
        )
        .unwrap(),
        "t"
    );
    for replica in &replicas {
        // Replay is asynchronous on one of the two replicas: poll, bounded.
        let start = Instant::now();
        let seen = loop {
            let got = psql_tls(&cluster, replica, "SELECT note FROM seen");
            if matches!(&got, Ok(s) if !s.is_empty()) || start.elapsed() > Duration::from_secs(60) {
                break got;
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        assert_eq!(
            seen.as_deref(),
            Ok("written on the primary"),
            "on {replica}"
        );
        assert_eq!(
            psql_tls(&cluster, replica, "SELECT pg_is_in_recovery()").unwrap(),
            "t",
            "{replica} is a replica"
        );
    }

    // An invalid manifest: refused naming the field, nothing in the state dir or processes
    // changes.
    let state_before = std::fs::read(cluster.state_dir.join("state.json")).unwrap();
    let manifest_before = std::fs::read(cluster.state_dir.join("manifest.yaml")).unwrap();
    let bad = cluster.state_dir.parent().unwrap().join("bad.yaml");
    let text = std::fs::read_to_string(example("02-hippo-ha.yaml")).unwrap();
    std::fs::write(&bad, text.replace("replicas: 3", "replicas: -2")).unwrap();
    let error = cluster.up(&bad).expect_err("invalid manifest accepted");
    let message = error.to_string();
    assert!(message.contains("spec.instances[0].replicas"), "{message}");
    assert_eq!(
        std::fs::read(cluster.state_dir.join("state.json")).unwrap(),
        state_before
    );
    assert_eq!(
        std::fs::read(cluster.state_dir.join("manifest.yaml")).unwrap(),
        manifest_before
    );
    let after = tusk_local::status(&cluster.layout()).unwrap();
    let pids =
        |r: &tusk_local::StatusReport| r.members.iter().map(|m| m.pids.clone()).collect::<Vec<_>>();
    assert_eq!(pids(&after), pids(&report));
}

#[test]
fn down_stops_every_process_and_purge_deletes_the_state_dir() {
    let cluster = Cluster::new("127.31.8");
    cluster.up(&example("01-hippo-basic.yaml")).expect("up");
    let report = tusk_local::status(&cluster.layout()).unwrap();
    let member = &report.members[0];
    let pids = [
        member.pids.patroni.expect("patroni runs"),
        member.pids.postgres.expect("postgres runs"),
        tusk_local::etcd::pid(&cluster.layout()).expect("etcd runs"),
    ];
    // Archiving works: the stanza exists in the directory repository.
    assert!(cluster
        .state_dir
        .join("pgbackrest/repo1/archive/db")
        .is_dir());

    tusk_local::down(&cluster.layout(), false, &mut |_| {}).unwrap();
    for pid in pids {
        assert!(
            !tusk_local::system::alive(pid, ""),
            "pid {pid} still runs after down"
        );
    }
    let report = tusk_local::status(&cluster.layout()).unwrap();
    assert_eq!(report.members[0].state, "stopped");
    assert!(
        cluster.state_dir.join("members").is_dir(),
        "down keeps data"
    );

    tusk_local::down(&cluster.layout(), true, &mut |_| {}).unwrap();
    assert!(!cluster.state_dir.exists(), "--purge left the state dir");
}
