//! The backup step of the reconcile, after `apply`: creates the one-shot pgBackRest Jobs the
//! cluster needs (`<c>-stanza-create` once the primary is up, replaced when it failed as
//! `super::stanza` decides; `<c>-backup-<hash>` for a new `tusk.rs/pgbackrest-backup`
//! annotation value), reads back every backup Job's status into
//! `status.pgbackrest` (`manualBackup`, `scheduledBackups`, `repos[].stanzaCreated`,
//! `lastBackupCompletion`), and decides the `BackupsReady` and `WALArchiving` conditions and
//! the Warning Events of new failures.
//!
//! Jobs are created, never updated (their template is immutable) and never applied with the
//! other objects: a finished Job is history, not drift. Holds the client only in
//! [`list_jobs`] and [`create_job`]; everything that decides is a pure function.
//!
//! WAL-archiving health comes from [`super::archiver`].

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams, PostParams};
use kube::runtime::events::{Event, EventType};
use kube::Client;
use tusk_api::naming;
use tusk_api::types::{BackupJobStatus, PostgresClusterStatus};
use tusk_api::{PostgresCluster, ValidatedCluster};

pub use super::archiver::{
    wal_archiving, ArchiveHealth, ArchiverFigures, ArchiverReports, ArchivingVerdict,
};
use super::backup_report::warning;
pub use super::backup_report::{report, BackupInputs, BackupReport};
use super::initial_backup;
use crate::build::backup_jobs::{self, DIFFERENTIAL, FULL, INCREMENTAL};

pub const BACKUPS_READY: &str = "BackupsReady";
pub const WAL_ARCHIVING: &str = "WALArchiving";
/// `BackupsReady` False reasons (and the Warning Event reason of a failed backup Job).
pub const REASON_NO_REPO: &str = "NoRepo";
pub const REASON_STANZA_PENDING: &str = "StanzaNotCreated";
pub const REASON_STANZA_FAILED: &str = "StanzaCreateFailed";
pub const REASON_BACKUP_JOB_FAILED: &str = "BackupJobFailed";
pub const REASON_BACKUPS_SUCCEEDED: &str = "BackupsSucceeded";
/// `BackupsReady` True reason of a standby cluster: it takes no backups of its own.
pub const REASON_STANDBY: &str = "StandbyCluster";
/// Warning Event reason of a backup annotation that cannot be acted on.
pub const REASON_MANUAL_NOT_CONFIGURED: &str = "ManualBackupNotConfigured";

/// Failures of the backup step.
#[derive(Debug, thiserror::Error)]
pub enum BackupsError {
    #[error("listing the cluster's Jobs: {source}")]
    ListJobs {
        #[source]
        source: kube::Error,
    },
    #[error("creating Job {name}: {source}")]
    CreateJob {
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("deleting Job {name}: {source}")]
    DeleteJob {
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("reading the restore source PostgresCluster {namespace}/{name}: {message}")]
    RestoreSource {
        namespace: String,
        name: String,
        message: String,
    },
    #[error("deleting Endpoints {name} (Patroni's state) after the restore: {source}")]
    DeleteEndpoints {
        name: String,
        #[source]
        source: kube::Error,
    },
}

impl BackupsError {
    /// Category for Events, conditions and metrics (see `controller::error`).
    pub fn reason(&self) -> &'static str {
        match self {
            BackupsError::ListJobs { .. } => "ListJobsFailed",
            BackupsError::CreateJob { .. } => "CreateJobFailed",
            BackupsError::DeleteJob { .. } => "DeleteJobFailed",
            BackupsError::RestoreSource { .. } => "RestoreSourceUnusable",
            BackupsError::DeleteEndpoints { .. } => "DeleteEndpointsFailed",
        }
    }
}

/// A condition to set: status, reason, message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub ok: bool,
    pub reason: &'static str,
    pub message: String,
}

