//! Runs [`ServiceRoleSql`] (PgBouncer's auth role and lookup function, the exporter's role;
//! decided by `tusk_config::service_roles`) on the primary: `once` in the maintenance
//! database, `per_database` in every database that accepts connections (`template1`
//! included, so databases created later inherit the objects).
//!
//! The statements are idempotent but not free, and a settled reconcile must execute nothing,
//! so the executor records what it applied IN THE SERVER: a SHA-256 over the statements and
//! the databases they ran in, as the comment of the `postgres` role. When the comment already
//! holds that fingerprint nothing runs. Keeping the record with the data (not in the
//! Kubernetes status) means a server restored to a time before the roles existed runs them
//! again. A new database changes the fingerprint, so it gets the lookup function. The caller
//! must pass verifiers that stay the same while the password does (reuse the stored one when
//! it still verifies), or every run would look new.
//!
//! Needs the superuser. Never logs or returns SQL (it carries password verifiers).

use sha2::{Digest, Sha256};
use tusk_api::naming::SUPERUSER;
use tusk_config::service_roles::ServiceRoleSql;
use tusk_config::users::{quote_ident, quote_literal};

use crate::{connect, describe, ConnectTarget, SqlError, MAINTENANCE_DATABASE};

/// Start of the `postgres` role's comment that records the applied fingerprint.
pub const FINGERPRINT_PREFIX: &str = "tusk service roles applied: sha256 ";

const DATABASES: &str =
    "SELECT datname::text FROM pg_catalog.pg_database WHERE datallowconn ORDER BY datname";
const RECORDED: &str = "SELECT pg_catalog.shobj_description(oid, 'pg_authid') \
     FROM pg_catalog.pg_authid WHERE rolname = $1";

/// What [`apply_service_roles`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServiceRolesOutcome {
    /// Statements executed (0: nothing needed, or the fingerprint matched).
    pub executed: usize,
    /// Databases the per-database statements ran in (empty when nothing ran).
    pub databases: Vec<String>,
}

/// Applies `sql` unless the server records that exactly this was applied already.
pub async fn apply_service_roles(
    target: &ConnectTarget,
    sql: &ServiceRoleSql,
) -> Result<ServiceRolesOutcome, SqlError> {
    if sql.is_empty() {
        return Ok(ServiceRolesOutcome::default());
    }
    let client = connect(target, MAINTENANCE_DATABASE).await?;
    let databases: Vec<String> = client
        .query(DATABASES, &[])
        .await
        .map_err(|e| read_error("databases (pg_database)", &e))?
        .iter()
        .map(|row| row.get(0))
        .collect();
    let fingerprint = format!("{FINGERPRINT_PREFIX}{}", fingerprint(sql, &databases));
    let recorded: Option<String> = client
        .query_opt(RECORDED, &[&SUPERUSER])
        .await
        .map_err(|e| read_error("the comment of the superuser role", &e))?
        .and_then(|row| row.get(0));
    if recorded.as_deref() == Some(fingerprint.as_str()) {
        return Ok(ServiceRolesOutcome::default());
    }
    let mut executed = 0;
    for statement in &sql.once {
        run(&client, MAINTENANCE_DATABASE, statement).await?;
        executed += 1;
    }
    if !sql.per_database.is_empty() {
        for database in &databases {
            let db_client = connect(target, database).await?;
            for statement in &sql.per_database {
                run(&db_client, database, statement).await?;
                executed += 1;
            }
        }
    }
    // Recorded last: a failure above leaves the old record, so the next run repeats it all.
    let record = format!(
        "COMMENT ON ROLE {} IS {}",
        quote_ident(SUPERUSER),
        quote_literal(&fingerprint)
    );
    run(&client, MAINTENANCE_DATABASE, &record).await?;
    Ok(ServiceRolesOutcome {
        executed,
        databases: if sql.per_database.is_empty() {
            Vec::new()
        } else {
            databases
        },
    })
}

/// [`apply_service_roles`] for synchronous callers.
pub fn apply_service_roles_blocking(
    target: &ConnectTarget,
    sql: &ServiceRoleSql,
) -> Result<ServiceRolesOutcome, SqlError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(SqlError::Runtime)?
        .block_on(apply_service_roles(target, sql))
}

/// SHA-256 (hex) over every statement and the databases, each terminated by a NUL (which
/// SQL text cannot contain), so no two different inputs concatenate to the same bytes.
fn fingerprint(sql: &ServiceRoleSql, databases: &[String]) -> String {
    let mut hash = Sha256::new();
    for (section, items) in [
        ("once", &sql.once),
        ("per_database", &sql.per_database),
        ("databases", &databases.to_vec()),
    ] {
        hash.update(section.as_bytes());
        hash.update([0]);
        for item in items {
            hash.update(item.as_bytes());
            hash.update([0]);
        }
    }
    hash.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Executes one statement; the error names the database only (the SQL may hold a verifier).
async fn run(
    client: &tokio_postgres::Client,
    database: &str,
    statement: &str,
) -> Result<(), SqlError> {
    client
        .batch_execute(statement)
        .await
        .map_err(|e| SqlError::Execute {
            description: format!("service-role SQL in database {database}"),
            message: describe(&e),
        })
}

fn read_error(what: &'static str, error: &tokio_postgres::Error) -> SqlError {
    SqlError::ReadState {
        what,
        message: describe(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sql(once: &[&str], per_database: &[&str]) -> ServiceRoleSql {
        ServiceRoleSql {
            once: once.iter().map(|s| s.to_string()).collect(),
            per_database: per_database.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn the_fingerprint_changes_with_statements_and_databases_only() {
        let dbs = vec!["postgres".to_owned(), "template1".to_owned()];
        let base = fingerprint(&sql(&["a"], &["b"]), &dbs);
        assert_eq!(base, fingerprint(&sql(&["a"], &["b"]), &dbs));
        assert_ne!(base, fingerprint(&sql(&["a", "b"], &[]), &dbs));
        assert_ne!(base, fingerprint(&sql(&["ab"], &[]), &dbs));
        let mut more = dbs.clone();
        more.push("zoo".into());
        assert_ne!(base, fingerprint(&sql(&["a"], &["b"]), &more));
    }
}
