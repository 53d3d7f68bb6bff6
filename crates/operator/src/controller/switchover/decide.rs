//! The switchover decision, pure: the request (`spec.patroni.switchover`, the trigger
//! annotation, `status.patroni`), Patroni's state ([`PatroniView`]) and the time in, one
//! [`Decision`] out. No I/O; [`super`] reads and writes.

use k8s_openapi::jiff::Timestamp;
use tusk_api::model::SwitchoverSettings;
use tusk_api::naming;
use tusk_api::types::SwitchoverType;

pub use super::view::{FailoverKey, LeaderLock, Member, PatroniView};

/// Field paths the refusals name.
pub const FIELD_TARGET: &str = "spec.patroni.switchover.targetInstance";
pub const FIELD_TYPE: &str = "spec.patroni.switchover.type";
pub const FIELD_SWITCHOVER: &str = "spec.patroni.switchover";

/// What the reconcile knows of the request.
#[derive(Clone, Copy, Debug)]
pub struct Request<'a> {
    /// `spec.patroni.switchover` as validated.
    pub settings: Option<&'a SwitchoverSettings>,
    /// The `tusk.rs/trigger-switchover` annotation.
    pub trigger: Option<&'a str>,
    /// `status.patroni.switchover`: the trigger value last acted on.
    pub acted_on: Option<&'a str>,
    /// `status.patroni.switchoverTimeline`: the timeline recorded before the request was
    /// written.
    pub recorded_timeline: Option<i64>,
    /// The cluster's instances (StatefulSet names) as planned.
    pub instances: &'a [String],
    /// Instances are stopped on purpose (`spec.shutdown`, a restore).
    pub held: bool,
}

impl Request<'_> {
    /// A trigger value that has not been acted on, while switchovers are enabled.
    pub fn pending_trigger(&self) -> Option<&str> {
        self.settings.filter(|s| s.enabled)?;
        self.trigger
            .filter(|t| !t.is_empty() && Some(*t) != self.acted_on)
    }
}

/// Refusal reasons (Event and condition). Kubernetes folds Events of one reason into one
/// series and keeps the first note, so each kind of refusal has its own reason.
pub const REFUSED_UNKNOWN_TARGET: &str = "SwitchoverTargetUnknown";
pub const REFUSED_TARGET_IS_PRIMARY: &str = "SwitchoverTargetIsPrimary";
pub const REFUSED_UNHEALTHY_TARGET: &str = "SwitchoverTargetUnhealthy";
pub const REFUSED_NOT_SYNCHRONOUS: &str = "SwitchoverTargetNotSynchronous";
pub const REFUSED_NO_PRIMARY: &str = "SwitchoverNoHealthyPrimary";
pub const REFUSED_NO_CANDIDATE: &str = "SwitchoverNoCandidate";
pub const REFUSED_NOT_NOW: &str = "SwitchoverNotPossible";
pub const REFUSALS: &[&str] = &[
    REFUSED_UNKNOWN_TARGET,
    REFUSED_TARGET_IS_PRIMARY,
    REFUSED_UNHEALTHY_TARGET,
    REFUSED_NOT_SYNCHRONOUS,
    REFUSED_NO_PRIMARY,
    REFUSED_NO_CANDIDATE,
    REFUSED_NOT_NOW,
];

/// A request that cannot be carried out now; nothing is written. Displays as
/// `field: message`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub reason: &'static str,
    pub field: &'static str,
    pub message: String,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

fn refuse(reason: &'static str, field: &'static str, message: impl Into<String>) -> Refusal {
    Refusal {
        reason,
        field,
        message: message.into(),
    }
}

/// The failover key to write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// The timeline before the switchover; recorded in the status before the key is written.
    pub timeline: i64,
    /// The timeline is not in the status yet (a first attempt for this trigger).
    pub record_timeline: bool,
    /// Member (pod) that steps down: the healthy primary; `None` for a failover without one.
    pub leader: Option<String>,
    /// Member (pod) to promote; `None` lets Patroni pick the healthiest replica.
    pub candidate: Option<String>,
    /// For the Event: what is requested, in instance names.
    pub description: String,
    /// A risk the user takes (a failover to a replica that is not the synchronous standby).
    pub caution: Option<String>,
}

