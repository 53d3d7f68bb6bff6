//! `spec.patroni.switchover` and the `tusk.rs/trigger-switchover` annotation, on
//! kube-fake-client. The test plays Patroni as its Kubernetes DCS does: member pods with the
//! `status` annotation (role, state, timeline), the leader lock on Endpoints `hippo-ha`,
//! `hippo-ha-config` and `hippo-ha-sync`; then it reads what the reconcile wrote into Patroni's
//! failover key `hippo-ha-failover` and into the status, and acts on the key as Patroni's HA
//! loop would (new primary, new timeline, `leader`/`member` cleared).

mod common;

use std::collections::BTreeMap;

use chrono::{SecondsFormat, Utc};
use common::{cluster_from, Harness, NAME, NS};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Endpoints, Pod};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube_fake_client::{interceptor, ClientBuilder};
use serde_json::{json, Value};
use tusk_api::naming::{self, ANNOTATION_TRIGGER_SWITCHOVER};
use tusk_api::types::PatroniStatus;
use tusk_api::PostgresCluster;
use tusk_operator::controller::switchover::decide::{
    REFUSED_NOT_SYNCHRONOUS, REFUSED_NO_CANDIDATE, REFUSED_NO_PRIMARY, REFUSED_TARGET_IS_PRIMARY,
    REFUSED_UNHEALTHY_TARGET, REFUSED_UNKNOWN_TARGET,
};
use tusk_operator::controller::switchover::{
    reconcile_switchover, CONDITION, REASON_COMPLETED, REASON_FAILED, REASON_IN_PROGRESS,
    REASON_REQUESTED,
};

const FAILOVER: &str = "hippo-ha-failover";

fn manifest(replicas: u32, switchover: &str) -> PostgresCluster {
    manifest_with(replicas, switchover, "{}")
}

fn manifest_with(replicas: u32, switchover: &str, dynamic: &str) -> PostgresCluster {
    cluster_from(&format!(
        r#"
apiVersion: tusk.rs/v1beta1
kind: PostgresCluster
metadata: {{name: {NAME}, namespace: {NS}}}
spec:
  postgresVersion: 15
  patroni:
    switchover: {switchover}
    dynamicConfiguration: {dynamic}
  instances:
    - name: instance1
      replicas: {replicas}
      dataVolumeClaimSpec:
        accessModes: [ReadWriteOnce]
        resources: {{requests: {{storage: 1Gi}}}}
"#
    ))
}

/// Labels Patroni selects its objects by (`kubernetes.labels` plus the scope label).
fn patroni_labels() -> BTreeMap<String, String> {
    BTreeMap::from([
        (naming::LABEL_CLUSTER.to_owned(), NAME.to_owned()),
        (naming::LABEL_PATRONI.to_owned(), format!("{NAME}-ha")),
    ])
}

/// The test's Patroni: the cluster's instances (sorted) and the DCS objects it writes.
struct Patroni<'a> {
    h: &'a Harness,
    instances: Vec<String>,
}

