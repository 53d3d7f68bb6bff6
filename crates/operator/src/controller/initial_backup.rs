//! The initial full backup `<c>-backup-replica-create`: taken once the stanza exists, without
//! being asked, as the PGO family does (its Job is labelled `pgbackrest-backup:
//! replica-create`). Until the first backup exists, point-in-time recovery has nothing to
//! start from and a new replica cannot be seeded from the repository.
//!
//! Once per cluster, not per reconcile: the Job has a fixed name, and its success is recorded
//! in `status.pgbackrest.repos[].replicaCreateBackupComplete`, so neither a Job deleted after
//! its TTL nor an operator restart takes it again. Not taken while the cluster is shut down,
//! restoring, or a standby (a standby's repository is its primary cluster's).
//!
//! A failed Job is reported (a Warning Event per attempt, `BackupsReady=False`) and replaced
//! like the stanza Job (`super::stanza`): at once when the pgBackRest configuration changed,
//! else after the same doubling backoff. The attempt number and configuration fingerprint are
//! annotations on the Job, so the decision survives an operator restart. [`next_step`] is
//! pure; the backup step carries it out with `stanza::apply_step`.

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use tusk_api::naming;
use tusk_api::ValidatedCluster;

use super::backups::{job_failed, job_status};
use super::stanza::{backoff, failed_at, StanzaStep};
use crate::build::backup_jobs::{self, FULL};

/// `status.pgbackrest.replicaCreateBackup.id`.
pub const ID: &str = naming::BACKUP_REPLICA_CREATE;
/// Normal Event reason of a replaced initial backup Job.
pub const REASON_INITIAL_BACKUP_RETRIED: &str = "InitialBackupRetried";

/// What the decision looks at.
pub struct InitialBackupInputs<'a> {
    pub cluster: &'a ValidatedCluster,
    /// The pgBackRest image the Job runs.
    pub image: &'a str,
    /// A primary runs (the backup reads it).
    pub primary: bool,
    /// Instances are held (shut down, or a restore is in progress).
    pub held: bool,
    /// The stanza exists (recorded, or its Job succeeded in this reconcile).
    pub stanza_created: bool,
    /// `status.pgbackrest.repos[].replicaCreateBackupComplete` is recorded.
    pub recorded_complete: bool,
    /// The cluster's `<c>-backup-replica-create` Job, if any.
    pub existing: Option<&'a Job>,
    pub now: Timestamp,
}

fn annotation<'a>(job: &'a Job, key: &str) -> Option<&'a str> {
    job.metadata
        .annotations
        .as_ref()?
        .get(key)
        .map(String::as_str)
}

/// Which attempt `job` is (1 when not annotated).
pub fn attempt(job: &Job) -> u32 {
    annotation(job, naming::ANNOTATION_BACKUP_ATTEMPT)
        .and_then(|a| a.parse().ok())
        .filter(|a| *a >= 1)
        .unwrap_or(1)
}

/// When a failed `job` is replaced unless its configuration changes first.
pub fn retry_at(job: &Job) -> Option<Timestamp> {
    if !job_failed(&job_status(ID, Some(FULL), job)) {
        return None;
    }
    let wait = SignedDuration::try_from(backoff(attempt(job))).ok()?;
    failed_at(job)?.checked_add(wait).ok()
}

/// The Job to create, annotated with its attempt and configuration fingerprint.
fn desired(cluster: &ValidatedCluster, image: &str, attempt: u32) -> Option<Job> {
    let mut job = backup_jobs::replica_create_backup_job(cluster, image)?;
    let fingerprint = backup_jobs::stanza_config_fingerprint(cluster, job.spec.as_ref()?);
    let annotations = job
        .metadata
        .annotations
        .get_or_insert_with(Default::default);
    annotations.insert(
        naming::ANNOTATION_BACKUP_ATTEMPT.to_owned(),
        attempt.to_string(),
    );
    annotations.insert(naming::ANNOTATION_PGBACKREST_CONFIG.to_owned(), fingerprint);
    Some(job)
}

/// The decision (pure).
pub fn next_step(inputs: &InitialBackupInputs) -> StanzaStep {
    let cluster = inputs.cluster;
    if !inputs.primary
        || inputs.held
        || cluster.shutdown
        || super::stanza::is_standby(cluster)
        || !inputs.stanza_created
        || inputs.recorded_complete
    {
        return StanzaStep::Keep;
    }
    let Some(existing) = inputs.existing else {
        return desired(cluster, inputs.image, 1).map_or(StanzaStep::Keep, StanzaStep::Create);
    };
    if existing.metadata.deletion_timestamp.is_some()
        || !job_failed(&job_status(ID, Some(FULL), existing))
    {
        return StanzaStep::Keep;
    }
    let name = cluster.names.replica_create_backup_job();
    let attempt = attempt(existing);
    let Some(current) = desired(cluster, inputs.image, 1) else {
        return StanzaStep::Keep;
    };
    let fingerprint = naming::ANNOTATION_PGBACKREST_CONFIG;
    if annotation(existing, fingerprint) != annotation(&current, fingerprint) {
        return StanzaStep::Replace {
            job: current,
            note: format!(
                "Job {name} (the initial full backup) failed (attempt {attempt}) with an \
                 earlier pgBackRest configuration; created again with the current one"
            ),
        };
    }
    match retry_at(existing) {
        Some(at) if at <= inputs.now => match desired(cluster, inputs.image, attempt + 1) {
            Some(job) => StanzaStep::Replace {
                job,
                note: format!(
                    "Job {name} (the initial full backup) failed (attempt {attempt}); created \
                     again after a backoff of {} (attempt {})",
                    super::stanza::human(backoff(attempt)),
                    attempt + 1
                ),
            },
            None => StanzaStep::Keep,
        },
        _ => StanzaStep::Keep,
    }
}

/// The `BackupsReady` message and Warning note of a failed initial backup Job.
pub fn failure_message(cluster: &ValidatedCluster, job: &Job) -> String {
    let name = cluster.names.replica_create_backup_job();
    let retry = retry_at(job).map_or_else(
        || "once its failure time is known".to_owned(),
        |t| format!("at {t}"),
    );
    format!(
        "Job {name} could not take the initial full backup (attempt {}; see its pod's log); it \
         runs again {retry}, or at once when the pgBackRest configuration changes",
        attempt(job)
    )
}
