//! Custom TLS Secrets (`spec.customTLSSecret` / `spec.customReplicationTLSSecret`) on
//! kube-fake-client: usable Secrets are projected as they are and Tusk issues no certificate
//! of its own; unusable ones stop the reconcile with the field path in the `Degraded`
//! condition and a Warning Event, and change nothing (not even the Secrets).

mod common;

use common::{cluster_from, secret as text_secret, Harness, NAME, NS};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::ByteString;
use kube::api::{Api, ListParams};
use time::OffsetDateTime;
use tusk_api::{naming, PostgresCluster};
use tusk_pki::RootCa;

const SERVER_SECRET: &str = "hippo.tls";
const REPLICATION_SECRET: &str = "hippo-repl.tls";

/// The server Secret is mapped through `items` (keys named as in the reference example 03),
/// the replication Secret uses the standard key names.
fn manifest() -> PostgresCluster {
    cluster_from(&format!(
        r#"
apiVersion: tusk.rs/v1beta1
kind: PostgresCluster
metadata: {{name: {NAME}, namespace: {NS}}}
spec:
  postgresVersion: 15
  customTLSSecret:
    name: {SERVER_SECRET}
    items:
      - {{key: hippo-tls.crt, path: tls.crt}}
      - {{key: hippo-tls.key, path: tls.key}}
      - {{key: hippo-ca.crt, path: ca.crt}}
  customReplicationTLSSecret: {{name: {REPLICATION_SECRET}}}
  instances:
    - name: instance1
      dataVolumeClaimSpec:
        accessModes: [ReadWriteOnce]
        resources: {{requests: {{storage: 1Gi}}}}
"#
    ))
}

fn secret(name: &str, data: [(&str, &str); 3]) -> Secret {
    text_secret(name, &data)
}

/// Certificates a user could bring: a CA of their own, a server certificate for the
/// `<c>-primary` names (`san`), a replication client certificate for `replication_cn`.
struct UserPki {
    ca: RootCa,
    server_sans: Vec<String>,
    replication_cn: String,
}

impl UserPki {
    fn good() -> Self {
        UserPki {
            ca: RootCa::generate(OffsetDateTime::now_utc()).unwrap(),
            server_sans: vec![
                "hippo-primary".into(),
                "hippo-primary.db".into(),
                "*.db.svc".into(),
                "hippo-primary.db.svc.cluster.local".into(),
            ],
            replication_cn: naming::REPLICATION_USER.into(),
        }
    }

    fn server_secret(&self) -> Secret {
        self.server_secret_at(OffsetDateTime::now_utc())
    }

    /// The server Secret with a leaf issued at `now` (valid for a year from then).
    fn server_secret_at(&self, now: OffsetDateTime) -> Secret {
        let leaf = self
            .ca
            .issue_server("hippo-primary", &self.server_sans, now)
            .unwrap();
        secret(
            SERVER_SECRET,
            [
                ("hippo-tls.crt", &leaf.cert_pem),
                ("hippo-tls.key", &leaf.key_pem),
                ("hippo-ca.crt", self.ca.cert_pem()),
            ],
        )
    }

    fn replication_secret(&self) -> Secret {
        let now = OffsetDateTime::now_utc();
        let leaf = self.ca.issue_client(&self.replication_cn, now).unwrap();
        secret(
            REPLICATION_SECRET,
            [
                ("tls.crt", &leaf.cert_pem),
                ("tls.key", &leaf.key_pem),
                ("ca.crt", self.ca.cert_pem()),
            ],
        )
    }
}

async fn harness(secrets: Vec<Secret>) -> Harness {
    Harness::with(manifest(), secrets, |_| {}).await
}

async fn degraded(h: &Harness) -> k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
    h.condition("Degraded").await
}

async fn warnings(h: &Harness, reason: &str) -> Vec<String> {
    h.event_notes("Warning", reason).await
}

/// A reconcile with `secrets` is refused: `Degraded` with reason `InvalidCustomTLS` and a
/// message naming `field` and containing `detail`, the same in a Warning Event, and nothing
/// created.
async fn assert_refused(secrets: Vec<Secret>, field: &str, detail: &str) {
    let h = harness(secrets).await;
    h.reconcile().await;
    let degraded = degraded(&h).await;
    assert_eq!(degraded.status, "True");
    assert_eq!(degraded.reason, "InvalidCustomTLS");
    let names_it = |text: &str| text.contains(&format!("{field}: ")) && text.contains(detail);
    assert!(names_it(&degraded.message), "{}", degraded.message);
    let warnings = warnings(&h, "InvalidCustomTLS").await;
    assert!(warnings.iter().any(|w| names_it(w)), "{warnings:?}");
    assert!(h.objects().await.is_empty(), "nothing may be created");
}

#[tokio::test]
async fn valid_custom_secrets_are_projected_and_no_certificate_is_issued() {
    let pki = UserPki::good();
    let (server, replication) = (pki.server_secret(), pki.replication_secret());
    let h = harness(vec![server.clone(), replication.clone()]).await;
    h.reconcile().await;

    let degraded = degraded(&h).await;
    assert_eq!(degraded.status, "False", "{}", degraded.message);
    let objects = h.objects().await;
    assert!(objects.keys().any(|(kind, _)| kind == "StatefulSet"));
    for tusk_secret in ["hippo-cluster-cert", "hippo-replication-cert"] {
        assert!(
            h.secret(tusk_secret).await.is_none(),
            "{tusk_secret} issued"
        );
    }
    // The user's Secrets are read, never written.
    assert_eq!(h.secret(SERVER_SECRET).await.unwrap().data, server.data);
    assert_eq!(
        h.secret(REPLICATION_SECRET).await.unwrap().data,
        replication.data
    );
    let sets: Api<StatefulSet> = Api::namespaced(h.client.clone(), NS);
    let set = sets
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .remove(0);
    let volumes = serde_json::to_string(&set.spec.unwrap().template.spec.unwrap().volumes).unwrap();
    assert!(volumes.contains(SERVER_SECRET) && volumes.contains(REPLICATION_SECRET));
    assert!(warnings(&h, "CustomTLSWarning").await.is_empty());
}

