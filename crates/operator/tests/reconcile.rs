//! Reconcile sequences against kube-fake-client: the reconcile function is called directly,
//! as the kube-rs Controller would, and the test asserts what exists after each step.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Service};
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, PostParams};
use tusk_api::{naming, PostgresCluster};
use tusk_operator::build::{build, BuildInput};
use tusk_operator::controller::dereference::{dereference, managed_kinds};
use tusk_operator::controller::{root_ca, secret_material, DEFAULT_OPERATOR_NAMESPACE};
use tusk_operator::images::Images;
use tusk_operator::plan::plan_instances;

mod common;

use common::{cluster_from, Harness, NAME, NS};

fn manifest(replicas: u32) -> PostgresCluster {
    cluster_from(&format!(
        r#"
apiVersion: tusk.rs/v1beta1
kind: PostgresCluster
metadata: {{name: {NAME}, namespace: {NS}}}
spec:
  postgresVersion: 15
  users: [{{name: rhino, databases: [zoo]}}]
  instances:
    - name: instance1
      replicas: {replicas}
      dataVolumeClaimSpec:
        accessModes: [ReadWriteOnce]
        resources: {{requests: {{storage: 1Gi}}}}
"#
    ))
}

async fn harness(replicas: u32) -> Harness {
    Harness::new(manifest(replicas)).await
}

/// Reads this file's tests need beyond the shared harness.
trait ClusterReads {
    async fn names<K>(&self) -> BTreeSet<String>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug;
    async fn built(&self) -> BTreeSet<(String, String)>;
}

impl ClusterReads for Harness {
    async fn names<K>(&self) -> BTreeSet<String>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
    {
        let api: Api<K> = Api::namespaced(self.client.clone(), NS);
        let params = ListParams::default().labels(&naming::cluster_selector(NAME));
        api.list(&params)
            .await
            .unwrap()
            .items
            .iter()
            .map(|o| o.meta().name.clone().unwrap())
            .collect()
    }

    /// What `build` returns for the cluster as it exists now (instance names kept).
    async fn built(&self) -> BTreeSet<(String, String)> {
        let cluster = tusk_api::validate(&self.cluster().await).unwrap();
        let observed = dereference(&self.client, NS, NAME).await.unwrap();
        let plan = plan_instances(&cluster, &observed.instances, &mut rand::rng());
        let root_ca = root_ca::ensure_root_ca(&self.client, DEFAULT_OPERATOR_NAMESPACE)
            .await
            .unwrap();
        let material = secret_material(&cluster, &observed, &root_ca, Duration::ZERO).unwrap();
        build(&BuildInput {
            cluster: &cluster,
            images: &Images::default(),
            plan: &plan,
            material: &material,
        })
        .iter()
        .map(|o| (o.kind().to_owned(), o.name().to_owned()))
        .collect()
    }
}

fn instance_sets(objects: &BTreeMap<(String, String), String>) -> BTreeSet<String> {
    objects
        .keys()
        .filter(|(kind, _)| kind == "StatefulSet")
        .map(|(_, name)| name.clone())
        .collect()
}

