//! Benchmark of Tusk in real pods, side by side with `tusk local` on the same manifests in the
//! same run: prints figures, asserts nothing.
//!
//! - apply -> Ready: `examples/01-hippo-basic.yaml` and `examples/hippo-ha.yaml` (3 instances,
//!   synchronous), from `kubectl apply` to the `Ready` condition; locally `tusk local up` until
//!   every replica streams;
//! - primary gone -> first commit on the new primary: the primary's pod deleted (Patroni gets
//!   SIGTERM, as on a node drain); locally SIGTERM to the primary's Patroni;
//! - switchover: the longest gap between consecutive acknowledged commits of a continuous
//!   writer around a planned switchover (`spec.patroni.switchover` + the trigger annotation;
//!   locally `tusk local switchover`);
//! - backup and restore of about 1 GB of table data (module `backups`): a full backup by
//!   annotation, a clone restored from it, raw `pg_basebackup`, and the same in `tusk local`.
//!
//! Run as `cargo bench -p tusk-cli --bench pods -- [--trials N] [--part ha|backups] [--scale N]`
//! (`--scale`: pgbench's, for the backup part; 70 is about 1 GB) as root on
//! a machine with the test node's packages (`.ci/run` installs them); it starts its own node
//! (or uses `TUSK_TEST_NODE`) and its own local clusters on 127.46.x.y, and stops them.

#[path = "pods/backups.rs"]
mod backups;
#[path = "../../local/tests/common/ha.rs"]
mod ha;
#[path = "../tests/kube_support/mod.rs"]
mod kube_support;
#[path = "../tests/node_support/mod.rs"]
mod node_support;
#[path = "../tests/pgbackrest_support/mod.rs"]
mod pgbackrest_support;

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::Client;
use kube_support::{eventually, repo_root};
use node_support::install::install_operator;
use node_support::sql::{create_ledger, login, LedgerWriter};
use node_support::{apply_example, patroni_leader, wait_condition, Namespace, Node};
use serde_json::json;

const USAGE: &str =
    "usage: cargo bench -p tusk-cli --bench pods -- [--trials N] [--part all|ha|backups] [--scale N]";
const LIMIT: Duration = Duration::from_secs(600);

/// One trial's figures, in seconds.
#[derive(Default)]
struct Figures {
    basic_ready: f64,
    ha_ready: f64,
    primary_gone_to_commit: f64,
    switchover_gap: f64,
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let usage = |message: String| -> ! {
        eprintln!("{message}\n{USAGE}");
        std::process::exit(2)
    };
    let mut trials = 1;
    let mut part = "all".to_owned();
    let mut scale = backups::SCALE;
    let mut rest = args.iter();
    while let Some(flag) = rest.next() {
        let value = rest
            .next()
            .unwrap_or_else(|| usage(format!("{flag} needs a value")));
        match flag.as_str() {
            "--trials" => {
                trials = value
                    .parse()
                    .unwrap_or_else(|_| usage(format!("--trials: {value:?} is not a number")))
            }
            "--part" if ["all", "ha", "backups"].contains(&value.as_str()) => part = value.clone(),
            "--scale" => {
                scale =
                    value.parse().ok().filter(|n| *n >= 1).unwrap_or_else(|| {
                        usage(format!("--scale: {value:?} is not a number >= 1"))
                    })
            }
            _ => usage(format!("unexpected arguments {flag} {value}")),
        }
    }
    let (ha_part, backup_part) = (part != "backups", part != "ha");
    std::env::set_var("TUSK_HA_QUIET", "1");
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    let mut pods = Vec::new();
    let mut local = Vec::new();
    let mut pod_backups = Vec::new();
    let mut local_backups = Vec::new();
    for trial in 1..=trials {
        if ha_part {
            eprintln!("trial {trial} of {trials}: pods");
            pods.push(runtime.block_on(pods_trial(trial)));
            eprintln!("trial {trial} of {trials}: tusk local");
            match local_trial(trial) {
                Ok(figures) => local.push(figures),
                Err(e) => eprintln!("  tusk local trial failed, not counted: {e}"),
            }
        }
        if backup_part {
            eprintln!("trial {trial} of {trials}: backups in pods");
            pod_backups.push(runtime.block_on(async {
                let node = acquire_node();
                let client = node.client().await;
                install_operator(&node);
                backups::pods_trial(&node, &client, trial, scale).await
            }));
            eprintln!("trial {trial} of {trials}: backups in tusk local");
            match backups::local_trial(trial, scale) {
                Ok(figures) => local_backups.push(figures),
                Err(e) => eprintln!("  tusk local backup trial failed, not counted: {e}"),
            }
        }
    }
    if ha_part {
        print_table(&pods, &local);
    }
    if backup_part {
        backups::print_table(&pod_backups, &local_backups, scale);
    }
}