/// The cluster's Jobs that Tusk or its CronJobs created, by name.
pub async fn list_jobs(
    client: &Client,
    namespace: &str,
    cluster: &str,
) -> Result<BTreeMap<String, Job>, BackupsError> {
    let api: Api<Job> = Api::namespaced(client.clone(), namespace);
    let params = ListParams::default().labels(&naming::cluster_selector(cluster));
    let list = api
        .list(&params)
        .await
        .map_err(|source| BackupsError::ListJobs { source })?;
    Ok(list
        .items
        .into_iter()
        .filter_map(|job| Some((job.metadata.name.clone()?, job)))
        .collect())
}

/// Creates `job` owned by the cluster; an existing Job of that name is left as it is.
pub async fn create_job(
    client: &Client,
    cluster: &PostgresCluster,
    mut job: Job,
) -> Result<Job, BackupsError> {
    use kube::Resource as _;
    let name = job.metadata.name.clone().unwrap_or_default();
    let namespace = cluster.metadata.namespace.clone().unwrap_or_default();
    if let Some(owner) = cluster.controller_owner_ref(&()) {
        let refs = job.metadata.owner_references.get_or_insert_with(Vec::new);
        if !refs.iter().any(|r| r.uid == owner.uid) {
            refs.push(owner);
        }
    }
    let api: Api<Job> = Api::namespaced(client.clone(), &namespace);
    match api.create(&PostParams::default(), &job).await {
        Ok(created) => Ok(created),
        Err(kube::Error::Api(status)) if status.code == 409 => api
            .get(&name)
            .await
            .map_err(|source| BackupsError::CreateJob { name, source }),
        Err(source) => Err(BackupsError::CreateJob { name, source }),
    }
}

/// How a Job ended, from its status (a Job without status has not started).
pub fn job_status(id: &str, backup_type: Option<&str>, job: &Job) -> BackupJobStatus {
    let status = job.status.clone().unwrap_or_default();
    let condition = |type_: &str| {
        status
            .conditions
            .iter()
            .flatten()
            .any(|c| c.type_ == type_ && c.status == "True")
    };
    let succeeded = status.succeeded.unwrap_or(0);
    let failed = status.failed.unwrap_or(0);
    let retries = job.spec.as_ref().and_then(|s| s.backoff_limit).unwrap_or(6);
    let finished =
        condition("Complete") || condition("Failed") || succeeded > 0 || failed > retries;
    BackupJobStatus {
        id: id.to_owned(),
        job_name: job.metadata.name.clone(),
        backup_type: backup_type.map(str::to_owned),
        start_time: status.start_time.map(|t| t.0.to_string()),
        completion_time: status.completion_time.map(|t| t.0.to_string()),
        finished,
        active: status.active.filter(|n| *n > 0),
        succeeded: Some(succeeded).filter(|n| *n > 0),
        failed: Some(failed).filter(|n| *n > 0),
    }
}

/// Finished without success.
pub fn job_failed(status: &BackupJobStatus) -> bool {
    status.finished && status.succeeded.is_none()
}

/// Finished with success.
pub fn job_succeeded(status: &BackupJobStatus) -> bool {
    status.finished && status.succeeded.is_some()
}

/// The newest Job each backup CronJob started (the Job a CronJob makes is owned by it).
pub fn scheduled_backups(
    cluster: &ValidatedCluster,
    jobs: &BTreeMap<String, Job>,
) -> Vec<BackupJobStatus> {
    let Some(backups) = &cluster.backups else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for repo in &backups.repos {
        for backup_type in [FULL, DIFFERENTIAL, INCREMENTAL] {
            let cron_job = cluster.names.backup_cron_job(&repo.name, backup_type);
            let newest = jobs
                .values()
                .filter(|job| {
                    job.metadata
                        .owner_references
                        .iter()
                        .flatten()
                        .any(|r| r.kind == "CronJob" && r.name == cron_job)
                })
                .max_by_key(|job| {
                    (
                        job.metadata.creation_timestamp.as_ref().map(|t| t.0),
                        job.metadata.name.clone(),
                    )
                });
            if let Some(job) = newest {
                out.push(job_status(&cron_job, Some(backup_type), job));
            }
        }
    }
    out
}

