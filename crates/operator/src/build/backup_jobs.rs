//! Backup Jobs: one CronJob `<c>-<repo>-<full|diff|incr>` per schedule in
//! `spec.backups.pgbackrest.repos[].schedules`, the manual backup Job `<c>-backup-<hash>` the
//! `tusk.rs/pgbackrest-backup` annotation asks for, the initial full backup
//! `<c>-backup-replica-create`, the `<c>-stanza-create` Job, and the
//! ServiceAccount, Role and RoleBinding `<c>-pgbackrest` they all run as. The one-shot Jobs
//! are created (never updated: a Job's template is immutable) by `controller::backups`; a
//! failed stanza Job is replaced as `controller::stanza` decides.
//!
//! Why the Job execs pgBackRest in another pod instead of running it itself: pgBackRest runs a
//! backup only where the repository is local and PostgreSQL remote, or the other way round
//! ("pg and repo hosts cannot both be configured as remote"). With a `volume` repo the repo
//! lives on the repo host, so the backup runs there; with cloud repos only, it runs in the
//! primary's `pgbackrest` sidecar. The Job finds that pod by label and execs
//! `pgbackrest backup` in it through the Kubernetes API (the official Python client that the
//! database image carries for Patroni), so its Role may only read pods and exec into them.
//!
//! Concurrency is forbidden (two backups of one stanza would fail on pgBackRest's lock
//! anyway), and schedules are suspended while the cluster is shut down. Pure.

use k8s_openapi::api::batch::v1::{CronJob, CronJobSpec, Job, JobSpec, JobTemplateSpec};
use k8s_openapi::api::core::v1::{
    Container, EnvVar, EnvVarSource, ObjectFieldSelector, PodSpec, PodTemplateSpec, ServiceAccount,
};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use std::collections::BTreeMap;
use tusk_api::model::{BackupSettings, RepoSettings};
use tusk_api::naming;
use tusk_api::ValidatedCluster;
use tusk_config::parameters::PGBACKREST_STANZA;

use super::meta::{non_empty_vec, object_meta};
use super::pgbackrest::{backup_metadata, pgbackrest_labels, repo_host_selector};
use super::pod_security::{instance_pod_security_context, restricted_container_security_context};
use super::rbac::{binding_to_own_account, core_rules};

/// What backup Jobs may do, as `(resource, verbs)` in the core API group: find the pod to run
/// pgBackRest in, and exec into it. Nothing else.
///
/// Exec needs both verbs on `pods/exec`: the Python client (like kubectl) opens the exec
/// websocket with a GET, which Kubernetes before 1.30 authorises as `get` (a POST, and every
/// exec from 1.30 on, as `create`). With `create` alone every backup Job ends in
/// `Handshake status 403 Forbidden` on those servers.
pub const BACKUP_JOB_RULES: &[(&str, &[&str])] = &[
    ("pods", &["get", "list"]),
    ("pods/exec", &["create", "get"]),
];

/// Finds the one running pod matching `$SELECTOR`, execs the arguments in its `$CONTAINER`,
/// relays the output and exits with the command's status. Kept to what the official client
/// does; a failure to find exactly one pod fails the Job (it is retried by the next run).
pub const EXEC_SCRIPT: &str = r#"import os, sys
from kubernetes import client, config
from kubernetes.stream import stream
config.load_incluster_config()
api = client.CoreV1Api()
namespace, selector, container = os.environ["NAMESPACE"], os.environ["SELECTOR"], os.environ["CONTAINER"]
pods = [p for p in api.list_namespaced_pod(namespace, label_selector=selector).items if p.status.phase == "Running"]
if len(pods) != 1:
    sys.exit("expected one running pod with %s, found %d" % (selector, len(pods)))
print("running %s in %s/%s" % (" ".join(sys.argv[1:]), pods[0].metadata.name, container), flush=True)
ws = stream(api.connect_get_namespaced_pod_exec, pods[0].metadata.name, namespace, container=container,
            command=sys.argv[1:], stdout=True, stderr=True, stdin=False, tty=False, _preload_content=False)
while ws.is_open():
    ws.update(timeout=10)
    if ws.peek_stdout():
        sys.stdout.write(ws.read_stdout()); sys.stdout.flush()
    if ws.peek_stderr():
        sys.stderr.write(ws.read_stderr()); sys.stderr.flush()
ws.close()
sys.exit(ws.returncode)
"#;

