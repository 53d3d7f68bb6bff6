//! The operator's root certificate authority, kept in Secret `tusk-root-cacert` (keys
//! `root.crt`, `root.key`) in the operator's own namespace.
//!
//! Created on first use with `create` (not apply), so two operator replicas racing at start
//! cannot overwrite each other's CA: the loser reads the winner's. An existing Secret that does
//! not parse is an error, never silently replaced — replacing a CA invalidates every leaf.
//!
//! Root rollover: deleting the Secret is how a person asks for a new root; the next reconcile
//! creates one here. This Secret does not remember the previous root, because a Secret that
//! was deleted cannot remember anything. The memory is per cluster instead: the `ca.crt`
//! bundle published in `<c>-cluster-cert` is exactly what that cluster's peers trust today.
//! `material::tls_material` moves each cluster to the new root in three steps, each once the
//! previous change (annotation `tusk.rs/trust-changed-at` on the cert Secrets) is
//! `material::TRUST_SETTLE` old, the time the kubelet and the `tls-reload` sidecar take to
//! bring it into every pod: the bundle gains the new root, then the leaves are reissued, then
//! the old root is dropped. Each cluster finishes its rollover on its own (a paused cluster
//! keeps its old leaves, and the old root stays in its bundle, until it resumes).
//!
//! Renewal: a root past 2/3 of its lifetime ([`tusk_pki::renew_at`]) is replaced here by a
//! new one, which then rolls out exactly like a deleted Secret's. The replacement is a
//! `replace` carrying the resourceVersion this replica read, so when two operator replicas
//! both find the root due, the API server lets one write and answers the other 409 Conflict;
//! the loser reads and uses the winner's root. Only "past 2/3" triggers it, never "not valid
//! yet": a replica whose clock is behind must not replace a root another replica just made.

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::ByteString;
use kube::api::{Api, PostParams};
use kube::Client;
use std::collections::BTreeMap;
use time::OffsetDateTime;
use tusk_api::naming::{self, ROOT_CA_SECRET};
use tusk_pki::RootCa;

use super::error::RootCaError;

pub const ROOT_CERT_KEY: &str = "root.crt";
pub const ROOT_KEY_KEY: &str = "root.key";

/// Reads the root CA, creating it when it does not exist yet and renewing it when due.
pub async fn ensure_root_ca(client: &Client, namespace: &str) -> Result<RootCa, RootCaError> {
    ensure_root_ca_at(client, namespace, OffsetDateTime::now_utc()).await
}

/// [`ensure_root_ca`] at `now` (tests pass a time instead of waiting years).
pub async fn ensure_root_ca_at(
    client: &Client,
    namespace: &str,
    now: OffsetDateTime,
) -> Result<RootCa, RootCaError> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    if let Some(secret) = api
        .get_opt(ROOT_CA_SECRET)
        .await
        .map_err(|source| RootCaError::Read { source })?
    {
        let ca = parse(&secret)?;
        if !root_due(&ca, now) {
            return Ok(ca);
        }
        return renew_root_ca(client, namespace, &secret, now).await;
    }
    let ca = RootCa::generate(now).map_err(|source| RootCaError::Generate { source })?;
    match api.create(&PostParams::default(), &secret_for(&ca)).await {
        Ok(_) => Ok(ca),
        Err(kube::Error::Api(e)) if e.code == 409 => {
            let secret = api
                .get(ROOT_CA_SECRET)
                .await
                .map_err(|source| RootCaError::Read { source })?;
            parse(&secret)
        }
        Err(source) => Err(RootCaError::Create { source }),
    }
}

/// Past 2/3 of its lifetime at `now`. A root that cannot be read is not "due": [`parse`]
/// already refused it, and replacing an unreadable CA silently is what this module never does.
pub fn root_due(ca: &RootCa, now: OffsetDateTime) -> bool {
    tusk_pki::renew_at(ca.cert_pem()).is_ok_and(|due| now >= due)
}

/// Replaces the root Secret, as this replica read it (`read`, with its resourceVersion), by a
/// new root. If another replica changed the Secret since, the API server refuses (409) and
/// the root now in the Secret is returned instead: only one replica ever renews.
pub async fn renew_root_ca(
    client: &Client,
    namespace: &str,
    read: &Secret,
    now: OffsetDateTime,
) -> Result<RootCa, RootCaError> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let ca = RootCa::generate(now).map_err(|source| RootCaError::Generate { source })?;
    let mut replacement = secret_for(&ca);
    replacement.metadata.resource_version = read.metadata.resource_version.clone();
    match api
        .replace(ROOT_CA_SECRET, &PostParams::default(), &replacement)
        .await
    {
        Ok(_) => {
            tracing::info!("root CA past 2/3 of its lifetime: replaced, rolling out");
            Ok(ca)
        }
        Err(kube::Error::Api(e)) if e.code == 409 => {
            let secret = api
                .get(ROOT_CA_SECRET)
                .await
                .map_err(|source| RootCaError::Read { source })?;
            parse(&secret)
        }
        Err(source) => Err(RootCaError::Replace { source }),
    }
}

fn secret_for(ca: &RootCa) -> Secret {
    let mut labels = BTreeMap::new();
    labels.insert(naming::APP_MANAGED_BY.to_owned(), "tusk".to_owned());
    Secret {
        metadata: ObjectMeta {
            name: Some(ROOT_CA_SECRET.to_owned()),
            labels: Some(labels),
            ..Default::default()
        },
        type_: Some("Opaque".to_owned()),
        data: Some(BTreeMap::from([
            (
                ROOT_CERT_KEY.to_owned(),
                ByteString(ca.cert_pem().as_bytes().to_vec()),
            ),
            (
                ROOT_KEY_KEY.to_owned(),
                ByteString(ca.key_pem().as_bytes().to_vec()),
            ),
        ])),
        ..Default::default()
    }
}

fn parse(secret: &Secret) -> Result<RootCa, RootCaError> {
    let field = |key: &str| {
        secret
            .data
            .as_ref()
            .and_then(|d| d.get(key))
            .and_then(|b| String::from_utf8(b.0.clone()).ok())
            .ok_or(RootCaError::MissingKey {
                key: key.to_owned(),
            })
    };
    RootCa::from_pem(&field(ROOT_CERT_KEY)?, &field(ROOT_KEY_KEY)?)
        .map_err(|source| RootCaError::Parse { source })
}
