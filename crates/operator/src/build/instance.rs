//! One instance = one StatefulSet (replicas 1) running Patroni, which runs PostgreSQL.
//!
//! Why one StatefulSet per instance rather than one per set: each instance has its own
//! identity (a Patroni member, its own PVCs) and Tusk must be able to restart, replace or
//! remove a chosen one, e.g. never the primary first. For the same reason the update strategy
//! is `OnDelete`: the StatefulSet controller never restarts a pod by itself; Tusk's
//! controller rolls instances whose pod is outdated, replicas first, one at a time, each
//! healthy before the next, then a switchover, then the old primary last.
//!
//! The pod: with backups, the `pgbackrest-log-dir` init container (`super::pgbackrest`), then
//! `database` (Patroni), `tls-reload` (`super::reload_sidecar`: SIGHUPs Patroni when
//! the kubelet updates the certificate files, hence `shareProcessNamespace`), with backups
//! `pgbackrest` and its reloader `pgbackrest-config`, the exporter when monitoring is on, then
//! the user's containers. Pure.

use std::collections::BTreeSet;

use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetSpec, StatefulSetUpdateStrategy};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EnvVar, EnvVarSource, ExecAction, HTTPGetAction, ObjectFieldSelector,
    PodSpec, PodTemplateSpec, Probe,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tusk_api::model::InstanceSetSpec;
use tusk_api::naming::{self, instance_labels};
use tusk_api::ValidatedCluster;
use tusk_config::paths;

use super::meta::{labels, non_empty_vec, object_meta};
use super::pod_security::{
    instance_pod_security_context, restricted_container_security_context, with_restricted_defaults,
};
use super::services::{PATRONI_PORT_NAME, POSTGRES_PORT_NAME};
use super::volumes::{database_volume_mounts, instance_pod_volumes};

/// What an instance's StatefulSet needs besides the cluster and its set.
#[derive(Clone, Copy, Debug)]
pub struct InstanceContext<'a> {
    /// `<c>-<set>-<suffix>`, from the plan.
    pub instance: &'a str,
    /// The database container's image.
    pub image: &'a str,
    /// [`super::patroni_config::config_hash`] of the cluster's Patroni configuration.
    pub config_hash: &'a str,
    /// The exporter sidecar's image (used only when monitoring is on).
    pub exporter_image: &'a str,
    /// The `pgbackrest` sidecar's image (used only with backups).
    pub pgbackrest_image: &'a str,
    /// The `fencer` container's image.
    pub fencer_image: &'a str,
}

pub fn instance_statefulset(
    cluster: &ValidatedCluster,
    set: &InstanceSetSpec,
    ctx: InstanceContext<'_>,
) -> StatefulSet {
    let instance = ctx.instance;
    let tusk_labels = instance_labels(cluster.name(), set.name.as_str(), instance);
    StatefulSet {
        metadata: object_meta(cluster, instance, &set.metadata, tusk_labels),
        spec: Some(StatefulSetSpec {
            // Shut down keeps the StatefulSet and its volumes; only the pod goes.
            replicas: Some(if cluster.shutdown { 0 } else { 1 }),
            selector: LabelSelector {
                match_labels: Some(labels(&[
                    (naming::LABEL_CLUSTER, cluster.name()),
                    (naming::LABEL_INSTANCE_SET, set.name.as_str()),
                    (naming::LABEL_INSTANCE, instance),
                ])),
                ..LabelSelector::default()
            },
            service_name: Some(cluster.names.pods_service()),
            template: instance_pod_template(cluster, set, ctx),
            update_strategy: Some(StatefulSetUpdateStrategy {
                type_: Some("OnDelete".to_owned()),
                rolling_update: None,
            }),
            ..StatefulSetSpec::default()
        }),
        status: None,
    }
}

