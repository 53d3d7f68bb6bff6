//! Pooling, monitoring and users in real pods, on one cluster of the pooling example
//! (`examples/03-hippo-pooling-monitoring-tls.yaml`: two instances, PgBouncer, the exporter
//! sidecar, a volume repo and the user's own TLS certificates, brought as a user brings them).
//! The scenarios share the cluster because none of them changes what another checks, and
//! each starts from a state the previous one leaves healthy; the failover comes last.
//!
//! - Pooling: the user Secret's `pgbouncer-uri` from a pod, `sslmode=verify-full` against the
//!   user's CA, reaches the primary through a PgBouncer pod; after the primary's pod is
//!   deleted, the same URI writes to the new primary (`services::pooling`).
//! - Monitoring: with a replica streaming and a backup taken, a pod scrapes every exporter
//!   sidecar and the operator: `pg_up 1`, and every metric the shipped dashboards and alert
//!   rules use, parsed from `deploy/monitoring` (`services::monitoring`).
//! - Users: edits of a user's `options` and `databases` reach `pg_roles` and the database's
//!   ACL; a Secret that lost its `password` key, or was deleted, comes back with a new
//!   password that works while the old one stops working (`services::users`).

mod kube_support;
mod node_support;
mod services;

use std::time::Duration;

use kube_support::{objects, repo_root};
use node_support::install::install_operator;
use node_support::{apply_example, wait_condition, Namespace, Node};

/// Apply to Ready includes pulling the database image the first time.
const READY_LIMIT: Duration = Duration::from_secs(600);

#[tokio::test]
async fn pooling_monitoring_and_users_work_in_pods_of_the_pooling_example() {
    let Some(node) = Node::acquire() else {
        return;
    };
    let client = node.client().await;
    let installed = install_operator(&node);
    let ns = Namespace::create(&node, &client, "pods-services").await;
    let example = repo_root().join("examples/03-hippo-pooling-monitoring-tls.yaml");
    let manifest = objects::manifest(&example);
    // The user's certificates first, as the example expects them to exist.
    objects::create_custom_tls_secrets(&client, &ns.name, &manifest).await;
    apply_example(&node, &example, &ns.name);
    let ctx = services::Ctx::new(&node, &client, &ns.name, &manifest, &installed);
    wait_condition(&client, &ns.name, &ctx.cluster, "Ready", READY_LIMIT).await;

    services::pooling::pgbouncer_uri_serves_over_verified_tls(&ctx).await;
    services::monitoring::exporters_serve_every_dashboard_and_alert_metric(&ctx).await;
    services::users::option_and_database_edits_are_applied(&ctx).await;
    services::users::a_lost_password_is_replaced_and_the_old_one_refused(&ctx).await;
    services::pooling::pgbouncer_uri_writes_to_the_new_primary_after_failover(&ctx).await;
}
