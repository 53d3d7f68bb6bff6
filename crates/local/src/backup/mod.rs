//! pgBackRest in local mode: `volume` repositories are directories under
//! `<state>/pgbackrest/`, shared by all members (as a repo host would be); the stanza is
//! created once the leader runs and `pgbackrest check` proves that WAL archiving works, so
//! a broken archive_command fails `up` instead of filling the disk silently. `s3` and `azure`
//! repositories are used as on Kubernetes, with credentials from `configuration` projections
//! (module `projections`); `gcs` is refused before anything is changed.
//!
//! `tusk local backup` ([`run_backup`]) runs on the current primary; pgBackRest expires
//! backups beyond `repoN-retention-full` (from `spec.backups.pgbackrest.global`) right after
//! each one. `tusk local backups` is [`list_backups`] (module `info`). Touches the repository
//! directory through the `pgbackrest` program and, after a backup, the exporter's
//! backup-status table on the primary.

pub mod cloud_source;
mod info;
pub mod projections;

pub use info::{list_backups, render_backups, BackupInfo};
pub use projections::Projected;

use std::process::Command;

use tusk_api::model::DataSourceSettings;
use tusk_api::ValidatedCluster;
use tusk_config::pgbackrest::{data_source_conf, posix_conf, NotPosix, PosixInstance};

use crate::error::{Error, Result};
use crate::state::Layout;
use crate::system::{self, RunAs};

/// Refuses a manifest whose repositories cannot be run locally, naming the field.
pub fn check_supported(cluster: &ValidatedCluster) -> Result<()> {
    let probe = PosixInstance {
        data_dir: "/",
        socket_dir: "/",
        port: cluster.port,
        repo_root: "/",
        log_dir: "/",
        lock_dir: "/",
    };
    posix_conf(cluster, &probe).map_err(not_local)?;
    if let Some(DataSourceSettings::PgBackRest {
        stanza,
        repo,
        global,
        ..
    }) = &cluster.data_source
    {
        let field = "spec.dataSource.pgbackrest.repo";
        data_source_conf(stanza, repo, global, &probe, field).map_err(not_local)?;
    }
    Ok(())
}

/// The error for a repository `tusk local` does not run.
pub(crate) fn not_local(e: NotPosix) -> Error {
    Error::Unsupported {
        field: e.field,
        reason: "runs locally only as `s3` or `azure` (and, in spec.backups, `volume`); gcs has \
                 no GCS-compatible server to prove it against"
            .into(),
    }
}

pub(crate) fn pgbackrest(layout: &Layout, member: &str, args: &[&str]) -> Command {
    let mut command = Command::new(system::find_program("pgbackrest"));
    command
        .env("PGBACKREST_CONFIG", layout.member(member).pgbackrest_conf())
        .args(["--stanza", tusk_config::parameters::PGBACKREST_STANZA])
        .args(args);
    command
}

/// `stanza-create` (idempotent) then `check` (forces a WAL switch and waits for the segment
/// to reach the repository), both on the leader, as the server user.
pub fn stanza_create_and_check(layout: &Layout, leader: &str, run_as: &RunAs) -> Result<()> {
    system::run_helper(
        "pgbackrest stanza-create",
        pgbackrest(layout, leader, &["stanza-create"]),
        Some(run_as),
    )?;
    system::run_helper(
        "pgbackrest check (WAL archiving)",
        pgbackrest(layout, leader, &["check"]),
        Some(run_as),
    )?;
    Ok(())
}

/// pgBackRest's backup types.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackupKind {
    Full,
    Diff,
    Incr,
}

impl BackupKind {
    /// The `--type` value (and the `type` pgBackRest reports).
    pub fn as_str(self) -> &'static str {
        match self {
            BackupKind::Full => "full",
            BackupKind::Diff => "diff",
            BackupKind::Incr => "incr",
        }
    }

    pub fn parse(text: &str) -> Option<BackupKind> {
        match text {
            "full" => Some(BackupKind::Full),
            "diff" => Some(BackupKind::Diff),
            "incr" => Some(BackupKind::Incr),
            _ => None,
        }
    }
}