#[tokio::test]
async fn a_different_ca_in_the_replication_secret_is_refused_and_changes_nothing() {
    let pki = UserPki::good();
    let h = harness(vec![pki.server_secret(), pki.replication_secret()]).await;
    h.reconcile().await;
    let before = h.objects().await;

    let other = UserPki::good();
    h.replace_secret(other.replication_secret()).await;
    h.reconcile().await;

    let degraded = degraded(&h).await;
    assert_eq!(degraded.reason, "InvalidCustomTLS");
    assert!(
        degraded
            .message
            .contains("spec.customReplicationTLSSecret.name: ca.crt differs"),
        "{}",
        degraded.message
    );
    assert_eq!(h.objects().await, before, "running objects are untouched");
    assert!(!warnings(&h, "InvalidCustomTLS").await.is_empty());
}

#[tokio::test]
async fn a_replication_certificate_for_another_user_is_refused() {
    let pki = UserPki {
        replication_cn: "replicator".into(),
        ..UserPki::good()
    };
    let secrets = vec![pki.server_secret(), pki.replication_secret()];
    assert_refused(
        secrets,
        "spec.customReplicationTLSSecret.name",
        "\"replicator\", must be \"_tusk_repl\"",
    )
    .await;
}

#[tokio::test]
async fn a_missing_secret_is_refused_with_its_field() {
    let pki = UserPki::good();
    assert_refused(
        vec![pki.replication_secret()],
        "spec.customTLSSecret.name",
        "Secret \"hippo.tls\" does not exist",
    )
    .await;
}

#[tokio::test]
async fn a_key_missing_from_the_items_mapping_is_refused() {
    let pki = UserPki::good();
    let mut server = pki.server_secret();
    server.data.as_mut().unwrap().remove("hippo-ca.crt");
    assert_refused(
        vec![server, pki.replication_secret()],
        "spec.customTLSSecret.items",
        "no key \"hippo-ca.crt\" (projected as ca.crt)",
    )
    .await;
}

#[tokio::test]
async fn a_certificate_that_does_not_parse_is_refused() {
    let pki = UserPki::good();
    let mut replication = pki.replication_secret();
    replication
        .data
        .as_mut()
        .unwrap()
        .insert("tls.crt".into(), ByteString(b"not a certificate".to_vec()));
    assert_refused(
        vec![pki.server_secret(), replication],
        "spec.customReplicationTLSSecret.name",
        "key \"tls.crt\" (tls.crt): parsing a certificate",
    )
    .await;
}

#[tokio::test]
async fn missing_primary_names_warn_but_the_reconcile_proceeds() {
    let pki = UserPki {
        server_sans: vec!["hippo-primary".into()],
        ..UserPki::good()
    };
    let h = harness(vec![pki.server_secret(), pki.replication_secret()]).await;
    h.reconcile().await;

    assert_eq!(degraded(&h).await.status, "False");
    assert!(h
        .objects()
        .await
        .keys()
        .any(|(kind, _)| kind == "StatefulSet"));
    let warnings = warnings(&h, "CustomTLSWarning").await;
    assert!(
        warnings.iter().any(|w| w.contains("spec.customTLSSecret")
            && w.contains("hippo-primary.db.svc.cluster.local")
            && !w.contains("hippo-primary, ")),
        "{warnings:?}"
    );
}

#[tokio::test]
async fn an_expired_server_certificate_is_refused_with_its_field() {
    let pki = UserPki::good();
    let two_years_ago = OffsetDateTime::now_utc() - time::Duration::days(730);
    assert_refused(
        vec![
            pki.server_secret_at(two_years_ago),
            pki.replication_secret(),
        ],
        "spec.customTLSSecret.items",
        "tls.crt expired at",
    )
    .await;
}

#[tokio::test]
async fn a_leaf_signed_by_another_ca_than_its_ca_crt_is_refused() {
    let pki = UserPki::good();
    let other = UserPki::good();
    let mut replication = pki.replication_secret();
    let foreign = other.replication_secret().data.unwrap()["tls.crt"].clone();
    replication
        .data
        .as_mut()
        .unwrap()
        .insert("tls.crt".into(), foreign);
    assert_refused(
        vec![pki.server_secret(), replication],
        "spec.customReplicationTLSSecret.name",
        "tls.crt is not signed by the Secret's ca.crt",
    )
    .await;
}

#[tokio::test]
async fn a_certificate_near_its_end_warns_but_the_reconcile_proceeds() {
    let pki = UserPki::good();
    // Issued 300 of its 365 days ago: less than a third left.
    let old = OffsetDateTime::now_utc() - time::Duration::days(300);
    let h = harness(vec![pki.server_secret_at(old), pki.replication_secret()]).await;
    h.reconcile().await;
    assert_eq!(degraded(&h).await.status, "False");
    let warnings = warnings(&h, "CustomTLSWarning").await;
    assert!(
        warnings
            .iter()
            .any(|w| w.starts_with("spec.customTLSSecret: tls.crt expires at")),
        "{warnings:?}"
    );
}
