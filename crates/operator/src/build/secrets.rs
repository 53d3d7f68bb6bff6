//! Secrets: one `<c>-pguser-<user>` per user with its connection details, and the
//! Tusk-issued `<c>-cluster-cert` / `<c>-replication-cert` (absent with custom TLS).
//!
//! Values are written to `data` (not `stringData`): `stringData` is write-only, so an
//! applied object would never read back as what was applied. Secret values come only from
//! [`Material`]; this module invents none. Pure.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::ByteString;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use tusk_api::model::UserSpec;
use tusk_api::naming::{self, cluster_labels};
use tusk_api::ValidatedCluster;

use super::meta::object_meta;
use crate::material::{CertPair, Material, TlsMaterial};

/// Keys of a certificate Secret, as PostgreSQL's `ssl_*_file` settings and the pod's
/// projected volume expect them.
pub const TLS_CERT_KEY: &str = "tls.crt";
pub const TLS_PRIVATE_KEY_KEY: &str = "tls.key";
pub const TLS_CA_KEY: &str = "ca.crt";

/// Everything but RFC 3986 "unreserved" characters is percent-encoded, which is safe in
/// userinfo, a path segment and a query value alike.
const URI_COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

fn encode(component: &str) -> String {
    utf8_percent_encode(component, URI_COMPONENT).to_string()
}

/// Every user's Secret, in `cluster.users` order (names are unique).
///
/// # Panics
/// When `material` has no password for a user: `Material` is made for the same cluster by
/// `material::user_passwords` or `Material::placeholders`, which cover every user. Building a
/// Secret without the password would overwrite the real one through server-side apply, and
/// leaving it out would get it deleted as an orphan, so a loud failure is the safe one.
pub fn user_secrets(cluster: &ValidatedCluster, material: &Material) -> Vec<Secret> {
    cluster
        .users
        .iter()
        .map(|user| {
            let password = material
                .passwords
                .get(user.name.as_str())
                .unwrap_or_else(|| panic!("material has no password for user {}", user.name));
            user_secret(cluster, user, password)
        })
        .collect()
}

/// `<c>-pguser-<user>`: `user password host port uri jdbc-uri`, plus `dbname` (and the
/// database as the URIs' path) when the user has a database: its first one. With PgBouncer,
/// also `pgbouncer-host pgbouncer-port pgbouncer-uri pgbouncer-jdbc-uri`; the JDBC URI turns
/// off server-side prepared statements (`prepareThreshold=0`), which a transaction-pooling
/// PgBouncer cannot keep on one server connection.
pub fn user_secret(cluster: &ValidatedCluster, user: &UserSpec, password: &str) -> Secret {
    let host = cluster
        .names
        .service_host(&cluster.names.primary_service(), &cluster.namespace);
    let port = cluster.port;
    let dbname = user.databases.first();
    let db_path = dbname.map(|d| encode(d)).unwrap_or_default();
    let uri = format!(
        "postgresql://{}:{}@{host}:{port}{}",
        encode(user.name.as_str()),
        encode(password),
        dbname.map(|_| format!("/{db_path}")).unwrap_or_default(),
    );
    // PgJDBC wants the path even without a database (the driver then uses the user's name).
    let jdbc_uri = format!(
        "jdbc:postgresql://{host}:{port}/{db_path}?password={}&user={}",
        encode(password),
        encode(user.name.as_str()),
    );
    let mut data = BTreeMap::from([
        ("user", user.name.to_string()),
        ("password", password.to_owned()),
        ("host", host.clone()),
        ("port", port.to_string()),
        ("uri", uri),
        ("jdbc-uri", jdbc_uri),
    ]);
    if let Some(db) = dbname {
        data.insert("dbname", db.clone());
    }
    if let Some(pgbouncer) = &cluster.pgbouncer {
        let host = tusk_config::pgbouncer::kubernetes_host(cluster);
        let port = pgbouncer.port;
        data.insert("pgbouncer-host", host.clone());
        data.insert("pgbouncer-port", port.to_string());
        data.insert(
            "pgbouncer-uri",
            format!(
                "postgresql://{}:{}@{host}:{port}{}",
                encode(user.name.as_str()),
                encode(password),
                dbname.map(|_| format!("/{db_path}")).unwrap_or_default(),
            ),
        );
        data.insert(
            "pgbouncer-jdbc-uri",
            format!(
                "jdbc:postgresql://{host}:{port}/{db_path}?password={}&prepareThreshold=0&user={}",
                encode(password),
                encode(user.name.as_str()),
            ),
        );
    }
    let mut tusk_labels = cluster_labels(cluster.name());
    tusk_labels.insert(naming::LABEL_USER.to_owned(), user.name.to_string());
    Secret {
        metadata: object_meta(
            cluster,
            cluster.names.user_secret(user.name.as_str()),
            &cluster.metadata,
            tusk_labels,
        ),
        data: Some(bytes(data)),
        ..Secret::default()
    }
}

/// `<c>-cluster-cert` and `<c>-replication-cert` when Tusk issues the certificates.
pub fn certificate_secrets(cluster: &ValidatedCluster, material: &Material) -> Vec<Secret> {
    let Some(tls) = &material.tls else {
        return Vec::new();
    };
    vec![
        cert_secret(
            cluster,
            cluster.names.cluster_cert_secret(),
            tls,
            &tls.server,
        ),
        cert_secret(
            cluster,
            cluster.names.replication_cert_secret(),
            tls,
            &tls.replication,
        ),
    ]
}

fn cert_secret(
    cluster: &ValidatedCluster,
    name: String,
    tls: &TlsMaterial,
    pair: &CertPair,
) -> Secret {
    Secret {
        metadata: object_meta(
            cluster,
            name,
            &cluster.metadata,
            cluster_labels(cluster.name()),
        ),
        data: Some(bytes(BTreeMap::from([
            (TLS_CERT_KEY, pair.cert_pem.clone()),
            (TLS_PRIVATE_KEY_KEY, pair.key_pem.clone()),
            (TLS_CA_KEY, tls.ca_bundle_pem.clone()),
        ]))),
        ..Secret::default()
    }
}

fn bytes(map: BTreeMap<&str, String>) -> BTreeMap<String, ByteString> {
    map.into_iter()
        .map(|(k, v)| (k.to_owned(), ByteString(v.into_bytes())))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_unreserved_characters_stay_literal() {
        assert_eq!(encode("a-Z_0.~"), "a-Z_0.~");
        assert_eq!(encode("p@ss:w/rd?&=%"), "p%40ss%3Aw%2Frd%3F%26%3D%25");
        assert_eq!(encode("é"), "%C3%A9");
    }
}
