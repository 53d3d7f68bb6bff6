//! The `PostgresCluster` status a person reads: conditions `Ready`, `Progressing`, `Degraded`
//! (with observedGeneration; lastTransitionTime changes only when a condition's status does),
//! per-set instance counts from the StatefulSets, phase, primary and `readyInstances`.
//! [`next_status`] is pure; [`patch_status`] writes it, and only when it changed.

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::Client;
use serde_json::Value;
use tusk_api::naming;
use tusk_api::types::{InstanceSetStatus, PostgresClusterStatus};
use tusk_api::PostgresCluster;

use super::error::StatusError;

pub const READY: &str = "Ready";
pub const PROGRESSING: &str = "Progressing";
pub const DEGRADED: &str = "Degraded";
/// `Degraded` reason (and Warning Event reason) when the server lacks an API for some objects.
pub const REASON_API_NOT_SERVED: &str = "APINotServed";

/// How the reconcile ended, as far as the status is concerned.
#[derive(Clone, Debug)]
pub enum Outcome {
    /// Objects applied. `desired` instances in total, `primary` as Patroni labelled it;
    /// `not_served` says which objects were skipped because the server lacks their API.
    Applied {
        desired: u32,
        primary: Option<String>,
        statefulsets: Vec<StatefulSet>,
        not_served: Option<String>,
    },
    /// `spec.paused`: nothing was touched.
    Paused,
    /// The spec did not validate; `message` lists the field errors.
    InvalidSpec { message: String },
    /// A step failed; `reason` is the error's category.
    Failed { reason: String, message: String },
}

/// StatefulSets of the cluster, for [`Outcome::Applied`].
pub async fn list_statefulsets(
    client: &Client,
    namespace: &str,
    cluster: &str,
) -> Result<Vec<StatefulSet>, StatusError> {
    let api: Api<StatefulSet> = Api::namespaced(client.clone(), namespace);
    let params = ListParams::default().labels(&naming::cluster_selector(cluster));
    api.list(&params)
        .await
        .map(|l| l.items)
        .map_err(|source| StatusError::ListStatefulSets { source })
}

/// The status after a reconcile that ended in `outcome`, starting from `current`.
pub fn next_status(
    current: &PostgresClusterStatus,
    generation: Option<i64>,
    outcome: &Outcome,
    now: Timestamp,
) -> PostgresClusterStatus {
    let mut status = current.clone();
    let mut set = |type_: &str, ok: bool, reason: &str, message: String| {
        set_condition(
            &mut status.conditions,
            type_,
            ok,
            reason,
            message,
            generation,
            now,
        )
    };
    match outcome {
        Outcome::Paused => {
            set(
                PROGRESSING,
                false,
                "Paused",
                "spec.paused is true: no object is changed".into(),
            );
            status.phase = Some("Paused".into());
        }
        Outcome::InvalidSpec { message } => {
            set(DEGRADED, true, "InvalidSpec", message.clone());
            status.phase = Some("Degraded".into());
        }
        Outcome::Failed { reason, message } => {
            set(DEGRADED, true, reason, message.clone());
            status.phase = Some("Degraded".into());
        }
        Outcome::Applied {
            desired,
            primary,
            statefulsets,
            not_served,
        } => {
            let instances = instance_sets(statefulsets);
            let ready: i32 = instances.iter().map(|s| s.ready_replicas).sum();
            let current: i32 = instances.iter().map(|s| s.replicas).sum();
            let updated: i32 = instances.iter().map(|s| s.updated_replicas).sum();
            let desired = *desired as i32;
            let all_ready = ready == desired && (desired == 0 || primary.is_some());
            let rolled_out = current == desired && updated == current;
            let ready_msg = format!("{ready}/{desired} instances ready");
            match (all_ready, primary) {
                (true, _) => set(READY, true, "AllInstancesReady", ready_msg),
                (false, None) if desired > 0 => set(
                    READY,
                    false,
                    "NoPrimary",
                    format!("{ready_msg}; no instance is the primary"),
                ),
                (false, _) => set(READY, false, "InstancesNotReady", ready_msg),
            }
            if rolled_out && all_ready {
                set(
                    PROGRESSING,
                    false,
                    "Reconciled",
                    "every instance runs the current spec".into(),
                );
            } else {
                set(
                    PROGRESSING,
                    true,
                    "RollingOut",
                    format!("{updated}/{desired} instances updated, {ready} ready"),
                );
            }
            match not_served {
                Some(message) => set(DEGRADED, true, REASON_API_NOT_SERVED, message.clone()),
                None => set(
                    DEGRADED,
                    false,
                    "ReconcileSucceeded",
                    "every object is applied".into(),
                ),
            }
            status.phase = Some(
                if desired == 0 {
                    "Shutdown"
                } else if all_ready && rolled_out {
                    "Running"
                } else {
                    "Progressing"
                }
                .into(),
            );
            status.primary = primary.clone();
            status.ready_instances = Some(format!("{ready}/{desired}"));
            status.instances = instances;
            status.observed_generation = generation;
        }
    }
    status
}

