//! Changes to a running cluster that go through Patroni: the dynamic configuration (PATCH
//! `/config` with the merge patch from what the DCS holds to what the manifest renders), then
//! members flagged `pending_restart` restarted replicas first, one at a time, each running
//! again before the next, then a switchover away from the primary, then the old primary.
//! Touches the cluster only through Patroni's REST API.

use std::time::{Duration, Instant};

use serde_json::Value;
use tusk_config::patroni::dynamic_configuration;

use crate::error::Result;
use crate::observe::{cluster_view, Waiter};
use crate::patroni_api::merge_patch;

/// PATCHes `/config` when the DCS differs from the manifest; returns the patch applied.
pub fn apply_dynamic_configuration(w: &Waiter, leader: &str) -> Result<Option<Value>> {
    let host = w.state.host(w.state.member(leader)?);
    let current = w.api.config(&host)?;
    let desired = dynamic_configuration(w.cluster);
    let Some(patch) = merge_patch(&current, &desired) else {
        return Ok(None);
    };
    w.api.patch_config(&host, &patch)?;
    Ok(Some(patch))
}

/// Parameters in `patch` that PostgreSQL only reads at server start.
fn restart_parameters(w: &Waiter, leader: &str, patch: &Value) -> Result<Vec<String>> {
    let Some(params) = patch["postgresql"]["parameters"].as_object() else {
        return Ok(Vec::new());
    };
    let names: Vec<String> = params
        .keys()
        .filter(|k| {
            k.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
        })
        .map(|k| format!("'{k}'"))
        .collect();
    if names.is_empty() {
        return Ok(Vec::new());
    }
    let sql = format!(
        "SELECT name FROM pg_settings WHERE context = 'postmaster' AND name IN ({})",
        names.join(",")
    );
    let out = crate::members::psql(w.cluster, w.layout, leader, &sql)?;
    Ok(out.lines().map(str::to_owned).collect())
}

/// After a patch with restart-only parameters, waits until every member has reloaded and
/// flagged `pending_restart` (Patroni applies DCS changes on its next loop), bounded.
fn await_pending_flags(w: &Waiter) {
    let start = Instant::now();
    let bound = Duration::from_secs(u64::from(w.cluster.patroni.sync_period_seconds) * 3 + 10);
    while start.elapsed() < bound.min(w.limit) {
        if cluster_view(w.api, w.state).is_some_and(|v| {
            v.members.len() == w.state.members.len() && v.members.iter().all(|m| m.pending_restart)
        }) {
            return;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Restarts members with `pending_restart`: replicas one at a time, then a switchover and
/// the old primary. A second pass covers decreases of settings a hot standby may not have
/// below its primary's (`max_connections`, ...): PostgreSQL requires the primary first
/// there, so replicas stay pending after pass one and the primary is restarted in place.
pub fn restart_pending(
    w: &Waiter,
    patch: Option<&Value>,
    leader: &str,
    progress: &mut dyn FnMut(&str),
) -> Result<()> {
    if let Some(patch) = patch {
        let needs = restart_parameters(w, leader, patch)?;
        if !needs.is_empty() {
            progress(&format!(
                "{} need a restart; waiting for members to reload",
                needs.join(", ")
            ));
            await_pending_flags(w);
        }
    }
    for pass in 0..2 {
        let leader = w.ready(&mut |_| {})?;
        let pending = pending_members(w);
        if pending.is_empty() {
            return Ok(());
        }
        // Second pass: the primary first, which is what lets pending replicas follow.
        if pass == 1 && pending.contains(&leader) {
            progress(&format!("restarting the primary {leader} in place"));
            w.restart(&leader)?;
            w.restarted(&leader)?;
            w.ready(&mut |_| {})?;
        }
        for replica in pending.iter().filter(|m| **m != leader) {
            progress(&format!("restarting replica {replica}"));
            w.restart(replica)?;
            w.restarted(replica)?;
            w.ready(&mut |_| {})?;
        }
        if pass == 1 || !pending.contains(&leader) {
            continue;
        }
        if w.state.members.len() > 1 {
            progress(&format!(
                "switching over from {leader} before restarting it"
            ));
            w.switchover(&leader, None)?;
            let new = w.new_leader(&leader)?;
            progress(&format!("{new} is the new primary"));
            w.ready(&mut |_| {})?;
            // Demotion restarted the old primary; restart it only if it still waits.
            if pending_members(w).contains(&leader) {
                progress(&format!("restarting {leader}"));
                w.restart(&leader)?;
                w.restarted(&leader)?;
            }
        } else {
            progress(&format!("restarting the primary {leader} in place"));
            w.restart(&leader)?;
            w.restarted(&leader)?;
        }
    }
    Ok(())
}

fn pending_members(w: &Waiter) -> Vec<String> {
    cluster_view(w.api, w.state)
        .map(|v| {
            v.members
                .iter()
                .filter(|m| m.pending_restart)
                .map(|m| m.name.clone())
                .collect()
        })
        .unwrap_or_default()
}
