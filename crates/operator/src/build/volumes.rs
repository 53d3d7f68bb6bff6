//! An instance's storage and the volumes of its pod: the `<instance>-pgdata` (and `-pgwal`)
//! PersistentVolumeClaims, and the pod volumes/mounts for data, Patroni's configuration,
//! certificates and scratch space, and the `<c>-client-ca` ConfigMap a `customTLSSecret`
//! cluster's pods take their client-CA file from (see [`client_ca_config_map`]).
//!
//! PVCs are separate objects rather than `volumeClaimTemplates`: a StatefulSet's templates
//! are immutable (no resize through the spec) and tie the claim's life to the StatefulSet's,
//! while Tusk keeps an instance's data when its StatefulSet is removed on scale-down so the
//! instance can be brought back on it. Pure.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapProjection, ConfigMapVolumeSource, EmptyDirVolumeSource, KeyToPath,
    PersistentVolumeClaim, PersistentVolumeClaimVolumeSource, ProjectedVolumeSource,
    SecretProjection, Volume, VolumeMount, VolumeProjection,
};
use tusk_api::model::InstanceSetSpec;
use tusk_api::naming::{self, instance_labels};
use tusk_api::ValidatedCluster;
use tusk_config::paths;

use super::meta::object_meta;
use super::secrets::{TLS_CA_KEY, TLS_CERT_KEY, TLS_PRIVATE_KEY_KEY};

pub const VOLUME_PGDATA: &str = "pgdata";
pub const VOLUME_PGWAL: &str = "pgwal";
pub const VOLUME_PATRONI_CONFIG: &str = "patroni-config";
pub const VOLUME_SERVER_TLS: &str = "tls";
/// Only when the replication certificate directory is not inside the server's.
pub const VOLUME_REPLICATION_TLS: &str = "replication-tls";
pub const VOLUME_TMP: &str = "tmp";
pub const VOLUME_SHM: &str = "dshm";

/// Mode of projected certificate files: owner root, group fsGroup (26), readable by the group.
/// PostgreSQL accepts a private key that is root-owned and group-readable (0640), which is
/// the only way a projected Secret's key can be readable by the postgres user without being
/// world-readable.
pub const TLS_FILE_MODE: i32 = 0o640;

/// The instance's claims: `pgdata`, and `pgwal` when the set has a WAL volume.
pub fn instance_pvcs(
    cluster: &ValidatedCluster,
    set: &InstanceSetSpec,
    instance: &str,
) -> Vec<PersistentVolumeClaim> {
    let mut claims = vec![instance_pvc(
        cluster,
        set,
        instance,
        naming::instance_pgdata_pvc(instance),
        VOLUME_PGDATA,
        &set.data_volume,
    )];
    if let Some(wal) = &set.wal_volume {
        claims.push(instance_pvc(
            cluster,
            set,
            instance,
            naming::instance_pgwal_pvc(instance),
            VOLUME_PGWAL,
            wal,
        ));
    }
    claims
}

fn instance_pvc(
    cluster: &ValidatedCluster,
    set: &InstanceSetSpec,
    instance: &str,
    name: String,
    role: &str,
    spec: &k8s_openapi::api::core::v1::PersistentVolumeClaimSpec,
) -> PersistentVolumeClaim {
    // The instance labels let the planner find instances whose StatefulSet is gone.
    let mut tusk_labels = instance_labels(cluster.name(), set.name.as_str(), instance);
    tusk_labels.insert(naming::LABEL_VOLUME_ROLE.to_owned(), role.to_owned());
    PersistentVolumeClaim {
        metadata: object_meta(cluster, name, &set.metadata, tusk_labels),
        spec: Some(spec.clone()),
        status: None,
    }
}

