//! A switchover or failover requested with `spec.patroni.switchover` and the
//! `tusk.rs/trigger-switchover` annotation (the PGO family's semantics): with `enabled: true`,
//! each new annotation value asks once for a switchover to `targetInstance`, or to the
//! healthiest replica when none is named; `type: Failover` promotes the named instance of a
//! cluster that has no healthy primary. `status.patroni.switchover` records the value acted
//! on, so one value never switches twice.
//!
//! Mechanism: the operator writes Patroni's failover key, the `<scope>-failover` Endpoints
//! (`leader`, `member`), through the Kubernetes API, exactly as Patroni's own
//! `manual_failover` does and as patronictl falls back to; the leader's HA loop acts on it
//! within `loop_wait`. Chosen over the alternatives because:
//! - it needs no network path to the pods (an operator outside the cluster, NetworkPolicies)
//!   and no client certificate: Patroni's REST API demands one for state changes, and with
//!   `customTLSSecret` the CA Patroni trusts is the user's, for which the operator holds no key;
//! - it needs no new privilege: the operator already reads pods and writes Endpoints (for
//!   Patroni's Role it grants); exec'ing `patronictl` (PGO's way) would need `pods/exec`,
//!   kube's `ws` feature, a patronictl configured inside the pod with a client certificate
//!   (without one its REST call gets 403, and it falls back to the DCS only on a connection
//!   error) and parsing its output, which changed from Patroni 3 to 4;
//! - the key's format (`leader`, `member`, `scheduled_at` annotations) is the same in Patroni
//!   3.0 and 4.x, and nothing else of Patroni's is written.
//!
//! The price: Patroni's REST API checks a request before storing it, while a key written
//! directly is checked only by the HA loop, which clears an impossible one silently. So
//! [`decide`] makes the REST API's checks first (the target is a member and a healthy replica,
//! the synchronous standby in synchronous mode, a healthy primary exists for a switchover) and
//! refuses with the field path; a refused request writes nothing. What only Patroni can judge
//! (replication lag against `maximum_lag_on_failover`) shows as a request Patroni cleared
//! without a change of primary: reported as failed.
//!
//! Never twice, also across a restart or a lost status write (PGO's rule): the cluster's
//! timeline is recorded in `status.patroni.switchoverTimeline` (a status write the API server
//! confirmed) before the key is written, and a newer timeline means done. The key carries the
//! trigger, that timeline and the old primary beside Patroni's fields, so a later reconcile
//! knows the request as its own and tells "Patroni cleared it without acting" from "not
//! written yet". Disabling keeps the record (unlike PGO, which clears it): enabling again
//! never repeats a switchover already made for the annotation value still present.
//!
//! Touches: lists the member pods and Patroni's Endpoints (no call at all while no trigger is
//! pending), patches `status.patroni.switchoverTimeline`, creates or patches
//! `<scope>-failover`. No pod is deleted or recreated: Patroni demotes and promotes in place.

pub mod decide;
pub mod view;

use std::time::Duration;

use k8s_openapi::api::core::v1::{Endpoints, Pod};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::events::{Event, EventType};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use tusk_api::naming;
use tusk_api::types::PostgresClusterStatus;
use tusk_api::{PostgresCluster, ValidatedCluster};

use self::decide::{Decision, FailoverKey, Finish, PatroniView, Plan, Request};
use super::{publish, Context};

/// Condition reporting the request for the current trigger value.
pub const CONDITION: &str = "SwitchoverCompleted";
/// Event reasons.
pub const REASON_REQUESTED: &str = "SwitchoverRequested";
pub const REASON_COMPLETED: &str = "SwitchoverCompleted";
pub const REASON_FAILED: &str = "SwitchoverFailed";
/// Refusals carry their own reasons ([`decide::REFUSED_UNKNOWN_TARGET`] and the others).
/// Condition reasons besides the Event ones.
pub const REASON_IN_PROGRESS: &str = "SwitchoverInProgress";
pub const REASON_TARGET_MISSED: &str = "SwitchoverTargetMissed";

/// How soon the reconcile looks again while a request is with Patroni (whose HA loop runs
/// every `loop_wait`, 5 s by default).
pub const POLL: Duration = Duration::from_secs(5);

