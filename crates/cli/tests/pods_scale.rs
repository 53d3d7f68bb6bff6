//! Scaling in real pods, on one cluster of three members without backups (so nothing but the
//! primary can bring a member up to date): a replica that does not stream is not Ready, and
//! leaves `<c>-replicas`; going from 3 to 1 to 3 replicas keeps the primary's pod and its
//! data, keeps the removed members' volumes and brings them back on them; a second instance
//! set comes up as streaming replicas.

mod kube_support;
mod lifecycle_support;
mod node_support;

use std::collections::BTreeSet;
use std::time::Duration;

use kube::Client;
use lifecycle_support::*;
use node_support::install::install_operator;
use node_support::{
    endpoint_ips, instance_pods, patroni_leader, patroni_member_status, wait_condition, Namespace,
    Node,
};
use serde_json::{json, Value};

use kube_support::eventually;

const CLUSTER: &str = "scale";

fn instance_set(name: &str, replicas: i64) -> Value {
    json!({
        "name": name,
        "replicas": replicas,
        "resources": {
            "requests": {"cpu": "250m", "memory": "512Mi"},
            "limits": {"cpu": "1.0", "memory": "1Gi"}
        },
        "dataVolumeClaimSpec": {
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": "1Gi"}}
        }
    })
}

/// Pod names of the members that stream from `leader`, by `pg_stat_replication`.
fn streaming(node: &Node, namespace: &str, leader: &str) -> BTreeSet<String> {
    try_superuser_sql(
        node,
        namespace,
        leader,
        "select application_name from pg_stat_replication where state = 'streaming'",
    )
    .map(|out| out.lines().map(str::to_owned).collect())
    .unwrap_or_default()
}

/// Waits until the instance pods are exactly `expected`, all Ready, and every one but the
/// leader streams from it.
async fn wait_members(
    node: &Node,
    client: &Client,
    namespace: &str,
    leader: &str,
    expected: &BTreeSet<String>,
) {
    eventually(
        &format!("members {expected:?} Ready and streaming from {leader}"),
        READY_LIMIT,
        || async {
            let pods = instance_pods(client, namespace, CLUSTER).await;
            let names: BTreeSet<String> = pods.keys().cloned().collect();
            (names == *expected && pods.values().all(pod_ready)).then_some(())?;
            let replicas: BTreeSet<String> =
                expected.iter().filter(|p| *p != leader).cloned().collect();
            (streaming(node, namespace, leader) == replicas).then_some(())
        },
    )
    .await
}

fn row_count(node: &Node, namespace: &str, pod: &str) -> String {
    superuser_sql(node, namespace, pod, "select count(*) from rows")
}

