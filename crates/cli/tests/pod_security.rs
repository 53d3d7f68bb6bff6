//! Every pod Tusk renders passes the Kubernetes Pod Security Standard "restricted" and
//! checkov's Kubernetes checks: `tusk render` (the real binary) of every reference manifest
//! plus the operator's own Deployment from `kubectl kustomize deploy/kustomize`.
//!
//! The PSS checker below implements the controls of the official profile
//! (<https://kubernetes.io/docs/concepts/security/pod-security-standards/>, Kubernetes 1.34),
//! each named as in that page's tables, over every pod template it finds in an object, so
//! Jobs and CronJobs added later are covered without changing this file. Negative controls
//! mutate a rendered pod in one way per control and require the checker (and checkov) to
//! reject it, so a checker that accepts everything cannot pass.
//!
//! checkov comes from `.venv/` (`scripts/setup-test-deps`) and runs with the repository's
//! `.checkov.yaml`, which lists every deliberately skipped check with its reason. Runs the
//! built binary, `kubectl` and `checkov`; writes only temporary files.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use serde_json::{json, Value};

mod pss;

use pss::{check_documents, report};

fn kustomize_install() -> String {
    let dir = repo_root().join("deploy/kustomize");
    let out = Command::new("kubectl")
        .arg("kustomize")
        .arg(&dir)
        .output()
        .unwrap_or_else(|e| panic!("kubectl (for `kubectl kustomize`) is needed: {e}"));
    assert!(
        out.status.success(),
        "kubectl kustomize {} failed:\n{}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("kustomize prints UTF-8")
}

/// `(source name, YAML stream)` for every reference manifest's render and the install.
fn rendered_sources() -> Vec<(String, String)> {
    let mut sources: Vec<(String, String)> = reference_manifests()
        .iter()
        .map(|m| {
            (
                m.file_name().unwrap().to_string_lossy().into_owned(),
                render(m),
            )
        })
        .collect();
    sources.push(("kustomize.yaml".to_owned(), kustomize_install()));
    sources
}

#[test]
fn every_rendered_pod_passes_the_restricted_pod_security_standard() {
    let mut checked = 0;
    for (source, stream) in rendered_sources() {
        let docs = documents(&stream);
        let (violations, pods) = check_documents(&source, &docs);
        assert!(pods > 0, "{source}: no pod template rendered");
        assert!(
            violations.is_empty(),
            "{source} breaks the restricted profile:\n{}",
            report(&violations)
        );
        checked += pods;
    }
    // 7 manifests with at least one instance each, plus the operator.
    assert!(checked >= 8, "only {checked} pods checked");
}

/// The first rendered instance StatefulSet of the basic example.
fn rendered_statefulset() -> Value {
    let manifest = reference_examples_dir().join("01-hippo-basic.yaml");
    documents(&render(&manifest))
        .into_iter()
        .find(|d| kind_of(d) == "StatefulSet")
        .expect("the basic example renders a StatefulSet")
}

/// One way to break the restricted profile per control: the control that must catch it, a
/// JSON pointer into the pod spec (`-` appends to a list) and the value written there
/// (`null` removes a setting).
fn violating_mutations() -> Vec<(&'static str, &'static str, Value)> {
    vec![
        ("Host Namespaces", "/hostNetwork", json!(true)),
        ("Host Namespaces", "/hostPID", json!(true)),
        (
            "HostProcess",
            "/securityContext/windowsOptions",
            json!({"hostProcess": true}),
        ),
        (
            "Privileged Containers",
            "/containers/0/securityContext/privileged",
            json!(true),
        ),
        (
            "Capabilities",
            "/containers/0/securityContext/capabilities/add",
            json!(["SYS_ADMIN"]),
        ),
        // Allowed by baseline, not by restricted.
        (
            "Capabilities",
            "/containers/0/securityContext/capabilities/add",
            json!(["CHOWN"]),
        ),
        (
            "Capabilities",
            "/containers/0/securityContext/capabilities/drop",
            json!(["NET_RAW"]),
        ),
        (
            "HostPath Volumes",
            "/volumes/-",
            json!({"name": "h", "hostPath": {"path": "/"}}),
        ),
        (
            "Volume Types",
            "/volumes/-",
            json!({"name": "n", "nfs": {"server": "x", "path": "/"}}),
        ),
        ("Host Ports", "/containers/0/ports/0/hostPort", json!(5432)),
        (
            "Host Probes / Lifecycle Hooks",
            "/containers/0/livenessProbe/httpGet/host",
            json!("10.0.0.1"),
        ),
        (
            "AppArmor",
            "/securityContext/appArmorProfile",
            json!({"type": "Unconfined"}),
        ),
        (
            "SELinux",
            "/containers/0/securityContext/seLinuxOptions",
            json!({"type": "spc_t"}),
        ),
        (
            "/proc Mount Type",
            "/containers/0/securityContext/procMount",
            json!("Unmasked"),
        ),
        (
            "Seccomp",
            "/securityContext/seccompProfile",
            json!({"type": "Unconfined"}),
        ),
        ("Seccomp", "/securityContext/seccompProfile", Value::Null),
        (
            "Sysctls",
            "/securityContext/sysctls",
            json!([{"name": "kernel.msgmax", "value": "1"}]),
        ),
        (
            "Privilege Escalation",
            "/containers/0/securityContext/allowPrivilegeEscalation",
            Value::Null,
        ),
        (
            "Running as Non-root",
            "/securityContext/runAsNonRoot",
            Value::Null,
        ),
        (
            "Running as Non-root",
            "/containers/0/securityContext/runAsNonRoot",
            json!(false),
        ),
        (
            "Running as Non-root user",
            "/securityContext/runAsUser",
            json!(0),
        ),
    ]
}

/// Writes `value` at `pointer` in `doc`, creating objects on the way; `-` appends.
fn set_pointer(doc: &mut Value, pointer: &str, value: Value) {
    let (parent, last) = pointer.rsplit_once('/').expect("a JSON pointer");
    let mut node = doc;
    for token in parent.split('/').skip(1) {
        node = match token.parse::<usize>() {
            Ok(i) => &mut node[i],
            Err(_) => &mut node[token],
        };
    }
    match (last, node) {
        ("-", Value::Array(items)) => items.push(value),
        (last, node) => match last.parse::<usize>() {
            Ok(i) => node[i] = value,
            Err(_) => node[last] = value,
        },
    }
}

#[test]
fn the_checker_rejects_each_broken_control() {
    let clean = rendered_statefulset();
    let (violations, pods) = check_documents("clean", std::slice::from_ref(&clean));
    assert_eq!(pods, 1);
    assert!(violations.is_empty(), "{}", report(&violations));

    for (control, pointer, value) in violating_mutations() {
        let mut broken = clean.clone();
        set_pointer(
            &mut broken["spec"]["template"]["spec"],
            pointer,
            value.clone(),
        );
        let (violations, _) = check_documents("mutated", &[broken]);
        assert!(
            violations.iter().any(|v| v.control == control),
            "{pointer} = {value} breaks {control:?} but passed; found:\n{}",
            report(&violations)
        );
    }
}

#[test]
fn pod_templates_of_jobs_and_cronjobs_are_checked_too() {
    let template = rendered_statefulset()["spec"]["template"].clone();
    let cronjob = |template: Value| {
        json!({
            "apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "backup"},
            "spec": {"schedule": "0 1 * * *", "jobTemplate": {"spec": {"template": template}}}
        })
    };
    let (violations, pods) = check_documents("cronjob", &[cronjob(template.clone())]);
    assert_eq!(pods, 1, "the CronJob's pod template is found");
    assert!(violations.is_empty(), "{}", report(&violations));

    let mut privileged = template;
    privileged["spec"]["containers"][0]["securityContext"]["privileged"] = json!(true);
    let (violations, _) = check_documents("cronjob", &[cronjob(privileged)]);
    assert!(violations.iter().any(
        |v| v.control == "Privileged Containers" && v.at.contains("jobTemplate.spec.template")
    ));
}

/// `.venv/bin/checkov` (installed by `scripts/setup-test-deps`), else PATH.
fn checkov() -> PathBuf {
    let in_venv = repo_root().join(".venv/bin/checkov");
    if in_venv.is_file() {
        return in_venv;
    }
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join("checkov"))
                .find(|p| p.is_file())
        })
        .unwrap_or_else(|| {
            panic!(
                "checkov is not installed: run scripts/setup-test-deps (installs it into .venv/)"
            )
        })
}