/// The pod's volumes, in mount order.
pub fn instance_pod_volumes(
    cluster: &ValidatedCluster,
    set: &InstanceSetSpec,
    instance: &str,
) -> Vec<Volume> {
    let pvc = |name: &str, claim: String| Volume {
        name: name.to_owned(),
        persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
            claim_name: claim,
            read_only: None,
        }),
        ..Volume::default()
    };
    let mut volumes = vec![pvc(VOLUME_PGDATA, naming::instance_pgdata_pvc(instance))];
    if set.wal_volume.is_some() {
        volumes.push(pvc(VOLUME_PGWAL, naming::instance_pgwal_pvc(instance)));
    }
    volumes.push(Volume {
        name: VOLUME_PATRONI_CONFIG.to_owned(),
        config_map: Some(ConfigMapVolumeSource {
            name: cluster.names.patroni_config_map(),
            ..ConfigMapVolumeSource::default()
        }),
        ..Volume::default()
    });
    volumes.extend(tls_volumes(cluster));
    volumes.extend(super::exporter::exporter_volume(cluster));
    volumes.extend(super::pgbackrest::pgbackrest_config_volume(
        cluster,
        super::pgbackrest::ConfigRole::Instance,
    ));
    volumes.push(Volume {
        name: VOLUME_TMP.to_owned(),
        // The root filesystem is read-only; the socket directory and Patroni's scratch
        // files live here.
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Volume::default()
    });
    volumes.push(Volume {
        name: VOLUME_SHM.to_owned(),
        // PostgreSQL's parallel query uses POSIX shared memory; the runtime's default
        // /dev/shm (64Mi) is too small for it.
        empty_dir: Some(EmptyDirVolumeSource {
            medium: Some("Memory".to_owned()),
            ..EmptyDirVolumeSource::default()
        }),
        ..Volume::default()
    });
    volumes
}

/// Mounts of the database container, matching [`instance_pod_volumes`].
pub fn database_volume_mounts(set: &InstanceSetSpec) -> Vec<VolumeMount> {
    let mount = |name: &str, path: &str, read_only: bool| VolumeMount {
        name: name.to_owned(),
        mount_path: path.to_owned(),
        read_only: read_only.then_some(true),
        ..VolumeMount::default()
    };
    let mut mounts = vec![mount(VOLUME_PGDATA, paths::PGDATA_VOLUME, false)];
    if set.wal_volume.is_some() {
        mounts.push(mount(VOLUME_PGWAL, paths::PGWAL_VOLUME, false));
    }
    mounts.push(mount(
        VOLUME_PATRONI_CONFIG,
        paths::PATRONI_CONFIG_DIR,
        true,
    ));
    mounts.push(mount(VOLUME_SERVER_TLS, paths::SERVER_TLS_DIR, true));
    if replication_dir_inside_server_dir().is_none() {
        mounts.push(mount(
            VOLUME_REPLICATION_TLS,
            paths::REPLICATION_TLS_DIR,
            true,
        ));
    }
    mounts.push(mount(VOLUME_TMP, "/tmp", false));
    mounts.push(mount(VOLUME_SHM, "/dev/shm", false));
    mounts
}

/// `REPLICATION_TLS_DIR` relative to `SERVER_TLS_DIR`, when it is inside it.
fn replication_dir_inside_server_dir() -> Option<&'static str> {
    paths::REPLICATION_TLS_DIR
        .strip_prefix(paths::SERVER_TLS_DIR)
        .and_then(|rest| rest.strip_prefix('/'))
        .filter(|rest| !rest.is_empty())
}

/// Certificate volumes. When the replication directory is inside the server directory (the
/// default layout), both Secrets are projected into ONE volume, the replication files under
/// the sub-directory: a second volume mounted inside a read-only projected volume would need
/// the runtime to create its mount point in a read-only filesystem.
fn tls_volumes(cluster: &ValidatedCluster) -> Vec<Volume> {
    let server = server_tls_sources(cluster);
    let replication = secret_source(replication_tls_projection(cluster));
    let projected = |name: &str, sources: Vec<VolumeProjection>| Volume {
        name: name.to_owned(),
        projected: Some(ProjectedVolumeSource {
            default_mode: Some(TLS_FILE_MODE),
            sources: Some(sources),
        }),
        ..Volume::default()
    };
    match replication_dir_inside_server_dir() {
        Some(sub_dir) => {
            let mut sources = server;
            sources.push(secret_source(prefixed(
                replication_tls_projection(cluster),
                sub_dir,
            )));
            vec![projected(VOLUME_SERVER_TLS, sources)]
        }
        None => vec![
            projected(VOLUME_SERVER_TLS, server),
            projected(VOLUME_REPLICATION_TLS, vec![replication]),
        ],
    }
}

