//! The real `tusk operator` binary against a real kube-apiserver (scripts/kube-testenv):
//! every reference manifest becomes exactly the objects `tusk render` lists (kinds the server
//! does not serve are skipped and reported), the status and Events appear, and once settled
//! no reconcile writes again: not when poked, not after a restart, not after an upgrade.
//! Deleted objects come back; deleting a cluster garbage-collects what it owns. Each test
//! starts its own control plane and operators; writes only there.

mod kube_support;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::Client;
use kube_support::objects::*;
use kube_support::{control_plane, eventually, Operator, OPERATOR_NAMESPACE};
use serde_json::{json, Value};
use tusk_api::naming;

/// One reference manifest, created in a namespace of its own (several reuse one name).
struct Reference {
    path: PathBuf,
    namespace: String,
    name: String,
}

fn reference_manifests() -> Vec<PathBuf> {
    let dir = kube_support::repo_root().join("examples");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(|c: char| c.is_ascii_digit()))
        })
        .collect();
    files.sort();
    assert!(
        files.len() >= 7,
        "expected the 7 reference manifests in {}",
        dir.display()
    );
    files
}

/// The comparable names `tusk render` gives for `reference`, without the kinds this server
/// does not serve.
async fn expected_names(client: &Client, reference: &Reference) -> (Vec<String>, Vec<String>) {
    let docs = rendered(&reference.path);
    let mut served = Vec::new();
    let mut not_served = Vec::new();
    for doc in docs {
        let (api_version, kind) = (
            doc["apiVersion"].as_str().unwrap(),
            doc["kind"].as_str().unwrap(),
        );
        if serves(client, api_version, kind).await {
            served.push(doc);
        } else {
            not_served.push(doc);
        }
    }
    (comparable_names(&served), comparable_names(&not_served))
}

/// Plays the Job controller this control plane does not run, for a cluster cloned from
/// `spec.dataSource`: the operator holds the instance StatefulSets back until its restore Job
/// succeeded, so the test reports that Job as complete once the operator created it. No pod
/// runs here; what the Job does is proven by `tusk local`'s restore tests.
async fn finish_restore_job(client: &Client, reference: &Reference) {
    let jobs: Api<Job> = Api::namespaced(client.clone(), &reference.namespace);
    let name = format!("{}-pgbackrest-restore", reference.name);
    let Ok(Some(job)) = jobs.get_opt(&name).await else {
        return;
    };
    if job.status.and_then(|s| s.succeeded).unwrap_or(0) > 0 {
        return;
    }
    let status = json!({"status": {
        "startTime": "2026-11-21T10:00:00Z",
        "completionTime": "2026-11-21T10:01:00Z",
        "succeeded": 1,
        "conditions": [{"type": "Complete", "status": "True",
                        "lastProbeTime": "2026-11-21T10:01:00Z",
                        "lastTransitionTime": "2026-11-21T10:01:00Z"}],
    }});
    jobs.patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .expect("marking the restore Job complete");
}

