//! Restores in real pods, from the in-cluster repository (a `volume` repo on the repo host;
//! cloud object stores cannot run in pods here), checked row by row as a platform team would:
//!
//! - a clone (`spec.dataSource.postgresCluster`) with a point-in-time target has exactly the
//!   rows committed before the target;
//! - an in-place restore (`spec.backups.pgbackrest.restore` plus the annotation) of a
//!   3-instance cluster to the same target: every member then follows the new timeline and
//!   none keeps a row from after the target (each member checked through `kubectl exec`);
//! - a standby cluster replaying the source's repository follows its primary and, promoted
//!   with `standby.enabled: false`, takes writes.
//!
//! One source cluster for all three, in this order: the clone and the standby read the
//! repository the in-place restore then rewinds. The standby comes before the rewind: a
//! standby that replayed WAL past the restore's target cannot follow its source back to it
//! (PostgreSQL refuses a timeline that forked before its replay position), so after an
//! in-place restore a standby is created again.

mod kube_support;
mod node_support;
mod pgbackrest_support;

use std::time::Duration;

use kube::Client;
use node_support::install::install_operator;
use node_support::{instance_pods, wait_condition, Namespace, Node};
use pgbackrest_support::*;
use serde_json::json;
use tusk_api::naming;

use kube_support::eventually;

/// Apply to Ready includes pulling the database image the first time.
const READY_LIMIT: Duration = Duration::from_secs(900);
const RESTORE_LIMIT: Duration = Duration::from_secs(900);
const SOURCE: &str = "hippo";
const BEFORE: u32 = 100;
const AFTER: u32 = 50;

async fn setup() -> Option<(Node, Client)> {
    let node = Node::acquire()?;
    let client = node.client().await;
    install_operator(&node);
    Some((node, client))
}

/// `before|n` and `after|n` rows of table `ledger` as one line each (missing batches absent).
fn batches(node: &Node, namespace: &str, pod: &str) -> Option<String> {
    try_superuser_sql(
        node,
        namespace,
        pod,
        "select string_agg(batch || '|' || n, ',' order by batch) \
         from (select batch, count(*) n from ledger group by batch) b",
    )
}

/// Waits until every instance pod of `cluster` answers SQL and returns them by name.
async fn members(
    node: &Node,
    client: &Client,
    namespace: &str,
    cluster: &str,
    count: usize,
) -> Vec<String> {
    eventually(
        &format!("{count} members of {cluster} answer SQL"),
        RESTORE_LIMIT,
        || async {
            let pods: Vec<String> = instance_pods(client, namespace, cluster)
                .await
                .into_keys()
                .collect();
            (pods.len() == count
                && pods
                    .iter()
                    .all(|p| try_superuser_sql(node, namespace, p, "select 1").is_some()))
            .then_some(pods)
        },
    )
    .await
}

/// The timeline a member is on: the primary's current WAL file, a replica's WAL receiver
/// (only while it streams: `None` otherwise).
fn timeline(node: &Node, namespace: &str, pod: &str) -> Option<u32> {
    let sql = "select case when pg_is_in_recovery() \
               then (select received_tli::text from pg_stat_wal_receiver where status = 'streaming') \
               else ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int::text end";
    try_superuser_sql(node, namespace, pod, sql)?.parse().ok()
}

