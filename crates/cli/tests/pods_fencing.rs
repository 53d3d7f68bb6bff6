//! The fencer in real pods: the primary's Patroni is frozen (SIGSTOP from the host, to the
//! one process of that pod) while its PostgreSQL keeps running. Patroni can then neither
//! renew the lease nor demote, so only the pod's `fencer` container stands between the old
//! primary and a second primary. It must kill the old primary's PostgreSQL before the
//! replica that takes the lease over was promoted: the fencer's log line is compared with
//! the new leader's `acquireTime` on the leader Endpoints (both written on this node's
//! clock). Then Patroni resumes and the old primary rejoins as a streaming replica.
//!
//! On the same cluster then, the DCS itself goes: the node's kube-apiserver is frozen for two
//! leases. Patroni's failsafe mode keeps the primary serving (every member still answers its
//! REST calls), so its fencer must spare it: writes through `<c>-primary` continue past the
//! lease, nothing is fenced or restarted, and nothing fails over once the API is back.

mod kube_support;
mod node_support;

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Endpoints, Pod};
use kube::api::Api;
use kube::Client;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use node_support::install::install_operator;
use node_support::sql::{create_ledger, login, lost_rows, LedgerWriter};
use node_support::{apply_example, instance_pods, patroni_leader, wait_condition, Namespace, Node};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use tusk_api::naming::{ClusterNames, DnsLabel};

use kube_support::{eventually, repo_root};

const READY_LIMIT: Duration = Duration::from_secs(600);

/// Resumes the frozen process when dropped, also when an assertion fails.
struct Frozen(i32);

impl Drop for Frozen {
    fn drop(&mut self) {
        let _ = kill(Pid::from_raw(self.0), Signal::SIGCONT);
    }
}

/// The host pid of Patroni in the pod with `uid`: the process started as `patroni
/// /etc/patroni/patroni.yaml` whose cgroup names the pod (cgroupfs spells the UID as it is,
/// the systemd driver with underscores).
fn patroni_host_pid(pod_uid: &str) -> Option<i32> {
    let underscored = pod_uid.replace('-', "_");
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let pid: i32 = entry.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
            let patroni = args
                .iter()
                .any(|a| a.ends_with(b"/patroni") || *a == b"patroni")
                && args.contains(&b"/etc/patroni/patroni.yaml".as_slice());
            let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
            (patroni && (cgroup.contains(pod_uid) || cgroup.contains(&underscored))).then_some(pid)
        })
}

/// The time of the fencer's `FENCED` line (`YYYY-MM-DD HH:MM:SS.mmm UTC fencer: FENCED: ...`).
fn fenced_at(log: &str) -> Option<OffsetDateTime> {
    let line = log.lines().find(|l| l.contains("fencer: FENCED"))?;
    let stamp = line.split(" UTC").next()?.replacen(' ', "T", 1) + "Z";
    OffsetDateTime::parse(&stamp, &Rfc3339).ok()
}

#[tokio::test]
async fn a_frozen_patroni_is_fenced_before_a_promotion_and_an_api_outage_fences_nothing() {
    let Some(node) = Node::acquire() else {
        return;
    };
    let client: Client = node.client().await;
    install_operator(&node);
    let ns = Namespace::create(&node, &client, "pods-fence").await;
    let cluster = "hippo";
    let names = ClusterNames::new(DnsLabel::new(cluster).expect("a name"));
    apply_example(&node, &repo_root().join("examples/hippo-ha.yaml"), &ns.name);
    wait_condition(&client, &ns.name, cluster, "Ready", READY_LIMIT).await;
    let pods = instance_pods(&client, &ns.name, cluster).await;
    let scope = names.patroni_scope();
    let old = patroni_leader(&client, &ns.name, &scope)
        .await
        .expect("a leader");
    let old_uid = pods[&old].metadata.uid.clone().expect("a pod UID");
    let pid = eventually("Patroni's host pid", Duration::from_secs(30), || async {
        patroni_host_pid(&old_uid)
    })
    .await;
    // Every fencer guards its member from the start.
    for pod in pods.keys() {
        let log = node.kubectl_ok(&["logs", "-n", &ns.name, pod, "-c", "fencer"], None);
        assert!(log.contains(&format!("guarding {pod} ")), "{pod}: {log}");
    }

    kill(Pid::from_raw(pid), Signal::SIGSTOP).expect("freezing Patroni");
    let frozen = Frozen(pid);
    let new = eventually("a new leader", Duration::from_secs(120), || async {
        patroni_leader(&client, &ns.name, &scope)
            .await
            .filter(|leader| *leader != old)
    })
    .await;
    let endpoints: Api<Endpoints> = Api::namespaced(client.clone(), &ns.name);
    let annotations = endpoints
        .get(&scope)
        .await
        .expect("the leader Endpoints")
        .metadata
        .annotations
        .unwrap_or_default();
    let acquired = OffsetDateTime::parse(&annotations["acquireTime"], &Rfc3339)
        .expect("Patroni's acquireTime");
    let log = node.kubectl_ok(&["logs", "-n", &ns.name, &old, "-c", "fencer"], None);
    let fenced = fenced_at(&log).unwrap_or_else(|| panic!("{old}'s fencer did not act:\n{log}"));
    eprintln!(
        "{old} fenced at {fenced}; {new} acquired the lease at {acquired} ({:.1}s later)",
        (acquired - fenced).as_seconds_f64()
    );
    assert!(
        fenced < acquired,
        "the old primary was fenced at {fenced}, after {new} took the lease at {acquired}"
    );
    // While its Patroni is still frozen, nothing serves as a primary in the old pod.
    let primary_there = node.superuser_sql(&ns.name, &old, "select pg_is_in_recovery()");
    assert_ne!(
        primary_there.as_deref(),
        Ok("f"),
        "PostgreSQL still runs as a primary in {old}"
    );

    drop(frozen);
    // Resumed, Patroni finds its PostgreSQL gone and the lease taken: it rejoins as a replica
    // of the new primary (or the kubelet restarts the container, with the same outcome).
    eventually(
        "the old primary streaming from the new one",
        Duration::from_secs(300),
        || async {
            let streaming = node
                .superuser_sql(
                    &ns.name,
                    &new,
                    "select application_name || ' ' || state from pg_stat_replication",
                )
                .ok()?;
            streaming
                .lines()
                .any(|line| line == format!("{old} streaming"))
                .then_some(())
        },
    )
    .await;
    let pods_api: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
    let rejoined = pods_api.get(&old).await.expect("the old primary's pod");
    assert_eq!(
        rejoined.metadata.uid.as_deref(),
        Some(old_uid.as_str()),
        "the pod itself was never replaced"
    );

    api_server_outage_changes_nothing(&node, &client, &ns.name, cluster, &new).await;
}

