//! A running cluster's life in real pods, on one cluster (two members, synchronous, a volume
//! repo), in the order a platform team meets it: bad input (one manifest the CRD schema
//! rejects, one edit only the operator can reject) leaves the running cluster untouched; the
//! operator restarted, and rolled to a new build, restarts no database pod; a paused cluster
//! changes nothing while its spec is edited and applies the edit when resumed; shutdown stops
//! every pod and keeps the data, and the start brings the same primary back; deleting the
//! cluster removes everything it owns, checked by its label as the PGO family's own delete
//! tests do.
//!
//! "Untouched" is what a user can check from outside: the pod UIDs, every container's restart
//! count, `pg_postmaster_start_time()` on every member and the rows. Each step also proves the
//! operator did look at the change (`status.observedGeneration`, a condition, an object it
//! wrote), so no assertion holds merely because nothing ran.

mod kube_support;
mod lifecycle_support;
mod node_support;

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{Api, ListParams};
use kube::Client;
use lifecycle_support::*;
use node_support::install::install_operator;
use node_support::{instance_pods, patroni_leader, wait_condition, Namespace, Node};
use serde_json::json;
use tusk_api::naming;

use kube_support::{eventually, objects};

const CLUSTER: &str = "life";
const OPERATOR_NAMESPACE: &str = "tusk-system";
const OPERATOR_DEPLOYMENT: &str = "tusk-operator";
const OPERATOR_SELECTOR: &str = "app.kubernetes.io/name=tusk,app.kubernetes.io/component=operator";

/// Two members (so "every member" means more than the primary), synchronous replication, a
/// volume repo (a repo host and the stanza Job, so deletion has a Job to remove), requests of
/// the HA example's size.
fn manifest(namespace: &str, instance_replicas: i64) -> String {
    format!(
        r#"apiVersion: tusk.rs/v1beta1
kind: PostgresCluster
metadata:
  name: {CLUSTER}
  namespace: {namespace}
spec:
  postgresVersion: 15
  users:
    - name: hippo
      databases: ["zoo"]
  instances:
    - name: instance1
      replicas: {instance_replicas}
      resources:
        requests: {{ cpu: 250m, memory: 512Mi }}
        limits: {{ cpu: 1.0, memory: 1Gi }}
      dataVolumeClaimSpec:
        accessModes: ["ReadWriteOnce"]
        resources: {{ requests: {{ storage: 1Gi }} }}
  patroni:
    dynamicConfiguration:
      synchronous_mode: true
  backups:
    pgbackrest:
      repos:
        - name: repo1
          volume:
            volumeClaimSpec:
              accessModes: ["ReadWriteOnce"]
              resources: {{ requests: {{ storage: 1Gi }} }}
"#
    )
}

/// Puts the operator Deployment back as the install left it (no `TUSK_BUILD_VERSION`), also
/// when the test fails: the node may be shared with later tests.
struct BuildVersionGuard<'a>(&'a Node);

impl Drop for BuildVersionGuard<'_> {
    fn drop(&mut self) {
        let _ = self.0.kubectl(
            &[
                "set",
                "env",
                "-n",
                OPERATOR_NAMESPACE,
                &format!("deployment/{OPERATOR_DEPLOYMENT}"),
                "TUSK_BUILD_VERSION-",
            ],
            None,
        );
    }
}

/// The operator pods' UIDs.
async fn operator_pods(client: &Client) -> Vec<String> {
    let api: Api<Pod> = Api::namespaced(client.clone(), OPERATOR_NAMESPACE);
    let mut uids: Vec<String> = api
        .list(&ListParams::default().labels(OPERATOR_SELECTOR))
        .await
        .expect("listing the operator's pods")
        .items
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .map(uid)
        .collect();
    uids.sort();
    uids
}

/// Everything the operator owns for the cluster, as `kind name -> (resourceVersion or, for
/// kinds with a generation, the generation)`: what "changes nothing in Kubernetes" compares.
/// Generation where there is one, because a StatefulSet's status moves with its pod's
/// readiness, which is not a change anyone made.
async fn owned_state(client: &Client, namespace: &str) -> BTreeMap<String, String> {
    objects::snapshot(client, &[namespace.to_owned()])
        .await
        .into_iter()
        .map(|((_, kind, name), (version, generation))| {
            let state = match generation {
                Some(g) => format!("generation {g}"),
                None => format!("resourceVersion {version}"),
            };
            (format!("{kind} {name}"), state)
        })
        .collect()
}

