//! Restores, around the apply: a new cluster from `spec.dataSource` (clone) and an in-place
//! restore (`spec.backups.pgbackrest.restore.enabled` + annotation
//! `tusk.rs/pgbackrest-restore=<id>`).
//!
//! The flow, recorded in `status.pgbackrest.restore` (id, Job, finished, succeeded/failed):
//! - clone: while the restore has not succeeded, instance StatefulSets are not created (their
//!   volumes are); the Job restores into the first planned instance's volume.
//! - in place: the id is recorded, every instance is stopped (replicas 0, like shutdown),
//!   and once no instance pod runs the Job restores with `--delta`; after it succeeded,
//!   Patroni's DCS state (Endpoints `<c>-ha`, `<c>-ha-config`) is reset so the restored member
//!   (older than the last leader Patroni remembers) may lead, and only that instance starts;
//!   the others start once it is the primary and rejoin it (pg_rewind).
//!
//! [`decide`] and [`gate_instances`] are pure; [`prepare`] reads the source cluster and
//! [`run`] creates the Job and resets the DCS (they hold the client).

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Endpoints;
use kube::api::{Api, DeleteParams};
use kube::runtime::events::{Event, EventType};
use kube::Client;
use tusk_api::model::{BackupSettings, DataSourceSettings, RepoSettings};
use tusk_api::naming;
use tusk_api::types::{BackupJobStatus, PostgresClusterStatus};
use tusk_api::{PostgresCluster, ValidatedCluster};
use tusk_config::parameters::PGBACKREST_STANZA;
use tusk_config::restore::RestoreMode;

use super::backups::{create_job, job_failed, job_status, BackupsError, Verdict};
use super::dereference::Observed;
use crate::build::restore::{
    job_scheduling, restore_config_map, restore_job, RestoreJobInput, RestoreSource,
};
use crate::build::Managed;
use crate::plan::InstancePlan;

pub const RESTORING: &str = "Restoring";
/// `status.pgbackrest.restore.id` of a new cluster's restore from `spec.dataSource`.
pub const DATA_SOURCE_RESTORE_ID: &str = "dataSource";

/// Where a restore stands; decides what the instances may do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RestorePhase {
    /// No restore: instances as the spec says.
    Idle,
    /// Restoring into `instance` before any instance StatefulSet exists.
    Clone { instance: String },
    /// In place: instances stopped, then the Job, then `instance` starts first.
    InPlace { id: String, instance: String },
    /// In place, restored: only `instance` runs until it is the primary.
    Restarting { instance: String },
}

/// The restore annotation's value, when set and not empty.
pub fn requested_restore(cluster: &PostgresCluster) -> Option<&str> {
    cluster
        .metadata
        .annotations
        .as_ref()?
        .get(naming::ANNOTATION_RESTORE)
        .map(String::as_str)
        .filter(|v| !v.is_empty())
}

fn succeeded(status: &BackupJobStatus) -> bool {
    status.finished && status.succeeded.is_some()
}

/// The phase from the spec, the annotation, the recorded restore and what exists (pure).
pub fn decide(
    cluster: &ValidatedCluster,
    annotation: Option<&str>,
    current: &PostgresClusterStatus,
    observed: &Observed,
    plan: &InstancePlan,
) -> RestorePhase {
    let Some((_, first)) = plan.instances().next() else {
        return RestorePhase::Idle;
    };
    let instance = first.to_owned();
    let recorded = current.pgbackrest.as_ref().and_then(|p| p.restore.as_ref());
    let in_place_enabled = cluster
        .backups
        .as_ref()
        .and_then(|b| b.restore.as_ref())
        .is_some_and(|r| r.enabled);
    if let Some(id) = annotation.filter(|_| in_place_enabled) {
        if recorded.is_none_or(|r| r.id != id) {
            return RestorePhase::InPlace {
                id: id.to_owned(),
                instance,
            };
        }
    }
    match recorded {
        Some(r) if r.id == DATA_SOURCE_RESTORE_ID => {
            if succeeded(r) {
                RestorePhase::Idle
            } else {
                RestorePhase::Clone { instance }
            }
        }
        Some(r) if !succeeded(r) && in_place_enabled => RestorePhase::InPlace {
            id: r.id.clone(),
            instance,
        },
        // Restored in place and the others still held at 0: the restored member leads
        // before they rejoin. Once they were released this never holds again.
        Some(r)
            if succeeded(r)
                && !cluster.shutdown
                && observed.primary.as_deref() != Some(first)
                && others_held(observed, first) =>
        {
            RestorePhase::Restarting { instance }
        }
        Some(_) => RestorePhase::Idle,
        None if cluster.data_source.is_some()
            && !observed.instances.iter().any(|i| i.has_statefulset) =>
        {
            RestorePhase::Clone { instance }
        }
        None => RestorePhase::Idle,
    }
}

