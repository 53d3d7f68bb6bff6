//! Validation of `spec.proxy.pgBouncer.config`: the `global`, `databases` and `users` sections
//! become lines of `pgbouncer.ini`, so a key or value that could start another line or
//! section (or override the wiring Tusk owns) is rejected here, before anything is rendered.
//! Part of [`super`]'s validation; reads only the raw spec it is given. No I/O.

use super::*;

/// `[pgbouncer]` settings Tusk sets from the spec and its own file layout (listen socket,
/// authentication, certificate files, process files). `config.global` may not name them:
/// silently overriding the user would hide a mistake, and honouring them would break the
/// auth_query setup or TLS.
pub const PGBOUNCER_MANAGED_SETTINGS: &[&str] = &[
    "listen_addr",
    "listen_port",
    "unix_socket_dir",
    "auth_type",
    "auth_file",
    "auth_user",
    "auth_query",
    "auth_hba_file",
    "client_tls_cert_file",
    "client_tls_key_file",
    "client_tls_ca_file",
    "server_tls_ca_file",
    "server_tls_cert_file",
    "server_tls_key_file",
    "pidfile",
    "logfile",
    "admin_users",
    "stats_users",
];

pub(super) fn pgbouncer_config(errs: &mut Errors, base: &str, config: &PgBouncerConfig) {
    let sections = [
        ("global", config.global.as_ref()),
        ("databases", config.databases.as_ref()),
        ("users", config.users.as_ref()),
    ];
    for (section, map) in sections {
        for (key, value) in map.into_iter().flatten() {
            let path = format!("{base}.config.{section}.{key}");
            // `*` is the databases section's fallback entry; everything else is a name.
            let key_ok = !key.is_empty()
                && (key == "*" && section == "databases"
                    || key
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "_-.$".contains(c)));
            if !key_ok {
                errs.push(
                    path.clone(),
                    "keys may hold only letters, digits, '_', '-', '.' and '$'",
                );
            }
            if value.to_string().contains(['\n', '\r', '\0']) {
                errs.push(path.clone(), "values must be a single line");
            }
            if section == "global" && PGBOUNCER_MANAGED_SETTINGS.contains(&key.as_str()) {
                errs.push(path, "is set by Tusk and cannot be overridden");
            }
        }
    }
}
