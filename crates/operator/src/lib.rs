//! The Tusk operator: a kube-rs controller for `PostgresCluster`.
//!
//! The reconcile is a pipeline (see `controller`): dereference -> validate -> plan -> build
//! (pure, `build`) -> apply -> status. Only dereference, apply and status hold a client.

pub mod build;
pub mod controller;
pub mod http;
pub mod images;
pub mod leader;
pub mod material;
pub mod metrics;
pub mod plan;
pub mod run;