/// Live instance StatefulSets (spec replicas) other than `first` that are held at 0.
fn others_held(observed: &Observed, first: &str) -> bool {
    observed.objects.iter().any(|((kind, name), (_, object))| {
        kind == "StatefulSet"
            && name != first
            && object
                .metadata
                .labels
                .as_ref()
                .is_some_and(|l| l.contains_key(naming::LABEL_INSTANCE))
            && object.data["spec"]["replicas"].as_i64() == Some(0)
    })
}

fn is_instance(object: &Managed) -> bool {
    matches!(object, Managed::StatefulSet(s)
        if s.metadata.labels.as_ref().is_some_and(|l| l.contains_key(naming::LABEL_INSTANCE)))
}

/// Holds the instances back as `phase` requires (pure): no StatefulSet during a clone,
/// replicas 0 while restoring in place, only the restored instance while it takes the lead.
pub fn gate_instances(desired: &mut Vec<Managed>, phase: &RestorePhase) {
    match phase {
        RestorePhase::Idle => {}
        RestorePhase::Clone { .. } => desired.retain(|o| !is_instance(o)),
        RestorePhase::InPlace { .. } | RestorePhase::Restarting { .. } => {
            let keep = match phase {
                RestorePhase::Restarting { instance } => Some(instance.as_str()),
                _ => None,
            };
            for object in desired.iter_mut() {
                let Managed::StatefulSet(set) = object else {
                    continue;
                };
                if !is_instance(&Managed::StatefulSet(set.clone())) {
                    continue;
                }
                if keep != set.metadata.name.as_deref() {
                    if let Some(spec) = set.spec.as_mut() {
                        spec.replicas = Some(0);
                    }
                }
            }
        }
    }
}

/// The repo a clone reads and its pgBackRest file, from the source's spec.
#[derive(Clone, Debug, PartialEq)]
pub struct CloneSource {
    pub stanza: String,
    pub repo: u8,
    pub options: Vec<String>,
    pub conf_text: String,
    pub projections: Vec<k8s_openapi::api::core::v1::VolumeProjection>,
}

/// A cluster like `cluster` whose only backup settings are `repo` (+ `global`, projections):
/// what the instance renderer needs to write a file naming just that repo.
fn with_only_repo(
    cluster: &ValidatedCluster,
    backups: Option<&BackupSettings>,
    repo: RepoSettings,
    global: BTreeMap<String, String>,
    configuration: Vec<k8s_openapi::api::core::v1::VolumeProjection>,
) -> ValidatedCluster {
    let mut source = cluster.clone();
    let mut settings = backups.cloned().unwrap_or(BackupSettings {
        image: None,
        configuration: Vec::new(),
        global: BTreeMap::new(),
        repos: Vec::new(),
        manual: None,
        restore: None,
        repo_host: Default::default(),
        jobs: Default::default(),
        metadata: Default::default(),
    });
    settings.repos = vec![repo];
    settings.global = global;
    settings.configuration = configuration;
    source.backups = Some(settings);
    source
}

/// Reads what a clone needs: for `postgresCluster`, the source PostgresCluster (validated,
/// its repo host named in the file); for `pgbackrest`, the repo in the spec. `None` when the
/// phase is not a clone.
pub async fn prepare(
    client: &Client,
    cluster: &ValidatedCluster,
    phase: &RestorePhase,
) -> Result<Option<CloneSource>, BackupsError> {
    if !matches!(phase, RestorePhase::Clone { .. }) {
        return Ok(None);
    }
    match &cluster.data_source {
        None => Ok(None),
        Some(DataSourceSettings::PgBackRest {
            stanza,
            configuration,
            global,
            repo,
            options,
            ..
        }) => {
            let source = with_only_repo(
                cluster,
                cluster.backups.as_ref(),
                repo.clone(),
                global.clone(),
                configuration.clone(),
            );
            Ok(Some(CloneSource {
                stanza: stanza.clone(),
                repo: repo.index,
                options: options.clone(),
                conf_text: tusk_config::pgbackrest::instance_conf(&source, "").unwrap_or_default(),
                projections: configuration.clone(),
            }))
        }
        Some(DataSourceSettings::PostgresCluster {
            cluster_name,
            cluster_namespace,
            repo_name,
            options,
            ..
        }) => {
            let namespace = cluster_namespace
                .clone()
                .unwrap_or(cluster.namespace.clone());
            let name = cluster_name.clone().unwrap_or_default();
            let failed = |message: String| BackupsError::RestoreSource {
                namespace: namespace.clone(),
                name: name.clone(),
                message,
            };
            let api: Api<PostgresCluster> = Api::namespaced(client.clone(), &namespace);
            let raw = api.get(&name).await.map_err(|e| failed(e.to_string()))?;
            let source = tusk_api::validate(&raw).map_err(|e| failed(e.to_string()))?;
            clone_source_from_cluster(&source, repo_name, options)
                .map(Some)
                .map_err(failed)
        }
    }
}

