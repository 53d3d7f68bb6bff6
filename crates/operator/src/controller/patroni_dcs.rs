//! Patroni's dynamic configuration on a RUNNING cluster: `spec.patroni.dynamicConfiguration`,
//! the timings, parameters, pg_hba and `spec.standby` (promotion) after the first bootstrap.
//!
//! Why this step exists: Patroni writes `bootstrap.dcs` into its DCS only when it initialises
//! the cluster; later edits of the `<c>-config` ConfigMap never reach it. How Patroni 3.0.2
//! keeps that configuration in Kubernetes (`patroni/dcs/kubernetes.py`, `use_endpoints: true`):
//! - the object is `<scope>-config` (`config_path`; Tusk's scope is `<c>-ha`, so the Endpoints
//!   `<c>-ha-config`), and the JSON lives in its annotation `config` (`_CONFIG`);
//!   `_cluster_from_nodes` reads `annotations.get(self._CONFIG)` into `ClusterConfig.from_node`
//!   on every HA loop, so a new annotation takes effect on the next loop;
//! - `set_config_value(value, index)` -> `patch_or_create_config({'config': value}, index)`:
//!   a PATCH of the annotation with the read `resourceVersion` as precondition (409 on a
//!   concurrent write); `patronictl edit-config` and `PATCH /config` (api.py) go through it;
//! - Patroni itself writes the annotation only at bootstrap (`ha.py`: the whole
//!   `dynamic_configuration`); at runtime only callers write it, and the one key Patroni's
//!   own tooling adds is `pause` (`patronictl pause` -> `PATCH /config {"pause": true}`).
//!
//! Ownership decision: the manifest is the truth for every top-level key, as for `tusk
//! local`'s PATCH: a key the manifest no longer renders is removed, one changed by `patronictl
//! edit-config` is put back (the Event names it). The exception is Patroni's runtime state
//! ([`PATRONI_RUNTIME_KEYS`]), kept as it is unless the manifest renders it: dropping `pause`
//! would end a maintenance window and let Patroni fail over in the middle of it. Promotion of a standby
//! cluster is the removal of `standby_cluster`, which Tusk always owns.
//!
//! Nothing is written while the cluster is not initialised (no Endpoints or no annotation:
//! Patroni will bootstrap from the ConfigMap) or while instances are held (shutdown, restore:
//! the restore resets the Endpoints on purpose). Holds the client; the decision
//! ([`next_configuration`]) is pure.

use k8s_openapi::api::core::v1::Endpoints;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Event, EventType};
use kube::Client;
use serde_json::{json, Map, Value};
use tusk_api::naming::PATRONI_ANNOTATION_CONFIG;
use tusk_api::{PostgresCluster, ValidatedCluster};
use tusk_config::merge::same_setting;
use tusk_config::patroni::dynamic_configuration;

use super::{publish, Context};

/// Event reason when the operator changed Patroni's dynamic configuration.
pub const REASON_APPLIED: &str = "PatroniConfigurationApplied";

/// Top-level keys Patroni's own tooling writes at runtime; kept unless the manifest renders
/// them (see the module header).
pub const PATRONI_RUNTIME_KEYS: &[&str] = &["pause"];

/// Failures of this step.
#[derive(Debug, thiserror::Error)]
pub enum PatroniDcsError {
    #[error("reading Endpoints {name}: {source}")]
    ReadConfiguration {
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("writing the dynamic configuration into Endpoints {name}: {source}")]
    WriteConfiguration {
        name: String,
        #[source]
        source: kube::Error,
    },
}

impl PatroniDcsError {
    pub fn reason(&self) -> &'static str {
        match self {
            PatroniDcsError::ReadConfiguration { .. } => "ReadPatroniConfigurationFailed",
            PatroniDcsError::WriteConfiguration { .. } => "WritePatroniConfigurationFailed",
        }
    }
}

/// What the step did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DcsOutcome {
    /// Instances are held (shutdown, restore): the DCS is not touched.
    Held,
    /// Patroni has not initialised the cluster: it will write `bootstrap.dcs` itself.
    NotInitialised,
    /// The DCS already holds what the manifest renders.
    InSync,
    /// The annotation was replaced; these top-level keys changed.
    Applied { changed_keys: Vec<String> },
    /// Someone wrote the configuration between the read and the write: nothing was
    /// overwritten, the next reconcile (soon) compares again.
    Conflict,
}

impl DcsOutcome {
    /// The reconcile should come back soon rather than on the idle resync.
    pub fn retry_soon(&self) -> bool {
        matches!(self, DcsOutcome::Conflict)
    }
}

/// The configuration to store and the top-level keys whose value changes (sorted), from what
/// the DCS holds and what the manifest renders. No keys = nothing to write.
pub fn next_configuration(current: &Value, desired: &Value) -> (Value, Vec<String>) {
    let empty = Map::new();
    let current = current.as_object().unwrap_or(&empty);
    let mut next = desired.as_object().cloned().unwrap_or_default();
    for key in PATRONI_RUNTIME_KEYS {
        if let (Some(value), false) = (current.get(*key), next.contains_key(*key)) {
            next.insert((*key).to_owned(), value.clone());
        }
    }
    let mut changed: Vec<String> = current
        .keys()
        .chain(next.keys())
        .filter(|key| match (current.get(*key), next.get(*key)) {
            (Some(a), Some(b)) => !same_setting(a, b),
            _ => true,
        })
        .cloned()
        .collect();
    changed.sort();
    changed.dedup();
    (Value::Object(next), changed)
}

