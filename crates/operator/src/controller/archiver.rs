//! WAL-archiving health: the latest `pg_stat_archiver` figures of each cluster's primary, as
//! the step that connects to the primary (the SQL step) records them in [`ArchiverReports`]
//! (shared through the controller's `Context`), and the pure [`wal_archiving`] verdict the
//! backup step turns into the `WALArchiving` condition. The backup step only reads the latest
//! figures, so a reconcile without a database connection still works. No I/O.

use std::collections::BTreeMap;
use std::sync::Mutex;

use k8s_openapi::jiff::Timestamp;

/// `WALArchiving` reasons.
pub const REASON_ARCHIVE_FAILING: &str = "ArchiveFailing";
pub const REASON_ARCHIVE_HEALTHY: &str = "ArchiveHealthy";
pub const REASON_NO_SEGMENT_ARCHIVED: &str = "NoSegmentArchivedYet";

/// What the archiver figures show.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArchiveHealth {
    /// A segment was archived and no failure came after it: `True`.
    Healthy,
    /// The newest event is a failure: `False`.
    Failing,
    /// Nothing was archived yet and nothing failed: `Unknown`. Health is claimed only once
    /// seen, never assumed.
    NotYetSeen,
}

/// The `WALArchiving` condition to set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArchivingVerdict {
    pub health: ArchiveHealth,
    pub reason: &'static str,
    pub message: String,
}

impl ArchivingVerdict {
    /// The condition's status: `True`, `False` or `Unknown`.
    pub fn condition_status(&self) -> &'static str {
        match self.health {
            ArchiveHealth::Healthy => "True",
            ArchiveHealth::Failing => "False",
            ArchiveHealth::NotYetSeen => "Unknown",
        }
    }
}

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
/// success (or there were failures and never a success); healthy only once a segment was
/// archived with no failure after it; unknown while `pg_stat_archiver` shows neither (a new
/// cluster before its first segment is complete, or a primary whose statistics began after a
/// failover or a crash). The message names absolute times only, so an unchanged state does not
/// rewrite the status on every reconcile.
pub fn wal_archiving(figures: &ArchiverFigures) -> ArchivingVerdict {
    let at = |t: Option<Timestamp>| t.map_or_else(|| "never".to_owned(), |t| t.to_string());
    let failing = figures.last_failed_time.is_some_and(|failed| {
        figures
            .last_archived_time
            .is_none_or(|archived| failed > archived)
    });
    if failing {
        return ArchivingVerdict {
            health: ArchiveHealth::Failing,
            reason: REASON_ARCHIVE_FAILING,
            message: format!(
                "archive_command failing: last failure {}, last archived segment {} ({} \
                 failures in total); WAL accumulates on the instance volume until archiving \
                 succeeds",
                at(figures.last_failed_time),
                at(figures.last_archived_time),
                figures.failed_count
            ),
        };
    }
    match figures.last_archived_time {
        Some(archived) => ArchivingVerdict {
            health: ArchiveHealth::Healthy,
            reason: REASON_ARCHIVE_HEALTHY,
            message: format!(
                "last archived segment {archived}, no archive failure since ({} failures in \
                 total)",
                figures.failed_count
            ),
        },
        None => ArchivingVerdict {
            health: ArchiveHealth::NotYetSeen,
            reason: REASON_NO_SEGMENT_ARCHIVED,
            message: "the primary has not archived a WAL segment yet and no attempt failed \
                      (pg_stat_archiver shows neither since its statistics began); archiving \
                      is reported healthy once the first segment is archived"
                .to_owned(),
        },
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
        assert_eq!(verdict(None, Some(10)).health, ArchiveHealth::Healthy);
        assert_eq!(
            verdict(Some(10), Some(20)).health,
            ArchiveHealth::Healthy,
            "recovered after a failure"
        );
        let failing = verdict(Some(20), Some(10));
        assert_eq!(failing.health, ArchiveHealth::Failing);
        assert_eq!(failing.reason, REASON_ARCHIVE_FAILING);
        assert_eq!(failing.condition_status(), "False");
        assert_eq!(
            verdict(Some(20), None).health,
            ArchiveHealth::Failing,
            "never archived, failing"
        );
        // Absolute times only: the same figures give the same message at any time.
        assert_eq!(failing, verdict(Some(20), Some(10)));
    }

    /// Nothing archived and nothing failed is not health: the condition must not be `True`
    /// before a segment was ever archived (it was, while archiving in fact failed).
    #[test]
    fn nothing_archived_yet_is_unknown_not_healthy() {
        let unseen = wal_archiving(&figures(None, None));
        assert_eq!(unseen.health, ArchiveHealth::NotYetSeen);
        assert_eq!(unseen.condition_status(), "Unknown");
        assert_eq!(unseen.reason, REASON_NO_SEGMENT_ARCHIVED);
        assert!(
            unseen.message.contains("not archived"),
            "{}",
            unseen.message
        );
        assert_eq!(
            wal_archiving(&figures(None, Some(10))).condition_status(),
            "True"
        );
    }
}
