//! Secret material a build needs but cannot invent purely: user passwords and TLS
//! certificates. Existing values (read by dereference) are kept, so Secrets are stable across
//! reconciles; missing ones are generated from a CSPRNG. `tusk render` uses
//! [`Material::placeholders`], which never holds a real secret.

use std::collections::BTreeMap;

use rand::Rng;
use tusk_api::types::PasswordType;
use tusk_api::ValidatedCluster;

/// Marks every value `tusk render` prints in place of a secret.
pub const PLACEHOLDER: &str = "<generated-by-tusk-operator>";

/// Length of generated passwords.
pub const PASSWORD_LENGTH: usize = 24;

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
}

/// Everything secret a build of one cluster needs.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Material {
    /// Password per user name.
    pub passwords: BTreeMap<String, String>,
    /// `None` when `spec.customTLSSecret` is used.
    pub tls: Option<TlsMaterial>,
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
                .map(|u| (u.name.to_string(), PLACEHOLDER.to_owned()))
                .collect(),
            tls: cluster.tls.custom_server.is_none().then(|| TlsMaterial {
                ca_bundle_pem: PLACEHOLDER.to_owned(),
                server: pair(),
                replication: pair(),
            }),
        }
    }
}

/// Keeps existing passwords (`existing`: user -> password read from its Secret) and generates
/// the missing ones.
pub fn user_passwords(
    cluster: &ValidatedCluster,
    existing: &BTreeMap<String, String>,
    rng: &mut impl rand::CryptoRng,
) -> BTreeMap<String, String> {
    cluster
        .users
        .iter()
        .map(|u| {
            let name = u.name.to_string();
            let password = existing
                .get(&name)
                .filter(|p| !p.is_empty())
                .cloned()
                .unwrap_or_else(|| generate_password(u.password_type, rng));
            (name, password)
        })
        .collect()
}

/// A password of [`PASSWORD_LENGTH`] characters from a CSPRNG. `ASCII` uses every printable
/// character except those that need quoting in a URI or a shell (`'"\` and space).
pub fn generate_password(kind: PasswordType, rng: &mut impl rand::CryptoRng) -> String {
    const ALPHANUMERIC: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let ascii: Vec<u8> = (b'!'..=b'~')
        .filter(|c| !matches!(c, b'\'' | b'"' | b'\\' | b'`'))
        .collect();
    let alphabet: &[u8] = match kind {
        PasswordType::AlphaNumeric => ALPHANUMERIC,
        PasswordType::Ascii => &ascii,
    };
    (0..PASSWORD_LENGTH)
        .map(|_| alphabet[rng.random_range(0..alphabet.len())] as char)
        .collect()
}

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
            tls: None,
        };
        assert!(!format!("{m:?}").contains("s3cret"));
    }
}
