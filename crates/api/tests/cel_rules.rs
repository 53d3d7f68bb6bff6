//! Every CEL rule of the CRD, evaluated client-side (kube's `cel` feature) on the generated
//! schema: each rule rejects a manifest that breaks it, with its message and field path; every
//! reference manifest passes them all; and the operator's own `validate` rejects the same
//! manifests, so a manifest that reaches Tusk without an API server is held to the same rules.

mod common;

use std::collections::BTreeSet;

use common::*;
use serde_json::{json, Value};
use tusk_api::PostgresCluster;

struct Case {
    what: &'static str,
    manifest: Value,
    /// Path the API server would report.
    path: &'static str,
    /// The rule's message starts with this.
    message: &'static str,
}

fn case(what: &'static str, path: &'static str, message: &'static str, manifest: Value) -> Case {
    Case {
        what,
        manifest,
        path,
        message,
    }
}

fn edit(mut m: Value, f: impl FnOnce(&mut Value)) -> Value {
    f(&mut m);
    m
}

fn cases() -> Vec<Case> {
    let long_name = "a".repeat(41);
    let name_40 = "a".repeat(40);
    let tls = json!({"name": "hippo.tls"});
    vec![
        case(
            "cluster name longer than 40",
            "",
            "metadata.name must be a lowercase DNS label",
            edit(minimal(), |m| {
                m["metadata"]["name"] = json!(long_name);
                m["spec"]["instances"][0]["name"] = json!("i1");
            }),
        ),
        case(
            "cluster name starting with a digit",
            "",
            "metadata.name must be a lowercase DNS label",
            edit(minimal(), |m| m["metadata"]["name"] = json!("1hippo")),
        ),
        case(
            "cluster and set name too long together",
            "spec.instances",
            "spec.instances[].name: cluster name and instance set name together",
            edit(minimal(), |m| m["metadata"]["name"] = json!(name_40)),
        ),
        case(
            "customTLSSecret alone",
            "spec.customReplicationTLSSecret",
            "spec.customReplicationTLSSecret is required",
            edit(minimal(), |m| m["spec"]["customTLSSecret"] = tls.clone()),
        ),
        case(
            "customReplicationTLSSecret alone",
            "spec.customTLSSecret",
            "spec.customTLSSecret is required",
            edit(minimal(), |m| {
                m["spec"]["customReplicationTLSSecret"] = tls.clone()
            }),
        ),
        case(
            "duplicate instance set names",
            "spec.instances",
            "spec.instances[].name: instance set names must be unique",
            edit(minimal(), |m| {
                let set = m["spec"]["instances"][0].clone();
                m["spec"]["instances"] = json!([set.clone(), set]);
            }),
        ),
        case(
            "duplicate user names",
            "spec.users",
            "spec.users[].name: user names must be unique",
            edit(
                minimal(),
                |m| {
                    m["spec"]["users"] =
                        json!([{"name": "rhino"}, {"name": "hippo"}, {"name": "rhino"}])
                },
            ),
        ),
        case(
            "user options setting PASSWORD",
            "spec.users[0].options",
            "options: PASSWORD is managed by Tusk",
            edit(minimal(), |m| {
                m["spec"]["users"] = json!([{"name": "rhino", "options": "LOGIN password 'x'"}])
            }),
        ),
        case(
            "enabled standby with neither repo nor host",
            "spec.standby",
            "spec.standby: an enabled standby needs",
            edit(minimal(), |m| {
                m["spec"]["standby"] = json!({"enabled": true})
            }),
        ),
        case(
            "standby repo that is not declared",
            "spec.standby.repoName",
            "spec.standby.repoName must name a repo",
            edit(with_repo1(), |m| {
                m["spec"]["standby"] = json!({"enabled": true, "repoName": "repo2"})
            }),
        ),
        case(
            "standby repo without any backups",
            "spec.standby.repoName",
            "spec.standby.repoName must name a repo",
            edit(minimal(), |m| {
                m["spec"]["standby"] = json!({"enabled": true, "repoName": "repo1"})
            }),
        ),
        case(
            "standby port without host",
            "spec.standby.port",
            "spec.standby.port requires spec.standby.host",
            edit(with_repo1(), |m| {
                m["spec"]["standby"] = json!({"enabled": true, "repoName": "repo1", "port": 5433})
            }),
        ),
        case(
            "syncPeriodSeconds leaves no room for retries",
            "spec.patroni.syncPeriodSeconds",
            "spec.patroni.syncPeriodSeconds + 2 must not exceed",
            edit(
                minimal(),
                |m| {
                    m["spec"]["patroni"] =
                        json!({"leaderLeaseDurationSeconds": 10, "syncPeriodSeconds": 9})
                },
            ),
        ),
        case(
            "syncPeriodSeconds too long for the default lease",
            "spec.patroni.syncPeriodSeconds",
            "spec.patroni.syncPeriodSeconds + 2 must not exceed",
            edit(minimal(), |m| {
                m["spec"]["patroni"] = json!({"syncPeriodSeconds": 14})
            }),
        ),
        case(
            "failover without a target",
            "spec.patroni.switchover.targetInstance",
            "spec.patroni.switchover.targetInstance is required",
            edit(minimal(), |m| {
                m["spec"]["patroni"] = json!({"switchover": {"enabled": true, "type": "Failover"}})
            }),
        ),
        case(
            "duplicate repo names",
            "spec.backups.pgbackrest.repos",
            "spec.backups.pgbackrest.repos[].name: repo names must be unique",
            edit(with_repo1(), |m| {
                let repo = m["spec"]["backups"]["pgbackrest"]["repos"][0].clone();
                m["spec"]["backups"]["pgbackrest"]["repos"] = json!([repo.clone(), repo]);
            }),
        ),
        case(
            "manual backup from an undeclared repo",
            "spec.backups.pgbackrest.manual.repoName",
            "spec.backups.pgbackrest.manual.repoName must name a repo",
            edit(with_repo1(), |m| {
                m["spec"]["backups"]["pgbackrest"]["manual"] = json!({"repoName": "repo2"})
            }),
        ),
        case(
            "restore from an undeclared repo",
            "spec.backups.pgbackrest.restore.repoName",
            "spec.backups.pgbackrest.restore.repoName must name a repo",
            edit(with_repo1(), |m| {
                m["spec"]["backups"]["pgbackrest"]["restore"] =
                    json!({"enabled": true, "repoName": "repo3"})
            }),
        ),
        case(
            "repo with two kinds of storage",
            "spec.backups.pgbackrest.repos[0]",
            "repo: exactly one of volume, s3, gcs, azure",
            edit(with_repo1(), |m| {
                m["spec"]["backups"]["pgbackrest"]["repos"][0]["gcs"] = json!({"bucket": "b"})
            }),
        ),
        case(
            "repo with no storage",
            "spec.backups.pgbackrest.repos[0]",
            "repo: exactly one of volume, s3, gcs, azure",
            edit(with_repo1(), |m| {
                m["spec"]["backups"]["pgbackrest"]["repos"] = json!([{"name": "repo1"}])
            }),
        ),
        case(
            "two kinds of data source",
            "spec.dataSource",
            "spec.dataSource: at most one of",
            edit(minimal(), |m| {
                m["spec"]["dataSource"] = json!({
                    "postgresCluster": {"clusterName": "hippo", "repoName": "repo1"},
                    "pgbackrest": {"stanza": "db", "repo": {"name": "repo1", "s3": {"bucket": "b", "endpoint": "e", "region": "r"}}},
                })
            }),
        ),
        case(
            "restore from a volume repo with no source cluster",
            "spec.dataSource.pgbackrest.repo",
            "spec.dataSource.pgbackrest.repo must be a cloud repo",
            edit(minimal(), |m| {
                m["spec"]["dataSource"] = json!({
                    "pgbackrest": {"repo": {"name": "repo1", "volume": {"volumeClaimSpec": volume()}}},
                })
            }),
        ),
        case(
            "nodePort on a ClusterIP primary Service",
            "spec.service.nodePort",
            "nodePort is allowed only with type NodePort or LoadBalancer",
            edit(minimal(), |m| {
                m["spec"]["service"] = json!({"type": "ClusterIP", "nodePort": 32000})
            }),
        ),
        case(
            "nodePort on a replica Service of default type",
            "spec.replicaService.nodePort",
            "nodePort is allowed only with type NodePort or LoadBalancer",
            edit(minimal(), |m| {
                m["spec"]["replicaService"] = json!({"nodePort": 32001})
            }),
        ),
        case(
            "nodePort on a ClusterIP PgBouncer Service",
            "spec.proxy.pgBouncer.service.nodePort",
            "nodePort is allowed only with type NodePort or LoadBalancer",
            edit(minimal(), |m| {
                m["spec"]["proxy"] = json!({"pgBouncer": {"service": {"nodePort": 32002}}})
            }),
        ),
    ]
}

