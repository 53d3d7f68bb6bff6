//! What the running cluster looks like and waiting for it to reach a shape: a leader, every
//! other member streaming from it, a given member leading. Reads Patroni's REST API and the
//! leader's `pg_stat_replication`; changes nothing.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

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
        let start = Instant::now();
        let mut reported: BTreeSet<String> = BTreeSet::new();
        loop {
            let mut missing: Option<String> = None;
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
                    return Ok(leader);
                }
            }
            if start.elapsed() > self.limit {
                let what = match &missing {
                    Some(m) => format!("{m} to stream from the leader"),
                    None => "a leader".into(),
                };
                let member = missing.or_else(|| self.state.members.first().map(|m| m.name.clone()));
                return Err(self.timeout(what, start, member.as_deref()));
            }
            std::thread::sleep(POLL);
        }
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
        let start = Instant::now();
        loop {
            match self.api.switchover(&host, leader, candidate) {
                Err(Error::Http { reason, .. })
                    if (reason.starts_with("HTTP 412") || reason.starts_with("HTTP 503"))
                        && start.elapsed() < self.limit =>
                {
                    std::thread::sleep(Duration::from_secs(1));
                }
                other => return other,
            }
        }
    }
}
