//! Object metadata every built object shares: namespace, labels, annotations and the owner
//! reference to the `PostgresCluster`.
//!
//! Precedence of labels, lowest first: the user's metadata (`spec.metadata`, then the set's or
//! the Service's), then Tusk's own labels. Tusk's labels win because selectors, orphan
//! cleanup and Patroni's member discovery depend on them; a user label must not be able to
//! detach an object from its cluster. Pure; touches nothing but the values it returns.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use tusk_api::model::MetadataSettings;
use tusk_api::ValidatedCluster;

/// API version and kind of the owner of every object.
pub const OWNER_API_VERSION: &str = "tusk.rs/v1beta1";
pub const OWNER_KIND: &str = "PostgresCluster";

/// Metadata of an object named `name` in the cluster's namespace.
///
/// `user` is the metadata the spec asks for on this object (already merged by `validate`
/// where it stacks, e.g. set metadata over `spec.metadata`); `tusk_labels` are the labels
/// Tusk needs and always win.
pub fn object_meta(
    cluster: &ValidatedCluster,
    name: impl Into<String>,
    user: &MetadataSettings,
    tusk_labels: BTreeMap<String, String>,
) -> ObjectMeta {
    let mut labels = user.labels.clone();
    labels.extend(tusk_labels);
    ObjectMeta {
        name: Some(name.into()),
        namespace: Some(cluster.namespace.clone()),
        labels: Some(labels),
        annotations: non_empty(user.annotations.clone()),
        owner_references: owner_reference(cluster).map(|o| vec![o]),
        ..ObjectMeta::default()
    }
}

/// The cluster as controller owner, when the cluster came from the API server. `tusk render`
/// of a file has no UID, and an owner reference without one would be rejected.
pub fn owner_reference(cluster: &ValidatedCluster) -> Option<OwnerReference> {
    cluster.uid.as_ref().map(|uid| OwnerReference {
        api_version: OWNER_API_VERSION.to_owned(),
        kind: OWNER_KIND.to_owned(),
        name: cluster.name().to_owned(),
        uid: uid.clone(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    })
}

/// `None` for an empty map, so the output has no `annotations: {}` noise.
pub fn non_empty(map: BTreeMap<String, String>) -> Option<BTreeMap<String, String>> {
    (!map.is_empty()).then_some(map)
}

/// `None` for an empty list (same reason as [`non_empty`]).
pub fn non_empty_vec<T>(list: Vec<T>) -> Option<Vec<T>> {
    (!list.is_empty()).then_some(list)
}

/// A label selector map of `pairs`.
pub fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}
