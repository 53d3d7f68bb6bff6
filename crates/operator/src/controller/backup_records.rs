//! The exporter's backup-status table (`tusk_pg_backup_age_seconds`, which the backup-age
//! alert and dashboard panel read), kept by the SQL step: after a backup finished, the
//! primary runs `pgbackrest info --output=json` itself (`COPY ... FROM PROGRAM`, as the
//! superuser the operator logs in as) and the newest backup of each repository and type is
//! written to the table (see `tusk_config::backup_status`). The repository is the truth, so
//! the labels and stop times are pgBackRest's own, whichever Job took the backup.
//!
//! It runs only when `status.pgbackrest.lastBackupCompletion` moved since this operator
//! process last recorded the cluster (and once after a start), not on every resync: each run
//! asks the repository host. A failure is logged and retried on the next reconcile; it never
//! fails the SQL step, whose condition is about users.

use std::collections::BTreeMap;
use std::sync::Mutex;

use tusk_api::ValidatedCluster;
use tusk_config::backup_status::{
    info_into_temp_table, latest_backups, record_latest_sql, INFO_JSON_QUERY,
};
use tusk_config::exporter::DATABASE;
use tusk_sql::{ConnectTarget, SqlError};

/// What this process recorded: `namespace/name` -> the `lastBackupCompletion` acted on.
#[derive(Default)]
pub struct BackupRecords {
    recorded: Mutex<BTreeMap<String, String>>,
}

fn key(cluster: &ValidatedCluster) -> String {
    format!("{}/{}", cluster.namespace, cluster.name())
}

impl BackupRecords {
    /// The completion to record now: the cluster has an exporter and backups, a backup
    /// finished (`last_completion`), and it is not the one recorded last.
    pub fn due(&self, cluster: &ValidatedCluster, last_completion: Option<&str>) -> Option<String> {
        if cluster.exporter.is_none() || cluster.backups.is_none() {
            return None;
        }
        let completion = last_completion?;
        let recorded = self.recorded.lock().unwrap_or_else(|p| p.into_inner());
        (recorded.get(&key(cluster)).map(String::as_str) != Some(completion))
            .then(|| completion.to_owned())
    }

    /// Remembers that the backups up to `completion` are in the table.
    pub fn mark(&self, cluster: &ValidatedCluster, completion: String) {
        self.recorded
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key(cluster), completion);
    }
}

fn failed(message: String) -> SqlError {
    SqlError::ReadState {
        what: "pgbackrest info",
        message,
    }
}

/// Reads the repository's backups on the server `target` points at and records the newest
/// per repository and type; returns how many rows were written (or confirmed).
pub async fn record_backups(target: &ConnectTarget) -> Result<usize, SqlError> {
    let client = tusk_sql::connect(target, DATABASE).await?;
    let describe = |e: tokio_postgres::Error| failed(tusk_sql::describe(&e));
    client
        .batch_execute(&format!("BEGIN; {}", info_into_temp_table()))
        .await
        .map_err(describe)?;
    let json: Option<String> = client
        .query_one(INFO_JSON_QUERY, &[])
        .await
        .map_err(describe)?
        .get(0);
    client.batch_execute("COMMIT").await.map_err(describe)?;
    let latest = latest_backups(json.as_deref().unwrap_or("[]")).map_err(failed)?;
    let statements = record_latest_sql(&latest);
    if !statements.is_empty() {
        client
            .batch_execute(&statements.join("; "))
            .await
            .map_err(describe)?;
    }
    Ok(statements.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(name: &str, extra: &str) -> ValidatedCluster {
        tusk_api::validate_yaml(&format!(
            "apiVersion: tusk.rs/v1beta1\nkind: PostgresCluster\n\
             metadata: {{name: {name}, namespace: db}}\n\
             spec:\n  postgresVersion: 15\n  instances: [{{name: i1, dataVolumeClaimSpec: \
             {{accessModes: [ReadWriteOnce], resources: {{requests: {{storage: 1Gi}}}}}}}}]\n{extra}"
        ))
        .unwrap()
    }

    const BACKUPS: &str = "  backups: {pgbackrest: {repos: [{name: repo1, volume: \
        {volumeClaimSpec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}}}]}}\n";
    const EXPORTER: &str = "  monitoring: {pgmonitor: {exporter: {}}}\n";

    #[test]
    fn recorded_once_per_finished_backup_and_only_with_an_exporter_and_backups() {
        let records = BackupRecords::default();
        let both = cluster("hippo", &format!("{BACKUPS}{EXPORTER}"));
        assert_eq!(records.due(&both, None), None, "no backup finished yet");
        let first = "2026-01-01T00:00:00Z";
        assert_eq!(records.due(&both, Some(first)).as_deref(), Some(first));
        records.mark(&both, first.to_owned());
        assert_eq!(records.due(&both, Some(first)), None, "already recorded");
        let second = "2026-01-02T00:00:00Z";
        assert_eq!(records.due(&both, Some(second)).as_deref(), Some(second));

        let no_exporter = cluster("hippo", BACKUPS);
        assert_eq!(records.due(&no_exporter, Some(second)), None);
        let no_backups = cluster("hippo", EXPORTER);
        assert_eq!(records.due(&no_backups, Some(second)), None);
        // Another cluster's record is its own.
        let other = cluster("rhino", &format!("{BACKUPS}{EXPORTER}"));
        assert_eq!(records.due(&other, Some(first)).as_deref(), Some(first));
    }
}
