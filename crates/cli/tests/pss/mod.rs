//! A checker for the Kubernetes Pod Security Standard "restricted" (which includes
//! "baseline"), as the official page describes it for Kubernetes 1.34
//! (<https://kubernetes.io/docs/concepts/security/pod-security-standards/>). Each check names
//! its control exactly as the page's tables do. Works on JSON objects of any kind: every pod
//! template is found by shape. Used by `pod_security.rs`; pure, no I/O.

use serde_json::Value;

use crate::common::{kind_of, name_of};

/// A broken control: its name in the PSS page, where, and what was found.
#[derive(Debug)]
pub struct Violation {
    pub control: &'static str,
    pub at: String,
    pub found: String,
}

/// Kinds whose objects must contain at least one pod template; a kind added to a builder
/// that the walker below cannot find a pod in fails the test instead of passing unchecked.
const WORKLOAD_KINDS: &[&str] = &[
    "Pod",
    "Deployment",
    "StatefulSet",
    "DaemonSet",
    "ReplicaSet",
    "ReplicationController",
    "Job",
    "CronJob",
];

/// Every pod (metadata, spec) in `doc` with its JSON path: the object itself for a Pod, the
/// `template` of a Deployment/StatefulSet/Job, `jobTemplate.spec.template` of a CronJob, ...
/// Found by shape (an object whose `spec.containers` is a list), not by kind.
pub fn pod_templates(doc: &Value) -> Vec<(String, &Value, &Value)> {
    fn walk<'a>(node: &'a Value, path: String, out: &mut Vec<(String, &'a Value, &'a Value)>) {
        match node {
            Value::Object(map) => {
                if node["spec"]["containers"].is_array() {
                    out.push((path.clone(), &node["metadata"], &node["spec"]));
                }
                for (key, child) in map {
                    walk(child, format!("{path}.{key}"), out);
                }
            }
            Value::Array(items) => {
                for (i, child) in items.iter().enumerate() {
                    walk(child, format!("{path}[{i}]"), out);
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(doc, String::new(), &mut out);
    out
}

fn is_set_true(v: &Value) -> bool {
    v.as_bool() == Some(true)
}

/// Capabilities the baseline profile allows adding ("Capabilities" control, baseline).
const BASELINE_CAPABILITIES: &[&str] = &[
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
];

/// The "Sysctls" control's safe set (baseline).
const SAFE_SYSCTLS: &[&str] = &[
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
];

/// The "Volume Types" control's allowed volume sources (restricted).
const RESTRICTED_VOLUME_SOURCES: &[&str] = &[
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
];

/// The "SELinux" control's allowed types (baseline).
const SELINUX_TYPES: &[&str] = &[
    "",
    "container_t",
    "container_init_t",
    "container_kvm_t",
    "container_engine_t",
];

/// Violations of the baseline and restricted profiles by one pod.
fn restricted_violations(at: &str, metadata: &Value, pod: &Value) -> Vec<Violation> {
    let mut v = Vec::new();
    let mut fail =
        |control: &'static str, at: String, found: String| v.push(Violation { control, at, found });
    let pod_ctx = &pod["securityContext"];
    let containers: Vec<(String, &Value)> = ["containers", "initContainers", "ephemeralContainers"]
        .iter()
        .flat_map(|list| {
            pod[list]
                .as_array()
                .into_iter()
                .flatten()
                .enumerate()
                .map(move |(i, c)| (format!("{at}.spec.{list}[{i}]"), c))
        })
        .collect();

    // Baseline "HostProcess": Windows host processes are privileged.
    if is_set_true(&pod_ctx["windowsOptions"]["hostProcess"]) {
        fail(
            "HostProcess",
            format!("{at}.spec.securityContext"),
            "hostProcess: true".into(),
        );
    }
    // Baseline "Host Namespaces".
    for field in ["hostNetwork", "hostPID", "hostIPC"] {
        if is_set_true(&pod[field]) {
            fail(
                "Host Namespaces",
                format!("{at}.spec.{field}"),
                "true".into(),
            );
        }
    }
    // Baseline "HostPath Volumes" and restricted "Volume Types".
    for (i, volume) in pod["volumes"].as_array().into_iter().flatten().enumerate() {
        let path = format!("{at}.spec.volumes[{i}]");
        let Some(fields) = volume.as_object() else {
            continue;
        };
        for source in fields.keys().filter(|k| *k != "name") {
            if source == "hostPath" {
                fail("HostPath Volumes", path.clone(), source.clone());
            }
            if !RESTRICTED_VOLUME_SOURCES.contains(&source.as_str()) {
                fail("Volume Types", path.clone(), source.clone());
            }
        }
    }
    // Baseline "Sysctls".
    for sysctl in pod_ctx["sysctls"].as_array().into_iter().flatten() {
        let name = sysctl["name"].as_str().unwrap_or_default();
        if !SAFE_SYSCTLS.contains(&name) {
            fail(
                "Sysctls",
                format!("{at}.spec.securityContext.sysctls"),
                name.into(),
            );
        }
    }
    // Baseline "AppArmor": the legacy per-container annotations.
    for (key, value) in metadata["annotations"].as_object().into_iter().flatten() {
        if key.starts_with("container.apparmor.security.beta.kubernetes.io/") {
            let value = value.as_str().unwrap_or_default();
            if value != "runtime/default" && !value.starts_with("localhost/") {
                fail(
                    "AppArmor",
                    format!("{at}.metadata.annotations[{key}]"),
                    value.into(),
                );
            }
        }
    }
    // Restricted "Running as Non-root": pod-level true, or every container sets it.
    let pod_non_root = is_set_true(&pod_ctx["runAsNonRoot"]);
    // Restricted "Seccomp": pod-level RuntimeDefault/Localhost, or every container sets it.
    let pod_seccomp = pod_ctx["seccompProfile"]["type"].as_str();
    let seccomp_ok = |t: Option<&str>| matches!(t, Some("RuntimeDefault" | "Localhost"));
    if pod_seccomp.is_some() && !seccomp_ok(pod_seccomp) {
        fail(
            "Seccomp",
            format!("{at}.spec.securityContext.seccompProfile"),
            format!("{pod_seccomp:?}"),
        );
    }
    let mut contexts = vec![(format!("{at}.spec.securityContext"), pod_ctx)];
    for (path, container) in &containers {
        let ctx = &container["securityContext"];
        let ctx_path = format!("{path}.securityContext");
        contexts.push((ctx_path.clone(), ctx));
        // Baseline "Privileged Containers".
        if is_set_true(&ctx["privileged"]) {
            fail(
                "Privileged Containers",
                ctx_path.clone(),
                "privileged: true".into(),
            );
        }
        if is_set_true(&ctx["windowsOptions"]["hostProcess"]) {
            fail("HostProcess", ctx_path.clone(), "hostProcess: true".into());
        }
        // Baseline "Host Ports".
        for port in container["ports"].as_array().into_iter().flatten() {
            if port["hostPort"].as_i64().unwrap_or(0) != 0 {
                fail(
                    "Host Ports",
                    format!("{path}.ports"),
                    port["hostPort"].to_string(),
                );
            }
        }
        // Baseline "Host Probes / Lifecycle Hooks" (1.34): no probe aimed at another host.
        for handler in [
            &container["livenessProbe"],
            &container["readinessProbe"],
            &container["startupProbe"],
            &container["lifecycle"]["postStart"],
            &container["lifecycle"]["preStop"],
        ] {
            for action in ["httpGet", "tcpSocket"] {
                if let Some(host) = handler[action]["host"].as_str().filter(|h| !h.is_empty()) {
                    fail("Host Probes / Lifecycle Hooks", path.clone(), host.into());
                }
            }
        }
        // Baseline "/proc Mount Type".
        if let Some(mount) = ctx["procMount"].as_str().filter(|m| *m != "Default") {
            fail("/proc Mount Type", ctx_path.clone(), mount.into());
        }
        // Baseline + restricted "Capabilities": drop ALL, add at most NET_BIND_SERVICE.
        let dropped = ctx["capabilities"]["drop"].as_array().into_iter().flatten();
        if !dropped.filter_map(Value::as_str).any(|c| c == "ALL") {
            fail(
                "Capabilities",
                ctx_path.clone(),
                "capabilities.drop lacks ALL".into(),
            );
        }
        for added in ctx["capabilities"]["add"].as_array().into_iter().flatten() {
            let added = added.as_str().unwrap_or_default();
            let baseline = BASELINE_CAPABILITIES.contains(&added);
            if added != "NET_BIND_SERVICE" {
                let detail = if baseline {
                    "beyond restricted"
                } else {
                    "beyond baseline"
                };
                fail(
                    "Capabilities",
                    ctx_path.clone(),
                    format!("adds {added} ({detail})"),
                );
            }
        }
        // Restricted "Privilege Escalation": must be explicitly false.
        if ctx["allowPrivilegeEscalation"].as_bool() != Some(false) {
            let found = ctx["allowPrivilegeEscalation"].to_string();
            fail("Privilege Escalation", ctx_path.clone(), found);
        }
        // Restricted "Running as Non-root".
        match ctx["runAsNonRoot"].as_bool() {
            Some(false) => fail("Running as Non-root", ctx_path.clone(), "false".into()),
            None if !pod_non_root => fail(
                "Running as Non-root",
                ctx_path.clone(),
                "unset at pod and container".into(),
            ),
            _ => {}
        }
        // Restricted "Seccomp".
        let seccomp = ctx["seccompProfile"]["type"].as_str();
        if (seccomp.is_some() || pod_seccomp.is_none()) && !seccomp_ok(seccomp) {
            fail("Seccomp", ctx_path.clone(), format!("{seccomp:?}"));
        }
    }
    for (path, ctx) in contexts {
        // Restricted "Running as Non-root user".
        if ctx["runAsUser"].as_i64() == Some(0) {
            fail(
                "Running as Non-root user",
                path.clone(),
                "runAsUser: 0".into(),
            );
        }
        // Baseline "AppArmor" (field form).
        if let Some(t) = ctx["appArmorProfile"]["type"].as_str() {
            if t != "RuntimeDefault" && t != "Localhost" {
                fail("AppArmor", path.clone(), t.into());
            }
        }
        // Baseline "SELinux".
        let selinux = &ctx["seLinuxOptions"];
        if let Some(t) = selinux["type"]
            .as_str()
            .filter(|t| !SELINUX_TYPES.contains(t))
        {
            fail("SELinux", path.clone(), format!("type {t}"));
        }
        for field in ["user", "role"] {
            if let Some(value) = selinux[field].as_str().filter(|s| !s.is_empty()) {
                fail("SELinux", path.clone(), format!("{field} {value}"));
            }
        }
    }
    v
}

/// Every violation in `docs` (named by `source`); also fails if a workload kind holds no pod
/// the walker found. Returns the violations and how many pods were checked.
pub fn check_documents(source: &str, docs: &[Value]) -> (Vec<Violation>, usize) {
    let mut violations = Vec::new();
    let mut pods = 0;
    for doc in docs {
        let templates = pod_templates(doc);
        if WORKLOAD_KINDS.contains(&kind_of(doc)) {
            assert!(
                !templates.is_empty(),
                "{source}: no pod found in {} {}",
                kind_of(doc),
                name_of(doc)
            );
        }
        for (path, metadata, spec) in templates {
            pods += 1;
            let at = format!("{source}: {} {}{path}", kind_of(doc), name_of(doc));
            violations.extend(restricted_violations(&at, metadata, spec));
        }
    }
    (violations, pods)
}

pub fn report(violations: &[Violation]) -> String {
    violations
        .iter()
        .map(|v| format!("  [{}] {}: {}", v.control, v.at, v.found))
        .collect::<Vec<_>>()
        .join("\n")
}
