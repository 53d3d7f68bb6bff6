//! PgBouncer's configuration from `cluster.pgbouncer`: `pgbouncer.ini`, the `auth_file` that
//! holds only the auth role's own password, and the SQL that lets that role look up other
//! roles' SCRAM verifiers. Shared by the operator (ConfigMap/Secret files) and `tusk local`
//! (files on disk), which differ only in [`Layout`]. Pure; no I/O.
//!
//! Decisions:
//! - Authentication is `auth_type = scram-sha-256` with an `auth_query` run as the dedicated
//!   role [`AUTH_USER`], so no list of users' passwords is ever copied into PgBouncer. The
//!   role has no privilege but EXECUTE on one SECURITY DEFINER function in a schema of its
//!   own ([`AUTH_SCHEMA`]), which returns the verifier of an ordinary login role and nothing
//!   for superusers, replication roles or the auth role itself. PgBouncer runs the query in
//!   the database the client asked for, so [`auth_function_sql`] must run in every database
//!   (and `template1`, so databases created later have it).
//! - TLS both ways: clients must use TLS (`client_tls_sslmode = require`, overridable, e.g. to
//!   `verify-full` for client certificates); PostgreSQL's certificate is verified against the
//!   cluster CA with its host name (`server_tls_sslmode = verify-full`).
//! - Settings, lowest precedence first: files the user mounts (`%include`), Tusk's defaults,
//!   `config.global`, then the wiring Tusk owns ([`MANAGED_SETTINGS`]: listen address, files,
//!   auth); validation rejects `config.global` keys that name wiring.
//! - Everything here can change on a running PgBouncer with `RELOAD` (SIGHUP), including the
//!   certificate files, except `listen_addr`/`listen_port`/`unix_socket_dir`, which come from
//!   the spec's port and only change together with a new pod (Kubernetes) or a restart
//!   (`tusk local`).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use tusk_api::model::PgBouncerSettings;
use tusk_api::naming::{PGBOUNCER_AUTH_USER, SUPERUSER};
use tusk_api::ValidatedCluster;

use crate::users::{quote_ident, quote_literal};

/// The role `auth_query` runs as.
pub const AUTH_USER: &str = PGBOUNCER_AUTH_USER;
/// Schema holding [`AUTH_FUNCTION`], owned by the superuser, usable only by [`AUTH_USER`].
pub const AUTH_SCHEMA: &str = "_tusk_pgbouncer";
/// The SECURITY DEFINER lookup function, schema-qualified.
pub const AUTH_FUNCTION: &str = "_tusk_pgbouncer.get_auth";
/// What PgBouncer runs to learn a connecting user's verifier.
pub const AUTH_QUERY: &str = "SELECT username, password FROM _tusk_pgbouncer.get_auth($1)";

/// Keys Tusk sets last and `config.global` may not name: they wire PgBouncer to its files,
/// its listen socket and its authentication.
pub const MANAGED_SETTINGS: &[&str] = tusk_api::validate::PGBOUNCER_MANAGED_SETTINGS;

/// Where PgBouncer listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listen {
    /// `listen_addr`: `*` in a pod, `127.0.0.N` in `tusk local`.
    pub host: String,
    pub port: u16,
    /// `unix_socket_dir`; `None` disables the socket (a pod's root filesystem is read-only
    /// and nothing in the pod needs it).
    pub unix_socket_dir: Option<String>,
}

/// Files PgBouncer reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Files {
    /// `auth_file`: the auth role's own password ([`auth_file`]).
    pub auth_file: String,
    /// Certificate and key PgBouncer presents to clients, and the CA it trusts client
    /// certificates from.
    pub client_tls_cert: String,
    pub client_tls_key: String,
    pub client_tls_ca: String,
    /// CA that signed PostgreSQL's server certificate.
    pub server_tls_ca: String,
    /// Files `%include`d before anything else (the user's `config.files` ending in `.ini`).
    pub includes: Vec<String>,
}

/// Where PostgreSQL is: the default `*` database entry points here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Upstream {
    /// A name PostgreSQL's certificate carries (`verify-full`).
    pub host: String,
    pub port: u16,
}

/// Everything that differs between a pod and `tusk local`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    pub listen: Listen,
    pub files: Files,
    pub upstream: Upstream,
}

