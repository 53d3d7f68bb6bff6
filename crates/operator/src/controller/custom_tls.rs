//! Custom TLS certificates (`spec.customTLSSecret`, `spec.customReplicationTLSSecret`):
//! before anything is applied, the two user Secrets are read through their `items` key
//! mapping and checked for what would certainly break the cluster. Tusk never writes these
//! Secrets; when they are unusable the reconcile stops with a field-named error (the
//! `Degraded` condition and a Warning Event, like an invalid spec) and running objects stay
//! as they are.
//!
//! Rejected (replication or TLS would fail for sure): a Secret or one of its three files
//! missing, a `tls.crt`/`ca.crt` that is not a PEM certificate, a `tls.key` that is not a PEM
//! private key, different `ca.crt` in the two Secrets (each side verifies the other with its
//! own `ca.crt`), a replication certificate whose CN is not the replication user (pg_hba maps
//! the certificate CN to the role). Warned about (a Warning Event, the reconcile goes on): a
//! server certificate that does not name every `<c>-primary` form (only `verify-full`
//! clients of those names are hurt), a key Tusk cannot confirm belongs to its certificate
//! (Tusk cannot parse every key format a user may bring).
//!
//! [`read_custom_tls`] is a dereference step that needs the validated projections, so it
//! runs after validation and holds the client; [`check_custom_tls`] is pure. Secret values
//! never reach a message: errors name Secrets, keys and certificate names only.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Secret, SecretProjection};
use kube::api::Api;
use kube::Client;
use tusk_api::model::TlsSettings;
use tusk_api::naming::REPLICATION_USER;
use tusk_api::{FieldError, ValidatedCluster};

use super::error::DereferenceError;
use crate::build::secrets::{TLS_CA_KEY, TLS_CERT_KEY, TLS_PRIVATE_KEY_KEY};
use crate::material::CLUSTER_DOMAIN;

const SERVER_FIELD: &str = "spec.customTLSSecret";
const REPLICATION_FIELD: &str = "spec.customReplicationTLSSecret";

/// One custom Secret as read: its projection from the spec and its data (`None`: the Secret
/// does not exist). Debug shows key names only.
#[derive(Clone)]
pub struct CustomSecret {
    pub projection: SecretProjection,
    pub data: Option<BTreeMap<String, Vec<u8>>>,
}

impl std::fmt::Debug for CustomSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CustomSecret")
            .field("name", &self.projection.name)
            .field(
                "keys",
                &self.data.as_ref().map(|d| d.keys().collect::<Vec<_>>()),
            )
            .finish()
    }
}

/// Both custom Secrets of a cluster.
#[derive(Clone, Debug)]
pub struct CustomTlsSecrets {
    pub server: CustomSecret,
    pub replication: CustomSecret,
}

/// What [`check_custom_tls`] found: errors stop the reconcile, warnings become Events.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CustomTlsFindings {
    pub errors: Vec<FieldError>,
    pub warnings: Vec<String>,
}

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

/// The three PEM files of one custom Secret, as far as they could be read.
struct Files {
    cert: Option<String>,
    key: Option<String>,
    ca: Option<String>,
}

/// Checks the custom Secrets against what the cluster needs from them.
pub fn check_custom_tls(
    cluster: &ValidatedCluster,
    secrets: &CustomTlsSecrets,
) -> CustomTlsFindings {
    let mut findings = CustomTlsFindings::default();
    let server = read_files(&mut findings, SERVER_FIELD, &secrets.server);
    let replication = read_files(&mut findings, REPLICATION_FIELD, &secrets.replication);

    if let (Some(server_ca), Some(replication_ca)) = (&server.ca, &replication.ca) {
        if normalized(server_ca) != normalized(replication_ca) {
            findings.errors.push(FieldError {
                path: items_field(REPLICATION_FIELD, &secrets.replication),
                reason: format!(
                    "ca.crt differs from the ca.crt of {SERVER_FIELD}: each side of replication \
                     verifies the other with its own ca.crt, so both must hold the same CA"
                ),
            });
        }
    }
    if let Some(cert) = &replication.cert {
        match tusk_pki::common_name(cert) {
            Ok(cn) if cn.as_deref() == Some(REPLICATION_USER) => {}
            Ok(cn) => findings.errors.push(FieldError {
                path: items_field(REPLICATION_FIELD, &secrets.replication),
                reason: format!(
                    "the tls.crt common name is {}, must be {REPLICATION_USER:?}: replication \
                     logs in as the role named by the certificate's CN",
                    cn.map_or_else(|| "missing".to_owned(), |cn| format!("{cn:?}"))
                ),
            }),
            // Already reported by read_files.
            Err(_) => {}
        }
    }
    if let Some(cert) = &server.cert {
        if let Ok(names) = tusk_pki::dns_names(cert) {
            let missing: Vec<String> = primary_names(cluster)
                .into_iter()
                .filter(|wanted| !names.iter().any(|san| dns_matches(san, wanted)))
                .collect();
            if !missing.is_empty() {
                findings.warnings.push(format!(
                    "{SERVER_FIELD}: the server certificate does not name {}; clients using \
                     sslmode=verify-full with these names will refuse it",
                    missing.join(", ")
                ));
            }
        }
    }
    for (field, files) in [(SERVER_FIELD, &server), (REPLICATION_FIELD, &replication)] {
        if let (Some(cert), Some(key)) = (&files.cert, &files.key) {
            if !tusk_pki::key_matches(cert, key) {
                findings.warnings.push(format!(
                    "{field}: could not confirm that tls.key belongs to tls.crt (they do not \
                     match, or the key is in a format Tusk does not read); TLS fails if they \
                     are not a pair"
                ));
            }
        }
    }
    findings
}