#[test]
fn the_minimal_manifest_and_every_reference_manifest_pass_every_rule() {
    let schema = crd_schema();
    assert_eq!(cel_failures(&schema, &minimal(), None), vec![]);
    assert_eq!(cel_failures(&schema, &with_repo1(), None), vec![]);
    for (file, manifest) in examples() {
        assert_eq!(cel_failures(&schema, &manifest, None), vec![], "{file}");
        // Re-applying an unchanged manifest passes the transition rules too.
        assert_eq!(
            cel_failures(&schema, &manifest, Some(&manifest)),
            vec![],
            "{file}"
        );
    }
}

#[test]
fn each_rule_rejects_what_breaks_it_with_its_message_and_field() {
    let schema = crd_schema();
    for c in cases() {
        let failures = cel_failures(&schema, &c.manifest, None);
        assert!(
            failures.len() == 1
                && failures[0].path == c.path
                && failures[0].message.starts_with(c.message),
            "{}: expected one failure at {:?} starting {:?}, got {failures:#?}",
            c.what,
            c.path,
            c.message
        );
    }
}

#[test]
fn validate_rejects_what_the_rules_reject_at_the_same_field() {
    for c in cases() {
        let cluster: PostgresCluster = serde_json::from_value(c.manifest.clone())
            .unwrap_or_else(|e| panic!("{}: {e}", c.what));
        let errors = tusk_api::validate(&cluster)
            .err()
            .unwrap_or_else(|| panic!("{}: validate accepted it", c.what));
        let under_rule_path = |p: &str| match c.path {
            "" => p == "metadata.name",
            rule => p.starts_with(rule),
        };
        assert!(
            errors.paths().iter().any(|p| under_rule_path(p)),
            "{}: validate reported {errors} instead of a problem under {:?}",
            c.what,
            c.path
        );
    }
}

