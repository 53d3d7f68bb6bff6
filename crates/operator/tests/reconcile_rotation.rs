//! Certificate rotation on kube-fake-client: deleting the operator's root CA Secret rolls a
//! new root out in three steps, each once the previous one is the settle time old (here 2 s
//! instead of 3 min): the published `ca.crt` gains the new root while the leaves stay, then
//! the leaves are reissued by the new root, then the old root leaves the bundle. Deleting a
//! leaf's `tls.key` regenerates that leaf at once. A root past 2/3 of its lifetime is renewed
//! by the same rollover, by one replica only. Certificates are checked with the real
//! `openssl verify`.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::ByteString;
use kube::api::{Api, DeleteParams, PostParams};
use kube::Client;
use kube_fake_client::ClientBuilder;
use time::OffsetDateTime;
use tusk_api::{naming, PostgresCluster};
use tusk_operator::controller::root_ca::{
    ensure_root_ca_at, renew_root_ca, root_due, ROOT_CERT_KEY, ROOT_KEY_KEY,
};
use tusk_operator::controller::{reconcile, Context, DEFAULT_OPERATOR_NAMESPACE};
use tusk_operator::images::Images;
use tusk_operator::metrics::Metrics;
use tusk_pki::RootCa;

const NS: &str = "db";
const NAME: &str = "hippo";
const CLUSTER_CERT: &str = "hippo-cluster-cert";
const REPLICATION_CERT: &str = "hippo-replication-cert";
/// The rollover's settle time in these tests (3 min in the operator).
const SETTLE: Duration = Duration::from_secs(2);

/// Lets the last change of trust become [`SETTLE`] old.
async fn settle() {
    tokio::time::sleep(SETTLE + Duration::from_millis(200)).await;
}

fn manifest() -> PostgresCluster {
    let mut cluster: PostgresCluster = serde_yaml::from_str(&format!(
        r#"
apiVersion: tusk.rs/v1beta1
kind: PostgresCluster
metadata: {{name: {NAME}, namespace: {NS}}}
spec:
  postgresVersion: 15
  instances:
    - name: instance1
      dataVolumeClaimSpec:
        accessModes: [ReadWriteOnce]
        resources: {{requests: {{storage: 1Gi}}}}
"#
    ))
    .expect("test manifest parses");
    // An empty status makes the fake API server treat status as a subresource.
    cluster.status = Some(Default::default());
    cluster
}

struct Harness {
    client: Client,
    ctx: Arc<Context>,
}

impl Harness {
    async fn new() -> Self {
        Self::with_secrets(Vec::new()).await
    }

    /// The cluster and `secrets` (which name their namespace) already on the server.
    async fn with_secrets(secrets: Vec<Secret>) -> Self {
        let mut builder = ClientBuilder::new()
            .with_resource::<PostgresCluster>()
            .with_object(manifest());
        for secret in secrets {
            builder = builder.with_object(secret);
        }
        let client = builder.build().await.expect("fake client");
        let mut ctx = Context::new(client.clone(), Images::default(), Arc::new(Metrics::new()));
        ctx.trust_settle = SETTLE;
        Harness {
            client,
            ctx: Arc::new(ctx),
        }
    }

    async fn reconcile(&self) {
        let clusters: Api<PostgresCluster> = Api::namespaced(self.client.clone(), NS);
        let cluster = Arc::new(clusters.get(NAME).await.expect("cluster exists"));
        reconcile(cluster, self.ctx.clone())
            .await
            .expect("reconcile succeeds");
    }

    fn secrets(&self, namespace: &str) -> Api<Secret> {
        Api::namespaced(self.client.clone(), namespace)
    }

    /// The text under `key` in Secret `name` of the cluster's namespace (`None`: no such key).
    async fn key(&self, name: &str, key: &str) -> Option<String> {
        let secret = self.secrets(NS).get(name).await.expect("Secret exists");
        secret
            .data
            .and_then(|d| d.get(key).map(|b| String::from_utf8(b.0.clone()).unwrap()))
    }