/// The manual backup annotation's value, when set and not empty.
pub fn requested_backup(cluster: &PostgresCluster) -> Option<&str> {
    cluster
        .metadata
        .annotations
        .as_ref()?
        .get(naming::ANNOTATION_BACKUP)
        .map(String::as_str)
        .filter(|v| !v.is_empty())
}

/// The manual backup Job to create now (pure), for a new annotation value. A backup
/// annotation without `spec.backups.pgbackrest.manual` gives a Warning instead (returned
/// second). The stanza Job is `super::stanza`'s.
pub fn jobs_to_create(
    cluster: &ValidatedCluster,
    image: &str,
    manual_id: Option<&str>,
    current: &PostgresClusterStatus,
    jobs: &BTreeMap<String, Job>,
) -> (Vec<Job>, Option<Event>) {
    let not_configured = |id: &str| {
        warning(
            REASON_MANUAL_NOT_CONFIGURED,
            format!(
                "annotation {}={id} ignored: spec.backups.pgbackrest.manual is not set",
                naming::ANNOTATION_BACKUP
            ),
        )
    };
    let Some(backups) = &cluster.backups else {
        return (Vec::new(), manual_id.map(not_configured));
    };
    let mut create = Vec::new();
    let mut warn = None;
    if let Some(id) = manual_id {
        let name = cluster.names.manual_backup_job(id);
        let already = current
            .pgbackrest
            .as_ref()
            .and_then(|p| p.manual_backup.as_ref())
            .is_some_and(|m| m.id == id);
        if backups.manual.is_none() {
            warn = Some(not_configured(id));
        } else if !already && !jobs.contains_key(&name) {
            create.extend(backup_jobs::manual_backup_job(cluster, image, id));
        }
    }
    (create, warn)
}

/// The backup step: creates the Jobs [`jobs_to_create`], `super::stanza` and
/// `super::initial_backup` ask for, then [`report`]s. `held`: the instances are held
/// (shutdown or a restore in progress), so no initial backup starts.
#[allow(clippy::too_many_arguments)]
pub async fn run(
    client: &Client,
    cluster: &PostgresCluster,
    validated: &ValidatedCluster,
    image: &str,
    primary: Option<&str>,
    held: bool,
    current: &PostgresClusterStatus,
    archiver: Option<ArchiverFigures>,
) -> Result<BackupReport, BackupsError> {
    let namespace = validated.namespace.as_str();
    let mut jobs = list_jobs(client, namespace, validated.name()).await?;
    let manual_id = requested_backup(cluster);
    let (mut create, warn) = jobs_to_create(validated, image, manual_id, current, &jobs);
    let mut created_events = Vec::new();
    let stanza_job = validated.names.stanza_create_job();
    let step = super::stanza::next_step(&super::stanza::StanzaInputs {
        cluster: validated,
        image,
        primary: primary.is_some(),
        stanza_recorded: current
            .pgbackrest
            .as_ref()
            .is_some_and(|p| p.repos.iter().any(|r| r.stanza_created == Some(true))),
        existing: jobs.get(&stanza_job),
        now: super::status::now(),
    });
    let (stanza_create, retried) = super::stanza::apply_step(
        client,
        namespace,
        step,
        &mut jobs,
        super::stanza::REASON_STANZA_RETRIED,
    )
    .await?;
    create.splice(0..0, stanza_create);
    created_events.extend(retried);
    let initial_job = validated.names.replica_create_backup_job();
    let stanza_succeeded = jobs
        .get(&stanza_job)
        .is_some_and(|job| job_succeeded(&job_status("stanza-create", None, job)));
    let recorded = current.pgbackrest.as_ref();
    let step = initial_backup::next_step(&initial_backup::InitialBackupInputs {
        cluster: validated,
        image,
        primary: primary.is_some(),
        held,
        stanza_created: stanza_succeeded
            || recorded.is_some_and(|p| p.repos.iter().any(|r| r.stanza_created == Some(true))),
        recorded_complete: recorded.is_some_and(|p| {
            p.repos
                .iter()
                .any(|r| r.replica_create_backup_complete == Some(true))
        }),
        existing: jobs.get(&initial_job),
        now: super::status::now(),
    });
    let (initial_create, retried) = super::stanza::apply_step(
        client,
        namespace,
        step,
        &mut jobs,
        initial_backup::REASON_INITIAL_BACKUP_RETRIED,
    )
    .await?;
    // One backup of a stanza at a time (pgBackRest's lock): a manual backup asked for while
    // the initial one runs starts once it finished.
    let initial_running = initial_create.is_some()
        || jobs
            .get(&initial_job)
            .is_some_and(|job| !job_status(initial_backup::ID, None, job).finished);
    let is_manual = |job: &Job| {
        job.metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(naming::LABEL_PGBACKREST_BACKUP))
            .is_some_and(|v| v == naming::BACKUP_MANUAL)
    };
    let deferred = initial_running && create.iter().any(is_manual);
    if deferred {
        create.retain(|job| !is_manual(job));
    }
    create.extend(initial_create);
    created_events.extend(retried);
    for job in create {
        let created = create_job(client, cluster, job).await?;
        let name = created.metadata.name.clone().unwrap_or_default();
        tracing::info!(job = %name, "backup Job created");
        created_events.push(Event {
            type_: EventType::Normal,
            reason: "Created".into(),
            note: Some(format!("Job {name} created")),
            action: "Backup".into(),
            secondary: None,
        });
        jobs.insert(name, created);
    }
    let configured = validated
        .backups
        .as_ref()
        .is_some_and(|b| b.manual.is_some());
    let inputs = BackupInputs {
        cluster: validated,
        current,
        jobs: &jobs,
        archiver,
    };
    // A deferred manual backup is not reported yet: the status keeps the previous one.
    let mut report = report(&inputs, manual_id.filter(|_| configured && !deferred));
    report.events.extend(warn);
    report.events.splice(0..0, created_events);
    report.jobs = jobs;
    Ok(report)
}