#[test]
fn every_rule_in_the_crd_is_exercised_by_a_case() {
    let schema = crd_schema();
    let mut messages = BTreeSet::new();
    collect_messages(&schema, &mut messages);
    let transition_only = ["spec.postgresVersion cannot change in place"];
    for message in &messages {
        let covered = cases().iter().any(|c| message.starts_with(c.message))
            || transition_only.iter().any(|t| message.starts_with(t));
        assert!(covered, "no test breaks the rule {message:?}");
    }
    assert!(messages.len() >= 20, "only {} rules found", messages.len());
}

fn collect_messages(schema: &Value, out: &mut BTreeSet<String>) {
    if let Some(rules) = schema["x-kubernetes-validations"].as_array() {
        out.extend(
            rules
                .iter()
                .map(|r| r["message"].as_str().unwrap().to_owned()),
        );
    }
    for key in ["properties", "additionalProperties", "items"] {
        match &schema[key] {
            Value::Object(map) if key == "properties" => {
                map.values().for_each(|s| collect_messages(s, out))
            }
            s @ Value::Object(_) => collect_messages(s, out),
            _ => {}
        }
    }
}

#[test]
fn postgres_version_cannot_change_in_place() {
    let schema = crd_schema();
    let old = minimal();
    let upgraded = edit(minimal(), |m| m["spec"]["postgresVersion"] = json!(16));
    // A new cluster may use any supported version ...
    assert_eq!(cel_failures(&schema, &upgraded, None), vec![]);
    // ... but an existing one keeps its major.
    let failures = cel_failures(&schema, &upgraded, Some(&old));
    assert_eq!(failures.len(), 1, "{failures:#?}");
    assert_eq!(failures[0].path, "spec.postgresVersion");
    assert!(failures[0]
        .message
        .starts_with("spec.postgresVersion cannot change in place"));
    // Other edits of an existing cluster are fine.
    let scaled = edit(minimal(), |m| {
        m["spec"]["instances"][0]["replicas"] = json!(3)
    });
    assert_eq!(cel_failures(&schema, &scaled, Some(&old)), vec![]);
}

