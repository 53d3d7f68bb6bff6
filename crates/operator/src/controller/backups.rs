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
use tusk_api::model::BackupSettings;
use tusk_api::naming;
use tusk_api::types::{BackupJobStatus, PgBackRestStatus, PostgresClusterStatus, RepoStatus};
use tusk_api::{PostgresCluster, ValidatedCluster};

pub use super::archiver::{
    wal_archiving, ArchiveHealth, ArchiverFigures, ArchiverReports, ArchivingVerdict,
};
use crate::build::backup_jobs::{self, DIFFERENTIAL, FULL, INCREMENTAL};

pub const BACKUPS_READY: &str = "BackupsReady";
pub const WAL_ARCHIVING: &str = "WALArchiving";
/// `BackupsReady` False reasons (and the Warning Event reason of a failed backup Job).
pub const REASON_NO_REPO: &str = "NoRepo";
pub const REASON_STANZA_PENDING: &str = "StanzaNotCreated";
pub const REASON_STANZA_FAILED: &str = "StanzaCreateFailed";
pub const REASON_BACKUP_JOB_FAILED: &str = "BackupJobFailed";
pub const REASON_BACKUPS_SUCCEEDED: &str = "BackupsSucceeded";
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

fn job_succeeded(status: &BackupJobStatus) -> bool {
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

/// What the backup step decided, for the status and Events.
#[derive(Default)]
pub struct BackupReport {
    /// `status.pgbackrest` (without `restore`, which the restore step owns).
    pub pgbackrest: Option<PgBackRestStatus>,
    pub backups_ready: Option<Verdict>,
    pub wal_archiving: Option<ArchivingVerdict>,
    pub events: Vec<Event>,
    /// The cluster's Jobs (with those created now), for the restore step.
    pub jobs: BTreeMap<String, Job>,
}

/// What the backup step saw: the cluster's Jobs and the latest archiver figures.
pub struct BackupInputs<'a> {
    pub cluster: &'a ValidatedCluster,
    pub current: &'a PostgresClusterStatus,
    pub jobs: &'a BTreeMap<String, Job>,
    pub archiver: Option<ArchiverFigures>,
}

/// Status, conditions and Events from what exists (pure). Jobs created in this reconcile
/// must already be in `inputs.jobs`.
pub fn report(inputs: &BackupInputs, manual_id: Option<&str>) -> BackupReport {
    let cluster = inputs.cluster;
    let Some(backups) = &cluster.backups else {
        return BackupReport {
            pgbackrest: None,
            backups_ready: Some(Verdict {
                ok: false,
                reason: REASON_NO_REPO,
                message: "spec.backups is not set: no WAL archive and no backups".into(),
            }),
            wal_archiving: None,
            events: Vec::new(),
            jobs: BTreeMap::new(),
        };
    };
    let previous = inputs.current.pgbackrest.clone().unwrap_or_default();
    let mut events = Vec::new();
    let stanza_job = inputs.jobs.get(&cluster.names.stanza_create_job());
    let stanza = stanza_job.map(|job| job_status("stanza-create", None, job));
    let stanza_created = stanza.as_ref().is_some_and(job_succeeded)
        || previous
            .repos
            .iter()
            .any(|r| r.stanza_created == Some(true));
    let repos = repo_statuses(backups, stanza_created);

    let manual = match manual_id {
        Some(id) => {
            let name = cluster.names.manual_backup_job(id);
            match inputs.jobs.get(&name) {
                Some(job) => Some(job_status(id, Some(naming::BACKUP_MANUAL), job)),
                // Gone (TTL) after it was recorded: keep the record.
                None => previous.manual_backup.clone().filter(|m| m.id == id),
            }
        }
        None => previous.manual_backup.clone(),
    };
    let scheduled = scheduled_backups(cluster, inputs.jobs);

    let mut latest: Vec<&BackupJobStatus> = scheduled.iter().collect();
    latest.extend(manual.iter());
    for job in &latest {
        let was_failed = previous
            .manual_backup
            .iter()
            .chain(previous.scheduled_backups.iter())
            .any(|p| p.job_name == job.job_name && job_failed(p));
        if job_failed(job) && !was_failed {
            events.push(warning(
                REASON_BACKUP_JOB_FAILED,
                format!(
                    "backup Job {} ({}) failed; see its pod's log",
                    job.job_name.as_deref().unwrap_or_default(),
                    job.id
                ),
            ));
        }
    }
    let stanza_failure = stanza_job
        .filter(|_| stanza.as_ref().is_some_and(job_failed))
        .map(|job| super::stanza::failure_message(cluster, job));
    let backups_ready = backups_ready(stanza_failure, stanza_created, &latest);
    // One Warning per failed attempt: the message names the attempt, so it changes only then.
    if backups_ready.reason == REASON_STANZA_FAILED
        && !inputs.current.conditions.iter().any(|c| {
            c.type_ == BACKUPS_READY
                && c.reason == REASON_STANZA_FAILED
                && c.message == backups_ready.message
        })
    {
        let mut event = warning(REASON_STANZA_FAILED, backups_ready.message.clone());
        // Related to the failed Job: each attempt is its own Event (see `job_reference`).
        event.secondary = stanza_job.map(super::stanza::job_reference);
        events.push(event);
    }
    let last_backup_completion = latest
        .iter()
        .filter(|j| job_succeeded(j))
        .filter_map(|j| j.completion_time.clone())
        .chain(previous.last_backup_completion.clone())
        .max();

    let wal_archiving = inputs.archiver.map(|f| wal_archiving(&f));
    if let Some(verdict) = wal_archiving
        .as_ref()
        .filter(|v| v.health == ArchiveHealth::Failing)
    {
        let was_failing = inputs
            .current
            .conditions
            .iter()
            .any(|c| c.type_ == WAL_ARCHIVING && c.status == "False");
        if !was_failing {
            events.push(warning(verdict.reason, verdict.message.clone()));
        }
    }
    BackupReport {
        pgbackrest: Some(PgBackRestStatus {
            repos,
            manual_backup: manual,
            scheduled_backups: scheduled,
            restore: previous.restore.clone(),
            last_backup_completion,
        }),
        backups_ready: Some(backups_ready),
        wal_archiving,
        events,
        jobs: BTreeMap::new(),
    }
}