/// Failures of this step.
#[derive(Debug, thiserror::Error)]
pub enum SwitchoverError {
    #[error("reading Patroni's {what} for the switchover: {source}")]
    ReadPatroniState {
        what: &'static str,
        #[source]
        source: kube::Error,
    },
    #[error("recording status.patroni.switchoverTimeline before the switchover: {source}")]
    RecordTimeline {
        #[source]
        source: kube::Error,
    },
    #[error("writing the switchover request into Endpoints {name}: {source}")]
    WriteRequest {
        name: String,
        #[source]
        source: kube::Error,
    },
}

impl SwitchoverError {
    pub fn reason(&self) -> &'static str {
        match self {
            SwitchoverError::ReadPatroniState { .. } => "ReadPatroniStateFailed",
            SwitchoverError::RecordTimeline { .. } => "RecordSwitchoverTimelineFailed",
            SwitchoverError::WriteRequest { .. } => "WriteSwitchoverRequestFailed",
        }
    }
}

/// A change of the [`CONDITION`] condition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConditionChange {
    Keep,
    Set {
        ok: bool,
        reason: &'static str,
        message: String,
    },
    /// The condition described a request that is no longer pending.
    Remove,
}

/// What the step did, for the Events and the status.
pub struct SwitchoverReport {
    /// `status.patroni.switchover` after the step.
    pub acted_on: Option<String>,
    /// `status.patroni.switchoverTimeline` after the step.
    pub recorded_timeline: Option<i64>,
    pub condition: ConditionChange,
    pub events: Vec<Event>,
    /// A request is with Patroni: look again after [`POLL`].
    pub in_flight: bool,
}

/// Acts on a pending trigger. `instances`: the cluster's planned instances; `held`: instances
/// are stopped on purpose (shutdown, restore).
pub async fn reconcile_switchover(
    client: &Client,
    cluster: &PostgresCluster,
    validated: &ValidatedCluster,
    instances: &[String],
    held: bool,
) -> Result<SwitchoverReport, SwitchoverError> {
    let status = cluster.status.clone().unwrap_or_default();
    let patroni = status.patroni.clone().unwrap_or_default();
    let trigger = cluster
        .annotations()
        .get(naming::ANNOTATION_TRIGGER_SWITCHOVER)
        .map(String::as_str);
    let request = Request {
        settings: validated.patroni.switchover.as_ref(),
        trigger,
        acted_on: patroni.switchover.as_deref(),
        recorded_timeline: patroni.switchover_timeline,
        instances,
        held,
    };
    let shown = condition_reason(&status);
    if let Some(decision) = decide::without_patroni(&request) {
        return Ok(report(&decision, &request, shown));
    }
    let view = read_view(client, validated).await?;
    let decision = decide::decide(&request, &view, Timestamp::now());
    if let (Decision::Request(plan), Some(trigger)) = (&decision, request.pending_trigger()) {
        if plan.record_timeline {
            record_timeline(client, cluster, plan.timeline).await?;
        }
        let written = write_request(
            client,
            cluster,
            validated,
            view.failover.as_ref(),
            plan,
            trigger,
        )
        .await?;
        if !written {
            // Someone wrote the key between the read and the write: look again soon, with
            // the timeline recorded.
            let wait = Decision::Wait {
                message: "Patroni's failover key changed while the request was written; \
                          looking again"
                    .into(),
            };
            let mut report = report(&wait, &request, shown);
            report.recorded_timeline = Some(plan.timeline);
            return Ok(report);
        }
    }
    Ok(report(&decision, &request, shown))
}

/// The reason of the [`CONDITION`] condition now shown, if any.
fn condition_reason(status: &PostgresClusterStatus) -> Option<&str> {
    status
        .conditions
        .iter()
        .find(|c| c.type_ == CONDITION)
        .map(|c| c.reason.as_str())
}