/// How a request ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Finish {
    /// The timeline moved on, or (in a standby cluster, whose timeline does not move) the
    /// lock changed hands. `primary` is the instance holding the lock now.
    Completed {
        primary: Option<String>,
        timeline: Option<i64>,
        /// The named target when another instance took over.
        missed_target: Option<String>,
    },
    /// Patroni cleared the request without a change of primary.
    Declined { message: String },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Nothing to do. `forget_timeline`: no trigger is pending, a recorded timeline is stale.
    Idle {
        forget_timeline: bool,
    },
    Refuse(Refusal),
    Request(Plan),
    /// A request is with Patroni; look again soon.
    Wait {
        message: String,
    },
    Finish(Finish),
}

/// Before reading Patroni's state: `Some` when the request alone decides (switchovers
/// disabled, no trigger, or the trigger was acted on), so an idle cluster costs no API call.
pub fn without_patroni(request: &Request) -> Option<Decision> {
    let enabled = request.settings.is_some_and(|s| s.enabled);
    if !enabled {
        // Disabling stops acting and keeps the record: enabling again never repeats a
        // switchover already made for the annotation value that is still there.
        return Some(Decision::Idle {
            forget_timeline: false,
        });
    }
    if request.pending_trigger().is_none() {
        return Some(Decision::Idle {
            forget_timeline: true,
        });
    }
    None
}

/// The decision for a pending trigger, given Patroni's state at `now`.
pub fn decide(request: &Request, view: &PatroniView, now: Timestamp) -> Decision {
    if let Some(idle) = without_patroni(request) {
        return idle;
    }
    let (Some(settings), Some(trigger)) = (request.settings, request.pending_trigger()) else {
        return Decision::Idle {
            forget_timeline: true,
        };
    };
    let timeline = view.timeline(now);
    if let Some(recorded) = request.recorded_timeline {
        // A newer timeline means a primary was promoted since the timeline was recorded:
        // the request is done, even if the status write that said so was lost.
        if timeline.is_some_and(|t| t > recorded) {
            return Decision::Finish(completed(settings, view, now, timeline));
        }
        if let Some(key) = view
            .failover
            .as_ref()
            .filter(|k| k.written_for(trigger, recorded))
        {
            return follow_up(settings, view, key, now, timeline);
        }
    }
    if let Some(key) = view.failover.as_ref().filter(|k| k.is_pending()) {
        // Someone else's request (patronictl, an earlier trigger): never written over.
        return Decision::Wait {
            message: format!(
                "Patroni's failover key already holds a request (leader {}, member {}); \
                 waiting for Patroni to act on it",
                key.leader.as_deref().unwrap_or("none"),
                key.member.as_deref().unwrap_or("any"),
            ),
        };
    }
    if request.held {
        return Decision::Refuse(refuse(
            REFUSED_NOT_NOW,
            FIELD_SWITCHOVER,
            "instances are stopped (spec.shutdown or a restore); the switchover waits for them",
        ));
    }
    match plan(settings, request.instances, view, now) {
        Ok(mut plan) => {
            plan.record_timeline = request.recorded_timeline.is_none();
            if let Some(recorded) = request.recorded_timeline {
                plan.timeline = recorded;
            }
            Decision::Request(plan)
        }
        Err(refusal) => Decision::Refuse(refusal),
    }
}

