//! What the running cluster looks like and waiting for it to reach a shape: a leader, every
//! other member streaming from it, a given member leading. Reads Patroni's REST API and the
//! leader's `pg_stat_replication`; changes the cluster only through the Patroni calls the
//! waits wrap (`restart`, `switchover`, and the temporary `synchronous_node_count` a
//! switchover to a non-synchronous member needs).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tusk_api::ValidatedCluster;

use crate::error::{Error, Result};
use crate::patroni_api::{ClusterView, PatroniApi};
use crate::state::{Layout, State};

/// How often waits poll. Not a timing assertion: waits end as soon as the shape is reached.
const POLL: Duration = Duration::from_millis(250);

/// The cluster as the first member that answers sees it.
pub fn cluster_view(api: &PatroniApi, state: &State) -> Option<ClusterView> {
    state
        .members
        .iter()
        .find_map(|m| api.cluster(&state.host(m)).ok())
}

/// Members whose WAL receivers stream from `leader` now.
pub fn streaming_members(
    cluster: &ValidatedCluster,
    layout: &Layout,
    leader: &str,
) -> Result<BTreeSet<String>> {
    let out = crate::members::psql(
        cluster,
        layout,
        leader,
        "SELECT application_name FROM pg_stat_replication WHERE state = 'streaming'",
    )?;
    Ok(out.lines().map(str::to_owned).collect())
}

/// The leader every answering member names, running, and seen as a non-leader by every
/// other member: right after a switchover one member's view is stale for a moment.
fn agreed_leader(api: &PatroniApi, state: &State) -> Option<String> {
    let views: Vec<ClusterView> = state
        .members
        .iter()
        .filter_map(|m| api.cluster(&state.host(m)).ok())
        .collect();
    let first = views.first()?.leader()?;
    let agreed = first.state == "running"
        && views.iter().all(|v| {
            v.leader().is_some_and(|l| l.name == first.name)
                && v.members.iter().filter(|m| m.is_leader()).count() == 1
        });
    agreed.then(|| first.name.clone())
}

/// Shared by every wait: the state directory pieces and the bound.
pub struct Waiter<'a> {
    pub cluster: &'a ValidatedCluster,
    pub layout: &'a Layout,
    pub state: &'a State,
    pub api: &'a PatroniApi,
    pub limit: Duration,
}

