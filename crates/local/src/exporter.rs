//! postgres_exporter in `tusk local` (`spec.monitoring.pgmonitor.exporter`): one
//! `/usr/bin/prometheus-postgres-exporter` per member, as the sidecar is per pod, serving
//! `http://<member host>:9187/metrics` with Tusk's curated queries
//! (`tusk_config::exporter`). It logs in as `_tusk_exporter` over TLS verified against the
//! local CA with the member's address (verify-full), the password read from a 0600 FILE
//! (`DATA_SOURCE_PASS_FILE`), never from the environment. Files live in
//! `<state>/exporter/<member>/`, outside the member directory, so an exporter whose member
//! was scaled away is still found and stopped. Touches those directories and the exporter
//! processes only.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde::Serialize;
use tusk_api::model::EXPORTER_PORT;
use tusk_api::ValidatedCluster;
use tusk_config::exporter::{self as config, Connection};
use tusk_config::paths::TLS_CA_FILE;

use crate::error::{io, Result};
use crate::state::{Layout, State};
use crate::system::{self, RunAs};

const START_LIMIT: Duration = Duration::from_secs(30);
const STOP_GRACE: Duration = Duration::from_secs(10);
/// Name of the password file in an exporter's directory.
const PASSWORD_FILE: &str = "password";

/// Where one member's exporter serves its metrics.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct ExporterEndpoint {
    pub member: String,
    pub url: String,
}

fn root(layout: &Layout) -> PathBuf {
    layout.root.join("exporter")
}

fn dir(layout: &Layout, member: &str) -> PathBuf {
    root(layout).join(member)
}

/// The queries file; its path (unique per state dir and member) also marks the process.
fn queries(layout: &Layout, member: &str) -> PathBuf {
    dir(layout, member).join(config::QUERIES_FILE)
}

fn lossy(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

/// The exporters of the recorded members, when the cluster has the exporter.
pub fn endpoints(cluster: &ValidatedCluster, state: &State) -> Option<Vec<ExporterEndpoint>> {
    cluster.exporter.as_ref()?;
    Some(
        state
            .members
            .iter()
            .map(|m| ExporterEndpoint {
                member: m.name.clone(),
                url: format!("http://{}:{EXPORTER_PORT}/metrics", state.host(m)),
            })
            .collect(),
    )
}

/// The exporter's pid for `member` when it runs.
pub fn pid(layout: &Layout, member: &str) -> Option<u32> {
    system::read_pid(&dir(layout, member).join("exporter.pid"))
        .filter(|pid| system::alive(*pid, &lossy(&queries(layout, member))))
}

/// Starts the exporter of every member that lacks one, and stops exporters of members that
/// are gone (or all of them when the spec has no exporter). `password` is `_tusk_exporter`'s.
/// Returns the members whose exporter was started.
pub fn ensure(
    cluster: &ValidatedCluster,
    state: &State,
    layout: &Layout,
    run_as: &RunAs,
    password: Option<&str>,
) -> Result<Vec<String>> {
    let wanted: Vec<&str> = match (&cluster.exporter, password) {
        (Some(_), Some(_)) => state.members.iter().map(|m| m.name.as_str()).collect(),
        _ => Vec::new(),
    };
    for member in recorded(layout) {
        if !wanted.contains(&member.as_str()) {
            stop(layout, &member);
        }
    }
    let mut started = Vec::new();
    for record in state
        .members
        .iter()
        .filter(|m| wanted.contains(&m.name.as_str()))
    {
        let password = password.expect("wanted only with a password");
        if start(
            cluster,
            layout,
            run_as,
            &state.host(record),
            &record.name,
            password,
        )? {
            started.push(record.name.clone());
        }
    }
    Ok(started)
}

/// Members with an exporter directory.
fn recorded(layout: &Layout) -> Vec<String> {
    std::fs::read_dir(root(layout))
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn start(
    cluster: &ValidatedCluster,
    layout: &Layout,
    run_as: &RunAs,
    host: &str,
    member: &str,
    password: &str,
) -> Result<bool> {
    let dir = dir(layout, member);
    std::fs::create_dir_all(&dir).map_err(io("creating", &dir))?;
    let queries_path = queries(layout, member);
    std::fs::write(&queries_path, config::QUERIES_YAML).map_err(io("writing", &queries_path))?;
    let password_file = dir.join(PASSWORD_FILE);
    crate::tls::write_secret(&password_file, password)?;
    run_as.own_tree(&dir)?;
    if pid(layout, member).is_some() {
        return Ok(false);
    }
    let listen = format!("{host}:{EXPORTER_PORT}");
    let connection = Connection {
        host: host.to_owned(),
        port: cluster.port,
        sslmode: "verify-full".to_owned(),
        sslrootcert: Some(lossy(&layout.ca_dir().join(TLS_CA_FILE))),
    };
    system::ensure_port_free("postgres_exporter", &listen)?;
    let mut command = Command::new(system::find_program("prometheus-postgres-exporter"));
    // lib/pq reads PG* variables too; only what Tusk sets may reach the exporter.
    command
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .envs(config::exporter_env(&connection))
        .env("DATA_SOURCE_PASS_FILE", &password_file)
        .args(config::exporter_args(&lossy(&queries_path), &listen, None))
        .current_dir(&dir);
    let log = dir.join("exporter.log");
    system::spawn_detached(
        &format!("postgres_exporter for {member}"),
        command,
        &log,
        &dir.join("exporter.pid"),
        run_as,
    )?;
    system::wait_listening("postgres_exporter", &listen, &log, START_LIMIT, || {
        pid(layout, member).is_some()
    })?;
    Ok(true)
}

/// Stops `member`'s exporter and forgets its directory.
pub fn stop(layout: &Layout, member: &str) {
    if let Some(running) = pid(layout, member) {
        system::terminate(running, &lossy(&queries(layout, member)), STOP_GRACE);
    }
    let _ = std::fs::remove_dir_all(dir(layout, member));
}

/// Stops every exporter of the state directory.
pub fn stop_all(layout: &Layout) {
    for member in recorded(layout) {
        stop(layout, &member);
    }
}
