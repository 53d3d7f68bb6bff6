//! pgBackRest on the Kubernetes side: the `<c>-pgbackrest-config` ConfigMap (Tusk's files
//! from `tusk_config::pgbackrest`), the `pgbackrest-config` projected volume (that ConfigMap,
//! the user's `spec.backups.pgbackrest.configuration` projections and the TLS files), the
//! `pgbackrest` sidecar of instance pods (`pgbackrest server`, which the repo host's backups
//! reach as `pgN-host`), the `pgbackrest-config` sidecar beside every `pgbackrest server`
//! (`super::reload_sidecar`: SIGHUPs the server when the kubelet rewrites its configuration
//! or certificates), and, when a `volume` repo exists, the repo host: StatefulSet
//! `<c>-repo-host` and one PVC `<c>-repoN` per volume repo.
//!
//! Nothing here exists without `spec.backups`. The transport (pgBackRest TLS with the
//! cluster's certificates) is described in `tusk_config::pgbackrest`. Pure.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapProjection, Container, ContainerPort, EmptyDirVolumeSource, ExecAction,
    KeyToPath, PersistentVolumeClaim, PersistentVolumeClaimVolumeSource, PodSpec, PodTemplateSpec,
    Probe, ProjectedVolumeSource, SecretProjection, Volume, VolumeMount, VolumeProjection,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use tusk_api::model::{BackupSettings, MetadataSettings, RepoSettings, RepoStorage};
use tusk_api::naming::{self, cluster_labels};
use tusk_api::ValidatedCluster;
use tusk_config::pgbackrest as conf;

use super::meta::{labels, non_empty_vec, object_meta};
use super::pod_security::{instance_pod_security_context, restricted_container_security_context};
use super::reload_sidecar::{reload_sidecar, ReloadTarget};
use super::secrets::{TLS_CA_KEY, TLS_CERT_KEY, TLS_PRIVATE_KEY_KEY};
use super::volumes::{
    replication_tls_projection, server_tls_projection, TLS_FILE_MODE, VOLUME_PGDATA, VOLUME_PGWAL,
    VOLUME_TMP,
};

/// The projected configuration volume, named like the PGO family's.
pub const VOLUME_CONFIG: &str = naming::CONTAINER_PGBACKREST_CONFIG;
pub const PORT_NAME: &str = "pgbackrest";
/// The argument that makes `pgbackrest` the TLS server, and by which the `pgbackrest-config`
/// sidecar finds it: no other process of the pod has it as a whole argument (the liveness
/// probe's is `server-ping`).
pub const SERVER_SIGNAL_ARG: &str = "server";

/// Which pgBackRest file a pod reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigRole {
    Instance,
    RepoHost,
}

impl ConfigRole {
    fn file(self) -> &'static str {
        match self {
            ConfigRole::Instance => conf::INSTANCE_CONF_FILE,
            ConfigRole::RepoHost => conf::REPO_HOST_CONF_FILE,
        }
    }
}

/// Stable DNS name of the repo host's pod under the `<c>-pods` headless Service.
pub fn repo_host_pod_host(cluster: &ValidatedCluster) -> String {
    naming::instance_pod_host(
        &cluster.names.repo_host(),
        &cluster.names.pods_service(),
        &cluster.namespace,
    )
}

/// Labels of pgBackRest objects that are not instances (repo host, its volumes).
pub fn pgbackrest_labels(cluster: &ValidatedCluster) -> BTreeMap<String, String> {
    let mut l = cluster_labels(cluster.name());
    l.insert(naming::LABEL_PGBACKREST.to_owned(), String::new());
    l.insert(
        naming::APP_COMPONENT.to_owned(),
        naming::DATA_PGBACKREST.to_owned(),
    );
    l
}

/// The repo host pod's own labels: what the `<c>-pods` Service and backup Jobs select it by.
pub fn repo_host_selector(cluster: &ValidatedCluster) -> BTreeMap<String, String> {
    labels(&[
        (naming::LABEL_CLUSTER, cluster.name()),
        (naming::LABEL_DATA, naming::DATA_PGBACKREST),
    ])
}

/// `spec.metadata` overlaid with `spec.backups.pgbackrest.metadata`.
pub fn backup_metadata(cluster: &ValidatedCluster, backups: &BackupSettings) -> MetadataSettings {
    cluster.metadata.merged(&backups.metadata)
}

