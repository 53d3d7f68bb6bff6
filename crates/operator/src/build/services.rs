//! The cluster's Services: `<c>-primary`, `<c>-replicas`, `<c>-ha`, `<c>-ha-config` and
//! `<c>-pods`.
//!
//! Who decides where traffic goes: Patroni labels the pod it runs in with `tusk.rs/role`
//! (`master` on the leader, `replica` otherwise), so `-primary` and `-replicas` follow
//! failovers by selector. `-ha` and `-ha-config` have no selector because Patroni's Kubernetes
//! DCS writes their Endpoints itself (leader lock and cluster configuration); Tusk creates the
//! Services so those Endpoints are owned by the cluster and garbage-collected with it.
//! `-pods` is headless and publishes not-ready pods so members find each other while they
//! bootstrap. Pure.

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tusk_api::model::ServiceSettings;
use tusk_api::naming::{self, cluster_labels};
use tusk_api::ValidatedCluster;

use super::meta::{labels, object_meta};

/// Name of the PostgreSQL port on containers, Services and Patroni's Endpoints. Patroni must
/// write the same name into the `-ha` Endpoints (`PATRONI_KUBERNETES_PORTS`), or the Service
/// would not route to them.
pub const POSTGRES_PORT_NAME: &str = "postgres";
/// Name of Patroni's REST API port on the database container.
pub const PATRONI_PORT_NAME: &str = "patroni";

/// Every Service of the cluster, sorted by name.
pub fn cluster_services(cluster: &ValidatedCluster) -> Vec<Service> {
    let mut services = vec![
        primary_service(cluster),
        replica_service(cluster),
        patroni_leader_service(cluster),
        patroni_config_service(cluster),
        pods_service(cluster),
    ];
    services.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    services
}

/// `<c>-primary`: the leader, as labelled by Patroni.
pub fn primary_service(cluster: &ValidatedCluster) -> Service {
    role_service(
        cluster,
        cluster.names.primary_service(),
        naming::ROLE_MASTER,
        &cluster.primary_service,
    )
}

/// `<c>-replicas`: every streaming replica, as labelled by Patroni.
pub fn replica_service(cluster: &ValidatedCluster) -> Service {
    role_service(
        cluster,
        cluster.names.replica_service(),
        naming::ROLE_REPLICA,
        &cluster.replica_service,
    )
}

fn role_service(
    cluster: &ValidatedCluster,
    name: String,
    role: &str,
    settings: &ServiceSettings,
) -> Service {
    let name_of_cluster = cluster.name();
    Service {
        // Service metadata overlays spec.metadata: the reference docs promise that labels
        // and annotations given on the Service win over those configured elsewhere.
        metadata: object_meta(
            cluster,
            name,
            &cluster.metadata.merged(&settings.metadata),
            cluster_labels(name_of_cluster),
        ),
        spec: Some(ServiceSpec {
            type_: Some(settings.type_.as_str().to_owned()),
            selector: Some(labels(&[
                (naming::LABEL_CLUSTER, name_of_cluster),
                (naming::LABEL_ROLE, role),
            ])),
            ports: Some(vec![ServicePort {
                name: Some(POSTGRES_PORT_NAME.to_owned()),
                port: cluster.port.into(),
                protocol: Some("TCP".to_owned()),
                target_port: Some(IntOrString::String(POSTGRES_PORT_NAME.to_owned())),
                node_port: settings.node_port,
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

/// `<c>-ha`: Patroni's scope. No selector: Patroni keeps its Endpoints pointing at the leader
/// (with `use_endpoints`), which is also the leader lock.
pub fn patroni_leader_service(cluster: &ValidatedCluster) -> Service {
    Service {
        metadata: object_meta(
            cluster,
            cluster.names.patroni_scope(),
            &cluster.metadata,
            cluster_labels(cluster.name()),
        ),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".to_owned()),
            ports: Some(vec![ServicePort {
                name: Some(POSTGRES_PORT_NAME.to_owned()),
                port: cluster.port.into(),
                protocol: Some("TCP".to_owned()),
                // Without a selector the Endpoints carry the port; the target only documents it.
                target_port: Some(IntOrString::Int(cluster.port.into())),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

/// `<c>-ha-config`: headless, no selector, no ports; it exists only so the Endpoints Patroni
/// keeps its dynamic configuration in have an owned Service beside them.
pub fn patroni_config_service(cluster: &ValidatedCluster) -> Service {
    Service {
        metadata: object_meta(
            cluster,
            cluster.names.patroni_config_service(),
            &cluster.metadata,
            cluster_labels(cluster.name()),
        ),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".to_owned()),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

/// `<c>-pods`: headless; gives each instance pod the stable DNS name
/// `<instance>-0.<c>-pods.<ns>.svc` that Patroni advertises and certificates name (and the
/// repo host `<c>-repo-host-0.<c>-pods.<ns>.svc`).
pub fn pods_service(cluster: &ValidatedCluster) -> Service {
    Service {
        metadata: object_meta(
            cluster,
            cluster.names.pods_service(),
            &cluster.metadata,
            cluster_labels(cluster.name()),
        ),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".to_owned()),
            // Replicas must resolve a leader that is still starting, and vice versa.
            publish_not_ready_addresses: Some(true),
            // Every pod of the cluster, not only instances: the pgBackRest repo host is
            // reached as `<c>-repo-host-0.<c>-pods.<ns>.svc`, a name the server certificate's
            // `*.<c>-pods` SANs cover.
            selector: Some(labels(&[(naming::LABEL_CLUSTER, cluster.name())])),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}
