//! The postgres_exporter sidecar of every instance pod (when `cluster.exporter` is set), its
//! queries ConfigMap `<c>-exporter-queries-config` and the `<c>-monitoring` Secret holding
//! the exporter role's password. Queries, environment and arguments come from
//! `tusk_config::exporter`.
//!
//! The exporter connects to PostgreSQL in its own pod over loopback TCP with TLS, verifying
//! the server against the cluster CA (`verify-ca`: the certificate names the Services and
//! the pod's DNS name, not `localhost`), as `_tusk_exporter` with its password, which it
//! reads from a file (`DATA_SOURCE_PASS_FILE`) projected from `<c>-monitoring`: a Secret in
//! a file is not visible in the container's environment. Its volume holds only the queries,
//! that password, the CA certificate and, with `customTLSSecret`, the certificate it serves
//! metrics with — never the database's private key. Pure.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapProjection, Container, ContainerPort, EnvVar, KeyToPath,
    ProjectedVolumeSource, Secret, SecretProjection, Volume, VolumeMount, VolumeProjection,
};
use k8s_openapi::ByteString;
use tusk_api::model::EXPORTER_PORT;
use tusk_api::naming::{self, cluster_labels};
use tusk_api::ValidatedCluster;
use tusk_config::exporter::{self as config, Connection};

use super::meta::object_meta;
use super::pod_security::restricted_container_security_context;
use super::secrets::{TLS_CA_KEY, TLS_CERT_KEY, TLS_PRIVATE_KEY_KEY};
use super::volumes::{server_tls_projection, TLS_FILE_MODE};

/// The exporter's program, as Debian's `prometheus-postgres-exporter` package installs it
/// (`/usr/bin`) in the database image, the same program `tusk local` runs. The container
/// names it rather than relying on the image's ENTRYPOINT: in the shared database image that
/// is Patroni, which would start with the exporter's flags.
pub const PROGRAM: &str = "prometheus-postgres-exporter";
pub const CONFIG_DIR: &str = "/etc/postgres_exporter";
pub const VOLUME: &str = "exporter-config";
pub const PORT_NAME: &str = "exporter";
/// Key of the web configuration (TLS) in the queries ConfigMap, present with custom TLS.
pub const WEB_CONFIG_KEY: &str = "web-config.yml";
/// Key of the exporter role's password in `<c>-monitoring`.
pub const PASSWORD_KEY: &str = "password";
const POSTGRES_CA_FILE: &str = "postgres-ca.crt";
/// File (in [`CONFIG_DIR`]) holding the exporter role's password.
const PASSWORD_FILE: &str = "password";
const WEB_CERT_FILE: &str = "web-tls.crt";
const WEB_KEY_FILE: &str = "web-tls.key";

/// The queries ConfigMap and the password Secret, or nothing when monitoring is off.
pub fn exporter_objects(cluster: &ValidatedCluster, password: &str) -> Option<(ConfigMap, Secret)> {
    cluster.exporter.as_ref()?;
    Some((
        exporter_queries_config_map(cluster),
        exporter_secret(cluster, password),
    ))
}

pub fn exporter_queries_config_map(cluster: &ValidatedCluster) -> ConfigMap {
    let mut data = BTreeMap::from([(
        config::QUERIES_FILE.to_owned(),
        config::QUERIES_YAML.to_owned(),
    )]);
    if custom_tls(cluster).is_some() {
        data.insert(
            WEB_CONFIG_KEY.to_owned(),
            config::web_config_yaml(&file(WEB_CERT_FILE), &file(WEB_KEY_FILE)),
        );
    }
    ConfigMap {
        metadata: object_meta(
            cluster,
            cluster.names.exporter_queries_config_map(),
            &cluster.metadata,
            cluster_labels(cluster.name()),
        ),
        data: Some(data),
        ..ConfigMap::default()
    }
}

pub fn exporter_secret(cluster: &ValidatedCluster, password: &str) -> Secret {
    Secret {
        metadata: object_meta(
            cluster,
            cluster.names.exporter_secret(),
            &cluster.metadata,
            cluster_labels(cluster.name()),
        ),
        data: Some(BTreeMap::from([(
            PASSWORD_KEY.to_owned(),
            ByteString(password.as_bytes().to_vec()),
        )])),
        ..Secret::default()
    }
}

fn custom_tls(cluster: &ValidatedCluster) -> Option<&SecretProjection> {
    cluster.exporter.as_ref()?.custom_tls_secret.as_ref()
}

fn file(name: &str) -> String {
    format!("{CONFIG_DIR}/{name}")
}