/// The message of a `Degraded` condition caused by a missing API, if that is the state.
pub fn not_served_message(status: &PostgresClusterStatus) -> Option<String> {
    status
        .conditions
        .iter()
        .find(|c| c.type_ == DEGRADED && c.reason == REASON_API_NOT_SERVED && c.status == "True")
        .map(|c| c.message.clone())
}

/// `next` reports objects skipped for a missing API and `current` did not report the same:
/// the moment for one Warning Event.
pub fn newly_not_served(current: &PostgresClusterStatus, next: &PostgresClusterStatus) -> bool {
    let now = not_served_message(next);
    now.is_some() && now != not_served_message(current)
}

/// Counts per instance set, from each StatefulSet's own status.
fn instance_sets(statefulsets: &[StatefulSet]) -> Vec<InstanceSetStatus> {
    let mut sets: Vec<InstanceSetStatus> = Vec::new();
    for sts in statefulsets {
        let Some(name) = sts
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(naming::LABEL_INSTANCE_SET))
        else {
            continue;
        };
        let idx = match sets.iter().position(|s| &s.name == name) {
            Some(i) => i,
            None => {
                sets.push(InstanceSetStatus {
                    name: name.clone(),
                    ..Default::default()
                });
                sets.len() - 1
            }
        };
        let st = sts.status.clone().unwrap_or_default();
        sets[idx].replicas += st.replicas;
        sets[idx].ready_replicas += st.ready_replicas.unwrap_or(0);
        sets[idx].updated_replicas += st.updated_replicas.unwrap_or(0);
    }
    sets.sort_by(|a, b| a.name.cmp(&b.name));
    sets
}

/// Sets condition `type_`; its lastTransitionTime moves only when its status flips.
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    type_: &str,
    ok: bool,
    reason: &str,
    message: String,
    generation: Option<i64>,
    now: Timestamp,
) {
    let status = if ok { "True" } else { "False" };
    set_condition_status(conditions, type_, status, reason, message, generation, now);
}

/// [`set_condition`] with the status spelled out: `True`, `False` or `Unknown` (not yet
/// known, e.g. WAL archiving before the first segment).
pub fn set_condition_status(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: &str,
    reason: &str,
    message: String,
    generation: Option<i64>,
    now: Timestamp,
) {
    let status = status.to_owned();
    let previous = conditions.iter().position(|c| c.type_ == type_);
    let last_transition_time = match previous.map(|i| &conditions[i]) {
        Some(c) if c.status == status => c.last_transition_time.clone(),
        _ => Time(now),
    };
    let condition = Condition {
        type_: type_.to_owned(),
        status,
        reason: reason.to_owned(),
        message,
        observed_generation: generation,
        last_transition_time,
    };
    match previous {
        Some(i) => conditions[i] = condition,
        None => conditions.push(condition),
    }
}

/// Now, to the second: `metav1.Time` has no sub-second part, and a status compared after a
/// round trip through the API server must be equal to the one computed.
pub fn now() -> Timestamp {
    let now = Timestamp::now();
    Timestamp::from_second(now.as_second()).unwrap_or(now)
}

/// Writes `next` when it differs from `current`; returns whether it wrote. A JSON merge patch
/// with explicit nulls for fields that disappeared, at any depth (a merge patch keeps what it
/// omits, so `status.patroni.switchoverTimeline` going away needs its null).
pub async fn patch_status(
    client: &Client,
    cluster: &PostgresCluster,
    current: &PostgresClusterStatus,
    next: &PostgresClusterStatus,
) -> Result<bool, StatusError> {
    if current == next {
        return Ok(false);
    }
    let mut body = serde_json::to_value(next).expect("status serializes");
    null_removed(
        &mut body,
        &serde_json::to_value(current).expect("status serializes"),
    );
    let namespace = cluster.metadata.namespace.as_deref().unwrap_or("default");
    let name = cluster.metadata.name.as_deref().unwrap_or_default();
    let api: Api<PostgresCluster> = Api::namespaced(client.clone(), namespace);
    api.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({ "status": body })),
    )
    .await
    .map_err(|source| StatusError::PatchStatus { source })?;
    Ok(true)
}