/// Status fields, condition and Events for `decision`. Pure.
pub fn report(decision: &Decision, request: &Request, shown: Option<&str>) -> SwitchoverReport {
    let trigger = request.trigger.unwrap_or_default();
    let mut report = SwitchoverReport {
        acted_on: request.acted_on.map(str::to_owned),
        recorded_timeline: request.recorded_timeline,
        condition: ConditionChange::Keep,
        events: Vec::new(),
        in_flight: false,
    };
    let event = |type_: EventType, reason: &str, note: String| Event {
        type_,
        reason: reason.into(),
        note: Some(note),
        action: "Switchover".into(),
        secondary: None,
    };
    let set = |ok: bool, reason: &'static str, message: String| ConditionChange::Set {
        ok,
        reason,
        message,
    };
    match decision {
        Decision::Idle { forget_timeline } => {
            if *forget_timeline {
                report.recorded_timeline = None;
            }
            // A refusal or a wait described a request that is no longer pending.
            let stale = match shown {
                Some(REASON_IN_PROGRESS) => *forget_timeline,
                Some(other) => decide::REFUSALS.contains(&other),
                None => false,
            };
            if stale {
                report.condition = ConditionChange::Remove;
            }
        }
        Decision::Refuse(refusal) => {
            let message = refusal.to_string();
            report.condition = set(false, refusal.reason, message.clone());
            report
                .events
                .push(event(EventType::Warning, refusal.reason, message));
        }
        Decision::Request(plan) => {
            report.recorded_timeline = Some(plan.timeline);
            report.in_flight = true;
            let mut note = format!(
                "{} requested ({}={trigger:?}, timeline {})",
                plan.description,
                naming::ANNOTATION_TRIGGER_SWITCHOVER,
                plan.timeline
            );
            if let Some(caution) = &plan.caution {
                note.push_str(&format!("; {caution}"));
            }
            report.condition = set(false, REASON_IN_PROGRESS, note.clone());
            let type_ = if plan.caution.is_some() {
                EventType::Warning
            } else {
                EventType::Normal
            };
            report.events.push(event(type_, REASON_REQUESTED, note));
        }
        Decision::Wait { message } => {
            report.in_flight = true;
            report.condition = set(false, REASON_IN_PROGRESS, message.clone());
        }
        Decision::Finish(finish) => {
            report.acted_on = Some(trigger.to_owned());
            report.recorded_timeline = None;
            match finish {
                Finish::Completed {
                    primary,
                    timeline,
                    missed_target,
                } => {
                    let mut note = format!(
                        "{} is the primary on timeline {} ({}={trigger:?})",
                        primary.as_deref().unwrap_or("no member"),
                        timeline.map_or("unknown".into(), |t| t.to_string()),
                        naming::ANNOTATION_TRIGGER_SWITCHOVER,
                    );
                    let (type_, reason) = match missed_target {
                        None => (EventType::Normal, REASON_COMPLETED),
                        Some(target) => {
                            note.push_str(&format!("; the requested {target} did not take over"));
                            (EventType::Warning, REASON_TARGET_MISSED)
                        }
                    };
                    report.condition = set(missed_target.is_none(), reason, note.clone());
                    report.events.push(event(type_, REASON_COMPLETED, note));
                }
                Finish::Declined { message } => {
                    report.condition = set(false, REASON_FAILED, message.clone());
                    report
                        .events
                        .push(event(EventType::Warning, REASON_FAILED, message.clone()));
                }
            }
        }
    }
    report
}

/// The member pods and Patroni's Endpoints, selected as Patroni selects them (its `labels`
/// plus the scope label).
async fn read_view(
    client: &Client,
    cluster: &ValidatedCluster,
) -> Result<PatroniView, SwitchoverError> {
    let scope = cluster.names.patroni_scope();
    let selector = ListParams::default().labels(&format!(
        "{}={},{}={scope}",
        naming::LABEL_CLUSTER,
        cluster.name(),
        naming::LABEL_PATRONI
    ));
    let pods: Api<Pod> = Api::namespaced(client.clone(), &cluster.namespace);
    let pods = pods
        .list(&selector)
        .await
        .map_err(|source| SwitchoverError::ReadPatroniState {
            what: "member pods",
            source,
        })?;
    let endpoints: Api<Endpoints> = Api::namespaced(client.clone(), &cluster.namespace);
    let endpoints =
        endpoints
            .list(&selector)
            .await
            .map_err(|source| SwitchoverError::ReadPatroniState {
                what: "Endpoints",
                source,
            })?;
    Ok(PatroniView::from_objects(
        &scope,
        &pods.items,
        &endpoints.items,
        i64::from(cluster.patroni.leader_lease_seconds),
    ))
}