/// checkov's JSON report on `files`, run with the repository's `.checkov.yaml`.
fn run_checkov(files: &[PathBuf]) -> Value {
    let out = Command::new(checkov())
        .args([
            "--framework",
            "kubernetes",
            "--compact",
            "--quiet",
            "--output",
            "json",
        ])
        .arg("--config-file")
        .arg(repo_root().join(".checkov.yaml"))
        .args(files.iter().flat_map(|f| [Path::new("-f"), f.as_path()]))
        .output()
        .expect("checkov runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    // Exit code 1 means "failed checks"; anything else that is not JSON is a broken run.
    let report: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "checkov ({}) printed no JSON report ({e}):\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )
    });
    // One framework gives one object; several give a list.
    match report {
        Value::Array(mut reports) if reports.len() == 1 => reports.remove(0),
        other => other,
    }
}

fn failed_checks(report: &Value) -> Vec<String> {
    report["results"]["failed_checks"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            format!(
                "  {} {} ({}) in {}",
                c["check_id"], c["check_name"], c["resource"], c["file_path"]
            )
        })
        .collect()
}

#[test]
fn checkov_passes_every_rendered_object() {
    let dir = tempfile::tempdir().expect("temp dir");
    let sources = rendered_sources();
    let files: Vec<PathBuf> = sources
        .iter()
        .map(|(name, stream)| {
            let path = dir.path().join(name);
            std::fs::write(&path, stream).expect("write the rendered stream");
            path
        })
        .collect();
    let report = run_checkov(&files);
    let summary = &report["summary"];
    let failed = failed_checks(&report);
    assert!(
        failed.is_empty(),
        "checkov found {} failed checks:\n{}",
        failed.len(),
        failed.join("\n")
    );
    assert_eq!(summary["parsing_errors"], json!(0), "{summary}");
    // Every document was really scanned (`--quiet` leaves passed checks out of the report,
    // so count resources: checkov counts each object, plus some containers, once).
    let documents_written: usize = sources.iter().map(|(_, s)| documents(s).len()).sum();
    let scanned = summary["resource_count"].as_u64().unwrap_or(0) as usize;
    assert!(
        scanned >= documents_written && summary["passed"].as_u64() > Some(0),
        "checkov scanned {scanned} resources of {documents_written} documents: {summary}"
    );
}

#[test]
fn checkov_with_the_repository_config_still_catches_a_privileged_pod() {
    let mut broken = rendered_statefulset();
    let ctx = &mut broken["spec"]["template"]["spec"]["containers"][0]["securityContext"];
    ctx["privileged"] = json!(true);
    ctx["allowPrivilegeEscalation"] = json!(true);
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("broken.yaml");
    std::fs::write(&file, serde_json::to_string(&broken).unwrap()).unwrap();
    let report = run_checkov(&[file]);
    let failed = failed_checks(&report).join("\n");
    // CKV_K8S_16: privileged containers; CKV_K8S_20: allowPrivilegeEscalation.
    for id in ["CKV_K8S_16", "CKV_K8S_20"] {
        assert!(failed.contains(id), "{id} not reported:\n{failed}");
    }
}
