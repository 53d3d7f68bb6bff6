//! The install manifests fit what the operator does: its ClusterRole lets it manage every kind
//! `tusk render` produces and grant every rule of the Roles it creates (Kubernetes refuses to
//! let a subject grant what it does not hold); the Helm chart carries the same rules; the
//! Deployment passes the "restricted" Pod Security Standard and sets only `RELATED_IMAGE_*`
//! variables the operator reads. Reads files under `deploy/` and runs the built binary.

mod common;

use std::collections::BTreeSet;

use common::*;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::rbac::v1::{ClusterRole, PolicyRule, Role};
use k8s_openapi::Resource;
use tusk_operator::images::Images;

fn kustomize_file(name: &str) -> String {
    let path = repo_root().join("deploy/kustomize").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn operator_cluster_role() -> ClusterRole {
    serde_yaml::from_str(&kustomize_file("cluster_role.yaml")).expect("a ClusterRole")
}

/// Whether `rules` allow `verb` on `group`/`resource` (no wildcards: the install uses none).
fn allows(rules: &[PolicyRule], group: &str, resource: &str, verb: &str) -> bool {
    rules.iter().any(|r| {
        r.api_groups.iter().flatten().any(|g| g == group)
            && r.resources.iter().flatten().any(|res| res == resource)
            && r.verbs.iter().any(|v| v == verb)
            && r.resource_names.as_ref().is_none_or(|n| n.is_empty())
    })
}

/// API group and plural of a kind the operator may create. A kind missing here fails the
/// test, so a new object family cannot ship without its RBAC being decided.
fn group_and_plural(kind: &str) -> (&'static str, &'static str) {
    macro_rules! kinds {
        ($($t:ty),* $(,)?) => {
            match kind {
                $(k if k == <$t as Resource>::KIND => (<$t as Resource>::GROUP, <$t as Resource>::URL_PATH_SEGMENT),)*
                other => panic!("{other}: unknown kind; add it here and to the ClusterRole"),
            }
        };
    }
    use k8s_openapi::api::{apps, batch, core, policy, rbac};
    kinds!(
        apps::v1::StatefulSet,
        apps::v1::Deployment,
        core::v1::Service,
        core::v1::Endpoints,
        core::v1::ConfigMap,
        core::v1::Secret,
        core::v1::ServiceAccount,
        core::v1::PersistentVolumeClaim,
        core::v1::Pod,
        batch::v1::Job,
        batch::v1::CronJob,
        policy::v1::PodDisruptionBudget,
        rbac::v1::Role,
        rbac::v1::RoleBinding,
    )
}

#[test]
fn operator_may_manage_every_rendered_kind_and_grant_every_rendered_role() {
    let cluster_role = operator_cluster_role();
    let rules = cluster_role.rules.as_deref().unwrap_or_default();
    for manifest in reference_manifests() {
        for doc in documents(&render(&manifest)) {
            let kind = kind_of(&doc);
            let (group, plural) = group_and_plural(kind);
            // Server-side apply is a patch; get/list/watch feed the controller's caches.
            let mut verbs = vec!["get", "list", "watch", "create", "patch"];
            // Orphans are deleted, except claims: data is never deleted by the operator.
            if kind != "PersistentVolumeClaim" {
                verbs.push("delete");
            }
            for verb in verbs {
                assert!(
                    allows(rules, group, plural, verb),
                    "{}: the ClusterRole lacks {verb} on {group}/{plural} ({kind} {})",
                    manifest.display(),
                    name_of(&doc)
                );
            }
            if kind == "Role" {
                let role: Role = serde_json::from_value(doc.clone()).expect("a Role");
                for rule in role.rules.iter().flatten() {
                    for group in rule.api_groups.iter().flatten() {
                        for resource in rule.resources.iter().flatten() {
                            for verb in &rule.verbs {
                                assert!(
                                    allows(rules, group, resource, verb),
                                    "{}: Role {} grants {verb} on {group}/{resource}, which \
                                     the operator does not hold, so Kubernetes refuses it",
                                    manifest.display(),
                                    name_of(&doc)
                                );
                            }
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn operator_cannot_delete_persistent_volume_claims() {
    let cluster_role = operator_cluster_role();
    let rules = cluster_role.rules.as_deref().unwrap_or_default();
    assert!(allows(rules, "", "persistentvolumeclaims", "create"));
    assert!(!allows(rules, "", "persistentvolumeclaims", "delete"));
    assert!(!allows(
        rules,
        "",
        "persistentvolumeclaims",
        "deletecollection"
    ));
    // The CRD's status and the owner-reference finalizers are writable.
    assert!(allows(rules, "tusk.rs", "postgresclusters/status", "patch"));
    assert!(allows(
        rules,
        "tusk.rs",
        "postgresclusters/finalizers",
        "update"
    ));
}

/// The `rules:` block of a ClusterRole file, verbatim.
fn rules_block(text: &str) -> &str {
    let start = text.find("\nrules:\n").expect("a rules: block");
    &text[start..]
}

#[test]
fn helm_chart_grants_the_same_rules_as_kustomize() {
    let helm_path = repo_root().join("deploy/helm/tusk/templates/clusterrole.yaml");
    let helm = std::fs::read_to_string(&helm_path).expect("the chart's ClusterRole");
    assert_eq!(
        rules_block(&helm),
        rules_block(&kustomize_file("cluster_role.yaml")),
        "{} and deploy/kustomize/cluster_role.yaml differ in rules",
        helm_path.display()
    );
}

#[test]
fn helm_chart_ships_the_checked_in_crd() {
    // The chart links to deploy/crds/ rather than copying it; a copy that drifts, or a link
    // that no longer resolves, fails here.
    let chart_crd = repo_root().join("deploy/helm/tusk/crds/postgresclusters.tusk.rs.yaml");
    let checked_in = repo_root().join("deploy/crds/postgresclusters.tusk.rs.yaml");
    let read = |p: &std::path::Path| {
        std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    };
    let chart = read(&chart_crd);
    assert!(chart.contains("name: postgresclusters.tusk.rs"));
    assert!(
        chart == read(&checked_in),
        "{} differs from {}",
        chart_crd.display(),
        checked_in.display()
    );
}

#[test]
fn operator_deployment_passes_the_restricted_pod_security_standard() {
    let deployment: Deployment =
        serde_yaml::from_str(&kustomize_file("deployment.yaml")).expect("a Deployment");
    let spec = deployment.spec.expect("spec");
    assert_eq!(spec.replicas, Some(2), "two replicas for leader election");
    let pod = spec.template.spec.expect("pod spec");
    assert_ne!(pod.host_network, Some(true));
    assert_ne!(pod.host_pid, Some(true));
    assert_ne!(pod.host_ipc, Some(true));
    assert!(pod.volumes.iter().flatten().all(|v| v.host_path.is_none()));
    let pod_security = pod.security_context.expect("pod securityContext");
    assert_eq!(pod_security.run_as_non_root, Some(true));
    assert_ne!(pod_security.run_as_user, Some(0));
    assert_eq!(
        pod_security.seccomp_profile.map(|s| s.type_),
        Some("RuntimeDefault".to_owned())
    );
    for container in pod
        .containers
        .iter()
        .chain(pod.init_containers.iter().flatten())
    {
        let security = container.security_context.clone().expect("securityContext");
        assert_eq!(security.allow_privilege_escalation, Some(false));
        assert_eq!(security.read_only_root_filesystem, Some(true));
        assert_ne!(security.privileged, Some(true));
        let drop = security
            .capabilities
            .and_then(|c| c.drop)
            .unwrap_or_default();
        assert_eq!(drop, vec!["ALL".to_owned()]);
        let probes = [&container.liveness_probe, &container.readiness_probe];
        for (probe, path) in probes.into_iter().zip(["/healthz", "/readyz"]) {
            let http = probe.as_ref().and_then(|p| p.http_get.as_ref());
            assert_eq!(http.and_then(|h| h.path.as_deref()), Some(path));
        }
    }
}

#[test]
fn deployment_sets_only_image_variables_the_operator_reads() {
    let deployment: Deployment =
        serde_yaml::from_str(&kustomize_file("deployment.yaml")).expect("a Deployment");
    let pod = deployment.spec.and_then(|s| s.template.spec).expect("pod");
    let env = pod.containers[0].env.clone().unwrap_or_default();
    let names: BTreeSet<&str> = env.iter().map(|e| e.name.as_str()).collect();
    for required in [
        "RELATED_IMAGE_POSTGRES_15",
        "RELATED_IMAGE_PGBACKREST",
        "RELATED_IMAGE_PGBOUNCER",
        "RELATED_IMAGE_EXPORTER",
        "RELATED_IMAGE_FENCER",
        "POD_NAMESPACE",
        "POD_NAME",
    ] {
        assert!(names.contains(required), "{required} is not set");
    }
    // A variable the operator ignores would silently deploy the fallback image.
    for var in env.iter().filter(|e| e.name.starts_with("RELATED_IMAGE_")) {
        let probe = "registry.test/probe:1";
        assert_ne!(
            Images::from_vars([(var.name.as_str(), probe)]),
            Images::default(),
            "{} is not read by tusk_operator::images",
            var.name
        );
    }
}

#[test]
fn helm_values_set_the_same_related_images_as_kustomize() {
    let values_path = repo_root().join("deploy/helm/tusk/values.yaml");
    let values: serde_json::Value = serde_yaml::from_str(
        &std::fs::read_to_string(&values_path).expect("the chart's values.yaml"),
    )
    .expect("values.yaml is YAML");
    let from_helm: BTreeSet<(String, String)> = values["relatedImages"]
        .as_object()
        .expect("relatedImages is a map")
        .iter()
        .map(|(key, image)| {
            let image = image.as_str().expect("an image string").to_owned();
            (format!("RELATED_IMAGE_{key}"), image)
        })
        .collect();
    let deployment: Deployment =
        serde_yaml::from_str(&kustomize_file("deployment.yaml")).expect("a Deployment");
    let pod = deployment.spec.and_then(|s| s.template.spec).expect("pod");
    let from_kustomize: BTreeSet<(String, String)> = pod.containers[0]
        .env
        .iter()
        .flatten()
        .filter(|e| e.name.starts_with("RELATED_IMAGE_"))
        .map(|e| (e.name.clone(), e.value.clone().unwrap_or_default()))
        .collect();
    assert_eq!(from_helm, from_kustomize);
}
