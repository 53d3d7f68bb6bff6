//! Restore Jobs: `<c>-pgbackrest-restore` restores a backup into the first instance's data
//! volume, for a new cluster from `spec.dataSource` (clone, PITR, a cloud repo with no source
//! cluster) or in place (`spec.backups.pgbackrest.restore` + the `tusk.rs/pgbackrest-restore`
//! annotation, `--delta`). For a clone, the source repo's pgBackRest file is rendered into
//! ConfigMap `<c>-pgbackrest-restore` (the same renderer as every instance's file, run on the
//! source's spec), since a pod cannot mount another namespace's ConfigMap.
//!
//! Why the Job also finishes recovery: pgBackRest only lays out the files and writes the
//! recovery settings; the WAL up to the target still has to be fetched from the *source*
//! repo, which only this Job's configuration names (the instance's own file names its own,
//! empty repo). So the Job starts PostgreSQL locally (no network, no archiving, no TLS) and
//! waits until recovery ended and the server was promoted, then stops it cleanly. The
//! instance then starts from a consistent, writable data directory. The arguments of
//! `pgbackrest restore` come from `tusk_config::restore` (shared with `tusk local`). Pure.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, EmptyDirVolumeSource, EnvVar, PersistentVolumeClaimVolumeSource, PodSpec,
    PodTemplateSpec, Volume, VolumeProjection,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use tusk_api::model::{InstanceSetSpec, JobScheduling};
use tusk_api::naming;
use tusk_api::ValidatedCluster;
use tusk_config::paths;
use tusk_config::pgbackrest as conf;
use tusk_config::restore::{restore_args, RestoreMode, RestoreRequest};

use super::meta::{non_empty_vec, object_meta};
use super::pgbackrest::{
    config_volume_from, log_dir_init_container, mount, pgbackrest_labels, VOLUME_CONFIG,
};
use super::pod_security::{instance_pod_security_context, restricted_container_security_context};
use super::volumes::{VOLUME_PGDATA, VOLUME_PGWAL, VOLUME_TMP};

/// The restore container (the PGO family's name).
pub const CONTAINER_RESTORE: &str = "pgbackrest-restore";

