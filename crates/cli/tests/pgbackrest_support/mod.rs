//! Shared by the backup and restore pod tests (`pods_backups`, `pods_restores`) and the pods
//! benchmark: clusters with a `volume` repo (the in-cluster repo host), SQL as the superuser
//! through `kubectl exec`, the cluster's status, backup Jobs and their pods, and
//! `pgbackrest info` in the repo host.

#![allow(dead_code)] // each test crate uses a different subset

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, LogParams, Patch, PatchParams};
use kube::Client;
use serde_json::{json, Value};

use super::kube_support::{eventually, objects};
use super::node_support::Node;

/// Resources of one instance or repo host: small enough that a 3-instance cluster, its repo
/// host and a second cluster fit a 2-CPU node (as `examples/02-hippo-ha.yaml` is sized).
pub const SMALL: &str = "{requests: {cpu: 100m, memory: 256Mi}, limits: {cpu: '1', memory: 1Gi}}";
pub const VOLUME: &str = "{accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}";

/// A PostgresCluster `name` in `namespace` with `replicas` instances and one volume repo
/// (`repo1`, on the repo host), PostgreSQL 15; `backups_extra` goes under
/// `spec.backups.pgbackrest`, `spec_extra` under `spec` (both indented by the caller).
pub fn cluster_manifest(
    name: &str,
    namespace: &str,
    replicas: u32,
    backups_extra: &str,
    spec_extra: &str,
) -> String {
    format!(
        r#"apiVersion: tusk.rs/v1beta1
kind: PostgresCluster
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  postgresVersion: 15
  instances:
    - name: instance1
      replicas: {replicas}
      resources: {SMALL}
      dataVolumeClaimSpec: {VOLUME}
  patroni:
    dynamicConfiguration:
      postgresql:
        parameters: {{shared_buffers: 64MB, max_worker_processes: 4, max_parallel_workers: 2}}
  backups:
    pgbackrest:
      repoHost: {{resources: {SMALL}}}
      repos:
        - name: repo1
          volume: {{volumeClaimSpec: {VOLUME}}}
{backups_extra}
{spec_extra}
"#
    )
}

/// Applies `manifest` with `kubectl apply`, as a user would.
pub fn apply(node: &Node, manifest: &str) {
    node.kubectl_ok(&["apply", "-f", "-"], Some(manifest));
}

/// Runs `sql` as the superuser in pod `pod`'s database container (peer authentication over
/// the Unix socket); psql's unaligned output, trimmed. `None` when psql fails.
pub fn try_superuser_sql(node: &Node, namespace: &str, pod: &str, sql: &str) -> Option<String> {
    node.superuser_sql(namespace, pod, sql).ok()
}

/// [`try_superuser_sql`], panicking with psql's error when it fails.
pub fn superuser_sql(node: &Node, namespace: &str, pod: &str, sql: &str) -> String {
    node.superuser_sql(namespace, pod, sql)
        .unwrap_or_else(|e| panic!("psql in {pod} failed: {e}"))
}

/// The cluster's `status` as JSON (`Null` before the first write).
pub async fn status(client: &Client, namespace: &str, name: &str) -> Value {
    objects::clusters(client, namespace)
        .get(name)
        .await
        .map(|c| c.data["status"].clone())
        .unwrap_or(Value::Null)
}

/// Merge-patches the cluster (spec, metadata) as `kubectl patch --type=merge` would.
pub async fn patch_cluster(client: &Client, namespace: &str, name: &str, patch: Value) {
    objects::clusters(client, namespace)
        .patch(name, &PatchParams::default(), &Patch::Merge(patch))
        .await
        .unwrap_or_else(|e| panic!("patching {namespace}/{name}: {e}"));
}

/// Sets annotation `key` on the cluster.
pub async fn annotate(client: &Client, namespace: &str, name: &str, key: &str, value: &str) {
    patch_cluster(
        client,
        namespace,
        name,
        json!({"metadata": {"annotations": {key: value}}}),
    )
    .await;
}

