//! The core flows in real pods: the operator installed from `deploy/kustomize` runs the
//! examples on a real node (scripts/kube-testenv start --node), and each test checks what a
//! user would check: pods Ready, Patroni's leader lock in the Kubernetes API, Services with the
//! right endpoints, connections with the users' Secrets and TLS verify-full from inside the
//! cluster, no acknowledged write lost when the primary's pod is deleted, and a switchover that
//! swaps the roles without recreating a pod.
//!
//! StatefulSets are `OnDelete` (rolling updates are a later issue), so nothing here changes a
//! pod template of a running cluster.

mod kube_support;
mod node_support;

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::Client;
use node_support::install::{install_operator, Installed};
use node_support::sql::{create_ledger, login, LedgerWriter};
use node_support::workloads::run_psql_job;
use node_support::{
    apply_example, endpoint_ips, instance_pods, patroni_leader, patroni_member_status,
    wait_condition, Namespace, Node,
};
use serde_json::json;
use tusk_api::naming::ClusterNames;

use kube_support::{eventually, repo_root};

/// Apply to Ready includes pulling the database image the first time.
const READY_LIMIT: Duration = Duration::from_secs(600);

fn names(cluster: &str) -> ClusterNames {
    ClusterNames::new(tusk_api::naming::DnsLabel::new(cluster).expect("a cluster name"))
}

fn pod_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|conditions| {
            conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
        })
}

fn pod_ip(pod: &Pod) -> String {
    pod.status
        .as_ref()
        .and_then(|s| s.pod_ip.clone())
        .unwrap_or_default()
}

fn uid(pod: &Pod) -> String {
    pod.metadata.uid.clone().unwrap_or_default()
}

/// Runs `sql` as the superuser in pod `pod`'s database container (peer authentication over
/// the Unix socket, through `kubectl exec`); returns psql's unaligned output.
fn superuser_sql(node: &Node, namespace: &str, pod: &str, sql: &str) -> String {
    node.superuser_sql(namespace, pod, sql)
        .unwrap_or_else(|e| panic!("psql in {pod} failed: {e}"))
}

/// Every test's start: the node, an admin client, and the operator installed (an unchanged
/// install on a shared node is a no-op).
async fn setup() -> Option<(Node, Client, Installed)> {
    let node = Node::acquire()?;
    let client = node.client().await;
    let installed = install_operator(&node);
    Some((node, client, installed))
}

