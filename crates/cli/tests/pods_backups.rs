//! Backups in real pods, as a platform team checks them in its first week: the repo host and
//! the stanza come up (`BackupsReady`, `WALArchiving`), the initial full backup is taken
//! without being asked (`tusk.rs/pgbackrest-backup: replica-create`), a manual backup through
//! the annotation runs as a Job and is reported in `status.pgbackrest.manualBackup`, the
//! repository itself (`pgbackrest info` in the repo host) lists both, every backup Job's pod
//! carries the cluster's labels, and an `archive_command` that cannot write to the repository
//! is a Warning and `WALArchiving=False` long before WAL could fill the volume.
//!
//! One cluster for all of it: each step builds on the previous one, as in production.

mod kube_support;
mod node_support;
mod pgbackrest_support;

use std::collections::BTreeMap;
use std::time::Duration;

use kube::api::{Api, ListParams};
use kube::Client;
use node_support::install::install_operator;
use node_support::{cluster_condition, wait_condition, Namespace, Node};
use pgbackrest_support::*;
use tusk_api::naming;

use kube_support::{eventually, objects};

/// Apply to Ready includes pulling the database image the first time.
const READY_LIMIT: Duration = Duration::from_secs(600);
/// A backup of a small cluster, on a node shared with other tests.
const BACKUP_LIMIT: Duration = Duration::from_secs(600);
const CLUSTER: &str = "hippo";
/// A label the user puts on everything of the cluster (`spec.metadata.labels`).
const TEAM_LABEL: (&str, &str) = ("example.com/team", "dba");

async fn setup() -> Option<(Node, Client)> {
    let node = Node::acquire()?;
    let client = node.client().await;
    install_operator(&node);
    Some((node, client))
}

/// The labels a backup Job's pod must carry: the cluster's (as every object of it), the
/// user's `spec.metadata.labels`, and the PGO family's pgBackRest labels (`pgbackrest`,
/// `pgbackrest-backup: <kind>`, `pgbackrest-repo`), which do not depend on an instance set.
fn backup_pod_labels(kind: &str) -> BTreeMap<String, String> {
    let mut labels = cluster_labels(CLUSTER);
    labels.insert(TEAM_LABEL.0.into(), TEAM_LABEL.1.into());
    labels.insert(naming::LABEL_PGBACKREST.into(), String::new());
    labels.insert(naming::LABEL_PGBACKREST_BACKUP.into(), kind.into());
    labels.insert(naming::LABEL_PGBACKREST_REPO.into(), "repo1".into());
    labels
}

fn backup_selector(kind: &str) -> String {
    format!(
        "{},{}={kind}",
        naming::cluster_selector(CLUSTER),
        naming::LABEL_PGBACKREST_BACKUP
    )
}

/// Checks the pods of Job `job` carry `expected`; returns how many pods it had.
async fn assert_job_pods_labelled(
    client: &Client,
    namespace: &str,
    job: &str,
    expected: &BTreeMap<String, String>,
) -> usize {
    let pods = job_pods(client, namespace, job).await;
    assert!(!pods.is_empty(), "Job {job} kept its pod");
    for pod in &pods {
        assert_labels(pod, expected);
        let labels = pod.metadata.labels.clone().unwrap_or_default();
        assert!(
            !labels.contains_key(naming::LABEL_INSTANCE_SET)
                && !labels.contains_key(naming::LABEL_INSTANCE),
            "a backup pod is not an instance's: {labels:?}"
        );
    }
    pods.len()
}

