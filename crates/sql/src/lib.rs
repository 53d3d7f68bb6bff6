//! SQL state of a running cluster, shared by the operator's SQL step and `tusk local`: read
//! what the primary has (`pg_authid`, `pg_database`, ACLs), ask [`tusk_config::users::plan`]
//! for the difference from `spec.users` and execute it in order; run the service roles' SQL
//! ([`service_roles`]). Talks to ONE PostgreSQL server given by a [`ConnectTarget`] (the
//! primary; the superuser over the Unix socket, or over TLS by the operator's certificate, or
//! any role over verified TLS). No files except the CA/certificate files a target names; no
//! Kubernetes. `tusk local`'s `databaseInitSQL` (which runs the real `psql`) stays in local.
//!
//! Async on tokio-postgres; the `*_blocking` wrappers run a private current-thread runtime for
//! callers that are synchronous (the local runtime's process supervision).

mod connect;
pub mod service_roles;
mod state;

use std::collections::BTreeMap;
use std::path::PathBuf;

use tusk_api::ValidatedCluster;
use tusk_config::users::{plan, Statement};

pub use connect::{connect, ClientCert, ClientCertFiles, ConnectTarget, Pem};
pub use service_roles::{apply_service_roles, apply_service_roles_blocking, ServiceRolesOutcome};
pub use state::{read_actual_databases, read_actual_roles, stored_password};

/// Database the statements without an explicit one run in, and where init SQL starts.
pub const MAINTENANCE_DATABASE: &str = "postgres";

/// What failed while reading or changing SQL state. Never carries a password or verifier.
#[derive(Debug, thiserror::Error)]
pub enum SqlError {
    #[error("connecting to {target} database {database:?}: {message}")]
    Connect {
        target: String,
        database: String,
        message: String,
    },
    #[error("TLS setup for {target}: {message}")]
    Tls { target: String, message: String },
    /// The TLS handshake failed: the server's certificate did not verify against the CA
    /// (or for the host name), or the server refused the client certificate.
    #[error("TLS handshake with {target} failed: {message}")]
    TlsHandshake { target: String, message: String },
    /// A verifier handed in for a role is not a SCRAM-SHA-256 verifier; PostgreSQL would
    /// take it for a clear password, so it is never sent.
    #[error("the password verifier for role {role} is not a SCRAM-SHA-256 verifier")]
    BadVerifier { role: String },
    #[error("reading {what}: {message}")]
    ReadState { what: &'static str, message: String },
    #[error("executing \"{description}\": {message}")]
    Execute {
        description: String,
        message: String,
    },
    /// The remaining variants are for runners that run SQL files (`tusk local`'s init SQL).
    #[error("reading {path}: {source}")]
    ReadFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("recording init SQL success in {path}: {source}")]
    WriteMarker {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("running {psql}: {source}")]
    SpawnPsql {
        psql: PathBuf,
        source: std::io::Error,
    },
    #[error("databaseInitSQL {path} failed ({status}); not recorded, it runs again next time:\n{stderr}")]
    InitSqlFailed {
        path: PathBuf,
        status: String,
        stderr: String,
    },
    #[error("starting a tokio runtime: {0}")]
    Runtime(std::io::Error),
}

/// The server's message for a failed call: tokio-postgres' own `Display` says only
/// "db error", so the database error (with its detail) is spelled out.
pub fn describe(error: &tokio_postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => match db.detail() {
            Some(detail) => format!("{}: {} ({detail})", db.severity(), db.message()),
            None => format!("{}: {}", db.severity(), db.message()),
        },
        None => match std::error::Error::source(error) {
            Some(source) => format!("{error}: {source}"),
            None => error.to_string(),
        },
    }
}

/// Brings users and databases in line with `cluster.users`: reads the actual state, plans and
/// executes each statement in order, each in its own implicit transaction (`CREATE DATABASE`
/// cannot run in one). Returns the descriptions of what it executed; empty when nothing was
/// needed. Stops at the first failure: a later run re-plans from what exists then, so a
/// partial run is completed, never repeated.
pub async fn reconcile_users(
    target: &ConnectTarget,
    cluster: &ValidatedCluster,
    passwords: &BTreeMap<String, String>,
) -> Result<Vec<String>, SqlError> {
    let statements = plan_users(target, cluster, passwords).await?;
    execute(target, &statements).await?;
    Ok(statements.iter().map(ToString::to_string).collect())
}

