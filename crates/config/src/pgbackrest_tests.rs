//! Tests of `pgbackrest.rs`: rendered files, and the real pgBackRest parsing them.

use super::*;

const MANIFEST: &str = r#"
apiVersion: tusk.rs/v1beta1
kind: PostgresCluster
metadata: {name: hippo, namespace: tusk}
spec:
  postgresVersion: 15
  instances: [{name: i1, dataVolumeClaimSpec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}}]
  backups:
    pgbackrest:
      global: {repo1-retention-full: "4"}
      repos:
        - name: repo1
          volume: {volumeClaimSpec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}}
"#;

fn instance() -> PosixInstance<'static> {
    PosixInstance {
        data_dir: "/s/m/pgdata",
        socket_dir: "/s/m/run",
        port: 5432,
        repo_root: "/s/pgbackrest",
        log_dir: "/s/m/log",
        lock_dir: "/s/m/lock",
    }
}

#[test]
fn volume_repos_become_posix_paths_and_globals_follow() {
    let cluster = crate::test_support::cluster_from(MANIFEST);
    let conf = posix_conf(&cluster, &instance()).unwrap();
    assert!(conf.contains("repo1-path=/s/pgbackrest/repo1\n"), "{conf}");
    assert!(conf.contains("repo1-retention-full=4\n"), "{conf}");
    assert!(conf.contains("[db]\npg1-path=/s/m/pgdata\n"), "{conf}");
    assert!(conf.contains("pg1-socket-path=/s/m/run\n"), "{conf}");
}

#[test]
fn gcs_repos_are_refused_locally_with_their_field() {
    let manifest = MANIFEST.replace(
        "volume: {volumeClaimSpec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}}",
        "gcs: {bucket: b}",
    );
    let cluster = crate::test_support::cluster_from(&manifest);
    assert_eq!(
        posix_conf(&cluster, &instance()),
        Err(NotPosix {
            field: "spec.backups.pgbackrest.repos[0]".into()
        })
    );
}

#[test]
fn s3_and_azure_repos_render_locally_as_on_kubernetes_and_user_globals_replace() {
    let manifest = MANIFEST
        .replace(
            "volume: {volumeClaimSpec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}}",
            "s3: {bucket: b, endpoint: 127.0.0.1, region: r}\n        - name: repo2\n          azure: {container: c}",
        )
        .replace(
            "global: {repo1-retention-full: \"4\"}",
            "global: {repo1-path: /shared/hippo, repo1-s3-uri-style: path, repo2-storage-verify-tls: \"false\"}",
        );
    let cluster = crate::test_support::cluster_from(&manifest);
    let conf = posix_conf(&cluster, &instance()).unwrap();
    let global = section(&conf, "global");
    for line in [
        "repo1-type=s3",
        "repo1-s3-bucket=b",
        "repo1-s3-endpoint=127.0.0.1",
        "repo1-s3-region=r",
        "repo1-s3-uri-style=path",
        "repo2-type=azure",
        "repo2-azure-container=c",
        "repo2-path=/pgbackrest/repo2",
        "repo2-storage-verify-tls=n",
        "compress-type=zst",
    ] {
        assert!(global.contains(&line), "{line} missing:\n{conf}");
    }
    // The user's path replaces Tusk's default in place: pgBackRest refuses a key twice.
    let paths: Vec<&str> = global
        .iter()
        .copied()
        .filter(|l| l.starts_with("repo1-path="))
        .collect();
    assert_eq!(paths, ["repo1-path=/shared/hippo"], "{conf}");
    // Kubernetes renders the same repo options (a bucket one runtime wrote, the other reads).
    let kube = instance_conf(&cluster, REPO_HOST).unwrap();
    for line in global.iter().filter(|l| l.starts_with("repo")) {
        assert!(
            section(&kube, "global").contains(line),
            "{line} not on Kubernetes"
        );
    }
}

