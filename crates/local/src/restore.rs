//! Restores with pgBackRest in local mode, on the argument lists of `tusk_config::restore`:
//!
//! - A clone (`spec.dataSource.postgresCluster`): the new cluster's first member is made by
//!   Patroni's restore bootstrap method ([`bootstrap`]) from the source cluster's repository,
//!   found beside this cluster's state directory (`<state root>/<clusterName>/pgbackrest/
//!   <repoName>`) and only read. The clone archives into its own repository, own stanza.
//! - In place ([`restore_in_place`], `tusk local restore --target TIME`): everything committed
//!   after the target is LOST, on every member. The WAL up to now is archived first (so the
//!   target is reachable), every member stops, Patroni's keys are deleted from etcd (they
//!   describe a history the restored data no longer has: the old leader's WAL position would
//!   keep the restored member from ever leading), `pgbackrest restore --delta` rewinds the
//!   primary's data directory, PostgreSQL alone replays to the target and promotes, then
//!   Patroni takes the data over as a new cluster. A full backup is taken on the new timeline
//!   before the replicas, wiped, clone again: the repo's older backups lie on the abandoned
//!   timeline and cannot seed them.
//!
//! Touches the members' data directories and processes, etcd's keys of this cluster, and the
//! repository (through pgBackRest).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use tusk_api::model::DataSourceSettings;
use tusk_api::ValidatedCluster;
use tusk_config::parameters::PGBACKREST_STANZA;
use tusk_config::patroni::Bootstrap;
use tusk_config::restore::{command_line, restore_args, RestoreMode, RestoreRequest};

use crate::backup::{self, BackupKind};
use crate::error::{io, Error, Result};
use crate::members::{self, Context};
use crate::observe::Waiter;
use crate::patroni_api::PatroniApi;
use crate::state::{self, Layout};
use crate::system::{self, RunAs};

/// How often the end of recovery is polled.
const POLL: Duration = Duration::from_millis(250);

/// `tusk local restore` options.
pub struct RestoreOptions {
    /// Point in time to restore to (any timestamp PostgreSQL reads; without a zone, the
    /// server's `TimeZone`). `None`: `spec.backups.pgbackrest.restore.options` say where.
    pub target: Option<String>,
    /// Repository (default: `restore.repoName`, else the first).
    pub repo: Option<u8>,
    /// Bound on each wait (recovery, leader, replicas).
    pub wait_limit: Duration,
}

