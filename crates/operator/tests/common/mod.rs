//! The reconcile tests' harness on kube-fake-client: a fake API server holding one
//! `PostgresCluster` (and any Secrets a test brings), a [`Context`] that always leads, and the
//! reads every test asserts with (objects and their resourceVersions, conditions, Events,
//! Secrets). The reconcile function is called directly, as the kube-rs Controller would.

#![allow(dead_code)] // each test binary uses a different part

pub mod jobs;
pub mod postgres;
pub mod primary;

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::ByteString;
use kube::api::{Api, DynamicObject, ListParams, PostParams};
use kube::Client;
use kube_fake_client::ClientBuilder;
use tusk_api::{naming, PostgresCluster};
use tusk_operator::controller::dereference::managed_kinds;
use tusk_operator::controller::{reconcile, Context};
use tusk_operator::images::Images;
use tusk_operator::metrics::Metrics;

pub const NS: &str = "db";
pub const NAME: &str = "hippo";

/// A cluster from YAML, with an empty status so the fake API server treats status as a
/// subresource (it registers one for kinds whose first object has a `status`).
pub fn cluster_from(yaml: &str) -> PostgresCluster {
    let mut cluster: PostgresCluster = serde_yaml::from_str(yaml).expect("test manifest parses");
    cluster.status = Some(Default::default());
    cluster
}

/// A Secret in the test namespace with the given text values.
pub fn secret(name: &str, data: &[(&str, &str)]) -> Secret {
    Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(NS.to_owned()),
            ..Default::default()
        },
        data: Some(
            data.iter()
                .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
                .collect(),
        ),
        ..Default::default()
    }
}

pub struct Harness {
    pub client: Client,
    pub ctx: Arc<Context>,
    pub clusters: Api<PostgresCluster>,
}

impl Harness {
    pub async fn new(cluster: PostgresCluster) -> Self {
        Self::with(cluster, Vec::new(), |_| {}).await
    }

    /// A fake API server with `cluster` and `secrets`; `configure` adjusts the context
    /// (e.g. the primary resolver) before it is shared.
    pub async fn with(
        cluster: PostgresCluster,
        secrets: Vec<Secret>,
        configure: impl FnOnce(&mut Context),
    ) -> Self {
        // Jobs and StatefulSets keep their status apart from their spec, as on a real server,
        // so the tests can play the Job and StatefulSet controllers.
        let mut builder = ClientBuilder::new()
            .with_resource::<PostgresCluster>()
            .with_status_subresource::<Job>()
            .with_status_subresource::<StatefulSet>()
            .with_object(cluster);
        for s in secrets {
            builder = builder.with_object(s);
        }
        let client = builder.build().await.expect("fake client");
        let mut ctx = Context::new(client.clone(), Images::default(), Arc::new(Metrics::new()));
        configure(&mut ctx);
        Harness {
            clusters: Api::namespaced(client.clone(), NS),
            client,
            ctx: Arc::new(ctx),
        }
    }

    pub async fn cluster(&self) -> PostgresCluster {
        self.clusters.get(NAME).await.expect("cluster exists")
    }

    /// One reconcile of the cluster as stored now; failures the reconcile reports itself
    /// (condition + Event) are not errors.
    pub async fn reconcile(&self) {
        let cluster = Arc::new(self.cluster().await);
        reconcile(cluster, self.ctx.clone())
            .await
            .expect("reconcile succeeds");
    }

    pub async fn edit(&self, change: impl FnOnce(&mut PostgresCluster)) {
        let mut cluster = self.cluster().await;
        change(&mut cluster);
        self.clusters
            .replace(NAME, &PostParams::default(), &cluster)
            .await
            .expect("cluster updated");
    }

    /// `(kind, name) -> resourceVersion` of every labelled object of the managed kinds.
    pub async fn objects(&self) -> BTreeMap<(String, String), String> {
        let mut out = BTreeMap::new();
        let params = ListParams::default().labels(&naming::cluster_selector(NAME));
        for resource in managed_kinds() {
            let api: Api<DynamicObject> = Api::namespaced_with(self.client.clone(), NS, &resource);
            for o in api.list(&params).await.unwrap().items {
                out.insert(
                    (resource.kind.clone(), o.metadata.name.clone().unwrap()),
                    o.metadata.resource_version.clone().unwrap(),
                );
            }
        }
        out
    }

    pub async fn condition(&self, type_: &str) -> Condition {
        let status = self.cluster().await.status.expect("status written");
        status
            .conditions
            .into_iter()
            .find(|c| c.type_ == type_)
            .unwrap_or_else(|| panic!("condition {type_} missing"))
    }

    pub async fn events(&self) -> Vec<Event> {
        let api: Api<Event> = Api::namespaced(self.client.clone(), NS);
        api.list(&ListParams::default()).await.unwrap().items
    }

    /// Notes of the Events with `reason` (and `type_`: `Normal` | `Warning`).
    pub async fn event_notes(&self, type_: &str, reason: &str) -> Vec<String> {
        self.events()
            .await
            .into_iter()
            .filter(|e| e.type_.as_deref() == Some(type_) && e.reason.as_deref() == Some(reason))
            .map(|e| e.note.unwrap_or_default())
            .collect()
    }

    pub async fn secret(&self, name: &str) -> Option<Secret> {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), NS);
        api.get_opt(name).await.unwrap()
    }

    /// The text under `key` of Secret `name`.
    pub async fn secret_text(&self, name: &str, key: &str) -> String {
        let secret = self.secret(name).await.unwrap_or_else(|| panic!("{name}"));
        String::from_utf8(secret.data.unwrap()[key].0.clone()).unwrap()
    }

    pub async fn replace_secret(&self, mut secret: Secret) {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), NS);
        let name = secret.metadata.name.clone().unwrap();
        secret.metadata.resource_version = api.get(&name).await.unwrap().metadata.resource_version;
        api.replace(&name, &PostParams::default(), &secret)
            .await
            .unwrap();
    }
}
