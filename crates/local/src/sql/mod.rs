//! SQL state of a running cluster: read what the primary has (`pg_authid`, `pg_database`, ACLs),
//! ask [`tusk_config::users::plan`] for the difference from `spec.users`, execute it in order;
//! and run `spec.databaseInitSQL` once. Talks to ONE PostgreSQL server given by a
//! [`ConnectTarget`] (the primary; the superuser over the Unix socket, or any role over
//! verified TLS) and, for init SQL, runs the real `psql`. Touches no files except the
//! init-SQL marker in the state directory it is given.
//!
//! Async on tokio-postgres; the `*_blocking` wrappers run a private current-thread runtime for
//! callers that are synchronous (the local runtime's process supervision).

mod connect;
mod init_sql;
mod state;

use std::collections::BTreeMap;
use std::path::PathBuf;

use tusk_api::ValidatedCluster;
use tusk_config::users::{plan, Statement};

pub use connect::{connect, ClientCertFiles, ConnectTarget};
pub use init_sql::{
    forget_database_init_sql, init_sql_path, run_database_init_sql, InitSqlOutcome, INIT_SQL_MARKER,
};
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
    #[error("reading {what}: {message}")]
    ReadState { what: &'static str, message: String },
    #[error("executing \"{description}\": {message}")]
    Execute {
        description: String,
        message: String,
    },
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
pub(crate) fn describe(error: &tokio_postgres::Error) -> String {
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