#[tokio::test]
async fn clone_in_place_restore_and_standby_from_the_repository() {
    let Some((node, client)) = setup().await else {
        return;
    };
    let ns = Namespace::create(&node, &client, "pods-restores").await;
    apply(&node, &cluster_manifest(SOURCE, &ns.name, 3, "", ""));
    wait_condition(&client, &ns.name, SOURCE, "Ready", READY_LIMIT).await;
    // Every restore below starts from the initial full backup the operator takes itself.
    wait_job_succeeded(
        &client,
        &ns.name,
        &format!(
            "{},{}={}",
            naming::cluster_selector(SOURCE),
            naming::LABEL_PGBACKREST_BACKUP,
            naming::BACKUP_REPLICA_CREATE
        ),
        RESTORE_LIMIT,
    )
    .await;
    let primary = leader(&client, &ns.name, SOURCE, READY_LIMIT).await;

    // Rows before the target, the target (the primary's clock after they committed), rows
    // after it; then the WAL holding them is archived.
    superuser_sql(
        &node,
        &ns.name,
        &primary,
        &format!(
            "create table ledger (batch text, i int); \
             insert into ledger select 'before', generate_series(1, {BEFORE})"
        ),
    );
    let target = superuser_sql(
        &node,
        &ns.name,
        &primary,
        "select to_char(clock_timestamp() at time zone 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') || '+00'",
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    superuser_sql(
        &node,
        &ns.name,
        &primary,
        &format!("insert into ledger select 'after', generate_series(1, {AFTER})"),
    );
    let old_timeline = timeline(&node, &ns.name, &primary).expect("the primary's timeline");
    wait_archived(&node, &ns.name, &primary).await;
    let expected = format!("before|{BEFORE}");
    eprintln!("target {target}, source timeline {old_timeline}");

    clone_with_target(&node, &client, &ns.name, &target, &expected).await;
    standby_follows_and_is_promoted(&node, &client, &ns.name).await;
    in_place_restore(&node, &client, &ns.name, &target, &expected, old_timeline).await;
}

/// Switches the primary's WAL and waits until that segment is in the repository.
async fn wait_archived(node: &Node, namespace: &str, primary: &str) {
    let segment = superuser_sql(
        node,
        namespace,
        primary,
        "select pg_walfile_name(pg_switch_wal())",
    );
    eventually(
        &format!("segment {segment} archived"),
        Duration::from_secs(300),
        || async {
            let last = try_superuser_sql(
                node,
                namespace,
                primary,
                "select coalesce(last_archived_wal, '') from pg_stat_archiver",
            )?;
            (last.as_str() >= segment.as_str()).then_some(())
        },
    )
    .await;
}

/// `elephant`, cloned from the source's repo1 up to `target`: exactly the earlier rows.
async fn clone_with_target(
    node: &Node,
    client: &Client,
    namespace: &str,
    target: &str,
    expected: &str,
) {
    let data_source = format!(
        "  dataSource:\n    postgresCluster:\n      clusterName: {SOURCE}\n      repoName: repo1\n      \
         options: [--type=time, '--target=\"{target}\"']"
    );
    apply(
        node,
        &cluster_manifest("elephant", namespace, 1, "", &data_source),
    );
    wait_condition(client, namespace, "elephant", "Ready", RESTORE_LIMIT).await;
    let pods = members(node, client, namespace, "elephant", 1).await;
    let rows = batches(node, namespace, &pods[0]);
    assert_eq!(
        rows.as_deref(),
        Some(expected),
        "the clone has exactly the rows committed before {target}"
    );
    assert_eq!(
        try_superuser_sql(node, namespace, &pods[0], "select pg_is_in_recovery()").as_deref(),
        Some("f"),
        "the clone ended recovery and takes writes"
    );
    let restore = status(client, namespace, "elephant").await["pgbackrest"]["restore"].clone();
    assert_eq!(restore["id"], "dataSource", "{restore:#}");
    assert_eq!(restore["succeeded"], 1, "{restore:#}");
    // Gone before the next step: the node has room for one spare cluster at a time.
    node.kubectl_ok(
        &[
            "delete",
            "postgrescluster",
            "-n",
            namespace,
            "elephant",
            "--wait=false",
        ],
        None,
    );
}

/// The source restored in place to `target`: the restore is recorded, every member comes
/// back on one new timeline (replicas streaming it), and none has a row from after it.
async fn in_place_restore(
    node: &Node,
    client: &Client,
    namespace: &str,
    target: &str,
    expected: &str,
    old_timeline: u32,
) {
    patch_cluster(
        client,
        namespace,
        SOURCE,
        json!({"spec": {"backups": {"pgbackrest": {"restore": {
            "enabled": true, "repoName": "repo1",
            "options": ["--type=time", format!("--target=\"{target}\"")]
        }}}}}),
    )
    .await;
    annotate(
        client,
        namespace,
        SOURCE,
        naming::ANNOTATION_RESTORE,
        "pitr-1",
    )
    .await;
    let recorded = eventually("the in-place restore finished", RESTORE_LIMIT, || async {
        let restore = status(client, namespace, SOURCE).await["pgbackrest"]["restore"].clone();
        (restore["id"] == "pitr-1" && restore["finished"] == true).then_some(restore)
    })
    .await;
    assert_eq!(recorded["succeeded"], 1, "{recorded:#}");

    let pods = members(node, client, namespace, SOURCE, 3).await;
    let primary = leader(client, namespace, SOURCE, RESTORE_LIMIT).await;
    let new_timeline = eventually("the restored primary's timeline", RESTORE_LIMIT, || async {
        timeline(node, namespace, &primary).filter(|t| *t > old_timeline)
    })
    .await;
    for pod in &pods {
        // Replicas rejoin (pg_rewind or a new copy) and stream the new timeline.
        let seen = eventually(
            &format!("{pod} on timeline {new_timeline}"),
            RESTORE_LIMIT,
            || async {
                let t = timeline(node, namespace, pod)?;
                (t == new_timeline).then_some(t)
            },
        )
        .await;
        assert_eq!(seen, new_timeline);
        let rows = eventually(
            &format!("rows on {pod}"),
            Duration::from_secs(120),
            || async { batches(node, namespace, pod) },
        )
        .await;
        assert_eq!(
            rows, expected,
            "{pod} has exactly the rows committed before {target}"
        );
    }
    wait_condition(client, namespace, SOURCE, "Ready", RESTORE_LIMIT).await;
}

/// `hippo-standby` replays the source's repo1 (its own `repo1` pointed at the source's repo
/// host): it has the source's rows, follows new ones once their WAL is archived, and
/// promoted with `standby.enabled: false` (and its repo1 back on its own repo host, so the
/// two clusters never write one repository) it takes writes.
async fn standby_follows_and_is_promoted(node: &Node, client: &Client, namespace: &str) {
    let standby = "hippo-standby";
    let source_repo_host = format!("{SOURCE}-repo-host-0.{SOURCE}-pods.{namespace}.svc");
    apply(
        node,
        &cluster_manifest(
            standby,
            namespace,
            1,
            &format!("      global: {{repo1-host: {source_repo_host}}}"),
            "  standby: {enabled: true, repoName: repo1}",
        ),
    );
    let pods = members(node, client, namespace, standby, 1).await;
    let member = &pods[0];
    let expected = format!("after|{AFTER},before|{BEFORE}");
    let rows = eventually(
        "the standby has the source's rows",
        RESTORE_LIMIT,
        || async { batches(node, namespace, member).filter(|r| *r == expected) },
    )
    .await;
    assert_eq!(rows, expected);
    assert_eq!(
        try_superuser_sql(node, namespace, member, "select pg_is_in_recovery()").as_deref(),
        Some("t")
    );

    // New rows on the source reach the standby through the repository.
    let primary = leader(client, namespace, SOURCE, RESTORE_LIMIT).await;
    superuser_sql(
        node,
        namespace,
        &primary,
        "insert into ledger select 'later', generate_series(1, 10)",
    );
    wait_archived(node, namespace, &primary).await;
    let following = format!("after|{AFTER},before|{BEFORE},later|10");
    eventually(
        "the standby replays the new rows",
        RESTORE_LIMIT,
        || async { batches(node, namespace, member).filter(|r| *r == following) },
    )
    .await;
    let ready = status(client, namespace, standby).await;
    let backups_ready = ready["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == "BackupsReady")
        .cloned()
        .unwrap_or_default();
    assert_eq!(backups_ready["reason"], "StandbyCluster", "{ready:#}");

    // Promoted: standby off, and repo1 is its own again.
    patch_cluster(
        client,
        namespace,
        standby,
        json!({"spec": {
            "standby": {"enabled": false},
            "backups": {"pgbackrest": {"global": null}}
        }}),
    )
    .await;
    eventually("the standby promoted", RESTORE_LIMIT, || async {
        try_superuser_sql(node, namespace, member, "select pg_is_in_recovery()")
            .filter(|r| r == "f")
    })
    .await;
    superuser_sql(
        node,
        namespace,
        member,
        "insert into ledger values ('promoted', 1)",
    );
    assert_eq!(
        batches(node, namespace, member).as_deref(),
        Some(format!("after|{AFTER},before|{BEFORE},later|10,promoted|1").as_str()),
        "the promoted standby took the write and kept what it replayed"
    );
    // Its own stanza now, on its own repo host.
    eventually(
        "the promoted cluster's own stanza",
        RESTORE_LIMIT,
        || async {
            let status = status(client, namespace, standby).await;
            (status["pgbackrest"]["repos"][0]["stanzaCreated"] == true).then_some(())
        },
    )
    .await;
    // Gone before the in-place restore: room for its three members.
    node.kubectl_ok(
        &[
            "delete",
            "postgrescluster",
            "-n",
            namespace,
            standby,
            "--wait=false",
        ],
        None,
    );
}
