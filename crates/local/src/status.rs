//! `status`, `down`, `switchover`, `logs` and `ca`: the commands that read or stop a local
//! cluster recorded in a state directory (members, and PgBouncer and the exporters when the
//! spec has them). Touches the recorded processes and, for `down --purge`, deletes the state
//! directory. A switchover also points PgBouncer at the new primary.

use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

use crate::error::{io, Error, Result};
use crate::observe::{cluster_view, Waiter};
use crate::patroni_api::PatroniApi;
use crate::state::{self, Layout};
use crate::{exporter, members, pgbouncer};

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct PidsReport {
    pub patroni: Option<u32>,
    pub postgres: Option<u32>,
}

/// One row of `status`.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct MemberReport {
    pub name: String,
    /// `leader`, `replica`, `sync_standby`, ... as Patroni says; `stopped` when not running.
    pub role: String,
    pub host: String,
    pub port: u16,
    pub state: String,
    pub timeline: Option<u64>,
    /// Bytes of WAL behind the leader (Patroni's `lag`), `null` for the leader/unknown.
    pub lag: Option<Value>,
    pub pids: PidsReport,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct StatusReport {
    pub cluster: String,
    pub members: Vec<MemberReport>,
    /// `null` without `spec.proxy.pgBouncer`.
    pub pgbouncer: Option<PoolerReport>,
    /// `null` without `spec.monitoring.pgmonitor.exporter`; else one per member.
    pub exporter: Option<Vec<ExporterReport>>,
}

/// Where PgBouncer listens, and its pid when running.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct PoolerReport {
    pub host: String,
    pub port: u16,
    pub pid: Option<u32>,
}

/// One member's metrics endpoint, and the exporter's pid when running.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct ExporterReport {
    pub member: String,
    pub url: String,
    pub pid: Option<u32>,
}

/// The cluster's (validated) last applied manifest.
fn applied_cluster(layout: &Layout) -> Result<tusk_api::ValidatedCluster> {
    crate::up::load_manifest(&layout.manifest()).map(|(_, c)| c)
}

pub fn status(layout: &Layout) -> Result<StatusReport> {
    let state = state::require(layout)?;
    let cluster = applied_cluster(layout)?;
    let api = PatroniApi::new(layout, cluster.patroni.port)?;
    let view = cluster_view(&api, &state);
    let members = state
        .members
        .iter()
        .map(|record| {
            let pids = members::pids(&layout.member(&record.name));
            let seen = view
                .as_ref()
                .and_then(|v| v.members.iter().find(|m| m.name == record.name));
            let running = pids.patroni.is_some();
            MemberReport {
                name: record.name.clone(),
                role: match (seen, running) {
                    (Some(m), true) => m.role.clone(),
                    _ => "stopped".into(),
                },
                host: state.host(record),
                port: cluster.port,
                state: match (seen, running) {
                    (Some(m), true) => m.state.clone(),
                    (None, true) => "starting".into(),
                    _ => "stopped".into(),
                },
                timeline: seen.and_then(|m| m.timeline),
                lag: seen.and_then(|m| m.lag.clone()),
                pids: PidsReport {
                    patroni: pids.patroni,
                    postgres: pids.postgres,
                },
            }
        })
        .collect();
    let pgbouncer = pgbouncer::endpoint(&cluster, &state).map(|e| PoolerReport {
        host: e.host,
        port: e.port,
        pid: pgbouncer::pid(layout),
    });
    let exporter = exporter::endpoints(&cluster, &state).map(|list| {
        list.into_iter()
            .map(|e| ExporterReport {
                pid: exporter::pid(layout, &e.member),
                member: e.member,
                url: e.url,
            })
            .collect()
    });
    Ok(StatusReport {
        cluster: state.cluster,
        members,
        pgbouncer,
        exporter,
    })
}

