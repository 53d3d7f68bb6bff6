//! Objects on the test API server: the CRD, namespaces, PostgresClusters from manifests, the
//! objects Tusk manages (listed by the cluster label), snapshots of their versions, Events,
//! and the `tusk render` view of a manifest with random instance suffixes made comparable.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::serde::Deserialize;
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::Client;
use serde_json::Value;
use tusk_api::{naming, PostgresCluster};
use tusk_operator::controller::dereference::managed_kinds;

use super::{eventually, repo_root};

/// `(namespace, kind, name)`.
pub type Key = (String, String, String);

/// Which checked-in CRD a user installs on Kubernetes `major.minor`: `deploy/crds/` from 1.28
/// on, `deploy/crds/without-cel/` before (the README's table). Servers before 1.28 refuse the
/// main CRD under server-side apply (`x-kubernetes-validations` before CEL existed, its
/// `fieldPath` before 1.28), and kube-apiserver before 1.20.11 refuses its `null` enum values
/// (kubernetes/kubernetes#104969); the variant has neither.
pub fn crd_file_for(major: u32, minor: u32) -> std::path::PathBuf {
    let crds = repo_root().join("deploy/crds");
    let file = "postgresclusters.tusk.rs.yaml";
    if (major, minor) >= (1, 28) {
        crds.join(file)
    } else {
        crds.join("without-cel").join(file)
    }
}

/// The server's `(major, minor)`; a minor such as `20+` counts as 20.
pub async fn server_version(client: &Client) -> (u32, u32) {
    let info = client
        .apiserver_version()
        .await
        .expect("the server's version");
    let number = |s: &str| -> u32 {
        s.trim_end_matches(|c: char| !c.is_ascii_digit())
            .parse()
            .unwrap_or_else(|e| panic!("server version {info:?}: {e}"))
    };
    (number(&info.major), number(&info.minor))
}

/// Installs the CRD as a user would on this server: the file [`crd_file_for`] its version,
/// exactly as checked in, with server-side apply (`kubectl apply --server-side`); then waits
/// until the server serves it.
pub async fn install_crd(client: &Client) -> CustomResourceDefinition {
    let (major, minor) = server_version(client).await;
    let path = crd_file_for(major, minor);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("the checked-in CRD {}: {e}", path.display()));
    let crd: Value = serde_yaml::from_str(&text).expect("the CRD parses");
    let name = crd["metadata"]["name"]
        .as_str()
        .expect("the CRD has a name")
        .to_owned();
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    api.patch(
        &name,
        &PatchParams::apply("tusk-install"),
        &Patch::Apply(&crd),
    )
    .await
    .unwrap_or_else(|e| {
        panic!(
            "Kubernetes {major}.{minor} refused {} under server-side apply: {e}",
            path.display()
        )
    });
    eventually(
        "the CRD to be Established",
        Duration::from_secs(60),
        || async {
            let crd = api.get(&name).await.ok()?;
            let established = crd
                .status
                .as_ref()?
                .conditions
                .as_ref()?
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True");
            established.then_some(crd)
        },
    )
    .await
}

pub async fn create_namespace(client: &Client, name: &str) {
    let api: Api<Namespace> = Api::all(client.clone());
    let namespace: Namespace =
        serde_json::from_value(serde_json::json!({"metadata": {"name": name}})).unwrap();
    api.create(&PostParams::default(), &namespace)
        .await
        .unwrap_or_else(|e| panic!("creating namespace {name}: {e}"));
}

pub fn cluster_resource() -> ApiResource {
    ApiResource::erase::<PostgresCluster>(&())
}

pub fn clusters(client: &Client, namespace: &str) -> Api<DynamicObject> {
    Api::namespaced_with(client.clone(), namespace, &cluster_resource())
}

/// A manifest file as JSON.
pub fn manifest(path: &Path) -> Value {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let yaml = serde_yaml::Deserializer::from_str(&text)
        .next()
        .expect("one document");
    Value::deserialize(yaml).expect("the manifest is YAML")
}