/// pgBackRest's `--type` of each schedule, as CronJob names and labels spell it.
pub const FULL: &str = "full";
pub const DIFFERENTIAL: &str = "diff";
pub const INCREMENTAL: &str = "incr";

/// The ServiceAccount, Role and RoleBinding of backup Jobs; empty without backups.
pub fn backup_rbac(cluster: &ValidatedCluster) -> Option<(ServiceAccount, Role, RoleBinding)> {
    let backups = cluster.backups.as_ref()?;
    let name = cluster.names.pgbackrest_rbac();
    let meta = || {
        object_meta(
            cluster,
            name.clone(),
            &backup_metadata(cluster, backups),
            pgbackrest_labels(cluster),
        )
    };
    let account = ServiceAccount {
        metadata: meta(),
        automount_service_account_token: Some(true),
        ..ServiceAccount::default()
    };
    let role = Role {
        metadata: meta(),
        rules: Some(core_rules(BACKUP_JOB_RULES)),
    };
    let binding = binding_to_own_account(cluster, meta(), name.clone());
    Some((account, role, binding))
}

/// Label selector of the pod a backup runs in: the repo host when there is one, else the
/// primary (the pod Patroni labelled `master`).
pub fn backup_target_selector(cluster: &ValidatedCluster) -> String {
    let pairs: Vec<(String, String)> = if tusk_config::pgbackrest::has_volume_repo(cluster) {
        repo_host_selector(cluster).into_iter().collect()
    } else {
        vec![
            (naming::LABEL_CLUSTER.to_owned(), cluster.name().to_owned()),
            (
                naming::LABEL_ROLE.to_owned(),
                naming::ROLE_MASTER.to_owned(),
            ),
        ]
    };
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Labels of a backup Job (and CronJob, and their pods): `backup` is `full`/`diff`/`incr`
/// for schedules (`manual` for the annotation's Job).
pub fn backup_job_labels(
    cluster: &ValidatedCluster,
    repo: &str,
    backup: &str,
) -> BTreeMap<String, String> {
    let mut l = naming::cluster_labels(cluster.name());
    l.insert(naming::LABEL_PGBACKREST.to_owned(), String::new());
    l.insert(
        naming::LABEL_PGBACKREST_BACKUP.to_owned(),
        backup.to_owned(),
    );
    l.insert(naming::LABEL_PGBACKREST_REPO.to_owned(), repo.to_owned());
    l.insert(naming::APP_COMPONENT.to_owned(), "pgbackrest".to_owned());
    l
}

/// The Job that runs `pgbackrest backup --repo=N <options>` in the backup target pod.
pub fn backup_job_spec(
    cluster: &ValidatedCluster,
    backups: &BackupSettings,
    repo: &RepoSettings,
    pod_labels: BTreeMap<String, String>,
    options: &[String],
    image: &str,
) -> JobSpec {
    let mut pgbackrest = vec!["backup".to_owned(), format!("--repo={}", repo.index)];
    pgbackrest.extend(options.iter().cloned());
    exec_job_spec(cluster, backups, pod_labels, &pgbackrest, image)
}

/// A Job that execs `pgbackrest --stanza=db <pgbackrest>` in the backup target pod.
fn exec_job_spec(
    cluster: &ValidatedCluster,
    backups: &BackupSettings,
    pod_labels: BTreeMap<String, String>,
    pgbackrest: &[String],
    image: &str,
) -> JobSpec {
    let mut command = vec![
        "python3".to_owned(),
        "-c".to_owned(),
        EXEC_SCRIPT.to_owned(),
        "pgbackrest".to_owned(),
        format!("--stanza={PGBACKREST_STANZA}"),
    ];
    command.extend(pgbackrest.iter().cloned());
    let value = |name: &str, value: String| EnvVar {
        name: name.to_owned(),
        value: Some(value),
        value_from: None,
    };
    let env = vec![
        EnvVar {
            name: "NAMESPACE".to_owned(),
            value: None,
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    field_path: "metadata.namespace".to_owned(),
                    api_version: None,
                }),
                ..EnvVarSource::default()
            }),
        },
        value("SELECTOR", backup_target_selector(cluster)),
        value("CONTAINER", naming::CONTAINER_PGBACKREST.to_owned()),
    ];
    let mut labels = backup_metadata(cluster, backups).labels;
    labels.extend(pod_labels);
    let jobs = &backups.jobs;
    JobSpec {
        // A failed backup is reported and retried by the next schedule, not hammered.
        backoff_limit: Some(0),
        ttl_seconds_after_finished: jobs.ttl_seconds_after_finished,
        template: PodTemplateSpec {
            metadata: Some(ObjectMeta {
                labels: Some(labels),
                annotations: super::meta::non_empty(backup_metadata(cluster, backups).annotations),
                ..ObjectMeta::default()
            }),
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: naming::CONTAINER_PGBACKREST.to_owned(),
                    image: Some(image.to_owned()),
                    image_pull_policy: cluster.image_pull_policy.map(|p| p.as_str().to_owned()),
                    command: Some(command),
                    env: Some(env),
                    resources: jobs.resources.clone(),
                    security_context: Some(restricted_container_security_context()),
                    ..Container::default()
                }],
                restart_policy: Some("Never".to_owned()),
                service_account_name: Some(cluster.names.pgbackrest_rbac()),
                // The exec goes through the API server with this account's token.
                automount_service_account_token: Some(true),
                enable_service_links: Some(false),
                security_context: Some(instance_pod_security_context()),
                affinity: jobs.affinity.clone(),
                tolerations: jobs.tolerations.clone().and_then(non_empty_vec),
                priority_class_name: jobs.priority_class_name.clone(),
                image_pull_secrets: non_empty_vec(cluster.image_pull_secrets.clone()),
                ..PodSpec::default()
            }),
        },
        ..JobSpec::default()
    }
}

