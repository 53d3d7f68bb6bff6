//! The keys of the `<c>-pguser-<user>` Secret for a local cluster (`tusk local secret USER`):
//! `user password verifier dbname host port uri jdbc-uri`, the same keys an application reads
//! in Kubernetes. There is no primary Service locally, so `host` lists every member (libpq's
//! multi-host form, comma-separated), and both URIs name every member and ask for the
//! read-write one (`target_session_attrs=read-write`, PgJDBC's `targetServerType=primary`):
//! clients follow the primary across failovers. TLS is verified against the local CA
//! (`sslmode=verify-full`). With PgBouncer in the spec, also `pgbouncer-host pgbouncer-port
//! pgbouncer-uri pgbouncer-jdbc-uri`: one address (the local PgBouncer follows the primary
//! itself), verified TLS, and PgJDBC's `prepareThreshold=0` (server-side prepared statements
//! do not survive transaction pooling). URIs come from `tusk_config::uri`, shared with the
//! operator. Pure: the caller supplies members, CA path and password.

use std::collections::BTreeMap;
use std::path::Path;

use tusk_api::model::UserSpec;
use tusk_config::uri::{jdbc_uri, libpq_uri, Login};

/// A member's PostgreSQL address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
}

/// The Secret's keys and values, in the order `tusk local secret` prints them.
#[derive(Clone, PartialEq, Eq)]
pub struct UserSecret {
    pub user: String,
    pub password: String,
    /// The SCRAM verifier; pass the stored one (`sql::stored_password`) to match the server.
    pub verifier: String,
    /// The user's first database, when it has one (as in Kubernetes).
    pub dbname: Option<String>,
    pub host: String,
    pub port: String,
    pub uri: String,
    pub jdbc_uri: String,
    /// The `pgbouncer-*` keys, when the cluster has PgBouncer.
    pub pgbouncer: Option<PoolerKeys>,
}

/// `pgbouncer-host pgbouncer-port pgbouncer-uri pgbouncer-jdbc-uri`.
#[derive(Clone, PartialEq, Eq)]
pub struct PoolerKeys {
    pub host: String,
    pub port: String,
    pub uri: String,
    pub jdbc_uri: String,
}

/// Never prints the password or verifier.
impl std::fmt::Debug for UserSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserSecret")
            .field("user", &self.user)
            .field("dbname", &self.dbname)
            .field("host", &self.host)
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

/// The Secret of `user` for a cluster whose members are `members` (every one, primary or
/// not, in a stable order), verified with the CA in `ca_file`.
///
/// # Panics
/// When `members` is empty: a cluster without members has nothing to connect to, and an
/// URI without hosts would silently mean "localhost".
pub fn user_secret(
    user: &UserSpec,
    password: &str,
    verifier: &str,
    members: &[Endpoint],
    ca_file: &Path,
) -> UserSecret {
    assert!(
        !members.is_empty(),
        "a user Secret needs at least one member"
    );
    let dbname = user.databases.first().cloned();
    let hosts = members
        .iter()
        .map(|m| format!("{}:{}", m.host, m.port))
        .collect::<Vec<_>>()
        .join(",");
    let ca = ca_file.to_string_lossy();
    let name = user.name.as_str();
    let login = Login {
        user: name,
        password,
        dbname: dbname.as_deref(),
        hosts: &hosts,
    };
    let uri = libpq_uri(
        &login,
        &[
            ("target_session_attrs", "read-write"),
            ("sslmode", "verify-full"),
            ("sslrootcert", &ca),
        ],
    );
    let jdbc = jdbc_uri(
        &login,
        &[
            ("targetServerType", "primary"),
            ("sslmode", "verify-full"),
            ("sslrootcert", &ca),
        ],
    );
    // `port` pairs with `host`: one value when all members share it (the usual case, each
    // member on its own loopback address), else a list matching `host` item by item.
    let mut ports: Vec<String> = members.iter().map(|m| m.port.to_string()).collect();
    ports.dedup();
    let port = if ports.len() == 1 {
        ports.remove(0)
    } else {
        members
            .iter()
            .map(|m| m.port.to_string())
            .collect::<Vec<_>>()
            .join(",")
    };
    UserSecret {
        user: name.to_owned(),
        password: password.to_owned(),
        verifier: verifier.to_owned(),
        dbname,
        host: members
            .iter()
            .map(|m| m.host.as_str())
            .collect::<Vec<_>>()
            .join(","),
        port,
        uri,
        jdbc_uri: jdbc,
        pgbouncer: None,
    }
}

