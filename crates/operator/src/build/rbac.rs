//! ServiceAccount, Role and RoleBinding `<c>-instance` that Patroni runs as.
//!
//! Least privilege for Patroni's Kubernetes DCS with `use_endpoints`: it keeps the leader
//! lock and cluster configuration in Endpoints (full read/write and watch), may create the
//! Service of its scope if missing, and labels its own pod with its role (patch/update on
//! pods; list/watch to see the other members). Nothing outside the cluster's namespace. Pure.

use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use tusk_api::naming::cluster_labels;
use tusk_api::ValidatedCluster;

use super::meta::object_meta;

/// What Patroni may do, as `(resource, verbs)` in the core API group.
const PATRONI_RULES: &[(&str, &[&str])] = &[
    (
        "endpoints",
        &[
            "create",
            "delete",
            "deletecollection",
            "get",
            "list",
            "patch",
            "update",
            "watch",
        ],
    ),
    ("pods", &["get", "list", "patch", "update", "watch"]),
    ("services", &["create"]),
];

pub fn instance_service_account(cluster: &ValidatedCluster) -> ServiceAccount {
    ServiceAccount {
        metadata: object_meta(
            cluster,
            cluster.names.instance_rbac(),
            &cluster.metadata,
            cluster_labels(cluster.name()),
        ),
        // Patroni talks to the API server with this account's token.
        automount_service_account_token: Some(true),
        ..ServiceAccount::default()
    }
}

pub fn instance_role(cluster: &ValidatedCluster) -> Role {
    Role {
        metadata: object_meta(
            cluster,
            cluster.names.instance_rbac(),
            &cluster.metadata,
            cluster_labels(cluster.name()),
        ),
        rules: Some(core_rules(PATRONI_RULES)),
    }
}

pub fn instance_role_binding(cluster: &ValidatedCluster) -> RoleBinding {
    let name = cluster.names.instance_rbac();
    let metadata = object_meta(
        cluster,
        name.clone(),
        &cluster.metadata,
        cluster_labels(cluster.name()),
    );
    binding_to_own_account(cluster, metadata, name)
}

/// Rules on core-group resources from `(resource, verbs)` pairs.
pub(super) fn core_rules(rules: &[(&str, &[&str])]) -> Vec<PolicyRule> {
    rules
        .iter()
        .map(|(resource, verbs)| PolicyRule {
            api_groups: Some(vec![String::new()]),
            resources: Some(vec![(*resource).to_owned()]),
            verbs: verbs.iter().map(|v| (*v).to_owned()).collect(),
            ..PolicyRule::default()
        })
        .collect()
}

/// Binds Role `name` to the ServiceAccount of the same name in the cluster's namespace: each
/// RBAC family (instances, backup jobs) names its account, Role and binding alike.
pub(super) fn binding_to_own_account(
    cluster: &ValidatedCluster,
    metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    name: String,
) -> RoleBinding {
    RoleBinding {
        metadata,
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".to_owned(),
            kind: "Role".to_owned(),
            name: name.clone(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".to_owned(),
            name,
            namespace: Some(cluster.namespace.clone()),
            ..Subject::default()
        }]),
    }
}