#[tokio::test]
async fn basic_example_runs_in_pods_and_serves_its_users_over_verified_tls() {
    let Some((node, client, installed)) = setup().await else {
        return;
    };
    let ns = Namespace::create(&node, &client, "pods-basic").await;
    let cluster = "hippo";
    let names = names(cluster);
    apply_example(
        &node,
        &repo_root().join("examples/01-hippo-basic.yaml"),
        &ns.name,
    );
    wait_condition(&client, &ns.name, cluster, "Ready", READY_LIMIT).await;

    let pods = instance_pods(&client, &ns.name, cluster).await;
    assert_eq!(pods.len(), 1, "one instance pod: {:?}", pods.keys());
    let (pod_name, pod) = pods.iter().next().unwrap();
    assert!(pod_ready(pod), "{pod_name} is Ready");
    assert_eq!(
        patroni_leader(&client, &ns.name, &names.patroni_scope()).await,
        Some(pod_name.clone()),
        "Patroni holds the leader lock through the Kubernetes API"
    );
    assert_eq!(
        endpoint_ips(&client, &ns.name, &names.primary_service()).await,
        vec![pod_ip(pod)],
        "{} points at the primary's pod",
        names.primary_service()
    );

    // From a pod, with the Secret's `uri`, verify-full against the cluster CA: write a row and
    // read it back, and confirm the session is encrypted.
    let token = format!("written-by-a-pod-{}", std::process::id());
    let script = format!(
        "psql \"$PGURI\" -v ON_ERROR_STOP=1 -c 'create table pod_check (v text)' \
           -c \"insert into pod_check values ('{token}')\"\n\
         echo \"read: $(psql \"$PGURI\" -tAc 'select v from pod_check')\"\n\
         echo \"ssl: $(psql \"$PGURI\" -tAc 'select ssl from pg_stat_ssl where pid = pg_backend_pid()')\""
    );
    let job = run_psql_job(
        &client,
        &ns.name,
        "psql-check",
        &installed.database_image,
        &names.user_secret(cluster),
        &names.cluster_cert_secret(),
        &script,
    )
    .await;
    assert!(job.succeeded, "the psql Job failed:\n{}", job.log);
    assert!(
        job.log.contains(&format!("read: {token}")),
        "the row written through the Secret's uri is read back:\n{}",
        job.log
    );
    assert!(
        job.log.contains("ssl: t"),
        "the session uses TLS:\n{}",
        job.log
    );

    // The same `uri` with the wrong CA must fail: verify-full really verifies.
    let wrong_ca = run_psql_job(
        &client,
        &ns.name,
        "psql-wrong-ca",
        &installed.database_image,
        &names.user_secret(cluster),
        &names.cluster_cert_secret(),
        "PGSSLROOTCERT=/etc/ssl/certs/ca-certificates.crt psql \"$PGURI\" -tAc 'select 1'",
    )
    .await;
    assert!(
        !wrong_ca.succeeded,
        "a CA that did not sign the server certificate is refused:\n{}",
        wrong_ca.log
    );

    // Backups: the stanza Job execs pgBackRest in the repo host (websocket exec needs `get` on
    // pods/exec before 1.30); archiving runs the image's pgBackRest with the operator's
    // conf.d alone (Debian's /etc/pgbackrest.conf clashed with it); and WALArchiving says
    // True only once a segment was archived, never before.
    wait_condition(&client, &ns.name, cluster, "BackupsReady", READY_LIMIT).await;
    // A fresh cluster archives its first WAL segment only when it is full or switched:
    // archive_timeout did not switch it here (PostgreSQL 15), so switch it as a backup would.
    superuser_sql(&node, &ns.name, pod_name, "select pg_switch_wal()");
    let archived = eventually("WALArchiving=True", Duration::from_secs(300), || async {
        let (status, reason) =
            node_support::cluster_condition(&client, &ns.name, cluster, "WALArchiving").await?;
        assert_ne!(status, "False", "archiving fails: {reason}");
        (status == "True").then_some(())?;
        // Read after the condition was seen: a count of 0 here means the condition claimed
        // health it had not seen.
        Some(superuser_sql(
            &node,
            &ns.name,
            pod_name,
            "select archived_count from pg_stat_archiver",
        ))
    })
    .await;
    assert!(
        archived.parse::<u64>().expect("a count") > 0,
        "WALArchiving=True with nothing archived"
    );
    // pgBackRest writes its logs where the configuration says, on the data volume, and never
    // warns that it cannot.
    let logs = node.kubectl_ok(
        &[
            "exec",
            "-n",
            &ns.name,
            pod_name,
            "-c",
            "database",
            "--",
            "ls",
            "/pgdata/pgbackrest/log",
        ],
        None,
    );
    assert!(
        logs.lines().any(|f| f.starts_with("db-archive-push")),
        "archive-push logs to its log-path: {logs}"
    );
    let database_log = node.kubectl_ok(&["logs", "-n", &ns.name, pod_name, "-c", "database"], None);
    assert!(
        !database_log.contains("unable to open log file"),
        "pgBackRest found its log-path:\n{database_log}"
    );

    // Monitoring turned on for the running cluster: the exporter sidecar runs its own program
    // (not the image's entrypoint) and reports the database up. StatefulSets are OnDelete until
    // rolling updates exist, so the test deletes the outdated pod itself.
    kube_support::objects::clusters(&client, &ns.name)
        .patch(
            cluster,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"monitoring": {"pgmonitor": {"exporter": {}}}}})),
        )
        .await
        .expect("turning on monitoring");
    let statefulset = pod_name.trim_end_matches("-0").to_owned();
    eventually(
        "the exporter in the instance's pod template",
        Duration::from_secs(120),
        || async {
            let out = node.kubectl(
                &[
                    "get",
                    "statefulset",
                    "-n",
                    &ns.name,
                    &statefulset,
                    "-o",
                    "jsonpath={.spec.template.spec.containers[*].name}",
                ],
                None,
            );
            String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .any(|c| c == "exporter")
                .then_some(())
        },
    )
    .await;
    let pods_api: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
    pods_api
        .delete(pod_name, &DeleteParams::default())
        .await
        .expect("deleting the outdated pod");
    let pod = eventually(
        "the pod back with a ready exporter",
        Duration::from_secs(300),
        || async {
            let pod = pods_api.get(pod_name).await.ok()?;
            let exporter_ready = pod
                .status
                .as_ref()?
                .container_statuses
                .as_ref()?
                .iter()
                .any(|c| c.name == "exporter" && c.ready);
            (pod_ready(&pod) && exporter_ready).then_some(pod)
        },
    )
    .await;
    let metrics = eventually(
        "the exporter to see the database up",
        Duration::from_secs(120),
        || async {
            let text =
                node_support::http_get(&format!("{}:9187", pod_ip(&pod)), "/metrics").await?;
            text.lines().any(|l| l == "pg_up 1").then_some(text)
        },
    )
    .await;
    assert!(
        metrics.contains("pg_stat_database"),
        "the exporter runs its queries against the database"
    );
}