/// Records the timeline before anything is asked of Patroni (a merge patch of that one field).
async fn record_timeline(
    client: &Client,
    cluster: &PostgresCluster,
    timeline: i64,
) -> Result<(), SwitchoverError> {
    let api: Api<PostgresCluster> =
        Api::namespaced(client.clone(), &cluster.namespace().unwrap_or_default());
    let patch = json!({ "status": { "patroni": { "switchoverTimeline": timeline } } });
    api.patch_status(
        &cluster.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await
    .map(drop)
    .map_err(|source| SwitchoverError::RecordTimeline { source })
}

/// Writes the request into `<scope>-failover` as Patroni's `manual_failover` does: a merge
/// patch of the annotations with the read resourceVersion as precondition, or a create with
/// Patroni's labels (so its watch sees the object) and the cluster as owner. `false` when
/// another writer got there first (409).
async fn write_request(
    client: &Client,
    cluster: &PostgresCluster,
    validated: &ValidatedCluster,
    existing: Option<&FailoverKey>,
    plan: &Plan,
    trigger: &str,
) -> Result<bool, SwitchoverError> {
    let name = validated.names.patroni_failover();
    let api: Api<Endpoints> = Api::namespaced(client.clone(), &validated.namespace);
    let annotations = [
        ("leader", plan.leader.clone()),
        ("member", plan.candidate.clone()),
        ("scheduled_at", None),
        (
            naming::ANNOTATION_SWITCHOVER_TRIGGER,
            Some(trigger.to_owned()),
        ),
        (
            naming::ANNOTATION_SWITCHOVER_TIMELINE,
            Some(plan.timeline.to_string()),
        ),
        (naming::ANNOTATION_SWITCHOVER_FROM, plan.leader.clone()),
    ];
    let failed = |source| SwitchoverError::WriteRequest {
        name: name.clone(),
        source,
    };
    if let Some(existing) = existing {
        // Nulls remove what an earlier request left (a stale `scheduled_at`, `switchover-from`).
        let annotations: serde_json::Map<String, serde_json::Value> = annotations
            .iter()
            .map(|(key, value)| ((*key).to_owned(), json!(value)))
            .collect();
        let patch = json!({
            "metadata": {
                "resourceVersion": existing.resource_version,
                "annotations": annotations,
            }
        });
        match api
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => return Ok(true),
            Err(kube::Error::Api(status)) if status.code == 409 => return Ok(false),
            // Deleted since the read: created below.
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(source) => return Err(failed(source)),
        }
    }
    let scope = validated.names.patroni_scope();
    let endpoints = Endpoints {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(validated.namespace.clone()),
            labels: Some(
                [
                    (
                        naming::LABEL_CLUSTER.to_owned(),
                        validated.name().to_owned(),
                    ),
                    (naming::LABEL_PATRONI.to_owned(), scope),
                ]
                .into(),
            ),
            annotations: Some(
                annotations
                    .into_iter()
                    .filter_map(|(k, v)| Some((k.to_owned(), v?)))
                    .collect(),
            ),
            owner_references: cluster.controller_owner_ref(&()).map(|o| vec![o]),
            ..ObjectMeta::default()
        },
        ..Endpoints::default()
    };
    match api.create(&PostParams::default(), &endpoints).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
        Err(source) => Err(failed(source)),
    }
}

/// The Events of the step, on the cluster.
pub async fn publish_report(cluster: &PostgresCluster, ctx: &Context, report: &SwitchoverReport) {
    for event in &report.events {
        match event.type_ {
            EventType::Warning => {
                tracing::warn!(reason = %event.reason, note = ?event.note, "switchover")
            }
            EventType::Normal => {
                tracing::info!(reason = %event.reason, note = ?event.note, "switchover")
            }
        }
        publish(cluster, ctx, event).await;
    }
}

/// Puts the step's fields and condition into the status about to be written.
pub fn write_status(
    next: &mut PostgresClusterStatus,
    report: &SwitchoverReport,
    generation: Option<i64>,
    now: Timestamp,
) {
    if next.patroni.is_some() || report.acted_on.is_some() || report.recorded_timeline.is_some() {
        let patroni = next.patroni.get_or_insert_with(Default::default);
        patroni.switchover = report.acted_on.clone();
        patroni.switchover_timeline = report.recorded_timeline;
    }
    match &report.condition {
        ConditionChange::Keep => {}
        ConditionChange::Set {
            ok,
            reason,
            message,
        } => super::status::set_condition(
            &mut next.conditions,
            CONDITION,
            *ok,
            reason,
            message.clone(),
            generation,
            now,
        ),
        ConditionChange::Remove => next.conditions.retain(|c| c.type_ != CONDITION),
    }
}