fn secret_source(secret: SecretProjection) -> VolumeProjection {
    VolumeProjection {
        secret: Some(secret),
        ..VolumeProjection::default()
    }
}

/// The server directory's files. With Tusk's certificates: `<c>-cluster-cert` as is (its
/// `ca.crt` is the operator root, or the rollover bundle). With `customTLSSecret`: the user's
/// `tls.crt` and `tls.key`, but `ca.crt` from the Tusk-owned ConfigMap
/// [`client_ca_config_map`] instead of the user's. That file is what PostgreSQL
/// (`ssl_ca_file`) and Patroni's REST server (`cafile`) verify CLIENT certificates against, and
/// the operator's own client certificate (`_tusk_operator`, issued by the operator root) must
/// pass there for the SQL step; the user's Secret is never modified. Where the user's CA is
/// needed to verify a SERVER (replication's `sslrootcert`, the operator's `verify-full`), the
/// user's own `ca.crt` is used, unchanged.
fn server_tls_sources(cluster: &ValidatedCluster) -> Vec<VolumeProjection> {
    let mut server = server_tls_projection(cluster);
    if cluster.tls.custom_server.is_none() {
        return vec![secret_source(server)];
    }
    if let Some(items) = server.items.as_mut() {
        items.retain(|item| item.path != TLS_CA_KEY);
    }
    vec![
        secret_source(server),
        VolumeProjection {
            config_map: Some(ConfigMapProjection {
                name: cluster.names.client_ca_config_map(),
                items: Some(vec![KeyToPath {
                    key: TLS_CA_KEY.to_owned(),
                    path: TLS_CA_KEY.to_owned(),
                    mode: None,
                }]),
                optional: None,
            }),
            ..VolumeProjection::default()
        },
    ]
}

/// The `<c>-client-ca` ConfigMap (key `ca.crt`), only with `customTLSSecret`: `bundle_pem` is
/// `material::custom_client_ca_bundle` (the user's CA, then the operator root). A ConfigMap,
/// not a Secret: it holds CA certificates, nothing secret.
pub fn client_ca_config_map(cluster: &ValidatedCluster, bundle_pem: &str) -> Option<ConfigMap> {
    cluster.tls.custom_server.as_ref()?;
    Some(ConfigMap {
        metadata: object_meta(
            cluster,
            cluster.names.client_ca_config_map(),
            &cluster.metadata,
            naming::cluster_labels(cluster.name()),
        ),
        data: Some(BTreeMap::from([(
            TLS_CA_KEY.to_owned(),
            bundle_pem.to_owned(),
        )])),
        ..ConfigMap::default()
    })
}

/// The server certificate's projection: the user's `customTLSSecret` as written (its
/// `items` map the user's keys to `tls.crt`, `tls.key`, `ca.crt`), or Tusk's Secret.
pub fn server_tls_projection(cluster: &ValidatedCluster) -> SecretProjection {
    with_default_items(
        cluster.tls.custom_server.clone(),
        cluster.names.cluster_cert_secret(),
    )
}

/// The replication client certificate's projection (see [`server_tls_projection`]).
pub fn replication_tls_projection(cluster: &ValidatedCluster) -> SecretProjection {
    with_default_items(
        cluster.tls.custom_replication.clone(),
        cluster.names.replication_cert_secret(),
    )
}

/// Items are always explicit, so only the three certificate files are projected (a custom
/// Secret may hold other keys) and the replication files can be moved into their directory.
fn with_default_items(custom: Option<SecretProjection>, tusk_secret: String) -> SecretProjection {
    let mut projection = custom.unwrap_or(SecretProjection {
        name: tusk_secret,
        items: None,
        optional: None,
    });
    if projection.items.is_none() {
        projection.items = Some(
            [TLS_CERT_KEY, TLS_PRIVATE_KEY_KEY, TLS_CA_KEY]
                .into_iter()
                .map(|key| KeyToPath {
                    key: key.to_owned(),
                    path: key.to_owned(),
                    mode: None,
                })
                .collect(),
        );
    }
    projection
}

fn prefixed(mut projection: SecretProjection, sub_dir: &str) -> SecretProjection {
    for item in projection.items.iter_mut().flatten() {
        item.path = format!("{sub_dir}/{}", item.path);
    }
    projection
}
