//! `tusk render` on every reference manifest produces objects that the official Kubernetes
//! schemas accept (`kubernetes-validate`, PyPI, strict mode) and carries no real secret; the
//! install manifests under `deploy/kustomize` pass the same schemas; an invalid manifest is
//! refused with the field path. Runs the built binary, `kubernetes-validate` and `kubectl
//! kustomize`; writes only temporary files.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use k8s_openapi::api::core::v1::Secret;
use tusk_operator::material::PLACEHOLDER;

/// The Kubernetes version the workspace is built against (k8s-openapi feature `v1_34`).
const KUBERNETES_VERSION: &str = "1.34.0";

/// `.venv/bin/kubernetes-validate` (installed by `scripts/setup-test-deps`), else PATH.
fn kubernetes_validate() -> PathBuf {
    let in_venv = repo_root().join(".venv/bin/kubernetes-validate");
    if in_venv.is_file() {
        return in_venv;
    }
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("kubernetes-validate"))
            .find(|p| p.is_file())
    });
    on_path.unwrap_or_else(|| {
        panic!(
            "kubernetes-validate is not installed: run scripts/setup-test-deps \
             (installs it into .venv/), or put it on PATH"
        )
    })
}

/// Validates the streams in `files` in one run; every document must pass, and the tool must
/// report each one (so a silently skipped document cannot pass).
fn assert_schemas_accept(files: &[(PathBuf, usize)]) {
    let out = Command::new(kubernetes_validate())
        .args(["-k", KUBERNETES_VERSION, "--strict"])
        .args(files.iter().map(|(f, _)| f))
        .output()
        .expect("kubernetes-validate runs");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let complaints: Vec<&str> = report
        .lines()
        .filter(|l| l.starts_with("ERROR") || l.starts_with("WARN"))
        .collect();
    assert!(
        out.status.success() && complaints.is_empty(),
        "kubernetes-validate {KUBERNETES_VERSION} --strict rejected objects:\n{report}"
    );
    for (file, expected) in files {
        let passed = report
            .lines()
            .filter(|l| l.starts_with(&format!("INFO {} passed", file.display())))
            .count();
        assert_eq!(
            passed,
            *expected,
            "{}: kubernetes-validate passed {passed} of {expected} documents:\n{report}",
            file.display()
        );
    }
}

/// Writes `docs` into `dir/name` as a stream of JSON documents (JSON is YAML, and quoting every
/// string keeps the validator's YAML 1.1 parser from reading values as dates or booleans; that
/// ambiguity is tested separately); returns the path and the document count.
fn write_stream(dir: &Path, name: &str, docs: &[serde_json::Value]) -> (PathBuf, usize) {
    let mut stream = String::new();
    for doc in docs {
        stream.push_str("---\n");
        stream.push_str(&serde_json::to_string_pretty(doc).expect("JSON serializes"));
        stream.push('\n');
    }
    let path = dir.join(name);
    std::fs::write(&path, stream).expect("write the stream");
    (path, docs.len())
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Every way `secret` could carry real material instead of the render placeholder.
///
/// Rendered Secrets legitimately hold non-secret values (user, host, port, dbname), so the
/// check is by shape: no PEM block at all, password- and key-named entries equal to the
/// placeholder, and any password inside a connection URI (`user:pass@`, `password=`) decoding
/// to the placeholder.
fn secret_leaks(secret: &Secret) -> Vec<String> {
    let name = secret.metadata.name.as_deref().unwrap_or_default();
    let mut entries: Vec<(String, Vec<u8>)> = Vec::new();
    for (k, v) in secret.data.iter().flatten() {
        entries.push((k.clone(), v.0.clone()));
    }
    for (k, v) in secret.string_data.iter().flatten() {
        entries.push((k.clone(), v.clone().into_bytes()));
    }
    let mut leaks = Vec::new();
    for (key, bytes) in entries {
        let Ok(value) = String::from_utf8(bytes) else {
            leaks.push(format!(
                "{name}/{key}: binary value (placeholders are text)"
            ));
            continue;
        };
        if value.contains("-----BEGIN") {
            leaks.push(format!("{name}/{key}: PEM material"));
        }
        let key_lower = key.to_ascii_lowercase();
        let names_a_secret = key_lower.ends_with("password")
            || key_lower == "key"
            || key_lower.ends_with(".key")
            || key_lower.ends_with("-key");
        if names_a_secret && value != PLACEHOLDER {
            leaks.push(format!("{name}/{key}: not the placeholder"));
        }
        if let Some((_, rest)) = value.split_once("://") {
            let authority = rest.split(['/', '?']).next().unwrap_or_default();
            if let Some((userinfo, _)) = authority.rsplit_once('@') {
                if let Some((_, password)) = userinfo.split_once(':') {
                    if percent_decode(password) != PLACEHOLDER {
                        leaks.push(format!("{name}/{key}: URI password is not the placeholder"));
                    }
                }
            }
        }
        for (i, _) in value.match_indices("password=") {
            let password = value[i + "password=".len()..]
                .split(['&', ';', ' '])
                .next()
                .unwrap_or_default();
            if percent_decode(password) != PLACEHOLDER {
                leaks.push(format!("{name}/{key}: password= is not the placeholder"));
            }
        }
    }
    leaks
}

#[test]
fn every_reference_manifest_renders_objects_without_real_secrets() {
    for manifest in reference_manifests() {
        let docs = documents(&render(&manifest));
        assert!(
            !docs.is_empty(),
            "tusk render -f {} printed no objects",
            manifest.display()
        );
        for doc in docs.iter().filter(|d| kind_of(d) == "Secret") {
            let secret: Secret = serde_json::from_value(doc.clone())
                .unwrap_or_else(|e| panic!("{}: Secret does not parse: {e}", manifest.display()));
            let leaks = secret_leaks(&secret);
            assert!(leaks.is_empty(), "{}: {leaks:#?}", manifest.display());
        }
    }
}

#[test]
fn rendered_objects_pass_the_official_kubernetes_schemas() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut streams = Vec::new();
    for manifest in reference_manifests() {
        // The PostgresCluster itself is the only kind without an official schema; its own
        // schema is the CRD, checked by the api crate.
        let docs: Vec<serde_json::Value> = documents(&render(&manifest))
            .into_iter()
            .filter(|d| kind_of(d) != "PostgresCluster")
            .collect();
        let file_name = manifest.file_name().expect("a file name");
        streams.push(write_stream(
            dir.path(),
            &file_name.to_string_lossy(),
            &docs,
        ));
    }
    assert_schemas_accept(&streams);
}

