//! The keys of the `<c>-pguser-<user>` Secret for a local cluster (`tusk local secret USER`):
//! `user password verifier dbname host port uri jdbc-uri`, the same keys an application reads
//! in Kubernetes. There is no primary Service locally, so `host` lists every member (libpq's
//! multi-host form, comma-separated), and both URIs name every member and ask for the
//! read-write one (`target_session_attrs=read-write`, PgJDBC's `targetServerType=primary`):
//! clients follow the primary across failovers. TLS is verified against the local CA
//! (`sslmode=verify-full`). Pure: the caller supplies members, CA path and password.

use std::collections::BTreeMap;
use std::path::Path;

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use tusk_api::model::UserSpec;

/// Everything but RFC 3986 "unreserved" characters is percent-encoded: safe in userinfo, a
/// path segment and a query value alike (`/` in a CA path included).
const URI_COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

fn encode(component: &str) -> String {
    utf8_percent_encode(component, URI_COMPONENT).to_string()
}

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
    let db_path = dbname.as_deref().map(encode).unwrap_or_default();
    let hosts = members
        .iter()
        .map(|m| format!("{}:{}", m.host, m.port))
        .collect::<Vec<_>>()
        .join(",");
    let ca = encode(&ca_file.to_string_lossy());
    let name = user.name.as_str();
    let uri = format!(
        "postgresql://{}:{}@{hosts}/{db_path}?target_session_attrs=read-write\
         &sslmode=verify-full&sslrootcert={ca}",
        encode(name),
        encode(password),
    );
    // PgJDBC needs the path even without a database (it then uses the user's name).
    let jdbc_uri = format!(
        "jdbc:postgresql://{hosts}/{db_path}?targetServerType=primary&sslmode=verify-full\
         &sslrootcert={ca}&password={}&user={}",
        encode(password),
        encode(name),
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
        jdbc_uri,
    }
}

impl UserSecret {
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

    #[test]
    fn only_unreserved_characters_stay_literal() {
        assert_eq!(encode("a-Z_0.~"), "a-Z_0.~");
        assert_eq!(encode("p@ss:w/rd?&=%"), "p%40ss%3Aw%2Frd%3F%26%3D%25");
    }
}