fn instance_pod_template(
    cluster: &ValidatedCluster,
    set: &InstanceSetSpec,
    ctx: InstanceContext<'_>,
) -> PodTemplateSpec {
    let mut pod_labels = set.metadata.labels.clone();
    pod_labels.extend(instance_labels(
        cluster.name(),
        set.name.as_str(),
        ctx.instance,
    ));
    let mut annotations = set.metadata.annotations.clone();
    annotations.insert(
        naming::ANNOTATION_DEFAULT_CONTAINER.to_owned(),
        naming::CONTAINER_DATABASE.to_owned(),
    );
    annotations.insert(
        naming::ANNOTATION_CONFIG_HASH.to_owned(),
        ctx.config_hash.to_owned(),
    );
    let mut containers = vec![
        database_container(cluster, set, ctx),
        super::fencer::fencer_container(cluster, ctx.fencer_image),
        super::reload_sidecar::tls_reload_container(cluster, ctx.image),
    ];
    containers.extend(super::pgbackrest::instance_sidecar(
        cluster,
        set.wal_volume.is_some(),
        ctx.pgbackrest_image,
    ));
    containers.extend(super::pgbackrest::config_reload_container(
        cluster, ctx.image,
    ));
    containers.extend(super::exporter::exporter_container(
        cluster,
        ctx.exporter_image,
    ));
    containers.extend(set.containers.iter().cloned().map(with_restricted_defaults));
    PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(pod_labels),
            annotations: Some(annotations),
            ..ObjectMeta::default()
        }),
        spec: Some(PodSpec {
            // Before Patroni starts: its `archive_command` and the sidecar log to pgBackRest's
            // `log-path`, which nothing else creates.
            init_containers: super::pgbackrest::instance_log_dir_init_container(cluster, ctx.image)
                .map(|c| vec![c]),
            containers,
            volumes: Some(instance_pod_volumes(cluster, set, ctx.instance)),
            service_account_name: Some(cluster.names.instance_rbac()),
            // Patroni is the DCS client: it needs the account's token.
            automount_service_account_token: Some(true),
            // The `tls-reload` and `pgbackrest-config` sidecars signal Patroni and
            // `pgbackrest server` when their files change; the `fencer` kills PostgreSQL.
            share_process_namespace: Some(true),
            // Dozens of `*_SERVICE_HOST` variables per Service in the namespace are noise at
            // best and can collide with PostgreSQL's `PG*` settings at worst.
            enable_service_links: Some(false),
            security_context: Some(instance_pod_security_context()),
            affinity: set.affinity.clone(),
            tolerations: non_empty_vec(set.tolerations.clone()),
            topology_spread_constraints: non_empty_vec(set.topology_spread_constraints.clone()),
            priority_class_name: set.priority_class_name.clone(),
            image_pull_secrets: non_empty_vec(cluster.image_pull_secrets.clone()),
            ..PodSpec::default()
        }),
    }
}

fn database_container(
    cluster: &ValidatedCluster,
    set: &InstanceSetSpec,
    ctx: InstanceContext<'_>,
) -> Container {
    let port = |name: &str, number: u16| ContainerPort {
        name: Some(name.to_owned()),
        container_port: number.into(),
        protocol: Some("TCP".to_owned()),
        ..ContainerPort::default()
    };
    Container {
        name: naming::CONTAINER_DATABASE.to_owned(),
        image: Some(ctx.image.to_owned()),
        image_pull_policy: cluster.image_pull_policy.map(|p| p.as_str().to_owned()),
        command: Some(vec![
            "patroni".to_owned(),
            paths::PATRONI_CONFIG_FILE.to_owned(),
        ]),
        env: Some(database_env(cluster, ctx.instance)),
        ports: Some(vec![
            port(POSTGRES_PORT_NAME, cluster.port),
            port(PATRONI_PORT_NAME, cluster.patroni.port),
        ]),
        readiness_probe: Some(readiness_probe(cluster)),
        liveness_probe: Some(patroni_liveness_probe()),
        resources: set.resources.clone(),
        security_context: Some(restricted_container_security_context()),
        volume_mounts: Some({
            let mut mounts = database_volume_mounts(set);
            mounts.extend(super::pgbackrest::database_config_mount(cluster));
            mounts
        }),
        ..Container::default()
    }
}

/// Patroni's REST API `/liveness`, over HTTPS (the kubelet does not verify the certificate):
/// it only checks Patroni's own loop, so a slow PostgreSQL recovery does not get the pod
/// killed.
fn patroni_liveness_probe() -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some("/liveness".to_owned()),
            port: IntOrString::String(PATRONI_PORT_NAME.to_owned()),
            scheme: Some("HTTPS".to_owned()),
            ..HTTPGetAction::default()
        }),
        ..probe_timing()
    }
}

fn probe_timing() -> Probe {
    Probe {
        period_seconds: Some(10),
        timeout_seconds: Some(5),
        failure_threshold: Some(3),
        success_threshold: Some(1),
        ..Probe::default()
    }
}