/// The one-shot backup and restore Jobs (created by the controller, not `tusk render`), as
/// their golden files in the operator's tests hold them.
#[test]
fn backup_and_restore_jobs_pass_the_official_kubernetes_schemas() {
    let jobs_dir = repo_root().join("crates/operator/tests/fixtures/build/jobs");
    let dir = tempfile::tempdir().expect("temp dir");
    let mut streams = Vec::new();
    for entry in std::fs::read_dir(&jobs_dir).expect("job fixtures exist") {
        let path = entry.expect("a directory entry").path();
        let docs = documents(&std::fs::read_to_string(&path).expect("fixture reads"));
        assert!(!docs.is_empty(), "{} holds no object", path.display());
        let file_name = path.file_name().expect("a file name");
        streams.push(write_stream(
            dir.path(),
            &file_name.to_string_lossy(),
            &docs,
        ));
    }
    assert!(
        streams.len() >= 3,
        "found only {} job fixtures",
        streams.len()
    );
    assert_schemas_accept(&streams);
}

#[test]
fn kustomize_install_passes_the_official_kubernetes_schemas() {
    let kustomize_dir = repo_root().join("deploy/kustomize");
    let out = Command::new("kubectl")
        .arg("kustomize")
        .arg(&kustomize_dir)
        .output()
        .unwrap_or_else(|e| {
            panic!("kubectl (for `kubectl kustomize`) is needed by this test and failed: {e}")
        });
    assert!(
        out.status.success(),
        "kubectl kustomize {} failed:\n{}",
        kustomize_dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let docs = documents(&String::from_utf8(out.stdout).expect("UTF-8"));
    let kinds: Vec<&str> = docs.iter().map(kind_of).collect();
    for expected in [
        "Namespace",
        "CustomResourceDefinition",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "Deployment",
    ] {
        assert!(kinds.contains(&expected), "no {expected} in {kinds:?}");
    }
    // Namespaced objects land in the operator's namespace.
    for doc in &docs {
        let namespaced = !matches!(
            kind_of(doc),
            "Namespace" | "CustomResourceDefinition" | "ClusterRole" | "ClusterRoleBinding"
        );
        if namespaced {
            assert_eq!(
                doc["metadata"]["namespace"],
                "tusk-system",
                "{} {}",
                kind_of(doc),
                name_of(doc)
            );
        }
    }
    let dir = tempfile::tempdir().expect("temp dir");
    assert_schemas_accept(&[write_stream(dir.path(), "kustomize.yaml", &docs)]);
}

/// The first path at which `a` and `b` differ, if any.
fn first_difference(a: &serde_json::Value, b: &serde_json::Value, path: &str) -> Option<String> {
    use serde_json::Value;
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            x.keys()
                .chain(y.keys())
                .find_map(|k| match (x.get(k), y.get(k)) {
                    (Some(v), Some(w)) => first_difference(v, w, &format!("{path}.{k}")),
                    (v, w) => Some(format!("{path}.{k}: {v:?} vs {w:?}")),
                })
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => x
            .iter()
            .zip(y)
            .enumerate()
            .find_map(|(i, (v, w))| first_difference(v, w, &format!("{path}[{i}]"))),
        _ if a == b => None,
        _ => Some(format!("{path}: {a} vs {b}")),
    }
}

