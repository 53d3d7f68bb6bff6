//! Monitoring as Prometheus sees it: a pod in the cluster's namespace scrapes every instance's
//! `exporter` sidecar on its pod IP (what the shipped PodMonitor does), and the operator's
//! `metrics` port. Scraping from a pod rather than from the test host proves what the host
//! cannot: the exporter listens on the pod network, not only on localhost, and a pod reaches
//! it across pods. The kubelet's volume statistics are read through the API server's node
//! proxy, the way Prometheus' kubelet job reads them.
//!
//! The metric names come from the shipped dashboards and alert rules (`deploy/monitoring`),
//! parsed as `tusk_config::exporter` parses them, so a metric a new panel or rule uses is
//! checked here without editing this file. The cluster has a streaming replica and a finished
//! backup, so no series the dashboards chart is legitimately empty.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node as KubeNode, PersistentVolume, PersistentVolumeClaim, Pod};
use kube::api::{Api, ListParams};
use serde_json::json;
use tusk_api::naming;
use tusk_config::exporter::{
    dashboard_expressions, exporter_metric_names, promql_metric_names, rule_expressions,
};

use super::{pod_ip, pod_name, Ctx};
use crate::kube_support::{eventually, repo_root};
use crate::node_support::{cluster_condition, wait_condition};

/// Why the kubelet's volume statistics cannot appear on the test node.
const HOST_PATH_VOLUMES: &str = "the test node's PersistentVolumes are hostPath volumes \
    (scripts/kube-testenv's local pool), for which the kubelet reports no volume statistics; \
    on CSI or `local` volumes it does";

/// Metrics the dashboards or rules use that cannot honestly appear in this test, with the
/// reason. The test checks each reason still holds (the volumes are hostPath) and that each
/// metric is still used, so the list cannot outlive its cause.
const ABSENT_HERE: &[(&str, &str)] = &[
    ("kubelet_volume_stats_available_bytes", HOST_PATH_VOLUMES),
    ("kubelet_volume_stats_capacity_bytes", HOST_PATH_VOLUMES),
];

/// The id of the manual backup this scenario asks for.
const BACKUP_ID: &str = "monitoring-scrape";

/// Every metric name the dashboards and alert rules reference.
fn referenced_metrics() -> BTreeSet<String> {
    let dir = repo_root().join("deploy/monitoring");
    let rules = std::fs::read_to_string(dir.join("prometheus-rules.yaml")).expect("the rules");
    let mut expressions = rule_expressions(&rules).expect("the rules parse");
    for entry in std::fs::read_dir(dir.join("dashboards")).expect("the dashboards") {
        let path = entry.expect("a dashboard").path();
        if path.extension().is_some_and(|e| e == "json") {
            let text = std::fs::read_to_string(&path).expect("a dashboard");
            expressions.extend(dashboard_expressions(&text).expect("the dashboard parses"));
        }
    }
    expressions
        .iter()
        .flat_map(|(_, expr)| promql_metric_names(expr))
        .collect()
}

/// One sample line: metric name, the label text between the braces, value.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: String,
    value: f64,
}

fn samples(exposition: &str) -> Vec<Sample> {
    exposition
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let name_end = l.find(['{', ' '])?;
            let labels = match l[name_end..].strip_prefix('{') {
                Some(rest) => rest.split_once('}')?.0.to_owned(),
                None => String::new(),
            };
            let value = l.rsplit(' ').next()?.parse().ok()?;
            Some(Sample {
                name: l[..name_end].to_owned(),
                labels,
                value,
            })
        })
        .collect()
}

fn value(samples: &[Sample], name: &str, label: Option<&str>) -> Option<f64> {
    samples
        .iter()
        .find(|s| s.name == name && label.is_none_or(|l| s.labels.contains(l)))
        .map(|s| s.value)
}