/// The Job of the manual backup requested by annotation value `id`: `spec.backups.pgbackrest.
/// manual` on its repo, labelled `manual`, the id kept as the backup annotation. `None`
/// without `manual` (the controller warns instead).
pub fn manual_backup_job(cluster: &ValidatedCluster, image: &str, id: &str) -> Option<Job> {
    let backups = cluster.backups.as_ref()?;
    let manual = backups.manual.as_ref()?;
    let repo = backups.repos.iter().find(|r| r.name == manual.repo_name)?;
    let labels = backup_job_labels(cluster, &repo.name, naming::BACKUP_MANUAL);
    let mut metadata = object_meta(
        cluster,
        cluster.names.manual_backup_job(id),
        &backup_metadata(cluster, backups),
        labels.clone(),
    );
    metadata
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(naming::ANNOTATION_BACKUP.to_owned(), id.to_owned());
    Some(Job {
        metadata,
        spec: Some(backup_job_spec(
            cluster,
            backups,
            repo,
            labels,
            &manual.options,
            image,
        )),
        status: None,
    })
}

/// How often Kubernetes retries the initial backup's pod before the controller takes over
/// (it replaces a failed Job after a backoff, see `controller::initial_backup`).
pub const REPLICA_CREATE_RETRIES: i32 = 1;

/// `<c>-backup-replica-create`: the initial full backup into the first repo, taken once the
/// stanza exists (the PGO family's `replica-create` backup), labelled like every backup Job
/// with `tusk.rs/pgbackrest-backup: replica-create`. `None` without backups.
pub fn replica_create_backup_job(cluster: &ValidatedCluster, image: &str) -> Option<Job> {
    let backups = cluster.backups.as_ref()?;
    let repo = backups.repos.first()?;
    let labels = backup_job_labels(cluster, &repo.name, naming::BACKUP_REPLICA_CREATE);
    let mut spec = backup_job_spec(
        cluster,
        backups,
        repo,
        labels.clone(),
        &[format!("--type={FULL}")],
        image,
    );
    spec.backoff_limit = Some(REPLICA_CREATE_RETRIES);
    Some(Job {
        metadata: object_meta(
            cluster,
            cluster.names.replica_create_backup_job(),
            &backup_metadata(cluster, backups),
            labels,
        ),
        spec: Some(spec),
        status: None,
    })
}

/// Labels of the stanza-create Job and its pod.
pub fn stanza_job_labels(cluster: &ValidatedCluster) -> BTreeMap<String, String> {
    let mut l = naming::cluster_labels(cluster.name());
    l.insert(naming::LABEL_PGBACKREST.to_owned(), String::new());
    l.insert(naming::LABEL_PGBACKREST_STANZA.to_owned(), String::new());
    l.insert(naming::APP_COMPONENT.to_owned(), "pgbackrest".to_owned());
    l
}

/// How often Kubernetes retries the stanza-create pod (10 s, 20 s, ... apart): the primary
/// may still be starting when the Job first runs, which is not a reason to give up.
pub const STANZA_CREATE_RETRIES: i32 = 6;

