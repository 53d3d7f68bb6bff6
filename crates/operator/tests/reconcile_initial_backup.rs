//! Reconcile sequences of the initial full backup (`<c>-backup-replica-create`, labelled
//! `tusk.rs/pgbackrest-backup: replica-create`) against kube-fake-client: taken once the
//! stanza exists without being asked, once per cluster (recorded in
//! `status.pgbackrest.repos[].replicaCreateBackupComplete`, so a reconcile, a deleted Job or
//! a new operator process never takes it again), a manual backup waits for it, and its
//! failure is a Warning and `BackupsReady=False` and is retried after a backoff. Job status is
//! set by the test, as the Job controller would.

mod backups_support;
mod common;

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, Patch, PatchParams};
use serde_json::json;
use tusk_api::naming;
use tusk_operator::controller::{reconcile, Context};
use tusk_operator::images::Images;
use tusk_operator::metrics::Metrics;

use backups_support::*;

const INITIAL: &str = "hippo-backup-replica-create";

fn selector() -> String {
    format!(
        "{}={}",
        naming::LABEL_PGBACKREST_BACKUP,
        naming::BACKUP_REPLICA_CREATE
    )
}

/// A running primary and a created stanza: the point from which the initial backup is due.
async fn stanza_created(h: &Harness) {
    h.reconcile().await;
    let instance = h.instance_sets().await[0].metadata.name.clone().unwrap();
    h.primary_pod(&instance).await;
    h.reconcile().await;
    h.finish_job("hippo-stanza-create", true).await;
}

fn attempt(job: &Job) -> String {
    job.metadata.annotations.as_ref().unwrap()[naming::ANNOTATION_BACKUP_ATTEMPT].clone()
}

/// What the Job controller writes when a Job reached its backoff limit at `at`.
async fn fail_at(h: &Harness, name: &str, at: Timestamp) {
    h.jobs()
        .patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {
                "startTime": (at - Duration::from_secs(30)).to_string(), "failed": 2,
                "conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
                                "lastTransitionTime": at.to_string()}]}})),
        )
        .await
        .expect("job status patched");
}

#[tokio::test]
async fn the_initial_full_backup_is_taken_once_after_the_stanza_and_recorded() {
    let h = Harness::new(manifest(1, MANUAL, "")).await;
    h.reconcile().await;
    let instance = h.instance_sets().await[0].metadata.name.clone().unwrap();
    h.primary_pod(&instance).await;
    h.reconcile().await;
    assert!(
        h.jobs_labelled(&selector()).await.is_empty(),
        "no backup before the stanza exists"
    );
    h.finish_job("hippo-stanza-create", true).await;
    h.reconcile().await;

    let jobs = h.jobs_labelled(&selector()).await;
    assert_eq!(
        jobs.len(),
        1,
        "the stanza exists: the initial backup starts"
    );
    let job = &jobs[0];
    assert_eq!(job.metadata.name.as_deref(), Some(INITIAL));
    assert_eq!(attempt(job), "1");
    let cmd = command(job);
    let tail: Vec<&str> = cmd[3..].iter().map(String::as_str).collect();
    assert_eq!(
        tail,
        [
            "pgbackrest",
            "--stanza=db",
            "backup",
            "--repo=1",
            "--type=full"
        ]
    );
    let pod_labels = &job
        .spec
        .as_ref()
        .unwrap()
        .template
        .metadata
        .as_ref()
        .unwrap()
        .labels;
    assert_eq!(label(pod_labels, naming::LABEL_CLUSTER), NAME);
    assert_eq!(
        label(pod_labels, naming::LABEL_PGBACKREST_BACKUP),
        "replica-create"
    );
    assert_eq!(label(pod_labels, naming::LABEL_PGBACKREST_REPO), "repo1");
    let ready = h.condition("BackupsReady").await;
    assert_eq!(ready.status, "True");
    assert!(ready.message.contains(INITIAL), "{}", ready.message);
    let recorded = h.cluster().await.status.unwrap().pgbackrest.unwrap();
    let initial = recorded.replica_create_backup.unwrap();
    assert_eq!(
        (initial.id.as_str(), initial.finished),
        ("replica-create", false)
    );
    assert_eq!(recorded.repos[0].replica_create_backup_complete, None);

    // A manual backup asked for meanwhile waits: one backup of a stanza at a time.
    h.annotate(naming::ANNOTATION_BACKUP, "meanwhile").await;
    h.reconcile().await;
    let manual = format!(
        "{}={}",
        naming::LABEL_PGBACKREST_BACKUP,
        naming::BACKUP_MANUAL
    );
    assert!(h.jobs_labelled(&manual).await.is_empty());

    h.finish_job(INITIAL, true).await;
    h.reconcile().await;
    assert_eq!(
        h.jobs_labelled(&manual).await.len(),
        1,
        "the manual backup starts once the initial one finished"
    );
    let status = h.cluster().await.status.unwrap().pgbackrest.unwrap();
    assert_eq!(status.repos[0].replica_create_backup_complete, Some(true));
    assert_eq!(
        status.last_backup_completion.as_deref(),
        Some("2024-05-01T10:05:00Z")
    );
    assert!(status.replica_create_backup.unwrap().succeeded == Some(1));

    // Once per cluster: not again on later reconciles, nor once the Job is gone (TTL), nor
    // for a new operator process (a new context: only the status remembers).
    h.reconcile().await;
    h.jobs()
        .delete(INITIAL, &DeleteParams::default())
        .await
        .unwrap();
    let fresh = Context::new(
        h.client.clone(),
        Images::default(),
        Arc::new(Metrics::new()),
    );
    reconcile(Arc::new(h.cluster().await), Arc::new(fresh))
        .await
        .expect("reconcile succeeds");
    h.reconcile().await;
    assert!(h.jobs_labelled(&selector()).await.is_empty(), "never again");
    let status = h.cluster().await.status.unwrap().pgbackrest.unwrap();
    assert_eq!(status.repos[0].replica_create_backup_complete, Some(true));
    assert_eq!(h.condition("BackupsReady").await.status, "True");
}

