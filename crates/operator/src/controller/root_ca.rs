//! The operator's root certificate authority, kept in Secret `tusk-root-cacert` (keys
//! `root.crt`, `root.key`) in the operator's own namespace.
//!
//! Created on first use with `create` (not apply), so two operator replicas racing at start
//! cannot overwrite each other's CA: the loser reads the winner's. An existing Secret that does
//! not parse is an error, never silently replaced — replacing a CA invalidates every leaf.

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::ByteString;
use kube::api::{Api, PostParams};
use kube::Client;
use std::collections::BTreeMap;
use tusk_api::naming::{self, ROOT_CA_SECRET};
use tusk_pki::RootCa;

use super::error::RootCaError;

pub const ROOT_CERT_KEY: &str = "root.crt";
pub const ROOT_KEY_KEY: &str = "root.key";

/// Reads the root CA, creating it when it does not exist yet.
pub async fn ensure_root_ca(client: &Client, namespace: &str) -> Result<RootCa, RootCaError> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    if let Some(secret) = api
        .get_opt(ROOT_CA_SECRET)
        .await
        .map_err(|source| RootCaError::Read { source })?
    {
        return parse(&secret);
    }
    let ca = RootCa::generate(time::OffsetDateTime::now_utc())
        .map_err(|source| RootCaError::Generate { source })?;
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