/// `<c>-stanza-create`: `pgbackrest stanza-create` (idempotent; every repo) in the backup
/// target pod, so archiving and backups have a stanza to write to. `None` without backups.
pub fn stanza_create_job(cluster: &ValidatedCluster, image: &str) -> Option<Job> {
    let backups = cluster.backups.as_ref()?;
    let labels = stanza_job_labels(cluster);
    let mut spec = exec_job_spec(
        cluster,
        backups,
        labels.clone(),
        &["stanza-create".to_owned()],
        image,
    );
    spec.backoff_limit = Some(STANZA_CREATE_RETRIES);
    let mut metadata = object_meta(
        cluster,
        cluster.names.stanza_create_job(),
        &backup_metadata(cluster, backups),
        labels,
    );
    metadata
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(
            naming::ANNOTATION_PGBACKREST_CONFIG.to_owned(),
            stanza_config_fingerprint(cluster, &spec),
        );
    Some(Job {
        metadata,
        spec: Some(spec),
        status: None,
    })
}

/// Fingerprint (SHA-256, hex) of what the stanza-create Job `spec` runs with: Tusk's
/// pgBackRest file of the instances (every repo and `global` option; the repo host's file is
/// made from the same settings), the user's `configuration` projections as referenced (their
/// content is the user's and not read by the operator) and the Job's pod (image, command,
/// placement). The controller replaces a failed stanza Job at once when this changes.
pub fn stanza_config_fingerprint(cluster: &ValidatedCluster, spec: &JobSpec) -> String {
    let instance_file = tusk_config::pgbackrest::instance_conf(
        cluster,
        &super::pgbackrest::repo_host_pod_host(cluster),
    )
    .unwrap_or_default();
    let projections = cluster
        .backups
        .as_ref()
        .map(|b| serde_json::to_string(&b.configuration).expect("projections serialize"))
        .unwrap_or_default();
    let pod = serde_json::to_string(&spec.template).expect("a pod template serializes");
    super::patroni_config::config_hash(&format!("{instance_file}\n{projections}\n{pod}"))
}

/// One CronJob per schedule of every repo, in repo order then full, diff, incr.
pub fn backup_cron_jobs(cluster: &ValidatedCluster, image: &str) -> Vec<CronJob> {
    let Some(backups) = &cluster.backups else {
        return Vec::new();
    };
    let mut jobs = Vec::new();
    for repo in &backups.repos {
        let schedules = [
            (FULL, &repo.schedules.full),
            (DIFFERENTIAL, &repo.schedules.differential),
            (INCREMENTAL, &repo.schedules.incremental),
        ];
        for (backup_type, schedule) in schedules {
            let Some(schedule) = schedule else { continue };
            let labels = backup_job_labels(cluster, &repo.name, backup_type);
            let options = [format!("--type={backup_type}")];
            jobs.push(CronJob {
                metadata: object_meta(
                    cluster,
                    cluster.names.backup_cron_job(&repo.name, backup_type),
                    &backup_metadata(cluster, backups),
                    labels.clone(),
                ),
                spec: Some(CronJobSpec {
                    schedule: schedule.clone(),
                    concurrency_policy: Some("Forbid".to_owned()),
                    suspend: Some(cluster.shutdown),
                    job_template: JobTemplateSpec {
                        metadata: Some(ObjectMeta {
                            labels: Some(labels.clone()),
                            ..ObjectMeta::default()
                        }),
                        spec: Some(backup_job_spec(
                            cluster, backups, repo, labels, &options, image,
                        )),
                    },
                    ..CronJobSpec::default()
                }),
                status: None,
            });
        }
    }
    jobs
}

#[cfg(test)]
mod tests {
    use super::EXEC_SCRIPT;

    /// The exec glue is valid Python (compiled by the real interpreter, not run: it needs a
    /// pod's service account).
    #[test]
    fn exec_script_compiles() {
        let out = std::process::Command::new("python3")
            .args([
                "-c",
                "import sys; compile(sys.argv[1], 'exec-backup', 'exec')",
            ])
            .arg(EXEC_SCRIPT)
            .output()
            .expect("python3 runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // The same check refuses broken Python, so it is not vacuous.
        let broken = std::process::Command::new("python3")
            .args([
                "-c",
                "import sys; compile(sys.argv[1], 'x', 'exec')",
                "if :",
            ])
            .output()
            .expect("python3 runs");
        assert!(!broken.status.success());
    }
}