impl<'a> Patroni<'a> {
    /// A running cluster: `instances[0]` holds the lock on timeline 1, the others stream.
    async fn start(h: &'a Harness) -> Patroni<'a> {
        h.reconcile().await;
        let sets: Api<StatefulSet> = Api::namespaced(h.client.clone(), NS);
        let params = ListParams::default().labels(&naming::cluster_selector(NAME));
        let mut instances: Vec<String> = sets
            .list(&params)
            .await
            .unwrap()
            .items
            .into_iter()
            .map(|s| s.metadata.name.unwrap())
            .collect();
        instances.sort();
        let patroni = Patroni { h, instances };
        for (i, instance) in patroni.instances.iter().enumerate() {
            let role = if i == 0 { "master" } else { "replica" };
            patroni.member(instance, role, "running", 1).await;
        }
        patroni.lock(Some(0), &now()).await;
        patroni.config(json!({"ttl": 15, "loop_wait": 5})).await;
        patroni
    }

    fn pod(&self, i: usize) -> String {
        naming::instance_pod(&self.instances[i])
    }

    /// Creates or updates the member pod of `instance` as Patroni's `touch_member` does.
    async fn member(&self, instance: &str, role: &str, state: &str, timeline: i64) {
        let api: Api<Pod> = Api::namespaced(self.h.client.clone(), NS);
        let name = naming::instance_pod(instance);
        let status = json!({"role": role, "state": state, "timeline": timeline,
                            "xlog_location": 50_331_648, "version": "3.0.2"});
        let label = if role == "master" {
            "master"
        } else {
            "replica"
        };
        if api.get_opt(&name).await.unwrap().is_none() {
            let mut labels = naming::instance_labels(NAME, "instance1", instance);
            labels.insert(naming::LABEL_ROLE.to_owned(), label.to_owned());
            let pod: Pod = serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": NS, "labels": labels,
                             "annotations": {"status": status.to_string()}},
                "spec": {"containers": [{"name": "database", "image": "postgres"}]},
            }))
            .unwrap();
            api.create(&PostParams::default(), &pod).await.unwrap();
        } else {
            let patch = json!({"metadata": {
                "labels": {naming::LABEL_ROLE: label},
                "annotations": {"status": status.to_string()},
            }});
            api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .unwrap();
        }
    }

    /// Endpoints `name` with `annotations` merged in (created with Patroni's labels).
    async fn endpoints(&self, name: &str, annotations: Value) {
        let api: Api<Endpoints> = Api::namespaced(self.h.client.clone(), NS);
        if api.get_opt(name).await.unwrap().is_none() {
            let endpoints = Endpoints {
                metadata: kube::api::ObjectMeta {
                    name: Some(name.to_owned()),
                    namespace: Some(NS.to_owned()),
                    labels: Some(patroni_labels()),
                    ..Default::default()
                },
                ..Default::default()
            };
            api.create(&PostParams::default(), &endpoints)
                .await
                .unwrap();
        }
        let patch = json!({"metadata": {"annotations": annotations}});
        api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap();
    }

    /// The leader lock on `hippo-ha`, held by `instances[holder]`, renewed at `renewed`.
    async fn lock(&self, holder: Option<usize>, renewed: &str) {
        let leader = holder.map(|i| self.pod(i));
        self.endpoints(
            &format!("{NAME}-ha"),
            json!({"leader": leader, "renewTime": renewed, "ttl": "15"}),
        )
        .await;
    }

    async fn config(&self, config: Value) {
        self.endpoints(
            &format!("{NAME}-ha-config"),
            json!({"config": config.to_string(), "initialize": "7318251"}),
        )
        .await;
    }

    /// What Patroni's HA loop does with a request it carried out: `to` promoted on `timeline`,
    /// the old primary following, `leader`/`member` cleared.
    async fn switch_to(&self, to: usize, timeline: i64) {
        for (i, instance) in self.instances.iter().enumerate() {
            let role = if i == to { "master" } else { "replica" };
            self.member(instance, role, "running", timeline).await;
        }
        self.lock(Some(to), &now()).await;
        self.take_request().await;
    }

    /// Patroni clears `leader` and `member` (and leaves the operator's marks).
    async fn take_request(&self) {
        self.endpoints(FAILOVER, json!({"leader": null, "member": null}))
            .await;
    }
}

/// Now as Patroni writes `renewTime` (`datetime.now(tzutc).isoformat()`).
fn now() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Micros, false)
}

async fn failover_key(h: &Harness) -> Option<Endpoints> {
    let api: Api<Endpoints> = Api::namespaced(h.client.clone(), NS);
    api.get_opt(FAILOVER).await.unwrap()
}

/// `leader` and `member` of the failover key.
async fn request_in_key(h: &Harness) -> (Option<String>, Option<String>) {
    let key = failover_key(h).await.expect("failover key written");
    let a = key.metadata.annotations.unwrap_or_default();
    (a.get("leader").cloned(), a.get("member").cloned())
}

async fn patroni_status(h: &Harness) -> PatroniStatus {
    h.cluster()
        .await
        .status
        .and_then(|s| s.patroni)
        .unwrap_or_default()
}

