//! The SQL that gives Tusk's own service roles what they need, in one place for both runners
//! (the operator's SQL step and `tusk local`): PgBouncer's `auth_query` role and function, and
//! the exporter's monitoring role. The statements come from [`crate::pgbouncer`] and
//! [`crate::exporter`]; this module only decides which ones a cluster needs and where they
//! run. Pure: no connections, no I/O.

use tusk_api::ValidatedCluster;

use crate::{exporter, pgbouncer};

/// Clear passwords of the service roles are never sent: only their SCRAM verifiers.
#[derive(Clone, Copy, Debug, Default)]
pub struct ServiceRoleVerifiers<'a> {
    /// Verifier of [`pgbouncer::AUTH_USER`]; needed when the cluster has PgBouncer.
    pub pgbouncer: Option<&'a str>,
    /// Verifier of [`exporter::ROLE`]; needed when the cluster has the exporter.
    pub exporter: Option<&'a str>,
}

/// Statements to run as the superuser on the primary, each list idempotent.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServiceRoleSql {
    /// Run once, in the maintenance database `postgres`.
    pub once: Vec<String>,
    /// Run in every database that accepts connections, and in `template1` so databases
    /// created later inherit the objects (PgBouncer's lookup function lives per database).
    pub per_database: Vec<String>,
}

impl ServiceRoleSql {
    pub fn is_empty(&self) -> bool {
        self.once.is_empty() && self.per_database.is_empty()
    }
}

/// What a missing verifier means: the runner forgot to provide one for a component the
/// cluster has. Named by role, never carrying a secret.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("no password verifier for service role {role}")]
pub struct MissingVerifier {
    pub role: &'static str,
}

/// The service-role SQL `cluster` needs: nothing without PgBouncer or the exporter.
pub fn service_role_sql(
    cluster: &ValidatedCluster,
    verifiers: ServiceRoleVerifiers,
) -> Result<ServiceRoleSql, MissingVerifier> {
    let mut sql = ServiceRoleSql::default();
    if cluster.pgbouncer.is_some() {
        let verifier = verifiers.pgbouncer.ok_or(MissingVerifier {
            role: pgbouncer::AUTH_USER,
        })?;
        sql.once.extend(pgbouncer::auth_role_sql(verifier));
        sql.per_database.extend(pgbouncer::auth_function_sql());
    }
    if cluster.exporter.is_some() {
        let verifier = verifiers.exporter.ok_or(MissingVerifier {
            role: exporter::ROLE,
        })?;
        sql.once.extend(exporter::role_sql(verifier));
    }
    Ok(sql)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{cluster_from, BASE};

    const BOTH: &str = "  proxy: {pgBouncer: {}}\n  monitoring: {pgmonitor: {exporter: {}}}\n";

    #[test]
    fn a_cluster_without_pooler_or_exporter_needs_nothing() {
        let sql = service_role_sql(&cluster_from(BASE), ServiceRoleVerifiers::default()).unwrap();
        assert!(sql.is_empty());
    }

    #[test]
    fn pooler_and_exporter_get_their_roles_and_the_lookup_function_per_database() {
        let cluster = cluster_from(&format!("{BASE}{BOTH}"));
        let verifiers = ServiceRoleVerifiers {
            pgbouncer: Some("SCRAM-SHA-256$pgb"),
            exporter: Some("SCRAM-SHA-256$exp"),
        };
        let sql = service_role_sql(&cluster, verifiers).unwrap();
        let once = sql.once.join("\n");
        assert!(once.contains("\"_tusk_pgbouncer\"") && once.contains("'SCRAM-SHA-256$pgb'"));
        assert!(once.contains("\"_tusk_exporter\"") && once.contains("'SCRAM-SHA-256$exp'"));
        assert!(once.contains("GRANT pg_monitor"));
        assert!(sql.per_database.iter().any(|s| s.contains("get_auth")));
        assert!(!sql.once.iter().any(|s| s.contains("FUNCTION")));
    }

    #[test]
    fn a_missing_verifier_is_named() {
        let cluster = cluster_from(&format!("{BASE}{BOTH}"));
        let only_pooler = ServiceRoleVerifiers {
            pgbouncer: Some("v"),
            exporter: None,
        };
        assert_eq!(
            service_role_sql(&cluster, only_pooler),
            Err(MissingVerifier {
                role: "_tusk_exporter"
            })
        );
    }
}