/// Ready = PostgreSQL answers and is the primary, or a replica that streams. Patroni 3.0's
/// `/readiness` (the image's Patroni) answers 200 for any member whose PostgreSQL runs, so a
/// replica that cannot reach its primary (or replays a backlog from the archive) would sit in
/// `<c>-replicas` serving stale reads, and count as healthy for a rolling restart. The probe
/// asks PostgreSQL itself, as the superuser over the Unix socket (peer authentication, no
/// secret): `pg_is_in_recovery()` and `pg_stat_wal_receiver`. In a standby cluster the
/// standby leader follows a host outside the cluster or a repository, where streaming is
/// not guaranteed (repo-only replays from the archive): there only members that follow a
/// member of this cluster (their `primary_conninfo` names the pods Service) must stream.
fn readiness_probe(cluster: &ValidatedCluster) -> Probe {
    let script = format!(
        "test \"$(PGCONNECT_TIMEOUT=3 PGOPTIONS='-c statement_timeout=3000' psql -XAtq \
         -h {socket} -U {user} -d postgres -c \"$1\")\" = t",
        socket = paths::SOCKET_DIR,
        user = naming::SUPERUSER,
    );
    Probe {
        exec: Some(ExecAction {
            command: Some(vec![
                "sh".to_owned(),
                "-c".to_owned(),
                script,
                "readiness".to_owned(),
                readiness_sql(cluster),
            ]),
        }),
        ..probe_timing()
    }
}

/// The readiness query (one boolean); see [`readiness_probe`].
pub fn readiness_sql(cluster: &ValidatedCluster) -> String {
    let mut ready = vec![
        "not pg_is_in_recovery()".to_owned(),
        "exists (select from pg_stat_wal_receiver where status = 'streaming')".to_owned(),
    ];
    if cluster.standby.as_ref().is_some_and(|s| s.enabled) {
        // `host=<instance>-0.<c>-pods.<ns>.svc ...`: a replica of this cluster's leader.
        let members = format!(
            ".{}.{}.svc",
            cluster.names.pods_service(),
            cluster.namespace
        );
        ready.push(format!(
            "position('{members}' in current_setting('primary_conninfo')) = 0"
        ));
    }
    format!("select {}", ready.join(" or "))
}

/// The database container's environment: the member-specific variables this builder owns,
/// then `tusk_config::patroni::kubernetes_env` minus any variable of the same name (the
/// member's own values must win, and Kubernetes keeps the LAST duplicate).
/// An environment variable set from the pod's own fields (the downward API).
pub(super) fn env_from_field(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: None,
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.to_owned(),
                api_version: None,
            }),
            ..EnvVarSource::default()
        }),
    }
}

fn database_env(cluster: &ValidatedCluster, instance: &str) -> Vec<EnvVar> {
    let pod_host =
        naming::instance_pod_host(instance, &cluster.names.pods_service(), &cluster.namespace);
    let value = |name: &str, value: String| EnvVar {
        name: name.to_owned(),
        value: Some(value),
        value_from: None,
    };
    let mut env = vec![
        // The pod name is the Patroni member name (`<instance>-0`), unique in the scope.
        env_from_field("PATRONI_NAME", "metadata.name"),
        env_from_field("PATRONI_KUBERNETES_NAMESPACE", "metadata.namespace"),
        // Patroni writes it into the leader Endpoints that `<c>-ha` routes to.
        env_from_field("PATRONI_KUBERNETES_POD_IP", "status.podIP"),
        // Members advertise their stable DNS name, which the server certificate names, so
        // replication can verify the primary's certificate.
        value(
            "PATRONI_POSTGRESQL_CONNECT_ADDRESS",
            format!("{pod_host}:{}", cluster.port),
        ),
        value(
            "PATRONI_RESTAPI_CONNECT_ADDRESS",
            format!("{pod_host}:{}", cluster.patroni.port),
        ),
        // The Endpoints' port must carry the `<c>-ha` Service's port name to be routed.
        value(
            "PATRONI_KUBERNETES_PORTS",
            serde_json::json!([{ "name": POSTGRES_PORT_NAME, "port": cluster.port }]).to_string(),
        ),
    ];
    let ours: BTreeSet<String> = env.iter().map(|e| e.name.clone()).collect();
    env.extend(
        tusk_config::patroni::kubernetes_env(cluster)
            .into_iter()
            .filter(|(name, _)| !ours.contains(name))
            .map(|(name, v)| value(&name, v)),
    );
    env
}