fn lossy(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

/// The source repository of a clone: its index and directory.
fn clone_source(cluster: &ValidatedCluster, layout: &Layout) -> Result<Option<(u8, PathBuf)>> {
    let Some(DataSourceSettings::PostgresCluster {
        cluster_name,
        repo_name,
        ..
    }) = &cluster.data_source
    else {
        return Ok(None);
    };
    let field = "spec.dataSource.postgresCluster";
    let name = cluster_name.as_deref().ok_or_else(|| Error::Unsupported {
        field: format!("{field}.clusterName"),
        reason: "required locally: the source is the cluster of that name beside this one".into(),
    })?;
    let repo = repo_name
        .strip_prefix("repo")
        .and_then(|n| n.parse::<u8>().ok())
        .filter(|n| (1..=4).contains(n))
        .ok_or_else(|| Error::Unsupported {
            field: format!("{field}.repoName"),
            reason: format!("{repo_name:?} must be repo1..repo4"),
        })?;
    let root = layout.root.parent().unwrap_or(Path::new("/"));
    let dir = Layout::new(root.join(name))
        .pgbackrest_dir()
        .join(repo_name);
    Ok(Some((repo, dir)))
}

/// Refuses a new clone whose source repository is not there, before anything is created.
pub(crate) fn check_clone_source(cluster: &ValidatedCluster, layout: &Layout) -> Result<()> {
    match clone_source(cluster, layout)? {
        Some((_, dir)) if !dir.join("backup").join(PGBACKREST_STANZA).is_dir() => {
            Err(Error::Unsupported {
                field: "spec.dataSource.postgresCluster".into(),
                reason: format!(
                    "no pgBackRest repository with stanza {PGBACKREST_STANZA:?} at {}",
                    dir.display()
                ),
            })
        }
        _ => Ok(()),
    }
}

/// How this cluster's first member is made: a restore from the clone source, else initdb.
/// A clone's members get an empty data directory now (Patroni bootstraps or clones into it;
/// pgBackRest restores only into an existing directory).
pub(crate) fn bootstrap(
    cluster: &ValidatedCluster,
    layout: &Layout,
    data_dir: &Path,
) -> Result<Bootstrap> {
    if let Some(restore) = crate::backup::cloud_source::bootstrap(cluster, layout, data_dir)? {
        return Ok(restore);
    }
    let Some((repo, repo_dir)) = clone_source(cluster, layout)? else {
        return Ok(Bootstrap::Initdb);
    };
    let Some(DataSourceSettings::PostgresCluster { options, .. }) = &cluster.data_source else {
        return Ok(Bootstrap::Initdb);
    };
    restore_bootstrap(
        data_dir,
        PGBACKREST_STANZA,
        repo,
        vec![format!("--repo{repo}-path={}", lossy(&repo_dir))],
        options,
    )
}

/// The restore bootstrap into `data_dir` (made empty when missing: pgBackRest restores only
/// into an existing directory) from `repo` of `stanza`, found by `source_options`.
pub(crate) fn restore_bootstrap(
    data_dir: &Path,
    stanza: &str,
    repo: u8,
    source_options: Vec<String>,
    user_options: &[String],
) -> Result<Bootstrap> {
    if !data_dir.exists() {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(data_dir)
            .map_err(io("creating", data_dir))?;
    }
    let args = restore_args(&RestoreRequest {
        mode: RestoreMode::Bootstrap,
        stanza,
        data_dir: &lossy(data_dir),
        repo,
        source_options,
        user_options,
        target_time: None,
    });
    Ok(Bootstrap::Restore {
        command: command_line(&lossy(&system::find_program("pgbackrest")), &args),
    })
}

/// The target as pgBackRest reads it (UTC, microseconds), checked by PostgreSQL before
/// anything stops: it must parse, lie in the past, and follow a backup of `repo`.
fn checked_target(
    cluster: &ValidatedCluster,
    layout: &Layout,
    leader: &str,
    target: &str,
    repo: u8,
) -> Result<String> {
    let bad = |reason: String| Error::Unsupported {
        field: "--target".into(),
        reason,
    };
    let literal = tusk_config::users::quote_literal(target);
    let row = members::psql(
        cluster,
        layout,
        leader,
        &format!(
            "SELECT extract(epoch FROM {literal}::timestamptz)::bigint, \
             to_char({literal}::timestamptz AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') || '+00', \
             {literal}::timestamptz < now()"
        ),
    )
    .map_err(|e| bad(format!("{target:?} is not a timestamp PostgreSQL reads: {e}")))?;
    let fields: Vec<&str> = row.trim().split('|').collect();
    let [epoch, normalized, past] = fields[..] else {
        return Err(bad(format!("unexpected answer {row:?}")));
    };
    if past != "t" {
        return Err(bad(format!("{target:?} is not in the past")));
    }
    let epoch: i64 = epoch
        .parse()
        .map_err(|_| bad(format!("unexpected epoch {epoch:?}")))?;
    let backups = backup::list_backups(layout)?;
    if !backups.iter().any(|b| b.repo == repo && b.stop <= epoch) {
        return Err(bad(format!(
            "no backup in repo{repo} finished before {normalized} (take one with `tusk local backup`)"
        )));
    }
    Ok(normalized.to_owned())
}

/// In-place point-in-time restore of the whole cluster (see the module header for what is
/// lost). Returns the primary's name once every member streams again.
pub fn restore_in_place(
    layout: &Layout,
    options: &RestoreOptions,
    progress: &mut dyn FnMut(&str),
) -> Result<String> {
    let state = state::require(layout)?;
    let (_, cluster) = crate::up::load_manifest(&layout.manifest())?;
    let spec = cluster.backups.as_ref().and_then(|b| b.restore.as_ref());
    let user_options = spec.map(|r| r.options.clone()).unwrap_or_default();
    if options.target.is_none() && user_options.is_empty() {
        return Err(Error::Unsupported {
            field: "--target".into(),
            reason: "nothing to restore to: pass --target TIME or set \
                     spec.backups.pgbackrest.restore.options"
                .into(),
        });
    }
    let repo = backup::choose_repo(&cluster, options.repo, spec.map(|r| r.repo_name.as_str()))?;
    let leader = crate::users::current_leader(layout, &state, &cluster)?;
    let target = match &options.target {
        Some(t) => Some(checked_target(&cluster, layout, &leader, t, repo)?),
        None => None,
    };
    let run_as = RunAs::detect()?;
    progress("archiving the WAL up to now (pgbackrest check)");
    system::run_helper(
        "pgbackrest check (WAL archived before the restore)",
        backup::pgbackrest(layout, &leader, &["check"]),
        Some(&run_as),
    )?;

    for record in state.members.iter().filter(|m| m.name != leader) {
        progress(&format!("stopping {}", record.name));
        members::stop(layout, &record.name);
    }
    progress(&format!("stopping the primary {leader}"));
    members::stop(layout, &leader);
    etcd_forget(&cluster, &state)?;

    let paths = layout.member(&leader);
    let data_dir = paths.data_dir();
    let args = restore_args(&RestoreRequest {
        mode: RestoreMode::InPlace,
        stanza: PGBACKREST_STANZA,
        data_dir: &lossy(&data_dir),
        repo,
        source_options: vec![],
        user_options: &user_options,
        target_time: target.as_deref(),
    });
    progress(&format!(
        "restoring {leader} from repo{repo}{}",
        target
            .as_deref()
            .map(|t| format!(" to {t}"))
            .unwrap_or_default()
    ));
    let mut command = Command::new(system::find_program("pgbackrest"));
    command
        .env("PGBACKREST_CONFIG", paths.pgbackrest_conf())
        .args(&args);
    system::run_helper("pgbackrest restore", command, Some(&run_as))?;
    finish_recovery(
        &cluster,
        layout,
        &leader,
        &run_as,
        options.wait_limit,
        progress,
    )?;

    let api = PatroniApi::new(layout, cluster.patroni.port)?;
    let ctx = Context {
        cluster: &cluster,
        layout,
        state: &state,
        run_as: &run_as,
    };
    let waiter = Waiter {
        cluster: &cluster,
        layout,
        state: &state,
        api: &api,
        limit: options.wait_limit,
    };
    progress(&format!("starting {leader} as the new cluster's primary"));
    members::start(&ctx, state.member(&leader)?)?;
    waiter.leader_running(&leader)?;
    backup::run_backup(layout, BackupKind::Full, Some(repo), progress)?;

    for record in state.members.iter().filter(|m| m.name != leader) {
        progress(&format!(
            "re-creating {} from the restored primary",
            record.name
        ));
        let dir = layout.member(&record.name).data_dir();
        match std::fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(io("removing", &dir)(e))
            }
            _ => {}
        }
        members::start(&ctx, record)?;
    }
    let leader = waiter.ready_healing(&ctx, progress)?;
    progress(&format!("restored: primary {leader}"));
    Ok(leader)
}

