//! `tusk operator`: the long-running process. Serves `/metrics`, `/healthz`, `/readyz`; runs
//! leader election; while (and only while) this replica leads, runs one kube-rs `Controller`
//! per watched namespace (or one for all) on `PostgresCluster`, owning the managed kinds
//! through a label-selected watch. Stops on SIGTERM/SIGINT, releasing the lease.

use std::fmt::Debug;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{
    ConfigMap, PersistentVolumeClaim, Secret, Service, ServiceAccount,
};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::Api;
use kube::core::{ApiResource, DeserializeGuard};
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::watcher;
use kube::{Client, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::{oneshot, watch};
use tusk_api::{naming, PostgresCluster};

use crate::controller::dereference::managed_kinds;
use crate::controller::{error_policy, reconcile, report_unparseable, Context, Error};
use crate::discovery::{self, ServedKinds};
use crate::http::{self, Health};
use crate::images::Images;
use crate::leader::{LeaderElector, LeaseConfig};
use crate::metrics::Metrics;

/// Which namespaces the operator watches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Namespaces {
    All,
    Only(Vec<String>),
}

impl Namespaces {
    /// `""` or `"*"` = all namespaces (the OLM `WATCH_NAMESPACE` convention); otherwise a
    /// comma-separated list.
    pub fn parse(s: &str) -> Self {
        let list: Vec<String> = s
            .split(',')
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .map(str::to_owned)
            .collect();
        if list.is_empty() || list.iter().any(|n| n == "*") {
            Namespaces::All
        } else {
            Namespaces::Only(list)
        }
    }
}

#[derive(Clone, Debug)]
pub struct OperatorConfig {
    pub namespaces: Namespaces,
    /// Clusters reconciled at once (bounded work).
    pub concurrency: u16,
    pub http_address: SocketAddr,
    pub lease: LeaseConfig,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("binding the HTTP server to {address}: {source}")]
    BindHttp {
        address: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("serving HTTP: {0}")]
    ServeHttp(#[source] std::io::Error),
}

/// Runs the operator until SIGTERM or SIGINT.
pub async fn run(client: Client, config: OperatorConfig) -> Result<(), RunError> {
    let metrics = Arc::new(Metrics::new());
    let health = Arc::new(Health::default());
    let (shutdown_tx, shutdown) = watch::channel(false);
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutting down");
        shutdown_tx.send_replace(true);
    });

    let listener = tokio::net::TcpListener::bind(config.http_address)
        .await
        .map_err(|source| RunError::BindHttp {
            address: config.http_address,
            source,
        })?;
    let server = tokio::spawn(http::serve(
        listener,
        http::router(metrics.clone(), health.clone()),
        until(shutdown.clone(), true),
    ));

    let (leader_tx, leader) = watch::channel(false);
    let elector = LeaderElector::new(client.clone(), config.lease.clone());
    let election = tokio::spawn(elector.run(leader_tx, shutdown.clone()));
    health.set_ready(true);

    loop {
        tokio::select! {
            _ = until(leader.clone(), true) => {}
            _ = until(shutdown.clone(), true) => {}
        }
        if *shutdown.borrow() {
            break;
        }
        // Asked again each term: a new leader may run against an upgraded server.
        let Some(served) = discover_served(&client, &shutdown).await else {
            break;
        };
        let mut ctx = Context::with_leadership(
            client.clone(),
            Images::from_env(),
            metrics.clone(),
            leader.clone(),
        );
        // The root CA lives beside the Lease, in the operator's own namespace.
        ctx.operator_namespace = config.lease.namespace.clone();
        ctx.served = served;
        let ctx = Arc::new(ctx);
        tracing::info!(namespaces = ?config.namespaces, version = %crate::version(), "leading: starting controllers");
        let scopes: Vec<Option<String>> = match &config.namespaces {
            Namespaces::All => vec![None],
            Namespaces::Only(list) => list.iter().cloned().map(Some).collect(),
        };
        let controllers = scopes.into_iter().map(|scope| {
            run_controller(
                client.clone(),
                scope,
                ctx.clone(),
                config.concurrency,
                stop_signal(shutdown.clone(), leader.clone()),
            )
        });
        // A Controller whose PostgresCluster watch never listed (CRD not installed yet) does
        // not finish its graceful shutdown; a stop must not wait for it forever.
        tokio::select! {
            _ = futures::future::join_all(controllers) => tracing::info!("controllers stopped"),
            _ = grace_after_stop(shutdown.clone(), leader.clone()) => tracing::warn!(
                grace = ?STOP_GRACE,
                "controllers did not stop in time: abandoning them"
            ),
        }
    }
    let _ = election.await;
    server
        .await
        .map_err(|e| RunError::ServeHttp(std::io::Error::other(e)))?
        .map_err(RunError::ServeHttp)
}

