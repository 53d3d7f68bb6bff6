//! Tusk's API: the `PostgresCluster` types (`types`), their validation into a
//! `ValidatedCluster` (`validate`, `model`), and the one naming module (`naming`).
//! Nothing here does I/O; everything downstream takes a [`ValidatedCluster`].

pub mod crd;
pub mod cron;
pub mod model;
pub mod naming;
pub mod plan;
pub mod types;
pub mod validate;

pub use model::ValidatedCluster;
pub use types::{PostgresCluster, PostgresClusterSpec, PostgresClusterStatus};
pub use validate::{validate, validate_yaml, FieldError, ValidationErrors};