/// Writes through `<c>-primary` while the primary's pod is deleted: a new primary takes over,
/// no acknowledged row is lost, and the old pod comes back as a replica streaming from it.
#[tokio::test]
async fn ha_example_loses_no_acknowledged_write_when_the_primary_pod_is_deleted() {
    let Some((node, client, _installed)) = setup().await else {
        return;
    };
    let ns = Namespace::create(&node, &client, "pods-ha").await;
    let cluster = "hippo";
    let names = names(cluster);
    apply_example(&node, &repo_root().join("examples/hippo-ha.yaml"), &ns.name);
    wait_condition(&client, &ns.name, cluster, "Ready", READY_LIMIT).await;
    let pods = instance_pods(&client, &ns.name, cluster).await;
    assert_eq!(pods.len(), 3, "three instance pods: {:?}", pods.keys());

    let replicas = login(
        &client,
        &ns.name,
        cluster,
        &names.replica_service(),
        "hippo",
    )
    .await;
    let in_recovery = eventually(
        "a read through the replicas Service",
        Duration::from_secs(60),
        || async { replicas.query("select pg_is_in_recovery()").await.ok() },
    )
    .await;
    assert_eq!(in_recovery, ["t"], "<c>-replicas reaches a standby");

    let primary = login(
        &client,
        &ns.name,
        cluster,
        &names.primary_service(),
        "hippo",
    )
    .await;
    create_ledger(&primary).await;
    let old_leader = patroni_leader(&client, &ns.name, &names.patroni_scope())
        .await
        .expect("a leader");
    let old_pod = &pods[&old_leader];
    let old_ip = pod_ip(old_pod);
    let writer = LedgerWriter::start(primary.clone());
    writer.wait_for_more(20, Duration::from_secs(60)).await;

    let pods_api: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
    pods_api
        .delete(&old_leader, &DeleteParams::default())
        .await
        .expect("deleting the primary's pod");
    let new_leader = eventually("a new Patroni leader", Duration::from_secs(120), || async {
        patroni_leader(&client, &ns.name, &names.patroni_scope())
            .await
            .filter(|leader| *leader != old_leader)
    })
    .await;
    eventually(
        "acknowledged writes on the new primary",
        Duration::from_secs(120),
        || async {
            let on_new = writer.acks().iter().filter(|a| a.server != old_ip).count();
            (on_new >= 20).then_some(())
        },
    )
    .await;
    let (acks, attempted) = writer.stop().await;
    eprintln!(
        "{} acknowledged of {attempted} attempted; leader {old_leader} -> {new_leader}; longest \
         write gap {:.1}s",
        acks.len(),
        node_support::sql::longest_gap(&acks).as_secs_f64()
    );

    let lost = node_support::sql::lost_rows(&primary, &acks).await;
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged rows ({} attempted) are missing after the failover: {:?}",
        lost.len(),
        acks.len(),
        attempted,
        lost
    );

    // The deleted pod is recreated by its StatefulSet and rejoins as a replica of the new
    // primary, streaming.
    let rejoined = eventually(
        "the old primary's pod back as a streaming replica",
        Duration::from_secs(300),
        || async {
            let pod = pods_api.get(&old_leader).await.ok()?;
            (uid(&pod) != uid(old_pod) && pod_ready(&pod)).then_some(())?;
            let streaming = superuser_sql(
                &node,
                &ns.name,
                &new_leader,
                "select application_name || ' ' || state from pg_stat_replication",
            );
            streaming
                .lines()
                .any(|line| line == format!("{old_leader} streaming"))
                .then_some(pod)
        },
    )
    .await;
    let member = patroni_member_status(&rejoined).expect("Patroni's status annotation");
    assert_eq!(member["role"], "replica", "{member}");
    let recovered = superuser_sql(&node, &ns.name, &old_leader, "select pg_is_in_recovery()");
    assert_eq!(recovered, "t", "the old primary is a standby now");
}

