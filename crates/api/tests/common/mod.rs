//! Helpers shared by the API tests: the CRD's schema, a minimal valid manifest, the reference
//! manifests, and the two client-side checks an API server would run on a manifest (its OpenAPI
//! keywords via the `jsonschema` crate, its CEL rules via kube's `cel` feature).

#![allow(dead_code)] // each test binary uses a different part

use std::path::PathBuf;

use kube::CustomResourceExt;
use serde_json::{json, Value};
use tusk_api::PostgresCluster;

/// `openAPIV3Schema` of the generated CRD, as JSON.
pub fn crd_schema() -> Value {
    let crd = PostgresCluster::crd();
    let schema = crd.spec.versions[0]
        .schema
        .as_ref()
        .and_then(|s| s.open_api_v3_schema.as_ref())
        .expect("the CRD has a schema");
    serde_json::to_value(schema).unwrap()
}

/// The smallest valid cluster: one instance set, no backups.
pub fn minimal() -> Value {
    json!({
        "apiVersion": "tusk.rs/v1beta1",
        "kind": "PostgresCluster",
        "metadata": {"name": "hippo", "namespace": "tusk"},
        "spec": {
            "postgresVersion": 15,
            "instances": [{"name": "instance1", "dataVolumeClaimSpec": volume()}],
        }
    })
}

/// `minimal()` with one volume repo `repo1`.
pub fn with_repo1() -> Value {
    let mut m = minimal();
    m["spec"]["backups"] = json!({"pgbackrest": {"repos": [{"name": "repo1", "volume": {"volumeClaimSpec": volume()}}]}});
    m
}

pub fn volume() -> Value {
    json!({"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}})
}

/// Every manifest in the repository's `examples/`, with its file name.
pub fn examples() -> Vec<(String, Value)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("examples/ exists") {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let text = std::fs::read_to_string(&path).unwrap();
            let value: Value = serde_yaml::from_str(&text).unwrap();
            out.push((
                path.file_name().unwrap().to_string_lossy().into_owned(),
                value,
            ));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(out.len() >= 7, "found only {} examples", out.len());
    out
}

/// A failed check: where (dotted path, as the API server reports it) and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    pub path: String,
    pub message: String,
}

/// The CEL rules' verdict on `object` (creation), or on `object` replacing `old` (update).
pub fn cel_failures(schema: &Value, object: &Value, old: Option<&Value>) -> Vec<Failure> {
    match kube::core::cel::Validator::new().validate(schema, object, old) {
        Ok(()) => Vec::new(),
        Err(errors) => errors
            .iter()
            .map(|e| Failure {
                // A rule's fieldPath at the root starts with '.'; the API server drops it.
                path: e.field_path.trim_start_matches('.').to_owned(),
                message: e.message.clone(),
            })
            .collect(),
    }
}

/// The OpenAPI keywords' verdict (types, required, patterns, bounds, enums) on `object`.
pub fn schema_failures(schema: &Value, object: &Value) -> Vec<Failure> {
    let validator = jsonschema::validator_for(schema).expect("the CRD schema compiles");
    validator
        .iter_errors(object)
        .map(|e| Failure {
            path: e
                .instance_path()
                .to_string()
                .trim_start_matches('/')
                .replace('/', "."),
            message: e.to_string(),
        })
        .collect()
}
