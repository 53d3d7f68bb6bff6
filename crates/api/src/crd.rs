//! The CustomResourceDefinition as YAML, as `tusk crd` prints it and `deploy/crds/` holds it,
//! in two variants made from the same Rust types:
//!
//! - [`crd_yaml`], for Kubernetes 1.28 and later: the schema with its CEL rules
//!   (`x-kubernetes-validations`, with `fieldPath`, which servers before 1.28 do not know).
//! - [`crd_yaml_without_cel`], for Kubernetes 1.20 to 1.27: the same schema without the CEL
//!   rules (a server without them refuses the field under server-side apply) and without the
//!   literal `null` kube-rs lists in the `enum` of an optional enum field beside
//!   `nullable: true` (kube-apiserver before 1.20.11 refuses any CRD holding one:
//!   kubernetes/kubernetes#104969). Nothing is lost but the API server's early refusal: the
//!   operator's own `validate` enforces every CEL rule's meaning and reports a violation in
//!   the `Degraded` condition and a Warning Event, naming the field.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSONSchemaProps, JSONSchemaPropsOrArray, JSONSchemaPropsOrBool,
};
use kube::CustomResourceExt;

use crate::types::PostgresCluster;

/// The `postgresclusters.tusk.rs` CRD, YAML (Kubernetes 1.28 and later).
pub fn crd_yaml() -> String {
    let crd = PostgresCluster::crd();
    serde_yaml::to_string(&crd).expect("a CRD always serializes")
}

/// The same CRD for servers without CEL validation rules (Kubernetes 1.20 to 1.27), YAML.
pub fn crd_yaml_without_cel() -> String {
    let crd = without_cel(PostgresCluster::crd());
    serde_yaml::to_string(&crd).expect("a CRD always serializes")
}

/// `crd` without CEL rules and without `null` enum values, in every version's schema.
pub fn without_cel(mut crd: CustomResourceDefinition) -> CustomResourceDefinition {
    for version in &mut crd.spec.versions {
        if let Some(schema) = version
            .schema
            .as_mut()
            .and_then(|s| s.open_api_v3_schema.as_mut())
        {
            strip(schema);
        }
    }
    crd
}

fn strip(schema: &mut JSONSchemaProps) {
    schema.x_kubernetes_validations = None;
    if let Some(values) = schema.enum_.as_mut() {
        values.retain(|v| !v.0.is_null());
    }
    for child in schema.properties.iter_mut().flat_map(|p| p.values_mut()) {
        strip(child);
    }
    match schema.items.as_mut() {
        Some(JSONSchemaPropsOrArray::Schema(item)) => strip(item),
        Some(JSONSchemaPropsOrArray::Schemas(items)) => items.iter_mut().for_each(strip),
        None => {}
    }
    if let Some(JSONSchemaPropsOrBool::Schema(extra)) = schema.additional_properties.as_mut() {
        strip(extra);
    }
    for list in [&mut schema.all_of, &mut schema.any_of, &mut schema.one_of] {
        list.iter_mut().flatten().for_each(strip);
    }
    if let Some(not) = schema.not.as_mut() {
        strip(not);
    }
}