/// What a clone of `source`'s repo `repo_name` reads (pure): its file naming only that repo
/// (reached through the source's repo host for a volume repo) and its projections.
pub fn clone_source_from_cluster(
    source: &ValidatedCluster,
    repo_name: &str,
    options: &[String],
) -> Result<CloneSource, String> {
    let backups = source
        .backups
        .as_ref()
        .ok_or_else(|| "it has no spec.backups".to_owned())?;
    let repo = backups
        .repos
        .iter()
        .find(|r| r.name == repo_name)
        .ok_or_else(|| format!("it has no repo {repo_name}"))?;
    let repo_host = crate::build::pgbackrest::repo_host_pod_host(source);
    let only = with_only_repo(
        source,
        Some(backups),
        repo.clone(),
        backups.global.clone(),
        backups.configuration.clone(),
    );
    Ok(CloneSource {
        stanza: PGBACKREST_STANZA.to_owned(),
        repo: repo.index,
        options: options.to_vec(),
        conf_text: tusk_config::pgbackrest::instance_conf(&only, &repo_host).unwrap_or_default(),
        projections: backups.configuration.clone(),
    })
}

/// The objects a clone adds to the build: its ConfigMap with the source repo's file.
pub fn clone_objects(cluster: &ValidatedCluster, source: Option<&CloneSource>) -> Vec<Managed> {
    source
        .map(|s| Managed::ConfigMap(restore_config_map(cluster, s.conf_text.clone())))
        .into_iter()
        .collect()
}

/// The restore Job of `phase`, if it is one that runs a Job (pure).
pub fn restore_job_for(
    cluster: &ValidatedCluster,
    phase: &RestorePhase,
    source: Option<&CloneSource>,
    image: &str,
) -> Option<Job> {
    let (instance, mode) = match phase {
        RestorePhase::Clone { instance } => (instance, RestoreMode::Bootstrap),
        RestorePhase::InPlace { instance, .. } => (instance, RestoreMode::InPlace),
        _ => return None,
    };
    let set = cluster
        .instance_sets
        .iter()
        .find(|s| instance.starts_with(&cluster.names.instance(s.name.as_str(), "")))?;
    let (stanza, repo, options, source) = match (mode, source) {
        (RestoreMode::Bootstrap, Some(s)) => (
            s.stanza.clone(),
            s.repo,
            s.options.clone(),
            RestoreSource::Rendered {
                projections: s.projections.clone(),
            },
        ),
        (RestoreMode::InPlace, _) => {
            let backups = cluster.backups.as_ref()?;
            let restore = backups.restore.as_ref()?;
            let repo = backups.repos.iter().find(|r| r.name == restore.repo_name)?;
            (
                PGBACKREST_STANZA.to_owned(),
                repo.index,
                restore.options.clone(),
                RestoreSource::Own,
            )
        }
        _ => return None,
    };
    Some(restore_job(&RestoreJobInput {
        cluster,
        set,
        instance,
        image,
        mode,
        stanza: &stanza,
        repo,
        options: &options,
        source,
        scheduling: job_scheduling(
            cluster
                .data_source
                .as_ref()
                .filter(|_| mode == RestoreMode::Bootstrap)
                .map(DataSourceSettings::job),
            set,
        ),
    }))
}

/// What the restore step reports: `status.pgbackrest.restore`, `Restoring`, Events.
#[derive(Default)]
pub struct RestoreReport {
    pub restore: Option<BackupJobStatus>,
    pub restoring: Option<Verdict>,
    pub events: Vec<Event>,
}

/// Whether the instances were already told to stop (every instance StatefulSet at 0
/// replicas): from then on the in-place restore does not look at the primary again.
pub fn stop_requested(observed: &Observed) -> bool {
    let mut sets = observed
        .objects
        .iter()
        .filter(|((kind, _), (_, object))| {
            kind == "StatefulSet"
                && object
                    .metadata
                    .labels
                    .as_ref()
                    .is_some_and(|l| l.contains_key(naming::LABEL_INSTANCE))
        })
        .peekable();
    sets.peek().is_some() && sets.all(|(_, (_, o))| o.data["spec"]["replicas"].as_i64() == Some(0))
}

/// What the instances' pods look like now, for the in-place restore to wait on.
pub fn instances_stopped(observed: &Observed) -> bool {
    observed.objects.iter().all(|((kind, _), (_, object))| {
        let is_instance = kind == "StatefulSet"
            && object
                .metadata
                .labels
                .as_ref()
                .is_some_and(|l| l.contains_key(naming::LABEL_INSTANCE));
        !is_instance || object.data["status"]["replicas"].as_i64().unwrap_or(0) == 0
    })
}

