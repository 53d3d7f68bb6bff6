//! Standby clusters (`spec.standby`) with real Patroni, PostgreSQL and pgBackRest: a
//! repo-based standby replays the source's archived WAL; a streaming standby follows over TLS,
//! authenticated by the replication certificate of custom TLS Secrets sharing one CA; with
//! both, the initial copy comes from the repository and then it streams. Each is
//! promoted by `enabled: false` + `up` (after its source is stopped, as the PGO family
//! requires) and then accepts writes. Bad input (no stanza to follow, a replication
//! certificate with the wrong CN) is refused before anything is created. Networks 127.62.x.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{manifest, Cluster};
use tusk_local::backup::{run_backup, BackupKind};

/// Bound on waiting for the standby to show a row the source committed.
const FOLLOW_LIMIT: Duration = Duration::from_secs(90);

const REPO: &str = "  backups:
    pgbackrest:
      repos:
        - name: repo1
          volume:
            volumeClaimSpec:
              accessModes: [\"ReadWriteOnce\"]
              resources: { requests: { storage: 1Gi } }
";

const CUSTOM_TLS: &str = "  customTLSSecret:
    name: cluster-cert
  customReplicationTLSSecret:
    name: replication-cert
";

fn progress(line: &str) {
    eprintln!("[standby] {line}");
}

/// Polls `sql` on `cluster` until it answers `expected` (bounded); the last answer otherwise.
fn wait_for(cluster: &Cluster, sql: &str, expected: &str) -> Result<(), String> {
    let start = Instant::now();
    loop {
        let answer = cluster.sql("postgres", sql);
        if answer.as_deref() == Ok(expected) {
            return Ok(());
        }
        if start.elapsed() > FOLLOW_LIMIT {
            return Err(format!("last answer {answer:?}, expected {expected:?}"));
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// Stops the source (its Drop would too): a promoted standby must not share a repository or
/// a history with a primary still taking writes.
fn stop(cluster: &Cluster) {
    tusk_local::down(&cluster.layout(), false, &mut |_| {}).expect("down");
}

/// `source` streams to one `hippo-standby-*` member over TLS, which logged in with the
/// replication certificate.
fn assert_standby_streams_by_certificate(source: &Cluster) {
    let seen = source
        .sql(
            "postgres",
            "SELECT r.application_name || '|' || s.ssl || '|' || s.client_dn \
             FROM pg_stat_replication r JOIN pg_stat_ssl s USING (pid)",
        )
        .unwrap();
    assert!(
        seen.starts_with("hippo-standby-") && seen.ends_with("|true|/CN=_tusk_repl"),
        "{seen}"
    );
}

/// Promotes `standby` with `enabled: false` and checks that it then takes writes.
fn promote_and_write(standby: &Cluster, file: &Path, text: &str, rows: &str) {
    std::fs::write(file, text.replace("enabled: true", "enabled: false")).unwrap();
    standby.up(file).expect("up with standby disabled promotes");
    assert_eq!(
        standby
            .sql("postgres", "SELECT pg_is_in_recovery()")
            .unwrap(),
        "f"
    );
    standby
        .sql("postgres", "INSERT INTO t VALUES (100)")
        .expect("the promoted cluster accepts writes");
    assert_eq!(
        standby.sql("postgres", "SELECT count(*) FROM t").unwrap(),
        rows
    );
}

#[test]
fn a_repo_standby_replays_the_archive_and_promoted_accepts_writes() {
    let hippo = Cluster::named("127.62.1", "hippo");
    let file = hippo.write("hippo.yaml", &manifest("hippo", 1, REPO));
    hippo.up(&file).expect("up hippo");
    hippo
        .sql(
            "postgres",
            "CREATE TABLE t (id int); INSERT INTO t VALUES (1)",
        )
        .expect("first row");
    run_backup(&hippo.layout(), BackupKind::Full, None, &mut progress).expect("full backup");

    let standby_manifest = |name: &str, repo_path: &Path| {
        let global = format!(
            "      global:\n        repo1-path: {}\n",
            repo_path.display()
        );
        manifest(
            name,
            1,
            &format!("{REPO}{global}  standby:\n    enabled: true\n    repoName: repo1\n"),
        )
    };

    // A repository with nothing to follow is refused before anything is created.
    let ghost = hippo.beside("127.62.9", "ghost");
    let file = ghost.write(
        "ghost.yaml",
        &standby_manifest("ghost", &ghost.state_dir.join("nowhere")),
    );
    let err = ghost.up(&file).unwrap_err().to_string();
    assert!(
        err.starts_with("spec.standby.repoName: no pgBackRest stanza"),
        "{err}"
    );
    assert!(!ghost.state_dir.exists());

    let standby = hippo.beside("127.62.2", "hippo-standby");
    let text = standby_manifest(
        "hippo-standby",
        &hippo.layout().pgbackrest_dir().join("repo1"),
    );
    let file = standby.write("hippo-standby.yaml", &text);
    standby.up(&file).expect("up the standby");
    assert_eq!(
        standby
            .sql("postgres", "SELECT pg_is_in_recovery()")
            .unwrap(),
        "t"
    );
    assert_eq!(
        standby.sql("postgres", "SELECT count(*) FROM t").unwrap(),
        "1",
        "restored from the source's backup"
    );
    let refused = standby
        .sql("postgres", "INSERT INTO t VALUES (99)")
        .unwrap_err();
    assert!(refused.contains("read-only"), "{refused}");

    // Two calls: in one, both statements would share a transaction and the switch would come
    // before the commit, leaving the commit record in a segment not yet archived.
    hippo
        .sql("postgres", "INSERT INTO t VALUES (2)")
        .expect("second row");
    hippo
        .sql("postgres", "SELECT pg_switch_wal()")
        .expect("its segment archived");
    wait_for(&standby, "SELECT count(*) FROM t", "2")
        .expect("the standby replays the archived WAL");

    stop(&hippo);
    promote_and_write(&standby, &file, &text, "3");
}

/// One CA for both clusters: server certificate naming both members, replication
/// certificate for the replication user, as Secret directories beside the manifests.
fn write_custom_tls(dir: &Path, hosts: &[&str]) {
    let now = time::OffsetDateTime::now_utc();
    let ca = tusk_pki::RootCa::generate(now).unwrap();
    let mut names: Vec<String> = hosts.iter().map(|h| h.to_string()).collect();
    names.push("localhost".into());
    let secrets = [
        (
            "cluster-cert",
            ca.issue_server("hippo-primary", &names, now).unwrap(),
        ),
        (
            "replication-cert",
            ca.issue_client("_tusk_repl", now).unwrap(),
        ),
        (
            "wrong-replication-cert",
            ca.issue_client("someone", now).unwrap(),
        ),
    ];
    for (name, leaf) in secrets {
        let secret = dir.join(name);
        std::fs::create_dir_all(&secret).unwrap();
        std::fs::write(secret.join("tls.crt"), &leaf.cert_pem).unwrap();
        std::fs::write(secret.join("tls.key"), &leaf.key_pem).unwrap();
        std::fs::write(secret.join("ca.crt"), ca.cert_pem()).unwrap();
    }
}

#[test]
fn a_streaming_standby_follows_over_tls_with_its_certificate_and_promoted_accepts_writes() {
    let hippo = Cluster::named("127.62.3", "hippo");
    let dir = hippo.state_dir.parent().unwrap().to_path_buf();
    write_custom_tls(&dir, &["127.62.3.2", "127.62.4.2"]);

    // A replication certificate that does not name the replication user is refused.
    let wrong = hippo.write(
        "wrong.yaml",
        &manifest(
            "hippo",
            1,
            &CUSTOM_TLS.replace("name: replication-cert", "name: wrong-replication-cert"),
        ),
    );
    let err = hippo.up(&wrong).unwrap_err().to_string();
    assert!(
        err.contains(
            "spec.customReplicationTLSSecret.name: the tls.crt common name is \"someone\""
        ),
        "{err}"
    );
    assert!(!hippo.state_dir.exists());

    let file = hippo.write("hippo.yaml", &manifest("hippo", 1, CUSTOM_TLS));
    hippo.up(&file).expect("up hippo with custom TLS");
    hippo
        .sql(
            "postgres",
            "CREATE TABLE t (id int); INSERT INTO t VALUES (1)",
        )
        .expect("first row");

    let standby = hippo.beside("127.62.4", "hippo-standby");
    let text = manifest(
        "hippo-standby",
        1,
        &format!(
            "{CUSTOM_TLS}  standby:\n    enabled: true\n    host: \"127.62.3.2\"\n    port: 5432\n"
        ),
    );
    let file = standby.write("hippo-standby.yaml", &text);
    standby.up(&file).expect("up the streaming standby");
    assert_eq!(
        standby.sql("postgres", "SELECT count(*) FROM t").unwrap(),
        "1",
        "copied by pg_basebackup"
    );

    // No WAL switch: only streaming can deliver this row.
    hippo
        .sql("postgres", "INSERT INTO t VALUES (2)")
        .expect("second row");
    wait_for(&standby, "SELECT count(*) FROM t", "2").expect("the standby streams");

    assert_standby_streams_by_certificate(&hippo);

    stop(&hippo);
    promote_and_write(&standby, &file, &text, "3");
}

#[test]
fn a_standby_with_repo_and_host_copies_from_the_repo_then_streams() {
    let hippo = Cluster::named("127.62.5", "hippo");
    let dir = hippo.state_dir.parent().unwrap().to_path_buf();
    write_custom_tls(&dir, &["127.62.5.2", "127.62.6.2"]);
    let file = hippo.write(
        "hippo.yaml",
        &manifest("hippo", 1, &format!("{CUSTOM_TLS}{REPO}")),
    );
    hippo
        .up(&file)
        .expect("up hippo with custom TLS and a repo");
    hippo
        .sql(
            "postgres",
            "CREATE TABLE t (id int); INSERT INTO t VALUES (1)",
        )
        .expect("first row");
    run_backup(&hippo.layout(), BackupKind::Full, None, &mut progress).expect("full backup");

    let standby = hippo.beside("127.62.6", "hippo-standby");
    let repo_path = hippo.layout().pgbackrest_dir().join("repo1");
    let text = manifest(
        "hippo-standby",
        1,
        &format!(
            "{CUSTOM_TLS}{REPO}      global:\n        repo1-path: {}\n  standby:\n    enabled: true\n    repoName: repo1\n    host: \"127.62.5.2\"\n    port: 5432\n",
            repo_path.display()
        ),
    );
    let file = standby.write("hippo-standby.yaml", &text);
    standby
        .up(&file)
        .expect("up the standby with repo and host");
    assert_eq!(
        standby.sql("postgres", "SELECT count(*) FROM t").unwrap(),
        "1"
    );
    // The initial copy came from the repository, not from a base backup of the source.
    let report = tusk_local::status(&standby.layout()).unwrap();
    assert_eq!(report.members[0].role, "standby_leader");
    let log =
        std::fs::read_to_string(standby.layout().member(&report.members[0].name).log()).unwrap();
    assert!(
        log.contains("replica has been created using pgbackrest"),
        "{log}"
    );

    // No WAL switch, so nothing new reaches the archive: only streaming delivers this row.
    hippo
        .sql("postgres", "INSERT INTO t VALUES (2)")
        .expect("second row");
    wait_for(&standby, "SELECT count(*) FROM t", "2").expect("the standby streams");
    assert_standby_streams_by_certificate(&hippo);

    stop(&hippo);
    promote_and_write(&standby, &file, &text, "3");
}