#[tokio::test]
async fn scaling_keeps_the_primary_and_its_data_and_replicas_are_ready_only_when_streaming() {
    let Some(node) = Node::acquire() else {
        return;
    };
    let client = node.client().await;
    install_operator(&node);
    let ns = Namespace::create(&node, &client, "pods-scale").await;
    let names = names(CLUSTER);
    let manifest = json!({
        "apiVersion": "tusk.rs/v1beta1",
        "kind": "PostgresCluster",
        "metadata": {"name": CLUSTER, "namespace": ns.name},
        "spec": {
            "postgresVersion": 15,
            "instances": [instance_set("one", 3)]
        }
    });
    node.kubectl_ok(
        &["apply", "-f", "-"],
        Some(&serde_json::to_string(&manifest).unwrap()),
    );
    wait_condition(&client, &ns.name, CLUSTER, "Ready", READY_LIMIT).await;
    let leader = patroni_leader(&client, &ns.name, &names.patroni_scope())
        .await
        .expect("a leader");
    let members: BTreeSet<String> = instance_pods(&client, &ns.name, CLUSTER)
        .await
        .into_keys()
        .collect();
    assert_eq!(members.len(), 3, "{members:?}");
    wait_members(&node, &client, &ns.name, &leader, &members).await;
    let replicas: Vec<String> = members.iter().filter(|p| **p != leader).cloned().collect();

    // A replica is Ready only while it streams. Refusing the replication role's logins on the
    // primary stops both replicas' streams while their PostgreSQL keeps running (what
    // Patroni 3.0's `/readiness` calls ready); they must leave `<c>-replicas`.
    superuser_sql(
        &node,
        &ns.name,
        &leader,
        "alter role _tusk_repl nologin; \
         select pg_terminate_backend(pid) from pg_stat_replication",
    );
    eventually(
        "the replicas not Ready while they cannot stream",
        Duration::from_secs(180),
        || async {
            let pods = instance_pods(&client, &ns.name, CLUSTER).await;
            let ready = replicas.iter().any(|r| pods.get(r).is_some_and(pod_ready));
            let serving = endpoint_ips(&client, &ns.name, &names.replica_service()).await;
            (!ready && serving.is_empty()).then_some(())
        },
    )
    .await;
    for replica in &replicas {
        assert_eq!(
            superuser_sql(&node, &ns.name, replica, "select pg_is_in_recovery()"),
            "t",
            "{replica}'s PostgreSQL runs, as a standby"
        );
        assert_eq!(
            superuser_sql(
                &node,
                &ns.name,
                replica,
                "select count(*) from pg_stat_wal_receiver where status = 'streaming'"
            ),
            "0",
            "{replica} does not stream"
        );
    }
    superuser_sql(&node, &ns.name, &leader, "alter role _tusk_repl login");
    wait_members(&node, &client, &ns.name, &leader, &members).await;
    eventually(
        "both replicas back in <c>-replicas",
        Duration::from_secs(120),
        || async {
            let serving = endpoint_ips(&client, &ns.name, &names.replica_service()).await;
            (serving.len() == 2).then_some(())
        },
    )
    .await;

    // 3 -> 1: the primary's pod stays (same UID), the removed members' volumes stay.
    superuser_sql(
        &node,
        &ns.name,
        &leader,
        "create table rows (id int primary key); insert into rows select generate_series(1, 100)",
    );
    let leader_uid = uid(&instance_pods(&client, &ns.name, CLUSTER).await[&leader]);
    // A file on each replica's data volume, outside PGDATA, tells whether the volume a member
    // comes back on is the one it had.
    for replica in &replicas {
        node.kubectl_ok(
            &[
                "exec",
                "-n",
                &ns.name,
                replica,
                "-c",
                "database",
                "--",
                "sh",
                "-c",
                "echo kept > /pgdata/scale-test-marker",
            ],
            None,
        );
    }
    let pvcs_before = pvc_uids(&node, &ns.name);
    assert_eq!(pvcs_before.len(), 3, "{pvcs_before:?}");
    let one = patch_cluster(
        &client,
        &ns.name,
        CLUSTER,
        json!({"spec": {"instances": [instance_set("one", 1)]}}),
    )
    .await;
    wait_observed(&client, &ns.name, CLUSTER, one).await;
    let only_leader = BTreeSet::from([leader.clone()]);
    wait_members(&node, &client, &ns.name, &leader, &only_leader).await;
    let pods = instance_pods(&client, &ns.name, CLUSTER).await;
    assert_eq!(
        uid(&pods[&leader]),
        leader_uid,
        "the primary's pod was kept"
    );
    assert_eq!(
        pvc_uids(&node, &ns.name),
        pvcs_before,
        "scaling down keeps the removed members' PVCs"
    );
    assert_eq!(row_count(&node, &ns.name, &leader), "100");
    superuser_sql(
        &node,
        &ns.name,
        &leader,
        "insert into rows select generate_series(101, 200)",
    );

    // 1 -> 3: the same members come back on their volumes and catch up from the primary.
    let three = patch_cluster(
        &client,
        &ns.name,
        CLUSTER,
        json!({"spec": {"instances": [instance_set("one", 3)]}}),
    )
    .await;
    wait_observed(&client, &ns.name, CLUSTER, three).await;
    wait_members(&node, &client, &ns.name, &leader, &members).await;
    let pods = instance_pods(&client, &ns.name, CLUSTER).await;
    assert_eq!(
        uid(&pods[&leader]),
        leader_uid,
        "the primary's pod was kept"
    );
    assert_eq!(
        patroni_leader(&client, &ns.name, &names.patroni_scope()).await,
        Some(leader.clone())
    );
    assert_eq!(
        pvc_uids(&node, &ns.name),
        pvcs_before,
        "scaling up reuses the kept PVCs"
    );
    for replica in &replicas {
        let marker = node.kubectl_ok(
            &[
                "exec",
                "-n",
                &ns.name,
                replica,
                "-c",
                "database",
                "--",
                "cat",
                "/pgdata/scale-test-marker",
            ],
            None,
        );
        assert_eq!(marker.trim(), "kept", "{replica} is back on its own volume");
        assert_eq!(
            row_count(&node, &ns.name, replica),
            "200",
            "{replica} caught up with the rows written while it was away"
        );
    }

    // A second instance set: its member comes up as a streaming replica.
    let two = patch_cluster(
        &client,
        &ns.name,
        CLUSTER,
        json!({"spec": {"instances": [instance_set("one", 3), instance_set("two", 1)]}}),
    )
    .await;
    wait_observed(&client, &ns.name, CLUSTER, two).await;
    let second = eventually(
        "a member of the second set",
        Duration::from_secs(120),
        || async {
            instance_pods(&client, &ns.name, CLUSTER)
                .await
                .into_keys()
                .find(|p| p.starts_with(&format!("{CLUSTER}-two-")))
        },
    )
    .await;
    let mut all = members.clone();
    all.insert(second.clone());
    wait_members(&node, &client, &ns.name, &leader, &all).await;
    let pod = instance_pods(&client, &ns.name, CLUSTER).await[&second].clone();
    let member = patroni_member_status(&pod).expect("Patroni's status annotation");
    assert_eq!(member["role"], "replica", "{member}");
    assert_eq!(member["state"], "running", "{member}");
    assert_eq!(row_count(&node, &ns.name, &second), "200");
}

/// `name -> uid` of the namespace's PVCs.
fn pvc_uids(node: &Node, namespace: &str) -> BTreeSet<String> {
    node.kubectl_ok(
        &[
            "get",
            "persistentvolumeclaims",
            "-n",
            namespace,
            "-o",
            "jsonpath={range .items[*]}{.metadata.name}={.metadata.uid}{'\\n'}{end}",
        ],
        None,
    )
    .lines()
    .map(str::to_owned)
    .collect()
}
