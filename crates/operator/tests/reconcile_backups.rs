//! Reconcile sequences of backups against kube-fake-client: the manual backup annotation,
//! the stanza Job, backup Job status into `status.pgbackrest`, the `BackupsReady` and
//! `WALArchiving` conditions and their Events. Job status is set by the test, as the Job
//! controller would.

mod backups_support;
mod common;

use std::collections::BTreeSet;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use serde_json::json;
use tusk_api::naming;
use tusk_operator::controller::backups::ArchiverFigures;

use backups_support::*;

#[tokio::test]
async fn each_new_annotation_value_starts_one_labelled_manual_backup() {
    let h = Harness::new(manifest(1, MANUAL, "")).await;
    h.reconcile().await;
    let manual = format!(
        "{}={}",
        naming::LABEL_PGBACKREST_BACKUP,
        naming::BACKUP_MANUAL
    );
    assert!(
        h.jobs_labelled(&manual).await.is_empty(),
        "no annotation, no backup"
    );

    h.annotate(naming::ANNOTATION_BACKUP, "first").await;
    h.reconcile().await;
    h.reconcile().await;
    let jobs = h.jobs_labelled(&manual).await;
    assert_eq!(jobs.len(), 1, "the same value twice is one backup");
    let job = &jobs[0];
    let name = job.metadata.name.clone().unwrap();
    assert!(name.starts_with("hippo-backup-"), "{name}");
    assert_eq!(
        label(&job.metadata.labels, naming::LABEL_PGBACKREST_REPO),
        "repo1"
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
    assert_eq!(label(pod_labels, naming::LABEL_PGBACKREST_BACKUP), "manual");
    assert_eq!(label(pod_labels, naming::LABEL_PGBACKREST_REPO), "repo1");
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
    let uid = h.cluster().await.metadata.uid.unwrap();
    assert!(job
        .metadata
        .owner_references
        .iter()
        .flatten()
        .any(|r| r.uid == uid));
    let recorded = h
        .cluster()
        .await
        .status
        .unwrap()
        .pgbackrest
        .unwrap()
        .manual_backup
        .unwrap();
    assert_eq!(recorded.id, "first");
    assert_eq!(recorded.job_name.as_deref(), Some(name.as_str()));
    assert!(!recorded.finished);

    h.annotate(naming::ANNOTATION_BACKUP, "second").await;
    h.reconcile().await;
    let names: BTreeSet<String> = h
        .jobs_labelled(&manual)
        .await
        .into_iter()
        .map(|j| j.metadata.name.unwrap())
        .collect();
    assert_eq!(names.len(), 2, "a new value is a new backup: {names:?}");
    let recorded = h
        .cluster()
        .await
        .status
        .unwrap()
        .pgbackrest
        .unwrap()
        .manual_backup
        .unwrap();
    assert_eq!(recorded.id, "second");
}

#[tokio::test]
async fn job_outcomes_drive_status_backups_ready_and_warning_events() {
    let h = Harness::new(manifest(1, MANUAL, "")).await;
    h.reconcile().await;
    let ready = h.condition("BackupsReady").await;
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "StanzaNotCreated")
    );
    assert!(
        !h.job_names().await.contains("hippo-stanza-create"),
        "no primary yet"
    );

    let instance = h.instance_sets().await[0].metadata.name.clone().unwrap();
    h.primary_pod(&instance).await;
    h.reconcile().await;
    assert!(h.job_names().await.contains("hippo-stanza-create"));
    h.finish_job("hippo-stanza-create", true).await;
    h.reconcile().await;
    let ready = h.condition("BackupsReady").await;
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("True", "BackupsSucceeded")
    );
    let status = h.cluster().await.status.unwrap().pgbackrest.unwrap();
    assert_eq!(status.repos[0].stanza_created, Some(true));
    // The initial full backup came first (see reconcile_initial_backup); a manual backup
    // waits for it.
    h.finish_job("hippo-backup-replica-create", true).await;
    h.reconcile().await;

    h.annotate(naming::ANNOTATION_BACKUP, "broken").await;
    h.reconcile().await;
    let failing = tusk_api::naming::ClusterNames::new(naming::DnsLabel::new(NAME).unwrap())
        .manual_backup_job("broken");
    h.finish_job(&failing, false).await;
    h.reconcile().await;
    h.reconcile().await;
    let manual = h
        .cluster()
        .await
        .status
        .unwrap()
        .pgbackrest
        .unwrap()
        .manual_backup
        .unwrap();
    assert!(manual.finished);
    assert_eq!(manual.failed, Some(1));
    assert_eq!(manual.succeeded, None);
    assert_eq!(manual.start_time.as_deref(), Some("2024-05-01T10:00:00Z"));
    let ready = h.condition("BackupsReady").await;
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "BackupJobFailed")
    );
    assert!(ready.message.contains(&failing), "{}", ready.message);
    let warnings = h.events_with_reason("BackupJobFailed").await;
    assert_eq!(warnings.len(), 1, "one Event for one failure");
    assert_eq!(warnings[0].type_.as_deref(), Some("Warning"));

    h.annotate(naming::ANNOTATION_BACKUP, "fixed").await;
    h.reconcile().await;
    let fixed = tusk_api::naming::ClusterNames::new(naming::DnsLabel::new(NAME).unwrap())
        .manual_backup_job("fixed");
    h.finish_job(&fixed, true).await;
    h.reconcile().await;
    let status = h.cluster().await.status.unwrap().pgbackrest.unwrap();
    let manual = status.manual_backup.unwrap();
    assert_eq!((manual.id.as_str(), manual.succeeded), ("fixed", Some(1)));
    assert_eq!(
        manual.completion_time.as_deref(),
        Some("2024-05-01T10:05:00Z")
    );
    assert_eq!(
        status.last_backup_completion.as_deref(),
        Some("2024-05-01T10:05:00Z")
    );
    assert_eq!(h.condition("BackupsReady").await.status, "True");
}

