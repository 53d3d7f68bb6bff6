//! The one error type of the local runtime: each variant names the step that failed and the
//! file, process or member it failed on, so `tusk local` can print a message a person acts on.

use std::path::PathBuf;

/// Everything `tusk local` can fail at.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The manifest could not be read.
    #[error("reading {path}")]
    ReadManifest {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The manifest is not a valid PostgresCluster; each field error names its path.
    #[error("invalid manifest {path}:\n{errors}")]
    InvalidManifest { path: PathBuf, errors: String },
    /// The manifest asks for something the local runtime cannot run (names the field).
    #[error("{field}: {reason}")]
    Unsupported { field: String, reason: String },
    /// `--network` is not three octets of 127.0.0.0/8.
    #[error("--network {network:?}: {reason}")]
    InvalidNetwork { network: String, reason: String },
    /// Required programs are missing; lists the Debian packages to install.
    #[error("missing programs: {missing}\ninstall them with: apt-get install -y {packages}")]
    MissingPackages { missing: String, packages: String },
    /// The state directory holds another cluster, or none where one was expected.
    #[error("state directory {path}: {reason}")]
    StateDir { path: PathBuf, reason: String },
    /// A file or directory of the state directory could not be read or written.
    #[error("{action} {path}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    /// A state file is not what this version of tusk wrote.
    #[error("parsing {path}: {reason}")]
    ParseState { path: PathBuf, reason: String },
    /// Issuing or loading certificates failed.
    #[error("certificates: {0}")]
    Pki(#[from] tusk_pki::Error),
    /// A process could not be started.
    #[error("starting {what}")]
    Spawn {
        what: String,
        source: std::io::Error,
    },
    /// A user or group lookup / ownership change failed.
    #[error("{action}: {reason}")]
    Os { action: String, reason: String },
    /// Waiting for something the cluster should reach gave up; `log` is where to look.
    #[error("timed out after {seconds}s waiting for {what} (see {log})")]
    Timeout {
        what: String,
        seconds: u64,
        log: PathBuf,
    },
    /// Another process already listens where a server is to listen (often a distribution's
    /// own service bound to every address, e.g. prometheus-postgres-exporter on `*:9187`).
    #[error("{what} cannot listen on {address}: the address is in use by another process (`ss -ltnp` names it; scripts/setup-local stops the packages' own services)")]
    PortInUse { what: String, address: String },
    /// A server exited while it was starting; `tail` is the end of its log.
    #[error("{what} exited while starting (log {log}):\n{tail}")]
    Exited {
        what: String,
        log: PathBuf,
        tail: String,
    },
    /// A request to Patroni's REST API or etcd's gateway failed.
    #[error("{what}: {reason}")]
    Http { what: String, reason: String },
    /// A helper command (psql, pgbackrest) ran and failed.
    #[error("{what} failed: {output}")]
    Command { what: String, output: String },
    /// Bringing SQL state in line with a manifest field failed (`spec.users`,
    /// `spec.databaseInitSQL`); the cluster itself keeps running.
    #[error("{field}: {source}")]
    Sql {
        field: &'static str,
        source: crate::sql::SqlError,
    },
    /// A user named on the command line is not in `spec.users`.
    #[error("no user named {name:?} in spec.users (users: {known})")]
    UnknownUser { name: String, known: String },
    /// A member named on the command line does not exist.
    #[error("no member named {name:?} (members: {known})")]
    UnknownMember { name: String, known: String },
}

/// Result of the local runtime.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// `map_err` helper for filesystem calls: `io(action, path)(e)`.
pub(crate) fn io(
    action: &'static str,
    path: impl Into<PathBuf>,
) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.into();
    move |source| Error::Io {
        action,
        path,
        source,
    }
}