/// `<c>-pgbackrest-config`: the instances' file and, with a volume repo, the repo host's.
/// `instance_hosts` are the instance pods' DNS names (the repo host's `pgN-host`), in the
/// plan's order. `None` without backups.
pub fn pgbackrest_config_map(
    cluster: &ValidatedCluster,
    instance_hosts: &[String],
) -> Option<ConfigMap> {
    let backups = cluster.backups.as_ref()?;
    let mut data = BTreeMap::new();
    data.insert(
        conf::INSTANCE_CONF_FILE.to_owned(),
        conf::instance_conf(cluster, &repo_host_pod_host(cluster))?,
    );
    if let Some(repo_host) = conf::repo_host_conf(cluster, instance_hosts) {
        data.insert(conf::REPO_HOST_CONF_FILE.to_owned(), repo_host);
    }
    Some(ConfigMap {
        metadata: object_meta(
            cluster,
            cluster.names.pgbackrest_config_map(),
            &backup_metadata(cluster, backups),
            pgbackrest_labels(cluster),
        ),
        data: Some(data),
        ..ConfigMap::default()
    })
}

/// A certificate projection with its items renamed into [`conf::TLS_DIR`]: `files` maps the
/// Secret's file names (`tls.crt`, ...) to pgBackRest's.
fn tls_items(projection: SecretProjection, files: &[(&str, &str)]) -> VolumeProjection {
    let sub_dir = conf::TLS_DIR
        .strip_prefix(conf::CONFIG_DIR)
        .map(|d| d.trim_start_matches('/'))
        .expect("the TLS directory is inside the configuration directory");
    let items = projection
        .items
        .clone()
        .into_iter()
        .flatten()
        .filter_map(|item| {
            let (_, to) = files.iter().find(|(from, _)| *from == item.path)?;
            Some(KeyToPath {
                path: format!("{sub_dir}/{to}"),
                ..item
            })
        })
        .collect();
    VolumeProjection {
        secret: Some(SecretProjection {
            items: Some(items),
            ..projection
        }),
        ..VolumeProjection::default()
    }
}

/// The `pgbackrest-config` volume of a pod in `role`; `None` without backups.
pub fn pgbackrest_config_volume(cluster: &ValidatedCluster, role: ConfigRole) -> Option<Volume> {
    let backups = cluster.backups.as_ref()?;
    Some(config_volume_from(
        cluster,
        &cluster.names.pgbackrest_config_map(),
        role.file(),
        &backups.configuration,
    ))
}

/// A `pgbackrest-config` volume: key `file` of ConfigMap `config_map`, the user's
/// `projections` and the cluster's TLS files (restore Jobs bring another repo's file).
pub fn config_volume_from(
    cluster: &ValidatedCluster,
    config_map: &str,
    file: &str,
    projections: &[VolumeProjection],
) -> Volume {
    let mut sources = vec![VolumeProjection {
        config_map: Some(ConfigMapProjection {
            name: config_map.to_owned(),
            items: Some(vec![KeyToPath {
                key: file.to_owned(),
                path: file.to_owned(),
                mode: None,
            }]),
            optional: None,
        }),
        ..VolumeProjection::default()
    }];
    // The user's files (e.g. `s3.conf` with keys) land beside Tusk's and are read after it.
    sources.extend(projections.iter().cloned());
    sources.push(tls_items(
        server_tls_projection(cluster),
        &[
            (TLS_CERT_KEY, conf::TLS_SERVER_CERT_FILE),
            (TLS_PRIVATE_KEY_KEY, conf::TLS_SERVER_KEY_FILE),
            (TLS_CA_KEY, conf::TLS_CA_FILE),
        ],
    ));
    sources.push(tls_items(
        replication_tls_projection(cluster),
        &[
            (TLS_CERT_KEY, conf::TLS_CLIENT_CERT_FILE),
            (TLS_PRIVATE_KEY_KEY, conf::TLS_CLIENT_KEY_FILE),
        ],
    ));
    Volume {
        name: VOLUME_CONFIG.to_owned(),
        projected: Some(ProjectedVolumeSource {
            default_mode: Some(TLS_FILE_MODE),
            sources: Some(sources),
        }),
        ..Volume::default()
    }
}

pub fn mount(name: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: name.to_owned(),
        mount_path: path.to_owned(),
        read_only: read_only.then_some(true),
        ..VolumeMount::default()
    }
}

/// The database container's mount of the configuration: `archive_command` and
/// `restore_command` run pgBackRest there. `None` without backups.
pub fn database_config_mount(cluster: &ValidatedCluster) -> Option<VolumeMount> {
    cluster.backups.as_ref()?;
    Some(mount(VOLUME_CONFIG, conf::CONFIG_DIR, true))
}

