//! The `fencer` container of every instance pod: `tusk fence` from the operator's own image
//! (`RELATED_IMAGE_FENCER`), which stops the member's PostgreSQL when it serves as a primary
//! past its leader lease (a frozen or starved Patroni; the rule is `tusk_fence::policy`).
//!
//! It reads the lease from the Endpoints named after Patroni's scope with the pod's service
//! account (the instance Role already grants Patroni `get` on them), asks Patroni on the
//! pod's loopback, and kills the postmaster through the pod's shared process namespace
//! (`shareProcessNamespace`, which the reload sidecars need too), as the same UID 26. It sees
//! the data directory read-only, for `postmaster.pid` and the recovery signal files.

use k8s_openapi::api::core::v1::{Container, ResourceRequirements, VolumeMount};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use tusk_api::naming;
use tusk_api::ValidatedCluster;
use tusk_config::paths;

use super::instance::env_from_field;
use super::pod_security::restricted_container_security_context;
use super::volumes::VOLUME_PGDATA;

pub fn fencer_container(cluster: &ValidatedCluster, image: &str) -> Container {
    let arg = |name: &str, value: String| [format!("--{name}"), value];
    let mut command = vec!["tusk".to_owned(), "fence".to_owned()];
    for pair in [
        arg("scope", cluster.names.patroni_scope()),
        arg("data-dir", paths::pgdata(cluster.postgres_version)),
        arg("patroni-port", cluster.patroni.port.to_string()),
        arg("ttl", cluster.patroni.leader_lease_seconds.to_string()),
        arg("loop-wait", cluster.patroni.sync_period_seconds.to_string()),
    ] {
        command.extend(pair);
    }
    let quantity = |q: &str| Quantity(q.to_owned());
    Container {
        name: naming::CONTAINER_FENCER.to_owned(),
        image: Some(image.to_owned()),
        image_pull_policy: cluster.image_pull_policy.map(|p| p.as_str().to_owned()),
        command: Some(command),
        env: Some(vec![
            env_from_field("PATRONI_NAME", "metadata.name"),
            env_from_field("PATRONI_KUBERNETES_NAMESPACE", "metadata.namespace"),
        ]),
        // A poll every 250 ms of one small GET: a few millicores. The request keeps it
        // scheduled on a busy node, where a starved fencer would be no guard.
        resources: Some(ResourceRequirements {
            requests: Some(
                [
                    ("cpu".to_owned(), quantity("10m")),
                    ("memory".to_owned(), quantity("16Mi")),
                ]
                .into(),
            ),
            limits: Some([("memory".to_owned(), quantity("64Mi"))].into()),
            ..ResourceRequirements::default()
        }),
        security_context: Some(restricted_container_security_context()),
        volume_mounts: Some(vec![VolumeMount {
            name: VOLUME_PGDATA.to_owned(),
            mount_path: paths::PGDATA_VOLUME.to_owned(),
            read_only: Some(true),
            ..VolumeMount::default()
        }]),
        ..Container::default()
    }
}