#[tokio::test]
async fn a_scheduled_backup_that_failed_makes_backups_not_ready() {
    let h = Harness::new(manifest(1, "", "")).await;
    h.reconcile().await;
    let instance = h.instance_sets().await[0].metadata.name.clone().unwrap();
    h.primary_pod(&instance).await;
    h.reconcile().await;
    h.finish_job("hippo-stanza-create", true).await;
    // What the CronJob controller makes: a Job owned by the CronJob, with its labels.
    let cron: k8s_openapi::api::batch::v1::CronJob = Api::namespaced(h.client.clone(), NS)
        .get("hippo-repo1-full")
        .await
        .unwrap();
    let mut job = Job {
        metadata: cron
            .spec
            .as_ref()
            .unwrap()
            .job_template
            .metadata
            .clone()
            .unwrap(),
        spec: cron.spec.as_ref().unwrap().job_template.spec.clone(),
        status: None,
    };
    job.metadata.name = Some("hippo-repo1-full-28590000".into());
    job.metadata.namespace = Some(NS.into());
    job.metadata.owner_references = Some(vec![serde_json::from_value(json!({
        "apiVersion": "batch/v1", "kind": "CronJob", "name": "hippo-repo1-full",
        "uid": cron.metadata.uid.clone().unwrap(), "controller": true
    }))
    .unwrap()]);
    h.jobs().create(&PostParams::default(), &job).await.unwrap();
    h.finish_job("hippo-repo1-full-28590000", false).await;
    h.reconcile().await;
    let status = h.cluster().await.status.unwrap().pgbackrest.unwrap();
    let scheduled = &status.scheduled_backups[0];
    assert_eq!(scheduled.id, "hippo-repo1-full");
    assert_eq!(scheduled.backup_type.as_deref(), Some("full"));
    assert_eq!(scheduled.failed, Some(1));
    let ready = h.condition("BackupsReady").await;
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "BackupJobFailed")
    );
    assert_eq!(h.events_with_reason("BackupJobFailed").await.len(), 1);
}

