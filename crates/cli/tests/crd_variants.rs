//! The two installs of the CRD: `tusk crd` prints `deploy/crds/` (Kubernetes 1.28 and later)
//! and `tusk crd --without-cel` prints `deploy/crds/without-cel/` (1.20 to 1.27), and the
//! kustomize install for those older servers, `deploy/kustomize-without-cel`, is
//! `deploy/kustomize` with its CRD swapped for the variant and nothing else. Reads files under
//! `deploy/` and runs the built binary.

mod common;

use common::*;
use serde_json::Value;

const CRD_FILE: &str = "postgresclusters.tusk.rs.yaml";

fn read(relative: &str) -> String {
    let path = repo_root().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn yaml(relative: &str) -> Value {
    serde_yaml::from_str(&read(relative)).unwrap_or_else(|e| panic!("{relative}: {e}"))
}

fn tusk_stdout(args: &[&str]) -> String {
    let out = run_tusk(args);
    assert!(
        out.status.success(),
        "tusk {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8")
}

#[test]
fn tusk_crd_prints_each_checked_in_variant() {
    let main = tusk_stdout(&["crd"]);
    let without_cel = tusk_stdout(&["crd", "--without-cel"]);
    assert!(main == read(&format!("deploy/crds/{CRD_FILE}")));
    assert!(without_cel == read(&format!("deploy/crds/without-cel/{CRD_FILE}")));
    assert!(main.contains("x-kubernetes-validations"));
    assert!(!without_cel.contains("x-kubernetes-validations"));
}

/// `kubectl kustomize <dir>` (kubectl is a test dependency, as for render_validates), as
/// documents keyed by kind and name.
fn kustomize(relative: &str) -> std::collections::BTreeMap<(String, String), Value> {
    let out = std::process::Command::new("kubectl")
        .arg("kustomize")
        .arg(repo_root().join(relative))
        .output()
        .unwrap_or_else(|e| panic!("kubectl (for `kubectl kustomize`) failed to run: {e}"));
    assert!(
        out.status.success(),
        "kubectl kustomize {relative} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    documents(&String::from_utf8(out.stdout).expect("UTF-8"))
        .into_iter()
        .map(|doc| ((kind_of(&doc).to_owned(), name_of(&doc).to_owned()), doc))
        .collect()
}

/// `v` with whole floats as integers: kustomize prints the CRD's `maximum: 17.0` as `17`.
fn whole_numbers(v: Value) -> Value {
    match v {
        Value::Number(n) => match n.as_f64() {
            Some(f) if n.is_f64() && f.fract() == 0.0 => Value::from(f as i64),
            _ => Value::Number(n),
        },
        Value::Array(items) => Value::Array(items.into_iter().map(whole_numbers).collect()),
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| (k, whole_numbers(v)))
                .collect(),
        ),
        other => other,
    }
}

/// `kubectl apply --server-side -k deploy/kustomize-without-cel` installs exactly what
/// `deploy/kustomize` does, with the CRD variant in place of the CRD.
#[test]
fn the_install_without_cel_is_the_base_with_the_crd_variant() {
    let base = kustomize("deploy/kustomize");
    let without_cel = kustomize("deploy/kustomize-without-cel");
    let crd_key = (
        "CustomResourceDefinition".to_owned(),
        "postgresclusters.tusk.rs".to_owned(),
    );
    assert_eq!(
        base.keys().collect::<Vec<_>>(),
        without_cel.keys().collect::<Vec<_>>(),
        "the same objects"
    );
    assert!(base.len() >= 8, "{:?}", base.keys());
    let crd = |file: &str| whole_numbers(yaml(&format!("deploy/crds/{file}")));
    for (key, object) in &base {
        if *key == crd_key {
            assert!(
                whole_numbers(object.clone()) == crd(CRD_FILE),
                "deploy/kustomize installs the main CRD"
            );
            assert!(
                whole_numbers(without_cel[key].clone()) == crd(&format!("without-cel/{CRD_FILE}")),
                "deploy/kustomize-without-cel installs the variant without CEL"
            );
        } else {
            assert_eq!(&without_cel[key], object, "{key:?}");
        }
    }
}
