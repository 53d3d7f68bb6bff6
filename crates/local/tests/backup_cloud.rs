//! Object-store repos with real pgBackRest against real S3 (`s3rver`) and Azure Blob
//! (`azurite`) servers that each test starts over HTTPS (see `object_store`): a local cluster
//! archives and backs up into the cloud repo, with credentials from a `configuration` Secret
//! projection; the source cluster is then stopped and a NEW cluster is made from that repo
//! alone (`spec.dataSource.pgbackrest`), holding identical rows. A missing Secret is refused
//! before anything exists. Networks 127.58.x (S3) and 127.59.x (Azure).

mod common;
mod object_store;

use common::{manifest, Cluster};
use object_store::{write_secret, Azure, TestCa, S3};
use tusk_local::backup::{run_backup, BackupKind};

fn progress(line: &str) {
    eprintln!("[cloud] {line}");
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

/// A cloud repo as both runtimes write it: `kind` (`s3`/`azure`) with its YAML mapping,
/// the `global` lines pointing at the test server, credentials in Secret `creds`.
struct CloudRepo {
    kind: &'static str,
    mapping: String,
    /// `global` entries, one per line, indented 8 (both `global`s sit at indent 6).
    global: String,
}

fn backups_yaml(repo: &CloudRepo) -> String {
    format!(
        "  backups:\n    pgbackrest:\n      configuration:\n        - secret:\n            name: creds\n\
         \x20     global:\n{}      repos:\n        - name: repo1\n          {}: {}\n",
        repo.global, repo.kind, repo.mapping
    )
}

fn data_source_yaml(repo: &CloudRepo) -> String {
    format!(
        "  dataSource:\n    pgbackrest:\n      stanza: db\n      configuration:\n        - secret:\n            name: creds\n\
         \x20     global:\n{}      repo:\n        name: repo1\n        {}: {}\n",
        repo.global, repo.kind, repo.mapping
    )
}

/// Backup of `source_net`'s cluster into `repo`, source stopped, clone on `clone_net`.
fn backup_then_clone_from_the_cloud_repo(
    repo: &CloudRepo,
    credentials: &str,
    source_net: &str,
    clone_net: &str,
) {
    let hippo = Cluster::named(source_net, "hippo");
    let dir = hippo.state_dir.parent().unwrap().to_owned();
    let users = "  users:\n    - name: app\n      databases: [zoo]\n";
    let file = hippo.write(
        "hippo.yaml",
        &manifest("hippo", 1, &format!("{users}{}", backups_yaml(repo))),
    );

    // Without the Secret: refused naming the field, nothing created.
    let err = hippo.up(&file).unwrap_err().to_string();
    assert!(
        err.starts_with("spec.backups.pgbackrest.configuration[0].secret.name: no directory"),
        "{err}"
    );
    assert!(!hippo.state_dir.exists());

    write_secret(&dir, "creds", &format!("{}.conf", repo.kind), credentials);
    hippo.up(&file).expect("up hippo with a cloud repo");
    hippo
        .sql(
            "zoo",
            "CREATE TABLE t (id int PRIMARY KEY, v text); \
             INSERT INTO t SELECT i, md5(i::text) FROM generate_series(1, 500) i",
        )
        .expect("rows");
    let backup = run_backup(&hippo.layout(), BackupKind::Full, None, &mut progress)
        .expect("full backup into the cloud repo");
    assert_eq!(backup.repo, 1);
    let source_sum = checksum(&hippo);
    assert!(source_sum.starts_with("500:"), "{source_sum}");
    // The member's file holds the projected credentials, readable by its owner only.
    let (leader, _) = hippo.leader();
    let conf_path = hippo.layout().member(&leader).pgbackrest_conf();
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&conf_path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    tusk_local::down(&hippo.layout(), false, &mut |_| {}).expect("stopping the source");

    let elephant = hippo.beside(clone_net, "elephant");
    let file = elephant.write(
        "elephant.yaml",
        &manifest("elephant", 1, &format!("{users}{}", data_source_yaml(repo))),
    );
    elephant.up(&file).expect("up elephant from the cloud repo");
    assert_eq!(checksum(&elephant), source_sum, "the clone has every row");
    elephant
        .sql("zoo", "INSERT INTO t VALUES (501, 'new')")
        .expect("the clone accepts writes");
}

#[test]
fn s3_repo_backup_then_clone_with_no_source_cluster() {
    let ca = TestCa::new();
    let s3 = S3::start(&ca, "tusk-bucket");
    let repo = CloudRepo {
        kind: "s3",
        mapping: s3.repo(),
        global: s3.global(&ca, 1, 8),
    };
    backup_then_clone_from_the_cloud_repo(&repo, &S3::credentials(1), "127.58.1", "127.58.2");
}

#[test]
fn azure_repo_backup_then_clone_with_no_source_cluster() {
    let ca = TestCa::new();
    let azure = Azure::start(&ca, "tusk-container");
    let repo = CloudRepo {
        kind: "azure",
        mapping: azure.repo(),
        global: azure.global(&ca, 1, 8),
    };
    backup_then_clone_from_the_cloud_repo(&repo, &Azure::credentials(1), "127.59.1", "127.59.2");
}