/// `pgbackrest-log-dir`: an init container creating `dirs` (`mkdir -p`) on the volume of
/// `mount` before any container of the pod starts. pgBackRest writes its log to `log-path` but
/// never creates that directory: without this every pgBackRest command in the pod (the
/// database container's `archive_command`, `pgbackrest server`, the backups the Jobs exec)
/// warns that it cannot open its log file. The directories are on the pod's persistent volume
/// (the root filesystem is read-only), so they outlive the pod; creating them again is a no-op.
pub fn log_dir_init_container(
    cluster: &ValidatedCluster,
    image: &str,
    mount: VolumeMount,
    dirs: &[&str],
) -> Container {
    let mut command = vec!["mkdir".to_owned(), "-p".to_owned()];
    command.extend(dirs.iter().map(|d| (*d).to_owned()));
    Container {
        name: naming::CONTAINER_PGBACKREST_LOG_DIR.to_owned(),
        image: Some(image.to_owned()),
        image_pull_policy: cluster.image_pull_policy.map(|p| p.as_str().to_owned()),
        command: Some(command),
        security_context: Some(restricted_container_security_context()),
        volume_mounts: Some(vec![mount]),
        ..Container::default()
    }
}

/// The instance pod's `pgbackrest-log-dir` init container: pgBackRest's `log-path` and
/// `spool-path` on the data volume ([`conf::INSTANCE_LOG_DIR`], [`conf::INSTANCE_SPOOL_DIR`]).
/// `image` is the database image. `None` without backups.
pub fn instance_log_dir_init_container(
    cluster: &ValidatedCluster,
    image: &str,
) -> Option<Container> {
    cluster.backups.as_ref()?;
    Some(log_dir_init_container(
        cluster,
        image,
        mount(VOLUME_PGDATA, tusk_config::paths::PGDATA_VOLUME, false),
        &[conf::INSTANCE_LOG_DIR, conf::INSTANCE_SPOOL_DIR],
    ))
}

/// `pgbackrest server`, on every interface at [`conf::TLS_SERVER_PORT`]; its liveness is
/// `pgbackrest server-ping` (the TLS server answering).
fn server_container(
    cluster: &ValidatedCluster,
    image: &str,
    mounts: Vec<VolumeMount>,
    resources: Option<k8s_openapi::api::core::v1::ResourceRequirements>,
) -> Container {
    Container {
        name: naming::CONTAINER_PGBACKREST.to_owned(),
        image: Some(image.to_owned()),
        image_pull_policy: cluster.image_pull_policy.map(|p| p.as_str().to_owned()),
        command: Some(vec!["pgbackrest".to_owned(), SERVER_SIGNAL_ARG.to_owned()]),
        ports: Some(vec![ContainerPort {
            name: Some(PORT_NAME.to_owned()),
            container_port: conf::TLS_SERVER_PORT.into(),
            protocol: Some("TCP".to_owned()),
            ..ContainerPort::default()
        }]),
        liveness_probe: Some(Probe {
            exec: Some(ExecAction {
                command: Some(vec!["pgbackrest".to_owned(), "server-ping".to_owned()]),
            }),
            period_seconds: Some(30),
            timeout_seconds: Some(10),
            failure_threshold: Some(3),
            ..Probe::default()
        }),
        readiness_probe: None,
        resources,
        security_context: Some(restricted_container_security_context()),
        volume_mounts: Some(mounts),
        ..Container::default()
    }
}

/// The instance pod's `pgbackrest` sidecar: the TLS server through which the repo host backs
/// up this instance and the backup Jobs run pgBackRest when there is no repo host. It sees
/// PostgreSQL's data (and WAL) volume and its socket directory (in `/tmp`). `None` without
/// backups.
pub fn instance_sidecar(
    cluster: &ValidatedCluster,
    has_wal_volume: bool,
    image: &str,
) -> Option<Container> {
    cluster.backups.as_ref()?;
    let mut mounts = vec![
        mount(VOLUME_CONFIG, conf::CONFIG_DIR, true),
        mount(VOLUME_PGDATA, tusk_config::paths::PGDATA_VOLUME, false),
    ];
    if has_wal_volume {
        mounts.push(mount(VOLUME_PGWAL, tusk_config::paths::PGWAL_VOLUME, false));
    }
    mounts.push(mount(VOLUME_TMP, "/tmp", false));
    Some(server_container(cluster, image, mounts, None))
}

/// `pgbackrest-config`: watches the pod's `pgbackrest-config` volume (Tusk's file, the user's
/// projections, the TLS files) and SIGHUPs `pgbackrest server`, which re-reads all of them.
/// `image` is the database image (the watcher needs its shell tools). `None` without backups.
pub fn config_reload_container(cluster: &ValidatedCluster, image: &str) -> Option<Container> {
    cluster.backups.as_ref()?;
    Some(reload_sidecar(
        cluster,
        image,
        ReloadTarget {
            container: naming::CONTAINER_PGBACKREST_CONFIG,
            volume: VOLUME_CONFIG,
            watch_dir: conf::CONFIG_DIR,
            signal_arg: SERVER_SIGNAL_ARG,
        },
    ))
}