/// After the apply: creates the restore Job when its turn came, resets Patroni's DCS once an
/// in-place restore succeeded, and reports.
#[allow(clippy::too_many_arguments)]
pub async fn run(
    client: &Client,
    cluster: &PostgresCluster,
    validated: &ValidatedCluster,
    phase: &RestorePhase,
    source: Option<&CloneSource>,
    image: &str,
    observed: &Observed,
    jobs: &BTreeMap<String, Job>,
    current: &PostgresClusterStatus,
) -> Result<RestoreReport, BackupsError> {
    let recorded = current.pgbackrest.as_ref().and_then(|p| p.restore.clone());
    let job_name = validated.names.restore_job();
    let id = match phase {
        RestorePhase::Idle | RestorePhase::Restarting { .. } => {
            return Ok(RestoreReport {
                restoring: recorded.as_ref().map(|r| Verdict {
                    ok: false,
                    reason: if succeeded(r) {
                        "RestoreSucceeded"
                    } else {
                        "RestoreNotRunning"
                    },
                    message: format!("no restore is running; the last one was {}", r.id),
                }),
                restore: recorded,
                events: Vec::new(),
            })
        }
        RestorePhase::Clone { .. } => DATA_SOURCE_RESTORE_ID.to_owned(),
        RestorePhase::InPlace { id, .. } => id.clone(),
    };
    let mut events = Vec::new();
    let mut job = jobs.get(&job_name).cloned();
    // A Job of an earlier in-place id is history: make way for the new one.
    let stale = recorded.as_ref().is_some_and(|r| r.id != id);
    if let (true, Some(_)) = (stale, &job) {
        let api: Api<Job> = Api::namespaced(client.clone(), &validated.namespace);
        api.delete(&job_name, &DeleteParams::background())
            .await
            .map_err(|source| BackupsError::DeleteJob {
                name: job_name.clone(),
                source,
            })?;
        job = None;
    }
    let waiting_for_stop =
        matches!(phase, RestorePhase::InPlace { .. }) && !instances_stopped(observed);
    if job.is_none() && !waiting_for_stop {
        if let Some(new) = restore_job_for(validated, phase, source, image) {
            job = Some(create_job(client, cluster, new).await?);
            events.push(Event {
                type_: EventType::Normal,
                reason: "RestoreStarted".into(),
                note: Some(format!("Job {job_name} restores the backup ({id})")),
                action: "Restore".into(),
                secondary: None,
            });
        }
    }
    let status = match &job {
        Some(job) => job_status(&id, None, job),
        None => BackupJobStatus {
            id: id.clone(),
            ..BackupJobStatus::default()
        },
    };
    let newly_failed = job_failed(&status)
        && !recorded
            .as_ref()
            .is_some_and(|r| r.id == id && job_failed(r));
    if newly_failed {
        events.push(Event {
            type_: EventType::Warning,
            reason: "RestoreFailed".into(),
            note: Some(format!(
                "restore Job {job_name} failed; instances stay stopped. Delete the Job to retry"
            )),
            action: "Restore".into(),
            secondary: None,
        });
    }
    let done = succeeded(&status);
    if done && matches!(phase, RestorePhase::InPlace { .. }) {
        reset_patroni_dcs(client, validated).await?;
    }
    let restoring = if done {
        Verdict {
            ok: false,
            reason: "RestoreSucceeded",
            message: format!("Job {job_name} restored the backup ({id})"),
        }
    } else if job_failed(&status) {
        Verdict {
            ok: false,
            reason: "RestoreFailed",
            message: format!("Job {job_name} failed; delete it to retry"),
        }
    } else if waiting_for_stop {
        Verdict {
            ok: true,
            reason: "StoppingInstances",
            message: "waiting for every instance to stop before restoring".into(),
        }
    } else {
        Verdict {
            ok: true,
            reason: "RestoreRunning",
            message: format!("Job {job_name} is restoring the backup ({id})"),
        }
    };
    Ok(RestoreReport {
        restore: Some(status),
        restoring: Some(restoring),
        events,
    })
}

/// Deletes Patroni's Endpoints `<c>-ha` and `<c>-ha-config` (leader, last known position,
/// `initialize`): a restored member is behind the position Patroni remembers and would
/// never be allowed to lead. Patroni writes them again on start.
async fn reset_patroni_dcs(
    client: &Client,
    cluster: &ValidatedCluster,
) -> Result<(), BackupsError> {
    let api: Api<Endpoints> = Api::namespaced(client.clone(), &cluster.namespace);
    for name in [
        cluster.names.patroni_scope(),
        cluster.names.patroni_config_service(),
    ] {
        match api.delete(&name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(source) => return Err(BackupsError::DeleteEndpoints { name, source }),
        }
    }
    Ok(())
}