/// Reads and parses the three files of `secret`, pushing an error per unusable one.
fn read_files(findings: &mut CustomTlsFindings, field: &str, secret: &CustomSecret) -> Files {
    let name = &secret.projection.name;
    let Some(data) = &secret.data else {
        findings.errors.push(FieldError {
            path: format!("{field}.name"),
            reason: format!("Secret {name:?} does not exist in the cluster's namespace"),
        });
        return Files {
            cert: None,
            key: None,
            ca: None,
        };
    };
    let mut file = |path: &str| -> Option<String> {
        let key = source_key(&secret.projection, path);
        let error = |reason: String| FieldError {
            path: items_field(field, secret),
            reason,
        };
        let Some(bytes) = data.get(&key) else {
            findings.errors.push(error(format!(
                "Secret {name:?} has no key {key:?} (projected as {path})"
            )));
            return None;
        };
        let Ok(text) = String::from_utf8(bytes.clone()) else {
            findings.errors.push(error(format!(
                "Secret {name:?} key {key:?} ({path}) is not PEM text"
            )));
            return None;
        };
        let usable = if path == TLS_PRIVATE_KEY_KEY {
            is_pem_private_key(&text)
                .then_some(())
                .ok_or_else(|| "not a PEM private key".to_owned())
        } else {
            tusk_pki::common_name(&text)
                .map(|_| ())
                .map_err(|e| e.to_string())
        };
        match usable {
            Ok(()) => Some(text),
            Err(reason) => {
                findings.errors.push(error(format!(
                    "Secret {name:?} key {key:?} ({path}): {reason}"
                )));
                None
            }
        }
    };
    Files {
        cert: file(TLS_CERT_KEY),
        key: file(TLS_PRIVATE_KEY_KEY),
        ca: file(TLS_CA_KEY),
    }
}

/// The Secret key projected to `path`: the `items` entry for it, or the same name without
/// `items` (validation made sure `items`, when given, maps all three files).
fn source_key(projection: &SecretProjection, path: &str) -> String {
    match &projection.items {
        Some(items) => items
            .iter()
            .find(|i| i.path == path)
            .map_or_else(|| path.to_owned(), |i| i.key.clone()),
        None => path.to_owned(),
    }
}

/// Errors about a Secret's content point at its `items` when the spec maps keys (that is
/// where the user fixes a wrong key), else at the Secret's `name`.
fn items_field(field: &str, secret: &CustomSecret) -> String {
    if secret.projection.items.is_some() {
        format!("{field}.items")
    } else {
        format!("{field}.name")
    }
}

fn is_pem_private_key(text: &str) -> bool {
    text.lines().any(|l| {
        let l = l.trim();
        l.starts_with("-----BEGIN ") && l.ends_with("PRIVATE KEY-----")
    })
}

/// PEM text compared without line-ending or surrounding-blank differences.
fn normalized(pem: &str) -> String {
    pem.replace("\r\n", "\n").trim().to_owned()
}

/// Every form of the primary Service's name a client may use.
fn primary_names(cluster: &ValidatedCluster) -> Vec<String> {
    let service = cluster.names.primary_service();
    let namespace = &cluster.namespace;
    let svc = cluster.names.service_host(&service, namespace);
    vec![
        format!("{service}.{namespace}"),
        format!("{svc}.{CLUSTER_DOMAIN}"),
        svc,
        service,
    ]
}

/// RFC 6125 matching as libpq does it: exact (case-insensitive), or a `*` standing for the
/// whole left-most label.
fn dns_matches(san: &str, name: &str) -> bool {
    let (san, name) = (san.to_ascii_lowercase(), name.to_ascii_lowercase());
    match san.strip_prefix("*.") {
        Some(parent) => name
            .split_once('.')
            .is_some_and(|(label, rest)| !label.is_empty() && rest == parent),
        None => san == name,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_stand_for_one_label_only() {
        assert!(dns_matches("*.db.svc", "hippo-primary.db.svc"));
        assert!(dns_matches("Hippo-Primary", "hippo-primary"));
        assert!(!dns_matches("*.svc", "hippo-primary.db.svc"));
        assert!(!dns_matches("*.db.svc", "db.svc"));
    }

    #[test]
    fn mapped_keys_are_followed() {
        let projection: SecretProjection = serde_json::from_value(serde_json::json!({
            "name": "hippo.tls",
            "items": [{"key": "hippo-tls.crt", "path": "tls.crt"}]
        }))
        .unwrap();
        assert_eq!(source_key(&projection, "tls.crt"), "hippo-tls.crt");
        let plain = SecretProjection {
            name: "x".into(),
            ..Default::default()
        };
        assert_eq!(source_key(&plain, "ca.crt"), "ca.crt");
    }

    #[test]
    fn private_key_blocks_are_recognised() {
        assert!(is_pem_private_key("-----BEGIN RSA PRIVATE KEY-----\nAA\n"));
        assert!(is_pem_private_key("-----BEGIN PRIVATE KEY-----\nAA\n"));
        assert!(!is_pem_private_key("-----BEGIN CERTIFICATE-----\nAA\n"));
    }
}