impl UserSecret {
    /// Adds the `pgbouncer-*` keys for PgBouncer at `pooler`, verified with the CA in
    /// `ca_file`.
    pub fn with_pgbouncer(mut self, pooler: &Endpoint, ca_file: &Path) -> UserSecret {
        let address = format!("{}:{}", pooler.host, pooler.port);
        let login = Login {
            user: &self.user,
            password: &self.password,
            dbname: self.dbname.as_deref(),
            hosts: &address,
        };
        let ca = ca_file.to_string_lossy();
        let tls = [("sslmode", "verify-full"), ("sslrootcert", &*ca)];
        let mut jdbc_params = tls.to_vec();
        jdbc_params.push(("prepareThreshold", "0"));
        let keys = PoolerKeys {
            host: pooler.host.clone(),
            port: pooler.port.to_string(),
            uri: libpq_uri(&login, &tls),
            jdbc_uri: jdbc_uri(&login, &jdbc_params),
        };
        self.pgbouncer = Some(keys);
        self
    }

    /// Key → value, with the Kubernetes Secret's key names; `dbname` only when set.
    pub fn to_map(&self) -> BTreeMap<&'static str, String> {
        let mut map = BTreeMap::from([
            ("user", self.user.clone()),
            ("password", self.password.clone()),
            ("verifier", self.verifier.clone()),
            ("host", self.host.clone()),
            ("port", self.port.clone()),
            ("uri", self.uri.clone()),
            ("jdbc-uri", self.jdbc_uri.clone()),
        ]);
        if let Some(db) = &self.dbname {
            map.insert("dbname", db.clone());
        }
        if let Some(pooler) = &self.pgbouncer {
            map.insert("pgbouncer-host", pooler.host.clone());
            map.insert("pgbouncer-port", pooler.port.clone());
            map.insert("pgbouncer-uri", pooler.uri.clone());
            map.insert("pgbouncer-jdbc-uri", pooler.jdbc_uri.clone());
        }
        map
    }

    /// `tusk local secret USER -o json`: one object, the Secret's keys as members.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(&self.to_map()).expect("a map of strings serializes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user() -> UserSpec {
        let manifest = "apiVersion: tusk.rs/v1beta1\nkind: PostgresCluster\nmetadata: {name: c}\n\
            spec:\n  postgresVersion: 15\n  instances:\n    - name: i\n      \
            dataVolumeClaimSpec: {accessModes: [ReadWriteOnce], \
            resources: {requests: {storage: 1Gi}}}\n  users: [{name: app, databases: [zoo]}]\n";
        tusk_api::validate_yaml(manifest).unwrap().users.remove(0)
    }

    #[test]
    fn pooler_keys_name_one_address_with_verified_tls_and_no_prepared_statements() {
        let member = Endpoint {
            host: "127.9.9.2".into(),
            port: 5432,
        };
        let pooler = Endpoint {
            host: "127.9.9.250".into(),
            port: 6432,
        };
        let ca = Path::new("/s/ca.crt");
        let without = user_secret(&user(), "pw", "v", &[member], ca);
        assert!(!without.to_map().contains_key("pgbouncer-uri"));
        let with = without.with_pgbouncer(&pooler, ca).to_map();
        assert_eq!(with["pgbouncer-host"], "127.9.9.250");
        assert_eq!(with["pgbouncer-port"], "6432");
        assert_eq!(
            with["pgbouncer-uri"],
            "postgresql://app:pw@127.9.9.250:6432/zoo?sslmode=verify-full&sslrootcert=%2Fs%2Fca.crt"
        );
        assert_eq!(
            with["pgbouncer-jdbc-uri"],
            "jdbc:postgresql://127.9.9.250:6432/zoo?sslmode=verify-full\
             &sslrootcert=%2Fs%2Fca.crt&prepareThreshold=0&password=pw&user=app"
        );
    }
}