#[tokio::test]
async fn backups_are_taken_listed_in_the_repository_and_a_broken_archive_is_reported() {
    let Some((node, client)) = setup().await else {
        return;
    };
    let ns = Namespace::create(&node, &client, "pods-backups").await;
    let manifest = cluster_manifest(
        CLUSTER,
        &ns.name,
        1,
        "      manual: {repoName: repo1, options: [--type=full]}",
        &format!(
            "  metadata: {{labels: {{{}: {}}}}}",
            TEAM_LABEL.0, TEAM_LABEL.1
        ),
    );
    apply(&node, &manifest);
    wait_condition(&client, &ns.name, CLUSTER, "Ready", READY_LIMIT).await;
    wait_condition(&client, &ns.name, CLUSTER, "BackupsReady", READY_LIMIT).await;
    let primary = leader(&client, &ns.name, CLUSTER, READY_LIMIT).await;

    // The initial full backup, without anything asked: its Job completes and the status
    // records it once.
    let initial = wait_job_succeeded(
        &client,
        &ns.name,
        &backup_selector(naming::BACKUP_REPLICA_CREATE),
        BACKUP_LIMIT,
    )
    .await;
    let initial_name = initial.metadata.name.clone().unwrap();
    assert_eq!(initial_name, format!("{CLUSTER}-backup-replica-create"));
    let recorded = eventually(
        "status.pgbackrest.repos[0].replicaCreateBackupComplete",
        Duration::from_secs(180),
        || async {
            let status = status(&client, &ns.name, CLUSTER).await;
            (status["pgbackrest"]["repos"][0]["replicaCreateBackupComplete"] == true)
                .then_some(status)
        },
    )
    .await;
    assert_eq!(
        recorded["pgbackrest"]["replicaCreateBackup"]["succeeded"], 1,
        "{recorded:#}"
    );
    assert!(
        recorded["pgbackrest"]["lastBackupCompletion"].is_string(),
        "{recorded:#}"
    );
    assert_job_pods_labelled(
        &client,
        &ns.name,
        &initial_name,
        &backup_pod_labels(naming::BACKUP_REPLICA_CREATE),
    )
    .await;
    // The stanza Job's pod too (no backup kind, but the cluster's and the user's labels).
    let mut stanza_labels = cluster_labels(CLUSTER);
    stanza_labels.insert(TEAM_LABEL.0.into(), TEAM_LABEL.1.into());
    stanza_labels.insert(naming::LABEL_PGBACKREST.into(), String::new());
    assert_job_pods_labelled(
        &client,
        &ns.name,
        &format!("{CLUSTER}-stanza-create"),
        &stanza_labels,
    )
    .await;

    // WAL archiving: a switched segment reaches the repository.
    superuser_sql(
        &node,
        &ns.name,
        &primary,
        "create table backed_up (v int); insert into backed_up select generate_series(1, 1000)",
    );
    superuser_sql(&node, &ns.name, &primary, "select pg_switch_wal()");
    wait_condition(
        &client,
        &ns.name,
        CLUSTER,
        "WALArchiving",
        Duration::from_secs(300),
    )
    .await;

    // A manual backup through the annotation: a Job labelled `manual` that completes, and
    // `status.pgbackrest.manualBackup` reports it finished.
    annotate(
        &client,
        &ns.name,
        CLUSTER,
        naming::ANNOTATION_BACKUP,
        "first",
    )
    .await;
    let manual = wait_job_succeeded(
        &client,
        &ns.name,
        &backup_selector(naming::BACKUP_MANUAL),
        BACKUP_LIMIT,
    )
    .await;
    let manual_name = manual.metadata.name.clone().unwrap();
    let reported = eventually(
        "status.pgbackrest.manualBackup finished",
        Duration::from_secs(180),
        || async {
            let status = status(&client, &ns.name, CLUSTER).await;
            let m = status["pgbackrest"]["manualBackup"].clone();
            (m["finished"] == true).then_some(m)
        },
    )
    .await;
    assert_eq!(reported["id"], "first", "{reported:#}");
    assert_eq!(reported["succeeded"], 1, "{reported:#}");
    assert_eq!(reported["jobName"], manual_name.as_str(), "{reported:#}");
    assert_job_pods_labelled(
        &client,
        &ns.name,
        &manual_name,
        &backup_pod_labels(naming::BACKUP_MANUAL),
    )
    .await;

    // The repository lists both full backups.
    let info = pgbackrest_info(&node, &ns.name, CLUSTER);
    let backups = listed_backups(&info);
    assert_eq!(
        backups.iter().filter(|(t, _)| t == "full").count(),
        2,
        "the initial and the manual full backup: {info:#}"
    );
    assert_eq!(info[0]["status"]["message"], "ok", "{info:#}");
    // Still exactly one initial backup Job: it is not taken again.
    let jobs: Api<k8s_openapi::api::batch::v1::Job> = Api::namespaced(client.clone(), &ns.name);
    let initial_jobs = jobs
        .list(&ListParams::default().labels(&backup_selector(naming::BACKUP_REPLICA_CREATE)))
        .await
        .unwrap()
        .items;
    assert_eq!(initial_jobs.len(), 1);

    broken_archive_is_reported(&node, &client, &ns.name, &primary).await;
}

/// Takes write permission on the repository's archive away from the repo host's own user
/// (what a full or read-only volume, or a wrong owner after a migration, does): the
/// `archive_command` fails for real, `WALArchiving` turns False with a Warning Event, and
/// once the permissions are back archiving recovers and the condition says so.
async fn broken_archive_is_reported(node: &Node, client: &Client, namespace: &str, primary: &str) {
    let repo_host = repo_host_pod(CLUSTER);
    let chmod = |mode: &str| {
        node.kubectl_ok(
            &[
                "exec",
                "-n",
                namespace,
                &repo_host,
                "-c",
                "pgbackrest",
                "--",
                "find",
                "/pgbackrest/repo1/archive",
                "-type",
                "d",
                "-exec",
                "chmod",
                mode,
                "{}",
                "+",
            ],
            None,
        )
    };
    chmod("a-w");
    // One segment to archive is enough: PostgreSQL retries it (and keeps it) until it is
    // archived, so switching more would only fill pg_wal.
    superuser_sql(
        node,
        namespace,
        primary,
        "insert into backed_up values (0); select pg_switch_wal()",
    );
    let failing = eventually(
        "WALArchiving=False after the repository became unwritable",
        Duration::from_secs(600),
        || async {
            let (status, reason) =
                cluster_condition(client, namespace, CLUSTER, "WALArchiving").await?;
            (status == "False").then_some(reason)
        },
    )
    .await;
    assert_eq!(failing, "ArchiveFailing");
    let failed: u64 = superuser_sql(
        node,
        namespace,
        primary,
        "select failed_count from pg_stat_archiver",
    )
    .parse()
    .expect("a count");
    assert!(failed > 0, "PostgreSQL's archiver saw the failures");
    let events = objects::events_about(client, namespace, CLUSTER).await;
    let warning = events.iter().find(|e| {
        e.type_.as_deref() == Some("Warning") && e.reason.as_deref() == Some("ArchiveFailing")
    });
    assert!(
        warning.is_some(),
        "a Warning Event about archiving: {:?}",
        events
            .iter()
            .map(|e| (e.reason.clone(), e.note.clone()))
            .collect::<Vec<_>>()
    );

    chmod("u+w");
    eventually(
        "WALArchiving=True again once the repository is writable",
        Duration::from_secs(600),
        || async {
            let (status, _) = cluster_condition(client, namespace, CLUSTER, "WALArchiving").await?;
            (status == "True").then_some(())
        },
    )
    .await;
}