async fn trigger(h: &Harness, value: &str) {
    h.edit(|c| {
        c.metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert(ANNOTATION_TRIGGER_SWITCHOVER.to_owned(), value.to_owned());
    })
    .await;
}

async fn target(h: &Harness, instance: &str, kind: &str) {
    let instance = instance.to_owned();
    let kind = kind.to_owned();
    h.edit(move |c| {
        c.spec
            .patroni
            .get_or_insert_with(Default::default)
            .switchover = Some(
            serde_json::from_value(
                json!({"enabled": true, "targetInstance": instance, "type": kind}),
            )
            .unwrap(),
        );
    })
    .await;
}

#[tokio::test]
async fn a_new_trigger_switches_over_once_and_records_it() {
    let h = Harness::new(manifest(3, "{enabled: true}")).await;
    let p = Patroni::start(&h).await;
    let pods = Api::<Pod>::namespaced(h.client.clone(), NS);
    let uids = |list: kube::core::ObjectList<Pod>| -> BTreeMap<String, Option<String>> {
        list.items
            .into_iter()
            .map(|p| (p.metadata.name.unwrap(), p.metadata.uid))
            .collect()
    };
    let uids_before = uids(pods.list(&ListParams::default()).await.unwrap());

    // Enabled without a trigger: nothing asked of Patroni.
    h.reconcile().await;
    assert!(failover_key(&h).await.is_none());

    target(&h, &p.instances[2], "Switchover").await;
    trigger(&h, "Mon Jun  3 10:00:00 UTC 2024").await;
    h.reconcile().await;
    assert_eq!(
        request_in_key(&h).await,
        (Some(p.pod(0)), Some(p.pod(2))),
        "from the lock holder to the named instance's pod"
    );
    let key = failover_key(&h).await.unwrap();
    assert_eq!(
        key.metadata.labels,
        Some(patroni_labels()),
        "Patroni's watch sees it"
    );
    let marks = key.metadata.annotations.unwrap();
    assert_eq!(
        marks[naming::ANNOTATION_SWITCHOVER_TRIGGER],
        "Mon Jun  3 10:00:00 UTC 2024"
    );
    assert_eq!(marks[naming::ANNOTATION_SWITCHOVER_TIMELINE], "1");
    let status = patroni_status(&h).await;
    assert_eq!(
        status.switchover_timeline,
        Some(1),
        "timeline recorded first"
    );
    assert_eq!(status.switchover, None, "not done yet");
    assert_eq!(h.condition(CONDITION).await.status, "False");
    let requested = h.event_notes("Normal", REASON_REQUESTED).await;
    assert_eq!(requested.len(), 1, "{requested:?}");
    assert!(
        requested[0].starts_with(&format!(
            "switchover from {} to {} requested",
            p.instances[0], p.instances[2]
        )),
        "{}",
        requested[0]
    );

    // While Patroni works, the request is left alone.
    let version = failover_key(&h).await.unwrap().metadata.resource_version;
    h.reconcile().await;
    assert_eq!(
        failover_key(&h).await.unwrap().metadata.resource_version,
        version
    );

    p.switch_to(2, 2).await;
    h.reconcile().await;
    let status = patroni_status(&h).await;
    assert_eq!(
        status.switchover.as_deref(),
        Some("Mon Jun  3 10:00:00 UTC 2024")
    );
    assert_eq!(status.switchover_timeline, None, "cleared once done");
    let condition = h.condition(CONDITION).await;
    assert_eq!(
        (condition.status.as_str(), condition.reason.as_str()),
        ("True", REASON_COMPLETED)
    );
    let completed = h.event_notes("Normal", REASON_COMPLETED).await;
    assert_eq!(completed.len(), 1);
    assert!(
        completed[0].starts_with(&format!("{} is the primary on timeline 2", p.instances[2])),
        "{}",
        completed[0]
    );

    // The same value again, later: nothing.
    let version = failover_key(&h).await.unwrap().metadata.resource_version;
    h.reconcile().await;
    h.reconcile().await;
    assert_eq!(
        failover_key(&h).await.unwrap().metadata.resource_version,
        version
    );
    assert_eq!(h.event_notes("Normal", REASON_REQUESTED).await.len(), 1);
    assert_eq!(
        uids(pods.list(&ListParams::default()).await.unwrap()),
        uids_before,
        "no pod was recreated"
    );

    // A new value is a new request, now from the new primary.
    target(&h, &p.instances[0], "Switchover").await;
    trigger(&h, "second").await;
    h.reconcile().await;
    assert_eq!(request_in_key(&h).await, (Some(p.pod(2)), Some(p.pod(0))));
}