/// Sends `object` (a PostgresCluster as JSON) as it is, in `namespace`.
pub async fn create_cluster(
    client: &Client,
    namespace: &str,
    mut object: Value,
) -> Result<DynamicObject, kube::Error> {
    object["metadata"]["namespace"] = Value::String(namespace.to_owned());
    let object: DynamicObject = serde_json::from_value(object).expect("a Kubernetes object");
    clusters(client, namespace)
        .create(&PostParams::default(), &object)
        .await
}

/// `tusk render -f manifest` as JSON documents.
pub fn rendered(manifest: &Path) -> Vec<Value> {
    let out = Command::new(env!("CARGO_BIN_EXE_tusk"))
        .args(["render", "-f"])
        .arg(manifest)
        .output()
        .expect("the tusk binary runs");
    assert!(
        out.status.success(),
        "tusk render -f {} failed:\n{}",
        manifest.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("UTF-8");
    serde_yaml::Deserializer::from_str(&text)
        .map(|doc| Value::deserialize(doc).expect("render prints YAML"))
        .filter(|doc| !doc.is_null())
        .collect()
}

/// `kind name` of each document, with every instance's random 4-character suffix replaced by
/// `????` (an instance is named `<cluster>-<set>-<suffix>`, and so are the objects made for
/// it), sorted: two builds of one manifest give the same list.
pub fn comparable_names<'a>(docs: impl IntoIterator<Item = &'a Value> + Clone) -> Vec<String> {
    let instances: Vec<String> = docs
        .clone()
        .into_iter()
        .filter_map(|d| d["metadata"]["labels"][naming::LABEL_INSTANCE].as_str())
        .map(str::to_owned)
        .collect();
    let mut names: Vec<String> = docs
        .into_iter()
        .map(|d| {
            let mut name = d["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            for instance in &instances {
                if instance.len() > 4 {
                    let masked = format!("{}????", &instance[..instance.len() - 4]);
                    name = name.replace(instance.as_str(), &masked);
                }
            }
            format!("{} {name}", d["kind"].as_str().unwrap_or_default())
        })
        .collect();
    names.sort();
    names
}

/// Every object of the managed kinds labelled for `cluster` in `namespace`, as JSON with
/// `kind` set (lists leave it out of items). Kinds the server does not serve are skipped.
pub async fn live_objects(client: &Client, namespace: &str, cluster: &str) -> Vec<Value> {
    let params = ListParams::default().labels(&naming::cluster_selector(cluster));
    let mut out = Vec::new();
    for resource in served_managed_kinds(client).await {
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &resource);
        let list = api
            .list(&params)
            .await
            .unwrap_or_else(|e| panic!("listing {}: {e}", resource.kind));
        for item in list.items {
            let mut value = serde_json::to_value(&item).expect("objects serialize");
            value["kind"] = Value::String(resource.kind.clone());
            value["apiVersion"] = Value::String(resource.api_version.clone());
            out.push(value);
        }
    }
    out
}

/// The managed kinds this server serves (1.20 has no policy/v1 PodDisruptionBudget).
pub async fn served_managed_kinds(client: &Client) -> Vec<ApiResource> {
    let kinds = managed_kinds();
    let served = tusk_operator::discovery::discover(client, &kinds)
        .await
        .expect("discovery answers");
    kinds.into_iter().filter(|k| served.serves(k)).collect()
}

/// Whether the server serves `apiVersion`/`kind`.
pub async fn serves(client: &Client, api_version: &str, kind: &str) -> bool {
    let (group, version) = match api_version.split_once('/') {
        Some((g, v)) => (g, v),
        None => ("", api_version),
    };
    let gvk = GroupVersionKind::gvk(group, version, kind);
    kube::discovery::pinned_kind(client, &gvk).await.is_ok()
}

/// `resourceVersion` and `metadata.generation` of each object.
pub type Snapshot = BTreeMap<Key, (String, Option<i64>)>;

/// A snapshot of every object labelled for any cluster in `namespaces`.
pub async fn snapshot(client: &Client, namespaces: &[String]) -> Snapshot {
    let params = ListParams::default().labels(naming::LABEL_CLUSTER);
    let mut snapshot = Snapshot::new();
    let kinds = served_managed_kinds(client).await;
    for namespace in namespaces {
        for resource in &kinds {
            let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, resource);
            let list = api
                .list(&params)
                .await
                .unwrap_or_else(|e| panic!("listing {}: {e}", resource.kind));
            for item in list.items {
                let key = (
                    namespace.clone(),
                    resource.kind.clone(),
                    item.metadata.name.clone().unwrap_or_default(),
                );
                let version = item.metadata.resource_version.clone().unwrap_or_default();
                snapshot.insert(key, (version, item.metadata.generation));
            }
        }
    }
    snapshot
}