#[test]
fn data_source_conf_names_only_the_source_repo_and_stanza() {
    let manifest = MANIFEST.replace(
        "volume: {volumeClaimSpec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}}",
        "azure: {container: c}",
    );
    let cluster = crate::test_support::cluster_from(&manifest);
    let repo = &cluster.backups.as_ref().unwrap().repos[0];
    let user = BTreeMap::from([("repo1-azure-uri-style".to_owned(), "path".to_owned())]);
    let conf = data_source_conf("old", repo, &user, &instance(), "f").unwrap();
    assert!(
        section(&conf, "global").contains(&"repo1-azure-uri-style=path"),
        "{conf}"
    );
    assert_eq!(section(&conf, "old"), ["pg1-path=/s/m/pgdata"], "{conf}");
    let volume = crate::test_support::cluster_from(MANIFEST);
    let volume_repo = &volume.backups.as_ref().unwrap().repos[0];
    assert_eq!(
        data_source_conf(
            "db",
            volume_repo,
            &user,
            &instance(),
            "spec.dataSource.pgbackrest.repo"
        ),
        Err(NotPosix {
            field: "spec.dataSource.pgbackrest.repo".into()
        })
    );
}

const ALL_REPOS: &str = r#"
apiVersion: tusk.rs/v1beta1
kind: PostgresCluster
metadata: {name: hippo, namespace: tusk}
spec:
  postgresVersion: 15
  port: 5433
  instances: [{name: i1, dataVolumeClaimSpec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}}]
  backups:
    pgbackrest:
      global: {repo1-retention-full: "4", repo2-path: /shared/hippo, start-fast: "true", compress-level: 3}
      repos:
        - name: repo1
          volume: {volumeClaimSpec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}}
        - name: repo2
          s3: {bucket: my-bucket, endpoint: s3.example.com, region: ca-central-1}
        - name: repo3
          gcs: {bucket: gcs-bucket}
        - name: repo4
          azure: {container: az-container}
"#;

const REPO_HOST: &str = "hippo-repo-host-0.hippo-pods.tusk.svc";

/// The `[name]` section's lines.
fn section<'a>(conf: &'a str, name: &str) -> Vec<&'a str> {
    let header = format!("[{name}]");
    conf.lines()
        .skip_while(|l| *l != header)
        .skip(1)
        .take_while(|l| !l.starts_with('['))
        .filter(|l| !l.is_empty())
        .collect()
}

#[test]
fn instance_conf_reaches_every_repo_kind_and_archives_asynchronously() {
    let cluster = crate::test_support::cluster_from(ALL_REPOS);
    let conf = instance_conf(&cluster, REPO_HOST).unwrap();
    let global = section(&conf, "global");
    for expected in [
        "archive-async=y",
        "spool-path=/pgdata/pgbackrest/spool",
        "log-path=/pgdata/pgbackrest/log",
        "compress-type=zst",
        "repo1-host=hippo-repo-host-0.hippo-pods.tusk.svc",
        "repo1-host-type=tls",
        "repo1-host-port=8432",
        "repo1-host-cert-file=/etc/pgbackrest/conf.d/tusk-tls/client.crt",
        "repo1-path=/pgbackrest/repo1",
        "repo2-type=s3",
        "repo2-s3-bucket=my-bucket",
        "repo2-s3-endpoint=s3.example.com",
        "repo2-s3-region=ca-central-1",
        "repo3-type=gcs",
        "repo3-gcs-bucket=gcs-bucket",
        "repo3-path=/pgbackrest/repo3",
        "repo4-type=azure",
        "repo4-azure-container=az-container",
        "tls-server-auth=_tusk_repl=db",
        "tls-server-cert-file=/etc/pgbackrest/conf.d/tusk-tls/server.crt",
        "repo1-retention-full=4",
        "compress-level=3",
    ] {
        assert!(global.contains(&expected), "{expected} missing:\n{conf}");
    }
    // A volume repo is not local to an instance: no posix type there.
    assert!(
        !global.iter().any(|l| l.starts_with("repo1-type=")),
        "{conf}"
    );
    assert_eq!(section(&conf, "global:archive-push"), ["process-max=2"]);
    assert_eq!(
        section(&conf, "db"),
        [
            "pg1-path=/pgdata/pg15",
            "pg1-port=5433",
            "pg1-socket-path=/tmp/postgres"
        ]
    );
}

