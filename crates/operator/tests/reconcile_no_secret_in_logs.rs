//! No password, key or private key reaches a log line or an Event: reconciles on
//! kube-fake-client (a create with generated passwords and Tusk-issued certificates, a
//! refused custom TLS Secret, an invalid spec) run under a tracing subscriber that records
//! every event at TRACE level of every crate, then the logs and every Event are searched for
//! the generated passwords and PEM private-key markers.

use std::io::Write;
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::ByteString;
use kube::api::{Api, ListParams, PostParams};
use kube::Client;
use kube_fake_client::ClientBuilder;
use tusk_api::PostgresCluster;
use tusk_operator::controller::{reconcile, Context};
use tusk_operator::images::Images;
use tusk_operator::metrics::Metrics;

const NS: &str = "db";
const NAME: &str = "hippo";

/// Everything the subscriber writes, shared with the test.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

fn manifest() -> PostgresCluster {
    let mut cluster: PostgresCluster = serde_yaml::from_str(&format!(
        r#"
apiVersion: tusk.rs/v1beta1
kind: PostgresCluster
metadata: {{name: {NAME}, namespace: {NS}}}
spec:
  postgresVersion: 15
  users: [{{name: rhino, databases: [zoo]}}, {{name: postgres}}]
  instances:
    - name: instance1
      replicas: 2
      dataVolumeClaimSpec:
        accessModes: [ReadWriteOnce]
        resources: {{requests: {{storage: 1Gi}}}}
  proxy:
    pgBouncer: {{replicas: 1}}
  monitoring:
    pgmonitor:
      exporter: {{}}
"#
    ))
    .expect("test manifest parses");
    cluster.status = Some(Default::default());
    cluster
}

/// Every secret value the operator holds for the cluster: the `password` of each Secret it
/// wrote, and every PEM private key (including the root CA's in the operator namespace).
async fn secret_values(client: &Client) -> Vec<String> {
    let api: Api<Secret> = Api::all(client.clone());
    let mut values = Vec::new();
    for secret in api.list(&ListParams::default()).await.unwrap().items {
        for (key, ByteString(bytes)) in secret.data.into_iter().flatten() {
            let text = String::from_utf8_lossy(&bytes).into_owned();
            if key == "password" || text.contains("PRIVATE KEY") {
                values.push(text);
            }
        }
    }
    values
}

/// Where a secret shows up in `haystack` (named `what`): the PEM marker, or any password or
/// any line of a key (so a partial or re-wrapped key is found too).
fn leaks(what: &str, haystack: &str, secrets: &[String]) -> Vec<String> {
    let mut found = Vec::new();
    if haystack.contains("PRIVATE KEY") {
        found.push(format!("{what}: a PEM private-key marker"));
    }
    for secret in secrets {
        let pieces: Vec<&str> = if secret.contains("PRIVATE KEY") {
            secret
                .lines()
                .filter(|l| !l.starts_with("-----") && l.len() >= 16)
                .collect()
        } else {
            vec![secret.as_str()]
        };
        if pieces.iter().any(|p| haystack.contains(p)) {
            found.push(format!("{what}: a secret value ({} chars)", secret.len()));
        }
    }
    found
}

#[tokio::test(flavor = "current_thread")]
async fn reconciles_log_and_report_no_secret() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    // Thread-local default: the current-thread runtime polls every future on this thread.
    let _guard = tracing::subscriber::set_default(subscriber);

    let client = ClientBuilder::new()
        .with_resource::<PostgresCluster>()
        .with_object(manifest())
        .build()
        .await
        .expect("fake client");
    let ctx = Arc::new(Context::new(
        client.clone(),
        Images::default(),
        Arc::new(Metrics::new()),
    ));
    let clusters: Api<PostgresCluster> = Api::namespaced(client.clone(), NS);
    let run = || async {
        let cluster = Arc::new(clusters.get(NAME).await.unwrap());
        reconcile(cluster, ctx.clone()).await.expect("reconcile");
    };

    // Create: passwords generated, certificates issued, every object applied.
    run().await;
    // A custom TLS Secret holding real key material that is refused (CA and key in the
    // error paths), then an invalid spec: the error paths format messages too.
    let secrets: Api<Secret> = Api::namespaced(client.clone(), NS);
    let cert_secret = secrets.get("hippo-cluster-cert").await.unwrap();
    let mut custom = cert_secret.clone();
    custom.metadata = kube::api::ObjectMeta {
        name: Some("custom.tls".into()),
        namespace: Some(NS.into()),
        ..Default::default()
    };
    secrets
        .create(&PostParams::default(), &custom)
        .await
        .unwrap();
    let mut cluster = clusters.get(NAME).await.unwrap();
    cluster.spec.custom_tls_secret = Some(k8s_openapi::api::core::v1::SecretProjection {
        name: "custom.tls".into(),
        ..Default::default()
    });
    cluster.spec.custom_replication_tls_secret = cluster.spec.custom_tls_secret.clone();
    clusters
        .replace(NAME, &PostParams::default(), &cluster)
        .await
        .unwrap();
    run().await;
    let mut cluster = clusters.get(NAME).await.unwrap();
    cluster.spec.custom_tls_secret = None;
    cluster.spec.custom_replication_tls_secret = None;
    cluster.spec.instances[0].replicas = Some(0);
    cluster
        .spec
        .instances
        .push(cluster.spec.instances[0].clone());
    clusters
        .replace(NAME, &PostParams::default(), &cluster)
        .await
        .unwrap();
    run().await;

    let secret_values = secret_values(&client).await;
    let passwords = secret_values.iter().filter(|v| !v.contains("PRIVATE KEY"));
    assert!(
        passwords.count() >= 4,
        "rhino, postgres, pgbouncer, exporter passwords"
    );
    assert!(secret_values.iter().any(|v| v.contains("PRIVATE KEY")));

    // The detector finds each value, also a key re-wrapped inside other text.
    for value in &secret_values {
        let embedded = format!("note: {}", value.replace('\n', " "));
        assert!(!leaks("control", &embedded, &secret_values).is_empty());
    }

    let logs = captured.text();
    // The capture works and saw the reconciles: object changes and both failures.
    assert!(logs.contains("object changed"), "{logs}");
    assert!(logs.contains("InvalidCustomTLS") && logs.contains("InvalidSpec"));
    let mut found = leaks("logs", &logs, &secret_values);

    let events: Api<Event> = Api::namespaced(client.clone(), NS);
    let events = events.list(&ListParams::default()).await.unwrap().items;
    assert!(events
        .iter()
        .any(|e| e.reason.as_deref() == Some("InvalidCustomTLS")));
    for event in &events {
        let text = serde_json::to_string(event).unwrap();
        found.extend(leaks("an Event", &text, &secret_values));
    }
    // The status message is shown by `kubectl describe` too.
    let status = serde_json::to_string(&clusters.get(NAME).await.unwrap().status).unwrap();
    found.extend(leaks("the status", &status, &secret_values));
    assert!(found.is_empty(), "{found:?}");
}