/// A failed initial backup is visible (a Warning per attempt, `BackupsReady=False` saying
/// when it runs again) and retried by the operator after a doubling backoff, not at once.
#[tokio::test]
async fn a_failed_initial_backup_is_reported_and_retried_after_a_backoff() {
    let h = Harness::new(manifest(1, "", "")).await;
    stanza_created(&h).await;
    h.reconcile().await;
    let first = h.jobs().get(INITIAL).await.unwrap();

    fail_at(&h, INITIAL, Timestamp::now()).await;
    h.reconcile().await;
    h.reconcile().await;
    assert_eq!(
        h.jobs().get(INITIAL).await.unwrap().metadata.uid,
        first.metadata.uid,
        "not replaced at once"
    );
    let ready = h.condition("BackupsReady").await;
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "BackupJobFailed")
    );
    assert!(
        ready.message.contains(INITIAL)
            && ready.message.contains("attempt 1")
            && ready.message.contains("runs again at"),
        "{}",
        ready.message
    );
    assert_eq!(h.event_notes("Warning", "BackupJobFailed").await.len(), 1);
    let status = h.cluster().await.status.unwrap().pgbackrest.unwrap();
    assert_eq!(status.replica_create_backup.unwrap().failed, Some(2));

    // The first backoff (2 min) is over: attempt 2, with a Normal Event saying why.
    fail_at(&h, INITIAL, Timestamp::now() - Duration::from_secs(180)).await;
    h.reconcile().await;
    let second = h.jobs().get(INITIAL).await.unwrap();
    assert_ne!(second.metadata.uid, first.metadata.uid, "replaced");
    assert_eq!(attempt(&second), "2");
    let retried = h.event_notes("Normal", "InitialBackupRetried").await;
    assert_eq!(retried.len(), 1, "{retried:?}");
    assert!(retried[0].contains("attempt 1"), "{}", retried[0]);
    assert_eq!(h.condition("BackupsReady").await.status, "True");

    // Attempt 2 fails too: a second Warning of its own.
    fail_at(&h, INITIAL, Timestamp::now()).await;
    h.reconcile().await;
    let warnings = h.event_notes("Warning", "BackupJobFailed").await;
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert!(
        warnings.iter().any(|n| n.contains("attempt 2")),
        "{warnings:?}"
    );

    h.jobs()
        .delete(INITIAL, &DeleteParams::default())
        .await
        .unwrap();
    h.reconcile().await;
    h.finish_job(INITIAL, true).await;
    h.reconcile().await;
    let status = h.cluster().await.status.unwrap().pgbackrest.unwrap();
    assert_eq!(status.repos[0].replica_create_backup_complete, Some(true));
    assert_eq!(h.condition("BackupsReady").await.status, "True");
}

/// No initial backup where it would be wrong: a standby cluster (its repository belongs to
/// the cluster it follows; it has no stanza either, which pgBackRest would refuse without a
/// primary) until it is promoted, and a cluster that is shut down.
#[tokio::test]
async fn no_initial_backup_for_a_standby_or_a_shut_down_cluster() {
    let standby = Harness::new(manifest(
        1,
        "",
        "  standby: {enabled: true, repoName: repo1}",
    ))
    .await;
    standby.reconcile().await;
    let instance = standby.instance_sets().await[0]
        .metadata
        .name
        .clone()
        .unwrap();
    standby.primary_pod(&instance).await;
    standby.reconcile().await;
    standby.reconcile().await;
    assert!(
        standby.job_names().await.is_empty(),
        "no stanza (pgBackRest refuses one without a primary) and no backup: {:?}",
        standby.job_names().await
    );
    let ready = standby.condition("BackupsReady").await;
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("True", "StandbyCluster")
    );
    assert!(ready.message.contains("repo1"), "{}", ready.message);
    // Promoted: its own stanza, then its initial backup.
    standby
        .edit(|c| c.spec.standby.as_mut().unwrap().enabled = false)
        .await;
    standby.reconcile().await;
    assert!(standby.job_names().await.contains("hippo-stanza-create"));
    standby.finish_job("hippo-stanza-create", true).await;
    standby.reconcile().await;
    assert_eq!(standby.jobs_labelled(&selector()).await.len(), 1);

    let h = Harness::new(manifest(1, "", "")).await;
    h.reconcile().await;
    let instance = h.instance_sets().await[0].metadata.name.clone().unwrap();
    h.primary_pod(&instance).await;
    h.reconcile().await;
    h.edit(|c| c.spec.shutdown = Some(true)).await;
    h.finish_job("hippo-stanza-create", true).await;
    h.reconcile().await;
    h.reconcile().await;
    assert!(h.jobs_labelled(&selector()).await.is_empty());
    h.edit(|c| c.spec.shutdown = Some(false)).await;
    h.reconcile().await;
    assert_eq!(h.jobs_labelled(&selector()).await.len(), 1);
}
