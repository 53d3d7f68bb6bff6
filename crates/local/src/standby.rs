//! Standby clusters in local mode (`spec.standby`). Patroni does the work from the shared
//! rendering (`tusk_config::patroni`'s `standby_cluster`): the first member bootstraps as the
//! *standby leader* from the source (a pgBackRest restore of `repoName`, or `pg_basebackup`
//! from `host`/`port` over TLS with the replication certificate) and keeps following it; the
//! other members replicate from it. This module holds what `up` does differently for one:
//!
//! - before anything exists, a `volume` repo to follow must hold the source's stanza (its
//!   directory is the source cluster's, named by `global.repoN-path` as for a bucket two
//!   clusters share; see [`check_source`]);
//! - while following, the cluster is read-only: no stanza creation (the source owns the
//!   stanza), no users, databases or service roles (they come from the source);
//! - `enabled: false` removes `standby_cluster` from the DCS (the PATCH of `rollout`), which
//!   makes Patroni promote the standby leader; [`finish_promotion`] waits for it and then does
//!   what a primary needs (stanza, archive check). As in the PGO family, stopping the source
//!   first is the user's job: two primaries would write to one repository.
//!
//! Touches nothing itself but through Patroni's REST API, psql and pgBackRest.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use tusk_api::model::RepoStorage;
use tusk_api::ValidatedCluster;
use tusk_config::parameters::PGBACKREST_STANZA;

use crate::error::{Error, Result};
use crate::observe::{cluster_view, Waiter};
use crate::state::Layout;
use crate::system::RunAs;

/// How often the end of a promotion is polled.
const POLL: Duration = Duration::from_millis(250);

/// Whether the spec asks for a standby cluster now.
pub fn enabled(cluster: &ValidatedCluster) -> bool {
    cluster.standby.as_ref().is_some_and(|s| s.enabled)
}

/// Whether the running cluster's leader is a standby leader (it follows a source).
pub fn following(w: &Waiter) -> bool {
    cluster_view(w.api, w.state)
        .and_then(|v| v.leader().map(|l| l.role == "standby_leader"))
        .unwrap_or(false)
}

/// Whether `up` may create the stanza and check archiving on the leader now: only a
/// primary can (and only a cluster not about to become a standby should own the stanza).
pub fn may_own_stanza(cluster: &ValidatedCluster, w: &Waiter) -> bool {
    cluster.backups.is_some() && !enabled(cluster) && !following(w)
}

/// The directory of the followed `volume` repo: `global.repoN-path` when the user names the
/// source's repository there, else this cluster's own (then it holds nothing to follow).
fn followed_repo_dir(cluster: &ValidatedCluster, layout: &Layout) -> Option<(String, PathBuf)> {
    let repo_name = cluster
        .standby
        .as_ref()
        .filter(|s| s.enabled)?
        .repo_name
        .as_ref()?;
    let backups = cluster.backups.as_ref()?;
    let repo = backups.repos.iter().find(|r| &r.name == repo_name)?;
    if !matches!(repo.storage, RepoStorage::Volume(_)) {
        return None;
    }
    let key = format!("repo{}-path", repo.index);
    let dir = match backups.global.get(&key) {
        Some(path) => PathBuf::from(path),
        None => layout.pgbackrest_dir().join(&repo.name),
    };
    Some((key, dir))
}

/// Refuses a new repo-based standby whose `volume` repository holds no stanza to follow,
/// before anything is created. Object-store repos are checked by pgBackRest itself.
pub fn check_source(cluster: &ValidatedCluster, layout: &Layout) -> Result<()> {
    let Some((key, dir)) = followed_repo_dir(cluster, layout) else {
        return Ok(());
    };
    if dir.join("backup").join(PGBACKREST_STANZA).is_dir() {
        return Ok(());
    }
    Err(Error::Unsupported {
        field: "spec.standby.repoName".into(),
        reason: format!(
            "no pgBackRest stanza {PGBACKREST_STANZA:?} to follow at {} (locally a standby \
             follows a source cluster's volume repo named by \
             spec.backups.pgbackrest.global.{key}, e.g. <source state dir>/pgbackrest/repo1)",
            dir.display()
        ),
    })
}

/// After the dynamic configuration was applied: when `was_following` and the spec no longer
/// asks for a standby, waits until Patroni has promoted the standby leader and PostgreSQL
/// accepts writes, then creates/checks the stanza as on any primary. Returns the leader.
pub fn finish_promotion(
    w: &Waiter,
    was_following: bool,
    leader: &str,
    run_as: &RunAs,
    progress: &mut dyn FnMut(&str),
) -> Result<()> {
    if !was_following || enabled(w.cluster) {
        return Ok(());
    }
    progress(&format!(
        "spec.standby is disabled: waiting for Patroni to promote {leader}"
    ));
    let start = Instant::now();
    loop {
        let promoted = !following(w)
            && crate::members::psql(w.cluster, w.layout, leader, "SELECT pg_is_in_recovery()")
                .is_ok_and(|answer| answer.trim() == "f");
        if promoted {
            break;
        }
        if start.elapsed() > w.limit {
            return Err(Error::Timeout {
                what: format!("{leader} to be promoted out of standby"),
                seconds: start.elapsed().as_secs(),
                log: w.layout.member(leader).log(),
            });
        }
        std::thread::sleep(POLL);
    }
    progress(&format!("{leader} is promoted and accepts writes"));
    if w.cluster.backups.is_some() {
        progress("creating the pgBackRest stanza and checking WAL archiving");
        crate::backup::stanza_create_and_check(w.layout, leader, run_as)?;
    }
    Ok(())
}