fn acquire_node() -> Node {
    Node::acquire().unwrap_or_else(|| {
        eprintln!("TUSK_SKIP_KUBE_TESTS is set: nothing to measure");
        std::process::exit(2)
    })
}

async fn pods_trial(trial: usize) -> Figures {
    let node = acquire_node();
    let client = node.client().await;
    install_operator(&node);
    let mut figures = Figures::default();

    let basic = Namespace::create(&node, &client, &format!("bench-basic-{trial}")).await;
    let started = Instant::now();
    apply_example(
        &node,
        &repo_root().join("examples/01-hippo-basic.yaml"),
        &basic.name,
    );
    wait_condition(&client, &basic.name, "hippo", "Ready", LIMIT).await;
    figures.basic_ready = started.elapsed().as_secs_f64();
    drop(basic);

    let ns = Namespace::create(&node, &client, &format!("bench-ha-{trial}")).await;
    let started = Instant::now();
    apply_example(&node, &repo_root().join("examples/hippo-ha.yaml"), &ns.name);
    wait_condition(&client, &ns.name, "hippo", "Ready", LIMIT).await;
    figures.ha_ready = started.elapsed().as_secs_f64();

    let scope = "hippo-ha";
    let primary = login(&client, &ns.name, "hippo", "hippo-primary", "hippo").await;
    create_ledger(&primary).await;
    let writer = LedgerWriter::start(primary);
    writer.wait_for_more(50, LIMIT).await;
    let old = patroni_leader(&client, &ns.name, scope)
        .await
        .expect("a leader");
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
    let old_ip = pods
        .get(&old)
        .await
        .expect("the primary's pod")
        .status
        .and_then(|s| s.pod_ip)
        .expect("a pod IP");
    let deleted_at = Instant::now();
    pods.delete(&old, &DeleteParams::default())
        .await
        .expect("deleting the primary's pod");
    figures.primary_gone_to_commit = eventually("a commit on the new primary", LIMIT, || async {
        writer
            .acks()
            .iter()
            .find(|a| a.at > deleted_at && a.server != old_ip)
            .map(|a| a.at.duration_since(deleted_at).as_secs_f64())
    })
    .await;
    wait_for_all_ready(&client, &ns.name).await;

    writer.wait_for_more(50, LIMIT).await;
    let leader = patroni_leader(&client, &ns.name, scope)
        .await
        .expect("a leader");
    let target = sync_standby(&client, &ns.name, scope).await;
    let requested = Instant::now();
    kube_support::objects::clusters(&client, &ns.name)
        .patch(
            "hippo",
            &PatchParams::default(),
            &Patch::Merge(json!({
                "metadata": {"annotations": {tusk_api::naming::ANNOTATION_TRIGGER_SWITCHOVER: format!("bench-{trial}")}},
                "spec": {"patroni": {"switchover": {"enabled": true, "targetInstance": target.trim_end_matches("-0")}}}
            })),
        )
        .await
        .expect("requesting the switchover");
    eventually("the switchover", LIMIT, || async {
        let now = patroni_leader(&client, &ns.name, scope).await?;
        (now != leader).then_some(())
    })
    .await;
    let switched = Instant::now();
    writer.wait_for_more(50, LIMIT).await;
    let (acks, _) = writer.stop().await;
    figures.switchover_gap = ha::longest_gap_around(acks.iter().map(|a| a.at), requested, switched)
        .expect("commits around the switchover");
    figures
}