/// What differs between two snapshots, one line per object, for failure messages.
pub fn snapshot_changes(before: &Snapshot, after: &Snapshot) -> Vec<String> {
    let mut changes = Vec::new();
    for (key, old) in before {
        match after.get(key) {
            None => changes.push(format!("{key:?} disappeared")),
            Some(new) if new != old => changes.push(format!("{key:?}: {old:?} -> {new:?}")),
            Some(_) => {}
        }
    }
    for key in after.keys().filter(|k| !before.contains_key(*k)) {
        changes.push(format!("{key:?} appeared"));
    }
    changes
}

/// Events in `namespace` about the object named `regarding`.
pub async fn events_about(client: &Client, namespace: &str, regarding: &str) -> Vec<Event> {
    let api: Api<Event> = Api::namespaced(client.clone(), namespace);
    api.list(&ListParams::default())
        .await
        .expect("listing Events")
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(regarding))
        .collect()
}

/// The status condition `type_` of a PostgresCluster as JSON (`Value::Null` when absent).
pub fn condition(cluster: &DynamicObject, type_: &str) -> Value {
    cluster.data["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == type_)
        .cloned()
        .unwrap_or(Value::Null)
}

/// The user's own certificates for manifests with `customTLSSecret` (examples 03 and 06), as
/// a user would bring them: a CA of their own, a server certificate for the cluster's Service
/// names and a replication client certificate with the replication role as CN, stored under
/// the keys the manifest's `items` map from. Without them the operator rightly refuses the
/// cluster (`InvalidCustomTLS`).
pub async fn create_custom_tls_secrets(client: &Client, namespace: &str, manifest: &Value) {
    let spec = &manifest["spec"];
    if spec.get("customTLSSecret").is_none() {
        return;
    }
    let mut object = manifest.clone();
    object["metadata"]["namespace"] = Value::String(namespace.to_owned());
    let cluster: tusk_api::PostgresCluster = serde_json::from_value(object).unwrap();
    let validated = tusk_api::validate(&cluster).expect("reference manifests are valid");
    let now = time::OffsetDateTime::now_utc();
    let ca = tusk_pki::RootCa::generate(now).unwrap();
    let server = ca
        .issue_server(
            &validated.names.primary_service(),
            &tusk_operator::material::server_dns_names(&validated),
            now,
        )
        .unwrap();
    let replication = ca.issue_client(naming::REPLICATION_USER, now).unwrap();
    for (field, leaf) in [
        ("customTLSSecret", &server),
        ("customReplicationTLSSecret", &replication),
    ] {
        let projection = &spec[field];
        let files = [
            ("tls.crt", leaf.cert_pem.as_str()),
            ("tls.key", leaf.key_pem.as_str()),
            ("ca.crt", ca.cert_pem()),
        ];
        // `items` maps Secret keys to file names; without it the keys are the file names.
        let key_for = |file: &str| {
            projection["items"]
                .as_array()
                .and_then(|items| items.iter().find(|i| i["path"] == file))
                .map(|i| i["key"].as_str().unwrap().to_owned())
                .unwrap_or_else(|| file.to_owned())
        };
        let data: BTreeMap<String, String> = files
            .iter()
            .map(|(file, pem)| (key_for(file), (*pem).to_owned()))
            .collect();
        let secrets: Api<k8s_openapi::api::core::v1::Secret> =
            Api::namespaced(client.clone(), namespace);
        let secret = k8s_openapi::api::core::v1::Secret {
            metadata: kube::api::ObjectMeta {
                name: Some(projection["name"].as_str().unwrap().to_owned()),
                ..Default::default()
            },
            string_data: Some(data),
            ..Default::default()
        };
        secrets
            .create(&kube::api::PostParams::default(), &secret)
            .await
            .unwrap_or_else(|e| panic!("creating the {field} Secret: {e}"));
    }
}
