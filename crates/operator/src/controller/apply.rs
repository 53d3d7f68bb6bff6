//! Writes the built objects with server-side apply (field manager `tusk`, forced) and deletes
//! orphans: labelled objects of the managed kinds, owned by the cluster, that the build no
//! longer returns. PersistentVolumeClaims are never deleted (scaling down keeps data).
//!
//! An object is sent only when it differs from what exists: the live object must contain every
//! field Tusk sets with the same value (defaulted extras are ignored, so API-server defaults
//! never cause a write) and carry the hash of the last applied form (so a field Tusk stopped
//! setting is removed by the next apply). The operator's version annotation is written with
//! every apply but never compared, so upgrading the operator alone writes nothing. Objects of
//! kinds the server does not serve are skipped and returned. Whether an apply created, updated
//! or left an object unchanged is told from its resourceVersion before and after. Holds the
//! client.

use std::collections::BTreeSet;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use k8s_openapi::Resource as _;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams};
use kube::core::ApiResource;
use kube::Client;
use serde_json::Value;
use tusk_api::naming;

use super::dereference::{ObjectKey, Observed};
use super::error::ApplyError;
use crate::build::Managed;
use crate::discovery::ServedKinds;

/// What an apply did to one object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    Created,
    Updated,
    Deleted,
}

/// One object that changed, for Events and logs (never its content).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Changed {
    pub change: Change,
    pub kind: String,
    pub api_version: String,
    pub name: String,
}

/// What one apply did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Applied {
    /// Objects that changed, in order.
    pub changed: Vec<Changed>,
    /// `(kind, name)` of built objects whose kind the server does not serve: not written.
    pub not_served: Vec<ObjectKey>,
}

/// Applies `desired` (of the kinds in `served`) and deletes orphans (and
/// `removed_instances`' StatefulSets).
pub async fn apply(
    client: &Client,
    namespace: &str,
    owner: Option<&OwnerReference>,
    desired: &[Managed],
    removed_instances: &[String],
    observed: &Observed,
    served: &ServedKinds,
) -> Result<Applied, ApplyError> {
    let mut changed = Vec::new();
    let mut not_served = Vec::new();
    let mut wanted: BTreeSet<ObjectKey> = BTreeSet::new();
    let version = crate::version();
    for object in desired {
        let kind = object.kind().to_owned();
        let name = object.name().to_owned();
        let resource = object.api_resource();
        if !served.serves(&resource) {
            not_served.push((kind, name));
            continue;
        }
        wanted.insert((kind.clone(), name.clone()));
        let mut body = applied_form(object, namespace, owner);
        let before = observed.objects.get(&(kind.clone(), name.clone()));
        if let Some((listed_as, live)) = before {
            if is_subset(&body, &live_json(listed_as, live)) {
                continue;
            }
        }
        body["metadata"]["annotations"][naming::ANNOTATION_OPERATOR_VERSION] =
            Value::String(version.clone());
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &resource);
        let params = PatchParams::apply(naming::FIELD_MANAGER).force();
        let after = api
            .patch(&name, &params, &Patch::Apply(&body))
            .await
            .map_err(|source| ApplyError::ApplyObject {
                kind: kind.clone(),
                name: name.clone(),
                source,
            })?;
        let before_version = observed.resource_version(&kind, &name);
        let change = match before_version {
            None => Some(Change::Created),
            Some(v) if Some(v) != after.metadata.resource_version.as_deref() => {
                Some(Change::Updated)
            }
            Some(_) => None,
        };
        if let Some(change) = change {
            changed.push(Changed {
                change,
                kind,
                api_version: resource.api_version.clone(),
                name,
            });
        }
    }

    for ((kind, name), (resource, live)) in &observed.objects {
        if wanted.contains(&(kind.clone(), name.clone())) {
            continue;
        }
        let removed_instance =
            kind == StatefulSet::KIND && removed_instances.iter().any(|r| r == name);
        if !removed_instance && !is_orphan(kind, live, owner) {
            continue;
        }
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, resource);
        match api.delete(name, &DeleteParams::background()).await {
            Ok(_) => changed.push(Changed {
                change: Change::Deleted,
                kind: kind.clone(),
                api_version: resource.api_version.clone(),
                name: name.clone(),
            }),
            // Already gone (e.g. garbage-collected meanwhile): the goal is reached.
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(source) => {
                return Err(ApplyError::DeleteObject {
                    kind: kind.clone(),
                    name: name.clone(),
                    source,
                })
            }
        }
    }
    Ok(Applied {
        changed,
        not_served,
    })
}

/// The live object as JSON, with the `apiVersion` and `kind` it was listed as: a real API
/// server leaves both out of the items of a list, and without them no object would ever
/// match what the build wants (every reconcile would re-apply everything).
fn live_json(listed_as: &ApiResource, live: &DynamicObject) -> Value {
    let mut json = serde_json::to_value(live).unwrap_or_default();
    if let Value::Object(map) = &mut json {
        map.insert(
            "apiVersion".into(),
            Value::String(listed_as.api_version.clone()),
        );
        map.insert("kind".into(), Value::String(listed_as.kind.clone()));
    }
    json
}

