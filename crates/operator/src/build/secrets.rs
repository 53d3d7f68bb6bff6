//! Secrets: one `<c>-pguser-<user>` per user with its connection details, and the
//! Tusk-issued `<c>-cluster-cert` / `<c>-replication-cert` (absent with custom TLS).
//!
//! Values are written to `data` (not `stringData`): `stringData` is write-only, so an
//! applied object would never read back as what was applied. Secret values come only from
//! [`Material`]; this module invents none. Pure.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::ByteString;
use tusk_api::model::UserSpec;
use tusk_api::naming::{self, cluster_labels};
use tusk_api::ValidatedCluster;
use tusk_config::uri::{jdbc_uri, libpq_uri, Login};

use super::meta::object_meta;
use crate::material::{CertPair, Material, TlsMaterial, TRUST_CHANGED_ANNOTATION};
use time::format_description::well_known::Rfc3339;

/// Keys of a certificate Secret, as PostgreSQL's `ssl_*_file` settings and the pod's
/// projected volume expect them.
pub const TLS_CERT_KEY: &str = "tls.crt";
pub const TLS_PRIVATE_KEY_KEY: &str = "tls.key";
pub const TLS_CA_KEY: &str = "ca.crt";

/// Every user's Secret, in `cluster.users` order (names are unique).
///
/// # Panics
/// When `material` has no password or verifier for a user: `Material` is made for the same
/// cluster by `material::user_passwords` or `Material::placeholders`, which cover every user.
/// Building a Secret without the password would overwrite the real one through server-side
/// apply, and leaving it out would get it deleted as an orphan, so a loud failure is the safe
/// one.
pub fn user_secrets(cluster: &ValidatedCluster, material: &Material) -> Vec<Secret> {
    cluster
        .users
        .iter()
        .map(|user| {
            let password = material
                .passwords
                .get(user.name.as_str())
                .unwrap_or_else(|| panic!("material has no password for user {}", user.name));
            let verifier = material
                .verifiers
                .get(user.name.as_str())
                .unwrap_or_else(|| panic!("material has no verifier for user {}", user.name));
            user_secret(cluster, user, password, verifier)
        })
        .collect()
}

/// `<c>-pguser-<user>`: `user password verifier host port uri jdbc-uri` (`verifier` is the
/// SCRAM-SHA-256 verifier `pg_authid` holds for the password), plus `dbname` (and the
/// database as the URIs' path) when the user has a database: its first one. With PgBouncer,
/// also `pgbouncer-host pgbouncer-port pgbouncer-uri pgbouncer-jdbc-uri`; the JDBC URI turns
/// off server-side prepared statements (`prepareThreshold=0`), which a transaction-pooling
/// PgBouncer cannot keep on one server connection.
pub fn user_secret(
    cluster: &ValidatedCluster,
    user: &UserSpec,
    password: &str,
    verifier: &str,
) -> Secret {
    let host = cluster
        .names
        .service_host(&cluster.names.primary_service(), &cluster.namespace);
    let address = format!("{host}:{}", cluster.port);
    let dbname = user.databases.first();
    let login = Login {
        user: user.name.as_str(),
        password,
        dbname: dbname.map(String::as_str),
        hosts: &address,
    };
    let mut data = BTreeMap::from([
        ("user", user.name.to_string()),
        ("password", password.to_owned()),
        ("verifier", verifier.to_owned()),
        ("host", host),
        ("port", cluster.port.to_string()),
        ("uri", libpq_uri(&login, &[])),
        ("jdbc-uri", jdbc_uri(&login, &[])),
    ]);
    if let Some(db) = dbname {
        data.insert("dbname", db.clone());
    }
    if let Some(pgbouncer) = &cluster.pgbouncer {
        let host = tusk_config::pgbouncer::kubernetes_host(cluster);
        let address = format!("{host}:{}", pgbouncer.port);
        let login = Login {
            hosts: &address,
            ..login
        };
        data.insert("pgbouncer-host", host);
        data.insert("pgbouncer-port", pgbouncer.port.to_string());
        data.insert("pgbouncer-uri", libpq_uri(&login, &[]));
        data.insert(
            "pgbouncer-jdbc-uri",
            jdbc_uri(&login, &[("prepareThreshold", "0")]),
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
    let mut metadata = object_meta(
        cluster,
        name,
        &cluster.metadata,
        cluster_labels(cluster.name()),
    );
    if let Some(at) = tls.trust_changed_at.and_then(|at| at.format(&Rfc3339).ok()) {
        metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert(TRUST_CHANGED_ANNOTATION.to_owned(), at);
    }
    Secret {
        metadata,
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
