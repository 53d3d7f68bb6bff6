//! PgBouncer in Kubernetes: ConfigMap, Secret, Deployment and Service, all `<c>-pgbouncer`,
//! built when `cluster.pgbouncer` is set. The files come from `tusk_config::pgbouncer`.
//!
//! Configuration changes are applied by a reload, never a restart: every file PgBouncer reads
//! (its ini, the auth file, certificates, the user's `config.files`) is in ONE projected
//! volume, which the kubelet updates in place, and the `pgbouncer-config` sidecar sends
//! PgBouncer SIGHUP (shared process namespace, same UID, no capability needed) when the
//! volume's contents change. So the pod template carries no hash of the configuration, and
//! only what PgBouncer cannot reload (its port, image, resources, placement) rolls the
//! Deployment. Pure.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapProjection, Container, ContainerPort, KeyToPath, PodSpec, PodTemplateSpec,
    Probe, ProjectedVolumeSource, Secret, SecretProjection, Service, ServicePort, ServiceSpec,
    TCPSocketAction, Volume, VolumeMount, VolumeProjection,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::ByteString;
use tusk_api::model::PgBouncerSettings;
use tusk_api::naming::{self, pgbouncer_labels};
use tusk_api::ValidatedCluster;
use tusk_config::pgbouncer::{self as config, Files, Layout, Listen, Upstream};

use super::meta::{labels, non_empty_vec, object_meta};
use super::pod_security::{instance_pod_security_context, restricted_container_security_context};
use super::secrets::{TLS_CA_KEY, TLS_CERT_KEY, TLS_PRIVATE_KEY_KEY};
use super::volumes::{server_tls_projection, TLS_FILE_MODE};

/// Where the projected configuration volume is mounted.
pub const CONFIG_DIR: &str = "/etc/pgbouncer";
/// Keys of the ConfigMap and Secret, which are also the file names under [`CONFIG_DIR`].
pub const INI_KEY: &str = "tusk.ini";
pub const AUTH_FILE_KEY: &str = "users.txt";
/// The auth role's password in clear, kept so reconciles reuse it (dereference reads it).
pub const PASSWORD_KEY: &str = "password";
/// Sub-directories of the frontend (clients) and backend (PostgreSQL) certificate files.
const FRONTEND_DIR: &str = "frontend";
const BACKEND_DIR: &str = "backend";
pub const PORT_NAME: &str = "pgbouncer";
const VOLUME: &str = "pgbouncer-config";

/// How often the sidecar looks for changed files. The kubelet itself syncs projected
/// volumes only every minute or so, so polling faster would buy nothing.
const RELOAD_POLL_SECONDS: u32 = 10;

/// The files of the pod's layout, for `tusk_config::pgbouncer`.
pub fn kubernetes_layout(cluster: &ValidatedCluster, settings: &PgBouncerSettings) -> Layout {
    let file = |path: &str| format!("{CONFIG_DIR}/{path}");
    Layout {
        listen: Listen {
            host: "*".to_owned(),
            port: settings.port,
            unix_socket_dir: None,
        },
        files: Files {
            auth_file: file(AUTH_FILE_KEY),
            client_tls_cert: file(&format!("{FRONTEND_DIR}/{TLS_CERT_KEY}")),
            client_tls_key: file(&format!("{FRONTEND_DIR}/{TLS_PRIVATE_KEY_KEY}")),
            client_tls_ca: file(&format!("{FRONTEND_DIR}/{TLS_CA_KEY}")),
            server_tls_ca: file(&format!("{BACKEND_DIR}/{TLS_CA_KEY}")),
            includes: user_ini_files(settings).iter().map(|p| file(p)).collect(),
        },
        upstream: Upstream {
            host: cluster
                .names
                .service_host(&cluster.names.primary_service(), &cluster.namespace),
            port: cluster.port,
        },
    }
}

