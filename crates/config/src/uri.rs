//! Connection URIs of a user's Secret (`uri`, `jdbc-uri`, `pgbouncer-uri`,
//! `pgbouncer-jdbc-uri`), built in one place for the operator's `<c>-pguser-<user>` Secret and
//! `tusk local secret`: libpq's `postgresql://` form and PgJDBC's `jdbc:postgresql://` form.
//! Every user-supplied part is percent-encoded the same way in both. Pure; no I/O.

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

/// Everything but RFC 3986 "unreserved" characters is percent-encoded, which is safe in
/// userinfo, a path segment and a query value alike (`/` in a CA path included).
const URI_COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// `component` percent-encoded for any part of a URI.
pub fn encode(component: &str) -> String {
    utf8_percent_encode(component, URI_COMPONENT).to_string()
}

/// What a client needs to log in: the same for both URI forms.
#[derive(Clone, Copy)]
pub struct Login<'a> {
    pub user: &'a str,
    pub password: &'a str,
    /// The database, the URIs' path; none means the server's default (the user's name).
    pub dbname: Option<&'a str>,
    /// `host:port`, or several comma-separated (libpq's and PgJDBC's multi-host form).
    pub hosts: &'a str,
}

fn query(params: &[(&str, &str)]) -> String {
    params
        .iter()
        .map(|(key, value)| format!("{key}={}", encode(value)))
        .collect::<Vec<_>>()
        .join("&")
}

/// `postgresql://user:password@hosts[/dbname][?params]`. The path is written when there is a
/// database or a query (libpq needs the `/` before `?`).
pub fn libpq_uri(login: &Login, params: &[(&str, &str)]) -> String {
    let mut uri = format!(
        "postgresql://{}:{}@{}",
        encode(login.user),
        encode(login.password),
        login.hosts
    );
    if login.dbname.is_some() || !params.is_empty() {
        uri += "/";
        uri += &login.dbname.map(encode).unwrap_or_default();
    }
    if !params.is_empty() {
        uri += "?";
        uri += &query(params);
    }
    uri
}

/// `jdbc:postgresql://hosts/[dbname]?params&password=..&user=..`. PgJDBC needs the path even
/// without a database (it then uses the user's name); credentials go in the query because
/// PgJDBC does not read userinfo.
pub fn jdbc_uri(login: &Login, params: &[(&str, &str)]) -> String {
    let mut all: Vec<(&str, &str)> = params.to_vec();
    all.push(("password", login.password));
    all.push(("user", login.user));
    format!(
        "jdbc:postgresql://{}/{}?{}",
        login.hosts,
        login.dbname.map(encode).unwrap_or_default(),
        query(&all)
    )
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

    #[test]
    fn both_forms_encode_credentials_and_place_the_database() {
        let login = Login {
            user: "a@b",
            password: "p/w",
            dbname: Some("my db"),
            hosts: "h1:5432,h2:5432",
        };
        assert_eq!(
            libpq_uri(&login, &[("sslrootcert", "/c a.crt")]),
            "postgresql://a%40b:p%2Fw@h1:5432,h2:5432/my%20db?sslrootcert=%2Fc%20a.crt"
        );
        assert_eq!(
            jdbc_uri(&login, &[("prepareThreshold", "0")]),
            "jdbc:postgresql://h1:5432,h2:5432/my%20db?prepareThreshold=0&password=p%2Fw&user=a%40b"
        );
        let bare = Login {
            dbname: None,
            ..login
        };
        assert_eq!(
            libpq_uri(&bare, &[]),
            "postgresql://a%40b:p%2Fw@h1:5432,h2:5432"
        );
        assert_eq!(
            libpq_uri(&bare, &[("sslmode", "verify-full")]),
            "postgresql://a%40b:p%2Fw@h1:5432,h2:5432/?sslmode=verify-full"
        );
        assert!(jdbc_uri(&bare, &[]).starts_with("jdbc:postgresql://h1:5432,h2:5432/?password="));
    }
}