/// `status` as a table a person reads.
pub fn render_table(report: &StatusReport) -> String {
    let show = |v: Option<String>| v.unwrap_or_else(|| "-".into());
    let mut out = format!(
        "{:<28} {:<13} {:<18} {:<10} {:>8} {:>10} {:>8} {:>8}\n",
        "MEMBER", "ROLE", "ADDRESS", "STATE", "TIMELINE", "LAG", "PATRONI", "POSTGRES"
    );
    for m in &report.members {
        out += &format!(
            "{:<28} {:<13} {:<18} {:<10} {:>8} {:>10} {:>8} {:>8}\n",
            m.name,
            m.role,
            format!("{}:{}", m.host, m.port),
            m.state,
            show(m.timeline.map(|t| t.to_string())),
            show(m.lag.as_ref().map(|l| match l {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })),
            show(m.pids.patroni.map(|p| p.to_string())),
            show(m.pids.postgres.map(|p| p.to_string())),
        );
    }
    if let Some(p) = &report.pgbouncer {
        out += &format!(
            "\nPGBOUNCER {}:{} (TLS)  pid {}\n",
            p.host,
            p.port,
            show(p.pid.map(|p| p.to_string()))
        );
    }
    for e in report.exporter.iter().flatten() {
        out += &format!(
            "EXPORTER  {:<28} {}  pid {}\n",
            e.member,
            e.url,
            show(e.pid.map(|p| p.to_string()))
        );
    }
    out
}

/// Stops every member (replicas first, so the primary is not failed over to a member about
/// to stop), then etcd. `purge` then deletes the state directory.
pub fn down(layout: &Layout, purge: bool, progress: &mut dyn FnMut(&str)) -> Result<()> {
    let state = state::require(layout)?;
    let leader = applied_cluster(layout)
        .ok()
        .and_then(|c| PatroniApi::new(layout, c.patroni.port).ok())
        .and_then(|api| cluster_view(&api, &state))
        .and_then(|v| v.leader().map(|l| l.name.clone()));
    progress("stopping pgbouncer and exporters");
    crate::services::stop(layout);
    let mut order: Vec<&str> = state.members.iter().map(|m| m.name.as_str()).collect();
    order.sort_by_key(|name| leader.as_deref() == Some(*name));
    for name in order {
        progress(&format!("stopping {name}"));
        members::stop(layout, name);
    }
    progress("stopping etcd");
    crate::etcd::stop(layout);
    if purge {
        progress(&format!("deleting {}", layout.root.display()));
        std::fs::remove_dir_all(&layout.root).map_err(io("deleting", &layout.root))?;
    }
    Ok(())
}

/// Planned switchover to `target` (any healthy replica when `None`); returns the new leader
/// once it runs and every other member streams again.
pub fn switchover(
    layout: &Layout,
    target: Option<&str>,
    wait_limit: Duration,
    progress: &mut dyn FnMut(&str),
) -> Result<String> {
    let state = state::require(layout)?;
    let cluster = applied_cluster(layout)?;
    if let Some(target) = target {
        state.member(target)?;
    }
    let api = PatroniApi::new(layout, cluster.patroni.port)?;
    let leader = cluster_view(&api, &state)
        .and_then(|v| v.leader().map(|l| l.name.clone()))
        .ok_or_else(|| Error::Http {
            what: "finding the leader".into(),
            reason: "no member reports a leader".into(),
        })?;
    let waiter = Waiter {
        cluster: &cluster,
        layout,
        state: &state,
        api: &api,
        limit: wait_limit,
    };
    progress(&format!(
        "switching over from {leader} to {}",
        target.unwrap_or("any healthy replica")
    ));
    waiter.switchover(&leader, target)?;
    let new = waiter.new_leader(&leader)?;
    waiter.ready(progress)?;
    if pgbouncer::follow_primary(&cluster, &state, layout, &state.host(state.member(&new)?))? {
        progress(&format!("pgbouncer now routes to {new}"));
    }
    Ok(new)
}

/// The log of one member, or of etcd and every member.
pub fn logs(layout: &Layout, member: Option<&str>) -> Result<String> {
    let state = state::require(layout)?;
    let files = match member {
        Some(name) => vec![layout.member(&state.member(name)?.name).log()],
        None => std::iter::once(layout.etcd_dir().join("etcd.log"))
            .chain(state.members.iter().map(|m| layout.member(&m.name).log()))
            .collect(),
    };
    let mut out = String::new();
    for file in files {
        let text = std::fs::read_to_string(&file).map_err(io("reading", &file))?;
        if member.is_none() {
            out += &format!("==> {} <==\n", file.display());
        }
        out += &text;
    }
    Ok(out)
}

/// The local CA bundle (PEM), for clients' `sslrootcert`: the signing root and, during a root
/// rollover, the previous root too (see `tls`), so a client holding it accepts every member.
pub fn ca_pem(layout: &Layout) -> Result<String> {
    let path = layout.ca_dir().join(tusk_config::paths::TLS_CA_FILE);
    std::fs::read_to_string(&path).map_err(io("reading", path))
}