/// Adds an explicit null to `new` for every object key of `old` it lacks, recursing into
/// objects both have (arrays are replaced whole by a merge patch).
fn null_removed(new: &mut Value, old: &Value) {
    if let (Value::Object(new), Value::Object(old)) = (new, old) {
        for (key, old_value) in old {
            match new.get_mut(key) {
                Some(new_value) => null_removed(new_value, old_value),
                None => {
                    new.insert(key.clone(), Value::Null);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_that_disappear_at_any_depth_become_nulls() {
        let mut new = serde_json::json!({"patroni": {"switchover": "a"}, "phase": "Running"});
        let old = serde_json::json!({
            "patroni": {"switchover": "b", "switchoverTimeline": 3},
            "primary": "x",
            "conditions": [{"type": "Ready"}]
        });
        null_removed(&mut new, &old);
        assert_eq!(
            new,
            serde_json::json!({
                "patroni": {"switchover": "a", "switchoverTimeline": null},
                "phase": "Running",
                "primary": null,
                "conditions": null
            })
        );
    }

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(second).unwrap()
    }

    fn condition<'a>(s: &'a PostgresClusterStatus, t: &str) -> &'a Condition {
        s.conditions.iter().find(|c| c.type_ == t).unwrap()
    }

    #[test]
    fn transition_time_moves_only_on_status_change() {
        let invalid = Outcome::InvalidSpec {
            message: "spec.instances: duplicate".into(),
        };
        let first = next_status(&Default::default(), Some(1), &invalid, at(100));
        let again = next_status(&first, Some(2), &invalid, at(200));
        let degraded = condition(&again, DEGRADED);
        assert_eq!(degraded.last_transition_time, Time(at(100)));
        assert_eq!(degraded.observed_generation, Some(2));
        let fixed = Outcome::Applied {
            desired: 0,
            primary: None,
            statefulsets: vec![],
            not_served: None,
        };
        let healed = next_status(&again, Some(3), &fixed, at(300));
        let degraded = condition(&healed, DEGRADED);
        assert_eq!(degraded.status, "False");
        assert_eq!(degraded.last_transition_time, Time(at(300)));
    }

    #[test]
    fn ready_counts_come_from_statefulsets() {
        let sts: StatefulSet = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "hippo-instance1-abcd", "labels": {"tusk.rs/instance-set": "instance1"}},
            "status": {"replicas": 1, "readyReplicas": 1, "updatedReplicas": 1}
        }))
        .unwrap();
        let outcome = Outcome::Applied {
            desired: 3,
            primary: Some("hippo-instance1-abcd".into()),
            statefulsets: vec![sts],
            not_served: None,
        };
        let s = next_status(&Default::default(), Some(1), &outcome, at(1));
        assert_eq!(s.ready_instances.as_deref(), Some("1/3"));
        assert_eq!(s.instances[0].ready_replicas, 1);
        assert_eq!(condition(&s, READY).status, "False");
        assert_eq!(condition(&s, PROGRESSING).status, "True");
        assert_eq!(s.phase.as_deref(), Some("Progressing"));
    }

    #[test]
    fn a_missing_api_degrades_once_and_clears_when_served() {
        let skipped = Outcome::Applied {
            desired: 0,
            primary: None,
            statefulsets: vec![],
            not_served: Some("the API server does not serve PodDisruptionBudget".into()),
        };
        let first = next_status(&Default::default(), Some(1), &skipped, at(1));
        assert_eq!(condition(&first, DEGRADED).status, "True");
        assert_eq!(condition(&first, DEGRADED).reason, REASON_API_NOT_SERVED);
        assert!(newly_not_served(&Default::default(), &first));
        let again = next_status(&first, Some(1), &skipped, at(2));
        assert!(
            !newly_not_served(&first, &again),
            "one Event, not one per resync"
        );
        let served = Outcome::Applied {
            desired: 0,
            primary: None,
            statefulsets: vec![],
            not_served: None,
        };
        let healed = next_status(&again, Some(1), &served, at(3));
        assert_eq!(condition(&healed, DEGRADED).status, "False");
        assert_eq!(not_served_message(&healed), None);
    }
}