/// Which managed kinds the server serves, retried until it answers (or shutdown: `None`).
async fn discover_served(client: &Client, shutdown: &watch::Receiver<bool>) -> Option<ServedKinds> {
    loop {
        match discovery::discover(client, &managed_kinds()).await {
            Ok(served) => {
                let missing = served.missing_descriptions();
                if !missing.is_empty() {
                    tracing::warn!(?missing, "the API server does not serve some managed kinds");
                }
                return Some(served);
            }
            Err(error) => tracing::warn!(%error, "discovering the served APIs; retrying"),
        }
        tokio::select! {
            _ = tokio::time::sleep(std::time::Duration::from_secs(5)) => {}
            _ = until(shutdown.clone(), true) => return None,
        }
    }
}

/// One Controller over `scope` (a namespace, or all), until `stop` completes.
async fn run_controller(
    client: Client,
    scope: Option<String>,
    ctx: Arc<Context>,
    concurrency: u16,
    stop: impl Future<Output = ()> + Send + Sync + 'static,
) {
    fn api<K>(client: &Client, scope: &Option<String>) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        match scope {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        }
    }
    // Only objects carrying the cluster label wake the controller: the operator's memory
    // does not grow with unrelated Secrets and ConfigMaps in watched namespaces.
    let owned = watcher::Config::default().labels(naming::LABEL_CLUSTER);
    let clusters: Api<DeserializeGuard<PostgresCluster>> = api(&client, &scope);
    let served = ctx.served.clone();
    Controller::new(clusters, watcher::Config::default())
        .owns_if_served(api::<StatefulSet>(&client, &scope), owned.clone(), &served)
        .owns_if_served(api::<Deployment>(&client, &scope), owned.clone(), &served)
        .owns_if_served(api::<Service>(&client, &scope), owned.clone(), &served)
        .owns_if_served(api::<ConfigMap>(&client, &scope), owned.clone(), &served)
        .owns_if_served(api::<Secret>(&client, &scope), owned.clone(), &served)
        .owns_if_served(
            api::<ServiceAccount>(&client, &scope),
            owned.clone(),
            &served,
        )
        .owns_if_served(api::<Role>(&client, &scope), owned.clone(), &served)
        .owns_if_served(api::<RoleBinding>(&client, &scope), owned.clone(), &served)
        .owns_if_served(
            api::<PodDisruptionBudget>(&client, &scope),
            owned.clone(),
            &served,
        )
        .owns_if_served(
            api::<PersistentVolumeClaim>(&client, &scope),
            owned.clone(),
            &served,
        )
        .owns_if_served(api::<CronJob>(&client, &scope), owned.clone(), &served)
        // Backup, stanza and restore Jobs: their completion moves status and restores on.
        .owns_if_served(api::<Job>(&client, &scope), owned, &served)
        .with_config(controller::Config::default().concurrency(concurrency))
        .graceful_shutdown_on(stop)
        .run(reconcile_guarded, error_policy_guarded, ctx)
        .for_each(|result| async move {
            match result {
                Ok((object, _)) => tracing::debug!(cluster = %object, "reconciled"),
                Err(e) => tracing::warn!(error = %e, "controller"),
            }
        })
        .await;
}