/// The log of every pod of Job `job`, for failure messages.
pub async fn job_log(client: &Client, namespace: &str, job: &str) -> String {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let mut out = String::new();
    for pod in job_pods(client, namespace, job).await {
        let name = pod.metadata.name.unwrap_or_default();
        let log = pods
            .logs(&name, &LogParams::default())
            .await
            .unwrap_or_else(|e| format!("(no log: {e})"));
        out.push_str(&format!("--- {name}\n{log}\n"));
    }
    out
}

/// The pods of Job `job` (by the `job-name` label the Job controller sets).
pub async fn job_pods(client: &Client, namespace: &str, job: &str) -> Vec<Pod> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    pods.list(&ListParams::default().labels(&format!("job-name={job}")))
        .await
        .expect("listing a Job's pods")
        .items
}

/// Waits until one Job matching `selector` succeeded and returns it; panics with its pods'
/// logs if it failed.
pub async fn wait_job_succeeded(
    client: &Client,
    namespace: &str,
    selector: &str,
    limit: Duration,
) -> Job {
    let api: Api<Job> = Api::namespaced(client.clone(), namespace);
    let what = format!("a Job {selector} in {namespace} succeeded");
    let outcome = eventually(&what, limit, || async {
        let jobs = api
            .list(&ListParams::default().labels(selector))
            .await
            .ok()?
            .items;
        jobs.into_iter().find_map(|job| {
            let status = job.status.clone().unwrap_or_default();
            let failed = status
                .conditions
                .iter()
                .flatten()
                .any(|c| c.type_ == "Failed" && c.status == "True");
            (status.succeeded.unwrap_or(0) > 0 || failed).then_some((job, failed))
        })
    })
    .await;
    let (job, failed) = outcome;
    if failed {
        let name = job.metadata.name.clone().unwrap_or_default();
        panic!(
            "Job {name} failed:\n{}",
            job_log(client, namespace, &name).await
        );
    }
    job
}

/// The labels every object of cluster `cluster` carries (`naming::cluster_labels`).
pub fn cluster_labels(cluster: &str) -> BTreeMap<String, String> {
    tusk_api::naming::cluster_labels(cluster)
}

/// Asserts `pod` carries every label of `expected`.
pub fn assert_labels(pod: &Pod, expected: &BTreeMap<String, String>) {
    let name = pod.metadata.name.clone().unwrap_or_default();
    let labels = pod.metadata.labels.clone().unwrap_or_default();
    for (key, value) in expected {
        assert_eq!(
            labels.get(key),
            Some(value),
            "pod {name} lacks label {key}={value}: {labels:?}"
        );
    }
}

/// The repo host's pod of cluster `cluster` (`<c>-repo-host`, a StatefulSet of one).
pub fn repo_host_pod(cluster: &str) -> String {
    format!("{cluster}-repo-host-0")
}

/// `pgbackrest info --output=json` for the stanza, run in the repo host's pgBackRest
/// container: the repository's own list of backups.
pub fn pgbackrest_info(node: &Node, namespace: &str, cluster: &str) -> Value {
    let out = node.kubectl_ok(
        &[
            "exec",
            "-n",
            namespace,
            &repo_host_pod(cluster),
            "-c",
            "pgbackrest",
            "--",
            "pgbackrest",
            "--stanza=db",
            "--output=json",
            "info",
        ],
        None,
    );
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("pgbackrest info JSON ({e}): {out}"))
}

/// `(type, label)` of every backup `pgbackrest info` lists for the stanza.
pub fn listed_backups(info: &Value) -> Vec<(String, String)> {
    info.as_array()
        .into_iter()
        .flatten()
        .flat_map(|stanza| stanza["backup"].as_array().cloned().unwrap_or_default())
        .map(|b| {
            (
                b["type"].as_str().unwrap_or_default().to_owned(),
                b["label"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

/// The pod Patroni's leader lock names for cluster `cluster`.
pub async fn leader(client: &Client, namespace: &str, cluster: &str, limit: Duration) -> String {
    let scope = format!("{cluster}-ha");
    eventually("a Patroni leader", limit, || {
        super::node_support::patroni_leader(client, namespace, &scope)
    })
    .await
}