/// A bash function `mark_history_ready DATADIR`: marks every timeline history file in
/// `DATADIR/pg_wal` that is neither archived (`.done`) nor queued (`.ready`) for archiving.
///
/// Why: the Job's server runs with `archive_mode=off` (it must not archive into whichever
/// repo its configuration names), so PostgreSQL queues nothing it writes, not even the history
/// file of the timeline its promotion starts. The instance later archives with its own
/// `archive_command`, but only what is queued: without this, the repository never learns the
/// new timeline, and a standby or a later point-in-time restore from it follows the old
/// timeline past this restore's target (the rows this restore removed come back). History
/// files restored from the archive during recovery are `.done` already and stay so.
pub const MARK_HISTORY_READY: &str = r#"mark_history_ready() {
  local history status
  for history in "$1"/pg_wal/*.history; do
    [ -e "$history" ] || continue
    status="$1/pg_wal/archive_status/$(basename "$history")"
    [ -e "$status.done" ] || [ -e "$status.ready" ] || touch "$status.ready"
  done
}
"#;

/// `pgbackrest restore` with the arguments after the script, then recovery to the end (or the
/// target) with this pod's configuration, then a clean stop, then the new timeline's history
/// queued for archiving ([`MARK_HISTORY_READY`]). `PGDATA` and `PGBIN` come from the
/// environment. A server that stops early or never leaves recovery fails the Job.
pub fn restore_script() -> String {
    format!("set -eu\n{MARK_HISTORY_READY}{RESTORE_STEPS}")
}

const RESTORE_STEPS: &str = r#"pgbackrest "$@"
# Local only: no TCP listener, no archiving into any repo, no certificates needed.
"$PGBIN/pg_ctl" start --wait --timeout=31536000 --pgdata="$PGDATA" --log="$PGDATA/restore.log" \
  --options="-c listen_addresses= -c unix_socket_directories=/tmp -c archive_mode=off -c ssl=off -c hot_standby=on"
until "$PGBIN/pg_controldata" "$PGDATA" | grep -q '^Database cluster state: *in production'; do
  "$PGBIN/pg_ctl" status --pgdata="$PGDATA" >/dev/null || { cat "$PGDATA/restore.log"; exit 1; }
  sleep 5
done
"$PGBIN/pg_ctl" stop --wait --mode=fast --pgdata="$PGDATA"
mark_history_ready "$PGDATA"
echo "restore finished: recovery ended and the server was promoted"
"#;

/// Where the restore reads its repo from.
#[derive(Clone, Debug, PartialEq)]
pub enum RestoreSource {
    /// The cluster's own repo (in-place restore): its `<c>-pgbackrest-config` file.
    Own,
    /// Another repo (clone): its rendered file (in [`restore_config_map`]) and the
    /// configuration projections it needs (credentials).
    Rendered { projections: Vec<VolumeProjection> },
}

/// Everything a restore Job is made of.
#[derive(Clone, Debug)]
pub struct RestoreJobInput<'a> {
    pub cluster: &'a ValidatedCluster,
    pub set: &'a InstanceSetSpec,
    /// The instance whose volume is restored into (`<c>-<set>-<suffix>`).
    pub instance: &'a str,
    /// The database image (pgBackRest and PostgreSQL's binaries).
    pub image: &'a str,
    pub mode: RestoreMode,
    pub stanza: &'a str,
    pub repo: u8,
    pub options: &'a [String],
    pub source: RestoreSource,
    /// Resources and placement of the Job: the data source's fields, each falling back to the
    /// set's ([`job_scheduling`]).
    pub scheduling: JobScheduling,
}

/// The restore Job's scheduling: what `job` (a data source's) gives, the instance set's
/// otherwise, so a Job that restores into a set's volume lands where that set may run.
pub fn job_scheduling(job: Option<&JobScheduling>, set: &InstanceSetSpec) -> JobScheduling {
    let job = job.cloned().unwrap_or_default();
    JobScheduling {
        resources: job.resources.or_else(|| set.resources.clone()),
        affinity: job.affinity.or_else(|| set.affinity.clone()),
        tolerations: if job.tolerations.is_empty() {
            set.tolerations.clone()
        } else {
            job.tolerations
        },
        priority_class_name: job
            .priority_class_name
            .or_else(|| set.priority_class_name.clone()),
    }
}

/// Labels of restore Jobs, their pods and the restore ConfigMap.
pub fn restore_labels(cluster: &ValidatedCluster) -> BTreeMap<String, String> {
    let mut labels = pgbackrest_labels(cluster);
    labels.insert(
        naming::LABEL_PGBACKREST_RESTORE.to_owned(),
        cluster.name().to_owned(),
    );
    labels
}

/// `<c>-pgbackrest-restore` holding the source repo's pgBackRest file `conf_text`.
pub fn restore_config_map(cluster: &ValidatedCluster, conf_text: String) -> ConfigMap {
    ConfigMap {
        metadata: object_meta(
            cluster,
            cluster.names.restore_job(),
            &cluster.metadata,
            restore_labels(cluster),
        ),
        data: Some(BTreeMap::from([(
            conf::INSTANCE_CONF_FILE.to_owned(),
            conf_text,
        )])),
        ..ConfigMap::default()
    }
}

/// The `pgbackrest restore` arguments of `input` (Tusk's options, then the user's).
pub fn restore_job_args(input: &RestoreJobInput) -> Vec<String> {
    restore_args(&RestoreRequest {
        mode: input.mode,
        stanza: input.stanza,
        data_dir: &paths::pgdata(input.cluster.postgres_version),
        repo: input.repo,
        source_options: Vec::new(),
        user_options: input.options,
        target_time: None,
    })
}

/// The restore Job `<c>-pgbackrest-restore`.
pub fn restore_job(input: &RestoreJobInput) -> Job {
    let cluster = input.cluster;
    let labels = restore_labels(cluster);
    let claim = |name: &str, claim_name: String| Volume {
        name: name.to_owned(),
        persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
            claim_name,
            read_only: None,
        }),
        ..Volume::default()
    };
    let (config_map, projections) = match &input.source {
        RestoreSource::Own => (
            cluster.names.pgbackrest_config_map(),
            cluster
                .backups
                .as_ref()
                .map(|b| b.configuration.clone())
                .unwrap_or_default(),
        ),
        RestoreSource::Rendered { projections } => {
            (cluster.names.restore_job(), projections.clone())
        }
    };
    let mut volumes = vec![
        claim(VOLUME_PGDATA, naming::instance_pgdata_pvc(input.instance)),
        config_volume_from(cluster, &config_map, conf::INSTANCE_CONF_FILE, &projections),
        Volume {
            name: VOLUME_TMP.to_owned(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Volume::default()
        },
    ];
    let mut mounts = vec![
        mount(VOLUME_PGDATA, paths::PGDATA_VOLUME, false),
        mount(VOLUME_CONFIG, conf::CONFIG_DIR, true),
        mount(VOLUME_TMP, "/tmp", false),
    ];
    if input.set.wal_volume.is_some() {
        volumes.push(claim(
            VOLUME_PGWAL,
            naming::instance_pgwal_pvc(input.instance),
        ));
        mounts.push(mount(VOLUME_PGWAL, paths::PGWAL_VOLUME, false));
    }
    let mut command = vec![
        "bash".to_owned(),
        "-c".to_owned(),
        restore_script(),
        CONTAINER_RESTORE.to_owned(),
    ];
    command.extend(restore_job_args(input));
    let env = vec![
        EnvVar {
            name: "PGDATA".to_owned(),
            value: Some(paths::pgdata(cluster.postgres_version)),
            value_from: None,
        },
        EnvVar {
            name: "PGBIN".to_owned(),
            value: Some(paths::bin_dir(cluster.postgres_version)),
            value_from: None,
        },
    ];
    let mut pod_labels = cluster.metadata.labels.clone();
    pod_labels.extend(labels.clone());
    Job {
        metadata: object_meta(
            cluster,
            cluster.names.restore_job(),
            &cluster.metadata,
            labels,
        ),
        spec: Some(JobSpec {
            // A restore that failed once (bad target, missing WAL) fails the same way again;
            // the status says so and the user decides.
            backoff_limit: Some(0),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    // The restored file names the instances' `log-path` and `spool-path` (the
                    // source's instance file for a clone, the same paths), which pgBackRest
                    // does not create.
                    init_containers: Some(vec![log_dir_init_container(
                        cluster,
                        input.image,
                        mount(VOLUME_PGDATA, paths::PGDATA_VOLUME, false),
                        &[conf::INSTANCE_LOG_DIR, conf::INSTANCE_SPOOL_DIR],
                    )]),
                    containers: vec![Container {
                        name: CONTAINER_RESTORE.to_owned(),
                        image: Some(input.image.to_owned()),
                        image_pull_policy: cluster.image_pull_policy.map(|p| p.as_str().to_owned()),
                        command: Some(command),
                        env: Some(env),
                        resources: input.scheduling.resources.clone(),
                        security_context: Some(restricted_container_security_context()),
                        volume_mounts: Some(mounts),
                        ..Container::default()
                    }],
                    volumes: Some(volumes),
                    restart_policy: Some("Never".to_owned()),
                    // The restore talks to pgBackRest servers only, never to the API.
                    automount_service_account_token: Some(false),
                    enable_service_links: Some(false),
                    security_context: Some(instance_pod_security_context()),
                    affinity: input.scheduling.affinity.clone(),
                    tolerations: non_empty_vec(input.scheduling.tolerations.clone()),
                    priority_class_name: input.scheduling.priority_class_name.clone(),
                    image_pull_secrets: non_empty_vec(cluster.image_pull_secrets.clone()),
                    ..PodSpec::default()
                }),
            },
            ..JobSpec::default()
        }),
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use super::{restore_script, MARK_HISTORY_READY};

    /// The script is valid bash (parsed by the real shell with `-n`, not run), and the same
    /// check refuses a broken script.
    #[test]
    fn restore_script_parses() {
        let check = |script: &str| {
            std::process::Command::new("bash")
                .args(["-n", "-c", script])
                .status()
                .expect("bash runs")
                .success()
        };
        assert!(check(&restore_script()));
        assert!(!check("until true; do"));
    }

    /// The new timeline's history file (written while `archive_mode=off`) is queued for the
    /// instance's archiver; one restored from the archive (`.done`) or already queued is left
    /// alone; segments are not touched. Run by the real bash on a real directory.
    #[test]
    fn only_unarchived_history_files_are_queued() {
        let dir = tempfile::tempdir().unwrap();
        let wal = dir.path().join("pg_wal");
        let status = wal.join("archive_status");
        std::fs::create_dir_all(&status).unwrap();
        for file in [
            "00000002.history",
            "00000003.history",
            "00000004.history",
            "000000040000000000000007",
        ] {
            std::fs::write(wal.join(file), "").unwrap();
        }
        std::fs::write(status.join("00000002.history.done"), "").unwrap();
        std::fs::write(status.join("00000003.history.ready"), "").unwrap();
        let script = format!("{MARK_HISTORY_READY}mark_history_ready \"$1\"");
        let ok = std::process::Command::new("bash")
            .args(["-ceu", &script, "test"])
            .arg(dir.path())
            .status()
            .expect("bash runs")
            .success();
        assert!(ok);
        let mut queued: Vec<String> = std::fs::read_dir(&status)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        queued.sort();
        assert_eq!(
            queued,
            [
                "00000002.history.done",
                "00000003.history.ready",
                "00000004.history.ready"
            ]
        );
        // An empty pg_wal (no history file) is not an error.
        let empty = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(empty.path().join("pg_wal/archive_status")).unwrap();
        let ok = std::process::Command::new("bash")
            .args(["-ceu", &script, "test"])
            .arg(empty.path())
            .status()
            .expect("bash runs")
            .success();
        assert!(ok);
    }
}