/// Paths (relative to [`CONFIG_DIR`]) of the user's `config.files` items ending in `.ini`:
/// those are `%include`d. Projections without explicit items cannot be listed, so only their
/// non-ini use (e.g. a CA file the user's settings name) works.
fn user_ini_files(settings: &PgBouncerSettings) -> Vec<String> {
    settings
        .config
        .files
        .iter()
        .flatten()
        .flat_map(|p| {
            let secret_items = p.secret.as_ref().and_then(|s| s.items.clone());
            let map_items = p.config_map.as_ref().and_then(|c| c.items.clone());
            secret_items
                .into_iter()
                .flatten()
                .chain(map_items.into_iter().flatten())
        })
        .map(|item| item.path)
        .filter(|path| path.ends_with(".ini"))
        .collect()
}

/// Every PgBouncer object, or nothing when pooling is off. `auth_password` is the auth role's
/// password (from `Material`).
pub fn pgbouncer_objects(
    cluster: &ValidatedCluster,
    image: &str,
    auth_password: &str,
) -> Option<(ConfigMap, Secret, Deployment, Service)> {
    let settings = cluster.pgbouncer.as_ref()?;
    let ini = config::pgbouncer_ini(settings, &kubernetes_layout(cluster, settings));
    Some((
        pgbouncer_config_map(cluster, ini),
        pgbouncer_secret(cluster, auth_password),
        pgbouncer_deployment(cluster, settings, image),
        pgbouncer_service(cluster, settings),
    ))
}

pub fn pgbouncer_config_map(cluster: &ValidatedCluster, ini: String) -> ConfigMap {
    ConfigMap {
        metadata: object_meta(
            cluster,
            cluster.names.pgbouncer(),
            &cluster.metadata,
            naming::cluster_labels(cluster.name()),
        ),
        data: Some(BTreeMap::from([(INI_KEY.to_owned(), ini)])),
        ..ConfigMap::default()
    }
}

pub fn pgbouncer_secret(cluster: &ValidatedCluster, auth_password: &str) -> Secret {
    let data = BTreeMap::from([
        (
            AUTH_FILE_KEY.to_owned(),
            ByteString(config::auth_file(auth_password).into_bytes()),
        ),
        (
            PASSWORD_KEY.to_owned(),
            ByteString(auth_password.as_bytes().to_vec()),
        ),
    ]);
    Secret {
        metadata: object_meta(
            cluster,
            cluster.names.pgbouncer(),
            &cluster.metadata,
            naming::cluster_labels(cluster.name()),
        ),
        data: Some(data),
        ..Secret::default()
    }
}