#[test]
fn user_globals_win_in_place_and_booleans_become_y_n() {
    let cluster = crate::test_support::cluster_from(ALL_REPOS);
    let conf = instance_conf(&cluster, REPO_HOST).unwrap();
    let global = section(&conf, "global");
    // Replaced where Tusk wrote it, not written twice (pgBackRest would take the first).
    assert_eq!(
        global
            .iter()
            .filter(|l| l.starts_with("repo2-path="))
            .count(),
        1
    );
    assert!(global.contains(&"repo2-path=/shared/hippo"), "{conf}");
    assert!(global.contains(&"start-fast=y"), "{conf}");

    let gz = ALL_REPOS.replace("compress-level: 3", "compress-type: gz");
    let conf = instance_conf(&crate::test_support::cluster_from(&gz), REPO_HOST).unwrap();
    let global = section(&conf, "global");
    assert!(global.contains(&"compress-type=gz"), "{conf}");
    assert!(!global.contains(&"compress-type=zst"), "{conf}");
}

#[test]
fn repo_host_conf_has_local_volume_repos_and_every_instance() {
    let cluster = crate::test_support::cluster_from(ALL_REPOS);
    let hosts = [
        "hippo-i1-abcd-0.hippo-pods.tusk.svc".to_owned(),
        "hippo-i1-efgh-0.hippo-pods.tusk.svc".to_owned(),
    ];
    let conf = repo_host_conf(&cluster, &hosts).unwrap();
    let global = section(&conf, "global");
    for expected in [
        "repo1-type=posix",
        "repo1-path=/pgbackrest/repo1",
        "log-path=/pgbackrest/repo1/log",
        "repo2-type=s3",
        "tls-server-address=0.0.0.0",
    ] {
        assert!(global.contains(&expected), "{expected} missing:\n{conf}");
    }
    assert!(
        !global.iter().any(|l| l.starts_with("repo1-host")),
        "{conf}"
    );
    assert!(
        !global.iter().any(|l| l.starts_with("archive-async")),
        "{conf}"
    );
    let db = section(&conf, "db");
    for expected in [
        "pg1-host=hippo-i1-abcd-0.hippo-pods.tusk.svc",
        "pg2-host=hippo-i1-efgh-0.hippo-pods.tusk.svc",
        "pg2-host-type=tls",
        "pg2-host-key-file=/etc/pgbackrest/conf.d/tusk-tls/client.key",
        "pg2-path=/pgdata/pg15",
        "pg2-port=5433",
    ] {
        assert!(db.contains(&expected), "{expected} missing:\n{conf}");
    }
}

#[test]
fn no_backups_no_files_and_no_volume_repo_no_repo_host() {
    let without = MANIFEST.split("  backups:").next().unwrap();
    let cluster = crate::test_support::cluster_from(without);
    assert_eq!(instance_conf(&cluster, REPO_HOST), None);
    assert_eq!(repo_host_conf(&cluster, &[]), None);
    assert!(!has_volume_repo(&cluster));

    let cloud = MANIFEST.replace(
        "volume: {volumeClaimSpec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}}",
        "s3: {bucket: b, endpoint: s3.example.com, region: r}",
    );
    let cluster = crate::test_support::cluster_from(&cloud);
    assert!(instance_conf(&cluster, REPO_HOST).is_some());
    assert_eq!(repo_host_conf(&cluster, &[]), None);
    assert!(!has_volume_repo(&cluster));
}

/// `pgbackrest help <command> <option>` prints the value it parsed from the configuration
/// (`current: ...`), and refuses values it does not know (`compress-type=zstd` is one).
fn pgbackrest_current(
    conf_dir: &std::path::Path,
    file: &str,
    command: &str,
    option: &str,
) -> String {
    let mut args = vec![
        format!("--config={}", conf_dir.join(file).display()),
        // Only Tusk's file: the machine's own include directory is not part of the test.
        format!(
            "--config-include-path={}",
            conf_dir.join("conf.d").display()
        ),
    ];
    if command != "server" {
        args.push("--stanza=db".to_owned());
    }
    let out = std::process::Command::new("pgbackrest")
        .args(&args)
        .args(["help", command, option])
        .output()
        .expect("pgbackrest (Debian package `pgbackrest`) must be installed");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "pgbackrest {args:?} help {command} {option}:\n{stdout}{stderr}"
    );
    assert!(
        !stderr.contains("invalid") && !stdout.contains("invalid"),
        "pgbackrest warns about {file}:\n{stdout}{stderr}"
    );
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("current: "))
        .unwrap_or_else(|| panic!("no current value of {option} for {command}:\n{stdout}"))
        .to_owned()
}

