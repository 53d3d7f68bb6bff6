//! A real primary for the SQL-step tests: a [`TestResolver`] the operator dials instead of the
//! `<c>-primary` Service, the server configuration taken from what the operator rendered into
//! the fake API server, and a pod labelled primary and Ready (the step's precondition).

use std::net::IpAddr;
use std::sync::Mutex;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{Api, ListParams, PostParams};
use tusk_api::naming;
use tusk_operator::controller::sql::{PrimaryResolver, SqlEndpoint};
use tusk_sql::{ConnectTarget, Pem};

use super::postgres::{PgServer, ServerFiles};
use super::{Harness, NAME, NS};

/// The name the server certificate carries (what the real resolver dials).
pub const PRIMARY_HOST: &str = "hippo-primary.db.svc";

/// Resolves to whatever server the test currently points it at.
#[derive(Default)]
pub struct TestResolver(Mutex<Option<(IpAddr, u16)>>);

impl TestResolver {
    pub fn point_at(&self, server: &PgServer) {
        *self.0.lock().unwrap() = Some((server.host.parse().unwrap(), server.port));
    }
}

impl PrimaryResolver for TestResolver {
    fn resolve(&self, _cluster: &tusk_api::ValidatedCluster) -> SqlEndpoint {
        let (address, port) = self
            .0
            .lock()
            .unwrap()
            .expect("the test points the resolver");
        SqlEndpoint {
            host: PRIMARY_HOST.into(),
            hostaddr: Some(address),
            port,
        }
    }
}

/// What the operator rendered, as the server's configuration, with Tusk's certificates.
pub async fn rendered_server_files(h: &Harness) -> ServerFiles {
    let cert = "hippo-cluster-cert";
    rendered_server_files_with(
        h,
        h.secret_text(cert, "tls.crt").await,
        h.secret_text(cert, "tls.key").await,
        h.secret_text(cert, "ca.crt").await,
    )
    .await
}

/// What the operator rendered, with the given server certificate, key and client-CA file.
pub async fn rendered_server_files_with(
    h: &Harness,
    cert_pem: String,
    key_pem: String,
    ca_pem: String,
) -> ServerFiles {
    let maps: Api<ConfigMap> = Api::namespaced(h.client.clone(), NS);
    let map = maps.get("hippo-config").await.unwrap();
    let yaml = &map.data.unwrap()["patroni.yaml"];
    let doc: serde_yaml::Value = serde_yaml::from_str(yaml).unwrap();
    let strings = |v: &serde_yaml::Value| -> Vec<String> {
        v.as_sequence()
            .unwrap()
            .iter()
            .map(|l| l.as_str().unwrap().to_owned())
            .collect()
    };
    let dcs_pg = &doc["bootstrap"]["dcs"]["postgresql"];
    let parameters = ["ssl", "ssl_min_protocol_version", "password_encryption"]
        .iter()
        .map(|k| {
            let v = &dcs_pg["parameters"][*k];
            let text = v
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| serde_yaml::to_string(v).unwrap().trim().to_owned());
            (k.to_string(), text)
        })
        .collect();
    ServerFiles {
        pg_hba: strings(&dcs_pg["pg_hba"]),
        pg_ident: strings(&doc["postgresql"]["pg_ident"]),
        parameters,
        cert_pem,
        key_pem,
        ca_pem,
    }
}

/// The pod of the cluster's one instance, labelled primary by "Patroni" and Ready.
pub async fn mark_primary_ready(h: &Harness) {
    let sets: Api<StatefulSet> = Api::namespaced(h.client.clone(), NS);
    let set = sets
        // Instances only: a repo host is a StatefulSet too.
        .list(&ListParams::default().labels(naming::LABEL_INSTANCE))
        .await
        .unwrap()
        .items
        .remove(0);
    let instance = set.metadata.labels.unwrap()[naming::LABEL_INSTANCE].clone();
    let mut labels = naming::cluster_labels(NAME);
    labels.insert(naming::LABEL_INSTANCE.into(), instance.clone());
    labels.insert(naming::LABEL_ROLE.into(), naming::ROLE_MASTER.into());
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": naming::instance_pod(&instance), "namespace": NS, "labels": labels},
        "status": {"conditions": [{"type": "Ready", "status": "True"}]}
    }))
    .unwrap();
    let pods: Api<Pod> = Api::namespaced(h.client.clone(), NS);
    pods.create(&PostParams::default(), &pod).await.unwrap();
}

/// `user` over verified TLS to `server` (the certificate checked for [`PRIMARY_HOST`]).
pub fn tls_target(server: &PgServer, ca_pem: &str, user: &str) -> ConnectTarget {
    ConnectTarget {
        host: PRIMARY_HOST.into(),
        hostaddr: Some(server.host.parse().unwrap()),
        port: server.port,
        socket_dir: None,
        user: user.into(),
        ca: Some(Pem::Text(ca_pem.to_owned())),
        client_cert: None,
        password: None,
    }
}