fn repo_statuses(backups: &BackupSettings, stanza_created: bool) -> Vec<RepoStatus> {
    backups
        .repos
        .iter()
        .map(|repo| RepoStatus {
            name: repo.name.clone(),
            stanza_created: Some(stanza_created),
            ..RepoStatus::default()
        })
        .collect()
}

/// `stanza_failure`: the message of a stanza Job that failed (`stanza::failure_message`).
fn backups_ready(
    stanza_failure: Option<String>,
    stanza_created: bool,
    latest: &[&BackupJobStatus],
) -> Verdict {
    if !stanza_created {
        return match stanza_failure {
            Some(message) => Verdict {
                ok: false,
                reason: REASON_STANZA_FAILED,
                message,
            },
            _ => Verdict {
                ok: false,
                reason: REASON_STANZA_PENDING,
                message: "the pgBackRest stanza is not created yet (it is once the primary runs)"
                    .into(),
            },
        };
    }
    let failed: Vec<String> = latest
        .iter()
        .filter(|j| job_failed(j))
        .map(|j| j.job_name.clone().unwrap_or_else(|| j.id.clone()))
        .collect();
    if failed.is_empty() {
        Verdict {
            ok: true,
            reason: REASON_BACKUPS_SUCCEEDED,
            message: "stanza created; the latest backup Jobs succeeded or are running".into(),
        }
    } else {
        Verdict {
            ok: false,
            reason: REASON_BACKUP_JOB_FAILED,
            message: format!("latest backup Job failed: {}", failed.join(", ")),
        }
    }
}

fn warning(reason: &str, note: String) -> Event {
    Event {
        type_: EventType::Warning,
        reason: reason.to_owned(),
        note: Some(note),
        action: "Backup".into(),
        secondary: None,
    }
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

/// The backup step: creates the Jobs [`jobs_to_create`] asks for, then [`report`]s.
pub async fn run(
    client: &Client,
    cluster: &PostgresCluster,
    validated: &ValidatedCluster,
    image: &str,
    primary: Option<&str>,
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
    let (stanza_create, retried) =
        super::stanza::apply_step(client, namespace, step, &mut jobs).await?;
    create.splice(0..0, stanza_create);
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
    let mut report = report(&inputs, manual_id.filter(|_| configured));
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
