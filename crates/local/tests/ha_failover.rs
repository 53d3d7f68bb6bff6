//! Unplanned and planned leader changes of a 3-member `tusk local` cluster, with real etcd,
//! Patroni and PostgreSQL: a crashed primary (SIGKILL of Patroni, the postmaster and its
//! children) is replaced, clients follow through a multi-host libpq connection string, and
//! the crashed member rejoins as a replica with the rows written after it died; a switchover
//! to a named member makes it the leader and the old primary a streaming replica.
//! Each test has its own network (127.43.x) and state dir; everything stops on drop.

#[path = "common/ha.rs"]
mod ha;

use std::time::{Duration, Instant};

use ha::{manifest, Cluster, ManifestEdit};

/// Short lease and loop: these tests are about the shape of the cluster after a leader
/// change, not about the default timings (the benchmark measures those).
fn fast_ha(synchronous_mode: bool) -> ManifestEdit {
    ManifestEdit {
        ttl: Some(8),
        loop_wait: Some(2),
        synchronous_mode: Some(synchronous_mode),
        ..ManifestEdit::default()
    }
}

/// Retries `write` through the multi-host URI until it succeeds (a client reconnecting
/// while the new primary opens for writes), bounded.
fn write_through_uri(cluster: &Cluster, sql: &str) -> String {
    let start = Instant::now();
    loop {
        match cluster.psql_multi_host(sql) {
            Ok(out) => return out,
            Err(e) if start.elapsed() > ha::WAIT_LIMIT => panic!("{sql}: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

/// Polls superuser SQL on `member` until it returns `expected`, bounded; returns the last.
fn eventually(cluster: &Cluster, member: &str, sql: &str, expected: &str) -> String {
    let start = Instant::now();
    loop {
        let got = cluster.superuser_sql(member, sql).unwrap_or_default();
        if got == expected || start.elapsed() > Duration::from_secs(60) {
            return got;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn crashed_primary_is_replaced_and_rejoins_as_a_replica_with_later_rows() {
    let cluster = Cluster::new("127.43.1");
    // Asynchronous replication: the crashed primary may hold WAL nobody else has, which
    // is what pg_rewind is for when it rejoins.
    let file = cluster.write_manifest(&manifest("02-hippo-ha.yaml", &fast_ha(false)));
    cluster.up(&file).expect("up");
    cluster.create_test_table();
    write_through_uri(&cluster, "INSERT INTO rows VALUES (1, 'before the crash')");

    let old = cluster.leader();
    let old_host = cluster.host_of(&old);
    let killed = cluster.crash_member(&old);
    assert!(killed.len() > 2, "postmaster children were killed too");
    // SIGKILL is delivered asynchronously: give each victim a moment to be gone.
    for pid in &killed {
        assert!(
            tusk_local::system::wait_gone(*pid, "", Duration::from_secs(10)),
            "pid {pid} survived SIGKILL"
        );
    }

    let new = cluster.wait_new_leader(&old);
    assert_ne!(new, old);
    // The multi-host URI reaches the new primary: the write lands there, over TLS.
    let landed = write_through_uri(
        &cluster,
        "INSERT INTO rows VALUES (2, 'after the crash'); \
         SELECT host(inet_server_addr()) || ' ' || \
                (SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid())",
    );
    assert_eq!(landed, format!("{} true", cluster.host_of(&new)));
    assert_ne!(cluster.host_of(&new), old_host);

    // `up` again restarts the crashed member; it must follow the new primary.
    cluster.up(&file).expect("up after the crash");
    let report = cluster.status();
    let rejoined = report.members.iter().find(|m| m.name == old).unwrap();
    let leader = report.members.iter().find(|m| m.role == "leader").unwrap();
    assert_eq!(
        leader.name, new,
        "the new primary keeps leading: {report:#?}"
    );
    assert_ne!(rejoined.role, "leader", "{report:#?}");
    assert_eq!(rejoined.state, "running", "{report:#?}");
    cluster.assert_every_replica_streams();
    assert_eq!(rejoined.timeline, leader.timeline, "{report:#?}");
    assert_eq!(
        cluster
            .superuser_sql(&old, "SELECT pg_is_in_recovery()")
            .unwrap(),
        "t"
    );
    assert!(cluster
        .superuser_sql(
            &new,
            "SELECT application_name FROM pg_stat_replication WHERE state = 'streaming'"
        )
        .unwrap()
        .lines()
        .any(|l| l == old));
    assert_eq!(
        eventually(
            &cluster,
            &old,
            "SELECT string_agg(note, ',' ORDER BY id) FROM rows",
            "before the crash,after the crash"
        ),
        "before the crash,after the crash"
    );
}

#[test]
fn switchover_to_a_named_member_makes_the_old_primary_a_streaming_replica() {
    let cluster = Cluster::new("127.43.2");
    let file = cluster.write_manifest(&manifest("02-hippo-ha.yaml", &fast_ha(true)));
    cluster.up(&file).expect("up");
    let old = cluster.leader();
    let report = cluster.status();
    // The last replica in state order: not simply "the next one".
    let target = report
        .members
        .iter()
        .rev()
        .find(|m| m.name != old)
        .unwrap()
        .name
        .clone();

    let new = tusk_local::switchover(
        &cluster.layout(),
        Some(&target),
        ha::WAIT_LIMIT,
        &mut |line| eprintln!("[{}] {line}", cluster.network),
    )
    .expect("switchover");
    assert_eq!(new, target);

    let report = cluster.status();
    let leaders: Vec<&str> = report
        .members
        .iter()
        .filter(|m| m.role == "leader")
        .map(|m| m.name.as_str())
        .collect();
    assert_eq!(leaders, [target.as_str()], "{report:#?}");
    assert_eq!(
        cluster
            .superuser_sql(&target, "SELECT pg_is_in_recovery()")
            .unwrap(),
        "f"
    );
    assert_eq!(
        cluster
            .superuser_sql(&old, "SELECT pg_is_in_recovery()")
            .unwrap(),
        "t"
    );
    // The old primary streams from the new one (its WAL receiver points at the target).
    assert_eq!(
        eventually(
            &cluster,
            &old,
            "SELECT status || ' ' || sender_host FROM pg_stat_wal_receiver",
            &format!("streaming {}", cluster.host_of(&target)),
        ),
        format!("streaming {}", cluster.host_of(&target))
    );
    // And a write on the new primary reaches it.
    cluster
        .superuser_sql(
            &target,
            "CREATE TABLE after_switchover (note text); \
             INSERT INTO after_switchover VALUES ('written on the new primary')",
        )
        .unwrap();
    assert_eq!(
        eventually(
            &cluster,
            &old,
            "SELECT note FROM after_switchover",
            "written on the new primary"
        ),
        "written on the new primary"
    );
}
