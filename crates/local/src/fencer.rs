//! One member's fencer ([`tusk_fence`]): a process beside its Patroni that stops the member's
//! PostgreSQL when it runs as a primary whose leader lease can no longer be valid. Here it
//! reads the lease from the cluster's etcd and asks the member's Patroni with the admin
//! client certificate. Patroni, once it runs again, starts PostgreSQL as what the DCS says it
//! is (crash recovery as the leader, or a rewound replica).
//!
//! Started before Patroni by [`start`] and stopped after it by [`stop`]; its settings are
//! `fencer.json` in the member's directory ([`write_config`]), its log `fencer.log`. Touches
//! only that member's postmaster, its children and its own files.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tusk_config::patroni::EtcdApi;
use tusk_fence::etcd::{Api, EtcdLease};
use tusk_fence::policy::{FencePolicy, PatroniAnswer};
use tusk_fence::{Guard, PatroniStatus};

use crate::error::{io, Error, Result};
use crate::members::Context;
use crate::patroni_api::PatroniApi;
use crate::state::{Layout, MemberPaths, MemberRecord};
use crate::system;

/// Patroni's key namespace (Tusk never changes it).
const NAMESPACE: &str = "/service";
/// How long a starting fencer may take to load its settings and certificates.
const STARTUP: Duration = Duration::from_secs(10);
/// Marks the fencer's command line, so a recycled pid is not taken for it.
const MARKER: &str = "fencer.json";

/// Everything the fencer needs, written by `tusk local up` for each member.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FencerConfig {
    pub state_dir: PathBuf,
    pub member: String,
    /// The member's address (its REST API listens there).
    pub host: String,
    pub rest_port: u16,
    pub scope: String,
    /// etcd's `host:port`, and which of its APIs Patroni keeps the keys in.
    pub etcd: String,
    pub etcd_api: EtcdApi,
    /// Patroni's `ttl` and `loop_wait` (seconds), for the margin.
    pub ttl: u32,
    pub loop_wait: u32,
}

fn paths_config(paths: &MemberPaths) -> PathBuf {
    paths.dir.join(MARKER)
}

fn pid_file(paths: &MemberPaths) -> PathBuf {
    paths.dir.join("fencer.pid")
}

/// Writes the member's `fencer.json`; a running fencer picks a change up on its next poll.
pub fn write_config(ctx: &Context, record: &MemberRecord) -> Result<()> {
    let paths = ctx.layout.member(&record.name);
    let config = FencerConfig {
        state_dir: ctx.layout.root.clone(),
        member: record.name.clone(),
        host: ctx.state.host(record),
        rest_port: ctx.cluster.patroni.port,
        scope: ctx.cluster.names.patroni_scope(),
        etcd: crate::etcd::client_endpoint(&ctx.state.network),
        etcd_api: ctx.state.etcd_api,
        ttl: ctx.cluster.patroni.leader_lease_seconds,
        loop_wait: ctx.cluster.patroni.sync_period_seconds,
    };
    let text = serde_json::to_string_pretty(&config).expect("the fencer config serialises");
    let file = paths_config(&paths);
    if std::fs::read_to_string(&file).ok().as_deref() != Some(&text) {
        std::fs::write(&file, text).map_err(io("writing", &file))?;
    }
    Ok(())
}

/// The fencer's pid when it runs.
pub fn pid(paths: &MemberPaths) -> Option<u32> {
    let marker = paths_config(paths);
    system::read_pid(&pid_file(paths)).filter(|pid| system::alive(*pid, &lossy(&marker)))
}

