//! WAL-archiving health: the latest `pg_stat_archiver` figures of each cluster's primary, as
//! the step that connects to the primary (the SQL step) records them in [`ArchiverReports`]
//! (shared through the controller's `Context`), and the pure [`wal_archiving`] verdict the
//! backup step turns into the `WALArchiving` condition. The backup step only reads the latest
//! figures, so a reconcile without a database connection still works. No I/O.

use std::collections::BTreeMap;
use std::sync::Mutex;

use k8s_openapi::jiff::Timestamp;

use super::backups::Verdict;

/// `WALArchiving` reasons.
pub const REASON_ARCHIVE_FAILING: &str = "ArchiveFailing";
pub const REASON_ARCHIVE_HEALTHY: &str = "ArchiveHealthy";

/// `pg_stat_archiver` of a cluster's primary, as the SQL step read it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArchiverFigures {
    pub failed_count: i64,
    pub last_failed_time: Option<Timestamp>,
    pub last_archived_time: Option<Timestamp>,
}

/// The latest [`ArchiverFigures`] per cluster `(namespace, name)`, shared by the step that
/// reads them (writes) and this one (reads). Bounded by the number of clusters.
#[derive(Debug, Default)]
pub struct ArchiverReports {
    latest: Mutex<BTreeMap<(String, String), ArchiverFigures>>,
}

impl ArchiverReports {
    pub fn record(&self, namespace: &str, name: &str, figures: ArchiverFigures) {
        self.lock()
            .insert((namespace.to_owned(), name.to_owned()), figures);
    }

    pub fn latest(&self, namespace: &str, name: &str) -> Option<ArchiverFigures> {
        self.lock()
            .get(&(namespace.to_owned(), name.to_owned()))
            .copied()
    }

    /// Drops a deleted cluster's figures.
    pub fn forget(&self, namespace: &str, name: &str) {
        self.lock().remove(&(namespace.to_owned(), name.to_owned()));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<(String, String), ArchiverFigures>> {
        // A panic while holding the lock leaves a plain map behind: still usable.
        self.latest.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// `WALArchiving` from archiver figures: failing when the last failure is newer than the last
/// success (or there were failures and never a success). The message names absolute times
/// only, so an unchanged state does not rewrite the status on every reconcile.
pub fn wal_archiving(figures: &ArchiverFigures) -> Verdict {
    let failing = match (figures.last_failed_time, figures.last_archived_time) {
        (Some(failed), Some(archived)) => failed > archived,
        (Some(_), None) => true,
        (None, _) => false,
    };
    let at = |t: Option<Timestamp>| t.map_or_else(|| "never".to_owned(), |t| t.to_string());
    if failing {
        Verdict {
            ok: false,
            reason: REASON_ARCHIVE_FAILING,
            message: format!(
                "archive_command failing: last failure {}, last archived segment {} ({} \
                 failures in total); WAL accumulates on the instance volume until archiving \
                 succeeds",
                at(figures.last_failed_time),
                at(figures.last_archived_time),
                figures.failed_count
            ),
        }
    } else {
        Verdict {
            ok: true,
            reason: REASON_ARCHIVE_HEALTHY,
            message: format!(
                "no archive failure since the last archived segment ({} failures in total)",
                figures.failed_count
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figures(failed: Option<i64>, archived: Option<i64>) -> ArchiverFigures {
        let at = |s: Option<i64>| s.map(|s| Timestamp::from_second(s).unwrap());
        ArchiverFigures {
            failed_count: i64::from(failed.is_some()),
            last_failed_time: at(failed),
            last_archived_time: at(archived),
        }
    }

    #[test]
    fn archiving_fails_only_when_the_last_failure_is_the_newest_event() {
        let verdict = |f, a| wal_archiving(&figures(f, a));
        assert!(
            verdict(None, None).ok,
            "nothing archived yet, nothing failed"
        );
        assert!(verdict(None, Some(10)).ok);
        assert!(verdict(Some(10), Some(20)).ok, "recovered after a failure");
        let failing = verdict(Some(20), Some(10));
        assert!(!failing.ok);
        assert_eq!(failing.reason, REASON_ARCHIVE_FAILING);
        assert!(!verdict(Some(20), None).ok, "never archived, failing");
        // Absolute times only: the same figures give the same message at any time.
        assert_eq!(failing, verdict(Some(20), Some(10)));
    }
}
