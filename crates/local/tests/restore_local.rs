//! Restores with real pgBackRest, Patroni and PostgreSQL: clones of a local cluster
//! (`spec.dataSource.postgresCluster`) that are identical, stop at a point in time, or hold
//! only one database (`--db-include`); and `tusk local restore --target` in place on a
//! 2-member cluster, which then accepts writes with its replica streaming again.
//! Networks 127.56.x (clones) and 127.57.1 (in place).

mod common;

use std::time::Duration;

use common::{manifest, Cluster};
use tusk_local::backup::{run_backup, BackupKind};
use tusk_local::restore::{restore_in_place, RestoreOptions};

const REPO: &str = "      repos:
        - name: repo1
          volume:
            volumeClaimSpec:
              accessModes: [\"ReadWriteOnce\"]
              resources: { requests: { storage: 1Gi } }
";

fn backups() -> String {
    format!("  backups:\n    pgbackrest:\n{REPO}")
}

/// A clone of cluster `source` with restore `options` (YAML list items, 8 spaces in).
fn clone_manifest(name: &str, source: &str, options: &[&str]) -> String {
    let mut extra = format!(
        "  dataSource:\n    postgresCluster:\n      clusterName: {source}\n      repoName: repo1\n"
    );
    if !options.is_empty() {
        extra += "      options:\n";
        for o in options {
            extra += &format!("        - {o}\n");
        }
    }
    manifest(name, 1, &(extra + &backups()))
}

fn progress(line: &str) {
    eprintln!("[restore] {line}");
}

/// A checksum of the whole table, in a stable order.
fn checksum(cluster: &Cluster) -> String {
    cluster
        .sql(
            "zoo",
            "SELECT count(*) || ':' || md5(string_agg(t::text, ',' ORDER BY id)) FROM t",
        )
        .expect("checksum")
}

/// Rows 1..=`first` committed, then a recorded time (UTC, whole seconds), then rows up to
/// `last`. Sleeps keep each batch strictly on its side of the recorded second.
fn rows_around_a_timestamp(cluster: &Cluster, first: u32, last: u32) -> String {
    cluster
        .sql(
            "zoo",
            &format!("CREATE TABLE IF NOT EXISTS t (id int PRIMARY KEY, v text); INSERT INTO t SELECT i, md5(i::text) FROM generate_series(1, {first}) i"),
        )
        .expect("first rows");
    cluster
        .sql("zoo", "SELECT pg_switch_wal()")
        .expect("switch");
    std::thread::sleep(Duration::from_millis(1100));
    let at = cluster
        .sql(
            "zoo",
            "SELECT to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS') || '+00'",
        )
        .expect("now");
    std::thread::sleep(Duration::from_millis(1100));
    cluster
        .sql(
            "zoo",
            &format!(
                "INSERT INTO t SELECT i, md5(i::text) FROM generate_series({}, {last}) i",
                first + 1
            ),
        )
        .expect("later rows");
    at
}

#[test]
fn clones_are_identical_stop_at_a_time_or_hold_one_database() {
    let hippo = Cluster::named("127.56.1", "hippo");
    let file = hippo.write(
        "hippo.yaml",
        &manifest(
            "hippo",
            1,
            &format!(
                "  users:\n    - name: app\n      databases: [zoo, other]\n{}",
                backups()
            ),
        ),
    );
    hippo.up(&file).expect("up hippo");
    hippo
        .sql("other", "CREATE TABLE o (x int); INSERT INTO o VALUES (42)")
        .expect("other db");
    run_backup(&hippo.layout(), BackupKind::Full, None, &mut progress).expect("full");
    let at = rows_around_a_timestamp(&hippo, 100, 120);
    // The incremental backup also waits until the WAL of the later rows is archived.
    run_backup(&hippo.layout(), BackupKind::Incr, None, &mut progress).expect("incr");
    let source_sum = checksum(&hippo);
    assert!(source_sum.starts_with("120:"), "{source_sum}");

    // A source that does not exist is refused before anything is created.
    let missing = hippo.beside("127.56.9", "ghost-clone");
    let file = missing.write("ghost.yaml", &clone_manifest("ghost-clone", "ghost", &[]));
    let err = missing.up(&file).unwrap_err().to_string();
    assert!(
        err.starts_with("spec.dataSource.postgresCluster: no pgBackRest repository"),
        "{err}"
    );
    assert!(!missing.state_dir.exists());

    {
        let elephant = hippo.beside("127.56.2", "elephant");
        let file = elephant.write("elephant.yaml", &clone_manifest("elephant", "hippo", &[]));
        elephant.up(&file).expect("up elephant");
        assert_eq!(checksum(&elephant), source_sum, "the clone has every row");
        // Its own repo, its own stanza: it backs up without touching the source's.
        run_backup(&elephant.layout(), BackupKind::Full, None, &mut progress)
            .expect("clone backup");
        assert_eq!(
            tusk_local::backup::list_backups(&hippo.layout())
                .unwrap()
                .len(),
            2,
            "the source repo is unchanged"
        );
    }
    {
        let rhino = hippo.beside("127.56.3", "rhino");
        let target = format!("--target=\"{at}\"");
        let file = rhino.write(
            "rhino.yaml",
            &clone_manifest("rhino", "hippo", &["--type=time", &format!("'{target}'")]),
        );
        rhino.up(&file).expect("up rhino");
        assert_eq!(
            rhino.sql("zoo", "SELECT count(*), max(id) FROM t").unwrap(),
            "100|100",
            "exactly the rows committed before {at}"
        );
        rhino
            .sql("zoo", "INSERT INTO t VALUES (1000, 'new')")
            .expect("the PITR clone accepts writes");
    }
    {
        let lion = hippo.beside("127.56.4", "lion");
        let file = lion.write(
            "lion.yaml",
            &clone_manifest("lion", "hippo", &["--db-include=zoo"]),
        );
        lion.up(&file).expect("up lion");
        assert_eq!(checksum(&lion), source_sum);
        // pgBackRest restores the other databases as zeroed files: they exist in the
        // catalog but cannot be read.
        assert_eq!(
            lion.sql(
                "postgres",
                "SELECT count(*) FROM pg_database WHERE datname = 'other'"
            )
            .unwrap(),
            "1"
        );
        let other = lion.sql("other", "SELECT x FROM o");
        eprintln!("reading the excluded database: {other:?}");
        assert!(other.is_err(), "{other:?}");
    }
}

#[test]
fn in_place_restore_keeps_the_rows_before_the_target_and_replicas_stream_again() {
    let hippo = Cluster::new("127.57.1");
    let file = hippo.write(
        "hippo.yaml",
        &manifest(
            "hippo",
            2,
            &format!(
                "  users:\n    - name: app\n      databases: [zoo]\n{}",
                backups()
            ),
        ),
    );
    hippo.up(&file).expect("up");
    let layout = hippo.layout();
    run_backup(&layout, BackupKind::Full, None, &mut progress).expect("full");
    let at = rows_around_a_timestamp(&hippo, 50, 80);
    run_backup(&layout, BackupKind::Incr, None, &mut progress).expect("incr");
    let timeline_before = tusk_local::status(&layout)
        .unwrap()
        .members
        .into_iter()
        .find(|m| m.role == "leader")
        .and_then(|m| m.timeline);
    assert!(timeline_before.is_some());

    // Bad input changes nothing: the cluster keeps every row and both members.
    let bad = RestoreOptions {
        target: Some("not a time".into()),
        repo: None,
        wait_limit: Duration::from_secs(180),
    };
    let err = restore_in_place(&layout, &bad, &mut progress)
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("--target: \"not a time\" is not a timestamp"),
        "{err}"
    );
    assert!(checksum(&hippo).starts_with("80:"));

    let options = RestoreOptions {
        target: Some(at.clone()),
        repo: None,
        wait_limit: Duration::from_secs(180),
    };
    let leader = restore_in_place(&layout, &options, &mut progress).expect("restore");
    assert_eq!(
        hippo.sql("zoo", "SELECT count(*), max(id) FROM t").unwrap(),
        "50|50",
        "rows after {at} are gone"
    );
    hippo
        .sql("zoo", "INSERT INTO t VALUES (500, 'after')")
        .expect("writes");
    let (_, validated) = tusk_local::up::load_manifest(&layout.manifest()).unwrap();
    let streaming = tusk_local::observe::streaming_members(&validated, &layout, &leader).unwrap();
    let report = tusk_local::status(&layout).unwrap();
    assert_eq!(report.members.len(), 2);
    let replica = report
        .members
        .iter()
        .find(|m| m.name != leader)
        .expect("replica");
    assert!(
        streaming.contains(&replica.name),
        "{streaming:?} {report:#?}"
    );
    let primary = report.members.iter().find(|m| m.name == leader).unwrap();
    assert!(
        primary.timeline > timeline_before,
        "a new timeline: {timeline_before:?} then {report:#?}"
    );
}
