//! ConfigMap `<c>-config` holding the cluster-wide `patroni.yaml`, and the hash of it that
//! instance pod templates carry.
//!
//! The file itself is rendered by `tusk_config::patroni` (shared with `tusk local`); this
//! module only wraps it. Pure.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use tusk_api::naming::cluster_labels;
use tusk_api::ValidatedCluster;
use tusk_config::patroni::{cluster_yaml, Dcs};

use super::meta::object_meta;

/// Key of the file in the ConfigMap; the mounted file is `PATRONI_CONFIG_DIR/<key>`.
pub const PATRONI_CONFIG_KEY: &str = "patroni.yaml";

/// The Patroni configuration for the operator's DCS (Kubernetes, in the cluster's namespace).
pub fn patroni_yaml(cluster: &ValidatedCluster) -> String {
    cluster_yaml(
        cluster,
        &Dcs::Kubernetes {
            namespace: cluster.namespace.clone(),
        },
    )
}

pub fn patroni_config_map(cluster: &ValidatedCluster, patroni_yaml: &str) -> ConfigMap {
    ConfigMap {
        metadata: object_meta(
            cluster,
            cluster.names.patroni_config_map(),
            &cluster.metadata,
            cluster_labels(cluster.name()),
        ),
        data: Some(BTreeMap::from([(
            PATRONI_CONFIG_KEY.to_owned(),
            patroni_yaml.to_owned(),
        )])),
        ..ConfigMap::default()
    }
}

/// SHA-256 (hex) of the rendered configuration. A mounted ConfigMap changes under a running
/// pod without the StatefulSet noticing; putting this hash on the pod template makes a
/// configuration change a template change, so the controller sees the instance as outdated
/// and rolls it in its own order. SHA-256 rather than `std`'s hasher because the value must
/// not change between operator builds, or every upgrade would restart every database.
pub fn config_hash(patroni_yaml: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, patroni_yaml.as_bytes());
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_hash_is_sha256_hex() {
        // Known SHA-256 of the empty string: a different algorithm would fail here.
        assert_eq!(
            config_hash(""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_ne!(config_hash("a: 1\n"), config_hash("a: 2\n"));
    }
}
