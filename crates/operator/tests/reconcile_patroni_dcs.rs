//! Patroni's dynamic configuration on a running cluster, on kube-fake-client: the test plays
//! Patroni by creating the Endpoints `<c>-ha-config` with the `config` annotation Patroni
//! writes at bootstrap (the JSON of `bootstrap.dcs` from the operator's own `<c>-config`
//! ConfigMap), then checks what the reconcile does to that annotation: nothing for an
//! unchanged spec, exactly the edited parameter, `standby_cluster` gone on promotion,
//! `pause` kept, and nothing at all before bootstrap, on shutdown or after a concurrent write.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use common::{cluster_from, secret, Harness, NAME, NS};
use k8s_openapi::api::core::v1::{ConfigMap, Endpoints};
use kube::api::{Api, ObjectMeta, PostParams};
use kube_fake_client::{interceptor, ClientBuilder};
use serde_json::{json, Value};
use time::OffsetDateTime;
use tusk_api::naming::{self, PATRONI_ANNOTATION_CONFIG};
use tusk_api::PostgresCluster;
use tusk_operator::controller::patroni_dcs::{
    reconcile_dynamic_configuration, DcsOutcome, REASON_APPLIED,
};
use tusk_pki::RootCa;

const CONFIG_ENDPOINTS: &str = "hippo-ha-config";

fn manifest(max_connections: u32) -> PostgresCluster {
    cluster_from(&format!(
        r#"
apiVersion: tusk.rs/v1beta1
kind: PostgresCluster
metadata: {{name: {NAME}, namespace: {NS}}}
spec:
  postgresVersion: 15
  patroni:
    dynamicConfiguration:
      postgresql:
        parameters: {{max_connections: {max_connections}, work_mem: 4MB}}
  instances:
    - name: instance1
      dataVolumeClaimSpec:
        accessModes: [ReadWriteOnce]
        resources: {{requests: {{storage: 1Gi}}}}
"#
    ))
}

/// `bootstrap.dcs` of the Patroni ConfigMap the operator rendered, as Patroni stores it.
async fn rendered_bootstrap_dcs(h: &Harness) -> Value {
    let maps: Api<ConfigMap> = Api::namespaced(h.client.clone(), NS);
    let map = maps
        .get(&format!("{NAME}-config"))
        .await
        .expect("ConfigMap");
    let yaml = &map.data.expect("data")["patroni.yaml"];
    let document: Value = serde_yaml::from_str(yaml).expect("patroni.yaml parses");
    document["bootstrap"]["dcs"].clone()
}

/// Endpoints `<c>-ha-config` as Patroni leaves it after bootstrap (labels, `initialize` with
/// the system identifier, `config`); `config: None` = created but not initialised yet.
fn config_endpoints(config: Option<&Value>) -> Endpoints {
    let mut annotations = BTreeMap::from([("initialize".to_owned(), "7318251".to_owned())]);
    if let Some(config) = config {
        annotations.insert(PATRONI_ANNOTATION_CONFIG.into(), config.to_string());
    }
    Endpoints {
        metadata: ObjectMeta {
            name: Some(CONFIG_ENDPOINTS.into()),
            namespace: Some(NS.into()),
            labels: Some(BTreeMap::from([
                (naming::LABEL_CLUSTER.to_owned(), NAME.to_owned()),
                (naming::LABEL_PATRONI.to_owned(), format!("{NAME}-ha")),
            ])),
            annotations: Some(annotations),
            ..Default::default()
        },
        ..Default::default()
    }
}

async fn create_endpoints(client: &kube::Client, endpoints: &Endpoints) {
    let api: Api<Endpoints> = Api::namespaced(client.clone(), NS);
    api.create(&PostParams::default(), endpoints)
        .await
        .expect("Endpoints created");
}

/// The stored `config` annotation (parsed) and the Endpoints' resourceVersion.
async fn stored(client: &kube::Client) -> (Option<Value>, String) {
    let api: Api<Endpoints> = Api::namespaced(client.clone(), NS);
    let endpoints = api.get(CONFIG_ENDPOINTS).await.expect("Endpoints exist");
    let annotations = endpoints.metadata.annotations.unwrap_or_default();
    assert_eq!(
        annotations["initialize"], "7318251",
        "other annotations kept"
    );
    let config = annotations
        .get(PATRONI_ANNOTATION_CONFIG)
        .map(|text| serde_json::from_str(text).expect("config is JSON"));
    (config, endpoints.metadata.resource_version.unwrap())
}

