//! Shared by the lifecycle pod tests (`pods_scale.rs`, `pods_lifecycle.rs`): what a user
//! checks about a running cluster's members from outside (pod identity, container restarts,
//! PostgreSQL's start time, rows), and the edits those tests make to a `PostgresCluster`.

#![allow(dead_code)] // each test crate uses a different subset

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Patch, PatchParams};
use kube::Client;
use serde_json::Value;
use tusk_api::naming::{ClusterNames, DnsLabel};

use super::kube_support::{eventually, objects};
use super::node_support::{instance_pods, Node};

/// Apply to Ready includes pulling the database image the first time.
pub const READY_LIMIT: Duration = Duration::from_secs(600);

pub fn names(cluster: &str) -> ClusterNames {
    ClusterNames::new(DnsLabel::new(cluster).expect("a cluster name"))
}

pub fn pod_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|conditions| {
            conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
        })
}

pub fn uid(pod: &Pod) -> String {
    pod.metadata.uid.clone().unwrap_or_default()
}

/// Restart count per container.
pub fn restart_counts(pod: &Pod) -> BTreeMap<String, i32> {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .into_iter()
        .flatten()
        .map(|c| (c.name.clone(), c.restart_count))
        .collect()
}

/// Runs `sql` as the superuser in pod `pod`'s database container (peer authentication over
/// the Unix socket, through `kubectl exec`); returns psql's unaligned output.
pub fn superuser_sql(node: &Node, namespace: &str, pod: &str, sql: &str) -> String {
    try_superuser_sql(node, namespace, pod, sql)
        .unwrap_or_else(|e| panic!("psql in {pod} failed: {e}"))
}

/// [`superuser_sql`], with the failure as an error (for polling).
pub fn try_superuser_sql(
    node: &Node,
    namespace: &str,
    pod: &str,
    sql: &str,
) -> Result<String, String> {
    node.superuser_sql(namespace, pod, sql)
}

/// What must not change about a member unless someone asked for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberFacts {
    pub uid: String,
    pub restarts: BTreeMap<String, i32>,
    pub postmaster_start: String,
}

/// [`MemberFacts`] of every instance pod of `cluster`, by pod name.
pub async fn member_facts(
    node: &Node,
    client: &Client,
    namespace: &str,
    cluster: &str,
) -> BTreeMap<String, MemberFacts> {
    let mut facts = BTreeMap::new();
    for (name, pod) in instance_pods(client, namespace, cluster).await {
        let postmaster_start =
            superuser_sql(node, namespace, &name, "select pg_postmaster_start_time()");
        facts.insert(
            name,
            MemberFacts {
                uid: uid(&pod),
                restarts: restart_counts(&pod),
                postmaster_start,
            },
        );
    }
    facts
}

/// A JSON merge patch of the cluster (as `kubectl patch --type merge`); returns the new
/// `metadata.generation`.
pub async fn patch_cluster(client: &Client, namespace: &str, name: &str, patch: Value) -> i64 {
    objects::clusters(client, namespace)
        .patch(name, &PatchParams::default(), &Patch::Merge(patch))
        .await
        .unwrap_or_else(|e| panic!("patching {namespace}/{name}: {e}"))
        .metadata
        .generation
        .expect("a generation")
}

/// `metadata.generation` of the cluster.
pub async fn generation(client: &Client, namespace: &str, name: &str) -> i64 {
    objects::clusters(client, namespace)
        .get(name)
        .await
        .expect("the cluster")
        .metadata
        .generation
        .expect("a generation")
}

/// Waits for `status.observedGeneration` to reach `generation`: the operator looked at the
/// spec as it is now.
pub async fn wait_observed(client: &Client, namespace: &str, name: &str, generation: i64) {
    eventually(
        &format!("{namespace}/{name} observedGeneration {generation}"),
        Duration::from_secs(180),
        || async {
            let cluster = objects::clusters(client, namespace).get(name).await.ok()?;
            (cluster.data["status"]["observedGeneration"].as_i64() >= Some(generation))
                .then_some(())
        },
    )
    .await
}

/// The condition `type_` of the cluster as JSON (`Null` when absent).
pub async fn condition(client: &Client, namespace: &str, name: &str, type_: &str) -> Value {
    let cluster = objects::clusters(client, namespace)
        .get(name)
        .await
        .expect("the cluster");
    objects::condition(&cluster, type_)
}

/// Waits for condition `type_` to carry `observedGeneration >= generation` (a failed or paused
/// reconcile records what it saw in its conditions; `status.observedGeneration` moves only
/// when the spec was applied); returns the condition.
pub async fn wait_condition_observed(
    client: &Client,
    namespace: &str,
    name: &str,
    type_: &str,
    generation: i64,
) -> Value {
    eventually(
        &format!("{namespace}/{name} condition {type_} at generation {generation}"),
        Duration::from_secs(180),
        || async {
            let cluster = objects::clusters(client, namespace).get(name).await.ok()?;
            let condition = objects::condition(&cluster, type_);
            (condition["observedGeneration"].as_i64() >= Some(generation)).then_some(condition)
        },
    )
    .await
}