#[tokio::test]
async fn create_makes_every_built_object_owned_by_the_cluster() {
    let h = harness(2).await;
    h.reconcile().await;

    let uid = h.cluster().await.metadata.uid.unwrap();
    let existing = h.objects().await;
    let built = h.built().await;
    assert!(built.contains(&("Service".to_owned(), "hippo-primary".to_owned())));
    for key in &built {
        assert!(
            existing.contains_key(key),
            "{key:?} was built but not applied"
        );
    }
    for resource in managed_kinds() {
        let api: Api<DynamicObject> = Api::namespaced_with(h.client.clone(), NS, &resource);
        let params = ListParams::default().labels(&naming::cluster_selector(NAME));
        for o in api.list(&params).await.unwrap().items {
            let owned =
                o.metadata.owner_references.iter().flatten().any(|r| {
                    r.uid == uid && r.controller == Some(true) && r.kind == "PostgresCluster"
                });
            assert!(
                owned,
                "{} {:?} has no owner reference",
                resource.kind, o.metadata.name
            );
        }
    }
    // Tusk-issued certificates, signed by the operator's root CA (created on first use).
    for secret in ["hippo-cluster-cert", "hippo-replication-cert"] {
        assert!(
            existing.contains_key(&("Secret".to_owned(), secret.to_owned())),
            "{secret} missing"
        );
    }
    let ca = root_ca::ensure_root_ca(&h.client, DEFAULT_OPERATOR_NAMESPACE)
        .await
        .unwrap();
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(h.client.clone(), NS);
    let server = secrets.get("hippo-cluster-cert").await.unwrap();
    let cert = String::from_utf8(server.data.unwrap()["tls.crt"].0.clone()).unwrap();
    assert!(
        tusk_pki::issued_by(&cert, &ca),
        "cluster cert not issued by the root CA"
    );

    let sets = instance_sets(&existing);
    assert_eq!(sets.len(), 2, "one StatefulSet per instance: {sets:?}");
    assert!(sets.iter().all(|s| s.starts_with("hippo-instance1-")));

    let degraded = h.condition("Degraded").await;
    assert_eq!(degraded.status, "False");
    assert_eq!(
        degraded.observed_generation,
        h.cluster().await.metadata.generation
    );
    let status = h.cluster().await.status.unwrap();
    assert_eq!(status.ready_instances.as_deref(), Some("0/2"));
    let metrics = h.ctx.metrics.render();
    assert!(
        metrics.contains(r#"tusk_cluster_instances_desired{pg_cluster="db/hippo"} 2"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"tusk_cluster_instances_ready{pg_cluster="db/hippo"} 0"#),
        "{metrics}"
    );
    let created = h
        .events()
        .await
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("Created"))
        .count();
    assert_eq!(created, built.len(), "one Created Event per object");
}