impl Waiter<'_> {
    fn timeout(&self, what: String, start: Instant, member: Option<&str>) -> Error {
        let log = match member {
            Some(name) => self.layout.member(name).log(),
            None => self.layout.root.clone(),
        };
        Error::Timeout {
            what,
            seconds: start.elapsed().as_secs(),
            log,
        }
    }

    /// Until `member` is the leader and its PostgreSQL runs.
    pub fn leader_running(&self, member: &str) -> Result<()> {
        let start = Instant::now();
        loop {
            let view = self
                .api
                .cluster(&self.state.host(self.state.member(member)?));
            if let Ok(view) = view {
                if view
                    .leader()
                    .is_some_and(|l| l.name == member && l.state == "running")
                {
                    return Ok(());
                }
            }
            if start.elapsed() > self.limit {
                return Err(self.timeout(format!("{member} to lead"), start, Some(member)));
            }
            std::thread::sleep(POLL);
        }
    }

    /// Until some member leads and every other recorded member streams from it; reports each
    /// member as it starts streaming. Returns the leader's name.
    pub fn ready(&self, progress: &mut dyn FnMut(&str)) -> Result<String> {
        self.ready_within(self.limit, progress)
    }

    /// [`Self::ready`], restarting (once each) the Patroni of a replica that runs but stays
    /// off the leader's `pg_stat_replication` for a while. Why: after a crash, Patroni
    /// archives the old primary's `.ready` WAL before rewinding it, so the shared repository
    /// can hold old-timeline WAL past the fork point; another replica may restore and replay
    /// it and then wait forever ("requested start point ... is ahead of the upstream
    /// server's flush position"). Patroni checks for diverged timelines when it starts, and
    /// runs pg_rewind. A member being cloned or starting is not `running`, so never touched.
    pub fn ready_healing(
        &self,
        ctx: &crate::members::Context,
        progress: &mut dyn FnMut(&str),
    ) -> Result<String> {
        let grace = Duration::from_secs(u64::from(self.cluster.patroni.leader_lease_seconds) + 15);
        let start = Instant::now();
        let mut restarted: BTreeSet<String> = BTreeSet::new();
        loop {
            let bound = grace.min(self.limit.saturating_sub(start.elapsed()));
            match self.ready_within(bound, progress) {
                Ok(leader) => return Ok(leader),
                Err(e) if start.elapsed() >= self.limit => return Err(e),
                Err(_) => {
                    for name in self.stuck_replicas() {
                        if restarted.insert(name.clone()) {
                            progress(&format!(
                                "{name} runs but does not stream; restarting its Patroni so it checks for a diverged timeline"
                            ));
                            crate::members::stop(self.layout, &name);
                            crate::members::start(ctx, self.state.member(&name)?)?;
                        }
                    }
                }
            }
        }
    }

    /// Replicas Patroni reports `running` that do not stream from the agreed leader.
    fn stuck_replicas(&self) -> Vec<String> {
        let Some(leader) = agreed_leader(self.api, self.state) else {
            return Vec::new();
        };
        let Ok(streaming) = streaming_members(self.cluster, self.layout, &leader) else {
            return Vec::new();
        };
        cluster_view(self.api, self.state)
            .map(|v| {
                v.members
                    .into_iter()
                    .filter(|m| !m.is_leader() && m.state == "running")
                    .filter(|m| !streaming.contains(&m.name))
                    .map(|m| m.name)
                    .collect()
            })
            .unwrap_or_default()
    }

    fn ready_within(&self, limit: Duration, progress: &mut dyn FnMut(&str)) -> Result<String> {
        let start = Instant::now();
        let mut reported: BTreeSet<String> = BTreeSet::new();
        loop {
            let mut missing: Option<String> = None;
            let mut awaiting_sync = false;
            if let Some(leader) = agreed_leader(self.api, self.state) {
                let streaming =
                    streaming_members(self.cluster, self.layout, &leader).unwrap_or_default();
                // pg_basebackup of a member being cloned also shows up; report members only.
                for name in streaming
                    .iter()
                    .filter(|n| self.state.members.iter().any(|m| &m.name == *n))
                {
                    if reported.insert(name.clone()) {
                        progress(&format!("{name} is streaming from {leader}"));
                    }
                }
                missing = self
                    .state
                    .members
                    .iter()
                    .map(|m| m.name.clone())
                    .find(|n| *n != leader && !streaming.contains(n));
                if missing.is_none() {
                    if !self.needs_sync_standby() || self.has_sync_standby() {
                        return Ok(leader);
                    }
                    awaiting_sync = true;
                }
            }
            if start.elapsed() > limit {
                let what = match &missing {
                    Some(m) => format!("{m} to stream from the leader"),
                    None if awaiting_sync => "Patroni to name a synchronous standby".into(),
                    None => "a leader".into(),
                };
                let member = missing.or_else(|| self.state.members.first().map(|m| m.name.clone()));
                return Err(self.timeout(what, start, member.as_deref()));
            }
            std::thread::sleep(POLL);
        }
    }

    /// In synchronous mode Patroni promotes only the member it named synchronous standby;
    /// until it has named one, losing the leader leaves the cluster without a primary. So a
    /// cluster is ready only once it has one (found by the failover benchmark: a primary
    /// stopped right after `up` returned was never replaced).
    fn needs_sync_standby(&self) -> bool {
        self.state.members.len() > 1
            && self
                .cluster
                .patroni
                .dynamic_configuration
                .get("synchronous_mode")
                .is_some_and(|v| v.as_bool() == Some(true) || v.as_str() == Some("on"))
    }

    fn has_sync_standby(&self) -> bool {
        cluster_view(self.api, self.state).is_some_and(|v| {
            v.members
                .iter()
                .any(|m| m.role == "sync_standby" && m.state == "running")
        })
    }

    /// Until `member` runs again (after `POST /restart`).
    pub fn restarted(&self, member: &str) -> Result<()> {
        let start = Instant::now();
        loop {
            let done = cluster_view(self.api, self.state).is_some_and(|v| {
                v.members.iter().any(|m| {
                    // Not `!pending_restart`: a replica stays pending while its primary
                    // still runs with a higher value of a setting it must mirror.
                    m.name == member && (m.state == "running" || m.state == "streaming")
                })
            });
            if done {
                return Ok(());
            }
            if start.elapsed() > self.limit {
                return Err(self.timeout(format!("{member} to restart"), start, Some(member)));
            }
            std::thread::sleep(POLL);
        }
    }

    /// Until a member other than `old` leads; returns it.
    pub fn new_leader(&self, old: &str) -> Result<String> {
        let start = Instant::now();
        loop {
            if let Some(leader) = cluster_view(self.api, self.state)
                .and_then(|v| {
                    v.leader()
                        .filter(|l| l.state == "running")
                        .map(|l| l.name.clone())
                })
                .filter(|l| l != old)
            {
                return Ok(leader);
            }
            if start.elapsed() > self.limit {
                return Err(self.timeout(format!("a leader other than {old}"), start, Some(old)));
            }
            std::thread::sleep(POLL);
        }
    }

    /// `POST /restart` of `member`, retried while Patroni is busy (503, e.g. a demotion in
    /// progress), bounded by the wait limit.
    pub fn restart(&self, member: &str) -> Result<()> {
        let host = self.state.host(self.state.member(member)?);
        let start = Instant::now();
        loop {
            match self.api.restart(&host) {
                Err(Error::Http { reason, .. })
                    if reason.starts_with("HTTP 503") && start.elapsed() < self.limit =>
                {
                    std::thread::sleep(Duration::from_secs(1));
                }
                other => return other,
            }
        }
    }

    /// `POST /switchover`, retried while Patroni answers that it is not possible *yet* (412:
    /// e.g. no synchronous standby chosen right after a replica restarted; 503: a member is
    /// still catching up), bounded by the wait limit.
    pub fn switchover(&self, leader: &str, candidate: Option<&str>) -> Result<()> {
        let host = self.state.host(self.state.member(leader)?);
        let raised = match candidate {
            Some(candidate) => self.make_synchronous(&host, candidate)?,
            None => None,
        };
        let start = Instant::now();
        let outcome = loop {
            match self.api.switchover(&host, leader, candidate) {
                Err(Error::Http { reason, .. })
                    if (reason.starts_with("HTTP 412") || reason.starts_with("HTTP 503"))
                        && start.elapsed() < self.limit =>
                {
                    std::thread::sleep(Duration::from_secs(1));
                }
                other => break other,
            }
        };
        if let Some(previous) = raised {
            // Any member takes the PATCH: the DCS is shared; the old leader may be demoting.
            let restore = json!({ SYNC_NODE_COUNT: previous });
            let restored = self
                .state
                .members
                .iter()
                .any(|m| self.api.patch_config(&self.state.host(m), &restore).is_ok());
            if outcome.is_ok() && !restored {
                return Err(Error::Http {
                    what: format!("restoring {SYNC_NODE_COUNT} after the switchover"),
                    reason: "no member accepted PATCH /config".into(),
                });
            }
        }
        outcome
    }

    /// In synchronous mode Patroni switches over only to a synchronous standby, and by
    /// default there is one. To switch over to another member, every replica is made
    /// synchronous for the duration (`synchronous_node_count` raised: commits then wait for
    /// all of them, which is safe, never weaker) until `candidate` is one. Returns the
    /// previous value to restore, `None` when nothing had to change.
    fn make_synchronous(&self, leader_host: &str, candidate: &str) -> Result<Option<Value>> {
        let config = self.api.config(leader_host)?;
        let on = match &config["synchronous_mode"] {
            Value::Bool(b) => *b,
            Value::String(s) => matches!(s.to_ascii_lowercase().as_str(), "true" | "on"),
            _ => false,
        };
        let is_sync = |v: &ClusterView| {
            v.members
                .iter()
                .any(|m| m.name == candidate && m.role == "sync_standby")
        };
        if !on || cluster_view(self.api, self.state).is_some_and(|v| is_sync(&v)) {
            return Ok(None);
        }
        let previous = config.get(SYNC_NODE_COUNT).cloned().unwrap_or(Value::Null);
        let replicas = self.state.members.len().saturating_sub(1).max(1);
        self.api
            .patch_config(leader_host, &json!({ SYNC_NODE_COUNT: replicas }))?;
        let start = Instant::now();
        while !cluster_view(self.api, self.state).is_some_and(|v| is_sync(&v)) {
            if start.elapsed() > self.limit {
                let _ = self
                    .api
                    .patch_config(leader_host, &json!({ SYNC_NODE_COUNT: previous }));
                return Err(self.timeout(
                    format!("{candidate} to become a synchronous standby"),
                    start,
                    Some(candidate),
                ));
            }
            std::thread::sleep(POLL);
        }
        Ok(Some(previous))
    }
}

/// Patroni's dynamic setting for how many synchronous standbys the leader keeps.
const SYNC_NODE_COUNT: &str = "synchronous_node_count";