    /// Both cert Secrets hold these leaves.
    async fn assert_leaves(&self, server: &str, replication: &str) {
        assert_eq!(self.key(CLUSTER_CERT, "tls.crt").await.unwrap(), server);
        assert_eq!(
            self.key(REPLICATION_CERT, "tls.crt").await.unwrap(),
            replication
        );
    }

    /// The cert Secret's record of the last change of trust.
    async fn trust_changed_at(&self) -> Option<String> {
        let secret = self
            .secrets(NS)
            .get(CLUSTER_CERT)
            .await
            .expect("Secret exists");
        secret
            .metadata
            .annotations?
            .get(tusk_operator::material::TRUST_CHANGED_ANNOTATION)
            .cloned()
    }

    async fn root_cert(&self) -> String {
        let secret = self
            .secrets(DEFAULT_OPERATOR_NAMESPACE)
            .get(naming::ROOT_CA_SECRET)
            .await
            .expect("root CA Secret exists");
        String::from_utf8(secret.data.unwrap()[ROOT_CERT_KEY].0.clone()).unwrap()
    }
}

/// The real `openssl verify -CAfile bundle leaf`.
fn openssl_verifies(bundle: &str, leaf: &str) -> bool {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert) = (dir.path().join("ca.crt"), dir.path().join("leaf.crt"));
    std::fs::write(&ca, bundle).unwrap();
    std::fs::write(&cert, leaf).unwrap();
    std::process::Command::new("openssl")
        .arg("verify")
        .arg("-CAfile")
        .arg(&ca)
        .arg(&cert)
        .output()
        .expect("run openssl (apt-get install openssl)")
        .status
        .success()
}

#[tokio::test]
async fn deleting_the_root_secret_rolls_a_new_root_through_a_bundle() {
    let h = Harness::new().await;
    h.reconcile().await;
    let old_root = h.root_cert().await;
    let old_server = h.key(CLUSTER_CERT, "tls.crt").await.unwrap();
    let old_replication = h.key(REPLICATION_CERT, "tls.crt").await.unwrap();
    assert_eq!(
        tusk_pki::bundle_certificates(&h.key(CLUSTER_CERT, "ca.crt").await.unwrap()),
        vec![old_root.clone()]
    );

    h.secrets(DEFAULT_OPERATOR_NAMESPACE)
        .delete(naming::ROOT_CA_SECRET, &DeleteParams::default())
        .await
        .expect("root Secret deleted");
    h.reconcile().await;

    // 1. A new root, trusted beside the old one in both cert Secrets; the leaves stay, so a
    //    pod whose files are not refreshed yet meets only certificates it trusts.
    let new_root = h.root_cert().await;
    assert_ne!(new_root, old_root);
    let both = h.key(CLUSTER_CERT, "ca.crt").await.unwrap();
    assert_eq!(
        tusk_pki::bundle_certificates(&both),
        [new_root.clone(), old_root.clone()]
    );
    assert_eq!(h.key(REPLICATION_CERT, "ca.crt").await.unwrap(), both);
    h.assert_leaves(&old_server, &old_replication).await;
    let annotation = h.trust_changed_at().await;
    assert!(annotation.is_some(), "the change is recorded");
    // Before the settle time nothing moves.
    h.reconcile().await;
    h.assert_leaves(&old_server, &old_replication).await;
    assert_eq!(h.trust_changed_at().await, annotation);

    // 2. Leaves from the new root; the bundle still trusts both, so pods on old and new
    //    leaves verify each other.
    settle().await;
    h.reconcile().await;
    let server = h.key(CLUSTER_CERT, "tls.crt").await.unwrap();
    let replication = h.key(REPLICATION_CERT, "tls.crt").await.unwrap();
    for (leaf, old) in [(&server, &old_server), (&replication, &old_replication)] {
        assert_ne!(leaf, old);
        assert!(tusk_pki::signed_by(leaf, &new_root));
        assert!(!tusk_pki::signed_by(leaf, &old_root));
    }
    assert_eq!(h.key(CLUSTER_CERT, "ca.crt").await.unwrap(), both);
    for leaf in [&server, &replication, &old_server, &old_replication] {
        assert!(openssl_verifies(&both, leaf));
    }
    assert!(!openssl_verifies(&old_root, &server));
    assert_ne!(h.trust_changed_at().await, annotation);
    h.reconcile().await;
    assert_eq!(
        h.key(CLUSTER_CERT, "ca.crt").await.unwrap(),
        both,
        "too early"
    );

    // 3. Every pod has had the time to load its new leaf: the old root leaves the bundle.
    settle().await;
    h.reconcile().await;
    let settled = h.key(CLUSTER_CERT, "ca.crt").await.unwrap();
    assert_eq!(tusk_pki::bundle_certificates(&settled), vec![new_root]);
    assert_eq!(h.key(REPLICATION_CERT, "ca.crt").await.unwrap(), settled);
    h.assert_leaves(&server, &replication).await;
    assert!(openssl_verifies(&settled, &server));
    assert!(!openssl_verifies(&settled, &old_server));
    // Settled: later reconciles change nothing.
    let last = h.trust_changed_at().await;
    settle().await;
    h.reconcile().await;
    assert_eq!(h.key(CLUSTER_CERT, "ca.crt").await.unwrap(), settled);
    assert_eq!(h.trust_changed_at().await, last);
}

