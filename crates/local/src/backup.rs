//! pgBackRest in local mode: `volume` repositories are directories under
//! `<state>/pgbackrest/`, shared by all members (as a repo host would be); the stanza is
//! created once the leader runs and `pgbackrest check` proves that WAL archiving works, so
//! a broken archive_command fails `up` instead of filling the disk silently. Object-store
//! repositories (s3, gcs, azure) are refused before anything is changed. Touches the
//! repository directory through the `pgbackrest` program.

use std::process::Command;

use tusk_api::ValidatedCluster;
use tusk_config::pgbackrest::{posix_conf, PosixInstance};

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
    posix_conf(cluster, &probe)
        .map(drop)
        .map_err(|e| Error::Unsupported {
            field: e.field,
            reason: "only `volume` repositories run locally (as a directory under the state dir)"
                .into(),
        })
}

fn pgbackrest(layout: &Layout, member: &str, args: &[&str]) -> Command {
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