/// The operator's request for this trigger is in Patroni's key: still pending, done, or
/// cleared by Patroni without a change of primary.
fn follow_up(
    settings: &SwitchoverSettings,
    view: &PatroniView,
    key: &FailoverKey,
    now: Timestamp,
    timeline: Option<i64>,
) -> Decision {
    if key.is_pending() {
        return Decision::Wait {
            message: format!(
                "waiting for Patroni to act on the request ({})",
                describe_key(view, key)
            ),
        };
    }
    match view.lock_holder(now) {
        // The lock is free: the members are racing for it.
        None => Decision::Wait {
            message: "Patroni took the request; no member holds the leader lock yet".into(),
        },
        Some(holder) if Some(holder) != key.from.as_deref() => {
            // A standby cluster's timeline stays; elsewhere the new primary's promotion
            // shows as a new timeline shortly.
            if view
                .member(holder)
                .is_some_and(|m| m.role.as_deref() == Some("standby_leader"))
            {
                Decision::Finish(completed(settings, view, now, timeline))
            } else {
                Decision::Wait {
                    message: format!(
                        "{} holds the leader lock; waiting for its promotion",
                        view.member(holder).map_or(holder, Member::name)
                    ),
                }
            }
        }
        Some(holder) => {
            let name = view.member(holder).map_or(holder, Member::name);
            Decision::Finish(Finish::Declined {
                message: format!(
                    "Patroni cleared the request without acting on it: {name} is still the \
                     primary on timeline {}; its Patroni log says why (for example a candidate \
                     lagging more than maximum_lag_on_failover). Set a new value of {} to try \
                     again",
                    timeline.map_or("unknown".into(), |t| t.to_string()),
                    naming::ANNOTATION_TRIGGER_SWITCHOVER,
                ),
            })
        }
    }
}

fn describe_key(view: &PatroniView, key: &FailoverKey) -> String {
    let name = |pod: &Option<String>| {
        pod.as_deref()
            .map(|p| view.member(p).map_or(p, Member::name).to_owned())
    };
    match (name(&key.leader), name(&key.member)) {
        (Some(l), Some(m)) => format!("from {l} to {m}"),
        (Some(l), None) => format!("from {l} to the healthiest replica"),
        (None, Some(m)) => format!("failover to {m}"),
        (None, None) => "none".into(),
    }
}

fn completed(
    settings: &SwitchoverSettings,
    view: &PatroniView,
    now: Timestamp,
    timeline: Option<i64>,
) -> Finish {
    let primary = view
        .lock_holder(now)
        .map(|h| view.member(h).map_or(h, Member::name).to_owned());
    let missed_target = settings
        .target_instance
        .clone()
        .filter(|target| primary.as_deref() != Some(target.as_str()));
    Finish::Completed {
        primary,
        timeline,
        missed_target,
    }
}