#[test]
fn the_real_pgbackrest_parses_both_files_without_complaint() {
    let cluster = crate::test_support::cluster_from(ALL_REPOS);
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("conf.d")).unwrap();
    let hosts = ["hippo-i1-abcd-0.hippo-pods.tusk.svc".to_owned()];
    std::fs::write(
        dir.path().join(INSTANCE_CONF_FILE),
        instance_conf(&cluster, REPO_HOST).unwrap(),
    )
    .unwrap();
    std::fs::write(
        dir.path().join(REPO_HOST_CONF_FILE),
        repo_host_conf(&cluster, &hosts).unwrap(),
    )
    .unwrap();
    let instance = |command: &str, option: &str| {
        pgbackrest_current(dir.path(), INSTANCE_CONF_FILE, command, option)
    };
    // `help` shows parsed booleans as true/false.
    assert_eq!(instance("archive-push", "archive-async"), "true");
    assert_eq!(instance("archive-push", "process-max"), "2");
    assert_eq!(instance("archive-push", "compress-type"), "zst");
    assert_eq!(instance("archive-push", "repo-host"), REPO_HOST);
    assert_eq!(instance("backup", "pg-socket-path"), "/tmp/postgres");
    assert_eq!(instance("backup", "start-fast"), "true");
    assert_eq!(instance("server", "tls-server-auth"), "_tusk_repl=db");
    let repo_host = |command: &str, option: &str| {
        pgbackrest_current(dir.path(), REPO_HOST_CONF_FILE, command, option)
    };
    assert_eq!(repo_host("backup", "repo-type"), "posix");
    assert_eq!(repo_host("backup", "pg-host"), hosts[0]);
    assert_eq!(repo_host("backup", "pg-host-type"), "tls");
    assert_eq!(repo_host("server", "tls-server-port"), "8432");

    // `help` shows the first repo's options: a cluster whose repo1 is in S3.
    let s3 = MANIFEST.replace(
        "volume: {volumeClaimSpec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}}",
        "s3: {bucket: my-bucket, endpoint: s3.example.com, region: ca-central-1}",
    );
    let cluster = crate::test_support::cluster_from(&s3);
    std::fs::write(
        dir.path().join(INSTANCE_CONF_FILE),
        instance_conf(&cluster, REPO_HOST).unwrap(),
    )
    .unwrap();
    assert_eq!(instance("backup", "repo-type"), "s3");
    assert_eq!(instance("backup", "repo-s3-bucket"), "my-bucket");
    assert_eq!(instance("backup", "repo-s3-region"), "ca-central-1");
    assert_eq!(instance("backup", "repo-retention-full"), "4");
}

#[test]
fn backups_start_fast_wherever_they_run_unless_global_says_otherwise() {
    let defaults =
        crate::test_support::cluster_from(&ALL_REPOS.replace("start-fast: \"true\", ", ""));
    let local = crate::test_support::cluster_from(MANIFEST);
    for conf in [
        instance_conf(&defaults, REPO_HOST).unwrap(),
        repo_host_conf(&defaults, &[REPO_HOST.to_owned()]).unwrap(),
        posix_conf(&local, &instance()).unwrap(),
    ] {
        assert!(section(&conf, "global").contains(&"start-fast=y"), "{conf}");
    }

    let spread = ALL_REPOS.replace("start-fast: \"true\"", "start-fast: \"false\"");
    let conf = instance_conf(&crate::test_support::cluster_from(&spread), REPO_HOST).unwrap();
    let start_fast: Vec<&str> = section(&conf, "global")
        .into_iter()
        .filter(|l| l.starts_with("start-fast="))
        .collect();
    assert_eq!(start_fast, ["start-fast=n"], "{conf}");
}
