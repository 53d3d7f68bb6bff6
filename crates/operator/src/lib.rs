//! The Tusk operator: a kube-rs controller for `PostgresCluster`.
//!
//! The reconcile is a pipeline (see `controller`): dereference -> validate -> plan -> build
//! (pure, `build`) -> apply -> status. Only dereference, apply and status hold a client.

pub mod build;
pub mod controller;
pub mod discovery;
pub mod http;
pub mod images;
pub mod leader;
pub mod material;
pub mod metrics;
pub mod plan;
pub mod run;

/// The operator's version, stamped on the objects it writes (`tusk.rs/operator-version`) and
/// logged at start: `TUSK_BUILD_VERSION` from the environment when set (so a packaged build,
/// or an upgrade test, can name itself without a code change), else the value it had at build
/// time, else the crate version.
pub fn version() -> String {
    std::env::var("TUSK_BUILD_VERSION")
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| {
            option_env!("TUSK_BUILD_VERSION")
                .filter(|v| !v.is_empty())
                .unwrap_or(env!("CARGO_PKG_VERSION"))
                .to_owned()
        })
}