#[tokio::test]
async fn without_manual_the_annotation_is_ignored_with_a_warning() {
    let h = Harness::new(manifest(1, "", "")).await;
    h.reconcile().await;
    h.annotate(naming::ANNOTATION_BACKUP, "now").await;
    h.reconcile().await;
    let manual = format!(
        "{}={}",
        naming::LABEL_PGBACKREST_BACKUP,
        naming::BACKUP_MANUAL
    );
    assert!(h.jobs_labelled(&manual).await.is_empty());
    let warnings = h.events_with_reason("ManualBackupNotConfigured").await;
    assert_eq!(warnings.len(), 1);
    let note = warnings[0].note.clone().unwrap_or_default();
    assert!(note.contains("spec.backups.pgbackrest.manual"), "{note}");
    let status = h.cluster().await.status.unwrap().pgbackrest.unwrap();
    assert_eq!(status.manual_backup, None);
}

#[tokio::test]
async fn failing_wal_archiving_is_a_condition_and_one_warning() {
    let h = Harness::new(manifest(1, "", "")).await;
    let at = |s: i64| Some(Timestamp::from_second(s).unwrap());
    h.ctx.archiver.record(
        NS,
        NAME,
        ArchiverFigures {
            failed_count: 3,
            last_failed_time: at(2_000),
            last_archived_time: at(1_000),
        },
    );
    h.reconcile().await;
    h.reconcile().await;
    let wal = h.condition("WALArchiving").await;
    assert_eq!(
        (wal.status.as_str(), wal.reason.as_str()),
        ("False", "ArchiveFailing")
    );
    assert_eq!(h.events_with_reason("ArchiveFailing").await.len(), 1);

    h.ctx.archiver.record(
        NS,
        NAME,
        ArchiverFigures {
            failed_count: 3,
            last_failed_time: at(2_000),
            last_archived_time: at(3_000),
        },
    );
    h.reconcile().await;
    let wal = h.condition("WALArchiving").await;
    assert_eq!(
        (wal.status.as_str(), wal.reason.as_str()),
        ("True", "ArchiveHealthy")
    );
}

/// The stanza Job's attempt annotation and uid (to tell a replaced Job from the same one).
async fn stanza_job(h: &Harness) -> (String, String, String) {
    let job = h.jobs().get("hippo-stanza-create").await.unwrap();
    let annotation = |key: &str| {
        job.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(key))
            .cloned()
            .unwrap_or_default()
    };
    (
        job.metadata.uid.clone().unwrap(),
        annotation(naming::ANNOTATION_STANZA_ATTEMPT),
        annotation(naming::ANNOTATION_PGBACKREST_CONFIG),
    )
}

/// What the Job controller writes when a Job reached its backoff limit `ago` before now.
async fn give_up_on(h: &Harness, name: &str, ago: std::time::Duration) {
    let at = Timestamp::now() - ago;
    h.jobs()
        .patch_status(
            name,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"status": {
                "startTime": "2024-05-01T10:00:00Z", "failed": 7,
                "conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
                                "lastTransitionTime": at.to_string()}]}})),
        )
        .await
        .expect("job status patched");
}