/// The transition rule's equivalent for servers without CEL (the CRD variant of
/// `deploy/crds/without-cel/`): `validate` holds `spec.postgresVersion` to the major the
/// operator recorded in `status.postgresVersion` when the cluster was first reconciled.
#[test]
fn validate_holds_postgres_version_to_the_recorded_major_as_the_transition_rule_does() {
    let cluster = |version: i32, recorded: Option<i32>| {
        let mut m = edit(minimal(), |m| m["spec"]["postgresVersion"] = json!(version));
        if let Some(recorded) = recorded {
            m["status"] = json!({ "postgresVersion": recorded });
        }
        serde_json::from_value::<PostgresCluster>(m).unwrap()
    };
    let errors = tusk_api::validate(&cluster(16, Some(15))).unwrap_err();
    assert_eq!(errors.paths(), ["spec.postgresVersion"]);
    assert!(
        errors
            .to_string()
            .contains("cannot change in place from 15"),
        "{errors}"
    );
    assert!(tusk_api::validate(&cluster(15, Some(15))).is_ok());
    assert!(
        tusk_api::validate(&cluster(16, None)).is_ok(),
        "a new cluster may use any supported major, as with CEL (no oldSelf)"
    );
}

#[test]
fn patroni_timing_rule_agrees_with_validate_at_the_boundary() {
    let schema = crd_schema();
    for (lease, sync, ok) in [
        (None, 13, true),
        (None, 14, false),
        (Some(10), 8, true),
        (Some(10), 9, false),
        (Some(3), 1, true),
    ] {
        let mut patroni = json!({"syncPeriodSeconds": sync});
        if let Some(l) = lease {
            patroni["leaderLeaseDurationSeconds"] = json!(l);
        }
        let m = edit(minimal(), |m| m["spec"]["patroni"] = patroni);
        let cel_ok = cel_failures(&schema, &m, None).is_empty();
        let cluster: PostgresCluster = serde_json::from_value(m).unwrap();
        let validate_ok = tusk_api::validate(&cluster).is_ok();
        assert_eq!(
            (cel_ok, validate_ok),
            (ok, ok),
            "lease {lease:?} sync {sync}"
        );
    }
}

#[test]
fn the_derived_validate_cel_methods_run_the_same_rules() {
    // `#[kube(cel)]` on the resource and `#[x_kube(cel)]` on the spec.
    let ok: PostgresCluster = serde_json::from_value(with_repo1()).unwrap();
    assert!(ok.validate_cel().is_ok());
    let bad = edit(minimal(), |m| {
        m["spec"]["customTLSSecret"] = json!({"name": "x"})
    });
    let bad: PostgresCluster = serde_json::from_value(bad).unwrap();
    let errors = bad.validate_cel().unwrap_err();
    assert!(errors
        .iter()
        .any(|e| e.message.contains("customReplicationTLSSecret")));
    let spec = serde_json::to_value(&bad.spec).unwrap();
    assert!(tusk_api::PostgresClusterSpec::validate_cel(&spec, None).is_err());
    let upgraded = edit(minimal(), |m| m["spec"]["postgresVersion"] = json!(16));
    let upgraded: PostgresCluster = serde_json::from_value(upgraded).unwrap();
    let old: PostgresCluster = serde_json::from_value(minimal()).unwrap();
    assert!(upgraded.validate_cel_update(&old).is_err());
}