/// Merge-patches an annotation on every cluster: a watch event, so one reconcile each.
async fn poke(client: &Client, references: &[Reference], round: u32) {
    for r in references {
        let patch = json!({"metadata": {"annotations": {"test.tusk.rs/poke": round.to_string()}}});
        clusters(client, &r.namespace)
            .patch(&r.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .expect("annotating the cluster");
    }
}

/// Pokes every cluster and waits until the operator finished twice as many reconciles (so at
/// least one per cluster began after the poke).
async fn reconcile_all(client: &Client, operator: &Operator, references: &[Reference], round: u32) {
    let from = operator
        .reconciles()
        .await
        .expect("the operator serves /metrics");
    poke(client, references, round).await;
    operator
        .wait_reconciles(from, 2 * references.len() as u64)
        .await;
}

fn namespaces(references: &[Reference]) -> Vec<String> {
    references.iter().map(|r| r.namespace.clone()).collect()
}

async fn assert_unchanged(
    client: &Client,
    references: &[Reference],
    before: &Snapshot,
    when: &str,
) {
    let after = snapshot(client, &namespaces(references)).await;
    let changes = snapshot_changes(before, &after);
    assert!(
        changes.is_empty(),
        "{when}: objects were written although nothing changed:\n{}",
        changes.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn reference_manifests_reconcile_settle_and_stay_settled_across_restart_and_upgrade() {
    let Some((plane, client)) = control_plane(true, &[OPERATOR_NAMESPACE]).await else {
        return;
    };
    let operator = Operator::start(&plane, "operator-a", &[]);

    let mut references = Vec::new();
    let paths = reference_manifests();
    for (i, path) in paths.iter().enumerate() {
        let object = manifest(path);
        let namespace = format!("reference-{i}");
        create_namespace(&client, &namespace).await;
        // A clone needs its source: the reference manifest of that name, in the same namespace
        // (example 05 clones example 01's `hippo`), checked like every other reference.
        let source = object["spec"]["dataSource"]["postgresCluster"]["clusterName"].as_str();
        let source_path = source.and_then(|name| {
            paths
                .iter()
                .find(|p| manifest(p)["metadata"]["name"].as_str() == Some(name))
        });
        for path in source_path.into_iter().chain([path]) {
            let object = manifest(path);
            let name = object["metadata"]["name"].as_str().unwrap().to_owned();
            create_custom_tls_secrets(&client, &namespace, &object).await;
            create_cluster(&client, &namespace, object)
                .await
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            references.push(Reference {
                path: path.clone(),
                namespace: namespace.clone(),
                name,
            });
        }
    }

    // Every object `tusk render` lists exists, and nothing else carries the cluster label.
    // The optional kinds Tusk builds: PodDisruptionBudgets (policy/v1, 1.21+) and backup
    // CronJobs (batch/v1, 1.21+; 1.20 has only batch/v1beta1).
    const OPTIONAL: [(&str, &str); 2] = [
        ("policy/v1", "PodDisruptionBudget"),
        ("batch/v1", "CronJob"),
    ];
    let mut skipped: BTreeMap<&str, usize> = BTreeMap::new();
    for r in &references {
        let (expected, not_served) = expected_names(&client, r).await;
        let what = format!("the objects of {} in {}", r.name, r.namespace);
        let live = eventually(&what, Duration::from_secs(120), || async {
            finish_restore_job(&client, r).await;
            let live = comparable_names(&live_objects(&client, &r.namespace, &r.name).await);
            (live == expected).then_some(live)
        })
        .await;
        assert!(!live.is_empty());
        for name in &not_served {
            let kind = OPTIONAL
                .iter()
                .map(|(_, kind)| *kind)
                .find(|kind| name.starts_with(&format!("{kind} ")));
            let kind = kind.unwrap_or_else(|| {
                panic!(
                    "{}: rendered kinds the server lacks: {not_served:?}",
                    r.path.display()
                )
            });
            *skipped.entry(kind).or_default() += 1;
        }
        check_status_and_events(&client, r, &not_served).await;
    }
    // The reference manifests render both (HA sets, schedules): on a server without their API
    // they were skipped, not fatal; on one with it, none was skipped.
    for (api_version, kind) in OPTIONAL {
        let count = skipped.get(kind).copied().unwrap_or_default();
        assert_eq!(
            count > 0,
            !serves(&client, api_version, kind).await,
            "skipped {kind}s: {count}"
        );
    }
    eprintln!(
        "every reference manifest reconciled: {} clusters",
        references.len()
    );

    // Settled: more reconciles write nothing.
    reconcile_all(&client, &operator, &references, 1).await;
    let settled = snapshot(&client, &namespaces(&references)).await;
    for round in 2..=3 {
        reconcile_all(&client, &operator, &references, round).await;
        assert_unchanged(&client, &references, &settled, "poked reconciles").await;
    }
    let first_version = version_annotation(&client, &references[0]).await;

    // A restarted operator (a new process and identity) reconciles everything, writes nothing.
    operator.terminate();
    let restarted = Operator::start(&plane, "operator-b", &[]);
    restarted.wait_reconciles(0, references.len() as u64).await;
    reconcile_all(&client, &restarted, &references, 4).await;
    assert_unchanged(&client, &references, &settled, "after a restart").await;
    restarted.terminate();

    // An upgraded operator (another version string) neither: the version is not a reason to
    // write; it is stamped only when an object is written for another reason.
    const UPGRADED: &str = "99.0.0-upgrade-test";
    assert_ne!(first_version, UPGRADED);
    let upgraded = Operator::start(&plane, "operator-c", &[("TUSK_BUILD_VERSION", UPGRADED)]);
    upgraded.wait_reconciles(0, references.len() as u64).await;
    reconcile_all(&client, &upgraded, &references, 5).await;
    assert_unchanged(&client, &references, &settled, "after an upgrade").await;

    // A deleted primary Service comes back, written by the upgraded operator.
    let first = &references[0];
    let services: Api<Service> = Api::namespaced(client.clone(), &first.namespace);
    let primary = format!("{}-primary", first.name);
    let old_uid = services
        .get(&primary)
        .await
        .expect("primary Service")
        .metadata
        .uid;
    services
        .delete(&primary, &DeleteParams::default())
        .await
        .expect("deleting the primary Service");
    let healed = eventually(
        "the primary Service to come back",
        Duration::from_secs(60),
        || async {
            services
                .get(&primary)
                .await
                .ok()
                .filter(|s| s.metadata.uid != old_uid)
        },
    )
    .await;
    let annotations = healed.metadata.annotations.unwrap_or_default();
    assert_eq!(
        annotations
            .get(naming::ANNOTATION_OPERATOR_VERSION)
            .map(String::as_str),
        Some(UPGRADED)
    );
    assert_eq!(version_annotation(&client, first).await, first_version);
    eprintln!("operator log tail:\n{}", tail(&upgraded.log(), 5));
}

/// The operator version annotation on the first instance StatefulSet of `reference`.
async fn version_annotation(client: &Client, reference: &Reference) -> String {
    let sets: Api<StatefulSet> = Api::namespaced(client.clone(), &reference.namespace);
    let params =
        kube::api::ListParams::default().labels(&naming::cluster_selector(&reference.name));
    let list = sets.list(&params).await.expect("listing StatefulSets");
    let set = list.items.first().expect("an instance StatefulSet");
    set.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(naming::ANNOTATION_OPERATOR_VERSION))
        .cloned()
        .expect("the operator stamps its version on what it writes")
}

/// Conditions with the current generation; Normal `Created` Events; and, when the server
/// lacks an API, `Degraded` with reason `APINotServed` and one Warning Event saying so.
async fn check_status_and_events(client: &Client, r: &Reference, not_served: &[String]) {
    let api = clusters(client, &r.namespace);
    let what = format!("status conditions of {}", r.name);
    let cluster = eventually(&what, Duration::from_secs(60), || async {
        let c = api.get(&r.name).await.ok()?;
        let generation = c.metadata.generation?;
        let current = ["Ready", "Progressing", "Degraded"]
            .iter()
            .all(|t| condition(&c, t)["observedGeneration"] == json!(generation));
        current.then_some(c)
    })
    .await;
    let degraded = condition(&cluster, "Degraded");
    if not_served.is_empty() {
        assert_eq!(degraded["status"], "False", "{degraded}");
    } else {
        assert_eq!(degraded["status"], "True", "{degraded}");
        assert_eq!(degraded["reason"], "APINotServed", "{degraded}");
        let message = degraded["message"].as_str().unwrap_or_default();
        for name in not_served {
            let object = name.split_once(' ').unwrap().1.replace("????", "");
            assert!(message.contains(&object), "{message} should name {name}");
        }
    }
    let events = eventually(
        "Events about the cluster",
        Duration::from_secs(30),
        || async {
            let events = events_about(client, &r.namespace, &r.name).await;
            let created = events
                .iter()
                .any(|e| e.reason.as_deref() == Some("Created"));
            let warned = not_served.is_empty()
                || events.iter().any(|e| {
                    e.reason.as_deref() == Some("APINotServed")
                        && e.type_.as_deref() == Some("Warning")
                });
            (created && warned).then_some(events)
        },
    )
    .await;
    let warnings: BTreeMap<&str, i32> = events
        .iter()
        .filter(|e| e.type_.as_deref() == Some("Warning"))
        .map(|e| {
            (
                e.reason.as_deref().unwrap_or_default(),
                e.series.as_ref().map_or(1, |s| s.count),
            )
        })
        .collect();
    assert!(
        warnings.keys().all(|r| *r == "APINotServed"),
        "unexpected Warning Events for {}: {warnings:?}",
        r.name
    );
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[tokio::test(flavor = "multi_thread")]
async fn deleted_objects_come_back_and_deleting_the_cluster_collects_them() {
    let Some((plane, client)) = control_plane(true, &[OPERATOR_NAMESPACE, "tusk"]).await else {
        return;
    };
    let operator = Operator::start(&plane, "operator", &[]);
    let path = kube_support::repo_root().join("examples/02-hippo-ha.yaml");
    let object = manifest(&path);
    let name = object["metadata"]["name"].as_str().unwrap().to_owned();
    let created = create_cluster(&client, "tusk", object)
        .await
        .expect("cluster created");
    let reference = Reference {
        path,
        namespace: "tusk".into(),
        name: name.clone(),
    };
    let (expected, _) = expected_names(&client, &reference).await;
    eventually("every object", Duration::from_secs(120), || async {
        let live = comparable_names(&live_objects(&client, "tusk", &name).await);
        (live == expected).then_some(())
    })
    .await;

    // A deleted instance StatefulSet comes back under the same name (its PVCs keep the name).
    let sets: Api<StatefulSet> = Api::namespaced(client.clone(), "tusk");
    let params = kube::api::ListParams::default().labels(&naming::cluster_selector(&name));
    let before: Vec<StatefulSet> = sets.list(&params).await.unwrap().items;
    let victim = before[0].metadata.name.clone().unwrap();
    let old_uid = before[0].metadata.uid.clone();
    sets.delete(&victim, &DeleteParams::default())
        .await
        .expect("deleting a StatefulSet");
    eventually(
        "the StatefulSet to come back",
        Duration::from_secs(60),
        || async {
            sets.get(&victim)
                .await
                .ok()
                .filter(|s| s.metadata.uid != old_uid)
        },
    )
    .await;
    let after: Vec<String> = sets
        .list(&params)
        .await
        .unwrap()
        .items
        .iter()
        .filter_map(|s| s.metadata.name.clone())
        .collect();
    let before: Vec<String> = before
        .iter()
        .filter_map(|s| s.metadata.name.clone())
        .collect();
    assert_eq!(after, before, "the same instances, no new one");

    // Deleting the cluster: the operator's finalizer stops the instances (no pods here) and
    // removes Patroni's Endpoints, then kube-controller-manager's garbage collector removes
    // every object the cluster owns.
    let uid = created.metadata.uid.clone().expect("a uid");
    clusters(&client, "tusk")
        .delete(&name, &DeleteParams::background())
        .await
        .expect("deleting the cluster");
    let left = eventually("garbage collection", Duration::from_secs(120), || async {
        let owned: Vec<Value> = live_objects(&client, "tusk", &name)
            .await
            .into_iter()
            .filter(|o| {
                o["metadata"]["ownerReferences"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|r| r["uid"] == json!(uid))
            })
            .collect();
        owned.is_empty().then(|| live_objects_names(&owned))
    })
    .await;
    assert!(left.is_empty());
    let remaining = live_objects(&client, "tusk", &name).await;
    assert!(
        remaining.is_empty(),
        "labelled objects left after the cluster was deleted: {:?}",
        live_objects_names(&remaining)
    );
    drop(operator);
}

fn live_objects_names(objects: &[Value]) -> Vec<String> {
    comparable_names(objects)
}