#[tokio::test]
async fn deleted_objects_come_back() {
    let h = harness(1).await;
    h.reconcile().await;
    let before = h.objects().await;
    let instance = instance_sets(&before).into_iter().next().unwrap();

    let services: Api<Service> = Api::namespaced(h.client.clone(), NS);
    services
        .delete("hippo-primary", &DeleteParams::default())
        .await
        .unwrap();
    let sets: Api<StatefulSet> = Api::namespaced(h.client.clone(), NS);
    sets.delete(&instance, &DeleteParams::default())
        .await
        .unwrap();
    assert!(services.get_opt("hippo-primary").await.unwrap().is_none());

    h.reconcile().await;
    let after = h.objects().await;
    assert!(services.get_opt("hippo-primary").await.unwrap().is_some());
    assert!(
        sets.get_opt(&instance).await.unwrap().is_some(),
        "the instance keeps its name: its PVC is still there"
    );
    assert_eq!(
        before.keys().collect::<Vec<_>>(),
        after.keys().collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn scale_up_adds_instances_and_scale_down_keeps_volumes() {
    let h = harness(1).await;
    h.reconcile().await;
    let one = instance_sets(&h.objects().await);
    assert_eq!(one.len(), 1);

    h.edit(|c| c.spec.instances[0].replicas = Some(3)).await;
    h.reconcile().await;
    let three = instance_sets(&h.objects().await);
    assert_eq!(three.len(), 3, "{three:?}");
    assert!(one.is_subset(&three), "the first instance is kept");
    let pvcs = h.names::<PersistentVolumeClaim>().await;
    assert!(pvcs.len() >= 3, "every instance has its volume: {pvcs:?}");

    h.edit(|c| c.spec.instances[0].replicas = Some(1)).await;
    h.reconcile().await;
    let left = instance_sets(&h.objects().await);
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(
        h.names::<PersistentVolumeClaim>().await,
        pvcs,
        "scaling down never deletes a PVC"
    );
    let deleted = h
        .events()
        .await
        .into_iter()
        .filter(|e| {
            e.reason.as_deref() == Some("Deleted")
                && e.related.as_ref().and_then(|r| r.kind.as_deref()) == Some("StatefulSet")
        })
        .count();
    assert_eq!(deleted, 2, "one Deleted Event per removed instance");
}

#[tokio::test]
async fn paused_cluster_changes_nothing() {
    let h = harness(1).await;
    h.reconcile().await;
    let before = h.objects().await;

    h.edit(|c| {
        c.spec.paused = Some(true);
        c.spec.instances[0].replicas = Some(3);
    })
    .await;
    h.reconcile().await;
    assert_eq!(h.objects().await, before, "no object changed while paused");
    let progressing = h.condition("Progressing").await;
    assert_eq!(progressing.status, "False");
    assert_eq!(progressing.reason, "Paused");

    h.edit(|c| c.spec.paused = Some(false)).await;
    h.reconcile().await;
    assert_eq!(
        instance_sets(&h.objects().await).len(),
        3,
        "unpaused: scaled"
    );
}

#[tokio::test]
async fn invalid_spec_is_reported_and_touches_nothing() {
    let h = harness(1).await;
    h.reconcile().await;
    let before = h.objects().await;

    // Two sets with the same name: the CRD's CEL rule would reject this; the fake API server
    // does not run CEL, which is the case the operator's own validation is for.
    h.edit(|c| {
        let duplicate = c.spec.instances[0].clone();
        c.spec.instances.push(duplicate);
    })
    .await;
    h.reconcile().await;

    assert_eq!(h.objects().await, before, "no object touched");
    let degraded = h.condition("Degraded").await;
    assert_eq!(degraded.status, "True");
    assert_eq!(degraded.reason, "InvalidSpec");
    assert!(
        degraded.message.contains("spec.instances"),
        "names the field: {}",
        degraded.message
    );
    let warning = h.events().await.into_iter().find(|e| {
        e.type_.as_deref() == Some("Warning") && e.reason.as_deref() == Some("InvalidSpec")
    });
    let warning = warning.expect("a Warning Event");
    assert!(warning.note.unwrap_or_default().contains("spec.instances"));
}

/// The CRD's transition rule (`spec.postgresVersion` cannot change in place) on a server
/// without CEL (the fake one here, Kubernetes before 1.28 with deploy/crds/without-cel/): the
/// first reconcile records the major in `status.postgresVersion`, and a later edit of it is an
/// invalid spec naming the field, which changes no object.
#[tokio::test]
async fn an_in_place_major_change_is_refused_without_cel() {
    let h = harness(1).await;
    h.reconcile().await;
    let status = h.cluster().await.status.unwrap();
    assert_eq!(status.postgres_version, Some(15));
    let before = h.objects().await;

    h.edit(|c| c.spec.postgres_version = 16).await;
    h.reconcile().await;

    assert_eq!(h.objects().await, before, "no object touched");
    let degraded = h.condition("Degraded").await;
    assert_eq!(
        (degraded.status.as_str(), degraded.reason.as_str()),
        ("True", "InvalidSpec")
    );
    assert!(
        degraded
            .message
            .starts_with("spec.postgresVersion: cannot change in place from 15"),
        "{}",
        degraded.message
    );
    assert_eq!(
        h.cluster().await.status.unwrap().postgres_version,
        Some(15),
        "the recorded major stays"
    );
}

#[tokio::test]
async fn second_reconcile_of_an_unchanged_cluster_changes_nothing() {
    let h = harness(2).await;
    h.reconcile().await;
    let objects = h.objects().await;
    let cluster_version = h.cluster().await.metadata.resource_version;
    let events = h.events().await.len();

    h.reconcile().await;
    assert_eq!(
        h.objects().await,
        objects,
        "every resourceVersion is the same"
    );
    assert_eq!(
        h.cluster().await.metadata.resource_version,
        cluster_version,
        "the status is not patched again"
    );
    assert_eq!(
        h.events().await.len(),
        events,
        "no Event for unchanged objects"
    );
}

#[tokio::test]
async fn drift_is_repaired_with_an_updated_event() {
    let h = harness(1).await;
    h.reconcile().await;
    let services: Api<Service> = Api::namespaced(h.client.clone(), NS);
    let mut primary = services.get("hippo-primary").await.unwrap();
    let wanted = primary.spec.clone();
    primary.spec.as_mut().unwrap().ports = Some(vec![]);
    services
        .replace("hippo-primary", &PostParams::default(), &primary)
        .await
        .unwrap();

    h.reconcile().await;
    assert_eq!(services.get("hippo-primary").await.unwrap().spec, wanted);
    let updated = h.events().await.into_iter().any(|e| {
        e.reason.as_deref() == Some("Updated")
            && e.related.as_ref().and_then(|r| r.name.as_deref()) == Some("hippo-primary")
    });
    assert!(updated, "an Updated Event names the repaired Service");
}
