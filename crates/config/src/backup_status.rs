//! The exporter's backup-status table (`_tusk_monitor.backup_status`, which the
//! `tusk_pg_backup` query turns into `tusk_pg_backup_age_seconds`) filled from the repository
//! itself: `pgbackrest info --output=json` lists every backup with its repository, type,
//! label and stop time, so the table says what pgBackRest has, whoever started the backup
//! (a manual or scheduled Job, the initial backup, a person with a shell). Pure; no I/O.
//!
//! In Kubernetes PostgreSQL runs the command itself ([`info_into_temp_table`], superuser
//! only): the primary's database container has pgBackRest configured exactly as its
//! `archive_command` uses it, so no other pod needs exec rights or repository credentials.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::exporter::record_backup_sql;
use crate::parameters::PGBACKREST_STANZA;

/// Temporary table the info JSON is read into, in the session that records it.
pub const INFO_TABLE: &str = "pg_temp.tusk_pgbackrest_info";

/// SQL (one transaction's worth, after `BEGIN`) that reads `pgbackrest info --output=json`
/// into [`INFO_TABLE`] by running it on the server. CSV with delimiter and quote bytes JSON
/// never contains keeps the line as it is (text format would undo backslash escapes). The
/// timeout bounds a repository that does not answer: this runs inside a reconcile.
pub fn info_into_temp_table() -> String {
    format!(
        "SET LOCAL statement_timeout = '60s'; \
         CREATE TEMP TABLE tusk_pgbackrest_info (line pg_catalog.text) ON COMMIT DROP; \
         COPY {INFO_TABLE} FROM PROGRAM \
         'pgbackrest --stanza={PGBACKREST_STANZA} --output=json info' \
         WITH (FORMAT csv, DELIMITER E'\\x01', QUOTE E'\\x02')"
    )
}

/// The query returning the JSON read by [`info_into_temp_table`].
pub const INFO_JSON_QUERY: &str =
    "SELECT pg_catalog.string_agg(line, E'\\n') FROM pg_temp.tusk_pgbackrest_info";

/// The newest backup of one repository and type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LatestBackup {
    /// `repo1`..`repo4`.
    pub repo: String,
    /// `full`, `diff` or `incr`.
    pub backup_type: String,
    pub label: String,
    /// pgBackRest's `timestamp.stop`, Unix seconds.
    pub stop: i64,
}

#[derive(Deserialize)]
struct Stanza {
    name: String,
    #[serde(default)]
    backup: Vec<RawBackup>,
}

#[derive(Deserialize)]
struct RawBackup {
    label: String,
    #[serde(rename = "type")]
    kind: String,
    timestamp: Timestamps,
    database: Database,
}

#[derive(Deserialize)]
struct Timestamps {
    stop: i64,
}

#[derive(Deserialize)]
struct Database {
    #[serde(rename = "repo-key")]
    repo_key: u8,
}

/// The newest backup per repository and type of Tusk's stanza in `info_json` (pgBackRest's
/// `info --output=json`), ordered by repository and type.
pub fn latest_backups(info_json: &str) -> Result<Vec<LatestBackup>, String> {
    let stanzas: Vec<Stanza> = serde_json::from_str(info_json)
        .map_err(|e| format!("reading pgbackrest info --output=json: {e}"))?;
    let mut latest: BTreeMap<(String, String), LatestBackup> = BTreeMap::new();
    for backup in stanzas
        .into_iter()
        .filter(|s| s.name == PGBACKREST_STANZA)
        .flat_map(|s| s.backup)
    {
        if !matches!(backup.kind.as_str(), "full" | "diff" | "incr") {
            return Err(format!("unknown backup type {:?}", backup.kind));
        }
        let repo = format!("repo{}", backup.database.repo_key);
        let key = (repo.clone(), backup.kind.clone());
        if latest
            .get(&key)
            .is_some_and(|l| l.stop >= backup.timestamp.stop)
        {
            continue;
        }
        latest.insert(
            key,
            LatestBackup {
                repo,
                backup_type: backup.kind,
                label: backup.label,
                stop: backup.timestamp.stop,
            },
        );
    }
    Ok(latest.into_values().collect())
}

