//! Patroni's view of the cluster as its Kubernetes DCS keeps it ([`PatroniView`]), parsed
//! from the member pods and the `<scope>*` Endpoints, and the questions the switchover asks of
//! it (the healthy primary, the timeline, the synchronous standby). Pure; no I/O.
//!
//! What Patroni writes where (3.0 `patroni/dcs/kubernetes.py`, the same in 4.x):
//! - each member's state is the JSON of its pod's `status` annotation (`role`: `master`
//!   (3.x) or `primary` (4.x), `replica`, `standby_leader`; `state`: `running`, and since
//!   3.0.4 `streaming` or `in archive recovery` for a healthy replica; `timeline`,
//!   `xlog_location`, `tags`);
//! - the leader lock is the annotations `leader`, `renewTime` and `ttl` of `<scope>`;
//! - `<scope>-sync` holds `leader` and `sync_standby` (comma-separated), `<scope>-config`
//!   the dynamic configuration (`synchronous_mode`, `pause`) in `config`;
//! - `<scope>-failover` holds the request: `leader` (who steps down), `member` (who takes
//!   over), `scheduled_at`. Patroni clears `leader` and `member` once it acted on the request
//!   or refused it; the operator's own annotations beside them stay.

use k8s_openapi::api::core::v1::{Endpoints, Pod};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use serde_json::Value;
use tusk_api::naming;

/// Patroni's annotation on a member pod holding its state.
pub const MEMBER_STATUS_ANNOTATION: &str = "status";

/// One Patroni member (an instance's pod), from its pod.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Member {
    /// Pod name = Patroni member name.
    pub pod: String,
    /// The instance (StatefulSet) the pod belongs to: the name users give `targetInstance`.
    pub instance: Option<String>,
    pub role: Option<String>,
    pub state: Option<String>,
    pub timeline: Option<i64>,
    /// Tagged `nofailover`, or `failover_priority: 0` (Patroni 4): never promoted.
    pub nofailover: bool,
}

impl Member {
    pub fn from_pod(pod: &Pod) -> Member {
        let meta = &pod.metadata;
        let status: Value = meta
            .annotations
            .as_ref()
            .and_then(|a| a.get(MEMBER_STATUS_ANNOTATION))
            .and_then(|s| serde_json::from_str(s).ok())
            .unwrap_or(Value::Null);
        let text = |key: &str| status.get(key).and_then(Value::as_str).map(str::to_owned);
        let tags = status.get("tags");
        let tag_true = |key: &str| tags.and_then(|t| t.get(key)).is_some_and(truthy);
        let priority_zero = tags
            .and_then(|t| t.get("failover_priority"))
            .and_then(Value::as_i64)
            == Some(0);
        Member {
            pod: meta.name.clone().unwrap_or_default(),
            instance: meta
                .labels
                .as_ref()
                .and_then(|l| l.get(naming::LABEL_INSTANCE))
                .cloned(),
            role: text("role"),
            state: text("state"),
            timeline: status.get("timeline").and_then(Value::as_i64),
            nofailover: tag_true("nofailover") || priority_zero,
        }
    }

    /// The name people know the member by: its instance, else its pod.
    pub fn name(&self) -> &str {
        self.instance.as_deref().unwrap_or(&self.pod)
    }

    /// PostgreSQL runs and Patroni manages it (`streaming` and `in archive recovery` are how
    /// Patroni 3.0.4+ reports a healthy replica).
    pub fn is_running(&self) -> bool {
        matches!(
            self.state.as_deref(),
            Some("running" | "streaming" | "in archive recovery")
        )
    }

    fn is_leader_role(&self) -> bool {
        matches!(
            self.role.as_deref(),
            Some("master" | "primary" | "standby_leader")
        )
    }

    /// Why this member cannot take over from a healthy primary, if it cannot.
    pub(super) fn replica_problem(&self) -> Option<String> {
        if self.nofailover {
            return Some("it is tagged nofailover".into());
        }
        if self.role.as_deref() != Some("replica") || !self.is_running() {
            return Some(format!(
                "Patroni reports role {}, state {}",
                self.role.as_deref().unwrap_or("unknown"),
                self.state.as_deref().unwrap_or("unknown"),
            ));
        }
        None
    }
}

/// The leader lock (`<scope>` Endpoints).
#[derive(Clone, Debug, PartialEq)]
pub struct LeaderLock {
    pub holder: String,
    /// `renewTime`; `None` when missing or unreadable (then the lock counts as held).
    pub renewed: Option<Timestamp>,
    pub ttl_seconds: i64,
}

impl LeaderLock {
    fn is_fresh(&self, now: Timestamp) -> bool {
        self.renewed.is_none_or(|renewed| {
            now.duration_since(renewed) <= SignedDuration::from_secs(self.ttl_seconds)
        })
    }
}

/// Patroni's failover key (`<scope>-failover` Endpoints) and the operator's marks beside it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FailoverKey {
    pub leader: Option<String>,
    pub member: Option<String>,
    /// Trigger value, recorded timeline and lock holder the operator wrote the request for.
    pub trigger: Option<String>,
    pub timeline: Option<i64>,
    pub from: Option<String>,
    pub resource_version: Option<String>,
}

impl FailoverKey {
    /// Patroni has not acted on (or refused) the request yet.
    pub fn is_pending(&self) -> bool {
        self.leader.is_some() || self.member.is_some()
    }