/// Scrapes `urls` from a pod (python3 of the database image); the bodies by URL.
async fn scrape_from_a_pod(ctx: &Ctx<'_>, job: &str, urls: &[String]) -> BTreeMap<String, String> {
    const SCRAPE: &str = "import sys, urllib.request\n\
        for url in sys.argv[1:]:\n    \
            body = urllib.request.urlopen(url, timeout=20).read().decode()\n    \
            print('### ' + url)\n    \
            print(body)\n";
    let script = format!("python3 -c \"{SCRAPE}\" {}", urls.join(" "));
    let result = ctx.psql_job(job, &ctx.cluster, "uri", &script).await;
    assert!(result.succeeded, "the scrape Job failed:\n{}", result.log);
    let mut bodies = BTreeMap::new();
    let mut current: Option<(String, String)> = None;
    for line in result.log.lines() {
        if let Some(url) = line.strip_prefix("### ") {
            bodies.extend(current.take());
            current = Some((url.to_owned(), String::new()));
        } else if let Some((_, body)) = current.as_mut() {
            body.push_str(line);
            body.push('\n');
        }
    }
    bodies.extend(current);
    bodies
}

/// `http://<ip>:<port>/metrics` of every running operator pod, from its `metrics` container
/// port: only the replica holding the leader lease reconciles, so only its cluster series
/// exist, and Prometheus (like this test) scrapes them all.
async fn operator_metrics_urls(ctx: &Ctx<'_>) -> Vec<String> {
    let pods: Api<Pod> = Api::namespaced(
        ctx.client.clone(),
        tusk_operator::controller::DEFAULT_OPERATOR_NAMESPACE,
    );
    let list = pods
        .list(&ListParams::default().labels(&format!("{}=tusk", naming::APP_NAME)))
        .await
        .expect("listing the operator's pods");
    let urls: Vec<String> = list
        .items
        .iter()
        .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
        .map(|pod| {
            let port = pod
                .spec
                .iter()
                .flat_map(|s| &s.containers)
                .flat_map(|c| c.ports.iter().flatten())
                .find(|p| p.name.as_deref() == Some("metrics"))
                .expect("the operator's metrics port")
                .container_port;
            format!("http://{}:{port}/metrics", pod_ip(pod))
        })
        .collect();
    assert!(!urls.is_empty(), "a running operator pod");
    urls
}

/// Whether every PersistentVolume bound to this cluster's claims is a hostPath volume.
async fn volumes_are_host_paths(ctx: &Ctx<'_>) -> bool {
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), ctx.namespace);
    let volumes: Api<PersistentVolume> = Api::all(ctx.client.clone());
    let mut any = false;
    for claim in claims
        .list(&ListParams::default().labels(&naming::cluster_selector(&ctx.cluster)))
        .await
        .expect("listing the cluster's claims")
        .items
    {
        let Some(volume) = claim.spec.and_then(|s| s.volume_name) else {
            continue;
        };
        let pv = volumes.get(&volume).await.expect("a bound volume");
        if pv.spec.and_then(|s| s.host_path).is_none() {
            return false;
        }
        any = true;
    }
    any
}

/// The kubelet's own /metrics, through the API server's node proxy.
async fn kubelet_metrics(ctx: &Ctx<'_>) -> String {
    let nodes: Api<KubeNode> = Api::all(ctx.client.clone());
    let node = nodes
        .list(&ListParams::default())
        .await
        .expect("listing nodes")
        .items
        .into_iter()
        .next()
        .and_then(|n| n.metadata.name)
        .expect("the node");
    ctx.node.kubectl_ok(
        &[
            "get",
            "--raw",
            &format!("/api/v1/nodes/{node}/proxy/metrics"),
        ],
        None,
    )
}

