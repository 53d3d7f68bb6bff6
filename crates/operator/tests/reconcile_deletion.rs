//! Deleting a cluster against kube-fake-client: the finalizer holds the deletion until the
//! instance pods are gone, then Patroni's unowned Endpoints are deleted and the cluster goes.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Endpoints, Pod};
use kube::api::{Api, DeleteParams, ObjectMeta, PostParams};
use tusk_api::{naming, PostgresCluster};

mod common;

use common::{cluster_from, Harness, NAME, NS};

fn manifest() -> PostgresCluster {
    cluster_from(&format!(
        r#"
apiVersion: tusk.rs/v1beta1
kind: PostgresCluster
metadata: {{name: {NAME}, namespace: {NS}}}
spec:
  postgresVersion: 15
  instances:
    - name: instance1
      replicas: 2
      dataVolumeClaimSpec:
        accessModes: [ReadWriteOnce]
        resources: {{requests: {{storage: 1Gi}}}}
"#
    ))
}

fn labelled(name: &str, extra: &[(&str, &str)]) -> ObjectMeta {
    let mut labels: BTreeMap<String, String> =
        [(naming::LABEL_CLUSTER.to_owned(), NAME.to_owned())].into();
    labels.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    ObjectMeta {
        name: Some(name.to_owned()),
        namespace: Some(NS.to_owned()),
        labels: Some(labels),
        ..ObjectMeta::default()
    }
}

#[tokio::test]
async fn the_first_reconcile_adds_the_finalizer_once() {
    let h = Harness::new(manifest()).await;
    for _ in 0..2 {
        h.reconcile().await;
        assert_eq!(
            h.cluster().await.metadata.finalizers.as_deref(),
            Some(&[naming::FINALIZER.to_owned()][..])
        );
    }
}

#[tokio::test]
async fn deletion_waits_for_the_pods_then_removes_patronis_endpoints_and_the_finalizer() {
    // A cluster being deleted, as the API server keeps it while a finalizer is set (the fake
    // server deletes at once on DELETE, so the test starts from the state after it).
    let mut deleting = manifest();
    deleting.metadata.finalizers = Some(vec![naming::FINALIZER.to_owned()]);
    deleting.metadata.deletion_timestamp = Some(
        k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::now()),
    );
    let h = Harness::new(deleting).await;
    let member = format!("{NAME}-instance1-abcd");
    let sets: Api<StatefulSet> = Api::namespaced(h.client.clone(), NS);
    sets.create(
        &PostParams::default(),
        &StatefulSet {
            metadata: labelled(&member, &[(naming::LABEL_INSTANCE, &member)]),
            ..StatefulSet::default()
        },
    )
    .await
    .unwrap();
    // What Patroni leaves: its sync key (no owner) and a member pod still stopping.
    let endpoints: Api<Endpoints> = Api::namespaced(h.client.clone(), NS);
    let sync = format!("{NAME}-ha-sync");
    endpoints
        .create(
            &PostParams::default(),
            &Endpoints {
                metadata: labelled(&sync, &[]),
                ..Endpoints::default()
            },
        )
        .await
        .unwrap();
    let pods: Api<Pod> = Api::namespaced(h.client.clone(), NS);
    let pod = format!("{member}-0");
    pods.create(
        &PostParams::default(),
        &Pod {
            metadata: labelled(&pod, &[(naming::LABEL_INSTANCE, &member)]),
            ..Pod::default()
        },
    )
    .await
    .unwrap();

    h.reconcile().await;
    assert!(
        sets.get_opt(&member).await.unwrap().is_none(),
        "the instances are stopped first"
    );
    assert!(
        endpoints.get_opt(&sync).await.unwrap().is_some(),
        "Patroni may still write while a member's pod stops"
    );
    assert!(
        h.clusters.get_opt(NAME).await.unwrap().is_some(),
        "the finalizer holds the cluster"
    );
    assert!(
        h.objects()
            .await
            .keys()
            .all(|(kind, _)| kind != "StatefulSet"),
        "a deleted cluster is not applied again"
    );

    // The pod is gone (as the kubelet would have it): the Endpoints and the finalizer go.
    pods.delete(&pod, &DeleteParams::default()).await.unwrap();
    h.reconcile().await;
    assert!(endpoints.get_opt(&sync).await.unwrap().is_none());
    assert!(
        h.clusters.get_opt(NAME).await.unwrap().is_none(),
        "without the finalizer the cluster is deleted"
    );
}
