//! PostgreSQL-side configuration rendered from a [`tusk_api::ValidatedCluster`]: Patroni's
//! YAML, PostgreSQL parameters, pg_hba rules (later: pgbackrest.conf, pgbouncer.ini,
//! exporter queries). Shared by the operator (files in ConfigMaps) and `tusk local` (files on
//! disk) so there is one source of truth. No Kubernetes calls, no I/O.

pub mod backup_status;
pub mod custom_tls;
pub mod exporter;
pub mod hba;
pub mod merge;
pub mod parameters;
pub mod paths;
pub mod patroni;
pub mod pgbackrest;
pub mod pgbouncer;
pub mod restore;
pub mod service_roles;
pub mod uri;
pub mod users;
pub mod yaml;

#[cfg(test)]
mod test_support {
    use tusk_api::ValidatedCluster;

    /// The smallest valid manifest: one instance, no backups, no users.
    pub const BASE: &str = r#"
apiVersion: tusk.rs/v1beta1
kind: PostgresCluster
metadata: {name: hippo, namespace: tusk}
spec:
  postgresVersion: 15
  instances: [{name: i1, dataVolumeClaimSpec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}}]
"#;

    /// A manifest the unit tests write inline, validated the way the operator does.
    pub fn cluster_from(yaml: &str) -> ValidatedCluster {
        tusk_api::validate_yaml(yaml).unwrap_or_else(|e| panic!("test manifest invalid: {e:?}"))
    }
}