/// A reconciled cluster whose Patroni has bootstrapped from the rendered ConfigMap.
async fn bootstrapped(
    cluster: PostgresCluster,
    secrets: Vec<k8s_openapi::api::core::v1::Secret>,
) -> Harness {
    let h = Harness::with(cluster, secrets, |_| {}).await;
    h.reconcile().await;
    let dcs = rendered_bootstrap_dcs(&h).await;
    create_endpoints(&h.client, &config_endpoints(Some(&dcs))).await;
    h
}

fn without(mut document: Value, pointer: &str, key: &str) -> Value {
    document
        .pointer_mut(pointer)
        .and_then(Value::as_object_mut)
        .expect("object at pointer")
        .remove(key);
    document
}

#[tokio::test]
async fn an_edited_parameter_reaches_the_dcs_and_nothing_else_changes() {
    let h = bootstrapped(manifest(100), Vec::new()).await;
    let (before, version) = stored(&h.client).await;
    let before = before.unwrap();

    h.reconcile().await;
    assert_eq!(
        stored(&h.client).await.1,
        version,
        "unchanged spec, no write"
    );
    assert!(h.event_notes("Normal", REASON_APPLIED).await.is_empty());

    h.edit(|c| c.spec = manifest(200).spec).await;
    h.reconcile().await;
    let (after, changed_version) = stored(&h.client).await;
    let after = after.unwrap();
    assert_ne!(changed_version, version);
    let parameters = "/postgresql/parameters";
    assert_eq!(
        after.pointer(&format!("{parameters}/max_connections")),
        Some(&json!("200")),
        "{after}"
    );
    assert_eq!(
        without(after.clone(), parameters, "max_connections"),
        without(before, parameters, "max_connections"),
        "only max_connections changed"
    );
    // The DCS now holds what a fresh bootstrap would write.
    assert_eq!(after, rendered_bootstrap_dcs(&h).await);
    let notes = h.event_notes("Normal", REASON_APPLIED).await;
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert!(notes[0].ends_with(": postgresql"), "{}", notes[0]);
    assert!(!notes[0].contains("200"), "no values in the Event");

    h.reconcile().await;
    assert_eq!(
        stored(&h.client).await.1,
        changed_version,
        "settled, no write"
    );
}

#[tokio::test]
async fn patronis_pause_is_kept_while_an_edit_config_drift_is_repaired() {
    let h = Harness::new(manifest(100)).await;
    h.reconcile().await;
    let mut drifted = rendered_bootstrap_dcs(&h).await;
    // `patronictl pause` and a `patronictl edit-config` the manifest does not say.
    drifted["pause"] = json!(true);
    drifted["synchronous_mode"] = json!(true);
    drifted["ttl"] = json!(60);
    create_endpoints(&h.client, &config_endpoints(Some(&drifted))).await;

    h.reconcile().await;
    let (after, _) = stored(&h.client).await;
    let after = after.unwrap();
    assert_eq!(after["pause"], json!(true), "{after}");
    assert!(after.get("synchronous_mode").is_none(), "{after}");
    let mut expected = rendered_bootstrap_dcs(&h).await;
    expected["pause"] = json!(true);
    assert_eq!(after, expected);
    let notes = h.event_notes("Normal", REASON_APPLIED).await;
    assert!(notes[0].ends_with(": synchronous_mode, ttl"), "{notes:?}");
}

/// Example 06 under the harness's name, with custom TLS Secrets from one user CA.
fn standby_example() -> (PostgresCluster, Vec<k8s_openapi::api::core::v1::Secret>) {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/06-hippo-standby.yaml"
    );
    let text = std::fs::read_to_string(path).expect("example 06");
    let mut document: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    document["metadata"]["name"] = NAME.into();
    document["metadata"]["namespace"] = NS.into();
    let cluster = cluster_from(&serde_yaml::to_string(&document).unwrap());
    let now = OffsetDateTime::now_utc();
    let ca = RootCa::generate(now).unwrap();
    let server_names = [
        "hippo-primary".to_owned(),
        "hippo-primary.db.svc".to_owned(),
    ];
    let server = ca
        .issue_server("hippo-primary", &server_names, now)
        .unwrap();
    let replication = ca.issue_client(naming::REPLICATION_USER, now).unwrap();
    let tls = |name: &str, leaf: &tusk_pki::Leaf| {
        secret(
            name,
            &[
                ("tls.crt", &leaf.cert_pem),
                ("tls.key", &leaf.key_pem),
                ("ca.crt", ca.cert_pem()),
            ],
        )
    };
    let secrets = vec![
        tls("cluster-cert", &server),
        tls("replication-cert", &replication),
    ];
    (cluster, secrets)
}