/// Writes what the backup and restore steps decided into `next`: `status.pgbackrest` and the
/// `BackupsReady`, `WALArchiving` and `Restoring` conditions (each only when decided).
pub fn write_status(
    next: &mut PostgresClusterStatus,
    backup: &BackupReport,
    restored: &super::restore::RestoreReport,
    generation: Option<i64>,
    now: Timestamp,
) {
    next.pgbackrest = backup.pgbackrest.clone();
    if let Some(restore) = &restored.restore {
        next.pgbackrest.get_or_insert_with(Default::default).restore = Some(restore.clone());
    }
    if let Some(v) = &backup.wal_archiving {
        super::status::set_condition_status(
            &mut next.conditions,
            WAL_ARCHIVING,
            v.condition_status(),
            v.reason,
            v.message.clone(),
            generation,
            now,
        );
    }
    for (type_, verdict) in [
        (BACKUPS_READY, &backup.backups_ready),
        (super::restore::RESTORING, &restored.restoring),
    ] {
        if let Some(v) = verdict {
            super::status::set_condition(
                &mut next.conditions,
                type_,
                v.ok,
                v.reason,
                v.message.clone(),
                generation,
                now,
            );
        }
    }
}

/// `lastBackupCompletion` as Unix seconds, for the cluster gauge.
pub fn last_backup_unix(status: &PostgresClusterStatus) -> Option<f64> {
    let at = status
        .pgbackrest
        .as_ref()?
        .last_backup_completion
        .as_ref()?;
    at.parse::<Timestamp>().ok().map(|t| t.as_second() as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_with_retries_left_is_not_finished() {
        let job: Job = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "hippo-stanza-create"},
            "spec": {"backoffLimit": 6, "template": {}},
            "status": {"failed": 2, "active": 1}
        }))
        .unwrap();
        let status = job_status("stanza-create", None, &job);
        assert!(!status.finished && !job_failed(&status));
        assert_eq!(status.active, Some(1));
        let mut given_up = job.clone();
        given_up.status.as_mut().unwrap().failed = Some(7);
        given_up.status.as_mut().unwrap().active = None;
        assert!(job_failed(&job_status("stanza-create", None, &given_up)));
    }
}
