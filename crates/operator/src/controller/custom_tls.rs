//! Custom TLS certificates (`spec.customTLSSecret`, `spec.customReplicationTLSSecret`) in
//! the operator: before anything is applied, the two user Secrets are read through their
//! `items` key mapping ([`read_custom_tls`], a dereference step that holds the client) and
//! checked by [`check_custom_tls`] (pure, in `tusk_config::custom_tls`, shared with `tusk
//! local`). When they are unusable the reconcile stops with a field-named error (the
//! `Degraded` condition and a Warning Event, like an invalid spec) and running objects stay as
//! they are. Tusk never writes these Secrets.

use k8s_openapi::api::core::v1::{Secret, SecretProjection};
use kube::api::Api;
use kube::Client;
use tusk_api::model::TlsSettings;

pub use tusk_config::custom_tls::{
    check_custom_tls, server_ca_pem, CustomSecret, CustomTlsFindings, CustomTlsSecrets,
};

use super::error::DereferenceError;

/// Reads the custom Secrets in `namespace`; `None` when the cluster uses Tusk's certificates.
/// A missing Secret is not an error here: [`check_custom_tls`] reports it with its field.
pub async fn read_custom_tls(
    client: &Client,
    namespace: &str,
    tls: &TlsSettings,
) -> Result<Option<CustomTlsSecrets>, DereferenceError> {
    // Validation guarantees both or neither.
    let (Some(server), Some(replication)) = (&tls.custom_server, &tls.custom_replication) else {
        return Ok(None);
    };
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let read = |projection: &SecretProjection| {
        let api = api.clone();
        let projection = projection.clone();
        async move {
            let secret = api.get_opt(&projection.name).await.map_err(|source| {
                DereferenceError::ReadSecret {
                    name: projection.name.clone(),
                    source,
                }
            })?;
            let data = secret.map(|s| {
                s.data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, v.0))
                    .collect()
            });
            Ok::<_, DereferenceError>(CustomSecret { projection, data })
        }
    };
    Ok(Some(CustomTlsSecrets {
        server: read(server).await?,
        replication: read(replication).await?,
    }))
}