/// An object Tusk made for this cluster and no longer wants. Objects that are not owned by
/// the cluster (made by Patroni or by a person, but carrying the label) are left alone, and
/// PVCs are never orphans: they hold the data.
fn is_orphan(kind: &str, live: &DynamicObject, owner: Option<&OwnerReference>) -> bool {
    if kind == PersistentVolumeClaim::KIND {
        return false;
    }
    let Some(owner) = owner else {
        return false;
    };
    live.metadata
        .owner_references
        .iter()
        .flatten()
        .any(|r| r.uid == owner.uid)
}

/// The JSON sent to the API server: namespace, owner reference and applied-hash set.
pub fn applied_form(object: &Managed, namespace: &str, owner: Option<&OwnerReference>) -> Value {
    let mut body = object.to_json();
    let meta = body
        .as_object_mut()
        .expect("objects serialize to JSON objects")
        .entry("metadata")
        .or_insert_with(|| Value::Object(Default::default()));
    meta["namespace"] = Value::String(namespace.to_owned());
    if let Some(owner) = owner {
        let has_owner = object
            .meta()
            .owner_references
            .iter()
            .flatten()
            .any(|r| r.uid == owner.uid);
        if !has_owner {
            let mut refs = object.meta().owner_references.clone().unwrap_or_default();
            refs.push(owner.clone());
            meta["ownerReferences"] = serde_json::to_value(refs).expect("owner refs serialize");
        }
    }
    // Hash before the annotation is added, so the hash describes only what the build chose.
    let hash = format!("{:016x}", fnv1a(body.to_string().as_bytes()));
    let meta = &mut body["metadata"];
    if !meta["annotations"].is_object() {
        meta["annotations"] = Value::Object(Default::default());
    }
    meta["annotations"][naming::ANNOTATION_APPLIED_HASH] = Value::String(hash);
    body
}

/// FNV-1a, 64 bit: stable across Rust releases (unlike `DefaultHasher`), so an operator
/// upgrade does not re-apply every object. Not a security boundary.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Every field of `desired` is in `live` with the same value. Fields only `live` has (server
/// defaults, status, managedFields) do not count; an empty map or list in `desired` matches a
/// missing field, as the API server drops them.
pub fn is_subset(desired: &Value, live: &Value) -> bool {
    match (desired, live) {
        (Value::Object(d), Value::Object(l)) => d.iter().all(|(k, v)| match l.get(k) {
            Some(lv) => is_subset(v, lv),
            None => is_empty(v),
        }),
        (Value::Array(d), Value::Array(l)) => {
            d.len() == l.len() && d.iter().zip(l).all(|(dv, lv)| is_subset(dv, lv))
        }
        (d, Value::Null) => is_empty(d),
        (d, l) => d == l,
    }
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Object(m) => m.is_empty(),
        Value::Array(a) => a.is_empty(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn server_defaults_do_not_count_as_changes() {
        let desired = json!({"spec": {"ports": [{"port": 5432}], "selector": {}}});
        let live =
            json!({"spec": {"ports": [{"port": 5432, "protocol": "TCP"}], "type": "ClusterIP"}});
        assert!(is_subset(&desired, &live));
    }

    #[test]
    fn drift_counts_as_a_change() {
        let desired = json!({"spec": {"ports": [{"port": 5432}]}});
        assert!(!is_subset(
            &desired,
            &json!({"spec": {"ports": [{"port": 5433}]}})
        ));
        assert!(!is_subset(&desired, &json!({"spec": {"ports": []}})));
        assert!(!is_subset(&desired, &json!({"spec": {}})));
    }

    #[test]
    fn a_listed_object_without_type_fields_still_matches() {
        use k8s_openapi::api::core::v1::Service;
        // What a real server returns in a list: items without apiVersion and kind.
        let live: DynamicObject = serde_json::from_value(json!({
            "metadata": {"name": "hippo-primary", "annotations": {"tusk.rs/operator-version": "0.0.1"}},
            "spec": {"ports": [{"port": 5432, "protocol": "TCP"}], "type": "ClusterIP"}
        }))
        .unwrap();
        let desired = json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "hippo-primary"},
            "spec": {"ports": [{"port": 5432}]}
        });
        let listed_as = ApiResource::erase::<Service>(&());
        assert!(is_subset(&desired, &live_json(&listed_as, &live)));
        let secret = ApiResource::erase::<k8s_openapi::api::core::v1::Secret>(&());
        assert!(!is_subset(&desired, &live_json(&secret, &live)));
    }

    #[test]
    fn hash_is_stable_and_sensitive() {
        assert_eq!(fnv1a(b"a"), fnv1a(b"a"));
        assert_ne!(fnv1a(b"a"), fnv1a(b"b"));
        // The published FNV-1a test vector for "a".
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
    }
}