/// A manual backup through `spec.backups.pgbackrest.manual` and the annotation, finished.
async fn take_a_backup(ctx: &Ctx<'_>) {
    wait_condition(
        ctx.client,
        ctx.namespace,
        &ctx.cluster,
        "BackupsReady",
        Duration::from_secs(600),
    )
    .await;
    ctx.patch_cluster(json!({
        "metadata": {"annotations": {naming::ANNOTATION_BACKUP: BACKUP_ID}},
        "spec": {"backups": {"pgbackrest": {
            "manual": {"repoName": "repo1", "options": ["--type=full"]}
        }}}
    }))
    .await;
    let clusters = crate::kube_support::objects::clusters(ctx.client, ctx.namespace);
    let manual = eventually(
        "status.pgbackrest.manualBackup to finish",
        Duration::from_secs(600),
        || async {
            let object = clusters.get(&ctx.cluster).await.ok()?;
            let manual = object.data["status"]["pgbackrest"]["manualBackup"].clone();
            (manual["id"] == BACKUP_ID && manual["finished"] == true).then_some(manual)
        },
    )
    .await;
    assert!(
        manual["succeeded"].as_i64().unwrap_or(0) > 0,
        "the manual backup failed: {manual}"
    );
}

/// A second PostgresCluster whose custom TLS Secret does not exist: the operator refuses it
/// before creating anything, which is the one honest way to make `tusk_reconcile_errors_total`
/// (a counter that only exists once a reconcile failed) appear.
async fn a_cluster_the_operator_refuses(ctx: &Ctx<'_>) -> &'static str {
    const NAME: &str = "refused";
    let manifest = json!({
        "apiVersion": "tusk.rs/v1beta1",
        "kind": "PostgresCluster",
        "metadata": {"name": NAME, "namespace": ctx.namespace},
        "spec": {
            "postgresVersion": 15,
            "customTLSSecret": {"name": "no-such-secret"},
            "customReplicationTLSSecret": {"name": "no-such-secret-either"},
            "instances": [{
                "name": "instance1",
                "dataVolumeClaimSpec": {
                    "accessModes": ["ReadWriteOnce"],
                    "resources": {"requests": {"storage": "1Gi"}}
                }
            }]
        }
    });
    ctx.node
        .kubectl_ok(&["apply", "-f", "-"], Some(&manifest.to_string()));
    let reason = eventually(
        "the refused cluster's Degraded condition",
        Duration::from_secs(120),
        || async {
            let (status, reason) =
                cluster_condition(ctx.client, ctx.namespace, NAME, "Degraded").await?;
            (status == "True").then_some(reason)
        },
    )
    .await;
    assert_eq!(reason, "InvalidCustomTLS");
    NAME
}

pub async fn exporters_serve_every_dashboard_and_alert_metric(ctx: &Ctx<'_>) {
    take_a_backup(ctx).await;
    let leader = ctx.leader().await;
    eventually(
        "a replica streaming from the primary",
        Duration::from_secs(300),
        || async {
            let streaming = ctx.superuser_sql(
                &leader,
                "postgres",
                "select count(*) from pg_stat_replication where state = 'streaming'",
            );
            (streaming != "0").then_some(())
        },
    )
    .await;
    let refused = a_cluster_the_operator_refuses(ctx).await;

    let referenced = referenced_metrics();
    assert!(
        referenced.len() >= 10,
        "the dashboards and rules hardly use any metric: {referenced:?}"
    );
    let from_exporter = exporter_metric_names();
    let absent_here: BTreeSet<&str> = ABSENT_HERE.iter().map(|(n, _)| *n).collect();
    for (name, reason) in ABSENT_HERE {
        assert!(
            referenced.contains(*name),
            "{name} is no longer used: drop it from ABSENT_HERE"
        );
        if *reason == HOST_PATH_VOLUMES {
            assert!(
                volumes_are_host_paths(ctx).await,
                "{name} is excused because {reason}, but the volumes are not hostPath: check it"
            );
        }
    }
    let instances = ctx.pods(naming::LABEL_INSTANCE).await;
    assert_eq!(instances.len(), 2, "the example's two instances");
    let exporter_urls: BTreeMap<String, String> = instances
        .iter()
        .map(|p| (pod_name(p), format!("http://{}:9187/metrics", pod_ip(p))))
        .collect();
    let operator_urls = operator_metrics_urls(ctx).await;
    let mut urls: Vec<String> = exporter_urls.values().cloned().collect();
    urls.extend(operator_urls.iter().cloned());

    // The exporters answer as soon as they run, but the operator records the backup in the
    // table the exporter reads on a later reconcile: scrape again until every series is in.
    let mut attempt = 0;
    let (bodies, missing) = loop {
        attempt += 1;
        let bodies = scrape_from_a_pod(ctx, &format!("scrape-{attempt}"), &urls).await;
        let kubelet = kubelet_metrics(ctx).await;
        let exporter_names: BTreeSet<String> = exporter_urls
            .values()
            .flat_map(|url| samples(bodies.get(url).map(String::as_str).unwrap_or("")))
            .map(|s| s.name)
            .collect();
        let operator_names: BTreeSet<String> = operator_urls
            .iter()
            .flat_map(|url| samples(bodies.get(url).map(String::as_str).unwrap_or("")))
            .map(|s| s.name)
            .collect();
        let kubelet_names: BTreeSet<String> =
            samples(&kubelet).into_iter().map(|s| s.name).collect();
        let missing: Vec<String> = referenced
            .iter()
            .filter(|name| !absent_here.contains(name.as_str()))
            .filter(|name| {
                let scraped = if from_exporter.contains(*name) {
                    &exporter_names
                } else if name.starts_with("kubelet_") {
                    &kubelet_names
                } else {
                    &operator_names
                };
                !scraped.contains(*name)
            })
            .cloned()
            .collect();
        if missing.is_empty() || attempt == 8 {
            break (bodies, missing);
        }
        tokio::time::sleep(Duration::from_secs(20)).await;
    };
    assert!(
        missing.is_empty(),
        "used by the dashboards or alert rules but not served: {missing:?}"
    );

    // The values are real: both exporters see their database, each knows its role, the
    // primary sees the replica stream and the backup, and the operator its clusters.
    let replica = exporter_urls
        .keys()
        .find(|name| **name != leader)
        .expect("a replica")
        .clone();
    let scraped = |pod: &str| samples(&bodies[&exporter_urls[pod]]);
    for pod in exporter_urls.keys() {
        assert_eq!(value(&scraped(pod), "pg_up", None), Some(1.0), "{pod}");
    }
    assert_eq!(
        value(&scraped(&leader), "tusk_pg_instance_is_primary", None),
        Some(1.0)
    );
    assert_eq!(
        value(&scraped(&replica), "tusk_pg_instance_is_primary", None),
        Some(0.0)
    );
    assert!(
        value(
            &scraped(&leader),
            "tusk_pg_replication_lag_bytes",
            Some(&format!("replica=\"{replica}\""))
        )
        .is_some(),
        "the primary reports {replica}'s lag"
    );
    let backup_age = value(
        &scraped(&leader),
        "tusk_pg_backup_age_seconds",
        Some("repo=\"repo1\""),
    )
    .expect("the backup's age in repo1");
    assert!(backup_age >= 0.0, "{backup_age}");
    let operator: Vec<Sample> = operator_urls
        .iter()
        .flat_map(|url| samples(&bodies[url]))
        .collect();
    let this_cluster = format!("pg_cluster=\"{}/{}\"", ctx.namespace, ctx.cluster);
    assert_eq!(
        value(
            &operator,
            "tusk_cluster_instances_ready",
            Some(&this_cluster)
        ),
        Some(2.0)
    );
    assert!(value(
        &operator,
        "tusk_cluster_last_backup_timestamp_seconds",
        Some(&this_cluster)
    )
    .is_some());
    assert!(
        value(
            &operator,
            "tusk_reconcile_errors_total",
            Some("reason=\"InvalidCustomTLS\"")
        )
        .is_some_and(|n| n >= 1.0),
        "the refused cluster {refused} counts as a failed reconcile"
    );
    ctx.node.kubectl_ok(
        &["delete", "postgrescluster", "-n", ctx.namespace, refused],
        None,
    );
}