pub fn pgbouncer_deployment(
    cluster: &ValidatedCluster,
    settings: &PgBouncerSettings,
    image: &str,
) -> Deployment {
    let user_metadata = cluster.metadata.merged(&settings.metadata);
    let pod_labels = {
        let mut l = user_metadata.labels.clone();
        l.extend(pgbouncer_labels(cluster.name()));
        l
    };
    let mut annotations = user_metadata.annotations.clone();
    annotations.insert(
        naming::ANNOTATION_DEFAULT_CONTAINER.to_owned(),
        naming::CONTAINER_PGBOUNCER.to_owned(),
    );
    Deployment {
        metadata: object_meta(
            cluster,
            cluster.names.pgbouncer(),
            &user_metadata,
            pgbouncer_labels(cluster.name()),
        ),
        spec: Some(DeploymentSpec {
            replicas: Some(if cluster.shutdown {
                0
            } else {
                settings.replicas as i32
            }),
            selector: LabelSelector {
                match_labels: Some(selector(cluster)),
                ..LabelSelector::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    annotations: Some(annotations),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![
                        pgbouncer_container(cluster, settings, image),
                        reload_container(cluster, image),
                    ],
                    volumes: Some(vec![config_volume(cluster, settings)]),
                    // The sidecar signals PgBouncer's process.
                    share_process_namespace: Some(true),
                    // PgBouncer never talks to the Kubernetes API.
                    automount_service_account_token: Some(false),
                    enable_service_links: Some(false),
                    security_context: Some(instance_pod_security_context()),
                    affinity: settings.affinity.clone(),
                    tolerations: non_empty_vec(settings.tolerations.clone()),
                    topology_spread_constraints: non_empty_vec(
                        settings.topology_spread_constraints.clone(),
                    ),
                    priority_class_name: settings.priority_class_name.clone(),
                    image_pull_secrets: non_empty_vec(cluster.image_pull_secrets.clone()),
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        }),
        status: None,
    }
}

fn selector(cluster: &ValidatedCluster) -> BTreeMap<String, String> {
    labels(&[
        (naming::LABEL_CLUSTER, cluster.name()),
        (naming::LABEL_ROLE, naming::ROLE_PGBOUNCER),
    ])
}

fn config_mount() -> Vec<VolumeMount> {
    vec![VolumeMount {
        name: VOLUME.to_owned(),
        mount_path: CONFIG_DIR.to_owned(),
        read_only: Some(true),
        ..VolumeMount::default()
    }]
}

fn pgbouncer_container(
    cluster: &ValidatedCluster,
    settings: &PgBouncerSettings,
    image: &str,
) -> Container {
    let probe = Probe {
        tcp_socket: Some(TCPSocketAction {
            port: IntOrString::String(PORT_NAME.to_owned()),
            host: None,
        }),
        period_seconds: Some(10),
        timeout_seconds: Some(5),
        failure_threshold: Some(3),
        success_threshold: Some(1),
        ..Probe::default()
    };
    Container {
        name: naming::CONTAINER_PGBOUNCER.to_owned(),
        image: Some(image.to_owned()),
        image_pull_policy: cluster.image_pull_policy.map(|p| p.as_str().to_owned()),
        command: Some(vec![
            "pgbouncer".to_owned(),
            format!("{CONFIG_DIR}/{INI_KEY}"),
        ]),
        ports: Some(vec![ContainerPort {
            name: Some(PORT_NAME.to_owned()),
            container_port: settings.port.into(),
            protocol: Some("TCP".to_owned()),
            ..ContainerPort::default()
        }]),
        readiness_probe: Some(probe.clone()),
        liveness_probe: Some(probe),
        resources: settings.resources.clone(),
        security_context: Some(restricted_container_security_context()),
        volume_mounts: Some(config_mount()),
        ..Container::default()
    }
}

/// The POSIX shell loop of the `pgbouncer-config` sidecar: checksum every file under the
/// configuration directory (following the kubelet's symlinks) and SIGHUP every `pgbouncer`
/// process when the checksum changes. It needs only `sh`, `find`, `md5sum`, `sort` and
/// `kill`, which the PgBouncer image has.
pub fn reload_script() -> String {
    format!(
        r#"set -u
digest() {{ find -L {CONFIG_DIR} -type f -exec md5sum {{}} + 2>/dev/null | sort | md5sum; }}
last=$(digest)
while sleep {RELOAD_POLL_SECONDS}; do
  now=$(digest)
  [ "$now" = "$last" ] && continue
  for proc in /proc/[0-9]*; do
    if [ "$(cat "$proc/comm" 2>/dev/null)" = pgbouncer ]; then
      kill -HUP "${{proc#/proc/}}" && echo "configuration changed: reloaded pgbouncer (pid ${{proc#/proc/}})"
    fi
  done
  last=$now
done
"#
    )
}

fn reload_container(cluster: &ValidatedCluster, image: &str) -> Container {
    Container {
        name: naming::CONTAINER_PGBOUNCER_CONFIG.to_owned(),
        image: Some(image.to_owned()),
        image_pull_policy: cluster.image_pull_policy.map(|p| p.as_str().to_owned()),
        command: Some(vec!["sh".to_owned(), "-c".to_owned(), reload_script()]),
        resources: None,
        security_context: Some(restricted_container_security_context()),
        volume_mounts: Some(config_mount()),
        ..Container::default()
    }
}

/// One projected volume: Tusk's ini and auth file, the frontend certificate (the pooler's
/// `customTLSSecret`, else the cluster's server certificate, which names `<c>-pgbouncer`),
/// the CA of PostgreSQL's certificate, then the user's `config.files`.
fn config_volume(cluster: &ValidatedCluster, settings: &PgBouncerSettings) -> Volume {
    let server = server_tls_projection(cluster);
    let frontend = settings
        .custom_tls_secret
        .clone()
        .map(with_tls_items)
        .unwrap_or_else(|| server.clone());
    let backend_ca = SecretProjection {
        items: Some(
            server
                .items
                .clone()
                .into_iter()
                .flatten()
                .filter(|i| i.path == TLS_CA_KEY)
                .collect(),
        ),
        ..server
    };
    let mut sources = vec![
        VolumeProjection {
            config_map: Some(ConfigMapProjection {
                name: cluster.names.pgbouncer(),
                items: Some(vec![item(INI_KEY, INI_KEY)]),
                optional: None,
            }),
            ..VolumeProjection::default()
        },
        VolumeProjection {
            secret: Some(SecretProjection {
                name: cluster.names.pgbouncer(),
                items: Some(vec![item(AUTH_FILE_KEY, AUTH_FILE_KEY)]),
                optional: None,
            }),
            ..VolumeProjection::default()
        },
        secret_source(in_dir(frontend, FRONTEND_DIR)),
        secret_source(in_dir(backend_ca, BACKEND_DIR)),
    ];
    sources.extend(settings.config.files.iter().flatten().cloned());
    Volume {
        name: VOLUME.to_owned(),
        projected: Some(ProjectedVolumeSource {
            default_mode: Some(TLS_FILE_MODE),
            sources: Some(sources),
        }),
        ..Volume::default()
    }
}

fn item(key: &str, path: &str) -> KeyToPath {
    KeyToPath {
        key: key.to_owned(),
        path: path.to_owned(),
        mode: None,
    }
}

/// A custom Secret without items holds the standard keys (`tls.crt`, `tls.key`, `ca.crt`).
fn with_tls_items(mut projection: SecretProjection) -> SecretProjection {
    if projection.items.is_none() {
        projection.items = Some(
            [TLS_CERT_KEY, TLS_PRIVATE_KEY_KEY, TLS_CA_KEY]
                .into_iter()
                .map(|k| item(k, k))
                .collect(),
        );
    }
    projection
}

fn in_dir(mut projection: SecretProjection, dir: &str) -> SecretProjection {
    for i in projection.items.iter_mut().flatten() {
        i.path = format!("{dir}/{}", i.path);
    }
    projection
}

fn secret_source(secret: SecretProjection) -> VolumeProjection {
    VolumeProjection {
        secret: Some(secret),
        ..VolumeProjection::default()
    }
}

/// `<c>-pgbouncer`: the pooler pods, exposed as `spec.proxy.pgBouncer.service` asks.
pub fn pgbouncer_service(cluster: &ValidatedCluster, settings: &PgBouncerSettings) -> Service {
    let service = &settings.service;
    Service {
        metadata: object_meta(
            cluster,
            cluster.names.pgbouncer(),
            &cluster.metadata.merged(&service.metadata),
            naming::cluster_labels(cluster.name()),
        ),
        spec: Some(ServiceSpec {
            type_: Some(service.type_.as_str().to_owned()),
            selector: Some(selector(cluster)),
            ports: Some(vec![ServicePort {
                name: Some(PORT_NAME.to_owned()),
                port: settings.port.into(),
                protocol: Some("TCP".to_owned()),
                target_port: Some(IntOrString::String(PORT_NAME.to_owned())),
                node_port: service.node_port,
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}
