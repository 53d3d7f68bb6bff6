//! Real `tusk operator` processes against a real kube-apiserver (scripts/kube-testenv): two
//! of them share one Lease and one leader; only the leader reconciles; when the leader is
//! killed (no release), the other takes the Lease once it expires and repairs what changed
//! meanwhile. An operator started before the CRD exists stops on SIGTERM and, once the CRD
//! is installed, reconciles. Each test starts its own control plane; writes only there.

mod kube_support;

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, DeleteParams};
use kube::Client;
use kube_support::objects::*;
use kube_support::{control_plane, eventually, Operator, OPERATOR_NAMESPACE};

/// The operator's default Lease name (`TUSK_LEASE_NAME`).
const LEASE: &str = "tusk-operator";

async fn holder(client: &Client) -> Option<String> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), OPERATOR_NAMESPACE);
    leases
        .get(LEASE)
        .await
        .ok()?
        .spec?
        .holder_identity
        .filter(|h| !h.is_empty())
}

#[tokio::test(flavor = "multi_thread")]
async fn one_of_two_operators_leads_and_the_other_takes_over_when_it_dies() {
    let Some((plane, client)) = control_plane(true, &[OPERATOR_NAMESPACE, "tusk"]).await else {
        return;
    };
    let one = Operator::start(&plane, "operator-one", &[]);
    let two = Operator::start(&plane, "operator-two", &[]);

    let leader = eventually("a Lease holder", Duration::from_secs(60), || {
        holder(&client)
    })
    .await;
    let (leader, follower) = if leader == one.identity {
        (one, two)
    } else {
        (two, one)
    };
    assert_eq!(leader.identity, holder(&client).await.unwrap());

    let path = kube_support::repo_root().join("examples/01-hippo-basic.yaml");
    let object = manifest(&path);
    let name = object["metadata"]["name"].as_str().unwrap().to_owned();
    create_cluster(&client, "tusk", object)
        .await
        .expect("cluster created");
    let services: Api<Service> = Api::namespaced(client.clone(), "tusk");
    let primary = format!("{name}-primary");
    let first = eventually("the primary Service", Duration::from_secs(60), || async {
        services.get(&primary).await.ok()
    })
    .await;
    leader.wait_reconciles(0, 1).await;
    // Both answer /metrics, only the leader reconciles.
    eventually("the follower's /metrics", Duration::from_secs(30), || {
        follower.reconciles()
    })
    .await;
    assert_eq!(
        follower.reconciles().await,
        Some(0),
        "the follower reconciled"
    );

    // The leader dies without releasing the Lease; meanwhile the primary Service is deleted.
    let dead = leader.identity.clone();
    leader.kill();
    services
        .delete(&primary, &DeleteParams::default())
        .await
        .expect("deleting the primary Service");
    let new_holder = eventually("another Lease holder", Duration::from_secs(60), || async {
        holder(&client).await.filter(|h| *h != dead)
    })
    .await;
    assert_eq!(new_holder, follower.identity);
    let healed = eventually(
        "the primary Service to come back",
        Duration::from_secs(60),
        || async {
            services
                .get(&primary)
                .await
                .ok()
                .filter(|s| s.metadata.uid != first.metadata.uid)
        },
    )
    .await;
    assert_eq!(healed.metadata.name.as_deref(), Some(primary.as_str()));
    // The new leader repaired it, and its reconciles complete.
    follower.wait_reconciles(0, 1).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_operator_started_before_the_crd_stops_on_sigterm_and_later_reconciles() {
    let Some((plane, client)) = control_plane(false, &[OPERATOR_NAMESPACE, "tusk"]).await else {
        return;
    };

    // Its PostgresCluster watch cannot list (404) yet; SIGTERM must still end it (the
    // controller's graceful shutdown never completes there, so the stop is bounded).
    let early = Operator::start(&plane, "operator-early", &[]);
    eventually("a Lease holder", Duration::from_secs(60), || {
        holder(&client)
    })
    .await;
    assert!(
        early.terminate_within(Duration::from_secs(60)).await,
        "the operator ignored SIGTERM while the CRD was missing"
    );

    // The CRD arrives after the operator: the watch recovers and the cluster is reconciled.
    let operator = Operator::start(&plane, "operator-late", &[]);
    eventually("the new Lease holder", Duration::from_secs(60), || async {
        holder(&client).await.filter(|h| h == "operator-late")
    })
    .await;
    install_crd(&client).await;
    let path = kube_support::repo_root().join("examples/01-hippo-basic.yaml");
    let object = manifest(&path);
    let name = object["metadata"]["name"].as_str().unwrap().to_owned();
    create_cluster(&client, "tusk", object)
        .await
        .expect("cluster created");
    let services: Api<Service> = Api::namespaced(client.clone(), "tusk");
    eventually("the primary Service", Duration::from_secs(120), || async {
        services.get(&format!("{name}-primary")).await.ok()
    })
    .await;
    // The Service is written mid-reconcile; the reconcile then completes (status written).
    operator.wait_reconciles(0, 1).await;
}