#[tokio::test]
async fn nothing_happens_while_disabled_or_for_a_value_acted_on() {
    let h = Harness::new(manifest(2, "{enabled: false}")).await;
    let p = Patroni::start(&h).await;
    trigger(&h, "t1").await;
    h.reconcile().await;
    assert!(failover_key(&h).await.is_none(), "enabled: false");
    assert!(h
        .cluster()
        .await
        .status
        .unwrap()
        .conditions
        .iter()
        .all(|c| c.type_ != CONDITION));

    // Enabled, but the status says this value was acted on (before an operator restart).
    h.clusters
        .patch_status(
            NAME,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"patroni": {"switchover": "t1"}}})),
        )
        .await
        .unwrap();
    target(&h, &p.instances[1], "Switchover").await;
    h.reconcile().await;
    assert!(failover_key(&h).await.is_none(), "t1 was acted on");
    assert!(h.events().await.iter().all(|e| e
        .reason
        .as_deref()
        .is_none_or(|r| !r.starts_with("Switchover"))));

    trigger(&h, "t2").await;
    h.reconcile().await;
    assert_eq!(request_in_key(&h).await, (Some(p.pod(0)), Some(p.pod(1))));
}

#[tokio::test]
async fn an_invalid_target_is_refused_by_field_and_writes_nothing() {
    // Synchronous mode comes from the manifest: the DCS step before the switchover puts
    // Patroni's configuration back to what the manifest renders.
    let h = Harness::new(manifest_with(
        3,
        "{enabled: true}",
        "{synchronous_mode: true}",
    ))
    .await;
    let p = Patroni::start(&h).await;
    p.endpoints(
        &format!("{NAME}-ha-sync"),
        json!({"leader": p.pod(0), "sync_standby": p.pod(2)}),
    )
    .await;
    trigger(&h, "t1").await;
    let refused = |reason: &'static str, expected: String| {
        let h = &h;
        async move {
            h.reconcile().await;
            assert!(
                failover_key(h).await.is_none(),
                "nothing written for: {expected}"
            );
            assert_eq!(patroni_status(h).await.switchover_timeline, None);
            let condition = h.condition(CONDITION).await;
            assert_eq!(
                (condition.reason.as_str(), condition.message.as_str()),
                (reason, expected.as_str())
            );
            let notes = h.event_notes("Warning", reason).await;
            assert_eq!(notes, [expected]);
        }
    };

    let unknown = format!("{NAME}-instance1-zzzz");
    target(&h, &unknown, "Switchover").await;
    refused(
        REFUSED_UNKNOWN_TARGET,
        format!(
            "spec.patroni.switchover.targetInstance: instance {unknown} is not a member of this \
         cluster (its instances: {})",
            p.instances.join(", ")
        ),
    )
    .await;

    target(&h, &p.instances[0], "Switchover").await;
    refused(
        REFUSED_TARGET_IS_PRIMARY,
        format!(
            "spec.patroni.switchover.targetInstance: instance {} is already the primary",
            p.instances[0]
        ),
    )
    .await;

    p.member(&p.instances[1], "replica", "starting", 1).await;
    target(&h, &p.instances[1], "Switchover").await;
    refused(
        REFUSED_UNHEALTHY_TARGET,
        format!(
            "spec.patroni.switchover.targetInstance: instance {} is not a healthy replica: \
         Patroni reports role replica, state starting",
            p.instances[1]
        ),
    )
    .await;

    // Synchronous mode: only the synchronous standby may take over.
    p.member(&p.instances[1], "replica", "streaming", 1).await;
    refused(
        REFUSED_NOT_SYNCHRONOUS,
        format!(
            "spec.patroni.switchover.targetInstance: instance {} is not the synchronous standby \
         (synchronous_mode is on; it is {})",
            p.instances[1], p.instances[2]
        ),
    )
    .await;

    // Fixing the spec is all it takes: the refused value is still pending.
    target(&h, &p.instances[2], "Switchover").await;
    h.reconcile().await;
    assert_eq!(request_in_key(&h).await, (Some(p.pod(0)), Some(p.pod(2))));
    assert_eq!(h.condition(CONDITION).await.reason, REASON_IN_PROGRESS);
}