/// A stanza Job that reached its backoff limit is replaced by the operator itself: not at
/// once (no hot loop), but after a backoff that doubles per attempt, and at once when the
/// pgBackRest configuration it ran with changed; each step says so in an Event. Before, the
/// cluster stayed `StanzaCreateFailed` until someone deleted the Job by hand.
#[tokio::test]
async fn a_failed_stanza_job_is_replaced_after_a_backoff_or_when_the_configuration_changes() {
    use std::time::Duration;
    let h = Harness::new(manifest(1, "", "")).await;
    h.reconcile().await;
    let instance = h.instance_sets().await[0].metadata.name.clone().unwrap();
    h.primary_pod(&instance).await;
    h.reconcile().await;
    let (first_uid, attempt, config) = stanza_job(&h).await;
    assert_eq!(attempt, "1");
    assert_eq!(config.len(), 64, "a SHA-256 of the configuration: {config}");

    // Just failed: reported with one Warning, kept for the backoff, however often reconciled.
    give_up_on(&h, "hippo-stanza-create", Duration::ZERO).await;
    h.reconcile().await;
    h.reconcile().await;
    assert_eq!(stanza_job(&h).await.0, first_uid, "not replaced at once");
    let ready = h.condition("BackupsReady").await;
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "StanzaCreateFailed")
    );
    assert!(
        ready.message.contains("attempt 1") && ready.message.contains("runs again at"),
        "{}",
        ready.message
    );
    assert_eq!(
        h.event_notes("Warning", "StanzaCreateFailed").await.len(),
        1
    );
    assert!(h.events_with_reason("StanzaCreateRetried").await.is_empty());

    // The first backoff (2 min) is over: a new Job, attempt 2, and a Normal Event saying why.
    give_up_on(&h, "hippo-stanza-create", Duration::from_secs(3 * 60)).await;
    h.reconcile().await;
    let (second_uid, attempt, _) = stanza_job(&h).await;
    assert_ne!(second_uid, first_uid, "the failed Job was replaced");
    assert_eq!(attempt, "2");
    let retried = h.event_notes("Normal", "StanzaCreateRetried").await;
    assert_eq!(retried.len(), 1, "{retried:?}");
    assert!(
        retried[0].contains("attempt 1") && retried[0].contains("2 min"),
        "{}",
        retried[0]
    );
    assert_eq!(h.condition("BackupsReady").await.reason, "StanzaNotCreated");

    // Attempt 2 failed 3 min ago: its backoff is 4 min, so it is kept.
    give_up_on(&h, "hippo-stanza-create", Duration::from_secs(3 * 60)).await;
    h.reconcile().await;
    assert_eq!(stanza_job(&h).await.0, second_uid);
    assert_eq!(
        h.event_notes("Warning", "StanzaCreateFailed").await.len(),
        2
    );

    // A change of the pgBackRest configuration (the likely fix) replaces it at once, and the
    // count starts again.
    h.edit(|c| {
        let pgbackrest = &mut c.spec.backups.as_mut().unwrap().pgbackrest;
        pgbackrest
            .global
            .get_or_insert_with(Default::default)
            .insert(
                "repo1-retention-full".into(),
                tusk_api::types::StringOrNumber::Int(2),
            );
    })
    .await;
    h.reconcile().await;
    let (third_uid, attempt, third_config) = stanza_job(&h).await;
    assert_ne!(third_uid, second_uid);
    assert_eq!(attempt, "1");
    assert_ne!(third_config, config);
    let retried = h.event_notes("Normal", "StanzaCreateRetried").await;
    assert!(
        retried
            .iter()
            .any(|n| n.contains("earlier pgBackRest configuration")),
        "{retried:?}"
    );

    // Success ends it: the stanza is recorded and the Job is left alone from then on.
    h.finish_job("hippo-stanza-create", true).await;
    h.reconcile().await;
    assert_eq!(h.condition("BackupsReady").await.status, "True");
    give_up_on(&h, "hippo-stanza-create", Duration::from_secs(3600)).await;
    h.reconcile().await;
    assert_eq!(stanza_job(&h).await.0, third_uid);
}

/// `WALArchiving` claims health only once a segment was archived: figures with neither a
/// success nor a failure are `Unknown` (they were `True ArchiveHealthy`, reported while
/// archiving in fact failed), without a Warning; the first archived segment makes it `True`.
#[tokio::test]
async fn wal_archiving_is_unknown_until_a_segment_was_archived() {
    let h = Harness::new(manifest(1, "", "")).await;
    let nothing_yet = ArchiverFigures {
        failed_count: 0,
        last_failed_time: None,
        last_archived_time: None,
    };
    h.ctx.archiver.record(NS, NAME, nothing_yet);
    h.reconcile().await;
    let wal = h.condition("WALArchiving").await;
    assert_eq!(
        (wal.status.as_str(), wal.reason.as_str()),
        ("Unknown", "NoSegmentArchivedYet")
    );
    assert!(wal.message.contains("not archived"), "{}", wal.message);
    assert!(h
        .events_with_reason("NoSegmentArchivedYet")
        .await
        .is_empty());
    assert!(h.events_with_reason("ArchiveFailing").await.is_empty());

    let archived = ArchiverFigures {
        last_archived_time: Some(Timestamp::from_second(1_000).unwrap()),
        ..nothing_yet
    };
    h.ctx.archiver.record(NS, NAME, archived);
    h.reconcile().await;
    let wal = h.condition("WALArchiving").await;
    assert_eq!(
        (wal.status.as_str(), wal.reason.as_str()),
        ("True", "ArchiveHealthy")
    );
}
