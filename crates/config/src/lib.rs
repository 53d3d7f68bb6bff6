//! PostgreSQL-side configuration rendered from a [`tusk_api::ValidatedCluster`]: Patroni's
//! YAML, PostgreSQL parameters, pg_hba rules (later: pgbackrest.conf, pgbouncer.ini,
//! exporter queries). Shared by the operator (files in ConfigMaps) and `tusk local` (files on
//! disk) so there is one source of truth. No Kubernetes calls, no I/O.

pub mod hba;
pub mod parameters;
pub mod paths;
pub mod patroni;