#[tokio::test]
async fn deleting_a_leaf_key_regenerates_the_leaf() {
    let h = Harness::new().await;
    h.reconcile().await;
    let server = h.key(CLUSTER_CERT, "tls.crt").await.unwrap();
    let replication = h.key(REPLICATION_CERT, "tls.crt").await.unwrap();

    let secrets = h.secrets(NS);
    let mut secret = secrets.get(CLUSTER_CERT).await.unwrap();
    secret.data.as_mut().unwrap().remove("tls.key");
    secrets
        .replace(CLUSTER_CERT, &PostParams::default(), &secret)
        .await
        .expect("tls.key removed");
    assert_eq!(h.key(CLUSTER_CERT, "tls.key").await, None);

    h.reconcile().await;
    let new_server = h.key(CLUSTER_CERT, "tls.crt").await.unwrap();
    let new_key = h
        .key(CLUSTER_CERT, "tls.key")
        .await
        .expect("tls.key is back");
    assert_ne!(new_server, server, "a new pair, not the old certificate");
    assert!(tusk_pki::key_matches(&new_server, &new_key));
    assert!(openssl_verifies(
        &h.key(CLUSTER_CERT, "ca.crt").await.unwrap(),
        &new_server
    ));
    assert_eq!(
        h.key(REPLICATION_CERT, "tls.crt").await.unwrap(),
        replication,
        "the other leaf is kept"
    );
}

/// A Secret holding `data` as text, labelled for the cluster when it lives in its namespace
/// (so the controller's dereference finds it).
fn text_secret(namespace: &str, name: &str, data: &[(&str, &str)]) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(namespace.to_owned()),
            labels: (namespace == NS).then(|| naming::cluster_labels(NAME)),
            ..ObjectMeta::default()
        },
        data: Some(
            data.iter()
                .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
                .collect(),
        ),
        ..Secret::default()
    }
}

fn root_secret(ca: &RootCa) -> Secret {
    text_secret(
        DEFAULT_OPERATOR_NAMESPACE,
        naming::ROOT_CA_SECRET,
        &[(ROOT_CERT_KEY, ca.cert_pem()), (ROOT_KEY_KEY, ca.key_pem())],
    )
}

/// 2500 of the root's 3650 days: past the 2/3 mark (2433 days).
fn aged_root(now: OffsetDateTime) -> RootCa {
    let aged = RootCa::generate(now - time::Duration::days(2500)).unwrap();
    assert!(root_due(&aged, now));
    aged
}