    pub(super) fn written_for(&self, trigger: &str, timeline: i64) -> bool {
        self.trigger.as_deref() == Some(trigger) && self.timeline == Some(timeline)
    }
}

/// What Patroni's Kubernetes DCS holds for the cluster.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PatroniView {
    pub members: Vec<Member>,
    pub lock: Option<LeaderLock>,
    /// Members in `<scope>-sync`'s `sync_standby`.
    pub sync_standbys: Vec<String>,
    pub synchronous_mode: bool,
    pub paused: bool,
    pub failover: Option<FailoverKey>,
}

impl PatroniView {
    /// From the member pods and the Endpoints labelled for Patroni's scope `scope`.
    /// `default_ttl` applies when the lock carries none.
    pub fn from_objects(
        scope: &str,
        pods: &[Pod],
        endpoints: &[Endpoints],
        default_ttl: i64,
    ) -> PatroniView {
        let annotations = |name: String| {
            endpoints
                .iter()
                .find(|e| e.metadata.name.as_deref() == Some(name.as_str()))
                .map(|e| {
                    (
                        e.metadata.annotations.clone().unwrap_or_default(),
                        e.metadata.resource_version.clone(),
                    )
                })
        };
        let non_empty = |v: Option<&String>| v.filter(|s| !s.is_empty()).cloned();
        let lock = annotations(scope.to_owned()).and_then(|(a, _)| {
            Some(LeaderLock {
                holder: non_empty(a.get("leader"))?,
                renewed: a.get("renewTime").and_then(|t| t.parse().ok()),
                ttl_seconds: a
                    .get("ttl")
                    .and_then(|t| t.parse().ok())
                    .unwrap_or(default_ttl),
            })
        });
        let sync_standbys = annotations(format!("{scope}-sync"))
            .and_then(|(a, _)| a.get("sync_standby").cloned())
            .map(|s| {
                s.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        let config: Value = annotations(format!("{scope}-config"))
            .and_then(|(a, _)| a.get(naming::PATRONI_ANNOTATION_CONFIG).cloned())
            .and_then(|c| serde_json::from_str(&c).ok())
            .unwrap_or(Value::Null);
        let failover =
            annotations(format!("{scope}-failover")).map(|(a, resource_version)| FailoverKey {
                leader: non_empty(a.get("leader")),
                member: non_empty(a.get("member")),
                trigger: a.get(naming::ANNOTATION_SWITCHOVER_TRIGGER).cloned(),
                timeline: a
                    .get(naming::ANNOTATION_SWITCHOVER_TIMELINE)
                    .and_then(|t| t.parse().ok()),
                from: non_empty(a.get(naming::ANNOTATION_SWITCHOVER_FROM)),
                resource_version,
            });
        let mut members: Vec<Member> = pods.iter().map(Member::from_pod).collect();
        members.sort_by(|a, b| a.pod.cmp(&b.pod));
        PatroniView {
            members,
            lock,
            sync_standbys,
            synchronous_mode: config.get("synchronous_mode").is_some_and(synchronous),
            paused: config.get("pause").is_some_and(truthy),
            failover,
        }
    }

    /// The member holding a live leader lock, running as the leader.
    pub fn healthy_primary(&self, now: Timestamp) -> Option<&Member> {
        let lock = self.lock.as_ref().filter(|l| l.is_fresh(now))?;
        self.member(&lock.holder)
            .filter(|m| m.is_leader_role() && m.is_running())
    }

    /// The holder of a live leader lock, whatever its state.
    pub(super) fn lock_holder(&self, now: Timestamp) -> Option<&str> {
        self.lock
            .as_ref()
            .filter(|l| l.is_fresh(now))
            .map(|l| l.holder.as_str())
    }

    /// The cluster's timeline: the lock holder's, else the highest a member reports.
    pub fn timeline(&self, now: Timestamp) -> Option<i64> {
        self.lock_holder(now)
            .and_then(|h| self.member(h))
            .and_then(|m| m.timeline)
            .or_else(|| self.members.iter().filter_map(|m| m.timeline).max())
    }

    pub(super) fn member(&self, pod: &str) -> Option<&Member> {
        self.members.iter().find(|m| m.pod == pod)
    }

    pub(super) fn member_of_instance(&self, instance: &str) -> Option<&Member> {
        self.members
            .iter()
            .find(|m| m.instance.as_deref() == Some(instance))
    }

    pub(super) fn is_sync_standby(&self, member: &Member) -> bool {
        self.sync_standbys.contains(&member.pod)
    }

    pub(super) fn sync_standby_names(&self) -> String {
        let names: Vec<&str> = self
            .sync_standbys
            .iter()
            .map(|pod| self.member(pod).map_or(pod.as_str(), Member::name))
            .collect();
        if names.is_empty() {
            "there is none yet".into()
        } else {
            format!("it is {}", names.join(", "))
        }
    }
}

/// Patroni's `parse_bool` of a setting (`true`, `on`, `yes`, `1`).
pub(super) fn truthy(value: &Value) -> bool {
    match value {
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|n| n != 0.0),
        Value::String(s) => matches!(
            s.to_ascii_lowercase().as_str(),
            "true" | "on" | "yes" | "y" | "1"
        ),
        _ => false,
    }
}

/// `synchronous_mode` is on: true-ish, or Patroni 4's `quorum`.
pub(super) fn synchronous(value: &Value) -> bool {
    truthy(value)
        || value
            .as_str()
            .is_some_and(|s| s.eq_ignore_ascii_case("quorum"))
}
