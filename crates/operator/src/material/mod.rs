//! Secret material a build needs but cannot invent purely: user passwords and TLS
//! certificates. Existing values (read by dereference) are kept, so Secrets are stable across
//! reconciles; missing ones are generated from a CSPRNG. `tusk render` uses
//! [`Material::placeholders`], which never holds a real secret.
//!
//! TLS: [`tls_material`] keeps the certificates the controller read from the
//! `<c>-cluster-cert` / `<c>-replication-cert` Secrets while they are still good for the
//! current CA and names, and issues new ones from the operator root CA otherwise. After a new
//! root (see `controller::root_ca`) the `ca.crt` it publishes is a rollover bundle, and the
//! move takes three settled steps (trust the new root, reissue the leaves, drop the old
//! root), so no pod meets a certificate its not yet refreshed files do not trust. With
//! `customTLSSecret`, [`custom_client_ca_bundle`] is the client-CA file (user CA + operator
//! root) and says what that lets in. Pure: the caller passes the CA, what exists and the
//! time; nothing here reads or writes the API.

use std::collections::BTreeMap;

use time::OffsetDateTime;
use tusk_api::types::PasswordType;
use tusk_api::ValidatedCluster;

/// Marks every value `tusk render` prints in place of a secret.
pub const PLACEHOLDER: &str = "<generated-by-tusk-operator>";

/// A certificate and its private key, PEM.
#[derive(Clone, PartialEq, Eq)]
pub struct CertPair {
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for CertPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertPair")
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

/// Tusk-issued certificates of one cluster (absent when the spec brings its own).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsMaterial {
    /// CA certificate(s) clients and servers trust (PEM bundle).
    pub ca_bundle_pem: String,
    pub server: CertPair,
    pub replication: CertPair,
    /// When the trust state last changed ([`TRUST_CHANGED_ANNOTATION`]); `None` in
    /// [`Material::placeholders`] and for Secrets written before the annotation existed.
    pub trust_changed_at: Option<OffsetDateTime>,
    /// A root rollover has steps left: the caller should reconcile again soon.
    pub rollover_pending: bool,
}

/// Everything secret a build of one cluster needs.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Material {
    /// Password per user name.
    pub passwords: BTreeMap<String, String>,
    /// SCRAM-SHA-256 verifier of each `spec.users` password: the Secret's `verifier` key and
    /// exactly what the SQL step stores in `pg_authid` (see [`user_verifiers`]).
    pub verifiers: BTreeMap<String, String>,
    /// `None` when `spec.customTLSSecret` is used.
    pub tls: Option<TlsMaterial>,
    /// Only with `spec.customTLSSecret`: the client-CA bundle of `<c>-client-ca`
    /// ([`custom_client_ca_bundle`]). Set by the controller once it has read the user's Secret.
    pub custom_client_ca_pem: Option<String>,
}

impl std::fmt::Debug for Material {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Material")
            .field("users", &self.passwords.keys().collect::<Vec<_>>())
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl Material {
    /// Placeholder material for `tusk render`: no real password or key.
    pub fn placeholders(cluster: &ValidatedCluster) -> Self {
        let pair = || CertPair {
            cert_pem: PLACEHOLDER.to_owned(),
            key_pem: PLACEHOLDER.to_owned(),
        };
        Material {
            passwords: cluster
                .users
                .iter()
                .map(|u| u.name.to_string())
                .chain(service_roles(cluster).into_iter().map(str::to_owned))
                .map(|name| (name, PLACEHOLDER.to_owned()))
                .collect(),
            verifiers: cluster
                .users
                .iter()
                .map(|u| (u.name.to_string(), PLACEHOLDER.to_owned()))
                .collect(),
            tls: cluster.tls.custom_server.is_none().then(|| TlsMaterial {
                ca_bundle_pem: PLACEHOLDER.to_owned(),
                server: pair(),
                replication: pair(),
                trust_changed_at: None,
                rollover_pending: false,
            }),
            custom_client_ca_pem: cluster
                .tls
                .custom_server
                .is_some()
                .then(|| PLACEHOLDER.to_owned()),
        }
    }
}

/// Keeps existing passwords (`existing`: role -> password read from its Secret) and generates
/// the missing ones, for every user and every [`service_roles`] role.
pub fn user_passwords(
    cluster: &ValidatedCluster,
    existing: &BTreeMap<String, String>,
    rng: &mut impl rand::CryptoRng,
) -> BTreeMap<String, String> {
    let roles = cluster
        .users
        .iter()
        .map(|u| (u.name.to_string(), u.password_type))
        // Service roles' passwords end up in files (PgBouncer's auth_file) and URIs:
        // alphanumeric needs no quoting anywhere.
        .chain(
            service_roles(cluster)
                .into_iter()
                .map(|r| (r.to_owned(), PasswordType::AlphaNumeric)),
        );
    roles
        .map(|(name, kind)| {
            let password = existing
                .get(&name)
                .filter(|p| !p.is_empty())
                .cloned()
                .unwrap_or_else(|| generate_password(kind, rng));
            (name, password)
        })
        .collect()
}

/// A SCRAM-SHA-256 verifier for each `spec.users` password: the one in `existing` (read from
/// the user's Secret) while it still verifies the password, so the Secret and `pg_authid`
/// stay byte-for-byte stable across reconciles; a new one (fresh salt) when the password
/// changed or there was none. Costs one PBKDF2 (4096 rounds) per user and reconcile.
pub fn user_verifiers(
    cluster: &ValidatedCluster,
    passwords: &BTreeMap<String, String>,
    existing: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    use tusk_config::users::ScramVerifier;
    cluster
        .users
        .iter()
        .filter_map(|user| {
            let name = user.name.to_string();
            let password = passwords.get(&name)?;
            let kept = existing
                .get(&name)
                .filter(|v| ScramVerifier::parse(v).is_some_and(|v| v.verifies(password)))
                .cloned();
            let verifier = kept.unwrap_or_else(|| ScramVerifier::new(password).to_string());
            Some((name, verifier))
        })
        .collect()
}

/// Roles Tusk itself logs in as and the spec turns on: PgBouncer's auth role and the
/// exporter's. Their passwords live in `<c>-pgbouncer` / `<c>-monitoring` (key `password`).
pub fn service_roles(cluster: &ValidatedCluster) -> Vec<&'static str> {
    let mut roles = Vec::new();
    if cluster.pgbouncer.is_some() {
        roles.push(tusk_api::naming::PGBOUNCER_AUTH_USER);
    }
    if cluster.exporter.is_some() {
        roles.push(tusk_api::naming::EXPORTER_USER);
    }
    roles
}