/// The API server frozen for two leases under a writer: the primary `leader` keeps serving
/// past its lease, and afterwards it is still the leader, unfenced and never restarted, with
/// every acknowledged row stored.
async fn api_server_outage_changes_nothing(
    node: &Node,
    client: &Client,
    namespace: &str,
    cluster: &str,
    leader: &str,
) {
    let names = ClusterNames::new(DnsLabel::new(cluster).expect("a name"));
    let lease = Duration::from_secs(tusk_api::model::DEFAULT_TTL_SECONDS.into());
    let started_sql = "select pg_postmaster_start_time()";
    let started = node
        .superuser_sql(namespace, leader, started_sql)
        .expect("the leader's start time");
    let primary = login(
        client,
        namespace,
        cluster,
        &names.primary_service(),
        "hippo",
    )
    .await;
    create_ledger(&primary).await;
    let writer = LedgerWriter::start(primary.clone());
    writer.wait_for_more(20, Duration::from_secs(60)).await;

    let pid_file = node.dir().join("pids/kube-apiserver.pid");
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .expect("the node's kube-apiserver pid")
        .trim()
        .parse()
        .expect("a pid");
    // Two leases: past the lease, and short of the 40 s after which the node would be marked
    // NotReady (which would take the replicas out of their Service).
    let outage = 2 * lease;
    kill(Pid::from_raw(pid), Signal::SIGSTOP).expect("freezing kube-apiserver");
    let stopped_at = Instant::now();
    let frozen = Frozen(pid);
    tokio::time::sleep(outage).await;
    drop(frozen);
    let past_lease = writer
        .acks()
        .iter()
        .filter(|a| a.at > stopped_at + lease && a.at < stopped_at + outage)
        .count();

    // Two more leases for anything that would act on the outage afterwards.
    tokio::time::sleep(outage).await;
    writer.wait_for_more(20, Duration::from_secs(60)).await;
    let (acks, attempted) = writer.stop().await;
    let scope = names.patroni_scope();
    let after = patroni_leader(client, namespace, &scope).await;
    let restarted = node.superuser_sql(namespace, leader, started_sql);
    let log = node.kubectl_ok(&["logs", "-n", namespace, leader, "-c", "fencer"], None);
    let lost = lost_rows(&primary, &acks).await;
    eprintln!(
        "API server frozen {}s: {past_lease} commits past the lease; {} acknowledged of \
         {attempted}; leader after {after:?}",
        outage.as_secs(),
        acks.len()
    );
    assert!(
        past_lease >= 10,
        "the primary kept acknowledging writes past its lease ({past_lease})"
    );
    assert!(!log.contains("FENCED"), "{leader}'s fencer fenced:\n{log}");
    assert_eq!(after.as_deref(), Some(leader), "nothing failed over");
    assert_eq!(
        restarted,
        Ok(started),
        "{leader}'s PostgreSQL was never restarted"
    );
    assert!(lost.is_empty(), "acknowledged rows lost: {lost:?}");
}