fn etcd_forget(cluster: &ValidatedCluster, state: &state::State) -> Result<()> {
    crate::etcd::reset_cluster(
        &state.network,
        state.etcd_api,
        &cluster.names.patroni_scope(),
        &tusk_config::patroni::dynamic_configuration(cluster).to_string(),
    )
}

/// Runs the restored PostgreSQL without Patroni until recovery reaches the target and
/// promotes, then stops it cleanly. Patroni would discard the recovery target pgBackRest
/// wrote (it owns recovery settings of the members it starts) and replay to the end.
fn finish_recovery(
    cluster: &ValidatedCluster,
    layout: &Layout,
    member: &str,
    run_as: &RunAs,
    limit: Duration,
    progress: &mut dyn FnMut(&str),
) -> Result<()> {
    let paths = layout.member(member);
    let pg_ctl =
        PathBuf::from(tusk_config::paths::bin_dir(cluster.postgres_version)).join("pg_ctl");
    let log = paths.dir.join("restore-recovery.log");
    let pg_ctl_command = |args: &[&str]| {
        let mut command = Command::new(&pg_ctl);
        command
            .arg("-D")
            .arg(paths.data_dir())
            .args(args)
            .env("PGBACKREST_CONFIG", paths.pgbackrest_conf())
            .env("LC_ALL", "C.UTF-8");
        command
    };
    progress("replaying WAL to the target (PostgreSQL alone, then promoted)");
    let seconds = limit.as_secs().to_string();
    system::run_helper(
        "pg_ctl start (recovery of the restored data)",
        pg_ctl_command(&["-l", &lossy(&log), "-w", "-t", &seconds, "start"]),
        Some(run_as),
    )
    .map_err(|e| Error::Command {
        what: format!("recovery of {member} (see {})", log.display()),
        output: format!("{e}\n{}", system::log_tail(&log, 20)),
    })?;
    let start = Instant::now();
    let outcome = loop {
        match members::psql(cluster, layout, member, "SELECT pg_is_in_recovery()") {
            Ok(answer) if answer.trim() == "f" => break Ok(()),
            _ if start.elapsed() > limit => {
                break Err(Error::Timeout {
                    what: format!("{member} to finish recovery and promote"),
                    seconds: start.elapsed().as_secs(),
                    log: log.clone(),
                })
            }
            _ => std::thread::sleep(POLL),
        }
    };
    system::run_helper(
        "pg_ctl stop (after recovery)",
        pg_ctl_command(&["-m", "fast", "-w", "-t", &seconds, "stop"]),
        Some(run_as),
    )?;
    outcome
}