pub use tusk_pki::password::PASSWORD_LENGTH;

/// A password for a user of the given `password.type`, from a CSPRNG.
pub fn generate_password(kind: PasswordType, rng: &mut impl rand::CryptoRng) -> String {
    let alphabet = match kind {
        PasswordType::AlphaNumeric => tusk_pki::password::Alphabet::AlphaNumeric,
        PasswordType::Ascii => tusk_pki::password::Alphabet::Ascii,
    };
    tusk_pki::password::generate_password(alphabet, rng)
}

pub use tusk_api::naming::CLUSTER_DOMAIN;

impl From<tusk_pki::Leaf> for CertPair {
    fn from(leaf: tusk_pki::Leaf) -> Self {
        CertPair {
            cert_pem: leaf.cert_pem,
            key_pem: leaf.key_pem,
        }
    }
}

mod tls;

pub use tls::{
    custom_client_ca_bundle, server_dns_names, tls_material, ExistingTls, TRUST_CHANGED_ANNOTATION,
    TRUST_SETTLE,
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_kept_or_generated() {
        let cluster = tusk_api::validate_yaml(
            "apiVersion: tusk.rs/v1beta1\nkind: PostgresCluster\nmetadata: {name: hippo}\nspec:\n  postgresVersion: 15\n  users: [{name: a}, {name: b, password: {type: ASCII}}]\n  instances: [{dataVolumeClaimSpec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}}]\n",
        )
        .unwrap();
        let existing = BTreeMap::from([("a".to_owned(), "kept-password".to_owned())]);
        let p = user_passwords(&cluster, &existing, &mut rand::rng());
        assert_eq!(p["a"], "kept-password");
        assert_eq!(p["b"].len(), PASSWORD_LENGTH);
        assert_ne!(
            p["b"],
            generate_password(PasswordType::Ascii, &mut rand::rng())
        );
        let alnum = generate_password(PasswordType::AlphaNumeric, &mut rand::rng());
        assert!(alnum.bytes().all(|c| c.is_ascii_alphanumeric()));
    }

    #[test]
    fn debug_never_shows_secrets() {
        let m = Material {
            passwords: BTreeMap::from([("u".to_owned(), "s3cret".to_owned())]),
            verifiers: BTreeMap::from([("u".to_owned(), "SCRAM-SHA-256$s3cret".to_owned())]),
            tls: None,
            custom_client_ca_pem: None,
        };
        assert!(!format!("{m:?}").contains("s3cret"));
    }

    #[test]
    fn verifiers_are_kept_while_they_verify_the_password() {
        let cluster = cluster("  users: [{name: rhino}]\n");
        let passwords = BTreeMap::from([("rhino".to_owned(), "first".to_owned())]);
        let first = user_verifiers(&cluster, &passwords, &BTreeMap::new());
        let parsed = tusk_config::users::ScramVerifier::parse(&first["rhino"]).unwrap();
        assert!(parsed.verifies("first"));
        assert_eq!(user_verifiers(&cluster, &passwords, &first), first);
        let changed = BTreeMap::from([("rhino".to_owned(), "second".to_owned())]);
        let renewed = user_verifiers(&cluster, &changed, &first);
        assert_ne!(renewed, first);
        assert!(tusk_config::users::ScramVerifier::parse(&renewed["rhino"])
            .unwrap()
            .verifies("second"));
    }

    /// A validated cluster `hippo` in namespace `db` with `extra_spec` lines under `spec`.
    pub(super) fn cluster(extra_spec: &str) -> ValidatedCluster {
        tusk_api::validate_yaml(&format!(
            "apiVersion: tusk.rs/v1beta1\nkind: PostgresCluster\nmetadata: {{name: hippo, namespace: db}}\nspec:\n  postgresVersion: 15\n  instances: [{{dataVolumeClaimSpec: {{accessModes: [ReadWriteOnce], resources: {{requests: {{storage: 1Gi}}}}}}}}]\n{extra_spec}"
        ))
        .unwrap()
    }
}