/// `Controller::owns` for a kind the server serves; a watch on a kind it does not serve would
/// fail (404) and retry forever, so that kind is left out (and reported by the reconcile).
trait OwnsIfServed: Sized {
    fn owns_if_served<K>(self, api: Api<K>, config: watcher::Config, served: &ServedKinds) -> Self
    where
        K: Clone + Resource<DynamicType = ()> + DeserializeOwned + Debug + Send + 'static;
}

impl OwnsIfServed for Controller<DeserializeGuard<PostgresCluster>> {
    fn owns_if_served<K>(self, api: Api<K>, config: watcher::Config, served: &ServedKinds) -> Self
    where
        K: Clone + Resource<DynamicType = ()> + DeserializeOwned + Debug + Send + 'static,
    {
        let resource = ApiResource::erase::<K>(&());
        if served.serves(&resource) {
            self.owns(api, config)
        } else {
            tracing::warn!(kind = %resource.kind, api_version = %resource.api_version,
                "the API server does not serve this kind: not watching it");
            self
        }
    }
}

/// A PostgresCluster that does not even parse is reported (Event, log, metric) instead of
/// making the watch fail over and over.
async fn reconcile_guarded(
    guard: Arc<DeserializeGuard<PostgresCluster>>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    match &guard.0 {
        Ok(cluster) => reconcile(Arc::new(cluster.clone()), ctx).await,
        Err(invalid) => {
            report_unparseable(&ctx, &invalid.metadata, &invalid.error).await;
            Ok(Action::await_change())
        }
    }
}

fn error_policy_guarded(
    guard: Arc<DeserializeGuard<PostgresCluster>>,
    error: &Error,
    ctx: Arc<Context>,
) -> Action {
    match &guard.0 {
        Ok(cluster) => error_policy(Arc::new(cluster.clone()), error, ctx),
        Err(_) => Action::await_change(),
    }
}

/// How long controllers may take to finish their reconciles after a stop.
const STOP_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

/// Completes [`STOP_GRACE`] after shutdown or the loss of leadership.
async fn grace_after_stop(shutdown: watch::Receiver<bool>, leader: watch::Receiver<bool>) {
    tokio::select! {
        _ = until(shutdown, true) => {}
        _ = until(leader, false) => {}
    }
    tokio::time::sleep(STOP_GRACE).await;
}

/// Completes when `rx` holds `value` (or its sender is gone).
async fn until(mut rx: watch::Receiver<bool>, value: bool) {
    let _ = rx.wait_for(|v| *v == value).await;
}

/// A `Sync` future (what `graceful_shutdown_on` needs) that completes on shutdown or when
/// leadership is lost.
fn stop_signal(
    shutdown: watch::Receiver<bool>,
    leader: watch::Receiver<bool>,
) -> impl Future<Output = ()> + Send + Sync + 'static {
    let (tx, rx) = oneshot::channel::<()>();
    tokio::spawn(async move {
        tokio::select! {
            _ = until(shutdown, true) => {}
            _ = until(leader, false) => tracing::warn!("lost the leader lease: stopping"),
        }
        let _ = tx.send(());
    });
    async move {
        let _ = rx.await;
    }
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_parse_one_list_or_all() {
        assert_eq!(Namespaces::parse(""), Namespaces::All);
        assert_eq!(Namespaces::parse("*"), Namespaces::All);
        assert_eq!(Namespaces::parse("db"), Namespaces::Only(vec!["db".into()]));
        assert_eq!(
            Namespaces::parse("a, b,"),
            Namespaces::Only(vec!["a".into(), "b".into()])
        );
    }
}
