//! The life of the stanza-create Job `<c>-stanza-create`: created once a primary runs (never
//! in a standby cluster, see [`is_standby`]), until the stanza is recorded as created. A Job that failed (Kubernetes gave up after its own
//! [`backup_jobs::STANZA_CREATE_RETRIES`] retries) is never left for a person to delete: the
//! operator replaces it
//!
//! - at once when the pgBackRest configuration it ran with changed (a repo, a `global` option,
//!   a `configuration` projection, the image: the edit is most likely the fix), and
//! - otherwise after a backoff that doubles with every attempt, from [`FIRST_BACKOFF`] up to
//!   [`MAX_BACKOFF`], so a cause outside the spec (a bucket policy, the content of a
//!   credentials Secret, a repo host that was not reachable yet) heals by itself without
//!   hammering the repository.
//!
//! The attempt number and the configuration fingerprint live on the Job as annotations
//! ([`naming::ANNOTATION_STANZA_ATTEMPT`], [`naming::ANNOTATION_PGBACKREST_CONFIG`]), and the
//! failure time is the Job's own `Failed` condition, so the decision survives an operator
//! restart and needs no clock of its own. [`next_step`] decides (pure); [`apply_step`], called
//! by `backups::run`, is the one place here that calls the API (it deletes a failed Job).

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, DeleteParams};
use kube::runtime::events::{Event, EventType};
use kube::Client;
use tusk_api::naming;
use tusk_api::ValidatedCluster;

use super::backups::{job_failed, job_status, BackupsError};
use crate::build::backup_jobs;

/// Wait after the first failed attempt; doubles with each further one.
pub const FIRST_BACKOFF: Duration = Duration::from_secs(2 * 60);
/// The longest wait between two attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30 * 60);
/// Normal Event reason of a replaced stanza-create Job.
pub const REASON_STANZA_RETRIED: &str = "StanzaCreateRetried";

/// What to do about the stanza-create Job now.
#[derive(Clone, Debug, PartialEq)]
pub enum StanzaStep {
    /// Nothing: no primary yet, shut down, stanza created, or the Job runs, succeeded, is
    /// being deleted or waits for its backoff.
    Keep,
    /// No Job exists: create this one (attempt 1).
    Create(Job),
    /// The Job failed: delete it and create `job`; `note` says why, for the Event.
    Replace { job: Job, note: String },
}

/// What the decision looks at.
pub struct StanzaInputs<'a> {
    pub cluster: &'a ValidatedCluster,
    /// The pgBackRest image the Job runs.
    pub image: &'a str,
    /// A primary runs (stanza-create needs PostgreSQL up).
    pub primary: bool,
    /// `status.pgbackrest.repos[].stanzaCreated` says the stanza exists.
    pub stanza_recorded: bool,
    /// The cluster's `<c>-stanza-create` Job, if any.
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

/// Which attempt `job` is (1 when not annotated, as Jobs made before the annotation were).
pub fn attempt(job: &Job) -> u32 {
    annotation(job, naming::ANNOTATION_STANZA_ATTEMPT)
        .and_then(|a| a.parse().ok())
        .filter(|a| *a >= 1)
        .unwrap_or(1)
}

/// The wait after attempt `attempt` failed: [`FIRST_BACKOFF`] doubled per earlier attempt,
/// at most [`MAX_BACKOFF`].
pub fn backoff(attempt: u32) -> Duration {
    let doublings = attempt.saturating_sub(1).min(16);
    FIRST_BACKOFF
        .saturating_mul(1 << doublings)
        .min(MAX_BACKOFF)
}

/// When `job` failed: its `Failed` condition's transition time, else the last moment the Job
/// controller recorded (completion, start), else its creation.
pub fn failed_at(job: &Job) -> Option<Timestamp> {
    let status = job.status.as_ref();
    status
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| {
            c.iter()
                .find(|c| c.type_ == "Failed" && c.status == "True")
                .and_then(|c| c.last_transition_time.as_ref())
        })
        .or_else(|| status.and_then(|s| s.completion_time.as_ref()))
        .or_else(|| status.and_then(|s| s.start_time.as_ref()))
        .or(job.metadata.creation_timestamp.as_ref())
        .map(|t| t.0)
}

/// When a failed `job` is replaced unless its configuration changes first. `None` when the
/// Job has not failed or its failure time is unknown.
pub fn retry_at(job: &Job) -> Option<Timestamp> {
    if !job_failed(&job_status("stanza-create", None, job)) {
        return None;
    }
    let wait = SignedDuration::try_from(backoff(attempt(job))).ok()?;
    failed_at(job)?.checked_add(wait).ok()
}

/// Whether `job` ran with the configuration `current` was made with.
fn same_configuration(job: &Job, current: &Job) -> bool {
    annotation(job, naming::ANNOTATION_PGBACKREST_CONFIG).is_some()
        && annotation(job, naming::ANNOTATION_PGBACKREST_CONFIG)
            == annotation(current, naming::ANNOTATION_PGBACKREST_CONFIG)
}

fn with_attempt(mut job: Job, attempt: u32) -> Job {
    job.metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert(
            naming::ANNOTATION_STANZA_ATTEMPT.to_owned(),
            attempt.to_string(),
        );
    job
}