/// The `exporter` container, when monitoring is on.
pub fn exporter_container(cluster: &ValidatedCluster, image: &str) -> Option<Container> {
    let settings = cluster.exporter.as_ref()?;
    let connection = Connection {
        host: "localhost".to_owned(),
        port: cluster.port,
        sslmode: "verify-ca".to_owned(),
        sslrootcert: Some(file(POSTGRES_CA_FILE)),
    };
    let mut env: Vec<EnvVar> = config::exporter_env(&connection)
        .into_iter()
        .map(|(name, value)| EnvVar {
            name,
            value: Some(value),
            value_from: None,
        })
        .collect();
    env.push(EnvVar {
        name: "DATA_SOURCE_PASS_FILE".to_owned(),
        value: Some(file(PASSWORD_FILE)),
        value_from: None,
    });
    let web_config = custom_tls(cluster).map(|_| file(WEB_CONFIG_KEY));
    Some(Container {
        name: naming::CONTAINER_EXPORTER.to_owned(),
        image: Some(image.to_owned()),
        image_pull_policy: cluster.image_pull_policy.map(|p| p.as_str().to_owned()),
        command: Some(vec![PROGRAM.to_owned()]),
        args: Some(config::exporter_args(
            &file(config::QUERIES_FILE),
            &format!(":{EXPORTER_PORT}"),
            web_config.as_deref(),
        )),
        env: Some(env),
        ports: Some(vec![ContainerPort {
            name: Some(PORT_NAME.to_owned()),
            container_port: EXPORTER_PORT.into(),
            protocol: Some("TCP".to_owned()),
            ..ContainerPort::default()
        }]),
        resources: settings.resources.clone(),
        security_context: Some(restricted_container_security_context()),
        volume_mounts: Some(vec![VolumeMount {
            name: VOLUME.to_owned(),
            mount_path: CONFIG_DIR.to_owned(),
            read_only: Some(true),
            ..VolumeMount::default()
        }]),
        ..Container::default()
    })
}

/// The exporter's projected volume: queries (and web config), the role's password, the CA of
/// PostgreSQL's certificate only, the serving certificate with custom TLS, and `configuration` as given.
pub fn exporter_volume(cluster: &ValidatedCluster) -> Option<Volume> {
    let settings = cluster.exporter.as_ref()?;
    let server = server_tls_projection(cluster);
    let ca_only = SecretProjection {
        items: Some(
            server
                .items
                .clone()
                .into_iter()
                .flatten()
                .filter(|i| i.path == TLS_CA_KEY)
                .map(|i| KeyToPath {
                    path: POSTGRES_CA_FILE.to_owned(),
                    ..i
                })
                .collect(),
        ),
        ..server
    };
    let mut sources = vec![
        VolumeProjection {
            config_map: Some(ConfigMapProjection {
                name: cluster.names.exporter_queries_config_map(),
                items: None,
                optional: None,
            }),
            ..VolumeProjection::default()
        },
        VolumeProjection {
            secret: Some(ca_only),
            ..VolumeProjection::default()
        },
        VolumeProjection {
            secret: Some(SecretProjection {
                name: cluster.names.exporter_secret(),
                items: Some(vec![KeyToPath {
                    key: PASSWORD_KEY.to_owned(),
                    path: PASSWORD_FILE.to_owned(),
                    mode: None,
                }]),
                optional: None,
            }),
            ..VolumeProjection::default()
        },
    ];
    if let Some(custom) = custom_tls(cluster) {
        // The user's Secret holds `tls.crt` / `tls.key` unless its items say otherwise.
        let items = custom.items.clone().unwrap_or_else(|| {
            [TLS_CERT_KEY, TLS_PRIVATE_KEY_KEY]
                .into_iter()
                .map(|k| KeyToPath {
                    key: k.to_owned(),
                    path: k.to_owned(),
                    mode: None,
                })
                .collect()
        });
        let renamed = items
            .into_iter()
            .filter_map(|i| {
                let path = match i.path.as_str() {
                    TLS_CERT_KEY => WEB_CERT_FILE,
                    TLS_PRIVATE_KEY_KEY => WEB_KEY_FILE,
                    _ => return None,
                };
                Some(KeyToPath {
                    path: path.to_owned(),
                    ..i
                })
            })
            .collect();
        sources.push(VolumeProjection {
            secret: Some(SecretProjection {
                items: Some(renamed),
                ..custom.clone()
            }),
            ..VolumeProjection::default()
        });
    }
    sources.extend(settings.configuration.iter().cloned());
    Some(Volume {
        name: VOLUME.to_owned(),
        projected: Some(ProjectedVolumeSource {
            default_mode: Some(TLS_FILE_MODE),
            sources: Some(sources),
        }),
        ..Volume::default()
    })
}