/// The repo a command uses: `asked` (`--repo N`), else `preferred` (the manifest's
/// `repoName` for that purpose), else the first. Errors name the offending input.
pub(crate) fn choose_repo(
    cluster: &ValidatedCluster,
    asked: Option<u8>,
    preferred: Option<&str>,
) -> Result<u8> {
    let backups = cluster.backups.as_ref().ok_or_else(|| Error::Unsupported {
        field: "spec.backups".into(),
        reason: "the cluster has no pgBackRest repository".into(),
    })?;
    match asked {
        Some(n) if backups.repos.iter().any(|r| r.index == n) => Ok(n),
        Some(n) => Err(Error::Unsupported {
            field: "--repo".into(),
            reason: format!("repo{n} is not in spec.backups.pgbackrest.repos"),
        }),
        None => Ok(preferred
            .and_then(|name| backups.repos.iter().find(|r| r.name == name))
            .unwrap_or(&backups.repos[0])
            .index),
    }
}

/// The backup type `tusk local backup` takes without `--type`: the `--type` of
/// `spec.backups.pgbackrest.manual.options` (PGO manuals use `--type=full`), else full.
pub fn default_kind(cluster: &ValidatedCluster) -> BackupKind {
    manual_options(cluster)
        .iter()
        .find_map(|o| o.strip_prefix("--type="))
        .and_then(BackupKind::parse)
        .unwrap_or(BackupKind::Full)
}

fn manual_options(cluster: &ValidatedCluster) -> Vec<String> {
    cluster
        .backups
        .as_ref()
        .and_then(|b| b.manual.as_ref())
        .map(|m| {
            m.options
                .iter()
                .flat_map(|o| tusk_config::restore::option_words(o))
                .collect()
        })
        .unwrap_or_default()
}

/// A `kind` backup of the primary into repo `repo` (default: `manual.repoName`, else the
/// first repo) with `spec.backups.pgbackrest.manual.options` (their `--type` yields to
/// `kind`). Returns the backup as `pgbackrest info` lists it. When the exporter is in the
/// spec, the backup is recorded in its backup-status table (skipped while that table does
/// not exist yet).
pub fn run_backup(
    layout: &Layout,
    kind: BackupKind,
    repo: Option<u8>,
    progress: &mut dyn FnMut(&str),
) -> Result<BackupInfo> {
    let state = crate::state::require(layout)?;
    let (_, cluster) = crate::up::load_manifest(&layout.manifest())?;
    let manual_repo = cluster
        .backups
        .as_ref()
        .and_then(|b| b.manual.as_ref())
        .map(|m| m.repo_name.clone());
    let repo = choose_repo(&cluster, repo, manual_repo.as_deref())?;
    let leader = crate::users::current_leader(layout, &state, &cluster)?;
    let run_as = RunAs::detect()?;
    let mut args = vec![
        format!("--repo={repo}"),
        format!("--type={}", kind.as_str()),
    ];
    args.extend(
        manual_options(&cluster)
            .into_iter()
            .filter(|o| tusk_config::restore::option_name(o) != "--type"),
    );
    args.push("backup".into());
    progress(&format!(
        "{} backup of {leader} into repo{repo}",
        kind.as_str()
    ));
    let before: Vec<String> = list_backups(layout)?.into_iter().map(|b| b.label).collect();
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    system::run_helper(
        "pgbackrest backup",
        pgbackrest(layout, &leader, &argv),
        Some(&run_as),
    )?;
    let backup = list_backups(layout)?
        .into_iter()
        .filter(|b| b.repo == repo && !before.contains(&b.label))
        .max_by_key(|b| b.stop)
        .ok_or_else(|| Error::Command {
            what: "pgbackrest info after the backup".into(),
            output: format!("no new backup in repo{repo}"),
        })?;
    progress(&format!(
        "backup {} done ({} bytes)",
        backup.label, backup.size
    ));
    if cluster.exporter.is_some() {
        record_for_exporter(&cluster, layout, &leader, &backup)?;
    }
    Ok(backup)
}

/// Fills the exporter's backup-status table, which the exporter's role setup creates: until
/// it exists there is nothing to record into, and that is not the backup's failure.
fn record_for_exporter(
    cluster: &ValidatedCluster,
    layout: &Layout,
    leader: &str,
    backup: &BackupInfo,
) -> Result<()> {
    use tusk_config::exporter::{record_backup_sql, BACKUP_STATUS_TABLE};
    let exists = crate::members::psql(
        cluster,
        layout,
        leader,
        &format!("SELECT to_regclass('{BACKUP_STATUS_TABLE}') IS NOT NULL"),
    )?;
    if exists.trim() != "t" {
        return Ok(());
    }
    crate::members::psql(
        cluster,
        layout,
        leader,
        &record_backup_sql(
            &format!("repo{}", backup.repo),
            backup.kind.as_str(),
            &backup.label,
            backup.stop,
        ),
    )
    .map(drop)
}