/// Minutes or seconds, as a person reads a backoff.
pub fn human(d: Duration) -> String {
    match d.as_secs() {
        s if s % 60 == 0 => format!("{} min", s / 60),
        s => format!("{s} s"),
    }
}

/// An enabled `spec.standby`: the cluster replays another cluster's archive and writes none
/// of its own, so it has no stanza to create (pgBackRest refuses one without a primary:
/// "unable to find primary cluster") and takes no backups until it is promoted.
pub fn is_standby(cluster: &ValidatedCluster) -> bool {
    cluster.standby.as_ref().is_some_and(|s| s.enabled)
}

/// The decision (pure).
pub fn next_step(inputs: &StanzaInputs) -> StanzaStep {
    let cluster = inputs.cluster;
    if !inputs.primary || cluster.shutdown || inputs.stanza_recorded || is_standby(cluster) {
        return StanzaStep::Keep;
    }
    let Some(current) = backup_jobs::stanza_create_job(cluster, inputs.image) else {
        return StanzaStep::Keep;
    };
    let Some(existing) = inputs.existing else {
        return StanzaStep::Create(with_attempt(current, 1));
    };
    let name = cluster.names.stanza_create_job();
    if existing.metadata.deletion_timestamp.is_some()
        || !job_failed(&job_status("stanza-create", None, existing))
    {
        return StanzaStep::Keep;
    }
    let attempt = attempt(existing);
    if !same_configuration(existing, &current) {
        return StanzaStep::Replace {
            job: with_attempt(current, 1),
            note: format!(
                "Job {name} failed (attempt {attempt}) with an earlier pgBackRest \
                 configuration; created again with the current one"
            ),
        };
    }
    match retry_at(existing) {
        Some(at) if at <= inputs.now => StanzaStep::Replace {
            job: with_attempt(current, attempt + 1),
            note: format!(
                "Job {name} failed (attempt {attempt}); created again after a backoff of {} \
                 (attempt {})",
                human(backoff(attempt)),
                attempt + 1
            ),
        },
        _ => StanzaStep::Keep,
    }
}

/// Carries out `step` on the cluster's `jobs` (by name): a replaced Job is deleted (its pods
/// in the background) and dropped from `jobs`. Returns the Job to create, for the backup step
/// to create with its others, and the Normal Event of a replacement (reason `retried`: the
/// stanza's or the initial backup's).
pub async fn apply_step(
    client: &Client,
    namespace: &str,
    step: StanzaStep,
    jobs: &mut BTreeMap<String, Job>,
    retried: &str,
) -> Result<(Option<Job>, Option<Event>), BackupsError> {
    match step {
        StanzaStep::Keep => Ok((None, None)),
        StanzaStep::Create(job) => Ok((Some(job), None)),
        StanzaStep::Replace { job, note } => {
            let name = job.metadata.name.clone().unwrap_or_default();
            delete_job(client, namespace, &name).await?;
            let failed = jobs.remove(&name);
            tracing::info!(job = %name, %note, "failed Job replaced");
            let event = Event {
                type_: EventType::Normal,
                reason: retried.into(),
                note: Some(note),
                action: "Backup".into(),
                secondary: failed.as_ref().map(job_reference),
            };
            Ok((Some(job), Some(event)))
        }
    }
}

/// Deletes Job `name` and, in the background, its pods; one already gone is fine.
async fn delete_job(client: &Client, namespace: &str, name: &str) -> Result<(), BackupsError> {
    let api: Api<Job> = Api::namespaced(client.clone(), namespace);
    match api.delete(name, &DeleteParams::background()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(source) => Err(BackupsError::DeleteJob {
            name: name.to_owned(),
            source,
        }),
    }
}

/// A reference to `job`, for an Event's related object. With its uid: a replaced Job of the
/// same name is another object, so each attempt's Event is its own (the Recorder folds
/// Events of one reason and object into one series that keeps the first note).
pub fn job_reference(job: &Job) -> ObjectReference {
    ObjectReference {
        api_version: Some("batch/v1".to_owned()),
        kind: Some("Job".to_owned()),
        name: job.metadata.name.clone(),
        namespace: job.metadata.namespace.clone(),
        uid: job.metadata.uid.clone(),
        ..ObjectReference::default()
    }
}

/// The `BackupsReady` message of a failed stanza Job: which attempt, and when it is tried
/// again. Absolute times only, so the same failure gives the same message on every reconcile.
pub fn failure_message(cluster: &ValidatedCluster, job: &Job) -> String {
    let name = cluster.names.stanza_create_job();
    let retry = retry_at(job).map_or_else(
        || "once its failure time is known".to_owned(),
        |t| format!("at {t}"),
    );
    format!(
        "Job {name} could not create the pgBackRest stanza (attempt {}; see its pods' logs); \
         it runs again {retry}, or at once when the pgBackRest configuration changes (deleting \
         the Job retries now)",
        attempt(job)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backoff_doubles_up_to_its_bound() {
        let minutes: Vec<u64> = (1..=8).map(|a| backoff(a).as_secs() / 60).collect();
        assert_eq!(minutes, [2, 4, 8, 16, 30, 30, 30, 30]);
        assert_eq!(backoff(u32::MAX), MAX_BACKOFF);
        assert_eq!(backoff(0), FIRST_BACKOFF);
    }
}
