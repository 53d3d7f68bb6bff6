//! The scenarios of `pods_services.rs` and what they share: one running cluster of the pooling
//! example, how to run SQL as the superuser in its primary's pod, and psql Jobs that connect
//! with a user Secret's URIs and the user's own CA.

pub mod monitoring;
pub mod pooling;
pub mod users;

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::Client;
use serde_json::Value;
use tusk_api::naming::{self, ClusterNames, DnsLabel};

use super::kube_support::{eventually, objects};
use super::node_support::install::Installed;
use super::node_support::workloads::{run_psql_job_with, JobResult, PsqlConnection};
use super::node_support::{patroni_leader, Node};

/// The running cluster the scenarios share.
pub struct Ctx<'a> {
    pub node: &'a Node,
    pub client: &'a Client,
    pub namespace: &'a str,
    pub cluster: String,
    pub names: ClusterNames,
    pub database_image: String,
    /// The user's server TLS Secret (`spec.customTLSSecret.name`) and the key in it holding
    /// the CA (`items` maps it to `ca.crt`): what an application verifies the server with.
    pub ca_secret: String,
    pub ca_key: String,
}

impl<'a> Ctx<'a> {
    pub fn new(
        node: &'a Node,
        client: &'a Client,
        namespace: &'a str,
        manifest: &Value,
        installed: &Installed,
    ) -> Self {
        let cluster = manifest["metadata"]["name"]
            .as_str()
            .expect("the manifest names its cluster")
            .to_owned();
        let tls = &manifest["spec"]["customTLSSecret"];
        let ca_key = tls["items"]
            .as_array()
            .and_then(|items| items.iter().find(|i| i["path"] == "ca.crt"))
            .and_then(|i| i["key"].as_str())
            .unwrap_or("ca.crt")
            .to_owned();
        Ctx {
            node,
            client,
            namespace,
            names: ClusterNames::new(DnsLabel::new(cluster.clone()).expect("a cluster name")),
            cluster,
            database_image: installed.database_image.clone(),
            ca_secret: tls["name"]
                .as_str()
                .expect("the pooling example brings its own TLS Secret")
                .to_owned(),
            ca_key,
        }
    }

    /// The pod holding Patroni's leader lock now, if any.
    pub async fn current_leader(&self) -> Option<String> {
        patroni_leader(self.client, self.namespace, &self.names.patroni_scope()).await
    }

    /// The pod holding Patroni's leader lock (waiting for one).
    pub async fn leader(&self) -> String {
        eventually("a Patroni leader", Duration::from_secs(120), || {
            self.current_leader()
        })
        .await
    }

    /// Runs `sql` as the superuser in `pod`'s database container, in `database` (peer
    /// authentication over the Unix socket, through `kubectl exec`); psql's unaligned output.
    pub fn superuser_sql(&self, pod: &str, database: &str, sql: &str) -> String {
        self.node
            .kubectl_ok(
                &[
                    "exec",
                    "-n",
                    self.namespace,
                    pod,
                    "-c",
                    naming::CONTAINER_DATABASE,
                    "--",
                    "psql",
                    "-h",
                    "/tmp/postgres",
                    "-U",
                    naming::SUPERUSER,
                    "-d",
                    database,
                    "-v",
                    "ON_ERROR_STOP=1",
                    "-tAc",
                    sql,
                ],
                None,
            )
            .trim()
            .to_owned()
    }

    /// Pods of this cluster matching `selector` (added to the cluster's label), by name.
    pub async fn pods(&self, selector: &str) -> Vec<Pod> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), self.namespace);
        let labels = format!("{},{selector}", naming::cluster_selector(&self.cluster));
        api.list(&ListParams::default().labels(&labels))
            .await
            .expect("listing pods")
            .items
    }

    /// A psql Job (`bash -ceu script`) with `PGURI` from key `uri_key` of `user`'s Secret,
    /// verifying the server against the user's CA.
    pub async fn psql_job(&self, name: &str, user: &str, uri_key: &str, script: &str) -> JobResult {
        let user_secret = self.names.user_secret(user);
        let connection = PsqlConnection {
            user_secret: &user_secret,
            uri_key,
            ca_secret: &self.ca_secret,
            ca_key: &self.ca_key,
        };
        run_psql_job_with(
            self.client,
            self.namespace,
            name,
            &self.database_image,
            &connection,
            script,
        )
        .await
    }

    /// A merge patch of the PostgresCluster, as `kubectl patch --type=merge` would send.
    pub async fn patch_cluster(&self, patch: Value) {
        objects::clusters(self.client, self.namespace)
            .patch(&self.cluster, &PatchParams::default(), &Patch::Merge(patch))
            .await
            .expect("patching the PostgresCluster");
    }
}

pub fn pod_name(pod: &Pod) -> String {
    pod.metadata.name.clone().unwrap_or_default()
}

pub fn pod_ip(pod: &Pod) -> String {
    pod.status
        .as_ref()
        .and_then(|s| s.pod_ip.clone())
        .unwrap_or_default()
}