/// Brings the `config` annotation of `<c>-ha-config` to what the manifest renders.
/// `instances_held`: `spec.shutdown` or a restore phase keeps instances stopped.
pub async fn reconcile_dynamic_configuration(
    client: &Client,
    cluster: &ValidatedCluster,
    instances_held: bool,
) -> Result<DcsOutcome, PatroniDcsError> {
    if instances_held {
        return Ok(DcsOutcome::Held);
    }
    let name = cluster.names.patroni_config_service();
    let api: Api<Endpoints> = Api::namespaced(client.clone(), &cluster.namespace);
    let endpoints =
        api.get_opt(&name)
            .await
            .map_err(|source| PatroniDcsError::ReadConfiguration {
                name: name.clone(),
                source,
            })?;
    let Some(endpoints) = endpoints else {
        return Ok(DcsOutcome::NotInitialised);
    };
    let stored = endpoints
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(PATRONI_ANNOTATION_CONFIG));
    let Some(stored) = stored else {
        return Ok(DcsOutcome::NotInitialised);
    };
    // Patroni reads an unparseable annotation as `{}` (`ClusterConfig.from_node`: its
    // defaults); so does this step, and the write below repairs it.
    let current: Value = serde_json::from_str(stored).unwrap_or_else(|_| json!({}));
    let (next, changed_keys) = next_configuration(&current, &dynamic_configuration(cluster));
    if changed_keys.is_empty() {
        return Ok(DcsOutcome::InSync);
    }
    // A merge patch touching only this annotation, with the resourceVersion read above as
    // precondition: exactly what `set_config_value` sends, so Patroni's leader lock and the
    // other annotations are left alone and a concurrent writer wins rather than being erased.
    let patch = json!({
        "metadata": {
            "resourceVersion": endpoints.metadata.resource_version,
            "annotations": { PATRONI_ANNOTATION_CONFIG: next.to_string() },
        }
    });
    match api
        .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(DcsOutcome::Applied { changed_keys }),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(DcsOutcome::Conflict),
        // Deleted since the read (a restore resetting the DCS): Patroni bootstraps again.
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(DcsOutcome::NotInitialised),
        Err(source) => Err(PatroniDcsError::WriteConfiguration { name, source }),
    }
}

/// A Normal Event naming the changed top-level keys (never values: keep the Event short).
pub async fn publish_outcome(cluster: &PostgresCluster, ctx: &Context, outcome: &DcsOutcome) {
    match outcome {
        DcsOutcome::Applied { changed_keys } => {
            tracing::info!(keys = ?changed_keys, "Patroni dynamic configuration applied");
            let event = Event {
                type_: EventType::Normal,
                reason: REASON_APPLIED.into(),
                note: Some(format!(
                    "Patroni dynamic configuration updated: {}",
                    changed_keys.join(", ")
                )),
                action: "ApplyPatroniConfiguration".into(),
                secondary: None,
            };
            publish(cluster, ctx, &event).await;
        }
        DcsOutcome::Conflict => {
            tracing::info!("Patroni configuration changed concurrently; comparing again soon");
        }
        DcsOutcome::Held | DcsOutcome::NotInitialised | DcsOutcome::InSync => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_settings_change_nothing_even_as_strings() {
        let current = json!({"ttl": "15", "postgresql": {"parameters": {"max_connections": 100}}});
        let desired = json!({"ttl": 15, "postgresql": {"parameters": {"max_connections": "100"}}});
        let (_, changed) = next_configuration(&current, &desired);
        assert!(changed.is_empty(), "{changed:?}");
    }

    #[test]
    fn the_manifest_owns_every_key_except_patronis_pause() {
        let current = json!({
            "ttl": 30, "pause": true, "synchronous_mode": true,
            "postgresql": {"parameters": {"work_mem": "4MB", "dropped": "1"}}
        });
        let desired = json!({"ttl": 15, "postgresql": {"parameters": {"work_mem": "4MB"}}});
        let (next, changed) = next_configuration(&current, &desired);
        assert_eq!(
            next,
            json!({"ttl": 15, "pause": true, "postgresql": {"parameters": {"work_mem": "4MB"}}})
        );
        assert_eq!(changed, ["postgresql", "synchronous_mode", "ttl"]);
    }

    #[test]
    fn a_rendered_pause_wins_and_an_unparseable_document_is_replaced() {
        let (next, changed) = next_configuration(&json!({"pause": true}), &json!({"pause": false}));
        assert_eq!(
            (next, changed),
            (json!({"pause": false}), vec!["pause".into()])
        );
        let (next, changed) = next_configuration(&json!("garbage"), &json!({"ttl": 15}));
        assert_eq!((next, changed), (json!({"ttl": 15}), vec!["ttl".into()]));
    }
}