/// `kubectl get KINDS -l tusk.rs/cluster=<c> -o name`, plus every Endpoints named for the
/// cluster whatever its labels (Patroni makes some itself).
fn labelled_objects(node: &Node, namespace: &str) -> Vec<String> {
    let selector = naming::cluster_selector(CLUSTER);
    let out = node.kubectl_ok(
        &[
            "get",
            "statefulsets,deployments,services,secrets,configmaps,jobs,endpoints,pods,\
             persistentvolumeclaims,serviceaccounts,roles,rolebindings",
            "-n",
            namespace,
            "-l",
            &selector,
            "-o",
            "name",
        ],
        None,
    );
    let mut names: Vec<String> = out.lines().map(str::to_owned).collect();
    let endpoints = node.kubectl_ok(&["get", "endpoints", "-n", namespace, "-o", "name"], None);
    names.extend(
        endpoints
            .lines()
            .filter(|n| n.starts_with(&format!("endpoints/{CLUSTER}-")))
            .map(str::to_owned),
    );
    names.sort();
    names.dedup();
    names
}

#[tokio::test]
async fn a_running_cluster_survives_bad_input_operator_restarts_pause_and_shutdown_then_deletes_cleanly(
) {
    let Some(node) = Node::acquire() else {
        return;
    };
    let client = node.client().await;
    install_operator(&node);
    let ns = Namespace::create(&node, &client, "pods-lifecycle").await;
    let names = names(CLUSTER);
    node.kubectl_ok(&["apply", "-f", "-"], Some(&manifest(&ns.name, 2)));
    wait_condition(&client, &ns.name, CLUSTER, "Ready", READY_LIMIT).await;
    wait_condition(&client, &ns.name, CLUSTER, "BackupsReady", READY_LIMIT).await;
    let leader = patroni_leader(&client, &ns.name, &names.patroni_scope())
        .await
        .expect("a leader");
    superuser_sql(
        &node,
        &ns.name,
        &leader,
        "create table facts (v text); insert into facts values ('before')",
    );
    let baseline = member_facts(&node, &client, &ns.name, CLUSTER).await;
    assert_eq!(baseline.len(), 2, "two members: {baseline:?}");

    // 1. A manifest the CRD schema rejects never reaches the operator: kubectl says why, with
    // the field, and the stored object is the one before.
    let generation_before = generation(&client, &ns.name, CLUSTER).await;
    let rejected = node.kubectl(&["apply", "-f", "-"], Some(&manifest(&ns.name, 0)));
    let stderr = String::from_utf8_lossy(&rejected.stderr);
    assert!(!rejected.status.success(), "replicas: 0 was accepted");
    assert!(
        stderr.contains("replicas") && stderr.contains("greater than or equal to 1"),
        "the schema's message names the field: {stderr}"
    );
    assert_eq!(
        generation(&client, &ns.name, CLUSTER).await,
        generation_before,
        "the rejected manifest was not stored"
    );

    // 2. An edit only the operator can reject: custom TLS Secrets that do not exist. Degraded
    // names the field; nothing running is touched.
    let before_edit = owned_state(&client, &ns.name).await;
    let bad = patch_cluster(
        &client,
        &ns.name,
        CLUSTER,
        json!({"spec": {
            "customTLSSecret": {"name": "no-such-server-tls"},
            "customReplicationTLSSecret": {"name": "no-such-replication-tls"}
        }}),
    )
    .await;
    let degraded = wait_condition_observed(&client, &ns.name, CLUSTER, "Degraded", bad).await;
    assert_eq!(degraded["status"], "True", "{degraded}");
    assert_eq!(degraded["reason"], "InvalidCustomTLS", "{degraded}");
    let message = degraded["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("spec.customTLSSecret") && message.contains("no-such-server-tls"),
        "the message names the field and the Secret: {message}"
    );
    assert_eq!(
        owned_state(&client, &ns.name).await,
        before_edit,
        "a rejected edit changed objects"
    );
    assert_eq!(
        member_facts(&node, &client, &ns.name, CLUSTER).await,
        baseline,
        "a rejected edit touched a member"
    );

    // 3. The operator restarted (every pod of its Deployment deleted) while the bad edit stands;
    // the edit is reverted meanwhile, and the new pods reconcile it: Degraded's reason clears.
    let old_operator = operator_pods(&client).await;
    node.kubectl_ok(
        &[
            "delete",
            "pods",
            "-n",
            OPERATOR_NAMESPACE,
            "-l",
            OPERATOR_SELECTOR,
            "--wait=false",
        ],
        None,
    );
    let reverted = patch_cluster(
        &client,
        &ns.name,
        CLUSTER,
        json!({"spec": {"customTLSSecret": null, "customReplicationTLSSecret": null}}),
    )
    .await;
    eventually("new operator pods", Duration::from_secs(300), || async {
        let now = operator_pods(&client).await;
        (now.len() == old_operator.len() && now.iter().all(|u| !old_operator.contains(u)))
            .then_some(())
    })
    .await;
    wait_observed(&client, &ns.name, CLUSTER, reverted).await;
    let degraded = condition(&client, &ns.name, CLUSTER, "Degraded").await;
    assert_ne!(
        degraded["reason"], "InvalidCustomTLS",
        "the restarted operator reconciled the revert: {degraded}"
    );
    assert_eq!(
        member_facts(&node, &client, &ns.name, CLUSTER).await,
        baseline,
        "restarting the operator touched a member"
    );

    // 4. The operator rolled to a new build (`TUSK_BUILD_VERSION`, which it stamps on what it
    // writes). The new build pauses the cluster (proof it reconciles); edits while paused change
    // nothing; resuming applies them, written by the new build.
    let _restore_install = BuildVersionGuard(&node);
    let build = format!("lifecycle-test-{}", std::process::id());
    let deployment = format!("deployment/{OPERATOR_DEPLOYMENT}");
    node.kubectl_ok(
        &[
            "set",
            "env",
            "-n",
            OPERATOR_NAMESPACE,
            &deployment,
            &format!("TUSK_BUILD_VERSION={build}"),
        ],
        None,
    );
    node.kubectl_ok(
        &[
            "rollout",
            "status",
            "-n",
            OPERATOR_NAMESPACE,
            &deployment,
            "--timeout=300s",
        ],
        None,
    );
    let paused = patch_cluster(
        &client,
        &ns.name,
        CLUSTER,
        json!({"spec": {"paused": true}}),
    )
    .await;
    let progressing =
        wait_condition_observed(&client, &ns.name, CLUSTER, "Progressing", paused).await;
    assert_eq!(progressing["reason"], "Paused", "{progressing}");
    let while_paused = owned_state(&client, &ns.name).await;
    let edited = patch_cluster(
        &client,
        &ns.name,
        CLUSTER,
        json!({"spec": {"users": [
            {"name": "hippo", "databases": ["zoo"]},
            {"name": "late", "databases": ["zoo"]}
        ]}}),
    )
    .await;
    wait_condition_observed(&client, &ns.name, CLUSTER, "Progressing", edited).await;
    // The edit was seen; give a reconcile that wrongly acted on it time to show.
    tokio::time::sleep(Duration::from_secs(15)).await;
    assert_eq!(
        owned_state(&client, &ns.name).await,
        while_paused,
        "a paused cluster's objects changed"
    );
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns.name);
    let late_secret = names.user_secret("late");
    assert!(
        secrets.get_opt(&late_secret).await.unwrap().is_none(),
        "the new user's Secret exists while paused"
    );
    let resumed = patch_cluster(
        &client,
        &ns.name,
        CLUSTER,
        json!({"spec": {"paused": false}}),
    )
    .await;
    wait_observed(&client, &ns.name, CLUSTER, resumed).await;
    let written = eventually(
        "the new user's Secret after resuming",
        Duration::from_secs(180),
        || async { secrets.get_opt(&late_secret).await.ok().flatten() },
    )
    .await;
    let stamped = written
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(naming::ANNOTATION_OPERATOR_VERSION))
        .cloned();
    assert_eq!(
        stamped.as_deref(),
        Some(build.as_str()),
        "the new build wrote it"
    );
    eventually(
        "the new user's role on the primary",
        Duration::from_secs(180),
        || async {
            let exists = superuser_sql(
                &node,
                &ns.name,
                &leader,
                "select count(*) from pg_roles where rolname = 'late'",
            );
            (exists == "1").then_some(())
        },
    )
    .await;
    assert_eq!(
        member_facts(&node, &client, &ns.name, CLUSTER).await,
        baseline,
        "the new build, pausing or resuming touched a member"
    );
    assert_eq!(
        superuser_sql(
            &node,
            &ns.name,
            &leader,
            "select string_agg(v, ',') from facts"
        ),
        "before"
    );

    // 5. Shutdown stops every pod and keeps every volume; the start brings the same primary
    // back, with its data, and the replica streaming from it.
    let pvcs = |node: &Node| {
        node.kubectl_ok(
            &[
                "get",
                "persistentvolumeclaims",
                "-n",
                &ns.name,
                "-o",
                "jsonpath={range .items[*]}{.metadata.name}={.metadata.uid}{'\\n'}{end}",
            ],
            None,
        )
    };
    let volumes = pvcs(&node);
    assert!(
        volumes.lines().count() >= 3,
        "two instance volumes and the repo's: {volumes}"
    );
    let down = patch_cluster(
        &client,
        &ns.name,
        CLUSTER,
        json!({"spec": {"shutdown": true}}),
    )
    .await;
    wait_observed(&client, &ns.name, CLUSTER, down).await;
    let pods_api: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
    eventually("every pod stopped", Duration::from_secs(300), || async {
        let pods = pods_api.list(&ListParams::default()).await.ok()?;
        let running: Vec<String> = pods
            .items
            .iter()
            .filter(|p| {
                let phase = p.status.as_ref().and_then(|s| s.phase.as_deref());
                !matches!(phase, Some("Succeeded") | Some("Failed"))
            })
            .filter_map(|p| p.metadata.name.clone())
            .collect();
        running.is_empty().then_some(())
    })
    .await;
    assert_eq!(pvcs(&node), volumes, "shutdown kept every volume");
    let up = patch_cluster(
        &client,
        &ns.name,
        CLUSTER,
        json!({"spec": {"shutdown": false}}),
    )
    .await;
    wait_observed(&client, &ns.name, CLUSTER, up).await;
    eventually("both members back and Ready", READY_LIMIT, || async {
        let pods = instance_pods(&client, &ns.name, CLUSTER).await;
        (pods.len() == 2 && pods.values().all(pod_ready)).then_some(())
    })
    .await;
    assert_eq!(
        patroni_leader(&client, &ns.name, &names.patroni_scope()).await,
        Some(leader.clone()),
        "the primary before the shutdown is the primary after it"
    );
    assert_eq!(
        superuser_sql(
            &node,
            &ns.name,
            &leader,
            "select string_agg(v, ',') from facts"
        ),
        "before",
        "the data survived the shutdown"
    );
    let replica = baseline
        .keys()
        .find(|p| **p != leader)
        .expect("a replica")
        .clone();
    eventually(
        "the replica streaming from the primary",
        Duration::from_secs(180),
        || async {
            let streaming = try_superuser_sql(
                &node,
                &ns.name,
                &leader,
                "select application_name from pg_stat_replication where state = 'streaming'",
            )
            .ok()?;
            streaming.lines().any(|l| l == replica).then_some(())
        },
    )
    .await;
    assert_eq!(
        superuser_sql(
            &node,
            &ns.name,
            &replica,
            "select string_agg(v, ',') from facts"
        ),
        "before"
    );

    // 6. Deleting the cluster removes everything it owns, and Patroni's own Endpoints; the
    // PVCs go with it (they are owned by the cluster; what happens to the data is the
    // PersistentVolume's reclaim policy, README "Deleting a cluster").
    let before_delete = labelled_objects(&node, &ns.name);
    for kind in [
        "statefulset.apps/",
        "service/",
        "secret/",
        "configmap/",
        "job.batch/",
        "endpoints/",
        "pod/",
        "persistentvolumeclaim/",
    ] {
        assert!(
            before_delete.iter().any(|o| o.starts_with(kind)),
            "no {kind} to delete, the check would be vacuous: {before_delete:?}"
        );
    }
    node.kubectl_ok(
        &[
            "delete",
            "postgrescluster",
            "-n",
            &ns.name,
            CLUSTER,
            "--wait=true",
            "--timeout=300s",
        ],
        None,
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(300);
    loop {
        let left = labelled_objects(&node, &ns.name);
        if left.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "left behind after deleting the cluster: {left:?}"
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    // Nothing comes back once the members' last Patroni has stopped.
    tokio::time::sleep(Duration::from_secs(20)).await;
    let late = labelled_objects(&node, &ns.name);
    assert!(
        late.is_empty(),
        "objects reappeared after deletion: {late:?}"
    );
    eprintln!(
        "deleted {} objects of {CLUSTER}: {before_delete:?}",
        before_delete.len()
    );
}
