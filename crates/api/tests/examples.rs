//! Every manifest in the repository's `examples/` parses and validates.

use std::path::PathBuf;

fn examples_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples")
}

#[test]
fn every_reference_manifest_validates() {
    let mut n = 0;
    for entry in std::fs::read_dir(examples_dir()).expect("examples/ exists") {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        let yaml = std::fs::read_to_string(&path).unwrap();
        let cluster =
            tusk_api::validate_yaml(&yaml).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(!cluster.instance_sets.is_empty());
        n += 1;
    }
    assert!(n >= 7, "found only {n} examples");
}