#[test]
fn rendered_stream_reads_the_same_in_yaml_1_1_parsers() {
    // serde_yaml writes YAML 1.2, where `2026-11-21T10:00:00Z`, `yes` or `on` unquoted are
    // strings; YAML 1.1 parsers (PyYAML, so Ansible and many scripts) read them as dates and
    // booleans. `tusk render` output is meant to be piped into such tools, so every value
    // must mean the same in both. PyYAML comes with kubernetes-validate in .venv/.
    let python = kubernetes_validate().with_file_name("python3");
    assert!(
        python.is_file(),
        "{} not found: run scripts/setup-test-deps",
        python.display()
    );
    for manifest in reference_manifests() {
        let stream = render(&manifest);
        let mut child = Command::new(&python)
            .args([
                "-c",
                "import sys, json, yaml\n\
                 docs = [d for d in yaml.safe_load_all(sys.stdin) if d is not None]\n\
                 json.dump(docs, sys.stdout, default=lambda v: {'not JSON': repr(v)})",
            ])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("python runs");
        use std::io::Write;
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(stream.as_bytes())
            .expect("write the stream");
        let out = child.wait_with_output().expect("python finishes");
        assert!(out.status.success(), "PyYAML could not read the stream");
        let yaml_1_1: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
        let yaml_1_2 = serde_json::Value::Array(documents(&stream));
        if let Some(difference) = first_difference(&yaml_1_2, &yaml_1_1, "") {
            panic!(
                "{}: tusk render output reads differently in YAML 1.1 at {difference} \
                 (quote such strings when writing the stream)",
                manifest.display()
            );
        }
    }
}

#[test]
fn schema_check_rejects_an_object_with_an_unknown_field() {
    // Guards the guard: if strict validation stopped working, every test above would pass.
    let bad = serde_json::json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "x"},
        "data": {"a": "b"},
        "notAField": true,
    });
    let dir = tempfile::tempdir().expect("temp dir");
    let (path, _) = write_stream(dir.path(), "bad.yaml", &[bad]);
    let out = Command::new(kubernetes_validate())
        .args(["-k", KUBERNETES_VERSION, "--strict"])
        .arg(&path)
        .output()
        .expect("kubernetes-validate runs");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("notAField"));
}

#[test]
fn invalid_manifest_is_refused_with_the_field_path() {
    let dir = tempfile::tempdir().expect("temp dir");
    let manifest = dir.path().join("bad.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: tusk.rs/v1beta1\nkind: PostgresCluster\nmetadata:\n  name: hippo\n\
         spec:\n  postgresVersion: 15\n  instances:\n    - name: Not_A_DNS_Label\n      \
         dataVolumeClaimSpec:\n        accessModes: [ReadWriteOnce]\n        \
         resources: {requests: {storage: 1Gi}}\n",
    )
    .unwrap();
    let out = run_tusk(&["render", "-f", manifest.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "an invalid manifest rendered");
    assert!(
        stderr.contains("spec.instances[0].name"),
        "stderr does not name the field: {stderr}"
    );
    assert!(
        out.stdout.is_empty(),
        "objects printed for an invalid manifest"
    );
}

#[test]
fn secret_check_finds_real_material() {
    let secret = |entries: &[(&str, &str)]| Secret {
        metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
            name: Some("hippo-pguser-hippo".into()),
            ..Default::default()
        },
        string_data: Some(
            entries
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        ),
        ..Default::default()
    };
    let encoded_placeholder = PLACEHOLDER.replace('<', "%3C").replace('>', "%3E");
    let clean = secret(&[
        ("user", "hippo"),
        ("password", PLACEHOLDER),
        ("tls.key", PLACEHOLDER),
        (
            "uri",
            &format!("postgresql://hippo:{encoded_placeholder}@hippo-primary:5432/zoo"),
        ),
        (
            "jdbc-uri",
            &format!("jdbc:postgresql://hippo-primary:5432/zoo?password={encoded_placeholder}&user=hippo"),
        ),
    ]);
    assert_eq!(secret_leaks(&clean), Vec::<String>::new());

    let real_password = "q8Zr2mXv9TbK4wLp7NcY1dHs";
    for (key, value) in [
        ("password", real_password.to_owned()),
        ("tls.key", "-----BEGIN PRIVATE KEY-----\nMIIE\n".to_owned()),
        ("ca.crt", "-----BEGIN CERTIFICATE-----\nMIIB\n".to_owned()),
        (
            "uri",
            format!("postgresql://hippo:{real_password}@hippo-primary:5432/zoo"),
        ),
        (
            "jdbc-uri",
            format!("jdbc:postgresql://h:5432/zoo?password={real_password}&user=hippo"),
        ),
    ] {
        let leaks = secret_leaks(&secret(&[(key, &value)]));
        assert!(
            !leaks.is_empty(),
            "{key} with real material passed the check"
        );
    }
}

#[test]
fn readme_example_is_the_ha_reference_manifest() {
    // The README's `examples/hippo-ha.yaml` must not drift from the manifest the tests render.
    let examples = repo_root().join("examples");
    let read =
        |p: &Path| std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    assert!(
        read(&examples.join("hippo-ha.yaml")) == read(&examples.join("02-hippo-ha.yaml")),
        "examples/hippo-ha.yaml is the README's copy of 02-hippo-ha.yaml"
    );
}
