//! Deleting a cluster: everything the operator applies is owned by the `PostgresCluster` and
//! garbage-collected with it, but Patroni writes its DCS objects itself (the Endpoints
//! `<c>-ha-sync` and `<c>-ha-failover`, and `<c>-ha`/`<c>-ha-config` again whenever they are
//! missing), unowned, and keeps writing them until its pod has stopped: a member shutting down
//! in synchronous mode re-creates `<c>-ha-sync` after the garbage collector removed it. So the
//! cluster carries the finalizer [`naming::FINALIZER`], and its deletion goes:
//!
//! 1. delete the instance StatefulSets (their pods stop; Patroni's last writes happen now),
//! 2. once no instance pod is left, delete every Endpoints labelled for the cluster,
//! 3. remove the finalizer; the garbage collector deletes the rest, PVCs included.
//!
//! Holds the client.

use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Endpoints, Pod};
use k8s_openapi::Resource as _;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::Client;
use serde_json::json;
use tusk_api::{naming, PostgresCluster};

/// How often a deletion looks again while instance pods are stopping.
const STOPPING_POLL: Duration = Duration::from_secs(5);

/// A failed step of a deletion or of adding the finalizer.
#[derive(Debug, thiserror::Error)]
pub enum DeletionError {
    #[error("could not {action} the finalizer {finalizer}: {source}", finalizer = naming::FINALIZER)]
    Finalizer {
        action: &'static str,
        #[source]
        source: kube::Error,
    },
    #[error("could not {action} {kind} of the deleted cluster: {source}")]
    CleanUp {
        action: &'static str,
        kind: &'static str,
        #[source]
        source: kube::Error,
    },
}

fn has_finalizer(cluster: &PostgresCluster) -> bool {
    cluster
        .metadata
        .finalizers
        .iter()
        .flatten()
        .any(|f| f == naming::FINALIZER)
}

/// Adds the finalizer to a cluster that is not being deleted and lacks it; returns the cluster
/// as stored after the patch (the reconcile goes on with its resourceVersion), or `None` when
/// nothing was written.
pub async fn ensure_finalizer(
    client: &Client,
    cluster: &PostgresCluster,
) -> Result<Option<PostgresCluster>, DeletionError> {
    if has_finalizer(cluster) || cluster.metadata.deletion_timestamp.is_some() {
        return Ok(None);
    }
    let (Some(namespace), Some(name)) = (&cluster.metadata.namespace, &cluster.metadata.name)
    else {
        return Ok(None);
    };
    let mut finalizers = cluster.metadata.finalizers.clone().unwrap_or_default();
    finalizers.push(naming::FINALIZER.to_owned());
    let updated = set_finalizers(client, cluster, namespace, name, finalizers)
        .await
        .map_err(|source| DeletionError::Finalizer {
            action: "add",
            source,
        })?;
    Ok(Some(updated))
}

/// One step of a deleted cluster's clean-up; the finalizer goes once nothing of Patroni's is
/// left to write.
pub async fn clean_up(client: &Client, cluster: &PostgresCluster) -> Result<Action, DeletionError> {
    let (Some(namespace), Some(name)) = (&cluster.metadata.namespace, &cluster.metadata.name)
    else {
        return Ok(Action::await_change());
    };
    if !has_finalizer(cluster) {
        return Ok(Action::await_change());
    }
    let clean_up_error = |action, kind| {
        move |source| DeletionError::CleanUp {
            action,
            kind,
            source,
        }
    };
    let instances = ListParams::default().labels(&format!(
        "{},{}",
        naming::cluster_selector(name),
        naming::LABEL_INSTANCE
    ));
    let sets: Api<StatefulSet> = Api::namespaced(client.clone(), namespace);
    for set in sets
        .list(&instances)
        .await
        .map_err(clean_up_error("list", StatefulSet::KIND))?
    {
        let Some(set_name) = set.metadata.name.as_deref() else {
            continue;
        };
        if set.metadata.deletion_timestamp.is_some() {
            continue;
        }
        match sets.delete(set_name, &DeleteParams::background()).await {
            Ok(_) => {}
            Err(e) if not_found(&e) => {}
            Err(source) => return Err(clean_up_error("delete", StatefulSet::KIND)(source)),
        }
    }
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let running = pods
        .list(&instances)
        .await
        .map_err(clean_up_error("list", Pod::KIND))?;
    if !running.items.is_empty() {
        return Ok(Action::requeue(STOPPING_POLL));
    }
    let endpoints: Api<Endpoints> = Api::namespaced(client.clone(), namespace);
    let labelled = ListParams::default().labels(&naming::cluster_selector(name));
    for object in endpoints
        .list(&labelled)
        .await
        .map_err(clean_up_error("list", Endpoints::KIND))?
    {
        let Some(object_name) = object.metadata.name.as_deref() else {
            continue;
        };
        match endpoints
            .delete(object_name, &DeleteParams::background())
            .await
        {
            Ok(_) => {}
            Err(e) if not_found(&e) => {}
            Err(source) => return Err(clean_up_error("delete", Endpoints::KIND)(source)),
        }
    }
    let remaining: Vec<String> = cluster
        .metadata
        .finalizers
        .iter()
        .flatten()
        .filter(|f| *f != naming::FINALIZER)
        .cloned()
        .collect();
    match set_finalizers(client, cluster, namespace, name, remaining).await {
        Ok(_) => Ok(Action::await_change()),
        Err(e) if not_found(&e) => Ok(Action::await_change()),
        Err(source) => Err(DeletionError::Finalizer {
            action: "remove",
            source,
        }),
    }
}

/// Sets `metadata.finalizers` with a merge patch that carries the resourceVersion the
/// reconcile saw: if anyone changed the object meanwhile, the patch fails with a conflict and
/// the next reconcile starts from the new list (no finalizer of someone else is lost).
async fn set_finalizers(
    client: &Client,
    cluster: &PostgresCluster,
    namespace: &str,
    name: &str,
    finalizers: Vec<String>,
) -> Result<PostgresCluster, kube::Error> {
    let patch = json!({"metadata": {
        "finalizers": finalizers,
        "resourceVersion": cluster.metadata.resource_version,
    }});
    Api::<PostgresCluster>::namespaced(client.clone(), namespace)
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
}

fn not_found(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 404)
}
