//! Local runtime (`tusk local`): a ValidatedCluster as real processes — etcd as Patroni's DCS
//! on `<network>.1`, one Patroni + PostgreSQL per instance on `<network>.2` and up, a local
//! CA and per-member certificates, pgBackRest with directory repositories — rendered by the
//! same `tusk_config` functions the operator uses. State lives in one directory per cluster
//! (`state`); servers outlive `tusk` and are found again by pid. Users, databases and
//! `databaseInitSQL` are applied as SQL on the primary (`users`, `sql`), with passwords kept
//! in the state directory (`passwords`). PgBouncer and one exporter per member run beside
//! them when the spec asks (`services`, `pgbouncer`, `exporter`).

pub mod backup;
pub mod error;
pub mod etcd;
pub mod exporter;
pub mod fencer;
pub mod members;
pub mod observe;
pub mod passwords;
pub mod patroni_api;
pub mod pgbouncer;
pub mod restore;
mod rollout;
pub mod secret;
pub mod services;
pub mod sql;
pub mod standby;
pub mod state;
pub mod status;
pub mod system;
pub mod tls;
pub mod up;
pub mod users;

pub use error::{Error, Result};
pub use state::Layout;
pub use status::{ca_pem, down, logs, render_table, status, switchover, StatusReport};
pub use up::{up, UpOptions};
pub use users::{psql_command, secret};