/// Waits until the cluster is Ready again with every pod back (after a deleted pod).
async fn wait_for_all_ready(client: &Client, namespace: &str) {
    wait_condition(client, namespace, "hippo", "Ready", LIMIT).await;
}

/// The member Patroni names as synchronous standby (`<scope>-sync` Endpoints).
async fn sync_standby(client: &Client, namespace: &str, scope: &str) -> String {
    let api: Api<k8s_openapi::api::core::v1::Endpoints> =
        Api::namespaced(client.clone(), namespace);
    eventually("a synchronous standby", LIMIT, || async {
        let sync = api.get(&format!("{scope}-sync")).await.ok()?;
        sync.metadata
            .annotations?
            .get("sync_standby")
            .filter(|s| !s.is_empty())
            .cloned()
    })
    .await
}

fn local_trial(trial: usize) -> Result<Figures, String> {
    let mut figures = Figures::default();
    let basic = ha::Cluster::new(&format!("127.46.{}", trial * 2));
    let file =
        basic.write_manifest(&std::fs::read_to_string(ha::example("01-hippo-basic.yaml")).unwrap());
    let started = Instant::now();
    basic.up(&file).map_err(|e| format!("up (basic): {e}"))?;
    figures.basic_ready = started.elapsed().as_secs_f64();
    drop(basic);

    let cluster = ha::Cluster::new(&format!("127.46.{}", trial * 2 + 1));
    let file =
        cluster.write_manifest(&std::fs::read_to_string(ha::example("hippo-ha.yaml")).unwrap());
    let started = Instant::now();
    cluster.up(&file).map_err(|e| format!("up (HA): {e}"))?;
    figures.ha_ready = started.elapsed().as_secs_f64();

    cluster.create_test_table();
    let writer = ha::Writer::start(&cluster, Duration::from_millis(2));
    writer.wait_acks_since(Instant::now(), 50, LIMIT);
    let old = cluster.leader();
    let stopped_at = cluster.terminate_patroni(&old);
    figures.primary_gone_to_commit = ha::first_ack_after(&writer, stopped_at, LIMIT)?;
    cluster.wait_new_leader(&old);
    cluster
        .up(&file)
        .map_err(|e| format!("up after the stop: {e}"))?;

    writer.wait_acks_since(Instant::now(), 50, LIMIT);
    let requested = Instant::now();
    tusk_local::switchover(&cluster.layout(), None, LIMIT, &mut |_| {})
        .map_err(|e| format!("switchover: {e}"))?;
    let switched = Instant::now();
    writer.wait_acks_since(switched, 50, LIMIT);
    let acks = writer.stop();
    figures.switchover_gap = ha::longest_gap_around(acks.iter().map(|a| a.at), requested, switched)
        .ok_or("no commits around the switchover")?;
    Ok(figures)
}

fn median(mut values: Vec<f64>) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let n = values.len();
    Some(if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    })
}

fn print_table(pods: &[Figures], local: &[Figures]) {
    type Metric = (&'static str, fn(&Figures) -> f64);
    let metrics: [Metric; 4] = [
        ("apply -> Ready, 01-hippo-basic", |f| f.basic_ready),
        ("apply -> Ready, hippo-ha (3 instances)", |f| f.ha_ready),
        ("primary gone -> first commit on new", |f| {
            f.primary_gone_to_commit
        }),
        ("switchover: longest write gap", |f| f.switchover_gap),
    ];
    let cell = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.1}"));
    println!(
        "\nmedian seconds over {} pod trial(s) and {} tusk local trial(s)",
        pods.len(),
        local.len()
    );
    println!("{:<40} {:>10} {:>12}", "", "pods", "tusk local");
    for (name, get) in metrics {
        println!(
            "{name:<40} {:>10} {:>12}",
            cell(median(pods.iter().map(get).collect())),
            cell(median(local.iter().map(get).collect()))
        );
    }
    println!(
        "(pods: the primary's pod deleted; tusk local: SIGTERM to the primary's Patroni; both \
         stop PostgreSQL cleanly and hand the leader lock over)"
    );
}
