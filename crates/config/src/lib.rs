//! PostgreSQL-side configuration rendered from a [`tusk_api::ValidatedCluster`]: Patroni's
//! YAML, PostgreSQL parameters, pg_hba rules (later: pgbackrest.conf, pgbouncer.ini,
//! exporter queries). Shared by the operator (files in ConfigMaps) and `tusk local` (files on
//! disk) so there is one source of truth. No Kubernetes calls, no I/O.

pub mod exporter;
pub mod hba;
pub mod merge;
pub mod parameters;
pub mod paths;
pub mod patroni;
pub mod pgbackrest;
pub mod pgbouncer;
pub mod users;
pub mod yaml;

#[cfg(test)]
mod test_support {
    use tusk_api::ValidatedCluster;

    /// A manifest the unit tests write inline, validated the way the operator does.
    pub fn cluster_from(yaml: &str) -> ValidatedCluster {
        tusk_api::validate_yaml(yaml).unwrap_or_else(|e| panic!("test manifest invalid: {e:?}"))
    }
}