/// Starts the member's fencer unless it runs.
pub fn start(ctx: &Context, record: &MemberRecord) -> Result<()> {
    let paths = ctx.layout.member(&record.name);
    if pid(&paths).is_some() {
        return Ok(());
    }
    let (program, args) = program()?;
    let mut command = Command::new(program);
    command
        .args(args)
        .arg(paths_config(&paths))
        .current_dir(&paths.dir);
    system::clear_libpq_env(&mut command);
    // As the invoking user, not the server user: it presents the admin client certificate
    // to Patroni, which only `tusk`'s user may read. (It can signal the server user's
    // processes: that user is either the invoking one or `tusk` runs as root.)
    let what = format!("the fencer of {}", record.name);
    let log = paths.dir.join("fencer.log");
    let pid = system::spawn_detached(
        &what,
        command,
        &log,
        &pid_file(&paths),
        &ctx.run_as.invoking(),
    )?;
    // It reads its settings and certificates at once: a fencer that cannot guard says so
    // here, not by being silently absent later.
    let start = Instant::now();
    while start.elapsed() < STARTUP {
        if std::fs::read_to_string(&log)
            .is_ok_and(|text| text.contains(&Guard::guarding_line(&record.name)))
        {
            return Ok(());
        }
        if !system::alive(pid, &lossy(&paths_config(&paths))) {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(Error::Exited {
        what,
        log: log.clone(),
        tail: system::log_tail(&log, 10),
    })
}

/// Stops the member's fencer (after its Patroni, so a primary is never left unguarded).
pub fn stop(paths: &MemberPaths) {
    if let Some(pid) = pid(paths) {
        system::terminate(pid, &lossy(&paths_config(paths)), Duration::from_secs(5));
    }
    let _ = std::fs::remove_file(pid_file(paths));
}

/// The fencer program and its leading arguments: `tusk local fence` when this is the `tusk`
/// binary. Otherwise (tests, benchmarks, the chaos runner: programs that use this library)
/// the `tusk-fencer` or `tusk` binary built beside this program (test and bench binaries live
/// in `target/<profile>/deps`, the packages' binaries one level up), the newest of them: the
/// one cargo just built for this package, not a stale one from another build; else either on
/// the PATH.
fn program() -> Result<(PathBuf, Vec<&'static str>)> {
    const LOCAL_FENCE: [&str; 2] = ["local", "fence"];
    let me = std::env::current_exe().map_err(io("locating", "the running program"))?;
    if me.file_stem().is_some_and(|stem| stem == "tusk") {
        return Ok((me, LOCAL_FENCE.to_vec()));
    }
    let beside = me
        .parent()
        .map(|dir| vec![dir.to_path_buf(), dir.join("..")])
        .unwrap_or_default();
    let on_path: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect())
        .unwrap_or_default();
    let candidates = |dirs: Vec<PathBuf>| {
        dirs.into_iter()
            .flat_map(|dir| {
                [
                    (dir.join("tusk-fencer"), Vec::new()),
                    (dir.join("tusk"), LOCAL_FENCE.to_vec()),
                ]
            })
            .filter_map(|(program, args)| {
                let modified = std::fs::metadata(&program)
                    .ok()
                    .filter(|meta| meta.is_file())?
                    .modified()
                    .ok()?;
                Some((modified, program, args))
            })
            .collect::<Vec<_>>()
    };
    let newest_beside = candidates(beside)
        .into_iter()
        .max_by_key(|(modified, _, _)| *modified);
    newest_beside
        .or_else(|| candidates(on_path).into_iter().next())
        .map(|(_, program, args)| (program, args))
        .ok_or_else(|| Error::Os {
            action: "locating the member fencer".into(),
            reason: format!(
                "no `tusk-fencer` or `tusk` beside {} or on the PATH (run `tusk local`, which \
                 fences with itself, or build the tusk-local package's binaries)",
                me.display()
            ),
        })
}

fn lossy(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

/// The fencer's loop: runs until it is terminated. Reads `config_file` again when it changes.
pub fn run(config_file: &Path) -> Result<()> {
    let read_config = || -> Result<FencerConfig> {
        let text = std::fs::read_to_string(config_file).map_err(io("reading", config_file))?;
        serde_json::from_str(&text).map_err(|e| Error::Os {
            action: format!("parsing {}", config_file.display()),
            reason: e.to_string(),
        })
    };
    let modified = || {
        std::fs::metadata(config_file)
            .and_then(|m| m.modified())
            .ok()
    };
    let mut seen = modified();
    let mut last_error = None;
    let mut config = read_config()?;
    let mut guard = guard(&config)?;
    tusk_fence::log(&format!(
        "{}(lease margin {} ms)",
        Guard::guarding_line(&config.member),
        policy(&config).margin.as_millis()
    ));
    loop {
        let started = Instant::now();
        // Read again only when `up` rewrote it, not on every poll. A file caught halfway
        // through its rewrite (or certificates mid-rotation) keeps the fencer guarding with
        // what it has, and is read again on the next poll: it never exits over it.
        let now_modified = modified();
        if now_modified != seen {
            match read_config().and_then(|latest| Ok((self::guard(&latest)?, latest))) {
                Ok((fresh, latest)) => {
                    seen = now_modified;
                    last_error = None;
                    if latest != config {
                        guard.lease = fresh.lease;
                        guard.patroni = fresh.patroni;
                        guard.set_policy(policy(&latest));
                        config = latest;
                        tusk_fence::log("configuration changed");
                    }
                }
                Err(e) => {
                    let message = format!("keeping the current settings: {e}");
                    if last_error.as_ref() != Some(&message) {
                        tusk_fence::log(&message);
                        last_error = Some(message);
                    }
                }
            }
        }
        if let Some(fenced) = guard.poll() {
            tusk_fence::log(&fenced);
        }
        std::thread::sleep(tusk_fence::POLL.saturating_sub(started.elapsed()));
    }
}

fn policy(config: &FencerConfig) -> FencePolicy {
    FencePolicy::for_timings(config.ttl, config.loop_wait)
}

fn guard(config: &FencerConfig) -> Result<Guard> {
    let layout = Layout::new(&config.state_dir);
    let lease = EtcdLease {
        agent: tusk_fence::agent(None),
        endpoint: config.etcd.clone(),
        api: match config.etcd_api {
            EtcdApi::V2 => Api::V2,
            EtcdApi::V3 => Api::V3,
        },
        key: format!("{NAMESPACE}/{}/leader", config.scope),
        member: config.member.clone(),
    };
    let patroni = LocalPatroni {
        api: PatroniApi::with_timeout(&layout, config.rest_port, tusk_fence::ANSWER_TIMEOUT)?,
        host: config.host.clone(),
    };
    Ok(Guard::new(
        config.member.clone(),
        layout.member(&config.member).data_dir(),
        policy(config),
        Box::new(lease),
        Box::new(patroni),
    ))
}

/// The member's Patroni, asked with `tusk`'s admin client certificate.
struct LocalPatroni {
    api: PatroniApi,
    host: String,
}

impl PatroniStatus for LocalPatroni {
    fn ask(&self) -> PatroniAnswer {
        match self.api.status(&self.host) {
            Ok(status) => PatroniAnswer::from_status(&status),
            Err(e) => PatroniAnswer::Other(format!("Patroni did not answer: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_round_trips_through_its_file_format() {
        let config = FencerConfig {
            state_dir: "/tmp/s".into(),
            member: "hippo-0".into(),
            host: "127.0.0.2".into(),
            rest_port: 8008,
            scope: "hippo-ha".into(),
            etcd: "127.0.0.1:2379".into(),
            etcd_api: EtcdApi::V2,
            ttl: 15,
            loop_wait: 5,
        };
        let text = serde_json::to_string(&config).unwrap();
        assert!(text.contains(r#""etcd_api":"v2""#), "{text}");
        assert_eq!(serde_json::from_str::<FencerConfig>(&text).unwrap(), config);
    }
}