/// Validates the request against Patroni's state and says what to write. The checks are
/// those of Patroni's REST API (`api.py` `is_failover_possible`) and of its HA loop, which
/// otherwise clears an impossible request silently.
fn plan(
    settings: &SwitchoverSettings,
    instances: &[String],
    view: &PatroniView,
    now: Timestamp,
) -> Result<Plan, Refusal> {
    let target = match settings.target_instance.as_deref() {
        None => None,
        Some(name) => {
            if !instances.iter().any(|i| i == name) {
                return Err(refuse(
                    REFUSED_UNKNOWN_TARGET,
                    FIELD_TARGET,
                    format!(
                        "instance {name} is not a member of this cluster (its instances: {})",
                        list(instances)
                    ),
                ));
            }
            let member = view.member_of_instance(name).ok_or_else(|| {
                refuse(
                    REFUSED_UNKNOWN_TARGET,
                    FIELD_TARGET,
                    format!(
                        "instance {name} is not a Patroni member yet (pod {} has not joined)",
                        naming::instance_pod(name)
                    ),
                )
            })?;
            Some(member)
        }
    };
    let timeline = view.timeline(now).ok_or_else(|| {
        refuse(
            REFUSED_NOT_NOW,
            FIELD_SWITCHOVER,
            "no member reports a timeline yet (the cluster is still initialising)",
        )
    })?;
    let Some(primary) = view.healthy_primary(now) else {
        return failover_without_primary(settings, view, target, timeline);
    };
    let plan = |candidate: Option<&Member>, description: String| Plan {
        timeline,
        record_timeline: true,
        leader: Some(primary.pod.clone()),
        candidate: candidate.map(|m| m.pod.clone()),
        description,
        caution: None,
    };
    let from = primary.name();
    if let Some(target) = target {
        let name = target.name();
        if target.pod == primary.pod {
            return Err(refuse(
                REFUSED_TARGET_IS_PRIMARY,
                FIELD_TARGET,
                format!("instance {name} is already the primary"),
            ));
        }
        if let Some(problem) = target.replica_problem() {
            return Err(refuse(
                REFUSED_UNHEALTHY_TARGET,
                FIELD_TARGET,
                format!("instance {name} is not a healthy replica: {problem}"),
            ));
        }
        if view.synchronous_mode && !view.is_sync_standby(target) {
            return Err(refuse(
                REFUSED_NOT_SYNCHRONOUS,
                FIELD_TARGET,
                format!(
                    "instance {name} is not the synchronous standby (synchronous_mode is on; {})",
                    view.sync_standby_names()
                ),
            ));
        }
        let note = if settings.kind == SwitchoverType::Failover {
            " (type Failover, but the primary is healthy: it steps down cleanly)"
        } else {
            ""
        };
        return Ok(plan(
            Some(target),
            format!("switchover from {from} to {name}{note}"),
        ));
    }
    if view.paused {
        return Err(refuse(
            REFUSED_NOT_NOW,
            FIELD_TARGET,
            "required while Patroni is paused (in maintenance mode Patroni switches over only \
             to a named member)",
        ));
    }
    let candidates: Vec<&str> = view
        .members
        .iter()
        .filter(|m| m.pod != primary.pod && m.replica_problem().is_none())
        .filter(|m| !view.synchronous_mode || view.is_sync_standby(m))
        .map(Member::name)
        .collect();
    if candidates.is_empty() {
        let what = if view.synchronous_mode {
            format!(
                "no healthy synchronous standby to switch over to ({})",
                view.sync_standby_names()
            )
        } else {
            "no healthy replica to switch over to".into()
        };
        return Err(refuse(REFUSED_NO_CANDIDATE, FIELD_SWITCHOVER, what));
    }
    Ok(plan(
        None,
        format!(
            "switchover from {from} to the healthiest of {} (Patroni picks)",
            candidates.join(", ")
        ),
    ))
}

/// No healthy primary: only `type: Failover` to a named, running member.
fn failover_without_primary(
    settings: &SwitchoverSettings,
    view: &PatroniView,
    target: Option<&Member>,
    timeline: i64,
) -> Result<Plan, Refusal> {
    if settings.kind != SwitchoverType::Failover {
        return Err(refuse(
            REFUSED_NO_PRIMARY,
            FIELD_TYPE,
            "Switchover needs a healthy primary and the cluster has none; type Failover with a \
             targetInstance promotes a named replica without one",
        ));
    }
    let target = target.ok_or_else(|| {
        refuse(
            REFUSED_UNKNOWN_TARGET,
            FIELD_TARGET,
            "required when type is Failover",
        )
    })?;
    let name = target.name();
    if target.nofailover {
        return Err(refuse(
            REFUSED_UNHEALTHY_TARGET,
            FIELD_TARGET,
            format!("instance {name} is tagged nofailover"),
        ));
    }
    if !target.is_running() {
        return Err(refuse(
            REFUSED_UNHEALTHY_TARGET,
            FIELD_TARGET,
            format!(
                "instance {name} is not running (Patroni reports state {})",
                target.state.as_deref().unwrap_or("unknown")
            ),
        ));
    }
    let caution = (view.synchronous_mode && !view.is_sync_standby(target)).then(|| {
        format!(
            "synchronous_mode is on and {name} is not the synchronous standby: transactions \
             only the synchronous standby acknowledged may be lost"
        )
    });
    Ok(Plan {
        timeline,
        record_timeline: true,
        leader: None,
        candidate: Some(target.pod.clone()),
        description: format!("failover to {name} (the cluster has no healthy primary)"),
        caution,
    })
}

fn list(names: &[String]) -> String {
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}

#[cfg(test)]
#[path = "decide_tests.rs"]
mod tests;