/// One [`record_backup_sql`] per backup of [`latest_backups`].
pub fn record_latest_sql(backups: &[LatestBackup]) -> Vec<String> {
    backups
        .iter()
        .map(|b| record_backup_sql(&b.repo, &b.backup_type, &b.label, b.stop))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shape pgBackRest 2.45+ prints (fields Tusk ignores trimmed): two fulls and an
    /// incremental in repo1, a full in repo2, and another stanza's backup.
    const INFO: &str = r#"[{"name":"db","status":{"code":0,"message":"ok"},"backup":[
      {"label":"20240501-101500F","type":"full","prior":null,
       "timestamp":{"start":1714558500,"stop":1714558510},
       "database":{"id":1,"repo-key":1}},
      {"label":"20240501-101500F_20240501-102000I","type":"incr","prior":"20240501-101500F",
       "timestamp":{"start":1714558800,"stop":1714558805},
       "database":{"id":1,"repo-key":1}},
      {"label":"20240502-101500F","type":"full","prior":null,
       "timestamp":{"start":1714644900,"stop":1714644930},
       "database":{"id":1,"repo-key":1}},
      {"label":"20240501-110000F","type":"full","prior":null,
       "timestamp":{"start":1714561200,"stop":1714561260},
       "database":{"id":1,"repo-key":2}}]},
     {"name":"other","backup":[
      {"label":"20250101-000000F","type":"full",
       "timestamp":{"start":1735689600,"stop":1735689700},
       "database":{"id":1,"repo-key":1}}]}]"#;

    #[test]
    fn the_newest_backup_per_repository_and_type_of_the_stanza() {
        let latest = latest_backups(INFO).unwrap();
        let summary: Vec<(&str, &str, &str, i64)> = latest
            .iter()
            .map(|b| {
                (
                    b.repo.as_str(),
                    b.backup_type.as_str(),
                    b.label.as_str(),
                    b.stop,
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                ("repo1", "full", "20240502-101500F", 1714644930),
                (
                    "repo1",
                    "incr",
                    "20240501-101500F_20240501-102000I",
                    1714558805
                ),
                ("repo2", "full", "20240501-110000F", 1714561260),
            ]
        );
        let sql = record_latest_sql(&latest);
        assert_eq!(sql.len(), 3);
        assert!(
            sql[0].contains("'repo1', 'full', '20240502-101500F'"),
            "{}",
            sql[0]
        );
        assert!(sql[0].contains("to_timestamp(1714644930)"), "{}", sql[0]);
    }

    #[test]
    fn a_stanza_without_backups_records_nothing_and_garbage_is_an_error() {
        assert!(latest_backups(r#"[{"name":"db","backup":[]}]"#)
            .unwrap()
            .is_empty());
        assert!(latest_backups(r#"[{"name":"db"}]"#).unwrap().is_empty());
        assert!(latest_backups("ERROR: [055]: unable to load info file").is_err());
        let odd = r#"[{"name":"db","backup":[{"label":"x","type":"snap",
            "timestamp":{"stop":1},"database":{"repo-key":1}}]}]"#;
        assert!(latest_backups(odd).unwrap_err().contains("snap"));
    }

    #[test]
    fn the_info_command_is_read_verbatim_by_the_server() {
        let sql = info_into_temp_table();
        assert!(sql.contains("COPY pg_temp.tusk_pgbackrest_info FROM PROGRAM"));
        assert!(sql.contains("'pgbackrest --stanza=db --output=json info'"));
        // CSV with bytes JSON never holds: no backslash processing, no splitting.
        assert!(sql.contains("FORMAT csv, DELIMITER E'\\x01', QUOTE E'\\x02'"));
        assert!(sql.contains("ON COMMIT DROP"));
    }
}