#[tokio::test]
async fn without_a_target_patroni_picks_the_best_replica_and_one_instance_is_refused() {
    let h = Harness::new(manifest(3, "{enabled: true}")).await;
    let p = Patroni::start(&h).await;
    p.member(&p.instances[1], "replica", "stopped", 1).await;
    trigger(&h, "t1").await;
    h.reconcile().await;
    assert_eq!(
        request_in_key(&h).await,
        (Some(p.pod(0)), None),
        "no member: Patroni picks"
    );
    let notes = h.event_notes("Normal", REASON_REQUESTED).await;
    assert!(
        notes[0].starts_with(&format!(
            "switchover from {} to the healthiest of {} (Patroni picks)",
            p.instances[0], p.instances[2]
        )),
        "only healthy replicas are candidates: {}",
        notes[0]
    );

    let h = Harness::new(manifest(1, "{enabled: true}")).await;
    Patroni::start(&h).await;
    trigger(&h, "t1").await;
    h.reconcile().await;
    assert!(failover_key(&h).await.is_none());
    let condition = h.condition(CONDITION).await;
    assert_eq!(
        (condition.reason.as_str(), condition.message.as_str()),
        (
            REFUSED_NO_CANDIDATE,
            "spec.patroni.switchover: no healthy replica to switch over to"
        )
    );
}

#[tokio::test]
async fn failover_promotes_a_named_member_only_without_a_healthy_primary() {
    let h = Harness::new(manifest(3, "{enabled: true}")).await;
    let p = Patroni::start(&h).await;
    // The primary's Patroni stopped renewing its lock 20 s ago (ttl 15).
    let stale =
        (Utc::now() - chrono::Duration::seconds(20)).to_rfc3339_opts(SecondsFormat::Micros, false);
    p.lock(Some(0), &stale).await;
    trigger(&h, "t1").await;

    target(&h, &p.instances[1], "Switchover").await;
    h.reconcile().await;
    assert!(failover_key(&h).await.is_none());
    let condition = h.condition(CONDITION).await;
    assert_eq!(condition.reason, REFUSED_NO_PRIMARY);
    assert!(
        condition
            .message
            .starts_with("spec.patroni.switchover.type: Switchover needs a healthy primary"),
        "{}",
        condition.message
    );

    p.member(&p.instances[1], "replica", "stopped", 1).await;
    target(&h, &p.instances[1], "Failover").await;
    h.reconcile().await;
    assert!(failover_key(&h).await.is_none());
    assert_eq!(
        h.condition(CONDITION).await.message,
        format!(
            "spec.patroni.switchover.targetInstance: instance {} is not running (Patroni \
             reports state stopped)",
            p.instances[1]
        )
    );

    target(&h, &p.instances[2], "Failover").await;
    h.reconcile().await;
    assert_eq!(
        request_in_key(&h).await,
        (None, Some(p.pod(2))),
        "a failover names no leader to step down"
    );
    p.switch_to(2, 2).await;
    h.reconcile().await;
    assert_eq!(patroni_status(&h).await.switchover.as_deref(), Some("t1"));

    // With a healthy primary, a Failover is carried out as a clean switchover.
    trigger(&h, "t2").await;
    target(&h, &p.instances[0], "Failover").await;
    h.reconcile().await;
    assert_eq!(request_in_key(&h).await, (Some(p.pod(2)), Some(p.pod(0))));
}

