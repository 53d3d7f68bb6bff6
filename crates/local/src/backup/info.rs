//! `tusk local backups`: the backups in every repository, from `pgbackrest info
//! --output=json` (the repository is the truth; nothing is recorded on the side). Reads the
//! repositories only; PostgreSQL need not run.

use serde::{Deserialize, Serialize};

use super::{pgbackrest, BackupKind};
use crate::error::{Error, Result};
use crate::state::Layout;
use crate::system::{self, RunAs};

/// One backup as `tusk local backups` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BackupInfo {
    /// pgBackRest's label, e.g. `20240501-101500F_20240501-102000I`.
    pub label: String,
    #[serde(rename = "type")]
    pub kind: BackupKind,
    /// Repository index, 1..=4.
    pub repo: u8,
    /// Unix seconds.
    pub start: i64,
    pub stop: i64,
    /// Size of the database it restores, in bytes.
    pub size: u64,
    /// Bytes this backup added to the repository (compressed).
    pub repo_size: u64,
    /// The backup a diff/incr builds on.
    pub prior: Option<String>,
}

/// The part of pgBackRest's `info` JSON Tusk reads.
#[derive(Deserialize)]
struct Stanza {
    #[serde(default)]
    backup: Vec<RawBackup>,
}

#[derive(Deserialize)]
struct RawBackup {
    label: String,
    #[serde(rename = "type")]
    kind: String,
    timestamp: Timestamps,
    info: Sizes,
    database: Database,
    prior: Option<String>,
}

#[derive(Deserialize)]
struct Timestamps {
    start: i64,
    stop: i64,
}

#[derive(Deserialize)]
struct Sizes {
    size: u64,
    repository: RepoSizes,
}

#[derive(Deserialize)]
struct RepoSizes {
    delta: u64,
}

#[derive(Deserialize)]
struct Database {
    #[serde(rename = "repo-key")]
    repo_key: u8,
}

/// Parses `pgbackrest info --output=json`, oldest backup first.
pub(crate) fn parse_info(json: &str) -> Result<Vec<BackupInfo>> {
    let stanzas: Vec<Stanza> = serde_json::from_str(json).map_err(|e| Error::Command {
        what: "reading pgbackrest info --output=json".into(),
        output: e.to_string(),
    })?;
    let mut backups = Vec::new();
    for raw in stanzas.into_iter().flat_map(|s| s.backup) {
        let kind = BackupKind::parse(&raw.kind).ok_or_else(|| Error::Command {
            what: "reading pgbackrest info --output=json".into(),
            output: format!("unknown backup type {:?}", raw.kind),
        })?;
        backups.push(BackupInfo {
            label: raw.label,
            kind,
            repo: raw.database.repo_key,
            start: raw.timestamp.start,
            stop: raw.timestamp.stop,
            size: raw.info.size,
            repo_size: raw.info.repository.delta,
            prior: raw.prior,
        });
    }
    backups.sort_by_key(|b| (b.stop, b.repo));
    Ok(backups)
}

/// Every backup of the cluster's stanza in every repository, oldest first.
pub fn list_backups(layout: &Layout) -> Result<Vec<BackupInfo>> {
    let state = crate::state::require(layout)?;
    let member = state.members.first().ok_or_else(|| Error::StateDir {
        path: layout.root.clone(),
        reason: "no members recorded".into(),
    })?;
    let run_as = RunAs::detect()?;
    let json = system::run_helper(
        "pgbackrest info",
        pgbackrest(layout, &member.name, &["--output=json", "info"]),
        Some(&run_as),
    )?;
    parse_info(&json)
}

/// `tusk local backups` as a table.
pub fn render_backups(backups: &[BackupInfo]) -> String {
    let mut out = format!(
        "{:<34} {:<5} {:<6} {:<20} {:<20} {:>12} {:>12}\n",
        "LABEL", "TYPE", "REPO", "START (UTC)", "STOP (UTC)", "SIZE", "REPO SIZE"
    );
    let time = |unix: i64| {
        time::OffsetDateTime::from_unix_timestamp(unix)
            .map(|t| {
                format!(
                    "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
                    t.year(),
                    u8::from(t.month()),
                    t.day(),
                    t.hour(),
                    t.minute(),
                    t.second()
                )
            })
            .unwrap_or_else(|_| unix.to_string())
    };
    for b in backups {
        out += &format!(
            "{:<34} {:<5} {:<6} {:<20} {:<20} {:>12} {:>12}\n",
            b.label,
            b.kind.as_str(),
            format!("repo{}", b.repo),
            time(b.start),
            time(b.stop),
            b.size,
            b.repo_size
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shape pgBackRest 2.45 prints (trimmed to what is read, plus fields it ignores).
    const INFO: &str = r#"[{"name":"db","status":{"code":0},"backup":[
      {"label":"20240501-101500F","type":"full","prior":null,
       "timestamp":{"start":1714558500,"stop":1714558510},
       "info":{"size":31000000,"delta":31000000,"repository":{"size":4000000,"delta":4000000}},
       "database":{"id":1,"repo-key":1},"reference":null},
      {"label":"20240501-101500F_20240501-102000I","type":"incr","prior":"20240501-101500F",
       "timestamp":{"start":1714558800,"stop":1714558805},
       "info":{"size":31000000,"delta":8192,"repository":{"size":4000000,"delta":1200}},
       "database":{"id":1,"repo-key":2},"reference":["20240501-101500F"]}]}]"#;

    #[test]
    fn info_json_becomes_backups_with_type_repo_and_sizes() {
        let backups = parse_info(INFO).unwrap();
        assert_eq!(backups.len(), 2);
        assert_eq!(backups[0].kind, BackupKind::Full);
        assert_eq!(backups[0].repo, 1);
        assert_eq!(backups[1].kind, BackupKind::Incr);
        assert_eq!(backups[1].repo, 2);
        assert_eq!(backups[1].prior.as_deref(), Some("20240501-101500F"));
        assert_eq!(backups[1].repo_size, 1200);
        let table = render_backups(&backups);
        assert!(table.contains("2024-05-01 10:15:00"), "{table}");
        assert!(parse_info("[{\"name\":\"db\",\"backup\":[]}]")
            .unwrap()
            .is_empty());
    }
}