#[tokio::test]
async fn a_root_past_two_thirds_of_its_life_is_renewed_and_rolled_out() {
    let now = OffsetDateTime::now_utc();
    let aged = aged_root(now);
    // A cluster that has been running on the aged root: fresh leaves that chain to it.
    let cluster = tusk_api::validate(&manifest()).unwrap();
    let dns = tusk_operator::material::server_dns_names(&cluster);
    let server = aged.issue_server("hippo-primary", &dns, now).unwrap();
    let replication = aged.issue_client(naming::REPLICATION_USER, now).unwrap();
    let cert_secret = |name: &str, leaf: &tusk_pki::Leaf| {
        text_secret(
            NS,
            name,
            &[
                ("tls.crt", &leaf.cert_pem),
                ("tls.key", &leaf.key_pem),
                ("ca.crt", aged.cert_pem()),
            ],
        )
    };
    let h = Harness::with_secrets(vec![
        root_secret(&aged),
        cert_secret(CLUSTER_CERT, &server),
        cert_secret(REPLICATION_CERT, &replication),
    ])
    .await;
    h.reconcile().await;

    // A new root, itself not due, trusted beside the aged one; the leaves wait.
    let new_root = h.root_cert().await;
    assert_ne!(new_root, aged.cert_pem());
    assert!(now < tusk_pki::renew_at(&new_root).unwrap());
    let bundle = h.key(CLUSTER_CERT, "ca.crt").await.unwrap();
    assert_eq!(
        tusk_pki::bundle_certificates(&bundle),
        [new_root.clone(), aged.cert_pem().to_owned()]
    );
    h.assert_leaves(&server.cert_pem, &replication.cert_pem)
        .await;

    // Then the leaves, reissued by the new root and trusted by the same bundle.
    settle().await;
    h.reconcile().await;
    let new_server = h.key(CLUSTER_CERT, "tls.crt").await.unwrap();
    let new_replication = h.key(REPLICATION_CERT, "tls.crt").await.unwrap();
    for leaf in [&new_server, &new_replication] {
        assert!(tusk_pki::signed_by(leaf, &new_root));
    }
    assert_eq!(h.key(CLUSTER_CERT, "ca.crt").await.unwrap(), bundle);
    for leaf in [&new_server, &server.cert_pem, &replication.cert_pem] {
        assert!(openssl_verifies(&bundle, leaf));
    }

    // The renewed root is kept (not renewed again); the aged one leaves the bundle.
    settle().await;
    h.reconcile().await;
    assert_eq!(h.root_cert().await, new_root);
    assert_eq!(
        tusk_pki::bundle_certificates(&h.key(CLUSTER_CERT, "ca.crt").await.unwrap()),
        [new_root]
    );
}

#[tokio::test]
async fn two_replicas_renewing_the_same_root_agree_on_one_new_root() {
    let now = OffsetDateTime::now_utc();
    let aged = aged_root(now);
    let h = Harness::with_secrets(vec![root_secret(&aged)]).await;
    let api = h.secrets(DEFAULT_OPERATOR_NAMESPACE);
    // Both replicas read the Secret before either writes.
    let read_by_both = api.get(naming::ROOT_CA_SECRET).await.unwrap();
    let ns = DEFAULT_OPERATOR_NAMESPACE;
    let first = renew_root_ca(&h.client, ns, &read_by_both, now)
        .await
        .expect("the first replica renews");
    let second = renew_root_ca(&h.client, ns, &read_by_both, now)
        .await
        .expect("the second replica gets a conflict and reads the first one's root");
    assert_ne!(first.cert_pem(), aged.cert_pem());
    assert_eq!(second.cert_pem(), first.cert_pem());
    assert_eq!(second.key_pem(), first.key_pem());
    assert_eq!(h.root_cert().await, first.cert_pem());
    // And the next look at it keeps it.
    let again = ensure_root_ca_at(&h.client, ns, now).await.unwrap();
    assert_eq!(again.cert_pem(), first.cert_pem());
}