/// `spec.patroni.switchover` and the trigger annotation move the primary to the named
/// instance; the roles swap, no pod is recreated, and the same trigger never switches again.
#[tokio::test]
async fn switchover_to_a_named_instance_swaps_roles_without_recreating_pods() {
    let Some((node, client, _installed)) = setup().await else {
        return;
    };
    let ns = Namespace::create(&node, &client, "pods-switchover").await;
    let cluster = "hippo";
    let names = names(cluster);
    apply_example(&node, &repo_root().join("examples/hippo-ha.yaml"), &ns.name);
    wait_condition(&client, &ns.name, cluster, "Ready", READY_LIMIT).await;
    let before: BTreeMap<String, String> = instance_pods(&client, &ns.name, cluster)
        .await
        .iter()
        .map(|(name, pod)| (name.clone(), uid(pod)))
        .collect();
    let old_leader = patroni_leader(&client, &ns.name, &names.patroni_scope())
        .await
        .expect("a leader");
    // In synchronous mode Patroni hands over only to the synchronous standby: ask for it by
    // name, as a user reading `patronictl list` would.
    let target_pod = eventually(
        "a synchronous standby",
        Duration::from_secs(120),
        || async {
            let sync = superuser_sql(
                &node,
                &ns.name,
                &old_leader,
                "select application_name from pg_stat_replication where sync_state = 'sync'",
            );
            sync.lines().next().map(str::to_owned)
        },
    )
    .await;
    let target_instance = target_pod.trim_end_matches("-0").to_owned();

    let clusters = kube_support::objects::clusters(&client, &ns.name);
    clusters
        .patch(
            cluster,
            &PatchParams::default(),
            &Patch::Merge(json!({
                "metadata": {"annotations": {tusk_api::naming::ANNOTATION_TRIGGER_SWITCHOVER: "one"}},
                "spec": {"patroni": {"switchover": {"enabled": true, "targetInstance": target_instance}}}
            })),
        )
        .await
        .expect("requesting the switchover");
    eventually(
        "the named instance to hold the leader lock",
        Duration::from_secs(180),
        || async {
            let leader = patroni_leader(&client, &ns.name, &names.patroni_scope()).await?;
            (leader == target_pod).then_some(())
        },
    )
    .await;
    let recorded = eventually(
        "status.patroni.switchover to record the trigger",
        Duration::from_secs(120),
        || async {
            let object = clusters.get(cluster).await.ok()?;
            object.data["status"]["patroni"]["switchover"]
                .as_str()
                .map(str::to_owned)
        },
    )
    .await;
    assert_eq!(recorded, "one");

    let after: BTreeMap<String, String> = instance_pods(&client, &ns.name, cluster)
        .await
        .iter()
        .map(|(name, pod)| (name.clone(), uid(pod)))
        .collect();
    assert_eq!(before, after, "no pod was recreated");
    let roles = eventually("role labels to follow", Duration::from_secs(60), || async {
        let pods = instance_pods(&client, &ns.name, cluster).await;
        let role = |pod: &str| {
            pods.get(pod)?
                .metadata
                .labels
                .as_ref()?
                .get(tusk_api::naming::LABEL_ROLE)
                .cloned()
        };
        let roles = (role(&target_pod)?, role(&old_leader)?);
        (roles.0 == "master" && roles.1 == "replica").then_some(roles)
    })
    .await;
    assert_eq!(roles, ("master".to_owned(), "replica".to_owned()));
    assert_eq!(
        superuser_sql(&node, &ns.name, &old_leader, "select pg_is_in_recovery()"),
        "t",
        "the old primary is a standby now"
    );

    // A new target under the trigger value already acted on: nothing moves until the trigger
    // changes.
    let old_instance = old_leader.trim_end_matches("-0").to_owned();
    clusters
        .patch(
            cluster,
            &PatchParams::default(),
            &Patch::Merge(json!({
                "spec": {"patroni": {"switchover": {"targetInstance": old_instance}}}
            })),
        )
        .await
        .expect("changing the target");
    let generation = clusters.get(cluster).await.unwrap().metadata.generation;
    eventually(
        "the operator to observe the new target",
        Duration::from_secs(120),
        || async {
            let object = clusters.get(cluster).await.ok()?;
            (object.data["status"]["observedGeneration"].as_i64() == generation).then_some(())
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(15)).await;
    assert_eq!(
        patroni_leader(&client, &ns.name, &names.patroni_scope()).await,
        Some(target_pod.clone()),
        "a trigger value already acted on does not switch again"
    );
}