#[tokio::test]
async fn a_restart_or_a_lost_status_write_never_switches_twice() {
    let h = Harness::new(manifest(2, "{enabled: true}")).await;
    let p = Patroni::start(&h).await;
    target(&h, &p.instances[1], "Switchover").await;
    trigger(&h, "t1").await;

    // The timeline was recorded but the key was never written (the operator stopped in
    // between): the next reconcile writes it, for the recorded timeline.
    h.clusters
        .patch_status(
            NAME,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"patroni": {"switchoverTimeline": 1}}})),
        )
        .await
        .unwrap();
    h.reconcile().await;
    assert_eq!(request_in_key(&h).await, (Some(p.pod(0)), Some(p.pod(1))));

    // Patroni switched over; the status write saying so was lost. The newer timeline is
    // proof enough: no second request.
    p.switch_to(1, 2).await;
    let version = failover_key(&h).await.unwrap().metadata.resource_version;
    h.reconcile().await;
    assert_eq!(
        failover_key(&h).await.unwrap().metadata.resource_version,
        version
    );
    assert_eq!(patroni_status(&h).await.switchover.as_deref(), Some("t1"));

    // A request Patroni cleared without a change of primary (it judged the candidate too far
    // behind) is reported as failed and not repeated.
    target(&h, &p.instances[0], "Switchover").await;
    trigger(&h, "t2").await;
    h.reconcile().await;
    assert_eq!(request_in_key(&h).await, (Some(p.pod(1)), Some(p.pod(0))));
    p.take_request().await;
    h.reconcile().await;
    let condition = h.condition(CONDITION).await;
    assert_eq!(
        (condition.status.as_str(), condition.reason.as_str()),
        ("False", REASON_FAILED)
    );
    assert!(
        condition.message.starts_with(&format!(
            "Patroni cleared the request without acting on it: {} is still the primary on \
             timeline 2",
            p.instances[1]
        )),
        "{}",
        condition.message
    );
    assert_eq!(h.event_notes("Warning", REASON_FAILED).await.len(), 1);
    assert_eq!(patroni_status(&h).await.switchover.as_deref(), Some("t2"));
    let version = failover_key(&h).await.unwrap().metadata.resource_version;
    h.reconcile().await;
    assert_eq!(
        failover_key(&h).await.unwrap().metadata.resource_version,
        version
    );
}

#[tokio::test]
async fn a_failed_timeline_record_writes_no_request() {
    let cluster = manifest(2, "{enabled: true}");
    let h = Harness::new(cluster.clone()).await;
    let p = Patroni::start(&h).await;
    let instances = p.instances.clone();
    // A second API server holding what Patroni wrote, whose status writes fail.
    let client =
        ClientBuilder::new()
            .with_resource::<PostgresCluster>()
            .with_interceptor_funcs(interceptor::Funcs::new().patch_status(|_| {
                Err(kube_fake_client::Error::Internal("etcd unavailable".into()))
            }))
            .with_object(cluster)
            .build()
            .await
            .unwrap();
    let pods: Api<Pod> = Api::namespaced(h.client.clone(), NS);
    let copy_pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    for mut pod in pods.list(&ListParams::default()).await.unwrap().items {
        pod.metadata.resource_version = None;
        copy_pods
            .create(&PostParams::default(), &pod)
            .await
            .unwrap();
    }
    let endpoints: Api<Endpoints> = Api::namespaced(h.client.clone(), NS);
    let copy_endpoints: Api<Endpoints> = Api::namespaced(client.clone(), NS);
    for mut e in endpoints.list(&ListParams::default()).await.unwrap().items {
        e.metadata.resource_version = None;
        copy_endpoints
            .create(&PostParams::default(), &e)
            .await
            .unwrap();
    }
    let mut cluster = h.cluster().await;
    cluster
        .metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert(ANNOTATION_TRIGGER_SWITCHOVER.to_owned(), "t1".to_owned());
    let validated = tusk_api::validate(&cluster).unwrap();
    let result = reconcile_switchover(&client, &cluster, &validated, &instances, false).await;
    let error = result.err().expect("the status write failed");
    assert_eq!(error.reason(), "RecordSwitchoverTimelineFailed");
    assert!(copy_endpoints.get_opt(FAILOVER).await.unwrap().is_none());
}
