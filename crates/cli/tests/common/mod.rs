//! Shared by the `tusk` binary's integration tests: where the reference manifests and install
//! manifests are, how to run `tusk render`, and how to split its YAML stream. Reads files and
//! runs the built binary; writes nothing.

#![allow(dead_code)] // each test crate uses a different subset

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The repository root (the workspace).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The repository's `examples/`: the reference manifests users copy.
pub fn reference_examples_dir() -> PathBuf {
    repo_root().join("examples")
}

/// Every `*.yaml` in `dir`, sorted, so failures name files in a stable order.
pub fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

/// The reference manifests (`NN-name.yaml`; `hippo-ha.yaml` is the README's copy of
/// `02-hippo-ha.yaml`); at least the seven seeds must be there.
pub fn reference_manifests() -> Vec<PathBuf> {
    let files: Vec<PathBuf> = yaml_files(&reference_examples_dir())
        .into_iter()
        .filter(|p| is_numbered(p))
        .collect();
    assert!(
        files.len() >= 7,
        "expected the 7 reference manifests in {}, found {}",
        reference_examples_dir().display(),
        files.len()
    );
    files
}

/// `NN-name.yaml`: a reference manifest rather than a copy of one.
pub fn is_numbered(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with(|c: char| c.is_ascii_digit()))
}

/// Runs the real `tusk` binary with `args`.
pub fn run_tusk(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tusk"))
        .args(args)
        .output()
        .expect("the tusk binary runs")
}

/// `tusk render -f manifest`; panics with stderr if it fails.
pub fn render(manifest: &Path) -> String {
    let out = run_tusk(&["render", "-f", manifest.to_str().expect("UTF-8 path")]);
    assert!(
        out.status.success(),
        "tusk render -f {} failed ({}):\n{}",
        manifest.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("render prints UTF-8")
}

/// The documents of a YAML stream as JSON values, empty documents dropped.
pub fn documents(stream: &str) -> Vec<serde_json::Value> {
    // serde through k8s-openapi: the cli crate has no direct serde dependency.
    use k8s_openapi::serde::Deserialize;
    serde_yaml::Deserializer::from_str(stream)
        .map(|doc| serde_json::Value::deserialize(doc).expect("the stream is valid YAML"))
        .filter(|doc| !doc.is_null())
        .collect()
}

pub fn kind_of(doc: &serde_json::Value) -> &str {
    doc["kind"].as_str().unwrap_or_default()
}

pub fn name_of(doc: &serde_json::Value) -> &str {
    doc["metadata"]["name"].as_str().unwrap_or_default()
}
