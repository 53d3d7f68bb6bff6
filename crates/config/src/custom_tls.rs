//! Checks of custom TLS certificates (`spec.customTLSSecret`,
//! `spec.customReplicationTLSSecret`) for what would certainly break a cluster, shared by
//! the operator (Secrets read from the API server) and `tusk local` (Secret directories
//! beside the manifest). Tusk never writes these certificates.
//!
//! Rejected (replication or TLS would fail for sure): a Secret or one of its three files
//! missing, a `tls.crt`/`ca.crt` that is not a PEM certificate, a `tls.key` that is not a PEM
//! private key, different `ca.crt` in the two Secrets (each side verifies the other with its
//! own `ca.crt`), a replication certificate whose CN is not the replication user (pg_hba maps
//! the certificate CN to the role), a `tls.crt` whose signature does not verify with the
//! Secret's own `ca.crt` (peers verify it with that CA and would refuse it), a `tls.crt`
//! that has expired or is not valid yet. Warned about: a server certificate that does not
//! name every `<c>-primary` form (only `verify-full` clients of those names are hurt), a key
//! Tusk cannot confirm belongs to its certificate (Tusk cannot parse every key format a user
//! may bring), a `tls.crt` with less than a third of its lifetime left (Tusk never renews
//! custom certificates: the user must).
//!
//! Pure: the caller reads the Secrets. Secret values never reach a message: errors name
//! Secrets, keys and certificate names only.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::SecretProjection;
use time::OffsetDateTime;
use tusk_api::naming::{CLUSTER_DOMAIN, REPLICATION_USER};
use tusk_api::{FieldError, ValidatedCluster};

use crate::paths::{TLS_CA_FILE, TLS_CERT_FILE, TLS_KEY_FILE};

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

/// The three PEM files of one custom Secret, as far as they could be read.
struct Files {
    cert: Option<String>,
    key: Option<String>,
    ca: Option<String>,
}

/// The server Secret's `ca.crt` (PEM), the CA the operator verifies the primary against.
pub fn server_ca_pem(secrets: &CustomTlsSecrets) -> Option<String> {
    let key = source_key(&secrets.server.projection, TLS_CA_FILE);
    let bytes = secrets.server.data.as_ref()?.get(&key)?;
    String::from_utf8(bytes.clone()).ok()
}

/// Checks the custom Secrets against what the cluster needs from them, at `now`.
pub fn check_custom_tls(
    cluster: &ValidatedCluster,
    secrets: &CustomTlsSecrets,
    now: OffsetDateTime,
) -> CustomTlsFindings {
    let mut findings = CustomTlsFindings::default();
    let server = read_files(&mut findings, SERVER_FIELD, &secrets.server);
    let replication = read_files(&mut findings, REPLICATION_FIELD, &secrets.replication);
    for (field, files, secret) in [
        (SERVER_FIELD, &server, &secrets.server),
        (REPLICATION_FIELD, &replication, &secrets.replication),
    ] {
        if let (Some(cert), Some(ca)) = (&files.cert, &files.ca) {
            check_leaf(
                &mut findings,
                &items_field(field, secret),
                field,
                cert,
                ca,
                now,
            );
        }
    }

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

/// The leaf's signature against `ca_pem` and its validity window at `now`.
fn check_leaf(
    findings: &mut CustomTlsFindings,
    path: &str,
    field: &str,
    cert_pem: &str,
    ca_pem: &str,
    now: OffsetDateTime,
) {
    let error = |reason: String| FieldError {
        path: path.to_owned(),
        reason,
    };
    let Some(cert) = pem_der(cert_pem) else {
        return; // Already reported by read_files.
    };
    let Ok((_, leaf)) = x509_parser::parse_x509_certificate(&cert) else {
        return;
    };
    // Any certificate of a `ca.crt` bundle may be the issuer.
    let signed = pem_ders(ca_pem).iter().any(|der| {
        x509_parser::parse_x509_certificate(der).is_ok_and(|(_, ca)| {
            leaf.issuer() == ca.subject() && leaf.verify_signature(Some(ca.public_key())).is_ok()
        })
    });
    if !signed {
        findings.errors.push(error(
            "tls.crt is not signed by the Secret's ca.crt: peers verify it with that CA and \
             would refuse it"
                .into(),
        ));
    }
    let not_before = leaf.validity().not_before.to_datetime();
    let not_after = leaf.validity().not_after.to_datetime();
    if now > not_after {
        findings.errors.push(error(format!(
            "tls.crt expired at {not_after}; Tusk never renews custom certificates: replace it"
        )));
    } else if now < not_before {
        findings
            .errors
            .push(error(format!("tls.crt is not valid before {not_before}")));
    } else if (not_after - now) * 3 < (not_after - not_before) {
        findings.warnings.push(format!(
            "{field}: tls.crt expires at {not_after}, less than a third of its lifetime left; \
             Tusk never renews custom certificates: replace it before then"
        ));
    }
}

/// DER of the first certificate block of `pem`.
fn pem_der(pem: &str) -> Option<Vec<u8>> {
    pem_ders(pem).into_iter().next()
}

/// DER of every certificate block of `pem`.
fn pem_ders(pem: &str) -> Vec<Vec<u8>> {
    x509_parser::pem::Pem::iter_from_buffer(pem.as_bytes())
        .filter_map(Result::ok)
        .filter(|block| block.label == "CERTIFICATE")
        .map(|block| block.contents)
        .collect()
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
        let usable = if path == TLS_KEY_FILE {
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
        cert: file(TLS_CERT_FILE),
        key: file(TLS_KEY_FILE),
        ca: file(TLS_CA_FILE),
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