#[tokio::test]
async fn promoting_a_standby_cluster_removes_standby_cluster_from_the_dcs() {
    let (cluster, secrets) = standby_example();
    let h = bootstrapped(cluster, secrets).await;
    let (before, version) = stored(&h.client).await;
    assert!(before.unwrap().get("standby_cluster").is_some());
    h.reconcile().await;
    assert_eq!(
        stored(&h.client).await.1,
        version,
        "a settled standby is left alone"
    );

    h.edit(|c| c.spec.standby.as_mut().unwrap().enabled = false)
        .await;
    h.reconcile().await;
    let (after, _) = stored(&h.client).await;
    let after = after.unwrap();
    assert!(after.get("standby_cluster").is_none(), "{after}");
    assert_eq!(after, rendered_bootstrap_dcs(&h).await);
    let notes = h.event_notes("Normal", REASON_APPLIED).await;
    assert!(
        notes.iter().any(|n| n.contains("standby_cluster")),
        "{notes:?}"
    );
}

#[tokio::test]
async fn before_bootstrap_and_on_shutdown_the_dcs_is_left_alone() {
    // No Endpoints at all: the step creates none (Patroni does, with its Service).
    let h = Harness::new(manifest(100)).await;
    h.reconcile().await;
    let api: Api<Endpoints> = Api::namespaced(h.client.clone(), NS);
    assert!(api.get_opt(CONFIG_ENDPOINTS).await.unwrap().is_none());

    // Endpoints without `config`: Patroni has not initialised; it bootstraps from the file.
    create_endpoints(&h.client, &config_endpoints(None)).await;
    let (_, version) = stored(&h.client).await;
    h.reconcile().await;
    assert_eq!(stored(&h.client).await, (None, version));

    // Initialised, then shut down with an edit: nothing is written while instances are held.
    let h = bootstrapped(manifest(100), Vec::new()).await;
    let before = stored(&h.client).await;
    h.edit(|c| {
        c.spec = manifest(300).spec;
        c.spec.shutdown = Some(true);
    })
    .await;
    h.reconcile().await;
    assert_eq!(stored(&h.client).await, before);
    assert!(h.event_notes("Normal", REASON_APPLIED).await.is_empty());
}

#[tokio::test]
async fn a_concurrent_write_wins_and_is_not_overwritten() {
    let cluster = manifest(200);
    let validated = tusk_api::validate(&cluster).unwrap();
    // What the operator read: the configuration before someone else's write.
    let read = Arc::new(std::sync::Mutex::new(None::<Value>));
    let seen = read.clone();
    let client = ClientBuilder::new()
        .with_interceptor_funcs(interceptor::Funcs::new().get(move |ctx| {
            Ok((ctx.name == CONFIG_ENDPOINTS)
                .then(|| seen.lock().unwrap().clone())
                .flatten())
        }))
        .build()
        .await
        .unwrap();
    let original = json!({"ttl": 15, "postgresql": {"parameters": {"max_connections": "100"}}});
    create_endpoints(&client, &config_endpoints(Some(&original))).await;
    let api: Api<Endpoints> = Api::namespaced(client.clone(), NS);
    let mut stale = serde_json::to_value(api.get(CONFIG_ENDPOINTS).await.unwrap()).unwrap();
    stale["apiVersion"] = json!("v1");
    stale["kind"] = json!("Endpoints");
    // `patronictl edit-config` writes between the operator's read and its write.
    let mut theirs = config_endpoints(Some(&json!({"ttl": 20})));
    theirs.metadata.resource_version = stale["metadata"]["resourceVersion"]
        .as_str()
        .map(str::to_owned);
    api.replace(CONFIG_ENDPOINTS, &PostParams::default(), &theirs)
        .await
        .unwrap();
    *read.lock().unwrap() = Some(stale);

    let outcome = reconcile_dynamic_configuration(&client, &validated, false)
        .await
        .unwrap();
    assert_eq!(outcome, DcsOutcome::Conflict);
    assert!(outcome.retry_soon());
    *read.lock().unwrap() = None;
    assert_eq!(stored(&client).await.0, Some(json!({"ttl": 20})));
}