fn volume_repos(backups: &BackupSettings) -> impl Iterator<Item = &RepoSettings> {
    backups
        .repos
        .iter()
        .filter(|r| matches!(r.storage, RepoStorage::Volume(_)))
}

/// `<c>-repoN` for every volume repo; empty without one.
pub fn repo_pvcs(cluster: &ValidatedCluster) -> Vec<PersistentVolumeClaim> {
    let Some(backups) = &cluster.backups else {
        return Vec::new();
    };
    volume_repos(backups)
        .filter_map(|repo| {
            let RepoStorage::Volume(spec) = &repo.storage else {
                return None;
            };
            let mut tusk_labels = pgbackrest_labels(cluster);
            tusk_labels.extend(repo_host_selector(cluster));
            tusk_labels.insert(naming::LABEL_PGBACKREST_REPO.to_owned(), repo.name.clone());
            Some(PersistentVolumeClaim {
                metadata: object_meta(
                    cluster,
                    cluster.names.repo_volume(&repo.name),
                    &backup_metadata(cluster, backups),
                    tusk_labels,
                ),
                spec: Some(spec.clone()),
                status: None,
            })
        })
        .collect()
}

/// `<c>-repo-host`: one pod serving the volume repos over TLS and running backups, with the
/// `pgbackrest-config` sidecar (from `database_image`). `None` without a volume repo.
pub fn repo_host_statefulset(
    cluster: &ValidatedCluster,
    image: &str,
    database_image: &str,
) -> Option<StatefulSet> {
    let backups = cluster.backups.as_ref()?;
    volume_repos(backups).next()?;
    let mut pod_labels = backup_metadata(cluster, backups).labels;
    pod_labels.extend(pgbackrest_labels(cluster));
    pod_labels.extend(repo_host_selector(cluster));
    let mut volumes = vec![pgbackrest_config_volume(cluster, ConfigRole::RepoHost)?];
    let mut mounts = vec![mount(VOLUME_CONFIG, conf::CONFIG_DIR, true)];
    for repo in volume_repos(backups) {
        volumes.push(Volume {
            name: repo.name.clone(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: cluster.names.repo_volume(&repo.name),
                read_only: None,
            }),
            ..Volume::default()
        });
        mounts.push(mount(&repo.name, &conf::repo_path(repo), false));
    }
    // Lock files (`/tmp/pgbackrest`): the root filesystem is read-only.
    volumes.push(Volume {
        name: VOLUME_TMP.to_owned(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Volume::default()
    });
    mounts.push(mount(VOLUME_TMP, "/tmp", false));
    let host = &backups.repo_host;
    let containers = vec![
        server_container(cluster, image, mounts, host.resources.clone()),
        config_reload_container(cluster, database_image)?,
    ];
    // `log-path` is on the first volume repo (see `conf::repo_host_log_dir`).
    let first_volume = volume_repos(backups).next()?;
    let log_dir = conf::repo_host_log_dir(first_volume);
    let init_containers = vec![log_dir_init_container(
        cluster,
        database_image,
        mount(&first_volume.name, &conf::repo_path(first_volume), false),
        &[&log_dir],
    )];
    Some(StatefulSet {
        metadata: object_meta(
            cluster,
            cluster.names.repo_host(),
            &backup_metadata(cluster, backups),
            pgbackrest_labels(cluster),
        ),
        spec: Some(StatefulSetSpec {
            // Shut down: no pod; the volumes stay.
            replicas: Some(if cluster.shutdown { 0 } else { 1 }),
            selector: LabelSelector {
                match_labels: Some(repo_host_selector(cluster)),
                ..LabelSelector::default()
            },
            // The pod's stable name `<c>-repo-host-0.<c>-pods.<ns>.svc` is covered by the
            // server certificate's `*.<c>-pods` names.
            service_name: Some(cluster.names.pods_service()),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    annotations: super::meta::non_empty(
                        backup_metadata(cluster, backups).annotations,
                    ),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    init_containers: Some(init_containers),
                    containers,
                    volumes: Some(volumes),
                    // The repo host never calls the Kubernetes API.
                    automount_service_account_token: Some(false),
                    // The `pgbackrest-config` sidecar signals `pgbackrest server`.
                    share_process_namespace: Some(true),
                    enable_service_links: Some(false),
                    security_context: Some(instance_pod_security_context()),
                    affinity: host.affinity.clone(),
                    tolerations: host.tolerations.clone().and_then(non_empty_vec),
                    topology_spread_constraints: host
                        .topology_spread_constraints
                        .clone()
                        .and_then(non_empty_vec),
                    priority_class_name: host.priority_class_name.clone(),
                    image_pull_secrets: non_empty_vec(cluster.image_pull_secrets.clone()),
                    ..PodSpec::default()
                }),
            },
            ..StatefulSetSpec::default()
        }),
        status: None,
    })
}
