//! Where things live inside the database container (Kubernetes). `tusk local` uses its
//! own state directory and passes its paths through [`crate::patroni::Member`].

/// Mount point of the `pgdata` volume.
pub const PGDATA_VOLUME: &str = "/pgdata";
/// Mount point of the `pgwal` volume.
pub const PGWAL_VOLUME: &str = "/pgwal";
/// Server certificate, key and CA (`tls.crt`, `tls.key`, `ca.crt`).
pub const SERVER_TLS_DIR: &str = "/pgconf/tls";
/// Replication client certificate, key and CA.
pub const REPLICATION_TLS_DIR: &str = "/pgconf/tls/replication";
/// Patroni's configuration file directory (ConfigMap).
pub const PATRONI_CONFIG_DIR: &str = "/etc/patroni";
/// Patroni's configuration file.
pub const PATRONI_CONFIG_FILE: &str = "/etc/patroni/patroni.yaml";
/// Unix socket directory.
pub const SOCKET_DIR: &str = "/tmp/postgres";

/// PGDATA of a major version: `/pgdata/pg15`.
pub fn pgdata(major: u32) -> String {
    format!("{PGDATA_VOLUME}/pg{major}")
}

/// WAL directory on the `pgwal` volume: `/pgwal/pg15_wal`.
pub fn pgwal(major: u32) -> String {
    format!("{PGWAL_VOLUME}/pg{major}_wal")
}

/// PostgreSQL binaries of a major version in the database image (Debian layout, the same as
/// the `postgresql-NN` packages `tusk local` uses): `/usr/lib/postgresql/15/bin`.
pub fn bin_dir(major: u32) -> String {
    format!("/usr/lib/postgresql/{major}/bin")
}

/// File names inside a TLS directory; they are the keys of a `kubernetes.io/tls`-style Secret
/// (`tls.crt`, `tls.key`, `ca.crt`), so a Secret can be mounted as the directory unchanged.
pub const TLS_CERT_FILE: &str = "tls.crt";
pub const TLS_KEY_FILE: &str = "tls.key";
pub const TLS_CA_FILE: &str = "ca.crt";

/// OS user the database container runs Patroni and PostgreSQL as. Peer authentication maps it
/// to the `postgres` role, so the image must have this user with the pod's `runAsUser` UID.
pub const KUBERNETES_OS_USER: &str = "postgres";

/// `<dir>/<file>` for one of the TLS file names above.
pub fn tls_file(dir: &str, file: &str) -> String {
    format!("{dir}/{file}")
}
