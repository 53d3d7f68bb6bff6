//! The checked-in CRDs are exactly what the Rust types generate: `deploy/crds/` (Kubernetes
//! 1.28 and later, with CEL rules) and `deploy/crds/without-cel/` (Kubernetes 1.20 to 1.27).
//! Regenerate both with:
//!
//! ```text
//! TUSK_UPDATE_CRDS=1 cargo test -p tusk-api --test crd_drift
//! ```

use std::path::PathBuf;

use serde_json::Value;

const FILE: &str = "postgresclusters.tusk.rs.yaml";

fn crds_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../deploy/crds")
}

fn assert_checked_in(path: PathBuf, generated: &str) {
    if std::env::var_os("TUSK_UPDATE_CRDS").is_some() {
        std::fs::write(&path, generated).expect("write the CRD");
        return;
    }
    let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        on_disk == generated,
        "{} is out of date with crates/api/src/types.rs; regenerate it with\n\n    \
         TUSK_UPDATE_CRDS=1 cargo test -p tusk-api --test crd_drift\n\nand commit the result",
        path.display()
    );
}

#[test]
fn checked_in_crd_matches_the_types() {
    assert_checked_in(crds_dir().join(FILE), &tusk_api::crd::crd_yaml());
}

#[test]
fn checked_in_crd_without_cel_matches_the_types() {
    assert_checked_in(
        crds_dir().join("without-cel").join(FILE),
        &tusk_api::crd::crd_yaml_without_cel(),
    );
}

/// Counts `x-kubernetes-validations` lists and `null` enum values anywhere in `v`.
fn cel_rules_and_null_enums(v: &Value) -> (usize, usize) {
    match v {
        Value::Object(map) => {
            let rules = usize::from(map.contains_key("x-kubernetes-validations"));
            let nulls = map
                .get("enum")
                .and_then(Value::as_array)
                .map_or(0, |values| values.iter().filter(|v| v.is_null()).count());
            map.values()
                .map(cel_rules_and_null_enums)
                .fold((rules, nulls), |(r, n), (r2, n2)| (r + r2, n + n2))
        }
        Value::Array(items) => items
            .iter()
            .map(cel_rules_and_null_enums)
            .fold((0, 0), |(r, n), (r2, n2)| (r + r2, n + n2)),
        _ => (0, 0),
    }
}

/// `v` without what a server without CEL refuses, by a walk independent of the crate's own.
fn strip(v: &mut Value) {
    match v {
        Value::Object(map) => {
            map.remove("x-kubernetes-validations");
            if let Some(Value::Array(values)) = map.get_mut("enum") {
                values.retain(|v| !v.is_null());
            }
            map.values_mut().for_each(strip);
        }
        Value::Array(items) => items.iter_mut().for_each(strip),
        _ => {}
    }
}

/// The variant for Kubernetes 1.20 to 1.27 is the main CRD minus exactly two things: the CEL
/// rules (server-side apply refuses `x-kubernetes-validations` before CEL existed, and
/// `fieldPath` in them before 1.28) and the literal `null` enum values (kube-apiserver before
/// 1.20.11 refuses them, kubernetes/kubernetes#104969). Everything else (every property,
/// type, bound, pattern, default, printer column) is the same.
#[test]
fn the_variant_without_cel_is_the_crd_minus_its_cel_rules_and_null_enum_values() {
    let parse = |yaml: &str| -> Value { serde_yaml::from_str(yaml).expect("a CRD is YAML") };
    let main = parse(&tusk_api::crd::crd_yaml());
    let variant = parse(&tusk_api::crd::crd_yaml_without_cel());
    let (rules, nulls) = cel_rules_and_null_enums(&main);
    assert!(
        rules >= 10 && nulls >= 1,
        "the main CRD has {rules} rule lists and {nulls} null enum values"
    );
    assert_eq!(cel_rules_and_null_enums(&variant), (0, 0));
    let mut expected = main;
    strip(&mut expected);
    assert!(
        expected == variant,
        "the variant without CEL differs from the main CRD in more than its CEL rules and null \
         enum values"
    );
    // Optional enums stay optional: `nullable` is kept where `null` was dropped.
    let switchover_type = &variant["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        ["properties"]["spec"]["properties"]["patroni"]["properties"]["switchover"]["properties"]
        ["type"];
    assert_eq!(switchover_type["nullable"], Value::Bool(true));
    assert_eq!(
        switchover_type["enum"],
        serde_json::json!(["Switchover", "Failover"])
    );
}