/// The plan against the server's current state, without executing it (`--dry-run`, tests).
pub async fn plan_users(
    target: &ConnectTarget,
    cluster: &ValidatedCluster,
    passwords: &BTreeMap<String, String>,
) -> Result<Vec<Statement>, SqlError> {
    let client = connect(target, MAINTENANCE_DATABASE).await?;
    let mut role_names: Vec<&str> = cluster.users.iter().map(|u| u.name.as_str()).collect();
    role_names.push(tusk_api::naming::SUPERUSER);
    let roles = read_actual_roles(&client, &role_names).await?;
    let mut db_names: Vec<&str> = Vec::new();
    for db in cluster.users.iter().flat_map(|u| &u.databases) {
        if !db_names.contains(&db.as_str()) {
            db_names.push(db);
        }
    }
    let databases = read_actual_databases(&client, target, &db_names).await?;
    Ok(plan(cluster, &roles, &databases, passwords))
}

/// Runs `statements` in order, one connection per database they name.
pub async fn execute(target: &ConnectTarget, statements: &[Statement]) -> Result<(), SqlError> {
    let mut clients: BTreeMap<String, tokio_postgres::Client> = BTreeMap::new();
    for statement in statements {
        let database = statement
            .database
            .clone()
            .unwrap_or_else(|| MAINTENANCE_DATABASE.to_owned());
        if !clients.contains_key(&database) {
            let client = connect(target, &database).await?;
            clients.insert(database.clone(), client);
        }
        clients[&database]
            .batch_execute(statement.sql())
            .await
            .map_err(|e| SqlError::Execute {
                description: statement.to_string(),
                message: describe(&e),
            })?;
    }
    Ok(())
}

/// Like [`reconcile_users`], but each user's password is set from its SCRAM verifier as given
/// (`verifiers`: role -> verifier, e.g. the `verifier` key of the user's Secret), so what
/// `pg_authid` stores is exactly that verifier; a role whose stored verifier already equals it
/// is left alone. A user without an entry keeps whatever password it has. The plan handles
/// attributes, databases and grants; passwords follow once the roles exist.
pub async fn reconcile_users_with_verifiers(
    target: &ConnectTarget,
    cluster: &ValidatedCluster,
    verifiers: &BTreeMap<String, String>,
) -> Result<Vec<String>, SqlError> {
    for (role, verifier) in verifiers {
        if tusk_config::users::ScramVerifier::parse(verifier).is_none() {
            return Err(SqlError::BadVerifier { role: role.clone() });
        }
    }
    let statements = plan_users(target, cluster, &BTreeMap::new()).await?;
    let client = connect(target, MAINTENANCE_DATABASE).await?;
    let names: Vec<&str> = verifiers.keys().map(String::as_str).collect();
    let stored: BTreeMap<String, Option<String>> = read_actual_roles(&client, &names)
        .await?
        .into_iter()
        .map(|r| (r.name, r.stored_password))
        .collect();
    execute(target, &statements).await?;
    let mut done: Vec<String> = statements.iter().map(ToString::to_string).collect();
    for (role, verifier) in verifiers {
        if stored.get(role).and_then(Option::as_deref) == Some(verifier.as_str()) {
            continue;
        }
        let sql = format!(
            "ALTER ROLE {} PASSWORD {}",
            tusk_config::users::quote_ident(role),
            tusk_config::users::quote_literal(verifier)
        );
        let description = format!("set the password of role {role} from its verifier");
        client
            .batch_execute(&sql)
            .await
            .map_err(|e| SqlError::Execute {
                description: description.clone(),
                message: describe(&e),
            })?;
        done.push(description);
    }
    Ok(done)
}

/// A SCRAM verifier per role for `passwords` (role -> clear password) that stays the same
/// while the password does: the stored one when it verifies the password, else a new one.
/// For the service roles, whose SQL must not look new on every run.
pub async fn stable_verifiers(
    target: &ConnectTarget,
    passwords: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>, SqlError> {
    use tusk_config::users::ScramVerifier;
    let client = connect(target, MAINTENANCE_DATABASE).await?;
    let names: Vec<&str> = passwords.keys().map(String::as_str).collect();
    let stored: BTreeMap<String, Option<String>> = read_actual_roles(&client, &names)
        .await?
        .into_iter()
        .map(|r| (r.name, r.stored_password))
        .collect();
    Ok(passwords
        .iter()
        .map(|(role, password)| {
            let kept = stored
                .get(role)
                .and_then(Option::as_deref)
                .filter(|v| ScramVerifier::parse(v).is_some_and(|v| v.verifies(password)));
            let verifier = match kept {
                Some(v) => v.to_owned(),
                None => ScramVerifier::new(password).to_string(),
            };
            (role.clone(), verifier)
        })
        .collect())
}

/// [`reconcile_users`] for synchronous callers.
pub fn reconcile_users_blocking(
    target: &ConnectTarget,
    cluster: &ValidatedCluster,
    passwords: &BTreeMap<String, String>,
) -> Result<Vec<String>, SqlError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(SqlError::Runtime)?
        .block_on(reconcile_users(target, cluster, passwords))
}
