//! `PostgresCluster.status`: what Tusk observed and did, written only by the operator's status
//! step. Part of [`super`]; no I/O.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// What Tusk observed and did.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PostgresClusterStatus {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// `Running`, `Progressing`, `Degraded`, `Paused`, `Shutdown`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// Name of the instance Patroni elected leader.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary: Option<String>,
    /// The PostgreSQL major the cluster was created with, recorded by its first reconcile.
    /// `spec.postgresVersion` must stay equal to it (the operator enforces this too, for API
    /// servers without the CRD's CEL rules).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postgres_version: Option<i32>,
    /// Ready instances out of desired, e.g. `2/3`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_instances: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub instances: Vec<InstanceSetStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patroni: Option<PatroniStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pgbackrest: Option<PgBackRestStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy: Option<ProxyStatus>,
    /// Revision of `databaseInitSQL` that ran successfully.
    #[serde(
        rename = "databaseInitSQL",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub database_init_sql: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub users_revision: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InstanceSetStatus {
    pub name: String,
    #[serde(default)]
    pub replicas: i32,
    #[serde(default)]
    pub ready_replicas: i32,
    #[serde(default)]
    pub updated_replicas: i32,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PatroniStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_identifier: Option<String>,
    /// Value of the `tusk.rs/trigger-switchover` annotation last acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub switchover: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub switchover_timeline: Option<i64>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PgBackRestStatus {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub repos: Vec<RepoStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manual_backup: Option<BackupJobStatus>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scheduled_backups: Vec<BackupJobStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore: Option<BackupJobStatus>,
    /// The initial full backup the operator takes once the stanza exists (`replica-create`);
    /// `repos[].replicaCreateBackupComplete` records that it succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica_create_backup: Option<BackupJobStatus>,
    /// When the newest successful backup finished (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_backup_completion: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RepoStatus {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bound: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stanza_created: Option<bool>,
    /// The initial full backup (`replica-create`) went to this repo and succeeded: it is
    /// never taken again for this cluster (the PGO family's field).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica_create_backup_complete: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo_options_hash: Option<String>,
}

/// A backup or restore Job Tusk ran.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupJobStatus {
    /// The annotation value (manual) or CronJob name (scheduled).
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<String>,
    #[serde(default)]
    pub finished: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub succeeded: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed: Option<i32>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProxyStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pg_bouncer: Option<PgBouncerStatus>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PgBouncerStatus {
    #[serde(default)]
    pub replicas: i32,
    #[serde(default)]
    pub ready_replicas: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postgres_revision: Option<String>,
}