/// Tusk's defaults, overridable through `config.global`.
fn default_settings() -> BTreeMap<String, String> {
    [
        // PgJDBC sends it at startup; PgBouncer would refuse the connection otherwise.
        ("ignore_startup_parameters", "extra_float_digits"),
        ("client_tls_sslmode", "require"),
        ("server_tls_sslmode", "verify-full"),
        // Logs go to stderr, i.e. the container log; PgBouncer's own defaults.
        ("log_connections", "1"),
        ("log_disconnections", "1"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// The wiring settings of [`MANAGED_SETTINGS`], from `layout`.
fn managed_settings(layout: &Layout) -> BTreeMap<String, String> {
    let files = &layout.files;
    let s: BTreeMap<String, String> = [
        ("listen_addr", layout.listen.host.clone()),
        ("listen_port", layout.listen.port.to_string()),
        (
            "unix_socket_dir",
            layout.listen.unix_socket_dir.clone().unwrap_or_default(),
        ),
        ("auth_type", "scram-sha-256".to_owned()),
        ("auth_file", files.auth_file.clone()),
        ("auth_user", AUTH_USER.to_owned()),
        ("auth_query", AUTH_QUERY.to_owned()),
        ("client_tls_cert_file", files.client_tls_cert.clone()),
        ("client_tls_key_file", files.client_tls_key.clone()),
        ("client_tls_ca_file", files.client_tls_ca.clone()),
        ("server_tls_ca_file", files.server_tls_ca.clone()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    debug_assert!(s.keys().all(|k| MANAGED_SETTINGS.contains(&k.as_str())));
    s
}

/// `pgbouncer.ini` for `settings` (`cluster.pgbouncer`) laid out as `layout`.
///
/// `config.global`, `databases` and `users` must have passed validation (no line breaks, no
/// managed key), which every [`ValidatedCluster`] has.
pub fn pgbouncer_ini(settings: &PgBouncerSettings, layout: &Layout) -> String {
    let mut out =
        String::from("# Rendered by Tusk from spec.proxy.pgBouncer; changes are overwritten.\n");
    for include in &layout.files.includes {
        let _ = writeln!(out, "%include {include}");
    }
    let mut pgbouncer = default_settings();
    for (key, value) in settings.config.global.iter().flatten() {
        pgbouncer.insert(key.clone(), value.to_string());
    }
    pgbouncer.extend(managed_settings(layout));
    section(&mut out, "pgbouncer", &pgbouncer);

    let mut databases = BTreeMap::from([(
        "*".to_owned(),
        format!(
            "host={} port={}",
            layout.upstream.host, layout.upstream.port
        ),
    )]);
    for (name, value) in settings.config.databases.iter().flatten() {
        databases.insert(name.clone(), value.to_string());
    }
    section(&mut out, "databases", &databases);

    let users: BTreeMap<String, String> = settings
        .config
        .users
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.to_string()))
        .collect();
    if !users.is_empty() {
        section(&mut out, "users", &users);
    }
    out
}

fn section(out: &mut String, name: &str, entries: &BTreeMap<String, String>) {
    let _ = writeln!(out, "\n[{name}]");
    for (key, value) in entries {
        let _ = writeln!(out, "{key} = {value}");
    }
}

/// The `auth_file`: one line, the auth role and its password in clear. PgBouncer must log in
/// as that role itself, which a SCRAM verifier cannot do; every other user is looked up with
/// `auth_query`, so this is the only password PgBouncer holds.
pub fn auth_file(auth_password: &str) -> String {
    format!(
        "\"{}\" \"{}\"\n",
        AUTH_USER,
        auth_password.replace('"', "\"\"")
    )
}

/// SQL creating or updating [`AUTH_USER`], run once per cluster as the superuser.
/// `password_verifier` should be a SCRAM verifier (`users::ScramVerifier`), so the clear
/// password never reaches the server or its logs. Idempotent.
pub fn auth_role_sql(password_verifier: &str) -> Vec<String> {
    service_role_sql(AUTH_USER, password_verifier)
}

/// `CREATE ROLE` when missing, then the role's attributes and password every time: LOGIN and
/// nothing else (no inherit, so a later grant to PUBLIC-like roles does not widen it).
pub(crate) fn service_role_sql(role: &str, password_verifier: &str) -> Vec<String> {
    let ident = quote_ident(role);
    vec![
        format!(
            "DO $tusk$ BEGIN IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = {}) THEN CREATE ROLE {ident}; END IF; END $tusk$",
            quote_literal(role)
        ),
        format!(
            "ALTER ROLE {ident} WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS PASSWORD {}",
            quote_literal(password_verifier)
        ),
    ]
}

/// SQL installing [`AUTH_FUNCTION`] in the current database, run as the superuser in every
/// database and `template1`. Idempotent: `CREATE ... IF NOT EXISTS` / `OR REPLACE`, and
/// grants that converge (PUBLIC loses EXECUTE every time).
///
/// The function runs with its owner's (the superuser's) rights, with a fixed `search_path`
/// so no object a user creates can be called in its place. It returns nothing for superusers,
/// replication roles, roles that cannot log in, expired roles and the auth role itself, so
/// holding the auth role's password never yields a privileged verifier.
pub fn auth_function_sql() -> Vec<String> {
    let schema = quote_ident(AUTH_SCHEMA);
    let role = quote_ident(AUTH_USER);
    let superuser = quote_ident(SUPERUSER);
    vec![
        format!("CREATE SCHEMA IF NOT EXISTS {schema} AUTHORIZATION {superuser}"),
        format!("REVOKE ALL ON SCHEMA {schema} FROM PUBLIC"),
        format!("GRANT USAGE ON SCHEMA {schema} TO {role}"),
        format!(
            "CREATE OR REPLACE FUNCTION {AUTH_FUNCTION}(role_name pg_catalog.text) \
             RETURNS TABLE (username pg_catalog.text, password pg_catalog.text) \
             LANGUAGE sql STABLE SECURITY DEFINER \
             SET search_path = pg_catalog, pg_temp AS $tusk$ \
             SELECT a.rolname::pg_catalog.text, a.rolpassword::pg_catalog.text \
             FROM pg_catalog.pg_authid a \
             WHERE a.rolname = role_name AND a.rolcanlogin AND NOT a.rolsuper \
             AND NOT a.rolreplication AND a.rolname <> {} \
             AND (a.rolvaliduntil IS NULL OR a.rolvaliduntil >= pg_catalog.now()) \
             $tusk$",
            quote_literal(AUTH_USER)
        ),
        format!("ALTER FUNCTION {AUTH_FUNCTION}(pg_catalog.text) OWNER TO {superuser}"),
        format!("REVOKE ALL ON FUNCTION {AUTH_FUNCTION}(pg_catalog.text) FROM PUBLIC"),
        format!("GRANT EXECUTE ON FUNCTION {AUTH_FUNCTION}(pg_catalog.text) TO {role}"),
    ]
}

/// Host clients use to reach PgBouncer in Kubernetes (the `<c>-pgbouncer` Service).
pub fn kubernetes_host(cluster: &ValidatedCluster) -> String {
    cluster
        .names
        .service_host(&cluster.names.pgbouncer(), &cluster.namespace)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::cluster_from;

    fn layout() -> Layout {
        Layout {
            listen: Listen {
                host: "127.0.0.9".into(),
                port: 6432,
                unix_socket_dir: None,
            },
            files: Files {
                auth_file: "/b/users.txt".into(),
                client_tls_cert: "/b/tls.crt".into(),
                client_tls_key: "/b/tls.key".into(),
                client_tls_ca: "/b/ca.crt".into(),
                server_tls_ca: "/b/server-ca.crt".into(),
                includes: vec!["/b/extra.ini".into()],
            },
            upstream: Upstream {
                host: "hippo-primary.db.svc".into(),
                port: 5433,
            },
        }
    }

    fn ini_of(spec_extra: &str) -> String {
        let cluster = cluster_from(&format!(
            "apiVersion: tusk.rs/v1beta1\nkind: PostgresCluster\nmetadata: {{name: hippo, namespace: db}}\nspec:\n  postgresVersion: 15\n  instances: [{{dataVolumeClaimSpec: {{accessModes: [ReadWriteOnce], resources: {{requests: {{storage: 1Gi}}}}}}}}]\n  proxy:\n    pgBouncer:\n{spec_extra}"
        ));
        pgbouncer_ini(cluster.pgbouncer.as_ref().unwrap(), &layout())
    }

    /// `(section, key) -> value` as PgBouncer's parser sees it (last one wins).
    fn parse(ini: &str) -> BTreeMap<(String, String), String> {
        let mut section = String::new();
        let mut out = BTreeMap::new();
        for line in ini.lines().map(str::trim) {
            if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                section = name.to_owned();
            } else if let Some((k, v)) = line.split_once(" = ") {
                out.insert((section.clone(), k.to_owned()), v.to_owned());
            }
        }
        out
    }

    fn get<'a>(ini: &'a BTreeMap<(String, String), String>, s: &str, k: &str) -> &'a str {
        ini.get(&(s.to_owned(), k.to_owned()))
            .unwrap_or_else(|| panic!("[{s}] {k} missing"))
    }

    #[test]
    fn defaults_route_every_database_to_the_primary_over_verified_tls() {
        let ini = ini_of("      replicas: 1\n");
        let p = parse(&ini);
        assert_eq!(
            get(&p, "databases", "*"),
            "host=hippo-primary.db.svc port=5433"
        );
        assert_eq!(get(&p, "pgbouncer", "auth_type"), "scram-sha-256");
        assert_eq!(get(&p, "pgbouncer", "auth_user"), "_tusk_pgbouncer");
        assert_eq!(get(&p, "pgbouncer", "auth_query"), AUTH_QUERY);
        assert_eq!(get(&p, "pgbouncer", "client_tls_sslmode"), "require");
        assert_eq!(get(&p, "pgbouncer", "server_tls_sslmode"), "verify-full");
        assert_eq!(
            get(&p, "pgbouncer", "server_tls_ca_file"),
            "/b/server-ca.crt"
        );
        assert_eq!(get(&p, "pgbouncer", "client_tls_key_file"), "/b/tls.key");
        assert_eq!(get(&p, "pgbouncer", "listen_addr"), "127.0.0.9");
        assert_eq!(get(&p, "pgbouncer", "listen_port"), "6432");
        assert_eq!(
            get(&p, "pgbouncer", "ignore_startup_parameters"),
            "extra_float_digits"
        );
        // The include comes before the first section so every Tusk setting overrides it.
        let include = ini.find("%include /b/extra.ini").unwrap();
        assert!(include < ini.find("[pgbouncer]").unwrap());
        assert!(!ini.contains("[users]"));
    }

    #[test]
    fn user_sections_are_merged_over_the_defaults() {
        let ini = ini_of(
            "      config:\n        global: {pool_mode: transaction, client_tls_sslmode: verify-full, max_client_conn: 500}\n        databases: {'*': 'host=elsewhere', app: 'host=hippo-replicas.db.svc dbname=app'}\n        users: {rhino: 'pool_mode=session'}\n",
        );
        let p = parse(&ini);
        assert_eq!(get(&p, "pgbouncer", "pool_mode"), "transaction");
        assert_eq!(get(&p, "pgbouncer", "max_client_conn"), "500");
        assert_eq!(get(&p, "pgbouncer", "client_tls_sslmode"), "verify-full");
        assert_eq!(get(&p, "databases", "*"), "host=elsewhere");
        assert_eq!(
            get(&p, "databases", "app"),
            "host=hippo-replicas.db.svc dbname=app"
        );
        assert_eq!(get(&p, "users", "rhino"), "pool_mode=session");
    }

    #[test]
    fn auth_file_holds_only_the_auth_role_with_quotes_doubled() {
        assert_eq!(auth_file("a\"b"), "\"_tusk_pgbouncer\" \"a\"\"b\"\n");
    }

    #[test]
    fn auth_sql_is_idempotent_in_form_and_never_grants_to_public() {
        let role = auth_role_sql("SCRAM-SHA-256$4096:c2FsdA==$x:y");
        assert!(role[0].contains("IF NOT EXISTS"));
        assert!(
            role[1].contains("NOSUPERUSER") && role[1].contains("PASSWORD 'SCRAM-SHA-256$4096")
        );
        let function = auth_function_sql();
        assert!(function.iter().any(|s| s.contains("SECURITY DEFINER")));
        assert!(function
            .iter()
            .any(|s| s.contains("search_path = pg_catalog, pg_temp")));
        assert!(function
            .iter()
            .all(|s| !s.contains("TO PUBLIC") && !s.contains("CREATE FUNCTION")));
    }
}
