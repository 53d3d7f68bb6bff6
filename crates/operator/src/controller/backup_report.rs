//! The pure half of the backup step: what exists (the cluster's Jobs, the recorded status,
//! the latest archiver figures) becomes `status.pgbackrest`, the `BackupsReady` and
//! `WALArchiving` verdicts and the Warning Events of new failures. `super::backups` creates
//! the Jobs and calls [`report`]; nothing here holds a client.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::Job;
use kube::runtime::events::{Event, EventType};
use tusk_api::model::BackupSettings;
use tusk_api::naming;
use tusk_api::types::{BackupJobStatus, PgBackRestStatus, PostgresClusterStatus, RepoStatus};
use tusk_api::ValidatedCluster;

use super::archiver::{wal_archiving, ArchiveHealth, ArchiverFigures, ArchivingVerdict};
use super::backups::{
    job_failed, job_status, job_succeeded, scheduled_backups, Verdict, BACKUPS_READY,
    REASON_BACKUPS_SUCCEEDED, REASON_BACKUP_JOB_FAILED, REASON_NO_REPO, REASON_STANDBY,
    REASON_STANZA_FAILED, REASON_STANZA_PENDING, WAL_ARCHIVING,
};
use super::initial_backup;
use crate::build::backup_jobs::FULL;

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
    let initial_job = inputs.jobs.get(&cluster.names.replica_create_backup_job());
    let initial = initial_job
        .map(|job| job_status(initial_backup::ID, Some(FULL), job))
        .or_else(|| previous.replica_create_backup.clone());
    let initial_complete = initial.as_ref().is_some_and(job_succeeded)
        || previous
            .repos
            .iter()
            .any(|r| r.replica_create_backup_complete == Some(true));
    let repos = repo_statuses(backups, stanza_created, initial_complete);

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
    // The initial backup's failures: one Warning per attempt (a replaced Job is another
    // object, so the Event relates to it by uid), with when it runs again.
    let initial_failure = initial_job
        .filter(|_| !initial_complete && initial.as_ref().is_some_and(job_failed))
        .map(|job| (job, initial_backup::failure_message(cluster, job)));
    if let Some((job, message)) = &initial_failure {
        let was_failed = previous.replica_create_backup.as_ref().is_some_and(|p| {
            job_failed(p) && p.start_time == initial.as_ref().and_then(|i| i.start_time.clone())
        });
        if !was_failed {
            let mut event = warning(REASON_BACKUP_JOB_FAILED, message.clone());
            event.secondary = Some(super::stanza::job_reference(job));
            events.push(event);
        }
    }
    if !initial_complete {
        latest.extend(initial.iter().filter(|j| !job_failed(j)));
    }
    let stanza_failure = stanza_job
        .filter(|_| stanza.as_ref().is_some_and(job_failed))
        .map(|job| super::stanza::failure_message(cluster, job));
    let mut backups_ready = backups_ready(stanza_failure, stanza_created, &latest);
    if let Some((_, message)) = initial_failure.filter(|_| stanza_created) {
        backups_ready = Verdict {
            ok: false,
            reason: REASON_BACKUP_JOB_FAILED,
            message,
        };
    } else if backups_ready.ok && !initial_complete {
        backups_ready.message = format!(
            "stanza created; the initial full backup (Job {}) {}",
            cluster.names.replica_create_backup_job(),
            if initial.is_some() {
                "runs"
            } else {
                "starts once a primary runs"
            }
        );
    }
    if super::stanza::is_standby(cluster) && !stanza_created {
        let source = cluster
            .standby
            .as_ref()
            .and_then(|s| s.repo_name.as_deref())
            .map_or_else(
                || "streams from its source".to_owned(),
                |repo| format!("replays {repo} of the cluster it follows"),
            );
        backups_ready = Verdict {
            ok: true,
            reason: REASON_STANDBY,
            message: format!(
                "a standby cluster {source}: it creates no stanza and takes no backups until \
                 it is promoted (spec.standby.enabled: false)"
            ),
        };
    }
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
        .copied()
        .chain(initial.iter())
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
            replica_create_backup: initial,
            last_backup_completion,
        }),
        backups_ready: Some(backups_ready),
        wal_archiving,
        events,
        jobs: BTreeMap::new(),
    }
}

/// `initial_complete`: the initial full backup succeeded; it went to the first repo.
fn repo_statuses(
    backups: &BackupSettings,
    stanza_created: bool,
    initial_complete: bool,
) -> Vec<RepoStatus> {
    backups
        .repos
        .iter()
        .enumerate()
        .map(|(i, repo)| RepoStatus {
            name: repo.name.clone(),
            stanza_created: Some(stanza_created),
            replica_create_backup_complete: (i == 0 && initial_complete).then_some(true),
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

pub(super) fn warning(reason: &str, note: String) -> Event {
    Event {
        type_: EventType::Warning,
        reason: reason.to_owned(),
        note: Some(note),
        action: "Backup".into(),
        secondary: None,
    }
}
